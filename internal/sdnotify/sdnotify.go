// Package sdnotify is a minimal sd_notify(3) client: it tells systemd that
// a Type=notify service is ready (READY=1) or stopping (STOPPING=1) by
// sending one datagram to the unix socket named in $NOTIFY_SOCKET. It has
// no cgo and no dependency beyond the standard library.
//
// When $NOTIFY_SOCKET is unset (not started by systemd, or Type=simple)
// every call is a no-op that reports false, so daemons call it
// unconditionally. A leading '@' names a socket in the abstract namespace.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// States understood by systemd (see sd_notify(3)).
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Notify sends state to $NOTIFY_SOCKET. It reports whether a notification
// was sent; (false, nil) means $NOTIFY_SOCKET is unset.
func Notify(state string) (bool, error) {
	return NotifySocket(os.Getenv("NOTIFY_SOCKET"), state)
}

// NotifySocket sends state to the socket at path ("" is a no-op). A path
// starting with '@' is in the abstract namespace.
func NotifySocket(path, state string) (bool, error) {
	if path == "" {
		return false, nil
	}
	if path[0] != '/' && path[0] != '@' {
		return false, fmt.Errorf("sdnotify: NOTIFY_SOCKET %q: want an absolute path or @abstract name", path)
	}
	// The syscall package turns a leading '@' into the abstract
	// namespace's NUL byte.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sdnotify: %w", err)
	}
	return true, nil
}

// NotifyWhen polls cond every interval and sends state once it holds, or
// returns when ctx is done. It is meant to run on its own goroutine.
func NotifyWhen(ctx context.Context, interval time.Duration, cond func() bool, state string) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			_, _ = Notify(state)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// HandlerOK returns a condition that is true when h answers GET path with
// 200, served in-process (no socket). It suits a daemon's own /ready.
func HandlerOK(h http.Handler, path string) func() bool {
	return func() bool {
		req, err := http.NewRequest(http.MethodGet, path, nil)
		if err != nil {
			return false
		}
		w := &statusWriter{header: http.Header{}}
		h.ServeHTTP(w, req)
		return w.code == 0 || w.code == http.StatusOK
	}
}

// statusWriter records the status code and discards the body.
type statusWriter struct {
	header http.Header
	code   int
}

func (w *statusWriter) Header() http.Header { return w.header }
func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return len(b), nil
}
