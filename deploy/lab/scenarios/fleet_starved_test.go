package scenarios

import (
	"os"
	"strconv"
	"testing"
)

// starvedHogPct is the share of the guest (percent of all its CPUs) the CPU
// hog of TestFleetStarved takes: 30 % of the 2-vCPU guest is 0.6 of a CPU,
// a host about a third slower than the one the lab's figures come from.
// PEERLVS_LAB_HOG_PCT overrides it for experiments.
const starvedHogPct = 30

// TestFleetStarved: TestFleet's six events, with the same traffic and the
// same assertions, on a starved guest: two busy loops at the highest
// priority that take starvedHogPct of the guest whenever they want, as a
// noisy neighbour would (lab.Hog), from before the traffic starts to the
// end. The accept sampler reads every reachable
// director's rules all along: no bucket may be accepted by two directors at
// once, in any event. Every held connection is replicated before a director
// leaves, so every one of them (none younger than the sync window) must
// survive every event.
//
// On 771794f, before saru's grants (saru/lease), every run had buckets
// accepted twice (gossip flaps; a returning director taking its share at
// once); since then none has (docs/benchmarks.md).
func TestFleetStarved(t *testing.T) {
	pct := starvedHogPct
	if v := os.Getenv("PEERLVS_LAB_HOG_PCT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n >= 100 {
			t.Fatalf("PEERLVS_LAB_HOG_PCT=%q: want a percentage between 1 and 99", v)
		}
		pct = n
	}
	runFleet(t, topology{udp: true}, fleetOpts{hogPct: pct, sample: true})
}
