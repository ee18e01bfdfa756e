package importer

import (
	"encoding/hex"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/peerlvs/peerlvs/saru/health"
	"github.com/peerlvs/peerlvs/saru/services"
)

// Keepalived reads the keepalived configuration file name in fsys
// (keepalived.conf, see keepalived.conf(5)), following its include
// directives, and translates its virtual_server and virtual_server_group
// blocks.
//
// Includes are resolved relative to the including file, with keepalived's
// glob patterns (braces included); an absolute include is taken from the
// root of fsys, so the saru command passes the machine's root. Notes and
// errors name files relative to the main file's directory.
//
// Everything outside the LVS configuration (global_defs, vrrp_*, static
// addresses, BFD, ...) becomes a note: keepalived has hundreds of such
// keywords and saru replaces the parts that matter. Inside the blocks
// translated here an unknown keyword is an error, since ignoring it could
// change what is balanced.
func Keepalived(fsys fs.FS, name string) (*Result, error) {
	t := newTranslation(name)
	l := &kaLexer{t: t, fsys: fsys}
	if err := l.read(name, 0); err != nil {
		return nil, err
	}
	top, err := l.parse()
	if err != nil {
		return nil, err
	}
	k := &kaReader{t: t, groups: map[string]*kaStmt{}, used: map[string]bool{}}
	// keepalived resolves groups after reading everything, so a
	// virtual_server may name a group defined below it.
	for _, s := range top {
		if s.keyword() != "virtual_server_group" {
			continue
		}
		if len(s.args()) != 1 || !s.hasBlock {
			return nil, k.errorf(s, "write virtual_server_group NAME { ... }")
		}
		if prev, ok := k.groups[s.args()[0]]; ok {
			return nil, k.errorf(s, "the group %s is already defined at %s:%d", s.args()[0], t.display(prev.file), prev.line)
		}
		k.groups[s.args()[0]] = s
	}
	for _, s := range top {
		switch kw := s.keyword(); {
		case kw == "virtual_server_group":
		case kw == "virtual_server":
			if err := k.virtualServer(s); err != nil {
				return nil, err
			}
		case strings.HasPrefix(kw, "vrrp_"):
			k.noEquivalent(s, "saru replaces VRRP")
		case kw == "real_server" || kw == "sorry_server" || isChecker(kw):
			return nil, k.errorf(s, "outside a virtual_server")
		default:
			k.noEquivalent(s, "")
		}
	}
	for _, s := range top {
		if s.keyword() == "virtual_server_group" && !k.used[s.args()[0]] {
			t.note(s.file, s.line, "%s is used by no virtual_server; nothing to translate", s.text())
		}
	}
	return t.finish()
}

func isChecker(kw string) bool {
	return checkerKind(kw) != "" || kw == "BFD_CHECK" || kw == "FILE_CHECK"
}

// checkerKind is the check that does what a keepalived checker does, ""
// for keywords that are no checker saru has.
func checkerKind(kw string) health.Kind {
	switch kw {
	case "HTTP_GET":
		return health.KindHTTP
	case "SSL_GET":
		return health.KindHTTPS
	case "TCP_CHECK":
		return health.KindTCP
	case "SMTP_CHECK":
		return health.KindSMTP
	case "DNS_CHECK":
		return health.KindDNS
	case "MISC_CHECK":
		return health.KindExternal
	case "UDP_CHECK":
		return health.KindUDP
	case "PING_CHECK":
		return health.KindICMP
	}
	return ""
}

type kaReader struct {
	t      *translation
	groups map[string]*kaStmt
	used   map[string]bool
}

func (k *kaReader) errorf(s *kaStmt, format string, args ...any) error {
	return k.t.errorf(s.file, s.line, s.keyword(), format, args...)
}

func (k *kaReader) note(s *kaStmt, format string, args ...any) {
	k.t.note(s.file, s.line, format, args...)
}

func (k *kaReader) noEquivalent(s *kaStmt, why string) {
	if why != "" {
		why = ": " + why
	}
	k.note(s, "%s has no equivalent%s", s.text(), why)
}

// nargs checks a statement has between lo and hi arguments and no block.
func (k *kaReader) nargs(s *kaStmt, lo, hi int) error {
	if s.hasBlock {
		return k.errorf(s, "takes no block")
	}
	switch n := len(s.args()); {
	case n < lo:
		return k.errorf(s, "missing value")
	case n > hi:
		return k.errorf(s, "unexpected %q", s.args()[hi])
	}
	return nil
}

// timer reads keepalived's <TIMER>: seconds, fractions allowed.
func (k *kaReader) timer(s *kaStmt, zeroOK bool) (time.Duration, error) {
	if err := k.nargs(s, 1, 1); err != nil {
		return 0, err
	}
	f, err := strconv.ParseFloat(s.args()[0], 64)
	if err != nil || !(f >= 0) || f > maxDuration.Seconds() || (f == 0 && !zeroOK) {
		return 0, k.errorf(s, "%q is not a time in seconds (e.g. 3 or 2.5)", s.args()[0])
	}
	d := time.Duration(math.Round(f*1e6)) * time.Microsecond
	if d == 0 && !zeroOK {
		return 0, k.errorf(s, "%q is too short", s.args()[0])
	}
	return d, nil
}

