package health

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// okTimeout bounds the attempts expected to succeed: generous, as they
	// end as soon as the server answers.
	okTimeout = 2 * time.Second
	// shortTimeout bounds the attempts expected to time out.
	shortTimeout = 300 * time.Millisecond
	// slack is how much later than its timeout an attempt may end, and how
	// long a fast failure may take, on a loaded test machine.
	slack = 400 * time.Millisecond
)

// loopbacks are the hosts the table tests run against: 127.0.0.1 and,
// when the test machine has it, ::1.
func loopbacks(t *testing.T) []string {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Logf("no IPv6 loopback (%v): testing 127.0.0.1 only", err)
		return []string{"127.0.0.1"}
	}
	ln.Close()
	return []string{"127.0.0.1", "::1"}
}

// serveTCP accepts connections on host until the test ends, each handled
// by handle; it returns the listening address.
func serveTCP(t *testing.T, host string, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return netAddrPort(ln.Addr())
}

// serveUDP answers the datagrams to host with what reply returns (nothing
// when it returns nil) until the test ends.
func serveUDP(t *testing.T, host string, reply func([]byte) []byte) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if r := reply(buf[:n]); r != nil {
				_, _ = pc.WriteTo(r, from)
			}
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return netAddrPort(pc.LocalAddr())
}

// closedPort is a port of host nothing listens on (for a moment ago
// something did).
func closedPort(t *testing.T, network, host string) netip.AddrPort {
	t.Helper()
	var a net.Addr
	if network == "udp" {
		pc, err := net.ListenPacket(network, net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		a = pc.LocalAddr()
		pc.Close()
	} else {
		ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		a = ln.Addr()
		ln.Close()
	}
	return netAddrPort(a)
}

func netAddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// silent reads what comes and never answers.
func silent(c net.Conn) { _, _ = io.Copy(io.Discard, c) }

// runProbe runs Probe and checks what every result must satisfy; it returns
// the result and the wall-clock time it took.
func runProbe(t *testing.T, ctx context.Context, s Spec, tg Target) (Result, time.Duration) {
	t.Helper()
	start := time.Now()
	r := Probe(ctx, s, tg)
	took := time.Since(start)
	if r.Up != (r.Err == nil) {
		t.Errorf("Up %v with Err %v", r.Up, r.Err)
	}
	if r.Latency < 0 || r.Latency > took {
		t.Errorf("Latency %v, the attempt took %v", r.Latency, took)
	}
	if s.Kind != KindExternal && r.Weight != -1 {
		t.Errorf("Weight %d, want -1 from a %s check", r.Weight, s.Kind)
	}
	return r, took
}

// wantResult checks r: up, or down with an error containing errHas.
func wantResult(t *testing.T, r Result, up bool, errHas string) {
	t.Helper()
	switch {
	case up && !r.Up:
		t.Errorf("down (%v), want up", r.Err)
	case !up && r.Up:
		t.Errorf("up, want down with %q", errHas)
	case !up && !strings.Contains(r.Err.Error(), errHas):
		t.Errorf("error %q, want it to contain %q", r.Err, errHas)
	}
}

// wantTook checks how long a down attempt took: at the timeout when it
// timed out, well before it otherwise.
func wantTook(t *testing.T, took, timeout time.Duration, timedOut bool) {
	t.Helper()
	switch {
	case timedOut && took < timeout:
		t.Errorf("took %v, before its timeout %v", took, timeout)
	case timedOut && took > timeout+slack:
		t.Errorf("took %v, well past its timeout %v", took, timeout)
	case !timedOut && took > slack:
		t.Errorf("took %v, want a fast answer", took)
	}
}

func TestProbeTCP(t *testing.T) {
	for _, host := range loopbacks(t) {
		banner := serveTCP(t, host, func(c net.Conn) { _, _ = io.WriteString(c, "SSH-2.0-test\r\n") })
		echo := serveTCP(t, host, func(c net.Conn) { _, _ = io.Copy(c, c) })
		quiet := serveTCP(t, host, silent)
		// The mark comes after more than one read's worth, and then after
		// more than the 64 KiB a probe reads.
		late := serveTCP(t, host, func(c net.Conn) {
			_, _ = c.Write(bytes.Repeat([]byte("x"), 20<<10))
			_, _ = io.WriteString(c, "MARK")
		})
		tooLate := serveTCP(t, host, func(c net.Conn) {
			_, _ = c.Write(bytes.Repeat([]byte("x"), 100<<10))
			_, _ = io.WriteString(c, "MARK")
			silent(c)
		})
		closed := closedPort(t, "tcp", host)
		tests := []struct {
			name     string
			addr     netip.AddrPort
			send     string
			expect   string
			up       bool
			errHas   string
			timedOut bool
		}{
			{name: "connect", addr: quiet, up: true},
			{name: "banner", addr: banner, expect: "SSH-2.0", up: true},
			{name: "wrong banner", addr: banner, expect: "SMTP", errHas: `reply "SSH-2.0-test\r\n" lacks "SMTP"`},
			{name: "send and expect", addr: echo, send: "ping\n", expect: "ping", up: true},
			{name: "send without expect", addr: echo, send: "ping\n", up: true},
			{name: "mark after many reads", addr: late, expect: "MARK", up: true},
			{name: "mark past 64 KiB", addr: tooLate, expect: "MARK", errHas: "in its first 64 KiB"},
			{name: "no answer", addr: quiet, expect: "x", errHas: "read: no answer within 300ms", timedOut: true},
			{name: "wrong answer, then none", addr: echo, send: "ping", expect: "pong", errHas: `reply "ping" lacks "pong": read: no answer`, timedOut: true},
			{name: "closed port", addr: closed, expect: "x", errHas: "connect: connection refused"},
		}
		for _, tt := range tests {
			t.Run(host+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				s := Spec{Kind: KindTCP, Timeout: okTimeout, Send: []byte(tt.send), Expect: tt.expect}
				if !tt.up {
					s.Timeout = shortTimeout
				}
				r, took := runProbe(t, t.Context(), s, Target{Addr: tt.addr})
				wantResult(t, r, tt.up, tt.errHas)
				if !tt.up {
					wantTook(t, took, s.Timeout, tt.timedOut)
					if !strings.HasPrefix(r.Err.Error(), "tcp "+tt.addr.String()+": ") {
						t.Errorf("error %q does not name the check and server", r.Err)
					}
				}
			})
		}
	}
}

