package controller

import (
	"encoding/binary"
	"hash/fnv"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/saru/allocate"
	"github.com/peerlvs/peerlvs/saru/member"
)

// Eligible returns the members that may own buckets: ready, fit, with
// settings equal to ours. Joining, draining and unfit directors and
// directors that hash differently own nothing.
//
// FingerprintOK is relative to the local director, which cannot tell
// whether it or the others are misconfigured. So when more alive members
// disagree with us than agree (ourselves included), we assume the fault is
// ours and leave the local member out too: a lone misconfigured director
// then owns nothing instead of claiming every bucket while the fleet also
// serves them. On a tie the side of the first member by name keeps owning
// and the other side leaves itself out: both sides see the same two
// groups, so they agree which one that is. A pair whose operator reloads
// a new setting (a service) on one director, then on the other, would
// otherwise have both accept every bucket in between: the lab's migration
// reset held connections that way.
func Eligible(ms []member.Member) []allocate.Member {
	var out []allocate.Member
	for _, m := range present(ms) {
		if m.Unfit == "" {
			out = append(out, allocate.Member{Name: m.Name, Weight: m.Weight})
		}
	}
	return out
}

// present returns the ready members with our settings, fit or not (the
// local one left out when it is in the minority, see Eligible): those that
// count toward the quorum. An unfit director is alive, in view and agrees;
// it vouches that the fleet is not split as much as an eligible one does,
// so two directors whose uplinks die leave the third serving instead of
// no one.
func present(ms []member.Member) []member.Member {
	minority := inMinority(ms)
	var out []member.Member
	for _, m := range ms {
		if minority && m.Local {
			continue
		}
		if m.State == member.StateReady && m.FingerprintOK {
			out = append(out, m)
		}
	}
	return out
}

func inMinority(ms []member.Member) bool {
	agree, disagree := 0, 0
	first, firstAgrees := "", false
	for _, m := range ms {
		if m.FingerprintOK {
			agree++
		} else {
			disagree++
		}
		if first == "" || m.Name < first {
			first, firstAgrees = m.Name, m.FingerprintOK
		}
	}
	return disagree > agree || (disagree == agree && first != "" && !firstAgrees)
}

// Compute is the allocation every director computes from the same view.
// With fewer than quorum ready directors in the view (unfit ones count)
// no bucket has an owner: a director cut off from the rest of its fleet (a
// partition, or a wrong gossip key) must not take everything for itself.
func Compute(ms []member.Member, buckets uint32, seed uint64, quorum int) (allocate.Map, error) {
	el := Eligible(ms)
	if !HasQuorum(ms, quorum) {
		el = nil
	}
	return allocate.Allocate(el, buckets, seed)
}

// progressKey names allocation m as computed from view, for the handover
// progress the directors gossip: its fingerprint and the saru run of every
// member it was computed over. An allocation that comes back (a member
// leaves and returns) gets a new key, so a release gossiped for its earlier
// self, and perhaps never superseded in a lagging view, is not mistaken for
// a fresh one.
func progressKey(m allocate.Map, view []member.Member) uint64 {
	runs := make(map[string]uint64, len(view))
	for _, v := range view {
		runs[v.Name] = v.Run
	}
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], m.Fingerprint)
	h.Write(b[:])
	for _, am := range m.Members {
		h.Write([]byte(am.Name))
		binary.BigEndian.PutUint64(b[:], runs[am.Name])
		h.Write(b[:])
	}
	return h.Sum64()
}

// HasQuorum reports whether view holds at least quorum ready directors
// with our settings, fit or not.
func HasQuorum(view []member.Member, quorum int) bool { return len(present(view)) >= quorum }

type bucketState uint8

const (
	stNone bucketState = iota
	stOwned
	stOut     // giving away: HandoverOut until the deadline and the taker's completion, then none
	stPending // taking over: nothing until the deadline and the giver's release, then stIn
	stIn      // taking over: HandoverIn until the deadline, then owned
)

// plan is this director's per-bucket handover state machine. When a bucket
// moves between two live directors, the giver puts it in HandoverOut at
// once; the taker waits at least step and until the giver has released it
// (released: the giver gossips the allocation it has applied), then puts
// it in HandoverIn, and owns it hold later; the giver keeps it in
// HandoverOut for at least hold and until the taker owns it (taken: the
// taker gossips that it has completed the allocation). Waiting for each
// other's word, not only for time, keeps a slow gossip from letting both
// take new flows of the bucket, or neither its established flows. A bucket
// whose previous owner is gone (failed, left) or that had none is taken at
// once: there is no giver to wait for.
type plan struct {
	st    []bucketState
	until []time.Time
	peer  []string // the giver of a pending bucket, the taker of one given away
	key   uint64   // progressKey of the allocation the plan follows
	// released reports whether giver has applied the current allocation,
	// and so no longer takes new flows of the buckets it gives away; nil
	// means always.
	released func(giver string) bool
	// taken reports whether taker has completed the current allocation,
	// and so accepts every flow of the buckets it takes; nil means always.
	taken func(taker string) bool
	// granted, when set, reports whether this director holds a quorum's
	// grant for a bucket now (package saru/lease), and gates every bucket
	// whose new flows it would accept: a bucket is taken (pending -> in or
	// owned) only once granted, never forced, and a taken bucket that is
	// not granted at the moment is left out of the rules. nil: no grants,
	// the giver's gossiped release orders a handover.
	granted func(b uint32) bool
	// forced counts buckets moved on without the other side's word, after
	// waiting 2*hold beyond the deadline: a peer whose view of the fleet
	// differs for that long must not keep a bucket half-moved for ever.
	forced int
}

