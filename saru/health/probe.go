package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// Limits on what a probe reads from a server, so that a misbehaving one
// cannot make the director buffer without bound.
const (
	// maxReply bounds a tcp, udp or mail reply.
	maxReply = 64 << 10
	// maxQuoted bounds the part of a reply quoted in an error.
	maxQuoted = 64
)

// Probe makes one attempt of check s against t, bounded by s.Timeout and ctx.
// A failed attempt's Err starts with the kind and the server, then says
// what went wrong: "http 10.1.0.2:80: status 503, want 2xx". Timeouts wrap
// context.DeadlineExceeded, a cancelled ctx context.Canceled, and a target
// without the port its kind needs ErrNoPort.
func Probe(ctx context.Context, s Spec, t Target) Result {
	// A spec fresh from WithDefaults has a kind; an empty one means the
	// same as there.
	if s.Kind == KindNone || s.Kind == "" {
		return Result{Up: true, Weight: -1}
	}
	start := time.Now()
	timeout := s.Timeout
	if timeout <= 0 {
		// An unresolved spec must not make every attempt fail at once.
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// Mapped IPv4 addresses would make the socket family disagree with
	// what the operator wrote and break source binding.
	s.Source = s.Source.Unmap()
	t.Addr = netip.AddrPortFrom(t.Addr.Addr().Unmap(), t.Addr.Port())
	p := &prober{ctx: ctx, start: start, spec: s, target: t}
	weight, err := p.run()
	r := Result{Up: err == nil, Weight: weight, Latency: time.Since(start)}
	if err != nil {
		r.Weight = -1
		r.Err = fmt.Errorf("%s %s: %w", s.Kind, p.where(), err)
	}
	return r
}

// prober is the state of one attempt.
type prober struct {
	ctx    context.Context // bounded by the spec's timeout
	start  time.Time
	spec   Spec
	target Target
}

// run makes the attempt: a nil error is up; the weight is -1 unless an
// external check sets one.
func (p *prober) run() (int, error) {
	s, t := p.spec, p.target
	switch s.Kind {
	case KindTCP, KindUDP, KindHTTP, KindHTTPS, KindSMTP, KindPOP3, KindIMAP, KindDNS:
		if !t.Addr.Addr().IsValid() {
			return -1, errors.New("no real-server address")
		}
		if t.Addr.Port() == 0 {
			return -1, ErrNoPort
		}
	case KindICMP:
		if !t.Addr.Addr().IsValid() {
			return -1, errors.New("no real-server address")
		}
	}
	if s.Source.IsValid() && t.Addr.Addr().IsValid() && s.Kind != KindExternal &&
		s.Source.Is4() != t.Addr.Addr().Is4() {
		return -1, fmt.Errorf("source %v and real server %v are not of the same IP version", s.Source, t.Addr.Addr())
	}
	switch s.Kind {
	case KindTCP:
		return -1, p.tcp()
	case KindUDP:
		return -1, p.udp()
	case KindHTTP, KindHTTPS:
		return -1, p.http()
	case KindSMTP:
		return -1, p.mail("220", "QUIT\r\n", true)
	case KindPOP3:
		return -1, p.mail("+OK", "QUIT\r\n", false)
	case KindIMAP:
		return -1, p.mail("* OK", "a1 LOGOUT\r\n", false)
	case KindDNS:
		return -1, p.dns()
	case KindICMP:
		return -1, p.icmp()
	case KindExternal:
		return p.external()
	}
	return -1, fmt.Errorf("check type %q unknown; use one of %v", s.Kind, Kinds())
}

// where names the probed server in errors, as the operator wrote it.
func (p *prober) where() string {
	a := p.target.Addr
	if !a.Addr().IsValid() {
		return "(no address)"
	}
	if p.spec.Kind == KindICMP || (p.spec.Kind == KindExternal && a.Port() == 0) {
		return a.Addr().String()
	}
	return a.String()
}

// budget is how long the attempt was allowed: the spec's timeout, or less
// when the caller's context ends first.
func (p *prober) budget() time.Duration {
	d, _ := p.ctx.Deadline()
	return d.Sub(p.start).Round(time.Millisecond)
}

// fail says what went wrong in step op, naming a timeout or a cancellation
// as such rather than as the i/o error it surfaces as.
func (p *prober) fail(op string, err error) error {
	if errors.Is(p.ctx.Err(), context.Canceled) {
		return fmt.Errorf("%s: %w", op, context.Canceled)
	}
	if p.ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: no answer within %v: %w", op, p.budget(), context.DeadlineExceeded)
	}
	// A net.OpError repeats the addresses the caller already names.
	var oe *net.OpError
	if errors.As(err, &oe) {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			if se.Syscall == op {
				return se
			}
			return fmt.Errorf("%s: %w", op, se)
		}
		return fmt.Errorf("%s: %w", op, oe.Err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// dialer dials from the spec's source, if any.
func (p *prober) dialer(network string) *net.Dialer {
	// Keep-alive probes are pointless on a connection that lives for one
	// attempt.
	d := &net.Dialer{KeepAlive: -1}
	if src := p.spec.Source; src.IsValid() {
		ap := netip.AddrPortFrom(src, 0)
		switch network {
		case "tcp":
			d.LocalAddr = net.TCPAddrFromAddrPort(ap)
		case "udp":
			d.LocalAddr = net.UDPAddrFromAddrPort(ap)
		}
	}
	return d
}

// dial connects to the target from the spec's source; the connection's i/o
// ends with the attempt: call the returned stop before closing it.
func (p *prober) dial(network string) (c net.Conn, stop func(), err error) {
	c, err = p.dialer(network).DialContext(p.ctx, network, p.target.Addr.String())
	if err != nil {
		return nil, nil, p.fail("connect", err)
	}
	return c, watch(p.ctx, c), nil
}

// watch makes c's pending and future i/o fail when ctx ends: at its
// deadline through c's own deadline, and on an early cancellation by
// moving that deadline to the past. The returned stop waits for the
// cancellation hook, so that no goroutine outlives the probe.
func watch(ctx context.Context, c interface{ SetDeadline(time.Time) error }) (stop func()) {
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	done := make(chan struct{})
	stopHook := context.AfterFunc(ctx, func() {
		defer close(done)
		_ = c.SetDeadline(time.Unix(1, 0))
	})
	return func() {
		if !stopHook() {
			<-done
		}
	}
}

func (p *prober) tcp() error {
	c, stop, err := p.dial("tcp")
	if err != nil {
		return err
	}
	defer c.Close()
	defer stop()
	if len(p.spec.Send) > 0 {
		if _, err := c.Write(p.spec.Send); err != nil {
			return p.fail("send", err)
		}
	}
	if p.spec.Expect == "" {
		return nil
	}
	return p.expect(c, p.spec.Expect)
}

func (p *prober) udp() error {
	c, stop, err := p.dial("udp")
	if err != nil {
		return err
	}
	defer c.Close()
	defer stop()
	// An empty Send is an empty datagram: some services answer any.
	if _, err := c.Write(p.spec.Send); err != nil {
		return p.udpFail("send", err)
	}
	buf := make([]byte, maxReply)
	n, err := c.Read(buf)
	if err != nil {
		return p.udpFail("reply", err)
	}
	if want := p.spec.Expect; want != "" && !bytes.Contains(buf[:n], []byte(want)) {
		return fmt.Errorf("reply %s lacks %q", quote(buf[:n]), want)
	}
	return nil
}

// udpFail names the ICMP port unreachable that a connected UDP socket
// reports as ECONNREFUSED.
func (p *prober) udpFail(op string, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: port unreachable (ICMP): %w", op, syscall.ECONNREFUSED)
	}
	return p.fail(op, err)
}

// expect reads from r until want appears, r ends, maxReply bytes came or
// the attempt ends.
func (p *prober) expect(r io.Reader, want string) error {
	w := []byte(want)
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= maxReply {
				return fmt.Errorf("reply %s lacks %q in its first %d KiB", quote(buf), want, maxReply>>10)
			}
			buf = slices.Grow(buf, min(cap(buf), maxReply-len(buf)))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		// Only the new bytes and the overlap with the old can complete a match.
		if bytes.Contains(buf[max(0, len(buf)-n-len(w)+1):], w) {
			return nil
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return fmt.Errorf("reply %s lacks %q", quote(buf), want)
		case len(buf) > 0:
			return fmt.Errorf("reply %s lacks %q: %w", quote(buf), want, p.fail("read", err))
		default:
			return p.fail("read", err)
		}
	}
}

// quote shows the start of a server's reply safely in an error.
func quote[T string | []byte](b T) string {
	if len(b) > maxQuoted {
		return strconv.Quote(string(b[:maxQuoted])) + "..."
	}
	return strconv.Quote(string(b))
}
