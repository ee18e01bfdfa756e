package filter

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// listener counts the UDP datagrams a director's own stack delivers on
// listenPort, by client.
type listener struct {
	mu   sync.Mutex
	got  map[netip.AddrPort]int
	pcs  []net.PacketConn
	done sync.WaitGroup
}

func listen(t *testing.T, ns *testNS) *listener {
	t.Helper()
	l := &listener{got: make(map[netip.AddrPort]int)}
	err := ns.in(func() error {
		for _, nw := range []string{"udp4", "udp6"} {
			pc, err := net.ListenPacket(nw, net.JoinHostPort("", "9999"))
			if err != nil {
				return err
			}
			l.pcs = append(l.pcs, pc)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", ns.name, err)
	}
	for _, pc := range l.pcs {
		l.done.Add(1)
		go func(pc net.PacketConn) {
			defer l.done.Done()
			buf := make([]byte, 65536)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_ = n
				ap := from.(*net.UDPAddr).AddrPort()
				l.mu.Lock()
				l.got[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())]++
				l.mu.Unlock()
			}
		}(pc)
	}
	t.Cleanup(l.close)
	return l
}

func (l *listener) close() {
	for _, pc := range l.pcs {
		pc.Close()
	}
	l.done.Wait()
}

func (l *listener) count(c netip.AddrPort) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.got[c]
}

// TestFragments sends fragmented UDP datagrams to the VIP and checks that
// the owner's socket receives each datagram whole and no other director's
// socket receives anything: non-first fragments pass everywhere, but only
// the owner also has the first one.
func TestFragments(t *testing.T) {
	requireRoot(t)
	l := newLAN(t, 3)
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	cfg := Config{VIPs: []netip.Addr{vip4, vip6}, Sense: SenseAddrPort, Seed: r.Uint32() | 1, Buckets: testBuckets}
	var lis []*listener
	for i, d := range l.dirs {
		f := newFilter(t, cfg, d.fd)
		if err := f.Apply(context.Background(), ownerships(3, func(b uint32) int { return int(b) % 3 })[i]); err != nil {
			t.Fatal(err)
		}
		lis = append(lis, listen(t, d))
	}
	h := cfg.Hasher()
	payload := make([]byte, 1600)
	for i := range payload {
		payload[i] = byte(i)
	}
	const perFamily = 60
	var clients []netip.AddrPort
	for i := 0; i < 2*perFamily; i++ {
		var a netip.Addr
		vip := vip4
		if i < perFamily {
			a = netip.AddrFrom4([4]byte{10, 1, byte(r.Uint32()), byte(r.Uint32())})
		} else {
			b := netip.MustParseAddr("fd00:1::").As16()
			b[14], b[15] = byte(r.Uint32()), byte(r.Uint32())
			a, vip = netip.AddrFrom16(b), vip6
		}
		c := netip.AddrPortFrom(a, uint16(1024+r.Uint32N(60000)))
		clients = append(clients, c)
		dst := netip.AddrPortFrom(vip, listenPort)
		dgram := udpDatagram(c, dst, payload)
		const cut = 1232 // a multiple of 8, above IPv6's minimum MTU
		first := pkt{proto: ProtoUDP, src: c, dst: dst, seq: r.Uint32(), more: true, rawL4: dgram[:cut]}
		rest := first
		rest.more, rest.fragOff, rest.rawL4 = false, cut/8, dgram[cut:]
		order := []pkt{first, rest}
		if i%2 == 1 {
			order = []pkt{rest, first} // reassembly does not care; neither may the filter
		}
		for _, p := range order {
			if err := l.snd.send(sharedMAC, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		bad := 0
		for _, c := range clients {
			owner := int(h.ClientBucket(ProtoUDP, c)) % 3
			for d, li := range lis {
				want := 0
				if d == owner {
					want = 1
				}
				if li.count(c) != want {
					bad++
					if time.Now().After(deadline) {
						t.Errorf("datagram from %v (bucket %d, owner %d): director %d received %d", c, h.ClientBucket(ProtoUDP, c), owner, d, li.count(c))
					}
				}
			}
		}
		if bad == 0 {
			t.Logf("%d fragmented datagrams (IPv4 and IPv6), each delivered whole by its owner only", len(clients))
			return
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
