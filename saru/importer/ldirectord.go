package importer

import (
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/peerlvs/peerlvs/saru/health"
	"github.com/peerlvs/peerlvs/saru/services"
)

// Ldirectord reads the ldirectord configuration file name in fsys
// (ldirectord.cf, see ldirectord(8)) and translates its virtual services.
//
// Global settings apply to every virtual service wherever they stand in
// the file, as in ldirectord, which resolves them after reading the whole
// file. Lines indented under a virtual= line belong to it (ldirectord wants
// four spaces or a tab; any indentation is accepted here, and blank lines
// inside a section are allowed). Unknown directives are errors, as they
// are for ldirectord.
func Ldirectord(fsys fs.FS, name string) (*Result, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("read ldirectord configuration: %w", err)
	}
	p := &ldParser{t: newTranslation(name), file: name}
	if err := p.parse(string(data)); err != nil {
		return nil, err
	}
	for _, v := range p.virtuals {
		if err := p.translate(v); err != nil {
			return nil, err
		}
	}
	return p.t.finish()
}

// ldShared are the settings that are global and may be overridden in a
// virtual section.
type ldShared struct {
	checkTimeout     opt[int]
	negotiateTimeout opt[int]
	checkInterval    opt[int]
	checkCount       opt[int]
	failureCount     opt[int]
	quiescent        opt[bool]
	fallback         opt[ldFallback]
	fallback6        opt[ldFallback]
}

// ldFallback is a fallback= setting as read.
type ldFallback struct {
	addr    netip.Addr
	port    uint16 // 0: the virtual service's
	forward string
}

// ldVirtual is one virtual= section as read.
type ldVirtual struct {
	line   int
	text   string
	addr   netip.Addr
	port   uint16
	fwmark uint32
	is6    bool
	ldShared
	reals        []opt[string]
	request      opt[string]
	receive      opt[string]
	checkType    opt[string]
	checkCommand opt[string]
	checkPort    opt[uint16]
	scheduler    opt[string]
	schedFlags   opt[[]string]
	persistent   opt[int]
	netmask      opt[int]
	protocol     opt[string]
	ops          opt[bool]
	service      opt[string]
	httpMethod   opt[string]
	virtualHost  opt[string]
	serviceName  opt[string]
	comment      opt[string]
	// auth is the first of login, passwd, database, secret and load,
	// which saru's checks have no use for.
	auth opt[string]
}

type ldParser struct {
	t        *translation
	file     string
	global   ldShared
	fork     bool
	virtuals []*ldVirtual
	// redirects is set once the note on HTTP redirects is made: it holds
	// for every HTTP check, and once per file is enough.
	redirects bool
}

func (p *ldParser) errorf(line int, directive, format string, args ...any) error {
	return p.t.errorf(p.file, line, directive, format, args...)
}

func (p *ldParser) note(line int, format string, args ...any) {
	p.t.note(p.file, line, format, args...)
}

func (p *ldParser) parse(data string) error {
	var cur *ldVirtual
	for i, raw := range strings.Split(data, "\n") {
		line := i + 1
		text := stripHashComment(strings.TrimRight(raw, "\r"))
		if strings.TrimSpace(text) == "" {
			continue
		}
		name, value, err := p.directive(line, strings.TrimSpace(text))
		if err != nil {
			return err
		}
		if text[0] == ' ' || text[0] == '\t' {
			if cur == nil {
				return p.errorf(line, name, "indented, but there is no virtual= line above it; a virtual service's lines follow its virtual= line")
			}
			if err := p.virtualDirective(cur, line, name, value); err != nil {
				return err
			}
			continue
		}
		cur = nil
		if name == "virtual" || name == "virtual6" {
			v, err := p.virtual(line, name, value)
			if err != nil {
				return err
			}
			p.virtuals = append(p.virtuals, v)
			cur = v
			continue
		}
		if err := p.globalDirective(line, name, value); err != nil {
			return err
		}
	}
	return nil
}

// stripHashComment cuts a line at a # that is not inside double quotes.
// (ldirectord cuts at any #; keeping quoted ones lets a receive string
// contain one.)
func stripHashComment(s string) string {
	quoted := false
	for i, c := range s {
		switch c {
		case '"':
			quoted = !quoted
		case '#':
			if !quoted {
				return s[:i]
			}
		}
	}
	return s
}

