package controller

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/saru/allocate"
	"github.com/peerlvs/peerlvs/saru/member"
	"github.com/prometheus/client_golang/prometheus"
)

func mb(name string, w uint32, st member.State, ok bool) member.Member {
	return member.Member{Name: name, Weight: w, State: st, FingerprintOK: ok}
}

func TestCompute(t *testing.T) {
	const B = 256
	ready := []member.Member{mb("d1", 1, member.StateReady, true), mb("d2", 1, member.StateReady, true), mb("d3", 1, member.StateReady, true)}
	base, err := Compute(ready, B, 7, 1)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		view    []member.Member
		owners  []string // names that must own buckets
		nothing []string // names that must own none
		quorum  int      // 1 if zero
	}{
		{"all ready", ready, []string{"d1", "d2", "d3"}, nil, 0},
		{"joining owns nothing", append(slices.Clone(ready), mb("d4", 1, member.StateJoining, true)), []string{"d1", "d2", "d3"}, []string{"d4"}, 0},
		{"draining owns nothing", []member.Member{ready[0], ready[1], mb("d3", 1, member.StateDraining, true)}, []string{"d1", "d2"}, []string{"d3"}, 0},
		{"mismatch excluded", append(slices.Clone(ready), mb("d4", 1, member.StateReady, false)), []string{"d1", "d2", "d3"}, []string{"d4"}, 0},
		{"local in the minority owns nothing", []member.Member{
			{Name: "d1", Weight: 1, State: member.StateReady, FingerprintOK: true, Local: true},
			{Name: "d2", Weight: 1, State: member.StateReady, FingerprintOK: true},
			mb("d3", 1, member.StateReady, false), mb("d4", 1, member.StateReady, false), mb("d5", 1, member.StateReady, false)},
			[]string{"d2"}, []string{"d1", "d3", "d4", "d5"}, 0},
		// A pair with different settings, as while an operator reloads
		// one after the other: d1's side keeps owning, in both views.
		{"tie, seen from the first", []member.Member{
			{Name: "d1", Weight: 1, State: member.StateReady, FingerprintOK: true, Local: true},
			mb("d2", 1, member.StateReady, false)},
			[]string{"d1"}, []string{"d2"}, 0},
		{"tie, seen from the second", []member.Member{
			mb("d1", 1, member.StateReady, false),
			{Name: "d2", Weight: 1, State: member.StateReady, FingerprintOK: true, Local: true}},
			nil, []string{"d1", "d2"}, 0},
		{"tie of four, seen from the second side", []member.Member{
			mb("a", 1, member.StateReady, false), mb("b", 1, member.StateReady, false),
			{Name: "c", Weight: 1, State: member.StateReady, FingerprintOK: true, Local: true},
			mb("d", 1, member.StateReady, true)},
			[]string{"d"}, []string{"a", "b", "c"}, 0},
		{"weight zero", append(slices.Clone(ready), mb("d4", 0, member.StateReady, true)), []string{"d1", "d2", "d3"}, []string{"d4"}, 0},
		{"quorum 2 met", ready, []string{"d1", "d2", "d3"}, nil, 2},
		{"quorum 3 met", ready, []string{"d1", "d2", "d3"}, nil, 3},
		{"quorum 2, alone: nobody owns", ready[:1], nil, []string{"d1"}, 2},
		{"quorum 2, a joining member does not count", []member.Member{ready[0], mb("d2", 1, member.StateJoining, true)}, nil, []string{"d1", "d2"}, 2},
		{"quorum 2, a mismatching member does not count", []member.Member{ready[0], mb("d2", 1, member.StateReady, false)}, nil, []string{"d1", "d2"}, 2},
		{"quorum 3, one draining: nobody owns", []member.Member{ready[0], ready[1], mb("d3", 1, member.StateDraining, true)}, nil, []string{"d1", "d2", "d3"}, 3},
		{"unfit owns nothing", []member.Member{ready[0], ready[1], unfit(ready[2])}, []string{"d1", "d2"}, []string{"d3"}, 0},
		{"quorum 3, one unfit: it still counts", []member.Member{ready[0], ready[1], unfit(ready[2])}, []string{"d1", "d2"}, []string{"d3"}, 3},
		{"quorum 2, two unfit: the third serves", []member.Member{ready[0], unfit(ready[1]), unfit(ready[2])}, []string{"d1"}, []string{"d2", "d3"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := max(tc.quorum, 1)
			m, err := Compute(tc.view, B, 7, q)
			if err != nil {
				t.Fatal(err)
			}
			total := 0
			for _, n := range tc.owners {
				c := len(m.BucketsOf(n))
				if c == 0 {
					t.Errorf("%s owns nothing", n)
				}
				total += c
			}
			if want := B * min(len(tc.owners), 1); total != want {
				t.Errorf("owners hold %d buckets, want %d", total, want)
			}
			if got := HasQuorum(tc.view, q); got != (len(tc.owners) > 0) {
				t.Errorf("HasQuorum = %v with owners %v", got, tc.owners)
			}
			for _, n := range tc.nothing {
				if c := len(m.BucketsOf(n)); c != 0 {
					t.Errorf("%s owns %d buckets, want 0", n, c)
				}
			}
			if len(tc.nothing) > 0 && len(tc.owners) == 3 && tc.name != "draining owns nothing" && allocate.Moved(base, m) != 0 {
				t.Errorf("an excluded member moved %d buckets", allocate.Moved(base, m))
			}
		})
	}
}

