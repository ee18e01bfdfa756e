package filter

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Names of the objects inside the table. Operators meet them in
// `nft list table inet peerlvs`, so they are part of the interface.
const (
	chainPrerouting = "prerouting"
	chainOrphaned   = "orphaned"
	chainUnclaimed  = "unclaimed"
	commentOwned    = "owned bucket"

	setOwned       = "owned"
	setHandoverOut = "handover_out"
	setHandoverIn  = "handover_in"
	setVIP4        = "vip4"
	setVIP6        = "vip6"
	setProtos      = "protos"
	setFlows4      = "flows4"
	setFlows6      = "flows6"
	setSettling    = "settling"

	cntOwnedAccepted       = "owned_accepted"
	cntForeignDropped      = "foreign_dropped"
	cntFragmentAccepted    = "fragment_accepted"
	cntHandoverOutAccepted = "handover_out_accepted"
	cntHandoverOutDropped  = "handover_out_dropped"
	cntHandoverInAccepted  = "handover_in_accepted"
	cntHandoverInDropped   = "handover_in_dropped"
	cntOrphanedDropped     = "orphaned_dropped"
	cntUnclaimedDropped    = "unclaimed_dropped"
)

// flowSetSize caps the handover memory per family. When it is full a new
// connection is not remembered; both directors then treat it alike (as an
// old flow), so it is accepted once, by the giver.
const flowSetSize = 1 << 20

func counterNames() []string {
	return []string{
		cntOwnedAccepted, cntForeignDropped, cntFragmentAccepted,
		cntHandoverOutAccepted, cntHandoverOutDropped,
		cntHandoverInAccepted, cntHandoverInDropped, cntOrphanedDropped,
		cntUnclaimedDropped,
	}
}

// family is one of the two address families the inet table serves.
type family struct {
	v6      bool
	nfproto byte
	suffix  string
	addrLen uint32
	saddr   uint32 // offset of the source address in the network header
	daddr   uint32
	flows   string
	vips    string
	icmp    uint8
	echo    byte
}

func ipv4() family {
	return family{nfproto: unix.NFPROTO_IPV4, suffix: "4", addrLen: 4, saddr: 12, daddr: 16, flows: setFlows4, vips: setVIP4, icmp: ProtoICMP, echo: 8}
}

func ipv6() family {
	return family{v6: true, nfproto: unix.NFPROTO_IPV6, suffix: "6", addrLen: 16, saddr: 8, daddr: 24, flows: setFlows6, vips: setVIP6, icmp: ProtoICMPv6, echo: 128}
}

func families() []family { return []family{ipv4(), ipv6()} }

// direction says which side of a packet is the client.
type direction bool

const (
	request direction = false // client -> VIP: the client is the source
	reply   direction = true  // real server -> client: the client is the destination
)

func (f family) addrOff(d direction) uint32 {
	if d == reply {
		return f.daddr
	}
	return f.saddr
}

func portOff(d direction) uint32 {
	if d == reply {
		return 2
	}
	return 0
}

// reg returns the register number the kernel dumps for the 32-bit register
// slot i (4 = the first): it reports slots starting a 16-byte register in the
// legacy numbering and the rest as NFT_REG32_xx, so rendering the same way
// keeps rendered and listed rules comparable.
func reg(i uint32) uint32 {
	if i%4 == 0 {
		return i / 4
	}
	return i - 4 + unix.NFT_REG32_00
}

const (
	slotScratch = 4 // NFT_REG_1: comparisons, hash results, flow keys
	slotKey     = 8 // NFT_REG_2: hash input, clear of the hash result
)

// hashExprs loads the client fields of sense s into registers from slotKey on
// and leaves jhash(...) mod B in dst. The layout is the one hashKey mirrors.
func hashExprs(f family, s Sense, d direction, seed, buckets, dst uint32) []expr.Any {
	var out []expr.Any
	slot := uint32(slotKey)
	length := uint32(0)
	if s.usesAddr() {
		out = append(out, &expr.Payload{
			OperationType: expr.PayloadLoad, DestRegister: reg(slot),
			Base: expr.PayloadBaseNetworkHeader, Offset: f.addrOff(d), Len: f.addrLen,
		})
		slot += f.addrLen / 4
		length += f.addrLen
	}
	if s.usesPort() {
		out = append(out, &expr.Payload{
			OperationType: expr.PayloadLoad, DestRegister: reg(slot),
			Base: expr.PayloadBaseTransportHeader, Offset: portOff(d), Len: 2,
		})
		if s.usesAddr() {
			length += 4 // a concatenation pads each part to a whole register
		} else {
			length += 2
		}
	}
	return append(out, &expr.Hash{
		SourceRegister: reg(slotKey), DestRegister: dst, Length: length,
		Modulus: buckets, Seed: seed, Type: expr.HashTypeJenkins,
	})
}

