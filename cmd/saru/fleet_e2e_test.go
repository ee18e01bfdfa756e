package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/internal/nstest"
	"github.com/peerlvs/peerlvs/saru/controller"
	"github.com/peerlvs/peerlvs/saru/member"
)

// TestSaruFleetE2E runs the real `saru run` binary as three directors, each
// in its own network namespace on a shared bridge, and checks the wiring
// end to end: readiness, an exact partition of the buckets in the kernels'
// nftables sets, agreement of the maps, a stalled (SIGSTOP) director that
// stops accepting before the others take over and comes back safely,
// failover after kill -9 with the dead director's table left in place, a
// restart, and the exclusion of a director whose bucket count differs.
func TestSaruFleetE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: starts a saru fleet in network namespaces (about 10 s)")
	}
	nstest.RequireRoot(t, "create network namespaces, a bridge and nftables tables for a saru fleet")
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("iproute2 `ip` not found: %v", err)
	}
	testStart := time.Now()

	bin := buildSaru(t)
	lab := newE2ELab(t, 4)

	dir := t.TempDir()
	keyFile := writeGossipKey(t, dir)
	const buckets = 64
	cfgs := make([]string, 4)
	for i := range cfgs {
		b := buckets
		if i == 3 {
			b = 128 // d4: a fleet setting that differs
		}
		cfgs[i] = writeE2EConfig(t, dir, i+1, b, keyFile)
	}

	daemons := make([]*e2eDaemon, 4)
	for i := 0; i < 3; i++ {
		daemons[i] = startE2EDaemon(t, bin, lab.ns[i], fmt.Sprintf("d%d", i+1), cfgs[i])
	}
	fleet := daemons[:3]

	// 1 + 2: all ready, exact partition in the kernels, same map everywhere.
	t0 := time.Now()
	waitE2E(t, fleet, 15*time.Second, "three ready directors with an exact partition", func() error {
		for _, d := range fleet {
			st, err := d.status()
			if err != nil {
				return err
			}
			if st.State != member.StateReady || st.LastError != "" {
				return fmt.Errorf("%s: state %s, last error %q", d.name, st.State, st.LastError)
			}
		}
		if _, err := lab.partition(fleet, buckets); err != nil {
			return err
		}
		_, err := sameMaps(fleet, buckets)
		return err
	})
	t.Logf("fleet of 3 ready with an exact partition after %v", time.Since(t0).Round(time.Millisecond))
	views, _ := sameMaps(fleet, buckets)
	for _, v := range views {
		t.Logf("%s: map epoch %d fingerprint %s", v.name, v.view.Epoch, v.view.Fingerprint)
	}
	before, _ := lab.partition(fleet, buckets)
	for _, d := range fleet {
		t.Logf("%s owns %d buckets", d.name, len(before[d.name]))
	}

	// 3a: SIGSTOP d2. Its lease runs out before memberlist declares it
	// dead, so it accepts nothing before d1 and d3 take any of its buckets.
	// After SIGCONT it notices the lapse and accepts again only once the
	// fleet has taken it back.
	d2 := fleet[1]
	survivors := []*e2eDaemon{fleet[0], fleet[2]}
	stalled(t, lab, d2, survivors, fleet, before[d2.name], buckets)

	// 3: kill -9 d2; d2's table stays but accepts nothing from the moment
	// the process is gone; d1 and d3 take its buckets.
	d2.kill(t)
	if f, err := lab.filter(d2.ns); err != nil {
		t.Fatal(err)
	} else if live, err := f.Live(context.Background()); err != nil || live {
		t.Fatalf("d2's rules still live after kill -9 (%v, %v): d2 would accept the flows the survivors take", live, err)
	}
	failover := waitE2E(t, survivors, 10*time.Second, "d1 and d3 covering all buckets after kill -9 d2", func() error {
		_, err := lab.partition(survivors, buckets)
		return err
	})
	t.Logf("kill -9 d2 -> d1+d3 own all %d buckets after %v", buckets, failover.Round(time.Millisecond))
	if failover >= 5*time.Second {
		t.Errorf("failover took %v, want < 5s", failover)
	}
	left, ok, err := lab.installed(d2.ns)
	if err != nil {
		t.Fatalf("read d2's table: %v", err)
	}
	if !ok {
		t.Fatalf("d2's table vanished with the daemon: that director now accepts every flow")
	}
	// It keeps its last buckets for the operator to see, enforcing none.
	if !slices.Equal(left.Owned, before[d2.name]) {
		t.Errorf("d2's table after kill -9 owns %v, want its last buckets %v", left.Owned, before[d2.name])
	}
	// The chains and rules ("drop unless mine") are intact, not just the set.
	if f, err := lab.filter(d2.ns); err != nil {
		t.Fatal(err)
	} else if drift, err := f.Verify(context.Background()); err != nil {
		t.Fatalf("verify d2's table: %v", err)
	} else if len(drift) > 0 {
		t.Errorf("d2's table after kill -9 differs from the rendering: %v", drift)
	}
	if strings.Contains(d2.out.String(), "shutting down") {
		t.Errorf("d2 shut down cleanly; the test meant to kill -9 it")
	}

	// 4: restart d2 with the same config.
	fleet[1] = startE2EDaemon(t, bin, d2.ns, "d2", cfgs[1])
	d2 = fleet[1]
	ready := waitE2E(t, fleet, 15*time.Second, "restarted d2 ready", func() error {
		st, err := d2.status()
		if err != nil {
			return err
		}
		if st.State != member.StateReady {
			return fmt.Errorf("d2: state %s", st.State)
		}
		return nil
	})
	exact := waitE2E(t, fleet, 15*time.Second, "exact partition over three after d2's restart", func() error {
		if _, err := lab.partition(fleet, buckets); err != nil {
			return err
		}
		_, err := sameMaps(fleet, buckets)
		return err
	})
	t.Logf("restarted d2 ready after %v, exact partition over three after %v", ready.Round(time.Millisecond),
		(ready + exact).Round(time.Millisecond))
	stable, _ := lab.partition(fleet, buckets)
	// The epoch counts each daemon's own allocation changes, so after a
	// restart it differs between daemons; the fingerprint is what agrees.
	views, _ = sameMaps(fleet, buckets)
	for _, v := range views {
		t.Logf("after restart %s: map epoch %d fingerprint %s", v.name, v.view.Epoch, v.view.Fingerprint)
	}

	// 4b: a foreign `nft flush ruleset` on d1 deletes inet peerlvs (the
	// owner-bound liveness table survives it); d1's saru puts the rules back.
	if err := ipCmd("netns", "exec", fleet[0].ns, "nft", "flush", "ruleset"); err != nil {
		t.Fatal(err)
	}
	d1f, err := lab.filter(fleet[0].ns)
	if err != nil {
		t.Fatal(err)
	}
	if live, err := d1f.Live(context.Background()); err != nil || !live {
		t.Errorf("nft flush ruleset removed d1's liveness table too (%v, %v)", live, err)
	}
	repaired := waitE2E(t, fleet, 10*time.Second, "d1's rules back after nft flush ruleset", func() error {
		if _, err := lab.partition(fleet, buckets); err != nil {
			return err
		}
		drift, err := d1f.Verify(context.Background())
		if err != nil || len(drift) > 0 {
			return fmt.Errorf("d1's rules: %v %v", drift, err)
		}
		return nil
	})
	t.Logf("nft flush ruleset on d1 -> rules repaired by saru after %v", repaired.Round(time.Millisecond))
	if !strings.Contains(fleet[0].out.String(), "repairing") {
		t.Errorf("d1's saru did not log the repair:\n%s", fleet[0].out.String())
	}

	// 5: d4 with buckets: 128 joins: it owns nothing, the others do not change.
	d4 := startE2EDaemon(t, bin, lab.ns[3], "d4", cfgs[3])
	daemons[3] = d4
	all := append(slices.Clone(fleet), d4)
	checkD4 := func() error {
		if own, ok, err := lab.installed(d4.ns); err != nil {
			return fmt.Errorf("d4: %w", err)
		} else if ok && len(own.Owned)+len(own.HandoverIn)+len(own.HandoverOut) > 0 {
			return fmt.Errorf("d4 with a mismatching bucket count installed ownership %+v", own)
		}
		now, err := lab.partition(fleet, buckets)
		if err != nil {
			return fmt.Errorf("fleet partition broke after d4 joined: %w", err)
		}
		for name, bs := range stable {
			if !slices.Equal(now[name], bs) {
				return fmt.Errorf("%s's buckets changed after d4 joined: %v -> %v", name, bs, now[name])
			}
		}
		return nil
	}
	var mismatch string
	seen := waitE2E(t, all, 10*time.Second, "d1..d3 naming d4's mismatching setting", func() error {
		if err := checkD4(); err != nil {
			t.Fatal(err) // never acceptable, not even transiently
		}
		for _, d := range fleet {
			st, err := d.status()
			if err != nil {
				return err
			}
			i := slices.IndexFunc(st.Members, func(m member.Member) bool { return m.Name == "d4" })
			if i < 0 {
				return fmt.Errorf("%s does not see d4 yet", d.name)
			}
			if st.Members[i].FingerprintOK || !strings.Contains(st.Members[i].Mismatch, "buckets") {
				return fmt.Errorf("%s sees d4 as %+v", d.name, st.Members[i])
			}
			mismatch = st.Members[i].Mismatch
		}
		return nil
	})
	t.Logf("d1..d3 report d4 excluded after %v: %q", seen.Round(time.Millisecond), mismatch)
	// Past d4's readiness grace and a few gossip rounds: still nothing.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if err := checkD4(); err != nil {
			t.Fatal(err)
		}
	}
	st, err := d4.status()
	if err != nil {
		t.Fatalf("d4 status: %v", err)
	}
	if st.Owned+st.HandoverIn+st.HandoverOut != 0 {
		t.Errorf("d4 status: owned %d, handover in %d out %d; want nothing", st.Owned, st.HandoverIn, st.HandoverOut)
	}
	for _, m := range st.Members {
		if !m.Local && (m.FingerprintOK || !strings.Contains(m.Mismatch, "buckets")) {
			t.Errorf("d4 sees %s as %+v; want it excluded naming buckets", m.Name, m)
		}
	}
	if !strings.Contains(fleet[0].out.String(), "buckets=128") {
		t.Errorf("d1's log does not name d4's bucket count:\n%s", fleet[0].out.String())
	}
	if !strings.Contains(d4.out.String(), "buckets=64") {
		t.Errorf("d4's log does not name the fleet's bucket count:\n%s", d4.out.String())
	}
	for _, d := range all {
		if d.exited() {
			t.Errorf("%s exited unexpectedly", d.name)
		}
	}
	t.Logf("d4 (buckets 128, state %s) owns nothing; d1..d3 unchanged; test ran %v", st.State,
		time.Since(testStart).Round(time.Millisecond))
}

