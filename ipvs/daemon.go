package ipvs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Generic-netlink commands and attributes, from include/uapi/linux/ip_vs.h.
const (
	cmdNewDaemon = 9  // IPVS_CMD_NEW_DAEMON; also the command of GET_DAEMON's replies
	cmdDelDaemon = 10 // IPVS_CMD_DEL_DAEMON
	cmdGetDaemon = 11 // IPVS_CMD_GET_DAEMON
	cmdSetInfo   = 14 // IPVS_CMD_SET_INFO: the command of GET_INFO's reply
	cmdGetInfo   = 15 // IPVS_CMD_GET_INFO

	attrCmdDaemon = 3 // IPVS_CMD_ATTR_DAEMON, nested

	attrDaemonState       = 1 // u32
	attrDaemonMcastIfn    = 2 // NUL-terminated string, at most 15 bytes before the NUL
	attrDaemonSyncID      = 3 // u32
	attrDaemonSyncMaxLen  = 4 // u16
	attrDaemonMcastGroup  = 5 // policy u32, but the value is the address in network order
	attrDaemonMcastGroup6 = 6 // 16 bytes
	attrDaemonMcastPort   = 7 // u16, host order (the kernel applies htons itself)
	attrDaemonMcastTTL    = 8 // u8

	attrInfoVersion     = 1 // u32
	attrInfoConnTabSize = 2 // u32
)

// defaultSyncGroup is IP_VS_SYNC_GROUP, what start_sync_thread uses when no
// group is given.
var defaultSyncGroup = netip.AddrFrom4([4]byte{224, 0, 0, 81})

// Kernel defaults that start_sync_thread fills in for zero fields.
const (
	DefaultSyncPort = 8848 // IP_VS_SYNC_PORT
	DefaultSyncTTL  = 1

	// ifNameMax is IP_VS_IFNAME_MAXLEN (= IFNAMSIZ) less the NUL.
	ifNameMax = 15

	// UDP plus IP header sizes; start_sync_thread clamps sync_maxlen to
	// 65535 minus these.
	hdrLen4 = 20 + 8
	hdrLen6 = 40 + 8

	// MinBackupMaxLen is the smallest sync_maxlen the kernel keeps for a
	// backup thread (its receive buffer); smaller values are raised to it.
	MinBackupMaxLen = 1024
)

// DaemonState selects the kernel sync thread: the master sends the
// connections of this director, the backup receives and installs others'.
// Both can run at once.
type DaemonState uint32

const (
	Master DaemonState = 1 // IP_VS_STATE_MASTER
	Backup DaemonState = 2 // IP_VS_STATE_BACKUP
)

func (s DaemonState) String() string {
	switch s {
	case Master:
		return "master"
	case Backup:
		return "backup"
	}
	return fmt.Sprintf("DaemonState(%d)", uint32(s))
}

// DaemonConfig is one kernel sync thread's configuration, as StartDaemon
// sends it and Daemons reports it. Zero fields mean the kernel's default when
// starting; Daemons reports the values in effect, defaults filled in.
type DaemonConfig struct {
	State     DaemonState
	Interface string // the multicast interface, in the handle's namespace
	SyncID    uint8  // 0: a backup accepts every sync ID
	// MaxLen is the largest UDP payload the master sends or the backup
	// receives. 0 means 1500 (master) or the interface MTU, at least 1500
	// (backup), less the IP and UDP headers.
	MaxLen uint16
	Group  netip.Addr // IPv4 or IPv6 multicast; zero: 224.0.0.81
	// Port is the base port: with net.ipv4.vs.sync_ports = N the kernel
	// runs N threads on Port .. Port+N-1. 0: 8848.
	Port uint16
	TTL  uint8 // multicast TTL / hop limit of the master's datagrams; 0: 1
}

func (c DaemonConfig) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on %q syncid %d", c.State, c.Interface, c.SyncID)
	if c.Group.IsValid() || c.Port != 0 {
		g := "default"
		if c.Group.IsValid() {
			g = c.Group.String()
		}
		fmt.Fprintf(&b, " group %s port %d", g, c.Port)
	}
	if c.MaxLen != 0 {
		fmt.Fprintf(&b, " maxlen %d", c.MaxLen)
	}
	if c.TTL != 0 {
		fmt.Fprintf(&b, " ttl %d", c.TTL)
	}
	return b.String()
}

