// Package importer translates the load-balancer configuration operators
// already have — ldirectord's ldirectord.cf and the LVS part of keepalived's
// keepalived.conf — into the services: section of saru.yaml, so that a
// director can be moved to saru by reviewing a file rather than retyping it.
//
// It only translates text. It reads the files it is given through an fs.FS
// and returns declarations plus notes on what has no equivalent; it must
// never touch the kernel's IPVS table, a running daemon or the network (it
// resolves no host or service names: addresses have to be written as
// addresses). That keeps an import safe to run anywhere, as any user, long
// before the switch.
//
// The translation keeps the behaviour of the old tool, not its syntax: the
// old tool's defaults (ldirectord's 10 s check interval and wrr scheduler,
// keepalived's 60 s delay_loop and NAT forwarding, ...) are written out
// explicitly, because saru's own defaults differ and a silent change of
// timing or forwarding is the kind of surprise an import must not bring.
package importer

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/peerlvs/peerlvs/saru/health"
	"github.com/peerlvs/peerlvs/saru/services"
)

// Note is something of the input the translation could not carry over, or
// carried over only approximately. Each deserves the operator's attention
// before the YAML is used.
type Note struct {
	File string
	Line int
	Text string
}

func (n Note) String() string { return fmt.Sprintf("%s:%d: %s", n.File, n.Line, n.Text) }

// Result is a translated configuration.
type Result struct {
	Services []services.FileService
	Notes    []Note

	// source names the file that was imported; origins[i] names where
	// Services[i] was declared. Both only feed YAML's comments, so a
	// Result built or changed by hand still encodes.
	source  string
	origins []string
}

// maxRange bounds how many addresses one range (ldirectord's a->b,
// keepalived's a-b or a/n) may stand for: ranges name a handful of servers,
// and a typo such as 10.0.0.1->10.9.0.1 should be an error rather than a
// hundred thousand declarations.
const maxRange = 1024

// maxReals bounds the real servers of a whole translation, for the same
// reason: ranges times groups can multiply.
const maxReals = 1 << 16

// The largest time a check interval or timeout may have: far beyond any
// sensible value, low enough that arithmetic on it cannot overflow.
const maxDuration = 24 * time.Hour

// YAML encodes r as the services: section of saru.yaml, the notes as
// comments on top and each service's origin as a comment above it. It
// decodes strictly into the services section and passes services.Parse.
func (r *Result) YAML() ([]byte, error) {
	doc := struct {
		Services []services.FileService `yaml:"services"`
	}{r.Services}
	if doc.Services == nil {
		doc.Services = []services.FileService{}
	}
	var root yaml.Node
	if err := root.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode services: %w", err)
	}
	if root.Kind != yaml.MappingNode || len(root.Content) != 2 {
		return nil, errors.New("encode services: unexpected YAML shape")
	}
	var head []string
	if r.source != "" {
		head = append(head, "Imported from "+oneLine(r.source)+" by saru import.")
	}
	if vips := r.vips(); len(vips) > 0 {
		head = append(head, "saru.yaml's vips: must list "+strings.Join(vips, ", ")+".")
	}
	if len(r.Notes) > 0 {
		head = append(head, "Not carried over, or only approximately; review each before use:")
		for _, n := range r.Notes {
			head = append(head, oneLine(n.String()))
		}
	}
	root.Content[0].HeadComment = strings.Join(head, "\n")
	for i, item := range root.Content[1].Content {
		if i < len(r.origins) && r.origins[i] != "" {
			item.HeadComment = oneLine(r.origins[i])
		}
	}
	flowShortLists(&root)
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return nil, fmt.Errorf("encode services: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode services: %w", err)
	}
	return []byte(b.String()), nil
}

