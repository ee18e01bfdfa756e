package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func diffMessage(got, want Message) string {
	var sb strings.Builder
	if got.Version != want.Version || got.SyncID != want.SyncID {
		fmt.Fprintf(&sb, "header: got v%d syncid %d, want v%d syncid %d\n", got.Version, got.SyncID, want.Version, want.SyncID)
	}
	if d := diffConns(got.Conns, want.Conns); d != "" {
		sb.WriteString(d)
	}
	return sb.String()
}

func diffConns(got, want []Conn) string {
	var sb strings.Builder
	if len(got) != len(want) {
		fmt.Fprintf(&sb, "got %d conns, want %d\n", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if !got[i].Equal(want[i]) {
			fmt.Fprintf(&sb, "conn %d:\n got  %v\n want %v\n", i, got[i], want[i])
		}
	}
	return sb.String()
}

var (
	v4c, v4v, v4d = addr("10.0.0.1"), addr("192.168.1.100"), addr("10.1.0.2")
	v6c, v6v, v6d = addr("2001:db8::1"), addr("2001:db8::100"), addr("fd00::2")
)

func tcpConn(ipv6 bool) Conn {
	c := Conn{Protocol: ProtoTCP, Flags: FlagDRoute, State: TCPEstablished,
		CPort: 40000, VPort: 80, DPort: 80, Timeout: 900,
		CAddr: v4c, VAddr: v4v, DAddr: v4d}
	if ipv6 {
		c.CAddr, c.VAddr, c.DAddr = v6c, v6v, v6d
	}
	return c
}

func TestRoundTrip(t *testing.T) {
	seq := &SeqData{In: Seq{0xdeadbeef, 0xfffffff0, 7}, Out: Seq{1, 0x80000000, 0xffffffff}}
	type tc struct {
		name string
		c    Conn
	}
	var cases []tc
	for _, ipv6 := range []bool{false, true} {
		fam := map[bool]string{false: "v4", true: "v6"}[ipv6]
		for _, p := range []struct {
			proto uint8
			state uint16
		}{{ProtoTCP, TCPEstablished}, {ProtoTCP, TCPSynAck}, {ProtoUDP, UDPNormal},
			{ProtoSCTP, SCTPEstablished}, {ProtoSCTP, SCTPClosed}, {ProtoAH, 0}, {ProtoESP, 0}} {
			c := tcpConn(ipv6)
			c.Protocol, c.State = p.proto, p.state
			cases = append(cases, tc{fmt.Sprintf("%s %s %s", fam, ProtoName(p.proto), StateName(p.proto, p.state)), c})
		}
		c := tcpConn(ipv6)
		c.Flags |= FlagSeqMask
		c.Seq = seq
		cases = append(cases, tc{fam + " seq data both", c})
		c.Flags = FlagMasq | FlagOutSeq
		cases = append(cases, tc{fam + " seq data out", c})
		c = tcpConn(ipv6)
		c.Fwmark = 0xffffffff
		c.Timeout = 0xffffffff
		cases = append(cases, tc{fam + " fwmark and max timeout", c})
		c = tcpConn(ipv6)
		c.Timeout = 0
		c.Flags = FlagTunnel | FlagInactive | FlagNoOutput | FlagSync | FlagHashed | FlagNFCT
		cases = append(cases, tc{fam + " all harmless flags, timeout 0", c})
		c = tcpConn(ipv6)
		c.CPort = 0
		c.Flags |= FlagNoCPort
		cases = append(cases, tc{fam + " no cport", c})

		// Persistence templates: port-affine, port-zero, fwmark, PE.
		tpl := tcpConn(ipv6)
		tpl.Flags = FlagTemplate | FlagDRoute
		tpl.State = TemplateAssured
		tpl.CPort = 0
		tpl.Timeout = 360
		cases = append(cases, tc{fam + " template", tpl})
		tpl.VPort, tpl.DPort = 0, 0
		cases = append(cases, tc{fam + " port-zero template", tpl})
		fw := tpl
		fw.Protocol = ProtoIP
		fw.Fwmark = 10
		if ipv6 {
			fw.VAddr = addr("0:a::")
			fw.CAddr = addr("::")
		} else {
			fw.VAddr = addr("0.0.0.10")
			fw.CAddr = addr("0.0.0.0")
		}
		cases = append(cases, tc{fam + " fwmark template, masked client", fw})
		// PE data of every length around the padding boundaries, with
		// names of several lengths.
		for _, nameLen := range []int{1, 2, 3, 4, 5, 15, 16} {
			for dataLen := 1; dataLen <= 8; dataLen++ {
				pe := tpl
				pe.Protocol = ProtoUDP
				pe.PEData = bytes.Repeat([]byte{byte(dataLen)}, dataLen)
				pe.PEName = strings.Repeat("n", nameLen)
				cases = append(cases, tc{fmt.Sprintf("%s PE data %d name %d", fam, dataLen, nameLen), pe})
			}
		}
		pe := tpl
		pe.PEData = bytes.Repeat([]byte{0xa5}, MaxPEDataLen)
		pe.PEName = "sip"
		pe.Flags |= FlagSeqMask
		pe.Seq = seq
		cases = append(cases, tc{fam + " all three options, max PE data", pe})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			// Alone, and between two neighbours to exercise padding both ways.
			for _, conns := range [][]Conn{{tc.c}, {tcpConn(false), tc.c, tcpConn(true), tc.c}} {
				out, err := EncodeV1(42, conns, MaxMessageLen)
				if err != nil {
					t.Fatal(err)
				}
				if len(out) != 1 {
					t.Fatalf("%d messages", len(out))
				}
				m, err := Decode(out[0])
				if err != nil {
					t.Fatal(err)
				}
				if d := diffMessage(m, Message{Version: 1, SyncID: 42, Conns: conns}); d != "" {
					t.Fatal(d)
				}
				checkLayout(t, out[0])
			}
			if !tc.c.Is6() && len(tc.c.PEData) == 0 && tc.c.Fwmark == 0 {
				c := tc.c
				c.Timeout = 0
				c.Flags &= 0xffff
				out, err := EncodeV0(42, []Conn{c, c}, MaxMessageLen)
				if err != nil {
					t.Fatal(err)
				}
				m, err := Decode(out[0])
				if err != nil {
					t.Fatal(err)
				}
				if d := diffMessage(m, Message{Version: 0, SyncID: 42, Conns: []Conn{c, c}}); d != "" {
					t.Fatal(d)
				}
			}
		})
	}
}

