package services

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/peerlvs/peerlvs/ipvs"
	"github.com/peerlvs/peerlvs/saru/health"
)

// FileService is one entry of the services: section of saru.yaml as
// written. Its YAML is decoded strictly by the caller (unknown keys are
// errors naming the line).
type FileService struct {
	Name           string     `yaml:"name,omitempty"`
	Address        string     `yaml:"address,omitempty"`
	Protocol       string     `yaml:"protocol,omitempty"`
	FWMark         uint32     `yaml:"fwmark,omitempty"`
	Family         string     `yaml:"family,omitempty"`
	Scheduler      string     `yaml:"scheduler,omitempty"`
	SchedulerFlags []string   `yaml:"scheduler_flags,omitempty"`
	OnePacket      bool       `yaml:"one_packet,omitempty"`
	Persistence    string     `yaml:"persistence,omitempty"`
	PersistMask    *int       `yaml:"persistence_netmask,omitempty"`
	Forward        string     `yaml:"forward,omitempty"`
	Weight         *int       `yaml:"weight,omitempty"`
	OnFailure      string     `yaml:"on_failure,omitempty"`
	Check          *FileCheck `yaml:"check,omitempty"`
	Fallback       *FileReal  `yaml:"fallback,omitempty"`
	Reals          []FileReal `yaml:"reals,omitempty"`
}

// FileReal is a real server (or the fallback server) as written.
type FileReal struct {
	Address        string     `yaml:"address,omitempty"`
	Forward        string     `yaml:"forward,omitempty"`
	Weight         *int       `yaml:"weight,omitempty"`
	UpperThreshold uint32     `yaml:"upper_threshold,omitempty"`
	LowerThreshold uint32     `yaml:"lower_threshold,omitempty"`
	OnFailure      string     `yaml:"on_failure,omitempty"`
	Check          *FileCheck `yaml:"check,omitempty"`
}

// FileCheck is a check as written. Every field is optional: a real
// server's check overrides its service's field by field.
type FileCheck struct {
	Type          *string  `yaml:"type,omitempty"`
	Interval      *string  `yaml:"interval,omitempty"`
	Timeout       *string  `yaml:"timeout,omitempty"`
	Port          *uint16  `yaml:"port,omitempty"`
	Source        *string  `yaml:"source,omitempty"`
	Retries       *int     `yaml:"retries,omitempty"`
	RetryDelay    *string  `yaml:"retry_delay,omitempty"`
	Fall          *int     `yaml:"fall,omitempty"`
	Rise          *int     `yaml:"rise,omitempty"`
	Send          *string  `yaml:"send,omitempty"`
	Expect        *string  `yaml:"expect,omitempty"`
	Method        *string  `yaml:"method,omitempty"`
	Path          *string  `yaml:"path,omitempty"`
	Host          *string  `yaml:"host,omitempty"`
	SNI           *string  `yaml:"sni,omitempty"`
	Status        []int    `yaml:"status,omitempty"`
	Body          *string  `yaml:"body,omitempty"`
	BodyRegex     *string  `yaml:"body_regex,omitempty"`
	Digest        *string  `yaml:"digest,omitempty"`
	Verify        *bool    `yaml:"tls_verify,omitempty"`
	Query         *string  `yaml:"query,omitempty"`
	QueryType     *string  `yaml:"query_type,omitempty"`
	QueryTCP      *bool    `yaml:"query_tcp,omitempty"`
	Command       []string `yaml:"command,omitempty"`
	DynamicWeight *bool    `yaml:"dynamic_weight,omitempty"`
}

// merge returns c with every field set in over replacing c's. Every
// field of FileCheck is a pointer or a slice, nil when not written.
func (c FileCheck) merge(over *FileCheck) FileCheck {
	if over == nil {
		return c
	}
	dst, src := reflect.ValueOf(&c).Elem(), reflect.ValueOf(over).Elem()
	for i := range src.NumField() {
		if f := src.Field(i); !f.IsNil() {
			dst.Field(i).Set(f)
		}
	}
	return c
}

