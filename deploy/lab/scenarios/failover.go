// Package scenarios holds the lab scenarios: Go tests that boot the IPVS
// kernel under qemu (through package lab) and prove PeerLVS's claims there.
// The helpers in this file build the shared topologies; they run only inside
// the lab guest and must never be imported by the product.
package scenarios

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/deploy/lab/traffic"
)

// Addresses of the two-director DR topology. Everything lives on one flooding
// front LAN, as in a classic LVS-DR set-up; the directors also share a private
// sync LAN, as keepalived's lvs_sync_daemon interface would be.
const (
	vip        = "10.0.0.50"
	vipPort    = 80
	sharedMAC  = "02:00:5e:00:01:32" // the VRRP-style virtual MAC both directors carry
	clientAddr = "10.0.0.100/24"

	// The NAT topology's back LAN: the real servers' default gateway is one
	// address and MAC that every director carries, so a reply reaches every
	// director and the filter's reply rules pick the one that owns the flow.
	backGateway = "10.2.0.1"
	backNet     = "10.2.0.0/24"
	backMAC     = "02:00:5e:00:02:01"

	// The IPv6 topology adds these on the same front LAN: the VIP, the
	// client, directors fd00::1.. and real servers fd00::11...
	vip6        = "fd00::50"
	clientAddr6 = "fd00::100/64"

	// The tunnel topology's real servers are on another network, behind a
	// router that also links the front LAN.
	farNet      = "10.3.0.0/24"
	routerFront = "10.0.0.254"
	routerFar   = "10.3.0.254"
)

// topology chooses how the directors reach the real servers.
type topology struct {
	// nat puts the real servers behind the directors on a back LAN (IPVS
	// masquerading) instead of beside them on the front LAN (direct
	// routing).
	nat bool
	// udp adds a UDP service on the same VIP and port, served by the same
	// real servers.
	udp bool
	// servers is the number of real servers; 2 when 0.
	servers int
	// declared leaves the IPVS services to saru's services: section: the
	// directors get no ipvsadm configuration, and every real server also
	// answers GET /health on healthPort for saru's HTTP checks.
	declared bool
	// sense is saru's sense; addrport when empty.
	sense string
	// detect is saru's failure_detection; fleetDetect when zero.
	detect time.Duration
	// v6 adds IPv6: the VIP vip6, the client's, directors' and real
	// servers' addresses beside the IPv4 ones (the sync LAN stays IPv4).
	v6 bool
	// tun puts the real servers on another network (farNet) behind a
	// router, reached by IP-in-IP (ipip forwarding); they answer the
	// clients straight through the router.
	tun bool
	// markPorts, when set, are TCP ports to the VIP that every director
	// marks with markFWMark before IPVS sees them, for a fwmark service.
	markPorts []int
}

// markFWMark is the firewall mark of topology.markPorts.
const markFWMark = 1

// healthPort is the real servers' HTTP health endpoint (declared
// topologies only).
const healthPort = 8080

func (tp topology) serverCount() int {
	if tp.servers == 0 {
		return 2
	}
	return tp.servers
}

func (tp topology) String() string {
	s := "DR"
	switch {
	case tp.nat:
		s = "NAT"
	case tp.tun:
		s = "TUN"
	}
	if tp.v6 {
		s += "+IPv6"
	}
	if tp.udp {
		s += "+UDP"
	}
	return s
}

// serverAddr is real server i's (1-based) address.
func (tp topology) serverAddr(i int) string {
	switch {
	case tp.nat:
		return fmt.Sprintf("10.2.0.%d", 10+i)
	case tp.tun:
		return fmt.Sprintf("10.3.0.%d", 10+i)
	}
	return fmt.Sprintf("10.0.0.%d", 10+i)
}

// serverAddr6 is real server i's (1-based) IPv6 address (v6 only).
func serverAddr6(i int) string { return fmt.Sprintf("fd00::%d", 10+i) }