// checkLayout checks a v1 message's framing independently of the decoder:
// every entry starts 4-aligned, its ver_size excludes padding, and the
// message ends right after the last entry.
func checkLayout(t *testing.T, b []byte) {
	t.Helper()
	off := HeaderLenV1
	for i := range int(b[4]) {
		if off%4 != 0 {
			t.Fatalf("entry %d at unaligned offset %d", i, off)
		}
		size := int(b[off+2])<<8 | int(b[off+3])
		end := off + size
		if i == int(b[4])-1 {
			if end != len(b) {
				t.Fatalf("last entry ends at %d, message at %d", end, len(b))
			}
			return
		}
		off = (end + 3) &^ 3
	}
}

// Many entries of every shape split over messages: every message within
// maxLen and 255 entries, nothing lost or reordered, and each message full
// (the next entry would not have fitted).
func TestSplit(t *testing.T) {
	var conns []Conn
	for i := range 2000 {
		c := tcpConn(i%3 == 0)
		c.CPort = uint16(i)
		switch i % 7 {
		case 1:
			c.Flags |= FlagSeqMask
			c.Seq = &SeqData{In: Seq{uint32(i), 1, 2}}
		case 2:
			c.Flags = FlagTemplate | FlagMasq
			c.State = 0
			c.PEData = bytes.Repeat([]byte{'x'}, i%40+1)
			c.PEName = "sip"
		}
		conns = append(conns, c)
	}
	sizeOf := func(c *Conn) int { return entrySizeV1(c) }
	for _, maxLen := range []int{HeaderLenV1 + 200, 512, DefaultMaxLen6, DefaultMaxLen, 9000, 20000, MaxMessageLen} {
		t.Run(fmt.Sprint(maxLen), func(t *testing.T) {
			out, err := EncodeV1(1, conns, maxLen)
			if err != nil {
				t.Fatal(err)
			}
			var got []Conn
			for i, msg := range out {
				if len(msg) > maxLen {
					t.Fatalf("message %d is %d bytes", i, len(msg))
				}
				m, err := Decode(msg)
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if len(m.Conns) > MaxConnsPerMessage || len(m.Conns) == 0 {
					t.Fatalf("message %d has %d entries", i, len(m.Conns))
				}
				if i < len(out)-1 && len(m.Conns) < MaxConnsPerMessage {
					next := &conns[len(got)+len(m.Conns)]
					if pad := -len(msg) & 3; len(msg)+pad+sizeOf(next) <= maxLen {
						t.Fatalf("message %d (%d bytes, %d entries) had room for the next entry", i, len(msg), len(m.Conns))
					}
				}
				got = append(got, m.Conns...)
			}
			if d := diffConns(got, conns); d != "" {
				t.Fatal(d)
			}
			if maxLen == MaxMessageLen && len(out) != (len(conns)+254)/255 {
				t.Errorf("%d messages for %d entries, want the 255 limit to split", len(out), len(conns))
			}
		})
	}

	t.Run("v0", func(t *testing.T) {
		var v0 []Conn
		for i := range 600 {
			c := tcpConn(false)
			c.Timeout = 0
			c.CPort = uint16(i)
			if i%2 == 0 {
				c.Flags |= FlagInSeq
				c.Seq = &SeqData{Out: Seq{uint32(i), 0, 0}}
			}
			v0 = append(v0, c)
		}
		out, err := EncodeV0(1, v0, DefaultMaxLen)
		if err != nil {
			t.Fatal(err)
		}
		var got []Conn
		for _, msg := range out {
			if len(msg) > DefaultMaxLen {
				t.Fatalf("%d bytes", len(msg))
			}
			m, err := Decode(msg)
			if err != nil || m.Version != 0 {
				t.Fatal(m.Version, err)
			}
			got = append(got, m.Conns...)
		}
		if d := diffConns(got, v0); d != "" {
			t.Fatal(d)
		}
	})
}

