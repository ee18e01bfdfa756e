package table

import (
	"runtime"
	"testing"
	"time"
)

// heapPerEntry fills a fresh table with n entries made by mk and returns
// the heap it grew by, per entry.
func heapPerEntry(t testing.TB, n int, mk func(int) Entry) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tb := newTable(t, 0)
	for i := range n {
		e := mk(i)
		if _, err := tb.Upsert(&e, self, t0); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if tb.Len() != n {
		t.Fatalf("Len %d, want %d", tb.Len(), n)
	}
	runtime.KeepAlive(tb)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// TestMemoryBudget holds the table to the 128 bytes per entry target at a
// million entries.
func TestMemoryBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a million entries")
	}
	for _, c := range []struct {
		name string
		mk   func(int) Entry
	}{{"IPv4", v4}, {"IPv6", v6}} {
		b := heapPerEntry(t, 1_000_000, c.mk)
		t.Logf("%s: %.1f B/entry at 1M entries", c.name, b)
		if b > 128 {
			t.Errorf("%s: %.1f B/entry, budget 128", c.name, b)
		}
	}
}

func BenchmarkMemory(b *testing.B) {
	for _, c := range []struct {
		name string
		mk   func(int) Entry
	}{{"IPv4", v4}, {"IPv6", v6}} {
		b.Run(c.name, func(b *testing.B) {
			var per float64
			for range b.N {
				per = heapPerEntry(b, 1_000_000, c.mk)
			}
			b.ReportMetric(per, "B/entry")
		})
	}
}

// BenchmarkUpsert measures the tap's path: kernel reports of a million
// live connections, mostly unchanged, some changing state.
func BenchmarkUpsert(b *testing.B) {
	const n = 1 << 20
	tb := newTable(b, 0)
	es := make([]Entry, n)
	for i := range es {
		es[i] = v4(i)
		tb.Upsert(&es[i], self, t0)
	}
	b.ResetTimer()
	for i := range b.N {
		e := &es[i&(n-1)]
		if i%16 == 0 {
			e.State ^= 4
		}
		tb.Upsert(e, self, t0.Add(time.Duration(i>>20)*time.Second))
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "upserts/s")
}

func BenchmarkApply(b *testing.B) {
	const n = 1 << 20
	tb := newTable(b, 0)
	es := make([]Entry, n)
	for i := range es {
		es[i] = v4(i)
		es[i].Owner, es[i].Version = 2, 1
	}
	b.ResetTimer()
	for i := range b.N {
		e := &es[i&(n-1)]
		e.Version++
		tb.Apply(e, 900, t0)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "applies/s")
}

func BenchmarkTick(b *testing.B) {
	tb := newTable(b, 0)
	for i := range 1_000_000 {
		e := v4(i)
		e.Timeout = uint32(60 + i%900)
		tb.Upsert(&e, 2, t0)
	}
	b.ResetTimer()
	for i := range b.N {
		tb.Tick(t0.Add(time.Duration(i%30)*time.Second), nil, nil)
	}
}
