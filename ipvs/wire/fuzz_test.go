package wire

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzDecode(f *testing.F) {
	for _, g := range goldens {
		f.Add(g.bytes)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%v is not an *Error", err)
			}
			switch e.Err {
			case ErrTruncated, ErrBadSize, ErrBadVersion, ErrBadType, ErrBadOption, ErrUnknownOption, ErrReserved, ErrTrailingData:
			default:
				t.Fatalf("%v wraps no decoding sentinel", err)
			}
			return
		}
		for _, c := range m.Conns {
			_ = c.Validate()
			_ = c.String()
		}
		roundTripDecoded(t, b, m)
	})
}

// fuzzReader turns fuzz bytes into field values; past the end it yields 0.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) u8() uint8 {
	if len(r.b) == 0 {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *fuzzReader) u16() uint16 { return uint16(r.u8())<<8 | uint16(r.u8()) }
func (r *fuzzReader) u32() uint32 { return uint32(r.u16())<<16 | uint32(r.u16()) }

func (r *fuzzReader) bytes(n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = r.u8()
	}
	return out
}

var fuzzFlags = []uint32{FlagMasq, FlagDRoute, FlagTunnel, FlagLocalNode, FlagBypass,
	FlagDRoute | FlagNoOutput | FlagInactive, FlagTemplate | FlagDRoute, FlagTemplate,
	FlagSeqMask, FlagNoCPort, FlagTemplate | FlagNoCPort, FlagOnePacket, FlagSync | FlagHashed | FlagNFCT, 5}

var fuzzProtos = []uint8{ProtoTCP, ProtoUDP, ProtoSCTP, ProtoAH, ProtoESP, ProtoIP, ProtoICMP}

func fuzzConn(r *fuzzReader) Conn {
	ctl := r.u8()
	var c Conn
	if p := int(ctl>>1) & 7; p < len(fuzzProtos) {
		c.Protocol = fuzzProtos[p]
	} else {
		c.Protocol = r.u8()
	}
	if ctl&0x10 != 0 {
		c.Flags = r.u32()
	} else {
		c.Flags = fuzzFlags[int(r.u8())%len(fuzzFlags)]
	}
	if ctl&0x20 != 0 {
		c.State = r.u16()
	} else {
		c.State = uint16(r.u8() % 16)
	}
	c.CPort, c.VPort, c.DPort = r.u16(), r.u16(), r.u16()
	if ctl&0x40 != 0 {
		c.Fwmark = r.u32()
	}
	c.Timeout = r.u32()
	n := 4
	if ctl&1 != 0 {
		n = 16
	}
	addrs := make([]netip.Addr, 3)
	for i := range addrs {
		a, _ := netip.AddrFromSlice(r.bytes(n))
		addrs[i] = a
	}
	c.CAddr, c.VAddr, c.DAddr = addrs[0], addrs[1], addrs[2]
	if ctl&0x80 != 0 {
		// Rarely: an address of the other family or none.
		switch r.u8() % 4 {
		case 0:
			c.DAddr = netip.MustParseAddr("::1")
		case 1:
			c.VAddr = netip.MustParseAddr("1.2.3.4")
		case 2:
			c.CAddr = netip.Addr{}
		}
	}
	opts := r.u8()
	if opts&1 != 0 {
		c.Seq = &SeqData{In: Seq{r.u32(), r.u32(), r.u32()}, Out: Seq{r.u32(), r.u32(), r.u32()}}
	}
	if opts&2 != 0 {
		c.PEData = r.bytes(int(r.u8()) + int(opts>>7)) // 0..256
	}
	if opts&4 != 0 {
		c.PEName = string(r.bytes(int(r.u8() % 18)))
	}
	if opts&8 != 0 {
		// Make the sequence flags agree with the option, as they usually do.
		c.Flags &^= FlagSeqMask
		if c.Seq != nil {
			c.Flags |= FlagInSeq
		}
	}
	return c
}

