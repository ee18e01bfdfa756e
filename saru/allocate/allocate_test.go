package allocate

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
)

func mustAllocate(t testing.TB, ms []Member, buckets uint32, seed uint64) Map {
	t.Helper()
	m, err := Allocate(ms, buckets, seed)
	if err != nil {
		t.Fatalf("Allocate(%d members, %d, %#x): %v", len(ms), buckets, seed, err)
	}
	return m
}

// checkBalance fails unless every member owns floor(B*w/W) or, when B*w/W
// is not an integer, floor+1 buckets, and every bucket has an owner (or
// none has, when W = 0).
func checkBalance(t testing.TB, m Map) {
	t.Helper()
	var total uint64
	for _, mem := range m.Members {
		total += uint64(mem.Weight)
	}
	counts := m.Counts()
	sum := 0
	for _, mem := range m.Members {
		n := counts[mem.Name]
		sum += n
		if total == 0 {
			if n != 0 {
				t.Fatalf("%s owns %d buckets with total weight 0", mem.Name, n)
			}
			continue
		}
		share := uint64(m.Buckets) * uint64(mem.Weight)
		lo, hi := share/total, share/total
		if share%total != 0 {
			hi++
		}
		if uint64(n) < lo || uint64(n) > hi {
			t.Fatalf("%s (weight %d) owns %d buckets, fair share %d*%d/%d is not within 1",
				mem.Name, mem.Weight, n, m.Buckets, mem.Weight, total)
		}
	}
	if total > 0 && sum != int(m.Buckets) {
		t.Fatalf("owned buckets add up to %d, want %d", sum, m.Buckets)
	}
	for b, o := range m.Owner {
		if (total == 0) != (o == NoOwner) {
			t.Fatalf("bucket %d owner %d with total weight %d", b, o, total)
		}
	}
}

// checkStable fails if some bucket and some member would both rather be
// matched to each other: the defining property of the allocation.
func checkStable(t testing.TB, m Map) {
	t.Helper()
	weights := normalizedWeights(m.Members)
	quota := quotas(m.Members, weights, m.Buckets, m.Seed)
	mt := newMatcher(m.Members, weights, quota, m.Buckets, m.Seed)
	if mt == nil {
		return
	}
	active := make(map[int32]int) // member index -> active position
	for p, i := range mt.idx {
		active[i] = p
	}
	type slot struct {
		w, hv uint64
		b     uint32
	}
	slotLess := func(a, b slot) bool {
		return pairLess(a.w, a.hv, int32(a.b), b.w, b.hv, int32(b.b))
	}
	// worst[p] is the worst pair member p holds.
	worst := make([]slot, len(mt.idx))
	held := make([]int, len(mt.idx))
	for b, o := range m.Owner {
		p, ok := active[o]
		if !ok {
			t.Fatalf("bucket %d owned by member %d with quota 0", b, o)
		}
		w, hv := mt.pairKey(p, uint32(b))
		s := slot{w, hv, uint32(b)}
		if held[p] == 0 || slotLess(worst[p], s) {
			worst[p] = s
		}
		held[p]++
	}
	for b, o := range m.Owner {
		po := active[o]
		ow, ohv := mt.pairKey(po, uint32(b))
		for p := range mt.idx {
			w, hv := mt.pairKey(p, uint32(b))
			if p == po || !pairLess(w, hv, mt.idx[p], ow, ohv, o) {
				continue
			}
			// Bucket b prefers p to its owner: p must be full of buckets it
			// prefers to b.
			full := held[p] == mt.off[p+1]-mt.off[p]
			if !full || slotLess(slot{w, hv, uint32(b)}, worst[p]) {
				t.Fatalf("blocking pair: bucket %d prefers %s to owner %s, and %s (full %v) prefers it to one it holds",
					b, m.Members[mt.idx[p]].Name, m.Members[o].Name, m.Members[mt.idx[p]].Name, full)
			}
		}
	}
}

