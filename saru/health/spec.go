package health

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"time"
)

// Kind is what a check does to find a real server up.
type Kind string

// The kinds of checks, with ldirectord's and keepalived's in mind.
const (
	// KindNone never probes: the real server is always up (ldirectord's
	// checktype=on, or a service without checks).
	KindNone Kind = "none"
	// KindTCP connects; with Send it writes Send and, with Expect, wants
	// Expect in what comes back.
	KindTCP Kind = "tcp"
	// KindUDP sends Send (an empty datagram without it) and wants a reply
	// (containing Expect when set); an ICMP port-unreachable is down.
	KindUDP   Kind = "udp"
	KindHTTP  Kind = "http"
	KindHTTPS Kind = "https"
	// KindSMTP, KindPOP3 and KindIMAP want the protocol's greeting (220,
	// +OK, * OK) and then quit politely.
	KindSMTP Kind = "smtp"
	KindPOP3 Kind = "pop3"
	KindIMAP Kind = "imap"
	// KindDNS sends DNS.Name/DNS.Type and wants an answer with rcode
	// NOERROR (and at least one answer record).
	KindDNS Kind = "dns"
	// KindICMP sends an echo request and wants the reply.
	KindICMP Kind = "icmp"
	// KindExternal runs Command with ldirectord's arguments (VIP VPORT RIP
	// RPORT appended): exit 0 is up. With DynamicWeight, keepalived's
	// MISC_CHECK rule also applies: exit 2..255 is up with weight exit-2.
	KindExternal Kind = "external"
)

// Kinds lists every kind, for error messages and docs.
func Kinds() []Kind {
	return []Kind{KindNone, KindTCP, KindUDP, KindHTTP, KindHTTPS, KindSMTP, KindPOP3, KindIMAP, KindDNS, KindICMP, KindExternal}
}

// Spec is one real server's check, fully resolved (defaults applied,
// validated by Validate).
type Spec struct {
	Kind Kind
	// Interval is the time from the start of one check to the start of the
	// next; Timeout bounds one attempt.
	Interval time.Duration
	Timeout  time.Duration
	// Port overrides the real server's port (required for fwmark
	// services, whose real servers have none).
	Port uint16
	// Source, if valid, is the local address probes are sent from.
	Source netip.Addr
	// Retries is how many more attempts one check makes after a failed
	// one, RetryDelay apart, before it counts as failed.
	Retries    int
	RetryDelay time.Duration
	// Fall consecutive failed checks take an up server down; Rise
	// consecutive good ones bring a down server up.
	Fall int
	Rise int

	// Send and Expect: the payload of tcp, udp checks and what the reply
	// must contain (any reply when empty).
	Send   []byte
	Expect string

	HTTP HTTPSpec
	DNS  DNSSpec

	// Command is the external check's program and its own arguments.
	Command []string
	// DynamicWeight applies keepalived's MISC_CHECK misc_dynamic rule.
	DynamicWeight bool
	// Bare runs Command without ldirectord's VIP VPORT RIP RPORT: for
	// checks of the director itself (saru's fitness), which have no real
	// server.
	Bare bool
}

// HTTPSpec is an http or https check.
type HTTPSpec struct {
	Method string // GET when empty
	Path   string // "/" when empty
	// Host is the Host header (virtual host); the real server's address
	// when empty. SNI is the TLS server name; Host when empty.
	Host string
	SNI  string
	// Status lists the good status codes; 2xx when empty.
	Status []int
	// Body, if set, must occur in the response body; BodyRegex, if set,
	// must match it; Digest, if set, is the hex MD5 of the whole body
	// (keepalived's HTTP_GET digest).
	Body      string
	BodyRegex *regexp.Regexp
	Digest    string
	// Verify checks the server's certificate chain and name (keepalived
	// and ldirectord do not: off by default).
	Verify bool
}

// DNSSpec is a dns check.
type DNSSpec struct {
	Name string // the query name, e.g. "example.org."
	Type string // the record type, e.g. "A"; A when empty
	// TCP sends the query over TCP instead of UDP.
	TCP bool
}