// directive splits "name = value".
func (p *ldParser) directive(line int, s string) (name, value string, err error) {
	n := 0
	for n < len(s) && (s[n] >= 'a' && s[n] <= 'z' || s[n] >= '0' && s[n] <= '9' || s[n] == '_' || s[n] == '-') {
		n++
	}
	name, rest := s[:n], strings.TrimLeft(s[n:], " \t")
	if name == "" {
		return "", "", p.errorf(line, s, "not a directive; write name=value")
	}
	if rest == "" && name == "supervised" {
		return name, "yes", nil
	}
	value, ok := strings.CutPrefix(rest, "=")
	if !ok {
		return "", "", p.errorf(line, name, "missing =; write %s=value", name)
	}
	return name, strings.TrimSpace(value), nil
}

// unquote removes the double quotes ldirectord wants around strings.
func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

func (p *ldParser) positive(line int, name, value string) (int, error) {
	n, err := strconv.Atoi(value)
	if err != nil || n < 1 || n > 1000000 {
		return 0, p.errorf(line, name, "%q is not a positive whole number", value)
	}
	return n, nil
}

func (p *ldParser) yesNo(line int, name, value string) (bool, error) {
	switch value {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, p.errorf(line, name, "%q: write yes or no", value)
}

// shared handles a setting that is global or per virtual service; ok is
// false if name is none of them.
func (p *ldParser) shared(s *ldShared, line int, name, value string) (ok bool, err error) {
	var n int
	switch name {
	case "checktimeout", "negotiatetimeout", "connecttimeout", "checkinterval", "checkcount", "failurecount":
		if n, err = p.positive(line, name, value); err != nil {
			return true, err
		}
	}
	switch name {
	case "checktimeout":
		s.checkTimeout.put(n, line)
	case "negotiatetimeout":
		s.negotiateTimeout.put(n, line)
	case "connecttimeout":
		p.note(line, "connecttimeout is deprecated (ldirectord now refuses it); read as negotiatetimeout, which replaced it")
		s.negotiateTimeout.put(n, line)
	case "checkinterval":
		s.checkInterval.put(n, line)
	case "checkcount":
		s.checkCount.put(n, line)
	case "failurecount":
		s.failureCount.put(n, line)
	case "quiescent":
		b, err := p.yesNo(line, name, value)
		if err != nil {
			return true, err
		}
		s.quiescent.put(b, line)
	case "fallback", "fallback6":
		f, err := p.parseFallback(line, name, value)
		if err != nil {
			return true, err
		}
		if name == "fallback6" {
			s.fallback6.put(f, line)
		} else {
			s.fallback.put(f, line)
		}
	default:
		return false, nil
	}
	return true, nil
}

func (p *ldParser) globalDirective(line int, name, value string) error {
	if ok, err := p.shared(&p.global, line, name, value); ok {
		return err
	}
	switch name {
	case "fork":
		b, err := p.yesNo(line, name, value)
		if err != nil {
			return err
		}
		p.fork = b
	case "execute":
		p.note(line, "execute=%s starts ldirectord for another configuration; import that one separately", value)
	case "maintenancedir":
		p.note(line, "maintenancedir has no equivalent; to take a real server out, set its weight to 0")
	case "emailalert", "emailalertfreq", "emailalertstatus", "emailalertfrom", "smtp":
		p.note(line, "%s has no equivalent: saru sends no mail", name)
	case "fallbackcommand":
		p.note(line, "fallbackcommand has no equivalent: saru runs no command when all real servers are down")
	case "autoreload", "callback", "logfile", "supervised", "readdquiescent", "cleanstop":
		p.note(line, "%s=%s has no equivalent", name, value)
	default:
		return p.errorf(line, name, "unknown directive")
	}
	return nil
}

func (p *ldParser) virtual(line int, name, value string) (*ldVirtual, error) {
	v := &ldVirtual{line: line, text: name + "=" + value}
	if n, err := strconv.ParseUint(value, 10, 32); err == nil {
		if n == 0 {
			return nil, p.errorf(line, name, "a firewall mark is greater than 0")
		}
		v.fwmark, v.is6 = uint32(n), name == "virtual6"
		return v, nil
	}
	a, port, hasPort, err := splitHostPort(value)
	if err == nil && !hasPort {
		err = fmt.Errorf("%q has no port; write ip:port, [ipv6]:port or a firewall mark", value)
	}
	if err != nil {
		return nil, p.errorf(line, name, "%v", err)
	}
	v.addr, v.port, v.is6 = a, port, a.Is6()
	return v, nil
}

// splitHostPort reads ldirectord's ip[:port] and [ipv6][:port]; a port may
// be a well-known service name.
func splitHostPort(s string) (netip.Addr, uint16, bool, error) {
	host, port, hasPort := s, "", false
	if rest, ok := strings.CutPrefix(s, "["); ok {
		h, after, ok := strings.Cut(rest, "]")
		if !ok {
			return netip.Addr{}, 0, false, fmt.Errorf("%q: missing ]", s)
		}
		host = h
		if after != "" {
			port, hasPort = strings.CutPrefix(after, ":")
			if !hasPort {
				return netip.Addr{}, 0, false, fmt.Errorf("%q: unexpected %q after ]", s, after)
			}
		}
	} else if strings.Count(s, ":") == 1 {
		host, port, hasPort = strings.Cut(s, ":")
	}
	a, err := parseIP(host)
	if err != nil {
		return netip.Addr{}, 0, false, err
	}
	if !hasPort {
		return a, 0, false, nil
	}
	n, err := parsePort(port)
	if err != nil {
		return netip.Addr{}, 0, false, err
	}
	return a, n, true, nil
}

// parsePort reads a port number or one of the service names configs use
// (ldirectord resolved them through /etc/services; this package reads no
// system files, so only the common ones are known).
func parsePort(s string) (uint16, error) {
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		return uint16(n), nil
	}
	switch s {
	case "ftp":
		return 21, nil
	case "smtp":
		return 25, nil
	case "domain":
		return 53, nil
	case "http", "www":
		return 80, nil
	case "pop3":
		return 110, nil
	case "nntp":
		return 119, nil
	case "imap", "imap2":
		return 143, nil
	case "ldap":
		return 389, nil
	case "https":
		return 443, nil
	case "submission":
		return 587, nil
	case "ldaps":
		return 636, nil
	case "imaps":
		return 993, nil
	case "pop3s":
		return 995, nil
	case "mysql":
		return 3306, nil
	case "postgresql":
		return 5432, nil
	case "sip":
		return 5060, nil
	}
	return 0, fmt.Errorf("%q is not a port number", s)
}

