package verdict

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
)

// Decide is the fleet's rule: a real server is down when more than half
// of the ready directors see it down (n is their number, the voters
// included; pending votes and directors that have not voted count as not
// down). So one director whose own path to a server is broken cannot take
// the server away from the fleet, and a server that a majority cannot
// reach is taken away even while the rest are still checking. The weight
// is the lower median of the weights asked for by the directors that see
// the server up (-1: none asked, use the configured weight), so that one
// director's odd reading cannot move it.
func Decide(n int, votes []Vote) (up bool, weight int) {
	down := 0
	var ws []int
	for _, v := range votes {
		switch v.Verdict {
		case 2:
			down++
		case 1:
			if v.Weight >= 0 {
				ws = append(ws, v.Weight)
			}
		}
	}
	if down*2 > n {
		return false, -1
	}
	if len(ws) == 0 {
		return true, -1
	}
	sort.Ints(ws)
	return true, ws[(len(ws)-1)/2]
}

// Board holds the latest votes and declarations heard from every other
// director, per saru run: a director that restarts starts afresh.
type Board struct {
	mu    sync.Mutex
	peers map[string]*peer
}

type peer struct {
	run      uint64
	services uint64
	votes    map[Key]seqVote
	decl     map[Key]seqDigest
}

type seqVote struct {
	seq uint64
	v   Vote
}

type seqDigest struct {
	seq uint64
	d   Digest
}

// NewBoard returns an empty board.
func NewBoard() *Board { return &Board{peers: map[string]*peer{}} }

// Update takes in one message. Entries older than the ones held (by the
// sender's sequence) are ignored, so reordered datagrams cannot bring an
// old verdict back. It reports whether a vote or the sender's services
// fingerprint changed.
func (b *Board) Update(m Message) (changed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[m.From]
	if p == nil || p.run != m.Run {
		p = &peer{run: m.Run, votes: map[Key]seqVote{}, decl: map[Key]seqDigest{}}
		b.peers[m.From] = p
		changed = true
	}
	changed = changed || p.services != m.Services
	p.services = m.Services
	for _, v := range m.Votes {
		if old, ok := p.votes[v.Key]; !ok || old.seq <= m.Seq {
			changed = changed || old.v != v
			p.votes[v.Key] = seqVote{m.Seq, v}
		}
	}
	for _, d := range m.Decl {
		if old, ok := p.decl[d.Key]; !ok || old.seq <= m.Seq {
			p.decl[d.Key] = seqDigest{m.Seq, d}
		}
	}
	// Drop declarations older than this round's: a service the sender no
	// longer declares stops being reported once its whole round is in.
	if m.IsDecl {
		for k, d := range p.decl {
			if d.seq+1 < m.Seq {
				delete(p.decl, k)
			}
		}
	}
	return changed
}

// Peers returns the directors heard from, sorted.
func (b *Board) Peers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Sorted(maps.Keys(b.peers))
}

// Forget drops a director (it left the fleet).
func (b *Board) Forget(name string) {
	b.mu.Lock()
	delete(b.peers, name)
	b.mu.Unlock()
}

// Votes returns the votes on key from the named directors that declare
// the services with fingerprint services (a director whose declaration
// differs judges other servers), with the voters' names.
func (b *Board) Votes(key Key, from []string, services uint64) (names []string, votes []Vote) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, name := range from {
		p := b.peers[name]
		if p == nil || p.services != services {
			continue
		}
		if v, ok := p.votes[key]; ok {
			names = append(names, name)
			votes = append(votes, v.v)
		}
	}
	return names, votes
}

// DeclDiff names every service in which director name's declaration
// differs from ours, e.g. "tcp 10.0.0.1:80 differs", "fwmark 3 is only on
// d2". Empty when they agree or nothing was heard yet.
func (b *Board) DeclDiff(name string, ours []Digest) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[name]
	if p == nil || len(p.decl) == 0 {
		return nil
	}
	mine := make(map[Key]Digest, len(ours))
	for _, d := range ours {
		mine[d.Key] = d
	}
	var out []string
	for k, sd := range p.decl {
		d, ok := mine[k]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s is declared only on %s", sd.d.Name, name))
		case d.Digest != sd.d.Digest:
			out = append(out, fmt.Sprintf("%s is declared differently on %s", d.Name, name))
		}
	}
	for k, d := range mine {
		if _, ok := p.decl[k]; !ok {
			out = append(out, fmt.Sprintf("%s is not declared on %s", d.Name, name))
		}
	}
	slices.Sort(out)
	return out
}
