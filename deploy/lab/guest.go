package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// Guest is the scenario's handle on the guest machine: it runs commands and
// builds topologies out of network namespaces, bridges and veth pairs. Every
// helper fails the test with the command's output on error, because a
// half-built topology makes every later result meaningless.
type Guest struct {
	t       *testing.T
	mu      sync.Mutex
	procs   []*Proc
	bridges []string
}

func newGuest(t *testing.T) *Guest { return &Guest{t: t} }

// cleanup stops every process the scenario started and left running.
func (g *Guest) cleanup() {
	g.mu.Lock()
	procs := g.procs
	g.procs = nil
	g.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
}

// Sh runs a shell command in the guest's root namespace and returns its
// combined output.
func (g *Guest) Sh(format string, args ...any) string {
	g.t.Helper()
	out, err := g.Try(format, args...)
	if err != nil {
		g.t.Fatalf("%v", err)
	}
	return out
}

// Try is Sh that returns the error instead of failing the test.
func (g *Guest) Try(format string, args ...any) (string, error) {
	return run(exec.Command("sh", "-c", shPrelude+fmt.Sprintf(format, args...)))
}

// shPrelude makes "ip", "tc" and "bridge" in scripts mean Debian's iproute2:
// busybox sh runs its own applets before $PATH, and busybox's ip has no netns.
const shPrelude = `ip(){ /usr/sbin/ip "$@"; }; tc(){ /usr/sbin/tc "$@"; }; bridge(){ /usr/sbin/bridge "$@"; }; `

func run(cmd *exec.Cmd) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
	c.Env = cmd.Env
	out, err := c.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return string(out), nil
}

// Hub creates a bridge in the root namespace that floods every frame to
// every port (ageing_time 0, so it never learns a MAC), which is what
// directors sharing one MAC need: each of them sees every frame.
func (g *Guest) Hub(name string) {
	g.t.Helper()
	g.Sh("ip link add %[1]s type bridge ageing_time 0 && ip link set %[1]s up", name)
	g.bridges = append(g.bridges, name)
}

// Switch creates an ordinary learning bridge in the root namespace.
func (g *Guest) Switch(name string) {
	g.t.Helper()
	g.Sh("ip link add %[1]s type bridge && ip link set %[1]s up", name)
	g.bridges = append(g.bridges, name)
}

// Reset tears the topology down, processes, namespaces and bridges, so one
// boot can run several scenarios that use the same names.
func (g *Guest) Reset() {
	g.t.Helper()
	g.cleanup()
	g.Sh("ip -all netns delete")
	for _, b := range g.bridges {
		g.Sh("ip link del %s", b)
	}
	g.bridges = nil
	// A deleted namespace lives on while anything still holds it (an
	// orphaned TCP socket retransmitting its FIN, say), and so do its veth
	// peers here, whose names the next topology reuses. Deleting the outer
	// ends removes both ends at once.
	for _, line := range strings.Split(g.Sh("ip -o link show type veth"), "\n") {
		// "10: rs1-1@if9: <BROADCAST,...> ..."
		if f := strings.Fields(line); len(f) >= 2 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			// It may vanish by itself meanwhile, as its namespace dies.
			_, _ = g.Try("ip link del %s", name)
		}
	}
	if left := strings.TrimSpace(g.Sh("ip -o link show type veth")); left != "" {
		g.t.Fatalf("veth links left after reset:\n%s", left)
	}
}

// NS is a network namespace in the guest, standing for one machine.
type NS struct {
	Name  string
	g     *Guest
	ports int

	httpOnce sync.Once
	http     *http.Client
}

// NS creates a network namespace with its loopback up.
func (g *Guest) NS(name string) *NS {
	g.t.Helper()
	g.Sh("ip netns add %[1]s && ip -n %[1]s link set lo up", name)
	return &NS{Name: name, g: g}
}

// Sh runs a shell command inside the namespace.
func (n *NS) Sh(format string, args ...any) string {
	n.g.t.Helper()
	out, err := n.Try(format, args...)
	if err != nil {
		n.g.t.Fatalf("in %s: %v", n.Name, err)
	}
	return out
}

// Try is Sh that returns the error instead of failing the test.
func (n *NS) Try(format string, args ...any) (string, error) {
	return run(exec.Command("ip", "netns", "exec", n.Name, "sh", "-c", shPrelude+fmt.Sprintf(format, args...)))
}

// Plug connects the namespace to a bridge with a veth pair whose inner end
// is called ifname, optionally with a fixed MAC ("" keeps a random one), and
// gives it the addresses in CIDR form. It returns the outer end's name, which
// a scenario can set down to cut the link.
func (n *NS) Plug(bridge, ifname, mac string, addrs ...string) string {
	n.g.t.Helper()
	n.ports++
	outer := fmt.Sprintf("%.10s-%d", n.Name, n.ports)
	tmp := "tmp" + outer
	cmds := []string{
		fmt.Sprintf("ip link add %s type veth peer name %s", outer, tmp),
		fmt.Sprintf("ip link set %s master %s up", outer, bridge),
		fmt.Sprintf("ip link set %s netns %s", tmp, n.Name),
		fmt.Sprintf("ip -n %s link set %s name %s", n.Name, tmp, ifname),
	}
	if mac != "" {
		cmds = append(cmds, fmt.Sprintf("ip -n %s link set %s address %s", n.Name, ifname, mac))
	}
	for _, a := range addrs {
		cmds = append(cmds, fmt.Sprintf("ip -n %s addr add %s dev %s nodad", n.Name, a, ifname))
	}
	cmds = append(cmds, fmt.Sprintf("ip -n %s link set %s up", n.Name, ifname))
	n.g.Sh("%s", strings.Join(cmds, " && "))
	return outer
}

