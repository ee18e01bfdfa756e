package services

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/peerlvs/peerlvs/ipvs"
	"github.com/peerlvs/peerlvs/ipvs/reconcile"
	"github.com/peerlvs/peerlvs/saru/health"
	"github.com/peerlvs/peerlvs/saru/verdict"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// FleetView says whether this director is ready and which other ready
// directors declare the same services; the controller's member view
// provides it.
type FleetView func() (selfReady bool, peers []string)

// Config wires a Manager.
type Config struct {
	Kernel  reconcile.Kernel
	Monitor *health.Monitor
	Gossip  *verdict.Gossip
	Board   *verdict.Board
	Self    string
	Fleet   FleetView
	// Local applies this director's own verdicts only.
	Local  bool
	Logger *zap.Logger
	// Registry, if set, gets the manager's metrics.
	Registry prometheus.Registerer
	// Tick is how often the table is decided again (votes and the fleet
	// change between the signals the manager gets); Verify how often the
	// kernel is read back even when the table did not change, so that a
	// foreign change (ipvsadm -C) is undone. Defaults 200ms and 5s.
	Tick, Verify time.Duration
}

// Manager keeps the kernel's declared services in line with the
// declaration and the fleet's verdicts.
type Manager struct {
	cfg Config
	log *zap.Logger

	mu       sync.Mutex
	decl     []Service
	fp       uint64
	digests  []verdict.Digest
	managed  Managed
	table    Table
	since    map[string]time.Time // by row ID: when its applied weight last changed
	applied  []reconcile.Virtual  // what the kernel last held after a reconcile
	lastErr  string
	lastDone time.Time
	warned   map[string]string // peer -> the declaration difference last logged

	reload chan struct{}
	m      metrics
}

type metrics struct {
	checks      *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	ownChanges  *prometheus.CounterVec
	fleetChange *prometheus.CounterVec
	broken      prometheus.Gauge
	kernelOps   *prometheus.CounterVec
	failures    prometheus.Counter
}

// NewManager returns a manager with nothing declared.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Kernel == nil || cfg.Monitor == nil || cfg.Gossip == nil || cfg.Board == nil || cfg.Fleet == nil {
		return nil, errors.New("services: manager needs a kernel, a monitor, a gossip, a board and a fleet view")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 200 * time.Millisecond
	}
	if cfg.Verify <= 0 {
		cfg.Verify = 5 * time.Second
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.With(zap.String("component", "services")), managed: Managed{},
		since: map[string]time.Time{}, warned: map[string]string{}, reload: make(chan struct{}, 1)}
	m.m = metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "saru_check_results_total",
			Help: "Health checks finished (after retries), by kind and result."}, []string{"kind", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "saru_check_latency_seconds",
			Help: "Time of a health check attempt that succeeded, by kind.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)}, []string{"kind"}),
		ownChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "saru_check_verdict_changes_total",
			Help: "Changes of this director's own verdict on a real server, by new verdict."}, []string{"verdict"}),
		fleetChange: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "saru_fleet_verdict_changes_total",
			Help: "Changes of the fleet's verdict on a real server as applied here, by new verdict."}, []string{"verdict"}),
		broken: prometheus.NewGauge(prometheus.GaugeOpts{Name: "saru_check_broken_paths",
			Help: "Real servers this director sees down while the fleet sees them up: its own path to them is suspect."}),
		kernelOps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "saru_services_kernel_changes_total",
			Help: "Changes made to the kernel's IPVS services, by operation."}, []string{"op"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "saru_services_reconcile_failures_total",
			Help: "Reconciliations of the IPVS services that failed (retried at the next tick)."}),
	}
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{m.m.checks, m.m.latency, m.m.ownChanges, m.m.fleetChange, m.m.broken, m.m.kernelOps, m.m.failures} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("services: register metrics: %w", err)
			}
		}
	}
	cfg.Monitor.OnResult = m.onResult
	return m, nil
}