func TestProbeUDP(t *testing.T) {
	for _, host := range loopbacks(t) {
		echo := serveUDP(t, host, func(b []byte) []byte { return append([]byte("echo:"), b...) })
		quiet := serveUDP(t, host, func([]byte) []byte { return nil })
		closed := closedPort(t, "udp", host)
		tests := []struct {
			name     string
			addr     netip.AddrPort
			send     string
			expect   string
			up       bool
			errHas   string
			timedOut bool
		}{
			{name: "empty datagram", addr: echo, expect: "echo:", up: true},
			{name: "any reply", addr: echo, send: "hello", up: true},
			{name: "reply with expect", addr: echo, send: "hello", expect: "echo:hello", up: true},
			{name: "wrong reply", addr: echo, send: "hello", expect: "bye", errHas: `reply "echo:hello" lacks "bye"`},
			{name: "no reply", addr: quiet, send: "hello", errHas: "reply: no answer within 300ms", timedOut: true},
			{name: "port unreachable", addr: closed, send: "hello", errHas: "port unreachable"},
		}
		for _, tt := range tests {
			t.Run(host+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				s := Spec{Kind: KindUDP, Timeout: okTimeout, Send: []byte(tt.send), Expect: tt.expect}
				if !tt.up {
					s.Timeout = shortTimeout
				}
				r, took := runProbe(t, t.Context(), s, Target{Addr: tt.addr})
				wantResult(t, r, tt.up, tt.errHas)
				if !tt.up {
					wantTook(t, took, s.Timeout, tt.timedOut)
				}
			})
		}
	}
}

func TestProbeNone(t *testing.T) {
	for _, k := range []Kind{KindNone, ""} {
		r := Probe(t.Context(), Spec{Kind: k}, Target{})
		if r != (Result{Up: true, Weight: -1}) {
			t.Errorf("kind %q: %+v, want up with weight -1 and latency 0", k, r)
		}
	}
}

