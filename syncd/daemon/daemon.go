package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/peerlvs/peerlvs/ipvs"
	"github.com/peerlvs/peerlvs/ipvs/procconn"
	"github.com/peerlvs/peerlvs/ipvs/reconcile"
	"github.com/peerlvs/peerlvs/ipvs/synclink"
	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/peer"
	"github.com/peerlvs/peerlvs/syncd/table"
)

// Daemon is one syncd run.
type Daemon struct {
	cfg  Config
	log  *zap.Logger
	reg  *prometheus.Registry
	tbl  *table.Table
	keys *peer.Keyring

	mu  sync.Mutex
	eng *engine // the running engine, once there is one
}

func (d *Daemon) running() *engine {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.eng
}

// New checks cfg, loads the key file and makes the table. Nothing touches
// the kernel or the network before Run.
func New(cfg Config, logger *zap.Logger, reg *prometheus.Registry) (*Daemon, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	d := &Daemon{cfg: cfg, log: logger, reg: reg}
	if cfg.Peer.Mode == ModeCompat {
		logger.Warn("COMPATIBILITY MODE: the LAN carries plain kernel sync datagrams WITHOUT AUTHENTICATION; anyone who can send to the sync group can insert connections. Use only during a migration from stock kernel sync daemons, on a trusted network.",
			zap.String("group", cfg.Peer.Group), zap.Int("port", cfg.Peer.Port))
	} else {
		k, err := peer.LoadKeyring(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("key_file: %w", err)
		}
		d.keys = k
	}
	tbl, err := table.New(table.Config{Self: table.NodeID(cfg.NodeID), Timeout: peer.KernelTimeout})
	if err != nil {
		return nil, err
	}
	d.tbl = tbl
	return d, nil
}

// Table is the daemon's connection table (safe for concurrent reads).
func (d *Daemon) Table() *table.Table { return d.tbl }

// Reload rereads the key file and hands it to the running loop (SIGHUP).
func (d *Daemon) Reload() error {
	if d.cfg.Peer.Mode == ModeCompat {
		return nil
	}
	k, err := peer.LoadKeyring(d.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("key_file: %w", err)
	}
	d.mu.Lock()
	d.keys = k
	if d.eng != nil {
		d.eng.SetKeyring(k)
	}
	d.mu.Unlock()
	d.log.Info("key file reloaded", zap.Uint8("send_key", k.SendID()), zap.Any("keys", k.IDs()))
	return nil
}

// ErrForeignDaemon is returned by Run when a kernel sync thread that syncd
// did not start is running.
var ErrForeignDaemon = errors.New("a kernel sync daemon not started by syncd is running")