func (k *kaReader) uint(s *kaStmt, lo, hi uint64) (uint64, error) {
	if err := k.nargs(s, 1, 1); err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(s.args()[0], 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, k.errorf(s, "%q is not a whole number from %d to %d", s.args()[0], lo, hi)
	}
	return n, nil
}

// flag reads a keyword with an optional <BOOL>, true when absent.
func (k *kaReader) flag(s *kaStmt) (bool, error) {
	if err := k.nargs(s, 0, 1); err != nil {
		return false, err
	}
	if len(s.args()) == 0 {
		return true, nil
	}
	switch strings.ToLower(s.args()[0]) {
	case "on", "true", "yes":
		return true, nil
	case "off", "false", "no":
		return false, nil
	}
	return false, k.errorf(s, "%q: write yes or no (on/off, true/false)", s.args()[0])
}

// kaTiming are the check settings a real server inherits from its virtual
// server and a checker from its real server.
type kaTiming struct {
	delayLoop        opt[time.Duration]
	connectTimeout   opt[time.Duration]
	delayBeforeRetry opt[time.Duration]
	retry            opt[int]
	virtualhost      opt[string]
}

// over is t with base's settings where t has none.
func (t kaTiming) over(base kaTiming) kaTiming {
	return kaTiming{
		delayLoop:        orElse(t.delayLoop, base.delayLoop),
		connectTimeout:   orElse(t.connectTimeout, base.connectTimeout),
		delayBeforeRetry: orElse(t.delayBeforeRetry, base.delayBeforeRetry),
		retry:            orElse(t.retry, base.retry),
		virtualhost:      orElse(t.virtualhost, base.virtualhost),
	}
}

// timing handles the settings every level has; ok is false for others.
func (k *kaReader) timing(tm *kaTiming, s *kaStmt) (ok bool, err error) {
	switch s.keyword() {
	case "delay_loop", "connect_timeout", "delay_before_retry":
		d, err := k.timer(s, s.keyword() == "delay_before_retry")
		if err != nil {
			return true, err
		}
		switch s.keyword() {
		case "delay_loop":
			tm.delayLoop.put(d, s.line)
		case "connect_timeout":
			tm.connectTimeout.put(d, s.line)
		default:
			tm.delayBeforeRetry.put(d, s.line)
		}
	case "retry", "nb_get_retry":
		n, err := k.uint(s, 0, math.MaxInt32)
		if err != nil {
			return true, err
		}
		tm.retry.put(int(n), s.line)
	case "virtualhost":
		if err := k.nargs(s, 1, 1); err != nil {
			return true, err
		}
		tm.virtualhost.put(s.args()[0], s.line)
	case "warmup":
		if _, err := k.timer(s, true); err != nil {
			return true, err
		}
		k.noEquivalent(s, "saru starts checking at once")
	case "alpha":
		if _, err := k.flag(s); err != nil {
			return true, err
		}
		k.noEquivalent(s, "")
	default:
		return false, nil
	}
	return true, nil
}

// forward reads lvs_method (lb_kind): NAT, DR or TUN [type ...].
func (k *kaReader) forward(s *kaStmt) (string, error) {
	if s.hasBlock || len(s.args()) == 0 {
		return "", k.errorf(s, "write NAT, DR or TUN")
	}
	var fwd string
	switch strings.ToUpper(s.args()[0]) {
	case "NAT":
		fwd = "masq"
	case "DR":
		fwd = "gate"
	case "TUN":
		fwd = "ipip"
	default:
		return "", k.errorf(s, "%q: write NAT, DR or TUN", s.args()[0])
	}
	rest := s.args()[1:]
	if fwd != "ipip" && len(rest) > 0 {
		return "", k.errorf(s, "unexpected %q", rest[0])
	}
	for i := 0; i < len(rest); i++ {
		switch rest[i] {
		case "type":
			if i+1 == len(rest) {
				return "", k.errorf(s, "missing tunnel type")
			}
			i++
			switch rest[i] {
			case "ipip":
			case "gue", "gre":
				k.note(s, "%s tunnels have no equivalent; saru uses ipip", strings.ToUpper(rest[i]))
			default:
				return "", k.errorf(s, "unknown tunnel type %q", rest[i])
			}
		case "port":
			if i+1 == len(rest) {
				return "", k.errorf(s, "missing port")
			}
			i++
		case "nocsum", "csum", "remcsum":
		default:
			return "", k.errorf(s, "unexpected %q", rest[i])
		}
	}
	return fwd, nil
}

