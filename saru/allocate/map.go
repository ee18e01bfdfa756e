package allocate

import (
	"slices"
	"strings"
)

// Map is the owner of every bucket. Treat it as immutable: it is shared by
// value and its slices are not copied.
type Map struct {
	// Buckets is the size of the flow space.
	Buckets uint32
	// Seed is the fleet-wide seed the map was computed with.
	Seed uint64
	// Members are the members given to Allocate, sorted by name, including
	// those of weight 0.
	Members []Member
	// Owner[b] is the index in Members of the owner of bucket b, or NoOwner.
	Owner []int32
	// Fingerprint identifies the inputs that decide ownership (algorithm
	// Version, Buckets, Seed, and the names and relative weights of members
	// with positive weight). Directors whose fingerprints are equal hold the
	// same map; members of weight 0 do not change it.
	Fingerprint uint64
}

// Range is a run of consecutive buckets First..Last (inclusive) with one
// owner; Owner is "" where no member owns the buckets.
type Range struct {
	First, Last uint32
	Owner       string
}

func (m Map) index(name string) int {
	i, ok := slices.BinarySearchFunc(m.Members, name, func(a Member, n string) int {
		return strings.Compare(a.Name, n)
	})
	if !ok {
		return -1
	}
	return i
}

// OwnerOf returns the name of the owner of bucket, or "" if the bucket is
// out of range or has no owner.
func (m Map) OwnerOf(bucket uint32) string {
	if bucket >= uint32(len(m.Owner)) || m.Owner[bucket] == NoOwner {
		return ""
	}
	return m.Members[m.Owner[bucket]].Name
}

// BucketsOf returns the buckets owned by name in increasing order (nil for a
// member that owns none or is unknown).
func (m Map) BucketsOf(name string) []uint32 {
	i := m.index(name)
	if i < 0 {
		return nil
	}
	var bs []uint32
	for b, o := range m.Owner {
		if o == int32(i) {
			bs = append(bs, uint32(b))
		}
	}
	return bs
}

// Counts returns the number of buckets of every member, 0 included.
func (m Map) Counts() map[string]int {
	n := make([]int, len(m.Members))
	for _, o := range m.Owner {
		if o != NoOwner {
			n[o]++
		}
	}
	c := make(map[string]int, len(m.Members))
	for i, mem := range m.Members {
		c[mem.Name] = n[i]
	}
	return c
}

// Ranges returns the map as runs of consecutive buckets with the same owner,
// in bucket order; together they cover every bucket exactly once.
func (m Map) Ranges() []Range {
	var rs []Range
	for b, o := range m.Owner {
		if b > 0 && o == m.Owner[b-1] {
			rs[len(rs)-1].Last = uint32(b)
			continue
		}
		rs = append(rs, Range{First: uint32(b), Last: uint32(b), Owner: m.OwnerOf(uint32(b))})
	}
	return rs
}

// FairShare returns B*w/W for name, the exact (fractional) number of buckets
// its weight entitles it to; its count is the floor or the ceiling of this.
// It is for display only: ownership never depends on floating point.
func (m Map) FairShare(name string) float64 {
	i := m.index(name)
	if i < 0 {
		return 0
	}
	var total uint64
	for _, mem := range m.Members {
		total += uint64(mem.Weight)
	}
	if total == 0 {
		return 0
	}
	return float64(m.Buckets) * float64(m.Members[i].Weight) / float64(total)
}

// Moved returns the number of buckets whose owner (by name) differs between
// from and to. Maps over different bucket counts describe different flow
// spaces, so then every bucket counts as moved.
func Moved(from, to Map) int {
	if from.Buckets != to.Buckets || len(from.Owner) != len(to.Owner) {
		return int(max(from.Buckets, to.Buckets))
	}
	// Translate member indices once instead of comparing names per bucket.
	trans := make([]int32, len(from.Members))
	for i, mem := range from.Members {
		trans[i] = int32(to.index(mem.Name))
		if trans[i] < 0 {
			trans[i] = -2 // matches no owner in to, not even NoOwner
		}
	}
	n := 0
	for b, o := range from.Owner {
		t := int32(NoOwner)
		if o != NoOwner {
			t = trans[o]
		}
		if t != to.Owner[b] {
			n++
		}
	}
	return n
}
