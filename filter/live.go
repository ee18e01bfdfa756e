package filter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

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

const chainMark = "mark"

// liveTable names the owner-bound table of a main table.
func liveTable(main string) string { return main + "_live" }

// renderLive is the owner-bound table: one base chain, just before the main
// table's, that sets the liveness mark on every packet. The main table
// clears it again, so nothing after the main table ever sees it.
func renderLive(c Config) (*nftables.Table, *nftables.Chain, *nftables.Rule) {
	t := &nftables.Table{Name: liveTable(c.Table), Family: nftables.TableFamilyINet}
	prio := nftables.ChainPriority(Priority - 1)
	policy := nftables.ChainPolicyAccept
	ch := &nftables.Chain{Name: chainMark, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: &prio, Policy: &policy}
	r := &nftables.Rule{Table: t, Chain: ch, Exprs: markExprs(^c.Mark, c.Mark),
		UserData: userdata.AppendString(nil, userdata.TypeComment,
			fmt.Sprintf("saru is running: table inet %s may accept flows", c.Table))}
	return t, ch, r
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
	_, ch, r := renderLive(f.cfg)
	c.AddChain(ch)
	c.AddRule(r)
	if err := c.Flush(); err != nil {
		_ = c.CloseLasting()
		return fmt.Errorf("fill table inet %s: %w", liveTable(f.cfg.Table), err)
	}
	f.live = c
	return nil
}

func (f *Filter) liveTableAbsent(ctx context.Context) error {
	live, err := f.Live(ctx)
	if err != nil {
		return err
	}
	if name := liveTable(f.cfg.Table); live {
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
	err := f.live.CloseLasting()
	f.live = nil
	if err != nil {
		return fmt.Errorf("filter: close the socket owning table inet %s: %w", liveTable(f.cfg.Table), err)
	}
	return nil
}

// Live reports whether some running process holds the liveness table, that
// is whether the main table accepts the flows of its owned buckets rather
// than none.
func (f *Filter) Live(ctx context.Context) (bool, error) {
	c, err := f.conn()
	if err != nil {
		return false, err
	}
	defer func() { _ = c.CloseLasting() }()
	t, err := findTable(ctx, c, liveTable(f.cfg.Table))
	if err != nil {
		return false, fmt.Errorf("filter: look for table inet %s: %w", liveTable(f.cfg.Table), err)
	}
	return t != nil, nil
}