func TestProbeUnknownKind(t *testing.T) {
	r, _ := runProbe(t, t.Context(), Spec{Kind: "gopher", Timeout: okTimeout}, Target{Addr: netip.MustParseAddrPort("127.0.0.1:70")})
	wantResult(t, r, false, `check type "gopher" unknown`)
}

func TestProbeNoPort(t *testing.T) {
	for _, k := range []Kind{KindTCP, KindUDP, KindHTTP, KindHTTPS, KindSMTP, KindPOP3, KindIMAP, KindDNS} {
		s := Spec{Kind: k, Timeout: okTimeout, DNS: DNSSpec{Name: "example.org"}}
		r, took := runProbe(t, t.Context(), s, Target{Addr: netip.MustParseAddrPort("127.0.0.1:0"), FWMark: 1})
		if r.Up || !errors.Is(r.Err, ErrNoPort) {
			t.Errorf("%s: %v, want ErrNoPort", k, r.Err)
		}
		wantTook(t, took, s.Timeout, false)
	}
	r, _ := runProbe(t, t.Context(), Spec{Kind: KindTCP, Timeout: okTimeout}, Target{})
	wantResult(t, r, false, "tcp (no address): no real-server address")
}

func TestProbeSource(t *testing.T) {
	seen := make(chan string, 1)
	addr := serveTCP(t, "127.0.0.1", func(c net.Conn) {
		seen <- netAddrPort(c.RemoteAddr()).Addr().String()
	})
	r, _ := runProbe(t, t.Context(), Spec{Kind: KindTCP, Timeout: okTimeout, Source: netip.MustParseAddr("127.0.0.2")}, Target{Addr: addr})
	wantResult(t, r, true, "")
	if got := <-seen; got != "127.0.0.2" {
		t.Errorf("server saw the probe from %s, want 127.0.0.2", got)
	}

	useen := make(chan string, 1)
	upc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upc.Close()
	go func() {
		buf := make([]byte, 512)
		_, from, err := upc.ReadFrom(buf)
		if err != nil {
			return
		}
		useen <- netAddrPort(from).Addr().String()
		_, _ = upc.WriteTo([]byte("ok"), from)
	}()
	r, _ = runProbe(t, t.Context(), Spec{Kind: KindUDP, Timeout: okTimeout, Source: netip.MustParseAddr("127.0.0.2")}, Target{Addr: netAddrPort(upc.LocalAddr())})
	wantResult(t, r, true, "")
	if got := <-useen; got != "127.0.0.2" {
		t.Errorf("UDP server saw the probe from %s, want 127.0.0.2", got)
	}

	// Neither sends a packet: the family mismatch is caught first, and the
	// documentation address cannot be bound.
	r, _ = runProbe(t, t.Context(), Spec{Kind: KindTCP, Timeout: okTimeout, Source: netip.MustParseAddr("::1")}, Target{Addr: addr})
	wantResult(t, r, false, "not of the same IP version")
	r, _ = runProbe(t, t.Context(), Spec{Kind: KindTCP, Timeout: okTimeout, Source: netip.MustParseAddr("192.0.2.1")}, Target{Addr: addr})
	wantResult(t, r, false, "cannot assign requested address")
}

func TestProbeCanceled(t *testing.T) {
	addr := serveTCP(t, "127.0.0.1", silent)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	r, took := runProbe(t, ctx, Spec{Kind: KindTCP, Timeout: 5 * time.Second, Expect: "x"}, Target{Addr: addr})
	if r.Up || !errors.Is(r.Err, context.Canceled) {
		t.Errorf("%v, want canceled", r.Err)
	}
	if took > 50*time.Millisecond+slack {
		t.Errorf("took %v after a cancellation at 50ms", took)
	}

	// A caller's deadline before the timeout is the one named.
	ctx, cancel = context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	r, took = runProbe(t, ctx, Spec{Kind: KindTCP, Timeout: 5 * time.Second, Expect: "x"}, Target{Addr: addr})
	wantResult(t, r, false, "no answer within 100ms")
	if !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Errorf("%v does not wrap context.DeadlineExceeded", r.Err)
	}
	wantTook(t, took, 100*time.Millisecond, true)
}

