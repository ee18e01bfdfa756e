package synclink

import (
	"encoding/binary"
	"net/netip"
)

// verdict is what parseFrame made of a frame.
type verdict int

const (
	frameOK        verdict = iota
	frameOther             // well-formed, but not UDP to our group and ports
	frameFragment          // an IP fragment of something to our group
	frameMalformed         // headers that do not add up
)

const (
	etherHdrLen = 14
	ipv4HdrMin  = 20
	ipv6HdrLen  = 40
	udpHdrLen   = 8

	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86DD
	protoUDP      = 17
	ipv6Frag      = 44
)

// filterSpec says which datagrams a Tap wants: UDP to group, destination
// port in [port, port+count).
type filterSpec struct {
	group netip.Addr
	port  uint16
	count int
}

func (f filterSpec) wantPort(p uint16) bool {
	return int(p) >= int(f.port) && int(p) < int(f.port)+f.count
}

// parseFrame extracts the UDP payload of an Ethernet frame carrying IPv4 or
// IPv6. It checks only what a sender on this host can get wrong or what
// truncation can break: lengths, versions, fragmentation. Checksums are not
// checked on purpose: frames captured on the way out have not had their UDP
// checksum filled in yet when the device offloads it (a dummy advertises
// NETIF_F_HW_CSUM), and they never cross a wire that could corrupt them.
func parseFrame(frame []byte, f filterSpec) ([]byte, verdict) {
	if len(frame) < etherHdrLen {
		return nil, frameMalformed
	}
	et := binary.BigEndian.Uint16(frame[12:14])
	pkt := frame[etherHdrLen:]
	var udp []byte
	switch et {
	case etherTypeIPv4:
		if !f.group.Is4() {
			return nil, frameOther
		}
		if len(pkt) < ipv4HdrMin || pkt[0]>>4 != 4 {
			return nil, frameMalformed
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:4]))
		if ihl < ipv4HdrMin || total < ihl || total > len(pkt) {
			return nil, frameMalformed
		}
		// Ethernet padding after the IP datagram is not ours.
		pkt = pkt[:total]
		if pkt[9] != protoUDP || netip.AddrFrom4([4]byte(pkt[16:20])) != f.group {
			return nil, frameOther
		}
		if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 { // MF or offset
			return nil, frameFragment
		}
		udp = pkt[ihl:]
	case etherTypeIPv6:
		if !f.group.Is6() {
			return nil, frameOther
		}
		if len(pkt) < ipv6HdrLen || pkt[0]>>4 != 6 {
			return nil, frameMalformed
		}
		plen := int(binary.BigEndian.Uint16(pkt[4:6]))
		if plen > len(pkt)-ipv6HdrLen {
			return nil, frameMalformed
		}
		if netip.AddrFrom16([16]byte(pkt[24:40])) != f.group {
			return nil, frameOther
		}
		next := pkt[6]
		rest := pkt[ipv6HdrLen : ipv6HdrLen+plen]
		// Skip the extension headers a local sender may add; the kernel
		// master adds none.
		for next != protoUDP {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(rest) < 8 {
					return nil, frameMalformed
				}
				n := (int(rest[1]) + 1) * 8
				if n > len(rest) {
					return nil, frameMalformed
				}
				next, rest = rest[0], rest[n:]
			case ipv6Frag:
				return nil, frameFragment
			default:
				return nil, frameOther
			}
		}
		udp = rest
	default:
		return nil, frameOther
	}
	if len(udp) < udpHdrLen {
		return nil, frameMalformed
	}
	if !f.wantPort(binary.BigEndian.Uint16(udp[2:4])) {
		return nil, frameOther
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < udpHdrLen || ulen > len(udp) {
		return nil, frameMalformed
	}
	return udp[udpHdrLen:ulen], frameOK
}
