package health

import (
	"bufio"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

const (
	// maxBody bounds the body read for the body checks.
	maxBody = 1 << 20
	// maxHeader bounds the response header (about: give or take a
	// buffer).
	maxHeader = 64 << 10
	userAgent = "PeerLVS-health/1"
)

func (p *prober) http() error {
	h := p.spec.HTTP
	method := h.Method
	if method == "" {
		method = http.MethodGet
	}
	u, err := p.url()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(p.ctx, method, u, nil)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	req.Host = h.Host
	req.Header.Set("User-Agent", userAgent)
	req.Close = true

	// One request on a connection of its own, without http.Transport: a
	// transport logs through the log package when a server speaks before
	// it is asked, and runs goroutines of its own. Written this way, the
	// attempt tests connecting, follows no redirect, uses no proxy from the
	// environment, and asks for no compression (the digest is of the body
	// as keepalived, which does not ask either, gets it).
	c, stop, err := p.dial("tcp")
	if err != nil {
		return err
	}
	defer c.Close()
	defer stop()
	if p.spec.Kind == KindHTTPS {
		cfg := &tls.Config{
			// Real servers are addressed by IP and often have self-signed
			// certificates; keepalived and ldirectord do not verify either.
			InsecureSkipVerify: !h.Verify,
			ServerName:         serverName(h),
		}
		if cfg.ServerName == "" && h.Verify {
			// Verify the certificate against the address, as a browser
			// would for https://10.1.0.2/; no SNI is sent for an IP.
			cfg.ServerName = p.target.Addr.Addr().WithZone("").String()
		}
		tc := tls.Client(c, cfg)
		defer tc.Close()
		if err := tc.Handshake(); err != nil {
			return p.fail("tls handshake", err)
		}
		c = tc
	}
	if err := req.Write(c); err != nil {
		return p.fail("request", err)
	}
	// The header is bounded here, the body by the reads below; the
	// bufio.Reader reads a buffer ahead.
	lim := &capReader{r: c, n: maxHeader + 4096}
	br := bufio.NewReaderSize(lim, 4096)
	var resp *http.Response
	for {
		if resp, err = http.ReadResponse(br, req); err != nil {
			return p.fail("response", err)
		}
		// Informational responses (103 Early Hints) come before the one
		// that counts.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	defer resp.Body.Close()
	lim.n = math.MaxInt64

	if !goodStatus(resp.StatusCode, h.Status) {
		where := ""
		if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode/100 == 3 {
			where = " to " + quote(loc)
		}
		return fmt.Errorf("status %d%s, want %s", resp.StatusCode, where, wantStatus(h.Status))
	}
	if h.Body == "" && h.BodyRegex == nil && h.Digest == "" {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return p.fail("body", err)
	}
	if h.Digest != "" {
		if len(body) > maxBody {
			return fmt.Errorf("body longer than %d MiB, too long for its digest", maxBody>>20)
		}
		sum := md5.Sum(body)
		if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, h.Digest) {
			return fmt.Errorf("body MD5 %s, want %s", got, strings.ToLower(h.Digest))
		}
	}
	body = body[:min(len(body), maxBody)]
	if h.Body != "" && !strings.Contains(string(body), h.Body) {
		return fmt.Errorf("body %s lacks %q", quote(body), h.Body)
	}
	if h.BodyRegex != nil && !h.BodyRegex.Match(body) {
		return fmt.Errorf("body %s does not match %q", quote(body), h.BodyRegex)
	}
	return nil
}

// url is the request's URL: the real server's address, the path and query
// of the spec.
func (p *prober) url() (string, error) {
	scheme := "http"
	if p.spec.Kind == KindHTTPS {
		scheme = "https"
	}
	path := p.spec.HTTP.Path
	if path == "" {
		path = "/"
	}
	a := p.target.Addr.Addr()
	host := a.WithZone("").String()
	if a.Is6() {
		host = "[" + host
		if z := a.Zone(); z != "" {
			host += "%25" + url.PathEscape(z)
		}
		host += "]"
	}
	u, err := url.Parse(scheme + "://" + host + ":" + strconv.Itoa(int(p.target.Addr.Port())) + path)
	if err != nil {
		return "", fmt.Errorf("path %q: %w", path, err)
	}
	return u.String(), nil
}

// serverName is the TLS server name: SNI, else the Host header without
// its port, else none (the transport then verifies the IP).
func serverName(h HTTPSpec) string {
	if h.SNI != "" {
		return h.SNI
	}
	if host, _, err := net.SplitHostPort(h.Host); err == nil {
		return strings.Trim(host, "[]")
	}
	return strings.Trim(h.Host, "[]")
}

// capReader reads from r until n bytes came, then fails.
type capReader struct {
	r io.Reader
	n int64
}

func (c *capReader) Read(b []byte) (int, error) {
	if c.n <= 0 {
		return 0, fmt.Errorf("response header longer than %d KiB", maxHeader>>10)
	}
	n, err := c.r.Read(b[:min(int64(len(b)), c.n)])
	c.n -= int64(n)
	return n, err
}

func goodStatus(code int, good []int) bool {
	if len(good) == 0 {
		return code >= 200 && code <= 299
	}
	return slices.Contains(good, code)
}

func wantStatus(good []int) string {
	if len(good) == 0 {
		return "2xx"
	}
	s := make([]string, len(good))
	for i, c := range good {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, " or ")
}