// Run sets up the sync link and the kernel threads, seeds the table, and
// runs until ctx is done; then it stops the kernel threads it started and
// removes the link.
func (d *Daemon) Run(ctx context.Context) (err error) {
	cfg, log := d.cfg, d.log
	lc := cfg.linkConfig()
	// The status endpoint first: /ready answers 503 while setting up.
	srv, err := serveStatus(cfg.StatusListen, d.Handler(), log)
	if err != nil {
		return err
	}
	defer srv.Close()
	h, err := ipvs.Open("")
	if err != nil {
		return err
	}
	defer h.Close()

	running, err := h.Daemons()
	if err != nil {
		return fmt.Errorf("list kernel sync daemons: %w", err)
	}
	for _, r := range running {
		if r.Interface != lc.Name {
			return fmt.Errorf("%w: %s: syncd replaces it; stop it first (ipvsadm --stop-daemon %s) or stop whatever manages it (keepalived lvs_sync_daemon)", ErrForeignDaemon, r, r.State)
		}
	}
	for _, r := range running {
		log.Info("stopping a kernel sync thread left by a previous run", zap.Stringer("daemon", r))
		if err := h.StopDaemon(r.State); err != nil && !errors.Is(err, ipvs.ErrDaemonNotRunning) {
			return err
		}
	}

	link, err := synclink.SetupLink(lc)
	if err != nil {
		return err
	}
	defer func() {
		if rerr := link.Remove(); rerr != nil {
			log.Warn("removing the sync link", zap.Error(rerr))
		}
	}()
	lc = link.Config()

	// Sysctls: v1 on the link (timeouts and IPv6); a bigger backup buffer;
	// backup_only must stay 0 (active-active).
	if v, _ := h.SysctlInt(ipvs.SysctlSyncVersion); v != 1 {
		if err := h.SetSysctlInt(ipvs.SysctlSyncVersion, 1); err != nil {
			return fmt.Errorf("set sync_version 1: %w", err)
		}
		log.Info("set net.ipv4.vs.sync_version=1")
	}
	if bo, _ := h.SysctlInt(ipvs.SysctlBackupOnly); bo != 0 {
		if err := h.SetSysctlInt(ipvs.SysctlBackupOnly, 0); err != nil {
			return fmt.Errorf("set backup_only 0: %w", err)
		}
		log.Warn("set net.ipv4.vs.backup_only=0: it turns forwarding off while a backup thread runs, which active-active cannot have")
	}
	if cfg.Kernel.SyncSockSize > 0 {
		if err := h.SetSysctlInt(ipvs.SysctlSyncSockSize, cfg.Kernel.SyncSockSize); err != nil {
			log.Warn("cannot raise net.ipv4.vs.sync_sock_size; injection is paced anyway", zap.Error(err))
		}
	}
	ports := 1
	if n, err := h.SysctlInt(ipvs.SysctlSyncPorts); err == nil && n > 1 {
		ports = n
	}

	// The tap before the master, the backup before injecting.
	tap, err := synclink.OpenTapPorts(lc.Name, lc.Group, lc.MasterPort, ports)
	if err != nil {
		return err
	}
	defer tap.Close()
	backup := ipvs.DaemonConfig{State: ipvs.Backup, Interface: lc.Name, SyncID: uint8(cfg.SyncID), Group: lc.Group, Port: lc.BackupPort}
	if err := h.StartDaemon(backup); err != nil {
		return err
	}
	defer stopDaemon(h, ipvs.Backup, log)
	inj, err := synclink.OpenInjector(lc.Name, lc.Group, lc.BackupPort)
	if err != nil {
		return err
	}
	defer inj.Close()
	master := ipvs.DaemonConfig{State: ipvs.Master, Interface: lc.Name, SyncID: uint8(cfg.SyncID), Group: lc.Group, Port: lc.MasterPort, MaxLen: uint16(cfg.Kernel.SyncMaxLen)}
	if err := h.StartDaemon(master); err != nil {
		return err
	}
	defer stopDaemon(h, ipvs.Master, log)
	log.Info("kernel sync threads started", zap.Stringer("master", master), zap.Stringer("backup", backup))

	tr, err := openUDP(cfg.Peer)
	if err != nil {
		return err
	}
	defer tr.Close()

	procPath := cfg.Kernel.ProcConn
	kio := KernelIO{
		Tap:      tap,
		Inject:   inj,
		Conns:    func() ([]procconn.Entry, error) { return procconn.ReadFile(procPath) },
		Services: func() ([]reconcile.Virtual, error) { return reconcile.Read(h) },
	}
	now := time.Now()
	d.mu.Lock()
	keys := d.keys
	d.mu.Unlock()
	e, err := newEngine(cfg, log, d.tbl, keys, kio, tr, now)
	if err != nil {
		return err
	}
	seed, skipped := seedFromProc(h, procPath, log)
	e.seed(seed, now)
	log.Info("seeded from the kernel", zap.Int("entries", len(seed)), zap.Int("skipped", skipped))

	if d.reg != nil {
		if err := d.reg.Register(newCollector(e)); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		defer d.reg.Unregister(newCollector(e))
	}
	e.http = e.handler(d.reg)
	d.mu.Lock()
	d.eng = e
	if d.keys != keys {
		e.SetKeyring(d.keys)
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.eng = nil
		d.mu.Unlock()
	}()
	log.Info("syncd running", zap.Int("node_id", cfg.NodeID), zap.String("node", cfg.NodeName),
		zap.String("mode", cfg.Peer.Mode), zap.String("status", cfg.StatusListen))
	err = e.run(ctx)
	log.Info("syncd stopping", zap.Error(err))
	return err
}