// Action is what a failed check does to its real server.
type Action int

const (
	// Quiescent sets the weight to 0: no new connections, established
	// ones keep flowing (ldirectord's quiescent=yes, keepalived's
	// inhibit_on_failure).
	Quiescent Action = iota
	// Remove takes the real server out of the service: its connections
	// are kept by the kernel only as long as expire_nodest_conn allows.
	Remove
)

func (a Action) String() string {
	if a == Remove {
		return "remove"
	}
	return "quiescent"
}

func parseAction(s string, def Action) (Action, error) {
	switch strings.ToLower(s) {
	case "":
		return def, nil
	case "quiescent", "inhibit":
		return Quiescent, nil
	case "remove":
		return Remove, nil
	}
	return 0, fmt.Errorf("%q unknown; use quiescent (weight 0, established connections keep flowing) or remove", s)
}

// Service is a declared virtual service, checked.
type Service struct {
	// Name is the operator's, or the service's address when unnamed.
	Name     string
	Virtual  ipvs.Service
	Reals    []Real
	Fallback *Real
}

// Real is a declared real server with its check.
type Real struct {
	// Dest carries the configured weight: the weight while it is up.
	Dest      ipvs.Destination
	OnFailure Action
	Check     health.Spec
}

// ID names a real server of a service in logs, status and gossip:
// "tcp 10.0.0.1:80 -> 10.1.0.1:80".
func (s Service) ID(r Real) string { return s.Virtual.String() + " -> " + r.Dest.String() }

// Target is what r's check probes.
func (s Service) Target(r Real) health.Target {
	port := r.Dest.Port
	if r.Check.Port != 0 {
		port = r.Check.Port
	}
	t := health.Target{Addr: netip.AddrPortFrom(r.Dest.Address.Unmap(), port), FWMark: s.Virtual.FWMark}
	if s.Virtual.FWMark == 0 {
		t.VIP, t.VPort = s.Virtual.Address.Unmap(), s.Virtual.Port
	}
	return t
}

