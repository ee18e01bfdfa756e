package filter

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

const childEnv = "PEERLVS_FILTER_FAILSAFE_NETNS"

func failsafeConfig() Config {
	c := sampleConfig()
	c.Buckets = 16
	return c
}

// failsafeLease is the child's lease, renewed every failsafeLease/4 as
// saru does.
const failsafeLease = 300 * time.Millisecond

var failsafeOwned = []uint32{0, 3, 4, 9, 15}

// TestFailSafeChild is the daemon stand-in TestFailSafe runs as a separate
// process: it applies, says so, and waits to be killed.
func TestFailSafeChild(t *testing.T) {
	name := os.Getenv(childEnv)
	if name == "" {
		t.Skip("helper process for TestFailSafe")
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := failsafeConfig()
	cfg.Lease = failsafeLease
	f, err := New(cfg, WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(context.Background(), Ownership{Owned: failsafeOwned}); err != nil {
		t.Fatal(err)
	}
	// saru extends the lease only as far as a quorum of the fleet granted
	// its buckets; the test has no fleet and grants itself. A lease found
	// run out is a lapse the parent waits to see.
	until := time.Now().Add(failsafeLease)
	if err := f.LeaseUntil(until, time.Second); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("APPLIED\n")
	// Bounded: the parent kills us long before.
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(failsafeLease / 4) {
		if time.Now().After(until) {
			os.Stdout.WriteString("LAPSED\n")
		}
		until = time.Now().Add(failsafeLease)
		if err := f.LeaseUntil(until, time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFailSafe stops and then kills the applying process and checks the
// choice documented in the package. Stopped (SIGSTOP), it stops renewing
// its lease and, once the lease runs out, accepts nothing; it accepts again
// after SIGCONT. Killed with SIGKILL, its rules stay, but with their owner
// gone they accept no flow for the VIPs, so the dead director cannot
// accept a flow its survivors take over. A restarted daemon brings them
// back to life, a second daemon on the same host is refused, and Close
// withdraws them as a crash does.
func TestFailSafe(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "failsafe")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFailSafeChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+ns.name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	applied := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "APPLIED") {
			applied = true
			break
		}
	}
	if !applied {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("child never applied")
	}

	observer, err := New(failsafeConfig(), WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	snd := newSender(ns, "lo")
	snd.pace = 100
	h := observer.Hasher()
	var prev Counters
	// send offers 400 flows and returns how the counters moved, and how
	// many of the flows fall in failsafeOwned.
	send := func() (Counters, uint64) {
		t.Helper()
		var owned uint64
		for i := 0; i < 400; i++ {
			c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), uint16(2000+i))
			if slices.Contains(failsafeOwned, h.Bucket(Flow{Proto: ProtoUDP, Src: c})) {
				owned++
			}
			if err := snd.send(make(net.HardwareAddr, 6), pkt{proto: ProtoUDP, src: c, dst: netip.AddrPortFrom(vip4, 53)}); err != nil {
				t.Fatal(err)
			}
		}
		// The kernel drains the backlog of received frames when it gets
		// to it: wait (boundedly) until every frame was judged.
		var cnt Counters
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var err error
			if cnt, err = observer.Counters(context.Background()); err != nil {
				t.Fatal(err)
			}
			judged := cnt.OwnedAccepted.Packets + cnt.ForeignDropped.Packets + cnt.OrphanedDropped.Packets -
				prev.OwnedAccepted.Packets - prev.ForeignDropped.Packets - prev.OrphanedDropped.Packets
			if judged >= 400 || time.Now().After(deadline) {
				break
			}
		}
		d := Counters{
			OwnedAccepted:   Count{Packets: cnt.OwnedAccepted.Packets - prev.OwnedAccepted.Packets},
			ForeignDropped:  Count{Packets: cnt.ForeignDropped.Packets - prev.ForeignDropped.Packets},
			OrphanedDropped: Count{Packets: cnt.OrphanedDropped.Packets - prev.OrphanedDropped.Packets},
		}
		prev = cnt
		return d, owned
	}
	live := func(want bool) {
		t.Helper()
		got, err := observer.Live(context.Background())
		if err != nil || got != want {
			t.Fatalf("Live() = %v, %v; want %v", got, err, want)
		}
	}
	wantSplit := func(when string) {
		t.Helper()
		d, owned := send()
		if d.OwnedAccepted.Packets != owned || d.ForeignDropped.Packets != 400-owned || d.OrphanedDropped.Packets != 0 {
			t.Fatalf("%s: counters moved by %+v, want %d owned accepted and %d foreign dropped", when, d, owned, 400-owned)
		}
		t.Logf("%s: %d packets of owned buckets accepted, %d of foreign buckets dropped", when, owned, 400-owned)
	}
	wantOrphaned := func(when string) {
		t.Helper()
		d, _ := send()
		if d.OrphanedDropped.Packets != 400 || d.OwnedAccepted.Packets != 0 {
			t.Fatalf("%s: counters moved by %+v, want all 400 packets dropped as orphaned", when, d)
		}
		t.Logf("%s: all 400 packets dropped, none accepted", when)
	}

	live(true)
	wantSplit("child running")

	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	time.Sleep(failsafeLease + 100*time.Millisecond)
	live(false)
	wantOrphaned("child stopped (SIGSTOP) past its lease")
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("child continued after %v stopped", time.Since(stopped).Round(time.Millisecond))
	lapsed := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "LAPSED") {
			lapsed = true
			break
		}
	}
	if !lapsed {
		t.Fatal("child did not see its lease lapse")
	}
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ok, err := observer.Live(context.Background()); err == nil && ok {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("child did not restore its lease: live %v, %v", ok, err)
		}
	}
	wantSplit("child continued (SIGCONT), lease restored")

	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no cleanup runs
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("child %d killed with SIGKILL", cmd.Process.Pid)
	live(false)
	listing := ns.nft("list", "table", "inet", DefaultTable)
	if !strings.Contains(listing, "chain prerouting") || !strings.Contains(listing, "set owned") {
		t.Fatalf("table gone or incomplete after the daemon died:\n%s", listing)
	}
	own, ok, err := observer.Installed(context.Background())
	if err != nil || !ok || !slices.Equal(own.Owned, failsafeOwned) {
		t.Fatalf("Installed after SIGKILL: %v %v %v, want owned %v", own, ok, err, failsafeOwned)
	}
	if drift, err := observer.Verify(context.Background()); err != nil || len(drift) > 0 {
		t.Fatalf("drift after the daemon died: %v %v", drift, err)
	}
	wantOrphaned("after SIGKILL")

	restarted := newFilter(t, failsafeConfig(), ns.fd)
	if err := restarted.Apply(context.Background(), Ownership{Owned: failsafeOwned}); err != nil {
		t.Fatal(err)
	}
	live(true)
	wantSplit("restarted")
	if out, err := ns.try("nft delete table inet " + liveTable(DefaultTable)); err == nil {
		t.Fatal("another process deleted the liveness table of a running daemon")
	} else {
		t.Logf("nft cannot delete the liveness table of a running daemon: %s", strings.TrimSpace(out))
	}

	second := newFilter(t, failsafeConfig(), ns.fd)
	err = second.Apply(context.Background(), Ownership{Owned: []uint32{1}})
	if err == nil || !strings.Contains(err.Error(), "another saru") {
		t.Fatalf("second daemon's Apply: %v, want a refusal naming the other saru", err)
	}
	t.Logf("second daemon refused: %v", err)
	wantSplit("after the refused second daemon")

	if err := restarted.Close(); err != nil {
		t.Fatal(err)
	}
	live(false)
	wantOrphaned("after Close")
}

