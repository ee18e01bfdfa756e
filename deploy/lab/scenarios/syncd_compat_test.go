package scenarios

import (
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
)

type compatResult struct {
	ViaA       []string `json:"via_a"`        // connections made through A
	ViaB       []string `json:"via_b"`        // connections made through B
	MissingOnB []string `json:"missing_on_b"` // of ViaA, not in B's kernel
	MissingOnC []string `json:"missing_on_c"` // of ViaB, not in C's kernel
}

// TestSyncdCompat: a fleet in migration. A runs the stock kernel master, C
// the stock kernel backup, and B syncd in compatibility mode on the same
// group and port. Connections made through A must reach B's kernel (stock
// master -> syncd -> kernel), and connections made through B must reach C's
// kernel (kernel -> syncd -> stock backup).
func TestSyncdCompat(t *testing.T) {
	res := lab.Run(t, lab.Options{}, func(t *testing.T, g *lab.Guest) compatResult {
		f := newDRFleet(t, g, 3)
		a, b, c := f.directors[0], f.directors[1], f.directors[2]
		a.ns.Sh("ipvsadm --start-daemon master --mcast-interface eth1 --syncid 1")
		c.ns.Sh("ipvsadm --start-daemon backup --mcast-interface eth1 --syncid 1")
		f.g.Sh("umask 077 && syncd keygen > /tmp/sync.key")
		f.g.Sh("cat > /tmp/b.yaml <<'EOF'\nnode_id: 2\nnode_name: d2\nkey_file: /tmp/sync.key\nsyncid: 1\nstatus_listen: %s\npeer:\n  mode: compat\n  interface: eth1\n  group: 224.0.0.81\n  port: 8848\n  ttl: 1\nEOF", syncdStatus)
		b.proc = b.ns.Start("syncd", "run", "--config", "/tmp/b.yaml")
		waitReady(t, b)

		var r compatResult
		f.takeVIP(t, a)
		ha := startHolder(t, f.client, 5, 100*time.Millisecond)
		ha.waitOpen(t, 5, 30*time.Second)
		time.Sleep(2 * time.Second)
		r.ViaA = heldConns(ha.report(t))
		waitFor(5*time.Second, func() bool { return len(missingOn(t, b, r.ViaA)) == 0 })
		r.MissingOnB = missingOn(t, b, r.ViaA)

		f.dropVIP(t, a)
		f.takeVIP(t, b)
		hb := startHolder(t, f.client, 5, 100*time.Millisecond)
		hb.waitOpen(t, 5, 30*time.Second)
		time.Sleep(2 * time.Second)
		r.ViaB = heldConns(hb.report(t))
		waitFor(5*time.Second, func() bool { return len(missingOn(t, c, r.ViaB)) == 0 })
		r.MissingOnC = missingOn(t, c, r.ViaB)
		return r
	})
	t.Logf("stock master A -> syncd B: %d of %d connections in B's kernel; syncd B -> stock backup C: %d of %d in C's kernel",
		len(res.ViaA)-len(res.MissingOnB), len(res.ViaA), len(res.ViaB)-len(res.MissingOnC), len(res.ViaB))
	if len(res.ViaA) != 5 || len(res.MissingOnB) != 0 {
		t.Errorf("stock master -> syncd: made %d, missing on B %v", len(res.ViaA), res.MissingOnB)
	}
	if len(res.ViaB) != 5 || len(res.MissingOnC) != 0 {
		t.Errorf("syncd -> stock backup: made %d, missing on C %v", len(res.ViaB), res.MissingOnC)
	}
}
