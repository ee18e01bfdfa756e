package filter

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"time"
)

// DefaultTable is the table the filter owns unless Config.Table says
// otherwise.
const DefaultTable = "peerlvs"

// MaxBuckets bounds Config.Buckets so the bucket sets stay small enough to
// rewrite in one transaction.
const MaxBuckets = 1 << 20

// DefaultFlowTimeout bounds how long the handover memory of one new flow
// lives. A planned move must finish well within it.
const DefaultFlowTimeout = 10 * time.Minute

// DefaultMark is the packet-mark bit that carries saru's liveness from the
// liveness table to the main table unless Config.Mark says otherwise. It
// is set and cleared again before any other table of ordinary priority
// runs, so it only has to be free below priority -450; it stays clear of
// the bits kube-proxy (0x4000, 0x8000) and small IPVS fwmarks use.
const DefaultMark = 0x1000

// Bounds of Config.Lease: below MinLease a renewal could not keep up on a
// loaded host; above MaxLease a stalled director would accept flows long
// after its peers have taken them over.
const (
	MinLease = 50 * time.Millisecond
	MaxLease = time.Minute
)

// DefaultSettle is how long after a director starts accepting a bucket it
// drops, rather than resets, the mid-connection packets of that bucket that
// IPVS does not know (see Config.Settle) unless Config.Settle says
// otherwise.
const DefaultSettle = 5 * time.Second

// Bounds of Config.Settle.
const (
	MinSettle = 100 * time.Millisecond
	MaxSettle = 10 * time.Minute
)

// UnclaimedPriority is the priority of the input base chain that drops
// unclaimed mid-connection packets of settling buckets: after IPVS, whose
// LOCAL_IN hooks run at 98 and 99 (NF_IP_PRI_NAT_SRC - 2 and - 1) and take
// every packet of a connection they hold, so the chain only sees what would
// otherwise reach the director's own stack.
const UnclaimedPriority = 110

// Priority of the prerouting base chain. It runs before defragmentation
// (-400), before raw (-300) and conntrack (-200), and so long before IPVS,
// which hooks LOCAL_IN and FORWARD: a director spends neither conntrack nor
// reassembly memory on the flows other directors own.
const Priority = -450

// Config is what every director of a fleet must agree on (VIPs, sense,
// seed, bucket count) plus this director's view of the real-server subnets.
// It describes the rules; which buckets this director owns comes separately
// with each Apply, because saru owns that decision.
type Config struct {
	// Table is the name of the inet table the filter owns; DefaultTable if
	// empty.
	Table string
	// VIPs are the virtual addresses, IPv4 and IPv6, whose traffic is split.
	VIPs []netip.Addr
	// Sense selects the fields hashed into a bucket.
	Sense Sense
	// Seed is the jhash seed. It must be non-zero and the same on every
	// director: a missing seed makes the kernel draw a random one per rule.
	Seed uint32
	// Buckets is the bucket count B; buckets are 0..B-1.
	Buckets uint32
	// RealServerSubnets are the NAT real servers' networks. Packets from
	// them that are not addressed to this director itself are replies and
	// are hashed by destination, the client, so they land where the request
	// landed.
	RealServerSubnets []netip.Prefix
	// Protocols are the transport protocols split by bucket, a subset of
	// TCP, UDP and SCTP; all three if empty.
	Protocols []uint8
	// FlowTimeout bounds the handover memory of a flow; DefaultFlowTimeout
	// if zero.
	FlowTimeout time.Duration
	// Mark is the single packet-mark bit the liveness table sets and the
	// main table tests and clears; DefaultMark if zero.
	Mark uint32
	// Lease, if not zero, makes liveness also need a lease that the
	// process extends with LeaseUntil, so that a process that is alive but
	// stalled, or no longer granted its buckets, stops accepting flows like
	// a dead one. Zero: liveness lasts as long as the process.
	Lease time.Duration
	// Settle is how long after this director starts accepting a bucket
	// (owned or being taken over) a TCP or SCTP packet of that bucket that
	// does not open a connection, and that IPVS did not take because it
	// holds no such connection, is dropped instead of reaching the local
	// stack, which would answer with a reset. In that time the connection's
	// state may still arrive from syncd; the client retransmits meanwhile.
	// A connection whose state never arrives is reset at most Settle later
	// than without the rule. DefaultSettle if zero.
	Settle time.Duration
}

// Hasher returns the userspace twin of the rules c renders.
func (c Config) Hasher() Hasher {
	return Hasher{Sense: c.Sense, Seed: c.Seed, Buckets: c.Buckets}
}

