package wire

import (
	"bytes"
	"errors"
	"testing"
)

// rawV1 builds a v1 datagram from raw entries: it pads between entries,
// fixes the size field and sets nr_conns to nr.
func rawV1(nr int, entries ...[]byte) []byte {
	b := []byte{0, 1, 0, 0, byte(nr), 1, 0, 0}
	for i, e := range entries {
		if i > 0 {
			for len(b)%4 != 0 {
				b = append(b, 0)
			}
		}
		b = append(b, e...)
	}
	return fixSize(b)
}

func fixSize(b []byte) []byte {
	if len(b) >= 4 {
		be.PutUint16(b[2:], uint16(len(b)))
	}
	return b
}

// rawEntry is a valid IPv4 TCP entry followed by opts, with ver_size
// covering it all unless size >= 0.
func rawEntry(typ byte, size int, opts ...byte) []byte {
	hdr := EntryLenV4
	if typ&1 != 0 {
		hdr = EntryLenV6
	}
	e := make([]byte, hdr, hdr+len(opts))
	e[0], e[1] = typ, ProtoTCP
	e[7] = FlagDRoute
	e[9] = 1
	for i := 24; i < hdr; i++ {
		e[i] = 10 // addresses 10.10.10.10 or 0a0a::...
	}
	e = append(e, opts...)
	if size < 0 {
		size = len(e)
	}
	be.PutUint16(e[2:], uint16(size))
	return e
}

