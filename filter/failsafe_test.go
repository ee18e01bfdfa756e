package filter

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
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
	f, err := New(failsafeConfig(), WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(context.Background(), Ownership{Owned: failsafeOwned}); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("APPLIED\n")
	time.Sleep(60 * time.Second) // bounded: the parent kills us long before
}

// TestFailSafe kills the applying process with SIGKILL and checks that the
// table outlives it and still drops the buckets it did not own.
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
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no cleanup runs
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("child %d killed with SIGKILL", cmd.Process.Pid)

	listing := ns.nft("list", "table", "inet", DefaultTable)
	if !strings.Contains(listing, "chain prerouting") || !strings.Contains(listing, "set owned") {
		t.Fatalf("table gone or incomplete after the daemon died:\n%s", listing)
	}
	f, err := New(failsafeConfig(), WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	own, ok, err := f.Installed(context.Background())
	if err != nil || !ok {
		t.Fatalf("Installed: %v %v", ok, err)
	}
	if !slices.Equal(own.Owned, failsafeOwned) {
		t.Fatalf("installed ownership %v, want %v", own.Owned, failsafeOwned)
	}
	if drift, err := f.Verify(context.Background()); err != nil || len(drift) > 0 {
		t.Fatalf("drift after the daemon died: %v %v", drift, err)
	}

	// Traffic still splits: owned buckets pass, the others are dropped.
	snd := newSender(ns, "lo")
	snd.pace = 100
	h := f.Hasher()
	var wantOwned, wantForeign uint64
	for i := 0; i < 400; i++ {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), uint16(2000+i))
		p := pkt{proto: ProtoUDP, src: c, dst: netip.AddrPortFrom(vip4, 53)}
		if slices.Contains(failsafeOwned, h.Bucket(Flow{Proto: ProtoUDP, Src: c})) {
			wantOwned++
		} else {
			wantForeign++
		}
		if err := snd.send(make(net.HardwareAddr, 6), p); err != nil {
			t.Fatal(err)
		}
	}
	cnt, err := f.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cnt.OwnedAccepted.Packets != wantOwned || cnt.ForeignDropped.Packets != wantForeign {
		t.Fatalf("counters %+v, want %d owned accepted and %d foreign dropped", cnt, wantOwned, wantForeign)
	}
	perBucket, err := f.BucketCounters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, c := range perBucket {
		sum += c.Packets
	}
	if sum != wantOwned || len(perBucket) != len(failsafeOwned) {
		t.Fatalf("per-bucket counters %v sum to %d over %d buckets, want %d over %d", perBucket, sum, len(perBucket), wantOwned, len(failsafeOwned))
	}
	t.Logf("after SIGKILL: %d packets of owned buckets accepted, %d of foreign buckets dropped", wantOwned, wantForeign)
}