// normalize validates c and returns a copy with defaults filled in and lists
// sorted and deduplicated, so equal configurations render equal rules.
func (c Config) normalize() (Config, error) {
	var errs []error
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if len(c.Table) > 250 {
		errs = append(errs, errors.New("table name longer than 250 bytes (the liveness table adds \"_live\")"))
	}
	if c.Mark == 0 {
		c.Mark = DefaultMark
	}
	if c.Lease != 0 && (c.Lease < MinLease || c.Lease > MaxLease) {
		errs = append(errs, fmt.Errorf("lease %v out of range: want 0 (none) or %v..%v", c.Lease, MinLease, MaxLease))
	}
	if c.Lease%time.Millisecond != 0 {
		errs = append(errs, fmt.Errorf("lease %v: the kernel counts set timeouts in whole milliseconds", c.Lease))
	}
	if bits.OnesCount32(c.Mark) != 1 {
		errs = append(errs, fmt.Errorf("mark %#x must be a single bit", c.Mark))
	}
	if !c.Sense.valid() {
		errs = append(errs, fmt.Errorf("invalid sense %d", c.Sense))
	}
	if c.Seed == 0 {
		errs = append(errs, errors.New("seed must be non-zero: without a seed the kernel draws a random one per rule and directors would disagree on every bucket"))
	}
	if c.Buckets == 0 || c.Buckets > MaxBuckets {
		errs = append(errs, fmt.Errorf("bucket count %d out of range 1..%d", c.Buckets, MaxBuckets))
	}
	if len(c.VIPs) == 0 {
		errs = append(errs, errors.New("no VIPs"))
	}
	vips := make([]netip.Addr, 0, len(c.VIPs))
	for _, v := range c.VIPs {
		if !v.IsValid() || v.Zone() != "" {
			errs = append(errs, fmt.Errorf("invalid VIP %v", v))
			continue
		}
		vips = append(vips, v.Unmap())
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	c.VIPs = slices.Compact(vips)

	nets := make([]netip.Prefix, 0, len(c.RealServerSubnets))
	for _, p := range c.RealServerSubnets {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("invalid real-server subnet %v", p))
			continue
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				errs = append(errs, fmt.Errorf("real-server subnet %v mixes IPv4-mapped and IPv6 addresses", p))
				continue
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		nets = append(nets, p.Masked())
	}
	slices.SortFunc(nets, func(a, b netip.Prefix) int {
		if d := a.Addr().Compare(b.Addr()); d != 0 {
			return d
		}
		return a.Bits() - b.Bits()
	})
	c.RealServerSubnets = slices.Compact(nets)

	protos := slices.Clone(c.Protocols)
	if len(protos) == 0 {
		protos = []uint8{ProtoTCP, ProtoUDP, ProtoSCTP}
	}
	for _, p := range protos {
		if p != ProtoTCP && p != ProtoUDP && p != ProtoSCTP {
			errs = append(errs, fmt.Errorf("protocol %d not supported (want TCP 6, UDP 17 or SCTP 132)", p))
		}
	}
	slices.Sort(protos)
	c.Protocols = slices.Compact(protos)

	if c.Settle == 0 {
		c.Settle = DefaultSettle
	}
	if c.Settle < MinSettle || c.Settle > MaxSettle {
		errs = append(errs, fmt.Errorf("settle %v out of range %v..%v", c.Settle, MinSettle, MaxSettle))
	}
	if c.Settle%time.Millisecond != 0 {
		errs = append(errs, fmt.Errorf("settle %v: the kernel counts set timeouts in whole milliseconds", c.Settle))
	}
	if c.FlowTimeout == 0 {
		c.FlowTimeout = DefaultFlowTimeout
	}
	if c.FlowTimeout < time.Second {
		errs = append(errs, fmt.Errorf("flow timeout %v shorter than 1s", c.FlowTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("filter: invalid config: %w", err)
	}
	return c, nil
}

// Ownership is this director's share of the buckets as saru decided it.
// A bucket is in at most one of the lists.
type Ownership struct {
	// Owned buckets are accepted entirely.
	Owned []uint32
	// HandoverOut buckets are being given to another director: packets of
	// connections set up before the handover are still accepted here, new
	// connections are left to the taker.
	HandoverOut []uint32
	// HandoverIn buckets are being taken from another director: only new
	// connections are accepted here, the rest is left to the giver.
	HandoverIn []uint32
}

func (o Ownership) normalize(buckets uint32) (Ownership, error) {
	seen := make(map[uint32]string)
	var errs []error
	clean := func(name string, in []uint32) []uint32 {
		out := make([]uint32, 0, len(in))
		for _, b := range in {
			if b >= buckets {
				errs = append(errs, fmt.Errorf("%s bucket %d out of range 0..%d", name, b, buckets-1))
				continue
			}
			if prev, ok := seen[b]; ok {
				if prev != name {
					errs = append(errs, fmt.Errorf("bucket %d both in %s and %s", b, prev, name))
				}
				continue
			}
			seen[b] = name
			out = append(out, b)
		}
		slices.Sort(out)
		return out
	}
	n := Ownership{
		Owned:       clean("owned", o.Owned),
		HandoverOut: clean("handover_out", o.HandoverOut),
		HandoverIn:  clean("handover_in", o.HandoverIn),
	}
	if err := errors.Join(errs...); err != nil {
		return Ownership{}, fmt.Errorf("filter: invalid ownership: %w", err)
	}
	return n, nil
}
