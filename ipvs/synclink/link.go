package synclink

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Defaults for LinkConfig. The addresses are private to the host: the link
// is a dummy device, which never delivers a frame anywhere.
const (
	DefaultName = "plsync0"
	// DefaultKind is the device type of the link. A dummy discards every
	// frame it transmits, after packet sockets have seen it.
	DefaultKind = "dummy"
	// DefaultMasterPort and DefaultBackupPort are 100 apart because the
	// kernel uses port+id for each of its sync_ports threads (at most 64),
	// so the master's and the backup's port ranges never overlap.
	DefaultMasterPort = 8850
	DefaultBackupPort = 8950
	// DefaultMTU lets a message of any size the kernel allows
	// (SYNC_MAXLEN up to 65535 minus headers) cross the link unfragmented:
	// the Tap cannot reassemble fragments, and the backup thread's buffer
	// grows with the link MTU.
	DefaultMTU = 65535
)

var (
	// DefaultAddr is a /32 from the IPv4 link-local range, so it can clash
	// with nothing routed. The kernel master binds its socket to the
	// link's first global-scope IPv4 address, so the address is added
	// with scope global despite the range.
	DefaultAddr = netip.MustParsePrefix("169.254.88.48/32")
	// DefaultGroup is in 239.255.0.0/16, the administratively scoped
	// "IPv4 local scope" (RFC 2365), and differs from the kernel's own
	// default 224.0.0.81 so that a stray stock daemon on the LAN and the
	// private link never share a group.
	DefaultGroup = netip.MustParseAddr("239.255.88.48")
	// DefaultGroup6 is a transient (flag 1) link-local-scope (2) group:
	// it cannot be routed off the link by construction.
	DefaultGroup6 = netip.MustParseAddr("ff12::8848")
)

// LinkConfig describes the private link. The zero value means all defaults.
type LinkConfig struct {
	Name string // interface name; default DefaultName
	// Kind is "dummy" (default) or "ifb". An ifb device, like a dummy,
	// discards what it transmits (anything tc did not redirect to it), so
	// it serves on kernels built without the dummy driver.
	Kind string
	Addr netip.Prefix // IPv4 address on the link; default DefaultAddr
	// Addr6 is an optional IPv6 address. Without it the kernel still has
	// the link's fe80:: address, which is enough for Group6.
	Addr6      netip.Prefix
	Group      netip.Addr // IPv4 group of both kernel threads; default DefaultGroup
	Group6     netip.Addr // IPv6 group; default DefaultGroup6
	MasterPort uint16     // where the kernel master sends; default DefaultMasterPort
	BackupPort uint16     // where the kernel backup listens; default DefaultBackupPort
	MTU        int        // default DefaultMTU
}

