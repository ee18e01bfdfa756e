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
// same assertions, on a starved guest: two busy loops in a cgroup whose
// cpu.max caps them at starvedHogPct of the guest and whose cpu.weight lets
// them take it whenever they want, as a noisy neighbour would, from before
// the traffic starts to the end. The accept sampler reads every reachable
// director's rules all along: no bucket may be accepted by two directors at
// once, in any event. Every held connection is replicated before a director
// leaves, so every one of them (none younger than the sync window) must
// survive every event.
//
// It runs only with PEERLVS_LAB_STARVED=1 until saru holds its promises on a
// starved host (issue 10). On 771794f every run had buckets accepted twice
// (gossip flaps; a returning director taking its share at once); on
// e30e3fe none did, but held connections stalled past the holder's 20 s
// break, or could not be opened, while leases were withdrawn ("lease write
// too slow") under the load (docs/benchmarks.md).
func TestFleetStarved(t *testing.T) {
	if os.Getenv("PEERLVS_LAB_STARVED") != "1" {
		t.Skip("set PEERLVS_LAB_STARVED=1 to run the starved fleet (issue 10: no bucket has been accepted twice since saru/lease, but held connections can still stall past the holder's break under the load; it joins make test once they do not)")
	}
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
