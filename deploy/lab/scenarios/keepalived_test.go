package scenarios

import (
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
)

// keepalived in the lab: Debian's keepalived runs in the guest as operators
// run it, VRRP between two directors, each with its own MAC on an ordinary
// switch. The first step of the real-keepalived baseline (issue 13): it
// shows the binary works in the guest and measures how long VRRP takes to
// move the VIP when its holder dies, and to take it back by preemption.
type vrrpResult struct {
	ElectedMS   float64 `json:"elected_ms"`   // both started -> the VIP on the higher priority only
	FailoverMS  float64 `json:"failover_ms"`  // A killed -> the VIP on B
	PreemptMS   float64 `json:"preempt_ms"`   // A back -> the VIP on A only
	ClientAfter bool    `json:"client_after"` // the client reaches the VIP after each move
}

func TestKeepalivedVRRP(t *testing.T) {
	res := lab.Run(t, lab.Options{Timeout: 4 * time.Minute}, func(t *testing.T, g *lab.Guest) vrrpResult {
		return vrrpSequence(t, g)
	})
	t.Logf("Debian's keepalived, VRRP advert_int 1 between two directors: VIP on the master %.0f ms after both started; on the backup %.0f ms after the master died; back on the returning master %.0f ms after it restarted (preemption); the client reached the VIP after each move: %v",
		res.ElectedMS, res.FailoverMS, res.PreemptMS, res.ClientAfter)
	if !res.ClientAfter {
		t.Errorf("the client could not reach the VIP after a move")
	}
}

func vrrpSequence(t *testing.T, g *lab.Guest) vrrpResult {
	g.Switch("front")
	client := g.NS("client")
	client.Plug("front", "eth0", "", clientAddr)
	type dir struct {
		ns   *lab.NS
		dev  string
		prio int
		proc *lab.Proc
	}
	a := &dir{ns: g.NS("ka1"), prio: 150}
	b := &dir{ns: g.NS("ka2"), prio: 100}
	a.dev = a.ns.Plug("front", "eth0", "", "10.0.0.1/24")
	b.dev = b.ns.Plug("front", "eth0", "", "10.0.0.2/24")
	start := func(d *dir) {
		g.Sh("cat > /tmp/%s-keepalived.conf <<'EOF'\n%sEOF", d.ns.Name, pairKeepalivedConf(d.prio, false))
		d.proc = startKeepalived(d.ns, d.ns.Name, true)
	}
	holds := func(d *dir) bool { return vipOn(d.ns) }
	wait := func(what string, cond func() bool) time.Duration {
		t.Helper()
		t0 := time.Now()
		if !waitEvery(30*time.Second, 50*time.Millisecond, cond) {
			t.Fatalf("%s not within 30 s; keepalived said:\n%s\n%s", what, a.proc.Stderr(), b.proc.Stderr())
		}
		return time.Since(t0)
	}
	reach := func() bool {
		_, err := client.Try("ping -c 1 -w 3 %s", vip)
		return err == nil
	}
	var r vrrpResult
	start(a)
	start(b)
	r.ElectedMS = float64(wait("the VIP on the higher priority only", func() bool { return holds(a) && !holds(b) }).Milliseconds())
	r.ClientAfter = reach()
	// A dies: its link cut and every keepalived process in it killed (the
	// VRRP child as well as the parent).
	kill := func(d *dir) {
		g.Sh("ip netns pids %s | xargs -r kill -9", d.ns.Name)
		d.proc.Kill()
	}
	g.Sh("ip link set %s down", a.dev)
	kill(a)
	r.FailoverMS = float64(wait("the VIP on the backup", func() bool { return holds(b) }).Milliseconds())
	r.ClientAfter = r.ClientAfter && reach()
	// A comes back as a rebooted director would: no VIP, link up, keepalived.
	a.ns.Sh("ip addr flush dev eth0 && ip addr add 10.0.0.1/24 dev eth0")
	g.Sh("ip link set %s up", a.dev)
	start(a)
	r.PreemptMS = float64(wait("the VIP back on the returning master only", func() bool { return holds(a) && !holds(b) }).Milliseconds())
	r.ClientAfter = r.ClientAfter && reach()
	kill(a)
	kill(b)
	return r
}
