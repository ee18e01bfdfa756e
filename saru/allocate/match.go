package allocate

import "slices"

// Pairs (member, bucket) are ordered by w (weighted key, smaller is better),
// then hv (the inverted pair hash from lattice.hash, so a larger hash is
// better), then member index on a bucket's side or bucket number on a
// member's side. With a single weight class w is always 0: the weighted key
// is a non-increasing function of the hash, so hv alone gives the same order
// and the logarithm is never needed. Across classes, breaking ties of w by
// hv keeps the order within each class exactly the hash order, which is what
// lets the first pass look at class maxima only.

// refused is a bucket waiting to propose again after active member p turned
// it away or gave it up; its key with p is still in curW/curHV.
type refused struct {
	b uint32
	p int32
}

// cand is a member a refused bucket may propose to next: active member p,
// member index i, and the pair key.
type cand struct {
	w, hv uint64
	p, i  int32
}

// lookahead is how many next choices a refused bucket remembers, so that a
// bucket turned away many times does not rehash every member each time.
const lookahead = 8

type matcher struct {
	idx      []int32  // member index (into the sorted members) per active member
	mul, add []uint64 // lattice permutation per active member
	k        []uint64 // weightedKey multiplier per active member
	class    []int    // active members grouped by weight: class c is [class[c], class[c+1])
	weighted bool     // more than one class
	lat      lattice
	buckets  uint32

	// Per bucket, the key of its current proposal: with the member holding
	// it, or with the member that just refused it. A bucket is in one place
	// at a time, so the heaps need not carry keys. curW is nil when
	// unweighted (w is then always 0).
	curW, curHV []uint64

	// Member p holds a max-heap of buckets (worst at the root) in
	// held[off[p]:off[p]+n[p]], with room for its quota off[p+1]-off[p].
	held []uint32
	off  []int
	n    []int

	queue  []refused
	ahead  []int32 // per bucket: 1 + its group of lookahead entries in pool, or 0
	groups int
	pool   [][]cand // groupsPerChunk groups per chunk, so growing never copies
}

const groupsPerChunk = 64

func (mt *matcher) group(g int) []cand {
	c := mt.pool[(g-1)/groupsPerChunk]
	o := (g - 1) % groupsPerChunk * lookahead
	return c[o : o+lookahead]
}

// match fills owner with the unique stable matching; see the package doc.
func match(owner []int32, ms []Member, weights []uint64, quota []uint32, seed uint64) {
	mt := newMatcher(ms, weights, quota, uint32(len(owner)), seed)
	if mt == nil {
		for b := range owner {
			owner[b] = NoOwner
		}
		return
	}
	// owner doubles as the first choices until the final pass overwrites it.
	mt.firstChoices(owner)
	for b := range owner {
		mt.propose(int(owner[b]), uint32(b))
		for len(mt.queue) > 0 {
			r := mt.queue[len(mt.queue)-1]
			mt.queue = mt.queue[:len(mt.queue)-1]
			c := mt.next(r)
			if mt.curW != nil {
				mt.curW[r.b] = c.w
			}
			mt.curHV[r.b] = c.hv
			mt.propose(int(c.p), r.b)
		}
	}
	for p := range mt.idx {
		for _, b := range mt.held[mt.off[p]:mt.off[p+1]] {
			owner[b] = mt.idx[p]
		}
	}
}

