package filter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftTableFlagOwner is NFT_TABLE_F_OWNER (Linux 5.12): the kernel destroys
// such a table when the netlink socket that created it closes, and refuses
// changes to it from any other socket. golang.org/x/sys does not name it.
const nftTableFlagOwner = 0x2

const (
	chainMark = "mark"
	setLease  = "lease"
)

// leaseKey is the lease set's one element. The rule looks it up with a
// constant in the register: only whether it is present (not expired)
// matters.
var leaseKey = []byte{1, 0, 0, 0}

// ErrSlowLeaseWrite is returned by LeaseUntil when a write took longer
// than allowed: the kernel may have been told a lease that ends later than
// asked, so the lease has been withdrawn.
var ErrSlowLeaseWrite = errors.New("filter: lease write too slow; withdrawn")

// liveTable names the owner-bound table of a main table.
func liveTable(main string) string { return main + "_live" }

// renderLive is the owner-bound table: one base chain, just before the main
// table's, whose rule (liveRule) sets the liveness mark on every packet. The
// main table clears it again, so nothing after the main table ever sees it.
// With a lease, the rule sets the mark only while the lease set holds its
// element, which expires unless renewed: a process that is alive but
// stalled (a SIGSTOP, a paused VM) stops accepting too.
func renderLive(c Config) (*nftables.Set, *nftables.Chain) {
	t := &nftables.Table{Name: liveTable(c.Table), Family: nftables.TableFamilyINet}
	prio := nftables.ChainPriority(Priority - 1)
	policy := nftables.ChainPolicyAccept
	ch := &nftables.Chain{Name: chainMark, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: &prio, Policy: &policy}
	var set *nftables.Set
	if c.Lease > 0 {
		set = &nftables.Set{Table: t, Name: setLease, KeyType: nftables.TypeInteger, HasTimeout: true}
	}
	return set, ch
}

// liveRule is the mark rule of chain ch; set is the lease set, nil without
// a lease, and must have been added first (the lookup names its ID).
func liveRule(c Config, ch *nftables.Chain, set *nftables.Set) *nftables.Rule {
	comment := fmt.Sprintf("saru is running: table inet %s may accept flows", c.Table)
	var exprs []expr.Any
	if set != nil {
		exprs = []expr.Any{&expr.Immediate{Register: r1(), Data: leaseKey}, lookup(set.Name, set.ID)}
		comment = fmt.Sprintf("saru is running and renews its lease: table inet %s may accept flows", c.Table)
	}
	return &nftables.Rule{Table: ch.Table, Chain: ch, Exprs: append(exprs, markExprs(^c.Mark, c.Mark)...),
		UserData: userdata.AppendString(nil, userdata.TypeComment, comment)}
}

// markExprs sets meta mark to (mark & and) ^ xor.
func markExprs(and, xor uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: r1()},
		&expr.Bitwise{SourceRegister: r1(), DestRegister: r1(), Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(and), Xor: binaryutil.NativeEndian.PutUint32(xor)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: r1()},
	}
}

// markClear matches packets without the liveness mark.
func markClear(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: r1()},
		&expr.Bitwise{SourceRegister: r1(), DestRegister: r1(), Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(mark), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: r1(), Data: make([]byte, 4)},
	}
}

