package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/ipvs"
	"github.com/peerlvs/peerlvs/ipvs/reconcile"
	"github.com/peerlvs/peerlvs/saru/controller"
	"github.com/peerlvs/peerlvs/saru/health"
	"github.com/peerlvs/peerlvs/saru/member"
	"github.com/peerlvs/peerlvs/saru/services"
	"github.com/peerlvs/peerlvs/saru/verdict"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// servicesParts are the pieces of the services room `saru run` starts.
type servicesParts struct {
	kernel  *lazyKernel
	mgr     *services.Manager
	monitor *health.Monitor
	gossip  *verdict.Gossip
}

func newServices(cfg config, node *member.Node, reg prometheus.Registerer, log *zap.Logger) (servicesParts, error) {
	board := verdict.NewBoard()
	p := servicesParts{
		kernel:  &lazyKernel{},
		monitor: health.NewMonitor(health.Probe, 0, nil),
		gossip:  verdict.NewGossip(cfg.Node, node.Run(), node, board, 0, log),
	}
	var err error
	p.mgr, err = services.NewManager(services.Config{Kernel: p.kernel, Monitor: p.monitor, Gossip: p.gossip, Board: board,
		Self: cfg.Node, Fleet: fleetView(node), Local: cfg.LocalVerdicts, Logger: log, Registry: reg})
	if err != nil {
		return p, err
	}
	p.mgr.Declare(cfg.Services)
	return p, nil
}

// fleetView reads the directors whose verdicts count from the member view:
// ready, fit and declaring our services. An unfit director's own paths are
// suspect (its front link may be down), so it does not vote.
func fleetView(node *member.Node) services.FleetView {
	return func() (bool, []string) {
		ready := false
		var peers []string
		for _, m := range node.Members() {
			switch {
			case m.Local:
				ready = m.State == member.StateReady && m.Unfit == ""
			case m.State == member.StateReady && m.FingerprintOK && m.Unfit == "":
				peers = append(peers, m.Name)
			}
		}
		return ready, peers
	}
}

// persistenceCheckEvery is how often the kernel's services are looked at
// for persistence the fleet cannot keep.
const persistenceCheckEvery = time.Minute