// kaVS is a virtual_server block's own settings.
type kaVS struct {
	stmt        *kaStmt
	timing      kaTiming
	sched       opt[string]
	flags       []*kaStmt
	ops         opt[bool]
	forward     opt[string]
	persist     opt[int]
	granularity *kaStmt
	protocol    opt[string]
	family      opt[string]
	inhibit     bool
	weight      opt[int]
	sorry       *kaStmt
	sorryFwd    opt[string]
	reals       []*kaStmt
}

// kaVirtual is one virtual service a virtual_server stands for (a group
// stands for several).
type kaVirtual struct {
	addr   netip.Addr
	port   uint16
	fwmark uint32
	is6    opt[bool] // fwmark services: the family, when written
	origin string
	stmt   *kaStmt
}

func (k *kaReader) virtualServer(s *kaStmt) error {
	if !s.hasBlock {
		return k.errorf(s, "needs a block { ... } with its real servers")
	}
	vs := &kaVS{stmt: s}
	if err := k.vsSettings(vs); err != nil {
		return err
	}
	virtuals, err := k.virtuals(vs)
	if err != nil {
		return err
	}
	reals := make([]realSpec, 0, len(vs.reals))
	for _, r := range vs.reals {
		spec, err := k.realServer(vs, r)
		if err != nil {
			return err
		}
		reals = append(reals, spec)
	}
	for _, v := range virtuals {
		if err := k.service(vs, v, reals); err != nil {
			return err
		}
	}
	return nil
}