// FuzzRoundTrip builds entries from the fuzz input, encodes them in both
// versions, validated and not, and checks that what the encoders accept
// decodes back unchanged, split within the limits, and that they refuse
// exactly what they should.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{0x05, 0xc0, 3, 0x00, 0x01, 0x01})
	f.Add([]byte("\x01\x00\x40\x0c\x00\x01\x9c\x40\x00\x50\x00\x50\x00\x00\x03\x84\x0a\x00\x00\x01\xc0\xa8\x01\x64\x0a\x01\x00\x02"))
	f.Add([]byte("\x00\x60\x80\x03\x09\x07\x00\x13\xc4\x13\xc4\x00\x00\x01\x68\x0a\x00\x00\x01\xc0\xa8\x01\x64\x0a\x01\x00\x02\x06\x05hello\x03sip"))
	f.Add([]byte("\x00\x48\x02\x03\x00\x00\x01\x00\x15\x00\x15\x00\x00\x03\x84 \x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01 \x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x09"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &fuzzReader{b: data}
		maxLen := int(r.u16())
		count := int(r.u8())
		var conns []Conn
		for range count {
			if len(r.b) == 0 {
				break
			}
			conns = append(conns, fuzzConn(r))
		}
		// Repeat the entries to cross the 255 limit now and then.
		for reps := int(r.u8() % 4); reps > 0 && len(conns) > 0; reps-- {
			conns = append(conns, conns[:min(len(conns), 200)]...)
		}

		for _, version := range []int{0, 1} {
			for _, check := range []bool{true, false} {
				fuzzEncode(t, version, check, conns, maxLen)
			}
		}
	})
}

func fuzzEncode(t *testing.T, version int, check bool, conns []Conn, maxLen int) {
	hdr := HeaderLenV1
	if version == 0 {
		hdr = HeaderLenV0
	}
	// What the encoder should do: fail at the first entry that is invalid,
	// inexpressible or too big, else succeed.
	wantFail := -1
	if maxLen >= hdr && maxLen <= MaxMessageLen {
		for i := range conns {
			c := &conns[i]
			var err error
			if check {
				err = c.Validate()
			}
			if err == nil {
				err = c.checkAddrs()
			}
			if err == nil {
				err = c.checkOptionLens()
			}
			size := 0
			if err == nil && version == 0 {
				err = checkV0(c)
				size = EntryLenV0
				if c.Flags&FlagSeqMask != 0 {
					size += SeqDataLen
				}
			} else if err == nil {
				size = entrySizeV1(c)
			}
			if err != nil || hdr+size > maxLen {
				wantFail = i
				break
			}
		}
	}

	out, err := encode(version, 9, conns, maxLen, check)
	if maxLen < hdr || maxLen > MaxMessageLen {
		if !errors.Is(err, ErrBadArgument) {
			t.Fatalf("maxLen %d: %v", maxLen, err)
		}
		return
	}
	if wantFail >= 0 {
		if err == nil {
			t.Fatalf("v%d check=%t: conn %d accepted: %v", version, check, wantFail, conns[wantFail])
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("conn %d:", wantFail)) ||
			!(errors.Is(err, ErrInvalidConn) || errors.Is(err, ErrUnsupported) || errors.Is(err, ErrTooLarge)) {
			t.Fatalf("v%d check=%t: want conn %d to fail, got %v", version, check, wantFail, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("v%d check=%t maxLen %d: %v", version, check, maxLen, err)
	}

	var got []Conn
	for i, msg := range out {
		if len(msg) > maxLen {
			t.Fatalf("message %d: %d bytes > %d", i, len(msg), maxLen)
		}
		m, err := Decode(msg)
		if err != nil {
			t.Fatalf("message %d: %v\n% x", i, err, msg)
		}
		if m.Version != version || m.SyncID != 9 || len(m.Conns) == 0 || len(m.Conns) > MaxConnsPerMessage {
			t.Fatalf("message %d: v%d syncid %d, %d conns", i, m.Version, m.SyncID, len(m.Conns))
		}
		if version == 1 {
			checkLayout(t, msg)
		}
		got = append(got, m.Conns...)
	}
	want := conns
	if version == 0 {
		want = make([]Conn, len(conns))
		for i, c := range conns {
			c.Flags &= 0xffff
			if c.Flags&FlagSeqMask != 0 && c.Seq == nil {
				c.Seq = &SeqData{} // unchecked: the format has room, zeros go there
			}
			want[i] = c
		}
	}
	if d := diffConns(got, want); d != "" {
		t.Fatalf("v%d check=%t: %s", version, check, d)
	}
}

// TestWriteSeedCorpus regenerates testdata/fuzz/FuzzDecode/seed-* from the
// golden vectors and the malformed cases when WIRE_WRITE_CORPUS=1.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("WIRE_WRITE_CORPUS") != "1" {
		t.Skip("set WIRE_WRITE_CORPUS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		name = strings.NewReplacer(" ", "-", ",", "", "/", "-", "'", "").Replace(name)
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range goldens {
		write("golden-"+g.name, g.bytes)
	}
	for _, tc := range malformedCases() {
		prefix := "bad-"
		if tc.want == nil {
			prefix = "ok-"
		}
		write(prefix+tc.name, tc.b)
	}
}
