package scenarios

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/deploy/lab/traffic"
	"github.com/peerlvs/peerlvs/saru/services"
)

// The declared-services fleet: three directors whose IPVS services come
// only from saru's services: section, four DR real servers with an HTTP
// health endpoint (rs4 joins at a reload), and a fallback server.
const (
	svcServers   = 4
	sorryAddr    = "10.0.0.19"
	svcConns     = 60
	svcNewRate   = 10
	svcCheckIntv = time.Second
	svcFall      = 2
	// svcAgreeBound is the most an agreed verdict may take: fall checks,
	// one more interval for the phase of the first failed check, the
	// check's timeout, a gossip round and saru's tick, with the emulated
	// guest's slowness on top.
	svcAgreeBound = 12 * time.Second
	// svcAfter is how long new connections are watched after an agreement.
	svcAfter = 3 * time.Second
)

// draining in a wanted weight table is a real server that saru is
// draining: at weight 0 while the kernel counts connections to it, then
// gone, on each director at its own moment.
const draining = -2

// sameWeights compares got with want, where draining matches 0 or absent.
func sameWeights(got, want map[string]int) bool {
	g, w := maps.Clone(got), maps.Clone(want)
	for k, v := range want {
		if v == draining {
			if x, ok := g[k]; !ok || x == 0 {
				delete(g, k)
				delete(w, k)
			}
		}
	}
	return maps.Equal(g, w)
}

// servicesYAML is the services: section with real servers reals (indexes
// 1..svcServers).
func servicesYAML(reals ...int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `services:
  - name: web
    address: %s:%d
    scheduler: rr
    forward: gate
    check:
      type: http
      port: %d
      path: /health
      status: [200]
      interval: %s
      timeout: 500ms
      fall: %d
      rise: 2
    fallback:
      address: %s:%d
    reals:
`, vip, vipPort, healthPort, svcCheckIntv, svcFall, sorryAddr, vipPort)
	for _, i := range reals {
		fmt.Fprintf(&b, "      - address: %s:%d\n", topology{}.serverAddr(i), vipPort)
	}
	return b.String()
}

// svcEvent is one row of the services table.
type svcEvent struct {
	Event string `json:"event"`
	// AgreedMS is from the event to the last director applying the new
	// weights (each saru's own record of when its applied weight changed,
	// checked against its kernel); PerDirectorMS the same per director.
	AgreedMS      float64            `json:"agreed_ms"`
	PerDirectorMS map[string]float64 `json:"per_director_ms,omitempty"`
	// Held are the established connections that must survive the event
	// (those to a real server the event does not stop), Survived how many
	// did, MaxStallMS the longest any of them waited for an echo.
	Held       int     `json:"held"`
	Survived   int     `json:"survived"`
	MaxStallMS float64 `json:"max_stall_ms"`
	// NewTo counts the new connections opened in the svcAfter after the
	// agreement by the real server that answered; NewFailed those that
	// failed.
	NewTo     map[string]int `json:"new_to"`
	NewFailed int            `json:"new_failed"`
	Note      string         `json:"note,omitempty"`
}

type svcResult struct {
	Events []svcEvent `json:"events"`
	// ExcludedMS is from d3's reload with other services to d1 and d2
	// owning every bucket.
	ExcludedMS float64 `json:"excluded_ms"`
}

// TestFleetServices: saru declares the services, checks the real servers
// as a fleet and applies one weight table on every director.
func TestFleetServices(t *testing.T) {
	res := lab.Run(t, lab.Options{Timeout: 12 * time.Minute, MemoryMB: 1024}, func(t *testing.T, g *lab.Guest) svcResult {
		return servicesSequence(t, g)
	})
	t.Logf("declared services, HTTP checks every %v, fall %d:\n%s\nd3 with other services excluded after %.0f ms",
		svcCheckIntv, svcFall, svcTable(res), res.ExcludedMS)
	if len(res.Events) != 7 {
		t.Fatalf("expected 7 events, got %d", len(res.Events))
	}
	for _, e := range res.Events {
		if e.Survived != e.Held {
			t.Errorf("%s: %d of %d established connections survived", e.Event, e.Survived, e.Held)
		}
		if e.AgreedMS > float64(svcAgreeBound.Milliseconds()) {
			t.Errorf("%s: the fleet agreed after %.0f ms, bound %v", e.Event, e.AgreedMS, svcAgreeBound)
		}
	}
}