// ldServiceForPort is ldirectord's default service= for a virtual port.
func ldServiceForPort(port uint16) string {
	switch port {
	case 21:
		return "ftp"
	case 25:
		return "smtp"
	case 53:
		return "dns"
	case 80:
		return "http"
	case 110:
		return "pop"
	case 119:
		return "nntp"
	case 143:
		return "imap"
	case 389:
		return "ldap"
	case 443:
		return "https"
	case 587:
		return "submission"
	case 636:
		return "ldaps"
	case 993:
		return "imaps"
	case 995:
		return "pops"
	case 1521:
		return "oracle"
	case 1812:
		return "radius"
	case 3128:
		return "http_proxy"
	case 3306:
		return "mysql"
	case 5060:
		return "sip"
	case 5432:
		return "pgsql"
	}
	return "none"
}

// ldPortForService is the port ldirectord checks when a real server has
// none (fwmark services) and no checkport is set.
func ldPortForService(service string) uint16 {
	for _, p := range []uint16{21, 25, 53, 80, 110, 119, 143, 389, 443, 587, 636, 993, 995, 1521, 1812, 3128, 3306, 5060, 5432} {
		if ldServiceForPort(p) == service {
			return p
		}
	}
	return 0
}

func (p *ldParser) parseFallback(line int, name, value string) (ldFallback, error) {
	fields := strings.Fields(value)
	if len(fields) == 0 || len(fields) > 2 {
		return ldFallback{}, p.errorf(line, name, "write ip[:port] [gate|masq|ipip]")
	}
	a, port, _, err := splitHostPort(fields[0])
	if err != nil {
		return ldFallback{}, p.errorf(line, name, "%v", err)
	}
	f := ldFallback{addr: a, port: port, forward: "gate"}
	if len(fields) == 2 {
		f.forward = fields[1]
		if !isLdForward(f.forward) {
			return ldFallback{}, p.errorf(line, name, "forwarding method %q: write gate, masq or ipip", f.forward)
		}
	}
	return f, nil
}

func isLdForward(s string) bool { return s == "gate" || s == "masq" || s == "ipip" }