// Sysctl sets a sysctl inside the namespace (net.* sysctls are per namespace).
func (n *NS) Sysctl(key, value string) {
	n.g.t.Helper()
	n.Sh("sysctl -q -w %s=%s", key, value)
}

// DRRealServer makes the namespace a real server for direct routing: it
// accepts the VIP on lo but never answers ARP for it, so only the directors
// own the VIP on the LAN.
func (n *NS) DRRealServer(vips ...string) {
	n.g.t.Helper()
	n.Sysctl("net.ipv4.conf.all.arp_ignore", "1")
	n.Sysctl("net.ipv4.conf.all.arp_announce", "2")
	for _, v := range vips {
		n.Sh("ip addr add %s dev lo", v)
	}
}

// TunRealServer makes the namespace a real server for IP-in-IP
// forwarding on another network: it decapsulates on tunl0 (the ipip
// module's catch-all device; the module must be loaded), accepts the VIPs
// there, and answers the clients straight through gateway. The
// decapsulated packets come in on tunl0 from clients that its routes place
// behind eth0, so reverse-path filtering is off.
func (n *NS) TunRealServer(gateway string, vips ...string) {
	n.g.t.Helper()
	n.Sh("ip link set tunl0 up")
	for _, v := range vips {
		n.Sh("ip addr add %s dev tunl0", v)
	}
	for _, dev := range []string{"all", "default", "tunl0", "eth0"} {
		n.Sysctl("net.ipv4.conf."+dev+".rp_filter", "0")
	}
	n.Sh("ip route replace default via %s", gateway)
}

// NATRealServer makes the namespace a real server behind a NAT director: its
// default route points at the director so replies are translated back.
func (n *NS) NATRealServer(gateway string) {
	n.g.t.Helper()
	n.Sh("ip route replace default via %s", gateway)
}

// Do runs fn with the calling goroutine's thread inside the namespace, for Go
// APIs whose sockets must be created there. The sockets stay in the
// namespace after fn returns.
func (n *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open netns %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it when the
		// goroutine exits, so no other goroutine inherits the namespace.
		return fmt.Errorf("leave netns %s: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Path is the namespace's bind mount, as APIs that take a netns path want.
func (n *NS) Path() string { return "/run/netns/" + n.Name }

// Proc is a long-running process inside a namespace, driven over its
// standard input and read line by line from its standard output.
type Proc struct {
	Name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
	err   error
	mu    sync.Mutex
	log   strings.Builder // standard error, kept for failure messages
}

// Start starts a program inside the namespace.
func (n *NS) Start(name string, args ...string) *Proc {
	n.g.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	return n.g.start(n.Name+":"+name, cmd)
}

// Start starts a program in the guest's root namespace.
func (g *Guest) Start(name string, args ...string) *Proc {
	g.t.Helper()
	return g.start(name, exec.Command(name, args...))
}

func (g *Guest) start(pname string, cmd *exec.Cmd) *Proc {
	g.t.Helper()
	p := &Proc{Name: pname, cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		g.t.Fatalf("start %s: %v", p.Name, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		g.t.Fatalf("start %s: %v", p.Name, err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		g.t.Fatalf("start %s: %v", p.Name, err)
	}
	if err := cmd.Start(); err != nil {
		g.t.Fatalf("start %s: %v", p.Name, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			p.mu.Lock()
			if p.log.Len() < 1<<20 {
				p.log.WriteString(sc.Text() + "\n")
			}
			p.mu.Unlock()
		}
	}()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			// Never block the process on a reader that is not listening:
			// a daemon that logs to stdout would stall. Lines nobody waits
			// for are dropped once the buffer is full.
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		p.err = cmd.Wait()
		close(p.lines)
		close(p.done)
	}()
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
	return p
}

// Send writes one line to the process's standard input.
func (p *Proc) Send(line string) error {
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		return fmt.Errorf("write to %s: %w", p.Name, err)
	}
	return nil
}

// Line waits for the next line of standard output.
func (p *Proc) Line(timeout time.Duration) (string, error) {
	select {
	case l, ok := <-p.lines:
		if !ok {
			return "", fmt.Errorf("%s exited (%v): %s", p.Name, p.err, p.Stderr())
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("%s: no output within %s; stderr: %s", p.Name, timeout, p.Stderr())
	}
}

// Stderr returns what the process wrote to standard error so far.
func (p *Proc) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Kill stops the process with SIGKILL and waits for it.
func (p *Proc) Kill() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Wait waits for the process to exit on its own, at most timeout.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Signal sends a signal to the process.
func (p *Proc) Signal(sig os.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// HTTPClient returns a client whose connections are opened inside the
// namespace, so that a scenario can ask a daemon's local status endpoint
// without exec'ing a command-line tool per question: in the emulated guest
// every exec of a Go binary costs the daemons under test a few hundred ms of
// CPU. Connections are kept alive between requests.
func (n *NS) HTTPClient() *http.Client {
	n.httpOnce.Do(func() { n.http = n.newHTTPClient() })
	return n.http
}

func (n *NS) newHTTPClient() *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := n.Do(func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     30 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