func (m *Manager) onResult(c health.Check, r health.Result, changed bool, st health.Status) {
	result := "down"
	if r.Up {
		result = "up"
		m.m.latency.WithLabelValues(string(c.Spec.Kind)).Observe(r.Latency.Seconds())
	}
	m.m.checks.WithLabelValues(string(c.Spec.Kind), result).Inc()
	if changed {
		m.m.ownChanges.WithLabelValues(st.Verdict.String()).Inc()
		fields := []zap.Field{zap.String("real", c.ID), zap.String("verdict", st.Verdict.String()), zap.Int("weight", st.Weight)}
		if st.LastError != "" {
			fields = append(fields, zap.String("error", st.LastError))
		}
		m.log.Info("own check verdict", fields...)
	}
}

// Declare replaces the declared services (at start and on reload). The
// services it declared before stay managed: one dropped from the
// declaration is removed from the kernel.
func (m *Manager) Declare(decl []Service) {
	m.mu.Lock()
	m.decl = slices.Clone(decl)
	m.fp = Fingerprint(decl)
	m.digests = Digests(decl)
	m.managed.Add(decl)
	m.applied = nil
	m.mu.Unlock()
	m.cfg.Monitor.Set(Checks(decl))
	m.publish()
	select {
	case m.reload <- struct{}{}:
	default:
	}
}

// Fingerprint returns the declaration's fingerprint (for member settings).
func (m *Manager) Fingerprint() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fp
}

// publish sends this director's votes and declaration to the fleet.
func (m *Manager) publish() {
	m.mu.Lock()
	fp, digests := m.fp, m.digests
	m.mu.Unlock()
	var votes []verdict.Vote
	for _, st := range m.cfg.Monitor.Statuses() {
		v := verdict.Vote{Key: verdict.KeyOf(st.ID), Verdict: int8(st.Verdict), Weight: -1}
		if st.Verdict == health.Up {
			v.Weight = st.Weight
		}
		votes = append(votes, v)
	}
	m.cfg.Gossip.Publish(fp, votes, digests)
}

// Run decides and reconciles until ctx ends. The monitor and the gossip
// run on their own (the caller starts them).
func (m *Manager) Run(ctx context.Context) {
	tick := time.NewTicker(m.cfg.Tick)
	defer tick.Stop()
	var lastVerify time.Time
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-m.cfg.Monitor.Changes():
			m.publish()
		case <-m.cfg.Gossip.Changes():
		case <-m.reload:
			force = true
		case <-tick.C:
		}
		if m.idle() {
			// Nothing declared, ever: a fleet without services pays no
			// decisions for them.
			continue
		}
		t := m.decide()
		m.warnDeclDiffs()
		m.mu.Lock()
		same := reflect.DeepEqual(t.Want, m.applied) && m.lastErr == ""
		m.mu.Unlock()
		if same && !force && time.Since(lastVerify) < m.cfg.Verify {
			continue
		}
		lastVerify = time.Now()
		m.reconcile(t)
	}
}

// idle reports whether nothing is declared nor was: there is nothing to
// decide or reconcile.
func (m *Manager) idle() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.decl) == 0 && len(m.managed) == 0
}

// decide computes the table from the current votes and records it.
func (m *Manager) decide() Table {
	ready, peers := m.cfg.Fleet()
	own := map[string]health.Status{}
	for _, st := range m.cfg.Monitor.Statuses() {
		own[st.ID] = st
	}
	m.mu.Lock()
	decl, fp := m.decl, m.fp
	m.mu.Unlock()
	t := Decide(Input{Services: decl, Own: own, Self: m.cfg.Self, SelfReady: ready, Peers: peers, Local: m.cfg.Local,
		Votes: func(k verdict.Key, from []string) ([]string, []verdict.Vote) { return m.cfg.Board.Votes(k, from, fp) }})
	now := time.Now()
	m.mu.Lock()
	old := map[string]Row{}
	for _, r := range m.table.Rows {
		old[r.ID()] = r
	}
	broken := 0
	since := make(map[string]time.Time, len(t.Rows))
	for _, r := range t.Rows {
		o, ok := old[r.ID()]
		if r.BrokenPath {
			broken++
			if !o.BrokenPath {
				m.log.Warn("this director sees a real server down that the fleet sees up: its own path to it is suspect",
					zap.String("real", r.ID()), zap.Any("verdicts", r.Verdicts))
			}
		}
		since[r.ID()] = m.since[r.ID()]
		if ok && o.Fleet == r.Fleet && o.Weight == r.Weight {
			continue
		}
		since[r.ID()] = now
		if ok && o.Fleet != r.Fleet {
			m.m.fleetChange.WithLabelValues(r.Fleet).Inc()
			m.log.Info("fleet verdict", zap.String("real", r.ID()), zap.String("fleet", r.Fleet), zap.Int("weight", r.Weight),
				zap.Any("verdicts", r.Verdicts))
		}
	}
	// Rebuilt from the rows: real servers no longer declared drop out.
	m.since = since
	m.table = t
	m.mu.Unlock()
	m.m.broken.Set(float64(broken))
	return t
}