// vips lists the virtual addresses in order, once each: saru splits only
// the traffic of addresses listed in vips:, and refuses a service whose
// address is not there.
func (r *Result) vips() []string {
	var out []string
	for _, s := range r.Services {
		ap, err := netip.ParseAddrPort(s.Address)
		if err != nil {
			continue
		}
		if a := ap.Addr().String(); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// flowShortLists writes status codes, commands and scheduler flags on one
// line: they read as one value, and a command split over several lines is
// hard to recognise.
func flowShortLists(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			switch n.Content[i].Value {
			case "status", "command", "scheduler_flags":
				if n.Content[i+1].Kind == yaml.SequenceNode {
					n.Content[i+1].Style = yaml.FlowStyle
				}
			}
		}
	}
	for _, c := range n.Content {
		flowShortLists(c)
	}
}

// oneLine makes s safe as one comment line: the input's text ends up in
// comments, and a line break in it would turn the rest into YAML, as YAML
// refuses characters outside its printable set even in comments.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t', r >= 0x20 && r <= 0x7e, r >= 0xa0 && r <= 0xd7ff && r != 0x2028 && r != 0x2029,
			r >= 0xe000 && r <= 0xfffd && r != 0xfeff, r >= 0x10000 && r <= 0x10ffff:
			return r
		}
		return ' '
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// translation is what both readers share while they work.
type translation struct {
	res Result
	// dir is the directory of the main file: names in notes and errors
	// are shown relative to it, as an operator thinks of them.
	dir   string
	seen  map[string]string
	notes map[Note]bool
	// order numbers files as they are read, to list notes in reading
	// order rather than in the order the translation met them.
	order map[string]int
	// places[i] is where Services[i] was declared.
	places []place
	// reals counts the real servers of all services, against maxReals.
	reals int
	// mute drops notes while a block that is left out is read for its
	// errors.
	mute bool
}

// place is a line of an input file, as the readers name files.
type place struct {
	file string
	line int
}

func newTranslation(name string) *translation {
	t := &translation{dir: path.Dir(name), seen: map[string]string{}, notes: map[Note]bool{}, order: map[string]int{}}
	t.read(name)
	t.res.source = t.display(name)
	return t
}

// read records that file is being read, for the order of notes.
func (t *translation) read(file string) {
	if _, ok := t.order[t.display(file)]; !ok {
		t.order[t.display(file)] = len(t.order)
	}
}

// display is how a file is named in notes and errors.
func (t *translation) display(name string) string {
	if t.dir == "." {
		return name
	}
	if rest, ok := strings.CutPrefix(name, t.dir+"/"); ok {
		return rest
	}
	return "/" + name
}

// note records a note once: the same remark about a virtual service would
// otherwise be repeated for each of its real servers.
func (t *translation) note(file string, line int, format string, args ...any) {
	n := Note{File: t.display(file), Line: line, Text: fmt.Sprintf(format, args...)}
	if t.mute || t.notes[n] {
		return
	}
	t.notes[n] = true
	t.res.Notes = append(t.res.Notes, n)
}

// errorf is an error about the input, naming its place and directive the
// way both daemons do, e.g. `keepalived.conf:17: real_server: ...`.
func (t *translation) errorf(file string, line int, directive, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s: %s", t.display(file), line, oneLine(directive), fmt.Sprintf(format, args...))
}

// add appends a finished service. Declaring one twice is an error in both
// daemons and in saru.
func (t *translation) add(file string, line int, directive, origin string, s services.FileService) error {
	hoist(&s)
	key := s.Address + "/" + strings.ToLower(s.Protocol)
	if s.FWMark != 0 {
		key = fmt.Sprintf("fwmark %d %s", s.FWMark, s.Family)
	}
	if prev, ok := t.seen[key]; ok {
		return t.errorf(file, line, directive, "this virtual service is already declared at %s", prev)
	}
	t.seen[key] = fmt.Sprintf("%s:%d", t.display(file), line)
	t.res.Services = append(t.res.Services, s)
	t.res.origins = append(t.res.origins, fmt.Sprintf("%s:%d: %s", t.display(file), line, origin))
	t.places = append(t.places, place{file, line})
	return nil
}

