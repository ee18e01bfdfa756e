package traffic

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// startUDPScripted runs a UDP server on loopback that answers each datagram
// with the datagrams reply returns for it.
func startUDPScripted(t *testing.T, reply func(string) []string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			for _, r := range reply(string(buf[:n])) {
				c.WriteToUDPAddrPort([]byte(r), from)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestUDPFlows(t *testing.T) {
	t.Parallel()
	const (
		flows    = 4
		rate     = 50
		duration = 400 * time.Millisecond
		perFlow  = 20 // rate × duration
	)
	tests := []struct {
		name   string
		server func(t *testing.T) netip.AddrPort // nil: nothing listens
		// want, per flow
		received int
		bad      int
		dup      int
	}{
		{
			name: "echo server",
			server: func(t *testing.T) netip.AddrPort {
				s, _ := startEcho(t, EchoConfig{Name: "rsU", UDP: true})
				return s.Addr()
			},
			received: perFlow,
		},
		{
			name: "wildcard echo server answers from the VIP",
			server: func(t *testing.T) netip.AddrPort {
				s, _ := startEcho(t, EchoConfig{Listen: "0.0.0.0:0", Name: "rsU", UDP: true})
				return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), s.Addr().Port())
			},
			received: perFlow,
		},
		{name: "nothing listens"},
		{
			name: "replies that are not echoes",
			server: func(t *testing.T) netip.AddrPort {
				return startUDPScripted(t, func(string) []string { return []string{"rsU udp 9999 1\n"} })
			},
			bad: perFlow,
		},
		{
			name: "every reply twice",
			server: func(t *testing.T) netip.AddrPort {
				return startUDPScripted(t, func(d string) []string { return []string{"rsU " + d, "rsU " + d} })
			},
			received: perFlow,
			dup:      perFlow,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			target := closedPort(t)
			if tc.server != nil {
				target = tc.server(t)
			}
			u, err := NewUDPFlows(UDPConfig{
				Target:   target.String(),
				Flows:    flows,
				Rate:     rate,
				Duration: duration,
				Wait:     500 * time.Millisecond,
				PerFlow:  true,
			})
			if err != nil {
				t.Fatal(err)
			}
			sum, err := u.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if sum.Flows != flows || sum.Sent+sum.SendErrors != flows*perFlow {
				t.Fatalf("summary %+v: want %d datagrams tried", sum, flows*perFlow)
			}
			if sum.Received != flows*tc.received || sum.Bad != flows*tc.bad || sum.Dup != flows*tc.dup {
				t.Errorf("received %d, bad %d, dup %d; want %d, %d, %d",
					sum.Received, sum.Bad, sum.Dup, flows*tc.received, flows*tc.bad, flows*tc.dup)
			}
			if sum.Lost != sum.Sent-sum.Received {
				t.Errorf("lost %d of %d sent, %d received", sum.Lost, sum.Sent, sum.Received)
			}
			wantZero := 0
			if tc.received == 0 {
				wantZero = flows
			}
			if sum.ZeroReplyFlows != wantZero || sum.ChangedServerFlows != 0 {
				t.Errorf("zero_reply_flows %d (want %d), changed_server_flows %d", sum.ZeroReplyFlows, wantZero, sum.ChangedServerFlows)
			}
			if tc.received > 0 && sum.Servers["rsU"] != flows {
				t.Errorf("servers %v", sum.Servers)
			}
			if tc.received == 0 && sum.MaxGapMS < ms(duration*3/4) {
				t.Errorf("max_gap_ms %.1f without replies, want about the whole %s", sum.MaxGapMS, duration)
			}
			ports := map[string]bool{}
			for _, f := range sum.PerFlow {
				if ports[f.Local] {
					t.Errorf("two flows from %s", f.Local)
				}
				ports[f.Local] = true
				if f.Received != tc.received {
					t.Errorf("flow %+v", f)
				}
			}
		})
	}
}

func TestUDPFlowsServerChange(t *testing.T) {
	t.Parallel()
	// Answers as rsA, then as rsB: a re-balanced flow.
	n := 0
	target := startUDPScripted(t, func(d string) []string {
		n++
		if n <= 5 {
			return []string{"rsA " + d}
		}
		return []string{"rsB " + d}
	})
	u, err := NewUDPFlows(UDPConfig{Target: target.String(), Flows: 1, Rate: 50, Duration: 200 * time.Millisecond, Wait: 200 * time.Millisecond, PerFlow: true})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := u.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f := sum.PerFlow[0]
	if sum.ChangedServerFlows != 1 || f.ServerChanges != 1 || fmt.Sprint(f.Servers) != "[rsA rsB]" || sum.Servers["rsA"] != 1 {
		t.Errorf("summary %+v, flow %+v", sum, f)
	}
}

func TestUDPFlowsCancel(t *testing.T) {
	t.Parallel()
	s, _ := startEcho(t, EchoConfig{UDP: true})
	u, err := NewUDPFlows(UDPConfig{Target: s.Addr().String(), Flows: 2, Rate: 20, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	sum, err := u.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Run took %s after its context ended", took)
	}
	if sum.Sent == 0 || sum.Sent > 2*10 {
		t.Errorf("sent %d in 0.3 s at 2×20/s", sum.Sent)
	}
}

func TestNewUDPFlowsRejects(t *testing.T) {
	t.Parallel()
	good := UDPConfig{Target: "127.0.0.1:53", Flows: 1, Rate: 1, Duration: time.Second}
	tests := []struct {
		name   string
		change func(*UDPConfig)
	}{
		{"bad target", func(c *UDPConfig) { c.Target = "127.0.0.1" }},
		{"no flows", func(c *UDPConfig) { c.Flows = 0 }},
		{"too many flows", func(c *UDPConfig) { c.Flows = maxFlows + 1 }},
		{"no rate", func(c *UDPConfig) { c.Rate = 0 }},
		{"no duration", func(c *UDPConfig) { c.Duration = 0 }},
		{"too many datagrams", func(c *UDPConfig) { c.Rate, c.Duration = maxUDPRate, 24*time.Hour }},
		{"family mismatch", func(c *UDPConfig) { c.SourceIPs = []netip.Addr{netip.MustParseAddr("::1")} }},
	}
	if _, err := NewUDPFlows(good); err != nil {
		t.Fatalf("good config rejected: %v", err)
	}
	for _, tc := range tests {
		cfg := good
		tc.change(&cfg)
		if _, err := NewUDPFlows(cfg); err == nil {
			t.Errorf("%s: accepted %+v", tc.name, cfg)
		}
	}
}
