// Package allocate divides a flow space of hash buckets among the ready
// directors of a fleet. It is a pure function of its arguments: no I/O, no
// goroutines, no logging, no clock, no randomness, no floating point on the
// path that decides ownership, and no dependence on map iteration order or
// on the order in which members are given. Every director computes the same
// Map from the same (members, weights, bucket count, seed) without a master,
// and without any history: a director that restarts or rejoins computes the
// same map as those that never left.
//
// # Algorithm
//
// Quotas. A member of weight w gets floor(B*w/W) buckets (W is the sum of
// weights); the B - sum(floor) buckets left over go one each to the members
// with the largest remainders B*w mod W (Hamilton's method), ties going to
// the larger seeded name hash. This is exact integer arithmetic, so every
// member ends within one bucket of its fair share B*w/W. Because ties fall
// by name hash whatever the member set, with equal weights the members
// holding an extra bucket for N members are a subset or superset of those
// for N±1, which keeps rounding from moving buckets on joins and leaves.
//
// Preferences. Every (member, bucket) pair gets a weighted rendezvous key.
// Member m's raw key for bucket b is b's position (mul*b + add) mod P in an
// affine permutation of the buckets, where P is the smallest prime >= B and
// mul (never 0 mod P) and add come from m's seeded name hash; Maglev draws
// its preference lists the same way. Spread over (0, 2^64) as h (position 0
// highest), it becomes key = -log2(h/2^64) / weight, computed in fixed point
// (see negLog2). A smaller key is better for the bucket and for the member
// alike; ties are broken by the larger h, then the member's name, then the
// bucket number, giving one strict total order on all pairs. Without quotas,
// giving every bucket its smallest key is weighted rendezvous hashing (HRW):
// a leave moves only the leaver's buckets and a join only the joiner's. With
// independent hashes per pair, counts would scatter binomially around the
// fair share, by about sqrt(B/N). Affine permutations modulo one prime do
// much better: together the members' positions form a rank-1 lattice, an
// even grid, so the number of buckets each member ranks first, and how a
// leaver's buckets fall on the survivors' next choices, are off their
// expected values by far less. That unevenness is exactly what the
// balancing below must move buckets to correct, so the lattice roughly
// halves the movement in excess of the minimum at small N. Two members that
// draw the same multiplier (chance about 1/P per pair) rank buckets as
// shifted copies of each other, which costs movement, never balance.
//
// Balancing. The owner of each bucket is the unique stable matching of
// buckets to member quota slots under those common preferences, computed by
// bucket-proposing Gale-Shapley: every bucket asks members in key order;
// every member keeps its best buckets up to its quota and turns away the
// rest, which ask their next choice. Because both sides rank pairs by the
// same key, the stable matching is unique and equals taking pairs greedily in
// key order, so neither proposal order nor anything else but the inputs can
// change the result. Stable means: if a bucket prefers some member to its
// owner, that member is full of buckets it prefers. So a bucket stays with
// its rendezvous winner unless the winner is full, and a join or leave moves
// a bucket only if it belonged to the changed member or lies on a chain of
// displacements that rebalances the survivors.
//
// # Guarantees
//
//   - Balance: a member of weight w owns floor(B*w/W) or floor(B*w/W)+1
//     buckets. Weight 0 owns nothing and changes nothing. With B < N some
//     members own no bucket.
//   - Determinism: the same Map on every machine and architecture, for any
//     order of members. Weights are relative: scaling all of them by one
//     factor gives the same Map and Fingerprint. A golden test pins the
//     output (also under GOARCH=386).
//   - Movement: on a single leave or join the moved buckets are the minimum
//     (the leaver's buckets, or the joiner's) plus a correction for how
//     unevenly the changed member's buckets fall on the others' next
//     choices. Measured with equal weights over 16 seeds, the average
//     moved/minimum on a leave is exactly 1 for N=2 and, for B=4096, 1.002
//     at N=3, 1.016 at N=5, 1.04 at N=8, 1.13 at N=16 and 1.32 at N=32; for
//     B=65536 it is 1.008 at N=8 and 1.08 at N=32. Joins cost about the
//     same. Plain rendezvous hashing reaches 1 on every change only by
//     giving up balance (tens to hundreds of buckets off); this is the
//     price of exact balance without history. Maglev, whose balance is
//     1-4.3 buckets off instead of under 1, and Maglev brought to Allocate's
//     balance by the fewest moves, move more on average at every N and B
//     measured, except N=2 leaves, where all reach the minimum (at B=1024:
//     1.042 against 1.026 at N=4, 2.30 against 1.65 at N=32). A single change can still move more than Maglev would, when
//     two members' multipliers collide. The table and the command that
//     produces it are in allocate_bench_test.go (TestReportMovement).
//   - Cost: O(B*N) additions (each member's positions step by mul) plus
//     O(R*N) for the R buckets turned away at least once (R is a few percent
//     of B): about 0.6 ms for B=4096, N=64 on one core of a loaded machine
//     (0.9 ms with mixed weights), 5 ms for B=65536, N=32.
package allocate

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Version identifies the allocation algorithm. It is mixed into every
// Fingerprint so that directors running different algorithms never believe
// they agree.
const Version = 2

