package fitness

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/saru/health"
)

func TestJudge(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	type obs struct {
		at      float64
		fail    []string
		fit     bool
		changed bool
	}
	for _, tc := range []struct {
		name string
		obs  []obs
	}{
		{"starts fit", []obs{{0, nil, true, true}, {1, nil, true, false}}},
		{"starts unfit, no hold at start", []obs{{0, []string{"eth0"}, false, true}}},
		{"unfit at once", []obs{{0, nil, true, true}, {1, []string{"eth0: no carrier"}, false, true}}},
		{"fit only after the hold", []obs{{0, nil, true, true}, {1, []string{"x"}, false, true},
			{2, nil, false, false}, {11, nil, false, false}, {12, nil, true, true}}},
		{"a relapse restarts the hold", []obs{{0, []string{"x"}, false, true}, {1, nil, false, false},
			{9, []string{"x"}, false, false}, {10, nil, false, false}, {19, nil, false, false}, {20, nil, true, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := Judge{Hold: 10 * time.Second}
			for i, o := range tc.obs {
				v, changed := j.Observe(at(o.at), o.fail)
				if v.Fit != o.fit || changed != o.changed {
					t.Fatalf("observation %d at %vs: fit %v changed %v, want %v %v (%q)", i, o.at, v.Fit, changed, o.fit, o.changed, v.Reason)
				}
				if !v.Fit && v.Reason == "" {
					t.Fatalf("observation %d: unfit without a reason", i)
				}
				if changed && !v.Since.Equal(at(o.at)) {
					t.Fatalf("observation %d: since %v", i, v.Since)
				}
			}
		})
	}
}

func TestParse(t *testing.T) {
	need := 3
	for _, tc := range []struct {
		name string
		f    FileConfig
		want string
	}{
		{"empty is fine", FileConfig{}, ""},
		{"full", FileConfig{Interfaces: []string{"eth0", "eth2"}, PingNodes: []string{"10.0.0.254", "2001:db8::1"},
			Command: []string{"/usr/local/bin/uplink"}, Hold: "30s"}, ""},
		{"bad interface", FileConfig{Interfaces: []string{"an-interface-name-too-long"}}, "fitness.interfaces[0]"},
		{"twice", FileConfig{Interfaces: []string{"eth0", "eth0"}}, "listed twice"},
		{"bad ping node", FileConfig{PingNodes: []string{"router"}}, "fitness.ping_nodes[0]"},
		{"need too many", FileConfig{PingNodes: []string{"10.0.0.1"}, PingNeed: &need}, "fitness.ping_need: 3 out of range"},
		{"need without nodes", FileConfig{PingNeed: &need}, "set without ping_nodes"},
		{"timeout above interval", FileConfig{PingNodes: []string{"10.0.0.1"}, PingInterval: "1s", PingTimeout: "2s"}, "fitness.ping_timeout"},
		{"bad hold", FileConfig{Hold: "soon"}, "fitness.hold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.f)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

type fakeLinks struct {
	mu   sync.Mutex
	down map[string]string
}

func (f *fakeLinks) Up(name string) (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if why, ok := f.down[name]; ok {
		return false, why
	}
	return true, ""
}

func (f *fakeLinks) set(name, why string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if why == "" {
		delete(f.down, name)
	} else {
		f.down[name] = why
	}
}

// TestTracker: a link going down makes the director unfit within a poll,
// ping nodes count by ping_need, and fitness comes back only after the
// hold.
func TestTracker(t *testing.T) {
	links := &fakeLinks{down: map[string]string{}}
	var mu sync.Mutex
	silent := map[netip.Addr]bool{}
	probe := func(ctx context.Context, s health.Spec, tg health.Target) health.Result {
		mu.Lock()
		defer mu.Unlock()
		if s.Kind == health.KindICMP && silent[tg.Addr.Addr()] {
			return health.Result{Err: errors.New("no echo reply"), Weight: -1}
		}
		return health.Result{Up: true, Weight: -1}
	}
	a, b := netip.MustParseAddr("10.0.0.254"), netip.MustParseAddr("10.0.0.253")
	cfg, err := Parse(FileConfig{Interfaces: []string{"eth0"}, PingNodes: []string{a.String(), b.String()},
		PingInterval: "100ms", PingTimeout: "50ms", PingFall: 1, PingRise: 1, Hold: "300ms"})
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTracker(cfg, links, probe)
	tr.poll = 20 * time.Millisecond
	changes := make(chan Verdict, 16)
	tr.OnChange = func(v Verdict) { changes <- v }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	next := func(fit bool, within time.Duration) Verdict {
		t.Helper()
		select {
		case v := <-changes:
			if v.Fit != fit {
				t.Fatalf("verdict %+v, want fit=%v", v, fit)
			}
			return v
		case <-time.After(within):
			t.Fatalf("no change to fit=%v within %v; status %+v", fit, within, tr.Status())
		}
		return Verdict{}
	}
	next(true, time.Second)
	start := time.Now()
	links.set("eth0", "no carrier")
	if v := next(false, time.Second); !strings.Contains(v.Reason, "interface eth0: no carrier") || !v.LinkDown {
		t.Fatalf("reason %q, link down %v", v.Reason, v.LinkDown)
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("a dead link noticed after %v", d)
	}
	start = time.Now()
	links.set("eth0", "")
	// The link back is news while the hold still keeps it unfit.
	if v := next(false, time.Second); v.LinkDown {
		t.Fatalf("link back: %+v", v)
	}
	next(true, 2*time.Second)
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("fit again after %v, before the hold of 300ms", d)
	}
	// One of two ping nodes silent: ping_need 1 is still met.
	mu.Lock()
	silent[a] = true
	mu.Unlock()
	time.Sleep(300 * time.Millisecond)
	if st := tr.Status(); !st.Fit {
		t.Fatalf("unfit with one ping node answering: %+v", st)
	}
	mu.Lock()
	silent[b] = true
	mu.Unlock()
	if v := next(false, 2*time.Second); !strings.Contains(v.Reason, "0 of 2 ping nodes answer") || v.LinkDown {
		t.Fatalf("reason %q, link down %v", v.Reason, v.LinkDown)
	}
	// A link that goes down while already unfit is news: the others
	// need not wait for this director's handover any more.
	links.set("eth0", "no carrier")
	select {
	case v := <-changes:
		if v.Fit || !v.LinkDown {
			t.Fatalf("verdict %+v, want unfit with the link down", v)
		}
	case <-time.After(time.Second):
		t.Fatalf("no change for a link down while unfit; status %+v", tr.Status())
	}
}
