// Package controller turns saru's view of the fleet into this director's
// nftables ownership: on every membership or state change it computes the
// allocation over the ready directors whose settings match ours, runs the
// giver-first handover for buckets that move between live directors, and
// hands the result to an Applier. It also moves the local director from
// joining to ready (when its ReadinessSource says so) and to draining.
//
// # Handover
//
// Two-phase, through the gossiped state alone. When a bucket moves between
// two live directors (a join turning ready, a drain), the giver puts it in
// HandoverOut as soon as it sees the new allocation and, once that is
// applied, gossips a key naming the allocation (its fingerprint and the
// saru runs it was computed over; Membership.SetProgress); the taker waits
// until the giver's gossiped key equals its own (HandoverStep, 0 by default, is only a lower
// bound on that wait), and only then puts the bucket in HandoverIn,
// so that the two never both take new flows of it however slow the gossip;
// HandoverHold later the taker owns it and, once nothing is half-taken,
// gossips that it has completed the allocation; the giver keeps the
// bucket's established flows (HandoverOut) for at least HandoverHold and
// until that word, so that no established flow is left without a director
// meanwhile. A director whose word never comes (its view of the fleet stays
// different) is overridden 2*HandoverHold after the deadline.
// A bucket whose previous owner is gone (failed or left), or unfit with a
// tracked link down (it receives none of the bucket's flows), is owned at
// once: there is no giver to wait for. A director starts (and restarts)
// owning nothing, so rules left in place by a previous run are withdrawn
// before it is ready.
//
// It must not talk to the network or the kernel itself: membership comes
// through the Membership interface and rules go out through Applier, so the
// logic is testable without memberlist or nftables.
package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/saru/allocate"
	"github.com/peerlvs/peerlvs/saru/member"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Applier installs this director's ownership; *filter.Filter is one.
type Applier interface {
	Apply(ctx context.Context, own filter.Ownership) error
}

// ReadinessSource says when this director may take traffic (syncd's bulk
// resync is complete).
type ReadinessSource interface {
	Ready(ctx context.Context) (bool, error)
}

// GraceReadiness stands in for syncd until it reports readiness: ready once
// After has passed since Start.
type GraceReadiness struct {
	After time.Duration
	Start time.Time
}

// Ready implements ReadinessSource.
func (g GraceReadiness) Ready(context.Context) (bool, error) {
	return time.Since(g.Start) >= g.After, nil
}

// Grants is the fleet's exclusivity rule (package saru/lease): which
// buckets this director may accept new flows of, granted by a quorum, and
// the only way to change the rules, so that the kernel never accepts a
// bucket longer than it is granted.
type Grants interface {
	// Want sets the buckets to ask grants for.
	Want(buckets []uint32)
	// Granted reports whether bucket b is granted for a while yet.
	Granted(b uint32) bool
	// Changes fires when a bucket was granted or is about to lapse.
	Changes() <-chan struct{}
	// Install makes the kernel accept new flows of accepting (through
	// apply, which changes the rules) and releases what it no longer
	// accepts.
	Install(accepting []uint32, apply func() error) error
}

// Membership is the view of the fleet; *member.Node is one.
type Membership interface {
	Name() string
	Members() []member.Member
	Changes() <-chan struct{}
	State() member.State
	SetState(member.State) error
	// SetProgress gossips how far this director has followed the
	// allocation, which the planned handover waits on.
	SetProgress(member.Progress) error
}

// Defaults for Config.
const (
	DefaultHandoverStep = 0
	DefaultHandoverHold = 5 * time.Second
	DefaultReadyPoll    = 200 * time.Millisecond
	retryApply          = time.Second
)

