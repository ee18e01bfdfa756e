package health

import (
	"net/netip"
	"os"
	"testing"
)

// needRoot skips a test that needs raw sockets when not root, unless on CI
// (CI=true), where such a test must run.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("ICMP checks need a raw socket: run the tests as root on CI")
	}
	t.Skip("ICMP checks need a raw socket: skipped when not root (set CI=true to make this a failure)")
}

func TestProbeICMP(t *testing.T) {
	needRoot(t)
	tests := []struct {
		name   string
		addr   string
		source string
	}{
		{name: "ipv4", addr: "127.0.0.1"},
		{name: "ipv4 from 127.0.0.2", addr: "127.0.0.1", source: "127.0.0.2"},
	}
	if len(loopbacks(t)) > 1 {
		tests = append(tests, struct{ name, addr, source string }{name: "ipv6", addr: "::1"},
			struct{ name, addr, source string }{name: "ipv6 from ::1", addr: "::1", source: "::1"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := Spec{Kind: KindICMP, Timeout: okTimeout}
			if tt.source != "" {
				s.Source = netip.MustParseAddr(tt.source)
			}
			// The port is the service's, of no concern to ICMP.
			r, _ := runProbe(t, t.Context(), s, Target{Addr: netip.AddrPortFrom(netip.MustParseAddr(tt.addr), 0)})
			wantResult(t, r, true, "")
			if r.Latency <= 0 {
				t.Errorf("latency %v", r.Latency)
			}
		})
	}
}

// TestProbeICMPConcurrent checks that concurrent probes of one address
// each take their own reply.
func TestProbeICMPConcurrent(t *testing.T) {
	needRoot(t)
	results := make(chan Result, 20)
	for range cap(results) {
		go func() {
			results <- Probe(t.Context(), Spec{Kind: KindICMP, Timeout: okTimeout}, Target{Addr: netip.MustParseAddrPort("127.0.0.1:0")})
		}()
	}
	for range cap(results) {
		if r := <-results; !r.Up {
			t.Errorf("down: %v", r.Err)
		}
	}
}
