package ipvs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

// testFamily is the family ID the fake kernel hands out for "IPVS"; the
// real one is assigned at module load.
const testFamily = 0x2a

// request is what the fake kernel saw.
type request struct {
	family  uint16
	flags   netlink.HeaderFlags
	cmd     uint8
	version uint8
	data    []byte
}

// fakeKernel serves the "IPVS" family on an nltest connection, records
// every IPVS request and answers with reply. It writes error messages the
// way the kernel's netlink_ack does (errno, then the request's own header
// and payload, flags 0); genltest copies the request's flags into them,
// which turns NLM_F_DUMP into a bogus NLM_F_ACK_TLVS.
type fakeKernel struct {
	reqs  []request
	reply func(req request) ([]genetlink.Message, error)
}

// kernelErrno is returned by a reply func to make the fake answer with an
// error message.
type kernelErrno unix.Errno

func (e kernelErrno) Error() string { return unix.Errno(e).Error() }

func newFakeHandle(t *testing.T, fk *fakeKernel) *Handle {
	t.Helper()
	fn := func(nreqs []netlink.Message) ([]netlink.Message, error) {
		if len(nreqs) == 0 {
			// nltest asks again after an empty answer: end of dump.
			return nil, io.EOF
		}
		nreq := nreqs[0]
		var greq genetlink.Message
		if err := greq.UnmarshalBinary(nreq.Data); err != nil {
			return nil, err
		}
		var (
			replies []genetlink.Message
			err     error
		)
		if nreq.Header.Type == unix.GENL_ID_CTRL {
			replies, err = serveIPVSFamily(greq)
		} else {
			req := request{
				family:  uint16(nreq.Header.Type),
				flags:   nreq.Header.Flags,
				cmd:     greq.Header.Command,
				version: greq.Header.Version,
				data:    bytes.Clone(greq.Data),
			}
			fk.reqs = append(fk.reqs, req)
			if fk.reply == nil {
				t.Errorf("unexpected request to the kernel: cmd %d data % x", req.cmd, req.data)
				err = kernelErrno(unix.EINVAL)
			} else {
				replies, err = fk.reply(req)
			}
		}
		var ke kernelErrno
		if errors.As(err, &ke) {
			return []netlink.Message{errorMessage(nreq, unix.Errno(ke))}, nil
		}
		if err != nil {
			return nil, err
		}
		out := make([]netlink.Message, 0, len(replies))
		for _, r := range replies {
			b, err := r.MarshalBinary()
			if err != nil {
				return nil, err
			}
			out = append(out, netlink.Message{
				Header: netlink.Header{Type: nreq.Header.Type, Sequence: nreq.Header.Sequence, PID: nreq.Header.PID},
				Data:   b,
			})
		}
		return out, nil
	}
	h := &Handle{}
	if err := h.attach(genetlink.NewConn(nltest.Dial(fn))); err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func serveIPVSFamily(greq genetlink.Message) ([]genetlink.Message, error) {
	ad, err := netlink.NewAttributeDecoder(greq.Data)
	if err != nil {
		return nil, err
	}
	for ad.Next() {
		if ad.Type() == unix.CTRL_ATTR_FAMILY_NAME && ad.String() != "IPVS" {
			return nil, kernelErrno(unix.ENOENT)
		}
	}
	b, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.CTRL_ATTR_FAMILY_ID, Data: binary.NativeEndian.AppendUint16(nil, testFamily)},
		{Type: unix.CTRL_ATTR_FAMILY_NAME, Data: []byte("IPVS\x00")},
		{Type: unix.CTRL_ATTR_VERSION, Data: binary.NativeEndian.AppendUint32(nil, 1)},
	})
	return []genetlink.Message{{Header: genetlink.Header{Command: unix.CTRL_CMD_NEWFAMILY, Version: 2}, Data: b}}, err
}

