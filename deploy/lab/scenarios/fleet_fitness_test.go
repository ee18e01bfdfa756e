package scenarios

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
)

// Fitness in the fleet: three directors track their front interface and
// one ping node (the client's address on the front LAN). Gossip and sync
// run on the sync LAN, which the events never touch.
const (
	fitHold  = 5 * time.Second
	fitConns = 90
	// fitPing is the ping node's address: the client's.
	fitPing = "10.0.0.100"
)

func fitnessYAML() string {
	return fmt.Sprintf(`fitness:
  interfaces: [eth0]
  ping_nodes: [%s]
  ping_interval: 500ms
  ping_timeout: 400ms
  ping_fall: 3
  ping_rise: 2
  hold: %v
`, fitPing, fitHold)
}

// fitEvent is one row of the fitness table.
type fitEvent struct {
	Event string `json:"event"`
	// TakenMS is from the event to the last director applying the new
	// allocation (each saru's own record).
	TakenMS     float64 `json:"taken_ms"`
	Conns       int     `json:"conns"`
	Survived    int     `json:"survived"`
	MaxStallMS  float64 `json:"max_stall_ms"`
	NewAttempts int     `json:"new_attempts"`
	NewOK       int     `json:"new_ok"`
	// Unfit is what d1 saw as d2's reason, for the events that make d2
	// unfit.
	Unfit string `json:"unfit,omitempty"`
}

type fitResult struct {
	Events []fitEvent `json:"events"`
}

// TestFleetFitness: cutting only d2's front link, or silencing its ping
// node, makes d2 unfit; the others take its buckets and its established
// connections survive through them; d2 takes its share back after the
// hold once it is fit again.
func TestFleetFitness(t *testing.T) {
	res := lab.Run(t, lab.Options{Timeout: 12 * time.Minute, MemoryMB: 1024}, func(t *testing.T, g *lab.Guest) fitResult {
		return fitnessSequence(t, g)
	})
	t.Logf("fitness (front interface, one ping node every 500 ms, fall 3, hold %v):\n%s", fitHold, fitTable(res))
	if len(res.Events) != 4 {
		t.Fatalf("expected 4 events, got %d", len(res.Events))
	}
	for i, e := range res.Events {
		if e.Survived != e.Conns {
			t.Errorf("%s: %d of %d established connections survived", e.Event, e.Survived, e.Conns)
		}
		if i%2 == 1 && e.TakenMS < float64(fitHold.Milliseconds()) {
			t.Errorf("%s: d2 took buckets back after %.0f ms, before the hold of %v", e.Event, e.TakenMS, fitHold)
		}
	}
}

func fitnessSequence(t *testing.T, g *lab.Guest) fitResult {
	f := newFleetServices(t, g, topology{}, fitnessYAML())
	d1, d2, d3 := f.directors[0], f.directors[1], f.directors[2]
	all := []*director{d1, d2, d3}
	waitSettled(t, all, 60*time.Second)
	h := startHolder(t, f.client, fitConns, fleetProbeInterval, "-rate", fmt.Sprint(fleetNewRate))
	h.waitOpen(t, fitConns, 90*time.Second)
	var r fitResult
	event := func(name string, survivors []*director, wantUnfit string, do func()) {
		live(t, "event: %s", name)
		e := fitEvent{Event: name, Conns: fitConns}
		// Every survivor's kernel holds every held connection before d2
		// stops accepting, as in the crash events.
		took := waitReplicated(t, survivors, heldConns(h.report(t)), nil, 30*time.Second)
		live(t, "  every held connection is in the kernels of %s (waited %v)", dirNames(survivors), took.Round(time.Millisecond))
		h.report(t)
		start := time.Now()
		do()
		e.TakenMS = float64(waitSettledSince(t, survivors, start, 60*time.Second).Milliseconds())
		if wantUnfit != "" {
			st, err := saruStatusOf(d1)
			if err != nil {
				t.Fatalf("%v", err)
			}
			for _, m := range st.Members {
				if m.Name == "d2" {
					e.Unfit = m.Unfit
				}
			}
			if !strings.Contains(e.Unfit, wantUnfit) {
				t.Errorf("%s: d1 sees d2 unfit for %q, want %q", name, e.Unfit, wantUnfit)
			}
		}
		time.Sleep(fleetSettleOK)
		rep := h.report(t)
		e.Survived, e.MaxStallMS, e.NewAttempts, e.NewOK = rep.Open, rep.IntervalMaxStallMS, rep.NewAttempts, rep.NewOK
		live(t, "  allocation applied after %.0f ms; %d/%d survive, longest stall %.0f ms, new connections %d/%d ok; d2 unfit: %q",
			e.TakenMS, e.Survived, e.Conns, e.MaxStallMS, e.NewOK, e.NewAttempts, e.Unfit)
		r.Events = append(r.Events, e)
	}
	others := []*director{d1, d3}
	event("1. cut d2's front link only", others, "interface eth0", func() { g.Sh("ip link set %s down", d2.frontDev) })
	event("2. d2's front link back", all, "", func() { g.Sh("ip link set %s up", d2.frontDev) })
	// The ping node stops answering d2 only.
	event("3. the ping node stops answering d2", others, "ping nodes answer", func() {
		f.client.Sh("nft add table inet labping && nft add chain inet labping out '{ type filter hook output priority 0; }' && nft add rule inet labping out ip daddr %s icmp type echo-reply drop",
			strings.Split(d2.frontIP, "/")[0])
	})
	event("4. the ping node answers d2 again", all, "", func() { f.client.Sh("nft delete table inet labping") })
	h.p.Kill()
	return r
}

func fitTable(r fitResult) string {
	var b strings.Builder
	b.WriteString("| event | allocation applied | established survive | longest stall | new connections ok | d2 as d1 sees it |\n|---|---|---|---|---|---|\n")
	for _, e := range r.Events {
		unfit := "fit"
		if e.Unfit != "" {
			unfit = "unfit: " + e.Unfit
		}
		fmt.Fprintf(&b, "| %s | %.0f ms | %d/%d | %.0f ms | %d/%d | %s |\n", e.Event, e.TakenMS, e.Survived, e.Conns, e.MaxStallMS, e.NewOK, e.NewAttempts, unfit)
	}
	return b.String()
}