// director describes one director namespace and how to (re)build it.
type director struct {
	name     string
	frontIP  string // CIDR
	syncIP   string // CIDR
	ns       *lab.NS
	frontDev string // outer veth end on the front hub, to cut the link
	syncDev  string // outer veth end on the sync LAN
	backDev  string // outer veth end on the back LAN (NAT only)
	proc     *lab.Proc
}

// drFleet is the topology of the failover scenarios: a client, directors that
// share the front MAC, and two DR real servers running the echo server.
type drFleet struct {
	topo      topology
	g         *lab.Guest
	client    *lab.NS
	directors []*director
	servers   []*lab.NS
	// echo are the real servers' echo-server processes, by index.
	echo []*lab.Proc
}

// startEcho starts real server i's (0-based) echo server.
func (f *drFleet) startEcho(i int) {
	rs := f.servers[i]
	wildcard := "0.0.0.0"
	if f.topo.v6 {
		wildcard = "[::]" // both families
	}
	args := []string{"echo-server", "-listen", fmt.Sprintf("%s:%d", wildcard, vipPort), "-name", rs.Name}
	if f.topo.udp {
		args = append(args, "-udp")
	}
	if f.topo.declared {
		args = append(args, "-health", fmt.Sprintf("0.0.0.0:%d", healthPort))
	}
	f.echo[i] = rs.Start("labtraffic", args...)
}

func newDRFleet(t *testing.T, g *lab.Guest, ndirectors int) *drFleet {
	return newLVSFleet(t, g, ndirectors, topology{})
}

// newLVSFleet builds the client, the real servers and ndirectors directors
// for topology tp.
func newLVSFleet(t *testing.T, g *lab.Guest, ndirectors int, tp topology) *drFleet {
	t.Helper()
	f := &drFleet{g: g, topo: tp}
	g.Hub("front")
	g.Switch("sync")
	if tp.nat {
		g.Hub("back")
	}
	f.client = g.NS("client")
	if tp.v6 {
		f.client.Plug("front", "eth0", "", clientAddr, clientAddr6)
	} else {
		f.client.Plug("front", "eth0", "", clientAddr)
	}
	if tp.tun {
		g.Switch("far")
		router := g.NS("router")
		router.Plug("front", "eth0", "", routerFront+"/24")
		router.Plug("far", "eth1", "", routerFar+"/24")
		router.Sysctl("net.ipv4.ip_forward", "1")
		// The real servers' replies come from the VIP, which the
		// router's own routes place on the front LAN.
		for _, dev := range []string{"all", "default", "eth0", "eth1"} {
			router.Sysctl("net.ipv4.conf."+dev+".rp_filter", "0")
		}
		g.Sh("modprobe ipip")
	}
	for i := 1; i <= tp.serverCount(); i++ {
		rs := g.NS(fmt.Sprintf("rs%d", i))
		switch {
		case tp.nat:
			rs.Plug("back", "eth0", "", tp.serverAddr(i)+"/24")
			rs.NATRealServer(backGateway)
		case tp.tun:
			rs.Plug("far", "eth0", "", tp.serverAddr(i)+"/24")
			rs.TunRealServer(routerFar, vip+"/32")
		case tp.v6:
			rs.Plug("front", "eth0", "", tp.serverAddr(i)+"/24", serverAddr6(i)+"/64")
			rs.DRRealServer(vip+"/32", vip6+"/128")
		default:
			rs.Plug("front", "eth0", "", tp.serverAddr(i)+"/24")
			rs.DRRealServer(vip + "/32")
		}
		f.servers = append(f.servers, rs)
		f.echo = append(f.echo, nil)
		f.startEcho(i - 1)
	}
	for i := 1; i <= ndirectors; i++ {
		d := &director{
			name:    fmt.Sprintf("d%d", i),
			frontIP: fmt.Sprintf("10.0.0.%d/24", i),
			syncIP:  fmt.Sprintf("10.1.0.%d/24", i),
		}
		f.directors = append(f.directors, d)
		f.buildDirector(t, d)
	}
	return f
}

