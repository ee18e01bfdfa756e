package table

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/bits"
	"sync"
	"time"
)

// Config sets up a Table.
type Config struct {
	// Self is this director's node id: entries it owns are the ones it
	// must keep fresh on its peers.
	Self NodeID
	// Shards is the number of independently locked parts, a power of two
	// up to 4096; 0 means 64. The peer protocol's bulk dump walks the
	// table shard by shard.
	Shards int
	// Timeout gives the full timeout in seconds that the kernel's backup
	// applies to e when e.Timeout is 0 (v0 sources, /proc seeds). Nil
	// means FallbackTimeout.
	Timeout func(e *Entry) uint32
	// RefreshMargin is how long before a peer's copy of an own entry
	// expires Tick reports it due for refresh; it is capped at a quarter
	// of the entry's remaining time so that short states (TCP CLOSE, 10 s)
	// are not refreshed as soon as they are announced. 0 means 30 s.
	RefreshMargin time.Duration
}

// FallbackTimeout is the timeout, in seconds, of an entry that has none
// when Config.Timeout is nil: the kernel's own fallback for templates and
// protocols without a state table.
const FallbackTimeout = 180

// Table is the connection table. See the package documentation.
type Table struct {
	self    NodeID
	seed    maphash.Seed
	shards  []shard
	shift   uint
	timeout func(e *Entry) uint32
	margin  uint32

	namesMu sync.Mutex
	names   map[NodeID]string
}

// New returns an empty Table.
func New(cfg Config) (*Table, error) {
	n := cfg.Shards
	if n == 0 {
		n = 64
	}
	if n < 1 || n > 4096 || n&(n-1) != 0 {
		return nil, fmt.Errorf("table: %d shards, want a power of two from 1 to 4096", n)
	}
	if cfg.RefreshMargin < 0 {
		return nil, fmt.Errorf("table: negative refresh margin %v", cfg.RefreshMargin)
	}
	margin := uint32(30)
	if cfg.RefreshMargin > 0 {
		margin = uint32(min(cfg.RefreshMargin, time.Duration(1<<31)*time.Second) / time.Second)
	}
	return &Table{
		self:    cfg.Self,
		seed:    maphash.MakeSeed(),
		shards:  make([]shard, n),
		shift:   uint(64 - bits.TrailingZeros(uint(n))),
		timeout: cfg.Timeout,
		margin:  margin,
		names:   map[NodeID]string{},
	}, nil
}

// Self is the node id the table was configured with.
func (t *Table) Self() NodeID { return t.self }

// Shards is the number of shards, for Snapshot.
func (t *Table) Shards() int { return len(t.shards) }

func (t *Table) hash(b []byte) uint64 { return maphash.Bytes(t.seed, b) }

func (t *Table) shardOf(h uint64) *shard {
	if t.shift == 64 {
		return &t.shards[0]
	}
	return &t.shards[h>>t.shift]
}

func (t *Table) locate(k *Key) (lkey, uint64, *shard, error) {
	l, err := packKey(k)
	if err != nil {
		return l, 0, nil, err
	}
	var buf [48]byte
	h := t.hash(l.bytes(&buf))
	return l, h, t.shardOf(h), nil
}

func (t *Table) timeoutOf(e *Entry) uint32 {
	if e.Timeout != 0 {
		return e.Timeout
	}
	if t.timeout != nil {
		if d := t.timeout(e); d != 0 {
			return d
		}
	}
	return FallbackTimeout
}

func checkFields(e *Entry) error {
	switch {
	case !e.DAddr.IsValid():
		return invalid("missing real server address")
	case e.DAddr.Is4() != e.CAddr.Is4():
		return invalid("real server %v and client %v of different families", e.DAddr, e.CAddr)
	case e.DAddr.Zone() != "":
		return invalid("zoned real server address")
	case len(e.PEData) > 255 || len(e.PEName) > 255:
		return invalid("persistence-engine data of %d bytes or name of %d bytes, at most 255", len(e.PEData), len(e.PEName))
	case (e.PEName != "" || len(e.PEData) > 0) != (e.PE != 0) || (e.PE != 0 && e.PE != PEHash(e.PEName, e.PEData)):
		return invalid("Key.PE does not match the persistence-engine name and data; set it with PEHash")
	}
	return nil
}

