package scenarios

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/deploy/lab/traffic"
	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/saru/controller"
)

// The active-active fleet: three directors share the VIP and its MAC on a
// flooding front LAN and all serve at once; saru splits the flow space into
// buckets and syncd keeps every director's kernel table complete.
const (
	fleetBuckets  = 256
	saruStatus    = "127.0.0.1:9475"
	fleetConns    = 120
	fleetNewRate  = 10 // new connections per second during the whole run
	fleetSettleOK = 3 * time.Second
	// fleetHandoverStep is saru's handover_step: the least a taker waits
	// after seeing a planned move, on top of waiting for the giver's
	// release.
	fleetHandoverStep time.Duration = 0
)

type fleet struct {
	*drFleet
	syncd *syncdMode
	saru  map[string]*lab.Proc
}

func newFleet(t *testing.T, g *lab.Guest) *fleet { return newFleetWith(t, g, topology{}) }

func newFleetWith(t *testing.T, g *lab.Guest, tp topology) *fleet {
	t.Helper()
	f := &fleet{drFleet: newLVSFleet(t, g, 3, tp), syncd: &syncdMode{}, saru: map[string]*lab.Proc{}}
	g.Sh("head -c 32 /dev/urandom | base64 > /tmp/gossip.key && chmod 600 /tmp/gossip.key")
	for _, d := range f.directors {
		f.start(t, d)
	}
	return f
}

func (f *fleet) saruConfig(d *director, id int) string {
	nat := ""
	if f.topo.nat {
		nat = "real_server_subnets: [" + backNet + "]\n"
	}
	return nat + fmt.Sprintf(`node: %s
bind_addr: 10.1.0.%d
bind_port: 7946
seeds: [10.1.0.1:7946, 10.1.0.2:7946, 10.1.0.3:7946]
gossip_key_file: /tmp/gossip.key
weight: 1
quorum: 2
failure_detection: 2s
buckets: %d
seed: 20240601
sense: addrport
vips: [%s]
table: peerlvs
syncd_status: %s
readiness_grace: 60s
handover_step: %s
handover_hold: 2s
status_listen: %s
`, d.name, id, fleetBuckets, vip, syncdStatus, fleetHandoverStep, saruStatus)
}

// start boots a director's daemons as its unit files would: syncd first,
// then saru, which takes buckets only once syncd has the whole table. The
// VIP goes up only after saru has installed its table, so the director
// never accepts a flow that is not its own.
func (f *fleet) start(t *testing.T, d *director) {
	t.Helper()
	id := f.id(d)
	f.syncd.start(t, f.drFleet, d)
	f.g.Sh("cat > /tmp/saru-%s.yaml <<'EOF'\n%sEOF", d.name, f.saruConfig(d, id))
	f.saru[d.name] = d.ns.Start("saru", "run", "--config", "/tmp/saru-"+d.name+".yaml")
	if !waitFor(30*time.Second, func() bool {
		_, err := d.ns.Try("nft list table inet peerlvs")
		return err == nil
	}) {
		t.Fatalf("saru on %s installed no table; its log:\n%s", d.name, f.saru[d.name].Stderr())
	}
	f.takeVIP(t, d)
}

func (f *fleet) id(d *director) int {
	for i, x := range f.directors {
		if x == d {
			return i + 1
		}
	}
	return 0
}

// kill stops both daemons with SIGKILL and cuts the director off, as a
// crash or a pulled cable would.
func (f *fleet) kill(t *testing.T, d *director) {
	t.Helper()
	for _, dev := range []string{d.frontDev, d.syncDev, d.backDev} {
		if dev != "" {
			f.g.Sh("ip link set %s down", dev)
		}
	}
	if p := f.saru[d.name]; p != nil {
		p.Kill()
		delete(f.saru, d.name)
	}
	f.syncd.down(t, f.drFleet, d)
}

