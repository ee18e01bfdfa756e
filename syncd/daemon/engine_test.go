package daemon

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/peerlvs/peerlvs/ipvs/procconn"
	"github.com/peerlvs/peerlvs/ipvs/synclink"
	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/peer"
	"github.com/peerlvs/peerlvs/syncd/table"
)

func testKeyring(t *testing.T, b byte) *peer.Keyring {
	t.Helper()
	key := make([]byte, peer.KeyLen)
	for i := range key {
		key[i] = b + byte(i)
	}
	k, err := peer.NewKeyring(1, map[uint8][]byte{1: key})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testNode is one engine with fake kernel and an in-memory transport.
type testNode struct {
	e      *engine
	tbl    *table.Table
	tap    *synclink.PipeWriter // write here = the kernel master sent it
	kernel *synclink.PipeReader // read here = the kernel backup got it
	tr     *MemTransport
	cancel context.CancelFunc
	done   chan error
}

func testConfig(id int, mode string) Config {
	c := Config{NodeID: id, KeyFile: "/nonexistent", SyncID: 1,
		Peer: PeerConfig{Mode: mode, Interface: "lo", Group: "239.255.77.1",
			AliveInterval: 20 * time.Millisecond, BulkWait: 150 * time.Millisecond}}
	return c.WithDefaults()
}

func startNode(t *testing.T, hub *MemHub, cfg Config, keys *peer.Keyring, procs func() ([]procconn.Entry, error), opts ...func(*KernelIO)) *testNode {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	tbl, err := table.New(table.Config{Self: table.NodeID(cfg.NodeID), Timeout: peer.KernelTimeout})
	if err != nil {
		t.Fatal(err)
	}
	tapR, tapW := synclink.NewPipe(1024)
	kR, kW := synclink.NewPipe(1024)
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, 0, byte(cfg.NodeID)}), 8848)
	tr := hub.Attach(addr)
	kio := KernelIO{Tap: tapR, Inject: kW, Conns: procs}
	for _, o := range opts {
		o(&kio)
	}
	e, err := newEngine(cfg, zaptest.NewLogger(t), tbl, keys, kio, tr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{e: e, tbl: tbl, tap: tapW, kernel: kR, tr: tr, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- e.run(ctx) }()
	t.Cleanup(n.stop)
	return n
}

func (n *testNode) stop() {
	n.cancel()
	<-n.done
	n.tr.Close()
	n.done <- nil // make stop idempotent
}

func testConn(i int) wire.Conn {
	return wire.Conn{
		Protocol: wire.ProtoTCP, Flags: wire.FlagDRoute, State: wire.TCPEstablished,
		CAddr: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), CPort: uint16(40000 + i),
		VAddr: netip.MustParseAddr("192.0.2.1"), VPort: 80,
		DAddr: netip.MustParseAddr("10.2.0.1"), DPort: 80, Timeout: 900,
	}
}

func kernelSends(t *testing.T, n *testNode, conns ...wire.Conn) {
	t.Helper()
	ds, err := wire.EncodeV1(1, conns, wire.DefaultMaxLen)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if err := n.tap.WriteFrame(d); err != nil {
			t.Fatal(err)
		}
	}
}

