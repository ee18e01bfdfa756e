package fitness

import (
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetlinkLinks reads interfaces from the kernel of the calling thread's
// network namespace.
type NetlinkLinks struct{}

// Up implements Links: up means administratively up, with a carrier, and
// not reported down by the driver. (Dummy and some virtual interfaces
// report their operational state as unknown while they work.)
func (NetlinkLinks) Up(name string) (bool, string) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return false, "not present: " + err.Error()
	}
	a := l.Attrs()
	switch {
	case a.Flags&net.FlagUp == 0:
		return false, "admin down"
	case a.RawFlags&unix.IFF_LOWER_UP == 0:
		return false, "no carrier"
	}
	switch a.OperState {
	case netlink.OperDown, netlink.OperLowerLayerDown, netlink.OperNotPresent:
		return false, "operational state " + strings.ToLower(a.OperState.String())
	}
	return true, ""
}