// flowKeyExprs loads l4proto . client address . client port into
// slotScratch on, the key of the handover memory sets.
func flowKeyExprs(f family, d direction) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(slotScratch)},
		&expr.Payload{
			OperationType: expr.PayloadLoad, DestRegister: reg(slotScratch + 1),
			Base: expr.PayloadBaseNetworkHeader, Offset: f.addrOff(d), Len: f.addrLen,
		},
		&expr.Payload{
			OperationType: expr.PayloadLoad, DestRegister: reg(slotScratch + 1 + f.addrLen/4),
			Base: expr.PayloadBaseTransportHeader, Offset: portOff(d), Len: 2,
		},
	}
}

func flowKeyLen(f family) uint32 { return 4 + f.addrLen + 4 }

func r1() uint32 { return reg(slotScratch) }

func lookup(set string, id uint32) *expr.Lookup {
	return &expr.Lookup{SourceRegister: r1(), SetName: set, SetID: id}
}

func count(name string) *expr.Objref {
	return &expr.Objref{Type: unix.NFT_OBJECT_COUNTER, Name: name}
}

func verdict(k expr.VerdictKind) *expr.Verdict { return &expr.Verdict{Kind: k} }

func jump(k expr.VerdictKind, chain string) *expr.Verdict {
	return &expr.Verdict{Kind: k, Chain: chain}
}

func cmpEq(data ...byte) *expr.Cmp {
	return &expr.Cmp{Op: expr.CmpOpEq, Register: r1(), Data: data}
}

func l4proto(p uint8) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r1()},
		cmpEq(p),
	}
}

func l4protoSet(ids setIDs) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r1()},
		lookup(setProtos, ids[setProtos]),
	}
}

func nfproto(f family) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: r1()},
		cmpEq(f.nfproto),
	}
}

// nonFirstFragment matches fragments without a transport header. They are
// accepted everywhere: alone they are useless, because reassembly (by IPVS,
// conntrack or the local stack) needs the first fragment, and that one
// carries the ports and is hashed like any packet.
func nonFirstFragment(f family) []expr.Any {
	if f.v6 {
		return []expr.Any{
			&expr.Exthdr{Op: expr.ExthdrOpIpv6, Type: unix.IPPROTO_FRAGMENT, Offset: 2, Len: 2, DestRegister: r1()},
			&expr.Bitwise{SourceRegister: r1(), DestRegister: r1(), Len: 2, Mask: []byte{0xff, 0xf8}, Xor: []byte{0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: r1(), Data: []byte{0, 0}},
		}
	}
	return []expr.Any{
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: r1(), Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
		&expr.Bitwise{SourceRegister: r1(), DestRegister: r1(), Len: 2, Mask: []byte{0x1f, 0xff}, Xor: []byte{0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: r1(), Data: []byte{0, 0}},
	}
}

// newConnection matches the packets that open a connection: a TCP SYN
// without ACK, or an SCTP INIT (always the only chunk of its packet). UDP
// has no such packet, so during a handover its flows stay with the giver
// until the move completes, when syncd has copied them to the taker.
func newConnection() [][]expr.Any {
	return [][]expr.Any{
		append(l4proto(ProtoTCP),
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: r1(), Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: r1(), DestRegister: r1(), Len: 1, Mask: []byte{0x17}, Xor: []byte{0}}, // fin|syn|rst|ack
			cmpEq(0x02), // syn
		),
		append(l4proto(ProtoSCTP),
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: r1(), Base: expr.PayloadBaseTransportHeader, Offset: 12, Len: 1},
			cmpEq(1), // first chunk type INIT
		),
	}
}

func echoRequest(f family) []expr.Any {
	return append(l4proto(f.icmp),
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: r1(), Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		cmpEq(f.echo),
	)
}

