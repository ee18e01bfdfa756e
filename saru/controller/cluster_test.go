package controller

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/saru/member"
)

type clusterNode struct {
	name   string
	node   *member.Node
	ctl    *Controller
	cancel context.CancelFunc
	done   chan struct{}
}

var testSettings = member.Settings{Buckets: 1024, Seed: 99, Sense: "addrport", VIPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}

func startNode(t *testing.T, name string, port int, seeds []string) (*clusterNode, error) {
	t.Helper()
	n, err := member.New(member.Config{Name: name, BindAddr: "127.0.0.1", BindPort: port, Seeds: seeds,
		Weight: 1, Settings: testSettings, Version: "test", RejoinInterval: time.Second})
	if err != nil {
		return nil, err
	}
	c, err := New(Config{Membership: n, Applier: &fakeApplier{}, Readiness: GraceReadiness{},
		Buckets: testSettings.Buckets, Seed: uint64(testSettings.Seed),
		HandoverStep: 50 * time.Millisecond, HandoverHold: 100 * time.Millisecond, ReadyPoll: 20 * time.Millisecond})
	if err != nil {
		n.Shutdown()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	cn := &clusterNode{name: name, node: n, ctl: c, cancel: cancel, done: make(chan struct{})}
	n.Start(ctx)
	go func() { defer close(cn.done); c.Run(ctx) }()
	return cn, nil
}

func (cn *clusterNode) kill() {
	cn.cancel()
	<-cn.done
	cn.node.Shutdown()
}

// settled reports whether cn's applied rules are exactly its share of an
// allocation over want (names of ready members), with no handover pending.
func (cn *clusterNode) settled(want []string) bool {
	m, _, view := cn.ctl.Map()
	var ready []string
	for _, v := range Eligible(view) {
		ready = append(ready, v.Name)
	}
	slices.Sort(ready)
	if !slices.Equal(ready, want) {
		return false
	}
	a := cn.ctl.Applied()
	return len(a.HandoverIn) == 0 && len(a.HandoverOut) == 0 && slices.Equal(a.Owned, m.BucketsOf(cn.name))
}

func waitAll(nodes []*clusterNode, want []string, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for time.Since(start) < limit {
		ok := true
		for _, n := range nodes {
			ok = ok && n.settled(want)
		}
		if ok {
			return time.Since(start), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("not settled on %v within %v", want, limit)
}

// TestClusterFailover runs 3 and 5 directors on loopback, kills one
// without leaving and measures how long the survivors take to reallocate,
// then restarts it and measures how long until it is ready and owns its
// share.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) { clusterFailover(t, n, 3) })
	}
}

func clusterFailover(t *testing.T, N, runs int) {
	var nodes []*clusterNode
	var names, seeds []string
	defer func() {
		for _, n := range nodes {
			if n != nil {
				n.kill()
			}
		}
	}()
	for i := range N {
		name := fmt.Sprintf("d%d", i+1)
		n, err := startNode(t, name, 0, seeds)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
		names = append(names, name)
		seeds = append(seeds, n.node.LocalAddr())
	}
	if _, err := waitAll(nodes, names, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var realloc, ready []time.Duration
	for r := range runs {
		victim := (r + 1) % N
		addr := nodes[victim].node.LocalAddr()
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		nodes[victim].kill()
		dead := nodes[victim]
		nodes[victim] = nil
		var survivors []*clusterNode
		var alive []string
		for _, n := range nodes {
			if n != nil {
				survivors = append(survivors, n)
				alive = append(alive, n.name)
			}
		}
		d, err := waitAll(survivors, alive, 5*time.Second)
		if err != nil {
			t.Fatalf("run %d: after killing %s: %v", r, dead.name, err)
		}
		realloc = append(realloc, d)

		// Same address and port: memberlist only lets a dead name come back
		// from elsewhere after DeadNodeReclaimTime.
		start := time.Now()
		var back *clusterNode
		for try := 0; try < 20 && back == nil; try++ {
			if back, err = startNode(t, dead.name, int(ap.Port()), seeds); err != nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if back == nil {
			t.Fatalf("run %d: restart %s: %v", r, dead.name, err)
		}
		nodes[victim] = back
		if _, err := waitAll(nodes, names, 5*time.Second); err != nil {
			t.Fatalf("run %d: after restarting %s: %v", r, dead.name, err)
		}
		ready = append(ready, time.Since(start))
	}
	p50max := func(ds []time.Duration) (time.Duration, time.Duration) {
		s := slices.Clone(ds)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2], s[len(s)-1]
	}
	rp, rm := p50max(realloc)
	yp, ym := p50max(ready)
	t.Logf("time to reallocation after a kill (N=%d, %d runs): p50 %v max %v", N, runs, rp.Round(time.Millisecond), rm.Round(time.Millisecond))
	t.Logf("time from restart to ready and owning (handover step+hold 150ms included): p50 %v max %v", yp.Round(time.Millisecond), ym.Round(time.Millisecond))
	if rm > 3*time.Second {
		t.Errorf("reallocation took %v, want < 3s", rm)
	}
}
