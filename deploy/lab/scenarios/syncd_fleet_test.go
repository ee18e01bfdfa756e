package scenarios

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/deploy/lab/traffic"
	"github.com/peerlvs/peerlvs/ipvs/procconn"
)

// kernelSyncDelay is how long a new connection may wait in the kernel
// master's buffer before it is sent at all: a partly filled buffer is flushed
// after IPVS_SYNC_FLUSH_TIME (2 s), checked every IPVS_SYNC_CHECK_PERIOD
// (1 s). No sync daemon can move a connection its kernel has not announced
// yet, so scenarios let new connections age this long before a failover.
const kernelSyncDelay = 3 * time.Second

// clientConns returns the VIP:80 TCP connections a director's kernel holds,
// keyed by client address and port, with their state.
func clientConns(t *testing.T, d *director) map[string]string {
	t.Helper()
	conns, err := parseIpvsadmConns(d.ns.Sh("ipvsadm -Lnc"))
	if err != nil {
		t.Fatalf("%s: %v", d.name, err)
	}
	m := map[string]string{}
	for _, c := range conns {
		if c.Proto == "TCP" && c.VIP == fmt.Sprintf("%s:%d", vip, vipPort) {
			m[c.Source] = c.State
		}
	}
	return m
}

// heldConns returns the client ends of the holder's open connections.
func heldConns(r traffic.Report) []string {
	var out []string
	for _, c := range r.PerConn {
		if c.State == traffic.StateOK || c.State == traffic.StateStalled {
			out = append(out, c.Local)
		}
	}
	sort.Strings(out)
	return out
}

// missingOn lists the held connections a director's kernel does not hold
// as ESTABLISHED.
func missingOn(t *testing.T, d *director, held []string) []string {
	t.Helper()
	have := clientConns(t, d)
	var missing []string
	for _, c := range held {
		if have[c] != "ESTABLISHED" {
			missing = append(missing, c)
		}
	}
	return missing
}

// converge waits until every director's kernel holds every held connection
// and returns how long that took, or fails with what is missing where.
func converge(t *testing.T, f *drFleet, held []string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last []string
	if waitFor(within, func() bool {
		last = last[:0]
		for _, d := range f.directors {
			if m := missingOn(t, d, held); len(m) > 0 {
				last = append(last, fmt.Sprintf("%s lacks %d: %s", d.name, len(m), strings.Join(m, " ")))
			}
		}
		return len(last) == 0
	}) {
		return time.Since(start)
	}
	t.Fatalf("not converged after %s:\n%s", within, strings.Join(last, "\n"))
	return 0
}

// holdThroughEach moves the VIP to each director in turn and opens n
// long-lived connections through each; settle runs once they are open,
// before the VIP moves on.
func holdThroughEach(t *testing.T, f *drFleet, ds []*director, n int, settle func(*holder)) []*holder {
	t.Helper()
	var holders []*holder
	var prev *director
	for _, d := range ds {
		if prev != nil {
			f.dropVIP(t, prev)
		}
		f.takeVIP(t, d)
		prev = d
		h := startHolder(t, f.client, n, 200*time.Millisecond)
		h.waitOpen(t, n, 30*time.Second)
		settle(h)
		holders = append(holders, h)
	}
	return holders
}

// aged lets connections age past kernelSyncDelay, by which time a lossless
// sync LAN has replicated them.
func aged(*holder) { time.Sleep(kernelSyncDelay) }

// heldAll counts the holders' open connections and lists their client ends.
func heldAll(t *testing.T, holders []*holder) (open int, held []string) {
	t.Helper()
	for _, h := range holders {
		rep := h.report(t)
		open += rep.Open
		held = append(held, heldConns(rep)...)
	}
	return open, held
}

type p2pResult struct {
	Held        int     `json:"held"`
	Survived    int     `json:"survived"`
	ConvergeMS  float64 `json:"converge_ms"`
	PerDirector map[string]int
}

