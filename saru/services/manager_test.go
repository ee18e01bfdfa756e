package services

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/ipvs"
	"github.com/peerlvs/peerlvs/ipvs/reconcile"
	"github.com/peerlvs/peerlvs/saru/health"
	"github.com/peerlvs/peerlvs/saru/verdict"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// net is an in-memory fleet: messages between the directors' gossips,
// probes that answer per director (so one director's path can break).
type fleetNet struct {
	mu      sync.Mutex
	gossips map[string]*verdict.Gossip
	// down: real server address -> directors that cannot reach it
	// ("*": nobody can).
	down map[netip.Addr][]string
}

type port struct {
	n    *fleetNet
	name string
}

func (p port) Send(to string, msg []byte) error {
	p.n.mu.Lock()
	g := p.n.gossips[to]
	p.n.mu.Unlock()
	if g == nil {
		return errors.New("no such director")
	}
	return g.Deliver(slices.Clone(msg))
}

func (p port) Peers() []string {
	p.n.mu.Lock()
	defer p.n.mu.Unlock()
	var out []string
	for name := range p.n.gossips {
		if name != p.name {
			out = append(out, name)
		}
	}
	return out
}

func (n *fleetNet) probe(self string) health.ProbeFunc {
	return func(ctx context.Context, s health.Spec, t health.Target) health.Result {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, who := range n.down[t.Addr.Addr()] {
			if who == "*" || who == self {
				return health.Result{Err: errors.New("refused"), Weight: -1}
			}
		}
		return health.Result{Up: true, Weight: -1}
	}
}

func (n *fleetNet) setDown(addr string, who ...string) {
	n.mu.Lock()
	n.down[netip.MustParseAddr(addr)] = who
	n.mu.Unlock()
}

type director struct {
	name   string
	kernel *reconcile.Fake
	mgr    *Manager
	logs   *observer.ObservedLogs
}

const fleetDecl = `
services:
  - address: 192.0.2.10:80
    check: {type: tcp, interval: 100ms, timeout: 50ms, fall: 2, rise: 2}
    fallback: {address: 10.1.0.9:80}
    reals:
      - {address: 10.1.0.1:80}
      - {address: 10.1.0.2:80}
      - {address: 10.1.0.3:80}
`

func startFleet(t *testing.T, ctx context.Context, names []string, decl []Service) (*fleetNet, []*director) {
	t.Helper()
	n := &fleetNet{gossips: map[string]*verdict.Gossip{}, down: map[netip.Addr][]string{}}
	var ds []*director
	for _, name := range names {
		board := verdict.NewBoard()
		g := verdict.NewGossip(name, 1, port{n, name}, board, 100*time.Millisecond, nopLog())
		mon := health.NewMonitor(n.probe(name), 0, nil)
		k := reconcile.NewFake()
		// A service set up by hand, which saru must leave alone.
		_ = k.AddService(ipvs.Service{Protocol: ipvs.TCP, Address: netip.MustParseAddr("192.0.2.99"), Port: 22})
		fleet := func() (bool, []string) {
			return true, slices.DeleteFunc(slices.Clone(names), func(s string) bool { return s == name })
		}
		core, logs := observer.New(zap.InfoLevel)
		m, err := NewManager(Config{Kernel: k, Monitor: mon, Gossip: g, Board: board, Self: name, Fleet: fleet, Tick: 20 * time.Millisecond,
			Logger: zap.New(core)})
		if err != nil {
			t.Fatal(err)
		}
		n.mu.Lock()
		n.gossips[name] = g
		n.mu.Unlock()
		m.Declare(decl)
		go mon.Run(ctx)
		go g.Run(ctx)
		go m.Run(ctx)
		ds = append(ds, &director{name, k, m, logs})
	}
	return n, ds
}

// weights reads a director's kernel: real server -> weight.
func weights(t *testing.T, k *reconcile.Fake) map[string]int {
	vs, err := reconcile.Read(k)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, v := range vs {
		for _, d := range v.Dests {
			out[v.Service.String()+" -> "+d.String()] = int(d.Weight)
		}
		if v.Service.Port == 22 {
			out["hand-made"] = 1
		}
	}
	return out
}