func (p *ldParser) virtualDirective(v *ldVirtual, line int, name, value string) error {
	if ok, err := p.shared(&v.ldShared, line, name, value); ok {
		return err
	}
	nonEmpty := func(o *opt[string]) error {
		s := unquote(value)
		if s == "" {
			return p.errorf(line, name, "empty")
		}
		o.put(s, line)
		return nil
	}
	switch name {
	case "real", "real6":
		v.reals = append(v.reals, opt[string]{v: value, set: true, line: line})
	case "request":
		return nonEmpty(&v.request)
	case "receive":
		return nonEmpty(&v.receive)
	case "checkcommand":
		return nonEmpty(&v.checkCommand)
	case "virtualhost":
		return nonEmpty(&v.virtualHost)
	case "servicename":
		return nonEmpty(&v.serviceName)
	case "comment":
		v.comment.put(unquote(value), line)
	case "checktype":
		switch value {
		case "connect", "negotiate", "ping", "off", "on", "external", "external-perl":
		default:
			if _, err := p.positive(line, name, value); err != nil {
				return p.errorf(line, name, "%q: write connect, negotiate, ping, on, off, external, external-perl or a number", value)
			}
		}
		v.checkType.put(value, line)
	case "checkport":
		n, err := strconv.ParseUint(value, 10, 16)
		if err != nil || n == 0 {
			return p.errorf(line, name, "%q is not a port (1..65535)", value)
		}
		v.checkPort.put(uint16(n), line)
	case "scheduler":
		if !knownScheduler(value) {
			return p.errorf(line, name, "%q is not a scheduler saru knows", value)
		}
		v.scheduler.put(value, line)
	case "schedflags":
		flags := strings.Split(value, ",")
		for _, f := range flags {
			if !knownSchedFlag(f) {
				return p.errorf(line, name, "%q is not a scheduler flag (sh-fallback, sh-port, mh-fallback, mh-port, flag-1..flag-3)", f)
			}
		}
		v.schedFlags.put(flags, line)
	case "persistent":
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 || n > 1<<31-1 {
			return p.errorf(line, name, "%q is not a number of seconds", value)
		}
		v.persistent.put(n, line)
	case "netmask":
		n, err := prefixLen(value, v.is6)
		if err != nil {
			return p.errorf(line, name, "%v", err)
		}
		v.netmask.put(n, line)
	case "protocol":
		if v.fwmark != 0 && value != "fwm" {
			return p.errorf(line, name, "%q: a firewall-mark virtual service has protocol fwm", value)
		}
		if v.fwmark == 0 && value != "tcp" && value != "udp" {
			return p.errorf(line, name, "%q: write tcp or udp (fwm is for firewall-mark virtual services)", value)
		}
		v.protocol.put(value, line)
	case "ops":
		b, err := p.yesNo(line, name, value)
		if err != nil {
			return err
		}
		v.ops.put(b, line)
	case "service":
		if !knownLdService(value) {
			return p.errorf(line, name, "%q is not a service ldirectord checks", value)
		}
		v.service.put(value, line)
	case "httpmethod":
		m := strings.ToUpper(value)
		if m != "GET" && m != "HEAD" {
			return p.errorf(line, name, "%q: write GET or HEAD", value)
		}
		v.httpMethod.put(m, line)
	case "login", "passwd", "database", "secret", "load":
		if !v.auth.set {
			v.auth.put(name, line)
		}
	case "fallbackcommand":
		p.note(line, "fallbackcommand has no equivalent: saru runs no command when all real servers are down")
	case "emailalert", "emailalertfreq", "emailalertstatus", "smtp":
		p.note(line, "%s has no equivalent: saru sends no mail", name)
	case "monitorfile", "cleanstop":
		p.note(line, "%s=%s has no equivalent", name, value)
	default:
		return p.errorf(line, name, "unknown directive in a virtual service")
	}
	return nil
}

// prefixLen reads a persistence netmask: dotted for IPv4 (as ldirectord
// wants), a prefix length for IPv6 or either.
func prefixLen(s string, is6 bool) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || (n > 32 && !is6) || n > 128 {
			return 0, fmt.Errorf("/%d is out of range", n)
		}
		return n, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() || is6 {
		return 0, fmt.Errorf("%q is not a netmask (dotted for IPv4, a prefix length for IPv6)", s)
	}
	b := a.As4()
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n := 0
	for m&(1<<31) != 0 {
		n++
		m <<= 1
	}
	if m != 0 || n == 0 {
		return 0, fmt.Errorf("%s is not a contiguous netmask; saru takes a prefix length", s)
	}
	return n, nil
}