// errorMessage is NLMSG_ERROR as netlink_ack writes it without extended
// acknowledgements.
func errorMessage(req netlink.Message, e unix.Errno) netlink.Message {
	hdr := make([]byte, 16)
	ne := binary.NativeEndian
	ne.PutUint32(hdr[0:], uint32(16+len(req.Data)))
	ne.PutUint16(hdr[4:], uint16(req.Header.Type))
	ne.PutUint16(hdr[6:], uint16(req.Header.Flags))
	ne.PutUint32(hdr[8:], req.Header.Sequence)
	ne.PutUint32(hdr[12:], req.Header.PID)
	data := ne.AppendUint32(nil, uint32(-int32(e)))
	data = append(append(data, hdr...), req.Data...)
	return netlink.Message{
		Header: netlink.Header{Type: netlink.Error, Sequence: req.Header.Sequence, PID: req.Header.PID},
		Data:   data,
	}
}

// ack is what the fake kernel answers to a successful command.
func ack(request) ([]genetlink.Message, error) {
	return []genetlink.Message{{}}, nil
}

func errno(e unix.Errno) func(request) ([]genetlink.Message, error) {
	return func(request) ([]genetlink.Message, error) { return nil, kernelErrno(e) }
}

// The expected bytes below are written out by hand from the kernel's
// attribute layout (struct nlattr: le16 len, le16 type, payload, padding to
// 4), so they only hold on little-endian hosts.
func skipBigEndian(t *testing.T) {
	t.Helper()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("expected netlink bytes are written for a little-endian host")
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestStartDaemonAttributes(t *testing.T) {
	skipBigEndian(t)
	state := func(s byte) []byte { return []byte{8, 0, 1, 0, s, 0, 0, 0} }
	ifnPlsync0 := []byte{12, 0, 2, 0, 'p', 'l', 's', 'y', 'n', 'c', '0', 0}
	syncID := func(id byte) []byte { return []byte{8, 0, 3, 0, id, 0, 0, 0} }
	nest := func(inner []byte) []byte {
		return cat([]byte{byte(4 + len(inner)), 0, 3, 0}, inner)
	}

	tests := []struct {
		name string
		cfg  DaemonConfig
		want []byte
	}{
		{
			name: "master with kernel defaults",
			cfg:  DaemonConfig{State: Master, Interface: "plsync0"},
			want: nest(cat(state(1), ifnPlsync0, syncID(0))),
		},
		{
			name: "backup, every field, IPv4 group in network order",
			cfg: DaemonConfig{State: Backup, Interface: "plsync0", SyncID: 7, MaxLen: 1500,
				Group: netip.MustParseAddr("239.1.2.3"), Port: 8850, TTL: 2},
			want: nest(cat(state(2), ifnPlsync0, syncID(7),
				[]byte{6, 0, 4, 0, 0xdc, 0x05, 0, 0}, // SYNC_MAXLEN u16 1500, padded
				[]byte{8, 0, 5, 0, 239, 1, 2, 3},     // MCAST_GROUP: address bytes as they are
				[]byte{6, 0, 7, 0, 0x92, 0x22, 0, 0}, // MCAST_PORT u16 8850 host order
				[]byte{5, 0, 8, 0, 2, 0, 0, 0},       // MCAST_TTL u8
			)),
		},
		{
			name: "IPv4-mapped group goes out as IPv4",
			cfg:  DaemonConfig{State: Master, Interface: "plsync0", Group: netip.MustParseAddr("::ffff:224.0.0.81")},
			want: nest(cat(state(1), ifnPlsync0, syncID(0), []byte{8, 0, 5, 0, 224, 0, 0, 81})),
		},
		{
			name: "IPv6 group",
			cfg:  DaemonConfig{State: Master, Interface: "plsync0", SyncID: 255, Group: netip.MustParseAddr("ff02::1:2")},
			want: nest(cat(state(1), ifnPlsync0, syncID(255),
				[]byte{20, 0, 6, 0, 0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2})),
		},
		{
			name: "15-byte interface name, the longest the kernel takes",
			cfg:  DaemonConfig{State: Backup, Interface: "abcdefghijklmno"},
			want: nest(cat(state(2),
				cat([]byte{20, 0, 2, 0}, []byte("abcdefghijklmno"), []byte{0}),
				syncID(0))),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fk := &fakeKernel{reply: ack}
			h := newFakeHandle(t, fk)
			if err := h.StartDaemon(tt.cfg); err != nil {
				t.Fatalf("StartDaemon: %v", err)
			}
			if len(fk.reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(fk.reqs))
			}
			r := fk.reqs[0]
			if r.family != testFamily || r.cmd != cmdNewDaemon || r.version != 1 {
				t.Errorf("family %#x cmd %d version %d, want %#x %d 1", r.family, r.cmd, r.version, testFamily, cmdNewDaemon)
			}
			if want := netlink.Request | netlink.Acknowledge; r.flags != want {
				t.Errorf("flags %v, want %v", r.flags, want)
			}
			if !bytes.Equal(r.data, tt.want) {
				t.Errorf("attributes\n got % x\nwant % x", r.data, tt.want)
			}
		})
	}
}

