package synclink

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/mdlayher/socket"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// tapReadBuffer is the socket receive buffer a Tap asks for. The kernel
// master sends bursts (a message per 50 packets of every busy connection,
// plus a queue flush each second), and a frame the Tap has no room for is
// lost for good: the kernel never resends.
const tapReadBuffer = 4 << 20

// Tap reads the sync messages the local kernel master sends on the link.
//
// It accepts only frames the kernel captured as PACKET_OUTGOING on the
// link. That is what the master emits, and it is delivered exactly once:
// the looped-back copy a sender with multicast loopback on would also
// produce (PACKET_LOOPBACK) never reaches packet sockets, and a dummy
// device receives nothing else. Frames arriving from outside (on a veth,
// say) are refused, so a Tap cannot be fed by the network.
type Tap struct {
	conn    *socket.Conn
	ifindex int
	spec    filterSpec
	closed  atomic.Bool

	readMu sync.Mutex // guards buf
	buf    []byte

	frames, malformed, fragments, ignored atomic.Uint64

	statsMu     sync.Mutex
	kernelDrops uint64
}

// TapStats counts what a Tap saw since it was opened.
type TapStats struct {
	// Frames is the number of messages ReadFrame returned (or tried to
	// return into a too-small buffer).
	Frames uint64
	// Malformed counts frames that passed the kernel filter but whose
	// headers did not add up, or that were larger than the Tap's buffer.
	Malformed uint64
	// Fragments counts IP fragments to the group. Any is a configuration
	// error: the master's SYNC_MAXLEN exceeds the link MTU minus headers.
	Fragments uint64
	// Ignored counts well-formed frames not meant for the Tap. The kernel
	// filter should keep it at 0.
	Ignored uint64
	// KernelDrops counts frames the kernel dropped because the Tap's
	// receive queue was full: messages lost because syncd read too slowly.
	KernelDrops uint64
}

var _ FrameReader = (*Tap)(nil)

// OpenTap opens a Tap for UDP datagrams to group:port on the interface
// ifname, which must be an Ethernet-type device such as a dummy.
func OpenTap(ifname string, group netip.Addr, port uint16) (*Tap, error) {
	return OpenTapPorts(ifname, group, port, 1)
}

// OpenTapPorts is OpenTap for the destination ports port to port+count-1:
// with the sysctl net.ipv4.vs.sync_ports = N the kernel runs N master
// threads, thread i sending to port+i.
func OpenTapPorts(ifname string, group netip.Addr, port uint16, count int) (*Tap, error) {
	if !group.IsMulticast() || group.Zone() != "" {
		return nil, fmt.Errorf("synclink: tap: group %s is not a multicast address", group)
	}
	if port == 0 || count < 1 || int(port)+count-1 > 65535 {
		return nil, fmt.Errorf("synclink: tap: bad port range %d+%d", port, count)
	}
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("synclink: tap: interface %s: %w (call SetupLink first)", ifname, err)
	}
	if et := link.Attrs().EncapType; et != "ether" {
		return nil, fmt.Errorf("synclink: tap: interface %s has link type %q; the tap parses Ethernet frames only (use a dummy device)", ifname, et)
	}
	spec := filterSpec{group: group.Unmap(), port: port, count: count}
	insns, err := tapFilter(spec, true)
	if err != nil {
		return nil, fmt.Errorf("synclink: tap: build filter: %w", err)
	}
	prog, err := bpf.Assemble(insns)
	if err != nil {
		return nil, fmt.Errorf("synclink: tap: assemble filter: %w", err)
	}

	// Protocol 0 receives nothing until bind, so no frame from another
	// interface, or unfiltered, can slip in before the filter and binding
	// are in place.
	conn, err := socket.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0, "synclink-tap", nil)
	if err != nil {
		return nil, fmt.Errorf("synclink: tap: open packet socket: %w", explain(err))
	}
	if err := conn.SetBPF(prog); err != nil {
		conn.Close()
		return nil, fmt.Errorf("synclink: tap: attach filter: %w", err)
	}
	if err := conn.SetReadBuffer(tapReadBuffer); err != nil {
		conn.Close()
		return nil, fmt.Errorf("synclink: tap: set receive buffer: %w", err)
	}
	ifindex := link.Attrs().Index
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := conn.Bind(sa); err != nil {
		conn.Close()
		return nil, fmt.Errorf("synclink: tap: bind to %s: %w", ifname, explain(err))
	}
	return &Tap{
		conn:    conn,
		ifindex: ifindex,
		spec:    spec,
		// Room for the largest IP datagram plus its Ethernet header; a
		// bigger frame is detected through MSG_TRUNC.
		buf: make([]byte, etherHdrLen+65535+1),
	}, nil
}

// ReadFrame returns the UDP payload of the next frame the kernel master
// sent. Frames that are not usable are counted in Stats and skipped, not
// reported. Cancelling ctx or closing the Tap unblocks it; after Close it
// returns an error wrapping net.ErrClosed. Calls are serialised.
//
// An error wrapping syscall.ENETDOWN is returned once when the link goes
// down or is deleted. After down and up again the Tap keeps working; after
// a deletion it would wait forever, since a packet socket does not follow a
// new interface of the same name: close it and open a new one after
// SetupLink.
func (t *Tap) ReadFrame(ctx context.Context, buf []byte) (int, error) {
	t.readMu.Lock()
	defer t.readMu.Unlock()
	for {
		n, from, err := t.conn.Recvfrom(ctx, t.buf, unix.MSG_TRUNC)
		if err != nil {
			return 0, t.readError(ctx, err)
		}
		sll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || sll.Pkttype != unix.PACKET_OUTGOING || sll.Ifindex != t.ifindex {
			t.ignored.Add(1)
			continue
		}
		if n > len(t.buf) {
			t.malformed.Add(1)
			continue
		}
		payload, v := parseFrame(t.buf[:n], t.spec)
		switch v {
		case frameOK:
			t.frames.Add(1)
			if len(payload) > len(buf) {
				return 0, fmt.Errorf("synclink: tap: %d-byte message into %d-byte buffer: %w", len(payload), len(buf), io.ErrShortBuffer)
			}
			return copy(buf, payload), nil
		case frameFragment:
			t.fragments.Add(1)
		case frameMalformed:
			t.malformed.Add(1)
		default:
			t.ignored.Add(1)
		}
	}
}

func (t *Tap) readError(ctx context.Context, err error) error {
	switch {
	case t.closed.Load():
		return fmt.Errorf("synclink: tap read: %w", net.ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("synclink: tap read: %w", ctx.Err())
	}
	return fmt.Errorf("synclink: tap read: %w", err)
}

// Stats returns the counters. KernelDrops is fetched from the kernel on
// each call (PACKET_STATISTICS, which resets on read) and accumulated.
func (t *Tap) Stats() TapStats {
	t.statsMu.Lock()
	defer t.statsMu.Unlock()
	if !t.closed.Load() {
		if st, err := t.conn.GetsockoptTpacketStats(unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			t.kernelDrops += uint64(st.Drops)
		}
	}
	return TapStats{
		Frames:      t.frames.Load(),
		Malformed:   t.malformed.Load(),
		Fragments:   t.fragments.Load(),
		Ignored:     t.ignored.Load(),
		KernelDrops: t.kernelDrops,
	}
}

// Close closes the socket and unblocks a pending ReadFrame. Closing twice
// is not an error.
func (t *Tap) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := t.conn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("synclink: tap close: %w", err)
	}
	return nil
}

// htons converts to the network byte order sockaddr_ll wants for its
// protocol, whatever the host's byte order.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
