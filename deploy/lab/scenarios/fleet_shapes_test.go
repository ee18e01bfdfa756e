package scenarios

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/deploy/lab/traffic"
)

// The fleet in the shapes LVS is run in besides TestFleet's IPv4 DR and
// NAT: an IPv6 VIP, IP-in-IP to real servers on another network, and
// persistent services (one of them a fwmark service grouping two ports).
// Each goes through the same four events with held and new connections,
// and a ping to the VIP must be answered exactly once before and after
// every event. Services come from saru's config; clients from
// shapeClients addresses of their own.
const (
	shapeClients = 24
	shapeServers = 3
	shapeRate    = 3 // new connections per second per held port
	// shapePings is how many client addresses ping the VIP at each
	// check, three echo requests each.
	shapePings = 6
	// persistTimeout outlasts the scenario: no template may expire.
	persistTimeout = 600 * time.Second
)

var persistMarkPorts = []int{8001, 8002}

// shapePort is what the clients hold on one port of the VIP.
type shapePort struct {
	port  int
	conns int
	// group is the service the port belongs to: a persistent client must
	// keep one real server across all ports of a group.
	group string
}

// shape is one scenario of this file.
type shape struct {
	tp       topology
	vip      string
	sources  []string // client addresses
	ports    []shapePort
	services string
	reals    int // declared real servers, over all services
	// persistent: every (group, client address) must keep one real server.
	persistent bool
}

// shapeReals lists real server addresses as a services: reals list.
func shapeReals(addr func(i int) string) string {
	var b strings.Builder
	b.WriteString("    reals:\n")
	for i := 1; i <= shapeServers; i++ {
		fmt.Fprintf(&b, "      - address: %q\n", addr(i))
	}
	return b.String()
}

// shapeService is one service of a services: section, with a TCP check
// (of checkPort when not 0) on each of shapeServers real servers.
func shapeService(name, where, extra string, checkPort int, reals func(i int) string) string {
	port := ""
	if checkPort != 0 {
		port = fmt.Sprintf(" port: %d,", checkPort)
	}
	return fmt.Sprintf("  - name: %s\n    %s\n    scheduler: rr\n%s    check: {type: tcp,%s interval: 1s, timeout: 500ms, fall: 2, rise: 2}\n",
		name, where, extra, port) + shapeReals(reals)
}

func ipv6Shape() shape {
	s := shape{tp: topology{servers: shapeServers, declared: true, v6: true}, vip: vip6, reals: shapeServers,
		ports: []shapePort{{port: vipPort, conns: 72}}}
	for i := range shapeClients {
		s.sources = append(s.sources, fmt.Sprintf("fd00::%d", 101+i))
	}
	s.services = "services:\n" + shapeService("web6", fmt.Sprintf("address: \"[%s]:%d\"", vip6, vipPort), "    forward: gate\n", 0,
		func(i int) string { return fmt.Sprintf("[%s]:%d", serverAddr6(i), vipPort) })
	return s
}

func tunShape() shape {
	tp := topology{servers: shapeServers, declared: true, tun: true}
	s := shape{tp: tp, vip: vip, sources: ipv4Sources(), reals: shapeServers, ports: []shapePort{{port: vipPort, conns: 72}}}
	s.services = "services:\n" + shapeService("web", fmt.Sprintf("address: %s:%d", vip, vipPort), "    forward: ipip\n", 0,
		func(i int) string { return fmt.Sprintf("%s:%d", tp.serverAddr(i), vipPort) })
	return s
}

func persistShape() shape {
	tp := topology{servers: shapeServers, declared: true, sense: "addr", markPorts: persistMarkPorts}
	s := shape{tp: tp, vip: vip, sources: ipv4Sources(), persistent: true, reals: 2 * shapeServers,
		ports: []shapePort{{vipPort, 48, "web"}, {persistMarkPorts[0], 24, "site"}, {persistMarkPorts[1], 24, "site"}}}
	extra := fmt.Sprintf("    persistence: %v\n    forward: gate\n", persistTimeout)
	s.services = "services:\n" +
		shapeService("web", fmt.Sprintf("address: %s:%d", vip, vipPort), extra, 0,
			func(i int) string { return fmt.Sprintf("%s:%d", tp.serverAddr(i), vipPort) }) +
		// The fwmark service checks one of its ports; its real servers
		// have none, so the packet's port is kept.
		shapeService("site", fmt.Sprintf("fwmark: %d", markFWMark), extra, persistMarkPorts[0], tp.serverAddr)
	return s
}