// Config configures a Controller.
type Config struct {
	Membership Membership
	Applier    Applier
	// Grants, if set, gates every bucket whose new flows this director
	// accepts on a quorum's grant; nil: the allocation alone decides
	// (exclusive only while views agree).
	Grants    Grants
	Readiness ReadinessSource
	Buckets   uint32
	Seed      uint64
	// HandoverStep is how long a taker waits at least after seeing a
	// planned move before it takes the bucket into HandoverIn. The giver's
	// release already orders the two, so none is needed; a step only
	// delays new flows of moving buckets.
	HandoverStep time.Duration
	// HandoverHold is how long the giver keeps a bucket in HandoverOut
	// (and the taker in HandoverIn) before letting go (taking it fully).
	HandoverHold time.Duration
	ReadyPoll    time.Duration
	// AloneAfter is how long a director that sees no other member waits
	// before it may turn ready. Its gossip may simply not have reached the
	// others yet (a restart while syncd stays ready): ready and alone it
	// would own every bucket the others still own. A director that stays
	// alone is the first of its fleet, or cut off, and serves after this.
	AloneAfter time.Duration
	// Quorum is how many eligible directors (ready, same settings, this
	// one included) saru must see before any of them owns a bucket; 1 if
	// zero. A majority of the fleet keeps both halves of a partition from
	// owning everything, at the price of owning nothing when most of the
	// fleet is down.
	Quorum int
	Logger *zap.Logger
	// Registry receives the controller's metrics; none if nil.
	Registry prometheus.Registerer
}

// Status is a snapshot of the controller for the status endpoint.
type Status struct {
	Name        string          `json:"name"`
	State       member.State    `json:"state"`
	Epoch       uint64          `json:"epoch"`
	Fingerprint string          `json:"fingerprint"`
	Members     []member.Member `json:"members"`
	Owned       int             `json:"owned"`
	HandoverOut int             `json:"handover_out"`
	HandoverIn  int             `json:"handover_in"`
	Applied     time.Time       `json:"applied"`
	LastError   string          `json:"last_error,omitempty"`
	Quorum      int             `json:"quorum"`
	QuorumMet   bool            `json:"quorum_met"`
}

// Controller is the loop; see the package doc.
type Controller struct {
	cfg  Config
	log  *zap.Logger
	plan *plan
	m    metrics
	kick chan struct{}

	mu      sync.Mutex
	cur     allocate.Map
	members []member.Member
	epoch   uint64
	applied filter.Ownership
	status  Status
}

type metrics struct {
	members, eligible, owned prometheus.Gauge
	reallocations, applyErr  prometheus.Counter
	latency                  prometheus.Histogram
}

// New validates cfg and registers the metrics.
func New(cfg Config) (*Controller, error) {
	if cfg.Membership == nil || cfg.Applier == nil || cfg.Readiness == nil {
		return nil, errors.New("controller: Membership, Applier and Readiness are required")
	}
	if cfg.Buckets == 0 || cfg.Buckets > allocate.MaxBuckets {
		return nil, fmt.Errorf("controller: bucket count %d out of range 1..%d", cfg.Buckets, allocate.MaxBuckets)
	}
	if cfg.HandoverStep < 0 {
		cfg.HandoverStep = DefaultHandoverStep
	}
	if cfg.HandoverHold <= 0 {
		cfg.HandoverHold = DefaultHandoverHold
	}
	if cfg.ReadyPoll <= 0 {
		cfg.ReadyPoll = DefaultReadyPoll
	}
	if cfg.Quorum <= 0 {
		cfg.Quorum = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	c := &Controller{cfg: cfg, log: cfg.Logger.With(zap.String("component", "controller")),
		plan: newPlan(cfg.Buckets), kick: make(chan struct{}, 1)}
	if cfg.Grants != nil {
		c.plan.granted = cfg.Grants.Granted
	}
	c.m = metrics{
		members:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "saru_members", Help: "Directors memberlist sees alive (any state)."}),
		eligible:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "saru_members_eligible", Help: "Ready directors with matching settings, the ones owning buckets."}),
		owned:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "saru_owned_buckets", Help: "Buckets this director owns in the current allocation."}),
		reallocations: prometheus.NewCounter(prometheus.CounterOpts{Name: "saru_reallocations_total", Help: "Allocation changes (epochs)."}),
		applyErr:      prometheus.NewCounter(prometheus.CounterOpts{Name: "saru_apply_errors_total", Help: "Failed rule applications."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "saru_change_to_apply_seconds",
			Help:    "Time from a membership change to its rules being applied.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5}}),
	}
	if cfg.Registry != nil {
		for _, col := range []prometheus.Collector{c.m.members, c.m.eligible, c.m.owned, c.m.reallocations, c.m.applyErr, c.m.latency} {
			if err := cfg.Registry.Register(col); err != nil {
				return nil, fmt.Errorf("controller: register metrics: %w", err)
			}
		}
	}
	return c, nil
}