func unfit(m member.Member) member.Member {
	m.Unfit = "interface eth0: no carrier"
	return m
}

// drainFixture is the planned move the plan tests share: a, b and c own
// B buckets (m3), then c drains (m2); step and hold are saru's defaults
// of old.
func drainFixture(B uint32) (step, hold time.Duration, m3, m2 allocate.Map, alive map[string]bool, t0 time.Time) {
	three := []member.Member{mb("a", 1, member.StateReady, true), mb("b", 1, member.StateReady, true), mb("c", 1, member.StateReady, true)}
	drainC := []member.Member{three[0], three[1], mb("c", 1, member.StateDraining, true)}
	m3, _ = Compute(three, B, 1, 1)
	m2, _ = Compute(drainC, B, 1, 1)
	return time.Second, 5 * time.Second, m3, m2, map[string]bool{"a": true, "b": true, "c": true}, time.Unix(1000, 0)
}

// TestPlanHandover checks the giver-first order on both sides of a planned
// move and the immediate takeover from a failed owner.
func TestPlanHandover(t *testing.T) {
	const B = 64
	step, hold, m3, m2, alive, t0 := drainFixture(B)

	giver, taker := newPlan(B), newPlan(B)
	giver.update(allocate.Map{}, m3, alive, "c", t0, step, hold)
	taker.update(allocate.Map{}, m3, alive, "a", t0, step, hold)
	cBuckets := m3.BucketsOf("c")
	toA := 0
	for _, b := range cBuckets {
		if m2.OwnerOf(b) == "a" {
			toA++
		}
	}
	if got := len(giver.ownership().Owned); got != len(cBuckets) {
		t.Fatalf("giver owns %d at start, want %d", got, len(cBuckets))
	}

	giver.update(m3, m2, alive, "c", t0, step, hold)
	taker.update(m3, m2, alive, "a", t0, step, hold)
	if o := giver.ownership(); len(o.Owned) != 0 || len(o.HandoverOut) != len(cBuckets) {
		t.Fatalf("giver at t0: %d owned %d out, want 0 and %d", len(o.Owned), len(o.HandoverOut), len(cBuckets))
	}
	kept := 0
	for _, b := range m3.BucketsOf("a") {
		if m2.OwnerOf(b) == "a" {
			kept++
		}
	}
	if o := taker.ownership(); len(o.HandoverIn) != 0 || len(o.Owned) != kept {
		t.Fatalf("taker at t0: %d owned %d in, want %d owned and none in", len(o.Owned), len(o.HandoverIn), kept)
	}
	taker.advance(t0.Add(step), hold)
	if o := taker.ownership(); len(o.HandoverIn) != toA {
		t.Fatalf("taker at step: %d in, want %d", len(o.HandoverIn), toA)
	}
	giver.advance(t0.Add(hold), hold)
	if !giver.empty() {
		t.Fatalf("giver still holds buckets after hold")
	}
	taker.advance(t0.Add(step+hold), hold)
	if o := taker.ownership(); len(o.HandoverIn) != 0 || len(o.Owned) != len(m2.BucketsOf("a")) {
		t.Fatalf("taker after hold: %d owned %d in, want %d owned", len(o.Owned), len(o.HandoverIn), len(m2.BucketsOf("a")))
	}

	// c fails instead: no giver to wait for.
	failed := newPlan(B)
	failed.update(allocate.Map{}, m3, alive, "a", t0, step, hold)
	failed.update(m3, m2, map[string]bool{"a": true, "b": true}, "a", t0, step, hold)
	if o := failed.ownership(); len(o.Owned) != len(m2.BucketsOf("a")) || len(o.HandoverIn) != 0 {
		t.Fatalf("takeover from a failed owner: %d owned %d in, want %d owned", len(o.Owned), len(o.HandoverIn), len(m2.BucketsOf("a")))
	}
}

