package daemon

import (
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/ipvs/procconn"
	"github.com/peerlvs/peerlvs/ipvs/wire"
)

func TestNewReloadAndHandlerBeforeRun(t *testing.T) {
	dir := t.TempDir()
	kf := filepath.Join(dir, "key")
	line := "1 " + strings.Repeat("ab", 32) + " send\n"
	if err := os.WriteFile(kf, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(1, ModeMulticast)
	cfg.KeyFile = kf
	d, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, d.Handler(), "/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready before Run: %d", code)
	}
	if err := os.WriteFile(kf, []byte(line+"2 "+strings.Repeat("cd", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(kf, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(); err == nil {
		t.Error("a world-readable key file was accepted")
	}
	cfg.KeyFile = filepath.Join(dir, "missing")
	if _, err := New(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "key_file") {
		t.Errorf("missing key file: %v", err)
	}
}

func TestProcEntries(t *testing.T) {
	vip, rs := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.2.0.1")
	fwd := map[svcDest]uint32{{wire.ProtoTCP, vip, 80, rs, 80}: wire.FlagDRoute, {daddr: rs, dport: 53}: wire.FlagMasq}
	ents := []procconn.Entry{
		{Protocol: wire.ProtoTCP, CAddr: netip.MustParseAddr("198.51.100.1"), CPort: 1234, VAddr: vip, VPort: 80, DAddr: rs, DPort: 80, State: "ESTABLISHED", Expires: 100 * time.Second, Origin: procconn.OriginLocal},
		{Protocol: wire.ProtoUDP, CAddr: netip.MustParseAddr("198.51.100.2"), CPort: 5353, VAddr: vip, VPort: 53, DAddr: rs, DPort: 53, State: "UDP", Expires: 100 * time.Second},
		{Protocol: wire.ProtoTCP, CAddr: netip.MustParseAddr("198.51.100.3"), CPort: 1, VAddr: vip, VPort: 80, DAddr: rs, DPort: 80, State: "ESTABLISHED", Origin: procconn.OriginSync},
		{Protocol: wire.ProtoTCP, CAddr: netip.MustParseAddr("198.51.100.4"), CPort: 1, VAddr: vip, VPort: 81, DAddr: netip.MustParseAddr("10.9.9.9"), DPort: 81, State: "ESTABLISHED"},
		{Protocol: wire.ProtoTCP, CAddr: netip.MustParseAddr("198.51.100.5"), CPort: 0, VAddr: vip, VPort: 80, DAddr: rs, DPort: 80, State: "NONE"},
	}
	out, skipped := procEntries(ents, fwd)
	if len(out) != 3 || skipped != 1 {
		t.Fatalf("got %d entries, %d skipped: %+v", len(out), skipped, out)
	}
	if out[0].Flags != wire.FlagDRoute || out[0].State != wire.TCPEstablished {
		t.Errorf("tcp: %+v", out[0])
	}
	if out[1].Flags != wire.FlagMasq || out[1].State != wire.UDPNormal {
		t.Errorf("udp: %+v", out[1])
	}
	if !out[2].Template || out[2].Flags&wire.FlagTemplate == 0 {
		t.Errorf("template: %+v", out[2])
	}
}