// greedyOwners computes the matching the slow way the package doc says is
// equivalent: take all pairs in key order and give the bucket to the member
// while both are free.
func greedyOwners(m Map) []int32 {
	weights := normalizedWeights(m.Members)
	quota := quotas(m.Members, weights, m.Buckets, m.Seed)
	owner := make([]int32, m.Buckets)
	mt := newMatcher(m.Members, weights, quota, m.Buckets, m.Seed)
	if mt == nil {
		for b := range owner {
			owner[b] = NoOwner
		}
		return owner
	}
	type pair struct {
		w, hv uint64
		i     int32
		b     uint32
		p     int
	}
	var pairs []pair
	for p, i := range mt.idx {
		for b := range m.Buckets {
			w, hv := mt.pairKey(p, b)
			pairs = append(pairs, pair{w, hv, i, b, p})
		}
	}
	slices.SortFunc(pairs, func(x, y pair) int {
		switch {
		case pairLess(x.w, x.hv, x.i, y.w, y.hv, y.i):
			return -1
		case pairLess(y.w, y.hv, y.i, x.w, x.hv, x.i):
			return 1
		}
		return int(x.b) - int(y.b)
	})
	taken := make([]bool, m.Buckets)
	count := make([]int, len(mt.idx))
	for _, pr := range pairs {
		if taken[pr.b] || count[pr.p] == mt.off[pr.p+1]-mt.off[pr.p] {
			continue
		}
		taken[pr.b] = true
		count[pr.p]++
		owner[pr.b] = pr.i
	}
	return owner
}

// TestCheckStableDetects makes sure the stability check can fail: the stable
// matching is unique, so any other assignment with the same counts, such as
// one with two owners swapped, has a blocking pair.
func TestCheckStableDetects(t *testing.T) {
	m := mustAllocate(t, testMembers(4, true), 200, 1)
	m.Owner = slices.Clone(m.Owner)
	b := slices.IndexFunc(m.Owner, func(o int32) bool { return o != m.Owner[0] })
	m.Owner[0], m.Owner[b] = m.Owner[b], m.Owner[0]
	ft := &fakeT{}
	func() {
		defer func() { _ = recover() }()
		checkStable(ft, m)
	}()
	if !ft.failed {
		t.Fatal("checkStable accepted a map with two owners swapped")
	}
}

// fakeT records a failure instead of failing the test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(string, ...any) {
	f.failed = true
	panic("stop")
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name    string
		members []Member
		buckets uint32
		want    error
	}{
		{"zero buckets", []Member{{"a", 1}}, 0, ErrBuckets},
		{"too many buckets", []Member{{"a", 1}}, MaxBuckets + 1, ErrBuckets},
		{"empty name", []Member{{"a", 1}, {"", 1}}, 16, ErrEmptyName},
		{"duplicate", []Member{{"a", 1}, {"b", 1}, {"a", 2}}, 16, ErrDuplicateName},
		{"duplicate of weight 0", []Member{{"a", 0}, {"a", 0}}, 16, ErrDuplicateName},
		{"too many members", make([]Member, MaxMembers+1), 16, ErrTooManyMembers},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Allocate(tc.members, tc.buckets, 1)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCases(t *testing.T) {
	tests := []struct {
		name    string
		members []Member
		buckets uint32
		want    map[string]int // exact counts where they are forced
	}{
		{"no members", nil, 64, map[string]int{}},
		{"all weight 0", []Member{{"a", 0}, {"b", 0}}, 64, map[string]int{"a": 0, "b": 0}},
		{"one member owns all", []Member{{"a", 7}}, 1000, map[string]int{"a": 1000}},
		{"weight 0 owns nothing", []Member{{"a", 1}, {"z", 0}, {"b", 1}}, 64, map[string]int{"a": 32, "b": 32, "z": 0}},
		{"B not divisible by N", testMembers(3, false), 1024, nil},
		{"B = N", testMembers(16, false), 16, nil},
		{"B < N", testMembers(40, false), 16, nil},
		{"one bucket", testMembers(5, false), 1, nil},
		{"weights 1:2:3", []Member{{"a", 1}, {"b", 2}, {"c", 3}}, 600, map[string]int{"a": 100, "b": 200, "c": 300}},
		{"weighted B not divisible", testMembers(10, true), 1000, nil},
		{"extreme weights", []Member{{"big", math.MaxUint32}, {"small", 1}, {"mid", 1 << 16}}, 65536, nil},
		{"largest weights", []Member{{"a", math.MaxUint32}, {"b", math.MaxUint32 - 1}}, 4096, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mustAllocate(t, tc.members, tc.buckets, 42)
			checkBalance(t, m)
			checkStable(t, m)
			counts := m.Counts()
			for name, want := range tc.want {
				if counts[name] != want {
					t.Errorf("%s owns %d, want %d", name, counts[name], want)
				}
			}
			if tc.buckets < uint32(len(tc.members)) {
				zero := 0
				for _, n := range counts {
					if n == 0 {
						zero++
					}
				}
				if zero != len(tc.members)-int(tc.buckets) {
					t.Errorf("%d members own nothing, want %d", zero, len(tc.members)-int(tc.buckets))
				}
			}
		})
	}
}

