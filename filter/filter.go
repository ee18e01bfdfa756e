package filter

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"github.com/google/nftables"
)

// Option changes how a Filter reaches the kernel.
type Option func(*Filter)

// WithNetNSFd makes the Filter work on the network namespace that fd refers
// to (an open /run/netns/<name> or /proc/<pid>/ns/net) instead of the
// caller's. The caller keeps fd open for the Filter's lifetime.
func WithNetNSFd(fd int) Option {
	return func(f *Filter) { f.netns = fd; f.hasNetNS = true }
}

// Filter renders one Config into the kernel's nftables and keeps it there.
// Its methods are safe for concurrent use. Every operation opens its own
// netlink socket; the one kernel resource held between calls is the socket
// owning the liveness table, from the first Apply until Close.
type Filter struct {
	cfg      Config
	want     *desired
	netns    int
	hasNetNS bool

	mu      sync.Mutex
	applied *Ownership     // what the last successful Apply installed
	live    *nftables.Conn // owns the liveness table; nil before the first Apply and after Close

	// leaseMu also guards live, which changes with both locks held, so
	// that LeaseUntil never waits for an Apply or a Verify, which may take
	// long on a big table. leaseSet is the liveness table's lease set while
	// armed with a lease.
	leaseMu  sync.Mutex
	leaseSet *nftables.Set
}

// New validates cfg and returns a Filter for it. It does not touch the
// kernel.
func New(cfg Config, opts ...Option) (*Filter, error) {
	n, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	f := &Filter{cfg: n, want: render(n)}
	for _, o := range opts {
		o(f)
	}
	return f, nil
}

// Config returns the normalized configuration the Filter renders.
func (f *Filter) Config() Config { return f.cfg }

// Hasher returns the userspace twin of the rendered hash.
func (f *Filter) Hasher() Hasher { return f.cfg.Hasher() }

// conn opens one netlink socket for one operation: a listing takes dozens
// of requests, and a socket per request costs more than the requests on a
// busy or emulated host. The caller closes it.
func (f *Filter) conn() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting()}
	if f.hasNetNS {
		opts = append(opts, nftables.WithNetNSFd(f.netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("filter: open nftables netlink: %w", err)
	}
	return c, nil
}

// maxAttempts bounds the retries of a transaction that failed because the
// kernel changed between reading and writing (another process, or a
// remembered flow expiring just before it was deleted).
const maxAttempts = 3

// Apply makes the kernel enforce own. The first call on a host installs the
// whole table in one transaction; later calls, when the table is intact,
// rewrite only the bucket sets that changed (flush set + add elements) and
// clear the handover memory of buckets entering or leaving a handover, all
// in one transaction. If the table has drifted from the rendering, Apply
// rebuilds it in one transaction. The first successful Apply also creates
// the liveness table, so that own is enforced only while this process
// lives (see Close).
func (f *Filter) Apply(ctx context.Context, own Ownership) error {
	n, err := own.normalize(f.cfg.Buckets)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.live == nil {
		// Refuse before touching the rules: a second saru on this host
		// must not rewrite the first one's buckets.
		if err := f.liveTableAbsent(ctx); err != nil {
			return fmt.Errorf("filter: apply: %w", err)
		}
	}
	if err := f.reconcile(ctx, &n); err != nil {
		return fmt.Errorf("filter: apply: %w", err)
	}
	f.applied = &n
	if f.live == nil {
		if err := f.arm(); err != nil {
			return fmt.Errorf("filter: apply: %w", err)
		}
	}
	return nil
}

// Verify lists how the kernel's table differs from the rendering and from
// the last ownership applied by this Filter. Before the first Apply the
// bucket sets are not compared, since only saru knows what they should hold.
// An empty list means no drift.
func (f *Filter) Verify(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.conn()
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.CloseLasting() }()
	st, err := readState(ctx, c, f.cfg.Table)
	if err != nil {
		return nil, fmt.Errorf("filter: verify: %w", err)
	}
	msgs := compare(st, f.want, f.applied).msgs
	if f.live != nil {
		t, err := findTable(ctx, c, liveTable(f.cfg.Table))
		if err != nil {
			return nil, fmt.Errorf("filter: verify: %w", err)
		}
		if t == nil {
			msgs = append(msgs, fmt.Sprintf("liveness table inet %s missing", liveTable(f.cfg.Table)))
		}
	}
	return msgs, nil
}