func knownLdService(s string) bool {
	switch s {
	case "dns", "ftp", "http", "https", "http_proxy", "imap", "imaps", "ldap", "ldaps", "nntp", "mysql",
		"none", "oracle", "pop", "pops", "radius", "pgsql", "sip", "smtp", "submission", "simpletcp":
		return true
	}
	return false
}

// knownScheduler lists the IPVS schedulers saru accepts.
func knownScheduler(s string) bool {
	switch s {
	case "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos":
		return true
	}
	return false
}

func knownSchedFlag(s string) bool {
	switch s {
	case "sh-fallback", "sh-port", "mh-fallback", "mh-port", "flag-1", "flag-2", "flag-3":
		return true
	}
	return false
}

// ldReal is one real= line, parsed.
type ldReal struct {
	addrs    []netip.Addr
	port     uint16
	forward  string
	weight   int
	request  opt[string]
	receive  opt[string]
	lower    uint32
	upper    uint32
	hasRange bool
}

// parseReal reads real=ADDR[->ADDR][:PORT] gate|masq|ipip [WEIGHT]
// ["REQUEST", "RECEIVE"] [l:N] [u:N].
func (p *ldParser) parseReal(o opt[string]) (ldReal, error) {
	line, value := o.line, o.v
	spec, rest := strings.TrimSpace(value), ""
	if i := strings.IndexAny(spec, " \t"); i >= 0 {
		spec, rest = spec[:i], spec[i:]
	}
	var r ldReal
	bad := func(format string, args ...any) (ldReal, error) {
		return ldReal{}, p.errorf(line, "real", format, args...)
	}
	if first, last, ok := strings.Cut(spec, "->"); ok {
		a, _, hasPort, err := splitHostPort(first)
		if err != nil {
			return bad("%v", err)
		}
		if hasPort {
			return bad("%q: the port goes after the last address of a range", spec)
		}
		b, port, _, err := splitHostPort(last)
		if err != nil {
			return bad("%v", err)
		}
		if a.Is6() || b.Is6() {
			return bad("%q: ldirectord has no IPv6 ranges; list the real servers one by one", spec)
		}
		if r.addrs, err = rangeAddrs(a, b); err != nil {
			return bad("%v", err)
		}
		r.port, r.hasRange = port, true
	} else {
		a, port, _, err := splitHostPort(spec)
		if err != nil {
			return bad("%v", err)
		}
		r.addrs, r.port = []netip.Addr{a}, port
	}
	toks, err := ldTokens(rest)
	if err != nil {
		return bad("%v", err)
	}
	if len(toks) == 0 || toks[0].quoted || !isLdForward(toks[0].s) {
		return bad("a forwarding method must follow the address: gate, masq or ipip")
	}
	r.forward, r.weight, toks = toks[0].s, 1, toks[1:]
	if len(toks) > 0 && !toks[0].quoted {
		if n, err := strconv.Atoi(toks[0].s); err == nil {
			if n < 0 || n > 65535 {
				return bad("weight %d is out of range (0..65535)", n)
			}
			r.weight, toks = n, toks[1:]
		}
	}
	if len(toks) > 0 && toks[0].quoted {
		if len(toks) < 2 || !toks[1].quoted {
			return bad("a request string needs a receive string after it: \"request\", \"receive\"")
		}
		r.request.put(toks[0].s, line)
		r.receive.put(toks[1].s, line)
		toks = toks[2:]
	}
	for _, t := range toks {
		s := strings.TrimSuffix(strings.TrimPrefix(t.s, "<"), ">")
		kind, num, ok := strings.Cut(s, ":")
		n, err := strconv.ParseUint(num, 10, 32)
		switch {
		case ok && err == nil && kind == "l":
			r.lower = uint32(n)
		case ok && err == nil && kind == "u":
			r.upper = uint32(n)
		default:
			return bad("unexpected %q", t.s)
		}
	}
	if r.upper != 0 && r.lower > r.upper {
		return bad("the lower threshold %d is above the upper threshold %d", r.lower, r.upper)
	}
	return r, nil
}

type ldToken struct {
	s      string
	quoted bool
}

// ldTokens splits on blanks and commas, keeping "quoted strings" whole.
func ldTokens(s string) ([]ldToken, error) {
	var out []ldToken
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return out, nil
		}
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("unterminated quote in %q", s)
			}
			out = append(out, ldToken{s: s[1 : end+1], quoted: true})
			s = s[end+2:]
			continue
		}
		end := strings.IndexAny(s, " \t,\"")
		if end < 0 {
			end = len(s)
		}
		out = append(out, ldToken{s: s[:end]})
		s = s[end:]
	}
}