// back boots a killed or stopped director again from scratch: a new
// namespace (an empty kernel table, no nftables table), then its daemons.
func (f *fleet) back(t *testing.T, d *director) {
	t.Helper()
	f.reboot(t, d)
	f.start(t, d)
}

// saruMap reads a director's partition map from its saru.
func saruMap(d *director) (controller.MapView, error) {
	var m controller.MapView
	out, err := d.ns.Try("saru map --json --status %s", saruStatus)
	if err != nil {
		return m, err
	}
	err = json.Unmarshal([]byte(out), &m)
	return m, err
}

func saruStatusOf(d *director) (controller.Status, error) {
	var s controller.Status
	out, err := d.ns.Try("saru status --json --status %s", saruStatus)
	if err != nil {
		return s, err
	}
	err = json.Unmarshal([]byte(out), &s)
	return s, err
}

// settled reports whether every director in want has the same map, in which
// exactly the directors in want own buckets, and has applied its own share
// with no handover in progress.
func settled(want []*director) (bool, string) {
	names := map[string]bool{}
	for _, d := range want {
		names[d.name] = true
	}
	fp := ""
	for _, d := range want {
		m, err := saruMap(d)
		if err != nil {
			return false, fmt.Sprintf("%s: map: %v", d.name, err)
		}
		if fp == "" {
			fp = m.Fingerprint
		} else if m.Fingerprint != fp {
			return false, fmt.Sprintf("%s: fingerprint %s differs from %s", d.name, m.Fingerprint, fp)
		}
		share := 0
		for _, dv := range m.Directors {
			if (dv.Buckets > 0) != names[dv.Name] {
				return false, fmt.Sprintf("%s: map gives %s %d buckets", d.name, dv.Name, dv.Buckets)
			}
			if dv.Name == d.name {
				share = dv.Buckets
			}
		}
		st, err := saruStatusOf(d)
		if err != nil {
			return false, fmt.Sprintf("%s: status: %v", d.name, err)
		}
		if st.Owned != share || st.HandoverIn != 0 || st.HandoverOut != 0 {
			return false, fmt.Sprintf("%s: owns %d (want %d), handover in %d out %d", d.name, st.Owned, share, st.HandoverIn, st.HandoverOut)
		}
	}
	return true, ""
}

// waitSettled waits until the allocation over want is applied everywhere and
// returns how long that took.
func waitSettled(t *testing.T, want []*director, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var why string
	if waitFor(within, func() bool {
		var ok bool
		ok, why = settled(want)
		return ok
	}) {
		return time.Since(start)
	}
	t.Fatalf("allocation over %s not applied after %s: %s", dirNames(want), within, why)
	return 0
}

func dirNames(ds []*director) string {
	var n []string
	for _, d := range ds {
		n = append(n, d.name)
	}
	sort.Strings(n)
	return strings.Join(n, ",")
}

// eventResult is one row of the fleet table.
type eventResult struct {
	Event       string  `json:"event"`
	Conns       int     `json:"conns"`
	Survived    int     `json:"survived"`
	MaxStallMS  float64 `json:"max_stall_ms"`
	NewAttempts int     `json:"new_attempts"`
	NewOK       int     `json:"new_ok"`
	AllocMS     float64 `json:"alloc_ms"` // event -> allocation applied on every survivor
	ReadyMS     float64 `json:"ready_ms"` // event -> a returning director's saru turned ready; 0 if none did
	Note        string  `json:"note,omitempty"`
	// Broken lists the held connections that broke during the event (local
	// address, real server, why); NewErrors the failed new connections by
	// cause.
	Broken    []string       `json:"broken,omitempty"`
	NewErrors map[string]int `json:"new_errors,omitempty"`
	// Spread counts the open held connections by the director whose
	// buckets they fall in after the event.
	Spread map[string]int `json:"spread,omitempty"`
}

func (e eventResult) newShare() float64 {
	if e.NewAttempts == 0 {
		return 0
	}
	return 100 * float64(e.NewOK) / float64(e.NewAttempts)
}