func servicesSequence(t *testing.T, g *lab.Guest) svcResult {
	tp := topology{servers: svcServers, declared: true}
	f := newFleetServices(t, g, tp, servicesYAML(1, 2, 3))
	// The fallback server, on the front LAN like the others.
	sorry := g.NS("sorry")
	sorry.Plug("front", "eth0", "", sorryAddr+"/24")
	sorry.DRRealServer(vip + "/32")
	sorry.Start("labtraffic", "echo-server", "-listen", fmt.Sprintf("0.0.0.0:%d", vipPort), "-name", "sorry")
	all := f.directors
	d1 := all[0]
	waitSettled(t, all, 60*time.Second)
	rs := func(i int) string { return fmt.Sprintf("%s:%d", tp.serverAddr(i), vipPort) }
	sorryRS := fmt.Sprintf("%s:%d", sorryAddr, vipPort)
	// Every director's kernel holds the declared services before any
	// traffic: nothing was configured by hand.
	cur := map[string]int{rs(1): 1, rs(2): 1, rs(3): 1}
	waitWeights(t, all, cur, nil, time.Now())

	h := startHolder(t, f.client, svcConns, fleetProbeInterval, "-rate", fmt.Sprint(svcNewRate))
	rep := h.waitOpen(t, svcConns, 90*time.Second)
	live(t, "services fleet up: %d connections held, by real server %v", svcConns, rep.Servers)

	var r svcResult
	// event runs do, waits until every director applies want (changed
	// names the real servers whose weight the event changes), and judges
	// the held connections whose server is not in stopped.
	event := func(name string, want map[string]int, changed []string, stopped []string, do func()) svcEvent {
		live(t, "event: %s", name)
		e := svcEvent{Event: name}
		before := h.report(t)
		mustLive := map[int]bool{}
		for _, c := range before.PerConn {
			if c.State != traffic.StateBroken && c.State != traffic.StateNeverOpened && !slices.Contains(stopped, c.Server) {
				mustLive[c.ID] = true
			}
		}
		start := time.Now()
		do()
		per := waitWeights(t, all, want, changed, start)
		e.PerDirectorMS = map[string]float64{}
		for name, d := range per {
			e.PerDirectorMS[name] = float64(d.Milliseconds())
			e.AgreedMS = max(e.AgreedMS, e.PerDirectorMS[name])
		}
		h.report(t) // new connections from here on went by the agreed table
		time.Sleep(svcAfter)
		after := h.report(t)
		e.NewTo, e.NewFailed = after.NewServers, after.NewAttempts-after.NewOK
		e.Held = len(mustLive)
		for _, c := range after.PerConn {
			if !mustLive[c.ID] {
				continue
			}
			if c.State == traffic.StateOK || c.State == traffic.StateStalled {
				e.Survived++
			} else {
				e.Note += fmt.Sprintf("%s via %s: %s; ", c.Local, c.Server, c.Err)
			}
			e.MaxStallMS = max(e.MaxStallMS, c.MaxStallMS)
		}
		live(t, "  agreed after %.0f ms (by director %v); %d/%d established connections survive, longest stall %.0f ms; new connections after: %v, %d failed",
			e.AgreedMS, e.PerDirectorMS, e.Survived, e.Held, e.MaxStallMS, e.NewTo, e.NewFailed)
		r.Events = append(r.Events, e)
		return e
	}

	// 1. One real server's service stops: quiesced everywhere.
	cur[rs(1)] = 0
	e := event("1. stop rs1's service", cur, []string{rs(1)}, []string{"rs1"}, func() { f.echo[0].Kill() })
	if e.NewTo["rs1"] > 0 {
		t.Errorf("%s: %d new connections still reached rs1", e.Event, e.NewTo["rs1"])
	}
	// 2. It comes back: its weight returns everywhere.
	cur[rs(1)] = 1
	e = event("2. start rs1 again", cur, []string{rs(1)}, nil, func() { f.startEcho(0) })
	if e.NewTo["rs1"] == 0 {
		t.Errorf("%s: no new connection reached rs1 again: %v", e.Event, e.NewTo)
	}

	// 3. Only d1 cannot reach rs2's checks: the fleet keeps rs2, d1 says
	// its path is broken.
	blocked := time.Now()
	e = event("3. block d1's checks to rs2", cur, nil, nil, func() {
		d1.ns.Sh("nft add table inet labblock && nft add chain inet labblock out '{ type filter hook output priority 0; }' && nft add rule inet labblock out ip daddr %s tcp dport %d drop",
			tp.serverAddr(2), healthPort)
		if !waitEvery(svcAgreeBound, 200*time.Millisecond, func() bool { return brokenPath(d1, rs(2)) }) {
			t.Fatalf("d1 does not report its broken path to rs2 within %v", svcAgreeBound)
		}
	})
	for _, d := range all[1:] {
		if brokenPath(d, rs(2)) {
			t.Errorf("%s reports a broken path to rs2 too", d.name)
		}
	}
	if e.NewTo["rs2"] == 0 {
		t.Errorf("%s: no new connection reached rs2 (%v): the fleet took it away", e.Event, e.NewTo)
	}
	// Not even for a moment: no director changed rs2's weight.
	for _, d := range all {
		st, err := servicesOf(d)
		if err != nil {
			t.Fatalf("%v", err)
		}
		for _, row := range st.Rows {
			if row.Real == rs(2) && row.Since.After(blocked) {
				t.Errorf("%s changed rs2's weight at %v, after the block at %v", d.name, row.Since, blocked)
			}
		}
	}
	d1.ns.Sh("nft delete table inet labblock")
	if !waitEvery(svcAgreeBound, 200*time.Millisecond, func() bool { return !brokenPath(d1, rs(2)) }) {
		t.Errorf("d1 still reports a broken path to rs2 after the block was lifted")
	}

	// 4. A reload adds rs4 and drops rs3: rs3 drains (weight 0 while the
	// kernel counts its connections), so its established connections
	// survive.
	cur[rs(4)] = 1
	cur[rs(3)] = draining
	e = event("4. SIGHUP: rs4 added, rs3 dropped", cur, []string{rs(3), rs(4)}, nil, func() {
		f.services = servicesYAML(1, 2, 4)
		for _, d := range all {
			f.writeSaruConfig(d)
		}
		for _, d := range all {
			if err := f.saru[d.name].Signal(syscall.SIGHUP); err != nil {
				t.Fatalf("SIGHUP saru on %s: %v", d.name, err)
			}
		}
	})
	// Its established connections keep rs3 in every kernel, at weight 0.
	for _, d := range all {
		if w, ok := currentWeights(t, d)[rs(3)]; !ok || w != 0 {
			t.Errorf("%s: rs3 (weight %d, listed %v) is not draining at weight 0 while it has connections", d.name, w, ok)
		}
	}
	waitSettled(t, all, 60*time.Second)
	if e.NewTo["rs3"] > 0 || e.NewTo["rs4"] == 0 {
		t.Errorf("%s: new connections %v: want some on rs4, none on rs3", e.Event, e.NewTo)
	}

	// 5. Every real server stops: the fallback serves on every director.
	cur = map[string]int{rs(1): 0, rs(2): 0, rs(3): draining, rs(4): 0, sorryRS: 1}
	e = event("5. stop every real server", cur, []string{sorryRS}, []string{"rs1", "rs2", "rs3", "rs4"}, func() {
		for _, i := range []int{0, 1, 2, 3} {
			f.echo[i].Kill()
		}
	})
	if e.NewTo["sorry"] == 0 || len(e.NewTo) != 1 {
		t.Errorf("%s: new connections %v: want all on the fallback", e.Event, e.NewTo)
	}

	// 6. One comes back: the fallback is withdrawn (weight 0 while it
	// still counts connections, then gone).
	cur = map[string]int{rs(1): 0, rs(2): 1, rs(3): draining, rs(4): 0, sorryRS: draining}
	e = event("6. rs2 back", cur, []string{rs(2)}, nil, func() { f.startEcho(1) })
	if e.NewTo["sorry"] > 0 || e.NewTo["rs2"] == 0 {
		t.Errorf("%s: new connections %v: want all on rs2", e.Event, e.NewTo)
	}

	// 7. The rest come back.
	cur = map[string]int{rs(1): 1, rs(2): 1, rs(3): draining, rs(4): 1, sorryRS: draining}
	event("7. rs1 and rs4 back", cur, []string{rs(1), rs(4)}, nil, func() {
		f.startEcho(0)
		f.startEcho(3)
	})

	// 8. d3 alone declares other services (one weight differs): the
	// services are a fleet setting, so d1 and d2 take every bucket and
	// both name the service that differs; d3 agrees again at its next
	// reload.
	d3 := all[2]
	live(t, "event: 8. d3 alone reloads a different weight for rs4")
	same := f.services
	f.services = strings.Replace(same, fmt.Sprintf("      - address: %s\n", rs(4)), fmt.Sprintf("      - address: %s\n        weight: 2\n", rs(4)), 1)
	f.writeSaruConfig(d3)
	if err := f.saru[d3.name].Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP saru on d3: %v", err)
	}
	took := waitSettled(t, all[:2], 60*time.Second)
	for _, d := range all[:2] {
		want := fmt.Sprintf("tcp %s:%d is declared differently on d3", vip, vipPort)
		if !waitFor(10*time.Second, func() bool { return strings.Contains(f.saru[d.name].Stderr(), want) }) {
			t.Errorf("%s does not log %q", d.name, want)
		}
	}
	live(t, "  d1 and d2 own every bucket %.0f ms after d3's reload, and name the service that differs", float64(took.Milliseconds()))
	f.services = same
	f.writeSaruConfig(d3)
	if err := f.saru[d3.name].Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP saru on d3: %v", err)
	}
	waitSettled(t, all, 60*time.Second)
	r.ExcludedMS = float64(took.Milliseconds())

	h.p.Kill()
	if os.Getenv("PEERLVS_LAB_SARU_LOGS") != "" {
		f.showSaruLogs(t)
	}
	return r
}