func seqOpt(typ byte, n int) []byte {
	return append([]byte{typ, byte(n)}, make([]byte, n)...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func rawV0(nr int, entries ...[]byte) []byte {
	return fixSize(append([]byte{byte(nr), 1, 0, 0}, cat(entries...)...))
}

func rawV0Entry(flags uint16) []byte {
	e := make([]byte, EntryLenV0)
	e[1] = ProtoTCP
	for i := 8; i < 20; i++ {
		e[i] = 10
	}
	be.PutUint16(e[20:], flags)
	e[23] = 1
	if flags&FlagSeqMask != 0 {
		e = append(e, make([]byte, SeqDataLen)...)
	}
	return e
}

type malformedCase struct {
	name string
	b    []byte
	want error // nil: decodes
}

func malformedCases() []malformedCase {
	okEntry := rawEntry(0, -1)
	return []malformedCase{
		{"empty", nil, ErrTruncated},
		{"3 bytes", []byte{1, 1, 0}, ErrTruncated},
		{"size too big", []byte{0, 1, 0, 9, 0, 1, 0, 0}, ErrBadSize},
		{"size too small", []byte{0, 1, 0, 7, 0, 1, 0, 0}, ErrBadSize},
		{"v0 size wrong", cat([]byte{1, 1, 0, 4}, rawV0Entry(0)), ErrBadSize},
		{"v1 header cut short", []byte{0, 1, 0, 6, 0, 1}, ErrTruncated},
		{"version 2", []byte{0, 1, 0, 8, 0, 2, 0, 0}, ErrBadVersion},
		{"version 0", []byte{0, 1, 0, 8, 0, 0, 0, 0}, ErrBadVersion},
		{"version -1", []byte{0, 1, 0, 8, 0, 0xff, 0, 0}, ErrBadVersion},
		{"spare", []byte{0, 1, 0, 8, 0, 1, 0, 1}, ErrReserved},
		{"nr_conns 1, no entry", rawV1(1), ErrTruncated},
		{"nr_conns 2, one entry", rawV1(2, okEntry), ErrTruncated},
		{"nr_conns 0, one entry", rawV1(0, okEntry), ErrTrailingData},
		{"entry shorter than 36", rawV1(1, okEntry[:35]), ErrTruncated},
		{"ver_size past end", rawV1(1, rawEntry(0, 40)), ErrTruncated},
		{"entry version 1", rawV1(1, rawEntry(0, 0x1024)), ErrBadVersion},
		{"entry version 15", rawV1(1, rawEntry(0, 0xf024)), ErrBadVersion},
		{"type 2", rawV1(1, rawEntry(2, -1)), ErrBadType},
		{"type 3", rawV1(1, rawEntry(3, -1)), ErrBadType},
		{"type 0x80", rawV1(1, rawEntry(0x80, -1)), ErrBadType},
		{"ver_size 35", rawV1(1, rawEntry(0, 35)), ErrBadSize},
		{"ver_size 0", rawV1(1, rawEntry(0, 0)), ErrBadSize},
		{"IPv6 type, IPv4 size", rawV1(1, rawEntry(1, -1)[:36]), ErrTruncated},
		{"IPv6 type, ver_size 36", func() []byte {
			e := rawEntry(1, 36)
			return rawV1(1, e[:36])
		}(), ErrBadSize},
		{"IPv6 cut short", rawV1(1, rawEntry(1, 72)[:60]), ErrTruncated},
		{"stray option byte", rawV1(1, rawEntry(0, -1, 2)), ErrBadOption},
		{"option length 0", rawV1(1, rawEntry(0, -1, 2, 0)), ErrBadOption},
		{"option past entry", rawV1(1, rawEntry(0, -1, 2, 5, 'a')), ErrBadOption},
		{"option past ver_size, inside datagram", rawV1(1, rawEntry(0, 39, 2, 5, 'a', 'b', 'c', 'd', 'e')), ErrBadOption},
		{"seq data 23", rawV1(1, rawEntry(0, -1, seqOpt(1, 23)...)), ErrBadOption},
		{"seq data 25", rawV1(1, rawEntry(0, -1, seqOpt(1, 25)...)), ErrBadOption},
		{"seq data twice", rawV1(1, rawEntry(0, -1, cat(seqOpt(1, 24), seqOpt(1, 24))...)), ErrBadOption},
		{"seq data twice, optional bit", rawV1(1, rawEntry(0, -1, cat(seqOpt(0x41, 24), seqOpt(1, 24))...)), ErrBadOption},
		{"pe data twice", rawV1(1, rawEntry(0, -1, 2, 1, 'a', 2, 1, 'b')), ErrBadOption},
		{"pe name twice", rawV1(1, rawEntry(0, -1, 3, 1, 'a', 3, 1, 'b')), ErrBadOption},
		{"pe name 17", rawV1(1, rawEntry(0, -1, append([]byte{3, 17}, bytes.Repeat([]byte{'s'}, 17)...)...)), ErrBadOption},
		{"unknown mandatory 4", rawV1(1, rawEntry(0, -1, 4, 1, 0)), ErrUnknownOption},
		{"unknown mandatory 0", rawV1(1, rawEntry(0, -1, 0, 1, 0)), ErrUnknownOption},
		{"unknown mandatory 0x87", rawV1(1, rawEntry(0, -1, 0x87, 1, 0)), ErrUnknownOption},
		{"padding not zero", func() []byte {
			b := rawV1(2, rawEntry(0, -1, 2, 1, 'a'), okEntry)
			b[8+39] = 1
			return b
		}(), ErrReserved},
		{"unpadded last entry", rawV1(1, rawEntry(0, -1, 2, 1, 'a')), nil},
		{"trailing data", fixSize(cat(rawV1(1, okEntry), []byte{0, 0, 0, 0})), ErrTrailingData},
		{"trailing byte after padding", fixSize(cat(rawV1(1, rawEntry(0, -1, 2, 1, 'a')), []byte{0, 0, 0, 1})), ErrTrailingData},
		{"last entry with nonzero partial padding", fixSize(cat(rawV1(1, rawEntry(0, -1, 2, 1, 'a')), []byte{7})), ErrReserved},

		{"optional unknown options skipped", rawV1(1, rawEntry(0, -1, 0x44, 2, 9, 9, 0x40, 1, 0)), nil},
		{"known options with the optional bit", rawV1(1, rawEntry(0, -1, cat(seqOpt(0x41, 24), []byte{0x42, 1, 'd', 0x43, 3, 's', 'i', 'p'})...)), nil},
		{"options out of order, IPv6", rawV1(2, rawEntry(1, -1, cat([]byte{3, 3, 's', 'i', 'p', 2, 1, 'd'}, seqOpt(1, 24))...), okEntry), nil},

		{"v0 nr 1, no entry", rawV0(1), ErrTruncated},
		{"v0 entry cut short", rawV0(1, rawV0Entry(0)[:23]), ErrTruncated},
		{"v0 without seq flag", rawV0(1, rawV0Entry(0)), nil},
		{"v0 in-seq flag without data", rawV0(1, rawV0Entry(FlagInSeq)[:24]), ErrTruncated},
		{"v0 out-seq flag, short data", rawV0(1, rawV0Entry(FlagOutSeq)[:47]), ErrTruncated},
		{"v0 reserved byte", rawV0(1, func() []byte { e := rawV0Entry(0); e[0] = 1; return e }()), ErrReserved},
		{"v0 trailing", rawV0(1, rawV0Entry(0), []byte{0}), ErrTrailingData},
		{"v0 nr 0 with an entry", rawV0(0, rawV0Entry(0)), ErrBadVersion},
		{"v1 header with reserved set is v0", func() []byte {
			b := rawV1(1, okEntry)
			b[0] = 1
			return b
		}(), ErrReserved},
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, tc := range malformedCases() {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Decode(tc.b)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v (%d conns), want %v", err, len(m.Conns), tc.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Detail == "" {
				t.Fatalf("not a detailed *Error: %#v", err)
			}
		})
	}
}

