package health

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// quitGrace bounds the wait for the server's answer to our goodbye: the
// verdict is already known, and a server that does not answer must not
// stretch the attempt to its timeout.
const quitGrace = 250 * time.Millisecond

// mail wants a greeting line starting with want, then sends quit. With
// multiline, continuation lines ("220-...", RFC 5321 section 4.2) are read
// up to the last one.
func (p *prober) mail(want, quit string, multiline bool) error {
	c, stop, err := p.dial("tcp")
	if err != nil {
		return err
	}
	defer c.Close()
	defer stop()
	r := bufio.NewReader(io.LimitReader(c, maxReply))
	if err := p.greeting(r, want, multiline); err != nil {
		return err
	}
	// Saying goodbye spares the server a connection reset in its logs; its
	// failure does not make the server down.
	if _, err := io.WriteString(c, quit); err == nil {
		d := time.Now().Add(quitGrace)
		if end, ok := p.ctx.Deadline(); ok && end.Before(d) {
			d = end
		}
		_ = c.SetReadDeadline(d)
		_, _ = r.ReadString('\n')
	}
	return nil
}

// greeting reads the server's greeting from r and checks it starts with want.
func (p *prober) greeting(r *bufio.Reader, want string, multiline bool) error {
	line, err := readLine(r)
	if err != nil {
		return p.fail("greeting", err)
	}
	if !strings.HasPrefix(line, want) {
		return fmt.Errorf("greeting %s, want %q", quote(line), want)
	}
	for multiline && len(line) > len(want) && line[len(want)] == '-' {
		if line, err = readLine(r); err != nil {
			return p.fail("greeting", err)
		}
		if !strings.HasPrefix(line, want) {
			return fmt.Errorf("greeting continues with %s, want %q", quote(line), want)
		}
	}
	return nil
}

// readLine reads one line without its line end; a last line without one
// counts, but not reading nothing.
func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
		if errors.Is(err, io.EOF) {
			return "", errors.New("connection closed before a line came")
		}
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