// TestSyncdPeerToPeer: three directors, each running syncd; connections are
// made through each of them in turn, and every connection must be in the
// kernel table of all three.
func TestSyncdPeerToPeer(t *testing.T) {
	res := lab.Run(t, lab.Options{}, func(t *testing.T, g *lab.Guest) p2pResult {
		f := newDRFleet(t, g, 3)
		mode := &syncdMode{}
		for _, d := range f.directors {
			mode.start(t, f, d)
		}
		holders := holdThroughEach(t, f, f.directors, 5, aged)
		var r p2pResult
		var held []string
		r.Survived, held = heldAll(t, holders)
		r.Held = len(held)
		r.ConvergeMS = float64(converge(t, f, held, 10*time.Second).Milliseconds())
		r.PerDirector = map[string]int{}
		for _, d := range f.directors {
			r.PerDirector[d.name] = len(held) - len(missingOn(t, d, held))
		}
		return r
	})
	t.Logf("%d connections made through 3 directors in turn; %d still open; every kernel holds all of them (%v) within %.0f ms",
		res.Held, res.Survived, res.PerDirector, res.ConvergeMS)
	if res.Held != 15 || res.Survived != 15 {
		t.Errorf("held %d, survived %d; want 15 and 15", res.Held, res.Survived)
	}
}

type lossResult struct {
	Held        int     `json:"held"`
	Survived    int     `json:"survived"`
	UnderLossMS float64 `json:"under_loss_ms"` // longest wait for a batch to be replicated during the loss
	ConvergeMS  float64 `json:"converge_ms"`
	Netem       string  `json:"netem"`
}

// TestSyncdLoss: 20% random loss (netem) on every director's sync LAN port
// while connections are made and moved: each batch must reach every kernel
// despite the loss (the time it takes is measured), the moved connections
// must survive, and once the loss stops, every entry must reach every
// kernel within 3 s.
func TestSyncdLoss(t *testing.T) {
	res := lab.Run(t, lab.Options{}, func(t *testing.T, g *lab.Guest) lossResult {
		f := newDRFleet(t, g, 3)
		mode := &syncdMode{}
		for _, d := range f.directors {
			mode.start(t, f, d)
		}
		var r lossResult
		for _, d := range f.directors {
			d.ns.Sh("tc qdisc add dev eth1 root netem loss 20%%")
		}
		r.Netem = f.directors[0].ns.Sh("tc qdisc show dev eth1")
		// Under loss, replication takes as long as the kernel's flush of
		// its sync buffer (up to 2 s) plus however many rounds of UPDATE,
		// ALIVE (1 s apart), NACK and resend the loss costs; a fixed wait
		// before the VIP moves on would make the test a lottery (a single
		// run lost all 20 connections of the first director that way).
		// So the VIP moves once they are replicated, and the time that
		// took under loss is measured.
		holders := holdThroughEach(t, f, f.directors[:2], 20, func(h *holder) {
			rep := h.report(t)
			took := converge(t, f, heldConns(rep), 30*time.Second)
			r.UnderLossMS = max(r.UnderLossMS, float64(took.Milliseconds()))
		})
		time.Sleep(3 * time.Second)
		for _, d := range f.directors {
			d.ns.Sh("tc qdisc del dev eth1 root")
		}
		var held []string
		r.Survived, held = heldAll(t, holders)
		r.Held = len(held)
		r.ConvergeMS = float64(converge(t, f, held, 10*time.Second).Milliseconds())
		return r
	})
	t.Logf("under 20%% loss (%s): %d connections, %d open; each batch of 20 was in every kernel within %.0f ms of being open; all kernels converged %.0f ms after the loss stopped",
		strings.TrimSpace(res.Netem), res.Held, res.Survived, res.UnderLossMS, res.ConvergeMS)
	if res.Held != 40 || res.Survived != 40 {
		t.Errorf("held %d, survived %d; want 40 and 40", res.Held, res.Survived)
	}
	if res.ConvergeMS > 3000 {
		t.Errorf("converged %.0f ms after the loss stopped; the target is 3 s", res.ConvergeMS)
	}
}

