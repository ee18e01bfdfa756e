package scenarios

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/deploy/lab/traffic"
)

// The failover comparison of a director pair (issue 13): the same two DR
// directors, client and events, with the stacks operators run and ours.
//
//   - keepalived: Debian's keepalived as users run it, VRRP (advert_int 1)
//     moving the VIP and lvs_sync_daemon running the kernel's sync threads
//     (master on the VRRP master, backup on the backup); failure detected
//     by VRRP, failback by preemption.
//   - keepalived + syncd: the same VRRP, with syncd instead of the kernel
//     threads; a returning director's keepalived starts once syncd is
//     ready (its unit is ordered after syncd's, which is ready only with
//     the bulk resync in the kernel).
//   - saru: the pair active-active, saru + syncd, no VRRP.
//   - scripted: the kernel threads with the VIP moved by this script the
//     moment a director dies: no detection time, the best the kernel
//     threads can do (the comparison before real keepalived was in the lab).
type pairStack interface {
	name() string
	// build makes the topology: the client, two real servers, two
	// directors with the VIP's service (by hand: keepalived's checker
	// plays no part in failover).
	build(t *testing.T, g *lab.Guest) *drFleet
	// boot starts a freshly built director's daemons; active (the first
	// boot of A only) says it carries the traffic from the start.
	boot(t *testing.T, f *drFleet, d *director, active bool)
	// crash kills every process of d; its links are already cut.
	crash(t *testing.T, f *drFleet, d *director)
	// tookOver and returned run what the stack leaves to a script after
	// a failure and a return: nothing, but for the scripted stack.
	tookOver(t *testing.T, f *drFleet, from, to *director)
	returned(t *testing.T, f *drFleet, d, other *director)
	// waitServing waits until the stack has settled with d carrying
	// traffic (d alone, for an active/standby stack).
	waitServing(t *testing.T, f *drFleet, d *director)
}

// keepalivedStack runs keepalived on both directors; with syncd, keepalived
// does VRRP only and syncd syncs.
type keepalivedStack struct {
	syncd *syncdMode           // nil: lvs_sync_daemon
	procs map[string]*lab.Proc // running keepalived, by director
	logs  []string             // what the killed ones said
}

func (s *keepalivedStack) name() string {
	if s.syncd != nil {
		return "keepalived + syncd"
	}
	return "keepalived"
}

func (s *keepalivedStack) build(t *testing.T, g *lab.Guest) *drFleet {
	s.procs, s.logs = map[string]*lab.Proc{}, nil
	if s.syncd != nil {
		s.syncd = &syncdMode{}
	}
	return newDRFleet(t, g, 2)
}

// pairKeepalivedConf is a director's keepalived.conf: one VRRP instance
// holding the VIP on the front LAN, advertisements every second, and with
// kernelSync the kernel's sync threads following the VRRP state on the
// sync LAN. The higher priority preempts.
func pairKeepalivedConf(priority int, kernelSync bool) string {
	sync := ""
	if kernelSync {
		sync = "    lvs_sync_daemon eth1 VI_1\n"
	}
	return fmt.Sprintf(`global_defs {
    router_id lab
%s}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority %d
    advert_int 1
    virtual_ipaddress {
        %s/32
    }
}
`, sync, priority, vip)
}

// startKeepalived runs keepalived in ns with /tmp/<name>-keepalived.conf,
// its VRRP process only or its checker too, each instance with pid files
// of its own (they share the guest's /run).
func startKeepalived(ns *lab.NS, name string, vrrpOnly bool) *lab.Proc {
	args := []string{"--dont-fork", "--log-console", "-f", "/tmp/" + name + "-keepalived.conf",
		"-p", "/tmp/" + name + "-keepalived.pid", "-r", "/tmp/" + name + "-vrrp.pid"}
	if vrrpOnly {
		args = append(args, "--vrrp")
	} else {
		args = append(args, "-c", "/tmp/"+name+"-checkers.pid")
	}
	return ns.Start("keepalived", args...)
}