func ipv4Sources() []string {
	var out []string
	for i := range shapeClients {
		out = append(out, fmt.Sprintf("10.0.0.%d", 101+i))
	}
	return out
}

// pingResult is one round of pings to the VIP from several client
// addresses.
type pingResult struct {
	Sent    int `json:"sent"`
	Replies int `json:"replies"` // duplicates not counted
	Dups    int `json:"dups"`
	// Short names the sources that got fewer replies than they sent,
	// with the replies they got.
	Short map[string]int `json:"short,omitempty"`
}

func (p pingResult) String() string {
	s := fmt.Sprintf("%d/%d answered, %d duplicates", p.Replies, p.Sent, p.Dups)
	if len(p.Short) > 0 {
		s += fmt.Sprintf(" (short: %v)", p.Short)
	}
	return s
}

func (p pingResult) once() bool { return p.Replies == p.Sent && p.Dups == 0 }

// shapeEvent is one row of a shape's table.
type shapeEvent struct {
	Event       string     `json:"event"`
	Conns       int        `json:"conns"`
	Survived    int        `json:"survived"`
	MaxStallMS  float64    `json:"max_stall_ms"`
	NewAttempts int        `json:"new_attempts"`
	NewOK       int        `json:"new_ok"`
	AllocMS     float64    `json:"alloc_ms"`
	Ping        pingResult `json:"ping"`
	// Violations counts the (group, client) pairs seen on more than one
	// real server so far (persistent shapes).
	Violations int `json:"violations"`
	// BrokenBy counts the held connections broken so far by cause.
	BrokenBy map[string]int `json:"broken_by,omitempty"`
}

type shapeResult struct {
	// Spread counts the held connections by the director owning their
	// bucket at the start; Servers by real server.
	Spread     map[string]int `json:"spread"`
	Servers    map[string]int `json:"servers"`
	Ping       pingResult     `json:"ping"` // before the first event
	Events     []shapeEvent   `json:"events"`
	Violations []string       `json:"violations,omitempty"`
}

// TestFleetIPv6: an IPv6 VIP with direct routing; clients and real
// servers on IPv6.
func TestFleetIPv6(t *testing.T) { runShape(t, "IPv6 VIP, DR", ipv6Shape) }

// TestFleetTunnel: IP-in-IP to real servers on another network, which
// answer the clients through their own router.
func TestFleetTunnel(t *testing.T) { runShape(t, "IPv4 VIP, ipip to another network", tunShape) }

// TestFleetPersistence: with sense addr, a persistent service and a
// persistent fwmark service grouping two ports keep one real server per
// client across all directors and through every event.
func TestFleetPersistence(t *testing.T) {
	runShape(t, fmt.Sprintf("persistent TCP :%d and fwmark %d over ports %v, sense addr", vipPort, markFWMark, persistMarkPorts), persistShape)
}

func runShape(t *testing.T, name string, mk func() shape) {
	res := lab.Run(t, lab.Options{Timeout: 12 * time.Minute, MemoryMB: 1024}, func(t *testing.T, g *lab.Guest) shapeResult {
		return shapeSequence(t, g, mk())
	})
	s := mk()
	t.Logf("%s, %d clients, %d real servers:\n%s", name, len(s.sources), shapeServers, shapeTable(res, s.persistent))
	if len(res.Events) != 4 {
		t.Fatalf("expected 4 events, got %d", len(res.Events))
	}
	if !res.Ping.once() {
		t.Errorf("before the events, pings to the VIP: %s", res.Ping)
	}
	for _, e := range res.Events {
		if e.Survived != e.Conns {
			t.Errorf("%s: %d of %d established connections survived; broken so far by cause %v", e.Event, e.Survived, e.Conns, e.BrokenBy)
		}
		if !e.Ping.once() {
			t.Errorf("%s: pings to the VIP: %s", e.Event, e.Ping)
		}
	}
	if len(res.Violations) > 0 {
		t.Errorf("persistence violated for %d clients: %s", len(res.Violations), strings.Join(res.Violations, "; "))
	}
	for d, n := range res.Spread {
		if n == 0 {
			t.Errorf("no held connection falls in %s's buckets", d)
		}
	}
	if len(res.Servers) < 2 {
		t.Errorf("the clients reached only real servers %v", res.Servers)
	}
}

// persistTracker records every real server each (group, client address)
// pair reached.
type persistTracker map[string]map[string]bool

