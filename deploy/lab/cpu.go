package lab

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CPUTimes is the machine's CPU time so far, summed over all CPUs, as the
// first line of /proc/stat gives it (in clock ticks). A scenario reads it at
// the start and the end of an event to tell how much of the guest the
// daemons under test and the harness left idle: reading a file costs
// nothing, where exec'ing a tool would itself eat the share it measures.
type CPUTimes struct {
	Idle  uint64 // idle + iowait
	Total uint64 // user nice system idle iowait irq softirq steal
}

// ReadCPUTimes reads /proc/stat.
func ReadCPUTimes() (CPUTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUTimes{}, err
	}
	return parseCPUTimes(b)
}

func parseCPUTimes(b []byte) (CPUTimes, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return CPUTimes{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var t CPUTimes
	// Guest and guest_nice (fields 9 and 10) are already counted in user
	// and nice.
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return CPUTimes{}, fmt.Errorf("/proc/stat: %q: %w", line, err)
		}
		t.Total += v
		if i == 3 || i == 4 { // idle, iowait
			t.Idle += v
		}
	}
	return t, nil
}

// IdleSince returns the share of CPU time, in percent of all CPUs, that was
// idle between since and t; -1 if no tick passed.
func (t CPUTimes) IdleSince(since CPUTimes) float64 {
	if t.Total <= since.Total {
		return -1
	}
	return 100 * float64(t.Idle-since.Idle) / float64(t.Total-since.Total)
}

// IdleMeter measures the guest's idle CPU share from the moment it is
// started. The zero value is not usable; call StartIdleMeter.
type IdleMeter struct {
	start CPUTimes
	at    time.Time
}

// StartIdleMeter starts a measurement window.
func StartIdleMeter() IdleMeter {
	t, _ := ReadCPUTimes()
	return IdleMeter{start: t, at: time.Now()}
}

// Since returns when the meter started.
func (m IdleMeter) Since() time.Time { return m.at }

// Idle returns the idle share (percent of all CPUs) since the meter
// started, -1 if it cannot tell.
func (m IdleMeter) Idle() float64 {
	t, err := ReadCPUTimes()
	if err != nil || m.start.Total == 0 {
		return -1
	}
	return t.IdleSince(m.start)
}

// Hog is a CPU hog in the guest, standing for a slower machine: busy loops
// at the highest priority, each busy for a fixed share of every 100 ms, so
// that they win every contention up to that share, the way time stolen by
// a hypervisor or a noisy neighbour is taken whether the daemons need it or
// not (labtraffic hog).
//
// It used to be loops in a cgroup capped by cpu.max; a CI run (on ddd0eff)
// froze the whole guest, no line printed and not even the test timeout's
// dump, right as that cgroup was set up. The cap now comes from the loops'
// own clock and the scenario no longer touches the scheduler's bandwidth
// control.
type Hog struct {
	p   *Proc
	at  time.Time
	cpu time.Duration // the hog's CPU time at start
}

// StartHog starts loops busy loops that together take pct percent of the
// guest's CPUs (of all of them: 25 on a 2-CPU guest is half a CPU).
func (g *Guest) StartHog(pct, loops int) *Hog {
	g.t.Helper()
	ncpu := runtime.NumCPU()
	each := pct * ncpu / loops
	if pct <= 0 || pct >= 100 || loops <= 0 || each <= 0 || each >= 100 {
		g.t.Fatalf("hog: %d %% of %d CPUs in %d loops is not a share", pct, ncpu, loops)
	}
	h := &Hog{p: g.Start("labtraffic", "hog", "-share", strconv.Itoa(each), "-loops", strconv.Itoa(loops), "-duration", "30m"), at: time.Now()}
	h.cpu, _ = h.read()
	return h
}

func (h *Hog) read() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.p.Pid()))
	if err != nil {
		return 0, err
	}
	_, ticks, ok := parseProcStat(string(b))
	if !ok {
		return 0, fmt.Errorf("hog: unexpected /proc/%d/stat %q", h.p.Pid(), b)
	}
	return time.Duration(ticks) * clockTick, nil
}

// Share returns the share of the guest's CPUs (percent of all of them) the
// hog took since it started, -1 if it cannot tell.
func (h *Hog) Share() float64 {
	c, err := h.read()
	wall := time.Since(h.at)
	if err != nil || wall <= 0 {
		return -1
	}
	return 100 * float64(c-h.cpu) / float64(wall) / float64(runtime.NumCPU())
}

