package filter

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

var (
	sharedMAC = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x10}
	vip4      = netip.MustParseAddr("192.0.2.10")
	vip6      = netip.MustParseAddr("2001:db8::10")
	rsAddr4   = netip.MustParseAddr("10.20.0.5")
	rsAddr6   = netip.MustParseAddr("fd00:20::5")
)

// lan is the fleet in miniature: directors sharing one MAC and VIP behind a
// bridge that floods every frame (ageing 0, learning off) and a client
// namespace that owns the bridge and writes raw frames onto it.
type lan struct {
	t      *testing.T
	client *testNS
	dirs   []*testNS
	snd    *sender
}

func newLAN(t *testing.T, n int) *lan {
	t.Helper()
	l := &lan{t: t, client: newNS(t, "cli")}
	l.client.sh("ip link add br0 type bridge ageing_time 0")
	l.client.sh("ip link set br0 up")
	for i := 0; i < n; i++ {
		d := newNS(t, fmt.Sprintf("d%d", i))
		port := fmt.Sprintf("vd%d", i)
		l.client.sh(fmt.Sprintf("ip link add %s type veth peer name eth0 netns %s", port, d.name))
		l.client.sh(fmt.Sprintf("ip link set %s master br0", port))
		l.client.sh(fmt.Sprintf("bridge link set dev %s learning off", port))
		l.client.sh(fmt.Sprintf("ip link set %s up", port))
		for _, s := range []string{"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
			"net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.default.router_solicitations=0"} {
			d.sh("sysctl -qw " + s)
		}
		d.sh("ip link set eth0 address " + sharedMAC.String())
		d.sh("sysctl -qw net.ipv4.conf.eth0.rp_filter=0")
		d.sh("ip link set eth0 up")
		d.sh("ip addr add " + vip4.String() + "/32 dev eth0")
		d.sh("ip -6 addr add " + vip6.String() + "/128 dev eth0 nodad")
		installObserver(t, d)
		l.dirs = append(l.dirs, d)
	}
	l.snd = newSender(l.client, "br0")
	l.snd.pace = 100 / n // each frame is queued once per director
	return l
}

const (
	obsTable    = "peerlvs_test_obs"
	listenPort  = 9999
	obsPriority = -100
)

// installObserver adds a test-only table that runs after the filter and
// records every packet the filter let through (protocol, addresses, first
// 8 transport bytes) in a dynamic set per family. It then drops what would
// make the director answer on the LAN, except UDP to listenPort and
// non-first fragments, which a real socket is to receive.
func installObserver(t *testing.T, ns *testNS) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Name: obsTable, Family: nftables.TableFamilyINet})
	prio := nftables.ChainPriority(obsPriority)
	ch := c.AddChain(&nftables.Chain{Name: "pre", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: &prio})
	for i, f := range families() {
		kt := nftables.TypeInteger
		kt.Bytes = 4 + 2*f.addrLen + 8
		s := &nftables.Set{Table: tbl, ID: uint32(i + 1), Name: "obs" + f.suffix, KeyType: kt, Dynamic: true, Size: 1 << 18}
		if err := c.AddSet(s, nil); err != nil {
			t.Fatal(err)
		}
		a := f.addrLen / 4
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: append(nfproto(f),
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(4)},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg(5), Base: expr.PayloadBaseNetworkHeader, Offset: f.saddr, Len: f.addrLen},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg(5 + a), Base: expr.PayloadBaseNetworkHeader, Offset: f.daddr, Len: f.addrLen},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg(5 + 2*a), Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 8},
			&expr.Dynset{SrcRegKey: reg(4), SetName: s.Name, SetID: s.ID, Operation: unix.NFT_DYNSET_OP_ADD},
		)})
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: append(append(nfproto(f), nonFirstFragment(f)...), verdict(expr.VerdictAccept))})
	}
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: append(l4proto(ProtoUDP),
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: r1(), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: r1(), Data: []byte{listenPort >> 8, listenPort & 0xff}},
		verdict(expr.VerdictAccept))})
	for _, p := range []uint8{ProtoTCP, ProtoUDP, ProtoSCTP, ProtoICMP, ProtoICMPv6} {
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: append(l4proto(p), verdict(expr.VerdictDrop))})
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("install observer in %s: %v", ns.name, err)
	}
}

// observed reads and clears what each director's observer recorded.
func (l *lan) observed() []map[string]bool {
	l.t.Helper()
	out := make([]map[string]bool, len(l.dirs))
	for i, d := range l.dirs {
		c, err := nftables.New(nftables.WithNetNSFd(d.fd))
		if err != nil {
			l.t.Fatal(err)
		}
		tbl := &nftables.Table{Name: obsTable, Family: nftables.TableFamilyINet}
		out[i] = make(map[string]bool)
		for _, name := range []string{"obs4", "obs6"} {
			s := &nftables.Set{Table: tbl, Name: name}
			es, err := c.GetSetElements(s)
			if err != nil {
				l.t.Fatalf("read %s in %s: %v", name, d.name, err)
			}
			for _, e := range es {
				out[i][string(e.Key)] = true
			}
			c.FlushSet(s)
		}
		if err := c.Flush(); err != nil {
			l.t.Fatalf("clear observer in %s: %v", d.name, err)
		}
	}
	return out
}

// exchange sends the packets in order and returns, for each, the
// directors that accepted it.
func (l *lan) exchange(ps []pkt) [][]int {
	l.t.Helper()
	for _, p := range ps {
		if err := l.snd.send(sharedMAC, p); err != nil {
			l.t.Fatalf("send %v: %v", p, err)
		}
	}
	// Frames cross the bridge and veths in softirq context, normally before
	// send returns; the pause covers a backlog on a loaded host.
	time.Sleep(50 * time.Millisecond)
	obs := l.observed()
	got := make([][]int, len(ps))
	for i, p := range ps {
		k := p.obsKey()
		for d := range l.dirs {
			if obs[d][k] {
				got[i] = append(got[i], d)
			}
		}
	}
	return got
}

func (l *lan) apply(fs []*Filter, owns []Ownership) {
	l.t.Helper()
	for i, f := range fs {
		if err := f.Apply(context.Background(), owns[i]); err != nil {
			l.t.Fatalf("apply on director %d: %v", i, err)
		}
	}
}