// kernelGets reads what was injected into n's kernel until want entries
// matching pred arrived.
func kernelGets(t *testing.T, n *testNode, want int, pred func(*wire.Conn) bool) []wire.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []wire.Conn
	buf := make([]byte, synclink.MaxFrame)
	for len(got) < want {
		k, err := n.kernel.ReadFrame(ctx, buf)
		if err != nil {
			t.Fatalf("kernel backup got %d of %d entries: %v", len(got), want, err)
		}
		m, err := wire.Decode(buf[:k])
		if err != nil {
			t.Fatalf("injected datagram does not decode: %v", err)
		}
		if m.SyncID != 1 || m.Version != 1 {
			t.Fatalf("injected datagram: syncid %d version %d", m.SyncID, m.Version)
		}
		for _, c := range m.Conns {
			if pred == nil || pred(&c) {
				got = append(got, c)
			}
		}
	}
	return got
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTappedEntryReachesPeerKernel(t *testing.T) {
	hub := NewMemHub()
	keys := testKeyring(t, 1)
	a := startNode(t, hub, testConfig(1, ModeMulticast), keys, nil)
	b := startNode(t, hub, testConfig(2, ModeMulticast), keys, nil)
	c := startNode(t, hub, testConfig(3, ModeMulticast), keys, nil)
	for _, n := range []*testNode{a, b, c} {
		waitFor(t, "ready", n.e.ready.Load)
	}
	want := testConn(1)
	kernelSends(t, a, want)
	for _, n := range []*testNode{b, c} {
		got := kernelGets(t, n, 1, nil)
		if !got[0].Equal(want) {
			t.Errorf("node %d kernel got %v, want %v", n.e.cfg.NodeID, got[0], want)
		}
		waitFor(t, "table entry", func() bool { return n.tbl.Len() == 1 })
		var owner table.NodeID
		n.tbl.ForEach(0, func(e *table.Entry) bool { owner = e.Owner; return true })
		if owner != 1 {
			t.Errorf("node %d: owner %d, want 1", n.e.cfg.NodeID, owner)
		}
	}
	// A's own kernel is not fed its own entry.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.kernel.ReadFrame(ctx, make([]byte, 65536)); err == nil {
		t.Error("node 1 injected its own entry into its own kernel")
	}
	waitFor(t, "node 1 counters", func() bool {
		s := a.e.Snapshot()
		return s.Loop.KernelEntriesIn == 1 && s.Loop.PeerFramesOut > 0
	})
}

func TestRestartedNodeGetsBulkAndBecomesReady(t *testing.T) {
	hub := NewMemHub()
	keys := testKeyring(t, 1)
	const n = 300
	startNodeWith(t, hub, keys, n)

	b := startNode(t, hub, testConfig(2, ModeMulticast), keys, nil)
	waitFor(t, "b ready after bulk", b.e.ready.Load)
	if b.tbl.Len() != n {
		t.Fatalf("b ready with %d entries, want %d", b.tbl.Len(), n)
	}
	kernelGets(t, b, n, nil)

	// Restart b: a new incarnation, an empty table, the dump again.
	b.stop()
	b2 := startNode(t, hub, testConfig(2, ModeMulticast), keys, nil)
	if b2.e.ready.Load() {
		t.Fatal("restarted node ready before its bulk resync")
	}
	waitFor(t, "b2 ready", b2.e.ready.Load)
	if b2.tbl.Len() != n {
		t.Fatalf("b2 ready with %d entries, want %d", b2.tbl.Len(), n)
	}
	// The status is a snapshot the engine publishes from its loop: it
	// follows the ready flag within a round of the loop, not at once.
	waitFor(t, "b2's status ready", func() bool { s := b2.e.Snapshot(); return s != nil && s.Ready })
	if s := b2.e.Snapshot(); s.BulkSeconds <= 0 {
		t.Errorf("status after resync: ready %v bulk %v", s.Ready, s.BulkSeconds)
	}
}

// startNodeWith starts node 1, ready, whose kernel reported n connections.
func startNodeWith(t *testing.T, hub *MemHub, keys *peer.Keyring, n int) *testNode {
	t.Helper()
	a := startNode(t, hub, testConfig(1, ModeMulticast), keys, nil)
	waitFor(t, "node 1 ready", a.e.ready.Load)
	var cs []wire.Conn
	for i := range n {
		cs = append(cs, testConn(i))
	}
	kernelSends(t, a, cs...)
	waitFor(t, "node 1's table", func() bool { return a.tbl.Len() == n })
	return a
}

func TestBadFramesCounted(t *testing.T) {
	hub := NewMemHub()
	a := startNode(t, hub, testConfig(1, ModeMulticast), testKeyring(t, 1), nil)
	// A node with another key: its frames fail authentication at a.
	startNode(t, hub, testConfig(3, ModeMulticast), testKeyring(t, 99), nil)
	src := netip.MustParseAddrPort("10.9.9.9:8848")
	hub.Inject(src, netip.MustParseAddrPort("10.9.0.1:8848"), []byte("garbage that is long enough to be a frame header......"))
	hub.Inject(src, netip.MustParseAddrPort("10.9.0.1:8848"), []byte{1, 2})
	waitFor(t, "rejections counted", func() bool {
		s := a.e.Snapshot()
		return s.Peer.Rejected["bad magic"] >= 1 && s.Peer.Rejected["truncated"] >= 1 && s.Peer.Rejected["authentication failed"] >= 1
	})
	if a.e.Snapshot().Peers != nil {
		t.Error("a peer that failed authentication was recorded")
	}
}