// TestLease checks LeaseUntil's contract in-process: before the first
// lease the rules are not live; a lease keeps them live until its
// deadline and no longer; a deadline in the past withdraws at once; a
// write slower than allowed is withdrawn and reported.
func TestLease(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "lease")
	cfg := failsafeConfig()
	cfg.Lease = 200 * time.Millisecond
	f := newFilter(t, cfg, ns.fd)
	ctx := context.Background()
	if err := f.LeaseUntil(time.Now().Add(time.Second), time.Second); err != nil {
		t.Fatalf("LeaseUntil before the first Apply: %v, want nothing to do", err)
	}
	if err := f.Apply(ctx, Ownership{Owned: failsafeOwned}); err != nil {
		t.Fatal(err)
	}
	live := func(want bool) {
		t.Helper()
		if got, err := f.Live(ctx); err != nil || got != want {
			t.Fatalf("Live() = %v, %v; want %v", got, err, want)
		}
	}
	live(false)   // armed, but no lease yet
	for range 6 { // 6 x 50 ms: longer than one lease, renewed within it
		if err := f.LeaseUntil(time.Now().Add(cfg.Lease), time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	live(true)
	if listing := ns.nft("list", "table", "inet", liveTable(DefaultTable)); !strings.Contains(listing, "set lease") ||
		!strings.Contains(listing, "timeout") {
		t.Fatalf("liveness table without a lease:\n%s", listing)
	}
	time.Sleep(cfg.Lease + 50*time.Millisecond)
	live(false)
	if err := f.LeaseUntil(time.Now().Add(cfg.Lease), time.Second); err != nil {
		t.Fatal(err)
	}
	live(true)
	if err := f.LeaseUntil(time.Now().Add(-time.Second), time.Second); err != nil {
		t.Fatal(err)
	}
	live(false)
	if err := f.LeaseUntil(time.Now().Add(cfg.Lease), 0); !errors.Is(err, ErrSlowLeaseWrite) {
		t.Fatalf("a write slower than allowed: %v, want ErrSlowLeaseWrite", err)
	}
	live(false)
	if err := f.LeaseUntil(time.Now().Add(cfg.Lease), time.Second); err != nil {
		t.Fatal(err)
	}
	if drift, err := f.Verify(ctx); err != nil || len(drift) > 0 {
		t.Fatalf("drift with a lease: %v %v", drift, err)
	}
}
