package filter

import (
	"github.com/peerlvs/peerlvs/internal/nstest"

	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// testNS is a throwaway network namespace; every kernel test works only
// inside such namespaces and never on the host's ruleset.
type testNS struct {
	t    *testing.T
	name string
	fd   int
	h    netns.NsHandle
}

func newNS(t *testing.T, role string) *testNS {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("peerlvs-filter-%s-%s", role, hex.EncodeToString(b[:]))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &testNS{t: t, name: name}
	t.Cleanup(func() {
		if n.h.IsOpen() {
			n.h.Close()
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	n.h = h
	n.fd = int(h)
	n.sh("ip link set lo up")
	return n
}

// sh runs a command line inside the namespace and fails the test on error.
func (n *testNS) sh(cmdline string) string {
	n.t.Helper()
	out, err := n.try(cmdline)
	if err != nil {
		n.t.Fatalf("[%s] %s: %v: %s", n.name, cmdline, err, out)
	}
	return out
}

func (n *testNS) try(cmdline string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"netns", "exec", n.name}, strings.Fields(cmdline)...)
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	return string(out), err
}

// nft runs nft inside the namespace; tests use it as the judge of what the
// kernel holds, the product never does.
func (n *testNS) nft(args ...string) string {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("[%s] nft %v: %v: %s", n.name, args, err, out)
	}
	return string(out)
}

// in runs fn on an OS thread switched into the namespace, so sockets fn
// opens live there.
func (n *testNS) in(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is left locked on purpose: if switching back fails it
		// must die with the goroutine rather than serve others in the wrong
		// namespace.
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			errc <- err
			return
		}
		err = fn()
		if serr := netns.Set(orig); serr == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func sampleConfig() Config {
	return Config{
		VIPs:              []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")},
		Sense:             SenseAddrPort,
		Seed:              0x5eed1234,
		Buckets:           64,
		RealServerSubnets: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24"), netip.MustParsePrefix("fd00:20::/64")},
	}
}

func requireRoot(tb testing.TB) {
	tb.Helper()
	nstest.RequireRoot(tb, "create throwaway network namespaces with nftables rules")
}

// newFilter returns a Filter on netns fd that the test keeps open (and so
// live) until it ends: a Filter nobody references would let the garbage
// collector close the socket owning the liveness table.
func newFilter(t *testing.T, cfg Config, fd int) *Filter {
	t.Helper()
	f, err := New(cfg, WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	})
	return f
}
