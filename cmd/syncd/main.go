// Command syncd is PeerLVS's IPVS connection sync daemon and its operator
// tool. `syncd run` (or ipvsadm's own daemon vocabulary, `syncd
// --start-daemon master|backup ...`) runs the daemon; `syncd conns`,
// `syncd stats` and `syncd ready` ask a running daemon through its local
// status endpoint; `syncd keygen` writes a new key file line.
//
// ipvsadm's vocabulary maps onto peer multicast mode: --mcast-interface,
// --mcast-group, --mcast-port, --mcast-ttl and --syncid become peer.interface,
// peer.group, peer.port, peer.ttl and syncid; --sync-maxlen becomes peer.mtu
// (the largest UDP payload sent). --start-daemon master and --start-daemon
// backup mean the same thing, "send and receive": syncd is active-active and
// runs the kernel's own master and backup threads on its private link
// either way; the role word is accepted (and logged) for compatibility.
// --node-id and --key-file have no ipvsadm counterpart and are required.
//
// This package only parses flags and config, wires syncd/daemon together
// and handles signals (SIGTERM/SIGINT: clean shutdown; SIGHUP: reload the
// key file); the logic lives in syncd/...
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/peerlvs/peerlvs/internal/sdnotify"
	"github.com/peerlvs/peerlvs/syncd/daemon"
)

const usage = `usage:
  syncd run --config FILE [--compat]
  syncd --start-daemon master|backup --mcast-interface IF --syncid N
        --node-id N --key-file F [--sync-maxlen N] [--mcast-group G]
        [--mcast-port P] [--mcast-ttl T] [--node-name NAME]
        [--status-listen ADDR] [--compat]
  syncd conns [--status ADDR] [--json]
  syncd stats [--status ADDR] [--json]
  syncd ready [--status ADDR]        exit 0 ready, 1 not ready, 2 unreachable
  syncd keygen [--id N]              a key file line on stdout (chmod 600 the file)

The status address defaults to ` + daemon.DefaultStatusListen + `.
`

