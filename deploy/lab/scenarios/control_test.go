package scenarios

import (
	"errors"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/ipvs"
)

type controlResult struct {
	IpvsadmLn        string               `json:"ipvsadm_ln"`
	Services         []ipvs.Service       `json:"services"`
	Destinations     [][]ipvs.Destination `json:"destinations"`
	Daemons          []ipvs.DaemonConfig  `json:"daemons"`
	IpvsadmDaemon    string               `json:"ipvsadm_daemon"`
	ByIpvsadm        []ipvs.DaemonConfig  `json:"by_ipvsadm"`
	ByIpvsadmText    string               `json:"by_ipvsadm_text"`
	AfterStop        []ipvs.DaemonConfig  `json:"after_stop"`
	AfterStopIpvsadm string               `json:"after_stop_ipvsadm"`
	Errors           map[string]string    `json:"errors"`
	ErrorIs          map[string]bool      `json:"error_is"`
	Version          string               `json:"version"`
}

var (
	vipAddr = netip.MustParseAddr(vip)
	rs1Addr = netip.MustParseAddr("10.0.0.11")
	rs2Addr = netip.MustParseAddr("10.0.0.12")
)

// TestControl drives the kernel's IPVS control plane through package ipvs and
// takes ipvsadm, run in the same guest, as the judge.
func TestControl(t *testing.T) {
	tcp := ipvs.Service{Protocol: ipvs.TCP, Address: vipAddr, Port: 80, Scheduler: "wrr"}
	udp := ipvs.Service{Protocol: ipvs.UDP, Address: vipAddr, Port: 53, Scheduler: "rr"}
	fwm := ipvs.Service{FWMark: 7, Scheduler: "sh"}
	persist := ipvs.Service{Protocol: ipvs.TCP, Address: vipAddr, Port: 443, Scheduler: "rr", Timeout: 300e9, Netmask: 24}
	v6 := ipvs.Service{Protocol: ipvs.TCP, Address: netip.MustParseAddr("fd00::50"), Port: 80, Scheduler: "rr"}
	services := []ipvs.Service{tcp, udp, fwm, persist, v6}
	master := ipvs.DaemonConfig{State: ipvs.Master, Interface: "sync0", SyncID: 7, MaxLen: 1400, Group: netip.MustParseAddr("239.1.2.3"), Port: 9000, TTL: 2}
	backup := ipvs.DaemonConfig{State: ipvs.Backup, Interface: "sync0", SyncID: 7, Group: netip.MustParseAddr("239.1.2.3"), Port: 9001}

	res := lab.Run(t, lab.Options{}, func(t *testing.T, g *lab.Guest) controlResult {
		d := g.NS("d1")
		d.Sh("ip link add sync0 type dummy && ip link set sync0 up multicast on && ip addr add 10.1.0.1/24 dev sync0")
		h, err := ipvs.OpenNamed("d1")
		if err != nil {
			t.Fatalf("open IPVS in d1: %v", err)
		}
		defer h.Close()
		r := controlResult{Errors: map[string]string{}, ErrorIs: map[string]bool{}}
		if r.Version, _, err = h.Info(); err != nil {
			t.Fatalf("info: %v", err)
		}
		for _, s := range services {
			if err := h.AddService(s); err != nil {
				t.Fatalf("%v", err)
			}
		}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("%v", err)
			}
		}
		must(h.AddDestination(tcp, ipvs.Destination{Address: rs1Addr, Port: 80, Weight: 1, Forward: ipvs.ForwardRoute}))
		must(h.AddDestination(tcp, ipvs.Destination{Address: rs2Addr, Port: 8080, Weight: 3, Forward: ipvs.ForwardMasq}))
		must(h.AddDestination(udp, ipvs.Destination{Address: rs1Addr, Port: 53, Weight: 2, Forward: ipvs.ForwardTunnel}))
		must(h.AddDestination(fwm, ipvs.Destination{Address: rs2Addr, Weight: 1, Forward: ipvs.ForwardRoute}))
		must(h.AddDestination(persist, ipvs.Destination{Address: rs1Addr, Port: 443, Weight: 1, Forward: ipvs.ForwardRoute}))
		must(h.AddDestination(v6, ipvs.Destination{Address: netip.MustParseAddr("fd00::11"), Port: 80, Weight: 5, Forward: ipvs.ForwardRoute}))
		// An update must be visible too, not just creation.
		must(h.UpdateDestination(tcp, ipvs.Destination{Address: rs1Addr, Port: 80, Weight: 4, Forward: ipvs.ForwardRoute}))

		r.IpvsadmLn = d.Sh("ipvsadm -Ln")
		if r.Services, err = h.Services(); err != nil {
			t.Fatalf("%v", err)
		}
		for _, s := range r.Services {
			ds, err := h.Destinations(s)
			if err != nil {
				t.Fatalf("%v", err)
			}
			r.Destinations = append(r.Destinations, ds)
		}

		must(h.StartDaemon(master))
		must(h.StartDaemon(backup))
		if r.Daemons, err = h.Daemons(); err != nil {
			t.Fatalf("%v", err)
		}
		r.IpvsadmDaemon = d.Sh("ipvsadm -L --daemon")

		check := func(name string, err, want error) {
			if err == nil {
				r.Errors[name] = "<nil>"
				return
			}
			r.Errors[name] = err.Error()
			r.ErrorIs[name] = errors.Is(err, want)
		}
		check("already running", h.StartDaemon(master), ipvs.ErrDaemonRunning)
		check("no such interface", h.StartDaemon(ipvs.DaemonConfig{State: ipvs.Master, Interface: "nosuch0"}), ipvs.ErrNoInterface)
		check("not multicast", h.StartDaemon(ipvs.DaemonConfig{State: ipvs.Master, Interface: "sync0", Group: netip.MustParseAddr("10.1.0.9")}), ipvs.ErrNotMulticast)

		must(h.StopDaemon(ipvs.Master))
		must(h.StopDaemon(ipvs.Backup))
		check("not running", h.StopDaemon(ipvs.Master), ipvs.ErrDaemonNotRunning)
		if r.AfterStop, err = h.Daemons(); err != nil {
			t.Fatalf("%v", err)
		}
		r.AfterStopIpvsadm = d.Sh("ipvsadm -L --daemon")

		// The other direction: what ipvsadm starts, Daemons must read back.
		d.Sh("ipvsadm --start-daemon master --mcast-interface sync0 --syncid 3 --mcast-group 239.9.9.9 --mcast-port 9999 --mcast-ttl 3 --sync-maxlen 1000")
		r.ByIpvsadmText = d.Sh("ipvsadm -L --daemon")
		if r.ByIpvsadm, err = h.Daemons(); err != nil {
			t.Fatalf("%v", err)
		}
		must(h.StopDaemon(ipvs.Master))

		// After the scenario the table must be empty again.
		must(h.Flush())
		if left, err := h.Services(); err != nil || len(left) != 0 {
			t.Fatalf("flush left %v (%v)", left, err)
		}
		return r
	})

	t.Logf("IPVS %s\n%s", res.Version, res.IpvsadmLn)
	// ipvsadm's view of the services must match what we configured.
	want := []string{
		"TCP  10.0.0.50:80 wrr",
		"-> 10.0.0.11:80 Route 4 0 0",
		"-> 10.0.0.12:8080 Masq 3 0 0",
		"UDP  10.0.0.50:53 rr",
		"-> 10.0.0.11:53 Tunnel 2 0 0",
		"FWM  7 sh",
		"-> 10.0.0.12:0 Route 1 0 0",
		"TCP  10.0.0.50:443 rr persistent 300 mask 255.255.255.0",
		"-> 10.0.0.11:443 Route 1 0 0",
		"TCP  [fd00::50]:80 rr",
		"-> [fd00::11]:80 Route 5 0 0",
	}
	got := normalizeSpaces(res.IpvsadmLn)
	for _, w := range want {
		if !strings.Contains(got, normalizeSpaces(w)) {
			t.Errorf("ipvsadm -Ln lacks %q", w)
		}
	}
	// Our own read-back must agree with what we configured.
	if len(res.Services) != len(services) {
		t.Errorf("Services() returned %d services, want %d: %+v", len(res.Services), len(services), res.Services)
	}
	for i, s := range res.Services {
		if len(res.Destinations[i]) == 0 {
			t.Errorf("service %+v: Destinations() returned none", s)
		}
	}
	// Daemons() must agree with ipvsadm -L --daemon, field by field.
	assertDaemonsMatch(t, res.Daemons, res.IpvsadmDaemon, 2)
	if !master.Matches(findDaemon(res.Daemons, ipvs.Master)) || !backup.Matches(findDaemon(res.Daemons, ipvs.Backup)) {
		t.Errorf("running daemons %+v do not match what was started (%+v, %+v)", res.Daemons, master, backup)
	}
	assertDaemonsMatch(t, res.ByIpvsadm, res.ByIpvsadmText, 1)
	if len(res.AfterStop) != 0 || strings.TrimSpace(res.AfterStopIpvsadm) != "" {
		t.Errorf("daemons left after stop: %+v / %q", res.AfterStop, res.AfterStopIpvsadm)
	}
	for _, name := range []string{"already running", "no such interface", "not multicast", "not running"} {
		if !res.ErrorIs[name] {
			t.Errorf("%s: got error %q, not the documented sentinel", name, res.Errors[name])
		} else {
			t.Logf("%s: %s", name, res.Errors[name])
		}
	}
}

