package synclink

import (
	"github.com/peerlvs/peerlvs/internal/nstest"

	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/socket"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netnsThread runs functions on one OS thread that lives in a fresh network
// namespace. Sockets and links made there stay there; the rest of the test
// binary never enters the namespace.
type netnsThread struct {
	work chan func()
}

func newNetns(tb testing.TB) *netnsThread {
	tb.Helper()
	requireRoot(tb)
	n := &netnsThread{work: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime then discards the thread when this
		// goroutine returns, instead of handing a thread in the wrong
		// namespace to other goroutines.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		ready <- nil
		for f := range n.work {
			f()
		}
	}()
	if err := <-ready; err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { close(n.work) })
	return n
}

// do runs f in the namespace and returns its error.
func (n *netnsThread) do(f func() error) error {
	errc := make(chan error, 1)
	n.work <- func() { errc <- f() }
	return <-errc
}

// must runs f in the namespace and fails the test on error.
func (n *netnsThread) must(tb testing.TB, f func() error) {
	tb.Helper()
	if err := n.do(f); err != nil {
		tb.Fatal(err)
	}
}

var (
	kindOnce sync.Once
	kind     string
)

// testKind returns the link kind this kernel can create: dummy, as in
// production, or ifb, which also discards what it transmits, on kernels
// built without the dummy driver.
func testKind(tb testing.TB, ns *netnsThread) string {
	tb.Helper()
	kindOnce.Do(func() {
		kind = "dummy"
		err := ns.do(func() error {
			attrs := netlink.NewLinkAttrs()
			attrs.Name = "probe0"
			probe := &netlink.Dummy{LinkAttrs: attrs}
			if err := netlink.LinkAdd(probe); err != nil {
				return err
			}
			return netlink.LinkDel(probe)
		})
		if errors.Is(err, unix.EOPNOTSUPP) {
			kind = "ifb"
		}
	})
	if kind != "dummy" {
		tb.Logf("this kernel has no dummy driver; testing on an %s link instead", kind)
	}
	return kind
}

// setupLinkIn creates the sync link and a second, ordinary interface
// "other0" that holds the default and the multicast routes, so that anything
// not pinned to the sync link would leave through other0 and be seen there.
func setupLinkIn(tb testing.TB, ns *netnsThread, cfg LinkConfig) *Link {
	tb.Helper()
	var l *Link
	cfg.Kind = testKind(tb, ns)
	ns.must(tb, func() error {
		var err error
		if l, err = SetupLink(cfg); err != nil {
			return err
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "other0"
		var other netlink.Link = &netlink.Dummy{LinkAttrs: attrs}
		if cfg.Kind == "ifb" {
			other = &netlink.Ifb{LinkAttrs: attrs}
		}
		if err := netlink.LinkAdd(other); err != nil {
			return fmt.Errorf("add other0: %w", err)
		}
		if err := netlink.LinkSetMulticastOn(other); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(other); err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("10.99.0.1/24")
		if err := netlink.AddrAdd(other, addr); err != nil {
			return fmt.Errorf("address other0: %w", err)
		}
		for _, dst := range []string{"0.0.0.0/0", "224.0.0.0/4"} {
			_, ipn, _ := net.ParseCIDR(dst)
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: other.Attrs().Index, Dst: ipn}); err != nil {
				return fmt.Errorf("route %s dev other0: %w", dst, err)
			}
		}
		return nil
	})
	return l
}

// udpSocket opens a UDP socket inside the namespace with options set before
// bind and connect, the way the kernel sets up its own sync sockets.
func udpSocket(ns *netnsThread, network string, laddr *net.UDPAddr, raddr string, opts func(fd int) error) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := ns.do(func() error {
		ctl := func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = opts(int(fd)) }); err != nil {
				return err
			}
			return serr
		}
		if raddr != "" {
			d := net.Dialer{LocalAddr: laddr, Control: ctl}
			conn, err := d.Dial(network, raddr)
			if err != nil {
				return err
			}
			c = conn.(*net.UDPConn)
			return nil
		}
		lc := net.ListenConfig{Control: ctl}
		conn, err := lc.ListenPacket(context.Background(), network, laddr.String())
		if err != nil {
			return err
		}
		c = conn.(*net.UDPConn)
		return nil
	})
	return c, err
}