type restartResult struct {
	Held       int       `json:"held"`
	Survived   int       `json:"survived"`
	Restarts   int       `json:"restarts"`
	ReadyMS    []float64 `json:"ready_ms"`
	AfterMove  int       `json:"after_move"`
	ConvergeMS float64   `json:"converge_ms"`
}

// TestSyncdRestart: kill -9 syncd in a loop, on the standby and on the
// active director, while traffic flows. Nothing is lost: every restart
// reaches ready again, every kernel still holds every connection, and a
// failover afterwards keeps them all.
func TestSyncdRestart(t *testing.T) {
	const conns = 30
	res := lab.Run(t, lab.Options{}, func(t *testing.T, g *lab.Guest) restartResult {
		f := newDRFleet(t, g, 2)
		mode := &syncdMode{}
		a, b := f.directors[0], f.directors[1]
		mode.start(t, f, a)
		mode.start(t, f, b)
		f.takeVIP(t, a)
		h := startHolder(t, f.client, conns, 200*time.Millisecond)
		h.waitOpen(t, conns, 30*time.Second)
		time.Sleep(kernelSyncDelay)
		var r restartResult
		for i := 0; i < 6; i++ {
			d := []*director{b, a}[i%2]
			mode.down(t, f, d)
			time.Sleep(300 * time.Millisecond)
			start := time.Now()
			mode.start(t, f, d)
			r.ReadyMS = append(r.ReadyMS, float64(time.Since(start).Milliseconds()))
			r.Restarts++
		}
		held := heldConns(h.report(t))
		r.Held = len(held)
		r.ConvergeMS = float64(converge(t, f, held, 10*time.Second).Milliseconds())
		f.dropVIP(t, a)
		f.takeVIP(t, b)
		time.Sleep(3 * time.Second)
		rep := h.report(t)
		r.Survived = rep.Open
		r.AfterMove = rep.Open
		return r
	})
	t.Logf("%d kill -9 restarts; ready again after %v ms; %d of %d connections open after a failover that followed",
		res.Restarts, res.ReadyMS, res.AfterMove, res.Held)
	if res.Held != conns || res.AfterMove != conns {
		t.Errorf("held %d, open after failover %d; want %d", res.Held, res.AfterMove, conns)
	}
}

type transportResult struct {
	Mode    string `json:"mode"`
	Held    int    `json:"held"`
	Missing int    `json:"missing"`
}

// TestSyncdTransports: the peer transports the other scenarios do not use,
// unicast over IPv4 and multicast and unicast over IPv6, each carrying
// connections made through d1 into the kernels of d2 and d3.
func TestSyncdTransports(t *testing.T) {
	res := lab.Run(t, lab.Options{}, func(t *testing.T, g *lab.Guest) []transportResult {
		var out []transportResult
		for _, mode := range []string{"unicast", "multicast6", "unicast6"} {
			f := newDRFleet(t, g, 3)
			for i, d := range f.directors {
				d.ns.Sh("ip addr add fd01::%d/64 dev eth1 nodad", i+1)
			}
			m := &syncdMode{peerMode: mode}
			for _, d := range f.directors {
				m.start(t, f, d)
			}
			f.takeVIP(t, f.directors[0])
			h := startHolder(t, f.client, 5, 200*time.Millisecond)
			h.waitOpen(t, 5, 30*time.Second)
			time.Sleep(kernelSyncDelay)
			held := heldConns(h.report(t))
			r := transportResult{Mode: mode, Held: len(held)}
			waitFor(10*time.Second, func() bool {
				r.Missing = 0
				for _, d := range f.directors[1:] {
					r.Missing += len(missingOn(t, d, held))
				}
				return r.Missing == 0
			})
			t.Logf("%s: %d connections, %d missing on d2+d3", mode, r.Held, r.Missing)
			out = append(out, r)
			g.Reset()
		}
		return out
	})
	for _, r := range res {
		if r.Held != 5 || r.Missing != 0 {
			t.Errorf("%s: held %d, missing on peers %d", r.Mode, r.Held, r.Missing)
		} else {
			t.Logf("%s: all %d connections reached both peers' kernels", r.Mode, r.Held)
		}
	}
}

