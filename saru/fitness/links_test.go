package fitness

import (
	"runtime"
	"strings"
	"testing"

	"github.com/peerlvs/peerlvs/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestNetlinkLinks reads a veth pair's states in a throwaway network
// namespace: admin down, no carrier (the peer is down), up, and absent.
func TestNetlinkLinks(t *testing.T) {
	nstest.RequireRoot(t, "create a network namespace and a veth pair")
	errc := make(chan error, 1)
	type step struct {
		name    string
		do      func() error
		up      bool
		because string
	}
	var a, b netlink.Link
	steps := []step{
		{"both down", func() error { return nil }, false, "admin down"},
		{"peer down", func() error { return netlink.LinkSetUp(a) }, false, "no carrier"},
		{"both up", func() error { return netlink.LinkSetUp(b) }, true, ""},
		{"peer down again", func() error { return netlink.LinkSetDown(b) }, false, "no carrier"},
	}
	go func() {
		// Never unlocked: the thread dies with the goroutine, and with it
		// the namespace.
		runtime.LockOSThread()
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return err
			}
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "fit0"}, PeerName: "fit1"}); err != nil {
				return err
			}
			var err error
			if a, err = netlink.LinkByName("fit0"); err != nil {
				return err
			}
			if b, err = netlink.LinkByName("fit1"); err != nil {
				return err
			}
			for _, s := range steps {
				if err := s.do(); err != nil {
					return err
				}
				up, why := NetlinkLinks{}.Up("fit0")
				if up != s.up || !strings.Contains(why, s.because) {
					t.Errorf("%s: up %v (%q), want %v (%q)", s.name, up, why, s.up, s.because)
				}
			}
			if up, why := (NetlinkLinks{}).Up("nosuch0"); up || !strings.Contains(why, "not present") {
				t.Errorf("absent interface: up %v (%q)", up, why)
			}
			return nil
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