// WithDefaults returns c with every zero field set to its default.
func (c LinkConfig) WithDefaults() LinkConfig {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Kind == "" {
		c.Kind = DefaultKind
	}
	if !c.Addr.IsValid() {
		c.Addr = DefaultAddr
	}
	if !c.Group.IsValid() {
		c.Group = DefaultGroup
	}
	if !c.Group6.IsValid() {
		c.Group6 = DefaultGroup6
	}
	if c.MasterPort == 0 {
		c.MasterPort = DefaultMasterPort
	}
	if c.BackupPort == 0 {
		c.BackupPort = DefaultBackupPort
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	return c
}

// Validate reports settings the kernel or this package would reject later,
// with less helpful errors.
func (c LinkConfig) Validate() error {
	switch {
	case len(c.Name) == 0 || len(c.Name) >= unix.IFNAMSIZ:
		return fmt.Errorf("link name %q: want 1 to %d bytes", c.Name, unix.IFNAMSIZ-1)
	case c.Kind != "dummy" && c.Kind != "ifb":
		return fmt.Errorf("link kind %q: want dummy or ifb", c.Kind)
	case !c.Addr.Addr().Is4():
		return fmt.Errorf("link address %s: want an IPv4 prefix", c.Addr)
	case c.Addr6.IsValid() && (!c.Addr6.Addr().Is6() || c.Addr6.Addr().Is4In6()):
		return fmt.Errorf("link IPv6 address %s: want an IPv6 prefix", c.Addr6)
	case !c.Group.Is4() || !c.Group.IsMulticast():
		return fmt.Errorf("group %s: want an IPv4 multicast address (the kernel refuses others)", c.Group)
	case !c.Group6.Is6() || !c.Group6.IsMulticast():
		return fmt.Errorf("group6 %s: want an IPv6 multicast address", c.Group6)
	case c.MasterPort == 0 || c.BackupPort == 0 || c.MasterPort == c.BackupPort:
		return fmt.Errorf("ports %d (master) and %d (backup): want two different non-zero ports", c.MasterPort, c.BackupPort)
	case c.MTU < 1280 || c.MTU > 65535:
		return fmt.Errorf("MTU %d: want 1280 to 65535", c.MTU)
	}
	return nil
}

// Link is the private link as set up by SetupLink.
type Link struct {
	cfg   LinkConfig
	index int
}

// Config returns the configuration the link was set up with, defaults
// filled in.
func (l *Link) Config() LinkConfig { return l.cfg }

// Name returns the interface name.
func (l *Link) Name() string { return l.cfg.Name }

// Index returns the interface index at setup time.
func (l *Link) Index() int { return l.index }

// SetupLink creates the interface (a dummy unless cfg.Kind says otherwise;
// up, multicast on, cfg.MTU, the address with global scope) or, if it exists
// already, brings it to that state. It refuses to adopt an interface of
// another kind or with a different IPv4 address, since that is someone
// else's interface or a configuration mistake; the error says how to fix it.
func SetupLink(cfg LinkConfig) (*Link, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("synclink: %w", err)
	}
	link, err := netlink.LinkByName(cfg.Name)
	switch {
	case err == nil:
		if link.Type() != cfg.Kind {
			return nil, fmt.Errorf("synclink: interface %s exists but is a %s, not a %s: remove it (ip link del %s) or choose another name", cfg.Name, link.Type(), cfg.Kind, cfg.Name)
		}
	case errors.As(err, new(netlink.LinkNotFoundError)):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = cfg.Name
		attrs.MTU = cfg.MTU
		var newLink netlink.Link = &netlink.Dummy{LinkAttrs: attrs}
		if cfg.Kind == "ifb" {
			newLink = &netlink.Ifb{LinkAttrs: attrs}
		}
		if err := netlink.LinkAdd(newLink); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				return nil, fmt.Errorf("synclink: create %s interface %s: %w (this kernel has no %s driver: modprobe %s)", cfg.Kind, cfg.Name, err, cfg.Kind, cfg.Kind)
			}
			return nil, fmt.Errorf("synclink: create %s interface %s: %w", cfg.Kind, cfg.Name, explain(err))
		}
		if link, err = netlink.LinkByName(cfg.Name); err != nil {
			return nil, fmt.Errorf("synclink: look up new interface %s: %w", cfg.Name, err)
		}
	default:
		return nil, fmt.Errorf("synclink: look up interface %s: %w", cfg.Name, explain(err))
	}

	attrs := link.Attrs()
	if attrs.MTU != cfg.MTU {
		if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
			return nil, fmt.Errorf("synclink: set MTU %d on %s: %w", cfg.MTU, cfg.Name, explain(err))
		}
	}
	if attrs.Flags&net.FlagMulticast == 0 {
		if err := netlink.LinkSetMulticastOn(link); err != nil {
			return nil, fmt.Errorf("synclink: turn multicast on for %s: %w", cfg.Name, explain(err))
		}
	}
	if err := ensureAddr(link, cfg.Addr, netlink.FAMILY_V4, true); err != nil {
		return nil, err
	}
	if cfg.Addr6.IsValid() {
		if err := ensureAddr(link, cfg.Addr6, netlink.FAMILY_V6, false); err != nil {
			return nil, err
		}
	}
	// Up last, so the kernel never sees the link up without its address.
	if attrs.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("synclink: bring %s up: %w", cfg.Name, explain(err))
		}
	}
	if err := waitIPv6(link, ipv6Wait); err != nil {
		return nil, err
	}
	return &Link{cfg: cfg, index: attrs.Index}, nil
}

