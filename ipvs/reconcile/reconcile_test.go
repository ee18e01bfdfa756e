package reconcile

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/ipvs"
)

var (
	web  = ipvs.Service{Protocol: ipvs.TCP, Address: netip.MustParseAddr("192.0.2.10"), Port: 80, Scheduler: "wlc"}
	dns  = ipvs.Service{Protocol: ipvs.UDP, Address: netip.MustParseAddr("192.0.2.10"), Port: 53, Scheduler: "rr"}
	mark = ipvs.Service{FWMark: 7, Scheduler: "sh"}
	web6 = ipvs.Service{Protocol: ipvs.TCP, Address: netip.MustParseAddr("2001:db8::10"), Port: 80}
)

func rs(addr string, port, weight uint16) ipvs.Destination {
	return ipvs.Destination{Address: netip.MustParseAddr(addr), Port: port, Weight: weight, Forward: ipvs.ForwardRoute}
}

func lines(cs []Change) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(c.String())
		b.WriteString("\n")
	}
	return b.String()
}

func TestPlan(t *testing.T) {
	all := func(Key) bool { return true }
	none := func(Key) bool { return false }
	persistent := web
	persistent.Timeout, persistent.Netmask = 300*time.Second, 24
	withMask := func(s ipvs.Service, n int) ipvs.Service { s.Netmask = n; return s }
	onePerClient, onePerClient6 := web, web6
	onePerClient.Timeout, onePerClient6.Timeout = 300*time.Second, 300*time.Second
	tunnel := rs("10.0.0.2", 80, 1)
	tunnel.Forward = ipvs.ForwardTunnel
	tests := []struct {
		name       string
		want, have []Virtual
		managed    func(Key) bool
		plan       string
		err        string
	}{
		{name: "nothing to do",
			want: []Virtual{{web, []ipvs.Destination{rs("10.0.0.1", 80, 1)}}},
			have: []Virtual{{web, []ipvs.Destination{rs("10.0.0.1", 80, 1)}}},
			plan: ""},
		{name: "empty scheduler is the default",
			want: []Virtual{{ipvs.Service{Protocol: ipvs.TCP, Address: web.Address, Port: 80}, nil}},
			have: []Virtual{{web, nil}},
			plan: ""},
		{name: "new service with its real servers, added before anything else",
			want: []Virtual{{web, []ipvs.Destination{rs("10.0.0.2", 80, 1), rs("10.0.0.1", 80, 1)}}, {dns, []ipvs.Destination{rs("10.0.0.1", 53, 1)}}},
			have: []Virtual{{web, []ipvs.Destination{rs("10.0.0.2", 80, 1), rs("10.0.0.1", 80, 1)}}},
			plan: "add service udp 192.0.2.10:53\nadd real server udp 192.0.2.10:53 -> 10.0.0.1:53\n"},
		{name: "weights, forwarding and thresholds edited in place; a real server added and one removed",
			want: []Virtual{{web, []ipvs.Destination{rs("10.0.0.1", 80, 0), tunnel, rs("10.0.0.4", 80, 1)}}},
			have: []Virtual{{web, []ipvs.Destination{rs("10.0.0.1", 80, 1), rs("10.0.0.2", 80, 1), rs("10.0.0.3", 80, 1)}}},
			plan: "add real server tcp 192.0.2.10:80 -> 10.0.0.4:80\n" +
				"edit real server tcp 192.0.2.10:80 -> 10.0.0.1:80 (weight 1 -> 0)\n" +
				"edit real server tcp 192.0.2.10:80 -> 10.0.0.2:80 (forwarding route -> tunnel)\n" +
				"remove real server tcp 192.0.2.10:80 -> 10.0.0.3:80\n"},
		{name: "scheduler and persistence edited in place, not re-created",
			want: []Virtual{{persistent, nil}},
			have: []Virtual{{ipvs.Service{Protocol: ipvs.TCP, Address: web.Address, Port: 80, Scheduler: "rr"}, nil}},
			plan: "edit service tcp 192.0.2.10:80 (scheduler rr -> wlc, persistence 0s -> 5m0s, persistence netmask /32 -> /24)\n"},
		{name: "one client per template is the kernel's full mask",
			want: []Virtual{{onePerClient, nil}, {onePerClient6, nil}},
			have: []Virtual{{withMask(onePerClient, 32), nil}, {withMask(onePerClient6, 128), nil}},
			plan: ""},
		{name: "an undeclared service saru manages is removed last",
			want:    []Virtual{{web, []ipvs.Destination{rs("10.0.0.5", 80, 1)}}},
			have:    []Virtual{{dns, []ipvs.Destination{rs("10.0.0.1", 53, 1)}}, {web, nil}},
			managed: all,
			plan:    "add real server tcp 192.0.2.10:80 -> 10.0.0.5:80\nremove service udp 192.0.2.10:53\n"},
		{name: "a service saru does not manage is never touched",
			want:    nil,
			have:    []Virtual{{dns, []ipvs.Destination{rs("10.0.0.1", 53, 1)}}, {mark, nil}},
			managed: none,
			plan:    ""},
		{name: "fwmark and IPv6 services are their own keys",
			want: []Virtual{{mark, nil}, {web6, []ipvs.Destination{rs("2001:db8:1::1", 80, 1)}}},
			have: []Virtual{{ipvs.Service{FWMark: 7, Address: netip.MustParseAddr("::"), Scheduler: "sh"}, nil}},
			plan: "add service tcp [2001:db8::10]:80\nadd service fwmark 7\nadd real server tcp [2001:db8::10]:80 -> [2001:db8:1::1]:80\n"},
		{name: "a service declared twice",
			want: []Virtual{{web, nil}, {web, nil}},
			err:  "service tcp 192.0.2.10:80 declared twice"},
		{name: "a real server declared twice",
			want: []Virtual{{web, []ipvs.Destination{rs("10.0.0.1", 80, 1), rs("10.0.0.1", 80, 2)}}},
			err:  "real server 10.0.0.1:80 declared twice"},
		{name: "a real server of the other family",
			want: []Virtual{{web, []ipvs.Destination{rs("2001:db8:1::1", 80, 1)}}},
			err:  "real server [2001:db8:1::1]:80 is of the other address family"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Plan(tc.want, tc.have, tc.managed)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := lines(got); s != tc.plan {
				t.Errorf("plan:\n%s\nwant:\n%s", s, tc.plan)
			}
		})
	}
}

