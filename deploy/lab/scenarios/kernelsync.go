package scenarios

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/ipvs"
	"github.com/peerlvs/peerlvs/ipvs/synclink"
)

// lvsConn is one line of `ipvsadm -Lnc`, the judge of what a kernel holds.
type lvsConn struct {
	Proto  string `json:"proto"`
	Expire string `json:"expire"`
	State  string `json:"state"`
	Source string `json:"source"`
	VIP    string `json:"virtual"`
	Dest   string `json:"destination"`
}

// key identifies a connection the way ipvsadm prints it.
func (c lvsConn) key() string { return c.Proto + " " + c.Source + " " + c.VIP + " " + c.Dest }

// parseIpvsadmConns parses `ipvsadm -Lnc` output.
func parseIpvsadmConns(out string) ([]lvsConn, error) {
	var conns []lvsConn
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "IPVS" || f[0] == "pro" {
			continue
		}
		if len(f) != 6 {
			return nil, fmt.Errorf("ipvsadm -Lnc: unexpected line %q", line)
		}
		conns = append(conns, lvsConn{Proto: f[0], Expire: f[1], State: f[2], Source: f[3], VIP: f[4], Dest: f[5]})
	}
	return conns, nil
}

// expireSeconds converts ipvsadm's mm:ss expiry column.
func expireSeconds(s string) int {
	var m, sec int
	if _, err := fmt.Sscanf(s, "%d:%d", &m, &sec); err != nil {
		return -1
	}
	return m*60 + sec
}

// syncLink is a director's host-local sync link with the kernel threads on
// it, the arrangement syncd uses (DESIGN.md).
type syncLink struct {
	link *synclink.Link
	cfg  synclink.LinkConfig
	h    *ipvs.Handle
}

// openSyncLink creates the link in ns and starts the requested kernel
// threads on it: the master sends to Group:MasterPort, the backup listens on
// Group:BackupPort.
func openSyncLink(t *testing.T, ns *lab.NS, syncID uint8, states ...ipvs.DaemonState) *syncLink {
	t.Helper()
	s := &syncLink{}
	if err := ns.Do(func() error {
		var err error
		s.link, err = synclink.SetupLink(synclink.LinkConfig{})
		return err
	}); err != nil {
		t.Fatalf("set up the sync link in %s: %v", ns.Name, err)
	}
	s.cfg = s.link.Config()
	h, err := ipvs.OpenNamed(ns.Name)
	if err != nil {
		t.Fatalf("open IPVS in %s: %v", ns.Name, err)
	}
	s.h = h
	for _, st := range states {
		port := s.cfg.MasterPort
		if st == ipvs.Backup {
			port = s.cfg.BackupPort
		}
		if err := h.StartDaemon(ipvs.DaemonConfig{State: st, Interface: s.cfg.Name, SyncID: syncID, Group: s.cfg.Group, Port: port}); err != nil {
			t.Fatalf("in %s: %v", ns.Name, err)
		}
	}
	return s
}

// captureFrames reads what the kernel master sends until ctx ends.
func captureFrames(ctx context.Context, tap *synclink.Tap) ([][]byte, error) {
	var frames [][]byte
	buf := make([]byte, synclink.MaxFrame)
	for {
		n, err := tap.ReadFrame(ctx, buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return frames, nil
			}
			return frames, err
		}
		frames = append(frames, append([]byte(nil), buf[:n]...))
	}
}

// openTap opens a tap on the master's frames inside ns.
func openTap(t *testing.T, ns *lab.NS, s *syncLink) *synclink.Tap {
	t.Helper()
	var tap *synclink.Tap
	if err := ns.Do(func() error {
		var err error
		tap, err = synclink.OpenTap(s.cfg.Name, s.cfg.Group, s.cfg.MasterPort)
		return err
	}); err != nil {
		t.Fatalf("open the tap in %s: %v", ns.Name, err)
	}
	return tap
}

// waitFor polls cond every 100 ms until it holds or the timeout passes. In
// the emulated guest, keep cond cheap (a file read, a netlink dump, an HTTP
// question to a daemon): an exec per poll competes with the daemons whose
// progress it waits for.
func waitFor(timeout time.Duration, cond func() bool) bool {
	return waitEvery(timeout, 100*time.Millisecond, cond)
}

// waitEvery is waitFor with the poll interval given.
func waitEvery(timeout, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
}
