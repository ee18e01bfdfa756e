package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/internal/nstest"
	"github.com/peerlvs/peerlvs/saru/controller"
)

// TestSaruChaos tries hard to make two directors accept new flows of the
// same bucket at once. It runs real `saru run` fleets (3 directors, then 5)
// in network namespaces with real nftables, quorum a majority and
// failure_detection 1s, and injects faults from a seeded random schedule:
// loss, one-way and asymmetric partitions, random one-way link cuts,
// bursts and flapping on the gossip links (nftables drop rules in a
// director's namespace: the host has no netem), SIGSTOP/SIGCONT, CPU
// starvation (the saru and a busy loop under one cgroup v1 CPU quota), kill
// -9 with a restart, and two of these at once on two directors. A control
// run with quorum 1 must find doubles, or the sampler is blind. A sampler reads every director's rules from its kernel
// all the while and counts buckets accepted by two directors in both read
// orders (must be 0), the longest time a bucket was accepted by nobody, and
// lapses of the liveness lease.
//
// PEERLVS_CHAOS_SEED sets the seed (printed; the schedule of faults is a
// function of the seed and the fleet size, the daemons' timing is not),
// PEERLVS_CHAOS_DURATION the injection time shared by the fleet sizes
// (default 90s), PEERLVS_CHAOS_SIZES the fleet sizes (default "3,5");
// PEERLVS_CHAOS_LOGS=1 keeps every saru's log (always kept on failure).
// `make chaos` runs it for 10 minutes.
func TestSaruChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: injects faults into saru fleets in network namespaces for PEERLVS_CHAOS_DURATION (default 90s)")
	}
	nstest.RequireRoot(t, "create network namespaces, nftables drop rules and cgroups for a saru fleet under injected faults")
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: %v", tool, err)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PEERLVS_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("PEERLVS_CHAOS_SEED=%q: want an unsigned integer", s)
		}
		seed = v
	}
	total := 90 * time.Second
	if s := os.Getenv("PEERLVS_CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("PEERLVS_CHAOS_DURATION=%q: want a duration such as 90s or 10m", s)
		}
		total = d
	}
	sizes := []int{3, 5}
	if s := os.Getenv("PEERLVS_CHAOS_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 2 || n > 32 {
				t.Fatalf("PEERLVS_CHAOS_SIZES=%q: want fleet sizes 2..32, comma-separated", s)
			}
			sizes = append(sizes, n)
		}
	}
	// Stay within go test's -timeout: cleanups do not run after it fires.
	if dl, ok := t.Deadline(); ok {
		// Each fleet needs up to ~20 s for its last round, ~30 s to start
		// and recover, and the control ~20 s.
		if left := time.Until(dl) - time.Duration(len(sizes)+1)*time.Minute; left < total {
			total = max(left, 10*time.Second)
			t.Logf("injection cut to %v to end before go test's -timeout", total)
		}
	}
	starve := cgroupCPU()
	t.Logf("chaos seed %d (rerun with PEERLVS_CHAOS_SEED=%d), injection %v over fleet sizes %v", seed, seed, total, sizes)
	if starve == "" {
		t.Logf("no cgroup v1 cpu controller with cpu.cfs_quota_us under /sys/fs/cgroup/cpu: CPU starvation is left out")
	}
	bin := buildSaru(t)
	// The control: with quorum 1 (every director grants itself) a director
	// cut off from the rest keeps its buckets while the others take them.
	// The sampler must see that, or it is blind.
	t.Run("control_quorum_1", func(t *testing.T) {
		cut := chaosRound{kind: "burst", faults: []chaosFault{{kind: "burst", victim: 0, mode: "one", count: 1, dur: 5 * time.Second}}, quiet: time.Second}
		runChaos(t, bin, chaosOpts{n: 3, quorum: 1, seed: seed, cgroot: starve, fixed: []chaosRound{cut}})
	})
	for _, n := range sizes {
		t.Run(fmt.Sprintf("%d_directors", n), func(t *testing.T) {
			runChaos(t, bin, chaosOpts{n: n, quorum: n/2 + 1, seed: seed, dur: total / time.Duration(len(sizes)), cgroot: starve})
		})
	}
}

// chaosOpts says what runChaos runs: n directors with the given quorum,
// faults drawn from seed for dur, or the rounds of fixed (a control that
// must find doubles).
type chaosOpts struct {
	n, quorum int
	seed      uint64
	dur       time.Duration
	cgroot    string
	fixed     []chaosRound
}

const (
	chaosBuckets = 64 // e2eLab.filter reads 64 buckets
	chaosTable   = "peerlvs_chaos"
	chaosEvery   = 10 * time.Millisecond // between sampler rounds
)

// processCPUTime is the CPU time this test process used so far.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cgroupCPU returns the cgroup v1 cpu hierarchy's mount if it has CFS
// quotas, else "".
func cgroupCPU() string {
	const p = "/sys/fs/cgroup/cpu"
	if _, err := os.Stat(filepath.Join(p, "cpu.cfs_quota_us")); err != nil {
		return ""
	}
	return p
}

// A chaosFault is one fault on one director (or a set of links).
type chaosFault struct {
	kind   string
	victim int           // director index
	peer   int           // asym: the director the victim stops hearing
	mode   string        // loss: in/out/both; oneway, flap: deaf/mute/both; asym: one/both; burst: one/all
	pct    int           // loss: drop percentage; starve: CPU quota, % of one core
	period time.Duration // starve: the CFS period the quota is counted in
	dur    time.Duration // how long the fault lasts (burst: each burst)
	off    time.Duration // burst, flap: pause between cuts; kill: time dead; combo: delay of this fault
	count  int           // burst, flap: cuts
	edges  [][2]int      // edges: {from, to}: to drops what from sends
}