// warnDeclDiffs logs, once per difference, which services another
// director declares differently.
func (m *Manager) warnDeclDiffs() {
	m.mu.Lock()
	ours := m.digests
	m.mu.Unlock()
	for _, name := range m.cfg.Board.Peers() {
		d := m.cfg.Board.DeclDiff(name, ours)
		key := fmt.Sprint(d)
		m.mu.Lock()
		prev := m.warned[name]
		m.warned[name] = key
		m.mu.Unlock()
		if len(d) > 0 && key != prev {
			m.log.Error("another director declares different services; it is excluded from the allocation until both declare the same",
				zap.String("member", name), zap.Strings("differences", d))
		}
	}
}

// reconcile brings the kernel to t.Want, with the drain rule of keep.
func (m *Manager) reconcile(t Table) {
	m.mu.Lock()
	managed := maps.Clone(m.managed)
	failed := removedOnFailure(t)
	m.mu.Unlock()
	if len(t.Want) == 0 && len(managed) == 0 {
		// Nothing declared, ever: leave the kernel (which may not even
		// have IPVS) alone.
		m.mu.Lock()
		m.lastErr, m.applied = "", nil
		m.mu.Unlock()
		return
	}
	err := m.apply(t.Want, managed, failed)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.m.failures.Inc()
		if msg := err.Error(); msg != m.lastErr {
			m.log.Error("reconcile the IPVS services; retrying", zap.Error(err))
		}
		m.lastErr = err.Error()
		m.applied = nil
		return
	}
	m.lastErr = ""
	m.applied = t.Want
	m.lastDone = time.Now()
}

// apply plans from a fresh read of the kernel and carries the plan out,
// then reads the kernel back: applied means the kernel holds it.
func (m *Manager) apply(want []reconcile.Virtual, managed Managed, failed map[string]bool) error {
	have, err := reconcile.Read(m.cfg.Kernel)
	if err != nil {
		return err
	}
	want = keepDraining(want, have, failed)
	changes, err := reconcile.Plan(want, have, managed.Has)
	if err != nil {
		return fmt.Errorf("services: %w", err)
	}
	if len(changes) == 0 {
		return nil
	}
	n, err := reconcile.Apply(m.cfg.Kernel, changes)
	for _, c := range changes[:n] {
		m.m.kernelOps.WithLabelValues(c.Op.String()).Inc()
		m.log.Info("ipvs", zap.String("change", c.String()))
	}
	if err != nil {
		return err
	}
	if have, err = reconcile.Read(m.cfg.Kernel); err != nil {
		return err
	}
	left, err := reconcile.Plan(want, have, managed.Has)
	if err != nil {
		return fmt.Errorf("services: %w", err)
	}
	if len(left) > 0 {
		return fmt.Errorf("services: the kernel does not hold what was written: %s (and %d more)", left[0], len(left)-1)
	}
	return nil
}

// removedOnFailure names the real servers (by row ID) that are out of the
// table because their check failed and they are declared on_failure:
// remove. Those go at once, as declared; every other real server that
// leaves the table drains first (keepDraining).
func removedOnFailure(t Table) map[string]bool {
	out := map[string]bool{}
	for _, r := range t.Rows {
		if !r.Fallback && r.Weight < 0 {
			out[r.ID()] = true
		}
	}
	return out
}