// Validate reports what the kernel would refuse, or silently change, in c.
// StartDaemon calls it before sending anything.
func (c DaemonConfig) Validate() error {
	if c.State != Master && c.State != Backup {
		return fmt.Errorf("sync daemon state %s: must be Master or Backup", c.State)
	}
	if c.Interface == "" {
		return errors.New("sync daemon interface: empty; name the multicast interface (e.g. plsync0)")
	}
	if len(c.Interface) > ifNameMax {
		return fmt.Errorf("sync daemon interface %q: %d bytes, the kernel takes at most %d (IFNAMSIZ 16 with the NUL)", c.Interface, len(c.Interface), ifNameMax)
	}
	if strings.IndexByte(c.Interface, 0) >= 0 {
		return fmt.Errorf("sync daemon interface %q: contains a NUL byte", c.Interface)
	}
	group := c.Group.Unmap()
	if c.Group.IsValid() {
		if c.Group.Zone() != "" {
			return fmt.Errorf("sync group %s: a zone is not supported; the interface chooses the link", c.Group)
		}
		if !group.IsMulticast() {
			return fmt.Errorf("sync group %s: %w", c.Group, ErrNotMulticast)
		}
	}
	if c.MaxLen != 0 {
		// The kernel clamps instead of refusing; refusing here keeps what
		// Daemons reports equal to what was asked for.
		hdr := hdrLen4
		if group.Is6() {
			hdr = hdrLen6
		}
		lo, hi := 1, 65535-hdr
		if c.State == Backup {
			lo = MinBackupMaxLen
		}
		if int(c.MaxLen) < lo || int(c.MaxLen) > hi {
			return fmt.Errorf("sync daemon maxlen %d: the kernel takes %d..%d for a %s with this group (0 for its default)", c.MaxLen, lo, hi, c.State)
		}
	}
	return nil
}

// Matches reports whether running (as reported by Daemons) is the daemon
// that StartDaemon(c) starts, counting c's zero fields as the kernel
// defaults. A zero MaxLen matches any, since the kernel derives it from the
// interface. Lets a restarted syncd keep a kernel thread that is already
// right instead of restarting it.
func (c DaemonConfig) Matches(running DaemonConfig) bool {
	group := c.Group.Unmap()
	if !group.IsValid() {
		group = defaultSyncGroup
	}
	port, ttl := c.Port, c.TTL
	if port == 0 {
		port = DefaultSyncPort
	}
	if ttl == 0 {
		ttl = DefaultSyncTTL
	}
	return c.State == running.State &&
		c.Interface == running.Interface &&
		c.SyncID == running.SyncID &&
		(c.MaxLen == 0 || c.MaxLen == running.MaxLen) &&
		group == running.Group.Unmap() &&
		port == running.Port &&
		ttl == running.TTL
}

// daemonAttrs encodes the IPVS_CMD_ATTR_DAEMON nest for NEW_DAEMON with the
// types of the kernel's ip_vs_daemon_policy. Zero optional fields are left
// out, which the kernel treats as "use the default".
func daemonAttrs(c DaemonConfig) ([]byte, error) {
	ne := binary.NativeEndian
	attrs := []netlink.Attribute{
		{Type: attrDaemonState, Data: ne.AppendUint32(nil, uint32(c.State))},
		{Type: attrDaemonMcastIfn, Data: append([]byte(c.Interface), 0)},
		{Type: attrDaemonSyncID, Data: ne.AppendUint32(nil, uint32(c.SyncID))},
	}
	if c.MaxLen != 0 {
		attrs = append(attrs, netlink.Attribute{Type: attrDaemonSyncMaxLen, Data: ne.AppendUint16(nil, c.MaxLen)})
	}
	if g := c.Group.Unmap(); g.Is4() {
		// nla_get_in_addr: the four address bytes as they are, which is
		// network order, despite the u32 policy type.
		a := g.As4()
		attrs = append(attrs, netlink.Attribute{Type: attrDaemonMcastGroup, Data: a[:]})
	} else if g.Is6() {
		a := g.As16()
		attrs = append(attrs, netlink.Attribute{Type: attrDaemonMcastGroup6, Data: a[:]})
	}
	if c.Port != 0 {
		attrs = append(attrs, netlink.Attribute{Type: attrDaemonMcastPort, Data: ne.AppendUint16(nil, c.Port)})
	}
	if c.TTL != 0 {
		attrs = append(attrs, netlink.Attribute{Type: attrDaemonMcastTTL, Data: []byte{c.TTL}})
	}
	return nestDaemon(attrs)
}

