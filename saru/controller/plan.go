package controller

import (
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/saru/allocate"
	"github.com/peerlvs/peerlvs/saru/member"
)

// Eligible returns the members that may own buckets: ready, with settings
// equal to ours. Joining and draining directors and directors that hash
// differently own nothing.
//
// FingerprintOK is relative to the local director, which cannot tell
// whether it or the others are misconfigured. So when more alive members
// disagree with us than agree (ourselves included), we assume the fault is
// ours and leave the local member out too: a lone misconfigured director
// then owns nothing instead of claiming every bucket while the fleet also
// serves them. On a tie we keep owning; duplicate acceptance is the lesser
// evil than nobody accepting.
func Eligible(ms []member.Member) []allocate.Member {
	minority := inMinority(ms)
	var out []allocate.Member
	for _, m := range ms {
		if minority && m.Local {
			continue
		}
		if m.State == member.StateReady && m.FingerprintOK {
			out = append(out, allocate.Member{Name: m.Name, Weight: m.Weight})
		}
	}
	return out
}

func inMinority(ms []member.Member) bool {
	agree, disagree := 0, 0
	for _, m := range ms {
		if m.FingerprintOK {
			agree++
		} else {
			disagree++
		}
	}
	return disagree > agree
}

// Compute is the allocation every director computes from the same view.
// With fewer than quorum eligible directors in the view no bucket has an
// owner: a director cut off from the rest of its fleet (a partition, or a
// wrong gossip key) must not take everything for itself.
func Compute(ms []member.Member, buckets uint32, seed uint64, quorum int) (allocate.Map, error) {
	el := Eligible(ms)
	if len(el) < quorum {
		el = nil
	}
	return allocate.Allocate(el, buckets, seed)
}

// HasQuorum reports whether view holds at least quorum eligible directors.
func HasQuorum(view []member.Member, quorum int) bool { return len(Eligible(view)) >= quorum }

type bucketState uint8

const (
	stNone bucketState = iota
	stOwned
	stOut     // giving away: HandoverOut until the deadline, then none
	stPending // taking over: nothing until the deadline, then stIn
	stIn      // taking over: HandoverIn until the deadline, then owned
)

// plan is this director's per-bucket handover state machine. It runs the
// filter's handover contract by timing alone, with no messages between
// directors: when a bucket moves between two live directors, the giver
// puts it in HandoverOut at once, the taker waits step (long enough for the
// change to reach the giver by gossip) before HandoverIn, the giver drops it
// after hold and the taker owns it after step+hold. A bucket whose previous
// owner is gone (failed, left) or that had none is taken at once: there is
// no giver to wait for.
type plan struct {
	st    []bucketState
	until []time.Time
}

func newPlan(buckets uint32) *plan {
	return &plan{st: make([]bucketState, buckets), until: make([]time.Time, buckets)}
}

// update moves the plan from map old to map cur. alive holds the names of
// all members memberlist still sees, whatever their state.
func (p *plan) update(old, cur allocate.Map, alive map[string]bool, me string, now time.Time, step, hold time.Duration) {
	for b := range p.st {
		bu := uint32(b)
		mine := cur.OwnerOf(bu) == me
		switch s := p.st[b]; {
		case mine && (s == stOwned || s == stPending || s == stIn):
		case mine && s == stOut:
			// Taken back before we let go: we still hold its connections.
			p.st[b] = stOwned
		case mine:
			prev := old.OwnerOf(bu)
			if prev != "" && prev != me && alive[prev] {
				p.st[b], p.until[b] = stPending, now.Add(step)
			} else {
				p.st[b] = stOwned
			}
		case s == stOwned || s == stIn:
			// Only hand over to someone: with no new owner the bucket is
			// unserved either way and holding it only delays a drain.
			if cur.OwnerOf(bu) != "" {
				p.st[b], p.until[b] = stOut, now.Add(hold)
			} else {
				p.st[b] = stNone
			}
		case s == stPending:
			p.st[b] = stNone
		}
	}
	p.advance(now, hold)
}

// advance performs the transitions due at now and returns the next
// deadline (zero if none).
func (p *plan) advance(now time.Time, hold time.Duration) time.Time {
	var next time.Time
	for b, s := range p.st {
		if s != stOut && s != stPending && s != stIn {
			continue
		}
		if !now.Before(p.until[b]) {
			switch s {
			case stOut:
				p.st[b] = stNone
			case stPending:
				p.st[b], p.until[b] = stIn, p.until[b].Add(hold)
			case stIn:
				p.st[b] = stOwned
			}
		}
		if s := p.st[b]; (s == stPending || s == stIn) && (next.IsZero() || p.until[b].Before(next)) {
			next = p.until[b]
		}
		if p.st[b] == stOut && (next.IsZero() || p.until[b].Before(next)) {
			next = p.until[b]
		}
	}
	return next
}

func (p *plan) ownership() filter.Ownership {
	var o filter.Ownership
	for b, s := range p.st {
		switch s {
		case stOwned:
			o.Owned = append(o.Owned, uint32(b))
		case stOut:
			o.HandoverOut = append(o.HandoverOut, uint32(b))
		case stIn:
			o.HandoverIn = append(o.HandoverIn, uint32(b))
		}
	}
	return o
}

// empty reports whether this director holds no bucket in any form.
func (p *plan) empty() bool {
	for _, s := range p.st {
		if s != stNone {
			return false
		}
	}
	return true
}
