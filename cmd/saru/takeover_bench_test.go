package main

import (
	"context"
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

	"golang.org/x/sys/unix"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/internal/nstest"
)

// TestSaruTakeoverBench is the failover benchmark of `make bench` (it runs
// only with PEERLVS_BENCH_TAKEOVER=1): real `saru run` fleets in network
// namespaces with real nftables and the default timings (failure_detection
// 1s, liveness lease 400ms, handover_step 0; handover_hold 500ms, which
// only speeds the returns between kills), quorum a majority, each saru
// with GOMAXPROCS=1.
//
//   - Takeover: for each fleet size (PEERLVS_BENCH_SIZES, default 3,8,32)
//     it kills a random director with SIGKILL PEERLVS_BENCH_KILLS times
//     (default 20) and measures the time from the kill until the survivors'
//     kernels accept every bucket the dead director accepted (read from
//     their rules, liveness included), then restarts it and waits for an
//     exact partition again.
//   - False positives: a fleet of PEERLVS_BENCH_FP_SIZE directors (default
//     8) all pinned to CPU 0, of which a busy loop takes 30 % through a
//     cgroup v1 CPU quota, runs undisturbed for PEERLVS_BENCH_FP_DURATION
//     (default 10m); every "member left or failed" a saru logs is a live
//     director declared dead, and every lease lapse a director that stopped
//     accepting though nothing failed.
//
// PEERLVS_BENCH_LOGS=1 keeps every saru's log (always kept on failure).
// PEERLVS_BENCH_CSV names a file to which it writes one line per takeover
// (size, milliseconds) for deploy/bench/plot-takeover.
func TestSaruTakeoverBench(t *testing.T) {
	if os.Getenv("PEERLVS_BENCH_TAKEOVER") != "1" {
		t.Skip("a benchmark: `make bench` runs it (PEERLVS_BENCH_TAKEOVER=1)")
	}
	nstest.RequireRoot(t, "run saru fleets in network namespaces with nftables")
	bin := buildSaru(t)
	sizes := benchEnvInts(t, "PEERLVS_BENCH_SIZES", []int{3, 8, 32})
	kills := benchEnvInts(t, "PEERLVS_BENCH_KILLS", []int{20})[0]
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (victims only; the daemons' timing is their own)", seed)
	var csv strings.Builder
	for _, n := range sizes {
		t.Run(fmt.Sprintf("takeover-%d", n), func(t *testing.T) {
			for _, ms := range takeoverRun(t, bin, n, kills, seed) {
				fmt.Fprintf(&csv, "%d,%d\n", n, ms.Milliseconds())
			}
		})
	}
	if p := os.Getenv("PEERLVS_BENCH_CSV"); p != "" {
		if err := os.WriteFile(p, []byte("directors,takeover_ms\n"+csv.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
	fpSize := benchEnvInts(t, "PEERLVS_BENCH_FP_SIZE", []int{8})[0]
	fpDur := 10 * time.Minute
	if s := os.Getenv("PEERLVS_BENCH_FP_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("PEERLVS_BENCH_FP_DURATION=%q: %v", s, err)
		}
		fpDur = d
	}
	if fpDur > 0 {
		t.Run(fmt.Sprintf("false-positives-%d", fpSize), func(t *testing.T) { falsePositiveRun(t, bin, fpSize, fpDur) })
	}
}

func benchEnvInts(t *testing.T, name string, def []int) []int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 {
			t.Fatalf("%s=%q: want positive integers separated by commas", name, s)
		}
		out = append(out, v)
	}
	return out
}

// benchFleet starts n directors with a majority quorum and waits for an
// exact partition.
func benchFleet(t *testing.T, bin string, n int) *chaosRun {
	c := &chaosRun{t: t, bin: bin, n: n, lab: newE2ELab(t, n), killed: map[*e2eDaemon]bool{}, cgroups: map[string]bool{}, hogs: map[*exec.Cmd]bool{},
		// Up to 32 directors share this host's cores, where each real
		// one has its own: one P per saru keeps 32 Go runtimes from
		// spinning and collecting garbage in parallel on two cores,
		// which saturated them (see docs/benchmarks.md).
		env: []string{"GOMAXPROCS=1"}}
	dir := t.TempDir()
	keyFile := writeGossipKey(t, dir)
	for i := range n {
		p := writeChaosConfig(t, dir, i, n, n/2+1, keyFile)
		// The default handover_step (0): a taker does not wait. The short
		// handover_hold only speeds the returns between kills.
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.Replace(string(b), "handover_step: 200ms\n", "", 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		c.cfgs = append(c.cfgs, p)
	}
	c.ds = make([]*e2eDaemon, n)
	c.runs = make([][]*e2eDaemon, n)
	t.Cleanup(func() {
		for _, d := range c.daemons() {
			if d != nil {
				d.kill(t)
			}
		}
		if t.Failed() || os.Getenv("PEERLVS_BENCH_LOGS") == "1" {
			c.saveLogs()
		}
	})
	for i := range n {
		if err := c.startDaemon(i); err != nil {
			t.Fatal(err)
		}
	}
	took := c.waitPartition(t, 60*time.Second)
	t.Logf("%d directors (quorum %d) with an exact partition after %v", n, n/2+1, took.Round(time.Millisecond))
	return c
}

func (c *chaosRun) waitPartition(t *testing.T, limit time.Duration) time.Duration {
	return waitE2E(t, c.daemons(), limit, fmt.Sprintf("an exact partition over %d directors", c.n), func() error {
		_, err := c.lab.partition(c.daemons(), chaosBuckets)
		return err
	})
}

// acceptingOf reads which of the buckets in want f's kernel accepts
// new flows of: its rules are live and the bucket is owned or being taken
// over.
func acceptingOf(ctx context.Context, f *filter.Filter, want map[uint32]bool) ([]uint32, error) {
	live, err := f.Live(ctx)
	if err != nil || !live {
		return nil, err
	}
	own, ok, err := f.Installed(ctx)
	if err != nil || !ok {
		return nil, err
	}
	var out []uint32
	for _, b := range slices.Concat(own.Owned, own.HandoverIn) {
		if want[b] {
			out = append(out, b)
		}
	}
	return out, nil
}

// takeoverRun kills a director kills times and returns the takeover times.
func takeoverRun(t *testing.T, bin string, n, kills int, seed uint64) []time.Duration {
	c := benchFleet(t, bin, n)
	fs := make([]*filter.Filter, n)
	for i, ns := range c.lab.ns {
		f, err := c.lab.filter(ns)
		if err != nil {
			t.Fatal(err)
		}
		fs[i] = f
	}
	rng := mrand.New(mrand.NewPCG(seed, uint64(n)))
	var times []time.Duration
	var rounds []time.Duration
	for k := range kills {
		v := rng.IntN(n)
		victim := c.daemon(v)
		own, ok, err := c.lab.installed(victim.ns)
		if err != nil || !ok || len(own.Owned) == 0 {
			t.Fatalf("kill %d: %s owns nothing to take over (%v, table %v)", k+1, victim.name, err, ok)
		}
		want := map[uint32]bool{}
		for _, b := range own.Owned {
			want[b] = true
		}
		c.mu.Lock()
		c.killed[victim] = true
		c.mu.Unlock()
		t0 := time.Now()
		victim.kill(t)
		var took time.Duration
		for took == 0 {
			if time.Since(t0) > 30*time.Second {
				t.Fatalf("kill %d: %s's buckets not all accepted by the survivors 30 s after its kill", k+1, victim.name)
			}
			r0 := time.Now()
			covered, err := readCovered(fs, v, want)
			if err != nil {
				t.Fatalf("kill %d: %v", k+1, err)
			}
			rounds = append(rounds, time.Since(r0))
			if covered == len(want) {
				// The read began at r0: the takeover was complete by then
				// at the latest; it may have been complete a round earlier.
				took = r0.Sub(t0)
			}
		}
		times = append(times, took)
		t.Logf("kill %d: %s (%d buckets %v) at %.3f taken over in %v", k+1, victim.name, len(want), own.Owned,
			float64(t0.UnixNano())/1e9, took.Round(time.Millisecond))
		if err := c.startDaemon(v); err != nil {
			t.Fatal(err)
		}
		c.waitPartition(t, 60*time.Second)
		if err := c.checkAlive(); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(times)
	slices.Sort(rounds)
	q := func(ds []time.Duration, p float64) time.Duration { return ds[int(p*float64(len(ds)-1)+0.5)] }
	t.Logf("takeover at %d directors over %d kills: p50 %v, p90 %v, p99 %v, max %v (sampler round p50 %v, p99 %v: the resolution)",
		n, len(times), q(times, 0.5).Round(time.Millisecond), q(times, 0.9).Round(time.Millisecond),
		q(times, 0.99).Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond),
		q(rounds, 0.5).Round(time.Microsecond*100), q(rounds, 0.99).Round(time.Microsecond*100))
	return times
}

// readCovered counts the buckets of want some survivor (not dead) accepts,
// reading the survivors a few at a time.
func readCovered(fs []*filter.Filter, dead int, want map[uint32]bool) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var (
		mu      sync.Mutex
		covered = map[uint32]bool{}
		first   error
		wg      sync.WaitGroup
	)
	next := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				bs, err := acceptingOf(ctx, fs[i], want)
				mu.Lock()
				if err != nil && first == nil {
					first = fmt.Errorf("d%d: %w", i+1, err)
				}
				for _, b := range bs {
					covered[b] = true
				}
				mu.Unlock()
			}
		}()
	}
	for i := range fs {
		if i != dead {
			next <- i
		}
	}
	close(next)
	wg.Wait()
	return len(covered), first
}

