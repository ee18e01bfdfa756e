package health

import (
	"container/heap"
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"
)

// Verdict is one director's own view of one real server.
type Verdict int8

const (
	// Pending: not checked yet. It votes neither way.
	Pending Verdict = iota
	Up
	Down
)

func (v Verdict) String() string {
	switch v {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return "pending"
}

// MarshalText writes the verdict as a word, for status JSON.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (v *Verdict) UnmarshalText(b []byte) error {
	switch string(b) {
	case "pending":
		*v = Pending
	case "up":
		*v = Up
	case "down":
		*v = Down
	default:
		return fmt.Errorf("health: verdict %q unknown; want pending, up or down", b)
	}
	return nil
}

// Check is one real server's check as the Monitor runs it. ID names the
// real server (its service and address) and is the key of its state.
type Check struct {
	ID     string
	Spec   Spec
	Target Target
}

// Status is the local state of one check.
type Status struct {
	ID      string  `json:"id"`
	Verdict Verdict `json:"verdict"`
	// Weight is the last weight a dynamic check asked for, -1 if none.
	Weight int `json:"weight"`
	// Since is when Verdict last changed (the monitor's start for
	// Pending).
	Since time.Time `json:"since"`
	// Checked is when the last check started: the instant the next one's
	// interval counts from.
	Checked   time.Time     `json:"checked,omitzero"`
	Latency   time.Duration `json:"latency_ns"`
	LastError string        `json:"last_error,omitempty"`
	Fails     int           `json:"consecutive_fails"`
	Oks       int           `json:"consecutive_oks"`
	Checks    uint64        `json:"checks"`
}

// ProbeFunc makes one attempt of a check; Probe is the real one.
type ProbeFunc func(ctx context.Context, s Spec, t Target) Result

// Monitor runs checks on their own intervals and keeps each one's verdict
// with its fall and rise counts. One goroutine keeps the schedule (a heap
// of due times); a check runs in a goroutine of its own only while it is
// in flight, and at most Workers run at once, so hundreds of real servers
// cost a timer, not hundreds of sleeping goroutines. A check is never
// started again before it finished, nor sooner than its interval after it
// last started.
type Monitor struct {
	probe   ProbeFunc
	workers int
	now     func() time.Time
	// OnResult, if set, sees every finished check (after retries): for
	// metrics. It is called from the check's goroutine and must not block.
	OnResult func(c Check, r Result, changed bool, st Status)

	mu      sync.Mutex
	entries map[string]*entry
	due     dueHeap
	wake    chan struct{}
	changes chan struct{}
	started time.Time
}

type entry struct {
	check Check
	st    Status
	next  time.Time
	index int    // in the heap; -1 while in flight
	gen   uint64 // bumped by Set when the check changes
}

// DefaultWorkers bounds the checks in flight at once.
const DefaultWorkers = 64

// NewMonitor returns a monitor that probes with probe; workers <= 0 means
// DefaultWorkers.
func NewMonitor(probe ProbeFunc, workers int, now func() time.Time) *Monitor {
	if workers <= 0 {
		workers = DefaultWorkers
	}
	if now == nil {
		now = time.Now
	}
	return &Monitor{probe: probe, workers: workers, now: now, entries: map[string]*entry{},
		wake: make(chan struct{}, 1), changes: make(chan struct{}, 1), started: now()}
}

// Changes signals (coalesced) that a verdict or weight changed.
func (m *Monitor) Changes() <-chan struct{} { return m.changes }

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Set replaces the checks. A check whose ID was there before keeps its
// verdict and counts (a reload that changes a timeout does not send a
// real server back to pending); a changed spec or target is checked anew
// at once.
func (m *Monitor) Set(checks []Check) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	keep := make(map[string]bool, len(checks))
	for _, c := range checks {
		keep[c.ID] = true
		e, ok := m.entries[c.ID]
		if !ok {
			e = &entry{check: c, index: -1, st: Status{ID: c.ID, Weight: -1, Since: now}}
			// Spread the first checks over up to a second so that a
			// start does not probe every real server at once.
			e.next = now.Add(spread(c.ID, min(c.Spec.Interval, time.Second)))
			m.entries[c.ID] = e
			heap.Push(&m.due, e)
			continue
		}
		if sameCheck(e.check, c) {
			continue
		}
		e.check = c
		e.gen++
		e.next = now
		if e.index >= 0 {
			heap.Fix(&m.due, e.index)
		}
	}
	for id, e := range m.entries {
		if !keep[id] {
			if e.index >= 0 {
				heap.Remove(&m.due, e.index)
			}
			e.gen++
			delete(m.entries, id)
		}
	}
	kick(m.wake)
}