func (k *kaReader) vsSettings(vs *kaVS) error {
	for _, s := range vs.stmt.block {
		if ok, err := k.timing(&vs.timing, s); ok {
			if err != nil {
				return err
			}
			continue
		}
		kw := s.keyword()
		if kw == "real_server" {
			vs.reals = append(vs.reals, s)
			continue
		}
		if s.hasBlock {
			return k.errorf(s, "takes no block")
		}
		var err error
		switch kw {
		case "lb_algo", "lvs_sched":
			if err = k.nargs(s, 1, 1); err == nil {
				if !knownScheduler(s.args()[0]) {
					return k.errorf(s, "%q is not a scheduler saru knows", s.args()[0])
				}
				vs.sched.put(s.args()[0], s.line)
			}
		case "ops":
			if err = k.nargs(s, 0, 0); err == nil {
				vs.ops.put(true, s.line)
			}
		case "flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback", "mh-port", "mh-fallback":
			if err = k.nargs(s, 0, 0); err == nil {
				vs.flags = append(vs.flags, s)
			}
		case "lb_kind", "lvs_method":
			var fwd string
			if fwd, err = k.forward(s); err == nil {
				vs.forward.put(fwd, s.line)
			}
		case "sorry_server_lvs_method":
			var fwd string
			if fwd, err = k.forward(s); err == nil {
				vs.sorryFwd.put(fwd, s.line)
			}
		case "persistence_timeout":
			if err = k.nargs(s, 0, 1); err == nil {
				n := uint64(360) // keepalived's (and ipvsadm's) default
				if len(s.args()) == 1 {
					n, err = k.uint(s, 1, math.MaxInt32)
				}
				vs.persist.put(int(n), s.line)
			}
		case "persistence_granularity":
			if err = k.nargs(s, 1, 1); err == nil {
				vs.granularity = s
			}
		case "protocol":
			if err = k.nargs(s, 1, 1); err == nil {
				p := strings.ToLower(s.args()[0])
				if p != "tcp" && p != "udp" && p != "sctp" {
					return k.errorf(s, "%q: write TCP, UDP or SCTP", s.args()[0])
				}
				vs.protocol.put(p, s.line)
			}
		case "ip_family":
			if err = k.nargs(s, 1, 1); err == nil {
				if f := s.args()[0]; f != "inet" && f != "inet6" {
					return k.errorf(s, "%q: write inet or inet6", f)
				}
				vs.family.put(s.args()[0], s.line)
			}
		case "inhibit_on_failure":
			vs.inhibit, err = k.flag(s)
		case "weight":
			var n uint64
			if n, err = k.uint(s, 1, 65535); err == nil {
				vs.weight.put(int(n), s.line)
			}
		case "sorry_server":
			if err = k.nargs(s, 1, 2); err == nil {
				vs.sorry = s
			}
		case "hashed", "persistence_engine", "ha_suspend", "smtp_alert", "snmp_name", "omega", "quorum", "hysteresis",
			"quorum_up", "quorum_down", "sorry_server_inhibit", "nat_mask":
			k.noEquivalent(s, "")
		default:
			return k.errorf(s, "unknown keyword in virtual_server")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// virtuals lists the virtual services vs stands for.
func (k *kaReader) virtuals(vs *kaVS) ([]kaVirtual, error) {
	s := vs.stmt
	a := s.args()
	switch {
	case len(a) == 2 && a[0] == "fwmark":
		n, err := strconv.ParseUint(a[1], 10, 32)
		if err != nil || n == 0 {
			return nil, k.errorf(s, "fwmark %q is not a firewall mark (1..4294967295)", a[1])
		}
		return []kaVirtual{{fwmark: uint32(n), origin: s.text(), stmt: s}}, nil
	case len(a) == 2 && a[0] == "group":
		g, ok := k.groups[a[1]]
		if !ok {
			return nil, k.errorf(s, "there is no virtual_server_group %s", a[1])
		}
		k.used[a[1]] = true
		return k.groupEntries(g, s)
	case len(a) == 1 || len(a) == 2:
		addr, err := parseIP(a[0])
		if err != nil {
			return nil, k.errorf(s, "%v", err)
		}
		var port uint16
		if len(a) == 2 {
			if port, err = kaPort(a[1]); err != nil {
				return nil, k.errorf(s, "%v", err)
			}
		}
		return []kaVirtual{{addr: addr, port: port, origin: s.text(), stmt: s}}, nil
	}
	return nil, k.errorf(s, "write virtual_server IP PORT, virtual_server fwmark N or virtual_server group NAME")
}

func kaPort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%q is not a port", s)
	}
	return uint16(n), nil
}

// groupEntries expands a virtual_server_group: every address of every
// range, every fwmark.
func (k *kaReader) groupEntries(g, user *kaStmt) ([]kaVirtual, error) {
	var out []kaVirtual
	group := "virtual_server_group " + g.args()[0]
	for _, e := range g.block {
		bad := func(format string, args ...any) error {
			return k.t.errorf(e.file, e.line, group, format, args...)
		}
		if e.hasBlock {
			return nil, bad("takes no block")
		}
		w := e.words
		origin := fmt.Sprintf("%s (virtual_server_group %s: %s)", user.text(), g.args()[0], e.text())
		if w[0] == "fwmark" {
			if len(w) < 2 || len(w) > 3 {
				return nil, bad("write fwmark N [inet|inet6]")
			}
			n, err := strconv.ParseUint(w[1], 10, 32)
			if err != nil || n == 0 {
				return nil, bad("%q is not a firewall mark (1..4294967295)", w[1])
			}
			v := kaVirtual{fwmark: uint32(n), origin: origin, stmt: e}
			if len(w) == 3 {
				if w[2] != "inet" && w[2] != "inet6" {
					return nil, bad("%q: write inet or inet6", w[2])
				}
				v.is6.put(w[2] == "inet6", e.line)
			}
			out = append(out, v)
			continue
		}
		if len(w) > 2 {
			return nil, bad("write IP [PORT], IP-RANGE [PORT] or fwmark N")
		}
		var port uint16
		if len(w) == 2 {
			var err error
			if port, err = kaPort(w[1]); err != nil {
				return nil, bad("%v", err)
			}
		}
		addrs, err := kaRange(w[0])
		if err != nil {
			return nil, bad("%v", err)
		}
		for _, a := range addrs {
			out = append(out, kaVirtual{addr: a, port: port, origin: origin, stmt: e})
		}
		if len(out) > maxRange {
			return nil, k.errorf(g, "stands for more than %d virtual services", maxRange)
		}
	}
	if len(out) == 0 {
		return nil, k.errorf(g, "has no entries")
	}
	return out, nil
}

// kaRange reads a group entry's address: an address, a range whose end
// replaces the last byte (IPv4, decimal) or group (IPv6, hex), a range of
// two whole addresses, or a prefix.
func kaRange(s string) ([]netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" {
			return nil, fmt.Errorf("%q is not an address prefix", s)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("%q has bits set beyond its prefix length", s)
		}
		if p.Addr().BitLen()-p.Bits() > 10 {
			return nil, fmt.Errorf("%q has more than %d addresses", s, maxRange)
		}
		first := p.Addr().Unmap()
		last := first
		for i := 1; i < 1<<(p.Addr().BitLen()-p.Bits()); i++ {
			last = last.Next()
		}
		return rangeAddrs(first, last)
	}
	start, end, isRange := strings.Cut(s, "-")
	first, err := parseIP(start)
	if err != nil {
		return nil, err
	}
	if !isRange {
		return []netip.Addr{first}, nil
	}
	var last netip.Addr
	switch {
	case first.Is4() && strings.Contains(end, "."), first.Is6() && strings.Contains(end, ":"):
		if last, err = parseIP(end); err != nil {
			return nil, err
		}
	case first.Is4():
		n, err := strconv.ParseUint(end, 10, 8)
		if err != nil {
			return nil, fmt.Errorf("%q: the range end %q is not a number from 0 to 255", s, end)
		}
		b := first.As4()
		if uint64(b[3]) >= n {
			return nil, fmt.Errorf("%q: the range end is not above its start", s)
		}
		b[3] = byte(n)
		last = netip.AddrFrom4(b)
	default:
		n, err := strconv.ParseUint(end, 16, 16)
		if err != nil {
			return nil, fmt.Errorf("%q: the range end %q is not a hex number up to ffff", s, end)
		}
		b := first.As16()
		if uint64(b[14])<<8|uint64(b[15]) >= n {
			return nil, fmt.Errorf("%q: the range end is not above its start", s)
		}
		b[14], b[15] = byte(n>>8), byte(n)
		last = netip.AddrFrom16(b)
	}
	return rangeAddrs(first, last)
}