// id is d's number: 1 for the first director.
func (f *drFleet) id(d *director) int {
	for i, x := range f.directors {
		if x == d {
			return i + 1
		}
	}
	return 0
}

// buildDirector creates (or, after a reboot, recreates) a director namespace
// with the IPVS service configured but without the VIP: VRRP gives the VIP
// only to the active director.
func (f *drFleet) buildDirector(t *testing.T, d *director) {
	t.Helper()
	d.ns = f.g.NS(d.name)
	if f.topo.v6 {
		// Every director carries the same MAC, hence the same link-local
		// address, and the VIP: duplicate address detection would fail
		// them all.
		d.ns.Sysctl("net.ipv6.conf.all.accept_dad", "0")
		d.ns.Sysctl("net.ipv6.conf.default.accept_dad", "0")
		d.frontDev = d.ns.Plug("front", "eth0", sharedMAC, d.frontIP, fmt.Sprintf("fd00::%d/64", f.id(d)))
	} else {
		d.frontDev = d.ns.Plug("front", "eth0", sharedMAC, d.frontIP)
	}
	if f.topo.tun {
		d.ns.Sh("ip route add %s via %s", farNet, routerFront)
	}
	d.syncDev = d.ns.Plug("sync", "eth1", "", d.syncIP)
	method := "-g"
	if f.topo.nat {
		d.backDev = d.ns.Plug("back", "eth2", backMAC, backGateway+"/24")
		// NAT replies are forwarded from the back LAN to the client.
		d.ns.Sysctl("net.ipv4.ip_forward", "1")
		method = "-m"
	}
	if len(f.topo.markPorts) > 0 {
		// As an operator's mangle rule would: after saru's filter (which
		// leaves no mark of its own), before IPVS.
		var ports []string
		for _, p := range f.topo.markPorts {
			ports = append(ports, fmt.Sprint(p))
		}
		d.ns.Sh(`nft add table ip labmark && nft add chain ip labmark pre '{ type filter hook prerouting priority -150; }' && nft add rule ip labmark pre ip daddr %s tcp dport '{ %s }' meta mark set %d`,
			vip, strings.Join(ports, ", "), markFWMark)
	}
	if f.topo.declared {
		return // saru declares the services
	}
	// With a shared MAC on a hub the standby receives frames for the VIP
	// too; without the VIP configured it drops them.
	protos := []string{"-t"}
	if f.topo.udp {
		protos = append(protos, "-u")
	}
	for _, p := range protos {
		d.ns.Sh("ipvsadm -A %s %s:%d -s rr && ipvsadm -a %[1]s %[2]s:%[3]d -r %[4]s:%[3]d %[6]s && ipvsadm -a %[1]s %[2]s:%[3]d -r %[5]s:%[3]d %[6]s",
			p, vip, vipPort, f.topo.serverAddr(1), f.topo.serverAddr(2), method)
	}
}

// reboot destroys a director's namespace, and with it every IPVS connection
// its kernel held, then builds it again as a freshly booted machine.
func (f *drFleet) reboot(t *testing.T, d *director) {
	t.Helper()
	f.g.Sh("ip netns del %s", d.name)
	// The namespace itself may live on for a while (an orphaned socket
	// still retransmitting holds it), and with it the veth pairs whose names
	// the rebuilt director reuses: remove them from this side.
	for _, dev := range []string{d.frontDev, d.syncDev, d.backDev} {
		if dev != "" {
			_, _ = f.g.Try("ip link del %s", dev)
		}
	}
	f.buildDirector(t, d)
}

func (f *drFleet) takeVIP(t *testing.T, d *director) {
	t.Helper()
	d.ns.Sh("ip addr add %s/32 dev eth0", vip)
	if f.topo.v6 {
		// Deprecated at once (preferred_lft 0): the VIP still receives,
		// but the director never picks it as the source of its own
		// connections, the health checks', whose answers would otherwise
		// go to the real server's own copy of the VIP.
		d.ns.Sh("ip addr add %s/128 dev eth0 nodad preferred_lft 0", vip6)
	}
}