type fleetResult struct {
	Topology string         `json:"topology"`
	Initial  map[string]int `json:"initial"` // director -> buckets owned at the start
	Servers  map[string]int `json:"servers"` // real server -> connections, a check the load is spread
	Spread   map[string]int `json:"spread"`  // director -> held connections in its buckets
	Events   []eventResult  `json:"events"`
	// UDP is the UDP flows' summary over the whole sequence.
	UDP *traffic.UDPSummary `json:"udp,omitempty"`
}

// TestFleet: the mission end to end. Three active-active directors with
// direct-routing real servers, 120 long-lived connections spread over all
// their buckets plus a steady stream of new ones and UDP flows, and six
// events: crash, return, drain, return, crash, return.
func TestFleet(t *testing.T) { runFleet(t, topology{udp: true}) }

// TestFleetNAT: the same with the real servers behind the directors (IPVS
// masquerading), so every reply passes a director too and must reach the
// one that owns the flow: the filter's reply-direction rules.
func TestFleetNAT(t *testing.T) { runFleet(t, topology{nat: true, udp: true}) }

func runFleet(t *testing.T, tp topology) {
	res := lab.Run(t, lab.Options{Timeout: 12 * time.Minute, MemoryMB: 1024}, func(t *testing.T, g *lab.Guest) fleetResult {
		return fleetSequence(t, g, tp)
	})
	t.Logf("%s\n%s", res.Topology, fleetTable(res))
	if len(res.Events) != 6 {
		t.Fatalf("expected 6 events, got %d", len(res.Events))
	}
	for _, e := range res.Events {
		if e.Survived != e.Conns {
			t.Errorf("%s: %d of %d established connections survived", e.Event, e.Survived, e.Conns)
		}
	}
	for d, n := range res.Spread {
		if n == 0 {
			t.Errorf("no held connection falls in %s's buckets: the load is not spread", d)
		}
	}
	if len(res.Servers) < 2 {
		t.Errorf("connections reached only real servers %v", res.Servers)
	}
	if u := res.UDP; tp.udp {
		switch {
		case u == nil:
			t.Errorf("no UDP summary")
		case u.ZeroReplyFlows > 0 || u.ChangedServerFlows > 0 || u.Bad > 0:
			t.Errorf("UDP flows: %d got no reply, %d changed real server, %d bad replies", u.ZeroReplyFlows, u.ChangedServerFlows, u.Bad)
		}
	}
}

// fleetUDPFlows and fleetUDPRate are the UDP load: flows of their own
// source port each, datagrams per second per flow.
const (
	fleetUDPFlows = 10
	fleetUDPRate  = 4
)