// servicesOf asks d's saru for its services table.
func servicesOf(d *director) (services.Status, error) {
	var st services.Status
	err := getStatus(d, saruStatus, "/services", &st)
	return st, err
}

func brokenPath(d *director, real string) bool {
	st, err := servicesOf(d)
	if err != nil {
		return false
	}
	for _, r := range st.Rows {
		if r.Real == real && !r.Fallback {
			return r.BrokenPath
		}
	}
	return false
}

// currentWeights reads the weights of the VIP's real servers from d's
// kernel (ipvsadm's listing; a real server that is absent is not listed).
func currentWeights(t *testing.T, d *director) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, line := range strings.Split(d.ns.Sh("ipvsadm -Ln -t %s:%d", vip, vipPort), "\n") {
		f := strings.Fields(line)
		// "  -> 10.0.0.11:80   Route   1   0   0"
		if len(f) >= 4 && f[0] == "->" && f[1] != "RemoteAddress:Port" {
			w, err := strconv.Atoi(f[3])
			if err != nil {
				t.Fatalf("%s: ipvsadm line %q", d.name, line)
			}
			out[f[1]] = w
		}
	}
	return out
}

// waitWeights waits until every director's saru has applied want (real
// server -> weight; the others must be absent) and its kernel holds it,
// and returns, per director, how long after start the weights of changed
// last changed by saru's own record.
func waitWeights(t *testing.T, ds []*director, want map[string]int, changed []string, start time.Time) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	var why string
	ok := waitEvery(svcAgreeBound+10*time.Second, 250*time.Millisecond, func() bool {
		for _, d := range ds {
			st, err := servicesOf(d)
			if err != nil {
				why = err.Error()
				return false
			}
			got := map[string]int{}
			var last time.Time
			for _, r := range st.Rows {
				if r.Weight >= 0 {
					got[r.Real] = r.Weight
				}
				if slices.Contains(changed, r.Real) && r.Since.After(last) {
					last = r.Since
				}
			}
			// A real server saru drains (dropped, or a withdrawn
			// fallback) is out of its table: the kernel's listing is
			// the judge of those.
			if !sameWeights(got, want) {
				why = fmt.Sprintf("%s applied %v, want %v", d.name, got, want)
				return false
			}
			if len(changed) > 0 {
				if !last.After(start) {
					why = fmt.Sprintf("%s: no weight of %v changed since the event", d.name, changed)
					return false
				}
				out[d.name] = last.Sub(start)
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("weights not applied within %v: %s", svcAgreeBound+10*time.Second, why)
	}
	// Applied means in the kernel: read it back once.
	for _, d := range ds {
		got := currentWeights(t, d)
		if !sameWeights(got, want) {
			t.Fatalf("%s's kernel holds %v, saru says %v", d.name, got, want)
		}
	}
	return out
}

func svcTable(r svcResult) string {
	var b strings.Builder
	b.WriteString("| event | agreed on every director | per director | established survive | longest stall | new connections after, by real server |\n|---|---|---|---|---|---|\n")
	for _, e := range r.Events {
		var per, to []string
		for _, n := range sortedKeys(e.PerDirectorMS) {
			per = append(per, fmt.Sprintf("%s %.0f", n, e.PerDirectorMS[n]))
		}
		for _, n := range sortedKeys(e.NewTo) {
			to = append(to, fmt.Sprintf("%s %d", n, e.NewTo[n]))
		}
		agreed := "no change (held)"
		if len(e.PerDirectorMS) > 0 {
			agreed = fmt.Sprintf("%.0f ms", e.AgreedMS)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d/%d | %.0f ms | %s; %d failed |\n", e.Event, agreed, strings.Join(per, ", "),
			e.Survived, e.Held, e.MaxStallMS, strings.Join(to, ", "), e.NewFailed)
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