func TestEncodeErrors(t *testing.T) {
	big := tcpConn(true)
	big.Flags = FlagTemplate | FlagDRoute
	big.State = 0
	big.PEData = make([]byte, 255)
	big.PEName = "sip"
	if _, err := EncodeV1(0, []Conn{big}, 300); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "conn 0") {
		t.Errorf("too large: %v", err)
	}
	// Exactly fits: header + 72 + 257 + 5.
	if out, err := EncodeV1(0, []Conn{big}, HeaderLenV1+EntryLenV6+2+255+2+3); err != nil || len(out) != 1 {
		t.Errorf("exact fit: %v", err)
	}
	for _, maxLen := range []int{-1, 0, 7, MaxMessageLen + 1} {
		if _, err := EncodeV1(0, nil, maxLen); !errors.Is(err, ErrBadArgument) {
			t.Errorf("maxLen %d: %v", maxLen, err)
		}
	}
	if _, err := NewBuilder(2, 0, 100); !errors.Is(err, ErrBadArgument) {
		t.Errorf("version 2: %v", err)
	}
	if out, err := EncodeV1(0, nil, DefaultMaxLen); err != nil || len(out) != 0 {
		t.Errorf("no conns: %v %v", out, err)
	}
	bad := tcpConn(false)
	bad.State = 99
	_, err := EncodeV1(0, []Conn{tcpConn(false), bad}, DefaultMaxLen)
	if !errors.Is(err, ErrInvalidConn) || !strings.Contains(err.Error(), "conn 1") {
		t.Errorf("invalid conn: %v", err)
	}

	v0 := func(mod func(*Conn)) error {
		c := tcpConn(false)
		c.Timeout = 0
		mod(&c)
		_, err := EncodeV0(0, []Conn{c}, DefaultMaxLen)
		return err
	}
	for name, mod := range map[string]func(*Conn){
		"ipv6":    func(c *Conn) { *c = tcpConn(true); c.Timeout = 0 },
		"fwmark":  func(c *Conn) { c.Fwmark = 1 },
		"timeout": func(c *Conn) { c.Timeout = 1 },
		"pe": func(c *Conn) {
			c.Flags |= FlagTemplate
			c.State = 0
			c.PEData, c.PEName = []byte{1}, "sip"
		},
	} {
		if err := v0(mod); !errors.Is(err, ErrUnsupported) {
			t.Errorf("v0 %s: %v", name, err)
		}
	}
	// v0 keeps the low 16 flag bits, as the kernel does.
	c := tcpConn(false)
	c.Timeout = 0
	c.Flags |= FlagNFCT
	out, err := EncodeV0(0, []Conn{c}, DefaultMaxLen)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := Decode(out[0])
	if m.Conns[0].Flags != FlagDRoute {
		t.Errorf("v0 flags 0x%x", m.Conns[0].Flags)
	}
}