// newer reports whether (v, o) orders after (sv, so): version first, the
// owner's id breaking ties, so that all nodes pick the same winner.
func newer(v uint32, o NodeID, sv uint32, so NodeID) bool {
	return v > sv || (v == sv && o > so)
}

// nextVersion is the version of a locally reported change: above the stored
// one, and at least the current time, so that an entry this node created
// again after its copy expired still outranks a peer's stale copy (clocks
// of directors are assumed to be within seconds of each other).
func nextVersion(old uint32, now Stamp) uint32 {
	return max(old+1, uint32(now))
}

// Upsert stores an entry the local kernel reported (or /proc showed), owned
// by owner, usually Self. It returns what changed; when Changed is true the
// version was bumped and the caller is expected to send the entry to peers,
// and Upsert records that peers will hold it until its expiry. It writes
// the stored Owner, Version, Reported and Expires back into e so that e
// can be sent as is.
func (t *Table) Upsert(e *Entry, owner NodeID, now time.Time) (Change, error) {
	if owner == 0 {
		return 0, invalid("owner 0")
	}
	return t.put(e, owner, StampOf(now), 0, false)
}

// Apply stores an entry a peer sent, with e.Owner and e.Version as the
// peer gave them and ttl seconds left to live. It replaces the stored
// entry only if (Version, Owner) is newer; an equal pair refreshes the
// expiry, an older one is Stale.
func (t *Table) Apply(e *Entry, ttl uint32, now time.Time) (Change, error) {
	if e.Owner == 0 {
		return 0, invalid("owner 0")
	}
	return t.put(e, e.Owner, StampOf(now), ttl, true)
}

