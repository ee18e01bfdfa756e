package ipvs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	mobyipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// genlFamily and genlVersion are IPVS_GENL_NAME and IPVS_GENL_VERSION.
const (
	genlFamily  = "IPVS"
	genlVersion = 1
)

// NetNSDir is where iproute2 ("ip netns add NAME") bind-mounts named
// network namespaces; OpenNamed looks there.
const NetNSDir = "/run/netns"

// Handle is a connection to IPVS in one network namespace. Its methods may be
// called from several goroutines.
type Handle struct {
	nsPath string   // as given to Open; "" is the namespace of the opening thread
	ns     *os.File // the namespace itself; nil only in tests
	nsFD   int

	genl   *genetlink.Conn
	family uint16

	// moby's Handle matches replies to requests by sequence number on one
	// socket without a lock, so concurrent calls could steal each other's
	// replies.
	mu  sync.Mutex
	svc *mobyipvs.Handle
}

// Open connects to IPVS in the network namespace at nsPath (a file such as
// /run/netns/NAME or /proc/PID/ns/net); "" means the namespace of the calling
// thread. Entering another namespace needs CAP_SYS_ADMIN.
//
// Open fails with ErrNoIPVS when the kernel has no IPVS. (Asking for the
// family lets a kernel with module autoloading load ip_vs by itself.)
func Open(nsPath string) (*Handle, error) {
	h := &Handle{nsPath: nsPath}
	cfg := &netlink.Config{}
	var (
		f   *os.File
		err error
	)
	if nsPath == "" {
		// Kept for the sysctls, so that they and the sockets agree on which
		// namespace "current" was; sockets made here need no setns.
		runtime.LockOSThread()
		f, err = os.Open("/proc/thread-self/ns/net")
		runtime.UnlockOSThread()
	} else {
		f, err = os.Open(nsPath)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", h.where(), err)
	}
	h.ns = f
	h.nsFD = int(f.Fd())
	if nsPath != "" {
		cfg.NetNS = h.nsFD
	}
	conn, err := genetlink.Dial(cfg)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("open generic netlink socket in %s: %w", h.where(), mapCommon(err))
	}
	if err := h.attach(conn); err != nil {
		h.Close()
		return nil, err
	}

	// Only now: moby resolves the family once per process and never
	// retries, and with no family it would send every service command to
	// netlink type 0, which the kernel acknowledges without doing anything.
	mobyPath := ""
	if nsPath != "" {
		// The open file rather than nsPath, so that moby cannot end up in
		// another namespace if the name has been remounted meanwhile.
		mobyPath = fmt.Sprintf("/proc/self/fd/%d", h.nsFD)
	}
	svc, err := mobyipvs.New(mobyPath)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("open IPVS service socket in %s: %w", h.where(), mapCommon(err))
	}
	h.svc = svc
	return h, nil
}

// OpenNamed opens the network namespace that "ip netns add name" created.
func OpenNamed(name string) (*Handle, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return nil, fmt.Errorf("open network namespace %q: not a namespace name (no '/', not empty)", name)
	}
	return Open(filepath.Join(NetNSDir, name))
}

// attach binds a generic-netlink connection to the handle after finding the
// IPVS family on it. Tests attach fake connections.
func (h *Handle) attach(conn *genetlink.Conn) error {
	fam, err := conn.GetFamily(genlFamily)
	if err != nil {
		_ = conn.Close()
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open IPVS in %s: %w", h.where(), withSentinel(ErrNoIPVS, err))
		}
		return fmt.Errorf("open IPVS in %s: look up generic netlink family %q: %w", h.where(), genlFamily, mapCommon(err))
	}
	h.genl = conn
	h.family = fam.ID
	return nil
}

// Close releases the handle's sockets and namespace reference. It does not
// stop sync daemons or remove services: those belong to the kernel. Close
// must not overlap other calls on the handle.
func (h *Handle) Close() error {
	var errs []error
	if h.genl != nil {
		errs = append(errs, h.genl.Close())
		h.genl = nil
	}
	h.mu.Lock()
	if h.svc != nil {
		h.svc.Close()
		h.svc = nil
	}
	h.mu.Unlock()
	if h.ns != nil {
		errs = append(errs, h.ns.Close())
		h.ns = nil
	}
	return errors.Join(errs...)
}

// where names the handle's namespace in error messages.
func (h *Handle) where() string {
	if h.nsPath == "" {
		return "the current network namespace"
	}
	return "network namespace " + h.nsPath
}

// inNetNS runs fn on an OS thread that is in the handle's namespace. Needed
// for /proc/sys/net, which shows the namespace of the thread that opens it.
func (h *Handle) inNetNS(fn func() error) error {
	if h.ns == nil {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		// The thread stays locked if it cannot be moved back: the runtime
		// then retires it with this goroutine instead of reusing a thread
		// in the wrong namespace.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("open this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if sameFile(orig, h.ns) {
			// No setns, so no CAP_SYS_ADMIN needed for the own namespace.
			err := fn()
			runtime.UnlockOSThread()
			done <- err
			return
		}
		if err := unix.Setns(h.nsFD, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter %s: %w", h.where(), mapCommon(err))
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("return from %s: %w", h.where(), err))
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

func sameFile(a, b *os.File) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(int(a.Fd()), &sa) != nil || unix.Fstat(int(b.Fd()), &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}