func TestBuilder(t *testing.T) {
	b, err := NewBuilder(1, 5, HeaderLenV1+3*EntryLenV4)
	if err != nil {
		t.Fatal(err)
	}
	c := tcpConn(false)
	for i := range 3 {
		if ok, err := b.Add(&c); !ok || err != nil {
			t.Fatalf("Add %d: %v %v", i, ok, err)
		}
	}
	if ok, err := b.Add(&c); ok || err != nil {
		t.Fatalf("Add to a full message: %v %v", ok, err)
	}
	if b.Len() != 3 || len(b.Bytes()) != HeaderLenV1+3*EntryLenV4 {
		t.Fatalf("Len %d, %d bytes", b.Len(), len(b.Bytes()))
	}
	// An invalid entry is refused even when the message is full.
	bad := c
	bad.Flags |= FlagOnePacket
	if _, err := b.Add(&bad); !errors.Is(err, ErrInvalidConn) {
		t.Fatalf("invalid: %v", err)
	}
	b.Reset()
	if b.Len() != 0 || !bytes.Equal(b.Bytes(), []byte{0, 5, 0, 8, 0, 1, 0, 0}) {
		t.Fatalf("after Reset: % x", b.Bytes())
	}
	// AddUnchecked sends what the kernel will drop, for lab tests.
	bad.Flags = FlagMasq
	bad.Protocol = ProtoUDP
	bad.State = 1
	if ok, err := b.AddUnchecked(&bad); !ok || err != nil {
		t.Fatalf("AddUnchecked: %v %v", ok, err)
	}
	m, err := Decode(b.Bytes())
	if err != nil || len(m.Conns) != 1 || m.Conns[0].Validate() == nil {
		t.Fatalf("decoded %v %v", m, err)
	}
	// Still refuses what cannot be expressed.
	mixed := c
	mixed.DAddr = v6d
	if _, err := b.AddUnchecked(&mixed); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("mixed: %v", err)
	}

	// 255 entries at most, whatever maxLen allows.
	b, _ = NewBuilder(0, 0, MaxMessageLen)
	c.Timeout = 0
	n := 0
	for {
		ok, err := b.Add(&c)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		n++
	}
	if n != MaxConnsPerMessage || b.Bytes()[0] != 255 {
		t.Fatalf("%d entries", n)
	}
}

func TestAllocs(t *testing.T) {
	conns := make([]Conn, 200)
	for i := range conns {
		conns[i] = tcpConn(i%2 == 0)
	}
	b, _ := NewBuilder(1, 1, MaxMessageLen)
	if n := testing.AllocsPerRun(50, func() {
		b.Reset()
		for i := range conns {
			if ok, err := b.Add(&conns[i]); !ok || err != nil {
				panic(err)
			}
		}
	}); n != 0 {
		t.Errorf("Builder.Add: %v allocs per message", n)
	}
	msg := bytes.Clone(b.Bytes())
	var m Message
	if err := DecodeInto(msg, &m); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(50, func() {
		if err := DecodeInto(msg, &m); err != nil {
			panic(err)
		}
	}); n != 0 {
		t.Errorf("DecodeInto: %v allocs per message", n)
	}

	// A repeated engine name is not allocated again.
	tpl := tcpConn(false)
	tpl.Flags = FlagTemplate
	tpl.State = 0
	tpl.PEName = "custom"
	tpl.PEData = []byte{1}
	out, _ := EncodeV1(0, []Conn{tpl}, DefaultMaxLen)
	_ = DecodeInto(out[0], &m)
	if n := testing.AllocsPerRun(50, func() { _ = DecodeInto(out[0], &m) }); n != 1 {
		t.Errorf("DecodeInto with PE data: %v allocs, want 1 (the data copy)", n)
	}
}