func (f *drFleet) dropVIP(t *testing.T, d *director) {
	t.Helper()
	d.ns.Sh("ip addr del %s/32 dev eth0", vip)
	if f.topo.v6 {
		d.ns.Sh("ip addr del %s/128 dev eth0", vip6)
	}
}

// holder drives `labtraffic hold` in the client namespace.
type holder struct {
	p *lab.Proc
}

func startHolder(t *testing.T, client *lab.NS, conns int, interval time.Duration, extra ...string) *holder {
	t.Helper()
	return startHolderTo(t, client, fmt.Sprintf("%s:%d", vip, vipPort), conns, interval, extra...)
}

// startHolderTo is startHolder to another target.
func startHolderTo(t *testing.T, client *lab.NS, target string, conns int, interval time.Duration, extra ...string) *holder {
	t.Helper()
	args := append([]string{"hold",
		"-target", target,
		"-conns", fmt.Sprint(conns),
		"-interval", interval.String(),
		"-stall", "1s",
		"-duration", "15m"}, extra...)
	return &holder{p: client.Start("labtraffic", args...)}
}

func (h *holder) report(t *testing.T) traffic.Report {
	t.Helper()
	if err := h.p.Send("report"); err != nil {
		t.Fatalf("ask the client for a report: %v", err)
	}
	for {
		line, err := h.p.Line(10 * time.Second)
		if err != nil {
			t.Fatalf("read the client's report: %v", err)
		}
		if !strings.HasPrefix(strings.TrimSpace(line), "{") {
			continue
		}
		var r traffic.Report
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("decode the client's report %q: %v", line, err)
		}
		return r
	}
}

// waitOpen waits until the client has all its connections open.
func (h *holder) waitOpen(t *testing.T, want int, within time.Duration) traffic.Report {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := h.report(t)
		if r.Connecting == 0 || time.Now().After(deadline) {
			if r.Open != want {
				why := map[string]int{}
				for _, c := range r.PerConn {
					if c.State == traffic.StateNeverOpened || c.State == traffic.StateBroken {
						why[c.Err]++
					}
				}
				t.Fatalf("only %d of %d client connections opened (%d never opened, %d broken): %v", r.Open, want, r.NeverOpened, r.Broken, why)
			}
			return r
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stepResult is one row of a failover table.
type stepResult struct {
	Step       string  `json:"step"`
	Conns      int     `json:"conns"`
	Survived   int     `json:"survived"`
	Broken     int     `json:"broken"`
	MaxStallMS float64 `json:"max_stall_ms"`
}

func (s stepResult) String() string {
	return fmt.Sprintf("%-34s %3d/%-3d survive  %4d broken  longest stall %6.0f ms", s.Step, s.Survived, s.Conns, s.Broken, s.MaxStallMS)
}

// step records the client's view after an event: connections still alive
// out of those held, and the longest stall since the previous step.
func step(t *testing.T, h *holder, name string, total int, settle time.Duration) stepResult {
	t.Helper()
	time.Sleep(settle)
	r := h.report(t)
	s := stepResult{Step: name, Conns: total, Survived: r.Open, Broken: r.Broken, MaxStallMS: r.IntervalMaxStallMS}
	t.Logf("%s", s)
	return s
}

// syncMode is how directors share connection state in a failover scenario:
// the stock kernel daemons (the baseline) or syncd.
type syncMode interface {
	// name labels the mode in tables.
	name() string
	// activate makes d the director that carries the traffic.
	activate(t *testing.T, f *drFleet, d *director)
	// standby makes d a standby that must be ready to take over; for a
	// freshly booted director it returns when d is ready to serve.
	standby(t *testing.T, f *drFleet, d *director)
	// down stops whatever the mode runs on d, as a crash would.
	down(t *testing.T, f *drFleet, d *director)
}

// normalizeSpaces folds runs of white space, so that column-aligned tool
// output can be compared with expected lines.
func normalizeSpaces(s string) string { return strings.Join(strings.Fields(s), " ") }

func itoa(i int) string { return fmt.Sprint(i) }