func stopDaemon(h *ipvs.Handle, s ipvs.DaemonState, log *zap.Logger) {
	if err := h.StopDaemon(s); err != nil && !errors.Is(err, ipvs.ErrDaemonNotRunning) {
		log.Warn("stopping kernel sync thread", zap.Stringer("state", s), zap.Error(err))
	}
}

// serveStatus starts the status endpoint.
func serveStatus(addr string, h http.Handler, log *zap.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("status_listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("status endpoint", zap.Error(err))
		}
	}()
	return srv, nil
}

// seedFromProc reads the kernel's own connections. It prefers
// ip_vs_conn_sync, which tells local connections from synced ones (those
// belong to peers and come back with the bulk dump).
func seedFromProc(h *ipvs.Handle, path string, log *zap.Logger) ([]table.Entry, int) {
	ents, err := procconn.ReadFile(path + "_sync")
	if err != nil {
		ents, err = procconn.ReadFile(path)
	}
	if err != nil {
		log.Warn("cannot read the kernel's connections; starting empty", zap.Error(err))
		return nil, 0
	}
	fwd := forwardMethods(h)
	return procEntries(ents, fwd)
}

// svcDest identifies a real server of a service.
type svcDest struct {
	proto uint8
	vaddr netip.Addr
	vport uint16
	daddr netip.Addr
	dport uint16
}

// forwardMethods maps the configured real servers to their forwarding
// method (flags), which /proc does not show.
func forwardMethods(h *ipvs.Handle) map[svcDest]uint32 {
	m := map[svcDest]uint32{}
	svcs, err := h.Services()
	if err != nil {
		return m
	}
	for _, s := range svcs {
		ds, err := h.Destinations(s)
		if err != nil {
			continue
		}
		for _, d := range ds {
			m[svcDest{uint8(s.Protocol), s.Address.Unmap(), s.Port, d.Address.Unmap(), d.Port}] = uint32(d.Forward)
			// Fallback by real server only (fwmark services).
			m[svcDest{daddr: d.Address.Unmap(), dport: d.Port}] = uint32(d.Forward)
		}
	}
	return m
}

// procEntries converts /proc lines to table entries; lines whose state or
// forwarding method cannot be recovered are skipped.
func procEntries(ents []procconn.Entry, fwd map[svcDest]uint32) ([]table.Entry, int) {
	var out []table.Entry
	skipped := 0
	for _, p := range ents {
		if p.Origin == procconn.OriginSync {
			continue
		}
		var c wire.Conn
		c.Protocol, c.CAddr, c.CPort, c.VAddr, c.VPort, c.DAddr, c.DPort = p.Protocol, p.CAddr, p.CPort, p.VAddr, p.VPort, p.DAddr, p.DPort
		c.PEName, c.PEData = p.PEName, []byte(p.PEData)
		if len(c.PEData) == 0 {
			c.PEData = nil
		}
		var err error
		if p.CPort == 0 && (p.State == "NONE" || p.State == "ASSURED") {
			c.Flags |= wire.FlagTemplate
			c.State, err = wire.ParseTemplateState(p.State)
		} else {
			c.State, err = wire.ParseState(p.Protocol, p.State)
		}
		if err != nil {
			skipped++
			continue
		}
		f, ok := fwd[svcDest{p.Protocol, p.VAddr.Unmap(), p.VPort, p.DAddr.Unmap(), p.DPort}]
		if !ok {
			f, ok = fwd[svcDest{daddr: p.DAddr.Unmap(), dport: p.DPort}]
		}
		if !ok && c.Flags&wire.FlagTemplate == 0 {
			skipped++
			continue
		}
		c.Flags |= f
		if err := c.Validate(); err != nil {
			skipped++
			continue
		}
		var e table.Entry
		peer.FromConn(&c, &e)
		out = append(out, e)
	}
	return out, skipped
}

// Handler serves the status endpoint of the running daemon (503 until it
// runs); for tests and embedding.
func (d *Daemon) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e := d.running(); e != nil {
			e.http.ServeHTTP(w, r)
			return
		}
		http.Error(w, "not running", http.StatusServiceUnavailable)
	})
}