// Exit codes of syncd ready.
const (
	exitReady       = 0
	exitNotReady    = 1
	exitUnreachable = 2
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch a := args[0]; {
	case a == "run":
		err = cmdRun(ctx, args[1:], stderr)
	case strings.HasPrefix(a, "-") && a != "-h" && a != "--help" && a != "-help":
		err = cmdStartDaemon(ctx, args, stderr)
	case a == "conns":
		err = cmdConns(ctx, args[1:], stdout, stderr)
	case a == "stats":
		err = cmdStats(ctx, args[1:], stdout, stderr)
	case a == "ready":
		return cmdReady(ctx, args[1:], stdout, stderr)
	case a == "keygen":
		err = cmdKeygen(args[1:], stdout, stderr)
	case a == "-h" || a == "--help" || a == "-help" || a == "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = fmt.Errorf("unknown command %q\n%s", a, usage)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "syncd: %v\n", err)
		return 1
	}
	return 0
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("syncd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// runConfig parses `syncd run` flags into a Config.
func runConfig(args []string, stderr io.Writer) (daemon.Config, error) {
	fs := newFlags("run", stderr)
	path := fs.String("config", "", "YAML config file (required)")
	compat := fs.Bool("compat", false, "speak the plain kernel v1 format on the LAN (overrides peer.mode; NO AUTHENTICATION)")
	if err := fs.Parse(args); err != nil {
		return daemon.Config{}, err
	}
	if fs.NArg() > 0 {
		return daemon.Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *path == "" {
		return daemon.Config{}, errors.New("--config FILE is required")
	}
	b, err := os.ReadFile(*path)
	if err != nil {
		return daemon.Config{}, fmt.Errorf("config: %w", err)
	}
	if *compat {
		// Parse without validation first, switch the mode, then validate.
		cfg, err := daemon.ParseConfigMode(b, *path, daemon.ModeCompat)
		return cfg, err
	}
	return daemon.ParseConfig(b, *path)
}

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := runConfig(args, stderr)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, nil)
}

// startDaemonConfig maps ipvsadm's daemon vocabulary onto a Config. Both
// master and backup mean "send and receive" (syncd is active-active); the
// role word is accepted for compatibility.
func startDaemonConfig(args []string, stderr io.Writer) (cfg daemon.Config, role string, err error) {
	fs := newFlags("--start-daemon", stderr)
	fs.StringVar(&role, "start-daemon", "", "master|backup: both mean send and receive (accepted for ipvsadm compatibility)")
	ifname := fs.String("mcast-interface", "", "LAN interface for sync multicast (required)")
	syncid := fs.Int("syncid", 0, "sync id 0..255")
	maxlen := fs.Int("sync-maxlen", 0, "largest UDP payload sent on the LAN (peer.mtu)")
	group := fs.String("mcast-group", "", "multicast group (default 224.0.0.81)")
	port := fs.Int("mcast-port", 0, "UDP port (default 8848)")
	ttl := fs.Int("mcast-ttl", 0, "multicast TTL (default 1)")
	nodeID := fs.Int("node-id", 0, "this director's node id 1..65535, unique in the fleet (required)")
	nodeName := fs.String("node-name", "", "this director's name (default dN)")
	keyFile := fs.String("key-file", "", "shared key file (required unless --compat)")
	status := fs.String("status-listen", "", "status endpoint (default "+daemon.DefaultStatusListen+")")
	compat := fs.Bool("compat", false, "speak the plain kernel v1 format on the LAN (NO AUTHENTICATION)")
	if err := fs.Parse(args); err != nil {
		return cfg, role, err
	}
	if fs.NArg() > 0 {
		return cfg, role, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch role {
	case "master", "backup":
	case "":
		return cfg, role, errors.New("--start-daemon: missing; use master or backup (both mean send and receive)")
	default:
		return cfg, role, fmt.Errorf("--start-daemon %q: use master or backup (both mean send and receive)", role)
	}
	cfg = daemon.Config{
		NodeID: *nodeID, NodeName: *nodeName, KeyFile: *keyFile, SyncID: *syncid, StatusListen: *status,
		Peer: daemon.PeerConfig{Mode: daemon.ModeMulticast, Interface: *ifname, Group: *group, Port: *port, TTL: *ttl, MTU: *maxlen},
	}
	if *compat {
		cfg.Peer.Mode = daemon.ModeCompat
	}
	cfg = cfg.WithDefaults()
	return cfg, role, flagErrors(cfg.Validate())
}

// flagErrors renames config fields to the ipvsadm flags they came from.
func flagErrors(err error) error {
	if err == nil {
		return nil
	}
	r := strings.NewReplacer(
		"peer.interface", "--mcast-interface", "peer.group", "--mcast-group", "peer.port", "--mcast-port",
		"peer.ttl", "--mcast-ttl", "peer.mtu", "--sync-maxlen", "node_id", "--node-id", "key_file", "--key-file",
		"syncid", "--syncid", "status_listen", "--status-listen",
	)
	return errors.New(r.Replace(err.Error()))
}

func cmdStartDaemon(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, role, err := startDaemonConfig(args, stderr)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, func(log *zap.Logger) {
		log.Info("notice: --start-daemon "+role+" accepted for ipvsadm compatibility; syncd always sends and receives (master and backup mean the same)",
			zap.String("role", role))
	})
}

// serve runs the daemon until SIGTERM/SIGINT; SIGHUP reloads the key file.
func serve(ctx context.Context, cfg daemon.Config, notice func(*zap.Logger)) error {
	log, err := zap.NewProduction()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	log = log.With(zap.String("node", cfg.NodeName))
	if notice != nil {
		notice(log)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d, err := daemon.New(cfg, log, reg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				_, _ = sdnotify.Notify(sdnotify.Stopping)
				return
			case <-hup:
				if err := d.Reload(); err != nil {
					log.Error("SIGHUP: key file reload failed; keeping the old keys", zap.Error(err))
				}
			}
		}
	}()
	go sdnotify.NotifyWhen(ctx, 100*time.Millisecond, sdnotify.HandlerOK(d.Handler(), "/ready"), sdnotify.Ready) // bulk resync complete
	if err := d.Run(ctx); err != nil {
		log.Error("syncd failed", zap.Error(err))
		return err
	}
	return nil
}