// TestPlanWaitsForRelease: a taker whose step has passed still waits for
// the giver's release (the giver gossips the allocation it applied), takes
// the bucket once released, and takes it anyway 2*hold after the step if
// no release ever comes.
func TestPlanWaitsForRelease(t *testing.T) {
	const B = 64
	step, hold, m3, m2, alive, t0 := drainFixture(B)
	toA := 0
	for _, b := range m3.BucketsOf("c") {
		if m2.OwnerOf(b) == "a" {
			toA++
		}
	}
	for _, tc := range []struct {
		name      string
		releaseAt time.Duration // -1: never
		wantIn    time.Duration // when the taker puts the buckets in HandoverIn
		wantForce int
	}{
		{"released before the step", 0, step, 0},
		{"released after the step", 3 * step, 3 * step, 0},
		{"never released", -1, step + 2*hold, toA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			taker := newPlan(B)
			released := false
			taker.released = func(giver string) bool {
				if giver != "c" {
					t.Errorf("waits for %q, want c", giver)
				}
				return released
			}
			taker.update(allocate.Map{}, m3, alive, "a", t0, step, hold)
			taker.update(m3, m2, alive, "a", t0, step, hold)
			for at := time.Duration(0); at <= step+3*hold; at += step / 2 {
				if tc.releaseAt >= 0 && at >= tc.releaseAt {
					released = true
				}
				next := taker.advance(t0.Add(at), hold)
				in := len(taker.ownership().HandoverIn)
				if want := at >= tc.wantIn && at < tc.wantIn+hold; (in == toA) != want || (in != 0 && in != toA) {
					t.Fatalf("at %v: %d buckets in HandoverIn, want them there: %v", at, in, want)
				}
				if in == 0 && at < tc.wantIn && next.IsZero() && released {
					t.Fatalf("at %v: nothing scheduled while a released bucket is pending", at)
				}
			}
			if taker.forced != tc.wantForce {
				t.Fatalf("forced %d takes, want %d", taker.forced, tc.wantForce)
			}
		})
	}
}

