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
		return fmt.Errorf("%w: test", filter.ErrLeaseLapsed)
	}
	return nil
}

func (f *fakeLease) Restore() error { f.record("restore"); return nil }

func (f *fakeLease) snapshot() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.events...), f.renews
}

// TestKeepLease checks the order after a lapse: rejoin, wait the settle
// time without renewing, restore, then renew again as usual.
func TestKeepLease(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &fakeLease{}
	var rejoinedAt time.Time
	lapses := prometheus.NewCounter(prometheus.CounterOpts{Name: "lapses"})
	const settle = 100 * time.Millisecond
	done := make(chan struct{})
	go func() {
		defer close(done)
		keepLease(ctx, f, 5*time.Millisecond, settle, func() { f.record("rejoin"); rejoinedAt = time.Now() }, zap.NewNop(), lapses)
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if ev, renews := f.snapshot(); len(ev) == 3 && renews >= 5 {
			break
		}
		if time.Now().After(deadline) {
			ev, renews := f.snapshot()
			t.Fatalf("after 5 s: events %v, %d renewals", ev, renews)
		}
	}
	cancel()
	<-done
	ev, _ := f.snapshot()
	if fmt.Sprint(ev) != "[lapsed rejoin restore]" {
		t.Fatalf("events %v, want lapsed, rejoin, restore", ev)
	}
	if since := time.Since(rejoinedAt); since < settle {
		t.Fatalf("restored %v after rejoining, want at least the settle time %v", since, settle)
	}
	var m dto.Metric
	if err := lapses.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("lapses counter %v (%v), want 1", m.GetCounter().GetValue(), err)
	}
}
