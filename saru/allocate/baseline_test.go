package allocate

import (
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
	for i := range entry {
		entry[i] = NoOwner
	}
	if len(active) > 0 {
		offset := make([]uint64, len(active))
		skip := make([]uint64, len(active))
		next := make([]uint64, len(active))
		for k, i := range active {
			h := nameHash(m.Members[i].Name, seed)
			offset[k] = mix64(h^1) % size
			skip[k] = mix64(h^2)%(size-1) + 1
		}
		filled := uint64(0)
	fill:
		for {
			for k, i := range active {
				c := (offset[k] + next[k]*skip[k]) % size
				for entry[c] != NoOwner {
					next[k]++
					c = (offset[k] + next[k]*skip[k]) % size
				}
				entry[c] = i
				next[k]++
				if filled++; filled == size {
					break fill
				}
			}
		}
	}
	copy(m.Owner, entry[:buckets])
	return m
}

func baselineMap(members []Member, buckets uint32, seed uint64) Map {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return Map{Buckets: buckets, Seed: seed, Members: ms, Owner: make([]int32, buckets)}
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}
