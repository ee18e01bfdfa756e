package synclink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestLinkConfigValidate(t *testing.T) {
	if err := (LinkConfig{}).WithDefaults().Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	bad := map[string]func(*LinkConfig){
		"link name":  func(c *LinkConfig) { c.Name = "a-very-long-interface-name" },
		"link addr":  func(c *LinkConfig) { c.Addr = netip.MustParsePrefix("fd00::1/128") },
		"IPv6 addr":  func(c *LinkConfig) { c.Addr6 = netip.MustParsePrefix("10.0.0.1/32") },
		"group 10.":  func(c *LinkConfig) { c.Group = netip.MustParseAddr("10.0.0.1") },
		"group6 fd0": func(c *LinkConfig) { c.Group6 = netip.MustParseAddr("fd00::1") },
		"ports":      func(c *LinkConfig) { c.BackupPort = c.MasterPort },
		"MTU":        func(c *LinkConfig) { c.MTU = 100 },
	}
	for want, mod := range bad {
		c := LinkConfig{}.WithDefaults()
		mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), strings.Fields(want)[0]) {
			t.Errorf("%s: Validate() = %v", want, err)
		}
	}
}

func TestSetupLink(t *testing.T) {
	ns := newNetns(t)
	kind := testKind(t, ns)
	var l *Link
	ns.must(t, func() error {
		var err error
		l, err = SetupLink(LinkConfig{Kind: kind, Addr6: netip.MustParsePrefix("fd00:88::48/128")})
		return err
	})
	ns.must(t, func() error {
		link, err := netlink.LinkByName(DefaultName)
		if err != nil {
			return err
		}
		a := link.Attrs()
		if link.Type() != kind || a.Flags&net.FlagUp == 0 || a.Flags&net.FlagMulticast == 0 || a.MTU != DefaultMTU || a.Index != l.Index() {
			return fmt.Errorf("link is %s flags %v mtu %d index %d", link.Type(), a.Flags, a.MTU, a.Index)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var found4, found6 bool
		for _, ad := range addrs {
			switch ad.IPNet.String() {
			case "169.254.88.48/32":
				found4 = ad.Scope == unix.RT_SCOPE_UNIVERSE
			case "fd00:88::48/128":
				found6 = true
			}
		}
		if !found4 || !found6 {
			return fmt.Errorf("addresses %v lack 169.254.88.48/32 scope global or fd00:88::48/128", addrs)
		}
		return nil
	})

	// Idempotent: a second setup with the same settings adopts the link,
	// and repairs a link that went down.
	ns.must(t, func() error {
		link, _ := netlink.LinkByName(DefaultName)
		if err := netlink.LinkSetDown(link); err != nil {
			return err
		}
		l2, err := SetupLink(LinkConfig{Kind: kind, Addr6: netip.MustParsePrefix("fd00:88::48/128")})
		if err != nil {
			return fmt.Errorf("second SetupLink: %w", err)
		}
		if l2.Index() != l.Index() {
			return fmt.Errorf("second SetupLink made a new link %d, had %d", l2.Index(), l.Index())
		}
		link, _ = netlink.LinkByName(DefaultName)
		if link.Attrs().Flags&net.FlagUp == 0 {
			return errors.New("second SetupLink did not bring the link up")
		}
		return nil
	})

	// Different settings on an existing link are refused with the fix.
	err := ns.do(func() error {
		_, err := SetupLink(LinkConfig{Kind: kind, Addr: netip.MustParsePrefix("169.254.1.1/32")})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "ip addr del 169.254.88.48/32 dev plsync0") {
		t.Errorf("SetupLink over a different address: err = %v, want the fix", err)
	}
	err = ns.do(func() error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "notdummy"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "notdummy-peer"}); err != nil {
			return fmt.Errorf("veth: %w", err)
		}
		_, err := SetupLink(LinkConfig{Kind: kind, Name: "notdummy"})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "is a veth, not a "+kind) {
		t.Errorf("SetupLink over a veth: err = %v, want refusal", err)
	}

	ns.must(t, func() error {
		if err := l.Remove(); err != nil {
			return err
		}
		if _, err := netlink.LinkByName(DefaultName); err == nil {
			return errors.New("link still there after Remove")
		}
		if err := l.Remove(); err != nil {
			return fmt.Errorf("second Remove: %w", err)
		}
		return nil
	})
}

