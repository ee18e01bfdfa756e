package lease

import (
	"slices"
	"time"
)

// Ledger is a holder's side: the requests it sent, the grants it got, and
// from them until when each bucket is valid. It is not safe for concurrent
// use; the daemon serialises calls.
type Ledger struct {
	me      Holder
	p       Params
	buckets uint32
	seq     uint64
	sent    map[uint64]time.Time // seq -> when sent (t0), while it can still count
	// got holds per grantor, per bucket, the newest request seq it granted
	// (0: none).
	got map[string][]uint64
	// min is per bucket the oldest request seq whose grants count: a
	// release voids every grant before it.
	min []uint64
}

// NewLedger returns an empty ledger for holder me.
func NewLedger(me Holder, p Params, buckets uint32) *Ledger {
	return &Ledger{me: me, p: p.WithDefaults(), buckets: buckets, sent: map[uint64]time.Time{},
		got: map[string][]uint64{}, min: make([]uint64, buckets)}
}

// Params are the ledger's settings, defaults filled in.
func (l *Ledger) Params() Params { return l.p }

// Request makes the request to send to every grantor at now, this
// director's own included, for the buckets in want.
func (l *Ledger) Request(now time.Time, want []uint32) Request {
	l.seq++
	l.sent[l.seq] = now
	for s, t0 := range l.sent {
		if now.Sub(t0) >= l.p.Lease && s != l.seq {
			delete(l.sent, s) // its grants could no longer make anything valid
		}
	}
	return Request{From: l.me, Seq: l.seq, Buckets: slices.Clone(want)}
}

// Granted records g. It reports whether g was for this holder and a
// request that still counts.
func (l *Ledger) Granted(g Grant) bool {
	if g.To != l.me || g.Grantor == "" {
		return false
	}
	if _, ok := l.sent[g.Seq]; !ok {
		return false
	}
	per := l.got[g.Grantor]
	if per == nil {
		per = make([]uint64, l.buckets)
		l.got[g.Grantor] = per
	}
	for _, b := range g.Buckets {
		if b < l.buckets && g.Seq >= l.min[b] && g.Seq > per[b] {
			per[b] = g.Seq
		}
	}
	return true
}

// Release voids every grant of buckets and returns the release to send to
// every grantor. Call it only once the kernel no longer accepts them.
func (l *Ledger) Release(buckets []uint32) Release {
	for _, b := range buckets {
		if b < l.buckets {
			l.min[b] = l.seq + 1
		}
	}
	return Release{From: l.me, UpTo: l.seq, Buckets: slices.Clone(buckets)}
}

// ValidUntil returns until when this holder may accept new flows of b:
// the Quorum-th newest grant's request time plus Lease, or the zero time
// if fewer than Quorum grantors granted it.
func (l *Ledger) ValidUntil(b uint32) time.Time {
	if b >= l.buckets {
		return time.Time{}
	}
	// The controller asks for every bucket on each step: no heap
	// allocation for fleets of up to 32 grantors.
	var buf [32]time.Time
	t0s := buf[:0]
	for _, per := range l.got {
		s := per[b]
		if s == 0 || s < l.min[b] {
			continue
		}
		if t0, ok := l.sent[s]; ok {
			t0s = append(t0s, t0)
		}
	}
	if len(t0s) < l.p.Quorum {
		return time.Time{}
	}
	slices.SortFunc(t0s, func(a, b time.Time) int { return b.Compare(a) })
	return t0s[l.p.Quorum-1].Add(l.p.Lease)
}

// Deadline is the least ValidUntil over buckets: until when the kernel may
// accept new flows of all of them. With no bucket it is now+Lease: nothing
// is accepted that needs a grant.
func (l *Ledger) Deadline(now time.Time, buckets []uint32) time.Time {
	if len(buckets) == 0 {
		return now.Add(l.p.Lease)
	}
	var d time.Time
	for i, b := range buckets {
		if v := l.ValidUntil(b); i == 0 || v.Before(d) {
			d = v
		}
	}
	return d
}