// warnPersistence logs, once per service, a persistent service in the
// kernel that the fleet's sense cannot keep: one configured by hand or by
// another tool, since the services: section refuses them outright. A
// kernel without IPVS has none to warn about.
func warnPersistence(ctx context.Context, k reconcile.Kernel, sense filter.Sense, every time.Duration, log *zap.Logger) {
	warned := map[reconcile.Key]bool{}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if svcs, err := k.Services(); err == nil {
			for _, s := range svcs {
				key := reconcile.KeyOf(s)
				err := services.PersistenceKept(s, sense)
				if err != nil && !warned[key] {
					log.Warn("a persistent service in the kernel cannot keep persistence across this fleet's directors",
						zap.Stringer("service", s), zap.Error(err))
				}
				warned[key] = err != nil
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// lazyKernel opens IPVS on first use, so that a director that declares no
// services runs on a kernel without IPVS; a failed open is tried again at
// the next use (the module may be loaded meanwhile).
type lazyKernel struct {
	mu sync.Mutex
	h  *ipvs.Handle
}

func (k *lazyKernel) open() (*ipvs.Handle, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.h == nil {
		h, err := ipvs.Open("")
		if err != nil {
			return nil, fmt.Errorf("open IPVS for the declared services (load the ip_vs module, run as root): %w", err)
		}
		k.h = h
	}
	return k.h, nil
}

func (k *lazyKernel) Services() ([]ipvs.Service, error) {
	h, err := k.open()
	if err != nil {
		return nil, err
	}
	return h.Services()
}
func (k *lazyKernel) Destinations(s ipvs.Service) ([]ipvs.Destination, error) {
	h, err := k.open()
	if err != nil {
		return nil, err
	}
	return h.Destinations(s)
}
func (k *lazyKernel) AddService(s ipvs.Service) error {
	return k.do(func(h *ipvs.Handle) error { return h.AddService(s) })
}
func (k *lazyKernel) UpdateService(s ipvs.Service) error {
	return k.do(func(h *ipvs.Handle) error { return h.UpdateService(s) })
}
func (k *lazyKernel) DelService(s ipvs.Service) error {
	return k.do(func(h *ipvs.Handle) error { return h.DelService(s) })
}
func (k *lazyKernel) AddDestination(s ipvs.Service, d ipvs.Destination) error {
	return k.do(func(h *ipvs.Handle) error { return h.AddDestination(s, d) })
}
func (k *lazyKernel) UpdateDestination(s ipvs.Service, d ipvs.Destination) error {
	return k.do(func(h *ipvs.Handle) error { return h.UpdateDestination(s, d) })
}
func (k *lazyKernel) DelDestination(s ipvs.Service, d ipvs.Destination) error {
	return k.do(func(h *ipvs.Handle) error { return h.DelDestination(s, d) })
}
func (k *lazyKernel) do(f func(*ipvs.Handle) error) error {
	h, err := k.open()
	if err != nil {
		return err
	}
	return f(h)
}

// servicesReadiness holds a director back from ready until the kernel
// holds its declared services: it must not take flows it cannot forward.
// Only then is syncd asked, so that it writes the entries it held back
// until those services existed (syncready.Source.BindURL).
type servicesReadiness struct {
	inner controller.ReadinessSource
	mgr   *services.Manager
}

func (r servicesReadiness) Ready(ctx context.Context) (bool, error) {
	if !r.mgr.Reconciled() {
		return false, nil
	}
	return r.inner.Ready(ctx)
}

// reload re-reads the config on SIGHUP and applies what can change while
// running: the services. It returns the config now in force.
func reload(path string, cur config, mgr *services.Manager, node *member.Node, log *zap.Logger) config {
	nc, err := loadConfig(path)
	if err != nil {
		log.Error("reload: the config is rejected; the running one stays in force", zap.Error(err))
		return cur
	}
	a, b := cur, nc
	a.Services, b.Services = nil, nil
	if !reflect.DeepEqual(a, b) {
		log.Warn("reload: only services (and the gossip keys) change while running; restart saru for the other settings")
	}
	cur.Services = nc.Services
	mgr.Declare(cur.Services)
	node.SetServices(mgr.Fingerprint())
	log.Info("reload: services declared", zap.Int("services", len(cur.Services)),
		zap.String("fingerprint", fmt.Sprintf("%016x", mgr.Fingerprint())))
	return cur
}

// servicesHandler adds the services endpoints to the status mux.
func servicesHandler(mux *http.ServeMux, mgr *services.Manager) {
	mux.HandleFunc("GET /services", func(w http.ResponseWriter, _ *http.Request) {
		_ = writeJSON(w, mgr.Status())
	})
	// POST a config file: the changes reloading it would make now.
	mux.HandleFunc("POST /services/diff", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		cfg, err := parseConfig(data)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		changes, err := mgr.Diff(cfg.Services)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for _, c := range changes {
			fmt.Fprintln(w, c)
		}
	})
}

// cmdServices runs `saru services diff`.
func cmdServices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "diff" {
		return fmt.Errorf("usage: saru services diff --config FILE [--status HOST:PORT]")
	}
	fs := newFlags("services diff", stderr)
	cfgPath := fs.String("config", "/etc/saru/saru.yaml", "config file with the services to compare")
	status := fs.String("status", "", "status endpoint of the running saru (default: the config's status_listen)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	data, err := os.ReadFile(*cfgPath)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	cfg, err := parseConfig(data)
	if err != nil {
		return fmt.Errorf("config %s: %w", *cfgPath, err)
	}
	addr := *status
	if addr == "" {
		addr = cfg.StatusListen
	}
	out, err := postDiff(ctx, addr, data)
	if err == nil {
		if len(out) == 0 {
			fmt.Fprintln(stdout, "no change: the kernel holds these services with the fleet's current verdicts")
		}
		_, err = stdout.Write(out)
		return err
	}
	var down *daemonDown
	if !errors.As(err, &down) {
		return err
	}
	// No running saru: compare with the kernel as if every real server
	// were up, which is what a first start applies.
	fmt.Fprintf(stdout, "# saru is not running (%v): assuming every real server up\n", down.err)
	h, err := ipvs.Open("")
	if err != nil {
		return fmt.Errorf("open IPVS: %w", err)
	}
	defer h.Close()
	managed := services.Managed{}
	managed.Add(cfg.Services)
	changes, err := services.Plan(h, services.Decide(services.Input{Services: cfg.Services}).Want, managed)
	if err != nil {
		return err
	}
	if len(changes) == 0 {
		fmt.Fprintln(stdout, "no change: the kernel holds these services")
	}
	for _, c := range changes {
		fmt.Fprintln(stdout, c)
	}
	return nil
}

type daemonDown struct{ err error }

func (d *daemonDown) Error() string { return d.err.Error() }

func postDiff(ctx context.Context, addr string, cfg []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/services/diff", bytes.NewReader(cfg))
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, &daemonDown{err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read the daemon's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the running saru refused: %s", strings.TrimSpace(string(body)))
	}
	return body, nil
}

// printServices writes the services part of `saru status`.
func printServices(w io.Writer, st services.Status) {
	if len(st.Rows) == 0 {
		return
	}
	fmt.Fprintf(w, "services  fingerprint %s", st.Fingerprint)
	if !st.Reconciled.IsZero() {
		fmt.Fprintf(w, "  kernel reconciled %s", st.Reconciled.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	if st.LastError != "" {
		fmt.Fprintf(w, "  RECONCILE FAILING: %s\n", st.LastError)
	}
	service := ""
	for _, r := range st.Rows {
		if r.Service != service {
			service = r.Service
			fmt.Fprintf(w, "  %s\n", service)
		}
		weight := "out"
		if r.Weight >= 0 {
			weight = fmt.Sprint(r.Weight)
		}
		names := make([]string, 0, len(r.Verdicts))
		for n := range r.Verdicts {
			names = append(names, n)
		}
		sort.Strings(names)
		var votes []string
		for _, n := range names {
			votes = append(votes, n+"="+r.Verdicts[n])
		}
		note := ""
		if r.Fallback {
			note = "  (fallback)"
		}
		if r.BrokenPath {
			note += "  BROKEN PATH from this director"
		}
		fmt.Fprintf(w, "    -> %-24s fleet %-7s weight %-4s since %s  %s%s\n", r.Real, r.Fleet, weight,
			r.Since.Format(time.RFC3339), strings.Join(votes, " "), note)
	}
}

var _ reconcile.Kernel = (*lazyKernel)(nil)