func (f chaosFault) String() string {
	d := func(i int) string { return fmt.Sprintf("d%d", i+1) }
	r := func(x time.Duration) string { return x.Round(10 * time.Millisecond).String() }
	var s string
	switch f.kind {
	case "loss":
		s = fmt.Sprintf("%s loses %d%% of gossip %s for %s", d(f.victim), f.pct, map[string]string{"in": "inbound", "out": "outbound", "both": "both ways"}[f.mode], r(f.dur))
	case "oneway":
		if f.mode == "deaf" {
			s = fmt.Sprintf("%s hears nobody (inbound dropped) for %s", d(f.victim), r(f.dur))
		} else {
			s = fmt.Sprintf("nobody hears %s (outbound dropped) for %s", d(f.victim), r(f.dur))
		}
	case "asym":
		if f.mode == "both" {
			s = fmt.Sprintf("%s and %s do not hear each other (both hear the rest) for %s", d(f.victim), d(f.peer), r(f.dur))
		} else {
			s = fmt.Sprintf("%s does not hear %s (%s hears %s) for %s", d(f.victim), d(f.peer), d(f.peer), d(f.victim), r(f.dur))
		}
	case "edges":
		var es []string
		for _, e := range f.edges {
			es = append(es, d(e[0])+"->"+d(e[1]))
		}
		s = fmt.Sprintf("links %s cut one way for %s", strings.Join(es, " "), r(f.dur))
	case "burst":
		who := d(f.victim)
		if f.mode == "all" {
			who = "every director"
		}
		s = fmt.Sprintf("%s drops everything %d× %s, %s apart", who, f.count, r(f.dur), r(f.off))
	case "flap":
		what := map[string]string{"deaf": "hears nobody", "mute": "is heard by nobody", "both": "is cut off"}[f.mode]
		s = fmt.Sprintf("%s %s %d× %s, %s apart", d(f.victim), what, f.count, r(f.dur), r(f.off))
	case "stop":
		s = fmt.Sprintf("SIGSTOP %s for %s", d(f.victim), r(f.dur))
	case "starve":
		s = fmt.Sprintf("%s and a CPU hog capped at %d%% of a core (CFS period %s) for %s", d(f.victim), f.pct, r(f.period), r(f.dur))
	case "kill":
		s = fmt.Sprintf("kill -9 %s, restart after %s", d(f.victim), r(f.off))
	}
	if f.off > 0 && f.kind != "burst" && f.kind != "flap" && f.kind != "kill" {
		s += fmt.Sprintf(" (from +%s)", r(f.off))
	}
	return s
}

// chaosRound is one round of the schedule: a fault (or two at once,
// "combo") and the quiet time after it.
type chaosRound struct {
	kind   string
	faults []chaosFault
	quiet  time.Duration
}

func (r chaosRound) String() string {
	var fs []string
	for _, f := range r.faults {
		fs = append(fs, f.String())
	}
	return fmt.Sprintf("[%s] %s; then quiet %v", r.kind, strings.Join(fs, " + "), r.quiet.Round(10*time.Millisecond))
}

// chaosKinds are the fault kinds with their weights in the schedule.
var chaosKinds = []struct {
	kind   string
	weight int
}{{"loss", 3}, {"oneway", 3}, {"asym", 2}, {"edges", 2}, {"burst", 2}, {"flap", 2}, {"stop", 3}, {"starve", 2}, {"kill", 1}, {"combo", 3}}

