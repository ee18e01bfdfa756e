package lab

import (
	"fmt"
	"math"
	"runtime"
	"testing"
	"time"
)

func TestParseCPUTimes(t *testing.T) {
	a, err := parseCPUTimes([]byte("cpu  100 5 50 800 45 0 0 0 7 0\ncpu0 50 2 25 400 20 0 0 0 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Idle != 845 || a.Total != 1000 {
		t.Fatalf("got %+v, want idle 845 of 1000", a)
	}
	b, err := parseCPUTimes([]byte("cpu  200 5 150 1000 45 0 0 0 7 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := b.IdleSince(a); math.Abs(got-50) > 1e-9 {
		t.Fatalf("idle since: %v, want 50", got)
	}
	if got := a.IdleSince(a); got != -1 {
		t.Fatalf("idle over no tick: %v, want -1", got)
	}
	if _, err := parseCPUTimes([]byte("intr 1 2 3\n")); err == nil {
		t.Fatal("no error for a first line that is not cpu")
	}
	if _, err := ReadCPUTimes(); err != nil {
		t.Logf("this machine's /proc/stat: %v", err)
	}
}

func TestParseProcStat(t *testing.T) {
	name, ticks, ok := parseProcStat("42 (kworker/u4:2-events) S 2 0 0 0 -1 69238880 0 0 0 0 17 25 0 0 20 0 1 0 9 0 0 18446744073709551615")
	if !ok || name != "kworker" || ticks != 42 {
		t.Fatalf("got %q %d %v, want kworker 42", name, ticks, ok)
	}
	name, ticks, ok = parseProcStat("7 (a (b) c) R 1 7 7 0 -1 4194560 100 0 0 0 300 5 0 0 20 0 3 0 50 0 0")
	if !ok || name != "a (b) c" || ticks != 305 {
		t.Fatalf("got %q %d %v, want \"a (b) c\" 305", name, ticks, ok)
	}
}

func TestCPUShares(t *testing.T) {
	before := ProcCPU{1: {"saru", time.Second}, 2: {"saru", time.Second}, 3: {"gone", time.Second}}
	after := ProcCPU{1: {"saru", 2 * time.Second}, 2: {"saru", 1500 * time.Millisecond}, 4: {"sh", 100 * time.Millisecond}}
	// Over 10 s of wall time the guest's CPUs (NumCPU of this machine)
	// had 10 s each; saru used 1.5 s of them, sh 0.1 s.
	n := float64(runtime.NumCPU())
	want := fmt.Sprintf("saru %.0f %%, sh %.0f %%", 15/n, 1/n)
	if 1/n < 0.5 {
		want = fmt.Sprintf("saru %.0f %%", 15/n)
	}
	if got := CPUShares(before, after, 10*time.Second); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
