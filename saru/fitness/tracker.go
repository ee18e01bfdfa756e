package fitness

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/peerlvs/peerlvs/saru/health"
)

// Links reads an interface's state; NetlinkLinks reads the kernel's.
type Links interface {
	// Up reports whether the interface is up and has a carrier, and if
	// not, its state in words ("no carrier", "admin down", "not present").
	Up(name string) (bool, string)
}

// CheckState is one tracked thing's last result.
type CheckState struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	Why  string `json:"why,omitempty"`
}

// Status is the tracker's state for `saru status`.
type Status struct {
	Verdict
	Checks []CheckState `json:"checks"`
}

// Tracker watches the configured interfaces every Poll, and the ping
// nodes and the check command on their own intervals through a
// health.Monitor, and tells OnChange each time the verdict flips.
type Tracker struct {
	cfg   Config
	links Links
	mon   *health.Monitor
	poll  time.Duration
	now   func() time.Time

	// OnChange, if set, is called (from Run) when the verdict flips.
	OnChange func(Verdict)

	mu     sync.Mutex
	judge  Judge
	status Status
}

// DefaultPoll is how often interfaces are read: the longest a dead link
// goes unnoticed.
const DefaultPoll = 200 * time.Millisecond

// NewTracker returns a tracker for cfg; probe runs the ping and command
// checks (health.Probe in production).
func NewTracker(cfg Config, links Links, probe health.ProbeFunc) *Tracker {
	t := &Tracker{cfg: cfg, links: links, mon: health.NewMonitor(probe, 0, nil), poll: DefaultPoll, now: time.Now,
		judge: Judge{Hold: cfg.Hold}}
	var checks []health.Check
	for _, a := range cfg.PingNodes {
		checks = append(checks, health.Check{ID: pingID(a), Target: health.Target{Addr: netip.AddrPortFrom(a, 0)},
			Spec: health.Spec{Kind: health.KindICMP, Interval: cfg.PingInterval, Timeout: cfg.PingTimeout, Fall: cfg.PingFall, Rise: cfg.PingRise}})
	}
	if len(cfg.Command) > 0 {
		checks = append(checks, health.Check{ID: commandID,
			Spec: health.Spec{Kind: health.KindExternal, Command: cfg.Command, Bare: true,
				Interval: cfg.CommandInterval, Timeout: cfg.CommandTimeout, Fall: 1, Rise: 1}})
	}
	t.mon.Set(checks)
	return t
}

const commandID = "command"

func pingID(a netip.Addr) string { return "ping " + a.String() }

// Status returns the last round's verdict and checks.
func (t *Tracker) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.status
	st.Checks = slices.Clone(st.Checks)
	return st
}

// Run tracks until ctx ends. The first round runs at once.
func (t *Tracker) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.mon.Run(ctx)
	}()
	defer func() { <-done }()
	tick := time.NewTicker(t.poll)
	defer tick.Stop()
	for {
		t.round()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.mon.Changes():
		}
	}
}

// round gathers every check's state and asks the judge.
func (t *Tracker) round() {
	var checks []CheckState
	var failures []string
	linkDown := false
	for _, name := range t.cfg.Interfaces {
		up, why := t.links.Up(name)
		checks = append(checks, CheckState{Name: "interface " + name, OK: up, Why: why})
		if !up {
			failures = append(failures, fmt.Sprintf("interface %s: %s", name, why))
			linkDown = true
		}
	}
	own := map[string]health.Status{}
	for _, st := range t.mon.Statuses() {
		own[st.ID] = st
	}
	answering := 0
	var silent []string
	for _, a := range t.cfg.PingNodes {
		st := own[pingID(a)]
		// Not checked yet counts as answering: a start must not look
		// like an outage.
		ok := st.Verdict != health.Down
		checks = append(checks, CheckState{Name: pingID(a), OK: ok, Why: st.LastError})
		if ok {
			answering++
		} else {
			silent = append(silent, a.String())
		}
	}
	if len(t.cfg.PingNodes) > 0 && answering < t.cfg.PingNeed {
		failures = append(failures, fmt.Sprintf("%d of %d ping nodes answer, %d needed (silent: %v)",
			answering, len(t.cfg.PingNodes), t.cfg.PingNeed, silent))
	}
	if len(t.cfg.Command) > 0 {
		st := own[commandID]
		ok := st.Verdict != health.Down
		checks = append(checks, CheckState{Name: "command " + t.cfg.Command[0], OK: ok, Why: st.LastError})
		if !ok {
			failures = append(failures, fmt.Sprintf("check command %s failed: %s", t.cfg.Command[0], st.LastError))
		}
	}
	t.mu.Lock()
	v, changed := t.judge.Observe(t.now(), failures)
	v.LinkDown = linkDown && !v.Fit
	// A link that goes down while already unfit (for a ping node, say)
	// is news too: the others take buckets from a director that cannot
	// receive without waiting for its handover.
	changed = changed || v.LinkDown != t.status.Verdict.LinkDown
	t.status = Status{Verdict: v, Checks: checks}
	t.mu.Unlock()
	if changed && t.OnChange != nil {
		t.OnChange(v)
	}
}
