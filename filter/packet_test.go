package filter

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// pkt describes one test packet; frame renders it as an Ethernet frame for
// an AF_PACKET socket, so tests control every header byte (spoofed
// sources, fragments, TCP flags) without a routing setup.
type pkt struct {
	proto    uint8
	src, dst netip.AddrPort
	tcpFlags uint8  // TCP only
	chunk    uint8  // SCTP first chunk type
	icmpType uint8  // ICMP/ICMPv6 only; src port is the echo id
	seq      uint32 // TCP sequence / SCTP tag / ICMP sequence: a marker
	fragOff  uint16 // fragment offset in 8-byte units; >0 makes a non-first fragment
	more     bool   // more fragments follow
	payload  []byte
	rawL4    []byte // when set, sent instead of transport(): fragments of a prepared datagram
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

func (p pkt) is6() bool { return p.src.Addr().Is6() }

// transport renders the transport header and payload.
func (p pkt) transport() []byte {
	var b []byte
	switch p.proto {
	case ProtoTCP:
		b = binary.BigEndian.AppendUint16(b, p.src.Port())
		b = binary.BigEndian.AppendUint16(b, p.dst.Port())
		b = binary.BigEndian.AppendUint32(b, p.seq)
		b = binary.BigEndian.AppendUint32(b, 0)
		b = append(b, 5<<4, p.tcpFlags)
		b = binary.BigEndian.AppendUint16(b, 65535)
		b = append(b, 0, 0, 0, 0)
	case ProtoUDP:
		b = binary.BigEndian.AppendUint16(b, p.src.Port())
		b = binary.BigEndian.AppendUint16(b, p.dst.Port())
		b = binary.BigEndian.AppendUint16(b, uint16(8+len(p.payload)))
		b = append(b, 0, 0)
	case ProtoSCTP:
		b = binary.BigEndian.AppendUint16(b, p.src.Port())
		b = binary.BigEndian.AppendUint16(b, p.dst.Port())
		b = binary.BigEndian.AppendUint32(b, p.seq)
		b = append(b, 0, 0, 0, 0)          // checksum, unchecked before the hook
		b = append(b, p.chunk, 0, 0, 20)   // chunk header
		b = append(b, make([]byte, 16)...) // INIT's fixed part
	case ProtoICMP, ProtoICMPv6:
		b = append(b, p.icmpType, 0, 0, 0)
		b = binary.BigEndian.AppendUint16(b, p.src.Port())
		b = binary.BigEndian.AppendUint16(b, uint16(p.seq))
	}
	return append(b, p.payload...)
}

func (p pkt) frame(dstMAC, srcMAC net.HardwareAddr) []byte {
	l4 := p.rawL4
	if l4 == nil {
		l4 = p.transport()
	}
	b := append([]byte{}, dstMAC...)
	b = append(b, srcMAC...)
	if !p.is6() {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IP)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(ip[4:], uint16(p.seq))
		frag := p.fragOff & 0x1fff
		if p.more {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(ip[6:], frag)
		ip[8] = 64
		ip[9] = p.proto
		s, d := p.src.Addr().As4(), p.dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
		return append(append(b, ip...), l4...)
	}
	b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IPV6)
	fragmented := p.fragOff > 0 || p.more
	next := p.proto
	plen := len(l4)
	if fragmented {
		next = unix.IPPROTO_FRAGMENT
		plen += 8
	}
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(plen))
	ip[6] = next
	ip[7] = 64
	s, d := p.src.Addr().As16(), p.dst.Addr().As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	b = append(b, ip...)
	if fragmented {
		off := p.fragOff << 3
		if p.more {
			off |= 1
		}
		b = append(b, p.proto, 0)
		b = binary.BigEndian.AppendUint16(b, off)
		b = binary.BigEndian.AppendUint32(b, p.seq)
	}
	return append(b, l4...)
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// obsKey is what the observer records for p: l4proto (padded), source and
// destination address, and the first 8 bytes of the transport header.
func (p pkt) obsKey() string {
	b := []byte{p.proto, 0, 0, 0}
	b = append(b, p.src.Addr().AsSlice()...)
	b = append(b, p.dst.Addr().AsSlice()...)
	l4 := p.rawL4
	if l4 == nil {
		l4 = p.transport()
	}
	return string(append(b, l4[:8]...))
}

func (p pkt) String() string {
	return fmt.Sprintf("proto %d %v -> %v flags %#x seq %d", p.proto, p.src, p.dst, p.tcpFlags, p.seq)
}

// sender writes raw frames to one interface of a namespace.
type sender struct {
	fd      int
	ifindex int
	mac     net.HardwareAddr
	// pace, if set, pauses after that many frames: the kernel queues
	// received frames in a per-CPU backlog of 1000 that it may drain late
	// on a busy host, and a lost frame would read as a dropped packet.
	pace int
	sent int
}

func newSender(ns *testNS, ifname string) *sender {
	ns.t.Helper()
	s := &sender{fd: -1}
	err := ns.in(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		s.ifindex, s.mac = ifi.Index, ifi.HardwareAddr
		if len(s.mac) == 0 {
			s.mac = make(net.HardwareAddr, 6)
		}
		// Protocol 0: the socket only sends and never queues received frames.
		s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		ns.t.Fatalf("packet socket on %s in %s: %v", ifname, ns.name, err)
	}
	ns.t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func (s *sender) send(dstMAC net.HardwareAddr, p pkt) error {
	proto := uint16(unix.ETH_P_IP)
	if p.is6() {
		proto = unix.ETH_P_IPV6
	}
	sa := &unix.SockaddrLinklayer{Ifindex: s.ifindex, Protocol: htons(proto)}
	if err := unix.Sendto(s.fd, p.frame(dstMAC, s.mac), 0, sa); err != nil {
		return err
	}
	s.sent++
	if s.pace > 0 && s.sent%s.pace == 0 {
		time.Sleep(200 * time.Microsecond)
	}
	return nil
}

// htons turns v into the network-order value sockaddr_ll expects in its
// host-order field.
func htons(v uint16) uint16 { return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v)) }

// udpDatagram renders a UDP header and payload with a valid checksum, as
// the receiving stack demands for IPv6 and for reassembled datagrams.
func udpDatagram(src, dst netip.AddrPort, payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	b = binary.BigEndian.AppendUint16(b, uint16(8+len(payload)))
	b = append(b, 0, 0)
	b = append(b, payload...)
	cs := l4Checksum(src.Addr(), dst.Addr(), ProtoUDP, b)
	if cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(b[6:], cs)
	return b
}

// tcpSegment renders a TCP header with a valid checksum: the receiving
// stack drops a segment with a bad one before it would answer it.
func tcpSegment(src, dst netip.AddrPort, flags uint8, seq uint32) []byte {
	b := binary.BigEndian.AppendUint16(nil, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	b = binary.BigEndian.AppendUint32(b, seq)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = append(b, 5<<4, flags)
	b = binary.BigEndian.AppendUint16(b, 65535)
	b = append(b, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(b[16:], l4Checksum(src.Addr(), dst.Addr(), ProtoTCP, b))
	return b
}

// l4Checksum is the Internet checksum of seg over the pseudo-header.
func l4Checksum(src, dst netip.Addr, proto uint8, seg []byte) uint16 {
	pseudo := append(src.AsSlice(), dst.AsSlice()...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
	pseudo = append(pseudo, 0, 0, 0, proto)
	all := append(pseudo, seg...)
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	return ipChecksum(all)
}
