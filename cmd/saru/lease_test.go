package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
)

// fakeLease lapses once, on its third renewal, and records the order of
// what keepLease does.
type fakeLease struct {
	mu     sync.Mutex
	renews int
	events []string
}

func (f *fakeLease) record(e string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
}

func (f *fakeLease) Renew() error {
	f.mu.Lock()
	f.renews++
	n := f.renews
	f.mu.Unlock()
	if n == 3 {
		f.record("lapsed")
		return &filter.LapseError{Since: 500 * time.Millisecond, Lease: 400 * time.Millisecond}
	}
	return nil
}

func (f *fakeLease) Restore() error { f.record("restore"); return nil }

func (f *fakeLease) snapshot() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...), f.renews
}

// TestKeepLease checks what follows a lapse. One long enough for the fleet
// to have declared the director dead: rejoin, wait the settle time without
// renewing, restore, then renew again as usual. A shorter one: restore at
// once, no rejoin.
func TestKeepLease(t *testing.T) {
	const settle = 100 * time.Millisecond
	for _, tc := range []struct {
		name      string
		deadAfter time.Duration
		want      string
	}{
		{"fleet may have declared it dead", 0, "[lapsed rejoin restore]"},
		{"too short for the fleet to notice", time.Hour, "[lapsed restore]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f := &fakeLease{}
			var rejoinedAt time.Time
			lapses := prometheus.NewCounter(prometheus.CounterOpts{Name: "lapses"})
			done := make(chan struct{})
			start := time.Now()
			go func() {
				defer close(done)
				keepLease(ctx, f, 5*time.Millisecond, tc.deadAfter, settle,
					func() { f.record("rejoin"); rejoinedAt = time.Now() }, zap.NewNop(), lapses)
			}()
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				if ev, renews := f.snapshot(); len(ev) >= 2 && ev[len(ev)-1] == "restore" && renews >= 5 {
					break
				}
				if time.Now().After(deadline) {
					ev, renews := f.snapshot()
					t.Fatalf("after 5 s: events %v, %d renewals", ev, renews)
				}
			}
			restoredAfter := time.Since(start)
			cancel()
			<-done
			ev, _ := f.snapshot()
			if fmt.Sprint(ev) != tc.want {
				t.Fatalf("events %v, want %s", ev, tc.want)
			}
			if !rejoinedAt.IsZero() && time.Since(rejoinedAt) < settle {
				t.Fatalf("restored %v after rejoining, want at least the settle time %v", time.Since(rejoinedAt), settle)
			}
			if rejoinedAt.IsZero() && restoredAfter >= settle+time.Second {
				t.Fatalf("a short lapse took %v to restore", restoredAfter)
			}
			var m dto.Metric
			if err := lapses.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
				t.Fatalf("lapses counter %v (%v), want 1", m.GetCounter().GetValue(), err)
			}
		})
	}
}