// keepDraining keeps, at weight 0, every real server that the kernel holds
// in a still declared service but want leaves out (dropped from the
// declaration at a reload, or a fallback server no longer needed) as long
// as the kernel counts connections to it: IPVS drops the packets of a
// connection whose real server is deleted, while a real server at weight 0
// keeps serving its connections and gets no new one. When its last
// connection is gone the next reconcile removes it.
func keepDraining(want, have []reconcile.Virtual, failed map[string]bool) []reconcile.Virtual {
	kernel := map[reconcile.Key][]ipvs.Destination{}
	for _, v := range have {
		kernel[reconcile.KeyOf(v.Service)] = v.Dests
	}
	out := make([]reconcile.Virtual, 0, len(want))
	for _, v := range want {
		in := map[netip.AddrPort]bool{}
		for _, d := range v.Dests {
			in[netip.AddrPortFrom(d.Address.Unmap(), d.Port)] = true
		}
		for _, d := range kernel[reconcile.KeyOf(v.Service)] {
			id := v.Service.String() + " -> " + d.String()
			if in[netip.AddrPortFrom(d.Address.Unmap(), d.Port)] || failed[id] || d.ActiveConns+d.InactiveConns == 0 {
				continue
			}
			d.Weight = 0
			v.Dests = append(slices.Clone(v.Dests), d)
		}
		out = append(out, v)
	}
	return out
}

// Reconciled reports whether the kernel has held the table since the
// last declaration (read back, not just written).
func (m *Manager) Reconciled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied != nil || (len(m.decl) == 0 && m.lastErr == "")
}

// Plan reads the kernel and returns the changes to want, removing only
// services in managed.
func Plan(k reconcile.Kernel, want []reconcile.Virtual, managed Managed) ([]reconcile.Change, error) {
	have, err := reconcile.Read(k)
	if err != nil {
		return nil, err
	}
	changes, err := reconcile.Plan(want, have, managed.Has)
	if err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	return changes, nil
}

// Status is the manager's state for `saru status`.
type Status struct {
	Fingerprint string      `json:"fingerprint"`
	Rows        []StatusRow `json:"rows"`
	// Reconciled is when the kernel last matched the table.
	Reconciled time.Time       `json:"reconciled,omitzero"`
	LastError  string          `json:"last_error,omitempty"`
	Checks     []health.Status `json:"checks"`
}

// StatusRow is a Row with the time its applied weight last changed.
type StatusRow struct {
	Row
	Since time.Time `json:"since"`
}

// Status returns the current table and checks.
func (m *Manager) Status() Status {
	checks := m.cfg.Monitor.Statuses()
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{Fingerprint: fmt.Sprintf("%016x", m.fp), Reconciled: m.lastDone, LastError: m.lastErr, Checks: checks}
	for _, r := range m.table.Rows {
		st.Rows = append(st.Rows, StatusRow{Row: r, Since: m.since[r.ID()]})
	}
	return st
}

// Diff returns the changes that reloading with decl would make now: the
// table decided with the current votes, planned against the kernel, with
// every service declared so far still managed.
func (m *Manager) Diff(decl []Service) ([]reconcile.Change, error) {
	ready, peers := m.cfg.Fleet()
	own := map[string]health.Status{}
	for _, st := range m.cfg.Monitor.Statuses() {
		own[st.ID] = st
	}
	// The votes are filed under the declaration they were made for: the
	// current one (a real server keeps its key across declarations).
	fp := m.Fingerprint()
	t := Decide(Input{Services: decl, Own: own, Self: m.cfg.Self, SelfReady: ready, Peers: peers, Local: m.cfg.Local,
		Votes: func(k verdict.Key, from []string) ([]string, []verdict.Vote) { return m.cfg.Board.Votes(k, from, fp) }})
	m.mu.Lock()
	managed := maps.Clone(m.managed)
	m.mu.Unlock()
	managed.Add(decl)
	return Plan(m.cfg.Kernel, t.Want, managed)
}
