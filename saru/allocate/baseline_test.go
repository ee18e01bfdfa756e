package allocate

import (
	"cmp"
	"math/bits"
	"slices"
	"strings"
)

// Test-only baselines that the movement report compares Allocate against.
// Both take the same inputs and return a Map, so Moved and the balance
// checks apply to them unchanged.

// rendezvousAllocate is plain weighted rendezvous hashing (HRW): each bucket
// goes to the member with the smallest key, with the same keys as Allocate.
// A leave moves exactly the leaver's buckets and a join exactly the joiner's,
// but counts scatter binomially around the fair share.
func rendezvousAllocate(members []Member, buckets uint32, seed uint64) Map {
	m := baselineMap(members, buckets, seed)
	var maxW uint64
	for _, mem := range m.Members {
		maxW = max(maxW, uint64(mem.Weight))
	}
	mh := make([]uint64, len(m.Members))
	for i, mem := range m.Members {
		mh[i] = nameHash(mem.Name, seed)
	}
	for b, bh := range bucketHashes(buckets, seed) {
		m.Owner[b] = NoOwner
		var bw, bhv uint64
		for i, mem := range m.Members {
			if mem.Weight == 0 {
				continue
			}
			h := pairHash(mh[i], bh)
			w := weightedKey(h, (maxW<<31)/uint64(mem.Weight))
			if m.Owner[b] == NoOwner || pairLess(w, ^h, int32(i), bw, bhv, m.Owner[b]) {
				m.Owner[b], bw, bhv = int32(i), w, ^h
			}
		}
	}
	return m
}

// maglevAllocate is Maglev's lookup-table population (Eisenbud et al., NSDI
// 2016, section 3.4) for members of equal weight: member i has offset
// h1 mod M and skip h2 mod (M-1) + 1 and, in turn, claims the next empty
// entry of its permutation offset + j*skip mod M until the table is full.
// The table size M must be prime, so M is the smallest prime >= buckets and
// bucket b uses entry b; the M - buckets entries past the end are dropped
// (M - buckets is 7, 3 and 1 for 1024, 4096 and 65536). Members take turns in
// name order so the table does not depend on the order they were given in.
// Weights are ignored: the comparison runs on equal weights.
func maglevAllocate(members []Member, buckets uint32, seed uint64) Map {
	m, _ := maglevTable(members, buckets, seed)
	return m
}

// maglevPerm is one member's Maglev permutation: entry offset + j*skip mod
// size is its j-th choice.
type maglevPerm struct {
	offset, skip, size uint64
	invSkip            uint64 // skip^-1 mod size
}

// index returns j such that entry c is the member's j-th choice.
func (p maglevPerm) index(c uint64) uint64 {
	return (c + p.size - p.offset) % p.size * p.invSkip % p.size
}

// maglevTable is maglevAllocate that also returns, for each bucket, the
// step of the fill at which its owner claimed it (0 first), for the
// fix-up of maglevBalancedAllocate.
func maglevTable(members []Member, buckets uint32, seed uint64) (Map, []uint64) {
	m := baselineMap(members, buckets, seed)
	size := uint64(buckets)
	for !isPrime(size) {
		size++
	}
	var active []int32
	for i, mem := range m.Members {
		if mem.Weight > 0 {
			active = append(active, int32(i))
		}
	}
	entry := make([]int32, size)
	step := make([]uint64, size)
	for i := range entry {
		entry[i] = NoOwner
	}
	if len(active) > 0 {
		perm := make([]maglevPerm, len(active))
		next := make([]uint64, len(active))
		for k, i := range active {
			perm[k] = maglevPermOf(m.Members[i].Name, seed, size)
		}
		filled := uint64(0)
	fill:
		for {
			for k, i := range active {
				c := (perm[k].offset + next[k]*perm[k].skip) % size
				for entry[c] != NoOwner {
					next[k]++
					c = (perm[k].offset + next[k]*perm[k].skip) % size
				}
				entry[c] = i
				step[c] = filled
				next[k]++
				if filled++; filled == size {
					break fill
				}
			}
		}
	}
	copy(m.Owner, entry[:buckets])
	return m, step[:buckets]
}