// kernelConns returns the VIP connections d's kernel holds, keyed "TCP
// addr:port" or "UDP addr:port" by client end (TCP to a VIP port other
// than vipPort: "TCP addr:port>vport"), with their state. It reads
// /proc/net/ip_vs_conn inside d's namespace (/proc/thread-self/net follows
// the reading thread's namespace) rather than exec'ing ipvsadm: cheap
// enough to poll in the emulated guest while the daemons under test work.
func kernelConns(d *director) (map[string]string, error) {
	var es []procconn.Entry
	err := d.ns.Do(func() error {
		var err error
		es, err = procconn.ReadFile("/proc/thread-self/net/ip_vs_conn")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.name, err)
	}
	want, want6 := netip.MustParseAddr(vip), netip.MustParseAddr(vip6)
	m := make(map[string]string, len(es))
	for _, e := range es {
		if (e.VAddr != want && e.VAddr != want6) || e.CPort == 0 {
			continue
		}
		c := netip.AddrPortFrom(e.CAddr, e.CPort).String()
		if e.VPort != vipPort {
			// Another port of the VIP (a fwmark service's): keyed apart.
			if e.Protocol == syscall.IPPROTO_TCP {
				m["TCP "+c+">"+fmt.Sprint(e.VPort)] = e.State
			}
			continue
		}
		switch e.Protocol {
		case syscall.IPPROTO_TCP:
			m["TCP "+c] = e.State
		case syscall.IPPROTO_UDP:
			m["UDP "+netip.AddrPortFrom(e.CAddr, e.CPort).String()] = e.State
		}
	}
	return m, nil
}

// udpFlowsOn lists the UDP flows to the VIP that the kernels of ds hold
// ("UDP addr:port"), whoever scheduled them.
func udpFlowsOn(t *testing.T, ds []*director) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, d := range ds {
		have, err := kernelConns(d)
		if err != nil {
			t.Fatalf("%v", err)
		}
		for k := range have {
			if strings.HasPrefix(k, "UDP ") {
				seen[k] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// waitReplicated waits until the kernel of every director in ds holds every
// held TCP connection (client ends, "addr:port") as ESTABLISHED and every
// UDP flow in udp ("UDP addr:port"), and returns how long that took: before
// a director leaves, this is the proof that the survivors can carry its
// connections, where a fixed wait (kernelSyncDelay) is only a guess.
func waitReplicated(t *testing.T, ds []*director, held, udp []string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var last []string
	if waitEvery(within, 200*time.Millisecond, func() bool {
		last = last[:0]
		for _, d := range ds {
			have, err := kernelConns(d)
			if err != nil {
				last = append(last, err.Error())
				continue
			}
			var missing []string
			for _, c := range held {
				if have["TCP "+c] != "ESTABLISHED" {
					missing = append(missing, c)
				}
			}
			for _, u := range udp {
				if have[u] == "" {
					missing = append(missing, u)
				}
			}
			if len(missing) > 0 {
				last = append(last, fmt.Sprintf("%s lacks %d: %s", d.name, len(missing), strings.Join(missing, " ")))
			}
		}
		return len(last) == 0
	}) {
		return time.Since(start)
	}
	t.Fatalf("held connections not replicated to %s after %s:\n%s", dirNames(ds), within, strings.Join(last, "\n"))
	return 0
}
