package filter

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"strings"
)

// Sense names the flow fields a bucket is computed from.
type Sense uint8

const (
	// SensePort hashes the client's transport port only.
	SensePort Sense = iota + 1
	// SenseAddr hashes the client's address only.
	SenseAddr
	// SenseAddrPort hashes the client's address and transport port.
	SenseAddrPort
)

// String returns the configuration spelling of s.
func (s Sense) String() string {
	switch s {
	case SensePort:
		return "port"
	case SenseAddr:
		return "addr"
	case SenseAddrPort:
		return "addrport"
	}
	return fmt.Sprintf("sense(%d)", uint8(s))
}

// ParseSense is the inverse of Sense.String.
func ParseSense(s string) (Sense, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "port":
		return SensePort, nil
	case "addr":
		return SenseAddr, nil
	case "addrport":
		return SenseAddrPort, nil
	}
	return 0, fmt.Errorf("filter: unknown sense %q (want port, addr or addrport)", s)
}

func (s Sense) valid() bool { return s >= SensePort && s <= SenseAddrPort }

func (s Sense) usesAddr() bool { return s == SenseAddr || s == SenseAddrPort }
func (s Sense) usesPort() bool { return s == SensePort || s == SenseAddrPort }

// IP protocol numbers the filter distinguishes.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// Flow is one packet's identity as the filter sees it. For a request Src is
// the client and Dst the VIP; for a NAT reply Src is the real server and Dst
// the client. Ports are ignored for ICMP.
type Flow struct {
	Proto uint8
	Src   netip.AddrPort
	Dst   netip.AddrPort
}

// Hasher is the userspace twin of the kernel's nft_hash (jhash) expression
// as this package renders it: Bucket(f) is the bucket the kernel of every
// director computes for f, so saru can tell which director owns a flow
// without asking a kernel. The kernel's jhash reads whole words in host
// byte order, so a fleet must not mix little- and big-endian directors.
type Hasher struct {
	Sense   Sense
	Seed    uint32
	Buckets uint32
}

// Bucket returns the bucket of a request flow (client -> VIP): the client is
// f.Src. ICMP echo is hashed by address whatever the sense, as the rules do.
// The result is only meaningful for TCP, UDP, SCTP and ICMP echo; the rules
// let everything else through on every director.
func (h Hasher) Bucket(f Flow) uint32 {
	return h.ClientBucket(f.Proto, f.Src)
}

// ReplyBucket returns the bucket of a NAT reply flow (real server ->
// client): the client is f.Dst, so a reply lands in its request's bucket.
func (h Hasher) ReplyBucket(f Flow) uint32 {
	return h.ClientBucket(f.Proto, f.Dst)
}

// ClientBucket returns the bucket of the connection whose client side is
// client. IPv4-mapped IPv6 addresses count as IPv4 because the kernel sees
// such clients as IPv4 packets.
func (h Hasher) ClientBucket(proto uint8, client netip.AddrPort) uint32 {
	var buf [20]byte
	key := hashKey(buf[:0], h.senseFor(proto), client)
	return reciprocalScale(jhash(key, h.Seed), h.Buckets)
}

func (h Hasher) senseFor(proto uint8) Sense {
	if proto == ProtoICMP || proto == ProtoICMPv6 {
		return SenseAddr
	}
	return h.Sense
}

// hashKey appends the bytes the rendered payload loads leave in the
// registers: addresses in network order, the port as the 2 big-endian bytes
// of the transport header, and when a port follows an address it sits in a
// register of its own whose 2 trailing bytes the payload expression zeroes.
// A lone port is hashed as 2 bytes, not 4, because the rule passes length 2.
func hashKey(dst []byte, s Sense, client netip.AddrPort) []byte {
	addr := client.Addr().Unmap()
	if s.usesAddr() {
		dst = append(dst, addr.AsSlice()...)
	}
	if s.usesPort() {
		dst = binary.BigEndian.AppendUint16(dst, client.Port())
		if s.usesAddr() {
			dst = append(dst, 0, 0)
		}
	}
	return dst
}

// jhash is Bob Jenkins' lookup3 hash as the kernel's jhash() computes it:
// whole 12-byte blocks are read as host-order words, the tail byte by byte
// as little-endian, and an empty key skips the final mix.
func jhash(key []byte, initval uint32) uint32 {
	n := uint32(len(key))
	a := 0xdeadbeef + n + initval
	b, c := a, a
	for len(key) > 12 {
		a += binary.NativeEndian.Uint32(key[0:])
		b += binary.NativeEndian.Uint32(key[4:])
		c += binary.NativeEndian.Uint32(key[8:])
		a, b, c = jhashMix(a, b, c)
		key = key[12:]
	}
	if len(key) == 0 {
		return c
	}
	var tail [12]byte
	copy(tail[:], key)
	a += binary.LittleEndian.Uint32(tail[0:])
	b += binary.LittleEndian.Uint32(tail[4:])
	c += binary.LittleEndian.Uint32(tail[8:])
	_, _, c = jhashFinal(a, b, c)
	return c
}

func jhashMix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

func jhashFinal(a, b, c uint32) (uint32, uint32, uint32) {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return a, b, c
}

// reciprocalScale maps a 32-bit hash onto [0, n) by multiplication, as the
// kernel does instead of a modulo.
func reciprocalScale(h, n uint32) uint32 {
	return uint32((uint64(h) * uint64(n)) >> 32)
}