func sameCheck(a, b Check) bool {
	ra, rb := a.Spec.HTTP.BodyRegex, b.Spec.HTTP.BodyRegex
	if (ra == nil) != (rb == nil) || (ra != nil && ra.String() != rb.String()) {
		return false
	}
	a.Spec.HTTP.BodyRegex, b.Spec.HTTP.BodyRegex = nil, nil
	return a.Target == b.Target && a.Spec.Kind == b.Spec.Kind && a.Spec.Interval == b.Spec.Interval &&
		a.Spec.Timeout == b.Spec.Timeout && a.Spec.Port == b.Spec.Port && a.Spec.Source == b.Spec.Source &&
		a.Spec.Retries == b.Spec.Retries && a.Spec.RetryDelay == b.Spec.RetryDelay &&
		a.Spec.Fall == b.Spec.Fall && a.Spec.Rise == b.Spec.Rise && string(a.Spec.Send) == string(b.Spec.Send) &&
		a.Spec.Expect == b.Spec.Expect && a.Spec.HTTP.Method == b.Spec.HTTP.Method && a.Spec.HTTP.Path == b.Spec.HTTP.Path &&
		a.Spec.HTTP.Host == b.Spec.HTTP.Host && a.Spec.HTTP.SNI == b.Spec.HTTP.SNI && slices.Equal(a.Spec.HTTP.Status, b.Spec.HTTP.Status) &&
		a.Spec.HTTP.Body == b.Spec.HTTP.Body && a.Spec.HTTP.Digest == b.Spec.HTTP.Digest && a.Spec.HTTP.Verify == b.Spec.HTTP.Verify &&
		a.Spec.DNS == b.Spec.DNS && slices.Equal(a.Spec.Command, b.Spec.Command) && a.Spec.DynamicWeight == b.Spec.DynamicWeight && a.Spec.Bare == b.Spec.Bare
}

func spread(id string, over time.Duration) time.Duration {
	if over <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(id))
	return time.Duration(h.Sum64() % uint64(over))
}

// Statuses returns every check's state, sorted by ID.
func (m *Monitor) Statuses() []Status {
	m.mu.Lock()
	out := make([]Status, 0, len(m.entries))
	for _, e := range m.entries {
		out = append(out, e.st)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Run schedules the checks until ctx ends, then waits for those in flight.
func (m *Monitor) Run(ctx context.Context) {
	sem := make(chan struct{}, m.workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		m.mu.Lock()
		now := m.now()
		var start []*entry
		for m.due.Len() > 0 && !m.due[0].next.After(now) {
			start = append(start, heap.Pop(&m.due).(*entry))
		}
		wait := time.Hour
		if m.due.Len() > 0 {
			wait = m.due[0].next.Sub(now)
		}
		m.mu.Unlock()
		for _, e := range start {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			m.mu.Lock()
			c, gen := e.check, e.gen
			m.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				started := m.now()
				r := m.attempt(ctx, c)
				if ctx.Err() != nil {
					return
				}
				m.finish(e, gen, c, started, r)
			}()
		}
		if len(start) > 0 {
			continue // the time moved on while starting them
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-timer.C:
		}
	}
}

// attempt runs one check: the probe, and its retries RetryDelay apart.
func (m *Monitor) attempt(ctx context.Context, c Check) Result {
	var r Result
	for i := 0; i <= c.Spec.Retries; i++ {
		if i > 0 {
			t := time.NewTimer(c.Spec.RetryDelay)
			select {
			case <-ctx.Done():
				t.Stop()
				return r
			case <-t.C:
			}
		}
		r = m.probe(ctx, c.Spec, c.Target)
		if r.Up {
			return r
		}
	}
	return r
}

// finish records a check's result and schedules the next one.
func (m *Monitor) finish(e *entry, gen uint64, c Check, started time.Time, r Result) {
	m.mu.Lock()
	now := m.now()
	if m.entries[c.ID] != e {
		m.mu.Unlock()
		return // removed while in flight
	}
	changed := false
	if gen == e.gen {
		changed = e.st.record(r, c.Spec, now)
		e.st.Checked = started
		e.next = started.Add(c.Spec.Interval)
	} else {
		e.next = now // the check changed while in flight: check anew
	}
	if e.next.Before(now) {
		e.next = now
	}
	heap.Push(&m.due, e)
	st := e.st
	m.mu.Unlock()
	kick(m.wake)
	if changed {
		kick(m.changes)
	}
	if m.OnResult != nil {
		m.OnResult(c, r, changed, st)
	}
}

// record applies one check's result: the first result decides a pending
// server; after that Fall failures in a row take it down and Rise
// successes in a row bring it back. It reports whether the verdict or the
// weight changed.
func (st *Status) record(r Result, s Spec, now time.Time) bool {
	st.Checks++
	st.Latency = r.Latency
	st.LastError = ""
	if r.Err != nil {
		st.LastError = r.Err.Error()
	}
	before, weight := st.Verdict, st.Weight
	if r.Up {
		st.Oks++
		st.Fails = 0
		st.Weight = r.Weight
	} else {
		st.Fails++
		st.Oks = 0
	}
	switch {
	case st.Verdict == Pending && r.Up, st.Verdict == Down && st.Oks >= s.Rise:
		st.Verdict = Up
	case st.Verdict == Pending && !r.Up, st.Verdict == Up && st.Fails >= s.Fall:
		st.Verdict = Down
	}
	if st.Verdict != before {
		st.Since = now
	}
	return st.Verdict != before || (st.Verdict == Up && st.Weight != weight)
}

type dueHeap []*entry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *dueHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}
