package allocate

import "math/bits"

// mix64 is the splitmix64 finalizer (Stafford's variant 13): a bijection
// with full avalanche, used wherever a value must look uniformly random
// (name and seed hashes).
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Distinct constants keep the hashes derived from one seed unrelated to
// each other.
const (
	golden     = 0x9e3779b97f4a7c15
	memberSalt = 0x6a09e667f3bcc908
	mulSalt    = 0x3c6ef372fe94f82b
	addSalt    = 0xa54ff53a5f1d36f1
)

// nameHash hashes a member name with FNV-1a and binds it to the seed. FNV is
// spelled out rather than taken from hash/fnv so that the allocation cannot
// change underneath the fleet with a library change.
func nameHash(name string, seed uint64) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return mix64(h ^ mix64(seed^memberSalt))
}

// lattice holds the per-allocation constants of the rendezvous keys: member
// m ranks bucket b by its position (mul*b + add) mod size, an affine
// permutation of the buckets modulo a prime. Why a lattice and not a hash
// per pair: see the package documentation.
type lattice struct {
	size uint64 // smallest prime >= buckets; below 2^21 as buckets <= 2^20
	step uint64 // MaxUint64 / (size+1): spreads scores 1..size over (0, 2^64)
}

func newLattice(buckets uint32) lattice {
	size := uint64(max(buckets, 2))
	for !isPrime(size) {
		size++
	}
	return lattice{size: size, step: ^uint64(0) / (size + 1)}
}

// member returns the multiplier (never 0 mod size, so the map is a
// permutation) and offset of the member whose seeded name hash is mh.
func (l lattice) member(mh uint64) (mul, add uint64) {
	return mix64(mh^mulSalt)%(l.size-1) + 1, mix64(mh^addSalt) % l.size
}

// score is size minus the position of bucket b in the permutation (mul,
// add): in [1, size], larger is better.
func (l lattice) score(mul, add uint64, b uint32) uint64 {
	// mul < 2^21 and b < 2^20: no overflow.
	return l.size - (mul*uint64(b)+add)%l.size
}

// hash maps a score to the pair hash that the weighted key takes: uniform
// over (0, 2^64) when the score is uniform over [1, size], and in the same
// order.
func (l lattice) hash(score uint64) uint64 {
	return score * l.step
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

// log2Table[i] is log2(1 + i/1024) in Q32, computed with integer arithmetic
// only: math.Log2 may be implemented differently per architecture, and every
// director must rank members identically.
var log2Table = func() [1025]uint64 {
	var t [1025]uint64
	for i := range t {
		t[i] = log2Frac(uint64(1024+i) << 52)
	}
	return t
}()

// log2Frac returns log2(x / 2^62) in Q32 for x in [2^62, 2^63], by repeated
// squaring (each squaring yields one bit of the logarithm).
func log2Frac(x uint64) uint64 {
	var r uint64
	for i := 31; i >= 0; i-- {
		if x >= 1<<63 {
			// only x == 2^63 exactly (log2 = 1) gets here before squaring
			return 1 << 32
		}
		hi, lo := bits.Mul64(x, x)
		x = hi<<2 | lo>>62 // x*x / 2^62
		if x >= 1<<63 {
			r |= 1 << uint(i)
			x >>= 1
		}
	}
	return r
}

// negLog2 returns -log2(h / 2^64) in Q32 (always >= 1): the exponential
// variate behind weighted rendezvous hashing. The fraction comes from the
// table with linear interpolation, accurate to about 1e-7, far below what
// could change a ranking in any way that matters; it only has to be the same
// everywhere, which integer arithmetic guarantees.
func negLog2(h uint64) uint64 {
	if h == 0 {
		h = 1
	}
	e := uint64(bits.LeadingZeros64(h))
	m := h << e
	idx := (m >> 53) & 1023
	rem := (m >> 22) & (1<<31 - 1)
	lo, hi := log2Table[idx], log2Table[idx+1]
	frac := lo + ((hi-lo)*rem)>>31
	return (e+1)<<32 - frac
}

// weightedKey scales the exponential variate by 1/weight (k is proportional
// to 1/weight, see Allocate), so the smallest key per bucket wins with
// probability proportional to weight.
func weightedKey(h, k uint64) uint64 {
	hi, lo := bits.Mul64(negLog2(h), k)
	// negLog2 < 2^39 and k <= 2^63: the product fits in 102 bits.
	return hi<<26 | lo>>38
}
