package lease

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The messages travel as memberlist user messages (encrypted and
// authenticated with the gossip key). Each names the buckets of one window
// as a bitmap, so that any bucket count fits in datagrams below the path
// MTU: a set spanning more than one window is sent as several messages with
// the same sequence number, each handled on its own.
//
//	magic "PL", version u8 (1), kind u8 (1 request, 2 grant, 3 release)
//	holder name: len u8, bytes; holder run u64; seq u64
//	grant only: grantor name: len u8, bytes
//	window base u32 (a multiple of 8), bitmap len u16, bitmap (bit i of
//	byte j: bucket base + 8j + i)
const (
	wireVersion = 1

	kindRequest = 1
	kindGrant   = 2
	kindRelease = 3

	// WindowBuckets is the most buckets one message names.
	WindowBuckets = 8192
	maxNameLen    = 255
)

var magic = [2]byte{'P', 'L'}

// ErrNotLease is returned by Decode for bytes that are not a lease message
// at all (another user message), as opposed to a malformed one.
var ErrNotLease = errors.New("lease: not a lease message")

// Message is one decoded message: exactly one of the fields is set.
type Message struct {
	Request *Request
	Grant   *Grant
	Release *Release
}

// EncodeRequest returns r as messages; none if it names no bucket.
func EncodeRequest(r Request) ([][]byte, error) {
	return encode(kindRequest, r.From, r.Seq, "", r.Buckets)
}

// EncodeGrant returns g as messages; none if it grants nothing.
func EncodeGrant(g Grant) ([][]byte, error) {
	return encode(kindGrant, g.To, g.Seq, g.Grantor, g.Buckets)
}

// EncodeRelease returns r as messages; none if it names no bucket.
func EncodeRelease(r Release) ([][]byte, error) {
	return encode(kindRelease, r.From, r.UpTo, "", r.Buckets)
}

func encode(kind byte, h Holder, seq uint64, grantor string, buckets []uint32) ([][]byte, error) {
	if len(buckets) == 0 {
		return nil, nil
	}
	if len(h.Name) == 0 || len(h.Name) > maxNameLen || len(grantor) > maxNameLen || (kind == kindGrant && grantor == "") {
		return nil, fmt.Errorf("lease: encode: names must be 1..%d bytes (holder %q, grantor %q)", maxNameLen, h.Name, grantor)
	}
	windows := map[uint32][]byte{}
	var order []uint32
	for _, b := range buckets {
		base := b / WindowBuckets * WindowBuckets
		bm, ok := windows[base]
		if !ok {
			bm = make([]byte, WindowBuckets/8)
			windows[base] = bm
			order = append(order, base)
		}
		off := b - base
		bm[off/8] |= 1 << (off % 8)
	}
	var out [][]byte
	for _, base := range order {
		bm := windows[base]
		n := len(bm)
		for n > 0 && bm[n-1] == 0 {
			n--
		}
		buf := append([]byte{}, magic[0], magic[1], wireVersion, kind, byte(len(h.Name)))
		buf = append(buf, h.Name...)
		buf = binary.BigEndian.AppendUint64(buf, h.Run)
		buf = binary.BigEndian.AppendUint64(buf, seq)
		if kind == kindGrant {
			buf = append(buf, byte(len(grantor)))
			buf = append(buf, grantor...)
		}
		buf = binary.BigEndian.AppendUint32(buf, base)
		buf = binary.BigEndian.AppendUint16(buf, uint16(n))
		out = append(out, append(buf, bm[:n]...))
	}
	return out, nil
}

// Decode parses one message. It returns ErrNotLease for bytes without the
// lease magic and a descriptive error for a malformed lease message; it
// never panics on any input.
func Decode(b []byte) (Message, error) {
	if !isLease(b) {
		return Message{}, ErrNotLease
	}
	d := decoder{b: b[2:]}
	if v := d.u8(); v != wireVersion {
		return Message{}, fmt.Errorf("lease: message version %d, want %d (run the same saru release on every director)", v, wireVersion)
	}
	kind := d.u8()
	h := Holder{Name: d.name()}
	h.Run = d.u64()
	seq := d.u64()
	var grantor string
	if kind == kindGrant {
		grantor = d.name()
	}
	base := d.u32()
	n := int(d.u16())
	bm := d.bytes(n)
	if d.err != nil {
		return Message{}, d.err
	}
	if len(d.b) != 0 {
		return Message{}, fmt.Errorf("lease: %d trailing bytes", len(d.b))
	}
	if h.Name == "" || (kind == kindGrant && grantor == "") {
		return Message{}, errors.New("lease: empty director name")
	}
	if base%8 != 0 || n > WindowBuckets/8 || uint64(base)+uint64(n)*8 > 1<<32 {
		return Message{}, fmt.Errorf("lease: bucket window at %d of %d bytes out of range", base, n)
	}
	var buckets []uint32
	for j, x := range bm {
		for i := 0; i < 8; i++ {
			if x&(1<<i) != 0 {
				buckets = append(buckets, base+uint32(8*j+i))
			}
		}
	}
	switch kind {
	case kindRequest:
		return Message{Request: &Request{From: h, Seq: seq, Buckets: buckets}}, nil
	case kindGrant:
		return Message{Grant: &Grant{Grantor: grantor, To: h, Seq: seq, Buckets: buckets}}, nil
	case kindRelease:
		return Message{Release: &Release{From: h, UpTo: seq, Buckets: buckets}}, nil
	}
	return Message{}, fmt.Errorf("lease: unknown message kind %d", kind)
}

// isLease reports whether b starts like a lease message.
func isLease(b []byte) bool { return len(b) >= 2 && b[0] == magic[0] && b[1] == magic[1] }

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = fmt.Errorf("lease: message truncated (need %d more bytes, have %d)", n, len(d.b))
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u8() byte {
	if b := d.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if b := d.bytes(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if b := d.bytes(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if b := d.bytes(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (d *decoder) name() string { return string(d.bytes(int(d.u8()))) }
