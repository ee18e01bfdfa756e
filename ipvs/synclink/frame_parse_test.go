package synclink

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// frameSpec describes a test frame; build renders it as the kernel would
// put it on an Ethernet device.
type frameSpec struct {
	dst      netip.Addr
	proto    uint8
	port     uint16
	payload  []byte
	fragBits uint16 // IPv4 flags+offset field
	v6Ext    []byte // raw IPv6 extension headers, first byte = next header
	v6First  uint8  // next header in the IPv6 header when v6Ext is set
	pad      int    // Ethernet trailer bytes after the datagram
}

func (s frameSpec) build() []byte {
	if s.proto == 0 {
		s.proto = protoUDP
	}
	udp := make([]byte, udpHdrLen, udpHdrLen+len(s.payload))
	binary.BigEndian.PutUint16(udp[0:2], 40000)
	binary.BigEndian.PutUint16(udp[2:4], s.port)
	binary.BigEndian.PutUint16(udp[4:6], uint16(udpHdrLen+len(s.payload)))
	udp = append(udp, s.payload...)

	eth := make([]byte, etherHdrLen)
	copy(eth[0:6], []byte{0x01, 0x00, 0x5e, 0x7f, 0x58, 0x30})
	copy(eth[6:12], []byte{0x02, 0, 0, 0, 0, 1})
	var out []byte
	if s.dst.Is4() {
		binary.BigEndian.PutUint16(eth[12:14], etherTypeIPv4)
		ip := make([]byte, ipv4HdrMin)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:4], uint16(ipv4HdrMin+len(udp)))
		binary.BigEndian.PutUint16(ip[6:8], s.fragBits)
		ip[8] = 1
		ip[9] = s.proto
		copy(ip[12:16], []byte{169, 254, 88, 48})
		d := s.dst.As4()
		copy(ip[16:20], d[:])
		out = append(append(eth, ip...), udp...)
	} else {
		binary.BigEndian.PutUint16(eth[12:14], etherTypeIPv6)
		ip := make([]byte, ipv6HdrLen)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:6], uint16(len(s.v6Ext)+len(udp)))
		ip[6] = s.proto
		if len(s.v6Ext) > 0 {
			ip[6] = s.v6First
		}
		ip[7] = 1
		ip[8], ip[9] = 0xfe, 0x80
		ip[23] = 1
		d := s.dst.As16()
		copy(ip[24:40], d[:])
		out = append(append(append(eth, ip...), s.v6Ext...), udp...)
	}
	return append(out, make([]byte, s.pad)...)
}

var (
	g4   = DefaultGroup
	g6   = DefaultGroup6
	port = uint16(DefaultMasterPort)
	msg  = []byte("\x00\x01\x00\x18\x01\x01\x00\x00sync message")
)