// stalled stops d's saru (SIGSTOP) and continues it, checking that d's
// rules stop accepting before any other director takes one of its buckets
// (mine), and that once it accepts again no other director accepts any of
// the same buckets.
func stalled(t *testing.T, lab *e2eLab, d *e2eDaemon, others, fleet []*e2eDaemon, mine []uint32, buckets int) {
	t.Helper()
	f, err := lab.filter(d.ns)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	signal := func(sig syscall.Signal) {
		if err := syscall.Kill(-d.cmd.Process.Pid, sig); err != nil {
			t.Fatal(err)
		}
	}
	stopAt := time.Now()
	signal(syscall.SIGSTOP)
	var notLive, took time.Duration
	for deadline := stopAt.Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if notLive == 0 {
			if live, err := f.Live(ctx); err == nil && !live {
				notLive = time.Since(stopAt)
			}
		}
		if took == 0 {
			if b, ok := acceptsAny(t, lab, others, mine); ok {
				took = time.Since(stopAt)
				if notLive == 0 {
					signal(syscall.SIGCONT)
					t.Fatalf("%v after SIGSTOP another director accepts bucket %d of the stopped %s, whose rules are still live", took, b, d.name)
				}
			}
		}
		if _, err := lab.partition(others, buckets); err == nil {
			break
		}
		if time.Now().After(deadline) {
			signal(syscall.SIGCONT)
			t.Fatalf("the others did not take over the stopped %s's buckets within 10 s", d.name)
		}
	}
	t.Logf("SIGSTOP %s: its rules stopped accepting after %v; the others took its first bucket after %v and all %d after %v",
		d.name, notLive.Round(time.Millisecond), took.Round(time.Millisecond), len(mine), time.Since(stopAt).Round(time.Millisecond))

	contAt := time.Now()
	signal(syscall.SIGCONT)
	var relive time.Duration
	back := waitE2E(t, fleet, 15*time.Second, "the continued "+d.name+" live again with an exact partition", func() error {
		// Live first and the others last, then the reverse: a bucket both
		// accept in both orders is accepted twice, not a skew of reads.
		for _, order := range []bool{false, true} {
			b, double, err := acceptedTwice(ctx, lab, f, d, others, order)
			if err != nil {
				return err
			}
			if !double {
				break
			}
			if order {
				t.Fatalf("%v after SIGCONT bucket %d is accepted by %s and another director", time.Since(contAt), b, d.name)
			}
		}
		live, err := f.Live(ctx)
		if err != nil || !live {
			return fmt.Errorf("%s not live (%v)", d.name, err)
		}
		if relive == 0 {
			relive = time.Since(contAt)
		}
		if _, err := lab.partition(fleet, buckets); err != nil {
			return err
		}
		_, err = sameMaps(fleet, buckets)
		return err
	})
	t.Logf("SIGCONT %s: live again after %v, exact partition over three after %v", d.name,
		relive.Round(time.Millisecond), back.Round(time.Millisecond))
	if !strings.Contains(d.out.String(), "stalled past its liveness lease") {
		t.Errorf("%s did not log its lapsed lease:\n%s", d.name, d.out.String())
	}
}