// The defaults of Spec's timing, those of ldirectord (checkinterval 5,
// checktimeout 5 in practice 3 is kept below the interval).
const (
	DefaultInterval = 5 * time.Second
	DefaultTimeout  = 3 * time.Second
	DefaultFall     = 1
	DefaultRise     = 1
	// MinInterval keeps a fleet of checks from flooding real servers.
	MinInterval = 100 * time.Millisecond
)

// WithDefaults fills the unset timing fields.
func (s Spec) WithDefaults() Spec {
	if s.Kind == "" {
		s.Kind = KindNone
	}
	if s.Interval == 0 {
		s.Interval = DefaultInterval
	}
	if s.Timeout == 0 {
		s.Timeout = min(DefaultTimeout, s.Interval)
	}
	if s.Fall == 0 {
		s.Fall = DefaultFall
	}
	if s.Rise == 0 {
		s.Rise = DefaultRise
	}
	return s
}

// Validate names every problem of s (after WithDefaults), each as
// "field: problem; what to write".
func (s Spec) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !slices.Contains(Kinds(), s.Kind) {
		bad("type", "%q unknown; use one of %v", s.Kind, Kinds())
	}
	if s.Interval < MinInterval {
		bad("interval", "%v is below %v", s.Interval, MinInterval)
	}
	if s.Timeout <= 0 || s.Timeout > s.Interval {
		bad("timeout", "%v out of range; use more than 0 and at most the interval (%v)", s.Timeout, s.Interval)
	}
	if s.Retries < 0 || s.Retries > 10 {
		bad("retries", "%d out of range; use 0..10", s.Retries)
	}
	if s.RetryDelay < 0 {
		bad("retry_delay", "%v is negative", s.RetryDelay)
	}
	if d := time.Duration(s.Retries+1)*s.Timeout + time.Duration(s.Retries)*s.RetryDelay; d > s.Interval*4 {
		bad("retries", "%d retries of %v plus %v delays take %v, more than 4 intervals (%v); fewer retries or a longer interval", s.Retries, s.Timeout, s.RetryDelay, d, s.Interval*4)
	}
	if s.Fall < 1 || s.Fall > 100 {
		bad("fall", "%d out of range; use 1..100", s.Fall)
	}
	if s.Rise < 1 || s.Rise > 100 {
		bad("rise", "%d out of range; use 1..100", s.Rise)
	}
	switch s.Kind {
	case KindHTTP, KindHTTPS:
		for _, c := range s.HTTP.Status {
			if c < 100 || c > 599 {
				bad("status", "%d is not an HTTP status code", c)
			}
		}
		if s.HTTP.Digest != "" && !isHexMD5(s.HTTP.Digest) {
			bad("digest", "%q is not an MD5 digest (32 hex digits, as keepalived's genhash prints)", s.HTTP.Digest)
		}
		if s.HTTP.Path != "" && s.HTTP.Path[0] != '/' {
			bad("path", "%q must start with /", s.HTTP.Path)
		}
	case KindDNS:
		if s.DNS.Name == "" {
			bad("query", "missing; name the record the server must answer, e.g. example.org")
		}
	case KindExternal:
		if len(s.Command) == 0 || s.Command[0] == "" {
			bad("command", "missing; give the program (and its own arguments): it is run with VIP VPORT RIP RPORT appended")
		}
	}
	if s.DynamicWeight && s.Kind != KindExternal {
		bad("dynamic_weight", "only external checks set weights")
	}
	return errors.Join(errs...)
}

func isHexMD5(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// Target is what one check probes.
type Target struct {
	// Addr is the real server's address and port (the check port when the
	// spec overrides it).
	Addr netip.AddrPort
	// VIP and VPort are the virtual service's, for external checks
	// (VIP is invalid and VPort 0 for fwmark services).
	VIP   netip.Addr
	VPort uint16
	// FWMark is the virtual service's mark, 0 if it has an address.
	FWMark uint32
}

// Result is the outcome of one attempt.
type Result struct {
	Up bool
	// Weight is the weight an external check with DynamicWeight asked for
	// (exit code - 2); -1 when the check does not set one.
	Weight int
	// Latency is how long the attempt took.
	Latency time.Duration
	// Err says why the attempt failed (nil when Up).
	Err error
}

// ErrNoPort is returned for a check that needs a port and has none.
var ErrNoPort = errors.New("health: no port to check; set check port (fwmark services have no real-server port)")