// DecodeInto must not let a later decode change entries copied out before.
func TestDecodeIntoNoAliasing(t *testing.T) {
	c := tcpConn(false)
	c.Flags = FlagTemplate | FlagSeqMask
	c.State = 0
	c.Seq = &SeqData{In: Seq{1, 2, 3}}
	c.PEData, c.PEName = []byte("abc"), "sip"
	out1, _ := EncodeV1(0, []Conn{c}, DefaultMaxLen)
	c2 := c
	c2.Seq = &SeqData{In: Seq{9, 9, 9}}
	c2.PEData = []byte("xyz")
	out2, _ := EncodeV1(0, []Conn{c2}, DefaultMaxLen)

	var m Message
	if err := DecodeInto(out1[0], &m); err != nil {
		t.Fatal(err)
	}
	kept := m.Conns[0]
	if err := DecodeInto(out2[0], &m); err != nil {
		t.Fatal(err)
	}
	out1[0][len(out1[0])-6] = 'Z' // scribble over the datagram
	if !kept.Equal(c) {
		t.Errorf("kept entry changed: %v", kept)
	}
}

func TestValidate(t *testing.T) {
	tpl := tcpConn(false)
	tpl.Flags = FlagTemplate | FlagDRoute
	tpl.State = 0
	for _, tc := range []struct {
		name string
		mod  func(*Conn)
		want error // nil: valid
		msg  string
	}{
		{"ok", func(*Conn) {}, nil, ""},
		{"udp state 1", func(c *Conn) { c.Protocol, c.State = ProtoUDP, 1 }, ErrInvalidConn, "UDP state 1"},
		{"tcp state 11", func(c *Conn) { c.State = 11 }, ErrInvalidConn, "TCP state 11"},
		{"sctp state 14", func(c *Conn) { c.Protocol, c.State = ProtoSCTP, 14 }, ErrInvalidConn, "SCTP state 14"},
		{"sctp state 13", func(c *Conn) { c.Protocol, c.State = ProtoSCTP, 13 }, nil, ""},
		{"icmp", func(c *Conn) { c.Protocol = ProtoICMP }, ErrInvalidConn, "protocol 1"},
		{"protocol 0 connection", func(c *Conn) { c.Protocol = 0; c.State = 0 }, ErrInvalidConn, "protocol 0"},
		{"ah state 1", func(c *Conn) { c.Protocol, c.State = ProtoAH, 1 }, ErrInvalidConn, "state 1"},
		{"one packet", func(c *Conn) { c.Flags |= FlagOnePacket }, ErrInvalidConn, "one-packet"},
		{"fwd 5", func(c *Conn) { c.Flags = 5 }, ErrInvalidConn, "forwarding method 5"},
		{"no cport ok", func(c *Conn) { c.Flags |= FlagNoCPort; c.CPort = 0 }, nil, ""},
		{"template no cport", func(c *Conn) { *c = tpl; c.Flags |= FlagNoCPort }, ErrInvalidConn, "NoCPort"},
		{"template state 2", func(c *Conn) { *c = tpl; c.State = 2 }, ErrInvalidConn, "template state 2"},
		{"template any protocol", func(c *Conn) { *c = tpl; c.Protocol = 99 }, nil, ""},
		{"template zero client", func(c *Conn) { *c = tpl; c.CAddr = addr("0.0.0.0") }, nil, ""},
		{"zero client", func(c *Conn) { c.CAddr = addr("0.0.0.0") }, ErrInvalidConn, "unspecified"},
		{"zero daddr", func(c *Conn) { *c = tpl; c.DAddr = addr("0.0.0.0") }, ErrInvalidConn, "unspecified"},
		{"zero vaddr v6", func(c *Conn) { *c = tcpConn(true); c.VAddr = addr("::") }, ErrInvalidConn, "unspecified"},
		{"missing address", func(c *Conn) { c.DAddr = Conn{}.DAddr }, ErrUnsupported, "missing"},
		{"mixed", func(c *Conn) { c.VAddr = v6v }, ErrUnsupported, "mixed"},
		{"zone", func(c *Conn) { *c = tcpConn(true); c.CAddr = addr("fe80::1%eth0") }, ErrUnsupported, "zone"},
		{"seq flag without data", func(c *Conn) { c.Flags |= FlagInSeq }, ErrInvalidConn, "sequence"},
		{"seq data without flag", func(c *Conn) { c.Seq = &SeqData{} }, ErrInvalidConn, "sequence"},
		{"pe data without name", func(c *Conn) { *c = tpl; c.PEData = []byte{1} }, ErrInvalidConn, "without an engine name"},
		{"pe name without data", func(c *Conn) { *c = tpl; c.PEName = "sip" }, ErrInvalidConn, "without data"},
		{"pe on connection", func(c *Conn) { c.PEData, c.PEName = []byte{1}, "sip" }, ErrInvalidConn, "not a template"},
		{"pe data 256", func(c *Conn) { *c = tpl; c.PEData, c.PEName = make([]byte, 256), "sip" }, ErrUnsupported, "256"},
		{"pe name 17", func(c *Conn) { *c = tpl; c.PEData, c.PEName = []byte{1}, strings.Repeat("s", 17) }, ErrUnsupported, "17"},
		{"pe name 16", func(c *Conn) { *c = tpl; c.PEData, c.PEName = []byte{1}, strings.Repeat("s", 16) }, nil, ""},
		{"pe name NUL", func(c *Conn) { *c = tpl; c.PEData, c.PEName = []byte{1}, "si\x00p" }, ErrInvalidConn, "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tcpConn(false)
			tc.mod(&c)
			err := c.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.want, tc.msg)
			}
			// Encoders refuse it too.
			if _, err := EncodeV1(0, []Conn{c}, MaxMessageLen); !errors.Is(err, tc.want) {
				t.Fatalf("EncodeV1: %v", err)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		proto uint8
		names []string
	}{
		{ProtoTCP, []string{"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK"}},
		{ProtoUDP, []string{"UDP"}},
		{ProtoSCTP, []string{"NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE", "C-ECHOED", "ESTABLISHED", "S-SENT", "S-RECEIVED", "S-ACK-SENT", "REJECTED", "CLOSED"}},
	} {
		if StateCount(tc.proto) != len(tc.names) {
			t.Errorf("%s: StateCount %d", ProtoName(tc.proto), StateCount(tc.proto))
		}
		for i, n := range tc.names {
			if got := StateName(tc.proto, uint16(i)); got != n {
				t.Errorf("StateName(%d, %d) = %q, want %q", tc.proto, i, got, n)
			}
			if s, err := ParseState(tc.proto, n); err != nil || s != uint16(i) {
				t.Errorf("ParseState(%d, %q) = %d, %v", tc.proto, n, s, err)
			}
		}
		if got := StateName(tc.proto, uint16(len(tc.names))); got != "ERR!" {
			t.Errorf("out of range: %q", got)
		}
		if _, err := ParseState(tc.proto, "BOGUS"); err == nil {
			t.Errorf("ParseState(%d, BOGUS) accepted", tc.proto)
		}
	}
	if StateName(ProtoAH, 0) != "ERR!" || StateName(ProtoIP, 0) != "NONE" || StateName(200, 0) != "ERR!" {
		t.Error("AH / IP / unknown state names")
	}
	if s, err := ParseState(ProtoIP, "ASSURED"); err != nil || s != 1 {
		t.Error("ParseState(IP, ASSURED)", s, err)
	}
	if s, err := ParseState(ProtoESP, "ERR!"); err != nil || s != 0 {
		t.Error("ParseState(ESP, ERR!)", s, err)
	}
	if TemplateStateName(1) != "ASSURED" || TemplateStateName(2) != "ERR!" {
		t.Error("template names")
	}
	if s, err := ParseTemplateState("NONE"); err != nil || s != 0 {
		t.Error("ParseTemplateState", s, err)
	}
	tpl := Conn{Protocol: ProtoTCP, Flags: FlagTemplate, State: 1}
	if tpl.StateName() != "ASSURED" {
		t.Error(tpl.StateName())
	}

	for f, want := range map[uint32]string{0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route", 4: "Bypass", 7: "Fwd7"} {
		if got := FwdMethod(f | FlagTemplate); got != want {
			t.Errorf("FwdMethod(%d) = %q", f, got)
		}
	}
	for f, want := range map[uint32]string{
		0x183:              "Route|NoOutput|Inactive",
		0:                  "Masq",
		FlagTemplate | 2:   "Tunnel|Template",
		0x3fe0 | FlagNFCT:  "Masq|Sync|Hashed|NoOutput|Inactive|OutSeq|InSeq|NoCPort|Template|OnePacket|NFCT",
		0x8000 | 0x8 | 0x1: "Local|0x8008",
	} {
		if got := FlagNames(f); got != want {
			t.Errorf("FlagNames(0x%x) = %q, want %q", f, got, want)
		}
	}
	for p, want := range map[uint8]string{0: "IP", 1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP", 50: "IP_50"} {
		if got := ProtoName(p); got != want {
			t.Errorf("ProtoName(%d) = %q", p, got)
		}
		if back, ok := ParseProtoName(want); !ok || back != p {
			t.Errorf("ParseProtoName(%q) = %d %v", want, back, ok)
		}
	}
	if _, ok := ParseProtoName("IP_300"); ok {
		t.Error("IP_300 parsed")
	}
}