// TestPlanGiverWaitsForTaker: a giver keeps a bucket in HandoverOut (the
// established flows) past hold until the taker says it owns the bucket,
// and lets go anyway 2*hold after hold if the word never comes.
func TestPlanGiverWaitsForTaker(t *testing.T) {
	const B = 64
	step, hold, m3, m2, alive, t0 := drainFixture(B)
	n := len(m3.BucketsOf("c"))
	for _, tc := range []struct {
		name      string
		takenAt   time.Duration // -1: never
		wantGone  time.Duration // when the giver lets go
		wantForce int
	}{
		{"taken before hold", step, hold, 0},
		{"taken after hold", hold + 2*step, hold + 2*step, 0},
		{"never taken", -1, 3 * hold, n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			giver := newPlan(B)
			taken := false
			giver.taken = func(taker string) bool {
				if taker != "a" && taker != "b" {
					t.Errorf("waits for %q", taker)
				}
				return taken
			}
			giver.update(allocate.Map{}, m3, alive, "c", t0, step, hold)
			giver.update(m3, m2, alive, "c", t0, step, hold)
			for at := time.Duration(0); at <= 4*hold; at += step / 2 {
				if tc.takenAt >= 0 && at >= tc.takenAt {
					taken = true
				}
				giver.advance(t0.Add(at), hold)
				out := len(giver.ownership().HandoverOut)
				if want := at < tc.wantGone; (out == n) != want || (out != 0 && out != n) {
					t.Fatalf("at %v: %d buckets in HandoverOut, want all of them there: %v", at, out, want)
				}
			}
			if giver.forced != tc.wantForce {
				t.Fatalf("forced %d, want %d", giver.forced, tc.wantForce)
			}
		})
	}
}

type fakeMembership struct {
	mu      sync.Mutex
	name    string
	members []member.Member
	changes chan struct{}
}

func (f *fakeMembership) Name() string             { return f.name }
func (f *fakeMembership) Changes() <-chan struct{} { return f.changes }
func (f *fakeMembership) Members() []member.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.members)
}
func (f *fakeMembership) State() member.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.members {
		if m.Name == f.name {
			return m.State
		}
	}
	return member.StateJoining
}
func (f *fakeMembership) SetState(s member.State) error {
	f.mu.Lock()
	for i := range f.members {
		if f.members[i].Name == f.name {
			f.members[i].State = s
		}
	}
	f.mu.Unlock()
	select {
	case f.changes <- struct{}{}:
	default:
	}
	return nil
}

func (f *fakeMembership) SetProgress(p member.Progress) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.members {
		if f.members[i].Name == f.name {
			f.members[i].Progress = p
		}
	}
	return nil
}

type fakeApplier struct {
	mu    sync.Mutex
	calls []filter.Ownership
	at    []time.Time
}

func (f *fakeApplier) Apply(_ context.Context, o filter.Ownership) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, o)
	f.at = append(f.at, time.Now())
	return nil
}

