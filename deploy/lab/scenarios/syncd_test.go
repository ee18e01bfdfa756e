package scenarios

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// syncdMode runs syncd on every director, all the time: there is no master
// or backup role to switch, so activate and standby only make sure it runs
// and, for a (re)started director, that it finished its bulk resync.
type syncdMode struct {
	peerMode string // multicast (default), unicast, multicast6 or unicast6
	keyed    bool
}

func (m *syncdMode) name() string { return "syncd" }

const syncdStatus = "127.0.0.1:9476"

// config renders a director's syncd configuration. Directors find each
// other on the sync LAN, 10.1.0.0/24, where director N is 10.1.0.N.
func (m *syncdMode) config(f *drFleet, d *director, id int) string {
	peer := "  mode: multicast\n  interface: eth1\n  group: 239.255.77.1\n  port: 8848\n  ttl: 1\n"
	addr := func(n int) string { return fmt.Sprintf("10.1.0.%d:8848", n) }
	if strings.HasSuffix(m.peerMode, "6") {
		// Directors also have fd01::N on the sync LAN (see TestSyncdTransports).
		addr = func(n int) string { return fmt.Sprintf("[fd01::%d]:8848", n) }
	}
	switch m.peerMode {
	case "multicast6":
		peer = "  mode: multicast\n  interface: eth1\n  group: ff12::8848:1\n  port: 8848\n  ttl: 1\n"
	case "unicast", "unicast6":
		peer = fmt.Sprintf("  mode: unicast\n  listen: \"%s\"\n  peers: [", addr(id))
		sep := ""
		for i := range f.directors {
			if i+1 != id {
				peer += fmt.Sprintf("%s\"%s\"", sep, addr(i+1))
				sep = ", "
			}
		}
		peer += "]\n"
	}
	return fmt.Sprintf("node_id: %d\nnode_name: %s\nkey_file: /tmp/sync.key\nsyncid: 1\nstatus_listen: %s\npeer:\n%s", id, d.name, syncdStatus, peer)
}

func (m *syncdMode) start(t *testing.T, f *drFleet, d *director) {
	t.Helper()
	if !m.keyed {
		f.g.Sh("umask 077 && syncd keygen > /tmp/sync.key")
		m.keyed = true
	}
	if d.proc != nil {
		return
	}
	f.g.Sh("cat > /tmp/%s.yaml <<'EOF'\n%sEOF", d.name, m.config(f, d, f.id(d)))
	d.proc = d.ns.Start("syncd", "run", "--config", "/tmp/"+d.name+".yaml")
	waitReady(t, d)
}

// waitReady waits until the director's syncd says its bulk resync is done,
// which is what saru waits for before the director may take traffic. It
// asks GET /ready (what `syncd ready` asks) over HTTP from the scenario:
// an exec of the Go binary per poll would compete with the bulk resync it
// waits for.
func waitReady(t *testing.T, d *director) time.Duration {
	t.Helper()
	start := time.Now()
	if !waitFor(60*time.Second, func() bool {
		code, _, err := httpGet(d, syncdStatus, "/ready")
		return err == nil && code == http.StatusOK
	}) {
		t.Fatalf("syncd on %s not ready after 60 s; its log:\n%s", d.name, d.proc.Stderr())
	}
	return time.Since(start)
}

func (m *syncdMode) activate(t *testing.T, f *drFleet, d *director) { t.Helper(); m.start(t, f, d) }
func (m *syncdMode) standby(t *testing.T, f *drFleet, d *director)  { t.Helper(); m.start(t, f, d) }

func (m *syncdMode) down(t *testing.T, _ *drFleet, d *director) {
	t.Helper()
	if d.proc != nil {
		d.proc.Kill() // SIGKILL: a crash, not a clean shutdown
		d.proc = nil
	}
}
