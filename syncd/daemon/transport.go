package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/peerlvs/peerlvs/syncd/table"
)

// Transport carries datagrams between this node and its peers.
type Transport interface {
	// Recv blocks until a datagram arrives (or ctx is done / the
	// transport is closed) and copies it into buf.
	Recv(ctx context.Context, buf []byte) (n int, from netip.AddrPort, err error)
	// Send sends b to the nodes in to, or to everyone when to is nil.
	Send(b []byte, to []table.NodeID) error
	// Learn records that node id sends from addr (unicast addressing).
	Learn(id table.NodeID, addr netip.AddrPort)
	Close() error
}

// udpTransport is a UDP socket, multicast or unicast.
type udpTransport struct {
	conn  *net.UDPConn
	group netip.AddrPort   // multicast: where everything goes
	peers []netip.AddrPort // unicast: everyone
	self  map[netip.AddrPort]bool

	mu    sync.Mutex
	addrs map[table.NodeID]netip.AddrPort
}

// openUDP opens the peer transport described by p.
func openUDP(p PeerConfig) (*udpTransport, error) {
	t := &udpTransport{self: map[netip.AddrPort]bool{}, addrs: map[table.NodeID]netip.AddrPort{}}
	if p.Listen != "" {
		ap, _ := netip.ParseAddrPort(p.Listen)
		t.self[ap] = true
	}
	switch p.Mode {
	case ModeUnicast:
		la, err := netip.ParseAddrPort(p.Listen)
		if err != nil {
			return nil, fmt.Errorf("peer.listen: %w", err)
		}
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(la))
		if err != nil {
			return nil, fmt.Errorf("peer transport: listen on %s: %w (is the address configured on this host?)", la, err)
		}
		t.conn = c
		for _, s := range p.Peers {
			ap, err := netip.ParseAddrPort(s)
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("peer.peers: %w", err)
			}
			if ap == la {
				continue
			}
			t.peers = append(t.peers, ap)
		}
	default:
		g, err := netip.ParseAddr(p.Group)
		if err != nil {
			return nil, fmt.Errorf("peer.group: %w", err)
		}
		ifi, err := net.InterfaceByName(p.Interface)
		if err != nil {
			return nil, fmt.Errorf("peer.interface %q: %w", p.Interface, err)
		}
		gap := netip.AddrPortFrom(g, uint16(p.Port))
		network := "udp4"
		if g.Is6() {
			network = "udp6"
		}
		c, err := net.ListenMulticastUDP(network, ifi, net.UDPAddrFromAddrPort(gap))
		if err != nil {
			return nil, fmt.Errorf("peer transport: join %s on %s: %w", gap, p.Interface, err)
		}
		t.conn, t.group = c, gap
		if err := multicastOpts(c, ifi, g.Is6(), p.TTL); err != nil {
			c.Close()
			return nil, fmt.Errorf("peer transport on %s: %w", p.Interface, err)
		}
		// Our own frames: any address of the interface on our port.
		if addrs, err := ifi.Addrs(); err == nil {
			for _, a := range addrs {
				if pfx, err := netip.ParsePrefix(a.String()); err == nil {
					t.self[netip.AddrPortFrom(pfx.Addr(), uint16(p.Port))] = true
				}
			}
		}
	}
	size := p.RecvBuffer
	if size == 0 {
		size = DefaultRecvBuffer
	}
	if err := setRecvBuffer(t.conn, size); err != nil {
		t.conn.Close()
		return nil, fmt.Errorf("peer transport: receive buffer of %d bytes: %w", size, err)
	}
	return t, nil
}

// DefaultRecvBuffer is the peer socket's receive buffer unless configured.
const DefaultRecvBuffer = 8 << 20

// setRecvBuffer sizes the socket's receive buffer. SO_RCVBUFFORCE, which
// needs CAP_NET_ADMIN (syncd has it anyway), is not capped by
// net.core.rmem_max; without the capability the capped size is used.
func setRecvBuffer(c *net.UDPConn, size int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
	}); err != nil {
		return err
	}
	if serr != nil {
		return c.SetReadBuffer(size)
	}
	return nil
}

// multicastOpts sets the outgoing interface, TTL and loopback off.
func multicastOpts(c *net.UDPConn, ifi *net.Interface, v6 bool, ttl int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		s := int(fd)
		if v6 {
			if serr = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi.Index); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, ttl); serr != nil {
				return
			}
			serr = unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0)
			return
		}
		mreq := &unix.IPMreqn{Ifindex: int32(ifi.Index)}
		if serr = unix.SetsockoptIPMreqn(s, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, mreq); serr != nil {
			return
		}
		if serr = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, ttl); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0)
	})
	if err != nil {
		return err
	}
	return serr
}