func newPlan(buckets uint32) *plan {
	return &plan{st: make([]bucketState, buckets), until: make([]time.Time, buckets), peer: make([]string, buckets)}
}

// watch makes the plan judge releases and completions by the progress the
// members of view gossip for the allocation with key key.
func (p *plan) watch(view []member.Member, key uint64) {
	p.key = key
	progress := func(name string) (member.Progress, bool) {
		for _, v := range view {
			if v.Name == name {
				return v.Progress, true
			}
		}
		return member.Progress{}, false
	}
	p.released = func(giver string) bool {
		pr, alive := progress(giver)
		return !alive || pr.Applied == key // gone: nobody left to accept its flows
	}
	p.taken = func(taker string) bool {
		pr, alive := progress(taker)
		return !alive || pr.Settled == key // gone: its buckets move on anyway
	}
}

// settled reports whether no bucket is half-taken.
func (p *plan) settled() bool {
	for _, s := range p.st {
		if s == stPending || s == stIn {
			return false
		}
	}
	return true
}

// giversOf returns the members of view that can hand a bucket over: every
// member memberlist still sees, whatever its state, but one unfit with a
// tracked link down. That one receives none of its buckets' flows, so
// keeping their established flows with it for the hold would only stall
// them: its buckets move as from a failed director (new flows still only
// once granted).
func giversOf(view []member.Member) map[string]bool {
	givers := make(map[string]bool, len(view))
	for _, v := range view {
		givers[v.Name] = !v.LinkDown
	}
	return givers
}

// update moves the plan from map old to map cur. givers holds the members
// that can hand a bucket over (giversOf); a bucket whose previous owner is
// not among them is taken without waiting for it.
func (p *plan) update(old, cur allocate.Map, givers map[string]bool, me string, now time.Time, step, hold time.Duration) {
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
			switch {
			case prev != "" && prev != me && givers[prev]:
				p.st[b], p.until[b], p.peer[b] = stPending, now.Add(step), prev
			case p.granted != nil:
				// No giver to wait for, but maybe one that is alive and
				// thinks it owns the bucket: the grant decides.
				p.st[b], p.until[b], p.peer[b] = stPending, now, ""
			default:
				p.st[b] = stOwned
			}
		case s == stOwned || s == stIn:
			// Only hand over to someone: with no new owner the bucket is
			// unserved either way and holding it only delays a drain.
			if to := cur.OwnerOf(bu); to != "" {
				p.st[b], p.until[b], p.peer[b] = stOut, now.Add(hold), to
			} else {
				p.st[b] = stNone
			}
		case s == stOut:
			if to := cur.OwnerOf(bu); to != "" {
				p.peer[b] = to
			}
		case s == stPending:
			p.st[b] = stNone
		}
	}
	p.advance(now, hold)
}

// advance performs the transitions due at now and returns the next
// deadline (zero if none). A pending bucket whose giver has not released it
// waits for the next membership change instead of a deadline.
func (p *plan) advance(now time.Time, hold time.Duration) time.Time {
	var next time.Time
	for b, s := range p.st {
		if s != stOut && s != stPending && s != stIn {
			continue
		}
		waiting := false
		if !now.Before(p.until[b]) {
			forced := !now.Before(p.until[b].Add(2 * hold))
			switch s {
			case stOut:
				switch {
				case p.taken == nil || p.taken(p.peer[b]):
					p.st[b], p.peer[b] = stNone, ""
				case forced:
					p.st[b], p.peer[b] = stNone, ""
					p.forced++
				default:
					waiting = true
				}
			case stPending:
				switch {
				case p.granted != nil:
					switch {
					case !p.granted(uint32(b)):
						waiting = true
					case p.peer[b] == "":
						p.st[b], p.peer[b] = stOwned, ""
					default:
						p.st[b], p.until[b], p.peer[b] = stIn, now.Add(hold), ""
					}
				case p.released == nil || p.released(p.peer[b]):
					p.st[b], p.until[b], p.peer[b] = stIn, now.Add(hold), ""
				case forced:
					p.st[b], p.until[b], p.peer[b] = stIn, now.Add(hold), ""
					p.forced++
				default:
					waiting = true
				}
			case stIn:
				p.st[b] = stOwned
			}
		}
		due := p.until[b]
		switch {
		case waiting && p.granted != nil && s == stPending:
			continue // the grant's arrival wakes the controller, nothing else
		case waiting:
			due = due.Add(2 * hold) // the forced move, unless the word comes first
		}
		if s := p.st[b]; s != stNone && s != stOwned && (next.IsZero() || due.Before(next)) {
			next = due
		}
	}
	return next
}

// ownership is what the rules should enforce: with grants, only the
// buckets granted at the moment accept new flows.
func (p *plan) ownership() filter.Ownership {
	var o filter.Ownership
	for b, s := range p.st {
		accepting := s == stOwned || s == stIn
		if accepting && p.granted != nil && !p.granted(uint32(b)) {
			continue
		}
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

// wanted lists the buckets to ask grants for: every one this director
// owns or is taking.
func (p *plan) wanted() []uint32 {
	var out []uint32
	for b, s := range p.st {
		if s == stOwned || s == stIn || s == stPending {
			out = append(out, uint32(b))
		}
	}
	return out
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