// Repair restores the rendering and the last applied ownership after a
// foreign change, and the liveness table if it is gone. Before the first
// Apply it keeps whatever buckets the kernel's sets hold, which are not
// enforced until an Apply makes them live.
func (f *Filter) Repair(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.reconcile(ctx, f.applied); err != nil {
		return fmt.Errorf("filter: repair: %w", err)
	}
	if f.live == nil || f.applied == nil {
		return nil
	}
	if live, err := f.Live(ctx); err != nil || live {
		return err
	}
	_ = f.disarm()
	if err := f.arm(); err != nil {
		return fmt.Errorf("filter: repair: %w", err)
	}
	return nil
}

// Installed reports the ownership the kernel's table holds, and false if
// the table is absent. It reads the three bucket sets only, so it is cheap
// enough to poll.
func (f *Filter) Installed(ctx context.Context) (Ownership, bool, error) {
	c, err := f.conn()
	if err != nil {
		return Ownership{}, false, err
	}
	defer func() { _ = c.CloseLasting() }()
	t, err := findTable(ctx, c, f.cfg.Table)
	if err != nil || t == nil {
		return Ownership{}, false, err
	}
	st := &state{elems: make(map[string][]nftables.SetElement)}
	for _, name := range []string{setOwned, setHandoverOut, setHandoverIn} {
		es, err := c.GetSetElements(f.want.set(name))
		if err != nil {
			return Ownership{}, false, fmt.Errorf("filter: read set %s: %w", name, err)
		}
		st.elems[name] = es
	}
	return st.ownership(), true, nil
}

// Remove deletes the table and gives up liveness. Meant for an operator's
// explicit teardown only: a director without the table accepts every flow.
func (f *Filter) Remove(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.disarm(); err != nil {
		return err
	}
	c, err := f.conn()
	if err != nil {
		return err
	}
	defer func() { _ = c.CloseLasting() }()
	t, err := findTable(ctx, c, f.cfg.Table)
	if err != nil {
		return fmt.Errorf("filter: remove: %w", err)
	}
	f.applied = nil
	if t == nil {
		return nil
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("filter: remove table inet %s: %w", f.cfg.Table, err)
	}
	return nil
}

// reconcile reads the kernel, decides between an element-only transaction
// and a rebuild, and commits it. own nil means "keep the kernel's buckets".
func (f *Filter) reconcile(ctx context.Context, own *Ownership) error {
	var lastErr error
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		retry, err := f.reconcileOnce(ctx, own)
		if err == nil || !retry {
			return err
		}
		lastErr = err
	}
	return lastErr
}