func TestParseFrame(t *testing.T) {
	hbh := []byte{protoUDP, 0, 1, 4, 0, 0, 0, 0} // hop-by-hop, PadN
	tests := []struct {
		name    string
		frame   []byte
		spec    filterSpec
		want    verdict
		payload []byte
		// bpfAccept is what the kernel filter must decide (without the
		// packet type check); nil means "either", for malformed frames.
		bpfAccept *bool
	}{
		{"v4", frameSpec{dst: g4, port: port, payload: msg}.build(), filterSpec{g4, port, 1}, frameOK, msg, yes},
		{"v4 padded", frameSpec{dst: g4, port: port, payload: []byte("x"), pad: 17}.build(), filterSpec{g4, port, 1}, frameOK, []byte("x"), yes},
		{"v4 empty payload", frameSpec{dst: g4, port: port}.build(), filterSpec{g4, port, 1}, frameOK, []byte{}, yes},
		{"v4 port range top", frameSpec{dst: g4, port: port + 3, payload: msg}.build(), filterSpec{g4, port, 4}, frameOK, msg, yes},
		{"v4 port above range", frameSpec{dst: g4, port: port + 4, payload: msg}.build(), filterSpec{g4, port, 4}, frameOther, nil, no},
		{"v4 port below range", frameSpec{dst: g4, port: port - 1, payload: msg}.build(), filterSpec{g4, port, 4}, frameOther, nil, no},
		{"v4 other group", frameSpec{dst: netip.MustParseAddr("224.0.0.81"), port: port, payload: msg}.build(), filterSpec{g4, port, 1}, frameOther, nil, no},
		{"v4 tcp", frameSpec{dst: g4, proto: 6, port: port, payload: msg}.build(), filterSpec{g4, port, 1}, frameOther, nil, no},
		{"v4 first fragment", frameSpec{dst: g4, port: port, payload: msg, fragBits: 0x2000}.build(), filterSpec{g4, port, 1}, frameFragment, nil, yes},
		{"v4 later fragment", frameSpec{dst: g4, port: 1, payload: msg, fragBits: 0x00b9}.build(), filterSpec{g4, port, 1}, frameFragment, nil, yes},
		{"v4 DF is not a fragment", frameSpec{dst: g4, port: port, payload: msg, fragBits: 0x4000}.build(), filterSpec{g4, port, 1}, frameOK, msg, yes},
		{"v6 frame, v4 tap", frameSpec{dst: g6, port: port, payload: msg}.build(), filterSpec{g4, port, 1}, frameOther, nil, no},
		{"v6", frameSpec{dst: g6, port: port, payload: msg}.build(), filterSpec{g6, port, 1}, frameOK, msg, yes},
		{"v6 padded", frameSpec{dst: g6, port: port, payload: msg, pad: 3}.build(), filterSpec{g6, port, 1}, frameOK, msg, yes},
		{"v6 hop-by-hop", frameSpec{dst: g6, port: port, payload: msg, v6Ext: hbh, v6First: 0}.build(), filterSpec{g6, port, 1}, frameOK, msg, no},
		{"v6 fragment", frameSpec{dst: g6, port: port, payload: msg, v6Ext: []byte{protoUDP, 0, 0, 1, 0, 0, 0, 7}, v6First: ipv6Frag}.build(), filterSpec{g6, port, 1}, frameFragment, nil, yes},
		{"v6 other group", frameSpec{dst: netip.MustParseAddr("ff02::1"), port: port, payload: msg}.build(), filterSpec{g6, port, 1}, frameOther, nil, no},
		{"v6 icmp", frameSpec{dst: g6, proto: 58, port: port, payload: msg}.build(), filterSpec{g6, port, 1}, frameOther, nil, no},
		{"v4 frame, v6 tap", frameSpec{dst: g4, port: port, payload: msg}.build(), filterSpec{g6, port, 1}, frameOther, nil, no},
		{"arp", append(append(make([]byte, 12), 0x08, 0x06), make([]byte, 28)...), filterSpec{g4, port, 1}, frameOther, nil, no},
		{"short ethernet", []byte{1, 2, 3}, filterSpec{g4, port, 1}, frameMalformed, nil, no},
		{"v4 truncated header", frameSpec{dst: g4, port: port, payload: msg}.build()[:etherHdrLen+12], filterSpec{g4, port, 1}, frameMalformed, nil, no},
		{"v4 truncated datagram", frameSpec{dst: g4, port: port, payload: msg}.build()[:etherHdrLen+30], filterSpec{g4, port, 1}, frameMalformed, nil, nil},
		{"v4 bad IHL", mutate(frameSpec{dst: g4, port: port, payload: msg}.build(), etherHdrLen, 0x44), filterSpec{g4, port, 1}, frameMalformed, nil, nil},
		{"v4 bad version", mutate(frameSpec{dst: g4, port: port, payload: msg}.build(), etherHdrLen, 0x65), filterSpec{g4, port, 1}, frameMalformed, nil, nil},
		{"v4 UDP length too big", mutate(frameSpec{dst: g4, port: port, payload: msg}.build(), etherHdrLen+ipv4HdrMin+5, 0xff), filterSpec{g4, port, 1}, frameMalformed, nil, nil},
		{"v4 UDP length too small", mutate(mutate(frameSpec{dst: g4, port: port, payload: msg}.build(), etherHdrLen+ipv4HdrMin+4, 0), etherHdrLen+ipv4HdrMin+5, 7), filterSpec{g4, port, 1}, frameMalformed, nil, nil},
		{"v6 payload length too big", mutate(frameSpec{dst: g6, port: port, payload: msg}.build(), etherHdrLen+4, 0x7f), filterSpec{g6, port, 1}, frameMalformed, nil, nil},
		{"v6 bad ext length", frameSpec{dst: g6, port: port, payload: msg, v6Ext: []byte{protoUDP, 9, 0, 0, 0, 0, 0, 0}, v6First: 0}.build(), filterSpec{g6, port, 1}, frameMalformed, nil, no},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload, v := parseFrame(tt.frame, tt.spec)
			if v != tt.want {
				t.Fatalf("verdict %d, want %d", v, tt.want)
			}
			if v == frameOK && !bytes.Equal(payload, tt.payload) {
				t.Errorf("payload %q, want %q", payload, tt.payload)
			}
			if tt.bpfAccept != nil {
				if got := runFilter(t, tt.spec, tt.frame); got != *tt.bpfAccept {
					t.Errorf("kernel filter accepts = %v, want %v", got, *tt.bpfAccept)
				}
			}
		})
	}
}

