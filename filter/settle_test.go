package filter

import (
	"context"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestUnclaimedSettling checks the rule that keeps a director that has just
// taken a bucket from resetting connections whose state has not arrived
// yet: a mid-connection TCP segment that nothing on the director holds is
// dropped (not answered with a reset) while its bucket settles, an opening
// SYN is never held back, and once the settle time is over the stack
// answers as before. A bucket taken again while still settling settles
// afresh.
func TestUnclaimedSettling(t *testing.T) {
	requireRoot(t)
	l := newLAN(t, 1)
	d := l.dirs[0]
	// The observer would drop TCP before input; this test judges by what
	// the director sends back.
	d.nft("delete", "table", "inet", obsTable)
	d.sh("ip route add default dev eth0")
	d.sh("ip -6 route add default dev eth0")
	d.nft("add", "table", "inet", "judge")
	d.nft("add", "counter", "inet", "judge", "rst")
	d.nft("add", "chain", "inet", "judge", "out", "{ type filter hook output priority 0; }")
	d.nft("add", "rule", "inet", "judge", "out", "tcp", "flags", "&", "rst", "==", "rst", "counter", "name", "rst", "drop")
	resets := func() int {
		t.Helper()
		out := d.nft("list", "counter", "inet", "judge", "rst")
		m := regexp.MustCompile(`packets (\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no packet count in %q", out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}

	// Long enough that the checks right after the take finish well within
	// it on a loaded host; the test fails rather than skips if they do not.
	const settle = 2 * time.Second
	cfg := Config{VIPs: []netip.Addr{vip4, vip6}, Sense: SenseAddrPort, Seed: 0x5e771e, Buckets: 16, Settle: settle}
	f := newFilter(t, cfg, d.fd)
	all := Ownership{}
	for b := range uint32(16) {
		all.Owned = append(all.Owned, b)
	}
	apply := func(o Ownership) time.Time {
		t.Helper()
		if err := f.Apply(context.Background(), o); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}

	port := uint16(20000)
	send := func(what string, flags uint8) (resetsSent, dropped int) {
		t.Helper()
		before, cb := resets(), counters(t, f).UnclaimedDropped.Packets
		for _, src := range []netip.Addr{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8:1::7")} {
			vip := vip4
			if src.Is6() {
				vip = vip6
			}
			port++
			s, dst := netip.AddrPortFrom(src, port), netip.AddrPortFrom(vip, 80)
			if err := l.snd.send(sharedMAC, pkt{proto: ProtoTCP, src: s, dst: dst, rawL4: tcpSegment(s, dst, flags, 1000)}); err != nil {
				t.Fatalf("%s: send: %v", what, err)
			}
		}
		time.Sleep(50 * time.Millisecond)
		return resets() - before, int(counters(t, f).UnclaimedDropped.Packets - cb)
	}
	expect := func(what string, flags uint8, wantResets, wantDropped int) {
		t.Helper()
		r, dr := send(what, flags)
		if r != wantResets || dr != wantDropped {
			t.Errorf("%s: %d resets sent, %d dropped as unclaimed; want %d and %d", what, r, dr, wantResets, wantDropped)
		}
	}

	took := apply(all)
	expect("ACK just after the take", tcpACK, 0, 2)
	expect("FIN|ACK just after the take", tcpFIN|tcpACK, 0, 2)
	expect("SYN just after the take (a new connection)", tcpSYN, 2, 0)
	if time.Since(took) > settle/2 {
		t.Fatalf("the checks after the take took %v, more than half the %v settle time: the later checks could not be judged", time.Since(took), settle)
	}
	time.Sleep(time.Until(took.Add(settle + 300*time.Millisecond)))
	expect("ACK after the settle time", tcpACK, 2, 0)

	// Taken, given away, taken again within the settle time: the second
	// take starts its own settle time.
	apply(Ownership{})
	first := apply(all)
	apply(Ownership{})
	time.Sleep(time.Until(first.Add(settle / 2)))
	again := apply(all)
	time.Sleep(time.Until(first.Add(settle + 200*time.Millisecond)))
	if time.Since(again) < settle {
		expect("ACK after a second take, past the first take's settle time", tcpACK, 0, 2)
	}

	// Owned all along: Apply with the same buckets starts nothing.
	time.Sleep(time.Until(again.Add(settle + 300*time.Millisecond)))
	apply(all)
	expect("ACK, bucket owned for longer than the settle time", tcpACK, 2, 0)
	if t.Failed() {
		t.Log(d.nft("list", "table", "inet", DefaultTable))
	}
}

func counters(t *testing.T, f *Filter) Counters {
	t.Helper()
	c, err := f.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}