// translate turns one virtual section into a service.
func (p *ldParser) translate(v *ldVirtual) error {
	g := &p.global
	s := services.FileService{Name: v.serviceName.v}
	vs := vserver{port: v.port, fwmark: v.fwmark, is6: v.is6}
	proto := "fwm"
	if v.fwmark != 0 {
		s.FWMark = v.fwmark
		if v.is6 {
			s.Family = "ipv6"
		}
	} else {
		s.Address = netip.AddrPortFrom(v.addr, v.port).String()
		proto = "tcp"
		if v.port == 53 {
			proto = "udp" // ldirectord's default for DNS
		}
		proto = v.protocol.or(proto)
		s.Protocol = proto
	}
	s.Scheduler = v.scheduler.or("wrr")
	s.SchedulerFlags = v.schedFlags.v
	if v.ops.v {
		if proto == "udp" {
			s.OnePacket = true
		} else {
			p.note(v.ops.line, "ops=yes is ignored by ldirectord except for UDP services; left out")
		}
	}
	if n := v.persistent.v; n > 0 {
		s.Persistence = fmt.Sprintf("%ds", n)
		if v.netmask.set {
			s.PersistMask = ptr(v.netmask.v)
		}
	} else if v.netmask.set {
		p.note(v.netmask.line, "netmask only matters with persistent=; left out")
	}
	onFailure := "remove" // ldirectord's code defaults quiescent to no, whatever older man pages say
	if orElse(v.quiescent, g.quiescent).v {
		onFailure = "quiescent"
	}

	check, service, err := p.check(v, proto)
	if err != nil {
		return err
	}
	weightOverride := -1
	if v.checkType.v == "off" {
		p.note(v.checkType.line, "checktype=off never activates the real servers; they are declared with weight 0 and no check")
		weightOverride = 0
	}
	seen := map[string]bool{}
	for _, o := range v.reals {
		lr, err := p.parseReal(o)
		if err != nil {
			return err
		}
		for _, a := range lr.addrs {
			r := realSpec{file: p.file, line: o.line, directive: "real", addr: a, port: lr.port, forward: lr.forward,
				weight: lr.weight, lower: lr.lower, upper: lr.upper, onFailure: onFailure}
			if weightOverride >= 0 {
				r.weight = weightOverride
			}
			if r.check, err = p.realCheck(v, check, service, lr, r.port); err != nil {
				return err
			}
			finishCheck(&r.check, func(format string, args ...any) { p.note(v.line, format, args...) })
			fr, err := p.t.real(vs, r)
			if err != nil {
				return err
			}
			if err := p.t.addReal(&s, seen, fr, r); err != nil {
				return err
			}
		}
	}
	if len(s.Reals) == 0 {
		p.note(v.line, "%s has no real servers; saru wants at least one, so it is left out", v.text)
		return nil
	}

	if err := p.fallback(v, vs, proto, &s); err != nil {
		return err
	}
	p.t.dropFallbackIfReal(&s, p.file, v.line)
	origin := v.text
	if v.comment.v != "" {
		origin += " (" + v.comment.v + ")"
	}
	if v.auth.set {
		p.note(v.auth.line, "login, passwd, database, secret and load have no equivalent: saru's checks do not log in")
	}
	return p.t.add(p.file, v.line, "virtual", origin, s)
}

func (p *ldParser) fallback(v *ldVirtual, vs vserver, proto string, s *services.FileService) error {
	f := orElse(v.fallback, v.fallback6)
	if !f.set && proto != "fwm" {
		// ldirectord keeps one global fallback per family and uses it
		// for TCP and UDP services, never for firewall marks.
		f = p.global.fallback
		if v.is6 {
			f = p.global.fallback6
		}
	}
	if !f.set {
		return nil
	}
	if f.v.addr.Is6() != v.is6 {
		return p.errorf(f.line, "fallback", "%s is of the other address family than the virtual service at line %d (use fallback6= for IPv6)", f.v.addr, v.line)
	}
	port := f.v.port
	if port == 0 {
		port = v.port
	}
	fr, err := p.t.fallback(vs, realSpec{file: p.file, line: f.line, directive: "fallback", addr: f.v.addr, port: port, forward: f.v.forward, weight: 1})
	if err != nil {
		return err
	}
	s.Fallback = fr
	return nil
}

