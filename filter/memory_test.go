package filter

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// TestHandoverMemory checks the life of the flows remembered during a
// handover: kept through a repair that rebuilds the table, dropped when the
// bucket leaves the handover, and stale ones dropped when a bucket enters
// one.
func TestHandoverMemory(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "mem")
	ctx := context.Background()
	cfg := sampleConfig()
	f := newFilter(t, cfg, ns.fd)
	h := f.Hasher()
	snd := newSender(ns, "lo")
	snd.pace = 100
	clientIn := func(b uint32, salt int) netip.AddrPort {
		for i := 0; ; i++ {
			c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 3, byte(salt), byte(i)}), uint16(4000+i))
			if h.ClientBucket(ProtoTCP, c) == b {
				return c
			}
		}
	}
	remembered := func() string {
		out := ns.nft("list", "set", "inet", DefaultTable, "flows4")
		if i := strings.Index(out, "elements = {"); i >= 0 {
			return out[i:]
		}
		return ""
	}
	syn := func(c netip.AddrPort) {
		t.Helper()
		if err := snd.send(make(net.HardwareAddr, 6), pkt{proto: ProtoTCP, src: c, dst: netip.AddrPortFrom(vip4, 443), tcpFlags: tcpSYN}); err != nil {
			t.Fatal(err)
		}
	}

	const b = 5
	if err := f.Apply(ctx, Ownership{Owned: []uint32{1}, HandoverIn: []uint32{b}}); err != nil {
		t.Fatal(err)
	}
	c := clientIn(b, 1)
	syn(c)
	if got := remembered(); !strings.Contains(got, c.Addr().String()) {
		t.Fatalf("SYN of %v in a bucket being taken not remembered: %q", c, got)
	}

	// A foreign rule forces a rebuild; the memory must survive it.
	ns.nft("add", "rule", "inet", DefaultTable, "request4", "accept")
	if err := f.Repair(ctx); err != nil {
		t.Fatal(err)
	}
	if got := remembered(); !strings.Contains(got, c.Addr().String()) {
		t.Fatalf("rebuild lost the handover memory: %q", got)
	}
	if drift, _ := f.Verify(ctx); len(drift) > 0 {
		t.Fatalf("drift after repair: %v", drift)
	}

	// The move completes: the memory of the bucket goes.
	if err := f.Apply(ctx, Ownership{Owned: []uint32{1, b}}); err != nil {
		t.Fatal(err)
	}
	if got := remembered(); got != "" {
		t.Fatalf("memory kept after the handover ended: %q", got)
	}

	// A stale entry (left by anyone) for a bucket about to enter a handover
	// must not decide that handover.
	const b2 = 9
	stale := clientIn(b2, 2)
	ns.nft("add", "element", "inet", DefaultTable, "flows4", "{", fmt.Sprintf("tcp . %s . %d", stale.Addr(), stale.Port()), "}")
	if got := remembered(); !strings.Contains(got, stale.Addr().String()) {
		t.Fatalf("could not plant a stale entry: %q", got)
	}
	if err := f.Apply(ctx, Ownership{Owned: []uint32{1, b}, HandoverOut: []uint32{b2}}); err != nil {
		t.Fatal(err)
	}
	if got := remembered(); got != "" {
		t.Fatalf("stale memory kept when the bucket entered a handover: %q", got)
	}
}
