package scenarios

import (
	"math"
	"os"
	"strconv"
	"testing"
)

// starvedSpeed is the speed of the host TestFleetStarved stands for,
// against the machine the lab's figures come from: a third slower. The hog
// takes the difference between the guest's measured speed and this
// (hogFor): 30 % of the guest on that machine. A fixed 30 % made the
// scenario depend on the machine it ran on: on a CI host that was itself
// slow (the guest's run took 131 to 167 s there against 91 to 100 s here)
// it starved the guest far below the target, to 3-11 % idle in its
// events, where the daemons, the traffic and the harness need more than
// the guest has.
// PEERLVS_LAB_HOG_PCT fixes the hog's share instead, for experiments.
const starvedSpeed = 0.7

// hogFor is the hog's share of the guest, in percent, that brings a guest
// of the given speed to target: a guest at speed s keeps s*(1-share). None
// when the guest is already that slow; at most 80 %.
func hogFor(speed, target float64) int {
	if speed <= target {
		return 0
	}
	return min(int(math.Round(100*(1-target/speed))), 80)
}

// TestFleetStarved: TestFleet's six events, with the same traffic and the
// same assertions, on a starved guest: two busy loops at the highest
// priority that take, whenever they want, the share of the guest that
// leaves it as fast as a starvedSpeed host, as a noisy neighbour would
// (lab.Hog), from before the traffic starts to the end. The accept
// sampler reads every reachable director's rules all along: no bucket may
// be accepted by two directors at once, in any event. Every held
// connection is replicated before a director leaves, so every one of them
// (none younger than the sync window) must survive every event.
//
// On 771794f, before saru's grants (saru/lease), every run had buckets
// accepted twice (gossip flaps; a returning director taking its share at
// once); since then none has (docs/benchmarks.md).
func TestFleetStarved(t *testing.T) {
	o := fleetOpts{starveTo: starvedSpeed, sample: true}
	if v := os.Getenv("PEERLVS_LAB_HOG_PCT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n >= 100 {
			t.Fatalf("PEERLVS_LAB_HOG_PCT=%q: want a percentage between 1 and 99", v)
		}
		o = fleetOpts{hogPct: n, sample: true}
	}
	runFleet(t, topology{udp: true}, o)
}

func TestHogFor(t *testing.T) {
	for _, tc := range []struct {
		speed, target float64
		want          int
	}{
		{1, 0.7, 30},
		{0.8, 0.7, 13},
		{0.7, 0.7, 0},
		{0.5, 0.7, 0},
		{2, 0.7, 65},
		{10, 0.7, 80},
	} {
		if got := hogFor(tc.speed, tc.target); got != tc.want {
			t.Errorf("hogFor(%v, %v) = %d, want %d", tc.speed, tc.target, got, tc.want)
		}
	}
}
