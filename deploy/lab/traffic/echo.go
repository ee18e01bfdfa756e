package traffic

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// EchoConfig configures an echo server.
type EchoConfig struct {
	// Listen is IP:PORT. The IP must be given (0.0.0.0 or [::] for all
	// addresses) so that the address family is explicit; port 0 picks one.
	Listen string
	// Name prefixes every reply; one word.
	Name string
	// UDP serves UDP echo on the same port as TCP.
	UDP bool
}

// EchoStats counts what an echo server handled; JSON names are stable.
type EchoStats struct {
	Name         string `json:"name"`
	Accepted     int64  `json:"accepted"`      // TCP connections
	Active       int64  `json:"active"`        // TCP connections open now
	Lines        int64  `json:"lines"`         // TCP lines echoed
	Datagrams    int64  `json:"datagrams"`     // UDP datagrams answered
	AcceptErrors int64  `json:"accept_errors"` // transient accept failures survived
}

// EchoServer answers every TCP line and UDP datagram with its name and the
// line, so that clients behind IPVS see which real server they reached.
type EchoServer struct {
	name string
	ln   *net.TCPListener
	udp  *net.UDPConn

	accepted, active, lines, datagrams, acceptErrors atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// ListenEcho binds the server's sockets; Serve then answers on them.
func ListenEcho(cfg EchoConfig) (*EchoServer, error) {
	if err := validName(cfg.Name); err != nil {
		return nil, err
	}
	ap, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: want IP:PORT: %w", cfg.Listen, err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	// tcp4/udp4 rather than tcp/udp: Go would make a wildcard IPv4 listener
	// a dual-stack IPv6 socket, and IPv4 source-address control on UDP
	// replies needs a plain IPv4 socket.
	tcpNet, udpNet := "tcp4", "udp4"
	if ap.Addr().Is6() {
		tcpNet, udpNet = "tcp6", "udp6"
	}
	s := &EchoServer{name: cfg.Name, conns: make(map[net.Conn]struct{})}
	// With port 0 the TCP port is picked first and UDP may find it taken;
	// a few fresh picks make that practically impossible.
	tries := 1
	if ap.Port() == 0 && cfg.UDP {
		tries = 5
	}
	for i := 0; i < tries; i++ {
		s.ln, err = net.ListenTCP(tcpNet, net.TCPAddrFromAddrPort(ap))
		if err != nil {
			return nil, fmt.Errorf("listen on tcp %s: %w", ap, err)
		}
		if !cfg.UDP {
			return s, nil
		}
		port := s.ln.Addr().(*net.TCPAddr).Port
		s.udp, err = listenUDPEcho(udpNet, netip.AddrPortFrom(ap.Addr(), uint16(port)))
		if err == nil {
			return s, nil
		}
		s.ln.Close()
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, fmt.Errorf("listen on udp %s: %w", ap, err)
}

// Addr is the TCP address the server listens on.
func (s *EchoServer) Addr() netip.AddrPort {
	return s.ln.Addr().(*net.TCPAddr).AddrPort()
}

// Stats returns the counters so far.
func (s *EchoServer) Stats() EchoStats {
	return EchoStats{
		Name:         s.name,
		Accepted:     s.accepted.Load(),
		Active:       s.active.Load(),
		Lines:        s.lines.Load(),
		Datagrams:    s.datagrams.Load(),
		AcceptErrors: s.acceptErrors.Load(),
	}
}

// Serve answers until ctx ends, then closes the listener and every
// connection (clients see the server die) and returns nil once all its
// goroutines are gone. It returns an error if a socket fails for good.
func (s *EchoServer) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Go(func() {
		if err := s.acceptLoop(ctx, &wg); err != nil {
			errc <- err
			cancel()
		}
	})
	if s.udp != nil {
		wg.Go(func() {
			if err := s.serveUDP(ctx); err != nil {
				errc <- err
				cancel()
			}
		})
	}
	<-ctx.Done()
	s.ln.Close()
	if s.udp != nil {
		s.udp.Close()
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

func (s *EchoServer) acceptLoop(ctx context.Context, wg *sync.WaitGroup) error {
	backoff := 5 * time.Millisecond
	for {
		c, err := s.ln.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Running out of descriptors or memory under a connection
			// storm passes; anything else means the listener is gone.
			if !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) &&
				!errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.ENOMEM) &&
				!errors.Is(err, syscall.ECONNABORTED) {
				return fmt.Errorf("accept: %w", err)
			}
			s.acceptErrors.Add(1)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		s.mu.Lock()
		if ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.accepted.Add(1)
		s.active.Add(1)
		wg.Go(func() {
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
			s.active.Add(-1)
		})
	}
}

// serveConn echoes lines until the client goes or the server closes the
// connection. Connections may idle for as long as the client likes: held
// connections are the point of the lab.
func (s *EchoServer) serveConn(c net.Conn) {
	br := bufio.NewReaderSize(c, maxLine)
	bw := bufio.NewWriterSize(c, maxLine+len(s.name)+2)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than maxLine is not lab traffic: hang up
			// rather than buffer it.
			bw.Flush()
			return
		}
		if len(line) > 0 {
			bw.WriteString(s.name)
			bw.WriteByte(' ')
			bw.Write(line)
			if line[len(line)-1] != '\n' {
				bw.WriteByte('\n')
			}
			s.lines.Add(1)
		}
		if err != nil {
			bw.Flush()
			return
		}
		// Flush once the client's burst is consumed, not per line.
		if br.Buffered() == 0 {
			if bw.Flush() != nil {
				return
			}
		}
	}
}

// serveUDP echoes datagrams from the address they were sent to: on a real
// server in direct routing that is the VIP on lo, not the address the
// routing table would pick, and a client drops replies from anywhere else.
func (s *EchoServer) serveUDP(ctx context.Context) error {
	buf := make([]byte, 64<<10)
	oob := make([]byte, 256)
	out := make([]byte, 0, 64<<10+len(s.name)+1)
	for {
		n, dst, src, err := readUDPWithDst(s.udp, buf, oob)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// ICMP errors for earlier replies surface here; they concern
			// one client, not the server.
			if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
				errors.Is(err, syscall.ENETUNREACH) {
				continue
			}
			return fmt.Errorf("udp read: %w", err)
		}
		out = append(out[:0], s.name...)
		out = append(out, ' ')
		out = append(out, buf[:n]...)
		if len(out) > len(buf) {
			out = out[:len(buf)]
		}
		s.datagrams.Add(1)
		// A failed send concerns one client (unreachable, buffer full):
		// UDP promises nothing, so drop it as the network would.
		writeUDPFromDst(s.udp, out, dst, src)
	}
}