func TestStartDaemonValidation(t *testing.T) {
	ok := DaemonConfig{State: Master, Interface: "plsync0"}
	with := func(f func(*DaemonConfig)) DaemonConfig { c := ok; f(&c); return c }
	tests := []struct {
		name    string
		cfg     DaemonConfig
		wantErr string
		is      error
	}{
		{"no state", with(func(c *DaemonConfig) { c.State = 0 }), "must be Master or Backup", nil},
		{"both states", with(func(c *DaemonConfig) { c.State = Master | Backup }), "must be Master or Backup", nil},
		{"no interface", with(func(c *DaemonConfig) { c.Interface = "" }), "interface: empty", nil},
		{"interface of 16 bytes", with(func(c *DaemonConfig) { c.Interface = "abcdefghijklmnop" }), "at most 15", nil},
		{"NUL in interface", with(func(c *DaemonConfig) { c.Interface = "a\x00b" }), "NUL", nil},
		{"unicast IPv4 group", with(func(c *DaemonConfig) { c.Group = netip.MustParseAddr("10.0.0.1") }), "10.0.0.1", ErrNotMulticast},
		{"unicast IPv6 group", with(func(c *DaemonConfig) { c.Group = netip.MustParseAddr("2001:db8::1") }), "2001:db8::1", ErrNotMulticast},
		{"broadcast group", with(func(c *DaemonConfig) { c.Group = netip.MustParseAddr("255.255.255.255") }), "multicast", ErrNotMulticast},
		{"zoned group", with(func(c *DaemonConfig) { c.Group = netip.MustParseAddr("ff02::1%eth0") }), "zone", nil},
		{"backup maxlen below 1024", with(func(c *DaemonConfig) { c.State = Backup; c.MaxLen = 1023 }), "1024..65507", nil},
		{"master maxlen above IPv4 limit", with(func(c *DaemonConfig) { c.MaxLen = 65508 }), "1..65507", nil},
		{"master maxlen above IPv6 limit", with(func(c *DaemonConfig) {
			c.MaxLen = 65488
			c.Group = netip.MustParseAddr("ff02::1")
		}), "1..65487", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHandle(t, &fakeKernel{}) // any request fails the test
			err := h.StartDaemon(tt.cfg)
			if err == nil {
				t.Fatal("StartDaemon succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
		})
	}

	// The limits themselves are accepted.
	for _, c := range []DaemonConfig{
		with(func(c *DaemonConfig) { c.MaxLen = 1 }),
		with(func(c *DaemonConfig) { c.MaxLen = 65507 }),
		with(func(c *DaemonConfig) { c.State = Backup; c.MaxLen = 1024 }),
		with(func(c *DaemonConfig) { c.MaxLen = 65487; c.Group = netip.MustParseAddr("ff05::81") }),
		with(func(c *DaemonConfig) { c.Group = netip.MustParseAddr("239.255.255.255") }),
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%v): %v", c, err)
		}
	}
}

