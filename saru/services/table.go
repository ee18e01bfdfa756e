package services

import (
	"encoding/binary"
	"encoding/json"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/peerlvs/peerlvs/ipvs/reconcile"
	"github.com/peerlvs/peerlvs/saru/health"
	"github.com/peerlvs/peerlvs/saru/verdict"
)

// Digests returns each declared service's key and a digest of everything
// declared about it (real servers, weights, checks), for the fleet to
// compare.
func Digests(decl []Service) []verdict.Digest {
	out := make([]verdict.Digest, 0, len(decl))
	for _, s := range decl {
		// json.Marshal is deterministic for these structs (no maps), and
		// a regexp marshals as its source.
		b, err := json.Marshal(s)
		if err != nil {
			// Only unsupported types fail, and Service has none.
			panic("services: marshal a declared service: " + err.Error())
		}
		h := fnv.New64a()
		h.Write(b)
		out = append(out, verdict.Digest{Key: verdict.KeyOf(s.Virtual.String()), Digest: h.Sum64(), Name: s.Virtual.String()})
	}
	slices.SortFunc(out, func(a, b verdict.Digest) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Fingerprint is one number for the whole declaration, independent of
// the order services are written in; 0 when nothing is declared.
func Fingerprint(decl []Service) uint64 {
	if len(decl) == 0 {
		return 0
	}
	h := fnv.New64a()
	var b [16]byte
	for _, d := range Digests(decl) {
		binary.BigEndian.PutUint64(b[:8], uint64(d.Key))
		binary.BigEndian.PutUint64(b[8:], d.Digest)
		h.Write(b[:])
	}
	if fp := h.Sum64(); fp != 0 {
		return fp
	}
	return 1
}

// Input is what the weight table is decided from.
type Input struct {
	Services []Service
	// Own is this director's check states, by real-server ID.
	Own map[string]health.Status
	// Self is this director's name; SelfReady whether it is ready (only
	// ready directors vote).
	Self      string
	SelfReady bool
	// Peers are the other ready directors that declare the same
	// services.
	Peers []string
	// Votes returns the peers' votes on a real server.
	Votes func(key verdict.Key, from []string) (names []string, votes []verdict.Vote)
	// Local applies this director's own verdicts only (keepalived's way).
	Local bool
}

// Row is one real server's line of the table.
type Row struct {
	Service string `json:"service"`
	Real    string `json:"real"`
	// Verdicts are each voting director's view, by name.
	Verdicts map[string]string `json:"verdicts"`
	// Fleet is the verdict applied: up or down.
	Fleet string `json:"fleet"`
	// Weight is the weight applied; -1 when the server is out of the
	// table (removed on failure, or the fallback while it is not needed).
	Weight   int  `json:"weight"`
	Fallback bool `json:"fallback,omitempty"`
	// BrokenPath: this director sees the server down while the fleet
	// sees it up; the path from here to it is suspect.
	BrokenPath bool `json:"broken_path,omitempty"`
}

// Table is the decided state: the rows for status and the kernel's
// desired services for reconcile.Plan.
type Table struct {
	Rows []Row
	Want []reconcile.Virtual
}

// ID returns the row's real-server ID.
func (r Row) ID() string { return r.Service + " -> " + r.Real }

// Decide computes the weight table. Every director that holds the same
// declaration and the same votes computes the same table; which votes
// count and how is verdict.Decide's rule.
func Decide(in Input) Table {
	var t Table
	for _, s := range in.Services {
		v := reconcile.Virtual{Service: s.Virtual}
		anyUp := false
		for _, r := range s.Reals {
			id := s.ID(r)
			row := Row{Service: s.Virtual.String(), Real: r.Dest.String(), Verdicts: map[string]string{}, Weight: -1}
			own := in.Own[id]
			up, w := vote(in, id, own, row.Verdicts)
			row.BrokenPath = up && own.Verdict == health.Down && in.SelfReady && !in.Local
			d := r.Dest
			switch {
			case up:
				row.Fleet = "up"
				anyUp = true
				if w >= 0 {
					d.Weight = uint16(min(w, 65535))
				}
			case r.OnFailure == Quiescent:
				row.Fleet = "down"
				d.Weight = 0
			default:
				row.Fleet = "down"
				t.Rows = append(t.Rows, row)
				continue
			}
			row.Weight = int(d.Weight)
			v.Dests = append(v.Dests, d)
			t.Rows = append(t.Rows, row)
		}
		if f := s.Fallback; f != nil {
			row := Row{Service: s.Virtual.String(), Real: f.Dest.String(), Fallback: true, Weight: -1, Fleet: "standby"}
			if !anyUp {
				row.Fleet, row.Weight = "serving", int(f.Dest.Weight)
				v.Dests = append(v.Dests, f.Dest)
			}
			t.Rows = append(t.Rows, row)
		}
		t.Want = append(t.Want, v)
	}
	return t
}

// vote gathers the votes on one real server and decides it.
func vote(in Input, id string, own health.Status, seen map[string]string) (bool, int) {
	ownVote := verdict.Vote{Key: verdict.KeyOf(id), Verdict: int8(own.Verdict), Weight: own.Weight}
	if own.Verdict != health.Up {
		ownVote.Weight = -1
	}
	seen[in.Self] = own.Verdict.String()
	// Alone (no ready director at all, e.g. the fleet's first start) or in
	// local mode, this director's own verdict is the fleet's.
	if in.Local || (!in.SelfReady && len(in.Peers) == 0) {
		return verdict.Decide(1, []verdict.Vote{ownVote})
	}
	var votes []verdict.Vote
	n := len(in.Peers)
	if in.SelfReady {
		votes = append(votes, ownVote)
		n++
	}
	if in.Votes != nil && len(in.Peers) > 0 {
		names, pv := in.Votes(ownVote.Key, in.Peers)
		for i, name := range names {
			seen[name] = health.Verdict(pv[i].Verdict).String()
		}
		votes = append(votes, pv...)
	}
	return verdict.Decide(n, votes)
}

// Managed is the set of service keys a Manager may remove: those it has
// declared.
type Managed map[reconcile.Key]bool

// Add records the keys of decl.
func (m Managed) Add(decl []Service) {
	for _, s := range decl {
		m[reconcile.KeyOf(s.Virtual)] = true
	}
}

// Has reports whether k was declared.
func (m Managed) Has(k reconcile.Key) bool { return m[k] }

// Checks returns the health checks of decl for the monitor.
func Checks(decl []Service) []health.Check {
	var out []health.Check
	for _, s := range decl {
		for _, r := range s.Reals {
			out = append(out, health.Check{ID: s.ID(r), Spec: r.Check, Target: s.Target(r)})
		}
	}
	return out
}