// acceptsAny returns a bucket of mine that one of ds accepts new flows of.
func acceptsAny(t *testing.T, lab *e2eLab, ds []*e2eDaemon, mine []uint32) (uint32, bool) {
	t.Helper()
	for _, d := range ds {
		own, _, err := lab.installed(d.ns)
		if err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
		for _, b := range append(own.Owned, own.HandoverIn...) {
			if slices.Contains(mine, b) {
				return b, true
			}
		}
	}
	return 0, false
}

// acceptedTwice reports a bucket that d accepts new flows of (only while
// its rules are live) and one of others also does, reading d first, or
// others first if othersFirst.
func acceptedTwice(ctx context.Context, lab *e2eLab, f *filter.Filter, d *e2eDaemon, others []*e2eDaemon, othersFirst bool) (uint32, bool, error) {
	var theirs []uint32
	readOthers := func() error {
		for _, o := range others {
			own, _, err := lab.installed(o.ns)
			if err != nil {
				return fmt.Errorf("%s: %w", o.name, err)
			}
			theirs = append(theirs, append(own.Owned, own.HandoverIn...)...)
		}
		return nil
	}
	if othersFirst {
		if err := readOthers(); err != nil {
			return 0, false, err
		}
	}
	live, err := f.Live(ctx)
	if err != nil {
		return 0, false, err
	}
	own, _, err := lab.installed(d.ns)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", d.name, err)
	}
	if !othersFirst {
		if err := readOthers(); err != nil {
			return 0, false, err
		}
	}
	if !live {
		return 0, false, nil
	}
	for _, b := range append(own.Owned, own.HandoverIn...) {
		if slices.Contains(theirs, b) {
			return b, true, nil
		}
	}
	return 0, false, nil
}