func TestDaemonErrnoMapping(t *testing.T) {
	master := DaemonConfig{State: Master, Interface: "plsync0"}
	tests := []struct {
		name     string
		op       func(h *Handle) error
		errno    unix.Errno
		sentinel error  // nil: none of ours
		context  string // must appear in the message
	}{
		{"start running", func(h *Handle) error { return h.StartDaemon(master) }, unix.EEXIST, ErrDaemonRunning, `start sync daemon master on "plsync0"`},
		{"start no interface", func(h *Handle) error { return h.StartDaemon(master) }, unix.ENODEV, ErrNoInterface, "ip link add"},
		{"start not permitted", func(h *Handle) error { return h.StartDaemon(master) }, unix.EPERM, ErrPermission, "CAP_NET_ADMIN"},
		{"start EINVAL with a valid config", func(h *Handle) error { return h.StartDaemon(master) }, unix.EINVAL, nil, "address family"},
		{"start other", func(h *Handle) error { return h.StartDaemon(master) }, unix.ENOMEM, nil, "start sync daemon"},
		{"stop not running", func(h *Handle) error { return h.StopDaemon(Backup) }, unix.ESRCH, ErrDaemonNotRunning, "stop backup sync daemon"},
		{"stop not permitted", func(h *Handle) error { return h.StopDaemon(Master) }, unix.EPERM, ErrPermission, "stop master"},
		{"list not permitted", func(h *Handle) error { _, err := h.Daemons(); return err }, unix.EPERM, ErrPermission, "list sync daemons"},
		{"info not permitted", func(h *Handle) error { _, _, err := h.Info(); return err }, unix.EPERM, ErrPermission, "get IPVS info"},
	}
	sentinels := []error{ErrDaemonRunning, ErrDaemonNotRunning, ErrNoInterface, ErrNotMulticast, ErrNoIPVS, ErrPermission}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHandle(t, &fakeKernel{reply: errno(tt.errno)})
			err := tt.op(h)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tt.errno) {
				t.Errorf("errno %v not reachable from %q", tt.errno, err)
			}
			var opErr *netlink.OpError
			if !errors.As(err, &opErr) {
				t.Errorf("*netlink.OpError not reachable from %q", err)
			}
			for _, s := range sentinels {
				if got, want := errors.Is(err, s), s == tt.sentinel; got != want {
					t.Errorf("errors.Is(%q, %q) = %v, want %v", err, s, got, want)
				}
			}
			if !strings.Contains(err.Error(), tt.context) {
				t.Errorf("error %q does not mention %q", err, tt.context)
			}
		})
	}
}

func TestStopDaemon(t *testing.T) {
	skipBigEndian(t)
	for _, tt := range []struct {
		state DaemonState
		want  []byte
	}{
		{Master, []byte{12, 0, 3, 0, 8, 0, 1, 0, 1, 0, 0, 0}},
		{Backup, []byte{12, 0, 3, 0, 8, 0, 1, 0, 2, 0, 0, 0}},
	} {
		t.Run(tt.state.String(), func(t *testing.T) {
			fk := &fakeKernel{reply: ack}
			h := newFakeHandle(t, fk)
			if err := h.StopDaemon(tt.state); err != nil {
				t.Fatalf("StopDaemon: %v", err)
			}
			r := fk.reqs[0]
			if r.cmd != cmdDelDaemon || r.flags != netlink.Request|netlink.Acknowledge {
				t.Errorf("cmd %d flags %v, want %d request|ack", r.cmd, r.flags, cmdDelDaemon)
			}
			if !bytes.Equal(r.data, tt.want) {
				t.Errorf("attributes\n got % x\nwant % x", r.data, tt.want)
			}
		})
	}
	h := newFakeHandle(t, &fakeKernel{})
	for _, s := range []DaemonState{0, 3} {
		if err := h.StopDaemon(s); err == nil {
			t.Errorf("StopDaemon(%v) succeeded", s)
		}
	}
}