// ipv6Wait bounds how long SetupLink waits for IPv6 on the link. The
// kernel finishes within milliseconds on a device without neighbour
// discovery; the bound matters only if address generation is off.
const ipv6Wait = 2 * time.Second

// waitIPv6 returns once the link has a link-local IPv6 address that is no
// longer tentative. The kernel runs duplicate address detection from a work
// queue even on devices that skip it, and until it has, nothing can send
// IPv6 from the link: an IPv6 Injector or kernel sync thread started right
// after SetupLink would fail with EADDRNOTAVAIL. Without IPv6 on the link,
// or if no address comes in time, it returns at once or at the bound
// without error, since IPv4 works regardless and OpenInjector reports the
// IPv6 problem when it matters.
func waitIPv6(link netlink.Link, timeout time.Duration) error {
	name := link.Attrs().Name
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6")
	if err != nil || strings.TrimSpace(string(b)) != "0" {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		addrs, err := addrList(link, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("synclink: list IPv6 addresses of %s: %w", name, err)
		}
		for _, a := range addrs {
			if a.IPNet != nil && a.IP.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ensureAddr adds want to link unless it is there. With exclusive, any other
// global address of the family is an error: the kernel master would bind to
// whichever comes first.
func ensureAddr(link netlink.Link, want netip.Prefix, family int, exclusive bool) error {
	name := link.Attrs().Name
	addrs, err := addrList(link, family)
	if err != nil {
		return fmt.Errorf("synclink: list addresses of %s: %w", name, explain(err))
	}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		have := netip.PrefixFrom(ip.Unmap(), ones)
		if have == want {
			if a.Scope != unix.RT_SCOPE_UNIVERSE {
				return fmt.Errorf("synclink: %s on %s has scope %d, want global (the kernel master binds only to a global address): ip addr del %s dev %s", have, name, a.Scope, have, name)
			}
			return nil
		}
		if exclusive && a.Scope == unix.RT_SCOPE_UNIVERSE {
			return fmt.Errorf("synclink: %s already has address %s, want only %s: remove it (ip addr del %s dev %s) or set LinkConfig.Addr", name, have, want, have, name)
		}
	}
	addr := &netlink.Addr{
		IPNet: &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(want.Bits(), want.Addr().BitLen())},
		Scope: unix.RT_SCOPE_UNIVERSE,
	}
	if family == netlink.FAMILY_V6 {
		// A dummy never answers neighbour solicitations; DAD would only
		// delay the address.
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("synclink: add %s to %s: %w", want, name, explain(err))
	}
	return nil
}

// Remove deletes the interface. Removing a link that is already gone is not
// an error, so shutdown paths can call it unconditionally.
func (l *Link) Remove() error {
	link, err := netlink.LinkByName(l.cfg.Name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("synclink: look up %s: %w", l.cfg.Name, explain(err))
	}
	if link.Type() != l.cfg.Kind || link.Attrs().Index != l.index {
		return fmt.Errorf("synclink: %s was replaced by another interface since setup (type %s, index %d, was %d): not removing it", l.cfg.Name, link.Type(), link.Attrs().Index, l.index)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("synclink: delete %s: %w", l.cfg.Name, explain(err))
	}
	return nil
}

// explain adds the likely fix to the errors an operator can act on.
func explain(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w (needs CAP_NET_ADMIN: run as root or grant the capability)", err)
	}
	return err
}

// addrList is netlink.AddrList retried when the kernel flags the dump as
// interrupted (the address list changed while it was read, as when IPv6
// autoconfiguration runs right after the link comes up): the library reports
// that as EINTR, and a fresh dump is consistent.
func addrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	for i := 0; ; i++ {
		addrs, err := netlink.AddrList(link, family)
		if err == nil || !errors.Is(err, unix.EINTR) || i == 9 {
			return addrs, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
