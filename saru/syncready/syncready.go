// Package syncready tells saru whether the local syncd has received the
// whole live connection table, so that a director takes buckets only once it
// can carry every connection in them. It asks syncd's local status endpoint;
// it must not decide anything about ownership itself.
package syncready

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Source is a controller.ReadinessSource backed by syncd's GET /ready.
//
// A director whose syncd never answers would otherwise stay out of the fleet
// forever, so after Timeout since Start it counts as ready anyway (the
// design's "bulk resync complete, or a bounded timeout"); Timeout 0 waits for
// syncd without a bound.
//
// With BindURL, a ready syncd is also asked to write the entries it held
// back until the kernel held their services (syncd's POST /bind), and
// counts as ready only once it has: a director must not take buckets whose
// connections are not in its kernel. Ask only once the services this
// director declares are in the kernel.
type Source struct {
	URL     string // e.g. http://127.0.0.1:9476/ready
	BindURL string // e.g. http://127.0.0.1:9476/bind; "" not to ask
	Timeout time.Duration
	Start   time.Time
	Client  *http.Client // nil: a client with a 2 s timeout
}

// Ready implements controller.ReadinessSource. An unreachable syncd is not an
// error: before the timeout it only means "not yet".
func (s Source) Ready(ctx context.Context) (bool, error) {
	if s.Timeout > 0 && time.Since(s.Start) >= s.Timeout {
		return true, nil
	}
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 2 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return false, fmt.Errorf("syncd readiness URL %q: %w", s.URL, err)
	}
	code, ok := do(c, req)
	if !ok || code != http.StatusOK || s.BindURL == "" {
		return ok && code == http.StatusOK, nil
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, s.BindURL, nil)
	if err != nil {
		return false, fmt.Errorf("syncd bind URL %q: %w", s.BindURL, err)
	}
	code, ok = do(c, req)
	// A syncd older than POST /bind has no way to bind; waiting for it
	// would only hold the director back until the timeout.
	return ok && (code == http.StatusOK || code == http.StatusNotFound || code == http.StatusMethodNotAllowed), nil
}

// do sends req and returns the status code; false if syncd did not answer.
func do(c *http.Client, req *http.Request) (int, bool) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, true
}