// daemonReply builds a GET_DAEMON reply the way ip_vs_genl_fill_daemon
// does: STATE, MCAST_IFN, SYNC_ID, SYNC_MAXLEN, MCAST_PORT, MCAST_TTL, then
// the group, nested without NLA_F_NESTED.
func daemonReply(state uint32, ifn string, syncID uint32, maxLen, port uint16, ttl uint8, group []byte) genetlink.Message {
	ne := binary.NativeEndian
	inner := []netlink.Attribute{
		{Type: 1, Data: ne.AppendUint32(nil, state)},
		{Type: 2, Data: append([]byte(ifn), 0)},
		{Type: 3, Data: ne.AppendUint32(nil, syncID)},
		{Type: 4, Data: ne.AppendUint16(nil, maxLen)},
		{Type: 7, Data: ne.AppendUint16(nil, port)},
		{Type: 8, Data: []byte{ttl}},
	}
	switch len(group) {
	case 4:
		inner = append(inner, netlink.Attribute{Type: 5, Data: group})
	case 16:
		inner = append(inner, netlink.Attribute{Type: 6, Data: group})
	}
	b, err := netlink.MarshalAttributes(inner)
	if err != nil {
		panic(err)
	}
	outer, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: 3, Data: b}})
	if err != nil {
		panic(err)
	}
	return genetlink.Message{Header: genetlink.Header{Command: cmdNewDaemon, Version: 1}, Data: outer}
}

// rawDaemonReply nests arbitrary attributes, for malformed replies.
func rawDaemonReply(inner ...netlink.Attribute) genetlink.Message {
	b, err := netlink.MarshalAttributes(inner)
	if err != nil {
		panic(err)
	}
	outer, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: 3, Data: b}})
	if err != nil {
		panic(err)
	}
	return genetlink.Message{Header: genetlink.Header{Command: cmdNewDaemon, Version: 1}, Data: outer}
}

