package peer

import (
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/table"
)

// BenchmarkSealOpen: UPDATE frames full of IPv4 entries, encoded from table
// entries, sealed, opened and decoded back: the peer protocol's share of
// relaying one entry.
func BenchmarkSealOpen(b *testing.B) {
	ring := testRing(b, 1)
	s, _ := NewSealer(1, 1, ring, DefaultMTU)
	o := NewOpener(2, ring)
	es := make([]table.Entry, 1024)
	for i := range es {
		es[i] = conn4(i)
		es[i].Owner, es[i].Version = 1, 1
	}
	var payload, frame []byte
	var e table.Entry
	entries := 0
	k := 0
	b.ResetTimer()
	for i := range b.N {
		payload = AppendUpdateHeader(payload[:0], uint64(i+1), 0)
		n := 0
		for len(payload)+entryPeerLen+entryV4Len <= s.MaxPayload() && n < MaxEntriesPerFrame {
			payload, _ = AppendEntry(payload, &es[k&1023], 900, false)
			k++
			n++
		}
		SetEntryCount(payload, TypeUpdate, n)
		var err error
		if frame, err = s.Seal(frame[:0], TypeUpdate, payload); err != nil {
			b.Fatal(err)
		}
		f, err := o.Open(frame)
		if err != nil {
			b.Fatal(err)
		}
		u, _ := ParseUpdate(f.Payload)
		r := u.Entries()
		for {
			if _, _, ok := r.Next(&e); !ok {
				break
			}
			entries++
		}
		if r.Err() != nil {
			b.Fatal(r.Err())
		}
	}
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(entries)/float64(b.N), "entries/frame")
}

// BenchmarkBulkEncode: snapshot, encode and seal a bulk dump of a million
// entries (10% IPv6), unthrottled.
func BenchmarkBulkEncode(b *testing.B) {
	const n = 1_000_000
	tb, _ := table.New(table.Config{Self: 1})
	fill(b, tb, n, 1)
	frames := 0
	node, err := NewNode(Config{Self: 1, Incarnation: 1, Keyring: testRing(b, 1), NoBulk: true, BulkRate: 1 << 40,
		Send: func([]byte, []table.NodeID) { frames++ }}, tb)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		all := BulkRequest{}
		node.dump.request(2, 0, &all, t0)
		node.dump.poll(node, t0.Add(time.Second))
		if node.dump.busy() {
			b.Fatal("dump not finished")
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/1M-dump")
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(frames)/float64(b.N), "frames/dump")
}

// BenchmarkBulkResync: a joiner's whole bulk resync of a million entries,
// dumper and joiner in one process with frames handed over in memory
// (the loopback case without the kernel's UDP cost): encode, seal, open,
// decode and apply.
func BenchmarkBulkResync(b *testing.B) {
	const n = 1_000_000
	tb, _ := table.New(table.Config{Self: 1})
	fill(b, tb, n, 1)
	for range b.N {
		s := newSimNet(b, 1)
		s.add(1, Config{NoBulk: true, BulkRate: 1 << 40, AliveInterval: 10 * time.Millisecond}, tb)
		s.round(time.Millisecond)
		j := s.add(2, Config{AliveInterval: 10 * time.Millisecond}, nil)
		start := time.Now()
		for r := 0; !j.Ready(); r++ {
			if r > 1000 {
				b.Fatal("resync did not finish")
			}
			s.round(time.Millisecond)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/1M-resync")
		if j.Table().Len() != n {
			b.Fatalf("joiner has %d", j.Table().Len())
		}
	}
}

// BenchmarkRelay is the whole relay of one director to another: a kernel
// sync datagram in (decoded), each entry stored and sent in a sealed UPDATE,
// opened by the peer, applied to its table and built into a kernel datagram
// for its backup thread. Both ends run on one core here, so entries/s is
// per core for the pair.
func BenchmarkRelay(b *testing.B) {
	const n = 1 << 18
	conns := make([]wire.Conn, n)
	for i := range conns {
		e := conn4(i)
		ToConn(&e, &conns[i])
	}
	// Two versions of every datagram, differing in state, so that each
	// report is a change that must be relayed.
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
	ring := testRing(b, 1)
	ta, _ := table.New(table.Config{Self: 1})
	tbB, _ := table.New(table.Config{Self: 2})
	out, _ := wire.NewBuilder(1, 0, wire.DefaultMaxLen)
	var kc wire.Conn
	injected := 0
	var nb *Node
	na, err := NewNode(Config{Self: 1, Incarnation: 1, Keyring: ring, NoBulk: true, Send: func(f []byte, _ []table.NodeID) {
		if err := nb.Receive(f, t0); err != nil {
			b.Fatal(err)
		}
	}}, ta)
	if err != nil {
		b.Fatal(err)
	}
	nb, _ = NewNode(Config{Self: 2, Incarnation: 1, Keyring: ring, NoBulk: true, Send: func([]byte, []table.NodeID) {},
		Applied: func(e *table.Entry, ch table.Change) {
			ToConn(e, &kc)
			if ok, _ := out.Add(&kc); !ok {
				out.Reset()
				out.Add(&kc)
			}
			injected++
		}}, tbB)
	var m wire.Message
	var e table.Entry
	entries := 0
	b.ResetTimer()
	for i := range b.N {
		d := dgrams[(i/len(dgrams[0]))%2][i%len(dgrams[0])]
		if err := wire.DecodeInto(d, &m); err != nil {
			b.Fatal(err)
		}
		for k := range m.Conns {
			FromConn(&m.Conns[k], &e)
			if _, err := na.Local(&e, t0); err != nil {
				b.Fatal(err)
			}
		}
		na.Flush()
		entries += len(m.Conns)
	}
	b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
	if injected != entries {
		b.Fatalf("injected %d of %d", injected, entries)
	}
}