func (t *Table) put(e *Entry, owner NodeID, now Stamp, ttl uint32, remote bool) (Change, error) {
	l, h, s, err := t.locate(&e.Key)
	if err != nil {
		return 0, err
	}
	if err := checkFields(e); err != nil {
		return 0, err
	}
	expiry := now.Add(ttl)
	if !remote {
		expiry = now.Add(t.timeoutOf(e))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.start(now)
	pos, i := s.find(&l, h)
	var ch Change
	if i == 0 {
		if s.free == 0 && s.hi >= maxRefs {
			return 0, fmt.Errorf("table: shard full (%d entries)", s.count.Load())
		}
		if s.needGrow() {
			s.grow(t)
			pos, _ = s.find(&l, h)
		}
		i = s.alloc()
		s.index[pos] = tagOf(h)<<refBits | i
		s.count.Add(1)
		sl := s.at(i)
		s.setKey(sl, &l)
		s.setFields(sl, e)
		sl.owner = owner
		sl.version = e.Version
		if !remote {
			sl.version = nextVersion(0, now)
		}
		sl.reported, sl.expiry = now, expiry
		if owner == t.self {
			t.announce(sl, now)
		}
		s.link(i, sl.event())
		s.created++
		ch = Created
	} else {
		sl := s.at(i)
		oldEv := sl.event()
		switch {
		case remote && newer(sl.version, sl.owner, e.Version, owner):
			s.stale++
			e.Owner, e.Version, e.Reported, e.Expires = sl.owner, sl.version, sl.reported, sl.expiry
			return Stale, nil
		case remote && sl.version == e.Version && sl.owner == owner:
			// The owner's own view of how long it has left is the best
			// there is; the same pair from a relay or bulk dump carries
			// the same expiry, give or take transit.
			if owner == t.self {
				// Our own entry echoed back (a relay or a dump): this
				// node's kernel is the authority on it; nothing to do.
				ch = 0
				break
			}
			ch = Refreshed
			sl.reported, sl.expiry = now, expiry
		default:
			ch = s.diff(sl, e)
			if sl.owner != owner {
				ch |= OwnerChanged
			}
			switch {
			case ch != 0:
				s.setFields(sl, e)
				sl.owner = owner
				if remote {
					sl.version = e.Version
				} else {
					sl.version = nextVersion(sl.version, now)
				}
			case remote:
				// Same content under a newer version (changed and changed
				// back, and this node missed the middle): take the version,
				// or this node would refuse what comes in between.
				sl.version = e.Version
				ch = Refreshed
			default:
				ch = Refreshed
			}
			sl.reported, sl.expiry = now, expiry
			switch {
			case owner != t.self:
				sl.refreshAt = 0
				sl.bits &^= bRereported
			case ch.Changed() || remote:
				t.announce(sl, now)
			default:
				sl.bits |= bRereported
			}
		}
		s.relink(i, oldEv)
		s.updated++
	}
	sl := s.at(i)
	e.Owner, e.Version, e.Reported, e.Expires = sl.owner, sl.version, sl.reported, sl.expiry
	return ch, nil
}

// announce records that peers now hold sl until its expiry and schedules
// its refresh a margin before that.
func (t *Table) announce(sl *slot, now Stamp) {
	sl.bits &^= bRereported
	sl.refreshAt = 0
	left := sl.expiry.Sub(now)
	if m := min(t.margin, left/4); m > 0 {
		sl.refreshAt = sl.expiry - Stamp(m)
	}
}

func (s *shard) setKey(sl *slot, l *lkey) {
	sl.proto, sl.bits, sl.cport, sl.vport = l.proto, l.bits|bUsed, l.cport, l.vport
	if l.bits&bV6 != 0 {
		j := s.alloc6()
		binary.LittleEndian.PutUint32(sl.addr[:], j)
		a := s.a6(j)
		copy(a[0:16], l.c[:])
		copy(a[16:32], l.v[:])
	} else {
		copy(sl.addr[0:4], l.c[:4])
		copy(sl.addr[4:8], l.v[:4])
	}
	if l.bits&bPE != 0 {
		// setFields fills the rest of the extra; the hash must be there
		// before anything looks the slot up.
		sl.extra = s.newExtra(&extra{pe: l.pe})
	}
}

func (s *shard) newExtra(x *extra) uint32 {
	if s.extras == nil {
		s.extras = map[uint32]*extra{}
	}
	for {
		s.nextExtra++
		if s.nextExtra == 0 {
			continue
		}
		if _, used := s.extras[s.nextExtra]; !used {
			s.extras[s.nextExtra] = x
			return s.nextExtra
		}
	}
}

// setFields stores everything but the key and bookkeeping.
func (s *shard) setFields(sl *slot, e *Entry) {
	if sl.bits&bV6 != 0 {
		d := e.DAddr.As16()
		copy(s.a6(binary.LittleEndian.Uint32(sl.addr[:]))[32:48], d[:])
	} else {
		d := e.DAddr.As4()
		copy(sl.addr[8:12], d[:])
	}
	sl.dport, sl.flags, sl.state, sl.fwmark, sl.timeout = e.DPort, e.Flags, e.State, e.Fwmark, e.Timeout
	hasExtra := e.Seq != nil || len(e.PEData) > 0 || e.PEName != ""
	switch {
	case sl.extra != 0 && (hasExtra || sl.bits&bPE != 0):
		// Replace rather than modify: exported entries share the old one.
		old := s.extras[sl.extra]
		s.extras[sl.extra] = &extra{seq: cloneSeq(e.Seq), peData: bytes.Clone(e.PEData), peName: e.PEName, pe: old.pe}
	case sl.extra != 0:
		delete(s.extras, sl.extra)
		sl.extra = 0
	case hasExtra:
		sl.extra = s.newExtra(&extra{seq: cloneSeq(e.Seq), peData: bytes.Clone(e.PEData), peName: e.PEName})
	}
}

func cloneSeq(q *SeqData) *SeqData {
	if q == nil {
		return nil
	}
	c := *q
	return &c
}

// diff compares the kernel-visible fields of sl and e.
func (s *shard) diff(sl *slot, e *Entry) Change {
	var ch Change
	if sl.state != e.State {
		ch |= StateChanged
	}
	if sl.flags != e.Flags {
		ch |= FlagsChanged
	}
	if sl.dport != e.DPort {
		ch |= DestChanged
	} else if sl.bits&bV6 != 0 {
		if [16]byte(s.a6(binary.LittleEndian.Uint32(sl.addr[:]))[32:48]) != e.DAddr.As16() {
			ch |= DestChanged
		}
	} else if [4]byte(sl.addr[8:12]) != e.DAddr.As4() {
		ch |= DestChanged
	}
	if sl.fwmark != e.Fwmark || sl.timeout != e.Timeout {
		ch |= OtherChanged
	}
	var x extra
	if sl.extra != 0 {
		x = *s.extras[sl.extra]
	}
	if (x.seq == nil) != (e.Seq == nil) || (x.seq != nil && *x.seq != *e.Seq) ||
		!bytes.Equal(x.peData, e.PEData) || x.peName != e.PEName {
		ch |= OtherChanged
	}
	return ch
}

// Get returns the entry stored under k.
func (t *Table) Get(k *Key) (Entry, bool) {
	l, h, s, err := t.locate(k)
	if err != nil {
		return Entry{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, i := s.find(&l, h); i != 0 {
		return s.export(i), true
	}
	return Entry{}, false
}

// Delete removes the entry under k, for example when the daemon learns that
// the local kernel dropped it early, and returns what it held. To tell
// peers, send a removal with the returned owner and a version above the
// returned one.
func (t *Table) Delete(k *Key) (Entry, bool) {
	l, h, s, err := t.locate(k)
	if err != nil {
		return Entry{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, i := s.find(&l, h)
	if i == 0 {
		return Entry{}, false
	}
	e := s.export(i)
	s.remove(t, i, false)
	s.removed++
	return e, true
}

// ApplyDelete removes the entry under k for a peer's removal carrying
// (version, owner), unless the table holds something newer.
func (t *Table) ApplyDelete(k *Key, owner NodeID, version uint32) (Change, error) {
	l, h, s, err := t.locate(k)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, i := s.find(&l, h)
	if i == 0 {
		return 0, nil
	}
	sl := s.at(i)
	if newer(sl.version, sl.owner, version, owner) {
		s.stale++
		return Stale, nil
	}
	s.remove(t, i, false)
	s.removed++
	return Removed, nil
}

// Refresh records that an own entry is still alive in the local kernel with
// at least alive seconds left (0 when the caller only re-sends what the
// kernel reported) and that the caller now sends it to peers. It returns the
// entry to send, and false if k is not here or not owned by Self.
func (t *Table) Refresh(k *Key, alive uint32, now time.Time) (Entry, bool) {
	l, h, s, err := t.locate(k)
	if err != nil {
		return Entry{}, false
	}
	ts := StampOf(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	_, i := s.find(&l, h)
	if i == 0 || s.at(i).owner != t.self {
		return Entry{}, false
	}
	sl := s.at(i)
	oldEv := sl.event()
	if exp := ts.Add(alive); exp > sl.expiry {
		sl.expiry = exp
	}
	t.announce(sl, ts)
	s.relink(i, oldEv)
	return s.export(i), true
}

// Due is an own entry whose peers' copies expire within the refresh margin.
type Due struct {
	Entry
	// Rereported says the local kernel reported the entry since peers last
	// heard of it, so it is alive: send it again. Otherwise the connection
	// has been idle; only the local kernel (/proc/net/ip_vs_conn) can say
	// whether it is still there, and then Refresh it.
	Rereported bool
}

// Tick moves the table's clock to now: it removes entries whose expiry has
// come, calling expired for each, and calls refresh for each own entry due
// for refresh (each is reported once per announcement). Either callback may
// be nil. Call it about once a second; a call costs what is due plus a
// constant per shard.
func (t *Table) Tick(now time.Time, expired func(*Entry), refresh func(*Due)) (nExpired, nRefresh int) {
	ts := StampOf(now)
	var exp []Entry
	var ref []Due
	for j := range t.shards {
		s := &t.shards[j]
		exp, ref = exp[:0], ref[:0]
		s.mu.Lock()
		ne, nr := s.advance(t, ts, &exp, &ref, expired != nil)
		s.mu.Unlock()
		nExpired += ne
		nRefresh += nr
		for k := range exp {
			expired(&exp[k])
		}
		if refresh != nil {
			for k := range ref {
				refresh(&ref[k])
			}
		}
	}
	return nExpired, nRefresh
}

// Expire is Tick without refresh reports, for callers that own no
// entries.
func (t *Table) Expire(now time.Time, expired func(*Entry)) int {
	n, _ := t.Tick(now, expired, nil)
	return n
}

// DueForRefresh is Tick without expiry callbacks (expired entries are still
// removed and counted in Stats).
func (t *Table) DueForRefresh(now time.Time, refresh func(*Due)) int {
	_, n := t.Tick(now, nil, refresh)
	return n
}

// Snapshot appends to buf the entries of shard i owned by owner (every
// entry if owner is 0) and returns it. It takes the shard's lock once, so
// the bulk dump gets a consistent picture of one shard at a time; changes
// made after the snapshot reach peers as ordinary updates.
func (t *Table) Snapshot(i int, owner NodeID, buf []Entry) []Entry {
	if i < 0 || i >= len(t.shards) {
		return buf
	}
	s := &t.shards[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	for j := uint32(1); j < s.hi; j++ {
		sl := s.at(j)
		if sl.bits&bUsed != 0 && (owner == 0 || sl.owner == owner) {
			buf = append(buf, s.export(j))
		}
	}
	return buf
}

// ForEach calls fn for every entry (owner 0) or every entry owned by owner,
// a shard at a time, until fn returns false.
func (t *Table) ForEach(owner NodeID, fn func(*Entry) bool) {
	var buf []Entry
	for i := range t.shards {
		buf = t.Snapshot(i, owner, buf[:0])
		for k := range buf {
			if !fn(&buf[k]) {
				return
			}
		}
	}
}

// Len is the number of entries.
func (t *Table) Len() int {
	var n int64
	for i := range t.shards {
		n += t.shards[i].count.Load()
	}
	return int(n)
}

// Stats counts what the table did since it was made.
type Stats struct {
	Len                                       int
	Created, Updated, Stale, Expired, Removed uint64
}

// Stats sums the shards' counters.
func (t *Table) Stats() Stats {
	var st Stats
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		st.Len += int(s.count.Load())
		st.Created += s.created
		st.Updated += s.updated
		st.Stale += s.stale
		st.Expired += s.expired
		st.Removed += s.removed
		s.mu.Unlock()
	}
	return st
}

// SetNodeName records a name for a node id, for logs and status output.
func (t *Table) SetNodeName(id NodeID, name string) {
	t.namesMu.Lock()
	defer t.namesMu.Unlock()
	t.names[id] = name
}

// NodeName is the name recorded for id, or its number.
func (t *Table) NodeName(id NodeID) string {
	t.namesMu.Lock()
	defer t.namesMu.Unlock()
	if n, ok := t.names[id]; ok {
		return n
	}
	return fmt.Sprintf("node%d", id)
}