func TestDaemonsParse(t *testing.T) {
	v6 := netip.MustParseAddr("ff02::8848").As16()
	nestedFlag := daemonReply(2, "plsync0", 0, 1452, 9000, 1, []byte{239, 0, 0, 1})
	nestedFlag.Data[2], nestedFlag.Data[3] = 3, 0x80 // type 3 | NLA_F_NESTED

	tests := []struct {
		name    string
		replies []genetlink.Message
		want    []DaemonConfig
		wantErr string
	}{
		{name: "none running", replies: nil, want: nil},
		{
			name: "master and backup",
			replies: []genetlink.Message{
				daemonReply(1, "plsync0", 5, 1472, 8848, 1, []byte{224, 0, 0, 81}),
				daemonReply(2, "plsync0", 5, 1472, 8850, 1, []byte{224, 0, 0, 81}),
			},
			want: []DaemonConfig{
				{State: Master, Interface: "plsync0", SyncID: 5, MaxLen: 1472, Group: netip.MustParseAddr("224.0.0.81"), Port: 8848, TTL: 1},
				{State: Backup, Interface: "plsync0", SyncID: 5, MaxLen: 1472, Group: netip.MustParseAddr("224.0.0.81"), Port: 8850, TTL: 1},
			},
		},
		{
			name:    "IPv6 group",
			replies: []genetlink.Message{daemonReply(1, "eth1", 0, 1452, 8848, 4, v6[:])},
			want:    []DaemonConfig{{State: Master, Interface: "eth1", MaxLen: 1452, Group: netip.AddrFrom16(v6), Port: 8848, TTL: 4}},
		},
		{
			name:    "no group attribute (an older kernel)",
			replies: []genetlink.Message{daemonReply(1, "eth1", 0, 1472, 8848, 1, nil)},
			want:    []DaemonConfig{{State: Master, Interface: "eth1", MaxLen: 1472, Port: 8848, TTL: 1}},
		},
		{
			name:    "nest flagged NLA_F_NESTED",
			replies: []genetlink.Message{nestedFlag},
			want:    []DaemonConfig{{State: Backup, Interface: "plsync0", MaxLen: 1452, Group: netip.MustParseAddr("239.0.0.1"), Port: 9000, TTL: 1}},
		},
		{
			name: "unknown attributes and commands are skipped",
			replies: func() []genetlink.Message {
				m := daemonReply(1, "eth1", 0, 1472, 8848, 1, []byte{224, 0, 0, 81})
				extra, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: 42, Data: []byte{1, 2, 3, 4}}})
				m.Data = append(extra, m.Data...)
				other := genetlink.Message{Header: genetlink.Header{Command: 99}}
				return []genetlink.Message{other, m}
			}(),
			want: []DaemonConfig{{State: Master, Interface: "eth1", MaxLen: 1472, Group: netip.MustParseAddr("224.0.0.81"), Port: 8848, TTL: 1}},
		},
		{
			name: "IPv4 group of 3 bytes",
			replies: []genetlink.Message{rawDaemonReply(
				netlink.Attribute{Type: 1, Data: []byte{1, 0, 0, 0}},
				netlink.Attribute{Type: 2, Data: []byte("x\x00")},
				netlink.Attribute{Type: 5, Data: []byte{224, 0, 0}},
			)},
			wantErr: "3 bytes",
		},
		{
			name:    "sync id beyond 8 bits",
			replies: []genetlink.Message{daemonReply(1, "eth1", 300, 1472, 8848, 1, nil)},
			wantErr: "sync id 300",
		},
		{
			name:    "no daemon nest",
			replies: []genetlink.Message{{Header: genetlink.Header{Command: cmdNewDaemon, Version: 1}}},
			wantErr: "no daemon attribute",
		},
		{
			name: "truncated u32",
			replies: []genetlink.Message{rawDaemonReply(
				netlink.Attribute{Type: 1, Data: []byte{1, 0}},
				netlink.Attribute{Type: 2, Data: []byte("x\x00")},
			)},
			wantErr: "reply 0",
		},
		{
			name:    "no state",
			replies: []genetlink.Message{rawDaemonReply(netlink.Attribute{Type: 2, Data: []byte("x\x00")})},
			wantErr: "without state",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fk := &fakeKernel{reply: func(request) ([]genetlink.Message, error) { return tt.replies, nil }}
			h := newFakeHandle(t, fk)
			got, err := h.Daemons()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Daemons: %v", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			r := fk.reqs[0]
			if r.cmd != cmdGetDaemon || r.flags != netlink.Request|netlink.Dump || len(r.data) != 0 {
				t.Errorf("request cmd %d flags %v data % x, want %d request|dump and no data", r.cmd, r.flags, r.data, cmdGetDaemon)
			}
		})
	}
}