var (
	yes = func() *bool { b := true; return &b }()
	no  = func() *bool { b := false; return &b }()
)

func mutate(b []byte, i int, v byte) []byte {
	b[i] = v
	return b
}

// runFilter runs the Tap's filter, minus the packet type check the
// user-space VM cannot do, on frame.
func runFilter(tb testing.TB, spec filterSpec, frame []byte) bool {
	tb.Helper()
	insns, err := tapFilter(spec, false)
	if err != nil {
		tb.Fatal(err)
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := vm.Run(frame)
	if err != nil {
		tb.Fatal(err)
	}
	return n > 0
}

func TestTapFilterAssembles(t *testing.T) {
	for _, spec := range []filterSpec{{g4, port, 1}, {g6, port, 64}, {g4, 65535, 1}} {
		insns, err := tapFilter(spec, true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bpf.Assemble(insns); err != nil {
			t.Errorf("%v: %v", spec, err)
		}
	}
}

// FuzzParseFrame checks that parseFrame never panics, that a payload lies
// inside the frame, and that it agrees with the kernel filter: the filter
// must pass everything parseFrame delivers (when no IPv6 extension header
// is involved), and everything the filter passes must be at least
// addressed to the Tap.
func FuzzParseFrame(f *testing.F) {
	f.Add(frameSpec{dst: g4, port: port, payload: msg}.build(), false)
	f.Add(frameSpec{dst: g6, port: port, payload: msg}.build(), true)
	f.Add(frameSpec{dst: g4, port: port, payload: msg, fragBits: 0x2000}.build(), false)
	f.Fuzz(func(t *testing.T, frame []byte, v6 bool) {
		spec := filterSpec{g4, port, 2}
		if v6 {
			spec.group = g6
		}
		payload, v := parseFrame(frame, spec)
		accepted := runFilter(t, spec, frame)
		switch v {
		case frameOK:
			if len(payload) > len(frame) {
				t.Fatalf("payload of %d bytes from a %d-byte frame", len(payload), len(frame))
			}
			if !accepted && (!v6 || frame[etherHdrLen+6] == protoUDP) {
				t.Fatalf("parseFrame delivers what the kernel filter drops")
			}
		case frameOther:
			if accepted {
				t.Fatalf("kernel filter passes a frame not addressed to the tap")
			}
		}
	})
}
