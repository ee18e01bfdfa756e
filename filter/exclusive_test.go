package filter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

const testBuckets = 32

// conn is one client connection or datagram flow in the exclusivity test.
type conn struct {
	proto  uint8
	client netip.AddrPort
	vip    netip.Addr
	seq    uint32
}

func (c *conn) is6() bool { return c.client.Addr().Is6() }

func (c *conn) rs() netip.Addr {
	if c.is6() {
		return rsAddr6
	}
	return rsAddr4
}

// open is the packet that starts the flow; data a later packet of it, and
// reply the NAT reply from a real server. marker keeps every packet's
// observer key unique: it goes into the destination port of requests and
// the source port of replies, neither of which is hashed.
func (c *conn) open(marker uint16) pkt {
	p := pkt{proto: c.proto, src: c.client, dst: netip.AddrPortFrom(c.vip, marker), seq: c.seq}
	switch c.proto {
	case ProtoTCP:
		p.tcpFlags = tcpSYN
	case ProtoSCTP:
		p.chunk = 1
	case ProtoICMP, ProtoICMPv6:
		p.icmpType = 8
		if c.is6() {
			p.icmpType = 128
		}
		p.seq = uint32(marker)
	}
	return p
}

func (c *conn) data(marker uint16) pkt {
	p := c.open(marker)
	p.tcpFlags = tcpACK
	p.chunk = 0
	return p
}

func (c *conn) reply(marker uint16) pkt {
	p := pkt{proto: c.proto, src: netip.AddrPortFrom(c.rs(), marker), dst: c.client, seq: c.seq, tcpFlags: tcpSYN | tcpACK}
	if c.proto == ProtoSCTP {
		p.chunk = 2 // INIT ACK
	}
	return p
}

func (c *conn) hasReply() bool { return c.proto != ProtoICMP && c.proto != ProtoICMPv6 }

// newConns makes n flows per protocol and family whose buckets satisfy keep.
func newConns(r *rand.Rand, h Hasher, n int, keep func(uint32) bool) []*conn {
	var out []*conn
	for _, v6 := range []bool{false, true} {
		protos := []uint8{ProtoTCP, ProtoUDP, ProtoSCTP, ProtoICMP}
		if v6 {
			protos[3] = ProtoICMPv6
		}
		for _, proto := range protos {
			for made := 0; made < n; {
				var a netip.Addr
				vip := vip4
				if v6 {
					b := netip.MustParseAddr("fd00:1::").As16()
					for i := 8; i < 16; i++ {
						b[i] = byte(r.Uint32())
					}
					a, vip = netip.AddrFrom16(b), vip6
				} else {
					a = netip.AddrFrom4([4]byte{10, 1, byte(r.Uint32()), byte(r.Uint32())})
				}
				c := &conn{proto: proto, client: netip.AddrPortFrom(a, uint16(1024+r.Uint32N(64000))), vip: vip, seq: r.Uint32()}
				if keep(h.ClientBucket(proto, c.client)) {
					out = append(out, c)
					made++
				}
			}
		}
	}
	return out
}

// ownerships turns a bucket -> director map into each director's Ownership.
func ownerships(n int, owner func(b uint32) int) []Ownership {
	owns := make([]Ownership, n)
	for b := uint32(0); b < testBuckets; b++ {
		if d := owner(b); d >= 0 {
			owns[d].Owned = append(owns[d].Owned, b)
		}
	}
	return owns
}

// Expectations other than a director index.
const (
	nobody    = -1 // every director drops the packet
	atMostOne = -2 // any one director, or none, may accept it
)

// probe is a packet and the director that must accept it.
type probe struct {
	p    pkt
	want int
	what string
}