// TestPlanConverges applies a plan to the state it was made for and
// checks that planning again finds nothing to do.
func TestPlanConverges(t *testing.T) {
	have := []Virtual{
		{web, []ipvs.Destination{rs("10.0.0.1", 80, 1), rs("10.0.0.2", 80, 1)}},
		{dns, []ipvs.Destination{rs("10.0.0.1", 53, 1)}},
		{mark, nil},
	}
	want := []Virtual{
		{web, []ipvs.Destination{rs("10.0.0.2", 80, 3), rs("10.0.0.3", 80, 1)}},
		{web6, []ipvs.Destination{rs("2001:db8:1::1", 80, 1)}},
		{mark, []ipvs.Destination{rs("10.0.0.9", 0, 1)}},
	}
	managed := func(k Key) bool { return k == KeyOf(dns) }
	plan, err := Plan(want, have, managed)
	if err != nil {
		t.Fatal(err)
	}
	state := map[Key]*Virtual{}
	for i := range have {
		v := have[i]
		state[KeyOf(v.Service)] = &v
	}
	for _, c := range plan {
		k := KeyOf(c.Service)
		switch c.Op {
		case AddService:
			if state[k] != nil {
				t.Fatalf("%v: exists", c)
			}
			state[k] = &Virtual{Service: c.Service}
		case EditService:
			state[k].Service = c.Service
		case AddDest:
			state[k].Dests = append(state[k].Dests, c.Dest)
		case EditDest, DelDest:
			ds := state[k].Dests[:0]
			for _, d := range state[k].Dests {
				if destKeyOf(d) != destKeyOf(c.Dest) {
					ds = append(ds, d)
				}
			}
			if c.Op == EditDest {
				ds = append(ds, c.Dest)
			}
			state[k].Dests = ds
		case DelService:
			delete(state, k)
		}
	}
	var after []Virtual
	for _, v := range state {
		after = append(after, *v)
	}
	again, err := Plan(want, after, managed)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 0 {
		t.Errorf("after applying the plan, still:\n%s", lines(again))
	}
	if _, ok := state[KeyOf(dns)]; ok {
		t.Error("the managed undeclared service survived")
	}
}