// newMatcher prepares the members with a positive quota, or returns nil if
// there are none.
func newMatcher(ms []Member, weights []uint64, quota []uint32, buckets uint32, seed uint64) *matcher {
	mt := &matcher{}
	var maxW uint64
	for i := range ms {
		if quota[i] > 0 {
			mt.idx = append(mt.idx, int32(i))
			maxW = max(maxW, weights[i])
		}
	}
	if len(mt.idx) == 0 {
		return nil
	}
	slices.SortFunc(mt.idx, func(a, b int32) int {
		if wa, wb := weights[a], weights[b]; wa != wb {
			return cmpDesc(wa, wb)
		}
		return int(a - b)
	})
	active := len(mt.idx)
	mt.lat = newLattice(buckets)
	mt.buckets = buckets
	mt.mul = make([]uint64, active)
	mt.add = make([]uint64, active)
	mt.k = make([]uint64, active)
	mt.off = make([]int, active+1)
	mt.n = make([]int, active)
	for p, i := range mt.idx {
		mt.mul[p], mt.add[p] = mt.lat.member(nameHash(ms[i].Name, seed))
		// maxW < 2^32, so maxW<<31 < 2^63, and k lies in [2^31, 2^63]:
		// proportional to 1/weight with at least 31 significant bits.
		mt.k[p] = (maxW << 31) / weights[i]
		if p == 0 || weights[i] != weights[mt.idx[p-1]] {
			mt.class = append(mt.class, p)
		}
		mt.off[p+1] = mt.off[p] + int(quota[i])
	}
	mt.class = append(mt.class, active)
	mt.weighted = len(mt.class) > 2
	mt.held = make([]uint32, buckets)
	return mt
}

// pairKey returns the key of active member p for bucket b.
func (mt *matcher) pairKey(p int, b uint32) (w, hv uint64) {
	h := mt.lat.hash(mt.lat.score(mt.mul[p], mt.add[p], b))
	if mt.weighted {
		w = weightedKey(h, mt.k[p])
	}
	return w, ^h
}

// firstChoices sets arg[b] to the best active member for bucket b and the
// bucket's key with it. Within a weight class the largest hash wins, so only
// class winners need a weighted key.
func (mt *matcher) firstChoices(arg []int32) {
	buckets := int(mt.buckets)
	h := make([]uint64, buckets) // becomes curHV once inverted
	var carg []int32
	var ch []uint64
	if mt.weighted {
		mt.curW = make([]uint64, buckets)
		carg, ch = make([]int32, buckets), make([]uint64, buckets)
	}
	for c := 0; c+1 < len(mt.class); c++ {
		lo, hi := mt.class[c], mt.class[c+1]
		if c == 0 {
			mt.classMax(lo, hi, arg, h)
			if mt.weighted {
				for b := range h {
					mt.curW[b] = weightedKey(h[b], mt.k[lo])
				}
			}
			continue
		}
		mt.classMax(lo, hi, carg, ch)
		for b := range ch {
			cw := weightedKey(ch[b], mt.k[lo])
			if pairLess(cw, ^ch[b], mt.idx[carg[b]], mt.curW[b], ^h[b], mt.idx[arg[b]]) {
				arg[b], mt.curW[b], h[b] = carg[b], cw, ch[b]
			}
		}
	}
	for b := range h {
		h[b] = ^h[b]
	}
	mt.curHV = h
}

// classMax sets carg[b], ch[b] to the member among active members [lo, hi)
// with the largest pair hash for bucket b, the lower number winning a tie.
// It runs member by member over all buckets, which has no dependency between
// iterations, and steps each member's lattice position by its multiplier
// instead of dividing; ch holds positions (smaller is better) until the end.
func (mt *matcher) classMax(lo, hi int, carg []int32, ch []uint64) {
	size := mt.lat.size
	carg, ch = carg[:mt.buckets], ch[:mt.buckets]
	pos := mt.add[lo]
	for b := range ch {
		carg[b], ch[b] = int32(lo), pos
		if pos += mt.mul[lo]; pos >= size {
			pos -= size
		}
	}
	p := lo + 1
	// Two members per sweep halve the loads and stores of the running minima.
	for ; p+1 < hi; p += 2 {
		s0, s1 := mt.mul[p], mt.mul[p+1]
		x0, x1 := mt.add[p], mt.add[p+1]
		q0, q1 := int32(p), int32(p+1)
		for b, best := range ch {
			v, q := x0, q0
			if x1 < v {
				v, q = x1, q1
			}
			if v < best {
				ch[b], carg[b] = v, q
			}
			if x0 += s0; x0 >= size {
				x0 -= size
			}
			if x1 += s1; x1 >= size {
				x1 -= size
			}
		}
	}
	for ; p < hi; p++ {
		step, pos, q := mt.mul[p], mt.add[p], int32(p)
		for b, best := range ch {
			if pos < best {
				ch[b], carg[b] = pos, q
			}
			if pos += step; pos >= size {
				pos -= size
			}
		}
	}
	for b, pos := range ch {
		ch[b] = mt.lat.hash(size - pos)
	}
}

