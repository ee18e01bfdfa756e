package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/internal/nstest"
	"github.com/peerlvs/peerlvs/saru/member"
)

// TestSaruFitnessE2E runs three real saru directors in network namespaces,
// each tracking a "front" interface while gossip runs on eth0: when d2's
// front loses its carrier, d1 and d3 take every bucket through the normal
// handover while d2 stays a member; when it comes back, d2 takes its share
// again only after the hold.
func TestSaruFitnessE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: starts a saru fleet in network namespaces")
	}
	nstest.RequireRoot(t, "create network namespaces, veth pairs and nftables tables for a saru fleet")
	const buckets, hold = 64, 2 * time.Second
	bin := buildSaru(t)
	lab := newE2ELab(t, 3)
	dir := t.TempDir()
	keyFile := writeGossipKey(t, dir)
	var fleet []*e2eDaemon
	for i, ns := range lab.ns {
		// The front link: a veth pair inside the director; setting the
		// peer down takes the carrier away, as a pulled cable would.
		if err := ipCmd("-n", ns, "link", "add", "front", "type", "veth", "peer", "name", "front-peer"); err != nil {
			t.Fatal(err)
		}
		for _, dev := range []string{"front", "front-peer"} {
			if err := ipCmd("-n", ns, "link", "set", dev, "up"); err != nil {
				t.Fatal(err)
			}
		}
		cfg := writeE2EConfig(t, dir, i+1, buckets, keyFile)
		f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "fitness:\n  interfaces: [front]\n  hold: %v\n", hold)
		f.Close()
		fleet = append(fleet, startE2EDaemon(t, bin, ns, fmt.Sprintf("d%d", i+1), cfg))
	}
	d1, d2, d3 := fleet[0], fleet[1], fleet[2]
	waitE2E(t, fleet, 20*time.Second, "three ready directors with an exact partition", func() error {
		_, err := lab.partition(fleet, buckets)
		return err
	})

	// Cut d2's front.
	if err := ipCmd("-n", d2.ns, "link", "set", "front-peer", "down"); err != nil {
		t.Fatal(err)
	}
	// d2 receives nothing with its link down: d1 and d3 own its buckets
	// outright as soon as they are granted, without the planned
	// handover's hold (handover_hold would keep d2's established flows
	// with d2).
	owned := waitE2E(t, fleet, 20*time.Second, "d1 and d3 owning every bucket", func() error {
		_, err := lab.partition([]*e2eDaemon{d1, d3}, buckets)
		return err
	})
	took := waitE2E(t, fleet, 20*time.Second, "d1 and d3 owning every bucket, d2 none", func() error {
		if _, err := lab.partition([]*e2eDaemon{d1, d3}, buckets); err != nil {
			return err
		}
		own, _, err := lab.installed(d2.ns)
		if err != nil {
			return err
		}
		if n := len(own.Owned) + len(own.HandoverIn) + len(own.HandoverOut); n != 0 {
			return fmt.Errorf("d2 still holds %d buckets", n)
		}
		return nil
	})
	t.Logf("front link of d2 cut: d1 and d3 own every bucket after %v, and d2 has let go of its last after %v more",
		owned.Round(time.Millisecond), took.Round(time.Millisecond))
	st, err := d1.status()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Members {
		if m.Name == "d2" && (m.State != member.StateReady || !strings.Contains(m.Unfit, "interface front: no carrier")) {
			t.Errorf("d1 sees d2 as %s, unfit %q; want ready and unfit for its front", m.State, m.Unfit)
		}
	}
	var text strings.Builder
	if err := d2.cliText(&text, "status"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "fitness: UNFIT") || !strings.Contains(text.String(), "interface front") {
		t.Errorf("saru status on d2 does not say why it is unfit:\n%s", text.String())
	}

	// Restore it: d2 takes its share back after the hold.
	if err := ipCmd("-n", d2.ns, "link", "set", "front-peer", "up"); err != nil {
		t.Fatal(err)
	}
	back := waitE2E(t, fleet, 20*time.Second, "three directors with an exact partition again", func() error {
		_, err := lab.partition(fleet, buckets)
		return err
	})
	t.Logf("front link of d2 back: the three share the buckets again after %v (hold %v)", back.Round(time.Millisecond), hold)
	if back < hold {
		t.Errorf("d2 took buckets back %v after its link returned, before the hold of %v", back, hold)
	}
}

// cliText runs `saru ARGS --status ...` inside the daemon's namespace and
// writes its text output to w.
func (d *e2eDaemon) cliText(w *strings.Builder, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	args = append([]string{"netns", "exec", d.ns, d.bin}, args...)
	args = append(args, "--status", fmt.Sprintf("127.0.0.1:%d", e2eStatusPort))
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	w.Write(out)
	if err != nil {
		return fmt.Errorf("%s: saru %s: %v: %s", d.name, strings.Join(args[4:], " "), err, out)
	}
	return nil
}