// kernelMaster imitates make_send_sock: multicast interface = the link,
// loopback off (unless loop), TTL 1, no PMTU discovery, bound to the link's
// address (IPv4), connected to group:port.
func kernelMaster(ns *netnsThread, l *Link, group netip.Addr, port uint16, loop bool) (*net.UDPConn, error) {
	loopVal := 0
	if loop {
		loopVal = 1
	}
	idx := l.Index()
	if group.Is4() {
		return udpSocket(ns, "udp4", &net.UDPAddr{IP: l.Config().Addr.Addr().AsSlice()},
			net.JoinHostPort(group.String(), strconv.Itoa(int(port))),
			func(fd int) error {
				return errors.Join(
					unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(idx)}),
					unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, loopVal),
					unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, 1),
					unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT),
				)
			})
	}
	return udpSocket(ns, "udp6", nil,
		net.JoinHostPort(group.String()+"%"+l.Name(), strconv.Itoa(int(port))),
		func(fd int) error {
			return errors.Join(
				unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, idx),
				unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, loopVal),
				unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 1),
				unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT),
			)
		})
}

// kernelBackup imitates make_receive_sock: reuse, bound to the device and
// to group:port, member of the group on the link.
func kernelBackup(ns *netnsThread, l *Link, group netip.Addr, port uint16) (*net.UDPConn, error) {
	idx := l.Index()
	network := "udp4"
	if group.Is6() {
		network = "udp6"
	}
	return udpSocket(ns, network, &net.UDPAddr{IP: group.AsSlice(), Port: int(port)}, "",
		func(fd int) error {
			errs := []error{
				unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1),
				// As net.ipv4.vs.sync_sock_size would: the default buffer
				// holds only about 90 full-size messages.
				unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20),
				unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, l.Name()),
			}
			if group.Is4() {
				errs = append(errs, unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP,
					&unix.IPMreqn{Multiaddr: group.As4(), Ifindex: int32(idx)}))
			} else {
				errs = append(errs, unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP,
					&unix.IPv6Mreq{Multiaddr: group.As16(), Interface: uint32(idx)}))
			}
			return errors.Join(errs...)
		})
}

// sniffed is one frame to a group seen by the namespace-wide sniffer.
type sniffed struct {
	ifindex int
	pkttype uint8
	payload string
}

// sniffer records every UDP frame to group on every interface of the
// namespace, whatever its direction, to prove what did not happen.
type sniffer struct {
	conn  *socket.Conn
	group netip.Addr
}

func newSniffer(tb testing.TB, ns *netnsThread, group netip.Addr) *sniffer {
	tb.Helper()
	s := &sniffer{group: group}
	ns.must(tb, func() error {
		c, err := socket.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)), "sniffer", nil)
		if err != nil {
			return err
		}
		s.conn = c
		return c.SetReadBuffer(8 << 20)
	})
	tb.Cleanup(func() { s.conn.Close() })
	return s
}

// drain returns what arrived, waiting until nothing has arrived for quiet.
func (s *sniffer) drain(quiet time.Duration) ([]sniffed, error) {
	var out []sniffed
	buf := make([]byte, 1<<17)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), quiet)
		n, from, err := s.conn.Recvfrom(ctx, buf, 0)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		sll := from.(*unix.SockaddrLinklayer)
		payload, v := parseFrame(buf[:n], filterSpec{group: s.group, port: 1, count: 65535})
		if v == frameOther {
			continue
		}
		out = append(out, sniffed{ifindex: sll.Ifindex, pkttype: sll.Pkttype, payload: string(payload)})
	}
}

func requireRoot(tb testing.TB) {
	tb.Helper()
	nstest.RequireRoot(tb, "create a throwaway network namespace with a sync link")
}