// finish checks the whole translation with saru's own validation: a
// failure is the importer's bug, never the operator's, so it says so.
func (t *translation) finish() (*Result, error) {
	t.uniqueNames()
	slices.SortStableFunc(t.res.Notes, func(a, b Note) int {
		if c := cmp.Compare(t.order[a.File], t.order[b.File]); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
	if _, err := services.Parse(t.res.Services); err != nil {
		return nil, fmt.Errorf("%s: the translation does not pass saru's checks (a bug of the importer; please report it with the input): %w", t.res.source, err)
	}
	return &t.res, nil
}

// uniqueNames drops a name that another service already has, as its own
// or as the name saru gives an unnamed service: neither daemon wanted
// unique names, saru does.
func (t *translation) uniqueNames() {
	defaults := make([]string, len(t.res.Services))
	isDefault := map[string]bool{}
	for i, s := range t.res.Services {
		s.Name = ""
		if parsed, err := services.Parse([]services.FileService{s}); err == nil {
			defaults[i] = parsed[0].Name
			isDefault[defaults[i]] = true
		}
	}
	taken := map[string]bool{}
	for i := range t.res.Services {
		s := &t.res.Services[i]
		if s.Name == "" {
			continue
		}
		if taken[s.Name] || (isDefault[s.Name] && s.Name != defaults[i]) {
			t.note(t.places[i].file, t.places[i].line, "the name %q is already taken; saru wants unique names, so this service is left unnamed", s.Name)
			s.Name = ""
			continue
		}
		taken[s.Name] = true
	}
}

// vserver is the virtual side of a service, for placing real servers.
type vserver struct {
	port   uint16
	fwmark uint32
	is6    bool
}

func (v vserver) family() string {
	if v.is6 {
		return "IPv6"
	}
	return "IPv4"
}

// realSpec is a real server as a reader understood it.
type realSpec struct {
	file      string
	line      int
	directive string
	addr      netip.Addr
	port      uint16 // 0: not given
	forward   string // gate, masq or ipip
	weight    int
	lower     uint32
	upper     uint32
	onFailure string
	check     services.FileCheck // complete: nothing inherited
}

// needsPort reports whether a check of kind k connects to a port.
func needsPort(k string) bool {
	switch health.Kind(k) {
	case health.KindNone, health.KindICMP, health.KindExternal:
		return false
	}
	return true
}

// real places r in the service v. Direct routing and tunnelling deliver
// packets to the virtual port whatever the real server's port says, so a
// differing port becomes the check's port (where both daemons checked)
// while the real server is declared at the virtual port.
func (t *translation) real(v vserver, r realSpec) (services.FileReal, error) {
	a := r.addr
	if a.Is6() != v.is6 {
		return services.FileReal{}, t.errorf(r.file, r.line, r.directive, "%s is of the other address family than the virtual service (%s); IPVS as saru drives it cannot mix families", a, v.family())
	}
	c := r.check
	kind := ""
	if c.Type != nil {
		kind = *c.Type
	}
	port := r.port
	if v.fwmark == 0 {
		if port == 0 {
			port = v.port
		}
		if r.forward != "masq" && port != v.port {
			t.note(r.file, r.line, "%s: %s cannot map ports: the kernel delivers to port %d, so the real server is declared with port %d and checked on port %d as before", netip.AddrPortFrom(a, port), r.forward, v.port, v.port, port)
			if c.Port == nil && needsPort(kind) {
				c.Port = ptr(port)
			}
			port = v.port
		}
	}
	if needsPort(kind) && c.Port == nil && port == 0 {
		return services.FileReal{}, t.errorf(r.file, r.line, r.directive, "%s has no port and its %s check names none; give the port to check (checkport= in ldirectord, connect_port in keepalived)", a, kind)
	}
	if c.Port != nil && *c.Port == port && port != 0 {
		c.Port = nil
	}
	out := services.FileReal{Forward: r.forward, UpperThreshold: r.upper, LowerThreshold: r.lower, OnFailure: r.onFailure}
	if port == 0 {
		out.Address = a.String()
	} else {
		out.Address = netip.AddrPortFrom(a, port).String()
	}
	if r.weight != 1 {
		out.Weight = ptr(r.weight)
	}
	out.Check = &c
	return out, nil
}

// fallback places the fallback (sorry) server like a real server; it is
// never checked.
func (t *translation) fallback(v vserver, r realSpec) (*services.FileReal, error) {
	r.check = services.FileCheck{Type: ptr(string(health.KindNone))}
	fr, err := t.real(v, r)
	if err != nil {
		return nil, err
	}
	fr.Check, fr.OnFailure, fr.Weight = nil, "", nil
	return &fr, nil
}

// addReal appends fr to s unless seen says s already has that real
// server: both daemons keep the first and drop (or fail to add) the
// second.
func (t *translation) addReal(s *services.FileService, seen map[string]bool, fr services.FileReal, r realSpec) error {
	if seen[fr.Address] {
		t.note(r.file, r.line, "%s is listed twice in this virtual service; the second is dropped", fr.Address)
		return nil
	}
	t.reals++
	if t.reals > maxReals {
		return t.errorf(r.file, r.line, r.directive, "more than %d real servers in all; is a range or group larger than meant?", maxReals)
	}
	seen[fr.Address] = true
	s.Reals = append(s.Reals, fr)
	return nil
}

// dropFallbackIfReal applies saru's rule that the fallback server is not
// also a real server (keepalived allows it; the fallback then adds
// nothing while real servers are up).
func (t *translation) dropFallbackIfReal(s *services.FileService, file string, line int) {
	if s.Fallback == nil {
		return
	}
	for _, r := range s.Reals {
		if r.Address == s.Fallback.Address {
			t.note(file, line, "the fallback server %s is also a real server; saru does not allow that, so the fallback is dropped", r.Address)
			s.Fallback = nil
			return
		}
	}
}

// finishCheck bends c into saru's limits where the old daemon allowed more,
// noting each change. Both daemons bounded a check differently (ldirectord
// by an alarm, keepalived by timeouts per attempt), so these are the
// places a faithful translation cannot exist.
func finishCheck(c *services.FileCheck, note func(format string, args ...any)) {
	if c.Type == nil || *c.Type == string(health.KindNone) {
		*c = services.FileCheck{Type: ptr(string(health.KindNone))}
		return
	}
	iv, _ := time.ParseDuration(deref(c.Interval))
	if iv < health.MinInterval {
		note("check interval %v is below saru's minimum; using %v", iv, health.MinInterval)
		iv = health.MinInterval
		c.Interval = ptr(formatDuration(iv))
	}
	to, _ := time.ParseDuration(deref(c.Timeout))
	if to > iv {
		note("check timeout %v is longer than the check interval %v; saru bounds a check by its interval, so the timeout is %v", to, iv, iv)
		to = iv
		c.Timeout = ptr(formatDuration(to))
	}
	if c.Retries != nil {
		n := *c.Retries
		if n > 10 {
			note("%d retries are more than saru allows; using 10", n)
			n = 10
		}
		rd, _ := time.ParseDuration(deref(c.RetryDelay))
		for n > 0 && time.Duration(n+1)*to+time.Duration(n)*rd > 4*iv {
			n--
		}
		if n < min(*c.Retries, 10) {
			note("%d retries of %v with %v between them take longer than 4 check intervals (%v), saru's limit; using %d", *c.Retries, to, rd, 4*iv, n)
		}
		c.Retries = ptr(n)
		if n == 0 {
			c.Retries, c.RetryDelay = nil, nil
		}
	}
	if c.RetryDelay != nil && c.Retries == nil {
		c.RetryDelay = nil
	}
	if c.Fall != nil && *c.Fall > 100 {
		note("a fall count of %d is more than saru allows; using 100", *c.Fall)
		c.Fall = ptr(100)
	}
}

// hoist says once, on the service, what all its real servers share: the
// forwarding method, the failure action and each field of the check.
// services.Parse merges them back field by field.
func hoist(s *services.FileService) {
	if len(s.Reals) == 0 {
		return
	}
	same := true
	for _, r := range s.Reals {
		same = same && r.Forward == s.Reals[0].Forward
	}
	if same && s.Reals[0].Forward != "" {
		s.Forward = s.Reals[0].Forward
		for i := range s.Reals {
			s.Reals[i].Forward = ""
		}
		if s.Fallback != nil && s.Fallback.Forward == s.Forward {
			s.Fallback.Forward = ""
		}
	}
	same = true
	for _, r := range s.Reals {
		same = same && r.OnFailure == s.Reals[0].OnFailure
	}
	if same {
		s.OnFailure = s.Reals[0].OnFailure
		for i := range s.Reals {
			s.Reals[i].OnFailure = ""
		}
	}
	for _, r := range s.Reals {
		if r.Check == nil {
			return
		}
	}
	var svc services.FileCheck
	sv := reflect.ValueOf(&svc).Elem()
	hoisted := false
	for f := 0; f < sv.NumField(); f++ {
		first := reflect.ValueOf(s.Reals[0].Check).Elem().Field(f)
		if first.IsNil() {
			continue
		}
		shared := true
		for _, r := range s.Reals[1:] {
			shared = shared && reflect.DeepEqual(first.Interface(), reflect.ValueOf(r.Check).Elem().Field(f).Interface())
		}
		if !shared {
			continue
		}
		sv.Field(f).Set(first)
		hoisted = true
		for i := range s.Reals {
			reflect.ValueOf(s.Reals[i].Check).Elem().Field(f).SetZero()
		}
	}
	if hoisted {
		s.Check = &svc
	}
	for i := range s.Reals {
		if reflect.ValueOf(s.Reals[i].Check).Elem().IsZero() {
			s.Reals[i].Check = nil
		}
	}
}

// opt is a setting that may be absent; line is where it was set.
type opt[T any] struct {
	v    T
	set  bool
	line int
}

func (o *opt[T]) put(v T, line int) { *o = opt[T]{v: v, set: true, line: line} }

// or is the setting, or def when absent.
func (o opt[T]) or(def T) T {
	if o.set {
		return o.v
	}
	return def
}

// orElse is the first of os that is set, or an unset opt.
func orElse[T any](os ...opt[T]) opt[T] {
	for _, o := range os {
		if o.set {
			return o
		}
	}
	return opt[T]{}
}

func ptr[T any](v T) *T { return &v }

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// formatDuration writes d the way an operator would: 10s, 1500ms.
func formatDuration(d time.Duration) string {
	switch {
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	case d%time.Millisecond == 0:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	}
	return d.String()
}

// parseIP reads an IP address as written in either daemon's files
// (without brackets) and refuses what IPVS cannot use.
func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address (host names are not resolved: write the address)", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q has a zone; IPVS addresses have none", s)
	}
	return a.Unmap(), nil
}

// rangeAddrs lists first..last, both included, and refuses more than
// maxRange addresses.
func rangeAddrs(first, last netip.Addr) ([]netip.Addr, error) {
	if first.Is6() != last.Is6() {
		return nil, fmt.Errorf("%s and %s are of different address families", first, last)
	}
	if last.Less(first) {
		return nil, fmt.Errorf("the range %s to %s ends before it starts", first, last)
	}
	var out []netip.Addr
	for a := first; ; a = a.Next() {
		if len(out) == maxRange {
			return nil, fmt.Errorf("the range %s to %s has more than %d addresses", first, last, maxRange)
		}
		out = append(out, a)
		if a == last {
			return out, nil
		}
	}
}
