// Command saru is the PeerLVS membership daemon and its operator tool:
// `saru run` joins the fleet and keeps this director's nftables ownership
// in line with the allocation; `saru map`, `saru status` and `saru drain`
// inspect or steer a running daemon through its local status endpoint, and
// `saru map --members` computes a map offline from a config.
//
// This package only parses flags and config, wires the saru packages
// together and handles signals; the logic lives in saru/... and filter.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/saru/controller"
	"github.com/peerlvs/peerlvs/saru/fitness"
	"github.com/peerlvs/peerlvs/saru/member"
	"github.com/peerlvs/peerlvs/saru/services"
)

const usage = `usage:
  saru run --config FILE
  saru map [--json] [--flow ADDR:PORT [--proto tcp|udp|sctp]] [--status HOST:PORT]
  saru map --config FILE --members name[:weight],... [--json] [--flow ADDR:PORT]
  saru status [--status HOST:PORT]
  saru drain [--status HOST:PORT] [--timeout 60s]
  saru services diff [--config FILE] [--status HOST:PORT]
  saru import ldirectord|keepalived FILE
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stderr)
	case "map":
		err = cmdMap(ctx, args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(ctx, args[1:], stdout, stderr)
	case "drain":
		err = cmdDrain(ctx, args[1:], stdout, stderr)
	case "services":
		err = cmdServices(ctx, args[1:], stdout, stderr)
	case "import":
		err = cmdImport(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "saru: %v\n", err)
		return 1
	}
	return 0
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("saru "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseMembers reads "d1:2,d2,d3" as ready members with matching settings.
func parseMembers(s string) ([]member.Member, error) {
	var out []member.Member
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, hasW := strings.Cut(part, ":")
		m := member.Member{Name: name, Weight: 1, State: member.StateReady, FingerprintOK: true}
		if hasW {
			n, err := strconv.ParseUint(w, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("--members: weight of %q: want a whole number, e.g. %s:2", name, name)
			}
			m.Weight = uint32(n)
		}
		if name == "" {
			return nil, fmt.Errorf("--members: empty name in %q", s)
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, errors.New("--members: no members; write e.g. d1,d2:2,d3")
	}
	return out, nil
}

func parseProto(s string) (uint8, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return filter.ProtoTCP, nil
	case "udp":
		return filter.ProtoUDP, nil
	case "sctp":
		return filter.ProtoSCTP, nil
	}
	return 0, fmt.Errorf("--proto %q: use tcp, udp or sctp", s)
}

func cmdMap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("map", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	flow := fs.String("flow", "", "client ADDR:PORT: print the director that owns this flow")
	proto := fs.String("proto", "tcp", "protocol of --flow")
	cfgPath := fs.String("config", "", "config file (offline map, with --members)")
	members := fs.String("members", "", "offline: ready members name[:weight],...")
	status := fs.String("status", "", "status endpoint of the running daemon (default "+defaultStatusListen+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var view controller.MapView
	if *members != "" {
		if *cfgPath == "" {
			return errors.New("map: --members needs --config for buckets, seed and sense")
		}
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		ms, err := parseMembers(*members)
		if err != nil {
			return err
		}
		m, err := controller.Compute(ms, cfg.Buckets, uint64(cfg.Seed), cfg.Quorum)
		if err != nil {
			return fmt.Errorf("map: %w", err)
		}
		view = controller.Describe(m, ms, 0, cfg.Sense.String(), cfg.Quorum)
	} else {
		addr, err := statusAddr(*status, *cfgPath)
		if err != nil {
			return err
		}
		if err := getJSON(ctx, addr, "/map", &view); err != nil {
			return err
		}
	}
	if *flow != "" {
		return printFlow(view, *flow, *proto, *asJSON, stdout)
	}
	if *asJSON {
		return writeJSON(stdout, view)
	}
	return view.WriteText(stdout)
}

func printFlow(view controller.MapView, flow, protoName string, asJSON bool, stdout io.Writer) error {
	client, err := netip.ParseAddrPort(flow)
	if err != nil {
		return fmt.Errorf("--flow %q: write the client as ADDR:PORT, e.g. 198.51.100.7:40000 or [2001:db8::7]:40000", flow)
	}
	proto, err := parseProto(protoName)
	if err != nil {
		return err
	}
	sense, err := filter.ParseSense(view.Sense)
	if err != nil {
		return fmt.Errorf("map: %w", err)
	}
	h := filter.Hasher{Sense: sense, Seed: uint32(view.Seed), Buckets: view.Buckets}
	b := h.Bucket(filter.Flow{Proto: proto, Src: client})
	owner := view.Owner(b)
	if asJSON {
		return writeJSON(stdout, struct {
			Flow     string `json:"flow"`
			Proto    string `json:"proto"`
			Bucket   uint32 `json:"bucket"`
			Director string `json:"director"`
		}{client.String(), strings.ToLower(protoName), b, owner})
	}
	if owner == "" {
		owner = "(none)"
	}
	_, err = fmt.Fprintf(stdout, "flow %s %s -> bucket %d -> director %s\n", strings.ToLower(protoName), client, b, owner)
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// statusAddr picks the daemon's endpoint: --status, else the config's
// status_listen, else the default.
func statusAddr(flagVal, cfgPath string) (string, error) {
	if flagVal != "" {
		return flagVal, nil
	}
	if cfgPath != "" {
		cfg, err := loadConfig(cfgPath)
		if err != nil {
			return "", err
		}
		return cfg.StatusListen, nil
	}
	return defaultStatusListen, nil
}

func getJSON(ctx context.Context, addr, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return fmt.Errorf("request %s: %w", path, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask the running daemon (is `saru run` up with status_listen %s?): %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	status := fs.String("status", "", "status endpoint (default "+defaultStatusListen+")")
	cfgPath := fs.String("config", "", "config file to read status_listen from")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr, err := statusAddr(*status, *cfgPath)
	if err != nil {
		return err
	}
	var st controller.Status
	if err := getJSON(ctx, addr, "/status", &st); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "node %s  state %s  epoch %d  fingerprint %s\nowned %d  handover out %d  in %d  applied %s\n",
		st.Name, st.State, st.Epoch, st.Fingerprint, st.Owned, st.HandoverOut, st.HandoverIn, st.Applied.Format(time.RFC3339))
	if st.LastError != "" {
		fmt.Fprintf(stdout, "last error: %s\n", st.LastError)
	}
	if st.Quorum > 1 && !st.QuorumMet {
		fmt.Fprintf(stdout, "NO QUORUM: fewer than %d ready directors in view; no director owns a bucket\n", st.Quorum)
	}
	for _, m := range st.Members {
		note := ""
		if !m.FingerprintOK {
			note = "  EXCLUDED: " + m.Mismatch
		} else if m.Unfit != "" {
			note = "  UNFIT: " + m.Unfit
		}
		if m.TimingMismatch != "" {
			note += "  DIFFERENT TIMING: " + m.TimingMismatch
		}
		fmt.Fprintf(stdout, "  %-16s %-22s weight %-3d %-8s%s\n", m.Name, m.Addr, m.Weight, m.State, note)
	}
	// Fitness and services are parts of their own: an older saru has
	// neither, and their absence must not hide the rest.
	var fit fitness.Status
	if err := getJSON(ctx, addr, "/fitness", &fit); err == nil {
		printFitness(stdout, fit)
	}
	var svc services.Status
	if err := getJSON(ctx, addr, "/services", &svc); err != nil {
		fmt.Fprintf(stdout, "services: unavailable: %v\n", err)
		return nil
	}
	printServices(stdout, svc)
	return nil
}

func cmdDrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("drain", stderr)
	status := fs.String("status", "", "status endpoint (default "+defaultStatusListen+")")
	cfgPath := fs.String("config", "", "config file to read status_listen from")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait for the buckets to move")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr, err := statusAddr(*status, *cfgPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout+5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/drain?timeout="+timeout.String(), nil)
	if err != nil {
		return fmt.Errorf("drain request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask the running daemon to drain (is `saru run` up with status_listen %s?): %w", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("drain: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	_, err = fmt.Fprintln(stdout, strings.TrimSpace(string(body)))
	return err
}