// TestProbeGarbage feeds every kind junk: the probes must fail, not panic,
// nor log (net/http's Transport would, for a server that speaks first).
func TestProbeGarbage(t *testing.T) {
	var logged bytes.Buffer
	log.SetOutput(&logged)
	t.Cleanup(func() {
		log.SetOutput(os.Stderr)
		if logged.Len() > 0 {
			t.Errorf("logged:\n%s", logged.String())
		}
	})
	junk := [][]byte{
		nil,
		[]byte("\x00\xff\r\n\r\n"),
		[]byte("HTTP/1.1 abc\r\n\r\n"),
		[]byte("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n"),
		[]byte("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"),
		[]byte("220-\r\n\x00"),
		[]byte("\x00\x05\x00\x00\x80\x00\x00\x01"),
		bytes.Repeat([]byte("\xfe"), 200<<10),
	}
	kinds := []Kind{KindTCP, KindHTTP, KindHTTPS, KindSMTP, KindPOP3, KindIMAP, KindDNS}
	for i, j := range junk {
		addr := serveTCP(t, "127.0.0.1", func(c net.Conn) { _, _ = c.Write(j) })
		uaddr := serveUDP(t, "127.0.0.1", func([]byte) []byte { return j })
		for _, k := range kinds {
			t.Run(string(k), func(t *testing.T) {
				t.Parallel()
				s := Spec{Kind: k, Timeout: shortTimeout, Expect: "never", DNS: DNSSpec{Name: "up.test", TCP: true},
					HTTP: HTTPSpec{Body: "never"}}
				r, _ := runProbe(t, t.Context(), s, Target{Addr: addr})
				if r.Up {
					t.Errorf("junk %d: up", i)
				}
				s.DNS.TCP = false
				if k == KindTCP {
					s.Kind = KindUDP
				}
				if k == KindTCP || k == KindDNS {
					r, _ = runProbe(t, t.Context(), s, Target{Addr: uaddr})
					if r.Up && j != nil {
						t.Errorf("junk %d over UDP: up", i)
					}
				}
			})
		}
	}
}

// TestProbeLeavesNoGoroutines runs attempts of every outcome and checks
// none leaves a goroutine behind.
func TestProbeLeavesNoGoroutines(t *testing.T) {
	banner := serveTCP(t, "127.0.0.1", func(c net.Conn) { _, _ = io.WriteString(c, "220 hi\r\n"); silent(c) })
	quiet := serveTCP(t, "127.0.0.1", silent)
	udp := serveUDP(t, "127.0.0.1", func(b []byte) []byte { return b })
	web := httpServer(t, "127.0.0.1", false)
	dnsAddr := dnsServer(t, "127.0.0.1")
	// Let the servers' goroutines settle before counting.
	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(150*time.Millisecond, cancel)
	for _, c := range []struct {
		ctx  context.Context
		s    Spec
		addr netip.AddrPort
	}{
		{t.Context(), Spec{Kind: KindTCP, Expect: "220"}, banner},
		{t.Context(), Spec{Kind: KindTCP, Expect: "x", Timeout: 100 * time.Millisecond}, quiet},
		{ctx, Spec{Kind: KindTCP, Expect: "x", Timeout: 5 * time.Second}, quiet},
		{t.Context(), Spec{Kind: KindSMTP}, banner},
		{t.Context(), Spec{Kind: KindUDP}, udp},
		{t.Context(), Spec{Kind: KindHTTP, HTTP: HTTPSpec{Body: "hello"}}, web},
		{t.Context(), Spec{Kind: KindHTTP, Timeout: 100 * time.Millisecond}, quiet},
		{t.Context(), Spec{Kind: KindDNS, DNS: DNSSpec{Name: "up.test"}}, dnsAddr},
		{t.Context(), Spec{Kind: KindDNS, DNS: DNSSpec{Name: "silent.test"}, Timeout: 100 * time.Millisecond}, dnsAddr},
		{t.Context(), Spec{Kind: KindExternal, Command: []string{"/bin/sh", "-c", "sleep 5 & sleep 5"}, Timeout: 100 * time.Millisecond}, banner},
	} {
		if c.s.Timeout == 0 {
			c.s.Timeout = okTimeout
		}
		Probe(c.ctx, c.s, Target{Addr: c.addr})
	}
	// Servers' goroutines for the probes' connections end a moment later.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before the probes, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}
