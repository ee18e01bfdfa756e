package health

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// script writes a shell script into dir and returns the command running
// it. The shell runs it, rather than the kernel, because executing a file
// just written races with other tests' forks (ETXTBSY).
func script(t *testing.T, dir, name, body string) []string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"/bin/sh", path}
}

func TestProbeExternal(t *testing.T) {
	dir := t.TempDir()
	exit := func(code int) []string {
		return script(t, dir, "exit"+strconv.Itoa(code), "echo 'went wrong\nbadly' >&2\nexit "+strconv.Itoa(code)+"\n")
	}
	target := Target{Addr: netip.MustParseAddrPort("127.0.0.1:8080"), VIP: netip.MustParseAddr("10.0.0.1"), VPort: 80}
	tests := []struct {
		name    string
		command []string
		dynamic bool
		up      bool
		weight  int
		errHas  string
	}{
		{name: "exit 0", command: exit(0), up: true, weight: -1},
		{name: "exit 1", command: exit(1), weight: -1, errHas: "exited 1: went wrong badly"},
		{name: "exit 7", command: exit(7), weight: -1, errHas: "exited 7"},
		{name: "dynamic, exit 0", command: exit(0), dynamic: true, up: true, weight: -1},
		{name: "dynamic, exit 1", command: exit(1), dynamic: true, weight: -1, errHas: "exited 1"},
		{name: "dynamic, exit 2", command: exit(2), dynamic: true, up: true, weight: 0},
		{name: "dynamic, exit 7", command: exit(7), dynamic: true, up: true, weight: 5},
		{name: "dynamic, exit 255", command: exit(255), dynamic: true, up: true, weight: 253},
		{name: "killed", command: script(t, dir, "kill", "kill -TERM $$\n"), weight: -1, errHas: "signal: terminated"},
		{name: "not found", command: []string{filepath.Join(dir, "missing")}, weight: -1, errHas: "cannot run"},
		{name: "no command", weight: -1, errHas: "no command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := Spec{Kind: KindExternal, Timeout: okTimeout, Command: tt.command, DynamicWeight: tt.dynamic}
			r, _ := runProbe(t, t.Context(), s, target)
			wantResult(t, r, tt.up, tt.errHas)
			if r.Weight != tt.weight {
				t.Errorf("weight %d, want %d", r.Weight, tt.weight)
			}
		})
	}
}

func TestProbeExternalArguments(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "got")
	cmd := script(t, dir, "args", `echo "$@" > "$1"`+"\n")
	cmd = append(cmd, out)
	for _, tt := range []struct {
		name   string
		target Target
		want   string
	}{
		{"address", Target{Addr: netip.MustParseAddrPort("127.0.0.1:8080"), VIP: netip.MustParseAddr("10.0.0.1"), VPort: 80},
			"10.0.0.1 80 127.0.0.1 8080"},
		{"ipv6", Target{Addr: netip.MustParseAddrPort("[::1]:8080"), VIP: netip.MustParseAddr("2001:db8::1"), VPort: 443},
			"2001:db8::1 443 ::1 8080"},
		{"fwmark", Target{Addr: netip.MustParseAddrPort("127.0.0.1:0"), FWMark: 42}, "42 0 127.0.0.1 0"},
	} {
		r, _ := runProbe(t, t.Context(), Spec{Kind: KindExternal, Timeout: okTimeout, Command: cmd}, tt.target)
		wantResult(t, r, true, "")
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != out+" "+tt.want {
			t.Errorf("%s: arguments %q, want %q", tt.name, got, out+" "+tt.want)
		}
	}
}

// TestProbeExternalBare: a check of the director itself gets its own
// arguments only.
func TestProbeExternalBare(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "got")
	cmd := append(script(t, dir, "args", `echo "$@" > "$1"`+"\n"), out)
	r, _ := runProbe(t, t.Context(), Spec{Kind: KindExternal, Timeout: okTimeout, Command: cmd, Bare: true}, Target{})
	wantResult(t, r, true, "")
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != out {
		t.Errorf("arguments %q, want %q", got, out)
	}
}

func TestProbeExternalStderrBounded(t *testing.T) {
	cmd := script(t, t.TempDir(), "chatty", "head -c 1000000 /dev/zero | tr '\\0' x >&2\nexit 1\n")
	r, _ := runProbe(t, t.Context(), Spec{Kind: KindExternal, Timeout: okTimeout, Command: cmd}, Target{Addr: netip.MustParseAddrPort("127.0.0.1:80")})
	wantResult(t, r, false, "exited 1: xxxx")
	if n := len(r.Err.Error()); n > maxStderr+200 {
		t.Errorf("error of %d bytes", n)
	}
}

// TestProbeExternalTimeout checks a check running past its timeout is
// killed with what it started, and promptly.
func TestProbeExternalTimeout(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child")
	cmd := script(t, dir, "slow", "sleep 30 &\necho $! > "+pidFile+"\nsleep 30\n")
	s := Spec{Kind: KindExternal, Timeout: shortTimeout, Command: cmd}
	r, took := runProbe(t, t.Context(), s, Target{Addr: netip.MustParseAddrPort("127.0.0.1:80")})
	wantResult(t, r, false, "still running after 300ms, killed with its process group")
	if !errors.Is(r.Err, context.DeadlineExceeded) {
		t.Errorf("%v does not wrap context.DeadlineExceeded", r.Err)
	}
	// Killing only the shell would leave the child holding stderr open
	// until waitDelay.
	if took > shortTimeout+waitDelay/2 {
		t.Errorf("took %v with a timeout of %v", took, shortTimeout)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the check's child %d outlived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive tells whether process pid runs: a zombie, which the test's init
// process may never reap, is dead.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