// statusGet fetches path from the status endpoint.
func statusGet(ctx context.Context, addr, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("status endpoint %s unreachable (is syncd running? see --status): %w", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	return resp.StatusCode, b, err
}

func statusFlags(name string, stderr io.Writer, withJSON bool) (*flag.FlagSet, *string, *bool) {
	fs := newFlags(name, stderr)
	addr := fs.String("status", daemon.DefaultStatusListen, "status endpoint of the running daemon")
	var js *bool
	if withJSON {
		js = fs.Bool("json", false, "print JSON")
	}
	return fs, addr, js
}

func cmdConns(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, addr, js := statusFlags("conns", stderr, true)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cs []daemon.ConnJSON
	if done, err := fetchJSON(ctx, *addr, "/conns", *js, stdout, &cs); done || err != nil {
		return err
	}
	return renderConns(stdout, cs)
}

// fetchJSON GETs path from the status endpoint. With raw it copies the JSON
// to stdout and reports done; otherwise it decodes it into v.
func fetchJSON(ctx context.Context, addr, path string, raw bool, stdout io.Writer, v any) (done bool, err error) {
	code, b, err := statusGet(ctx, addr, path)
	if err != nil {
		return false, err
	}
	if code != http.StatusOK {
		return false, fmt.Errorf("status endpoint: %d %s", code, strings.TrimSpace(string(b)))
	}
	if raw {
		_, err := stdout.Write(b)
		return true, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("status endpoint: bad %s answer: %w", path, err)
	}
	return false, nil
}

// renderConns prints connections in ipvsadm -Lcn columns plus owner and
// age.
func renderConns(w io.Writer, cs []daemon.ConnJSON) error {
	fmt.Fprintln(w, "IPVS connection entries")
	fmt.Fprintf(w, "%-3s %-6s %-11s %-18s %-18s %-18s %-10s %s\n", "pro", "expire", "state", "source", "virtual", "destination", "owner", "age")
	for _, c := range cs {
		_, err := fmt.Fprintf(w, "%-3s %02d:%02d  %-11s %-18s %-18s %-18s %-10s %s\n",
			c.Proto, c.Expires/60, c.Expires%60, c.State, c.Source, c.Virtual, c.Destination, c.OwnerName, (time.Duration(c.Age) * time.Second).String())
		if err != nil {
			return err
		}
	}
	return nil
}

func cmdStats(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, addr, js := statusFlags("stats", stderr, true)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var s daemon.Status
	if done, err := fetchJSON(ctx, *addr, "/stats", *js, stdout, &s); done || err != nil {
		return err
	}
	return renderStats(stdout, &s)
}

func renderStats(w io.Writer, s *daemon.Status) error {
	fmt.Fprintf(w, "node %d (%s) mode %s ready %v", s.Node, s.Name, s.Mode, s.Ready)
	if s.Ready {
		fmt.Fprintf(w, " (bulk resync %.3fs)", s.BulkSeconds)
	}
	fmt.Fprintf(w, "\nentries %d (own %d)  created %d updated %d expired %d removed %d stale %d\n",
		s.Entries, s.OwnEntries, s.Table.Created, s.Table.Updated, s.Table.Expired, s.Table.Removed, s.Table.Stale)
	l := s.Loop
	fmt.Fprintf(w, "kernel  in %d frames / %d entries (bad %d/%d)  out %d frames / %d entries (queued %d, invalid %d, dropped %d)\n",
		l.KernelFramesIn, l.KernelEntriesIn, l.KernelBadFrames, l.KernelBadEntries, l.KernelFramesOut, l.KernelEntriesOut, s.InjectQueue, l.KernelInjectBad, l.KernelInjectDrop)
	fmt.Fprintf(w, "peer    in %d frames  out %d frames  rejected %d  send errors %d\n", l.PeerFramesIn, l.PeerFramesOut, l.PeerRejected, l.PeerSendErrors)
	p := s.Peer
	fmt.Fprintf(w, "proto   updates %d  nacks sent %d received %d  resends %d  lost %d  applied %d  stale %d  bulk entries sent %d\n",
		p.UpdatesSent, p.NacksSent, p.NacksReceived, p.Resends, p.UpdatesLost, p.EntriesApplied, p.EntriesStale, p.BulkEntriesSent)
	for r, n := range p.Rejected {
		if n > 0 {
			fmt.Fprintf(w, "rejected %-24s %d\n", r, n)
		}
	}
	for _, pe := range s.Peers {
		fmt.Fprintf(w, "peer %d (%s) ready %v entries %d heard %.1fs ago\n", pe.ID, pe.Name, pe.Ready, pe.Entries, pe.HeardAgo)
	}
	return nil
}

func cmdReady(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, addr, _ := statusFlags("ready", stderr, false)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUnreachable
	}
	code, b, err := statusGet(ctx, *addr, "/ready")
	if err != nil {
		fmt.Fprintf(stderr, "syncd: %v\n", err)
		return exitUnreachable
	}
	fmt.Fprint(stdout, string(b))
	switch code {
	case http.StatusOK:
		return exitReady
	case http.StatusServiceUnavailable:
		return exitNotReady
	}
	fmt.Fprintf(stderr, "syncd: status endpoint answered %d\n", code)
	return exitUnreachable
}

func cmdKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keygen", stderr)
	id := fs.Int("id", 1, "key id 1..255")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id < 1 || *id > 255 {
		return fmt.Errorf("--id %d: use 1..255", *id)
	}
	line, err := keyLine(*id, rand.Reader)
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(stdout, line)
	return err
}

// keyLine is one key file line, marked send.
func keyLine(id int, r io.Reader) (string, error) {
	key := make([]byte, 32)
	if _, err := io.ReadFull(r, key); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d %s send\n", id, hex.EncodeToString(key)), nil
}