// sendAll writes the payloads through c, one datagram each.
func sendAll(c io.Writer, payloads [][]byte) error {
	for _, p := range payloads {
		if _, err := c.Write(p); err != nil {
			return err
		}
	}
	return nil
}

func makePayloads(n, size int, tag string) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		p := make([]byte, size)
		for j := range p {
			p[j] = byte(i + j)
		}
		copy(p, fmt.Sprintf("%s-%04d", tag, i))
		out[i] = p
	}
	return out
}

// readAllFrames reads until nothing arrives for quiet.
func readAllFrames(r FrameReader, quiet time.Duration) ([]string, error) {
	var got []string
	buf := make([]byte, MaxFrame)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), quiet)
		n, err := r.ReadFrame(ctx, buf)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, string(buf[:n]))
	}
}

func udpFrames(c *net.UDPConn, quiet time.Duration) ([]string, error) {
	var got []string
	buf := make([]byte, MaxFrame)
	for {
		if err := c.SetReadDeadline(time.Now().Add(quiet)); err != nil {
			return got, err
		}
		n, err := c.Read(buf)
		if isTimeout(err) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, string(buf[:n]))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func checkExactlyOnce(t *testing.T, what string, got []string, sent [][]byte) {
	t.Helper()
	if len(got) != len(sent) {
		t.Errorf("%s: got %d datagrams, sent %d", what, len(got), len(sent))
	}
	for i := 0; i < len(got) && i < len(sent); i++ {
		if got[i] != string(sent[i]) {
			t.Errorf("%s: datagram %d differs: got %.12q..., want %.12q...", what, i, got[i], sent[i])
			return
		}
	}
}

func families(t *testing.T, f func(t *testing.T, group netip.Addr)) {
	t.Run("IPv4", func(t *testing.T) { f(t, DefaultGroup) })
	t.Run("IPv6", func(t *testing.T) { f(t, DefaultGroup6) })
}

// The kernel master sends with loopback off; the Tap must deliver each of
// its datagrams once, with loopback on too, and nothing else.
func TestTapSeesKernelMasterOnce(t *testing.T) {
	families(t, func(t *testing.T, group netip.Addr) {
		ns := newNetns(t)
		l := setupLinkIn(t, ns, LinkConfig{})
		snif := newSniffer(t, ns, group)
		port := l.Config().MasterPort
		var tap *Tap
		ns.must(t, func() error {
			var err error
			tap, err = OpenTap(l.Name(), group, port)
			return err
		})
		defer tap.Close()

		for _, loop := range []bool{false, true} {
			master, err := kernelMaster(ns, l, group, port, loop)
			if err != nil {
				t.Fatalf("kernel master imitation: %v", err)
			}
			sent := makePayloads(100, 1400, fmt.Sprintf("loop=%v", loop))
			if err := sendAll(master, sent); err != nil {
				t.Fatal(err)
			}
			// Neighbours the Tap must not pick up: another port, another
			// group.
			other, err := kernelMaster(ns, l, group, port+1, false)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := other.Write([]byte("wrong port")); err != nil {
				t.Fatal(err)
			}
			master.Close()
			other.Close()
			got, err := readAllFrames(tap, 300*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			checkExactlyOnce(t, fmt.Sprintf("tap, sender loop=%v", loop), got, sent)
		}
		st := tap.Stats()
		if st.Frames != 200 || st.Malformed != 0 || st.Fragments != 0 || st.Ignored != 0 || st.KernelDrops != 0 {
			t.Errorf("stats %+v, want 200 frames and nothing else", st)
		}

		seen, err := snif.drain(200 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range seen {
			if s.ifindex != l.Index() || s.pkttype != unix.PACKET_OUTGOING {
				t.Errorf("frame %.12q on ifindex %d pkttype %d; want only outgoing on the sync link %d", s.payload, s.ifindex, s.pkttype, l.Index())
			}
		}
		if len(seen) != 202 {
			t.Errorf("sniffer saw %d frames, want 202 (2 x (100 + 1 to the wrong port))", len(seen))
		}
	})
}

// The Injector's datagrams must reach a kernel-backup-like listener once
// each, and appear nowhere else, not even as frames on the sync link.
func TestInjectorReachesKernelBackupOnce(t *testing.T) {
	families(t, func(t *testing.T, group netip.Addr) {
		ns := newNetns(t)
		l := setupLinkIn(t, ns, LinkConfig{})
		snif := newSniffer(t, ns, group)
		port := l.Config().BackupPort
		backup, err := kernelBackup(ns, l, group, port)
		if err != nil {
			t.Fatalf("kernel backup imitation: %v", err)
		}
		defer backup.Close()
		var (
			inj *Injector
			tap *Tap
		)
		ns.must(t, func() error {
			var err error
			if tap, err = OpenTap(l.Name(), group, port); err != nil {
				return err
			}
			inj, err = OpenInjector(l.Name(), group, port)
			return err
		})
		defer tap.Close()
		defer inj.Close()
		if inj.Dest() != netip.AddrPortFrom(group, port) {
			t.Errorf("Dest() = %v", inj.Dest())
		}

		sent := makePayloads(100, 1400, "inject")
		for _, p := range sent {
			if err := inj.WriteFrame(p); err != nil {
				t.Fatal(err)
			}
		}
		got, err := udpFrames(backup, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		checkExactlyOnce(t, "backup listener", got, sent)

		echo, err := readAllFrames(tap, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(echo) != 0 {
			t.Errorf("tap on the backup port saw %d injected frames, want 0 (TTL 0 must stop them before the device)", len(echo))
		}
		seen, err := snif.drain(200 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != 0 {
			t.Errorf("injected datagrams appeared as %d frames, first on ifindex %d pkttype %d; want none", len(seen), seen[0].ifindex, seen[0].pkttype)
		}

		if err := inj.WriteFrame(make([]byte, MaxFrame+1)); err == nil {
			t.Error("oversized WriteFrame succeeded")
		}
	})
}

// Without a listener the kernel skips the multicast output path and its
// TTL-0 check: the injected frames reach the link device (and only it).
func TestInjectorWithoutListener(t *testing.T) {
	families(t, func(t *testing.T, group netip.Addr) {
		ns := newNetns(t)
		l := setupLinkIn(t, ns, LinkConfig{})
		snif := newSniffer(t, ns, group)
		var inj *Injector
		ns.must(t, func() error {
			var err error
			inj, err = OpenInjector(l.Name(), group, l.Config().BackupPort)
			return err
		})
		defer inj.Close()
		for i := 0; i < 10; i++ {
			if err := inj.WriteFrame([]byte("nobody listens")); err != nil {
				t.Fatal(err)
			}
		}
		seen, err := snif.drain(200 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range seen {
			if s.ifindex != l.Index() || s.pkttype != unix.PACKET_OUTGOING {
				t.Errorf("injected frame on ifindex %d pkttype %d, want outgoing on the sync link %d only", s.ifindex, s.pkttype, l.Index())
			}
		}
		t.Logf("%s: %d of 10 frames reached the link device", group, len(seen))
	})
}

func TestTapCancelAndClose(t *testing.T) {
	ns := newNetns(t)
	l := setupLinkIn(t, ns, LinkConfig{})
	var tap *Tap
	ns.must(t, func() error {
		var err error
		tap, err = OpenTap(l.Name(), DefaultGroup, l.Config().MasterPort)
		return err
	})
	buf := make([]byte, MaxFrame)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := tap.ReadFrame(ctx, buf); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("cancel did not unblock ReadFrame")
	}

	go func() { _, err := tap.ReadFrame(context.Background(), buf); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock ReadFrame")
	}
	if _, err := tap.ReadFrame(context.Background(), buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadFrame after Close: %v, want net.ErrClosed", err)
	}
	if err := tap.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_ = tap.Stats()
}

func TestTapShortBufferAndFragments(t *testing.T) {
	ns := newNetns(t)
	// A 1500-byte MTU, as the kernel default, to provoke fragmentation.
	l := setupLinkIn(t, ns, LinkConfig{MTU: 1500})
	port := l.Config().MasterPort
	var tap *Tap
	ns.must(t, func() error {
		var err error
		tap, err = OpenTap(l.Name(), DefaultGroup, port)
		return err
	})
	defer tap.Close()
	master, err := kernelMaster(ns, l, DefaultGroup, port, false)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	for _, p := range [][]byte{make([]byte, 100), make([]byte, 3000), []byte("after")} {
		if _, err := master.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	small := make([]byte, 10)
	if _, err := tap.ReadFrame(ctx, small); !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("100 bytes into 10: %v, want io.ErrShortBuffer", err)
	}
	buf := make([]byte, MaxFrame)
	n, err := tap.ReadFrame(ctx, buf)
	if err != nil || string(buf[:n]) != "after" {
		t.Fatalf("next frame: %q, %v; want the one after the fragments", buf[:n], err)
	}
	st := tap.Stats()
	if st.Fragments != 3 || st.Frames != 2 {
		t.Errorf("stats %+v, want 2 frames and 3 fragments (3000 bytes over MTU 1500)", st)
	}
}

func TestTapLinkDown(t *testing.T) {
	ns := newNetns(t)
	l := setupLinkIn(t, ns, LinkConfig{})
	var tap *Tap
	ns.must(t, func() error {
		var err error
		tap, err = OpenTap(l.Name(), DefaultGroup, l.Config().MasterPort)
		return err
	})
	defer tap.Close()
	setLink := func(up bool) {
		ns.must(t, func() error {
			link, err := netlink.LinkByName(l.Name())
			if err != nil {
				return err
			}
			if up {
				return netlink.LinkSetUp(link)
			}
			return netlink.LinkSetDown(link)
		})
	}
	read := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		buf := make([]byte, MaxFrame)
		n, err := tap.ReadFrame(ctx, buf)
		return string(buf[:n]), err
	}

	setLink(false)
	if _, err := read(); !errors.Is(err, unix.ENETDOWN) {
		t.Fatalf("after link down: %v, want ENETDOWN", err)
	}
	setLink(true)
	master, err := kernelMaster(ns, l, DefaultGroup, l.Config().MasterPort, false)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if _, err := master.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	if got, err := read(); err != nil || got != "back" {
		t.Fatalf("after link up: %q, %v; want the next frame", got, err)
	}
	ns.must(t, l.Remove)
	if _, err := read(); !errors.Is(err, unix.ENETDOWN) {
		t.Fatalf("after link removal: %v, want ENETDOWN", err)
	}
}

func TestInjectorRefusesRealDevices(t *testing.T) {
	ns := newNetns(t)
	err := ns.do(func() error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "veth-a"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "veth-b"}); err != nil {
			return fmt.Errorf("veth: %w", err)
		}
		_, err := OpenInjector("veth-a", DefaultGroup, DefaultBackupPort)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "refusing veth-a, a veth device") {
		t.Errorf("OpenInjector on a veth: %v, want refusal", err)
	}
	err = ns.do(func() error {
		_, err := OpenTap("lo", DefaultGroup, DefaultMasterPort)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "Ethernet frames only") {
		t.Errorf("OpenTap on lo: %v, want refusal", err)
	}
}