// check works out the check every real server of v shares, and the
// service= in effect (which decides what request= means).
func (p *ldParser) check(v *ldVirtual, proto string) (services.FileCheck, string, error) {
	g := &p.global
	checkType := v.checkType.or("negotiate")
	service := v.service.v
	if !v.service.set {
		service = "none"
		if v.fwmark == 0 {
			service = ldServiceForPort(v.port)
		}
	}
	var c services.FileCheck
	negotiate := false
	kind := health.KindNone
	switch checkType {
	case "on", "off":
	case "ping":
		kind = health.KindICMP
	case "connect":
		kind = health.KindTCP
		if proto == "udp" {
			kind = health.KindICMP // ldirectord pings for a UDP connect check
		}
	case "external", "external-perl":
		kind = health.KindExternal
		if checkType == "external-perl" {
			p.note(v.checkType.line, "checktype=external-perl ran the script inside ldirectord; saru runs it as a program, so it needs a #! line and the execute bit")
		}
		cmd := v.checkCommand.or("/bin/true")
		args, err := shellSplit(cmd)
		if err != nil || len(args) == 0 || args[0] == "" {
			return c, "", p.errorf(v.checkCommand.line, "checkcommand", "%q: %v", cmd, orMsg(err, "empty"))
		}
		c.Command = args
	default:
		negotiate = true
		if n, err := strconv.Atoi(checkType); err == nil {
			p.note(v.checkType.line, "checktype=%d (connect checks with a negotiate check every %d) has no equivalent; every check negotiates", n, n)
		}
		kind = p.negotiateKind(v, service, proto)
	}
	c.Type = ptr(string(kind))
	if kind == health.KindNone {
		return c, service, nil
	}

	interval := orElse(v.checkInterval, g.checkInterval)
	if v.checkInterval.set && !p.fork {
		p.note(v.checkInterval.line, "ldirectord ignores checkinterval in a virtual service unless fork=yes; saru applies it")
	}
	c.Interval = ptr(fmt.Sprintf("%ds", interval.or(10)))
	// checktimeout and negotiatetimeout default to each other, the
	// virtual service's before the global ones.
	var timeout opt[int]
	def := 5
	if negotiate {
		timeout = orElse(v.negotiateTimeout, v.checkTimeout, g.negotiateTimeout, g.checkTimeout)
		def = 30
	} else {
		timeout = orElse(v.checkTimeout, v.negotiateTimeout, g.checkTimeout, g.negotiateTimeout)
	}
	c.Timeout = ptr(fmt.Sprintf("%ds", timeout.or(def)))
	if fc := orElse(v.failureCount, g.failureCount); fc.set && fc.v != 1 {
		c.Fall = ptr(fc.v)
	}
	if cc := orElse(v.checkCount, g.checkCount); cc.set && cc.v > 1 {
		if kind == health.KindICMP {
			c.Retries = ptr(cc.v - 1)
		} else {
			p.note(cc.line, "checkcount only affects ping checks in ldirectord; ignored")
		}
	}
	if v.checkPort.set {
		c.Port = ptr(v.checkPort.v)
	}
	switch kind {
	case health.KindHTTP, health.KindHTTPS:
		if !p.redirects {
			p.redirects = true
			p.note(v.line, "ldirectord's HTTP checks follow redirects; saru's judge the real server's own answer, so a request= that redirects counts as down: point it at the final page")
		}
		if v.virtualHost.set {
			c.Host = ptr(v.virtualHost.v)
		}
		if v.httpMethod.v == "HEAD" {
			c.Method = ptr("HEAD")
		}
	case health.KindDNS:
		if proto == "tcp" {
			c.QueryTCP = ptr(true)
		}
	}
	if v.virtualHost.set && kind != health.KindHTTP && kind != health.KindHTTPS {
		p.note(v.virtualHost.line, "virtualhost only matters to HTTP checks; ignored")
	}
	return c, service, nil
}

// negotiateKind maps service= to the check that talks the protocol; the
// services saru has no check for become a plain connect (or a ping for
// UDP, as ldirectord's own connect check does).
func (p *ldParser) negotiateKind(v *ldVirtual, service, proto string) health.Kind {
	switch service {
	case "http":
		return health.KindHTTP
	case "https":
		return health.KindHTTPS
	case "smtp", "submission":
		return health.KindSMTP
	case "pop":
		return health.KindPOP3
	case "imap":
		return health.KindIMAP
	case "dns":
		return health.KindDNS
	case "simpletcp":
		return health.KindTCP
	case "none":
		return health.KindNone
	}
	fallback := health.KindTCP
	if proto == "udp" {
		fallback = health.KindICMP
	}
	line := v.service.line
	if line == 0 {
		line = v.line
	}
	p.note(line, "service=%s has no equivalent check in saru; translated as a %s check", service, fallback)
	return fallback
}

