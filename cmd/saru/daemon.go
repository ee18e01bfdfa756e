package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/internal/sdnotify"
	"github.com/peerlvs/peerlvs/saru/controller"
	"github.com/peerlvs/peerlvs/saru/lease"
	"github.com/peerlvs/peerlvs/saru/member"
	"github.com/peerlvs/peerlvs/saru/syncready"
	"github.com/peerlvs/peerlvs/saru/verdict"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	cfgPath := fs.String("config", "/etc/saru/saru.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log, err := zap.NewProduction()
	if err != nil {
		return fmt.Errorf("logger: %w", err)
	}
	defer func() { _ = log.Sync() }()
	log = log.With(zap.String("node", cfg.Node))

	flt, err := filter.New(cfg.filterConfig())
	if err != nil {
		return fmt.Errorf("filter: %w", err)
	}
	node, err := member.New(member.Config{Name: cfg.Node, BindAddr: cfg.BindAddr, BindPort: cfg.BindPort,
		AdvertiseAddr: cfg.AdvertiseAddr, Seeds: cfg.Seeds, KeyFile: cfg.GossipKeyFile, Weight: cfg.Weight,
		Settings: cfg.settings(), Version: version, Logger: log, FailureDetection: cfg.FailureDetection})
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newFilterCollector(flt))
	// gate stays a nil interface without grants, not a nil *lease.Service.
	var grants *lease.Service
	var gate controller.Grants
	if cfg.LivenessLease > 0 {
		if grants, err = newGrants(cfg, node, flt, reg, log); err != nil {
			_ = node.Shutdown()
			return err
		}
		gate = grants
	} else {
		log.Warn("liveness_lease is off: no grants, so two directors whose views of the fleet differ may accept the same bucket")
	}
	svc, err := newServices(cfg, node, reg, log)
	if err != nil {
		_ = node.Shutdown()
		return err
	}
	node.SetMessageHandler(func(b []byte) {
		if verdict.Is(b) {
			if err := svc.gossip.Deliver(b); err != nil {
				log.Debug("drop a verdict message", zap.Error(err))
			}
		} else if grants != nil {
			grants.Deliver(b)
		}
	})
	ctl, err := controller.New(controller.Config{Membership: node, Applier: flt, Grants: gate,
		Readiness: servicesReadiness{readiness(cfg), svc.mgr},
		Buckets:   cfg.Buckets, Seed: uint64(cfg.Seed), HandoverStep: cfg.HandoverStep, HandoverHold: cfg.HandoverHold,
		Quorum: cfg.Quorum, AloneAfter: cfg.ReadinessGrace,
		Logger: log, Registry: reg})
	if err != nil {
		_ = node.Shutdown()
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	ln, err := net.Listen("tcp", cfg.StatusListen)
	if err != nil {
		_ = node.Shutdown()
		return fmt.Errorf("status_listen %s: %w", cfg.StatusListen, err)
	}
	mux := statusHandler(ctl, func(ctx context.Context) (*controller.FilterView, error) { return filterView(ctx, flt) }, cfg, reg, log)
	servicesHandler(mux, svc.mgr)
	fit := newFitness(cfg, node, reg, log)
	fitnessHandler(mux, fit)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("status endpoint", zap.Error(err))
		}
	}()

	node.Start(ctx)
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	repairs := prometheus.NewCounter(prometheus.CounterOpts{Name: "saru_filter_repairs_total",
		Help: "Foreign changes to this director's nftables tables found and undone."})
	reg.MustRegister(repairs)
	go watchDrift(ctx, flt, driftCheck, log, repairs)
	if grants != nil {
		go grants.Run(ctx)
	}
	if fit != nil {
		go fit.Run(ctx)
	}
	go svc.monitor.Run(ctx)
	go svc.gossip.Run(ctx)
	go svc.mgr.Run(ctx)
	go warnPersistence(ctx, svc.kernel, cfg.Sense, persistenceCheckEvery, log)
	log.Info("saru running", zap.String("version", version), zap.String("gossip", node.LocalAddr()),
		zap.String("status", cfg.StatusListen), zap.Duration("readiness_grace", cfg.ReadinessGrace))
	_, _ = sdnotify.Notify(sdnotify.Ready) // gossip, controller and status endpoint are up (not: owning buckets)
	for {
		select {
		case <-hup:
			if err := node.ReloadKeys(); err != nil {
				log.Error("reload gossip keys", zap.Error(err))
			} else {
				log.Info("gossip keys reloaded")
			}
			cfg = reload(*cfgPath, cfg, svc.mgr, node, log)
			continue
		case <-ctx.Done():
		}
		break
	}
	log.Info("shutting down: withdrawing from the rules, then leaving the fleet")
	_, _ = sdnotify.Notify(sdnotify.Stopping)
	runErr := <-done
	// Withdraw before leaving: the survivors take our buckets as soon as
	// they hear we left, and we must not accept them any more by then.
	if err := flt.Close(); err != nil {
		log.Error("withdraw from the rules", zap.Error(err))
	}
	if err := node.Leave(2 * time.Second); err != nil {
		log.Warn("leave", zap.Error(err))
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return runErr
}