// nestDaemon wraps attrs in IPVS_CMD_ATTR_DAEMON. Without NLA_F_NESTED, as
// ipvsadm sends it and the kernel's own replies carry it: the IPVS ops parse
// leniently and accept either.
func nestDaemon(attrs []netlink.Attribute) ([]byte, error) {
	inner, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return nil, err
	}
	return netlink.MarshalAttributes([]netlink.Attribute{{Type: attrCmdDaemon, Data: inner}})
}

// StartDaemon starts a kernel sync thread (IPVS_CMD_NEW_DAEMON). The kernel
// looks the interface up in the handle's namespace.
//
// Errors wrap ErrDaemonRunning (a thread in this state already runs; the
// kernel does not reconfigure it), ErrNoInterface, ErrNotMulticast,
// ErrPermission or ErrNoIPVS where they apply, and always the kernel's errno.
func (h *Handle) StartDaemon(cfg DaemonConfig) error {
	op := fmt.Sprintf("start sync daemon %s", cfg)
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	data, err := daemonAttrs(cfg)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	if err := h.do(cmdNewDaemon, data); err != nil {
		return fmt.Errorf("%s: %w", op, mapStartErr(cfg, err))
	}
	return nil
}

// StopDaemon stops the kernel sync thread in state (IPVS_CMD_DEL_DAEMON).
// Stopping one that is not running fails with ErrDaemonNotRunning, which a
// caller that only wants it gone may ignore.
func (h *Handle) StopDaemon(state DaemonState) error {
	op := fmt.Sprintf("stop %s sync daemon", state)
	if state != Master && state != Backup {
		return fmt.Errorf("%s: must be Master or Backup", op)
	}
	data, err := nestDaemon([]netlink.Attribute{
		{Type: attrDaemonState, Data: binary.NativeEndian.AppendUint32(nil, uint32(state))},
	})
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	if err := h.do(cmdDelDaemon, data); err != nil {
		if errno, ok := errnoOf(err); ok && errno == unix.ESRCH {
			err = withSentinel(ErrDaemonNotRunning, err)
		}
		return fmt.Errorf("%s: %w", op, mapCommon(err))
	}
	return nil
}