// falsePositiveRun runs n directors undisturbed for dur on CPU 0, of which
// a busy loop takes 30 %, and counts live directors declared dead and lease
// lapses.
func falsePositiveRun(t *testing.T, bin string, n int, dur time.Duration) {
	cgroot := cgroupCPU()
	if cgroot == "" {
		t.Fatal("no cgroup v1 cpu hierarchy with CFS quotas: cannot steal a fixed share of a CPU")
	}
	c := benchFleet(t, bin, n)
	var cpu0 unix.CPUSet
	cpu0.Set(0)
	for _, d := range c.daemons() {
		// Every thread: saru's goroutines run on several.
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", d.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			if err := unix.SchedSetaffinity(tid, &cpu0); err != nil {
				t.Fatalf("pin %s to CPU 0: %v", d.name, err)
			}
		}
	}
	cg := filepath.Join(cgroot, fmt.Sprintf("peerlvs-bench-hog-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	c.cgroups[cg] = true
	c.cgroot = cgroot
	t.Cleanup(c.cleanupCgroups)
	for file, v := range map[string]string{"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"} {
		if err := os.WriteFile(filepath.Join(cg, file), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(cg, "cpu.cfs_quota_us"), []byte("30000"), 0o644); err != nil {
		t.Fatal(err)
	}
	hog := exec.Command("taskset", "-c", "0", "sh", "-c", "while :; do :; done")
	hog.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := hog.Start(); err != nil {
		t.Fatalf("start the CPU hog: %v", err)
	}
	c.hogs[hog] = true
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(hog.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}

	const downLine = `"member left or failed"`
	count := func() (down, lapses int) {
		for _, d := range c.daemons() {
			down += strings.Count(d.out.String(), downLine)
		}
		return down, c.lapses()
	}
	down0, lapses0 := count()
	start := time.Now()
	t.Logf("%d directors pinned to CPU 0, a busy loop taking 30 %% of it; steady state for %v", n, dur)
	var notExact int
	for time.Since(start) < dur {
		time.Sleep(min(10*time.Second, dur-time.Since(start)))
		if err := c.checkAlive(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.lab.partition(c.daemons(), chaosBuckets); err != nil {
			notExact++
			t.Logf("+%v: not an exact partition: %v", time.Since(start).Round(time.Second), err)
		}
	}
	down, lapses := count()
	down, lapses = down-down0, lapses-lapses0
	t.Logf("false positives over %v at %d directors with 30 %% of CPU 0 stolen: %d live directors declared dead (\"member left or failed\" logged, summed over observers), %d lease lapses, %d of %d checks (every 10 s) without an exact partition",
		dur.Round(time.Second), n, down, lapses, notExact, int(dur/(10*time.Second)))
	if down > 0 || lapses > 0 {
		t.Errorf("%d false positives and %d lease lapses in steady state; want none", down, lapses)
	}
}