func maglevPermOf(name string, seed, size uint64) maglevPerm {
	h := nameHash(name, seed)
	p := maglevPerm{offset: mix64(h^1) % size, skip: mix64(h^2)%(size-1) + 1, size: size}
	// size is prime (and below 2^21, so products fit): skip^(size-2).
	p.invSkip = 1
	for b, e := p.skip, size-2; e > 0; e >>= 1 {
		if e&1 == 1 {
			p.invSkip = p.invSkip * b % size
		}
		b = b * b % size
	}
	return p
}

// maglevBalancedAllocate is Maglev brought to the same balance as Allocate
// by the fewest moves: every member ends with exactly its Allocate quota
// (quotas, Hamilton's method with the same tie-breaks), and exactly
// sum(count - quota) over the members above quota buckets change owner
// relative to maglevAllocate, the least that reaches those counts.
//
// The fix-up is deterministic and, like Maglev itself, depends only on the
// member set: a member above quota gives up the buckets it claimed last in
// the fill (highest step); the freed buckets then go to members below
// quota greedily by the members' own Maglev preference, taking (member,
// bucket) pairs in order of the bucket's index in the member's permutation
// (ties by member, then bucket) while the member is below quota and the
// bucket is free. Quotas follow the weights, but Maglev's fill does not, so
// the comparison is meant for equal weights.
func maglevBalancedAllocate(members []Member, buckets uint32, seed uint64) Map {
	m, step := maglevTable(members, buckets, seed)
	quota := quotas(m.Members, normalizedWeights(m.Members), buckets, seed)
	owned := make([][]uint32, len(m.Members))
	for b, o := range m.Owner {
		if o != NoOwner {
			owned[o] = append(owned[o], uint32(b))
		}
	}
	var freed []uint32
	var short []int32
	for i, bs := range owned {
		if over := len(bs) - int(quota[i]); over > 0 {
			// Latest claimed first.
			slices.SortFunc(bs, func(a, b uint32) int { return cmp.Compare(step[b], step[a]) })
			freed = append(freed, bs[:over]...)
		} else if over < 0 {
			short = append(short, int32(i))
		}
	}
	if len(freed) == 0 {
		return m
	}
	size := uint64(buckets)
	for !isPrime(size) {
		size++
	}
	type pair struct {
		j      uint64
		member int32
		bucket uint32
	}
	var pairs []pair
	for _, i := range short {
		p := maglevPermOf(m.Members[i].Name, seed, size)
		for _, b := range freed {
			pairs = append(pairs, pair{p.index(uint64(b)), i, b})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if c := cmp.Compare(a.j, b.j); c != 0 {
			return c
		}
		if c := cmp.Compare(a.member, b.member); c != 0 {
			return c
		}
		return cmp.Compare(a.bucket, b.bucket)
	})
	need := make([]int, len(m.Members))
	for _, i := range short {
		need[i] = int(quota[i]) - len(owned[i])
	}
	taken := make(map[uint32]bool, len(freed))
	for _, p := range pairs {
		if need[p.member] > 0 && !taken[p.bucket] {
			taken[p.bucket] = true
			need[p.member]--
			m.Owner[p.bucket] = p.member
		}
	}
	return m
}

func baselineMap(members []Member, buckets uint32, seed uint64) Map {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return Map{Buckets: buckets, Seed: seed, Members: ms, Owner: make([]int32, buckets)}
}

// pairHash is the hashed rendezvous key of a member and a bucket (the
// folded 64x64->128-bit product), for the plain rendezvous baseline, which
// draws its keys independently per pair as rendezvous hashing does.
func pairHash(mh, bh uint64) uint64 {
	hi, lo := bits.Mul64(mh, bh)
	return hi ^ lo
}

const bucketSalt = 0xbb67ae8584caa73b

// bucketHashes returns one independent-looking value per bucket for the seed.
func bucketHashes(buckets uint32, seed uint64) []uint64 {
	s := mix64(seed ^ bucketSalt)
	bh := make([]uint64, buckets)
	for b := range bh {
		bh[b] = mix64(s + uint64(b+1)*golden)
	}
	return bh
}
