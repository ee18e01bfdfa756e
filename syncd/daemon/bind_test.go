package daemon

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/ipvs"
	"go.uber.org/zap/zaptest"

	"github.com/peerlvs/peerlvs/ipvs/reconcile"
	"github.com/peerlvs/peerlvs/ipvs/synclink"
	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/peer"
	"github.com/peerlvs/peerlvs/syncd/table"
)

func TestEntryPairs(t *testing.T) {
	web := ipvs.Service{Protocol: ipvs.TCP, Address: netip.MustParseAddr("192.0.2.1"), Port: 80}
	portZero := ipvs.Service{Protocol: ipvs.TCP, Address: netip.MustParseAddr("192.0.2.1")}
	mark := ipvs.Service{FWMark: 7, Address: netip.IPv4Unspecified()}
	mark6 := ipvs.Service{FWMark: 7, Address: netip.IPv6Unspecified()}
	rs := netip.MustParseAddr("10.2.0.1")
	rs6 := netip.MustParseAddr("2001:db8:1::1")
	entry := func(proto uint8, template bool, vaddr string, vport uint16, fwmark uint32, daddr netip.Addr) *table.Entry {
		return &table.Entry{Key: table.Key{Proto: proto, Template: template, VAddr: netip.MustParseAddr(vaddr), VPort: vport}, DAddr: daddr, Fwmark: fwmark}
	}
	tests := []struct {
		name string
		en   *table.Entry
		svc  ipvs.Service
		rs   netip.Addr
	}{
		{"connection of a TCP service", entry(6, false, "192.0.2.1", 80, 0, rs), web, rs},
		{"template of a TCP service", entry(6, true, "192.0.2.1", 80, 0, rs), web, rs},
		{"connection of a port-zero service", entry(6, false, "192.0.2.1", 443, 0, rs), portZero, rs},
		{"connection of a fwmark service", entry(6, false, "192.0.2.1", 8001, 7, rs), mark, rs},
		{"fwmark template, mark carried", entry(0, true, "0.0.0.7", 0, 7, rs), mark, rs},
		{"fwmark template, mark only in the address", entry(0, true, "0.0.0.7", 0, 0, rs), mark, rs},
		{"IPv6 fwmark template", entry(0, true, "0:7::", 0, 0, rs6), mark6, rs6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pairs := pairsOf([]reconcile.Virtual{{Service: tc.svc, Dests: []ipvs.Destination{{Address: tc.rs, Port: 80}}}})
			found := false
			var buf [3]bindPair
			for _, p := range entryPairs(tc.en, &buf) {
				found = found || pairs[p]
			}
			if !found {
				t.Errorf("entry pairs %+v not among the kernel's %v", entryPairs(tc.en, &buf), pairs)
			}
		})
	}
	// Another real server of the service is another pair.
	other := pairsOf([]reconcile.Virtual{{Service: web, Dests: []ipvs.Destination{{Address: netip.MustParseAddr("10.2.0.9"), Port: 80}}}})
	var buf [3]bindPair
	for _, p := range entryPairs(entry(6, false, "192.0.2.1", 80, 0, rs), &buf) {
		if other[p] {
			t.Errorf("pair %+v matches another real server", p)
		}
	}
}

