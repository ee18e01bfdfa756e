package health

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const helloBody = "hello world"

// httpServer serves on host, over TLS with useTLS, until the test ends:
//
//	/             helloBody
//	/status/503   that status
//	/redirect     a 302 to /
//	/echo         what the request looked like: host=...;method=...;...
//	/big          2 MiB starting with "start"
func httpServer(t *testing.T, host string, useTLS bool) netip.AddrPort {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, helloBody) })
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		w.WriteHeader(code)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/", http.StatusFound) })
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		sni := ""
		if r.TLS != nil {
			sni = r.TLS.ServerName
		}
		from, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "host=%s;method=%s;sni=%s;query=%s;from=%s;ae=%s;",
			r.Host, r.Method, sni, r.URL.RawQuery, from, r.Header.Get("Accept-Encoding"))
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "start")
		w.Write(make([]byte, 2<<20))
	})
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(mux)
	ts.Listener.Close()
	ts.Listener = ln
	// The certificate check's failed handshakes are expected.
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	if useTLS {
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(ts.Close)
	return netAddrPort(ln.Addr())
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestProbeHTTP(t *testing.T) {
	for _, host := range loopbacks(t) {
		web := httpServer(t, host, false)
		tests := []struct {
			name   string
			h      HTTPSpec
			up     bool
			errHas string
		}{
			{name: "default", up: true},
			{name: "body", h: HTTPSpec{Body: "world"}, up: true},
			{name: "wrong body", h: HTTPSpec{Body: "moon"}, errHas: `body "hello world" lacks "moon"`},
			{name: "regex", h: HTTPSpec{BodyRegex: regexp.MustCompile(`^hel+o\s`)}, up: true},
			{name: "wrong regex", h: HTTPSpec{BodyRegex: regexp.MustCompile(`^world`)}, errHas: `does not match "^world"`},
			{name: "digest", h: HTTPSpec{Digest: md5hex(helloBody)}, up: true},
			{name: "digest in capitals", h: HTTPSpec{Digest: strings.ToUpper(md5hex(helloBody))}, up: true},
			{name: "wrong digest", h: HTTPSpec{Digest: md5hex("other")}, errHas: "body MD5 " + md5hex(helloBody) + ", want " + md5hex("other")},
			{name: "status", h: HTTPSpec{Path: "/status/503"}, errHas: "status 503, want 2xx"},
			{name: "status listed", h: HTTPSpec{Path: "/status/503", Status: []int{200, 503}}, up: true},
			{name: "status not listed", h: HTTPSpec{Path: "/status/204", Status: []int{200, 301}}, errHas: "status 204, want 200 or 301"},
			{name: "redirect not followed", h: HTTPSpec{Path: "/redirect"}, errHas: `status 302 to "/", want 2xx`},
			{name: "redirect judged by status", h: HTTPSpec{Path: "/redirect", Status: []int{302}}, up: true},
			{name: "host header", h: HTTPSpec{Path: "/echo", Host: "vhost.example.org", Body: "host=vhost.example.org;"}, up: true},
			{name: "default host header", h: HTTPSpec{Path: "/echo", Body: "host=" + web.String() + ";"}, up: true},
			{name: "method", h: HTTPSpec{Path: "/echo", Method: "POST", Body: "method=POST;"}, up: true},
			{name: "default method", h: HTTPSpec{Path: "/echo", Body: "method=GET;"}, up: true},
			{name: "no compression", h: HTTPSpec{Path: "/echo", Body: ";ae=;"}, up: true},
			{name: "query", h: HTTPSpec{Path: "/echo?a=1&b=2", Body: "query=a=1&b=2;"}, up: true},
			{name: "not found", h: HTTPSpec{Path: "/nowhere"}, errHas: "status 404, want 2xx"},
			{name: "big body, substring", h: HTTPSpec{Path: "/big", Body: "start"}, up: true},
			{name: "big body, digest", h: HTTPSpec{Path: "/big", Digest: md5hex("")}, errHas: "body longer than 1 MiB"},
		}
		for _, tt := range tests {
			t.Run(host+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				r, _ := runProbe(t, t.Context(), Spec{Kind: KindHTTP, Timeout: okTimeout, HTTP: tt.h}, Target{Addr: web})
				wantResult(t, r, tt.up, tt.errHas)
				if !tt.up && !strings.HasPrefix(r.Err.Error(), "http "+web.String()+": ") {
					t.Errorf("error %q does not name the check and server", r.Err)
				}
			})
		}
	}
}