func TestIdleEntryRefreshedFromProc(t *testing.T) {
	hub := NewMemHub()
	keys := testKeyring(t, 1)
	c := testConn(7)
	c.Timeout = 4 // short: due for refresh after about 3 s
	procs := func() ([]procconn.Entry, error) {
		return []procconn.Entry{{Protocol: c.Protocol, CAddr: c.CAddr, CPort: c.CPort, VAddr: c.VAddr, VPort: c.VPort,
			DAddr: c.DAddr, DPort: c.DPort, State: "ESTABLISHED", Expires: 300 * time.Second}}, nil
	}
	a := startNode(t, hub, testConfig(1, ModeMulticast), keys, procs)
	b := startNode(t, hub, testConfig(2, ModeMulticast), keys, nil)
	waitFor(t, "ready", func() bool { return a.e.ready.Load() && b.e.ready.Load() })
	kernelSends(t, a, c)
	kernelGets(t, b, 1, nil)
	// The kernel never reports it again; a asks /proc and refreshes it.
	waitFor(t, "idle refresh", func() bool { return a.e.Snapshot().Loop.IdleRefreshed >= 1 })
	kernelGets(t, b, 1, nil)
}

func TestRemovalPolicy(t *testing.T) {
	c := testConn(1)
	removalPolicy(&c)
	if c.State != wire.TCPClose || c.Timeout != RemovedTCPTimeout {
		t.Errorf("tcp removal: %v", c)
	}
	u := testConn(1)
	u.Protocol, u.State = wire.ProtoUDP, wire.UDPNormal
	removalPolicy(&u)
	if u.State != wire.UDPNormal || u.Timeout != RemovedOtherTimeout || u.Validate() != nil {
		t.Errorf("udp removal: %v", u)
	}
}

func TestCompatMode(t *testing.T) {
	hub := NewMemHub()
	a := startNode(t, hub, testConfig(1, ModeCompat), nil, nil)
	// A stock kernel backup on the LAN.
	stock := hub.Attach(netip.MustParseAddrPort("10.9.0.50:8848"))
	defer stock.Close()
	if !a.e.ready.Load() {
		t.Fatal("compat mode not ready at once")
	}
	// Local kernel -> LAN as plain v1.
	want := testConn(1)
	kernelSends(t, a, want)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	buf := make([]byte, 65536)
	k, from, err := stock.Recv(ctx, buf)
	if err != nil {
		t.Fatal(err)
	}
	m, err := wire.Decode(buf[:k])
	if err != nil || m.Version != 1 || m.SyncID != 1 || len(m.Conns) != 1 || !m.Conns[0].Equal(want) {
		t.Fatalf("stock backup got %+v (%v) from %v", m, err, from)
	}
	// A stock master on the LAN -> local kernel.
	other := testConn(2)
	ds, _ := wire.EncodeV1(1, []wire.Conn{other}, 1472)
	stock.Send(ds[0], nil)
	got := kernelGets(t, a, 1, nil)
	if !got[0].Equal(other) {
		t.Errorf("kernel got %v, want %v", got[0], other)
	}
	waitFor(t, "table", func() bool { return a.tbl.Len() == 2 })
	var names []string
	a.tbl.ForEach(0, func(e *table.Entry) bool {
		if e.Owner != 1 {
			names = append(names, a.tbl.NodeName(e.Owner))
		}
		return true
	})
	if len(names) != 1 || names[0] != "kernel@10.9.0.50" {
		t.Errorf("pseudo owners %v", names)
	}
	// Another sync id is ignored; garbage is counted.
	ds2, _ := wire.EncodeV1(7, []wire.Conn{testConn(3)}, 1472)
	stock.Send(ds2[0], nil)
	stock.Send([]byte("PLVS not a kernel datagram"), nil)
	waitFor(t, "counted", func() bool {
		s := a.e.Snapshot()
		return s.Loop.CompatOtherSync == 1 && s.Loop.CompatBadFrames == 1
	})
	if a.tbl.Len() != 2 {
		t.Errorf("table has %d entries, want 2", a.tbl.Len())
	}
	if id := compatPseudoID(netip.MustParseAddr("10.9.0.50")); id < CompatPseudoBase {
		t.Errorf("pseudo id %d", id)
	}
}