// Run drives the controller until ctx ends. It returns nil on cancellation.
func (c *Controller) Run(ctx context.Context) error {
	ms := c.cfg.Membership
	started := time.Now()
	ready := time.NewTicker(c.cfg.ReadyPoll)
	defer ready.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var grants <-chan struct{} // nil without grants: never fires
	if c.cfg.Grants != nil {
		grants = c.cfg.Grants.Changes()
	}
	changed := time.Now()
	next := c.step(ctx, changed, true)
	for {
		if next.IsZero() {
			next = time.Now().Add(time.Hour)
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return nil
		case <-ms.Changes():
			changed = time.Now()
			next = c.step(ctx, changed, true)
		case <-c.kick:
			changed = time.Now()
			next = c.step(ctx, changed, true)
		case <-timer.C:
			next = c.step(ctx, changed, false)
		case <-grants:
			next = c.step(ctx, changed, false)
		case <-ready.C:
			if ms.State() != member.StateJoining {
				continue
			}
			if len(ms.Members()) < 2 && time.Since(started) < c.cfg.AloneAfter {
				continue
			}
			ok, err := c.cfg.Readiness.Ready(ctx)
			if err != nil {
				c.log.Warn("readiness check", zap.Error(err))
				continue
			}
			if ok {
				if err := ms.SetState(member.StateReady); err != nil {
					c.log.Error("set ready", zap.Error(err))
					continue
				}
				changed = time.Now()
				next = c.step(ctx, changed, true)
			}
		}
	}
}

// step recomputes the allocation if the view changed, advances the
// handover timers, applies the result and returns the next deadline.
func (c *Controller) step(ctx context.Context, changed time.Time, recompute bool) time.Time {
	ms := c.cfg.Membership
	me := ms.Name()
	now := time.Now()
	if recompute {
		view := ms.Members()
		m, err := Compute(view, c.cfg.Buckets, c.cfg.Seed, c.cfg.Quorum)
		if err != nil {
			c.log.Error("allocate", zap.Error(err))
			return now.Add(retryApply)
		}
		c.mu.Lock()
		old := c.cur
		if old.Owner == nil || m.Fingerprint != old.Fingerprint {
			c.epoch++
			c.m.reallocations.Inc()
			c.log.Info("allocation", zap.Uint64("epoch", c.epoch), zap.Int("eligible", len(Eligible(view))),
				zap.Int("moved", allocate.Moved(old, m)), zap.Int("mine", len(m.BucketsOf(me))),
				zap.String("fingerprint", fmt.Sprintf("%016x", m.Fingerprint)))
			if inMinority(view) {
				c.log.Error("most members' settings differ from ours; owning nothing until the configuration is fixed")
			}
			if !HasQuorum(view, c.cfg.Quorum) {
				c.log.Warn("no quorum: nobody owns a bucket until enough directors are ready",
					zap.Int("eligible", len(Eligible(view))), zap.Int("quorum", c.cfg.Quorum))
			}
		}
		c.cur, c.members = m, view
		c.mu.Unlock()
		// The plan must judge the other directors' progress by this view
		// and this allocation from the first transition on: judged by the
		// previous ones, a release gossiped for the previous allocation
		// would count for this one.
		c.plan.watch(view, progressKey(m, view))
		c.plan.update(old, m, giversOf(view), me, now, c.cfg.HandoverStep, c.cfg.HandoverHold)
		c.m.members.Set(float64(len(view)))
		c.m.eligible.Set(float64(len(Eligible(view))))
		c.m.owned.Set(float64(len(m.BucketsOf(me))))
	}
	fp := c.plan.key
	forced := c.plan.forced
	next := c.plan.advance(now, c.cfg.HandoverHold)
	if n := c.plan.forced - forced; n > 0 {
		c.log.Warn("moved buckets on without the other director's word; its view of the fleet differs from ours",
			zap.Int("buckets", n), zap.String("allocation_key", fmt.Sprintf("%016x", fp)))
	}
	own := c.plan.ownership()
	if g := c.cfg.Grants; g != nil {
		g.Want(c.plan.wanted())
	}
	c.mu.Lock()
	same := c.status.Applied != (time.Time{}) && c.status.LastError == "" && sameOwnership(own, c.applied)
	c.mu.Unlock()
	if same {
		c.publishApplied(fp)
		return next
	}
	if err := c.apply(ctx, own); err != nil {
		c.mu.Lock()
		c.status.LastError = err.Error()
		c.mu.Unlock()
		c.m.applyErr.Inc()
		c.log.Error("apply ownership", zap.Error(err))
		if r := now.Add(retryApply); next.IsZero() || r.Before(next) {
			next = r
		}
		return next
	}
	c.m.latency.Observe(time.Since(changed).Seconds())
	c.mu.Lock()
	c.applied = own
	c.status.Applied = time.Now()
	c.status.LastError = ""
	c.mu.Unlock()
	c.publishApplied(fp)
	return next
}