// planRound draws the next round from rng. It draws the same numbers in the
// same order whatever happens while rounds run, so a seed gives one schedule.
func planRound(rng *mrand.Rand, n int, starve bool) chaosRound {
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	sum := 0
	for _, k := range chaosKinds {
		if k.kind != "starve" || starve {
			sum += k.weight
		}
	}
	pick := rng.IntN(sum)
	kind := ""
	for _, k := range chaosKinds {
		if k.kind == "starve" && !starve {
			continue
		}
		if pick < k.weight {
			kind = k.kind
			break
		}
		pick -= k.weight
	}
	one := func(kind string, victim int) chaosFault {
		f := chaosFault{kind: kind, victim: victim}
		switch kind {
		case "loss":
			f.mode = []string{"in", "out", "both"}[rng.IntN(3)]
			f.pct = 20 + rng.IntN(76)
			f.dur = between(2*time.Second, 8*time.Second)
		case "oneway":
			f.mode = []string{"deaf", "mute"}[rng.IntN(2)]
			f.dur = between(time.Second, 8*time.Second)
		case "asym":
			f.peer = (victim + 1 + rng.IntN(n-1)) % n
			f.mode = "one"
			if rng.IntN(3) == 0 {
				f.mode = "both"
			}
			f.dur = between(time.Second, 8*time.Second)
		case "edges":
			p := 20 + rng.IntN(41)
			for from := 0; from < n; from++ {
				for to := 0; to < n; to++ {
					if from != to && rng.IntN(100) < p {
						f.edges = append(f.edges, [2]int{from, to})
					}
				}
			}
			if len(f.edges) == 0 {
				f.edges = [][2]int{{victim, (victim + 1) % n}}
			}
			f.dur = between(time.Second, 8*time.Second)
		case "burst":
			f.mode = "one"
			if rng.IntN(5) == 0 {
				f.mode = "all"
			}
			f.count = 1 + rng.IntN(3)
			f.dur = between(500*time.Millisecond, 5*time.Second)
			f.off = between(100*time.Millisecond, 1500*time.Millisecond)
		case "flap":
			// Short cuts, again and again: gossip suspects, refutes and
			// suspects again, as on the starved lab guest.
			f.mode = []string{"deaf", "mute", "both"}[rng.IntN(3)]
			f.count = 3 + rng.IntN(6)
			f.dur = between(200*time.Millisecond, 1500*time.Millisecond)
			f.off = between(100*time.Millisecond, time.Second)
		case "stop":
			f.dur = between(200*time.Millisecond, 5*time.Second)
		case "starve":
			// A long period makes long stalls: at 1 s and 5 %, saru runs
			// 50 ms and then waits 950 ms, longer than its lease.
			f.pct = 5 + rng.IntN(16)
			f.period = []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second}[rng.IntN(4)]
			f.dur = between(2*time.Second, 8*time.Second)
		case "kill":
			f.off = between(0, 3*time.Second)
		}
		return f
	}
	r := chaosRound{kind: kind}
	victim := rng.IntN(n)
	if kind == "combo" {
		// Two faults on two directors at once: with three directors, two
		// faulty ones leave no healthy quorum.
		pool := []string{"loss", "oneway", "burst", "flap", "stop"}
		if starve {
			pool = append(pool, "starve")
		}
		other := (victim + 1 + rng.IntN(n-1)) % n
		a := one(pool[rng.IntN(len(pool))], victim)
		b := one(pool[rng.IntN(len(pool))], other)
		a.mode, b.mode = comboMode(a), comboMode(b)
		b.off = between(0, 2*time.Second)
		r.faults = []chaosFault{a, b}
	} else {
		r.faults = []chaosFault{one(kind, victim)}
	}
	if rng.IntN(4) > 0 {
		r.quiet = between(200*time.Millisecond, 2500*time.Millisecond)
	}
	return r
}

// comboMode keeps a fault of a combo on its own director's namespace.
func comboMode(f chaosFault) string {
	if f.kind == "burst" {
		return "one"
	}
	return f.mode
}

// chaosRun is one fleet under injected faults.
type chaosRun struct {
	t       *testing.T
	bin     string
	n       int
	lab     *e2eLab
	cfgs    []string
	cgroot  string
	start   time.Time
	logsDir string
	env     []string // added to each saru's environment

	mu      sync.Mutex
	ds      []*e2eDaemon
	runs    [][]*e2eDaemon // every saru run of each director, oldest first
	killed  map[*e2eDaemon]bool
	cgroups map[string]bool
	hogs    map[*exec.Cmd]bool
}

