package daemon

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/peerlvs/peerlvs/syncd/table"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestStatusEndpoint(t *testing.T) {
	hub := NewMemHub()
	keys := testKeyring(t, 1)
	cfg := testConfig(1, ModeMulticast)
	cfg.Peer.BulkWait = 300_000_000 // 300 ms: long enough to see 503 first
	a := startNode(t, hub, cfg, keys, nil)
	reg := prometheus.NewRegistry()
	if err := reg.Register(newCollector(a.e)); err != nil {
		t.Fatal(err)
	}
	h := a.e.handler(reg)
	if code, body := get(t, h, "/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready before resync: %d %q", code, body)
	}
	waitFor(t, "ready", a.e.ready.Load)
	if code, body := get(t, h, "/ready"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/ready: %d %q", code, body)
	}
	kernelSends(t, a, testConn(5))
	waitFor(t, "entry", func() bool { return a.tbl.Len() == 1 })
	code, body := get(t, h, "/conns")
	var cs []ConnJSON
	if err := json.Unmarshal([]byte(body), &cs); code != 200 || err != nil || len(cs) != 1 {
		t.Fatalf("/conns: %d %v %s", code, err, body)
	}
	c := cs[0]
	if c.Proto != "TCP" || c.Source != "198.51.100.5:40005" || c.Virtual != "192.0.2.1:80" || c.Destination != "10.2.0.1:80" ||
		c.State != "ESTABLISHED" || c.Owner != 1 || c.OwnerName != "d1" || c.Expires < 898 || c.Forward != "Route" {
		t.Errorf("/conns entry %+v", c)
	}
	waitFor(t, "stats", func() bool { return a.e.Snapshot().Entries == 1 })
	code, body = get(t, h, "/stats")
	var s Status
	if err := json.Unmarshal([]byte(body), &s); code != 200 || err != nil || !s.Ready || s.Entries != 1 || s.OwnEntries != 1 || s.Loop.KernelEntriesIn != 1 {
		t.Errorf("/stats: %d %v %s", code, err, body)
	}
	code, body = get(t, h, "/metrics")
	for _, want := range []string{"syncd_ready 1", "syncd_entries 1", `syncd_kernel_entries_total{dir="in"} 1`, `syncd_peer_frames_rejected_total{reason="authentication failed"} 0`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestUnicastTransportLoopback(t *testing.T) {
	a, err := openUDP(PeerConfig{Mode: ModeUnicast, Listen: "127.0.0.1:0", Peers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Skipf("no loopback UDP: %v", err)
	}
	defer a.Close()
	aAddr := a.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	b, err := openUDP(PeerConfig{Mode: ModeUnicast, Listen: "127.0.0.1:0", Peers: []string{aAddr.String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Send([]byte("hello"), nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, from, err := a.Recv(t.Context(), buf)
	if err != nil || string(buf[:n]) != "hello" || !from.Addr().IsLoopback() {
		t.Fatalf("got %q from %v: %v", buf[:n], from, err)
	}
	// Learnt addresses are used for targeted sends.
	a.Learn(2, from)
	if err := a.Send([]byte("to b"), []table.NodeID{2}); err != nil {
		t.Fatal(err)
	}
	n, _, err = b.Recv(t.Context(), buf)
	if err != nil || string(buf[:n]) != "to b" {
		t.Fatalf("b got %q: %v", buf[:n], err)
	}
}