// Limits keep the owner table and the quota arithmetic (B*w must fit in 64
// bits with w < 2^32) bounded.
const (
	MaxBuckets = 1 << 20
	MaxMembers = 1 << 16
)

// NoOwner marks a bucket in Map.Owner that no member owns; that happens only
// when no member has a positive weight.
const NoOwner = -1

// Errors returned by Allocate, wrapped with details.
var (
	ErrBuckets        = errors.New("allocate: bucket count out of range")
	ErrTooManyMembers = errors.New("allocate: too many members")
	ErrEmptyName      = errors.New("allocate: empty member name")
	ErrDuplicateName  = errors.New("allocate: duplicate member name")
)

// Member is a director that may own buckets. Name must be unique and not
// empty; Weight 0 means the member owns nothing.
type Member struct {
	Name   string
	Weight uint32
}

// Allocate computes the owner of each of buckets buckets. The result depends
// only on the set of members (not their order), their weights, buckets and
// seed. An empty member set, or one where every weight is 0, is valid and
// yields a Map in which no bucket has an owner.
func Allocate(members []Member, buckets uint32, seed uint64) (Map, error) {
	if buckets == 0 || buckets > MaxBuckets {
		return Map{}, fmt.Errorf("%w: %d (want 1..%d)", ErrBuckets, buckets, MaxBuckets)
	}
	if len(members) > MaxMembers {
		return Map{}, fmt.Errorf("%w: %d (max %d)", ErrTooManyMembers, len(members), MaxMembers)
	}
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	for i, m := range ms {
		if m.Name == "" {
			return Map{}, ErrEmptyName
		}
		if i > 0 && ms[i-1].Name == m.Name {
			return Map{}, fmt.Errorf("%w: %q", ErrDuplicateName, m.Name)
		}
	}

	m := Map{
		Buckets: buckets,
		Seed:    seed,
		Members: ms,
		Owner:   make([]int32, buckets),
	}
	weights := normalizedWeights(ms)
	m.Fingerprint = fingerprint(ms, weights, buckets, seed)
	quota := quotas(ms, weights, buckets, seed)
	match(m.Owner, ms, weights, quota, seed)
	return m, nil
}

// normalizedWeights divides all weights by their greatest common divisor so
// that proportional weight vectors give bit-identical keys and fingerprints.
func normalizedWeights(ms []Member) []uint64 {
	var g uint64
	for _, m := range ms {
		g = gcd(g, uint64(m.Weight))
	}
	w := make([]uint64, len(ms))
	if g == 0 {
		return w
	}
	for i, m := range ms {
		w[i] = uint64(m.Weight) / g
	}
	return w
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// fingerprint hashes what decides ownership: algorithm version, bucket
// count, seed and the members with positive weight. Members of weight 0 are
// left out because they cannot change any owner.
func fingerprint(ms []Member, weights []uint64, buckets uint32, seed uint64) uint64 {
	h := mix64(Version ^ golden)
	h = mix64(h ^ uint64(buckets))
	h = mix64(h ^ seed)
	for i, m := range ms {
		if weights[i] == 0 {
			continue
		}
		h = mix64(h ^ nameHash(m.Name, 0))
		h = mix64(h ^ uint64(len(m.Name)))
		h = mix64(h ^ weights[i])
	}
	return h
}

// quotas applies Hamilton's method; see the package documentation.
func quotas(ms []Member, weights []uint64, buckets uint32, seed uint64) []uint32 {
	var total uint64
	for _, w := range weights {
		total += w
	}
	q := make([]uint32, len(ms))
	if total == 0 {
		return q
	}
	type rest struct {
		rem, tie uint64
		i        int
	}
	var rests []rest
	left := uint64(buckets)
	for i, w := range weights {
		share := uint64(buckets) * w
		q[i] = uint32(share / total)
		left -= uint64(q[i])
		if r := share % total; r > 0 {
			rests = append(rests, rest{r, nameHash(ms[i].Name, seed), i})
		}
	}
	// left < number of members with a remainder, because the remainders
	// add up to left*total and each is below total.
	slices.SortFunc(rests, func(a, b rest) int {
		switch {
		case a.rem != b.rem:
			return cmpDesc(a.rem, b.rem)
		case a.tie != b.tie:
			return cmpDesc(a.tie, b.tie)
		}
		return a.i - b.i
	})
	for _, r := range rests[:left] {
		q[r.i]++
	}
	return q
}

func cmpDesc(a, b uint64) int {
	if a > b {
		return -1
	}
	return 1
}
