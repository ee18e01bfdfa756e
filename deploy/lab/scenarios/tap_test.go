package scenarios

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/ipvs"
	"github.com/peerlvs/peerlvs/ipvs/procconn"
	"github.com/peerlvs/peerlvs/ipvs/wire"
)

type tapResult struct {
	Frames       int               `json:"frames"`
	DecodeErrors []string          `json:"decode_errors"`
	Decoded      map[string]string `json:"decoded"`    // key -> "state fwd"
	Kernel       []lvsConn         `json:"kernel"`     // ipvsadm -Lnc
	Proc         []procconn.Entry  `json:"proc"`       // /proc/net/ip_vs_conn through procconn
	Mismatches   []string          `json:"mismatches"` // frames whose re-encoding differs
	RoundTripped int               `json:"roundtripped"`
}

// TestTap sends real TCP and UDP traffic through a director whose kernel
// master syncs onto the host-local link, decodes every frame the tap sees,
// and compares the result with ipvsadm -Lnc on the same kernel.
func TestTap(t *testing.T) {
	res := lab.Run(t, lab.Options{}, func(t *testing.T, g *lab.Guest) tapResult {
		g.Hub("front")
		g.Switch("back")
		client := g.NS("client")
		client.Plug("front", "eth0", "", clientAddr)
		d := g.NS("d1")
		d.Plug("front", "eth0", "", "10.0.0.1/24", vip+"/32")
		d.Plug("back", "eth1", "", "10.2.0.1/24")
		d.Sysctl("net.ipv4.ip_forward", "1")
		for i := 1; i <= 2; i++ {
			rs := g.NS(fmt.Sprintf("rs%d", i))
			rs.Plug("front", "eth0", "", fmt.Sprintf("10.0.0.%d/24", 10+i))
			rs.DRRealServer(vip + "/32")
			rs.Start("labtraffic", "echo-server", "-listen", "0.0.0.0:80", "-udp", "-name", rs.Name)
		}
		rs3 := g.NS("rs3")
		rs3.Plug("back", "eth0", "", "10.2.0.13/24")
		rs3.NATRealServer("10.2.0.1")
		rs3.Start("labtraffic", "echo-server", "-listen", "0.0.0.0:80", "-name", "rs3")
		d.Sh("ipvsadm -A -t %[1]s:80 -s rr && ipvsadm -a -t %[1]s:80 -r 10.0.0.11 -g && ipvsadm -a -t %[1]s:80 -r 10.0.0.12 -g", vip)
		d.Sh("ipvsadm -A -u %[1]s:80 -s rr && ipvsadm -a -u %[1]s:80 -r 10.0.0.11 -g && ipvsadm -a -u %[1]s:80 -r 10.0.0.12 -g", vip)
		d.Sh("ipvsadm -A -t %[1]s:8080 -s rr && ipvsadm -a -t %[1]s:8080 -r 10.2.0.13:80 -m", vip)

		s := openSyncLink(t, d, 1, ipvs.Master)
		defer s.h.Close()
		tap := openTap(t, d, s)
		defer tap.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
		defer cancel()
		framesC := make(chan [][]byte, 1)
		go func() {
			frames, err := captureFrames(ctx, tap)
			if err != nil {
				t.Errorf("tap: %v", err)
			}
			framesC <- frames
		}()

		dr := client.Start("labtraffic", "hold", "-target", vip+":80", "-conns", "6", "-interval", "50ms", "-duration", "20s")
		nat := client.Start("labtraffic", "hold", "-target", vip+":8080", "-conns", "3", "-interval", "50ms", "-duration", "20s")
		client.Sh("labtraffic udp -target %s:80 -flows 4 -rate 20 -duration 2s -per-flow=false", vip)
		// Let every held connection pass the kernel's sync threshold (3rd
		// packet, then every 50) a few times before the snapshot.
		time.Sleep(4 * time.Second)
		r := tapResult{Decoded: map[string]string{}}
		var err error
		if r.Kernel, err = parseIpvsadmConns(d.Sh("ipvsadm -Lnc")); err != nil {
			t.Fatalf("%v", err)
		}
		if r.Proc, err = procconn.Parse(bytes.NewBufferString(d.Sh("cat /proc/net/ip_vs_conn"))); err != nil {
			t.Fatalf("procconn: %v", err)
		}
		// The master sends every sync_period packets: wait for one more
		// round, then stop the capture.
		time.Sleep(3 * time.Second)
		cancel()
		frames := <-framesC
		dr.Kill()
		nat.Kill()

		r.Frames = len(frames)
		for _, f := range frames {
			m, err := wire.Decode(f)
			if err != nil {
				r.DecodeErrors = append(r.DecodeErrors, err.Error())
				continue
			}
			for _, c := range m.Conns {
				k := lvsConn{Proto: wire.ProtoName(c.Protocol), Source: hostPort(c.CAddr, c.CPort), VIP: hostPort(c.VAddr, c.VPort), Dest: hostPort(c.DAddr, c.DPort)}.key()
				r.Decoded[k] = c.StateName() + " " + wire.FwdMethod(c.Flags)
			}
			// A captured frame, decoded and encoded again, must be the
			// same bytes: the encoder writes exactly what the kernel does.
			out, err := wire.EncodeV1(m.SyncID, m.Conns, len(f))
			if err != nil || len(out) != 1 || !bytes.Equal(out[0], f) {
				r.Mismatches = append(r.Mismatches, fmt.Sprintf("frame of %d bytes, %d conns: re-encoded differently (%v)\n%x", len(f), len(m.Conns), err, f))
				continue
			}
			r.RoundTripped++
		}
		return r
	})

	t.Logf("%d frames from the kernel master, %d decoded connections, %d kernel connections, %d round-tripped byte for byte",
		res.Frames, len(res.Decoded), len(res.Kernel), res.RoundTripped)
	if res.Frames == 0 {
		t.Fatal("the tap saw no frame from the kernel master")
	}
	for _, e := range res.DecodeErrors {
		t.Errorf("decode: %s", e)
	}
	for _, m := range res.Mismatches {
		t.Errorf("%s", m)
	}
	// Every live connection of the kernel must have been seen on the tap
	// with the same protocol, addresses, ports and state, and with the
	// forwarding method of the service it belongs to.
	var tcp, udp, nat int
	for _, c := range res.Kernel {
		if c.State != "ESTABLISHED" && c.State != "UDP" {
			continue
		}
		got, ok := res.Decoded[c.key()]
		if !ok {
			t.Errorf("kernel connection %s %s never appeared on the tap", c.key(), c.State)
			continue
		}
		wantFwd := "Route"
		if c.VIP == vip+":8080" {
			wantFwd = "Masq"
			nat++
		}
		if c.Proto == "UDP" {
			udp++
		} else {
			tcp++
		}
		if want := c.State + " " + wantFwd; got != want {
			t.Errorf("connection %s: tap says %q, kernel says %q", c.key(), got, want)
		}
	}
	if tcp < 9 || udp < 4 || nat < 3 {
		t.Errorf("compared %d TCP (%d NAT) and %d UDP connections; want at least 9 (3) and 4", tcp, nat, udp)
	}
	// The /proc parser must see the same table as ipvsadm.
	var fromProc, fromIpvsadm []string
	for _, e := range res.Proc {
		fromProc = append(fromProc, lvsConn{Proto: wire.ProtoName(e.Protocol), Source: hostPort(e.CAddr, e.CPort), VIP: hostPort(e.VAddr, e.VPort), Dest: hostPort(e.DAddr, e.DPort)}.key()+" "+e.State)
	}
	for _, c := range res.Kernel {
		fromIpvsadm = append(fromIpvsadm, c.key()+" "+c.State)
	}
	sort.Strings(fromProc)
	sort.Strings(fromIpvsadm)
	if fmt.Sprint(fromProc) != fmt.Sprint(fromIpvsadm) {
		t.Errorf("procconn and ipvsadm disagree:\nprocconn: %q\nipvsadm:  %q", fromProc, fromIpvsadm)
	}
}

// hostPort formats an address the way ipvsadm -Lnc does.
func hostPort(a netip.Addr, port uint16) string {
	return netip.AddrPortFrom(a, port).String()
}
