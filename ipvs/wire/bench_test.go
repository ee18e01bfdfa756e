package wire

import (
	"net/netip"
	"testing"
)

// benchConns is a relay's typical load: mostly IPv4 TCP, some IPv6 and UDP,
// the occasional persistence template.
func benchConns(n int) []Conn {
	conns := make([]Conn, n)
	for i := range conns {
		c := tcpConn(i%10 == 0)
		c.CPort = uint16(1024 + i)
		if c.CAddr.Is4() {
			c.CAddr = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		}
		switch i % 20 {
		case 1, 2:
			c.Protocol, c.State, c.Flags, c.Timeout = ProtoUDP, UDPNormal, 0x183, 300
		case 3:
			c.Flags, c.State, c.CPort, c.Timeout = FlagTemplate|FlagDRoute, TemplateNone, 0, 360
		}
		conns[i] = c
	}
	return conns
}

var benchSink []byte

func BenchmarkEncodeV1(b *testing.B) {
	conns := benchConns(10000)
	bl, err := NewBuilder(1, 1, DefaultMaxLen)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	entries := 0
	for b.Loop() {
		bl.Reset()
		for i := range conns {
			ok, err := bl.Add(&conns[i])
			if !ok && err == nil {
				benchSink = bl.Bytes() // a relay would send it here
				bl.Reset()
				ok, err = bl.Add(&conns[i])
			}
			if !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
		benchSink = bl.Bytes()
		entries += len(conns)
	}
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkDecodeV1(b *testing.B) {
	conns := benchConns(10000)
	msgs, err := EncodeV1(1, conns, DefaultMaxLen)
	if err != nil {
		b.Fatal(err)
	}
	var m Message
	b.ReportAllocs()
	entries := 0
	for b.Loop() {
		for _, msg := range msgs {
			if err := DecodeInto(msg, &m); err != nil {
				b.Fatal(err)
			}
			entries += len(m.Conns)
		}
	}
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkValidate(b *testing.B) {
	conns := benchConns(1000)
	b.ReportAllocs()
	for b.Loop() {
		for i := range conns {
			if err := conns[i].Validate(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*len(conns))/b.Elapsed().Seconds(), "entries/s")
}