// realCheck completes the shared check for one real server: its request
// and receive strings and the port ldirectord would check.
func (p *ldParser) realCheck(v *ldVirtual, shared services.FileCheck, service string, r ldReal, port uint16) (services.FileCheck, error) {
	c := shared
	kind := *c.Type
	if kind == string(health.KindNone) {
		return c, nil
	}
	if c.Port == nil && port == 0 {
		if n := ldPortForService(service); n != 0 {
			c.Port = ptr(n)
		}
	}
	request, receive := v.request, v.receive
	if r.request.set {
		request, receive = r.request, r.receive
	}
	switch health.Kind(kind) {
	case health.KindHTTP, health.KindHTTPS:
		if request.set {
			path, host, err := ldHTTPRequest(request.v)
			if err != nil {
				return c, p.errorf(request.line, "request", "%v", err)
			}
			if host != "" {
				p.note(request.line, "request=%s names a host; ldirectord fetched it from there, saru asks each real server with Host: %s", request.v, host)
				if c.Host == nil {
					c.Host = ptr(host)
				}
			}
			if path != "/" {
				c.Path = ptr(path)
			}
		}
		if receive.set {
			if err := setBodyMatch(&c, receive.v); err != nil {
				return c, p.errorf(receive.line, "receive", "%v", err)
			}
		}
	case health.KindDNS:
		name := strings.TrimPrefix(request.v, "/")
		if name == "" {
			return c, p.errorf(v.line, "request", "service=dns needs request=\"name\", the name to look up")
		}
		if a, err := netip.ParseAddr(name); err == nil {
			c.Query, c.QueryType = ptr(reverseName(a)), ptr("PTR")
		} else {
			c.Query = ptr(name)
		}
		if receive.set {
			p.note(receive.line, "receive=%q is ignored: saru's DNS check wants any answer to the query, ldirectord wanted one matching receive", receive.v)
		}
	case health.KindTCP:
		if service == "simpletcp" {
			if request.set {
				c.Send = ptr(strings.ReplaceAll(strings.TrimPrefix(request.v, "/"), `\n`, "\n"))
			}
			if receive.set {
				if regexp.QuoteMeta(receive.v) != receive.v {
					p.note(receive.line, "receive=%q was a regular expression; saru wants the reply to contain it as plain text", receive.v)
				}
				c.Expect = ptr(receive.v)
			}
		}
	}
	return c, nil
}

// ldHTTPRequest reads request= for an HTTP check: a path (ldirectord puts
// a / in front of one without), or a whole URL.
func ldHTTPRequest(s string) (path, host string, err error) {
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", "", fmt.Errorf("%q is not a URL", s)
		}
		path = u.RequestURI()
		return path, u.Host, nil
	}
	if !strings.HasPrefix(s, "/") {
		s = "/" + s
	}
	return s, "", nil
}

// setBodyMatch turns ldirectord's receive (a Perl regular expression) into
// a plain substring when it is one, else into a regular expression for
// Go's engine.
func setBodyMatch(c *services.FileCheck, receive string) error {
	if regexp.QuoteMeta(receive) == receive {
		c.Body = ptr(receive)
		return nil
	}
	if _, err := regexp.Compile(receive); err != nil {
		return fmt.Errorf("%q is a regular expression saru cannot run (Go's RE2 syntax): %v", receive, err)
	}
	c.BodyRegex = ptr(receive)
	return nil
}

// reverseName is the PTR name of a, as ldirectord's resolver library
// queried when request= was an address.
func reverseName(a netip.Addr) string {
	var b strings.Builder
	if a.Is4() {
		o := a.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.in-addr.arpa.", o[3], o[2], o[1], o[0])
		return b.String()
	}
	o := a.As16()
	for i := len(o) - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "%x.%x.", o[i]&0xf, o[i]>>4)
	}
	b.WriteString("ip6.arpa.")
	return b.String()
}

func orMsg(err error, msg string) string {
	if err != nil {
		return err.Error()
	}
	return msg
}

// shellSplit splits a command line the way sh does for plain words,
// single and double quotes and backslashes (no expansions): both daemons
// handed the string to a shell or split it that way.
func shellSplit(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ' quote")
			}
			cur.WriteString(s[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated \" quote")
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}