func TestProbeHTTPS(t *testing.T) {
	for _, host := range loopbacks(t) {
		web := httpServer(t, host, true)
		tests := []struct {
			name   string
			h      HTTPSpec
			up     bool
			errHas string
		}{
			{name: "default", up: true},
			{name: "body", h: HTTPSpec{Body: helloBody}, up: true},
			{name: "sni", h: HTTPSpec{Path: "/echo", SNI: "sni.example.org", Host: "vhost.example.org", Body: "host=vhost.example.org;method=GET;sni=sni.example.org;"}, up: true},
			{name: "sni from host", h: HTTPSpec{Path: "/echo", Host: "vhost.example.org", Body: "sni=vhost.example.org;"}, up: true},
			{name: "sni from host without port", h: HTTPSpec{Path: "/echo", Host: "vhost.example.org:8443", Body: "host=vhost.example.org:8443;method=GET;sni=vhost.example.org;"}, up: true},
			{name: "no sni", h: HTTPSpec{Path: "/echo", Body: ";sni=;"}, up: true},
			{name: "status", h: HTTPSpec{Path: "/status/500"}, errHas: "status 500, want 2xx"},
			// httptest's certificate is signed by no authority the system knows.
			{name: "verify", h: HTTPSpec{Verify: true}, errHas: "certificate"},
		}
		for _, tt := range tests {
			t.Run(host+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				r, _ := runProbe(t, t.Context(), Spec{Kind: KindHTTPS, Timeout: okTimeout, HTTP: tt.h}, Target{Addr: web})
				wantResult(t, r, tt.up, tt.errHas)
			})
		}
	}
}

func TestProbeHTTPFailures(t *testing.T) {
	for _, host := range loopbacks(t) {
		quiet := serveTCP(t, host, silent)
		closed := closedPort(t, "tcp", host)
		garbage := serveTCP(t, host, func(c net.Conn) { io.WriteString(c, "SSH-2.0-not-http\r\n\r\n") })
		plain := httpServer(t, host, false)
		endless := serveTCP(t, host, func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\n")
			for {
				if _, err := io.WriteString(c, "X-Padding: "+strings.Repeat("x", 1000)+"\r\n"); err != nil {
					return
				}
			}
		})
		tests := []struct {
			name     string
			kind     Kind
			addr     netip.AddrPort
			errHas   string
			timedOut bool
		}{
			{name: "no answer", kind: KindHTTP, addr: quiet, errHas: "response: no answer within 300ms", timedOut: true},
			{name: "no TLS handshake", kind: KindHTTPS, addr: quiet, errHas: "tls handshake: no answer within 300ms", timedOut: true},
			{name: "closed port", kind: KindHTTP, addr: closed, errHas: "connect: connection refused"},
			{name: "not HTTP", kind: KindHTTP, addr: garbage, errHas: "response: malformed HTTP"},
			{name: "not TLS", kind: KindHTTPS, addr: plain, errHas: "tls handshake: tls: first record does not look like a TLS handshake"},
			{name: "endless header", kind: KindHTTP, addr: endless, errHas: "response header longer than 64 KiB"},
		}
		for _, tt := range tests {
			t.Run(host+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				s := Spec{Kind: tt.kind, Timeout: shortTimeout}
				r, took := runProbe(t, t.Context(), s, Target{Addr: tt.addr})
				wantResult(t, r, false, tt.errHas)
				wantTook(t, took, s.Timeout, tt.timedOut)
			})
		}
	}
}

// TestProbeHTTPEarlyHints checks informational responses are skipped.
func TestProbeHTTPEarlyHints(t *testing.T) {
	addr := serveTCP(t, "127.0.0.1", func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
	})
	r, _ := runProbe(t, t.Context(), Spec{Kind: KindHTTP, Timeout: okTimeout, HTTP: HTTPSpec{Body: "hello"}}, Target{Addr: addr})
	wantResult(t, r, true, "")
}

func TestProbeHTTPSource(t *testing.T) {
	web := httpServer(t, "127.0.0.1", false)
	s := Spec{Kind: KindHTTP, Timeout: okTimeout, Source: netip.MustParseAddr("127.0.0.2"),
		HTTP: HTTPSpec{Path: "/echo", Body: "from=127.0.0.2;"}}
	r, _ := runProbe(t, t.Context(), s, Target{Addr: web})
	wantResult(t, r, true, "")
}

func TestHTTPURL(t *testing.T) {
	for _, tt := range []struct {
		kind Kind
		addr string
		path string
		want string
	}{
		{KindHTTP, "10.1.0.2:80", "", "http://10.1.0.2:80/"},
		{KindHTTPS, "[2001:db8::2]:443", "/health?full=1", "https://[2001:db8::2]:443/health?full=1"},
		{KindHTTP, "[fe80::1%eth0]:8080", "/x", "http://[fe80::1%25eth0]:8080/x"},
	} {
		p := &prober{spec: Spec{Kind: tt.kind, HTTP: HTTPSpec{Path: tt.path}}, target: Target{Addr: netip.MustParseAddrPort(tt.addr)}}
		if got, err := p.url(); err != nil || got != tt.want {
			t.Errorf("%s %s %q: %q, %v; want %q", tt.kind, tt.addr, tt.path, got, err, tt.want)
		}
	}
}