// vipOn reports whether keepalived has put the VIP on ns's eth0.
func vipOn(ns *lab.NS) bool {
	out, err := ns.Try("ip -o -4 addr show dev eth0")
	return err == nil && strings.Contains(out, " "+vip+"/32")
}

// waitVIPAlone waits until the VIP is on d and on no other director whose
// keepalived runs (a killed one keeps the VIP it held, but its link is
// down); logs says what keepalived said, for the failure.
func waitVIPAlone(t *testing.T, ds []*director, running map[string]*lab.Proc, d *director, logs func() string) {
	t.Helper()
	if !waitEvery(30*time.Second, 50*time.Millisecond, func() bool {
		for _, x := range ds {
			if _, up := running[x.name]; up && vipOn(x.ns) != (x == d) {
				return false
			}
		}
		return vipOn(d.ns)
	}) {
		t.Fatalf("the VIP not on %s alone within 30 s; keepalived said:\n%s", d.name, logs())
	}
}

func (s *keepalivedStack) boot(t *testing.T, f *drFleet, d *director, _ bool) {
	t.Helper()
	if s.syncd != nil {
		s.syncd.start(t, f, d) // returns once syncd is ready
	}
	prio := 100
	if f.id(d) == 1 {
		prio = 150
	}
	f.g.Sh("cat > /tmp/%s-keepalived.conf <<'EOF'\n%sEOF", d.name, pairKeepalivedConf(prio, s.syncd == nil))
	s.procs[d.name] = startKeepalived(d.ns, d.name, true)
}

func (s *keepalivedStack) crash(t *testing.T, f *drFleet, d *director) {
	t.Helper()
	// keepalived's VRRP child as well as its parent, and syncd.
	f.g.Sh("ip netns pids %s | xargs -r kill -9", d.name)
	if p := s.procs[d.name]; p != nil {
		p.Kill()
		s.logs = append(s.logs, d.name+" (killed):\n"+p.Stderr())
	}
	delete(s.procs, d.name)
	if s.syncd != nil {
		s.syncd.down(t, f, d)
	}
}

func (s *keepalivedStack) tookOver(*testing.T, *drFleet, *director, *director) {}
func (s *keepalivedStack) returned(*testing.T, *drFleet, *director, *director) {}

func (s *keepalivedStack) waitServing(t *testing.T, f *drFleet, d *director) {
	t.Helper()
	waitVIPAlone(t, f.directors, s.procs, d, func() string {
		logs := slices.Clone(s.logs)
		for n, p := range s.procs {
			logs = append(logs, n+":\n"+p.Stderr())
		}
		return strings.Join(logs, "\n")
	})
}

// scriptedStack is the kernel threads with the VIP moved by the script.
type scriptedStack struct{ k kernelSync }

func (s *scriptedStack) name() string                                { return "scripted VIP, kernel threads" }
func (s *scriptedStack) build(t *testing.T, g *lab.Guest) *drFleet   { return newDRFleet(t, g, 2) }
func (s *scriptedStack) crash(t *testing.T, f *drFleet, d *director) { t.Helper(); s.k.down(t, f, d) }
func (s *scriptedStack) waitServing(*testing.T, *drFleet, *director) {}

func (s *scriptedStack) boot(t *testing.T, f *drFleet, d *director, active bool) {
	t.Helper()
	if !active {
		s.k.standby(t, f, d)
		return
	}
	s.k.activate(t, f, d)
	f.takeVIP(t, d)
}

func (s *scriptedStack) tookOver(t *testing.T, f *drFleet, from, to *director) {
	t.Helper()
	f.dropVIP(t, from)
	s.k.activate(t, f, to)
	f.takeVIP(t, to)
}

// returned fails back at once, as VRRP preemption does.
func (s *scriptedStack) returned(t *testing.T, f *drFleet, d, other *director) {
	t.Helper()
	f.dropVIP(t, other)
	s.k.standby(t, f, other)
	s.k.activate(t, f, d)
	f.takeVIP(t, d)
}

// saruStack is the pair active-active.
type saruStack struct{ f *fleet }

