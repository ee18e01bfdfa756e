package health

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// IANA protocol numbers, to parse ICMP messages.
const (
	protoICMP   = 1
	protoICMPv6 = 58
)

// icmpPayload marks our echo requests for whoever captures them.
const icmpPayload = "PeerLVS health check"

func (p *prober) icmp() error {
	dst := p.target.Addr.Addr()
	network, laddr, proto := "ip4:icmp", "0.0.0.0", protoICMP
	var request, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, laddr, proto = "ip6:ipv6-icmp", "::", protoICMPv6
		request, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	if p.spec.Source.IsValid() {
		laddr = p.spec.Source.String()
	}
	c, err := icmp.ListenPacket(network, laddr)
	if err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("raw socket: %w (ICMP checks need root or CAP_NET_RAW)", err)
		}
		return p.fail("raw socket", err)
	}
	defer c.Close()
	defer watch(p.ctx, c)()
	// A raw socket sees every ICMP message to the host: let the kernel drop
	// all but echo replies. Failing that, the loop below still sorts them.
	if dst.Is6() {
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeEchoReply)
		_ = c.IPv6PacketConn().SetICMPFilter(&f)
	} else {
		var f ipv4.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv4.ICMPTypeEchoReply)
		_ = c.IPv4PacketConn().SetICMPFilter(&f)
	}

	// A random ID keeps concurrent probes of the same server, and other
	// pingers, from taking each other's replies.
	id, seq := rand.N(1<<16), rand.N(1<<16)
	msg := icmp.Message{Type: request, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte(icmpPayload)}}
	// For ICMPv6 the kernel computes the checksum over its pseudo-header.
	b, err := msg.Marshal(nil)
	if err != nil {
		return fmt.Errorf("echo request: %w", err)
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice(), Zone: dst.Zone()}); err != nil {
		return p.fail("echo request", err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return p.fail("echo reply", err)
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != reply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || e.ID != id || e.Seq != seq {
			continue
		}
		if ip, ok := from.(*net.IPAddr); ok {
			a, _ := netip.AddrFromSlice(ip.IP)
			if a.Unmap() != dst.WithZone("") {
				continue
			}
		}
		return nil
	}
}