// What StartDaemon sends, parsed back the way Daemons parses the kernel's
// answer, gives the same config: the two directions agree on every type.
func TestDaemonAttrsRoundTrip(t *testing.T) {
	for _, c := range []DaemonConfig{
		{State: Master, Interface: "plsync0", SyncID: 9, MaxLen: 1400, Group: netip.MustParseAddr("239.77.0.1"), Port: 18848, TTL: 3},
		{State: Backup, Interface: "x", SyncID: 255, MaxLen: 65487, Group: netip.MustParseAddr("ff15::77"), Port: 1, TTL: 255},
	} {
		b, err := daemonAttrs(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseDaemonMessage(b)
		if err != nil {
			t.Fatalf("parse %v: %v", c, err)
		}
		if got != c {
			t.Errorf("round trip\n got %+v\nwant %+v", got, c)
		}
	}
}

func TestDaemonConfigMatches(t *testing.T) {
	running := DaemonConfig{State: Master, Interface: "plsync0", SyncID: 1, MaxLen: 1472,
		Group: netip.MustParseAddr("224.0.0.81"), Port: 8848, TTL: 1}
	tests := []struct {
		want DaemonConfig
		ok   bool
	}{
		{DaemonConfig{State: Master, Interface: "plsync0", SyncID: 1}, true},
		{DaemonConfig{State: Master, Interface: "plsync0", SyncID: 1, MaxLen: 1472, Group: netip.MustParseAddr("::ffff:224.0.0.81"), Port: 8848, TTL: 1}, true},
		{DaemonConfig{State: Backup, Interface: "plsync0", SyncID: 1}, false},
		{DaemonConfig{State: Master, Interface: "plsync1", SyncID: 1}, false},
		{DaemonConfig{State: Master, Interface: "plsync0", SyncID: 2}, false},
		{DaemonConfig{State: Master, Interface: "plsync0", SyncID: 1, MaxLen: 1000}, false},
		{DaemonConfig{State: Master, Interface: "plsync0", SyncID: 1, Group: netip.MustParseAddr("239.0.0.1")}, false},
		{DaemonConfig{State: Master, Interface: "plsync0", SyncID: 1, Port: 8849}, false},
		{DaemonConfig{State: Master, Interface: "plsync0", SyncID: 1, TTL: 2}, false},
	}
	for _, tt := range tests {
		if got := tt.want.Matches(running); got != tt.ok {
			t.Errorf("%+v.Matches(running) = %v, want %v", tt.want, got, tt.ok)
		}
	}
}

func TestInfo(t *testing.T) {
	fk := &fakeKernel{reply: func(request) ([]genetlink.Message, error) {
		ne := binary.NativeEndian
		b, _ := netlink.MarshalAttributes([]netlink.Attribute{
			{Type: 1, Data: ne.AppendUint32(nil, 0x010201)},
			{Type: 2, Data: ne.AppendUint32(nil, 4096)},
		})
		return []genetlink.Message{{Header: genetlink.Header{Command: cmdSetInfo, Version: 1}, Data: b}}, nil
	}}
	h := newFakeHandle(t, fk)
	v, size, err := h.Info()
	if err != nil {
		t.Fatal(err)
	}
	if v != "1.2.1" || size != 4096 {
		t.Errorf("Info = %q, %d; want 1.2.1, 4096", v, size)
	}
	r := fk.reqs[0]
	if r.cmd != cmdGetInfo || r.flags != netlink.Request || len(r.data) != 0 {
		t.Errorf("request cmd %d flags %v data % x, want %d request and no data", r.cmd, r.flags, r.data, cmdGetInfo)
	}

	h = newFakeHandle(t, &fakeKernel{reply: func(request) ([]genetlink.Message, error) {
		return []genetlink.Message{{Header: genetlink.Header{Command: cmdSetInfo}}}, nil
	}})
	if _, _, err := h.Info(); err == nil {
		t.Error("Info accepted a reply without attributes")
	}
}

func TestNoIPVSFamily(t *testing.T) {
	fn := func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		if nreq.Header.Type != unix.GENL_ID_CTRL {
			t.Errorf("request to family %d before the family was found", nreq.Header.Type)
		}
		return nil, genltest.Error(int(unix.ENOENT))
	}
	h := &Handle{nsPath: "/run/netns/d1"}
	err := h.attach(genltest.Dial(fn))
	if !errors.Is(err, ErrNoIPVS) || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("attach: %v, want ErrNoIPVS wrapping ENOENT", err)
	}
	for _, s := range []string{"modprobe ip_vs", "/run/netns/d1"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
	if h.genl != nil {
		t.Error("handle kept the connection")
	}
}

func TestStringers(t *testing.T) {
	for _, tt := range []struct {
		got  fmt.Stringer
		want string
	}{
		{Master, "master"},
		{Backup, "backup"},
		{DaemonState(7), "DaemonState(7)"},
		{DaemonConfig{State: Backup, Interface: "plsync0", SyncID: 3}, `backup on "plsync0" syncid 3`},
		{DaemonConfig{State: Master, Interface: "d", Group: netip.MustParseAddr("ff02::1"), Port: 9, MaxLen: 1400, TTL: 2},
			`master on "d" syncid 0 group ff02::1 port 9 maxlen 1400 ttl 2`},
	} {
		if s := tt.got.String(); s != tt.want {
			t.Errorf("String() = %q, want %q", s, tt.want)
		}
	}
}
