package sdnotify

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// listen opens a unixgram socket like systemd's notify socket.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 256)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

func TestNotifyPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	for _, st := range []string{Ready, Stopping} {
		sent, err := Notify(st)
		if !sent || err != nil {
			t.Fatalf("Notify(%q) = %v, %v", st, sent, err)
		}
		if got := recv(t, c); got != st {
			t.Fatalf("received %q, want %q", got, st)
		}
	}
}

func TestNotifyAbstract(t *testing.T) {
	name := fmt.Sprintf("@peerlvs-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	c := listen(t, name)
	t.Setenv("NOTIFY_SOCKET", name)
	sent, err := Notify(Ready)
	if !sent || err != nil {
		t.Fatalf("Notify = %v, %v", sent, err)
	}
	if got := recv(t, c); got != Ready {
		t.Fatalf("received %q", got)
	}
}

func TestNotifyUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Fatalf("unset: Notify = %v, %v; want a silent no-op", sent, err)
	}
}

func TestNotifyErrors(t *testing.T) {
	if _, err := NotifySocket("relative/path", Ready); err == nil {
		t.Fatal("relative path accepted")
	}
	missing := filepath.Join(t.TempDir(), "missing")
	if sent, err := NotifySocket(missing, Ready); sent || err == nil {
		t.Fatalf("missing socket: %v, %v; want an error", sent, err)
	}
}

func TestNotifyWhen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	var ready atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	cond := HandlerOK(mux, "/ready")
	if cond() {
		t.Fatal("HandlerOK true before ready")
	}
	done := make(chan struct{})
	go func() {
		NotifyWhen(context.Background(), 5*time.Millisecond, cond, Ready)
		close(done)
	}()
	time.Sleep(30 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("NotifyWhen returned before the condition held")
	default:
	}
	ready.Store(true)
	if got := recv(t, c); got != Ready {
		t.Fatalf("received %q", got)
	}
	<-done
}

func TestNotifyWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	NotifyWhen(ctx, time.Millisecond, func() bool { return false }, Ready) // must return
}