// realServer reads a real_server with its complete check.
func (k *kaReader) realServer(vs *kaVS, s *kaStmt) (realSpec, error) {
	a := s.args()
	if len(a) < 1 || len(a) > 2 {
		return realSpec{}, k.errorf(s, "write real_server IP [PORT] { ... }")
	}
	addr, err := parseIP(a[0])
	if err != nil {
		return realSpec{}, k.errorf(s, "%v", err)
	}
	r := realSpec{file: s.file, line: s.line, directive: "real_server", addr: addr, weight: vs.weight.or(1),
		forward: vs.forward.or("masq"), onFailure: "remove"}
	if len(a) == 2 {
		if r.port, err = kaPort(a[1]); err != nil {
			return realSpec{}, k.errorf(s, "%v", err)
		}
	}
	if vs.inhibit {
		r.onFailure = "quiescent"
	}
	var tm kaTiming
	var checkers []*kaStmt
	for _, c := range s.block {
		if ok, err := k.timing(&tm, c); ok {
			if err != nil {
				return realSpec{}, err
			}
			continue
		}
		var err error
		switch kw := c.keyword(); {
		case checkerKind(kw) != "":
			checkers = append(checkers, c)
		case kw == "BFD_CHECK" || kw == "FILE_CHECK":
			k.noEquivalent(c, "the check is left out")
		case kw == "weight":
			var n uint64
			if n, err = k.uint(c, 0, 65535); err == nil {
				r.weight = int(n)
			}
		case kw == "lvs_method":
			r.forward, err = k.forward(c)
		case kw == "uthreshold" || kw == "lthreshold":
			var n uint64
			if n, err = k.uint(c, 0, math.MaxUint32); err == nil {
				if kw == "uthreshold" {
					r.upper = uint32(n)
				} else {
					r.lower = uint32(n)
				}
			}
		case kw == "inhibit_on_failure":
			var b bool
			if b, err = k.flag(c); err == nil {
				r.onFailure = "remove"
				if b {
					r.onFailure = "quiescent"
				}
			}
		case kw == "notify_up" || kw == "notify_down":
			k.noEquivalent(c, "saru runs no command when a real server changes state")
		case kw == "smtp_alert" || kw == "snmp_name":
			k.noEquivalent(c, "")
		default:
			return realSpec{}, k.errorf(c, "unknown keyword in real_server")
		}
		if err != nil {
			return realSpec{}, err
		}
	}
	if r.upper != 0 && r.lower > r.upper {
		return realSpec{}, k.errorf(s, "lthreshold %d is above uthreshold %d", r.lower, r.upper)
	}
	r.check = services.FileCheck{Type: ptr(string(health.KindNone))}
	inherited := tm.over(vs.timing)
	var used *kaStmt
	var dropped []string
	for _, c := range checkers {
		// Every check block is read, so that a mistake in one is an
		// error even if it is left out; only the one used may add notes.
		k.t.mute = used != nil
		check, ok, err := k.checker(c, inherited)
		k.t.mute = false
		switch {
		case err != nil:
			return realSpec{}, err
		case !ok:
		case used == nil:
			used, r.check = c, check
		default:
			dropped = append(dropped, c.keyword())
		}
	}
	if len(dropped) > 0 {
		k.note(s, "%s has several checks and saru runs one: %s is carried over, %s left out (keepalived wanted all to pass)", s.text(), used.keyword(), strings.Join(dropped, ", "))
	}
	finishCheck(&r.check, func(format string, args ...any) { k.note(s, format, args...) })
	return r, nil
}

