package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/ipvs"
	"github.com/peerlvs/peerlvs/ipvs/reconcile"
	"github.com/peerlvs/peerlvs/saru/health"
	"github.com/peerlvs/peerlvs/saru/services"
	"github.com/peerlvs/peerlvs/saru/verdict"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

type noPeers struct{}

func (noPeers) Send(string, []byte) error { return nil }
func (noPeers) Peers() []string           { return nil }

// TestServicesDiff: `saru services diff` asks the running saru what a
// changed file would do to the kernel.
func TestServicesDiff(t *testing.T) {
	example, err := os.ReadFile("../../deploy/saru/saru.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig(example)
	if err != nil {
		t.Fatal(err)
	}
	up := func(context.Context, health.Spec, health.Target) health.Result {
		return health.Result{Up: true, Weight: -1}
	}
	board := verdict.NewBoard()
	kernel := reconcile.NewFake()
	mgr, err := services.NewManager(services.Config{Kernel: kernel, Monitor: health.NewMonitor(up, 0, nil),
		Gossip: verdict.NewGossip("d1", 1, noPeers{}, board, 0, zap.NewNop()), Board: board, Self: "d1",
		Fleet: func() (bool, []string) { return true, nil }})
	if err != nil {
		t.Fatal(err)
	}
	mgr.Declare(cfg.Services)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go mgr.Run(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for !mgr.Reconciled() {
		if time.Now().After(deadline) {
			t.Fatalf("not reconciled: %+v", mgr.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mux := http.NewServeMux()
	servicesHandler(mux, mgr)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	dir := t.TempDir()
	for _, tc := range []struct {
		name, from, to string
		want           []string
	}{
		{"unchanged", "", "", []string{"no change"}},
		{"a weight", "      - address: 10.1.0.12:80\n        weight: 1", "      - address: 10.1.0.12:80\n        weight: 4",
			[]string{"edit real server tcp 192.0.2.10:80 -> 10.1.0.12:80 (weight 1 -> 4)"}},
		{"a real server more", "      - address: 10.1.0.12:80\n", "      - address: 10.1.0.13:80\n      - address: 10.1.0.12:80\n",
			[]string{"add real server tcp 192.0.2.10:80 -> 10.1.0.13:80"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := strings.Replace(string(example), tc.from, tc.to, 1)
			path := dir + "/saru.yaml"
			if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			if err := cmdServices(ctx, []string{"diff", "--config", path, "--status", addr}, &out, &errOut); err != nil {
				t.Fatalf("%v: %s", err, errOut.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Fatalf("output %q lacks %q", out.String(), w)
				}
			}
		})
	}
	// The diff changed nothing. (The monitor does not run here: the real
	// servers are pending, which counts as up.)
	if calls := len(kernel.Calls); calls != 3 {
		t.Fatalf("%d kernel writes, want the 3 of the first reconcile", calls)
	}

	var out bytes.Buffer
	printServices(&out, mgr.Status())
	for _, w := range []string{"tcp 192.0.2.10:80", "-> 10.1.0.11:80", "fleet up", "d1=pending", "(fallback)"} {
		if !strings.Contains(out.String(), w) {
			t.Fatalf("saru status lacks %q:\n%s", w, out.String())
		}
	}
}

// A persistent service configured by hand that the fleet's sense cannot
// keep is named once in the log, and again only if it comes back after
// being fixed.
func TestWarnPersistence(t *testing.T) {
	persistent := ipvs.Service{Protocol: ipvs.TCP, Address: netip.MustParseAddr("192.0.2.10"), Port: 443, Timeout: 300 * time.Second}
	plain := ipvs.Service{Protocol: ipvs.TCP, Address: netip.MustParseAddr("192.0.2.10"), Port: 80}
	k := reconcile.NewFake(reconcile.Virtual{Service: persistent}, reconcile.Virtual{Service: plain})
	core, logs := observer.New(zap.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { warnPersistence(ctx, k, filter.SenseAddrPort, 10*time.Millisecond, zap.New(core)); close(done) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	<-done
	entries := logs.All()
	if len(entries) != 1 || !strings.Contains(fmt.Sprint(entries[0].ContextMap()["service"]), "192.0.2.10:443") ||
		!strings.Contains(fmt.Sprint(entries[0].ContextMap()["error"]), "persistence needs sense: addr") {
		t.Fatalf("warnings: %v", entries)
	}
}