// setIDs numbers the sets for one batch so rules can refer to sets created
// in the same transaction.
type setIDs map[string]uint32

// desired is the whole table as a configuration renders it.
type desired struct {
	table  *nftables.Table
	chains []*nftables.Chain // the base chains first
	rules  map[string][]*nftables.Rule
	sets   []*nftables.Set
	static map[string][]nftables.SetElement // elements of the sets the config fixes
	ids    setIDs
	// ruleStrs are the ruleStrings of rules, per chain.
	ruleStrs map[string][]string
}

func (d *desired) set(name string) *nftables.Set {
	for _, s := range d.sets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (d *desired) chain(name string) *nftables.Chain {
	for _, c := range d.chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func render(c Config) *desired {
	t := &nftables.Table{Name: c.Table, Family: nftables.TableFamilyINet}
	d := &desired{table: t, rules: make(map[string][]*nftables.Rule), static: make(map[string][]nftables.SetElement), ids: setIDs{}}

	addSet := func(s *nftables.Set) {
		s.Table = t
		s.ID = uint32(len(d.sets) + 1)
		d.ids[s.Name] = s.ID
		d.sets = append(d.sets, s)
	}
	// google/nftables cannot attach nft's "typeof" description, so nft lists
	// these keys as "type 0"; the comment tells the operator what they are.
	bucketSet := func(name, what string, counter bool) *nftables.Set {
		return &nftables.Set{
			Name: name, KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, Counter: counter,
			Comment: fmt.Sprintf("%s: buckets 0..%d of jhash by %s seed %#x", what, c.Buckets-1, c.Sense, c.Seed),
		}
	}
	addSet(bucketSet(setOwned, "owned", true))
	addSet(bucketSet(setHandoverOut, "being given away", false))
	addSet(bucketSet(setHandoverIn, "being taken over", false))
	addSet(&nftables.Set{Name: setVIP4, KeyType: nftables.TypeIPAddr})
	addSet(&nftables.Set{Name: setVIP6, KeyType: nftables.TypeIP6Addr})
	addSet(&nftables.Set{Name: setProtos, KeyType: nftables.TypeInetProto})
	for _, f := range families() {
		addr := nftables.TypeIPAddr
		if f.v6 {
			addr = nftables.TypeIP6Addr
		}
		addSet(&nftables.Set{
			Name:          f.flows,
			KeyType:       nftables.MustConcatSetType(nftables.TypeInetProto, addr, nftables.TypeInetService),
			Concatenation: true, Dynamic: true, HasTimeout: true,
			Timeout: c.FlowTimeout, Size: flowSetSize,
		})
	}

	addSet(&nftables.Set{
		Name: setSettling, KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian,
		HasTimeout: true, Timeout: c.Settle,
		Comment: fmt.Sprintf("accepted for less than %v: buckets 0..%d of jhash by %s seed %#x", c.Settle, c.Buckets-1, c.Sense, c.Seed),
	})

	for _, v := range c.VIPs {
		name := setVIP4
		if v.Is6() {
			name = setVIP6
		}
		d.static[name] = append(d.static[name], nftables.SetElement{Key: v.AsSlice()})
	}
	for _, p := range c.Protocols {
		d.static[setProtos] = append(d.static[setProtos], nftables.SetElement{Key: []byte{p}})
	}

	prio := nftables.ChainPriority(Priority)
	policy := nftables.ChainPolicyAccept
	d.chains = append(d.chains, &nftables.Chain{
		Name: chainPrerouting, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: &prio, Policy: &policy,
	})
	unclaimedPrio := nftables.ChainPriority(UnclaimedPriority)
	d.chains = append(d.chains, &nftables.Chain{
		Name: chainUnclaimed, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: &unclaimedPrio, Policy: &policy,
	})
	addChain := func(name string) string {
		d.chains = append(d.chains, &nftables.Chain{Name: name, Table: t})
		return name
	}
	addRule := func(chain, comment string, exprs ...expr.Any) {
		d.rules[chain] = append(d.rules[chain], &nftables.Rule{
			Table: t, Chain: &nftables.Chain{Name: chain, Table: t}, Exprs: exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, comment),
		})
	}
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	one := func(e ...expr.Any) []expr.Any { return e }

	for _, nc := range newConnection() {
		addRule(chainUnclaimed, "opens a connection: the local stack's to answer", cat(nc, one(verdict(expr.VerdictAccept)))...)
	}

	// Without saru's liveness mark the packet meets the orphaned chain,
	// which drops what the request and reply chains would have judged.
	orphaned := addChain(chainOrphaned)
	addRule(chainPrerouting, "saru is not running: accept no flow", cat(markClear(c.Mark), one(jump(expr.VerdictGoto, orphaned)))...)
	addRule(chainPrerouting, "clear saru's liveness mark", markExprs(^c.Mark, 0)...)
	for _, f := range families() {
		req := addChain("request" + f.suffix)
		rep := addChain("reply" + f.suffix)
		reqOut := addChain("handover_out_request" + f.suffix)
		reqIn := addChain("handover_in_request" + f.suffix)
		repOut := addChain("handover_out_reply" + f.suffix)
		repIn := addChain("handover_in_reply" + f.suffix)

		toVIP := cat(nfproto(f), one(
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: r1(), Base: expr.PayloadBaseNetworkHeader, Offset: f.daddr, Len: f.addrLen},
			lookup(f.vips, d.ids[f.vips])))
		addRule(chainPrerouting, "to a VIP: request", cat(toVIP, one(jump(expr.VerdictJump, req)))...)
		addRule(orphaned, "to a VIP: request", cat(toVIP, one(count(cntOrphanedDropped), verdict(expr.VerdictDrop)))...)
		for _, p := range c.RealServerSubnets {
			if p.Addr().Is6() != f.v6 {
				continue
			}
			natReply := cat(nfproto(f), prefixMatch(f, p), one(
				&expr.Fib{Register: r1(), FlagDADDR: true, ResultADDRTYPE: true},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: r1(), Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)}))
			addRule(chainPrerouting, "from real servers to a client: NAT reply", cat(natReply, one(jump(expr.VerdictJump, rep)))...)
			addRule(orphaned, "from real servers to a client: NAT reply", cat(natReply, one(count(cntOrphanedDropped), verdict(expr.VerdictDrop)))...)
		}

		for _, dir := range []direction{request, reply} {
			chain, out, in := req, reqOut, reqIn
			if dir == reply {
				chain, out, in = rep, repOut, repIn
			}
			// The family check is redundant after the base chain's dispatch, but
			// it costs two register operations and lets nft print "ip saddr"
			// instead of "@nh,96,32".
			fp := nfproto(f)
			hash := func(s Sense) []expr.Any { return hashExprs(f, s, dir, c.Seed, c.Buckets, r1()) }
			addRule(chain, "non-first fragment: no ports to hash, useless without the first", cat(fp, nonFirstFragment(f), one(
				count(cntFragmentAccepted), verdict(expr.VerdictAccept)))...)
			addRule(chain, commentOwned, cat(fp, l4protoSet(d.ids), hash(c.Sense), one(
				lookup(setOwned, d.ids[setOwned]), count(cntOwnedAccepted), verdict(expr.VerdictAccept)))...)
			addRule(chain, "bucket being given away", cat(fp, l4protoSet(d.ids), hash(c.Sense), one(
				lookup(setHandoverOut, d.ids[setHandoverOut]), jump(expr.VerdictGoto, out)))...)
			addRule(chain, "bucket being taken over", cat(fp, l4protoSet(d.ids), hash(c.Sense), one(
				lookup(setHandoverIn, d.ids[setHandoverIn]), jump(expr.VerdictGoto, in)))...)
			addRule(chain, "bucket of another director", cat(l4protoSet(d.ids), one(
				count(cntForeignDropped), verdict(expr.VerdictDrop)))...)
			if dir == request {
				// Ping is answered by the director's own stack, so exactly one
				// director may see each echo request; it carries no
				// connection, so during a handover the giver keeps it.
				addRule(chain, "echo request, owned bucket", cat(fp, echoRequest(f), hash(SenseAddr), one(
					lookup(setOwned, d.ids[setOwned]), count(cntOwnedAccepted), verdict(expr.VerdictAccept)))...)
				addRule(chain, "echo request, bucket being given away", cat(fp, echoRequest(f), hash(SenseAddr), one(
					lookup(setHandoverOut, d.ids[setHandoverOut]), count(cntHandoverOutAccepted), verdict(expr.VerdictAccept)))...)
				addRule(chain, "echo request, bucket being taken over", cat(fp, echoRequest(f), hash(SenseAddr), one(
					lookup(setHandoverIn, d.ids[setHandoverIn]), count(cntHandoverInDropped), verdict(expr.VerdictDrop)))...)
				addRule(chain, "echo request, bucket of another director", cat(echoRequest(f), one(
					count(cntForeignDropped), verdict(expr.VerdictDrop)))...)
			}

			if dir == request {
				// IPVS took every packet of a connection it holds before
				// this chain; what arrives here mid-connection would be
				// answered with a reset by the local stack.
				for _, p := range []uint8{ProtoTCP, ProtoSCTP} {
					addRule(chainUnclaimed, "mid-connection, bucket taken moments ago: its state may still be on its way", cat(
						toVIP, l4proto(p), hash(c.Sense), one(lookup(setSettling, d.ids[setSettling]),
							count(cntUnclaimedDropped), verdict(expr.VerdictDrop)))...)
				}
			}

			key := flowKeyExprs(f, dir)
			known := cat(fp, key, one(lookup(f.flows, d.ids[f.flows])))
			if dir == request {
				// Both the giver and the taker see the opening packet and
				// remember the flow, so they agree on its later packets
				// without talking to each other.
				for _, nc := range newConnection() {
					remember := cat(fp, nc, key, one(&expr.Dynset{
						SrcRegKey: r1(), SetName: f.flows, SetID: d.ids[f.flows],
						Operation: unix.NFT_DYNSET_OP_UPDATE,
					}))
					addRule(out, "new connection: the taker's", cat(remember, one(count(cntHandoverOutDropped), verdict(expr.VerdictDrop)))...)
					addRule(in, "new connection: ours", cat(remember, one(count(cntHandoverInAccepted), verdict(expr.VerdictAccept)))...)
				}
			}
			addRule(out, "connection opened during the handover: the taker's", cat(known, one(count(cntHandoverOutDropped), verdict(expr.VerdictDrop)))...)
			addRule(out, "connection older than the handover: ours", count(cntHandoverOutAccepted), verdict(expr.VerdictAccept))
			addRule(in, "connection opened during the handover: ours", cat(known, one(count(cntHandoverInAccepted), verdict(expr.VerdictAccept)))...)
			addRule(in, "connection older than the handover: the giver's", count(cntHandoverInDropped), verdict(expr.VerdictDrop))
		}
	}
	d.ruleStrs = make(map[string][]string, len(d.rules))
	for chain, rs := range d.rules {
		for _, r := range rs {
			d.ruleStrs[chain] = append(d.ruleStrs[chain], ruleString(r))
		}
	}
	return d
}

