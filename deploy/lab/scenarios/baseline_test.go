package scenarios

import (
	"testing"
)

// kernelSync is the baseline: what operators run today, the stock kernel
// daemons started by keepalived's lvs_sync_daemon on each VRRP transition.
type kernelSync struct{}

func (kernelSync) name() string { return "kernel daemons" }

func (kernelSync) activate(t *testing.T, _ *drFleet, d *director) {
	t.Helper()
	_, _ = d.ns.Try("ipvsadm --stop-daemon backup")
	d.ns.Sh("ipvsadm --start-daemon master --mcast-interface eth1 --syncid 1")
}

func (kernelSync) standby(t *testing.T, _ *drFleet, d *director) {
	t.Helper()
	_, _ = d.ns.Try("ipvsadm --stop-daemon master")
	_, _ = d.ns.Try("ipvsadm --stop-daemon backup")
	d.ns.Sh("ipvsadm --start-daemon backup --mcast-interface eth1 --syncid 1")
}

func (kernelSync) down(t *testing.T, _ *drFleet, d *director) {
	t.Helper()
	_, _ = d.ns.Try("ipvsadm --stop-daemon master; ipvsadm --stop-daemon backup")
}