func TestNoOwner(t *testing.T) {
	m := mustAllocate(t, []Member{{"a", 0}}, 8, 1)
	for b := range uint32(8) {
		if got := m.OwnerOf(b); got != "" {
			t.Fatalf("OwnerOf(%d) = %q with no weight", b, got)
		}
	}
	if rs := m.Ranges(); len(rs) != 1 || rs[0] != (Range{0, 7, ""}) {
		t.Fatalf("Ranges() = %v", rs)
	}
	if got := m.BucketsOf("a"); got != nil {
		t.Fatalf("BucketsOf(a) = %v", got)
	}
}

// TestProperties checks, on random inputs from a fixed seed: balance,
// stability, determinism, independence from member order, and that scaling
// all weights changes nothing.
func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	iterations := 300
	if testing.Short() {
		iterations = 50
	}
	for it := range iterations {
		n := 1 + rng.IntN(40)
		buckets := uint32(1 + rng.IntN(3000))
		weighted := rng.IntN(2) == 0
		var ms []Member
		for i := range n {
			w := uint32(1)
			if weighted {
				w = uint32(rng.IntN(5)) // includes weight 0
			}
			ms = append(ms, Member{Name: fmt.Sprintf("n%d-%x", i, rng.Uint32()), Weight: w})
		}
		seed := rng.Uint64()
		m := mustAllocate(t, ms, buckets, seed)
		checkBalance(t, m)
		if buckets <= 1000 {
			checkStable(t, m)
			if want := greedyOwners(m); !slices.Equal(m.Owner, want) {
				t.Fatalf("iteration %d: Gale-Shapley and greedy matching differ", it)
			}
		}

		shuffled := slices.Clone(ms)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		m2 := mustAllocate(t, shuffled, buckets, seed)
		if !slices.Equal(m.Owner, m2.Owner) || m.Fingerprint != m2.Fingerprint {
			t.Fatalf("iteration %d: shuffled members give a different map", it)
		}

		scaled := slices.Clone(ms)
		for i := range scaled {
			scaled[i].Weight *= 3
		}
		m3 := mustAllocate(t, scaled, buckets, seed)
		if !slices.Equal(m.Owner, m3.Owner) || m.Fingerprint != m3.Fingerprint {
			t.Fatalf("iteration %d: scaling weights changes the map", it)
		}
	}
}

// TestStableWeighted exercises the weighted path (several weight classes)
// on a size big enough for many refusals.
func TestStableWeighted(t *testing.T) {
	m := mustAllocate(t, testMembers(24, true), 2048, 7)
	checkBalance(t, m)
	checkStable(t, m)
}

func TestFingerprint(t *testing.T) {
	base := []Member{{"a", 1}, {"b", 2}, {"c", 3}}
	fp := mustAllocate(t, base, 1024, 9).Fingerprint
	same := map[string][]Member{
		"reordered":          {{"c", 3}, {"a", 1}, {"b", 2}},
		"scaled":             {{"a", 5}, {"b", 10}, {"c", 15}},
		"plus weight 0 only": {{"a", 1}, {"b", 2}, {"c", 3}, {"idle", 0}},
	}
	for name, ms := range same {
		m := mustAllocate(t, ms, 1024, 9)
		if m.Fingerprint != fp {
			t.Errorf("%s: fingerprint changed", name)
		}
		if moved := Moved(mustAllocate(t, base, 1024, 9), m); moved != 0 {
			t.Errorf("%s: %d buckets moved", name, moved)
		}
	}
	differ := []struct {
		name    string
		ms      []Member
		buckets uint32
		seed    uint64
	}{
		{"seed", base, 1024, 10},
		{"buckets", base, 1025, 9},
		{"weight", []Member{{"a", 1}, {"b", 2}, {"c", 4}}, 1024, 9},
		{"name", []Member{{"a", 1}, {"b", 2}, {"d", 3}}, 1024, 9},
		{"leave", base[:2], 1024, 9},
	}
	for _, d := range differ {
		if mustAllocate(t, d.ms, d.buckets, d.seed).Fingerprint == fp {
			t.Errorf("%s: fingerprint unchanged", d.name)
		}
	}
}

