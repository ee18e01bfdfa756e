package peer

import (
	"testing"

	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/table"
)

// The relay target is per core and per director, so each director's half of
// a relay is measured alone here (run with -cpu 1):
//
//	go test -run '^$' -bench 'RelayHalf' -cpu 1 -count 5 ./syncd/peer/
//
// BenchmarkRelayHalfSend: the sending director's path as the daemon's loop
// runs it (engine.kernelFrame, then Flush once per drained batch of up to 64
// kernel datagrams): a kernel v1 sync datagram (the kernel master's default
// 1472-byte SYNC_MAXLEN) decoded, every entry validated, converted, stored
// in the table (Node.Local: version, owner, expiry) and put into an UPDATE
// frame that is sealed. The sealed frame is handed to Config.Send, which here
// drops it: the UDP send syscall is not counted.
//
// BenchmarkRelayHalfReceive: the receiving director's path: a sealed UPDATE
// opened (replay check, AES-GCM), decoded, each entry applied to the table
// (Node.Receive) and built into a kernel v1 datagram for the backup thread
// (wire.Builder at the daemon's 8972-byte inject size, a full datagram copied
// out as the injector does). The UDP receive syscall is not counted.
//
// Every report changes the entry (two versions alternate), so each entry is
// a change that must be relayed, never an unchanged refresh.

const relayConns = 1 << 18

// relayDatagrams returns the kernel datagrams for relayConns IPv4
// connections in two versions differing in state.
func relayDatagrams(b *testing.B) [2][][]byte {
	conns := make([]wire.Conn, relayConns)
	for i := range conns {
		e := conn4(i)
		ToConn(&e, &conns[i])
	}
	var dgrams [2][][]byte
	for v := range 2 {
		for i := range conns {
			conns[i].State = uint16(1 + v*3)
		}
		var err error
		if dgrams[v], err = wire.EncodeV1(0, conns, wire.DefaultMaxLen); err != nil {
			b.Fatal(err)
		}
	}
	return dgrams
}

// relaySender is director 1's side: it turns kernel datagrams into sealed
// UPDATE frames, which it hands to sink.
type relaySender struct {
	node   *Node
	dgrams [2][][]byte
	next   int
	m      wire.Message
	e      table.Entry
}

func newRelaySender(b *testing.B, sink func([]byte)) *relaySender {
	tb, _ := table.New(table.Config{Self: 1})
	s := &relaySender{dgrams: relayDatagrams(b)}
	var err error
	s.node, err = NewNode(Config{Self: 1, Incarnation: 1, Keyring: testRing(b, 1), NoBulk: true,
		Send: func(f []byte, _ []table.NodeID) { sink(f) }}, tb)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// datagram processes the next kernel datagram and returns its entry count.
func (s *relaySender) datagram(b *testing.B) int {
	per := len(s.dgrams[0])
	d := s.dgrams[(s.next/per)%2][s.next%per]
	s.next++
	if err := wire.DecodeInto(d, &s.m); err != nil {
		b.Fatal(err)
	}
	for k := range s.m.Conns {
		c := &s.m.Conns[k]
		if err := c.Validate(); err != nil {
			b.Fatal(err)
		}
		FromConn(c, &s.e)
		if _, err := s.node.Local(&s.e, t0); err != nil {
			b.Fatal(err)
		}
	}
	return len(s.m.Conns)
}

// relayBatch is how many kernel datagrams the daemon's loop drains before
// it flushes (engine.run: one, then up to 64 more).
const relayBatch = 64

func BenchmarkRelayHalfSend(b *testing.B) {
	frames, bytes := 0, 0
	s := newRelaySender(b, func(f []byte) { frames++; bytes += len(f) })
	entries := 0
	b.ResetTimer()
	for i := range b.N {
		entries += s.datagram(b)
		if (i+1)%relayBatch == 0 {
			s.node.Flush()
		}
	}
	s.node.Flush()
	b.StopTimer()
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(entries)/float64(frames), "entries/frame")
	b.ReportMetric(float64(bytes)/float64(entries), "wire-B/entry")
}

func BenchmarkRelayHalfReceive(b *testing.B) {
	// Sealed frames come from a real sender, made in batches outside the
	// timer (a frame can be opened only once: replay protection).
	var batch [][]byte
	var spare [][]byte
	s := newRelaySender(b, func(f []byte) {
		var buf []byte
		if n := len(spare); n > 0 {
			buf, spare = spare[n-1][:0], spare[:n-1]
		}
		batch = append(batch, append(buf, f...))
	})
	refill := func() {
		spare = append(spare, batch...)
		batch = batch[:0]
		for len(batch) < 4096 {
			for range relayBatch {
				s.datagram(b)
			}
			s.node.Flush()
		}
	}

	tb, _ := table.New(table.Config{Self: 2})
	out, err := wire.NewBuilder(1, 0, 9000-28) // daemon.DefaultInjectMaxLen
	if err != nil {
		b.Fatal(err)
	}
	var kc wire.Conn
	var dgram []byte
	injected, dgrams, bad := 0, 0, 0
	nb, err := NewNode(Config{Self: 2, Incarnation: 1, Keyring: testRing(b, 1), NoBulk: true,
		Send: func([]byte, []table.NodeID) {},
		Applied: func(e *table.Entry, ch table.Change) {
			ToConn(e, &kc)
			ok, err := out.Add(&kc)
			if err == nil && !ok {
				dgram = append(dgram[:0], out.Bytes()...)
				dgrams++
				out.Reset()
				ok, err = out.Add(&kc)
			}
			if err != nil || !ok {
				bad++
				return
			}
			injected++
		}}, tb)
	if err != nil {
		b.Fatal(err)
	}
	refill()
	pos := 0
	b.ResetTimer()
	for range b.N {
		if pos == len(batch) {
			b.StopTimer()
			refill()
			pos = 0
			b.StartTimer()
		}
		if err := nb.Receive(batch[pos], t0); err != nil {
			b.Fatal(err)
		}
		pos++
	}
	b.StopTimer()
	_ = dgram
	if bad != 0 {
		b.Fatalf("%d entries not injectable", bad)
	}
	b.ReportMetric(float64(injected)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(injected)/float64(b.N), "entries/frame")
	if dgrams > 0 {
		b.ReportMetric(float64(injected)/float64(dgrams), "entries/kernel-dgram")
	}
}