// apply changes the rules to own, through the grants if there are any.
func (c *Controller) apply(ctx context.Context, own filter.Ownership) error {
	g := c.cfg.Grants
	if g == nil {
		return c.cfg.Applier.Apply(ctx, own)
	}
	accepting := append(slices.Clone(own.Owned), own.HandoverIn...)
	return g.Install(accepting, func() error { return c.cfg.Applier.Apply(ctx, own) })
}

// publishApplied tells the fleet that this director's rules now follow the
// allocation fp (takers waiting for our buckets may take them) and, once no
// bucket is half-taken, that we have completed it (givers may let go).
func (c *Controller) publishApplied(fp uint64) {
	p := member.Progress{Applied: fp}
	if c.plan.settled() {
		p.Settled = fp
	}
	if err := c.cfg.Membership.SetProgress(p); err != nil {
		c.log.Warn("gossip the handover progress", zap.Error(err))
	}
}

func sameOwnership(a, b filter.Ownership) bool {
	return slices.Equal(a.Owned, b.Owned) && slices.Equal(a.HandoverOut, b.HandoverOut) && slices.Equal(a.HandoverIn, b.HandoverIn)
}

// Map returns the current allocation and its epoch.
func (c *Controller) Map() (allocate.Map, uint64, []member.Member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur, c.epoch, slices.Clone(c.members)
}

// Applied returns the ownership last applied successfully.
func (c *Controller) Applied() filter.Ownership {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applied
}

// Status returns a snapshot for the status endpoint.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Name = c.cfg.Membership.Name()
	s.State = c.cfg.Membership.State()
	s.Epoch = c.epoch
	s.Fingerprint = fmt.Sprintf("%016x", c.cur.Fingerprint)
	s.Members = slices.Clone(c.members)
	s.Quorum, s.QuorumMet = c.cfg.Quorum, HasQuorum(c.members, c.cfg.Quorum)
	s.Owned, s.HandoverOut, s.HandoverIn = len(c.applied.Owned), len(c.applied.HandoverOut), len(c.applied.HandoverIn)
	return s
}

// Drain sets this director to draining so the others take its buckets,
// and waits until it holds no bucket in any form (owned or handing over)
// and that state is applied. The wait is bounded by ctx; a drain takes
// about HandoverHold plus the gossip delay.
func (c *Controller) Drain(ctx context.Context) error {
	if err := c.cfg.Membership.SetState(member.StateDraining); err != nil {
		return fmt.Errorf("controller: drain: %w", err)
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		c.mu.Lock()
		a := c.applied
		done := c.status.LastError == "" && len(a.Owned)+len(a.HandoverOut)+len(a.HandoverIn) == 0 &&
			len(c.cur.BucketsOf(c.cfg.Membership.Name())) == 0
		c.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("controller: drain not finished: %w", ctx.Err())
		case <-t.C:
		}
	}
}
