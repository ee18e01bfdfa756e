package scenarios

import (
	"testing"

	"github.com/peerlvs/peerlvs/deploy/lab"
)

// kernelSync is the baseline: what operators run today, the stock kernel
// daemons started by keepalived's lvs_sync_daemon on each VRRP transition.
type kernelSync struct{}

func (kernelSync) activate(t *testing.T, d *director) {
	t.Helper()
	d.ns.Try("ipvsadm --stop-daemon backup")
	d.ns.Sh("ipvsadm --start-daemon master --mcast-interface eth1 --syncid 1")
}

func (kernelSync) standby(t *testing.T, d *director) {
	t.Helper()
	d.ns.Try("ipvsadm --stop-daemon master")
	d.ns.Sh("ipvsadm --start-daemon backup --mcast-interface eth1 --syncid 1")
}

// TestKernelBaseline measures how many long-lived connections the stock
// kernel sync daemons keep through failover, reboot and failback: the number
// syncd must beat.
func TestKernelBaseline(t *testing.T) {
	const conns = 50
	steps := lab.Run(t, lab.Options{}, func(t *testing.T, g *lab.Guest) []stepResult {
		return failoverSequence(t, g, kernelSync{}, conns)
	})
	t.Logf("\n%s", table("kernel baseline (ipvsadm --start-daemon master/backup), 50 long-lived TCP connections, DR", steps))
	if len(steps) != 6 {
		t.Fatalf("expected 6 steps, got %d", len(steps))
	}
	if steps[0].Survived != conns || steps[1].Survived != conns {
		t.Errorf("the stock daemons must carry every connection through the first failover: %+v", steps[:2])
	}
}