func fleetSequence(t *testing.T, g *lab.Guest, tp topology) fleetResult {
	f := newFleetWith(t, g, tp)
	d1, d2, d3 := f.directors[0], f.directors[1], f.directors[2]
	all := []*director{d1, d2, d3}
	waitSettled(t, all, 60*time.Second)
	r := fleetResult{Topology: tp.String()}
	r.Initial = map[string]int{}
	for _, d := range all {
		st, err := saruStatusOf(d)
		if err != nil {
			t.Fatalf("%v", err)
		}
		r.Initial[d.name] = st.Owned
	}
	live(t, "fleet up: buckets %v", r.Initial)

	h := startHolder(t, f.client, fleetConns, 500*time.Millisecond, "-rate", fmt.Sprint(fleetNewRate))
	rep := h.waitOpen(t, fleetConns, 90*time.Second)
	r.Servers = rep.Servers
	var udp *lab.Proc
	if tp.udp {
		// Bounded by -duration in case the interrupt below never comes.
		udp = f.client.Start("labtraffic", "udp", "-target", fmt.Sprintf("%s:%d", vip, vipPort),
			"-flows", fmt.Sprint(fleetUDPFlows), "-rate", fmt.Sprint(fleetUDPRate), "-duration", "10m", "-per-flow=false")
	}
	time.Sleep(kernelSyncDelay)
	m, err := saruMap(d1)
	if err != nil {
		t.Fatalf("d1: saru map: %v", err)
	}
	r.Spread = spreadByMap(t, m, heldConns(h.report(t)))
	live(t, "%s: %d connections held; by owning director %v; by real server %v", tp, fleetConns, r.Spread, r.Servers)

	wasBroken := map[int]bool{}
	event := func(name string, survivors []*director, do func()) {
		live(t, "event: %s", name)
		h.report(t) // the event's interval starts here
		start := time.Now()
		do()
		waitSettled(t, survivors, 60*time.Second)
		alloc := time.Since(start)
		var ready time.Duration
		for _, d := range survivors {
			if at, ok := sarulogAfter(f, d, start, func(l saruLogLine) bool { return l.Msg == "state" && l.State == "ready" }); ok {
				ready = at.Sub(start)
			}
		}
		time.Sleep(fleetSettleOK)
		rep := h.report(t)
		e := eventResult{Event: name, Conns: fleetConns, Survived: rep.Open, MaxStallMS: rep.IntervalMaxStallMS,
			NewAttempts: rep.NewAttempts, NewOK: rep.NewOK, AllocMS: float64(alloc.Milliseconds()), NewErrors: rep.NewErrors, ReadyMS: float64(ready.Milliseconds())}
		for _, c := range rep.PerConn {
			if c.State == traffic.StateBroken && !wasBroken[c.ID] {
				wasBroken[c.ID] = true
				e.Broken = append(e.Broken, fmt.Sprintf("%s via %s: %s", c.Local, c.Server, c.Err))
			}
		}
		if m, err := saruMap(survivors[0]); err == nil {
			var owners []string
			for _, dv := range m.Directors {
				owners = append(owners, fmt.Sprintf("%s=%d", dv.Name, dv.Buckets))
			}
			e.Note = strings.Join(owners, " ")
			e.Spread = spreadByMap(t, m, heldConns(rep))
		}
		live(t, "  %d/%d survive, longest stall %.0f ms, new connections %d/%d ok, allocation applied in %.0f ms (returning saru ready after %.0f ms); buckets %s; held connections by director now %v",
			e.Survived, e.Conns, e.MaxStallMS, e.NewOK, e.NewAttempts, e.AllocMS, e.ReadyMS, e.Note, e.Spread)
		if len(e.Broken)+len(e.NewErrors) > 0 {
			live(t, "  broke: %v; new connections failed: %v", e.Broken, e.NewErrors)
		}
		r.Events = append(r.Events, e)
	}

	event("1. kill -9 saru+syncd on d1, cut its links", []*director{d2, d3}, func() { f.kill(t, d1) })
	event("2. d1 back (bulk resync, ready, then buckets)", all, func() { f.back(t, d1) })
	event("3. saru drain d2, then stop it", []*director{d1, d3}, func() {
		d2.ns.Sh("saru drain --status %s --timeout 60s", saruStatus)
		f.kill(t, d2)
	})
	event("4. d2 back", all, func() { f.back(t, d2) })
	event("5. kill d3", []*director{d1, d2}, func() { f.kill(t, d3) })
	event("6. d3 back", all, func() { f.back(t, d3) })
	h.p.Kill()
	// A lapse here is a live saru starved past its lease under the
	// emulator's load: it costs that director a moment, never a double.
	live(t, "lapsed liveness leases per director (saru logs): %v", f.lapses())
	if os.Getenv("PEERLVS_LAB_SARU_LOGS") != "" {
		f.showSaruLogs(t)
	}
	if udp != nil {
		if err := udp.Signal(syscall.SIGINT); err != nil {
			t.Fatalf("stop the UDP flows: %v", err)
		}
		line, err := udp.Line(30 * time.Second)
		if err != nil {
			t.Fatalf("UDP summary: %v", err)
		}
		r.UDP = new(traffic.UDPSummary)
		if err := json.Unmarshal([]byte(line), r.UDP); err != nil {
			t.Fatalf("UDP summary %q: %v", line, err)
		}
		live(t, "UDP: %d flows, %d/%d datagrams answered (%.2f %% lost), longest gap %.0f ms, %d flows changed real server, %d got no reply",
			r.UDP.Flows, r.UDP.Received, r.UDP.Sent, 100*r.UDP.Loss, r.UDP.MaxGapMS, r.UDP.ChangedServerFlows, r.UDP.ZeroReplyFlows)
	}
	return r
}

