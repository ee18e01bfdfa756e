package synclink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Injector hands sync messages to the local kernel backup thread, which
// listens on group:port on the link.
//
// Its socket sends with multicast loopback on and TTL (hop limit) 0, bound
// to the link. While a local socket (the backup thread) is a member of the
// group on the link, the kernel delivers the looped-back copy to it and
// discards the original before the device because of TTL 0, so a Tap never
// sees injected messages. With no member, the kernel takes its ordinary
// output path, which ignores TTL 0: the frame reaches the link device,
// which discards it (a dummy or ifb), and a Tap on the same group and port
// would see it. This is why the link must be a device that delivers
// nowhere, and why the Injector must never be pointed at a real interface.
type Injector struct {
	conn *net.UDPConn
	dst  netip.AddrPort
}

var _ FrameWriter = (*Injector)(nil)

// OpenInjector opens an Injector that sends to group:port on the interface
// ifname, which must be a dummy or ifb device (see Injector for why). For an
// IPv4 group the interface needs a global IPv4 address (as SetupLink adds),
// which becomes the source address.
func OpenInjector(ifname string, group netip.Addr, port uint16) (*Injector, error) {
	group = group.Unmap()
	if !group.IsMulticast() || group.Zone() != "" {
		return nil, fmt.Errorf("synclink: injector: group %s is not a multicast address", group)
	}
	if port == 0 {
		return nil, errors.New("synclink: injector: port 0")
	}
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("synclink: injector: interface %s: %w (call SetupLink first)", ifname, err)
	}
	if k := link.Type(); k != "dummy" && k != "ifb" {
		return nil, fmt.Errorf("synclink: injector: refusing %s, a %s device: only a dummy or ifb link keeps injected messages inside the host", ifname, k)
	}
	ifindex := link.Attrs().Index

	d := net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = injectorSockopts(int(fd), ifname, ifindex, group.Is6()) }); err != nil {
			return err
		}
		return serr
	}}
	network := "udp4"
	raddr := net.JoinHostPort(group.String(), strconv.Itoa(int(port)))
	if group.Is4() {
		src, err := globalAddr4(link)
		if err != nil {
			return nil, err
		}
		d.LocalAddr = &net.UDPAddr{IP: src.AsSlice()}
	} else {
		network = "udp6"
		if group.IsLinkLocalMulticast() || group.IsInterfaceLocalMulticast() {
			raddr = net.JoinHostPort(group.String()+"%"+ifname, strconv.Itoa(int(port)))
		}
	}
	// A connected socket does the route lookup once, not per message.
	c, err := d.DialContext(context.Background(), network, raddr)
	if err != nil {
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			return nil, fmt.Errorf("synclink: injector: open socket to %s on %s: %w (no usable source address on the link yet: for IPv6, wait for its fe80:: address or set LinkConfig.Addr6)", raddr, ifname, err)
		}
		return nil, fmt.Errorf("synclink: injector: open socket to %s on %s: %w", raddr, ifname, explain(err))
	}
	return &Injector{conn: c.(*net.UDPConn), dst: netip.AddrPortFrom(group, port)}, nil
}

func injectorSockopts(fd int, ifname string, ifindex int, v6 bool) error {
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
		return fmt.Errorf("SO_BINDTODEVICE %s: %w", ifname, err)
	}
	type opt struct {
		level, name, val int
		what             string
	}
	var opts []opt
	if v6 {
		opts = []opt{
			{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifindex, "IPV6_MULTICAST_IF"},
			{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 1, "IPV6_MULTICAST_LOOP"},
			{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 0, "IPV6_MULTICAST_HOPS"},
		}
	} else {
		if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifindex)}); err != nil {
			return fmt.Errorf("IP_MULTICAST_IF %s: %w", ifname, err)
		}
		opts = []opt{
			{unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 1, "IP_MULTICAST_LOOP"},
			{unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, 0, "IP_MULTICAST_TTL"},
		}
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.name, o.val); err != nil {
			return fmt.Errorf("%s: %w", o.what, err)
		}
	}
	return nil
}

// globalAddr4 returns the address the kernel master would bind to: the
// link's first IPv4 address of global scope.
func globalAddr4(link netlink.Link) (netip.Addr, error) {
	name := link.Attrs().Name
	addrs, err := addrList(link, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("synclink: list addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if a.IPNet == nil || a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().Is4() {
			return ip.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("synclink: %s has no global IPv4 address: set the link up with SetupLink", name)
}

// Dest returns where the Injector sends.
func (i *Injector) Dest() netip.AddrPort { return i.dst }

// WriteFrame sends b as one datagram. Safe for concurrent use.
func (i *Injector) WriteFrame(b []byte) error {
	if len(b) > MaxFrame {
		return fmt.Errorf("synclink: injector: %d-byte message exceeds %d", len(b), MaxFrame)
	}
	n, err := i.conn.Write(b)
	if err != nil {
		return fmt.Errorf("synclink: injector: send to %s: %w", i.dst, err)
	}
	if n != len(b) {
		return fmt.Errorf("synclink: injector: sent %d of %d bytes to %s", n, len(b), i.dst)
	}
	return nil
}

// Close closes the socket.
func (i *Injector) Close() error {
	if err := i.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("synclink: injector close: %w", err)
	}
	return nil
}
