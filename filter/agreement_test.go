package filter

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// agreementTuples is the number of random client tuples per sense and
// family and direction the kernel hashes for TestKernelAgreement.
const agreementTuples = 100_000

func randAddr(r *rand.Rand, v6 bool) netip.Addr {
	if !v6 {
		return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, r.Uint32())))
	}
	var a [16]byte
	binary.BigEndian.PutUint64(a[:8], r.Uint64())
	binary.BigEndian.PutUint64(a[8:], r.Uint64())
	if a[0] == 0xff { // multicast sources are dropped before the hook
		a[0] = 0xfe
	}
	return netip.AddrFrom16(a)
}

// TestKernelAgreement makes the kernel evaluate exactly the hash
// expressions the filter renders for many random tuples and compares each
// result with Hasher. A test-only rule stores each result in a dynamic map
// keyed by the hash input as the registers held it; one dump reads
// all results back. Keying by the registers also checks the byte layout:
// a tuple whose key Hasher lays out differently is not found.
func TestKernelAgreement(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "agree")
	snd := newSender(ns, "lo")
	conn, err := nftables.New(nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	start := time.Now()
	total := 0
	for _, sense := range []Sense{SensePort, SenseAddr, SenseAddrPort} {
		for _, f := range families() {
			name := sense.String() + "/ipv" + f.suffix
			t.Run(name, func(t *testing.T) {
				seed := r.Uint32() | 1
				// A modulus close to 2^32 keeps almost every bit of the
				// hash visible through reciprocal_scale.
				mod := 1<<31 + r.Uint32N(1<<31)
				n := agreementRun(t, conn, snd, r, f, sense, seed, mod)
				total += n
			})
		}
	}
	t.Logf("kernel and Hasher agreed on %d tuples in %v", total, time.Since(start).Round(time.Millisecond))
}

func agreementRun(t *testing.T, conn *nftables.Conn, snd *sender, r *rand.Rand, f family, sense Sense, seed, mod uint32) int {
	tbl := &nftables.Table{Name: "peerlvs_agree", Family: nftables.TableFamilyINet}
	var keyLen uint32
	switch sense {
	case SensePort:
		keyLen = 2
	case SenseAddr:
		keyLen = f.addrLen
	default:
		keyLen = f.addrLen + 4
	}
	kt := nftables.TypeInteger
	kt.Bytes = keyLen
	maps := map[direction]*nftables.Set{}
	conn.AddTable(tbl)
	for i, dir := range []direction{request, reply} {
		m := &nftables.Set{Table: tbl, ID: uint32(i + 1), Name: []string{"req", "rep"}[i], IsMap: true, Dynamic: true,
			KeyType: kt, DataType: nftables.TypeInteger, Size: 1 << 18}
		if err := conn.AddSet(m, nil); err != nil {
			t.Fatal(err)
		}
		maps[dir] = m
	}
	prio := nftables.ChainPriority(-500)
	ch := conn.AddChain(&nftables.Chain{Name: "pre", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: &prio})
	vip := randAddr(r, f.v6)
	rs := randAddr(r, f.v6)
	for dir, m := range maps {
		match, off := vip, f.daddr
		if dir == reply {
			match, off = rs, f.saddr
		}
		exprs := append(nfproto(f),
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: r1(), Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.addrLen},
			cmpEq(match.AsSlice()...))
		exprs = append(exprs, hashExprs(f, sense, dir, seed, mod, r1())...)
		exprs = append(exprs,
			&expr.Dynset{SrcRegKey: reg(slotKey), SrcRegData: r1(), SetName: m.Name, SetID: m.ID, Operation: unix.NFT_DYNSET_OP_ADD},
			verdict(expr.VerdictDrop))
		conn.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: exprs})
	}
	if err := conn.Flush(); err != nil {
		t.Fatalf("install agreement table: %v", err)
	}
	defer func() {
		conn.DelTable(tbl)
		if err := conn.Flush(); err != nil {
			t.Errorf("remove agreement table: %v", err)
		}
	}()

	h := Hasher{Sense: sense, Seed: seed, Buckets: mod}
	clients := map[direction][]netip.AddrPort{}
	counts := map[direction]int{request: agreementTuples, reply: agreementTuples / 5}
	packet := func(dir direction, c netip.AddrPort) pkt {
		if dir == reply {
			return pkt{proto: ProtoUDP, src: netip.AddrPortFrom(rs, 80), dst: c}
		}
		return pkt{proto: ProtoUDP, src: c, dst: netip.AddrPortFrom(vip, 80)}
	}
	zeroMAC := make(net.HardwareAddr, 6)
	send := func(dir direction, cs []netip.AddrPort) {
		for i, c := range cs {
			if err := snd.send(zeroMAC, packet(dir, c)); err != nil {
				t.Fatalf("send: %v", err)
			}
			if i%1000 == 999 {
				// Loopback queues into a 1000-packet backlog that softirq
				// may leave to ksoftirqd on a busy host; let it drain.
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	for dir, n := range counts {
		for i := 0; i < n; i++ {
			port := uint16(r.Uint32())
			if sense == SensePort && dir == request && i < 1<<16 {
				port = uint16(i) // every port once, then random ones
			}
			clients[dir] = append(clients[dir], netip.AddrPortFrom(randAddr(r, f.v6), port))
		}
		send(dir, clients[dir])
	}
	checked := 0
	for dir, m := range maps {
		got := make(map[string]uint32)
		var missing []netip.AddrPort
		// A frame lost in the backlog is not a disagreement: send the
		// missing tuples again, a bounded number of times.
		for round := 0; round < 5; round++ {
			elems, err := conn.GetSetElements(m)
			if err != nil {
				t.Fatalf("dump %s: %v", m.Name, err)
			}
			for _, e := range elems {
				got[string(e.Key)] = binary.NativeEndian.Uint32(e.Val)
			}
			missing = missing[:0]
			for _, c := range clients[dir] {
				if _, ok := got[string(hashKey(nil, sense, c))]; !ok {
					missing = append(missing, c)
				}
			}
			if len(missing) == 0 {
				break
			}
			t.Logf("%s: resending %d tuples lost on the way", m.Name, len(missing))
			send(dir, missing)
		}
		wrong := 0
		for _, c := range clients[dir] {
			kv, ok := got[string(hashKey(nil, sense, c))]
			if !ok {
				continue
			}
			if want := h.ClientBucket(ProtoUDP, c); kv != want {
				if wrong < 5 {
					t.Errorf("%s %v: kernel %d, Hasher %d", m.Name, c, kv, want)
				}
				wrong++
				continue
			}
			checked++
		}
		if len(missing) > 0 || wrong > 0 {
			t.Errorf("%s: %d tuples, %d distinct keys in the kernel, %d missing, %d disagree", m.Name, len(clients[dir]), len(got), len(missing), wrong)
		} else {
			t.Logf("%s: %d tuples (%d distinct hash inputs) agree, modulus %d seed %#x", m.Name, len(clients[dir]), len(got), mod, seed)
		}
	}
	return checked
}