// Parse checks every declared service and reports every problem at once,
// each naming its place, e.g. "services[1].reals[0].weight: ...".
func Parse(file []FileService) ([]Service, error) {
	var errs []error
	out := make([]Service, 0, len(file))
	seen := map[string]string{}
	for i, f := range file {
		at := fmt.Sprintf("services[%d]", i)
		s, err := parseService(at, f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		key := s.Virtual.String()
		if prev, ok := seen[key]; ok {
			errs = append(errs, fmt.Errorf("%s: %s is declared twice (also %s)", at, key, prev))
			continue
		}
		seen[key] = at
		out = append(out, s)
	}
	names := map[string]bool{}
	for _, s := range out {
		if names[s.Name] {
			errs = append(errs, fmt.Errorf("services: the name %q is used twice; names must be unique", s.Name))
		}
		names[s.Name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func parseService(at string, f FileService) (Service, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", at, field, fmt.Sprintf(format, args...)))
	}
	var v ipvs.Service
	switch {
	case f.FWMark != 0 && f.Address != "":
		bad("address", "a service has either an address or a fwmark, not both")
	case f.FWMark != 0:
		v.FWMark = f.FWMark
		switch strings.ToLower(f.Family) {
		case "", "ipv4", "inet":
			v.Address = netip.IPv4Unspecified()
		case "ipv6", "inet6":
			v.Address = netip.IPv6Unspecified()
		default:
			bad("family", "%q unknown; use ipv4 or ipv6", f.Family)
		}
		if f.Protocol != "" {
			bad("protocol", "a fwmark service has no protocol: the mark selects the packets")
		}
	case f.Address != "":
		ap, err := netip.ParseAddrPort(f.Address)
		if err != nil {
			bad("address", "%q must be ip:port, e.g. 192.0.2.10:80 or [2001:db8::10]:80", f.Address)
		}
		v.Address, v.Port = ap.Addr().Unmap(), ap.Port()
		if f.Family != "" {
			bad("family", "only fwmark services name a family; an address has its own")
		}
		v.Protocol = ipvs.TCP
		if f.Protocol != "" {
			p, err := ipvs.ParseProtocol(f.Protocol)
			if err != nil || (p != ipvs.TCP && p != ipvs.UDP && p != ipvs.SCTP) {
				bad("protocol", "%q unknown; use tcp, udp or sctp", f.Protocol)
			}
			v.Protocol = p
		}
	default:
		bad("address", "missing; give ip:port (or a fwmark)")
	}
	v.Scheduler = f.Scheduler
	if v.Scheduler == "" {
		v.Scheduler = ipvs.DefaultScheduler
	} else if !validScheduler(v.Scheduler) {
		bad("scheduler", "%q unknown; use one of %s", f.Scheduler, strings.Join(schedulers(), ", "))
	}
	for _, fl := range f.SchedulerFlags {
		b, err := parseSchedFlag(fl)
		if err != nil {
			bad("scheduler_flags", "%v", err)
		}
		v.Flags |= b
	}
	if f.OnePacket {
		if v.Protocol != ipvs.UDP && v.FWMark == 0 {
			bad("one_packet", "one-packet scheduling is for UDP (and fwmark) services")
		}
		v.Flags |= ipvs.FlagOnePacket
	}
	if f.Persistence != "" {
		d, err := time.ParseDuration(f.Persistence)
		if err != nil || d < time.Second || d%time.Second != 0 {
			bad("persistence", "%q must be whole seconds, at least 1s, e.g. 300s", f.Persistence)
		}
		v.Timeout = d
	}
	if f.PersistMask != nil {
		n, max := *f.PersistMask, 32
		if v.Address.Is6() {
			max = 128
		}
		switch {
		case f.Persistence == "":
			bad("persistence_netmask", "needs persistence")
		case n < 1 || n > max:
			bad("persistence_netmask", "/%d out of range; use 1..%d", n, max)
		}
		v.Netmask = n
	}
	svcCheck := FileCheck{}
	if f.Check != nil {
		svcCheck = *f.Check
	}
	svcAction, err := parseAction(f.OnFailure, Quiescent)
	if err != nil {
		bad("on_failure", "%v", err)
	}
	defWeight := 1
	if f.Weight != nil {
		defWeight = *f.Weight
	}
	s := Service{Name: f.Name, Virtual: v}
	if s.Name == "" {
		s.Name = v.String()
	}
	if len(f.Reals) == 0 {
		bad("reals", "empty; list the real servers")
	}
	seen := map[netip.AddrPort]bool{}
	for j, fr := range f.Reals {
		r, err := parseReal(fmt.Sprintf("%s.reals[%d]", at, j), fr, f, v, svcCheck, svcAction, defWeight)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		k := netip.AddrPortFrom(r.Dest.Address, r.Dest.Port)
		if seen[k] {
			bad(fmt.Sprintf("reals[%d]", j), "%s is listed twice", k)
			continue
		}
		seen[k] = true
		s.Reals = append(s.Reals, r)
	}
	if f.Fallback != nil {
		if f.Fallback.Check != nil {
			bad("fallback.check", "the fallback server is not checked: it serves only while every real server is down")
		}
		if f.Fallback.OnFailure != "" {
			bad("fallback.on_failure", "the fallback server is not checked")
		}
		r, err := parseReal(at+".fallback", *f.Fallback, f, v, FileCheck{Type: ptr(string(health.KindNone))}, Remove, defWeight)
		if err != nil {
			errs = append(errs, err)
		} else if seen[netip.AddrPortFrom(r.Dest.Address, r.Dest.Port)] {
			bad("fallback", "%s is also a real server", r.Dest)
		} else {
			s.Fallback = &r
		}
	}
	return s, errors.Join(errs...)
}

func ptr[T any](v T) *T { return &v }

func parseReal(at string, fr FileReal, fs FileService, v ipvs.Service, svcCheck FileCheck, svcAction Action, defWeight int) (Real, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", at, field, fmt.Sprintf(format, args...)))
	}
	var r Real
	if v.FWMark != 0 {
		a, err := netip.ParseAddr(fr.Address)
		if err != nil {
			if ap, err2 := netip.ParseAddrPort(fr.Address); err2 == nil {
				a, err = ap.Addr(), nil
				r.Dest.Port = ap.Port()
			}
		}
		if err != nil {
			bad("address", "%q must be an IP address (ip:port also works; a fwmark service keeps the packet's port when the port is 0)", fr.Address)
		}
		r.Dest.Address = a.Unmap()
	} else {
		ap, err := netip.ParseAddrPort(fr.Address)
		if err != nil {
			// The port defaults to the service's, as in ipvsadm.
			if a, err2 := netip.ParseAddr(fr.Address); err2 == nil {
				ap, err = netip.AddrPortFrom(a, v.Port), nil
			}
		}
		if err != nil {
			bad("address", "%q must be ip:port or ip (the service's port), e.g. 10.1.0.2:80", fr.Address)
		}
		r.Dest.Address, r.Dest.Port = ap.Addr().Unmap(), ap.Port()
	}
	if r.Dest.Address.IsValid() && v.Address.IsValid() && r.Dest.Address.Is6() != v.Address.Is6() {
		bad("address", "%s is of the other address family than the service; IPVS cannot sync mixed families", r.Dest.Address)
	}
	fwd := fr.Forward
	if fwd == "" {
		fwd = fs.Forward
	}
	m, err := parseForward(fwd)
	if err != nil {
		bad("forward", "%v", err)
	}
	r.Dest.Forward = m
	// NAT may map ports; DR and TUN cannot.
	if m != ipvs.ForwardMasq && v.FWMark == 0 && r.Dest.Port != v.Port {
		bad("address", "port %d differs from the service's %d: only masq (NAT) can map ports", r.Dest.Port, v.Port)
	}
	w := defWeight
	if fr.Weight != nil {
		w = *fr.Weight
	}
	if w < 0 || w > 65535 {
		bad("weight", "%d out of range; use 0..65535", w)
	}
	r.Dest.Weight = uint16(max(0, min(w, 65535)))
	r.Dest.UpperThreshold, r.Dest.LowerThreshold = fr.UpperThreshold, fr.LowerThreshold
	if fr.LowerThreshold > fr.UpperThreshold && fr.UpperThreshold != 0 {
		bad("lower_threshold", "%d is above upper_threshold %d", fr.LowerThreshold, fr.UpperThreshold)
	}
	if r.OnFailure, err = parseAction(fr.OnFailure, svcAction); err != nil {
		bad("on_failure", "%v", err)
	}
	spec, err := buildCheck(svcCheck.merge(fr.Check))
	if err != nil {
		errs = append(errs, prefixErrs(at+".check", err))
	}
	if spec.Kind != health.KindNone && spec.Kind != health.KindICMP && spec.Kind != health.KindExternal &&
		spec.Port == 0 && r.Dest.Port == 0 {
		bad("check.port", "missing; a fwmark service's real server has no port of its own, so name the port to check")
	}
	r.Check = spec
	return r, errors.Join(errs...)
}

// prefixErrs puts at before each joined error's text.
func prefixErrs(at string, err error) error {
	var out []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, fmt.Errorf("%s.%w", at, e))
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s.%w", at, err)
}

func buildCheck(c FileCheck) (health.Spec, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	var s health.Spec
	if c.Type != nil {
		s.Kind = health.Kind(strings.ToLower(*c.Type))
	}
	dur := func(field string, p *string) time.Duration {
		if p == nil {
			return 0
		}
		d, err := time.ParseDuration(*p)
		if err != nil || d <= 0 {
			bad(field, "%q is not a positive duration; write it like 5s or 500ms", *p)
		}
		return d
	}
	s.Interval = dur("interval", c.Interval)
	s.Timeout = dur("timeout", c.Timeout)
	s.RetryDelay = dur("retry_delay", c.RetryDelay)
	if c.Port != nil {
		if *c.Port == 0 {
			bad("port", "0 is not a port")
		}
		s.Port = *c.Port
	}
	if c.Source != nil {
		a, err := netip.ParseAddr(*c.Source)
		if err != nil {
			bad("source", "%q is not an IP address", *c.Source)
		}
		s.Source = a
	}
	deref := func(p *int) int {
		if p == nil {
			return 0
		}
		if *p == 0 {
			return -1 // explicit 0: let Validate name it
		}
		return *p
	}
	if c.Retries != nil {
		s.Retries = *c.Retries
	}
	s.Fall, s.Rise = deref(c.Fall), deref(c.Rise)
	if c.Send != nil {
		s.Send = []byte(*c.Send)
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	s.Expect = str(c.Expect)
	s.HTTP = health.HTTPSpec{Method: strings.ToUpper(str(c.Method)), Path: str(c.Path), Host: str(c.Host), SNI: str(c.SNI),
		Status: c.Status, Body: str(c.Body), Digest: strings.ToLower(str(c.Digest))}
	if c.BodyRegex != nil {
		re, err := regexp.Compile(*c.BodyRegex)
		if err != nil {
			bad("body_regex", "%v", err)
		}
		s.HTTP.BodyRegex = re
	}
	if c.Verify != nil {
		s.HTTP.Verify = *c.Verify
	}
	s.DNS = health.DNSSpec{Name: str(c.Query), Type: strings.ToUpper(str(c.QueryType))}
	if c.QueryTCP != nil {
		s.DNS.TCP = *c.QueryTCP
	}
	s.Command = c.Command
	if c.DynamicWeight != nil {
		s.DynamicWeight = *c.DynamicWeight
	}
	s = s.WithDefaults()
	if s.Fall < 0 {
		s.Fall = 0
	}
	if s.Rise < 0 {
		s.Rise = 0
	}
	if err := s.Validate(); err != nil {
		errs = append(errs, err)
	}
	return s, errors.Join(errs...)
}

func parseForward(s string) (ipvs.ForwardMethod, error) {
	switch strings.ToLower(s) {
	case "", "gate", "dr", "route", "direct":
		return ipvs.ForwardRoute, nil
	case "masq", "nat", "masquerade":
		return ipvs.ForwardMasq, nil
	case "ipip", "tun", "tunnel":
		return ipvs.ForwardTunnel, nil
	}
	return 0, fmt.Errorf("%q unknown; use gate (DR), masq (NAT) or ipip (TUN)", s)
}

// schedulers are the kernel's IPVS schedulers (ip_vs_*.ko).
func schedulers() []string {
	return []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}
}

func validScheduler(s string) bool { return slices.Contains(schedulers(), s) }

// parseSchedFlag takes ipvsadm's names (sh-fallback, sh-port, mh-fallback,
// mh-port) and flag-1..flag-3.
func parseSchedFlag(s string) (ipvs.ServiceFlags, error) {
	switch strings.ToLower(s) {
	case "sh-fallback", "mh-fallback", "flag-1":
		return ipvs.FlagSched1, nil
	case "sh-port", "mh-port", "flag-2":
		return ipvs.FlagSched2, nil
	case "flag-3":
		return ipvs.FlagSched3, nil
	}
	return 0, fmt.Errorf("%q unknown; use sh-fallback, sh-port, mh-fallback, mh-port or flag-1..flag-3", s)
}