func check(t *testing.T, l *lan, step string, probes []probe) {
	t.Helper()
	ps := make([]pkt, len(probes))
	for i, pr := range probes {
		ps[i] = pr.p
	}
	got := l.exchange(ps)
	bad := 0
	for i, pr := range probes {
		ok := false
		switch {
		case pr.want == atMostOne:
			ok = len(got[i]) <= 1
		case pr.want == nobody:
			ok = len(got[i]) == 0
		default:
			ok = slices.Equal(got[i], []int{pr.want})
		}
		if !ok {
			if bad < 10 {
				t.Errorf("%s: %s %v accepted by %v, want %d", step, pr.what, pr.p, got[i], pr.want)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d packets accepted wrongly", step, bad, len(probes))
	} else {
		t.Logf("%s: %d packets, each accepted as expected", step, len(probes))
	}
}

// TestExclusivity runs three directors that share a MAC and a VIP on a
// flooding bridge and checks that every packet is accepted by exactly the
// director that owns it: with a static partition, after a reallocation,
// and through every step of a planned handover.
func TestExclusivity(t *testing.T) {
	requireRoot(t)
	l := newLAN(t, 3)
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	for _, sense := range []Sense{SenseAddrPort, SensePort, SenseAddr} {
		t.Run(sense.String(), func(t *testing.T) {
			l.t = t
			cfg := Config{
				VIPs: []netip.Addr{vip4, vip6}, Sense: sense, Seed: r.Uint32() | 1, Buckets: testBuckets,
				RealServerSubnets: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24"), netip.MustParsePrefix("fd00:20::/64")},
			}
			fs := make([]*Filter, len(l.dirs))
			for i, d := range l.dirs {
				f := newFilter(t, cfg, d.fd)
				fs[i] = f
			}
			runExclusivity(t, l, fs, r)
		})
	}
}

func runExclusivity(t *testing.T, l *lan, fs []*Filter, r *rand.Rand) {
	h := fs[0].Hasher()
	n := len(l.dirs)
	p1 := func(b uint32) int { return int(b) % n }
	p2 := func(b uint32) int {
		if b < 16 {
			return (int(b) + 1) % n
		}
		return int(b) % n
	}
	moving := func(b uint32) bool { return b >= 16 && b < 24 }
	p3 := func(b uint32) int {
		if moving(b) {
			return (p2(b) + 1) % n
		}
		return p2(b)
	}
	old := newConns(r, h, 40, func(uint32) bool { return true })
	marker := uint16(1000)
	next := func() uint16 { marker++; return marker }

	// Static partition: openings, data and replies land on the owner.
	l.apply(fs, ownerships(n, p1))
	var pr []probe
	for _, c := range old {
		b := h.ClientBucket(c.proto, c.client)
		pr = append(pr, probe{c.open(next()), p1(b), "open"}, probe{c.data(next()), p1(b), "data"})
		if c.hasReply() {
			pr = append(pr, probe{c.reply(next()), p1(b), "reply"})
		}
	}
	check(t, l, "static partition", pr)

	// Reallocation: everything follows the new owner at once.
	l.apply(fs, ownerships(n, p2))
	pr = nil
	for _, c := range old {
		b := h.ClientBucket(c.proto, c.client)
		pr = append(pr, probe{c.data(next()), p2(b), "data"})
		if c.hasReply() {
			pr = append(pr, probe{c.reply(next()), p2(b), "reply"})
		}
	}
	check(t, l, "after reallocation", pr)

	// Planned handover of the moving buckets, giver first at each step.
	giverOf, takerOf := p2, p3
	step := func(giverState, takerState int) []Ownership {
		owns := make([]Ownership, n)
		for b := uint32(0); b < testBuckets; b++ {
			if !moving(b) {
				owns[p2(b)].Owned = append(owns[p2(b)].Owned, b)
				continue
			}
			g, tk := giverOf(b), takerOf(b)
			switch giverState {
			case 0:
				owns[g].Owned = append(owns[g].Owned, b)
			case 1:
				owns[g].HandoverOut = append(owns[g].HandoverOut, b)
			}
			switch takerState {
			case 1:
				owns[tk].HandoverIn = append(owns[tk].HandoverIn, b)
			case 2:
				owns[tk].Owned = append(owns[tk].Owned, b)
			}
		}
		return owns
	}
	fresh := newConns(r, h, 20, moving)
	stay := newConns(r, h, 5, func(b uint32) bool { return !moving(b) })

	// Step 1: the giver stops taking new connections; the taker does not
	// take them yet: openings in moving buckets are dropped (the client
	// retries), old flows stay with the giver.
	l.apply(fs, step(1, 0))
	pr = nil
	for _, c := range old {
		b := h.ClientBucket(c.proto, c.client)
		pr = append(pr, probe{c.data(next()), giverOf(b), "old data"})
	}
	for _, c := range fresh {
		pr = append(pr, probe{c.open(next()), atMostOne, "new open"})
	}
	check(t, l, "handover step 1 (giver handover_out)", pr)

	// Step 2: both in handover: new connections go to the taker, with
	// every later packet and reply; everything else stays with the giver.
	l.apply(fs, step(1, 1))
	for _, f := range fs {
		drift, err := f.Verify(context.Background())
		if err != nil || len(drift) > 0 {
			t.Fatalf("drift during handover: %v %v", drift, err)
		}
	}
	pr = nil
	for _, c := range fresh {
		b := h.ClientBucket(c.proto, c.client)
		want := takerOf(b)
		if c.proto == ProtoUDP || c.proto == ProtoICMP || c.proto == ProtoICMPv6 {
			want = giverOf(b) // no opening packet: stays with the giver
		}
		pr = append(pr, probe{c.open(next()), want, fmt.Sprintf("new open (bucket %d)", b)})
	}
	check(t, l, "handover step 2 (taker handover_in): openings", pr)
	pr = nil
	for _, c := range fresh {
		b := h.ClientBucket(c.proto, c.client)
		want := takerOf(b)
		if c.proto == ProtoUDP || c.proto == ProtoICMP || c.proto == ProtoICMPv6 {
			want = giverOf(b)
		}
		pr = append(pr, probe{c.data(next()), want, "new data"})
		if c.hasReply() {
			pr = append(pr, probe{c.reply(next()), want, "new reply"})
		}
	}
	for _, c := range append(old, stay...) {
		b := h.ClientBucket(c.proto, c.client)
		pr = append(pr, probe{c.data(next()), giverOf(b), "old data"})
		if c.hasReply() {
			pr = append(pr, probe{c.reply(next()), giverOf(b), "old reply"})
		}
	}
	check(t, l, "handover step 2 (taker handover_in): later packets", pr)

	// Step 3: the giver lets go. Connections opened during the handover
	// stay with the taker; older ones in moving buckets wait (dropped by
	// both) for the taker's last step.
	l.apply(fs, step(2, 1))
	pr = nil
	for _, c := range fresh {
		b := h.ClientBucket(c.proto, c.client)
		want := takerOf(b)
		if c.proto == ProtoUDP || c.proto == ProtoICMP || c.proto == ProtoICMPv6 {
			want = nobody
		}
		pr = append(pr, probe{c.data(next()), want, "new data"})
	}
	for _, c := range old {
		b := h.ClientBucket(c.proto, c.client)
		want := giverOf(b)
		if moving(b) {
			want = nobody
		}
		pr = append(pr, probe{c.data(next()), want, "old data"})
	}
	check(t, l, "handover step 3 (giver released)", pr)

	// Step 4: the taker owns the buckets.
	l.apply(fs, step(2, 2))
	pr = nil
	for _, c := range append(append(old, fresh...), stay...) {
		b := h.ClientBucket(c.proto, c.client)
		pr = append(pr, probe{c.data(next()), p3(b), "data"}, probe{c.open(next()), p3(b), "open"})
		if c.hasReply() {
			pr = append(pr, probe{c.reply(next()), p3(b), "reply"})
		}
	}
	check(t, l, "handover complete", pr)

	// The handover memory of finished moves is gone everywhere.
	for i, d := range l.dirs {
		out := d.nft("list", "set", "inet", DefaultTable, "flows4") + d.nft("list", "set", "inet", DefaultTable, "flows6")
		if containsElements(out) {
			t.Errorf("director %d keeps handover memory after the move:\n%s", i, out)
		}
	}
}