// eventually waits until every director's kernel holds want, and returns
// how long that took.
func eventually(t *testing.T, ds []*director, want map[string]int) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		same := true
		var got map[string]int
		for _, d := range ds {
			if got = weights(t, d.kernel); fmt.Sprint(got) != fmt.Sprint(want) {
				same = false
				break
			}
		}
		if same {
			return time.Since(start)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("kernels do not converge:\ngot  %v\nwant %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFleetAgrees(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	decl, err := Parse(decode(t, fleetDecl))
	if err != nil {
		t.Fatal(err)
	}
	n, ds := startFleet(t, ctx, []string{"d1", "d2", "d3"}, decl)
	svc := "tcp 192.0.2.10:80 -> "
	all := map[string]int{"hand-made": 1, svc + "10.1.0.1:80": 1, svc + "10.1.0.2:80": 1, svc + "10.1.0.3:80": 1}
	eventually(t, ds, all)

	// One real server stops: every director quiesces it.
	n.setDown("10.1.0.2", "*")
	quiesced := map[string]int{"hand-made": 1, svc + "10.1.0.1:80": 1, svc + "10.1.0.2:80": 0, svc + "10.1.0.3:80": 1}
	took := eventually(t, ds, quiesced)
	// fall 2 at 100ms, the gossip at once: well under a second.
	t.Logf("agreed on a down server in %v", took)
	n.setDown("10.1.0.2")
	eventually(t, ds, all)

	// Only d1 cannot reach 10.1.0.3: the fleet keeps it, d1 says why.
	n.setDown("10.1.0.3", "d1")
	time.Sleep(500 * time.Millisecond)
	eventually(t, ds, all)
	broken := 0
	for _, r := range ds[0].mgr.Status().Rows {
		if r.BrokenPath {
			broken++
			if r.Real != "10.1.0.3:80" || r.Verdicts["d1"] != "down" || r.Verdicts["d2"] != "up" {
				t.Fatalf("broken path row %+v", r)
			}
		}
	}
	if broken != 1 {
		t.Fatalf("%d broken paths on d1, want 1", broken)
	}
	// Once for 10.1.0.3. (A server coming back can show a broken path for
	// a moment too: the others' rise count may end before this one's.)
	rs3 := ds[0].logs.FilterMessageSnippet("its own path to it is suspect").
		FilterField(zap.String("real", "tcp 192.0.2.10:80 -> 10.1.0.3:80"))
	if n := rs3.Len(); n != 1 {
		t.Fatalf("d1 logged its broken path to 10.1.0.3 %d times, want once", n)
	}
	n.setDown("10.1.0.3")

	// All down: the fallback serves; one back: it is withdrawn.
	for _, a := range []string{"10.1.0.1", "10.1.0.2", "10.1.0.3"} {
		n.setDown(a, "*")
	}
	eventually(t, ds, map[string]int{"hand-made": 1, svc + "10.1.0.1:80": 0, svc + "10.1.0.2:80": 0, svc + "10.1.0.3:80": 0, svc + "10.1.0.9:80": 1})
	n.setDown("10.1.0.1")
	eventually(t, ds, map[string]int{"hand-made": 1, svc + "10.1.0.1:80": 1, svc + "10.1.0.2:80": 0, svc + "10.1.0.3:80": 0})
	for _, a := range []string{"10.1.0.2", "10.1.0.3"} {
		n.setDown(a)
	}
	eventually(t, ds, all)

	// A reload adds one real server and drops another; a service dropped
	// from the declaration goes, the hand-made one stays.
	decl2, err := Parse(decode(t, `
services:
  - address: 192.0.2.10:80
    check: {type: tcp, interval: 100ms, timeout: 50ms, fall: 2, rise: 2}
    fallback: {address: 10.1.0.9:80}
    reals:
      - {address: 10.1.0.1:80}
      - {address: 10.1.0.3:80}
      - {address: 10.1.0.4:80, weight: 5}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		d.mgr.Declare(decl2)
	}
	eventually(t, ds, map[string]int{"hand-made": 1, svc + "10.1.0.1:80": 1, svc + "10.1.0.3:80": 1, svc + "10.1.0.4:80": 5})
	for _, d := range ds {
		d.mgr.Declare(nil)
	}
	eventually(t, ds, map[string]int{"hand-made": 1})
}

// TestManagerRepairsForeignChange: a hand edit to a managed service is
// undone at the next verification.
func TestManagerRepairsForeignChange(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	decl, err := Parse(decode(t, fleetDecl))
	if err != nil {
		t.Fatal(err)
	}
	_, ds := startFleet(t, ctx, []string{"d1"}, decl)
	ds[0].mgr.cfg.Verify = 50 * time.Millisecond
	svc := "tcp 192.0.2.10:80 -> "
	all := map[string]int{"hand-made": 1, svc + "10.1.0.1:80": 1, svc + "10.1.0.2:80": 1, svc + "10.1.0.3:80": 1}
	eventually(t, ds, all)
	if err := ds[0].kernel.DelDestination(decl[0].Virtual, decl[0].Reals[0].Dest); err != nil {
		t.Fatal(err)
	}
	eventually(t, ds, all)
}

func nopLog() *zap.Logger { return zap.NewNop() }

// TestRemovedRealDrains: a real server dropped at a reload, or a fallback
// no longer needed, stays at weight 0 while the kernel counts connections
// to it (deleting it would drop their packets), and goes after.
func TestRemovedRealDrains(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	decl, err := Parse(decode(t, fleetDecl))
	if err != nil {
		t.Fatal(err)
	}
	_, ds := startFleet(t, ctx, []string{"d1"}, decl)
	d := ds[0]
	d.mgr.cfg.Verify = 50 * time.Millisecond
	svc := "tcp 192.0.2.10:80 -> "
	eventually(t, ds, map[string]int{"hand-made": 1, svc + "10.1.0.1:80": 1, svc + "10.1.0.2:80": 1, svc + "10.1.0.3:80": 1})
	// Two connections are bound to 10.1.0.2.
	busy := decl[0].Reals[1].Dest
	busy.ActiveConns = 2
	if err := d.kernel.UpdateDestination(decl[0].Virtual, busy); err != nil {
		t.Fatal(err)
	}
	decl2, err := Parse(decode(t, strings.Replace(fleetDecl, "      - {address: 10.1.0.2:80}\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	d.mgr.Declare(decl2)
	draining := map[string]int{"hand-made": 1, svc + "10.1.0.1:80": 1, svc + "10.1.0.2:80": 0, svc + "10.1.0.3:80": 1}
	eventually(t, ds, draining)
	time.Sleep(200 * time.Millisecond)
	eventually(t, ds, draining) // still there after several verifications
	busy.ActiveConns, busy.Weight = 0, 0
	if err := d.kernel.UpdateDestination(decl[0].Virtual, busy); err != nil {
		t.Fatal(err)
	}
	eventually(t, ds, map[string]int{"hand-made": 1, svc + "10.1.0.1:80": 1, svc + "10.1.0.3:80": 1})
}
