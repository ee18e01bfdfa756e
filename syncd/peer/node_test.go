package peer

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/syncd/table"
)

func TestStream(t *testing.T) {
	var s stream
	now := t0
	recv := func(us ...uint64) {
		for _, u := range us {
			s.receive(u, now)
		}
	}
	recv(1, 2, 4, 5, 9)
	if got := s.missing(nil, 10); !slices.Equal(got, []Range{{3, 1}, {6, 3}}) || s.next != 3 || s.gapSince != now {
		t.Fatalf("missing %v next %d", got, s.next)
	}
	if fresh, _ := s.receive(4, now); fresh {
		t.Error("duplicate taken as fresh")
	}
	recv(3, 6, 7, 8)
	if s.next != 10 || !s.gapSince.IsZero() {
		t.Fatalf("next %d gap %v", s.next, s.gapSince)
	}
	// A lost tail shows up through ALIVE.
	s.announce(12, now)
	if got := s.missing(nil, 10); !slices.Equal(got, []Range{{10, 3}}) {
		t.Errorf("tail %v", got)
	}
	// Too far ahead: the gap is given up and counted.
	if _, lost := s.receive(12+streamWindow+5, now); lost != 3+5 {
		t.Errorf("lost %d", lost)
	}
	if got := s.missing(nil, 10); len(got) != 1 || got[0].First != s.next {
		t.Errorf("after slide %v next %d", got, s.next)
	}

	// A run first heard late starts there; one first heard early is
	// caught up from 1.
	var late, early stream
	late.receive(5000, now)
	early.receive(7, now)
	if late.next != 5001 || !late.gapSince.IsZero() {
		t.Errorf("late start next %d", late.next)
	}
	if got := early.missing(nil, 10); !slices.Equal(got, []Range{{1, 6}}) {
		t.Errorf("early start missing %v", got)
	}
}

// simNet connects Nodes in memory. Every frame goes to every other node
// (multicast), each copy lost with probability loss.
type simNet struct {
	t      testing.TB
	nodes  map[table.NodeID]*Node
	order  []table.NodeID
	queue  []packet
	loss   float64
	rng    *rand.Rand
	now    time.Time
	drop   func(p *packet, to table.NodeID) bool
	counts map[table.NodeID]map[Type]int
}

type packet struct {
	from table.NodeID
	to   []table.NodeID
	b    []byte
}

func newSimNet(t testing.TB, seed uint64) *simNet {
	return &simNet{
		t:      t,
		nodes:  map[table.NodeID]*Node{},
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		now:    t0,
		counts: map[table.NodeID]map[Type]int{},
	}
}

func (s *simNet) add(id table.NodeID, cfg Config, tb *table.Table) *Node {
	s.t.Helper()
	if tb == nil {
		var err error
		if tb, err = table.New(table.Config{Self: id, Shards: 16}); err != nil {
			s.t.Fatal(err)
		}
	}
	cfg.Self = id
	if cfg.Incarnation == 0 {
		cfg.Incarnation = NewIncarnation(s.now)
	}
	if cfg.Keyring == nil {
		cfg.Keyring = testRing(s.t, 1)
	}
	s.counts[id] = map[Type]int{}
	cfg.Send = func(frame []byte, to []table.NodeID) {
		s.counts[id][Type(frame[5])]++
		s.queue = append(s.queue, packet{id, slices.Clone(to), bytes.Clone(frame)})
	}
	n, err := NewNode(cfg, tb)
	if err != nil {
		s.t.Fatal(err)
	}
	s.nodes[id] = n
	s.order = append(s.order, id)
	return n
}

// round advances the clock by dt, ticks every node and delivers what was
// sent.
func (s *simNet) round(dt time.Duration) {
	s.now = s.now.Add(dt)
	for _, id := range s.order {
		s.nodes[id].Tick(s.now)
	}
	for len(s.queue) > 0 {
		q := s.queue
		s.queue = nil
		for i := range q {
			p := &q[i]
			for _, id := range s.order {
				if id == p.from || (s.drop != nil && s.drop(p, id)) || (s.loss > 0 && s.rng.Float64() < s.loss) {
					continue
				}
				if err := s.nodes[id].Receive(bytes.Clone(p.b), s.now); err != nil {
					s.t.Errorf("node %d receiving %v from %d: %v", id, Type(p.b[5]), p.from, err)
				}
			}
		}
	}
}

