package daemon

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/ipvs/procconn"
	"github.com/peerlvs/peerlvs/ipvs/synclink"
	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/peer"
	"github.com/peerlvs/peerlvs/syncd/table"
)

func procOf(c *wire.Conn) procconn.Entry {
	return procconn.Entry{Protocol: c.Protocol, CAddr: c.CAddr, CPort: c.CPort, VAddr: c.VAddr, VPort: c.VPort,
		DAddr: c.DAddr, DPort: c.DPort, State: "ESTABLISHED", Expires: 300 * time.Second}
}

func TestReadBackRounds(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tbl, err := table.New(table.Config{Self: 1, Timeout: peer.KernelTimeout})
	if err != nil {
		t.Fatal(err)
	}
	var peerConns []wire.Conn
	add := func(c wire.Conn, owner table.NodeID, ttl uint32) {
		var e table.Entry
		peer.FromConn(&c, &e)
		e.Owner, e.Version = owner, 1
		if owner == 1 {
			_, err = tbl.Upsert(&e, 1, now)
		} else {
			_, err = tbl.Apply(&e, ttl, now)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		c := testConn(i)
		add(c, 2, 600)
		peerConns = append(peerConns, c)
	}
	add(testConn(10), 1, 600) // own: the kernel made it, nothing to check
	add(testConn(11), 3, 2)   // about to expire: not waited for
	kernel := func(idx ...int) []procconn.Entry {
		var out []procconn.Entry
		for _, i := range idx {
			out = append(out, procOf(&peerConns[i]))
		}
		return out
	}

	steps := []struct {
		kernel   []procconn.Entry
		reinject int
		done     bool
		refused  int
	}{
		{kernel(0), 0, false, 0},         // first read: the kernel may still be applying
		{kernel(0, 1), 0, false, 0},      // progress: wait
		{kernel(0, 1), 2, false, 0},      // no progress: write the two again
		{kernel(0, 1, 2), 0, false, 0},   // progress after the write
		{kernel(0, 1, 2), 1, false, 0},   // stuck again: second try
		{kernel(0, 1, 2), 1, false, 0},   // third try
		{kernel(0, 1, 2), 0, true, 1},    // tries spent: refused, ready
		{kernel(0, 1, 2, 3), 0, true, 1}, // done stays done
	}
	rb := newReadBack()
	for i, s := range steps {
		if !rb.done && !rb.due(now) {
			t.Fatalf("step %d: not due %v after the previous read", i, readBackEvery)
		}
		if rb.done {
			if rb.due(now) {
				t.Fatalf("step %d: due after done", i)
			}
			continue
		}
		again := rb.round(now, s.kernel, tbl, all)
		if len(again) != s.reinject || rb.done != s.done || rb.refused != s.refused {
			t.Fatalf("step %d: reinject %d done %v refused %d, want %d %v %d",
				i, len(again), rb.done, rb.refused, s.reinject, s.done, s.refused)
		}
		for _, e := range again {
			if e.Owner != 2 {
				t.Errorf("step %d: would write again %v owned by %d", i, e.Key, e.Owner)
			}
		}
		if rb.due(now.Add(readBackEvery / 2)) {
			t.Fatalf("step %d: due again before %v", i, readBackEvery)
		}
		now = now.Add(readBackEvery)
	}

	full := newReadBack()
	full.round(now, kernel(0, 1, 2, 3), tbl, all)
	if !full.done || full.refused != 0 {
		t.Errorf("kernel holding every peer entry: done %v refused %d", full.done, full.refused)
	}

	// Entries held back until their service exists are not missing.
	held := newReadBack()
	if again := held.round(now, kernel(0, 1), tbl, func(e *table.Entry) bool { return e.CAddr == peerConns[0].CAddr || e.CAddr == peerConns[1].CAddr }); again != nil || !held.done {
		t.Errorf("held-back entries waited for: done %v, again %d", held.done, len(again))
	}
}

// lossyKernel stands in for the kernel backup thread: it applies injected
// datagrams to a table /proc would show, but drops every datagram written
// before the table was read back twice (as a full socket buffer would), so
// that the node must notice and write them again.
type lossyKernel struct {
	mu    sync.Mutex
	reads int
	have  map[procKey]procconn.Entry
}

func (k *lossyKernel) consume(ctx context.Context, r *synclink.PipeReader) {
	buf := make([]byte, synclink.MaxFrame)
	for {
		n, err := r.ReadFrame(ctx, buf)
		if err != nil {
			return
		}
		m, err := wire.Decode(buf[:n])
		if err != nil {
			continue
		}
		k.mu.Lock()
		if k.reads >= 2 {
			for i := range m.Conns {
				p := procOf(&m.Conns[i])
				k.have[procKey{p.Protocol, p.CAddr, p.VAddr, p.CPort, p.VPort}] = p
			}
		}
		k.mu.Unlock()
	}
}

func (k *lossyKernel) conns() ([]procconn.Entry, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reads++
	out := make([]procconn.Entry, 0, len(k.have))
	for _, p := range k.have {
		out = append(out, p)
	}
	return out, nil
}

func (k *lossyKernel) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.have)
}

// A datagram the kernel backup dropped must not let the node call itself
// ready: it reads the kernel back, writes the missing entries again, and is
// ready only once the kernel holds them all.
func TestReadyOnlyOnceKernelHoldsTable(t *testing.T) {
	hub := NewMemHub()
	keys := testKeyring(t, 1)
	const n = 300
	startNodeWith(t, hub, keys, n)

	k := &lossyKernel{have: map[procKey]procconn.Entry{}}
	b := startNode(t, hub, testConfig(2, ModeMulticast), keys, k.conns)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go k.consume(ctx, b.kernel)
	waitFor(t, "b ready", b.e.ready.Load)
	if got := k.len(); got != n {
		t.Fatalf("b ready while its kernel holds %d of %d entries", got, n)
	}
	// The status snapshot follows the ready flag within a loop round.
	waitFor(t, "b's status ready", func() bool { s := b.e.Snapshot(); return s != nil && s.Ready })
	s := b.e.Snapshot()
	if s.Loop.KernelReinjected == 0 || s.Loop.KernelRefused != 0 {
		t.Errorf("reinjected %d refused %d, want some and none", s.Loop.KernelReinjected, s.Loop.KernelRefused)
	}
}

// all wants every entry.
func all(*table.Entry) bool { return true }