func TestDecodeKernelLeniency(t *testing.T) {
	// The kernel skips unknown options that have the optional bit.
	m, err := Decode(rawV1(1, rawEntry(0, -1, 0x44, 2, 9, 9, 0x40, 1, 0)))
	if err != nil || len(m.Conns) != 1 {
		t.Fatalf("optional unknown options: %v", err)
	}
	// ... and takes a known type with the optional bit as that type.
	seq := seqOpt(0x41, 24)
	seq[2+3] = 7
	m, err = Decode(rawV1(1, rawEntry(0, -1, cat(seq, []byte{0x42, 1, 'd', 0x43, 3, 's', 'i', 'p'})...)))
	if err != nil {
		t.Fatal(err)
	}
	c := m.Conns[0]
	if c.Seq == nil || c.Seq.In.InitSeq != 7 || string(c.PEData) != "d" || c.PEName != "sip" {
		t.Fatalf("got %v", c)
	}
	// Options in any order.
	m, err = Decode(rawV1(1, rawEntry(0, -1, cat([]byte{3, 3, 's', 'i', 'p', 2, 1, 'd'}, seqOpt(1, 24))...)))
	if err != nil || m.Conns[0].PEName != "sip" || m.Conns[0].Seq == nil {
		t.Fatal(m, err)
	}
	// A padded last entry is accepted, though the kernel never sends one.
	b := fixSize(cat(rawV1(1, rawEntry(0, -1, 2, 1, 'a')), []byte{0}))
	if _, err := Decode(b); err != nil {
		t.Fatal(err)
	}
	// An empty v0 datagram.
	if m, err := Decode([]byte{0, 4, 0, 4}); err != nil || m.Version != 0 || m.SyncID != 4 {
		t.Fatal(m, err)
	}
}

func TestDecodeErrorLocation(t *testing.T) {
	b := rawV1(3, okEntryFor(t), rawEntry(0, -1, 2, 1, 'a'), rawEntry(0, -1, 9, 1, 0))
	_, err := Decode(b)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatal(err)
	}
	// Third entry at 8 + 36 + 40 (39 padded); its option at +36.
	if e.Entry != 2 || e.Offset != 8+36+40+36 || !errors.Is(err, ErrUnknownOption) {
		t.Fatalf("%+v", e)
	}
	if got := err.Error(); got != "wire: entry 2 at offset 120: unknown mandatory option: option type 9 (the kernel drops the entry)" {
		t.Fatal(got)
	}
	var m Message
	if err := DecodeInto(b, &m); err == nil || len(m.Conns) != 2 {
		t.Fatalf("partial result: %d conns", len(m.Conns))
	}
}

func okEntryFor(*testing.T) []byte { return rawEntry(0, -1) }

// Every truncation and many single-byte corruptions of the golden vectors
// either decode or fail with a located sentinel error; none panics.
func TestDecodeMutations(t *testing.T) {
	sentinels := []error{ErrTruncated, ErrBadSize, ErrBadVersion, ErrBadType, ErrBadOption, ErrUnknownOption, ErrReserved, ErrTrailingData}
	check := func(b []byte) {
		t.Helper()
		m, err := Decode(b)
		if err == nil {
			roundTripDecoded(t, b, m)
			return
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("% x: %v is not an *Error", b, err)
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("% x: %v wraps no sentinel", b, err)
	}
	for _, g := range goldens {
		for n := range len(g.bytes) {
			check(g.bytes[:n])
			check(fixSize(bytes.Clone(g.bytes[:n])))
		}
		for i := range g.bytes {
			for _, v := range []byte{0, 1, 2, 3, 0x40, 0x41, 0x7f, 0x80, 0xff, g.bytes[i] ^ 0x10} {
				b := bytes.Clone(g.bytes)
				b[i] = v
				check(b)
				check(fixSize(b))
			}
		}
	}
}

// roundTripDecoded re-encodes a decoded message without validation, in the
// same version, and checks that it decodes to the same message and that the
// encoding is canonical (a fixed point).
func roundTripDecoded(t testing.TB, orig []byte, m Message) {
	t.Helper()
	b, err := NewBuilder(m.Version, m.SyncID, MaxMessageLen)
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Conns {
		ok, err := b.AddUnchecked(&m.Conns[i])
		if !ok || err != nil {
			t.Fatalf("% x: re-encoding entry %d: %v %v", orig, i, ok, err)
		}
	}
	enc := bytes.Clone(b.Bytes())
	if len(enc) > len(orig) {
		t.Fatalf("% x: re-encoding grew to % x", orig, enc)
	}
	m2, err := Decode(enc)
	if err != nil {
		t.Fatalf("% x: re-encoded % x does not decode: %v", orig, enc, err)
	}
	if d := diffMessage(m2, m); d != "" {
		t.Fatalf("% x: re-encoded % x differs: %s", orig, enc, d)
	}
	b.Reset()
	for i := range m2.Conns {
		_, _ = b.AddUnchecked(&m2.Conns[i])
	}
	if !bytes.Equal(b.Bytes(), enc) {
		t.Fatalf("encoding not canonical:\n% x\n% x", enc, b.Bytes())
	}
}
