package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
)

const (
	// maxStderr bounds how much of an external check's stderr is kept.
	maxStderr = 4 << 10
	// waitDelay bounds the wait for an external check's stderr to close
	// once it has exited or been killed: a descendant that left its
	// process group may hold it open for ever.
	waitDelay = 250 * time.Millisecond
)

// external runs the spec's command; see KindExternal for the rules.
func (p *prober) external() (int, error) {
	s, t := p.spec, p.target
	if len(s.Command) == 0 || s.Command[0] == "" {
		return -1, errors.New("no command")
	}
	vip, vport := t.VIP.String(), strconv.Itoa(int(t.VPort))
	if !t.VIP.IsValid() {
		// A fwmark service has no address: ldirectord passes the mark in
		// its place, and port 0.
		vip, vport = strconv.FormatUint(uint64(t.FWMark), 10), "0"
	}
	rip := ""
	if t.Addr.Addr().IsValid() {
		rip = t.Addr.Addr().String()
	}
	args := slices.Concat(s.Command[1:], []string{vip, vport, rip, strconv.Itoa(int(t.Addr.Port()))})
	if s.Bare {
		args = s.Command[1:]
	}

	cmd := exec.CommandContext(p.ctx, s.Command[0], args...)
	// Its own process group, so that a timeout kills what the check
	// started too (a shell script's children), not just the check.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = waitDelay
	var stderr headWriter
	cmd.Stderr = &stderr
	err := cmd.Run()

	ps := cmd.ProcessState
	switch {
	case ps == nil:
		return -1, fmt.Errorf("cannot run %s: %w", s.Command[0], err)
	case ps.Exited():
		code := ps.ExitCode()
		switch {
		case code == 0:
			return -1, nil
		case s.DynamicWeight && code >= 2:
			return code - 2, nil
		}
		return -1, fmt.Errorf("%s exited %d%s", s.Command[0], code, stderr.suffix())
	case errors.Is(p.ctx.Err(), context.Canceled):
		return -1, fmt.Errorf("%s canceled, killed with its process group%s: %w", s.Command[0], stderr.suffix(), context.Canceled)
	case p.ctx.Err() != nil:
		return -1, fmt.Errorf("%s still running after %v, killed with its process group%s: %w", s.Command[0], p.budget(), stderr.suffix(), context.DeadlineExceeded)
	}
	return -1, fmt.Errorf("%s: %v%s", s.Command[0], ps, stderr.suffix())
}

// headWriter keeps the first maxStderr bytes written to it and discards
// the rest, so that a chatty check neither blocks nor fills memory.
type headWriter struct{ b []byte }

func (w *headWriter) Write(p []byte) (int, error) {
	if n := maxStderr - len(w.b); n > 0 {
		w.b = append(w.b, p[:min(n, len(p))]...)
	}
	return len(p), nil
}

// suffix is what the check said, fit for one line of an error: ": text".
func (w *headWriter) suffix() string {
	s := strings.ToValidUTF8(string(w.b), "?")
	s = strings.Join(strings.Fields(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)), " ")
	if s == "" {
		return ""
	}
	if len(w.b) == maxStderr {
		s += "..."
	}
	return ": " + s
}