func TestTimeouts(t *testing.T) {
	for _, tc := range []struct {
		proto uint8
		state uint16
		want  time.Duration
	}{
		{ProtoTCP, TCPNone, 2 * time.Second},
		{ProtoTCP, TCPEstablished, 15 * time.Minute},
		{ProtoTCP, TCPSynSent, 2 * time.Minute},
		{ProtoTCP, TCPSynRecv, time.Minute},
		{ProtoTCP, TCPFinWait, 2 * time.Minute},
		{ProtoTCP, TCPTimeWait, 2 * time.Minute},
		{ProtoTCP, TCPClose, 10 * time.Second},
		{ProtoTCP, TCPCloseWait, time.Minute},
		{ProtoTCP, TCPLastAck, 30 * time.Second},
		{ProtoTCP, TCPListen, 2 * time.Minute},
		{ProtoTCP, TCPSynAck, 2 * time.Minute},
		{ProtoTCP, 11, 0},
		{ProtoUDP, UDPNormal, 5 * time.Minute},
		{ProtoUDP, 1, 0},
		{ProtoSCTP, SCTPNone, 2 * time.Second},
		{ProtoSCTP, SCTPInit1, 4 * time.Second},
		{ProtoSCTP, SCTPInit, 61 * time.Second},
		{ProtoSCTP, SCTPCookieEchoed, 61 * time.Second},
		{ProtoSCTP, SCTPEstablished, 15 * time.Minute},
		{ProtoSCTP, SCTPShutdownAckSent, 61 * time.Second},
		{ProtoSCTP, SCTPRejected, 4 * time.Second},
		{ProtoSCTP, SCTPClosed, 61 * time.Second},
		{ProtoSCTP, 14, 0},
		{ProtoAH, 0, 3 * time.Minute},
		{ProtoICMP, 0, 0},
	} {
		if got := DefaultTimeout(tc.proto, tc.state); got != tc.want {
			t.Errorf("DefaultTimeout(%s, %d) = %v, want %v", ProtoName(tc.proto), tc.state, got, tc.want)
		}
	}
	c := tcpConn(false)
	if c.EffectiveTimeout() != 900*time.Second {
		t.Error(c.EffectiveTimeout())
	}
	c.Timeout = 0
	c.State = TCPTimeWait
	if c.EffectiveTimeout() != 2*time.Minute {
		t.Error(c.EffectiveTimeout())
	}
	c.Flags |= FlagTemplate
	c.State = 0
	if c.EffectiveTimeout() != 3*time.Minute {
		t.Error(c.EffectiveTimeout())
	}
}

func TestString(t *testing.T) {
	c := tcpConn(false)
	want := "TCP 15:00  ESTABLISHED 10.0.0.1:40000     192.168.1.100:80   10.1.0.2:80 flags=0x3(Route)"
	if got := c.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	c = tcpConn(true)
	c.Flags = FlagTemplate | FlagMasq
	c.State = TemplateAssured
	c.Fwmark = 3
	c.Timeout = 6000
	c.PEData, c.PEName = []byte("id"), "sip"
	want = `TCP 100:00 ASSURED     [2001:db8::1]:40000 [2001:db8::100]:80 [fd00::2]:80 flags=0x1000(Masq|Template) fwmark=3 pe="sip":"id"`
	if got := c.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if s := (Conn{}).String(); !strings.Contains(s, "invalid:0") {
		t.Error(s)
	}
	if DefaultGroup.String() != "224.0.0.81" || DefaultGroup6.String() != "ff02::8:81" {
		t.Error(DefaultGroup, DefaultGroup6)
	}
}
