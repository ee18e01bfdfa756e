package allocate

import (
	"flag"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
)

var report = flag.Bool("report", false, "print the movement/balance comparison table (Markdown) to stdout")

func BenchmarkAllocate(b *testing.B) {
	cases := []struct {
		buckets  uint32
		n        int
		weighted bool
	}{
		{4096, 64, false},
		{4096, 64, true},
		{1024, 8, false},
		{4096, 16, false},
		{65536, 32, false},
		{65536, 64, true},
	}
	for _, c := range cases {
		ms := testMembers(c.n, c.weighted)
		name := fmt.Sprintf("B=%d/N=%d", c.buckets, c.n)
		if c.weighted {
			name += "/weighted"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Allocate(ms, c.buckets, 0x5eed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBaselines gives the cost of the test-only baselines at the size
// BenchmarkAllocate is judged at, for context.
func BenchmarkBaselines(b *testing.B) {
	ms := testMembers(64, false)
	for _, a := range algorithms[1:] {
		b.Run(a.name+"/B=4096/N=64", func(b *testing.B) {
			for b.Loop() {
				a.alloc(ms, 4096, 0x5eed)
			}
		})
	}
}

// testMembers returns n members named d00, d01, ...; weighted ones cycle
// through weights 1, 2, 3.
func testMembers(n int, weighted bool) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{Name: fmt.Sprintf("d%02d", i), Weight: 1}
		if weighted {
			ms[i].Weight = uint32(1 + i%3)
		}
	}
	return ms
}

type algorithm struct {
	name  string
	alloc func([]Member, uint32, uint64) Map
}

var algorithms = []algorithm{
	{"allocate", func(ms []Member, b uint32, seed uint64) Map {
		m, err := Allocate(ms, b, seed)
		if err != nil {
			panic(err)
		}
		return m
	}},
	{"rendezvous", rendezvousAllocate},
	{"maglev", maglevAllocate},
	{"maglev-balanced", maglevBalancedAllocate},
}

// movement summarizes an algorithm on one member set: the worst distance of
// any count from its fair share over every map computed, and the movement on
// each single leave and single join relative to the minimum (the leaver's
// buckets in the old map; the joiner's buckets in the new one).
type movement struct {
	maxDev             float64
	leaveAvg, leaveMax float64
	joinAvg, joinMax   float64
	leaves, joins      int
}

func (mv *movement) addLeave(r float64) {
	mv.leaveAvg += r
	mv.leaveMax = max(mv.leaveMax, r)
	mv.leaves++
}

func (mv *movement) addJoin(r float64) {
	mv.joinAvg += r
	mv.joinMax = max(mv.joinMax, r)
	mv.joins++
}

func (mv *movement) finish() {
	if mv.leaves > 0 {
		mv.leaveAvg /= float64(mv.leaves)
	}
	if mv.joins > 0 {
		mv.joinAvg /= float64(mv.joins)
	}
}

// measure accumulates into mv: every member leaves once, every joiner joins
// once.
func measure(mv *movement, alloc func([]Member, uint32, uint64) Map, ms, joiners []Member, buckets uint32, seed uint64) {
	base := alloc(ms, buckets, seed)
	mv.maxDev = max(mv.maxDev, maxDeviation(base))
	counts := base.Counts()
	for i := range ms {
		rest := append(append([]Member(nil), ms[:i]...), ms[i+1:]...)
		if len(rest) == 0 {
			continue
		}
		after := alloc(rest, buckets, seed)
		mv.maxDev = max(mv.maxDev, maxDeviation(after))
		if least := counts[ms[i].Name]; least > 0 {
			mv.addLeave(float64(Moved(base, after)) / float64(least))
		}
	}
	for _, j := range joiners {
		after := alloc(append(append([]Member(nil), ms...), j), buckets, seed)
		mv.maxDev = max(mv.maxDev, maxDeviation(after))
		if least := after.Counts()[j.Name]; least > 0 {
			mv.addJoin(float64(Moved(base, after)) / float64(least))
		}
	}
}

// maxDeviation is the largest |count - B*w/W| over the map's members.
func maxDeviation(m Map) float64 {
	var dev float64
	for name, n := range m.Counts() {
		dev = max(dev, math.Abs(float64(n)-m.FairShare(name)))
	}
	return dev
}

func joinerNames(k int) []Member {
	js := make([]Member, k)
	for i := range js {
		js[i] = Member{Name: fmt.Sprintf("joiner-%d", i), Weight: 1}
	}
	return js
}

// reportSeeds are averaged over: one member set's figure depends on how
// evenly its few lattices fall (for Maglev's permutations as much as for
// Allocate's keys), so a single seed, or a handful at small N, is one draw.
var reportSeeds = func() []uint64 {
	s := []uint64{0x5eed}
	for i := range uint64(15) {
		s = append(s, i+1)
	}
	return s
}()

// TestReportMovement prints the comparison tables for docs/benchmarks.md
// (about 45 s on one core):
//
//	go test ./saru/allocate/ -run '^TestReportMovement$' -count=1 -v -args -report
func TestReportMovement(t *testing.T) {
	if !*report {
		t.Skip("pass -args -report to print the movement table")
	}
	var sb strings.Builder
	header := "| B | N | algorithm | max deviation (buckets) | leave: moved/min avg | leave max | join: moved/min avg | join max |\n" +
		"|---:|---:|---|---:|---:|---:|---:|---:|\n"
	row := func(buckets uint32, n int, weighted bool, a algorithm) {
		var mv movement
		for _, seed := range reportSeeds {
			measure(&mv, a.alloc, testMembers(n, weighted), joinerNames(8), buckets, seed)
		}
		mv.finish()
		fmt.Fprintf(&sb, "| %d | %d | %s | %.2f | %.3f | %.3f | %.3f | %.3f |\n",
			buckets, n, a.name, mv.maxDev, mv.leaveAvg, mv.leaveMax, mv.joinAvg, mv.joinMax)
	}
	fmt.Fprintf(&sb, "Equal weights; averages over every member leaving and 8 joiners, for %d seeds.\n\n", len(reportSeeds))
	sb.WriteString(header)
	for _, buckets := range []uint32{1024, 4096, 65536} {
		for _, n := range []int{2, 3, 4, 5, 8, 16, 32} {
			for _, a := range algorithms {
				row(buckets, n, false, a)
			}
		}
	}
	sb.WriteString("\nWeights 1, 2, 3 cycling (joiners weigh 1); Maglev has no weights and is left out.\n\n")
	sb.WriteString(header)
	for _, n := range []int{3, 8, 32} {
		for _, a := range algorithms[:2] {
			row(4096, n, true, a)
		}
	}
	os.Stdout.WriteString(sb.String())
}

// TestMovementVsMaglevBalanced compares Allocate at equal balance with
// Maglev fixed up to Allocate's quotas by the fewest moves
// (maglevBalancedAllocate): both must stay within one bucket of the fair
// share everywhere, and Allocate must move no more on average on single
// leaves and on single joins, averaged over reportSeeds. Single changes can
// go either way (see TestReportMovement for the maxima).
func TestMovementVsMaglevBalanced(t *testing.T) {
	for _, buckets := range []uint32{1024, 4096} {
		for _, n := range []int{2, 3, 4, 5, 8, 16} {
			if testing.Short() && buckets > 1024 {
				continue
			}
			t.Run(fmt.Sprintf("B=%d/N=%d", buckets, n), func(t *testing.T) {
				var ours, mb movement
				for _, seed := range reportSeeds {
					measure(&ours, algorithms[0].alloc, testMembers(n, false), joinerNames(4), buckets, seed)
					measure(&mb, maglevBalancedAllocate, testMembers(n, false), joinerNames(4), buckets, seed)
				}
				ours.finish()
				mb.finish()
				t.Logf("allocate: dev %.2f leave %.4f join %.4f; maglev-balanced: dev %.2f leave %.4f join %.4f",
					ours.maxDev, ours.leaveAvg, ours.joinAvg, mb.maxDev, mb.leaveAvg, mb.joinAvg)
				if ours.maxDev >= 1 || mb.maxDev >= 1 {
					t.Errorf("max deviation %.2f (allocate), %.2f (maglev-balanced), want < 1", ours.maxDev, mb.maxDev)
				}
				if ours.leaveAvg > mb.leaveAvg || ours.joinAvg > mb.joinAvg {
					t.Errorf("allocate moves more than maglev-balanced: leave %.4f vs %.4f, join %.4f vs %.4f",
						ours.leaveAvg, mb.leaveAvg, ours.joinAvg, mb.joinAvg)
				}
			})
		}
	}
}