func (s *saruStack) name() string { return "saru + syncd" }

// pairDetect is the pair's failure_detection: two directors and one
// client leave the guest idle enough that 2 s never flapped, in every
// run here and in CI, slow hosts included; the saturated fleets of three
// need fleetDetect.
const pairDetect = 2 * time.Second

func (s *saruStack) build(t *testing.T, g *lab.Guest) *drFleet {
	s.f = newFleetOf(t, g, 2, topology{detect: pairDetect}, "")
	return s.f.drFleet
}

func (s *saruStack) boot(t *testing.T, _ *drFleet, d *director, _ bool) { t.Helper(); s.f.start(t, d) }

func (s *saruStack) crash(t *testing.T, _ *drFleet, d *director) {
	t.Helper()
	s.f.killSaru(d)
	s.f.syncd.down(t, s.f.drFleet, d)
}

func (s *saruStack) tookOver(*testing.T, *drFleet, *director, *director) {}
func (s *saruStack) returned(*testing.T, *drFleet, *director, *director) {}

func (s *saruStack) waitServing(t *testing.T, f *drFleet, d *director) {
	t.Helper()
	var up []*director
	for _, x := range f.directors {
		if x.proc != nil {
			up = append(up, x)
		}
	}
	waitSettled(t, up, 60*time.Second)
}

// pairStep is one row of the comparison.
type pairStep struct {
	stepResult
	// FirstMS is the time from the failure to the first reply to a probe
	// sent after it: traffic forwarded again; -1 where not measured (a
	// return) or no reply came.
	FirstMS float64 `json:"first_forwarded_ms"`
}

// pairSettle bounds an event's wait for every held connection's probe in
// flight to be answered (or to break).
const pairSettle = 15 * time.Second

// settle reads the holder's reports every 500 ms until no held
// connection waits for a reply, at least 3 s after since and at most
// atMost after it: TCP's retransmissions after an outage come seconds
// apart. Each report starts a new interval, so it returns the last one
// with the longest stall and the new connections over all of them.
func (h *holder) settle(t *testing.T, since time.Time, atMost time.Duration) (last traffic.Report, worst float64, newAttempts, newOK int) {
	t.Helper()
	for {
		time.Sleep(500 * time.Millisecond)
		last = h.report(t)
		worst = max(worst, last.IntervalMaxStallMS)
		newAttempts += last.NewAttempts
		newOK += last.NewOK
		if (last.StalledNow == 0 && time.Since(since) > 3*time.Second) || time.Since(since) > atMost {
			return last, worst, newAttempts, newOK
		}
	}
}

// pairSequence runs the events on a pair built by st: steady state on A,
// A dies, A returns (and takes over again where the stack fails back), A
// dies again.
func pairSequence(t *testing.T, g *lab.Guest, st pairStack, conns int) []pairStep {
	t.Helper()
	f := st.build(t, g)
	a, b := f.directors[0], f.directors[1]
	st.boot(t, f, a, true)
	st.boot(t, f, b, false)
	st.waitServing(t, f, a)
	// Probes every 500 ms keep each connection alive but mostly idle, like
	// the long-lived sessions that operators lose on failback.
	h := startHolder(t, f.client, conns, 500*time.Millisecond)
	h.waitOpen(t, conns, 60*time.Second)
	steady := step(t, h, "steady state on A", conns, 3*time.Second)
	steps := []pairStep{{stepResult: steady, FirstMS: -1}}
	event := func(name string, failure bool, do func(), serving *director) {
		live(t, "%s: %s", st.name(), name)
		h.report(t) // the event's interval starts here
		t0 := time.Now()
		if failure {
			// A dying director loses its links first, then its daemons.
			f.g.Sh("ip link set %s down && ip link set %s down", a.frontDev, a.syncDev)
			if err := h.p.Send("mark"); err != nil {
				t.Fatalf("mark the failure: %v", err)
			}
		}
		do()
		st.waitServing(t, f, serving)
		rep, worst, _, _ := h.settle(t, t0, pairSettle)
		s := pairStep{stepResult: stepResult{Step: name, Conns: conns, Survived: rep.Open, Broken: rep.Broken, MaxStallMS: worst}, FirstMS: -1}
		if failure && rep.FirstReplyAfterMark != "" {
			if at, err := time.Parse(time.RFC3339Nano, rep.FirstReplyAfterMark); err == nil {
				s.FirstMS = float64(at.Sub(t0).Milliseconds())
			}
		}
		live(t, "  %s; traffic forwarded again after %s", s.stepResult, msOrDash(s.FirstMS))
		steps = append(steps, s)
	}
	event("A dies", true, func() {
		st.crash(t, f, a)
		st.tookOver(t, f, a, b)
	}, b)
	event("A returns", false, func() {
		f.reboot(t, a)
		st.boot(t, f, a, false)
		st.returned(t, f, a, b)
	}, a)
	event("A dies again", true, func() {
		st.crash(t, f, a)
		st.tookOver(t, f, a, b)
	}, b)
	h.p.Kill()
	for _, d := range f.directors {
		st.crash(t, f, d)
	}
	return steps
}