// Daemons lists the running kernel sync threads (IPVS_CMD_GET_DAEMON), the
// master first, with the values in effect (defaults filled in, MaxLen
// clamped). None running is an empty list, not an error.
func (h *Handle) Daemons() ([]DaemonConfig, error) {
	msgs, err := h.execute(cmdGetDaemon, nil, netlink.Request|netlink.Dump)
	if err != nil {
		return nil, fmt.Errorf("list sync daemons: %w", mapCommon(err))
	}
	var out []DaemonConfig
	for i, m := range msgs {
		if m.Header.Command != cmdNewDaemon {
			continue
		}
		c, err := parseDaemonMessage(m.Data)
		if err != nil {
			return nil, fmt.Errorf("list sync daemons: reply %d: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// parseDaemonMessage decodes the attributes of one GET_DAEMON reply, laid
// out by the kernel's ip_vs_genl_fill_daemon.
func parseDaemonMessage(b []byte) (DaemonConfig, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return DaemonConfig{}, err
	}
	var (
		c     DaemonConfig
		found bool
	)
	for ad.Next() {
		if ad.Type() != attrCmdDaemon {
			continue
		}
		found = true
		ad.Nested(func(nad *netlink.AttributeDecoder) error {
			var err error
			c, err = parseDaemonAttrs(nad)
			return err
		})
	}
	if err := ad.Err(); err != nil {
		return DaemonConfig{}, err
	}
	if !found {
		return DaemonConfig{}, errors.New("no daemon attribute (IPVS_CMD_ATTR_DAEMON) in reply")
	}
	return c, nil
}

func parseDaemonAttrs(ad *netlink.AttributeDecoder) (DaemonConfig, error) {
	var c DaemonConfig
	var haveState, haveIfn bool
	for ad.Next() {
		switch ad.Type() {
		case attrDaemonState:
			c.State = DaemonState(ad.Uint32())
			haveState = true
		case attrDaemonMcastIfn:
			c.Interface = ad.String()
			haveIfn = true
		case attrDaemonSyncID:
			id := ad.Uint32()
			if id > 0xff {
				return c, fmt.Errorf("sync id %d does not fit the sync header's 8 bits", id)
			}
			c.SyncID = uint8(id)
		case attrDaemonSyncMaxLen:
			c.MaxLen = ad.Uint16()
		case attrDaemonMcastGroup:
			b := ad.Bytes()
			if len(b) != 4 {
				return c, fmt.Errorf("IPv4 group attribute of %d bytes, want 4", len(b))
			}
			c.Group = netip.AddrFrom4([4]byte(b))
		case attrDaemonMcastGroup6:
			b := ad.Bytes()
			if len(b) != 16 {
				return c, fmt.Errorf("IPv6 group attribute of %d bytes, want 16", len(b))
			}
			c.Group = netip.AddrFrom16([16]byte(b))
		case attrDaemonMcastPort:
			c.Port = ad.Uint16()
		case attrDaemonMcastTTL:
			c.TTL = ad.Uint8()
		}
	}
	if err := ad.Err(); err != nil {
		return c, err
	}
	if !haveState || !haveIfn {
		return c, errors.New("daemon attribute without state or interface")
	}
	return c, nil
}

// mapStartErr turns NEW_DAEMON's errnos (start_sync_thread and
// ip_vs_genl_new_daemon) into this package's sentinels.
func mapStartErr(cfg DaemonConfig, err error) error {
	errno, ok := errnoOf(err)
	if !ok {
		return mapCommon(err)
	}
	switch errno {
	case unix.EEXIST:
		return withSentinel(ErrDaemonRunning, err)
	case unix.ENODEV:
		return withSentinel(ErrNoInterface, err)
	case unix.EINVAL:
		if g := cfg.Group.Unmap(); g.IsValid() && !g.IsMulticast() {
			return withSentinel(ErrNotMulticast, err)
		}
		// Validate rules out everything else the kernel checks except this.
		return fmt.Errorf("kernel refused the config; with a valid config the cause is a service whose real servers are of the other address family, which the sync protocol cannot carry: %w", err)
	case unix.EADDRINUSE:
		return fmt.Errorf("another socket holds the group's port without SO_REUSEADDR (check syncd's own sockets on this port): %w", err)
	case unix.EAFNOSUPPORT:
		return fmt.Errorf("kernel built without IPv6 IPVS (CONFIG_IP_VS_IPV6): use an IPv4 group: %w", err)
	}
	return mapCommon(err)
}

// do sends a command that changes state and waits for the kernel's
// acknowledgement, which is where its errno comes back.
func (h *Handle) do(cmd uint8, data []byte) error {
	_, err := h.execute(cmd, data, netlink.Request|netlink.Acknowledge)
	return err
}

func (h *Handle) execute(cmd uint8, data []byte, flags netlink.HeaderFlags) ([]genetlink.Message, error) {
	if h.genl == nil {
		return nil, errors.New("handle is closed")
	}
	req := genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: genlVersion},
		Data:   data,
	}
	return h.genl.Execute(req, h.family, flags)
}

// Info returns the IPVS version (e.g. "1.2.1") and the size of the
// connection hash table (the ip_vs conn_tab_bits module parameter), from
// IPVS_CMD_GET_INFO.
func (h *Handle) Info() (version string, connTableSize int, err error) {
	msgs, err := h.execute(cmdGetInfo, nil, netlink.Request)
	if err != nil {
		return "", 0, fmt.Errorf("get IPVS info: %w", mapCommon(err))
	}
	for _, m := range msgs {
		if m.Header.Command != cmdSetInfo {
			continue
		}
		version, connTableSize, err = parseInfo(m.Data)
		if err != nil {
			return "", 0, fmt.Errorf("get IPVS info: %w", err)
		}
		return version, connTableSize, nil
	}
	return "", 0, errors.New("get IPVS info: no reply with IPVS_CMD_SET_INFO")
}

func parseInfo(b []byte) (string, int, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return "", 0, err
	}
	var (
		code, size      uint32
		haveV, haveSize bool
	)
	for ad.Next() {
		switch ad.Type() {
		case attrInfoVersion:
			code, haveV = ad.Uint32(), true
		case attrInfoConnTabSize:
			size, haveSize = ad.Uint32(), true
		}
	}
	if err := ad.Err(); err != nil {
		return "", 0, err
	}
	if !haveV || !haveSize {
		return "", 0, errors.New("reply lacks the version or the table size")
	}
	// IP_VS_VERSION_CODE packs major, minor and patch a byte each.
	v := fmt.Sprintf("%d.%d.%d", code>>16&0xff, code>>8&0xff, code&0xff)
	return v, int(size), nil
}
