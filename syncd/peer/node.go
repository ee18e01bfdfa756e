package peer

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/peerlvs/peerlvs/syncd/table"
)

// Config sets up a Node. Durations left 0 take the defaults in brackets.
type Config struct {
	// Self is this director's node id, 1 to 65535, unique in the fleet:
	// two nodes with one id would reuse each other's nonces.
	Self table.NodeID
	// Incarnation identifies this run and must grow from run to run, or
	// peers take the new run's frames for replays: NewIncarnation gives
	// the start time in nanoseconds.
	Incarnation uint64
	Keyring     *Keyring
	// MTU is the largest frame, headers and tag included [DefaultMTU].
	MTU int

	AliveInterval time.Duration // between ALIVEs [1s]
	PeerTimeout   time.Duration // silence after which a peer counts as gone [3.5 × AliveInterval]
	NackDelay     time.Duration // how long a gap may last before it is NACKed, for reordering [5ms]
	NackInterval  time.Duration // at most one NACK per sender this often [50ms]
	// MaxNacks is how many NACKs a gap gets without progress before the
	// receiver gives up and asks the sender for a bulk dump of its
	// entries instead [16].
	MaxNacks int
	// ResendFrames is how many sent UPDATE payloads are kept for resends
	// [4096]; a NACK for an older one is answered with a bulk dump of the
	// sender's entries.
	ResendFrames int
	// BulkRate is the bulk dump's pace in entries per second [1,000,000,
	// about 48 MB/s of IPv4 entries; lower it on slow links].
	BulkRate int
	// BulkWait is how long a starting node waits to hear a ready peer
	// before it decides that it is the first of the fleet and its empty
	// table is complete [3 × AliveInterval].
	BulkWait time.Duration
	// BulkTimeout is how long the dump may fall silent before the joiner
	// asks again for what it lacks [1s].
	BulkTimeout time.Duration
	// NoBulk starts the node ready, without a bulk resync.
	NoBulk bool

	// Send transmits a sealed frame. to lists the nodes it is meant for;
	// nil means every peer. In multicast mode send everything to the
	// group; in unicast mode send to each of to, or to every peer. frame
	// and to are valid only during the call. Required.
	Send func(frame []byte, to []table.NodeID)
	// Applied is called for each peer entry that changed the table or
	// refreshed an entry (ch has Created, a *Changed bit, Refreshed or
	// Removed): the daemon injects it into the local kernel. That includes
	// entries owned by this node that a bulk dump brings back after a
	// restart, which the kernel may have lost with a reboot.
	//
	// Callbacks run inside Receive or Tick and must not call the Node.
	Applied func(e *table.Entry, ch table.Change)
	// Idle is called for each own entry whose peers' copies are about to
	// expire and which the local kernel has not reported since they heard
	// of it. Only the kernel knows whether the connection is still there:
	// look it up (/proc/net/ip_vs_conn) and call Node.Refresh if it is.
	// Nil lets such entries expire.
	Idle func(d *table.Due)
}

// NewIncarnation is an incarnation for a run starting at now.
func NewIncarnation(now time.Time) uint64 { return uint64(now.UnixNano()) }

// Node is one director's end of the peer protocol: it turns local kernel
// reports into UPDATE frames, applies peers' frames to the table, answers
// NACKs with the latest state, requests and serves bulk dumps, and keeps
// own entries fresh on peers. It does no I/O and reads no clock: the daemon
// feeds it frames and the time and sends what it hands to Config.Send.
//
// A Node is not safe for concurrent use; the Table it writes is, so other
// goroutines may read it.
type Node struct {
	cfg  Config
	t    *table.Table
	seal *Sealer
	open *Opener

	frame []byte // sealing scratch

	// Sending side of the update stream.
	useq     uint64 // last update sequence number assigned
	sent     uint64 // last one sent
	pend     []byte // UPDATE payload being filled
	pendN    int
	ring     []ringSlot
	rpayload []byte

	peers map[table.NodeID]*peerState

	dump dumper
	bulk bulkRecv

	lastAlive time.Time
	lastTick  table.Stamp

	stats   NodeStats
	scratch table.Entry
	nack    Nack
	bdone   BulkDone
	ctl     []byte
}

type ringSlot struct {
	useq     uint64
	payload  []byte
	resentAt time.Time
}

type peerState struct {
	id      table.NodeID
	inc     uint64
	heard   time.Time
	ready   bool
	entries uint32
	highest uint64
	rx      stream
}