// dump renders a table for comparison, leaving out the expiry (a second
// apart depending on when a frame crossed a second boundary).
func dump(tb *table.Table) map[table.Key]string {
	m := map[table.Key]string{}
	tb.ForEach(0, func(e *table.Entry) bool {
		m[e.Key] = fmt.Sprintf("owner %d v%d state %d flags %#x d %v:%d", e.Owner, e.Version, e.State, e.Flags, e.DAddr, e.DPort)
		return true
	})
	return m
}

func diffTables(a, b map[table.Key]string) string {
	n := 0
	var out string
	for k, v := range a {
		if b[k] != v && n < 5 {
			out += fmt.Sprintf("\n  %v:%d: %q vs %q", k.CAddr, k.CPort, v, b[k])
			n++
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok && n < 5 {
			out += fmt.Sprintf("\n  %v:%d: missing vs %q", k.CAddr, k.CPort, b[k])
			n++
		}
	}
	return out
}

// TestNackResendsLatest loses an update and the one after it that changed
// the same entry; the receiver NACKs both and the resends carry the state
// the entry has now, not what the lost frame held.
func TestNackResendsLatest(t *testing.T) {
	s := newSimNet(t, 1)
	a := s.add(1, Config{NoBulk: true}, nil)
	b := s.add(2, Config{NoBulk: true}, nil)
	s.round(time.Millisecond) // ALIVEs: they know each other

	var resent []table.Entry
	lose := map[uint64]bool{2: true, 3: true}
	s.drop = func(p *packet, to table.NodeID) bool {
		if Type(p.b[5]) != TypeUpdate || p.from != 1 {
			return false
		}
		pt := bytes.Clone(p.b)
		f, err := NewOpener(99, testRing(t, 1)).Open(pt)
		if err != nil {
			t.Fatal(err)
		}
		u, _ := ParseUpdate(f.Payload)
		if u.Flags&UpdateResend != 0 {
			r := u.Entries()
			var e table.Entry
			for {
				if _, _, ok := r.Next(&e); !ok {
					break
				}
				resent = append(resent, e)
			}
			return false
		}
		return lose[u.USeq]
	}
	x := conn4(1)
	for i, state := range []uint16{1, 2, 4, 5} { // useq 1..4; 2 and 3 are lost
		y := conn4(100 + i)
		a.Local(&y, s.now)
		x.State = state
		if _, err := a.Local(&x, s.now); err != nil {
			t.Fatal(err)
		}
		a.Flush()
		s.round(time.Millisecond)
	}
	for range 20 {
		s.round(10 * time.Millisecond)
	}
	st := b.Stats()
	if st.NacksSent == 0 || a.Stats().Resends != 2 {
		t.Fatalf("NACKs sent %d, resends %d", st.NacksSent, a.Stats().Resends)
	}
	for _, e := range resent {
		if e.Key == x.Key && e.State != 5 {
			t.Errorf("resend carried state %d, the entry is now in 5", e.State)
		}
	}
	if d := diffTables(dump(a.Table()), dump(b.Table())); d != "" {
		t.Errorf("tables differ:%s", d)
	}
}

// TestSimulationConverges runs three nodes that change their tables under
// 20% loss; once the loss stops they must agree within a bounded time.
func TestSimulationConverges(t *testing.T) {
	s := newSimNet(t, 42)
	ids := []table.NodeID{1, 2, 3}
	for _, id := range ids {
		s.add(id, Config{NoBulk: true}, nil)
	}
	s.loss = 0.2
	r := rand.New(rand.NewPCG(7, 7))
	next := 0
	owned := map[table.NodeID][]table.Entry{}
	for round := range 500 {
		for _, id := range ids {
			n := s.nodes[id]
			for range 10 {
				switch op := r.IntN(10); {
				case op < 5 || len(owned[id]) == 0: // a new connection
					e := conn4(next)
					next++
					n.Local(&e, s.now)
					owned[id] = append(owned[id], e)
				case op < 8: // a state change
					e := &owned[id][r.IntN(len(owned[id]))]
					e.State = uint16(1 + r.IntN(8))
					n.Local(e, s.now)
				case op < 9: // take over someone else's connection
					other := ids[r.IntN(len(ids))]
					if other == id || len(owned[other]) == 0 {
						continue
					}
					k := r.IntN(len(owned[other]))
					e := owned[other][k]
					owned[other] = slices.Delete(owned[other], k, k+1)
					n.Local(&e, s.now)
					owned[id] = append(owned[id], e)
				default: // the kernel dropped one
					k := r.IntN(len(owned[id]))
					n.LocalDelete(&owned[id][k].Key, s.now)
					owned[id] = slices.Delete(owned[id], k, k+1)
				}
			}
		}
		_ = round
		s.round(10 * time.Millisecond)
	}
	s.loss = 0
	const limit = 300 // rounds of 10 ms: 3 s, three ALIVE periods
	converged := -1
	for round := range limit {
		s.round(10 * time.Millisecond)
		d1, d2, d3 := dump(s.nodes[1].Table()), dump(s.nodes[2].Table()), dump(s.nodes[3].Table())
		if diffTables(d1, d2) == "" && diffTables(d1, d3) == "" {
			converged = round
			break
		}
	}
	for _, id := range ids {
		st := s.nodes[id].Stats()
		t.Logf("node %d: %d entries, %d updates sent, %d resends (%d too old), %d NACKs sent, %d stale, %d lost, %d bulk entries sent",
			id, s.nodes[id].Table().Len(), st.UpdatesSent, st.Resends, st.ResendTooOld, st.NacksSent, st.EntriesStale, st.UpdatesLost, st.BulkEntriesSent)
	}
	if converged < 0 {
		t.Fatalf("no convergence within %d rounds after the loss stopped:%s\n3:%s", limit, diffTables(dump(s.nodes[1].Table()), dump(s.nodes[2].Table())), diffTables(dump(s.nodes[1].Table()), dump(s.nodes[3].Table())))
	}
	t.Logf("converged %d rounds (%v) after the loss stopped", converged+1, time.Duration(converged+1)*10*time.Millisecond)
	// And they agree with what the owners' kernels reported.
	truth := 0
	for _, id := range ids {
		truth += len(owned[id])
	}
	if got := s.nodes[1].Table().Len(); got != truth {
		t.Errorf("tables hold %d entries, the kernels %d", got, truth)
	}
}

func fill(t testing.TB, tb *table.Table, n int, owner table.NodeID) {
	t.Helper()
	for i := range n {
		e := conn4(i)
		if i%10 == 0 {
			e = conn6(i)
		}
		if _, err := tb.Upsert(&e, owner, t0); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBulkTwoJoiners: two nodes join at once; one dump pass serves both,
// every entry sent once.
func TestBulkTwoJoiners(t *testing.T) {
	const entries = 100_000
	s := newSimNet(t, 3)
	tb, _ := table.New(table.Config{Self: 1})
	fill(t, tb, entries, 1)
	a := s.add(1, Config{NoBulk: true}, tb)
	s.round(time.Millisecond)
	j1 := s.add(2, Config{}, nil)
	j2 := s.add(3, Config{}, nil)
	if j1.Ready() {
		t.Fatal("joiner ready before its resync")
	}
	rounds := 0
	for ; rounds < 1000 && !(j1.Ready() && j2.Ready()); rounds++ {
		s.round(10 * time.Millisecond)
	}
	if !j1.Ready() || !j2.Ready() {
		t.Fatalf("not ready after %d rounds", rounds)
	}
	st := a.Stats()
	t.Logf("ready after %v; %d bulk frames, %d entries", time.Duration(rounds)*10*time.Millisecond, st.BulkFramesSent, st.BulkEntriesSent)
	if st.BulkEntriesSent != entries {
		t.Errorf("sent %d entries for %d, want each once", st.BulkEntriesSent, entries)
	}
	for _, j := range []*Node{j1, j2} {
		if d := diffTables(dump(tb), dump(j.Table())); d != "" {
			t.Errorf("joiner differs:%s", d)
		}
	}
}

// TestBulkLateJoiner: a node that asks while a dump is under way joins it
// and gets the shards it missed when the walk wraps around.
func TestBulkLateJoiner(t *testing.T) {
	const entries = 20_000
	s := newSimNet(t, 4)
	tb, _ := table.New(table.Config{Self: 1})
	fill(t, tb, entries, 1)
	cfg := Config{AliveInterval: 50 * time.Millisecond, BulkRate: 40_000}
	a := s.add(1, Config{NoBulk: true, AliveInterval: cfg.AliveInterval, BulkRate: cfg.BulkRate}, tb)
	s.round(time.Millisecond)
	j1 := s.add(2, cfg, nil)
	var j2 *Node
	for r := 0; r < 400 && !(j1.Ready() && j2 != nil && j2.Ready()); r++ {
		if j2 == nil && a.Stats().BulkEntriesSent >= entries/2 {
			j2 = s.add(3, cfg, nil)
		}
		s.round(10 * time.Millisecond)
	}
	if j2 == nil || !j1.Ready() || !j2.Ready() {
		t.Fatalf("ready: %v %v", j1.Ready(), j2 != nil && j2.Ready())
	}
	sent := a.Stats().BulkEntriesSent
	t.Logf("%d entries sent for two joiners of %d", sent, entries)
	if sent >= 2*entries || sent <= entries {
		t.Errorf("sent %d, want between %d and %d", sent, entries, 2*entries)
	}
	for _, j := range []*Node{j1, j2} {
		if d := diffTables(dump(tb), dump(j.Table())); d != "" {
			t.Errorf("joiner differs:%s", d)
		}
	}
}

// TestBulkLossy: lost BULK frames leave shards incomplete; the joiner asks
// for those again until it has them all.
func TestBulkLossy(t *testing.T) {
	const entries = 30_000
	s := newSimNet(t, 5)
	tb, _ := table.New(table.Config{Self: 1})
	fill(t, tb, entries, 1)
	s.add(1, Config{NoBulk: true}, tb)
	s.round(time.Millisecond)
	j := s.add(2, Config{}, nil)
	s.loss = 0.1
	r := 0
	for ; r < 3000 && !j.Ready(); r++ {
		s.round(10 * time.Millisecond)
	}
	if !j.Ready() {
		t.Fatal("never ready")
	}
	t.Logf("ready after %v at 10%% loss", time.Duration(r)*10*time.Millisecond)
	if d := diffTables(dump(tb), dump(j.Table())); d != "" {
		t.Errorf("joiner differs:%s", d)
	}
}

// TestColdStart: nodes that start together find nobody ready and declare
// themselves complete after BulkWait.
func TestColdStart(t *testing.T) {
	s := newSimNet(t, 6)
	a := s.add(1, Config{}, nil)
	b := s.add(2, Config{}, nil)
	for range 290 {
		s.round(10 * time.Millisecond)
	}
	if a.Ready() || b.Ready() {
		t.Fatal("ready before BulkWait")
	}
	for range 20 {
		s.round(10 * time.Millisecond)
	}
	if !a.Ready() || !b.Ready() {
		t.Fatal("not ready after BulkWait")
	}
}

// TestRefreshKeepsPeersAlive: an own entry reported again by the kernel
// (unchanged, so not sent then) is re-sent before peers' copies expire; an
// idle one goes to Config.Idle, and Refresh re-sends it.
func TestRefreshKeepsPeersAlive(t *testing.T) {
	s := newSimNet(t, 7)
	var idle []table.Key
	ta, _ := table.New(table.Config{Self: 1, Shards: 4, RefreshMargin: 10 * time.Second})
	a := s.add(1, Config{NoBulk: true, Idle: func(d *table.Due) { idle = append(idle, d.Key) }}, ta)
	b := s.add(2, Config{NoBulk: true}, nil)
	busy, quiet := conn4(1), conn4(2)
	busy.Timeout, quiet.Timeout = 60, 60
	a.Local(&busy, s.now)
	a.Local(&quiet, s.now)
	s.round(10 * time.Millisecond)
	for sec := 1; sec <= 100; sec++ {
		if sec%20 == 0 {
			a.Local(&busy, s.now) // the kernel announces it every 50 packets
		}
		if sec == 55 && len(idle) == 1 {
			a.Refresh(&idle[0], 60, s.now) // /proc says it is still there
		}
		s.round(time.Second)
	}
	if _, ok := b.Table().Get(&busy.Key); !ok {
		t.Error("busy entry expired on the peer")
	}
	if len(idle) == 0 || idle[0] != quiet.Key {
		t.Errorf("idle reports %v", idle)
	}
	if _, ok := b.Table().Get(&quiet.Key); !ok {
		t.Error("refreshed idle entry expired on the peer")
	}
}

// TestResendSkipsEntriesTakenOver: a peer that NACKs an old update must not
// get back, in the resend, the state of an entry that another director has
// taken over and deleted since: tables keep no tombstones, so that state
// would bring the deleted entry back at a peer that already applied the
// delete (the flake of TestSimulationConverges, 1 run in ~1000).
func TestResendSkipsEntriesTakenOver(t *testing.T) {
	s := newSimNet(t, 1)
	for _, id := range []table.NodeID{1, 2, 3} {
		s.add(id, Config{NoBulk: true}, nil)
	}
	n1, n2, n3 := s.nodes[1], s.nodes[2], s.nodes[3]
	e := conn4(7)
	n1.Local(&e, s.now)
	s.round(10 * time.Millisecond)
	// Node 1's next update of the entry does not reach node 2.
	var block func(p *packet, to table.NodeID) bool
	s.drop = func(p *packet, to table.NodeID) bool { return block != nil && block(p, to) }
	nack := func(p *packet, to table.NodeID) bool { return p.from == 2 && to == 1 && Type(p.b[5]) == TypeNack }
	block = func(p *packet, to table.NodeID) bool {
		return p.from == 1 && to == 2 && Type(p.b[5]) == TypeUpdate || nack(p, to)
	}
	e.State = 5
	n1.Local(&e, s.now)
	s.round(10 * time.Millisecond)
	// Node 3 takes the connection over, then its kernel drops it; node 1
	// hears of the take-over but not yet of the delete. Node 2's NACK waits
	// until then.
	block = nack
	taken := e
	taken.State = 3
	n3.Local(&taken, s.now)
	s.round(10 * time.Millisecond)
	block = func(p *packet, to table.NodeID) bool { return p.from == 3 && to == 1 }
	n3.LocalDelete(&taken.Key, s.now)
	s.round(10 * time.Millisecond)
	if _, ok := n2.Table().Get(&e.Key); ok {
		t.Fatal("node 2 did not apply the delete")
	}
	if got, ok := n1.Table().Get(&e.Key); !ok || got.Owner != 3 {
		t.Fatalf("node 1 should still hold node 3's entry: %+v %v", got, ok)
	}
	// Node 2 NACKs node 1's lost update; node 1 answers.
	for range 200 {
		s.round(10 * time.Millisecond)
		if _, ok := n2.Table().Get(&e.Key); ok {
			t.Fatalf("a resend brought the deleted entry back at node 2 (node 1: %d resends)", n1.Stats().Resends)
		}
	}
	if n1.Stats().Resends == 0 {
		t.Fatal("node 1 resent nothing: the scenario did not happen")
	}
	block = nil
	for range 100 {
		s.round(10 * time.Millisecond)
	}
	for id, n := range s.nodes {
		if _, ok := n.Table().Get(&e.Key); ok {
			t.Errorf("node %d still holds the deleted entry", id)
		}
	}
}