// A peer's entry whose service the kernel lacks is held back, and written
// once the service appears: by the periodic pass, and at once for a POST
// /bind.
func TestEntriesHeldBackUntilTheirServiceAppears(t *testing.T) {
	hub := NewMemHub()
	keys := testKeyring(t, 1)
	var mu sync.Mutex
	var kernel []reconcile.Virtual
	services := func(k *KernelIO) {
		k.Services = func() ([]reconcile.Virtual, error) {
			mu.Lock()
			defer mu.Unlock()
			return kernel, nil
		}
	}
	a := startNode(t, hub, testConfig(1, ModeMulticast), keys, nil)
	b := startNode(t, hub, testConfig(2, ModeMulticast), keys, nil, services)
	for _, n := range []*testNode{a, b} {
		waitFor(t, "ready", n.e.ready.Load)
	}
	tmpl := testConn(1)
	tmpl.Flags |= wire.FlagTemplate
	tmpl.CPort, tmpl.State, tmpl.Timeout = 0, 0, 600
	conn := testConn(2)
	kernelSends(t, a, tmpl, conn)
	waitFor(t, "both held back", func() bool { return b.e.Snapshot().Loop.HeldBack >= 2 })
	nothingInjected(t, b)

	svc := ipvs.Service{Protocol: ipvs.TCP, Address: tmpl.VAddr, Port: tmpl.VPort}
	mu.Lock()
	kernel = []reconcile.Virtual{{Service: svc, Dests: []ipvs.Destination{{Address: tmpl.DAddr, Port: tmpl.DPort}}}}
	mu.Unlock()
	got := kernelGets(t, b, 2, nil)
	if !(got[0].Equal(tmpl) && got[1].Equal(conn) || got[0].Equal(conn) && got[1].Equal(tmpl)) {
		t.Fatalf("written once the service appeared: %v", got)
	}
	waitFor(t, "the counter", func() bool { return b.e.Snapshot().Loop.Bound == 2 })

	// An entry of a real server the service does not have yet is held
	// back; POST /bind writes it as soon as the real server is there.
	other := testConn(3)
	other.DAddr = netip.MustParseAddr("10.2.0.2")
	kernelSends(t, a, other)
	waitFor(t, "held back", func() bool { return b.e.Snapshot().Loop.HeldBack >= 3 })
	nothingInjected(t, b)
	mu.Lock()
	kernel[0].Dests = append(kernel[0].Dests, ipvs.Destination{Address: other.DAddr, Port: other.DPort})
	mu.Unlock()
	rec := httptest.NewRecorder()
	b.e.handler(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/bind", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "bound") {
		t.Fatalf("POST /bind: %d %q", rec.Code, rec.Body.String())
	}
	if got := kernelGets(t, b, 1, nil); !got[0].Equal(other) {
		t.Fatalf("after POST /bind the kernel got %v, want %v", got[0], other)
	}
	// Entries of a known pair go straight in.
	known := testConn(4)
	kernelSends(t, a, known)
	if got := kernelGets(t, b, 1, nil); !got[0].Equal(known) {
		t.Fatalf("the kernel got %v, want %v", got[0], known)
	}
}

// nothingInjected checks that n's kernel gets nothing for a moment.
func nothingInjected(t *testing.T, n *testNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := n.kernel.ReadFrame(ctx, make([]byte, 65536)); err == nil {
		t.Fatal("an entry whose service the kernel lacks was written to it")
	}
}

// Without a way to read the services, POST /bind has nothing to do and
// says so at once.
func TestBindWithoutServices(t *testing.T) {
	hub := NewMemHub()
	n := startNode(t, hub, testConfig(1, ModeMulticast), testKeyring(t, 1), nil)
	rec := httptest.NewRecorder()
	n.e.handler(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/bind", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("POST /bind: %d %q", rec.Code, rec.Body.String())
	}
}

// A restarted director's bulk resync brings back entries its own earlier
// run reported (its node id as owner); its fresh kernel lacks them all the
// same, so they are held back and written like any peer's.
func TestOwnEarlierEntriesHeldBackToo(t *testing.T) {
	var kernel []reconcile.Virtual
	cfg := testConfig(2, ModeMulticast)
	tbl, err := table.New(table.Config{Self: 2, Timeout: peer.KernelTimeout})
	if err != nil {
		t.Fatal(err)
	}
	tapR, _ := synclink.NewPipe(16)
	kR, kW := synclink.NewPipe(16)
	hub := NewMemHub()
	tr := hub.Attach(netip.MustParseAddrPort("10.9.0.2:8848"))
	defer tr.Close()
	e, err := newEngine(cfg, zaptest.NewLogger(t), tbl, testKeyring(t, 1),
		KernelIO{Tap: tapR, Inject: kW, Services: func() ([]reconcile.Virtual, error) { return kernel, nil }}, tr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := testConn(1)
	var en table.Entry
	peer.FromConn(&c, &en)
	en.Owner = 2
	if _, err := tbl.Apply(&en, 900, time.Now()); err != nil {
		t.Fatal(err)
	}
	e.applied(&en, 0)
	if len(e.held) != 1 {
		t.Fatalf("held %d entries, want the one whose service is missing", len(e.held))
	}
	kernel = []reconcile.Virtual{{Service: ipvs.Service{Protocol: ipvs.TCP, Address: c.VAddr, Port: c.VPort},
		Dests: []ipvs.Destination{{Address: c.DAddr, Port: c.DPort}}}}
	if err := e.bindPass(time.Now()); err != nil {
		t.Fatal(err)
	}
	e.inj.seal()
	e.inj.pump()
	buf := make([]byte, synclink.MaxFrame)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := kR.ReadFrame(ctx, buf)
	if err != nil {
		t.Fatalf("nothing written once the service appeared: %v", err)
	}
	m, err := wire.Decode(buf[:n])
	if err != nil || len(m.Conns) != 1 || !m.Conns[0].Equal(c) {
		t.Fatalf("written %v (%v), want %v", m.Conns, err, c)
	}
	if len(e.held) != 0 || e.st.Bound != 1 {
		t.Errorf("after the pass: %d held, %d bound", len(e.held), e.st.Bound)
	}
}