// checker translates one check block; ok is false when it is left out.
func (k *kaReader) checker(s *kaStmt, inherited kaTiming) (c services.FileCheck, ok bool, err error) {
	if !s.hasBlock {
		return c, false, k.errorf(s, "needs a block { ... }")
	}
	kw := s.keyword()
	kind := checkerKind(kw)
	c.Type = ptr(string(kind))
	var tm kaTiming
	var urls []*kaStmt
	var miscTimeout opt[time.Duration]
	requireReply := false
	for _, o := range s.block {
		if ok, err := k.timing(&tm, o); ok {
			if err != nil {
				return c, false, err
			}
			continue
		}
		okw := o.keyword()
		if o.hasBlock && okw != "url" && okw != "host" {
			return c, false, k.errorf(o, "takes no block")
		}
		switch {
		case okw == "connect_port" && kind != health.KindExternal:
			var n uint64
			if n, err = k.uint(o, 1, 65535); err == nil {
				c.Port = ptr(uint16(n))
			}
		case okw == "bindto" && kind != health.KindExternal:
			if err = k.nargs(o, 1, 1); err == nil {
				a, perr := parseIP(o.args()[0])
				if perr != nil {
					return c, false, k.errorf(o, "%v", perr)
				}
				c.Source = ptr(a.String())
			}
		case okw == "connect_ip" && kind != health.KindExternal:
			k.noEquivalent(o, "saru checks the real server's own address")
		case (okw == "bind_port" || okw == "bind_if" || okw == "fwmark") && kind != health.KindExternal,
			okw == "log_all_failures":
			k.noEquivalent(o, "")
		case (kind == health.KindHTTP || kind == health.KindHTTPS) && okw == "url":
			if !o.hasBlock {
				return c, false, k.errorf(o, "needs a block { path ... }")
			}
			urls = append(urls, o)
		case (kind == health.KindHTTP || kind == health.KindHTTPS) && (okw == "http_protocol" || okw == "fast_recovery" || okw == "tls_compliant"):
			k.noEquivalent(o, "")
		case kind == health.KindHTTPS && okw == "enable_sni":
			_, err = k.flag(o) // saru sends the virtual host as the server name anyway
		case kind == health.KindHTTPS && okw == "sni_name":
			if err = k.nargs(o, 1, 1); err == nil {
				c.SNI = ptr(o.args()[0])
			}
		case kind == health.KindSMTP && okw == "helo_name":
			k.noEquivalent(o, "saru's SMTP check reads the greeting and quits")
		case kind == health.KindSMTP && okw == "host":
			k.noEquivalent(o, "saru checks the real server itself; its connect options are left out")
		case kind == health.KindDNS && okw == "type":
			if err = k.nargs(o, 1, 1); err == nil {
				t := strings.ToUpper(o.args()[0])
				if !slices.Contains([]string{"A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA"}, t) {
					return c, false, k.errorf(o, "%q: write A, NS, CNAME, SOA, MX, TXT or AAAA", o.args()[0])
				}
				c.QueryType = ptr(t)
			}
		case kind == health.KindDNS && okw == "name":
			if err = k.nargs(o, 1, 1); err == nil {
				if o.args()[0] == "" {
					return c, false, k.errorf(o, "empty")
				}
				c.Query = ptr(o.args()[0])
			}
		case kind == health.KindExternal && okw == "misc_path":
			if len(o.args()) == 0 {
				return c, false, k.errorf(o, "missing the command")
			}
			args, serr := shellSplit(strings.Join(o.args(), " "))
			if serr != nil || len(args) == 0 || args[0] == "" {
				return c, false, k.errorf(o, "%s", orMsg(serr, "no command"))
			}
			c.Command = args
		case kind == health.KindExternal && okw == "misc_timeout":
			var n uint64
			if n, err = k.uint(o, 0, uint64(maxDuration.Seconds())); err == nil && n > 0 {
				miscTimeout.put(time.Duration(n)*time.Second, o.line)
			}
		case kind == health.KindExternal && okw == "misc_dynamic":
			if err = k.nargs(o, 0, 0); err == nil {
				c.DynamicWeight = ptr(true)
			}
		case kind == health.KindExternal && okw == "user":
			k.noEquivalent(o, "the command runs as saru's user")
		case kind == health.KindUDP && okw == "payload":
			var b []byte
			if b, err = k.hexString(o); err == nil {
				c.Send = ptr(string(b))
			}
		case kind == health.KindUDP && okw == "require_reply":
			requireReply = true
			if len(o.args()) > 0 {
				if strings.ContainsAny(strings.Join(o.args(), ""), "xX") {
					k.note(o, "require_reply with X wildcards has no equivalent; saru wants any reply")
					break
				}
				var b []byte
				if b, err = k.hexString(o); err == nil {
					c.Expect = ptr(string(b))
				}
			}
		case kind == health.KindUDP && (okw == "min_reply_length" || okw == "max_reply_length"):
			k.noEquivalent(o, "")
		default:
			return c, false, k.errorf(o, "unknown keyword in %s", kw)
		}
		if err != nil {
			return c, false, err
		}
	}

	tm = tm.over(inherited)
	interval := tm.delayLoop.or(60 * time.Second)
	c.Interval = ptr(formatDuration(interval))
	timeout := tm.connectTimeout.or(5 * time.Second)
	retries, retryDelay := 1, time.Second
	switch kind {
	case health.KindHTTP, health.KindHTTPS:
		retryDelay = 3 * time.Second
		if len(urls) == 0 {
			k.note(s, "%s has no url; keepalived ignores it, and so does the translation", kw)
			return c, false, nil
		}
		if err := k.url(&c, urls[0]); err != nil {
			return c, false, err
		}
		muted := k.t.mute
		k.t.mute = true
		for _, u := range urls[1:] {
			var unused services.FileCheck
			if err := k.url(&unused, u); err != nil {
				return c, false, err // a mistake is one even where it is left out
			}
		}
		k.t.mute = muted
		if len(urls) > 1 {
			k.note(urls[1], "%s checks %d URLs and saru one: only the first (line %d) is carried over", kw, len(urls), urls[0].line)
		}
		if c.Host == nil && tm.virtualhost.set {
			c.Host = ptr(tm.virtualhost.v)
		}
	case health.KindDNS:
		retries, retryDelay = 3, interval
		if c.Query == nil {
			c.Query = ptr(".") // keepalived's default
		}
		if c.QueryType == nil {
			c.QueryType = ptr("SOA")
		}
	case health.KindExternal:
		retries = 0
		timeout = miscTimeout.or(interval)
		if c.Command == nil {
			k.note(s, "MISC_CHECK has no misc_path; keepalived ignores it, and so does the translation")
			return c, false, nil
		}
		k.note(s, "saru runs %s with the arguments VIP VPORT RIP RPORT appended; keepalived ran it as written, so check the script ignores extra arguments", c.Command[0])
	case health.KindUDP:
		if !requireReply {
			k.note(s, "UDP_CHECK without require_reply counted silence as up; saru's UDP check wants a reply")
		}
	}
	c.Timeout = ptr(formatDuration(timeout))
	if tm.retry.set {
		retries = tm.retry.v
	}
	if tm.delayBeforeRetry.set {
		retryDelay = tm.delayBeforeRetry.v
	}
	if retries > 0 {
		c.Retries = ptr(retries)
		if retryDelay > 0 {
			c.RetryDelay = ptr(formatDuration(retryDelay))
		}
	}
	return c, true, nil
}