// Stop kills the loops.
func (h *Hog) Stop() { h.p.Kill() }

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times on Linux.
const clockTick = 10 * time.Millisecond

// ProcCPU is the CPU time (user + system, all threads) each live process
// of the guest has used so far, by pid, read from /proc/<pid>/stat.
type ProcCPU map[int]procTime

type procTime struct {
	name string
	cpu  time.Duration
}

// CPUByCommand reads every live process's CPU time. A scenario compares two
// readings (CPUShares) to tell who used the guest over a window.
func CPUByCommand() ProcCPU {
	out := ProcCPU{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		name, ticks, ok := parseProcStat(string(b))
		if !ok {
			continue
		}
		if name == "labtraffic" {
			// One binary plays the client and the servers: name the role.
			if c, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil {
				if args := strings.Split(string(c), "\x00"); len(args) > 1 {
					name += " " + args[1]
				}
			}
		}
		out[pid] = procTime{name, time.Duration(ticks) * clockTick}
	}
	return out
}

// parseProcStat returns the command name and utime + stime of one
// /proc/<pid>/stat line ("pid (comm) state ppid ... utime stime ...").
func parseProcStat(s string) (string, uint64, bool) {
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return "", 0, false
	}
	name := s[i+1 : j]
	if k := strings.IndexByte(name, '/'); k > 0 {
		name = name[:k]
	}
	f := strings.Fields(s[j+1:])
	// f[0] is the state (field 3); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return "", 0, false
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, false
	}
	return name, u + st, true
}

// CPUShares turns two CPUByCommand readings taken wall apart into each
// command's share of the guest (percent of all its CPUs), largest first,
// as "name N %" items. Processes are summed by command name; kernel
// threads by the part of their name before a slash ("kworker"). A process
// started in between counts whole; one that exited in between is missing
// (its time went with it). Commands under half a percent are left out.
func CPUShares(before, after ProcCPU, wall time.Duration) string {
	by := map[string]time.Duration{}
	for pid, a := range after {
		d := a.cpu
		if b, ok := before[pid]; ok && b.name == a.name {
			d -= b.cpu
		}
		by[a.name] += d
	}
	type share struct {
		name string
		pct  float64
	}
	var ss []share
	for n, d := range by {
		if wall <= 0 {
			break
		}
		if p := 100 * float64(d) / float64(wall) / float64(runtime.NumCPU()); p >= 0.5 {
			ss = append(ss, share{n, p})
		}
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i].pct > ss[j].pct })
	var b strings.Builder
	for i, s := range ss {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %.0f %%", s.name, s.pct)
	}
	return b.String()
}

// speedWork is the fixed work MeasureSpeed gives each CPU: about 1 s of
// the emulated guest on the machine refSpeedWork was measured on.
const speedWork = 400_000_000

// refSpeedWork is how long speedWork took on every CPU of the 2-vCPU TCG
// guest at once, on the 2-core Debian 12 machine the lab's figures come
// from (docs/benchmarks.md), quiet: the median of three rounds was 725 to
// 860 ms in four boots (2026-12-07), 905 and 1056 ms with qemu held to
// 1.5 CPUs by a cgroup quota.
const refSpeedWork = 775 * time.Millisecond

// MeasureSpeed runs the same integer work on every CPU of the guest at
// once, three rounds of about a second each (a quota on the host bites
// per 100 ms period, and a round of a tenth of a second could fall
// between two throttles), and returns the guest's speed against the
// reference machine's guest (refSpeedWork) from the median round: 1 as
// fast, 0.5 half as fast. All CPUs at once, because a host short of CPU
// (a cgroup quota on qemu, a crowded CI machine) slows one busy vCPU
// little and two a lot. Call it before the scenario starts its daemons:
// it measures the machine, not the load on it.
func MeasureSpeed() (speed float64, took time.Duration) {
	var rounds []time.Duration
	for range 3 {
		start := time.Now()
		var wg sync.WaitGroup
		// The results go to memory the loops share, so that the compiler
		// keeps the work.
		sums := make([]uint64, runtime.NumCPU())
		for i := range sums {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sums[i] = spin(speedWork)
			}()
		}
		wg.Wait()
		rounds = append(rounds, time.Since(start))
	}
	slices.Sort(rounds)
	took = rounds[1]
	return float64(refSpeedWork) / float64(took), took
}

// spin is xorshift64, n rounds: integer work the emulator cannot skip.
func spin(n int) uint64 {
	x := uint64(88172645463325252)
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}