// pairTable renders the comparison for the test log, `make demo` and
// docs/benchmarks.md: per stack, survivors, longest stall and the time
// from the failure to traffic forwarded again.
func pairTable(names []string, runs ...[]pairStep) string {
	var b strings.Builder
	b.WriteString("| event |")
	for _, n := range names {
		fmt.Fprintf(&b, " %s: survive | longest stall | forwarded again after |", n)
	}
	b.WriteString("\n|---|")
	for range names {
		b.WriteString("---|---|---|")
	}
	b.WriteString("\n")
	for i := range runs[0] {
		fmt.Fprintf(&b, "| %s |", runs[0][i].Step)
		for _, r := range runs {
			if i < len(r) {
				fmt.Fprintf(&b, " %d/%d | %.0f ms | %s |", r[i].Survived, r[i].Conns, r[i].MaxStallMS, msOrDash(r[i].FirstMS))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestFailover compares, on one pair of DR directors with 50 long-lived
// connections, real keepalived, keepalived's VRRP with syncd, the saru
// pair and the scripted kernel threads (pairStack), one lab boot.
func TestFailover(t *testing.T) {
	const conns = 50
	stacks := []pairStack{&keepalivedStack{}, &keepalivedStack{syncd: &syncdMode{}}, &saruStack{}, &scriptedStack{}}
	res := lab.Run(t, lab.Options{Timeout: 14 * time.Minute, MemoryMB: 1024}, func(t *testing.T, g *lab.Guest) [][]pairStep {
		var out [][]pairStep
		for i, st := range stacks {
			if i > 0 {
				g.Reset()
			}
			out = append(out, pairSequence(t, g, st, conns))
		}
		return out
	})
	var names []string
	for _, st := range stacks {
		names = append(names, st.name())
	}
	t.Logf("\n%d long-lived TCP connections through two DR directors:\n%s", conns, pairTable(names, res...))
	if len(res) != len(stacks) {
		t.Fatalf("expected %d runs, got %d", len(stacks), len(res))
	}
	for i, run := range res {
		if len(run) != 4 {
			t.Fatalf("%s: expected 4 steps, got %d", names[i], len(run))
		}
		switch stacks[i].(type) {
		case *keepalivedStack, *scriptedStack:
			if stacks[i].name() != "keepalived + syncd" {
				// The kernel threads carry every connection through
				// a failover; a failback loses them (the baseline).
				if run[1].Survived != conns {
					t.Errorf("%s must carry every connection through the first failover: %+v", names[i], run[1])
				}
				continue
			}
		}
		for _, s := range run {
			if s.Survived != conns {
				t.Errorf("%s: %s: %d of %d connections survived", names[i], s.Step, s.Survived, s.Conns)
			}
		}
		for _, s := range []pairStep{run[1], run[3]} {
			if s.FirstMS < 0 {
				t.Errorf("%s: %s: no reply after the failure", names[i], s.Step)
			}
		}
	}
}
