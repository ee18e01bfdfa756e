package main

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/peerlvs/peerlvs/deploy/lab/traffic"
)

func TestRunExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"no command", nil, 2},
		{"unknown command", []string{"flood"}, 2},
		{"help", []string{"help"}, 0},
		{"flag help", []string{"hold", "-h"}, 0},
		{"unknown flag", []string{"hold", "-target", "127.0.0.1:80", "-bogus"}, 2},
		{"stray argument", []string{"hold", "-target", "127.0.0.1:80", "extra"}, 2},
		{"hold without target", []string{"hold"}, 2},
		{"hold with a bad source", []string{"hold", "-target", "127.0.0.1:80", "-source-ips", "nope"}, 2},
		{"hold with stall beyond break", []string{"hold", "-target", "127.0.0.1:80", "-stall", "30s"}, 2},
		{"echo-server without listen", []string{"echo-server"}, 2},
		{"echo-server with a bad name", []string{"echo-server", "-listen", "127.0.0.1:0", "-name", "a b"}, 1},
		{"udp without target", []string{"udp"}, 2},
		{"udp with no flows", []string{"udp", "-target", "127.0.0.1:80", "-flows", "0"}, 2},
		{"hog without share", []string{"hog"}, 2},
		{"hog of a whole CPU", []string{"hog", "-share", "100"}, 2},
		{"hog without loops", []string{"hog", "-share", "10", "-loops", "0"}, 2},
	}
	for _, tc := range tests {
		var out, errs bytes.Buffer
		if code := run(tc.args, strings.NewReader(""), &out, &errs); code != tc.code {
			t.Errorf("%s: exit %d, want %d; stderr %q", tc.name, code, tc.code, errs.String())
		}
	}
}

func TestRunHoldQuits(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // nothing listens: the connection never opens, quickly
	var out, errs bytes.Buffer
	args := []string{"hold", "-target", ln.Addr().String(), "-conns", "1", "-connect-retries", "0", "-per-conn=false", "-duration", "5s"}
	if code := run(args, strings.NewReader("report\nquit\n"), &out, &errs); code != 0 {
		t.Fatalf("exit %d; stderr %q", code, errs.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want two reports, got %q", out.String())
	}
	var r traffic.Report
	if err := json.Unmarshal([]byte(lines[1]), &r); err != nil || !r.Final || r.Conns != 1 || r.PerConn != nil {
		t.Errorf("final report %q (%v)", lines[1], err)
	}
}
