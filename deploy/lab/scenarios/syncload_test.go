package scenarios

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
)

type loadRow struct {
	Mode     string  `json:"mode"`
	Rate     int     `json:"rate"`      // offered new connections per second
	Made     int     `json:"made"`      // short connections the client completed
	OnActive int     `json:"on_active"` // distinct client connections in the active kernel
	OnPeer   int     `json:"on_peer"`   // of those, present in the standby's kernel
	Coverage float64 `json:"coverage"`  // OnPeer / OnActive
}

// TestBenchSyncLoad is a lab benchmark, run by `make bench`: at the same
// offered load of new connections through the active director, how many of
// them reach the standby's kernel through the stock master->backup path and
// through syncd.
func TestBenchSyncLoad(t *testing.T) {
	if os.Getenv("PEERLVS_LAB_BENCH") != "1" {
		t.Skip("lab benchmark: run it with `make bench` (PEERLVS_LAB_BENCH=1)")
	}
	rates := []int{100, 400}
	const seconds = 10
	rows := lab.Run(t, lab.Options{Timeout: 10 * time.Minute}, func(t *testing.T, g *lab.Guest) []loadRow {
		var rows []loadRow
		for _, rate := range rates {
			for _, mode := range []syncMode{kernelSync{}, &syncdMode{}} {
				f := newDRFleet(t, g, 2)
				a, b := f.directors[0], f.directors[1]
				mode.activate(t, f, a)
				mode.standby(t, f, b)
				f.takeVIP(t, a)
				p := f.client.Start("labtraffic", "hold", "-target", fmt.Sprintf("%s:%d", vip, vipPort),
					"-conns", "1", "-rate", fmt.Sprint(rate), "-duration", fmt.Sprintf("%ds", seconds))
				h := &holder{p: p}
				time.Sleep(seconds * time.Second)
				rep := h.report(t)
				// Let the last announcements through: the kernel master
				// flushes a partly filled buffer after 2 s.
				time.Sleep(kernelSyncDelay)
				active := clientConns(t, a)
				row := loadRow{Mode: mode.name(), Rate: rate, Made: rep.NewOKTotal, OnActive: len(active)}
				// Under load the last batches may still be on their way:
				// count again until the standby stops catching up (bounded).
				for i, last := 0, -1; i < 10 && row.OnPeer != last && row.OnPeer < row.OnActive; i++ {
					last = row.OnPeer
					if i > 0 {
						time.Sleep(time.Second)
					}
					peer := clientConns(t, b)
					row.OnPeer = 0
					for c := range active {
						if _, ok := peer[c]; ok {
							row.OnPeer++
						}
					}
				}
				if row.OnActive > 0 {
					row.Coverage = float64(row.OnPeer) / float64(row.OnActive)
				}
				t.Logf("%+v", row)

				rows = append(rows, row)
				g.Reset()
			}
		}
		return rows
	})
	var b strings.Builder
	b.WriteString("| offered new conn/s | path | made | in active kernel | in standby kernel | coverage |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | %s | %d | %d | %d | %.1f %% |\n", r.Rate, r.Mode, r.Made, r.OnActive, r.OnPeer, 100*r.Coverage)
	}
	t.Logf("\n%s", b.String())
}