func prefixMatch(f family, p netip.Prefix) []expr.Any {
	mask := make([]byte, f.addrLen)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: r1(), Base: expr.PayloadBaseNetworkHeader, Offset: f.saddr, Len: f.addrLen},
		&expr.Bitwise{SourceRegister: r1(), DestRegister: r1(), Len: f.addrLen, Mask: mask, Xor: make([]byte, f.addrLen)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: r1(), Data: p.Addr().AsSlice()},
	}
}

func bucketKey(b uint32) []byte {
	return binary.NativeEndian.AppendUint32(nil, b)
}

func bucketElements(bs []uint32) []nftables.SetElement {
	out := make([]nftables.SetElement, len(bs))
	for i, b := range bs {
		out[i] = nftables.SetElement{Key: bucketKey(b)}
	}
	return out
}

func ownershipElements(o Ownership) map[string][]nftables.SetElement {
	return map[string][]nftables.SetElement{
		setOwned:       bucketElements(o.Owned),
		setHandoverOut: bucketElements(o.HandoverOut),
		setHandoverIn:  bucketElements(o.HandoverIn),
	}
}

// flowFromKey decodes an element of a flows set back into the client side
// of the flow it remembers.
func flowFromKey(f family, key []byte) (uint8, netip.AddrPort, error) {
	if uint32(len(key)) != flowKeyLen(f) {
		return 0, netip.AddrPort{}, fmt.Errorf("flow key of %d bytes, want %d", len(key), flowKeyLen(f))
	}
	addr, _ := netip.AddrFromSlice(key[4 : 4+f.addrLen])
	port := binary.BigEndian.Uint16(key[4+f.addrLen:])
	return key[0], netip.AddrPortFrom(addr, port), nil
}