func (p persistTracker) add(group, client, server string) {
	if server == "" {
		return
	}
	k := group + " " + client
	if p[k] == nil {
		p[k] = map[string]bool{}
	}
	p[k][server] = true
}

// record adds a holder's report: its held connections and its new ones.
func (p persistTracker) record(group string, r traffic.Report) {
	for _, c := range r.PerConn {
		if ap, err := netip.ParseAddrPort(c.Local); err == nil {
			p.add(group, ap.Addr().String(), c.Server)
		}
	}
	for src, by := range r.NewBySource {
		for server := range by {
			p.add(group, src, server)
		}
	}
}

// violations lists the pairs that reached more than one real server.
func (p persistTracker) violations() []string {
	var out []string
	for k, servers := range p {
		if len(servers) > 1 {
			out = append(out, fmt.Sprintf("%s on %s", k, strings.Join(slices.Sorted(maps.Keys(servers)), ",")))
		}
	}
	sort.Strings(out)
	return out
}

func shapeSequence(t *testing.T, g *lab.Guest, s shape) shapeResult {
	f := newFleetServices(t, g, s.tp, s.services)
	for _, rs := range f.servers {
		for _, p := range s.ports {
			if p.port != vipPort {
				rs.Start("labtraffic", "echo-server", "-listen", fmt.Sprintf("0.0.0.0:%d", p.port), "-name", rs.Name)
			}
		}
	}
	for _, a := range s.sources {
		bits := 24
		if netip.MustParseAddr(a).Is6() {
			bits = 64
		}
		f.client.Sh("ip addr add %s/%d dev eth0 nodad", a, bits)
	}
	d1, d2, d3 := f.directors[0], f.directors[1], f.directors[2]
	all := []*director{d1, d2, d3}
	waitSettled(t, all, 60*time.Second)
	waitAllUp(t, all, s.reals)

	var r shapeResult
	src := strings.Join(s.sources, ",")
	holders := make([]*holder, len(s.ports))
	for i, p := range s.ports {
		holders[i] = startHolderTo(t, f.client, net.JoinHostPort(s.vip, fmt.Sprint(p.port)), p.conns, fleetProbeInterval,
			"-source-ips", src, "-rate", fmt.Sprint(shapeRate))
	}
	seen := persistTracker{}
	var held []string
	r.Servers = map[string]int{}
	for i, p := range s.ports {
		rep := holders[i].waitOpen(t, p.conns, 90*time.Second)
		seen.record(p.group, rep)
		held = append(held, heldConns(rep)...)
		for sv, n := range rep.Servers {
			r.Servers[sv] += n
		}
	}
	m, err := saruMap(d1)
	if err != nil {
		t.Fatalf("d1: saru map: %v", err)
	}
	r.Spread = spreadByMap(t, m, held)
	r.Ping = pingVIP(t, f.client, s.vip, s.sources[:shapePings])
	live(t, "%s fleet up: held connections by director %v, by real server %v; ping %s", s.tp, r.Spread, r.Servers, r.Ping)

	// reports asks every holder, records what it saw, and lists the held
	// connections as waitReplicated names them.
	reports := func() ([]traffic.Report, []string) {
		var reps []traffic.Report
		var conns []string
		for i, p := range s.ports {
			rep := holders[i].report(t)
			seen.record(p.group, rep)
			reps = append(reps, rep)
			for _, c := range heldConns(rep) {
				if p.port != vipPort {
					c += fmt.Sprintf(">%d", p.port)
				}
				conns = append(conns, c)
			}
		}
		return reps, conns
	}
	event := func(name string, survivors []*director, do func()) {
		live(t, "event: %s", name)
		e := shapeEvent{Event: name, BrokenBy: map[string]int{}}
		if leaving := leavingOf(f, survivors); len(leaving) > 0 {
			_, conns := reports()
			took := waitReplicated(t, survivors, conns, nil, 30*time.Second)
			live(t, "  every held connection is in the kernels of %s (waited %v) before %s leaves", dirNames(survivors), took.Round(time.Millisecond), dirNames(leaving))
		}
		reports() // the event's interval starts here
		start := time.Now()
		do()
		e.AllocMS = float64(waitSettledSince(t, survivors, start, 60*time.Second).Milliseconds())
		time.Sleep(fleetSettleOK)
		reps, _ := reports()
		for i, rep := range reps {
			e.Conns += s.ports[i].conns
			e.Survived += rep.Open
			e.MaxStallMS = max(e.MaxStallMS, rep.IntervalMaxStallMS)
			e.NewAttempts += rep.NewAttempts
			e.NewOK += rep.NewOK
			for k, n := range rep.BrokenBy {
				e.BrokenBy[k] += n
			}
		}
		e.Ping = pingVIP(t, f.client, s.vip, s.sources[:shapePings])
		if s.persistent {
			e.Violations = len(seen.violations())
		}
		live(t, "  allocation applied after %.0f ms; %d/%d survive, longest stall %.0f ms, new connections %d/%d ok; ping %s; %d persistence violations so far; broken so far by cause %v",
			e.AllocMS, e.Survived, e.Conns, e.MaxStallMS, e.NewOK, e.NewAttempts, e.Ping, e.Violations, e.BrokenBy)
		r.Events = append(r.Events, e)
	}
	event("1. kill -9 saru+syncd on d1, cut its links", []*director{d2, d3}, func() { f.kill(t, d1) })
	event("2. d1 back", all, func() { f.back(t, d1) })
	event("3. kill -9 d3", []*director{d1, d2}, func() { f.kill(t, d3) })
	event("4. d3 back", all, func() { f.back(t, d3) })
	reports()
	for _, h := range holders {
		h.p.Kill()
	}
	if s.persistent {
		r.Violations = seen.violations()
	}
	return r
}