const e2eStatusPort = 19475

func buildSaru(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "saru")
	t0 := time.Now()
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/saru: %v\n%s", err, out)
	}
	t.Logf("built saru in %v", time.Since(t0).Round(time.Millisecond))
	return bin
}

func writeE2EConfig(t *testing.T, dir string, n, buckets int, keyFile string) string {
	t.Helper()
	var seeds []string
	for i := 1; i <= 3; i++ {
		if i != n {
			seeds = append(seeds, fmt.Sprintf("10.77.0.%d:7946", i))
		}
	}
	body := fmt.Sprintf(`node: d%d
bind_addr: 10.77.0.%d
bind_port: 7946
seeds: [%s]
gossip_key_file: %s
buckets: %d
seed: 20240601
sense: addrport
vips: [10.77.1.50]
quorum: 2
readiness_grace: 500ms
handover_step: 200ms
handover_hold: 500ms
status_listen: 127.0.0.1:%d
`, n, n, strings.Join(seeds, ", "), keyFile, buckets, e2eStatusPort)
	p := filepath.Join(dir, fmt.Sprintf("d%d.yaml", n))
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// e2eLab is a bridge in its own namespace and one namespace per director,
// each with eth0 = 10.77.0.N/24 on the bridge.
type e2eLab struct {
	t   *testing.T
	ns  []string
	fds map[string]*os.File
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func newE2ELab(t *testing.T, n int) *e2eLab {
	t.Helper()
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	prefix := "saru-e2e-" + hex.EncodeToString(r[:])
	sw := prefix + "-sw"
	lab := &e2eLab{t: t, fds: map[string]*os.File{}}
	must := func(args ...string) {
		t.Helper()
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	addNS := func(name string) {
		t.Helper()
		must("netns", "add", name)
		t.Cleanup(func() {
			if err := ipCmd("netns", "del", name); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		must("-n", name, "link", "set", "lo", "up")
	}
	addNS(sw)
	must("-n", sw, "link", "add", "br0", "type", "bridge")
	must("-n", sw, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		ns := fmt.Sprintf("%s-d%d", prefix, i)
		addNS(ns)
		port := fmt.Sprintf("p%d", i)
		must("-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		must("-n", sw, "link", "set", port, "master", "br0", "up")
		must("-n", ns, "addr", "add", fmt.Sprintf("10.77.0.%d/24", i), "dev", "eth0")
		must("-n", ns, "link", "set", "eth0", "up")
		f, err := os.Open("/run/netns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() }) // runs before the namespace is deleted
		lab.ns = append(lab.ns, ns)
		lab.fds[ns] = f
	}
	return lab
}

// filter is a reader of the inet peerlvs table in ns, rendered from the
// same settings as d1..d3's configs.
func (l *e2eLab) filter(ns string) (*filter.Filter, error) {
	return filter.New(filter.Config{VIPs: []netip.Addr{netip.MustParseAddr("10.77.1.50")}, Sense: filter.SenseAddrPort,
		Seed: 20240601, Buckets: 64}, filter.WithNetNSFd(int(l.fds[ns].Fd())))
}

// installed reads the inet peerlvs table in ns, and false if it is absent.
func (l *e2eLab) installed(ns string) (filter.Ownership, bool, error) {
	f, err := l.filter(ns)
	if err != nil {
		return filter.Ownership{}, false, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return f.Installed(ctx)
}

// partition reads the owned sets of ds from their kernels and checks that
// they split all buckets exactly: no handover in progress, disjoint, every
// bucket owned, each director within one bucket of its equal share.
func (l *e2eLab) partition(ds []*e2eDaemon, buckets int) (map[string][]uint32, error) {
	out := make(map[string][]uint32, len(ds))
	owner := make(map[uint32]string, buckets)
	for _, d := range ds {
		own, ok, err := l.installed(d.ns)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.name, err)
		}
		if !ok {
			return nil, fmt.Errorf("%s: no peerlvs table", d.name)
		}
		if len(own.HandoverIn)+len(own.HandoverOut) > 0 {
			return nil, fmt.Errorf("%s: handover in progress (in %v, out %v)", d.name, own.HandoverIn, own.HandoverOut)
		}
		for _, b := range own.Owned {
			if int(b) >= buckets {
				return nil, fmt.Errorf("%s owns bucket %d of %d", d.name, b, buckets)
			}
			if o, dup := owner[b]; dup {
				return nil, fmt.Errorf("bucket %d owned by %s and %s", b, o, d.name)
			}
			owner[b] = d.name
		}
		if n := len(own.Owned); abs(n*len(ds)-buckets) > len(ds) {
			return nil, fmt.Errorf("%s owns %d buckets, want %d/%d within one", d.name, n, buckets, len(ds))
		}
		out[d.name] = own.Owned
	}
	if len(owner) != buckets {
		return nil, fmt.Errorf("%d of %d buckets owned", len(owner), buckets)
	}
	return out, nil
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

type namedView struct {
	name string
	view controller.MapView
}

// sameMaps asks every daemon for `saru map --json` and checks they agree
// on the fingerprint and on the owner of every bucket (the kernels are
// checked by partition).
func sameMaps(ds []*e2eDaemon, buckets int) ([]namedView, error) {
	var out []namedView
	for _, d := range ds {
		var v controller.MapView
		if err := d.cli(&v, "map", "--json"); err != nil {
			return nil, err
		}
		if int(v.Buckets) != buckets {
			return nil, fmt.Errorf("%s: map of %d buckets", d.name, v.Buckets)
		}
		out = append(out, namedView{d.name, v})
	}
	ref := out[0]
	for _, o := range out[1:] {
		if o.view.Fingerprint != ref.view.Fingerprint {
			return nil, fmt.Errorf("%s fingerprint %s, %s fingerprint %s", ref.name, ref.view.Fingerprint, o.name, o.view.Fingerprint)
		}
		for b := uint32(0); b < uint32(buckets); b++ {
			if ref.view.Owner(b) != o.view.Owner(b) {
				return nil, fmt.Errorf("bucket %d: %s says %q, %s says %q", b, ref.name, ref.view.Owner(b), o.name, o.view.Owner(b))
			}
		}
	}
	return out, nil
}

// e2eDaemon is one `saru run` in a namespace.
type e2eDaemon struct {
	name, ns, bin string
	cmd           *exec.Cmd
	out           *e2eBuffer
	done          chan struct{}
}

type e2eBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *e2eBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *e2eBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func startE2EDaemon(t *testing.T, bin, ns, name, cfg string) *e2eDaemon {
	t.Helper()
	d := &e2eDaemon{name: name, ns: ns, bin: bin, out: &e2eBuffer{}, done: make(chan struct{})}
	// `ip netns exec` execs saru in place, so the pid is saru's; the process
	// group catches it even if an iproute2 version forks.
	d.cmd = exec.Command("ip", "netns", "exec", ns, bin, "run", "--config", cfg)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.kill(t)
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, d.out.String())
		}
	})
	return d
}

func (d *e2eDaemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the daemon's process group and waits for it.
func (d *e2eDaemon) kill(t *testing.T) {
	if d.exited() {
		return
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		t.Errorf("%s did not die within 5s of SIGKILL", d.name)
	}
}

// cli runs `saru ARGS --json --status ...` inside the daemon's namespace
// and decodes its output into v.
func (d *e2eDaemon) cli(v any, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	args = append([]string{"netns", "exec", d.ns, d.bin}, args...)
	args = append(args, "--status", fmt.Sprintf("127.0.0.1:%d", e2eStatusPort))
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: saru %s: %v: %s", d.name, strings.Join(args[4:], " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	if err := json.Unmarshal(stdout.Bytes(), v); err != nil {
		return fmt.Errorf("%s: decode %q: %w", d.name, stdout.String(), err)
	}
	return nil
}

func (d *e2eDaemon) status() (controller.Status, error) {
	var st controller.Status
	err := d.cli(&st, "status", "--json")
	return st, err
}

// waitE2E polls cond until it returns nil and returns how long that took;
// it fails the test when limit passes or a daemon of ds exits.
func waitE2E(t *testing.T, ds []*e2eDaemon, limit time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for {
		for _, d := range ds {
			if d.exited() {
				t.Fatalf("waiting for %s: %s exited:\n%s", what, d.name, d.out.String())
			}
		}
		if err = cond(); err == nil {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %s within %v: %v", what, limit, err)
	return 0
}

// writeGossipKey writes a fresh gossip key file into dir and returns its
// path.
func writeGossipKey(t *testing.T, dir string) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