// NodeStats counts what a Node did.
type NodeStats struct {
	Frames          OpenerStats
	UpdatesSent     uint64 // UPDATE frames, resends excluded
	EntriesSent     uint64
	Resends         uint64 // UPDATE frames re-sent for NACKs
	ResendTooOld    uint64 // NACKed updates no longer in the ring
	NacksSent       uint64
	NacksReceived   uint64
	UpdatesLost     uint64 // updates given up on (then repaired by bulk)
	EntriesApplied  uint64 // peer entries that changed or refreshed the table
	EntriesStale    uint64
	EntriesInvalid  uint64
	BulkFramesSent  uint64
	BulkEntriesSent uint64
	BulkRequests    uint64
	SealErrors      uint64 // frames that could not be sealed (a bug)
}

// NewNode returns a Node writing t. The table's Self must be cfg.Self.
func NewNode(cfg Config, t *table.Table) (*Node, error) {
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.AliveInterval, time.Second)
	def(&cfg.PeerTimeout, cfg.AliveInterval*7/2)
	def(&cfg.NackDelay, 5*time.Millisecond)
	def(&cfg.NackInterval, 50*time.Millisecond)
	def(&cfg.BulkWait, 3*cfg.AliveInterval)
	def(&cfg.BulkTimeout, time.Second)
	if cfg.MaxNacks == 0 {
		cfg.MaxNacks = 16
	}
	if cfg.ResendFrames == 0 {
		cfg.ResendFrames = 4096
	}
	if cfg.BulkRate == 0 {
		cfg.BulkRate = 1_000_000
	}
	switch {
	case t == nil:
		return nil, fmt.Errorf("peer: no table")
	case t.Self() != cfg.Self:
		return nil, fmt.Errorf("peer: table is for node %d, config for node %d", t.Self(), cfg.Self)
	case cfg.Send == nil:
		return nil, fmt.Errorf("peer: no Send function")
	case cfg.BulkRate < 0 || cfg.ResendFrames < 0 || cfg.MaxNacks < 0:
		return nil, fmt.Errorf("peer: negative BulkRate, ResendFrames or MaxNacks")
	}
	seal, err := NewSealer(uint16(cfg.Self), cfg.Incarnation, cfg.Keyring, cfg.MTU)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:   cfg,
		t:     t,
		seal:  seal,
		open:  NewOpener(uint16(cfg.Self), cfg.Keyring),
		ring:  make([]ringSlot, cfg.ResendFrames),
		peers: map[table.NodeID]*peerState{},
	}
	// A burst of a few tens of milliseconds' worth keeps the pace smooth
	// whatever the Tick period.
	n.dump = dumper{t: t, rate: float64(cfg.BulkRate), burst: max(float64(cfg.BulkRate)/20, 2*MaxEntriesPerFrame)}
	n.bulk.done = cfg.NoBulk
	return n, nil
}

// SetKeyring switches keys (see Keyring for the rotation procedure).
func (n *Node) SetKeyring(k *Keyring) {
	n.seal.SetKeyring(k)
	n.open.SetKeyring(k)
}

// Table is the table the node writes.
func (n *Node) Table() *table.Table { return n.t }

// Ready reports whether the bulk resync is complete: the table holds what
// the fleet had when this node joined, and it may take traffic.
func (n *Node) Ready() bool { return n.bulk.done }

// Stats returns the counters.
func (n *Node) Stats() NodeStats {
	st := n.stats
	st.Frames = n.open.Stats()
	return st
}

// PeerInfo describes a peer as last heard.
type PeerInfo struct {
	ID          table.NodeID
	Incarnation uint64
	Heard       time.Time
	Ready       bool
	Entries     uint32 // the size of its table, as it said
}

// Peers lists the peers heard from, in id order.
func (n *Node) Peers() []PeerInfo {
	out := make([]PeerInfo, 0, len(n.peers))
	for _, p := range n.peers {
		out = append(out, PeerInfo{p.id, p.inc, p.heard, p.ready, p.entries})
	}
	slices.SortFunc(out, func(a, b PeerInfo) int { return int(a.ID) - int(b.ID) })
	return out
}

func (n *Node) send(t Type, payload []byte, to []table.NodeID) {
	f, err := n.seal.Seal(n.frame[:0], t, payload)
	if err != nil {
		// Every payload is built to fit; a failure is a bug, counted
		// rather than crashing the daemon.
		n.stats.SealErrors++
		return
	}
	n.frame = f
	n.cfg.Send(f, to)
}