func (t *udpTransport) Recv(ctx context.Context, buf []byte) (int, netip.AddrPort, error) {
	for {
		if err := ctx.Err(); err != nil {
			return 0, netip.AddrPort{}, err
		}
		_ = t.conn.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, from, err := t.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return 0, from, err
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if t.self[from] {
			continue // our own frame
		}
		return n, from, nil
	}
}

func (t *udpTransport) Send(b []byte, to []table.NodeID) error {
	if t.group.IsValid() {
		_, err := t.conn.WriteToUDPAddrPort(b, t.group)
		return err
	}
	var errs []error
	send := func(ap netip.AddrPort) {
		if _, err := t.conn.WriteToUDPAddrPort(b, ap); err != nil {
			errs = append(errs, err)
		}
	}
	if to != nil {
		t.mu.Lock()
		var addrs []netip.AddrPort
		all := false
		for _, id := range to {
			ap, ok := t.addrs[id]
			if !ok {
				all = true // not heard yet: everyone
				break
			}
			addrs = append(addrs, ap)
		}
		t.mu.Unlock()
		if !all {
			for _, ap := range addrs {
				send(ap)
			}
			return errors.Join(errs...)
		}
	}
	for _, ap := range t.peers {
		send(ap)
	}
	return errors.Join(errs...)
}

func (t *udpTransport) Learn(id table.NodeID, addr netip.AddrPort) {
	if t.group.IsValid() {
		return
	}
	t.mu.Lock()
	t.addrs[id] = addr
	t.mu.Unlock()
}

func (t *udpTransport) Close() error { return t.conn.Close() }

// MemHub is an in-memory datagram network for tests: every transport on it
// receives what the others send (never its own).
type MemHub struct {
	mu    sync.Mutex
	ports map[netip.AddrPort]*MemTransport
	// Drop, if set, decides whether a datagram from→to is lost.
	Drop func(from, to netip.AddrPort, b []byte) bool
}

// NewMemHub returns an empty hub.
func NewMemHub() *MemHub { return &MemHub{ports: map[netip.AddrPort]*MemTransport{}} }

// MemTransport is one node's end of a MemHub.
type MemTransport struct {
	hub  *MemHub
	addr netip.AddrPort
	ch   chan memDgram
	done chan struct{}
	once sync.Once
}

type memDgram struct {
	b    []byte
	from netip.AddrPort
}

// Attach adds a transport at addr.
func (h *MemHub) Attach(addr netip.AddrPort) *MemTransport {
	t := &MemTransport{hub: h, addr: addr, ch: make(chan memDgram, 4096), done: make(chan struct{})}
	h.mu.Lock()
	h.ports[addr] = t
	h.mu.Unlock()
	return t
}

// Inject delivers b to the transport at to as if sent from from.
func (h *MemHub) Inject(from, to netip.AddrPort, b []byte) {
	h.mu.Lock()
	t := h.ports[to]
	h.mu.Unlock()
	if t != nil {
		t.deliver(from, b)
	}
}

func (t *MemTransport) deliver(from netip.AddrPort, b []byte) {
	select {
	case t.ch <- memDgram{append([]byte(nil), b...), from}:
	default: // full: lost, like UDP
	}
}

// Recv implements Transport.
func (t *MemTransport) Recv(ctx context.Context, buf []byte) (int, netip.AddrPort, error) {
	select {
	case d := <-t.ch:
		return copy(buf, d.b), d.from, nil
	case <-ctx.Done():
		return 0, netip.AddrPort{}, ctx.Err()
	case <-t.done:
		return 0, netip.AddrPort{}, net.ErrClosed
	}
}

// Send implements Transport: to everyone on the hub (like multicast).
func (t *MemTransport) Send(b []byte, _ []table.NodeID) error {
	t.hub.mu.Lock()
	var dst []*MemTransport
	for a, p := range t.hub.ports {
		if a != t.addr && (t.hub.Drop == nil || !t.hub.Drop(t.addr, a, b)) {
			dst = append(dst, p)
		}
	}
	t.hub.mu.Unlock()
	for _, p := range dst {
		p.deliver(t.addr, b)
	}
	return nil
}

// Learn implements Transport.
func (t *MemTransport) Learn(table.NodeID, netip.AddrPort) {}

// Close detaches the transport.
func (t *MemTransport) Close() error {
	t.once.Do(func() {
		t.hub.mu.Lock()
		delete(t.hub.ports, t.addr)
		t.hub.mu.Unlock()
		close(t.done)
	})
	return nil
}