func runChaos(t *testing.T, bin string, o chaosOpts) {
	n, seed, dur, cgroot, quorum := o.n, o.seed, o.dur, o.cgroot, o.quorum
	testStart := time.Now()
	c := &chaosRun{t: t, bin: bin, n: n, lab: newE2ELab(t, n), cgroot: cgroot, killed: map[*e2eDaemon]bool{}, cgroups: map[string]bool{}, hogs: map[*exec.Cmd]bool{}}
	t.Cleanup(c.cleanupCgroups)
	dir := t.TempDir()
	keyFile := writeGossipKey(t, dir)
	for i := 0; i < n; i++ {
		c.cfgs = append(c.cfgs, writeChaosConfig(t, dir, i, n, quorum, keyFile))
	}
	c.ds = make([]*e2eDaemon, n)
	c.runs = make([][]*e2eDaemon, n)
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, d := range c.ds {
			if d != nil {
				d.kill(t)
			}
		}
		if t.Failed() || os.Getenv("PEERLVS_CHAOS_LOGS") == "1" {
			c.saveLogs()
		}
	})
	for i := range n {
		if err := c.startDaemon(i); err != nil {
			t.Fatal(err)
		}
	}
	ready := waitE2E(t, c.daemons(), 30*time.Second, fmt.Sprintf("an exact partition over %d directors", n), func() error {
		_, err := c.lab.partition(c.daemons(), chaosBuckets)
		return err
	})
	t.Logf("%d directors (quorum %d, failure_detection 1s, lease 400ms) with an exact partition after %v", n, quorum, ready.Round(time.Millisecond))

	s, err := newChaosSampler(c)
	if err != nil {
		t.Fatal(err)
	}
	c.start = time.Now()
	s.start = c.start
	ctx, cancel := context.WithCancel(context.Background())
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() { defer sampling.Done(); s.run(ctx) }()
	stopSampler := sync.OnceFunc(func() { cancel(); sampling.Wait() })
	defer stopSampler()

	rng := mrand.New(mrand.NewPCG(seed, uint64(n)))
	maxRounds := int(dur/time.Second) + 1 // every round lasts longer than a second but a kill
	if o.fixed != nil {
		maxRounds, dur = len(o.fixed), time.Hour
	}
	cpu0 := processCPUTime()
	var broken error // a saru that exited by itself, or a fleet that did not recover
	for i := 0; i < maxRounds && time.Since(c.start) < dur && broken == nil; i++ {
		var r chaosRound
		if o.fixed != nil {
			r = o.fixed[i]
		} else {
			r = planRound(rng, n, cgroot != "")
		}
		st := &chaosStats{idx: i + 1, kind: r.kind, desc: r.String(), lapses0: c.lapses()}
		s.label(st)
		t.Logf("round %d at +%v: %s", st.idx, time.Since(c.start).Round(time.Millisecond), st.desc)
		c.inject(r)
		time.Sleep(r.quiet)
		st.lapses = c.lapses() - st.lapses0
		s.mu.Lock()
		t.Logf("round %d: %d samples, %d doubly accepted, %d in one read order only, longest unaccepted (begun here, so far) %v, lease lapses logged %d, rules seen to stop accepting %d",
			st.idx, st.samples, st.doubles, st.oneOrder, max(st.maxGap, s.openGap(st, time.Now())).Round(time.Millisecond), st.lapses, st.unlive)
		s.mu.Unlock()
		broken = c.checkAlive()
	}
	injected := time.Since(c.start)
	cpu := processCPUTime() - cpu0

	// Quiet: the fleet must come back to an exact partition on its own.
	s.label(&chaosStats{idx: 0, kind: "recovery", desc: "no fault: back to an exact partition", lapses0: c.lapses()})
	recoverStart := time.Now()
	recovered := func() error {
		ds := c.daemons()
		if _, err := c.lab.partition(ds, chaosBuckets); err != nil {
			return err
		}
		for _, d := range ds {
			f, err := c.lab.filter(d.ns)
			if err != nil {
				return err
			}
			if live, err := f.Live(context.Background()); err != nil || !live {
				return fmt.Errorf("%s's rules not live (%v)", d.name, err)
			}
		}
		return nil
	}
	for broken == nil {
		err := recovered()
		if err == nil {
			break
		}
		if broken = c.checkAlive(); broken == nil && time.Since(recoverStart) > 30*time.Second {
			broken = fmt.Errorf("no exact partition over %d live directors 30 s after the last fault: %w", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	recovery := time.Since(recoverStart)
	time.Sleep(500 * time.Millisecond)
	stopSampler()
	s.finish()
	rec := s.stats[len(s.stats)-1]
	rec.lapses = c.lapses() - rec.lapses0

	rounds := 0
	for _, st := range s.stats {
		if st.idx > 0 {
			rounds++
		}
	}
	t.Logf("fleet of %d, seed %d: %d rounds injected over %v, exact partition %v after the last; test ran %v",
		n, seed, rounds, injected.Round(time.Millisecond), recovery.Round(time.Millisecond), time.Since(testStart).Round(time.Second))
	t.Logf("sampler: %d rounds, each reading every director's rules (a second time in reverse order when a bucket looked doubled); round took p50 %v, max %v; %d read errors; the test process used %.0f %% of a core while injecting",
		s.samples, s.roundP(0.5).Round(time.Millisecond), s.roundP(1).Round(time.Millisecond), s.errs, 100*cpu.Seconds()/injected.Seconds())
	t.Logf("per fault kind (a round is its fault and the quiet after it; a gap counts for the round it began in):\n%s", s.table())
	if len(s.gaps) > 0 {
		t.Logf("longest times a bucket was accepted by nobody (one per round):\n%s", s.longestGaps(5))
	}
	if s.errs > 0 {
		t.Logf("first read error: %v", s.firstErr)
		if s.errs*10 > s.samples {
			t.Errorf("%d of %d sampler rounds failed to read the rules: the figures are not trustworthy", s.errs, s.samples)
		}
	}
	if broken != nil {
		t.Error(broken)
	}
	if o.fixed != nil {
		if s.doubles == 0 {
			t.Errorf("control (quorum %d): no bucket seen accepted twice, though the fleet may accept twice by configuration: the sampler is blind", quorum)
		} else {
			s.mu.Lock()
			d := s.first
			s.mu.Unlock()
			t.Logf("control (quorum %d): %d bucket readings accepted twice, as expected (the sampler sees doubles); the first: bucket %d: %s; then %s",
				quorum, s.doubles, d.bucket, strings.Join(d.forward, ", "), strings.Join(d.reverse, ", "))
		}
		return
	}
	if s.doubles > 0 {
		t.Errorf("%d bucket readings (%d distinct buckets) accepted by two directors in both read orders; the first:\n%s",
			s.doubles, len(s.doubled), c.evidence(s))
	}
}

// writeChaosConfig writes director i's config: every other director a seed,
// the given quorum, failure detection 1s (lease 400ms).
func writeChaosConfig(t *testing.T, dir string, i, n, quorum int, keyFile string) string {
	t.Helper()
	var seeds []string
	for j := 0; j < n; j++ {
		if j != i {
			seeds = append(seeds, fmt.Sprintf("10.77.0.%d:7946", j+1))
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
quorum: %d
failure_detection: 1s
readiness_grace: 500ms
handover_step: 200ms
handover_hold: 500ms
status_listen: 127.0.0.1:%d
`, i+1, i+1, strings.Join(seeds, ", "), keyFile, chaosBuckets, quorum, e2eStatusPort)
	p := filepath.Join(dir, fmt.Sprintf("d%d.yaml", i+1))
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startDaemon starts (or restarts) director i's saru. Unlike
// startE2EDaemon it does not print the logs of every run on failure (a soak
// makes megabytes): the test prints the lines around the first double and
// saves the rest to files.
func (c *chaosRun) startDaemon(i int) error {
	name := fmt.Sprintf("d%d", i+1)
	d := &e2eDaemon{name: name, ns: c.lab.ns[i], bin: c.bin, out: &e2eBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command("ip", "netns", "exec", d.ns, c.bin, "run", "--config", c.cfgs[i])
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if c.env != nil {
		d.cmd.Env = append(os.Environ(), c.env...)
	}
	// Pdeathsig: a test binary killed by -timeout takes its sarus along.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		_ = d.cmd.Wait()
		close(d.done)
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ds[i] = d
	c.runs[i] = append(c.runs[i], d)
	return nil
}

func (c *chaosRun) daemons() []*e2eDaemon {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ds)
}

func (c *chaosRun) daemon(i int) *e2eDaemon {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ds[i]
}

// checkAlive reports a saru that exited though the test did not kill it.
func (c *chaosRun) checkAlive() error {
	for _, d := range c.daemons() {
		c.mu.Lock()
		killed := c.killed[d]
		c.mu.Unlock()
		if d.exited() && !killed {
			return fmt.Errorf("%s's saru exited by itself:\n%s", d.name, tail(d.out.String(), 40))
		}
	}
	return nil
}

// lapses counts the lease lapses every saru run logged.
func (c *chaosRun) lapses() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, rs := range c.runs {
		for _, d := range rs {
			log := d.out.String()
			n += strings.Count(log, "stalled past its liveness lease") + strings.Count(log, "renewed its liveness lease late")
		}
	}
	return n
}

// inject runs the faults of r and undoes them; it returns when the last
// one is over.
func (c *chaosRun) inject(r chaosRound) {
	var wg sync.WaitGroup
	for _, f := range r.faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f.kind != "kill" {
				time.Sleep(f.off)
			}
			if err := c.fault(f); err != nil {
				c.t.Errorf("inject %s: %v", f, err)
			}
		}()
	}
	wg.Wait()
}

func (c *chaosRun) fault(f chaosFault) error {
	ns := func(i int) string { return c.lab.ns[i] }
	ip := func(i int) string { return fmt.Sprintf("10.77.0.%d", i+1) }
	drop := func(rules map[int][2][]string, d time.Duration) error {
		for i, r := range rules {
			if err := setChaosRules(ns(i), r[0], r[1]); err != nil {
				return err
			}
		}
		time.Sleep(d)
		var errs []error
		for i := range rules {
			errs = append(errs, setChaosRules(ns(i), nil, nil))
		}
		return errors.Join(errs...)
	}
	const in, out = `iifname "eth0" `, `oifname "eth0" `
	switch f.kind {
	case "loss":
		r := fmt.Sprintf("numgen random mod 100 < %d drop", f.pct)
		var rs [2][]string
		if f.mode != "out" {
			rs[0] = []string{in + r}
		}
		if f.mode != "in" {
			rs[1] = []string{out + r}
		}
		return drop(map[int][2][]string{f.victim: rs}, f.dur)
	case "oneway":
		if f.mode == "deaf" {
			return drop(map[int][2][]string{f.victim: {{in + "drop"}, nil}}, f.dur)
		}
		return drop(map[int][2][]string{f.victim: {nil, {out + "drop"}}}, f.dur)
	case "asym":
		rules := map[int][2][]string{f.victim: {{in + "ip saddr " + ip(f.peer) + " drop"}, nil}}
		if f.mode == "both" {
			rules[f.peer] = [2][]string{{in + "ip saddr " + ip(f.victim) + " drop"}, nil}
		}
		return drop(rules, f.dur)
	case "edges":
		rules := map[int][2][]string{}
		for _, e := range f.edges {
			r := rules[e[1]]
			r[0] = append(r[0], in+"ip saddr "+ip(e[0])+" drop")
			rules[e[1]] = r
		}
		return drop(rules, f.dur)
	case "burst":
		who := []int{f.victim}
		if f.mode == "all" {
			who = nil
			for i := range c.n {
				who = append(who, i)
			}
		}
		rules := map[int][2][]string{}
		for _, i := range who {
			rules[i] = [2][]string{{in + "drop"}, {out + "drop"}}
		}
		for k := 0; k < f.count; k++ {
			if k > 0 {
				time.Sleep(f.off)
			}
			if err := drop(rules, f.dur); err != nil {
				return err
			}
		}
		return nil
	case "flap":
		var rs [2][]string
		if f.mode != "mute" {
			rs[0] = []string{in + "drop"}
		}
		if f.mode != "deaf" {
			rs[1] = []string{out + "drop"}
		}
		for k := 0; k < f.count; k++ {
			if k > 0 {
				time.Sleep(f.off)
			}
			if err := drop(map[int][2][]string{f.victim: rs}, f.dur); err != nil {
				return err
			}
		}
		return nil
	case "stop":
		d := c.daemon(f.victim)
		if err := syscall.Kill(-d.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
			return err
		}
		time.Sleep(f.dur)
		return syscall.Kill(-d.cmd.Process.Pid, syscall.SIGCONT)
	case "starve":
		return c.starve(c.daemon(f.victim), f.pct, f.period, f.dur)
	case "kill":
		d := c.daemon(f.victim)
		c.mu.Lock()
		c.killed[d] = true
		c.mu.Unlock()
		d.kill(c.t)
		time.Sleep(f.off)
		return c.startDaemon(f.victim)
	}
	return fmt.Errorf("unknown fault kind %q", f.kind)
}

// setChaosRules replaces the test's own table in ns (never saru's tables)
// with chains dropping what the rules say, or removes it if there are none.
func setChaosRules(ns string, input, output []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %[1]s\ndelete table inet %[1]s\n", chaosTable)
	if len(input)+len(output) > 0 {
		fmt.Fprintf(&b, "table inet %s {\n", chaosTable)
		for _, ch := range []struct {
			name, hook string
			rules      []string
		}{{"in", "input", input}, {"out", "output", output}} {
			fmt.Fprintf(&b, "  chain %s {\n    type filter hook %s priority -300; policy accept;\n", ch.name, ch.hook)
			for _, r := range ch.rules {
				fmt.Fprintf(&b, "    %s\n", r)
			}
			b.WriteString("  }\n")
		}
		b.WriteString("}\n")
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f in %s: %v: %s\n%s", ns, err, strings.TrimSpace(string(out)), b.String())
	}
	return nil
}

// starve caps d's saru and a CPU hog together at pct % of one core,
// counted over period, for dur with a cgroup v1 CPU quota, then puts saru
// back into its own cgroup.
func (c *chaosRun) starve(d *e2eDaemon, pct int, period, dur time.Duration) error {
	pid := d.cmd.Process.Pid
	orig, err := cpuCgroupOf(pid)
	if err != nil {
		return err
	}
	cg := filepath.Join(c.cgroot, fmt.Sprintf("peerlvs-chaos-%d-%s", os.Getpid(), filepath.Base(d.ns)))
	if err := os.Mkdir(cg, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	c.mu.Lock()
	c.cgroups[cg] = true
	c.mu.Unlock()
	write := func(file, v string) error { return os.WriteFile(filepath.Join(cg, file), []byte(v), 0o644) }
	// The quota first: the kernel refuses a period under a larger quota.
	us := period.Microseconds()
	if err := write("cpu.cfs_quota_us", "-1"); err != nil {
		return err
	}
	if err := write("cpu.cfs_period_us", strconv.FormatInt(us, 10)); err != nil {
		return err
	}
	if err := write("cpu.cfs_quota_us", strconv.FormatInt(us*int64(pct)/100, 10)); err != nil {
		return err
	}
	// An idle saru uses far less than any quota, which then never bites:
	// a busy loop in the same cgroup spends the quota early in each period,
	// so saru runs in that slice and waits out the rest, as on a host whose
	// CPU a neighbour takes.
	hog := exec.Command("sh", "-c", "while :; do :; done")
	hog.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := hog.Start(); err != nil {
		return fmt.Errorf("start a CPU hog: %w", err)
	}
	c.mu.Lock()
	c.hogs[hog] = true
	c.mu.Unlock()
	stopHog := func() {
		_ = hog.Process.Kill()
		_ = hog.Wait()
		c.mu.Lock()
		delete(c.hogs, hog)
		c.mu.Unlock()
	}
	if err := write("cgroup.procs", strconv.Itoa(hog.Process.Pid)); err != nil {
		stopHog()
		return fmt.Errorf("move the CPU hog into %s: %w", cg, err)
	}
	if err := write("cgroup.procs", strconv.Itoa(pid)); err != nil {
		stopHog()
		return fmt.Errorf("move %s (pid %d) into %s: %w", d.name, pid, cg, err)
	}
	time.Sleep(dur)
	err = os.WriteFile(filepath.Join(c.cgroot, orig, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
	if err != nil && d.exited() {
		err = nil
	}
	stopHog()
	if rerr := os.Remove(cg); rerr != nil && err == nil {
		err = rerr
	}
	if err == nil {
		c.mu.Lock()
		delete(c.cgroups, cg)
		c.mu.Unlock()
	}
	return err
}

// cpuCgroupOf returns pid's cgroup in the v1 cpu hierarchy.
func cpuCgroupOf(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), "cpu") {
			return parts[2], nil
		}
	}
	return "", fmt.Errorf("pid %d is in no cgroup v1 cpu hierarchy", pid)
}

// cleanupCgroups moves whatever is left in the test's cgroups to the root
// cpu cgroup and removes them, also when the test failed midway.
func (c *chaosRun) cleanupCgroups() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for hog := range c.hogs {
		_ = hog.Process.Kill()
		_ = hog.Wait()
	}
	for cg := range c.cgroups {
		if b, err := os.ReadFile(filepath.Join(cg, "cgroup.procs")); err == nil {
			for _, pid := range strings.Fields(string(b)) {
				_ = os.WriteFile(filepath.Join(c.cgroot, "cgroup.procs"), []byte(pid), 0o644)
			}
		}
		if err := os.Remove(cg); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.t.Errorf("cleanup: remove cgroup %s: %v", cg, err)
		}
	}
}

// saveLogs writes every saru run's log to a directory that outlives the
// test, and names it.
func (c *chaosRun) saveLogs() {
	dir, err := os.MkdirTemp("", "peerlvs-chaos-logs-")
	if err != nil {
		c.t.Logf("save the saru logs: %v", err)
		return
	}
	for i, rs := range c.runs {
		for k, d := range rs {
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("d%d.run%d.log", i+1, k+1)), []byte(d.out.String()), 0o644)
		}
	}
	c.logsDir = dir
	c.t.Logf("every saru run's log is in %s", dir)
}

func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// chaosStats are the sampler's figures for one round.
type chaosStats struct {
	idx        int
	kind, desc string
	samples    int
	doubles    int // bucket readings accepted twice in both orders
	oneOrder   int // ... in the first order only (a move between the reads)
	maxGap     time.Duration
	unlive     int // a director's rules seen to stop accepting (lease ran out, withdrawn, or saru killed)
	lapses0    int
	lapses     int
}

// chaosDouble is the evidence of a bucket accepted twice.
type chaosDouble struct {
	at               time.Time
	bucket           uint32
	round            *chaosStats
	forward, reverse []string
	status           []string // each director's saru status, asked at once
}

// chaosSampler reads every director's rules from its kernel continuously.
type chaosSampler struct {
	c     *chaosRun
	fs    []*filter.Filter
	start time.Time

	mu        sync.Mutex
	stats     []*chaosStats
	cur       *chaosStats
	samples   int
	took      []time.Duration
	uncovered map[uint32]chaosGap
	gaps      []closedGap // the longer ones (over 1 s)
	wasLive   []bool
	doubles   int
	doubled   map[uint32]bool
	first     *chaosDouble
	capture   sync.WaitGroup
	errs      int
	firstErr  error
}

type chaosGap struct {
	since time.Time
	in    *chaosStats
}

// closedGap is a time a bucket was accepted by nobody.
type closedGap struct {
	bucket   uint32
	from, to time.Time
	in, out  *chaosStats // the rounds it began and ended in
}

func newChaosSampler(c *chaosRun) (*chaosSampler, error) {
	s := &chaosSampler{c: c, uncovered: map[uint32]chaosGap{}, wasLive: make([]bool, c.n), doubled: map[uint32]bool{},
		cur: &chaosStats{kind: "setup", desc: "before the first fault"}}
	s.stats = append(s.stats, s.cur)
	for _, ns := range c.lab.ns {
		f, err := c.lab.filter(ns)
		if err != nil {
			return nil, err
		}
		s.fs = append(s.fs, f)
	}
	return s, nil
}

// label makes st the round that what the sampler sees counts for.
func (s *chaosSampler) label(st *chaosStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = st
	s.stats = append(s.stats, st)
}

// accepting is one reading: per bucket, who accepts its new flows.
type accepting map[uint32][]string

// read reads the directors in the given order: a director accepts new
// flows of bucket b if its rules are live (liveness table present, lease
// current) and b is in its owned or handover_in set.
func (s *chaosSampler) read(ctx context.Context, order []int, live []bool) (accepting, error) {
	how := accepting{}
	for _, i := range order {
		name := fmt.Sprintf("d%d", i+1)
		ok, err := s.fs[i].Live(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if live != nil {
			live[i] = ok
		}
		if !ok {
			continue
		}
		own, present, err := s.fs[i].Installed(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if !present {
			continue
		}
		at := time.Since(s.start).Seconds()
		for _, b := range own.Owned {
			how[b] = append(how[b], fmt.Sprintf("%s owned (read at +%.3fs)", name, at))
		}
		for _, b := range own.HandoverIn {
			how[b] = append(how[b], fmt.Sprintf("%s handover_in (read at +%.3fs)", name, at))
		}
	}
	return how, nil
}

func (s *chaosSampler) run(ctx context.Context) {
	for ctx.Err() == nil {
		s.round(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(chaosEvery):
		}
	}
}

// round reads every director once, and again in the reverse order if a
// bucket looked doubled: the readings are one after the other, so a bucket
// moving between two directors can look doubled in one order (the giver
// read before it let go, the taker after it took); a bucket doubled in
// both orders is accepted by two at once.
func (s *chaosSampler) round(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	t0 := time.Now()
	order := make([]int, s.c.n)
	for i := range order {
		order[i] = i
	}
	live := make([]bool, s.c.n)
	how, err := s.read(rctx, order, live)
	var again accepting
	if err == nil {
		for _, h := range how {
			if len(h) > 1 {
				slices.Reverse(order)
				again, err = s.read(rctx, order, nil)
				break
			}
		}
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			s.errs++
			if s.firstErr == nil {
				s.firstErr = err
			}
		}
		return
	}
	s.samples++
	s.took = append(s.took, now.Sub(t0))
	st := s.cur
	st.samples++
	for i, l := range live {
		if s.wasLive[i] && !l {
			st.unlive++
		}
		s.wasLive[i] = l
	}
	for b := uint32(0); b < chaosBuckets; b++ {
		n := len(how[b])
		if n > 1 {
			if len(again[b]) > 1 {
				st.doubles++
				s.doubles++
				s.doubled[b] = true
				if s.first == nil {
					s.first = &chaosDouble{at: now, bucket: b, round: st, forward: how[b], reverse: again[b]}
					s.capture.Add(1)
					go s.captureStatus(s.first)
				}
			} else {
				st.oneOrder++
			}
		}
		g, was := s.uncovered[b]
		switch {
		case n == 0 && !was:
			s.uncovered[b] = chaosGap{since: now, in: st}
		case n > 0 && was:
			s.closeGap(b, g, now)
		}
	}
}

// captureStatus asks every saru for its status right after the first
// double (a stopped one does not answer).
func (s *chaosSampler) captureStatus(d *chaosDouble) {
	defer s.capture.Done()
	var out []string
	for _, dm := range s.c.daemons() {
		var st controller.Status
		if err := dm.cli(&st, "status", "--json"); err != nil {
			out = append(out, fmt.Sprintf("%s: %v", dm.name, err))
			continue
		}
		var ms []string
		for _, m := range st.Members {
			ms = append(ms, fmt.Sprintf("%s %s run %d", m.Name, m.State, m.Run))
		}
		out = append(out, fmt.Sprintf("%s: state %s, owned %d, handover in %d out %d, quorum met %v, members [%s], last error %q",
			dm.name, st.State, st.Owned, st.HandoverIn, st.HandoverOut, st.QuorumMet, strings.Join(ms, "; "), st.LastError))
	}
	s.mu.Lock()
	d.status = out
	s.mu.Unlock()
}

// finish closes the gaps still open.
func (s *chaosSampler) finish() {
	s.capture.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for b, g := range s.uncovered {
		s.closeGap(b, g, now)
	}
}

func (s *chaosSampler) closeGap(b uint32, g chaosGap, now time.Time) {
	g.in.maxGap = max(g.in.maxGap, now.Sub(g.since))
	delete(s.uncovered, b)
	if now.Sub(g.since) > time.Second {
		s.gaps = append(s.gaps, closedGap{bucket: b, from: g.since, to: now, in: g.in, out: s.cur})
	}
}

// openGap is the longest gap begun in st that is still open.
func (s *chaosSampler) openGap(st *chaosStats, now time.Time) time.Duration {
	var d time.Duration
	for _, g := range s.uncovered {
		if g.in == st {
			d = max(d, now.Sub(g.since))
		}
	}
	return d
}

// longestGaps describes the k longest gaps, one per round they began in.
func (s *chaosSampler) longestGaps(k int) string {
	gs := slices.Clone(s.gaps)
	slices.SortFunc(gs, func(a, b closedGap) int { return int(b.to.Sub(b.from) - a.to.Sub(a.from)) })
	var b strings.Builder
	seen := map[*chaosStats]bool{}
	for _, g := range gs {
		if seen[g.in] || len(seen) == k {
			continue
		}
		seen[g.in] = true
		fmt.Fprintf(&b, "  %v: bucket %d from +%v to +%v, begun in round %d %s", g.to.Sub(g.from).Round(time.Millisecond), g.bucket,
			g.from.Sub(s.start).Round(time.Millisecond), g.to.Sub(s.start).Round(time.Millisecond), g.in.idx, g.in.desc)
		if g.out != g.in {
			fmt.Fprintf(&b, ", ended in round %d [%s]", g.out.idx, g.out.kind)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (s *chaosSampler) roundP(q float64) time.Duration {
	if len(s.took) == 0 {
		return 0
	}
	ts := slices.Clone(s.took)
	slices.Sort(ts)
	return ts[int(q*float64(len(ts)-1))]
}

// table sums the rounds per fault kind.
func (s *chaosSampler) table() string {
	type row struct {
		rounds, samples, doubles, oneOrder, unlive, lapses int
		maxGap                                             time.Duration
	}
	rows := map[string]*row{}
	var kinds []string
	all := &row{}
	for _, st := range s.stats {
		if st.kind == "setup" && st.samples == 0 {
			continue
		}
		r := rows[st.kind]
		if r == nil {
			r = &row{}
			rows[st.kind] = r
			kinds = append(kinds, st.kind)
		}
		r.rounds++
		if st.idx > 0 {
			all.rounds++
		}
		for _, x := range []*row{r, all} {
			x.samples += st.samples
			x.doubles += st.doubles
			x.oneOrder += st.oneOrder
			x.unlive += st.unlive
			x.lapses += st.lapses
			x.maxGap = max(x.maxGap, st.maxGap)
		}
	}
	var b strings.Builder
	b.WriteString("| fault | rounds | samples | doubly accepted | one order only | longest unaccepted | lapses logged | rules stopped accepting |\n|---|---|---|---|---|---|---|---|\n")
	line := func(k string, r *row) {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %v | %d | %d |\n", k, r.rounds, r.samples, r.doubles, r.oneOrder, r.maxGap.Round(time.Millisecond), r.lapses, r.unlive)
	}
	for _, k := range kinds {
		line(k, rows[k])
	}
	line("all", all)
	return b.String()
}

// evidence describes the first double: who accepted the bucket in each
// reading, the round's faults, each saru's status right after, and the
// saru logs of every director from 3 s before to 1 s after.
func (c *chaosRun) evidence(s *chaosSampler) string {
	s.mu.Lock()
	d := s.first
	s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "bucket %d at +%v, in round %d (%s)\n  first reading: %s\n  reverse reading: %s\n",
		d.bucket, d.at.Sub(s.start).Round(time.Millisecond), d.round.idx, d.round.desc, strings.Join(d.forward, ", "), strings.Join(d.reverse, ", "))
	for _, st := range d.status {
		fmt.Fprintf(&b, "  status right after: %s\n", st)
	}
	from, to := d.at.Add(-3*time.Second), d.at.Add(time.Second)
	c.mu.Lock()
	runs := slices.Clone(c.runs)
	c.mu.Unlock()
	for i, rs := range runs {
		for k, dm := range rs {
			lines := logWindow(dm.out.String(), from, to, s.start)
			if len(lines) == 0 {
				continue
			}
			fmt.Fprintf(&b, "  --- d%d saru run %d, +%v..+%v ---\n", i+1, k+1, from.Sub(s.start).Round(time.Millisecond), to.Sub(s.start).Round(time.Millisecond))
			if len(lines) > 60 {
				fmt.Fprintf(&b, "  (%d lines, the last 60)\n", len(lines))
				lines = lines[len(lines)-60:]
			}
			for _, l := range lines {
				fmt.Fprintf(&b, "  %s\n", l)
			}
		}
	}
	return b.String()
}

// logWindow returns the non-debug lines of a zap JSON log stamped between
// from and to, each prefixed with its time since start.
func logWindow(log string, from, to, start time.Time) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Level string  `json:"level"`
			TS    float64 `json:"ts"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Level == "debug" {
			continue
		}
		at := time.Unix(0, int64(l.TS*1e9))
		if at.Before(from) || at.After(to) {
			continue
		}
		out = append(out, fmt.Sprintf("+%.3fs %s", at.Sub(start).Seconds(), sc.Text()))
	}
	return out
}