func findDaemon(ds []ipvs.DaemonConfig, st ipvs.DaemonState) ipvs.DaemonConfig {
	for _, d := range ds {
		if d.State == st {
			return d
		}
	}
	return ipvs.DaemonConfig{}
}

// ipvsadm -L --daemon prints, per thread:
// "master sync daemon (mcast=sync0, syncid=7, maxlen=1400, group=239.1.2.3, port=9000, ttl=2)".
var daemonLine = regexp.MustCompile(`(master|backup) sync daemon \(([^)]*)\)`)

func assertDaemonsMatch(t *testing.T, ds []ipvs.DaemonConfig, text string, n int) {
	t.Helper()
	lines := daemonLine.FindAllStringSubmatch(text, -1)
	if len(lines) != n || len(ds) != n {
		t.Errorf("want %d daemons; ipvsadm lists %d, Daemons() %d:\n%s\n%+v", n, len(lines), len(ds), text, ds)
		return
	}
	var fromText, fromAPI []string
	for _, l := range lines {
		kv := map[string]string{}
		for _, f := range strings.Split(l[2], ",") {
			if k, v, ok := strings.Cut(strings.TrimSpace(f), "="); ok {
				kv[k] = v
			}
		}
		fromText = append(fromText, strings.Join([]string{l[1], kv["mcast"], kv["syncid"], kv["maxlen"], kv["group"], kv["port"], kv["ttl"]}, " "))
	}
	for _, d := range ds {
		fromAPI = append(fromAPI, strings.Join([]string{d.State.String(), d.Interface, itoa(int(d.SyncID)), itoa(int(d.MaxLen)), d.Group.String(), itoa(int(d.Port)), itoa(int(d.TTL))}, " "))
	}
	sort.Strings(fromText)
	sort.Strings(fromAPI)
	if strings.Join(fromText, "\n") != strings.Join(fromAPI, "\n") {
		t.Errorf("daemons differ:\nipvsadm: %q\nipvs:    %q", fromText, fromAPI)
	}
}
