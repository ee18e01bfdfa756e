package traffic

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startEcho runs an echo server on loopback; the returned func kills it
// (listener and every connection) and waits until it is gone.
func startEcho(t *testing.T, cfg EchoConfig) (*EchoServer, func()) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Name == "" {
		cfg.Name = "rsA"
	}
	s, err := ListenEcho(cfg)
	if err != nil {
		t.Fatalf("ListenEcho: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("echo server did not stop within 5s")
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}

// scriptFunc answers line number n (1 is the holder's "open") on one
// connection: reply is written as is, and keep false closes the connection.
type scriptFunc func(c *net.TCPConn, n int, line string) (reply string, keep bool)

// startScripted runs a TCP server on loopback that answers as script says,
// to play the misbehaving servers the echo server never is.
func startScripted(t *testing.T, script scriptFunc) netip.AddrPort {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns = map[*net.TCPConn]struct{}{}
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for n := 1; ; n++ {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					reply, keep := script(c, n, line[:len(line)-1])
					if reply != "" {
						if _, err := c.Write([]byte(reply)); err != nil {
							return
						}
					}
					if !keep {
						return
					}
				}
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
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// echoLine is what a well-behaved server named name answers.
func echoLine(name, line string) string { return name + " " + line + "\n" }

// closedPort returns a loopback port that nothing answers on for the rest
// of the test: a TCP socket is bound to it but never listens (connections
// are refused) and a UDP socket is bound to it but never read (datagrams
// vanish). Holding the port, rather than closing a listener and hoping,
// keeps parallel tests' listeners and clients' own ephemeral ports off it.
func closedPort(t *testing.T) netip.AddrPort {
	t.Helper()
	for range 20 {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		lo := [4]byte{127, 0, 0, 1}
		if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: lo}); err != nil {
			_ = syscall.Close(fd)
			t.Fatal(err)
		}
		sa, err := syscall.Getsockname(fd)
		if err != nil {
			_ = syscall.Close(fd)
			t.Fatal(err)
		}
		ap := netip.AddrPortFrom(netip.AddrFrom4(lo), uint16(sa.(*syscall.SockaddrInet4).Port))
		u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
		if err != nil { // the UDP port is taken: try another
			_ = syscall.Close(fd)
			continue
		}
		t.Cleanup(func() {
			_ = u.Close()
			_ = syscall.Close(fd)
		})
		return ap
	}
	t.Fatal("no loopback port free for both TCP and UDP in 20 tries")
	return netip.AddrPort{}
}

// startHolder runs a holder; the returned func stops it and waits.
func startHolder(t *testing.T, cfg HoldConfig) (*Holder, func()) {
	t.Helper()
	h, err := NewHolder(cfg)
	if err != nil {
		t.Fatalf("NewHolder: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := h.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Errorf("holder did not stop within 5s")
			}
		})
	}
	t.Cleanup(stop)
	return h, stop
}

// waitReport polls the holder until cond holds, at most within; polling
// starts new report intervals, so use it only where they do not matter.
func waitReport(t *testing.T, h *Holder, within time.Duration, cond func(Report) bool) Report {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := h.Report()
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s; last report: %+v", within, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// hasIPv6Loopback reports whether ::1 can be bound here.
func hasIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

var errTimeout = errors.New("timeout")

// readLineWithin takes the next line from lines, waiting at most d.
func readLineWithin(lines <-chan string, d time.Duration) (string, error) {
	select {
	case l, ok := <-lines:
		if !ok {
			return "", errors.New("output closed")
		}
		return l, nil
	case <-time.After(d):
		return "", errTimeout
	}
}
