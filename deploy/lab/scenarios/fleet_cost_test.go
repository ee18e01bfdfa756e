package scenarios

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
)

// costRow is one window of TestFleetHarnessCost: what ran on top of the
// settled fleet, and what the guest had left idle meanwhile.
type costRow struct {
	What    string  `json:"what"`
	IdlePct float64 `json:"idle_pct"`     // the guest's idle CPU share, percent of all its CPUs
	TestCPU float64 `json:"test_cpu_pct"` // the scenario process's own CPU, percent of one CPU
	Note    string  `json:"note,omitempty"`
}

// TestFleetHarnessCost measures what the fleet scenarios' own machinery
// costs the emulated guest: the three-director fleet is brought up and left
// settled, and each way the scenarios watch it or load it runs alone for a
// window while the guest's idle CPU share is read from /proc/stat. The
// difference from the first window (the daemons alone) is that piece's
// cost. PEERLVS_LAB_COST=1 runs it; the figures are in docs/benchmarks.md.
func TestFleetHarnessCost(t *testing.T) {
	if os.Getenv("PEERLVS_LAB_COST") != "1" {
		t.Skip("set PEERLVS_LAB_COST=1 to measure the fleet harness's cost in the guest")
	}
	const window = 10 * time.Second
	rows := lab.Run(t, lab.Options{Timeout: 10 * time.Minute, MemoryMB: 1024}, func(t *testing.T, g *lab.Guest) []costRow {
		f := newFleet(t, g)
		all := f.directors
		waitSettled(t, all, 60*time.Second)
		time.Sleep(3 * time.Second)
		var rows []costRow
		measure := func(what string, run func() (note func() string)) {
			var note func() string
			if run != nil {
				note = run()
			}
			time.Sleep(time.Second)
			idle, cpu0, t0, by0 := lab.StartIdleMeter(), processCPU(), time.Now(), lab.CPUByCommand()
			time.Sleep(window)
			wall := time.Since(t0)
			r := costRow{What: what, IdlePct: idle.Idle(), TestCPU: 100 * float64(processCPU()-cpu0) / float64(wall)}
			if note != nil {
				r.Note = note() + " "
			}
			r.Note += "[" + lab.CPUShares(by0, lab.CPUByCommand(), wall) + "]"
			live(t, "%-70s guest idle %3.0f %%, scenario process %3.0f %% of a CPU %s", r.What, r.IdlePct, r.TestCPU, r.Note)
			rows = append(rows, r)
		}
		// every runs fn every d until the window's stop.
		var stops []func()
		every := func(d time.Duration, fn func()) {
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					fn()
					select {
					case <-ctx.Done():
					case <-time.After(d):
					}
				}
			}()
			stops = append(stops, func() { cancel(); wg.Wait() })
		}
		stop := func() {
			for _, s := range stops {
				s()
			}
			stops = nil
		}

		measure("daemons only (3 × saru + syncd, settled, no traffic)", nil)
		for _, d := range []time.Duration{50 * time.Millisecond, 500 * time.Millisecond} {
			var smp *acceptSampler
			var cancel context.CancelFunc
			measure(fmt.Sprintf("accept sampler, a round every %s", d), func() func() string {
				smp = newAcceptSampler(t, all)
				smp.every = d
				var ctx context.Context
				ctx, cancel = context.WithCancel(context.Background())
				go smp.run(ctx)
				time.Sleep(500 * time.Millisecond)
				smp.reset()
				return func() string {
					n, _, _, _, err := smp.result()
					mean, _ := smp.roundStats()
					return fmt.Sprintf("(%d rounds, %s each; err %v)", n, mean.Round(time.Millisecond), err)
				}
			})
			cancel()
			smp.close()
		}
		measure("daemons only, again", nil)
		for _, d := range []time.Duration{100 * time.Millisecond, settlePoll} {
			measure(fmt.Sprintf("settled(): 3 × GET /status + GET /map, every %s", d), func() func() string {
				every(d, func() { settled(all) })
				return nil
			})
			stop()
		}
		measure("before: exec `saru map --json` + `saru status --json` per director, every 100 ms", func() func() string {
			every(100*time.Millisecond, func() {
				for _, d := range all {
					_, _ = d.ns.Try("saru map --json --status %s", saruStatus)
					_, _ = d.ns.Try("saru status --json --status %s", saruStatus)
				}
			})
			return nil
		})
		stop()
		measure("before: exec `nft list table inet peerlvs` in one director, every 100 ms", func() func() string {
			every(100*time.Millisecond, func() { _, _ = all[0].ns.Try("nft list table inet peerlvs") })
			return nil
		})
		stop()
		measure("before: exec `syncd ready` in one director, every 100 ms", func() func() string {
			every(100*time.Millisecond, func() { _, _ = all[0].ns.Try("syncd ready --status %s", syncdStatus) })
			return nil
		})
		stop()
		measure("after: GET /status (saru) + GET /ready (syncd) in one director, every 100 ms", func() func() string {
			every(100*time.Millisecond, func() {
				_, _ = saruStatusOf(all[0])
				_, _, _ = httpGet(all[0], syncdStatus, "/ready")
			})
			return nil
		})
		stop()
		for _, iv := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
			var h *holder
			measure(fmt.Sprintf("holder: %d connections probed every %s, %d new/s", fleetConns, iv, fleetNewRate), func() func() string {
				h = startHolder(t, f.client, fleetConns, iv, "-rate", fmt.Sprint(fleetNewRate))
				var open int
				waitFor(60*time.Second, func() bool {
					r := h.report(t)
					open = r.Open
					return r.Connecting == 0
				})
				return func() string { return fmt.Sprintf("(%d open)", open) }
			})
			if iv != time.Second {
				h.p.Kill()
				continue
			}
			held := heldConns(h.report(t))
			measure("the same + kernelConns (/proc ip_vs_conn) of 3 directors every 200 ms", func() func() string {
				every(200*time.Millisecond, func() {
					for _, d := range all {
						_, _ = kernelConns(d)
					}
				})
				return func() string { return fmt.Sprintf("(%d held)", len(held)) }
			})
			stop()
			measure("the same + exec `ipvsadm -Lnc` in 3 directors every 200 ms", func() func() string {
				every(200*time.Millisecond, func() {
					for _, d := range all {
						_, _ = d.ns.Try("ipvsadm -Lnc")
					}
				})
				return nil
			})
			stop()
			h.p.Kill()
		}
		return rows
	})
	var b strings.Builder
	b.WriteString("| on top of the settled fleet | guest idle CPU | cost (idle lost) | scenario process CPU | note |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %.0f %% | %.0f %% | %.0f %% of a CPU | %s |\n", r.What, r.IdlePct, rows[0].IdlePct-r.IdlePct, r.TestCPU, r.Note)
	}
	t.Logf("\n%s", b.String())
}