// TestGolden pins the exact output, so any change to hashing, tie-breaking
// or the matching (which would split a fleet running mixed versions) fails
// here and must come with a new Version. It runs on every architecture CI
// has, which is how "the same map everywhere" is checked.
func TestGolden(t *testing.T) {
	tests := []struct {
		ms          []Member
		buckets     uint32
		fingerprint uint64
		owners      uint64
	}{
		{testMembers(5, false), 4096, 0x116ebfc32fe528a7, 0xf761abe725e52c59},
		{testMembers(7, true), 1000, 0xdac5dca1ef2be4f2, 0xa5691ff5d20401c0},
	}
	for i, tc := range tests {
		m := mustAllocate(t, tc.ms, tc.buckets, 0x5eed)
		h := uint64(0)
		for _, o := range m.Owner {
			h = mix64(h ^ uint64(o))
		}
		if m.Fingerprint != tc.fingerprint || h != tc.owners {
			t.Errorf("case %d: fingerprint %#x owners %#x, want %#x %#x", i, m.Fingerprint, h, tc.fingerprint, tc.owners)
		}
	}
}

func TestNegLog2(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100000 {
		h := rng.Uint64() >> rng.IntN(64)
		if h == 0 {
			continue
		}
		got := float64(negLog2(h)) / (1 << 32)
		// math/big keeps the reference exact where h does not fit a float64.
		f, _ := new(big.Float).SetUint64(h).Float64()
		want := 64 - math.Log2(f)
		if math.Abs(got-want) > 1e-6 {
			t.Fatalf("negLog2(%#x) = %.9f, want %.9f", h, got, want)
		}
	}
	if negLog2(math.MaxUint64) < 1 {
		t.Fatal("negLog2 must stay positive")
	}
	if got, want := log2Table[512], uint64(math.Round(math.Log2(1.5)*(1<<32))); got < want-2 || got > want+2 {
		t.Fatalf("log2Table[512] = %d, want about %d", got, want)
	}
}

// TestWeightedRanking checks that the weighted keys, without quotas, give
// each member buckets in proportion to its weight: the balancing pass then
// only has to correct unevenness, not bias.
func TestWeightedRanking(t *testing.T) {
	ms := []Member{{"a", 1}, {"b", 2}, {"c", 5}}
	const buckets = 1 << 16
	weights := normalizedWeights(ms)
	mt := newMatcher(ms, weights, quotas(ms, weights, buckets, 5), buckets, 5)
	first := make([]int, len(ms))
	for b := range uint32(buckets) {
		best, bw, bhv := 0, uint64(0), uint64(0)
		for p := range mt.idx {
			w, hv := mt.pairKey(p, b)
			if p == 0 || pairLess(w, hv, mt.idx[p], bw, bhv, mt.idx[best]) {
				best, bw, bhv = p, w, hv
			}
		}
		first[mt.idx[best]]++
	}
	for i, m := range ms {
		share := float64(buckets) * float64(m.Weight) / 8
		if d := math.Abs(float64(first[i]) - share); d > 4*math.Sqrt(share) {
			t.Errorf("%s ranks %d buckets first, fair share %.0f", m.Name, first[i], share)
		}
		t.Logf("%s (weight %d): first for %d buckets, fair share %.0f", m.Name, m.Weight, first[i], share)
	}
}