// Local records what the local kernel reported (or /proc showed) and queues
// it for peers if it changed. Call Flush after a batch.
func (n *Node) Local(e *table.Entry, now time.Time) (table.Change, error) {
	ch, err := n.t.Upsert(e, n.cfg.Self, now)
	if err != nil {
		return ch, fmt.Errorf("peer: local entry: %w", err)
	}
	if ch.Changed() {
		n.queue(e, now, false)
	}
	return ch, nil
}

// LocalDelete removes an entry that the local kernel no longer has and
// tells peers.
func (n *Node) LocalDelete(k *table.Key, now time.Time) bool {
	e, ok := n.t.Delete(k)
	if !ok {
		return false
	}
	e.Owner = n.cfg.Self
	e.Version = max(e.Version+1, uint32(table.StampOf(now)))
	n.queue(&e, now, true)
	return true
}

// Refresh tells the node that the local kernel still has own entry k with
// alive seconds left (the answer to Config.Idle); it re-sends the entry.
func (n *Node) Refresh(k *table.Key, alive uint32, now time.Time) bool {
	e, ok := n.t.Refresh(k, alive, now)
	if ok {
		n.queue(&e, now, false)
	}
	return ok
}

// queue adds e to the UPDATE being filled, sending the full one first.
func (n *Node) queue(e *table.Entry, now time.Time, removed bool) {
	var ttl uint32
	if !removed {
		ttl = e.Expires.Sub(table.StampOf(now))
	}
	size := EntryLen(e)
	if n.pendN > 0 && (len(n.pend)+size > n.seal.MaxPayload() || n.pendN == MaxEntriesPerFrame) {
		n.flushUpdate()
	}
	if n.pendN == 0 {
		n.useq++
		n.pend = AppendUpdateHeader(n.pend[:0], n.useq, 0)
	}
	p, err := AppendEntry(n.pend, e, ttl, removed)
	if err != nil {
		n.stats.EntriesInvalid++
		if n.pendN == 0 {
			n.useq--
		}
		return
	}
	n.pend = p
	n.pendN++
}

// Flush sends the UPDATE being filled, if any.
func (n *Node) Flush() {
	if n.pendN > 0 {
		n.flushUpdate()
	}
}

func (n *Node) flushUpdate() {
	SetEntryCount(n.pend, TypeUpdate, n.pendN)
	if len(n.ring) > 0 {
		s := &n.ring[n.useq%uint64(len(n.ring))]
		s.useq, s.payload, s.resentAt = n.useq, append(s.payload[:0], n.pend...), time.Time{}
	}
	n.send(TypeUpdate, n.pend, nil)
	n.stats.UpdatesSent++
	n.stats.EntriesSent += uint64(n.pendN)
	n.sent = n.useq
	n.pendN = 0
}

// Receive handles one frame from the network. b is decrypted in place. The
// error says why a frame was rejected (it is counted in Stats either way);
// the daemon may log it, rate-limited, but there is nothing to do about it.
func (n *Node) Receive(b []byte, now time.Time) error {
	f, err := n.open.Open(b)
	if err != nil {
		return err
	}
	id := table.NodeID(f.Sender)
	p := n.peers[id]
	if p == nil {
		p = &peerState{id: id}
		n.peers[id] = p
	}
	if f.Incarnation != p.inc {
		// A new run starts its update numbers afresh; what the old run
		// asked of us it will ask again.
		*p = peerState{id: id, inc: f.Incarnation}
		// Answer a newcomer with an ALIVE at the next tick rather than
		// within AliveInterval: a joining node waits for a ready peer's
		// ALIVE before it asks for the bulk dump.
		n.lastAlive = time.Time{}
		n.dump.drop(id)
		if n.bulk.from == id {
			n.bulk.from = 0
		}
	}
	p.heard = now
	if err := n.handle(p, &f, now); err != nil {
		n.open.Count(err)
		return err
	}
	return nil
}

