package lease

import (
	"time"
)

// Holder names one saru run of one director: a restarted saru is a new
// holder, so a grant to its previous run is never mistaken for its own.
type Holder struct {
	Name string
	Run  uint64
}

// Request asks for grants of Buckets; Seq grows with every request a
// holder sends (all messages of one round share it).
type Request struct {
	From    Holder
	Seq     uint64
	Buckets []uint32
}

// Grant answers a Request with the buckets granted.
type Grant struct {
	Grantor string
	To      Holder
	Seq     uint64
	Buckets []uint32
}

// Release gives Buckets back: every grant to From from a request no newer
// than UpTo. A holder sends it only once its kernel no longer accepts them.
type Release struct {
	From    Holder
	UpTo    uint64
	Buckets []uint32
}

// Grantor is one director's grant table. It is not safe for concurrent
// use; the daemon serialises calls.
type Grantor struct {
	name    string
	hold    time.Duration
	buckets uint32
	quiet   time.Time // grants nothing before
	holder  []Holder  // zero: free
	seq     []uint64  // the request seq of the grant in force
	until   []time.Time
	// peers tracks per holder the newest request seen and the release
	// horizon, so that a request overtaken by a later release (or by a
	// later request) is ignored.
	peers map[Holder]*peerState
}

type peerState struct {
	newest   uint64 // highest request seq seen
	released uint64 // highest Release.UpTo seen
	seen     time.Time
}

// NewGrantor returns the grant table of director name, started at now. It
// grants nothing for one Hold: a grantor that restarted has forgotten the
// grants it gave before, and they have all run out by then.
func NewGrantor(name string, p Params, buckets uint32, now time.Time) *Grantor {
	p = p.WithDefaults()
	return &Grantor{name: name, hold: p.Hold(), buckets: buckets, quiet: now.Add(p.Hold()),
		holder: make([]Holder, buckets), seq: make([]uint64, buckets), until: make([]time.Time, buckets),
		peers: map[Holder]*peerState{}}
}

// Request handles r received at now and returns the grant to send back
// (possibly empty).
func (g *Grantor) Request(now time.Time, r Request) Grant {
	out := Grant{Grantor: g.name, To: r.From, Seq: r.Seq}
	if now.Before(g.quiet) || r.From.Name == "" {
		return out
	}
	ps := g.peer(r.From, now)
	if r.Seq < ps.newest || r.Seq <= ps.released {
		return out // overtaken: a later request or a release was sent after it
	}
	ps.newest = r.Seq
	for _, b := range r.Buckets {
		if b >= g.buckets {
			continue
		}
		if cur := g.holder[b]; cur == r.From || cur == (Holder{}) || !now.Before(g.until[b]) {
			g.holder[b], g.seq[b], g.until[b] = r.From, r.Seq, now.Add(g.hold)
			out.Buckets = append(out.Buckets, b)
		}
	}
	return out
}

// Release handles r received at now.
func (g *Grantor) Release(now time.Time, r Release) {
	ps := g.peer(r.From, now)
	ps.released = max(ps.released, r.UpTo)
	for _, b := range r.Buckets {
		if b < g.buckets && g.holder[b] == r.From && g.seq[b] <= r.UpTo {
			g.holder[b], g.seq[b], g.until[b] = Holder{}, 0, time.Time{}
		}
	}
}

// peer returns r's bookkeeping, forgetting holders silent for long: one
// silent for 4 Holds holds nothing here any more, and a request it sent
// before that is useless to it (its Lease has long run out).
func (g *Grantor) peer(h Holder, now time.Time) *peerState {
	for k, ps := range g.peers {
		if now.Sub(ps.seen) > 4*g.hold && k != h {
			delete(g.peers, k)
		}
	}
	ps := g.peers[h]
	if ps == nil {
		ps = &peerState{}
		g.peers[h] = ps
	}
	ps.seen = now
	return ps
}
