package traffic

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
	"unicode"
)

// maxLine bounds a line on the wire; protocol lines are a few dozen bytes,
// so anything longer is garbage and must not grow a buffer without end.
const maxLine = 4096

// Causes of failure, as they appear in broken_by and new_errors.
const (
	kindReset         = "reset"
	kindEOF           = "eof"
	kindTimeout       = "timeout"
	kindRefused       = "refused"
	kindUnreachable   = "unreachable"
	kindWrongReply    = "wrong_reply"
	kindServerChanged = "server_changed"
	kindError         = "error"
)

// replyError is a reply that arrived but is not the expected echo.
type replyError struct {
	kind string
	msg  string
}

func (e *replyError) Error() string { return e.msg }

// errKind sorts an error into the causes that tell a scenario what happened
// on the wire: an RST is a director that lost the connection, a timeout is a
// black hole, a wrong reply is a connection that reached another server.
func errKind(err error) string {
	var re *replyError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &re):
		return re.kind
	case errors.Is(err, syscall.ECONNREFUSED):
		return kindRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return kindReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return kindEOF
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return kindTimeout
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return kindUnreachable
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return kindTimeout
	}
	return kindError
}

// readLine reads one line without its newline. A line longer than maxLine
// is an error rather than a reason to buffer more.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case err == nil:
		return bytes.TrimSuffix(line[:len(line)-1], []byte("\r")), nil
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, &replyError{kind: kindWrongReply, msg: fmt.Sprintf("reply longer than %d bytes", maxLine)}
	case errors.Is(err, io.EOF) && len(line) > 0:
		return nil, fmt.Errorf("connection closed inside a line %s: %w", quote(line), io.ErrUnexpectedEOF)
	}
	return nil, err
}

// checkEcho verifies that reply is "NAME want" and returns NAME.
func checkEcho(reply []byte, want string) (string, error) {
	name, rest, ok := bytes.Cut(reply, []byte(" "))
	if !ok || len(name) == 0 || string(rest) != want {
		return "", &replyError{kind: kindWrongReply, msg: fmt.Sprintf("sent %q, got %s", want, quote(reply))}
	}
	return string(name), nil
}

// quote renders bytes from the network for an error message, short.
func quote(b []byte) string {
	const max = 64
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}

// ms converts a duration to the milliseconds of the reports, to the µs.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ParseAddrs parses a comma-separated list of IP addresses (the -source-ips
// flag). An empty string is an empty list.
func ParseAddrs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, err
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}

// parseTarget parses VIP:PORT and checks that source addresses can reach it:
// a family mismatch would otherwise show up as every connection failing.
func parseTarget(target string, sources []netip.Addr) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("target %q: want IP:PORT: %w", target, err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if ap.Port() == 0 || ap.Addr().IsUnspecified() {
		return netip.AddrPort{}, fmt.Errorf("target %q: need a concrete address and port", target)
	}
	for _, s := range sources {
		if s.Is4() != ap.Addr().Is4() {
			return netip.AddrPort{}, fmt.Errorf("source address %s and target %s are of different families", s, ap.Addr())
		}
	}
	return ap, nil
}

// validName keeps server names to one printable word, because the name ends
// at the first space of a reply.
func validName(name string) error {
	if name == "" {
		return errors.New("empty server name")
	}
	for _, r := range name {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("server name %q: want one word of printable characters", name)
		}
	}
	return nil
}