func (f *fakeApplier) history() []filter.Ownership {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// TestReadyAndDrain runs the loop over a fake membership: the node turns
// ready after the grace time, owns its share, and a drain hands it all over
// through HandoverOut before dropping it.
func TestReadyAndDrain(t *testing.T) {
	fm := &fakeMembership{name: "d1", changes: make(chan struct{}, 1), members: []member.Member{
		mb("d1", 1, member.StateJoining, true), mb("d2", 1, member.StateReady, true)}}
	fa := &fakeApplier{}
	reg := prometheus.NewRegistry()
	c, ctx, stop := runController(t, Config{Membership: fm, Applier: fa, Readiness: GraceReadiness{After: 100 * time.Millisecond, Start: time.Now()},
		Buckets: 128, Seed: 3, HandoverStep: 20 * time.Millisecond, HandoverHold: 100 * time.Millisecond,
		ReadyPoll: 20 * time.Millisecond, Registry: reg})

	deadline := time.Now().Add(3 * time.Second)
	for fm.State() != member.StateReady || len(c.Applied().Owned) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not ready and owning: state %s, applied %+v", fm.State(), c.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	m, _, _ := c.Map()
	if got, want := len(c.Applied().Owned), len(m.BucketsOf("d1")); got != want {
		t.Fatalf("owned %d, want %d", got, want)
	}
	// d2 was the previous owner and is alive: d1 must have gone through
	// HandoverIn before owning.
	sawIn := false
	for _, o := range fa.history() {
		sawIn = sawIn || len(o.HandoverIn) > 0
	}
	if !sawIn {
		t.Errorf("joining node never used HandoverIn")
	}

	dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
	defer dcancel()
	if err := c.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	h := fa.history()
	var sawOut bool
	for _, o := range h {
		sawOut = sawOut || len(o.HandoverOut) > 0
	}
	if last := h[len(h)-1]; !sawOut || len(last.Owned)+len(last.HandoverOut)+len(last.HandoverIn) != 0 {
		t.Fatalf("drain: sawOut=%v last=%+v", sawOut, last)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) == 0 {
		t.Fatalf("metrics: %v (%d families)", err, len(mfs))
	}
	stop()
}

// runController runs a controller of cfg until the returned stop, which
// fails t if Run returned an error; ctx ends with it.
func runController(t *testing.T, cfg Config) (*Controller, context.Context, func()) {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stop := func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(cancel)
	return c, ctx, stop
}

// TestAloneWaits: a director whose syncd is ready at once but that sees no
// other member does not turn ready (and own everything) until it has heard
// of another member, or until AloneAfter if it stays alone.
func TestAloneWaits(t *testing.T) {
	const alone = 400 * time.Millisecond
	for _, tc := range []struct {
		name      string
		joinAfter time.Duration // 0: never
		min, max  time.Duration // when it must turn ready
	}{
		{"joins the others", 100 * time.Millisecond, 100 * time.Millisecond, alone - 50*time.Millisecond},
		{"stays alone", 0, alone, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fm := &fakeMembership{name: "d1", changes: make(chan struct{}, 1), members: []member.Member{
				mb("d1", 1, member.StateJoining, true)}}
			c, err := New(Config{Membership: fm, Applier: &fakeApplier{}, Readiness: GraceReadiness{},
				Buckets: 64, Seed: 3, ReadyPoll: 10 * time.Millisecond, AloneAfter: alone})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			go c.Run(ctx)
			if tc.joinAfter > 0 {
				time.AfterFunc(tc.joinAfter, func() {
					fm.mu.Lock()
					fm.members = append(fm.members, mb("d2", 1, member.StateReady, true))
					fm.mu.Unlock()
				})
			}
			for fm.State() != member.StateReady {
				if time.Since(start) > tc.max {
					t.Fatalf("not ready after %v", time.Since(start))
				}
				time.Sleep(5 * time.Millisecond)
			}
			if took := time.Since(start); took < tc.min {
				t.Fatalf("ready after %v, before %v", took, tc.min)
			} else {
				t.Logf("ready after %v", took.Round(time.Millisecond))
			}
		})
	}
}