// driftCheck is how often saru compares the kernel's rules with what it
// applied. A foreign change (an `nft flush ruleset`, a hand edit) lasts at
// most this long; each check lists the table, a few dozen netlink dumps.
const driftCheck = 5 * time.Second

// watchDrift undoes foreign changes to the rules until ctx ends.
func watchDrift(ctx context.Context, flt *filter.Filter, every time.Duration, log *zap.Logger, repairs prometheus.Counter) {
	tick(ctx, every, func() {
		drift, err := flt.Verify(ctx)
		if err != nil {
			log.Warn("verify the nftables rules", zap.Error(err))
			return
		}
		if len(drift) == 0 {
			return
		}
		log.Warn("nftables rules changed by someone else; repairing", zap.Strings("drift", drift))
		if err := flt.Repair(ctx); err != nil {
			log.Error("repair the nftables rules", zap.Error(err))
			return
		}
		repairs.Inc()
	})
}

// tick calls do every interval until ctx ends.
func tick(ctx context.Context, every time.Duration, do func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			do()
		}
	}
}

// newGrants wires the fleet's exclusivity rule (package saru/lease): the
// lease messages ride on memberlist, the kernel lease is the filter's.
func newGrants(cfg config, node *member.Node, flt *filter.Filter, reg *prometheus.Registry, log *zap.Logger) (*lease.Service, error) {
	p := lease.Params{Lease: cfg.LivenessLease, Quorum: cfg.Quorum}.WithDefaults()
	// A kernel write slower than the margin allows is withdrawn: the
	// grantors' Hold allows the margin on top of the lease.
	kernel := lease.KernelFunc(func(deadline time.Time) error {
		err := flt.LeaseUntil(deadline, p.MaxKernelWrite())
		if errors.Is(err, filter.ErrSlowLeaseWrite) {
			return fmt.Errorf("%w: %w", lease.ErrWithdrawn, err)
		}
		return err
	})
	k, err := lease.NewKeeper(lease.Holder{Name: cfg.Node, Run: node.Run()}, p, cfg.Buckets, kernel, time.Now)
	if err != nil {
		return nil, err
	}
	svc := lease.NewService(k, node, log)
	lapses := prometheus.NewCounter(prometheus.CounterOpts{Name: "saru_filter_lease_lapses_total",
		Help: "Times the liveness lease ran out before saru renewed it: the director accepted no new flow meanwhile."})
	reg.MustRegister(lapses)
	dead := member.SilentDeadAfter(cfg.FailureDetection)
	var rejoining atomic.Bool
	svc.OnLapse = func(l lease.Lapse) {
		lapses.Inc()
		log.Warn("saru stalled past its liveness lease, or a quorum did not renew its grants in time: the director accepted no new flow meanwhile, and accepts again only what the fleet grants",
			zap.Duration("for", l.For))
		// The fleet may have declared us dead: refute it at once. In the
		// background: a join waits up to memberlist's TCP timeout for each
		// seed that does not answer (a stopped one), and the renewals must
		// not wait with it.
		if l.For >= dead && rejoining.CompareAndSwap(false, true) {
			go func() {
				defer rejoining.Store(false)
				node.Rejoin()
			}()
		}
	}
	return svc, nil
}

// rulesView reads this director's side of the map from the kernel.
type rulesView func(context.Context) (*controller.FilterView, error)

func statusHandler(ctl *controller.Controller, rules rulesView, cfg config, reg *prometheus.Registry, log *zap.Logger) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		_ = writeJSON(w, ctl.Status())
	})
	mux.HandleFunc("GET /map", func(w http.ResponseWriter, r *http.Request) {
		m, epoch, view := ctl.Map()
		mv := controller.Describe(m, view, epoch, cfg.Sense.String(), cfg.Quorum)
		// The map is saru's; the rules are the kernel's. A failure to read
		// the latter must not hide the former. A poller that wants saru's
		// map alone asks with rules=0 and spares saru a full listing of
		// the table per question.
		if r.URL.Query().Get("rules") == "0" {
			_ = writeJSON(w, mv)
			return
		}
		if fv, err := rules(r.Context()); err != nil {
			mv.FilterError = "read this director's rules: " + err.Error()
		} else {
			mv.Filter = fv
		}
		_ = writeJSON(w, mv)
	})
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, r *http.Request) {
		timeout := 60 * time.Second
		if s := r.URL.Query().Get("timeout"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				http.Error(w, "timeout: "+err.Error(), http.StatusBadRequest)
				return
			}
			timeout = d
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		log.Info("drain requested", zap.Duration("timeout", timeout))
		if err := ctl.Drain(ctx); err != nil {
			http.Error(w, err.Error(), http.StatusGatewayTimeout)
			return
		}
		fmt.Fprintln(w, "drained: this director owns no bucket; stop it now or it stays draining")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// readiness is syncd's word when syncd_status is configured, bounded by the
// grace time, and the grace time alone otherwise.
func readiness(cfg config) controller.ReadinessSource {
	if cfg.SyncdStatus == "" {
		return controller.GraceReadiness{After: cfg.ReadinessGrace, Start: time.Now()}
	}
	return syncready.Source{URL: "http://" + cfg.SyncdStatus + "/ready", BindURL: "http://" + cfg.SyncdStatus + "/bind",
		Timeout: cfg.ReadinessGrace, Start: time.Now()}
}