// arm creates the owner-bound liveness table on a socket the Filter keeps
// open until Close. Called with f.mu held.
func (f *Filter) arm() error {
	var nl *netlink.Conn
	opts := []nftables.ConnOption{nftables.AsLasting(),
		nftables.WithSockOptions(func(c *netlink.Conn) error { nl = c; return nil })}
	if f.hasNetNS {
		opts = append(opts, nftables.WithNetNSFd(f.netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("open the netlink socket that will own table inet %s: %w", liveTable(f.cfg.Table), err)
	}
	if err := createOwnedTable(nl, liveTable(f.cfg.Table)); err != nil {
		_ = c.CloseLasting()
		return err
	}
	set, ch := renderLive(f.cfg)
	if set != nil {
		// No element yet: the rules accept nothing until the first
		// LeaseUntil.
		if err := c.AddSet(set, nil); err != nil {
			_ = c.CloseLasting()
			return fmt.Errorf("lease set of table inet %s: %w", liveTable(f.cfg.Table), err)
		}
	}
	c.AddChain(ch)
	c.AddRule(liveRule(f.cfg, ch, set))
	if err := c.Flush(); err != nil {
		_ = c.CloseLasting()
		return fmt.Errorf("fill table inet %s: %w", liveTable(f.cfg.Table), err)
	}
	f.leaseMu.Lock()
	f.live, f.leaseSet = c, set
	f.leaseMu.Unlock()
	return nil
}

// LeaseUntil makes the liveness lease end at deadline: the rules accept
// nothing once it has passed. A deadline not after now withdraws the lease
// at once. Without a lease (Config.Lease 0), or before the first Apply, it
// does nothing.
//
// The kernel counts an element's timeout from when it processes the write,
// so a write delayed after the remaining time was computed (the process
// paused in between) would end the lease late by the delay. LeaseUntil
// measures each write: one that took longer than maxWrite is withdrawn at
// once and reported as ErrSlowLeaseWrite. A caller that relies on the
// deadline allows maxWrite on top of it.
func (f *Filter) LeaseUntil(deadline time.Time, maxWrite time.Duration) error {
	f.leaseMu.Lock()
	defer f.leaseMu.Unlock()
	if f.leaseSet == nil {
		return nil
	}
	start := time.Now()
	// Timeouts travel in whole milliseconds: round down, never up.
	left := deadline.Sub(start).Truncate(time.Millisecond)
	f.live.FlushSet(f.leaseSet)
	if left > 0 {
		if err := f.live.SetAddElements(f.leaseSet, []nftables.SetElement{{Key: leaseKey, Timeout: left}}); err != nil {
			return fmt.Errorf("filter: lease until %v: %w", deadline, err)
		}
	}
	if err := f.live.Flush(); err != nil {
		return fmt.Errorf("filter: lease in table inet %s: %w", liveTable(f.cfg.Table), err)
	}
	if took := time.Since(start); left > 0 && took > maxWrite {
		f.live.FlushSet(f.leaseSet)
		if err := f.live.Flush(); err != nil {
			// Not ErrSlowLeaseWrite: the lease may still be in force.
			return fmt.Errorf("filter: lease write too slow (took %v, limit %v), and the withdrawal failed: %w", took, maxWrite, err)
		}
		return fmt.Errorf("%w: took %v, limit %v", ErrSlowLeaseWrite, took, maxWrite)
	}
	return nil
}

func (f *Filter) liveTableAbsent(ctx context.Context) error {
	held, _, err := f.liveState(ctx)
	if err != nil {
		return err
	}
	if name := liveTable(f.cfg.Table); held {
		return fmt.Errorf("table inet %s exists: another saru runs on this host and owns the rules (stop it first; if none runs, nft delete table inet %s)", name, name)
	}
	return nil
}

// createOwnedTable sends NEWTABLE with NFT_TABLE_F_OWNER in a batch of its
// own: google/nftables always sends table flags 0, and the owner flag can
// only be given at creation.
func createOwnedTable(nl *netlink.Conn, name string) error {
	nfgen := func(family uint8, res uint16) []byte {
		return binary.BigEndian.AppendUint16([]byte{family, unix.NFNETLINK_V0}, res)
	}
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: append([]byte(name), 0)},
		{Type: unix.NFTA_TABLE_FLAGS, Data: binary.BigEndian.AppendUint32(nil, nftTableFlagOwner)},
	})
	if err != nil {
		return fmt.Errorf("marshal table inet %s: %w", name, err)
	}
	msgs := []netlink.Message{
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN), Flags: netlink.Request},
			Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create},
			Data: append(nfgen(unix.NFPROTO_INET, 0), attrs...)},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_END), Flags: netlink.Request},
			Data: nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)},
	}
	if _, err := nl.SendMessages(msgs); err != nil {
		return fmt.Errorf("send table inet %s: %w", name, err)
	}
	if _, err := nl.Receive(); err != nil {
		switch {
		case errors.Is(err, syscall.EPERM):
			return fmt.Errorf("create table inet %s: %w (another process, most likely a second saru, owns it; stop that one)", name, err)
		case errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EINVAL):
			return fmt.Errorf("create table inet %s owned by this process: %w (needs NFT_TABLE_F_OWNER, Linux 5.12 or later; or an ordinary table of that name is in the way: nft delete table inet %s)", name, err, name)
		}
		return fmt.Errorf("create table inet %s: %w", name, err)
	}
	return nil
}

// Close withdraws this Filter's liveness: the kernel removes the liveness
// table, and the main table, which stays, accepts no flow for the VIPs
// until a Filter applies again. A crash does the same, because the kernel
// closes the socket of a dead process.
func (f *Filter) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.disarm()
}

func (f *Filter) disarm() error {
	if f.live == nil {
		return nil
	}
	f.leaseMu.Lock()
	defer f.leaseMu.Unlock()
	err := f.live.CloseLasting()
	f.live, f.leaseSet = nil, nil
	if err != nil {
		return fmt.Errorf("filter: close the socket owning table inet %s: %w", liveTable(f.cfg.Table), err)
	}
	return nil
}

// Live reports whether some running process holds the liveness table, and
// its lease, if it has one, is current: that is whether the main table
// accepts the flows of its owned buckets rather than none.
func (f *Filter) Live(ctx context.Context) (bool, error) {
	held, leased, err := f.liveState(ctx)
	return held && leased, err
}

// liveState reports whether the liveness table exists, and whether it sets
// the mark: it has no lease set, or the lease has not expired.
func (f *Filter) liveState(ctx context.Context) (held, leased bool, err error) {
	c, err := f.conn()
	if err != nil {
		return false, false, err
	}
	defer func() { _ = c.CloseLasting() }()
	name := liveTable(f.cfg.Table)
	t, err := findTable(ctx, c, name)
	if err != nil || t == nil {
		if err != nil {
			err = fmt.Errorf("filter: look for table inet %s: %w", name, err)
		}
		return false, false, err
	}
	set, err := c.GetSetByName(t, setLease)
	if errors.Is(err, unix.ENOENT) {
		return true, true, nil // a liveness table without a lease
	}
	if err != nil {
		return true, false, fmt.Errorf("filter: look for the lease of table inet %s: %w", name, err)
	}
	es, err := c.GetSetElements(set)
	if err != nil {
		return true, false, fmt.Errorf("filter: read the lease of table inet %s: %w", name, err)
	}
	return true, len(es) > 0, nil
}
