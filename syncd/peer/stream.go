package peer

import "time"

// stream tracks which update sequence numbers of one sender's run have
// arrived: everything below next has (or was given up on), and bits marks
// what arrived in [next, next+streamWindow).
type stream struct {
	started  bool
	next     uint64
	highest  uint64 // highest known to exist: seen, or announced by ALIVE
	bits     [streamWindow / 64]uint64
	gapSince time.Time // when the current gap was first seen; zero if none
	lastNack time.Time
	nacks    int // NACKs sent since next last moved
}

const (
	// streamWindow is how far ahead of the first missing update a receiver
	// keeps track. A sender's resend ring should be at least this long;
	// a gap that grows past it is given up and repaired by a bulk dump of
	// the sender's entries.
	streamWindow = 4096
	// catchUp: a run first heard at or below this update number is caught
	// up from 1, because it most likely just started and its first frames
	// were lost (or sent before this node listened). A run heard first
	// later than that is older than this node's interest: the bulk dump
	// brings its history.
	catchUp = 256
)

func (s *stream) has(u uint64) bool { return s.bits[u/64%(streamWindow/64)]&(1<<(u%64)) != 0 }
func (s *stream) set(u uint64)      { s.bits[u/64%(streamWindow/64)] |= 1 << (u % 64) }
func (s *stream) clear(u uint64)    { s.bits[u/64%(streamWindow/64)] &^= 1 << (u % 64) }

func (s *stream) start(first uint64) {
	s.started = true
	s.next = first
	if first <= catchUp {
		s.next = 1
	}
	s.highest = s.next - 1
}

// receive records update u. It reports whether u is new, and how many
// missing updates were given up because u is too far ahead.
func (s *stream) receive(u uint64, now time.Time) (fresh bool, lost uint64) {
	if !s.started {
		s.start(u)
	}
	if u < s.next || (u < s.next+streamWindow && s.has(u)) {
		return false, 0
	}
	if u >= s.next+streamWindow {
		lost = s.slide(u - streamWindow + 1)
	}
	s.set(u)
	s.highest = max(s.highest, u)
	s.advance()
	s.gap(now)
	return true, lost
}

// announce records that the sender has sent up to h (an ALIVE), so that a
// lost tail shows as a gap.
func (s *stream) announce(h uint64, now time.Time) (lost uint64) {
	if !s.started {
		s.start(h + 1)
	}
	if h >= s.next+streamWindow {
		lost = s.slide(h - streamWindow + 1)
	}
	s.highest = max(s.highest, h)
	s.gap(now)
	return lost
}

// giveUp abandons everything missing up to highest.
func (s *stream) giveUp(now time.Time) uint64 {
	lost := s.slide(s.highest + 1)
	s.gap(now)
	return lost
}

// slide moves next up to n, counting the updates skipped that had not
// arrived.
func (s *stream) slide(n uint64) (lost uint64) {
	if n <= s.next {
		return 0
	}
	// Only [next, next+streamWindow) can be marked.
	end := min(n, s.next+streamWindow)
	for u := s.next; u < end; u++ {
		if s.has(u) {
			s.clear(u)
		} else {
			lost++
		}
	}
	lost += n - end
	s.next = n
	s.nacks = 0
	s.advance()
	return lost
}

func (s *stream) advance() {
	moved := false
	for s.next <= s.highest && s.has(s.next) {
		s.clear(s.next)
		s.next++
		moved = true
	}
	if moved {
		s.nacks = 0
	}
}

func (s *stream) gap(now time.Time) {
	switch {
	case s.highest < s.next:
		s.gapSince = time.Time{}
	case s.gapSince.IsZero():
		s.gapSince = now
	}
}

// missing appends up to limit ranges of missing updates, oldest first.
func (s *stream) missing(dst []Range, limit int) []Range {
	end := min(s.highest, s.next+streamWindow-1)
	for u := s.next; u <= end && len(dst) < limit; u++ {
		if s.has(u) {
			continue
		}
		r := Range{First: u}
		for u <= end && !s.has(u) {
			r.Count++
			u++
		}
		dst = append(dst, r)
	}
	return dst
}
