package scenarios

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/ipvs"
	"github.com/peerlvs/peerlvs/ipvs/procconn"
	"github.com/peerlvs/peerlvs/ipvs/synclink"
	"github.com/peerlvs/peerlvs/ipvs/wire"
)

type injectResult struct {
	Sent   int              `json:"sent"`
	Kernel []lvsConn        `json:"kernel"`
	Sync   []procconn.Entry `json:"sync"` // /proc/net/ip_vs_conn_sync
}

// injected are the entries TestInject hands to the kernel backup: both
// address families, TCP and UDP, a persistence template, and connections of
// a fwmark service with its template.
func injected() []wire.Conn {
	a := netip.MustParseAddr
	const route uint32 = wire.FlagDRoute
	return []wire.Conn{
		{Protocol: wire.ProtoTCP, Flags: route, State: wire.TCPEstablished, CAddr: a("10.0.0.100"), CPort: 40001, VAddr: a(vip), VPort: 80, DAddr: a("10.0.0.11"), DPort: 80, Timeout: 900},
		{Protocol: wire.ProtoUDP, Flags: route, State: wire.UDPNormal, CAddr: a("10.0.0.100"), CPort: 40002, VAddr: a(vip), VPort: 53, DAddr: a("10.0.0.12"), DPort: 53, Timeout: 300},
		{Protocol: wire.ProtoTCP, Flags: wire.FlagMasq, State: wire.TCPSynRecv, CAddr: a("10.0.0.101"), CPort: 40003, VAddr: a(vip), VPort: 8080, DAddr: a("10.2.0.13"), DPort: 80, Timeout: 30},
		{Protocol: wire.ProtoTCP, Flags: route, State: wire.TCPEstablished, CAddr: a("fd00::100"), CPort: 40004, VAddr: a("fd00::50"), VPort: 80, DAddr: a("fd00::11"), DPort: 80, Timeout: 900},
		{Protocol: wire.ProtoUDP, Flags: route, State: wire.UDPNormal, CAddr: a("fd00::100"), CPort: 40005, VAddr: a("fd00::50"), VPort: 53, DAddr: a("fd00::12"), DPort: 53, Timeout: 300},
		// A persistence template: client port 0, binds the client to rs1.
		{Protocol: wire.ProtoTCP, Flags: route | wire.FlagTemplate, State: wire.TemplateNone, CAddr: a("10.0.0.102"), CPort: 0, VAddr: a(vip), VPort: 443, DAddr: a("10.0.0.11"), DPort: 443, Timeout: 360},
		// A connection of fwmark service 7, and its persistence template,
		// which carries the mark as its virtual address.
		{Protocol: wire.ProtoTCP, Flags: route, State: wire.TCPEstablished, Fwmark: 7, CAddr: a("10.0.0.103"), CPort: 40006, VAddr: a(vip), VPort: 25, DAddr: a("10.0.0.12"), DPort: 25, Timeout: 900},
		{Protocol: 0, Flags: route | wire.FlagTemplate, State: wire.TemplateNone, Fwmark: 7, CAddr: a("10.0.0.103"), VAddr: a("0.0.0.7"), DAddr: a("10.0.0.12"), Timeout: 360},
	}
}

// TestInject hands frames built by our encoder to the kernel backup thread
// through the host-local link and takes ipvsadm -Lnc as the judge that every
// entry arrived with the fields sent.
func TestInject(t *testing.T) {
	conns := injected()
	res := lab.Run(t, lab.Options{}, func(t *testing.T, g *lab.Guest) injectResult {
		d := g.NS("d2")
		// A fwmark service configured locally, as on a real standby; the
		// other entries have no local service, which the backup accepts.
		d.Sh("ipvsadm -A -f 7 -s rr -p 360 && ipvsadm -a -f 7 -r 10.0.0.12 -g")
		s := openSyncLink(t, d, 1, ipvs.Backup)
		defer s.h.Close()
		var inj *synclink.Injector
		if err := d.Do(func() error {
			var err error
			inj, err = synclink.OpenInjector(s.cfg.Name, s.cfg.Group, s.cfg.BackupPort)
			return err
		}); err != nil {
			t.Fatalf("open the injector: %v", err)
		}
		defer inj.Close()
		// Small messages, so the entries travel in several datagrams.
		frames, err := wire.EncodeV1(1, conns, 200)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		for _, f := range frames {
			if err := inj.WriteFrame(f); err != nil {
				t.Fatalf("inject: %v", err)
			}
		}
		var r injectResult
		r.Sent = len(frames)
		waitFor(5*time.Second, func() bool {
			r.Kernel, err = parseIpvsadmConns(d.Sh("ipvsadm -Lnc"))
			return err == nil && len(r.Kernel) >= len(conns)
		})
		if err != nil {
			t.Fatalf("%v", err)
		}
		if r.Sync, err = procconn.Parse(strings.NewReader(d.Sh("cat /proc/net/ip_vs_conn_sync"))); err != nil {
			t.Fatalf("procconn: %v", err)
		}
		return r
	})

	t.Logf("%d entries in %d frames; the backup kernel holds %d", len(conns), res.Sent, len(res.Kernel))
	// The kernel marks what its backup thread created as synced.
	if len(res.Sync) != len(conns) {
		t.Errorf("/proc/net/ip_vs_conn_sync lists %d entries, want %d", len(res.Sync), len(conns))
	}
	for _, e := range res.Sync {
		if e.Origin != procconn.OriginSync {
			t.Errorf("entry %+v: origin %q, want %q", e, e.Origin, procconn.OriginSync)
		}
	}
	byKey := map[string]lvsConn{}
	for _, c := range res.Kernel {
		byKey[c.key()] = c
	}
	for _, c := range conns {
		want := lvsConn{Proto: wire.ProtoName(c.Protocol), Source: hostPort(c.CAddr, c.CPort), VIP: hostPort(c.VAddr, c.VPort), Dest: hostPort(c.DAddr, c.DPort), State: c.StateName()}
		if c.Protocol == 0 {
			want.Proto = "IP"
		}
		got, ok := byKey[want.key()]
		if !ok {
			t.Errorf("injected %s never appeared in ipvsadm -Lnc:\n%+v", want.key(), res.Kernel)
			continue
		}
		if got.State != want.State {
			t.Errorf("%s: state %s, sent %s", want.key(), got.State, want.State)
		}
		// The backup arms the entry with the timeout sent; a few seconds
		// passed between injection and the snapshot.
		if sec := expireSeconds(got.Expire); sec > int(c.Timeout) || sec < int(c.Timeout)-10 {
			t.Errorf("%s: expires in %s, sent timeout %ds", want.key(), got.Expire, c.Timeout)
		}
	}
}