func TestMapMethods(t *testing.T) {
	ms := []Member{{"b", 1}, {"a", 2}, {"idle", 0}, {"c", 1}}
	m := mustAllocate(t, ms, 97, 3)
	counts := m.Counts()
	if len(counts) != 4 || counts["idle"] != 0 {
		t.Fatalf("Counts() = %v", counts)
	}
	var share float64
	for _, mem := range ms {
		share += m.FairShare(mem.Name)
		bs := m.BucketsOf(mem.Name)
		if len(bs) != counts[mem.Name] || !slices.IsSorted(bs) {
			t.Fatalf("BucketsOf(%s) = %v, count %d", mem.Name, bs, counts[mem.Name])
		}
		for _, b := range bs {
			if m.OwnerOf(b) != mem.Name {
				t.Fatalf("OwnerOf(%d) = %s, want %s", b, m.OwnerOf(b), mem.Name)
			}
		}
	}
	if math.Abs(share-97) > 1e-9 {
		t.Fatalf("fair shares add up to %v", share)
	}
	if m.FairShare("nobody") != 0 || m.BucketsOf("nobody") != nil || m.OwnerOf(97) != "" {
		t.Fatal("unknown member or bucket must give zero values")
	}
	next := uint32(0)
	for i, r := range m.Ranges() {
		if r.First != next || r.Last < r.First {
			t.Fatalf("range %d = %+v, want it to start at %d", i, r, next)
		}
		for b := r.First; b <= r.Last; b++ {
			if m.OwnerOf(b) != r.Owner {
				t.Fatalf("range %+v contains bucket %d of %s", r, b, m.OwnerOf(b))
			}
		}
		if i > 0 && m.Ranges()[i-1].Owner == r.Owner {
			t.Fatalf("ranges %d and %d have the same owner and touch", i-1, i)
		}
		next = r.Last + 1
	}
	if next != 97 {
		t.Fatalf("ranges end at %d", next)
	}

	if Moved(m, m) != 0 {
		t.Fatal("Moved(m, m) != 0")
	}
	other := mustAllocate(t, ms[:2], 97, 3)
	if Moved(m, other) != Moved(other, m) {
		t.Fatal("Moved is not symmetric")
	}
	if got := Moved(m, mustAllocate(t, ms, 98, 3)); got != 98 {
		t.Fatalf("Moved across bucket counts = %d, want 98", got)
	}
	empty := mustAllocate(t, nil, 97, 3)
	if got := Moved(m, empty); got != 97 {
		t.Fatalf("Moved to an empty map = %d, want 97", got)
	}
}

// TestMovement checks the movement the package documentation promises on
// single leaves and joins, with margins over the measured values (see
// TestReportMovement for the full table).
func TestMovement(t *testing.T) {
	tests := []struct {
		buckets       uint32
		n             int
		leave, join   float64 // bounds on the average moved/minimum
		leaveMaxBound float64
	}{
		{1024, 2, 1.0, 1.06, 1.0},
		{4096, 4, 1.03, 1.05, 1.05},
		{4096, 8, 1.08, 1.10, 1.12},
		{4096, 16, 1.20, 1.22, 1.30},
		{4096, 32, 1.40, 1.40, 1.50},
		{65536, 8, 1.02, 1.03, 1.03},
	}
	if testing.Short() {
		tests = tests[:3]
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("B=%d/N=%d", tc.buckets, tc.n), func(t *testing.T) {
			var mv movement
			measure(&mv, algorithms[0].alloc, testMembers(tc.n, false), joinerNames(4), tc.buckets, 0x5eed)
			mv.finish()
			t.Logf("leave avg %.3f max %.3f, join avg %.3f max %.3f", mv.leaveAvg, mv.leaveMax, mv.joinAvg, mv.joinMax)
			if mv.leaveAvg < 1 || mv.joinAvg < 1 {
				t.Fatal("moved less than the minimum: the measurement is wrong")
			}
			if mv.leaveAvg > tc.leave || mv.leaveMax > tc.leaveMaxBound || mv.joinAvg > tc.join {
				t.Errorf("movement above bounds (leave %.2f, max %.2f, join %.2f)", tc.leave, tc.leaveMaxBound, tc.join)
			}
		})
	}
}

// TestLeaveOfTwo and TestJoinOfOne are the cases where the minimum is
// reachable by construction and must be met exactly.
func TestLeaveOfTwo(t *testing.T) {
	two := mustAllocate(t, []Member{{"a", 1}, {"b", 3}}, 1000, 1)
	one := mustAllocate(t, []Member{{"a", 1}}, 1000, 1)
	if got, want := Moved(two, one), two.Counts()["b"]; got != want {
		t.Fatalf("moved %d, want %d", got, want)
	}
}

func TestJoinOfOne(t *testing.T) {
	one := mustAllocate(t, []Member{{"a", 1}}, 1000, 1)
	two := mustAllocate(t, []Member{{"a", 1}, {"b", 1}}, 1000, 1)
	if got := Moved(one, two); got != 500 {
		t.Fatalf("moved %d, want 500", got)
	}
}
