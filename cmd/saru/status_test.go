package main

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/saru/controller"
	"github.com/peerlvs/peerlvs/saru/member"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

type oneNode struct {
	mu    sync.Mutex
	state member.State
	ch    chan struct{}
}

func (o *oneNode) Name() string             { return "d1" }
func (o *oneNode) Changes() <-chan struct{} { return o.ch }
func (o *oneNode) State() member.State {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state
}
func (o *oneNode) SetState(s member.State) error {
	o.mu.Lock()
	o.state = s
	o.mu.Unlock()
	select {
	case o.ch <- struct{}{}:
	default:
	}
	return nil
}
func (o *oneNode) SetProgress(member.Progress) error { return nil }
func (o *oneNode) Members() []member.Member {
	return []member.Member{
		{Name: "d1", Weight: 1, State: o.State(), FingerprintOK: true, Local: true},
		{Name: "d2", Weight: 1, State: member.StateReady, FingerprintOK: true, TimingMismatch: "member d2 has quorum=1, we have 2"},
		{Name: "d3", Weight: 1, State: member.StateReady, Mismatch: "member d3 has buckets=32, we have 64"},
	}
}

type nopApplier struct{}

func (nopApplier) Apply(context.Context, filter.Ownership) error { return nil }

// TestStatusEndpoint drives map, status and drain against the daemon's
// HTTP handler over loopback.
func TestStatusEndpoint(t *testing.T) {
	cfg, err := parseConfig([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ctl, err := controller.New(controller.Config{Membership: &oneNode{state: member.StateJoining, ch: make(chan struct{}, 1)},
		Applier: nopApplier{}, Readiness: controller.GraceReadiness{}, Buckets: cfg.Buckets, Seed: uint64(cfg.Seed),
		HandoverStep: 10 * time.Millisecond, HandoverHold: 50 * time.Millisecond, ReadyPoll: 10 * time.Millisecond, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go ctl.Run(ctx)
	rules := func(context.Context) (*controller.FilterView, error) {
		return &controller.FilterView{Live: true, Rules: map[string]filter.Count{"owned_accepted": {Packets: 7, Bytes: 420}},
			OwnedBuckets: map[uint32]filter.Count{0: {Packets: 3}, 5: {Packets: 4}}}, nil
	}
	srv := httptest.NewServer(statusHandler(ctl, rules, cfg, reg, zap.NewNop()))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	for deadline := time.Now().Add(3 * time.Second); ctl.Status().Owned == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never owned buckets: %+v", ctl.Status())
		}
	}
	out, errs, code := runCLI(t, "map", "--status", addr)
	if code != 0 || !strings.Contains(out, "d1        1       ready  32       32.00") ||
		!strings.Contains(out, "excluded: member d3 has buckets=32, we have 64") ||
		!strings.Contains(out, "DIFFERENT TIMING: member d2 has quorum=1, we have 2") ||
		!strings.Contains(out, "owned_accepted  7") || !strings.Contains(out, "2 buckets, min 3, median 4, max 4") {
		t.Fatalf("map (exit %d, %s):\n%s", code, errs, out)
	}
	// The kernel's side failing to read does not hide saru's map.
	broken := httptest.NewServer(statusHandler(ctl, func(context.Context) (*controller.FilterView, error) {
		return nil, errors.New("netlink: boom")
	}, cfg, prometheus.NewRegistry(), zap.NewNop()))
	defer broken.Close()
	out, errs, code = runCLI(t, "map", "--status", strings.TrimPrefix(broken.URL, "http://"))
	if code != 0 || !strings.Contains(out, "d1        1       ready") || !strings.Contains(out, "THIS DIRECTOR'S RULES: read this director's rules: netlink: boom") {
		t.Fatalf("map with unreadable rules (exit %d, %s):\n%s", code, errs, out)
	}
	out, _, code = runCLI(t, "status", "--status", addr)
	if code != 0 || !strings.Contains(out, "node d1  state ready") || !strings.Contains(out, "EXCLUDED") ||
		!strings.Contains(out, "DIFFERENT TIMING: member d2 has quorum=1, we have 2") {
		t.Fatalf("status (exit %d):\n%s", code, out)
	}
	out, errs, code = runCLI(t, "drain", "--status", addr, "--timeout", "3s")
	if code != 0 || !strings.Contains(out, "drained") {
		t.Fatalf("drain (exit %d, %s): %s", code, errs, out)
	}
	if s := ctl.Status(); s.State != member.StateDraining || s.Owned+s.HandoverOut+s.HandoverIn != 0 {
		t.Fatalf("after drain: %+v", s)
	}
}