func (n *Node) handle(p *peerState, f *Frame, now time.Time) error {
	switch f.Type {
	case TypeUpdate:
		u, err := ParseUpdate(f.Payload)
		if err != nil {
			return err
		}
		_, lost := p.rx.receive(u.USeq, now)
		n.lost(p, lost)
		r := u.Entries()
		return n.applyAll(&r, now)
	case TypeAlive:
		a, err := ParseAlive(f.Payload)
		if err != nil {
			return err
		}
		p.ready, p.entries, p.highest = a.Flags&AliveReady != 0, a.Entries, a.USeq
		n.lost(p, p.rx.announce(a.USeq, now))
	case TypeNack:
		if err := ParseNack(f.Payload, &n.nack); err != nil {
			return err
		}
		if table.NodeID(n.nack.Target) == n.cfg.Self && n.nack.Incarnation == n.cfg.Incarnation {
			n.stats.NacksReceived++
			n.resend(p.id, n.nack.Ranges, now)
		}
	case TypeBulkRequest:
		r, err := ParseBulkRequest(f.Payload)
		if err != nil {
			return err
		}
		if r.Target == 0 || table.NodeID(r.Target) == n.cfg.Self {
			n.stats.BulkRequests++
			n.dump.request(p.id, table.NodeID(r.Owner), &r, now)
		}
	case TypeBulk:
		b, err := ParseBulk(f.Payload)
		if err != nil {
			return err
		}
		if p.id == n.bulk.from && f.Incarnation == n.bulk.fromInc {
			n.bulk.onBulk(&b, now)
		}
		r := b.Entries()
		return n.applyAll(&r, now)
	case TypeBulkDone:
		if err := ParseBulkDone(f.Payload, &n.bdone); err != nil {
			return err
		}
		if p.id == n.bulk.from && slices.Contains(n.bdone.Requesters, uint16(n.cfg.Self)) && !n.bulk.done {
			// The dump ended with shards missing (frames lost): ask for
			// those. An empty shard still sends an empty last part, so
			// nothing missing is ever mistaken for complete.
			n.askBulk(now)
		}
	}
	return nil
}

func (n *Node) applyAll(r *EntryReader, now time.Time) error {
	e := &n.scratch
	for {
		ttl, removed, ok := r.Next(e)
		if !ok {
			break
		}
		var ch table.Change
		var err error
		if removed {
			ch, err = n.t.ApplyDelete(&e.Key, e.Owner, e.Version)
		} else {
			ch, err = n.t.Apply(e, ttl, now)
		}
		switch {
		case err != nil:
			n.stats.EntriesInvalid++
		case ch&table.Stale != 0:
			n.stats.EntriesStale++
		case ch != 0:
			n.stats.EntriesApplied++
			if n.cfg.Applied != nil {
				n.cfg.Applied(e, ch)
			}
		}
	}
	return r.Err()
}

// lost handles updates of p's stream given up on: what they carried comes
// back in a bulk dump of p's own entries.
func (n *Node) lost(p *peerState, lost uint64) {
	if lost == 0 {
		return
	}
	n.stats.UpdatesLost += lost
	r := BulkRequest{Target: uint16(p.id), Owner: uint16(p.id)}
	n.ctl = AppendBulkRequest(n.ctl[:0], &r)
	n.send(TypeBulkRequest, n.ctl, []table.NodeID{p.id})
}

// resend answers a NACK from peer: each missing update goes out again
// under its old number but with the current state of its entries (an entry
// gone since, or owned by another director since, is left out, unless the
// update removed it). Updates that fell
// out of the ring are answered with an empty resend, which closes the gap,
// and a bulk dump of this node's entries to the peer.
func (n *Node) resend(peer table.NodeID, ranges []Range, now time.Time) {
	budget := MaxNackRanges * 4 // frames per NACK
	tooOld := false
	for _, r := range ranges {
		for u := r.First; u < r.First+uint64(r.Count) && budget > 0; u++ {
			if u > n.sent {
				break
			}
			var s *ringSlot
			if len(n.ring) > 0 {
				s = &n.ring[u%uint64(len(n.ring))]
			}
			if s == nil || s.useq != u {
				n.stats.ResendTooOld++
				tooOld = true
				n.rpayload = AppendUpdateHeader(n.rpayload[:0], u, UpdateResend)
				n.send(TypeUpdate, n.rpayload, nil)
				budget--
				continue
			}
			// Several peers NACK what they all lost; one resend serves
			// them all.
			if !s.resentAt.IsZero() && now.Sub(s.resentAt) < n.cfg.NackInterval/2 {
				continue
			}
			n.resendSlot(s, now)
			budget--
		}
	}
	if tooOld {
		all := BulkRequest{}
		n.dump.request(peer, n.cfg.Self, &all, now)
	}
}

