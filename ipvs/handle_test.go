package ipvs

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpenOnThisKernel runs against the kernel of the machine running the
// tests. Development machines have no IPVS, and there Open must say so and
// tell how to fix it; the lab kernel has IPVS, and there the handle must
// work (as root) or report missing privileges (as anyone else). Looking a
// family up needs no privileges, so this runs as any user.
func TestOpenOnThisKernel(t *testing.T) {
	h, err := Open("")
	if err != nil {
		if !errors.Is(err, ErrNoIPVS) {
			t.Fatalf("Open: %v; on a kernel without IPVS want ErrNoIPVS", err)
		}
		if !errors.Is(err, unix.ENOENT) {
			t.Errorf("Open: %v: the kernel's ENOENT is not reachable", err)
		}
		for _, s := range []string{"modprobe ip_vs", "current network namespace"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("Open: %q does not mention %q", err, s)
			}
		}
		t.Logf("kernel without IPVS, as expected on a development machine: %v", err)
		return
	}
	defer h.Close()

	// This kernel has IPVS (the lab): read-only checks only.
	daemons, derr := h.Daemons()
	version, size, ierr := h.Info()
	if os.Geteuid() != 0 {
		for _, err := range []error{derr, ierr} {
			if !errors.Is(err, ErrPermission) {
				t.Errorf("as uid %d: %v, want ErrPermission", os.Geteuid(), err)
			}
		}
		return
	}
	if derr != nil || ierr != nil {
		t.Fatalf("Daemons: %v; Info: %v", derr, ierr)
	}
	t.Logf("kernel has IPVS %s, connection table %d, daemons %v", version, size, daemons)
	if _, err := h.SysctlInt(SysctlSyncVersion); err != nil {
		t.Errorf("sysctl: %v", err)
	}
}

// newNetNS returns a fresh, empty network namespace.
func newNetNS(t *testing.T) *os.File {
	t.Helper()
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread ends up in the new namespace and the
		// runtime discards it with this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: err}
			return
		}
		f, err := os.Open("/proc/thread-self/ns/net")
		ch <- result{f, err}
	}()
	r := <-ch
	if r.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot create a network namespace, and CI=true forbids skipping: %v", r.err)
		}
		t.Skipf("cannot create a network namespace (needs CAP_SYS_ADMIN): %v", r.err)
	}
	t.Cleanup(func() { r.f.Close() })
	return r.f
}

func TestOpenOtherNamespace(t *testing.T) {
	ns := newNetNS(t)
	path := fmt.Sprintf("/proc/self/fd/%d", ns.Fd())
	h, err := Open(path)
	if err != nil {
		if !errors.Is(err, ErrNoIPVS) || !strings.Contains(err.Error(), "network namespace "+path) {
			t.Fatalf("Open(%s): %v; want ErrNoIPVS naming the namespace", path, err)
		}
		return
	}
	defer h.Close()
	// A fresh namespace has no daemons even when the host runs some.
	daemons, err := h.Daemons()
	if err != nil || len(daemons) != 0 {
		t.Errorf("Daemons in a fresh namespace: %v, %v; want none", daemons, err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open("/nonexistent/netns"); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a missing file: %v", err)
	}
	for _, name := range []string{"", ".", "..", "a/b", "a\x00"} {
		if _, err := OpenNamed(name); err == nil || !strings.Contains(err.Error(), "not a namespace name") {
			t.Errorf("OpenNamed(%q): %v", name, err)
		}
	}
	if _, err := OpenNamed("peerlvs-test-does-not-exist"); err == nil || !strings.Contains(err.Error(), NetNSDir+"/peerlvs-test-does-not-exist") {
		t.Errorf("OpenNamed of a missing namespace: %v", err)
	}
}

func TestSysctlPath(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"sync_version", "/proc/sys/net/ipv4/vs/sync_version"},
		{"net.ipv4.vs.sync_ports", "/proc/sys/net/ipv4/vs/sync_ports"},
	} {
		if got, err := sysctlPath(tt.in); err != nil || got != tt.want {
			t.Errorf("sysctlPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "net.ipv4.vs.", "../../ip_forward", "sync/version", "Sync_Version", "net.ipv4.ip_forward"} {
		if _, err := sysctlPath(bad); err == nil {
			t.Errorf("sysctlPath(%q) accepted", bad)
		}
	}
}

// On a kernel without IPVS the sysctls are missing too, and say why.
func TestSysctlWithoutIPVS(t *testing.T) {
	if _, err := os.Stat(sysctlDir); err == nil {
		t.Skip("this kernel has IPVS; TestOpenOnThisKernel reads a sysctl instead")
	}
	h := &Handle{}
	_, err := h.SysctlInt(SysctlSyncVersion)
	if !errors.Is(err, ErrNoIPVS) || !strings.Contains(err.Error(), "net.ipv4.vs.sync_version") {
		t.Errorf("SysctlInt: %v; want ErrNoIPVS naming the sysctl", err)
	}
	err = h.SetSysctlInt("net.ipv4.vs.backup_only", 0)
	if !errors.Is(err, ErrNoIPVS) || !strings.Contains(err.Error(), "net.ipv4.vs.backup_only") {
		t.Errorf("SetSysctlInt: %v; want ErrNoIPVS naming the sysctl", err)
	}
}

// inNetNS must put /proc/sys/net in the handle's namespace: that is the
// whole point of the sysctl methods taking a Handle. Checked with a
// per-namespace sysctl that every kernel has.
func TestInNetNSSeesTheHandlesSysctls(t *testing.T) {
	ns := newNetNS(t)
	h := &Handle{nsPath: "test", ns: ns, nsFD: int(ns.Fd())}
	const p = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
	read := func() (int, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}
	host, err := read()
	if err != nil {
		t.Fatal(err)
	}
	want := host + 7
	err = h.inNetNS(func() error {
		var st, nst unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return err
		}
		if err := unix.Fstat(h.nsFD, &nst); err != nil {
			return err
		}
		if st.Ino != nst.Ino {
			return errors.New("thread is not in the handle's namespace")
		}
		return os.WriteFile(p, []byte(strconv.Itoa(want)), 0)
	})
	if err != nil {
		t.Fatalf("inNetNS: %v", err)
	}
	if got, err := read(); err != nil || got != host {
		t.Fatalf("host value changed from %d to %d (%v): the write went to the wrong namespace", host, got, err)
	}
	var inside int
	if err := h.inNetNS(func() (err error) { inside, err = read(); return err }); err != nil {
		t.Fatal(err)
	}
	if inside != want {
		t.Errorf("value in the namespace %d, want %d", inside, want)
	}
}
