package health

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRecordFallRise(t *testing.T) {
	spec := Spec{Fall: 3, Rise: 2}
	up, down := Result{Up: true, Weight: -1}, Result{Err: errors.New("refused")}
	for _, tc := range []struct {
		name    string
		results []Result
		want    []Verdict
	}{
		{"first result decides up", []Result{up}, []Verdict{Up}},
		{"first result decides down", []Result{down}, []Verdict{Down}},
		{"one lost probe does not take it down", []Result{up, down, up, down, down, up}, []Verdict{Up, Up, Up, Up, Up, Up}},
		{"fall in a row", []Result{up, down, down, down}, []Verdict{Up, Up, Up, Down}},
		{"rise in a row", []Result{down, up, down, up, up}, []Verdict{Down, Down, Down, Down, Up}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st Status
			st.Weight = -1
			now := time.Unix(0, 0)
			for i, r := range tc.results {
				before := st.Verdict
				changed := st.record(r, spec, now.Add(time.Duration(i)*time.Second))
				if st.Verdict != tc.want[i] {
					t.Fatalf("after result %d: %v, want %v", i, st.Verdict, tc.want[i])
				}
				if changed != (before != st.Verdict) {
					t.Fatalf("after result %d: changed=%v, verdict %v -> %v", i, changed, before, st.Verdict)
				}
				if changed && !st.Since.Equal(now.Add(time.Duration(i)*time.Second)) {
					t.Fatalf("since %v not updated", st.Since)
				}
			}
		})
	}
}

func TestRecordDynamicWeight(t *testing.T) {
	st := Status{Weight: -1}
	s := Spec{Fall: 1, Rise: 1}
	if !st.record(Result{Up: true, Weight: 5}, s, time.Now()) || st.Weight != 5 {
		t.Fatalf("first: %+v", st)
	}
	if !st.record(Result{Up: true, Weight: 7}, s, time.Now()) || st.Weight != 7 {
		t.Fatalf("a new weight is a change: %+v", st)
	}
	if st.record(Result{Up: true, Weight: 7}, s, time.Now()) {
		t.Fatal("same weight is no change")
	}
}

// TestMonitorPacing runs many checks against a probe that records when it
// is called: no check runs more often than its interval or twice at once,
// and no more than the worker bound run at all.
func TestMonitorPacing(t *testing.T) {
	const n, workers = 300, 16
	interval := 200 * time.Millisecond
	var mu sync.Mutex
	starts := map[string][]time.Time{}
	inFlight := map[string]bool{}
	var running, peak atomic.Int32
	probe := func(ctx context.Context, s Spec, tg Target) Result {
		id := tg.Addr.String()
		mu.Lock()
		if inFlight[id] {
			t.Errorf("%s checked twice at once", id)
		}
		inFlight[id] = true
		starts[id] = append(starts[id], time.Now())
		mu.Unlock()
		if r := running.Add(1); r > peak.Load() {
			peak.Store(r)
		}
		time.Sleep(5 * time.Millisecond)
		running.Add(-1)
		mu.Lock()
		inFlight[id] = false
		mu.Unlock()
		return Result{Up: true, Weight: -1}
	}
	m := NewMonitor(probe, workers, nil)
	// The interval counts from the monitor's own start of a check
	// (Status.Checked); the probe's call comes a goroutine switch later,
	// which a loaded host can stretch by milliseconds, so the spacing is
	// asserted on the monitor's instants, exactly.
	checked := map[string][]time.Time{}
	m.OnResult = func(c Check, _ Result, _ bool, st Status) {
		mu.Lock()
		checked[c.ID] = append(checked[c.ID], st.Checked)
		mu.Unlock()
	}
	var checks []Check
	for i := range n {
		tg := Target{}
		tg.Addr = mustAddrPort(t, fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1))
		checks = append(checks, Check{ID: tg.Addr.String(), Spec: Spec{Kind: KindTCP, Interval: interval, Timeout: 50 * time.Millisecond, Fall: 1, Rise: 1}, Target: tg})
	}
	m.Set(checks)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	base := runtime.NumGoroutine()
	var most atomic.Int32
	go func() {
		for ctx.Err() == nil {
			if n := int32(runtime.NumGoroutine() - base); n > most.Load() {
				most.Store(n)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	m.Run(ctx)
	// The scheduler, the sampler and at most one goroutine per worker:
	// 300 checks do not cost 300 goroutines.
	if g := most.Load(); g > workers+3 {
		t.Errorf("%d goroutines for %d checks with %d workers", g, n, workers)
	}
	if p := peak.Load(); p > workers {
		t.Errorf("%d probes at once, bound %d", p, workers)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(starts) != n {
		t.Fatalf("%d of %d checks ran", len(starts), n)
	}
	for id, ts := range checked {
		slices.SortFunc(ts, time.Time.Compare)
		for i := 1; i < len(ts); i++ {
			if gap := ts[i].Sub(ts[i-1]); gap < interval {
				t.Fatalf("%s checked %v after the previous check, interval %v", id, gap, interval)
			}
		}
	}
	for id, ts := range starts {
		// 1.5 s with first checks spread over 200 ms: at most 8 checks.
		if len(ts) > 8 || len(ts) < 4 {
			t.Fatalf("%s checked %d times in 1.5 s at %v", id, len(ts), interval)
		}
	}
	for _, st := range m.Statuses() {
		if st.Verdict != Up {
			t.Fatalf("%s: %v", st.ID, st.Verdict)
		}
	}
}

func TestMonitorSetKeepsAndDrops(t *testing.T) {
	var down atomic.Bool
	probe := func(ctx context.Context, s Spec, tg Target) Result {
		if down.Load() && tg.Addr.Port() == 1 {
			return Result{Err: errors.New("down")}
		}
		return Result{Up: true, Weight: -1}
	}
	spec := Spec{Kind: KindTCP, Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Fall: 2, Rise: 1}
	a := Check{ID: "a", Spec: spec, Target: Target{Addr: mustAddrPort(t, "10.0.0.1:1")}}
	b := Check{ID: "b", Spec: spec, Target: Target{Addr: mustAddrPort(t, "10.0.0.2:2")}}
	m := NewMonitor(probe, 4, nil)
	m.Set([]Check{a, b})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, func() bool { s := m.Statuses(); return len(s) == 2 && s[0].Verdict == Up && s[1].Verdict == Up })
	down.Store(true)
	waitFor(t, func() bool { return m.Statuses()[0].Verdict == Down })
	since := m.Statuses()[0].Since
	// A new timeout is the same real server: the verdict stays.
	a.Spec.Timeout = 60 * time.Millisecond
	m.Set([]Check{a})
	st := m.Statuses()
	if len(st) != 1 || st[0].ID != "a" || st[0].Verdict != Down || !st[0].Since.Equal(since) {
		t.Fatalf("after Set: %+v", st)
	}
	select {
	case <-m.Changes():
	default:
		t.Fatal("no change signalled")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 3 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}