func (n *Node) resendSlot(s *ringSlot, now time.Time) {
	u, err := ParseUpdate(s.payload)
	if err != nil {
		return
	}
	ts := table.StampOf(now)
	out := AppendUpdateHeader(n.rpayload[:0], s.useq, UpdateResend)
	cnt := 0
	r := u.Entries()
	var old table.Entry
	for {
		_, removed, ok := r.Next(&old)
		if !ok {
			break
		}
		e, found := n.t.Get(&old.Key)
		switch {
		case found && e.Owner != n.cfg.Self:
			// Taken over since: the new owner's stream carries it. Sending
			// another owner's state here could bring back an entry that
			// owner has deleted meanwhile, at a peer that already applied
			// the delete (tables keep no tombstones).
			continue
		case found && e.Expires > ts:
		case !found && removed:
			e = old
		default:
			continue
		}
		if len(out)+EntryLen(&e) > n.seal.MaxPayload() || cnt == MaxEntriesPerFrame {
			// Grown since (sequence data appeared): send it as a new
			// update instead.
			n.queue(&e, now, removed && !found)
			continue
		}
		ttl := e.Expires.Sub(ts)
		if removed && !found {
			ttl = 0
		}
		if out, err = AppendEntry(out, &e, ttl, removed && !found); err == nil {
			cnt++
		}
	}
	SetEntryCount(out, TypeUpdate, cnt)
	n.rpayload = out
	n.send(TypeUpdate, out, nil)
	s.resentAt = now
	n.stats.Resends++
}

// Tick drives everything that runs on time: pending updates go out, ALIVEs,
// NACKs, the bulk dump's pace, the bulk resync's requests and retries, and
// once a second the table's expiry and refresh. Call it every 10 ms or so;
// a call with nothing due costs little.
func (n *Node) Tick(now time.Time) {
	n.Flush()
	if n.lastAlive.IsZero() || now.Sub(n.lastAlive) >= n.cfg.AliveInterval {
		n.lastAlive = now
		a := Alive{USeq: n.sent, Entries: uint32(min(uint64(n.t.Len()), math.MaxUint32))}
		if n.bulk.done {
			a.Flags |= AliveReady
		}
		n.ctl = AppendAlive(n.ctl[:0], &a)
		n.send(TypeAlive, n.ctl, nil)
	}
	for _, p := range n.peers {
		n.nackTick(p, now)
	}
	n.dump.poll(n, now)
	n.bulkTick(now)
	if ts := table.StampOf(now); ts != n.lastTick {
		n.lastTick = ts
		n.t.Tick(now, nil, func(d *table.Due) {
			if d.Rereported {
				n.Refresh(&d.Key, 0, now)
			} else if n.cfg.Idle != nil {
				n.cfg.Idle(d)
			}
		})
		n.Flush()
	}
}

func (n *Node) nackTick(p *peerState, now time.Time) {
	rx := &p.rx
	if rx.gapSince.IsZero() || now.Sub(rx.gapSince) < n.cfg.NackDelay || now.Sub(rx.lastNack) < n.cfg.NackInterval {
		return
	}
	if now.Sub(p.heard) > n.cfg.PeerTimeout {
		return // nobody to answer
	}
	if rx.nacks >= n.cfg.MaxNacks {
		n.lost(p, rx.giveUp(now))
		return
	}
	n.nack = Nack{Target: uint16(p.id), Incarnation: p.inc, Ranges: rx.missing(n.nack.Ranges[:0], MaxNackRanges)}
	n.ctl = AppendNack(n.ctl[:0], &n.nack)
	// To everyone: a peer that lost the same updates gets the resend too
	// and need not NACK.
	n.send(TypeNack, n.ctl, nil)
	rx.lastNack = now
	rx.nacks++
	n.stats.NacksSent++
}

func (n *Node) alive(p *peerState, now time.Time) bool {
	return !p.heard.IsZero() && now.Sub(p.heard) <= n.cfg.PeerTimeout
}

func (n *Node) bulkTick(now time.Time) {
	b := &n.bulk
	if b.done {
		return
	}
	if b.started.IsZero() {
		b.started = now
	}
	if b.from != 0 {
		p := n.peers[b.from]
		if p == nil || !n.alive(p, now) {
			b.from = 0 // gone: ask someone else for what is missing
		} else if last := latest(b.asked, b.heard); now.Sub(last) >= n.cfg.BulkTimeout {
			n.askBulk(now)
		}
		return
	}
	var best *peerState
	for _, p := range n.peers {
		if p.ready && n.alive(p, now) && (best == nil || p.id < best.id) {
			best = p
		}
	}
	if best == nil {
		if now.Sub(b.started) >= n.cfg.BulkWait {
			// Nobody ready to ask: this is the fleet's first node (or
			// all started together); what it has is all there is.
			b.done = true
			b.completed = now
		}
		return
	}
	b.from, b.fromInc = best.id, best.inc
	n.askBulk(now)
}

func (n *Node) askBulk(now time.Time) {
	b := &n.bulk
	r := b.missing(b.from)
	n.ctl = AppendBulkRequest(n.ctl[:0], &r)
	n.send(TypeBulkRequest, n.ctl, []table.NodeID{b.from})
	b.asked = now
	b.attempts++
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