// waitAllUp waits until every director's saru applies weight 1 to all n
// declared real servers and reports its kernel reconciled.
func waitAllUp(t *testing.T, ds []*director, n int) {
	t.Helper()
	var why string
	if !waitEvery(30*time.Second, 250*time.Millisecond, func() bool {
		for _, d := range ds {
			st, err := servicesOf(d)
			if err != nil {
				why = err.Error()
				return false
			}
			up := 0
			for _, r := range st.Rows {
				if r.Weight == 1 && !r.Fallback {
					up++
				}
			}
			if up != n || st.Reconciled.IsZero() || st.LastError != "" {
				var checks []string
				for _, c := range st.Checks {
					checks = append(checks, fmt.Sprintf("%s %v %s", c.ID, c.Verdict, c.LastError))
				}
				why = fmt.Sprintf("%s: %d of %d real servers at weight 1, reconciled %v, last error %q; checks: %s",
					d.name, up, n, st.Reconciled, st.LastError, strings.Join(checks, "; "))
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the declared real servers are not all up: %s", why)
	}
}

// pingVIP pings vip three times from each of sources at once (busybox
// ping marks a second answer to one request "DUP!"); each output line is
// prefixed with its source.
func pingVIP(t *testing.T, client *lab.NS, vip string, sources []string) pingResult {
	t.Helper()
	const each = 3
	var cmd strings.Builder
	for _, s := range sources {
		fmt.Fprintf(&cmd, "(ping -c %d -w 6 -I %s %s | sed 's/^/%s /') & ", each, s, vip, s)
	}
	cmd.WriteString("wait")
	out, _ := client.Try("%s", cmd.String())
	r := pingResult{Sent: each * len(sources)}
	got := map[string]int{}
	for _, l := range strings.Split(out, "\n") {
		src, rest, _ := strings.Cut(l, " ")
		if !strings.Contains(rest, "bytes from") {
			continue
		}
		if strings.Contains(rest, "DUP!") {
			r.Dups++
		} else {
			r.Replies++
			got[src]++
		}
	}
	for _, s := range sources {
		if got[s] < each {
			if r.Short == nil {
				r.Short = map[string]int{}
			}
			r.Short[s] = got[s]
		}
	}
	return r
}

func shapeTable(r shapeResult, persistent bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "held connections by director at the start %v, by real server %v; ping before the events: %s\n\n", r.Spread, r.Servers, r.Ping)
	b.WriteString("| event | established survive | longest stall | new connections ok | allocation applied | ping to the VIP | persistence violations so far |\n|---|---|---|---|---|---|---|\n")
	for _, e := range r.Events {
		v := "–"
		if persistent {
			v = fmt.Sprint(e.Violations)
		}
		fmt.Fprintf(&b, "| %s | %d/%d | %.0f ms | %d/%d | %.0f ms | %s | %s |\n", e.Event, e.Survived, e.Conns, e.MaxStallMS, e.NewOK, e.NewAttempts, e.AllocMS, e.Ping, v)
	}
	return b.String()
}