// reconcileOnce is one attempt of reconcile; retry says whether the error
// may go away on a fresh read of the kernel.
func (f *Filter) reconcileOnce(ctx context.Context, own *Ownership) (retry bool, err error) {
	c, err := f.conn()
	if err != nil {
		return false, err
	}
	defer func() { _ = c.CloseLasting() }()
	st, err := readState(ctx, c, f.cfg.Table)
	if err != nil {
		return true, err
	}
	target := own
	if target == nil {
		o := st.ownership()
		target = &o
	}
	d := compare(st, f.want, target)
	if d.structural {
		f.queueRebuild(c, st, *target)
	} else {
		f.queueElements(c, st, d, *target)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := c.Flush(); err != nil {
		return true, fmt.Errorf("commit transaction: %w", err)
	}
	return false, nil
}

// queueRebuild queues one transaction that replaces the whole table.
func (f *Filter) queueRebuild(c *nftables.Conn, st *state, own Ownership) {
	w := f.want
	if st.table != nil {
		c.DelTable(w.table)
	}
	c.AddTable(w.table)
	for _, name := range counterNames() {
		c.AddObj(&nftables.CounterObj{Table: w.table, Name: name})
	}
	elems := ownershipElements(own)
	for name, e := range w.static {
		elems[name] = e
	}
	for _, s := range w.sets {
		// AddSet only reports marshalling errors, which Flush reports too.
		_ = c.AddSet(s, elems[s.Name])
	}
	// Remembered flows survive a rebuild (say, after a foreign rule was
	// removed mid-handover) unless the hashing changed, which makes their
	// buckets meaningless.
	if sameHashing(st, w) {
		for _, fl := range families() {
			keep, _ := f.flowsToKeep(st, fl, own)
			if len(keep) > 0 {
				_ = c.SetAddElements(w.set(fl.flows), keep)
			}
		}
	}
	// With other hashing every bucket means other flows: all are new.
	was := st
	if !sameHashing(st, w) {
		was = &state{}
	}
	settle := settling(was, own)
	for _, es := range [][]nftables.SetElement{settle.start, settle.rest} {
		if len(es) > 0 {
			_ = c.SetAddElements(w.set(setSettling), es)
		}
	}
	for _, ch := range w.chains {
		c.AddChain(ch)
	}
	for _, ch := range w.chains {
		for _, r := range w.rules[ch.Name] {
			c.AddRule(r)
		}
	}
}

// queueElements queues the element-only transaction: the bucket and static
// sets whose contents differ are flushed and refilled, and remembered flows
// of buckets entering or leaving a handover are deleted.
func (f *Filter) queueElements(c *nftables.Conn, st *state, d diff, own Ownership) {
	want := ownershipElements(own)
	for name, e := range f.want.static {
		want[name] = e
	}
	for _, name := range d.elemSets {
		s := f.want.set(name)
		c.FlushSet(s)
		if len(want[name]) > 0 {
			_ = c.SetAddElements(s, want[name])
		}
	}
	for _, fl := range families() {
		_, drop := f.flowsToKeep(st, fl, own)
		if len(drop) > 0 {
			_ = c.SetDeleteElements(f.want.set(fl.flows), drop)
		}
	}
	// Adding an element that exists leaves its old timeout, so a bucket
	// still settling from an earlier take is deleted first. If it expires
	// between the read and the commit, the delete fails the transaction
	// and reconcile reads the kernel again.
	settle := settling(st, own)
	if len(settle.restart) > 0 {
		_ = c.SetDeleteElements(f.want.set(setSettling), settle.restart)
	}
	if len(settle.start) > 0 {
		_ = c.SetAddElements(f.want.set(setSettling), settle.start)
	}
}

// settleChange is what a transaction does to the settling set: start
// the settle time of the buckets in start, of which those in restart are
// still settling from an earlier take; rest are the other elements the
// kernel holds, with the time they have left.
type settleChange struct{ start, restart, rest []nftables.SetElement }

// settling finds the buckets this director starts accepting with own,
// judged against what the kernel's sets hold now (st), not against what
// this process last wrote.
func settling(st *state, own Ownership) settleChange {
	var ch settleChange
	had := bucketSet(st.elems[setOwned])
	for b := range bucketSet(st.elems[setHandoverIn]) {
		had[b] = true
	}
	left := make(map[uint32]nftables.SetElement, len(st.elems[setSettling]))
	for _, e := range st.elems[setSettling] {
		if len(e.Key) == 4 {
			left[binary.NativeEndian.Uint32(e.Key)] = e
		}
	}
	for _, l := range [][]uint32{own.Owned, own.HandoverIn} {
		for _, b := range l {
			if had[b] {
				continue
			}
			if _, ok := left[b]; ok {
				ch.restart = append(ch.restart, nftables.SetElement{Key: bucketKey(b)})
				delete(left, b)
			}
			ch.start = append(ch.start, nftables.SetElement{Key: bucketKey(b)})
		}
	}
	for _, e := range left {
		if e.Expires > 0 {
			ch.rest = append(ch.rest, nftables.SetElement{Key: e.Key, Timeout: e.Expires})
		}
	}
	return ch
}

// flowsToKeep splits the remembered flows of family fl: a flow stays only
// while its bucket stays on the same side of the same handover; otherwise a
// later move of the bucket would inherit a stale verdict.
func (f *Filter) flowsToKeep(st *state, fl family, own Ownership) (keep, drop []nftables.SetElement) {
	oldOut, oldIn := bucketSet(st.elems[setHandoverOut]), bucketSet(st.elems[setHandoverIn])
	newOut, newIn := make(map[uint32]bool), make(map[uint32]bool)
	for _, b := range own.HandoverOut {
		newOut[b] = true
	}
	for _, b := range own.HandoverIn {
		newIn[b] = true
	}
	h := f.Hasher()
	for _, e := range st.elems[fl.flows] {
		proto, client, err := flowFromKey(fl, e.Key)
		stable := false
		if err == nil {
			b := h.ClientBucket(proto, client)
			stable = (oldOut[b] && newOut[b]) || (oldIn[b] && newIn[b])
		}
		if stable && e.Expires > 0 {
			keep = append(keep, nftables.SetElement{Key: e.Key, Timeout: e.Expires})
		} else {
			drop = append(drop, nftables.SetElement{Key: e.Key})
		}
	}
	return keep, drop
}

func bucketSet(es []nftables.SetElement) map[uint32]bool {
	m := make(map[uint32]bool, len(es))
	for _, e := range es {
		if len(e.Key) == 4 {
			m[binary.NativeEndian.Uint32(e.Key)] = true
		}
	}
	return m
}

func bucketList(es []nftables.SetElement) []uint32 {
	out := make([]uint32, 0, len(es))
	for b := range bucketSet(es) {
		out = append(out, b)
	}
	slices.Sort(out)
	return out
}

// Count is a packet and byte count.
type Count struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Counters are the rule counters, summed over both families and both
// directions.
type Counters struct {
	// OwnedAccepted counts packets of owned buckets.
	OwnedAccepted Count
	// ForeignDropped counts packets of buckets owned elsewhere.
	ForeignDropped Count
	// FragmentAccepted counts non-first fragments, accepted everywhere.
	FragmentAccepted Count
	// HandoverOutAccepted counts packets of buckets being given away that
	// belong to connections older than the handover.
	HandoverOutAccepted Count
	// HandoverOutDropped counts packets of buckets being given away that
	// open or belong to a connection the taker accepted.
	HandoverOutDropped Count
	// HandoverInAccepted counts packets of buckets being taken that open or
	// belong to a connection accepted here during the handover.
	HandoverInAccepted Count
	// HandoverInDropped counts packets of buckets being taken that belong
	// to the giver.
	HandoverInDropped Count
	// OrphanedDropped counts packets dropped because no saru held the
	// liveness table.
	OrphanedDropped Count
	// UnclaimedDropped counts mid-connection packets to a VIP that IPVS
	// did not take, dropped because their bucket was taken moments ago
	// (Config.Settle) instead of being reset by the local stack.
	UnclaimedDropped Count
}

func (c *Counters) fields() map[string]*Count {
	return map[string]*Count{
		cntOwnedAccepted:       &c.OwnedAccepted,
		cntForeignDropped:      &c.ForeignDropped,
		cntFragmentAccepted:    &c.FragmentAccepted,
		cntHandoverOutAccepted: &c.HandoverOutAccepted,
		cntHandoverOutDropped:  &c.HandoverOutDropped,
		cntUnclaimedDropped:    &c.UnclaimedDropped,
		cntHandoverInAccepted:  &c.HandoverInAccepted,
		cntHandoverInDropped:   &c.HandoverInDropped,
		cntOrphanedDropped:     &c.OrphanedDropped,
	}
}

// ByName returns the counts under the names of the kernel's counter
// objects (owned_accepted, foreign_dropped, ...), for metrics and dumps.
func (c Counters) ByName() map[string]Count {
	out := make(map[string]Count)
	for name, p := range c.fields() {
		out[name] = *p
	}
	return out
}

// Counters reads the rule counters.
func (f *Filter) Counters(ctx context.Context) (Counters, error) {
	if err := ctx.Err(); err != nil {
		return Counters{}, err
	}
	c, err := f.conn()
	if err != nil {
		return Counters{}, err
	}
	defer func() { _ = c.CloseLasting() }()
	objs, err := c.GetObjects(f.want.table)
	if err != nil {
		return Counters{}, fmt.Errorf("filter: read counters: %w", err)
	}
	var out Counters
	fields := out.fields()
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok {
			if dst := fields[co.Name]; dst != nil {
				*dst = Count{Packets: co.Packets, Bytes: co.Bytes}
			}
		}
	}
	return out, nil
}