// url translates an HTTP_GET or SSL_GET url block.
func (k *kaReader) url(c *services.FileCheck, u *kaStmt) error {
	noMatch := false
	for _, o := range u.block {
		var err error
		switch o.keyword() {
		case "path":
			if err = k.nargs(o, 1, 1); err == nil {
				p := o.args()[0]
				if !strings.HasPrefix(p, "/") {
					return k.errorf(o, "%q must start with /", p)
				}
				if p != "/" {
					c.Path = ptr(p)
				}
			}
		case "digest":
			if err = k.nargs(o, 1, 1); err == nil {
				d := strings.ToLower(o.args()[0])
				if _, herr := hex.DecodeString(d); herr != nil || len(d) != 32 {
					return k.errorf(o, "%q is not an MD5 digest (32 hex digits, as genhash prints)", o.args()[0])
				}
				c.Digest = ptr(d)
			}
		case "status_code":
			var codes []int
			if codes, err = k.statusCodes(o); err == nil && !isDefaultStatus(codes) {
				c.Status = codes
			}
		case "virtualhost":
			if err = k.nargs(o, 1, 1); err == nil {
				c.Host = ptr(o.args()[0])
			}
		case "regex":
			if err = k.nargs(o, 1, 1); err == nil {
				if _, rerr := regexp.Compile(o.args()[0]); rerr != nil {
					return k.errorf(o, "%q is a regular expression saru cannot run (Go's RE2 syntax): %v", o.args()[0], rerr)
				}
				c.BodyRegex = ptr(o.args()[0])
			}
		case "regex_no_match":
			k.noEquivalent(o, "the regex is left out")
			noMatch = true
		case "regex_options", "regex_stack", "regex_min_offset", "regex_max_offset", "tls_compliant":
			k.noEquivalent(o, "")
		default:
			return k.errorf(o, "unknown keyword in url")
		}
		if err != nil {
			return err
		}
	}
	if noMatch {
		c.BodyRegex = nil // it would test the opposite
	}
	return nil
}