// TestProgressKey: the key of an allocation changes when a member it was
// computed over runs a new saru, even though the allocation is the same.
func TestProgressKey(t *testing.T) {
	view := []member.Member{mb("a", 1, member.StateReady, true), mb("b", 1, member.StateReady, true)}
	view[0].Run, view[1].Run = 1, 2
	m, err := Compute(view, 64, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	k := progressKey(m, view)
	if again := progressKey(m, slices.Clone(view)); again != k {
		t.Fatalf("same view, keys %x and %x", k, again)
	}
	back := slices.Clone(view)
	back[1].Run = 3 // b restarted
	m2, _ := Compute(back, 64, 1, 1)
	if m2.Fingerprint != m.Fingerprint {
		t.Fatal("the allocation itself changed")
	}
	if progressKey(m2, back) == k {
		t.Fatal("a restarted member did not change the key")
	}
}

// TestNoStaleRelease: a giver's release of the previous allocation does not
// count for the next one. d2 has released the allocation in which it owned
// everything; when d1 turns ready and takes half, d1 must wait for d2's
// release of the new allocation before it takes new flows (HandoverIn).
func TestNoStaleRelease(t *testing.T) {
	const B = 64
	d1, d2 := mb("d1", 1, member.StateJoining, true), mb("d2", 1, member.StateReady, true)
	d1.Run, d2.Run = 1, 2
	alone, _ := Compute([]member.Member{d1, d2}, B, 3, 1)
	d2.Applied = progressKey(alone, []member.Member{d1, d2})
	fm := &fakeMembership{name: "d1", changes: make(chan struct{}, 1), members: []member.Member{d1, d2}}
	fa := &fakeApplier{}
	// A hold of 1s: the forced take (2*hold after the step) stays out of
	// the 300ms watched below.
	c, err := New(Config{Membership: fm, Applier: fa, Readiness: GraceReadiness{}, Buckets: B, Seed: 3,
		HandoverHold: time.Second, ReadyPoll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go c.Run(ctx)
	takesIn := func() bool {
		for _, o := range fa.history() {
			if len(o.HandoverIn) > 0 {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(2 * time.Second); fm.State() != member.StateReady; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("d1 never turned ready")
		}
	}
	time.Sleep(300 * time.Millisecond) // several steps and deadlines
	if takesIn() {
		t.Fatal("d1 took new flows on d2's release of the previous allocation")
	}
	// d2 releases the new allocation.
	view := fm.Members()
	m, _ := Compute(view, B, 3, 1)
	fm.mu.Lock()
	fm.members[1].Applied = progressKey(m, view)
	fm.mu.Unlock()
	fm.changes <- struct{}{}
	for deadline := time.Now().Add(2 * time.Second); !takesIn(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("d1 did not take new flows after d2's release")
		}
	}
}

// TestPlanGranted: with grants, a bucket is taken only once granted, from
// a live giver or a failed one alike, never forced by time, and a taken
// bucket is in the rules only while granted.
func TestPlanGranted(t *testing.T) {
	const B = 64
	step, hold, m3, m2, alive, t0 := drainFixture(B)
	granted := map[uint32]bool{}
	newGated := func() *plan {
		p := newPlan(B)
		p.granted = func(b uint32) bool { return granted[b] }
		return p
	}
	mine := m2.BucketsOf("a")
	fromC := map[uint32]bool{}
	for _, b := range m3.BucketsOf("c") {
		if m2.OwnerOf(b) == "a" {
			fromC[b] = true
		}
	}
	for _, tc := range []struct {
		name     string
		alive    map[string]bool
		wantFrom string // where a granted bucket of c's goes: in (a live giver) or owned (a failed one)
	}{
		{"live giver", alive, "in"},
		{"failed giver", map[string]bool{"a": true, "b": true}, "owned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clear(granted)
			p := newGated()
			p.update(allocate.Map{}, m3, alive, "a", t0, step, hold)
			if o := p.ownership(); len(o.Owned) != 0 {
				t.Fatalf("owns %d before any grant", len(o.Owned))
			}
			for _, b := range m3.BucketsOf("a") {
				granted[b] = true
			}
			p.advance(t0, hold)
			if o := p.ownership(); len(o.Owned) != len(m3.BucketsOf("a")) {
				t.Fatalf("owns %d once granted, want %d", len(o.Owned), len(m3.BucketsOf("a")))
			}
			p.update(m3, m2, tc.alive, "a", t0, step, hold)
			if got := len(p.wanted()); got != len(mine) {
				t.Fatalf("asks for %d buckets, want %d", got, len(mine))
			}
			// Long past every deadline, without grants nothing moves.
			late := t0.Add(10 * (step + hold))
			p.advance(late, hold)
			o := p.ownership()
			if len(o.HandoverIn)+len(o.Owned) != len(mine)-len(fromC) {
				t.Fatalf("without grants: %d in %d owned, want only the %d kept", len(o.HandoverIn), len(o.Owned), len(mine)-len(fromC))
			}
			for b := range fromC {
				granted[b] = true
			}
			p.advance(late, hold)
			o = p.ownership()
			n := len(o.HandoverIn)
			if tc.wantFrom == "owned" {
				n = len(o.Owned) - (len(mine) - len(fromC))
			}
			if n != len(fromC) {
				t.Fatalf("granted: %d of c's %d buckets %s (ownership %d owned %d in)", n, len(fromC), tc.wantFrom, len(o.Owned), len(o.HandoverIn))
			}
			// A grant that lapses takes the bucket out of the rules, not
			// out of the plan.
			for b := range fromC {
				granted[b] = false
			}
			o = p.ownership()
			if len(o.HandoverIn)+len(o.Owned) != len(mine)-len(fromC) || len(p.wanted()) != len(mine) {
				t.Fatalf("lapsed grants: %d in %d owned, still asking for %d", len(o.HandoverIn), len(o.Owned), len(p.wanted()))
			}
		})
	}
}

// TestUnfitGiver: the buckets of a director that turns unfit move by
// planned handover (HandoverIn for HandoverHold, its established flows
// staying with it) unless a tracked link of it is down: then it receives
// none of their flows, and they are owned at once as from a failed one.
func TestUnfitGiver(t *testing.T) {
	const hold = 5 * time.Second
	for _, tc := range []struct {
		name     string
		linkDown bool
		wantIn   bool
	}{
		{"ping node silent", false, true},
		{"link down", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d1, d2 := mb("d1", 1, member.StateReady, true), mb("d2", 1, member.StateReady, true)
			d1.Local = true
			fm := &fakeMembership{name: "d1", changes: make(chan struct{}, 1), members: []member.Member{d1, d2}}
			fa := &fakeApplier{}
			c, _, stop := runController(t, Config{Membership: fm, Applier: fa, Readiness: GraceReadiness{}, Buckets: 128, Seed: 3,
				HandoverHold: hold, ReadyPoll: 10 * time.Millisecond})
			waitFor := func(what string, ok func(filter.Ownership) bool) filter.Ownership {
				t.Helper()
				for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
					if a := c.Applied(); ok(a) {
						return a
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s: applied %+v", what, c.Applied())
					}
				}
			}
			waitFor("d1 owns its half", func(o filter.Ownership) bool { return len(o.Owned) > 0 && len(o.Owned) < 128 })
			fm.mu.Lock()
			fm.members[1].Unfit, fm.members[1].LinkDown = "x", tc.linkDown
			fm.mu.Unlock()
			fm.changes <- struct{}{}
			if tc.wantIn {
				// A live giver is waited for: nothing moves until it
				// gossips that it applied the new allocation.
				time.Sleep(100 * time.Millisecond)
				if o := c.Applied(); len(o.Owned) == 128 || len(o.HandoverIn) > 0 {
					t.Fatalf("took d2's buckets before d2 let go: %+v", o)
				}
				view := fm.Members()
				m, err := Compute(view, 128, 3, 1)
				if err != nil {
					t.Fatal(err)
				}
				fm.mu.Lock()
				fm.members[1].Applied = progressKey(m, view)
				fm.mu.Unlock()
				fm.changes <- struct{}{}
				o := waitFor("d2's buckets in HandoverIn", func(o filter.Ownership) bool { return len(o.HandoverIn) > 0 })
				if len(o.Owned)+len(o.HandoverIn) != 128 {
					t.Fatalf("applied %d owned %d in, want all 128", len(o.Owned), len(o.HandoverIn))
				}
			} else {
				waitFor("every bucket owned", func(o filter.Ownership) bool { return len(o.Owned) == 128 })
				for _, o := range fa.history() {
					if len(o.HandoverIn) > 0 {
						t.Fatalf("took buckets of a director whose link is down through HandoverIn: %+v", o)
					}
				}
			}
			stop()
		})
	}
}