// spreadByMap counts held connections per director owning their bucket in
// m, with filter's hash twin (one `saru map --flow` per connection would
// cost an exec each in the emulated guest).
func spreadByMap(t *testing.T, m controller.MapView, held []string) map[string]int {
	t.Helper()
	sense, err := filter.ParseSense(m.Sense)
	if err != nil {
		t.Fatalf("map sense %q: %v", m.Sense, err)
	}
	h := filter.Hasher{Sense: sense, Seed: uint32(m.Seed), Buckets: m.Buckets}
	out := map[string]int{}
	for _, c := range held {
		ap, err := netip.ParseAddrPort(c)
		if err != nil {
			t.Fatalf("held connection %q: %v", c, err)
		}
		owner := m.Owner(h.Bucket(filter.Flow{Proto: filter.ProtoTCP, Src: ap}))
		if owner == "" {
			owner = "(none)"
		}
		out[owner]++
	}
	return out
}

// showSaruLogs prints every running saru's log but its debug lines, for
// the host to show (PEERLVS_LAB_LIVE=1, or the console dump of a failure).
func (f *fleet) showSaruLogs(t *testing.T) {
	for _, d := range f.directors {
		p := f.saru[d.name]
		if p == nil {
			continue
		}
		for _, l := range strings.Split(p.Stderr(), "\n") {
			if l != "" && !strings.Contains(l, `"level":"debug"`) {
				live(t, "%s saru: %s", d.name, l)
			}
		}
	}
}

// lapses counts, per director, the lapses of the liveness lease its
// running saru has logged.
func (f *fleet) lapses() map[string]int {
	n := map[string]int{}
	for _, d := range f.directors {
		if p := f.saru[d.name]; p != nil {
			log := p.Stderr()
			n[d.name] = strings.Count(log, "renewed its liveness lease late") + strings.Count(log, "stalled past its liveness lease")
		}
	}
	return n
}

// live prints a line that the host shows while the lab runs (make demo).
func live(t *testing.T, format string, args ...any) {
	t.Helper()
	fmt.Printf("live: "+format+"\n", args...)
}

func fleetTable(r fleetResult) string {
	var b strings.Builder
	if u := r.UDP; u != nil {
		fmt.Fprintf(&b, "UDP, %d flows at %.0f/s each through all events: %d/%d datagrams answered (%.2f %% lost), longest gap %.0f ms, %d flows changed real server, %d got no reply\n\n",
			u.Flows, u.RatePerFlow, u.Received, u.Sent, 100*u.Loss, u.MaxGapMS, u.ChangedServerFlows, u.ZeroReplyFlows)
	}
	b.WriteString("| event | established survive | longest stall | new connections ok | returning saru ready | allocation applied on survivors | map after |\n|---|---|---|---|---|---|---|\n")
	for _, e := range r.Events {
		ready := "–"
		if e.ReadyMS > 0 {
			ready = fmt.Sprintf("%.0f ms", e.ReadyMS)
		}
		fmt.Fprintf(&b, "| %s | %d/%d | %.0f ms | %d/%d (%.0f %%) | %s | %.0f ms | %s |\n", e.Event, e.Survived, e.Conns, e.MaxStallMS, e.NewOK, e.NewAttempts, e.newShare(), ready, e.AllocMS, e.Note)
	}
	return b.String()
}
