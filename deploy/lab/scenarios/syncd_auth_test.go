package scenarios

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/daemon"
	"github.com/peerlvs/peerlvs/syncd/peer"
	"github.com/peerlvs/peerlvs/syncd/table"
)

type authResult struct {
	Captured  int               `json:"captured"`
	Sent      map[string]int    `json:"sent"`
	Before    map[string]string `json:"before"` // director -> sorted kernel table
	After     map[string]string `json:"after"`
	StatsText map[string]string `json:"stats"` // director -> syncd stats --json
}

// TestSyncdAuth: an attacker on the sync LAN replays captured frames, sends
// tampered copies, frames sealed with a key the fleet does not have, frames
// naming an unknown key, and garbage. Every one must be rejected and
// counted, and no kernel table may change.
func TestSyncdAuth(t *testing.T) {
	res := lab.Run(t, lab.Options{}, func(t *testing.T, g *lab.Guest) authResult {
		f := newDRFleet(t, g, 2)
		mode := &syncdMode{}
		mallory := g.NS("mallory")
		mallory.Plug("sync", "eth0", "", "10.1.0.66/24")
		var sock *net.UDPConn
		group := &net.UDPAddr{IP: net.ParseIP("239.255.77.1"), Port: 8848}
		if err := mallory.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			sock, err = net.ListenMulticastUDP("udp4", ifi, group)
			return err
		}); err != nil {
			t.Fatalf("mallory listens on the sync group: %v", err)
		}
		defer sock.Close()
		for _, d := range f.directors {
			mode.start(t, f, d)
		}
		f.takeVIP(t, f.directors[0])
		h := startHolder(t, f.client, 10, 200*time.Millisecond)
		h.waitOpen(t, 10, 30*time.Second)
		time.Sleep(kernelSyncDelay)
		converge(t, f, heldConns(h.report(t)), 10*time.Second)

		// Capture what the directors say to each other for a while.
		var captured [][]byte
		buf := make([]byte, 65536)
		deadline := time.Now().Add(4 * time.Second)
		for time.Now().Before(deadline) && len(captured) < 64 {
			_ = sock.SetReadDeadline(deadline)
			n, _, err := sock.ReadFromUDP(buf)
			if err != nil {
				break
			}
			captured = append(captured, append([]byte(nil), buf[:n]...))
		}
		if len(captured) == 0 {
			t.Fatal("mallory captured no sync frame")
		}
		// The held connections keep probing, so their entries stay
		// ESTABLISHED: any change to a table is the attacker's doing.
		r := authResult{Captured: len(captured), Sent: map[string]int{}, Before: map[string]string{}, After: map[string]string{}, StatsText: map[string]string{}}
		for _, d := range f.directors {
			r.Before[d.name] = kernelTable(t, d)
		}

		send := func(kind string, b []byte) {
			var err error
			if err = mallory.Do(func() error {
				_, err := sock.WriteToUDP(b, group)
				return err
			}); err != nil {
				t.Fatalf("mallory sends %s: %v", kind, err)
			}
			r.Sent[kind]++
		}
		for _, c := range captured {
			send("replayed", c)
			tampered := append([]byte(nil), c...)
			tampered[len(tampered)-20] ^= 0x40 // in the ciphertext or tag
			send("tampered", tampered)
		}
		// A forged update: a connection that does not exist, sealed with a
		// key of the right id but the wrong bytes, and with an unknown id.
		for kind, id := range map[string]uint8{"wrong key": 1, "unknown key id": 9} {
			secret := make([]byte, peer.KeyLen)
			_, _ = rand.Read(secret)
			ring, err := peer.NewKeyring(id, map[uint8][]byte{id: secret})
			if err != nil {
				t.Fatalf("%v", err)
			}
			// Sender 7 is no director: the frame must die on its tag, not on
			// a "that's me" check.
			s, err := peer.NewSealer(7, uint64(time.Now().UnixNano()), ring, 1400)
			if err != nil {
				t.Fatalf("%v", err)
			}
			payload := peer.AppendUpdateHeader(nil, 1, 0)
			e := forgedEntry()
			if payload, err = peer.AppendEntry(payload, &e, 900, false); err != nil {
				t.Fatalf("%v", err)
			}
			peer.SetEntryCount(payload, peer.TypeUpdate, 1)
			frame, err := s.Seal(nil, peer.TypeUpdate, payload)
			if err != nil {
				t.Fatalf("%v", err)
			}
			send(kind, frame)
		}
		send("garbage", []byte("PLVS\x01\x01\x01\x00not a frame at all, just bytes"))
		time.Sleep(2 * time.Second)
		for _, d := range f.directors {
			r.After[d.name] = kernelTable(t, d)
			r.StatsText[d.name] = d.ns.Sh("syncd stats --json --status %s", syncdStatus)
		}
		return r
	})

	t.Logf("mallory captured %d frames and sent %v", res.Captured, res.Sent)
	for name, before := range res.Before {
		if res.After[name] != before {
			t.Errorf("%s: kernel table changed under attack:\nbefore:\n%s\nafter:\n%s", name, before, res.After[name])
		}
		if strings.Contains(res.After[name], "10.6.6.6") {
			t.Errorf("%s: the forged connection reached the kernel", name)
		}
		var st daemon.Status
		if err := json.Unmarshal([]byte(res.StatsText[name]), &st); err != nil {
			t.Fatalf("%s: syncd stats --json: %v\n%s", name, err, res.StatsText[name])
		}
		t.Logf("%s rejected: %v", name, st.Peer.Rejected)
		for _, want := range []error{peer.ErrReplay, peer.ErrAuth, peer.ErrUnknownKey} {
			reason := peer.ReasonName(peer.ReasonIndex(want))
			if st.Peer.Rejected[reason] == 0 {
				t.Errorf("%s: no frame counted as %q", name, reason)
			}
		}
	}
}

// forgedEntry is a connection nobody made, owned by a node that does exist.
func forgedEntry() table.Entry {
	c := wire.Conn{Protocol: wire.ProtoTCP, Flags: wire.FlagDRoute, State: wire.TCPEstablished,
		CAddr: netip.MustParseAddr("10.6.6.6"), CPort: 6666, VAddr: netip.MustParseAddr(vip), VPort: vipPort,
		DAddr: netip.MustParseAddr("10.0.0.11"), DPort: vipPort, Timeout: 900}
	var e table.Entry
	peer.FromConn(&c, &e)
	e.Owner = 1
	e.Version = uint32(time.Now().Unix()) + 1000
	return e
}

// kernelTable is a director's kernel connection table as sorted lines,
// without the expiry column, which changes by itself.
func kernelTable(t *testing.T, d *director) string {
	t.Helper()
	conns, err := parseIpvsadmConns(d.ns.Sh("ipvsadm -Lnc"))
	if err != nil {
		t.Fatalf("%s: %v", d.name, err)
	}
	var lines []string
	for _, c := range conns {
		lines = append(lines, fmt.Sprintf("%s %s", c.key(), c.State))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
