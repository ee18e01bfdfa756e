// Command labtraffic makes and answers the test traffic of the PeerLVS lab
// (package traffic): an echo server for real servers, a client that holds
// TCP connections and reports which survive, and a UDP flow generator.
// Lab-only: it is never shipped with the product.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab/traffic"
)

const usage = `usage: labtraffic COMMAND [flags]

commands:
  echo-server  answer TCP lines (and UDP datagrams) with this server's name
  hold         hold TCP connections through a VIP and report which survive
  udp          send UDP flows through a VIP and count the echoes
  hog          take a fixed share of the CPUs, as a noisy neighbour would

labtraffic COMMAND -h describes the flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// errUsage marks a mistake of the caller, which exits 2.
var errUsage = errors.New("usage")

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "echo-server":
		err = echoServer(args[1:], stdout, stderr)
	case "hold":
		err = hold(args[1:], stdin, stdout, stderr)
	case "udp":
		err = udp(args[1:], stdout, stderr)
	case "hog":
		err = hog(args[1:], stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "labtraffic: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "labtraffic %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "labtraffic %s: %v\n", args[0], err)
		return 1
	}
}

func usageErr(err error) error { return fmt.Errorf("%w: %w", errUsage, err) }

// parse parses flags, and rejects stray arguments, which are almost always
// a flag written after one (flag parsing stops at the first non-flag).
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr(err)
	}
	if fs.NArg() > 0 {
		return usageErr(fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	return nil
}

// signalContext ends on SIGTERM or SIGINT, and after d if d > 0.
func signalContext(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	if d <= 0 {
		return ctx, stop
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, func() { cancel(); stop() }
}

func echoServer(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("echo-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	listen := fs.String("listen", "", "IP:PORT to listen on (required; 0.0.0.0 or [::] for all addresses)")
	udpToo := fs.Bool("udp", false, "also echo UDP datagrams on the same port")
	name := fs.String("name", host, "server name that prefixes every reply (one word)")
	duration := fs.Duration("duration", 0, "stop after this long (0: run until SIGTERM/SIGINT)")
	health := fs.String("health", "", "also answer GET /health with 200 on this IP:PORT (for HTTP health checks)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *listen == "" {
		return usageErr(errors.New("-listen is required"))
	}
	s, err := traffic.ListenEcho(traffic.EchoConfig{Listen: *listen, Name: *name, UDP: *udpToo})
	if err != nil {
		return err
	}
	ctx, stop := signalContext(*duration)
	defer stop()
	if *health != "" {
		ln, err := net.Listen("tcp", *health)
		if err != nil {
			return fmt.Errorf("-health: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "ok %s\n", *name) })
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		defer hs.Close()
	}
	fmt.Fprintf(stderr, "labtraffic echo-server %s: listening on %s (udp %v)\n", *name, s.Addr(), *udpToo)
	err = s.Serve(ctx)
	if werr := printJSON(stdout, s.Stats()); err == nil {
		err = werr
	}
	return err
}

func hold(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hold", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("target", "", "VIP:PORT to connect to (required)")
	conns := fs.Int("conns", 1, "long-lived connections to hold")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between probes on one connection")
	stall := fs.Duration("stall", time.Second, "a reply later than this makes a connection stalled")
	brk := fs.Duration("break", 20*time.Second, "a reply later than this makes a connection broken")
	connectTimeout := fs.Duration("connect-timeout", 3*time.Second, "bound on one connect, and again on its first echo")
	connectRetries := fs.Int("connect-retries", 3, "connect attempts after the first before a connection counts as never opened")
	duration := fs.Duration("duration", 10*time.Minute, "stop after this long and print the final report (0: run until quit or a signal)")
	sourceIPs := fs.String("source-ips", "", "comma-separated source addresses, used in turn")
	rate := fs.Float64("rate", 0, "also open this many short connections per second (connect, one echo, close)")
	fifo := fs.String("report-fifo", "", "read commands from this FIFO (created if missing) instead of stdin")
	perConn := fs.Bool("per-conn", true, "include per_conn in reports")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *target == "" {
		return usageErr(errors.New("-target is required"))
	}
	srcs, err := traffic.ParseAddrs(*sourceIPs)
	if err != nil {
		return usageErr(fmt.Errorf("-source-ips: %w", err))
	}
	h, err := traffic.NewHolder(traffic.HoldConfig{
		Target:         *target,
		Conns:          *conns,
		Interval:       *interval,
		Stall:          *stall,
		Break:          *brk,
		ConnectTimeout: *connectTimeout,
		ConnectRetries: *connectRetries,
		SourceIPs:      srcs,
		Rate:           *rate,
		PerConn:        *perConn,
	})
	if err != nil {
		return usageErr(err)
	}
	cmds := stdin
	if *fifo != "" {
		f, err := traffic.OpenCommandFIFO(*fifo)
		if err != nil {
			return usageErr(err)
		}
		defer f.Close()
		cmds = f
	}
	ctx, stop := signalContext(*duration)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	trigger := make(chan struct{})
	go func() {
		for {
			select {
			case <-usr1:
				select {
				case trigger <- struct{}{}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return h.Serve(ctx, traffic.Console{Commands: cmds, Trigger: trigger, Reports: stdout, Errors: stderr})
}

func udp(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("udp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("target", "", "VIP:PORT to send to (required)")
	flows := fs.Int("flows", 1, "flows, each from its own source port")
	rate := fs.Float64("rate", 10, "datagrams per second per flow")
	duration := fs.Duration("duration", 10*time.Second, "how long to send")
	wait := fs.Duration("wait", time.Second, "how long to wait for late replies after sending")
	sourceIPs := fs.String("source-ips", "", "comma-separated source addresses, used in turn")
	perFlow := fs.Bool("per-flow", true, "include per_flow in the summary")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *target == "" {
		return usageErr(errors.New("-target is required"))
	}
	srcs, err := traffic.ParseAddrs(*sourceIPs)
	if err != nil {
		return usageErr(fmt.Errorf("-source-ips: %w", err))
	}
	u, err := traffic.NewUDPFlows(traffic.UDPConfig{
		Target:    *target,
		Flows:     *flows,
		Rate:      *rate,
		Duration:  *duration,
		Wait:      *wait,
		SourceIPs: srcs,
		PerFlow:   *perFlow,
	})
	if err != nil {
		return usageErr(err)
	}
	// The flows end by themselves; a signal only cuts them short.
	ctx, stop := signalContext(0)
	defer stop()
	sum, err := u.Run(ctx)
	if err != nil {
		return err
	}
	return printJSON(stdout, sum)
}

func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