// next returns the best active member for r.b that ranks after r.p. A bucket
// is never refused by every member, because the quotas add up to the bucket
// count.
func (mt *matcher) next(r refused) cand {
	last := cand{hv: mt.curHV[r.b], p: r.p, i: mt.idx[r.p]}
	if mt.curW != nil {
		last.w = mt.curW[r.b]
	}
	if mt.ahead == nil {
		mt.ahead = make([]int32, mt.buckets)
	}
	g := int(mt.ahead[r.b])
	if g > 0 {
		for _, c := range mt.group(g) {
			if c.p >= 0 && candLess(last, c) {
				return c
			}
		}
	} else {
		if mt.groups%groupsPerChunk == 0 {
			mt.pool = append(mt.pool, make([]cand, groupsPerChunk*lookahead))
		}
		mt.groups++
		g = mt.groups
		mt.ahead[r.b] = int32(g)
	}
	// Refill with the best members after last, in order.
	group := mt.group(g)
	n := 0
	for p := range mt.mul {
		h := mt.lat.hash(mt.lat.score(mt.mul[p], mt.add[p], r.b))
		c := cand{hv: ^h, p: int32(p), i: mt.idx[p]}
		if mt.weighted {
			c.w = weightedKey(h, mt.k[p])
		}
		if !candLess(last, c) || (n == lookahead && !candLess(c, group[n-1])) {
			continue
		}
		if n < lookahead {
			n++
		}
		i := n - 1
		for ; i > 0 && candLess(c, group[i-1]); i-- {
			group[i] = group[i-1]
		}
		group[i] = c
	}
	for i := n; i < lookahead; i++ {
		group[i].p = -1
	}
	return group[0]
}

func candLess(a, b cand) bool {
	return pairLess(a.w, a.hv, a.i, b.w, b.hv, b.i)
}

func pairLess(aw, ahv uint64, ai int32, bw, bhv uint64, bi int32) bool {
	if aw != bw {
		return aw < bw
	}
	if ahv != bhv {
		return ahv < bhv
	}
	return ai < bi
}

// worse reports whether, for the member holding or considering both,
// bucket a is worse than bucket b.
func (mt *matcher) worse(a, b uint32) bool {
	if mt.curW != nil {
		if wa, wb := mt.curW[a], mt.curW[b]; wa != wb {
			return wa > wb
		}
	}
	if ha, hb := mt.curHV[a], mt.curHV[b]; ha != hb {
		return ha > hb
	}
	return a > b
}

// propose offers bucket b (its key already in curW/curHV) to active member
// p, which keeps it if it has room or likes it better than its worst held
// bucket; whatever is turned away or given up is queued to propose again.
func (mt *matcher) propose(p int, b uint32) {
	h := mt.held[mt.off[p]:mt.off[p+1]]
	if n := mt.n[p]; n < len(h) {
		h[n] = b
		mt.siftUp(h, n)
		mt.n[p]++
		return
	}
	if mt.worse(h[0], b) {
		b, h[0] = h[0], b
		mt.siftDown(h, 0)
	}
	mt.queue = append(mt.queue, refused{b, int32(p)})
}

func (mt *matcher) siftUp(h []uint32, i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !mt.worse(h[i], h[parent]) {
			return
		}
		h[parent], h[i] = h[i], h[parent]
		i = parent
	}
}

// siftDown restores the heap below i; h must be full (len = quota).
func (mt *matcher) siftDown(h []uint32, i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && mt.worse(h[c+1], h[c]) {
			c++
		}
		if !mt.worse(h[c], h[i]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}