// statusCodes reads status_code 200 301-303 ...
func (k *kaReader) statusCodes(s *kaStmt) ([]int, error) {
	if s.hasBlock || len(s.args()) == 0 {
		return nil, k.errorf(s, "write codes or ranges, e.g. 200-299 301")
	}
	var out []int
	var seen [600]bool
	for _, a := range s.args() {
		lo, hi, isRange := strings.Cut(a, "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || l < 100 || h > 599 || l > h {
			return nil, k.errorf(s, "%q is not an HTTP status code or range (100..599)", a)
		}
		for c := l; c <= h; c++ {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// isDefaultStatus reports whether codes are exactly 200..299, keepalived's
// and saru's default, which need not be listed.
func isDefaultStatus(codes []int) bool {
	if len(codes) != 100 {
		return false
	}
	for i, c := range codes {
		if c != 200+i {
			return false
		}
	}
	return true
}

// hexString reads keepalived's free-form hex: groups of digits separated
// by blanks, each read two digits to a byte, an odd last digit a byte of
// its own ("Ab12f 3" is AB 12 0F 03).
func (k *kaReader) hexString(s *kaStmt) ([]byte, error) {
	if s.hasBlock || len(s.args()) == 0 {
		return nil, k.errorf(s, "missing hex digits")
	}
	var out []byte
	for _, group := range s.args() {
		for _, f := range strings.Fields(group) {
			for len(f) > 0 {
				n := min(2, len(f))
				b, err := strconv.ParseUint(f[:n], 16, 8)
				if err != nil {
					return nil, k.errorf(s, "%q is not hex", group)
				}
				out = append(out, byte(b))
				f = f[n:]
			}
		}
	}
	return out, nil
}

// service builds the service for one virtual address or mark.
func (k *kaReader) service(vs *kaVS, v kaVirtual, reals []realSpec) error {
	var s services.FileService
	vsrv := vserver{port: v.port, fwmark: v.fwmark, is6: v.addr.Is6()}
	if v.fwmark != 0 {
		s.FWMark = v.fwmark
		is6 := orElse(v.is6, opt[bool]{v: vs.family.v == "inet6", set: vs.family.set})
		if !is6.set && len(reals) > 0 {
			is6.put(reals[0].addr.Is6(), 0) // keepalived takes the family from the real servers
		}
		vsrv.is6 = is6.v
		if is6.v {
			s.Family = "ipv6"
		}
	} else {
		s.Address = netip.AddrPortFrom(v.addr, v.port).String()
		if vs.protocol.set {
			s.Protocol = vs.protocol.v
		} else {
			k.note(v.stmt, "%s has no protocol; keepalived then uses UDP (and warns), so does the translation: add protocol TCP if that was meant", v.origin)
			s.Protocol = "udp"
		}
	}
	s.Scheduler = vs.sched.or("wlc")
	for _, f := range vs.flags {
		kw := f.keyword()
		if (strings.HasPrefix(kw, "sh-") && s.Scheduler != "sh") || (strings.HasPrefix(kw, "mh-") && s.Scheduler != "mh") {
			k.note(f, "%s only applies to the %s scheduler; keepalived ignores it here, and so does the translation", kw, kw[:2])
			continue
		}
		if !slices.Contains(s.SchedulerFlags, kw) {
			s.SchedulerFlags = append(s.SchedulerFlags, kw)
		}
	}
	if vs.ops.set {
		if s.Protocol == "udp" || v.fwmark != 0 {
			s.OnePacket = true
		} else {
			k.t.note(vs.stmt.file, vs.ops.line, "ops (one-packet scheduling) is for UDP; keepalived resets it here, and so does the translation")
		}
	}
	persist := vs.persist
	if !persist.set && v.fwmark == 0 && v.port == 0 {
		k.note(v.stmt, "%s has no port, which keepalived allows only for persistent services; it makes it persistent for 360s, and so does the translation", v.origin)
		persist.put(360, v.stmt.line)
	}
	if persist.set {
		s.Persistence = fmt.Sprintf("%ds", persist.v)
	}
	if g := vs.granularity; g != nil {
		n, err := prefixLen(g.args()[0], vsrv.is6)
		switch {
		case err != nil:
			return k.errorf(g, "%v", err)
		case !persist.set:
			k.note(g, "persistence_granularity only matters with persistence_timeout; left out")
		default:
			s.PersistMask = ptr(n)
		}
	}
	seen := map[string]bool{}
	for _, r := range reals {
		fr, err := k.t.real(vsrv, r)
		if err != nil {
			return err
		}
		if err := k.t.addReal(&s, seen, fr, r); err != nil {
			return err
		}
	}
	if len(s.Reals) == 0 {
		k.note(v.stmt, "%s has no real servers; keepalived ignores it, and so does the translation", v.origin)
		return nil
	}
	if err := k.sorry(vs, vsrv, &s); err != nil {
		return err
	}
	k.t.dropFallbackIfReal(&s, vs.stmt.file, vs.stmt.line)
	return k.t.add(v.stmt.file, v.stmt.line, v.stmt.keyword(), v.origin, s)
}

// sorry translates sorry_server into the fallback server.
func (k *kaReader) sorry(vs *kaVS, v vserver, s *services.FileService) error {
	ss := vs.sorry
	if ss == nil {
		return nil
	}
	a, err := parseIP(ss.args()[0])
	if err != nil {
		return k.errorf(ss, "%v", err)
	}
	if a.Is6() != v.is6 {
		k.note(ss, "the sorry server %s is of the other address family than the virtual service; keepalived skips it, and so does the translation", a)
		return nil
	}
	r := realSpec{file: ss.file, line: ss.line, directive: "sorry_server", addr: a, weight: 1,
		forward: orElse(vs.sorryFwd, vs.forward).or("masq")}
	if len(ss.args()) == 2 {
		if r.port, err = kaPort(ss.args()[1]); err != nil {
			return k.errorf(ss, "%v", err)
		}
	}
	fr, err := k.t.fallback(v, r)
	if err != nil {
		return err
	}
	s.Fallback = fr
	return nil
}