// BucketCounters reads the per-bucket counters of the owned set: packets
// accepted per owned bucket since the bucket was last added. They cost one
// counter per owned bucket, updated on the lookup that accepts the packet.
// Dropped packets are not counted per bucket: that would take a second
// lookup per foreign packet in a set of all B buckets, on the hot path of
// the traffic a director sees most.
func (f *Filter) BucketCounters(ctx context.Context) (map[uint32]Count, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := f.conn()
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.CloseLasting() }()
	es, err := c.GetSetElements(f.want.set(setOwned))
	if err != nil {
		return nil, fmt.Errorf("filter: read per-bucket counters: %w", err)
	}
	out := make(map[uint32]Count, len(es))
	for _, e := range es {
		if len(e.Key) != 4 {
			continue
		}
		var n Count
		if e.Counter != nil {
			n = Count{Packets: e.Counter.Packets, Bytes: e.Counter.Bytes}
		}
		out[binary.NativeEndian.Uint32(e.Key)] = n
	}
	return out, nil
}

// sameHashing reports whether the kernel's rules hash as the rendering does:
// the rules accepting owned buckets are identical.
func sameHashing(st *state, w *desired) bool {
	for _, fl := range families() {
		chain := "request" + fl.suffix
		have, want := ownedRule(st.rules[chain]), ownedRule(w.rules[chain])
		if have == nil || want == nil || ruleString(have) != ruleString(want) {
			return false
		}
	}
	return true
}

func ownedRule(rs []*nftables.Rule) *nftables.Rule {
	for _, r := range rs {
		if comment(r) == commentOwned {
			return r
		}
	}
	return nil
}
