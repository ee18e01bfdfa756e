package services

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/ipvs"
	"github.com/peerlvs/peerlvs/saru/health"
	"go.yaml.in/yaml/v3"
)

func decode(t *testing.T, src string) []FileService {
	t.Helper()
	var f struct {
		Services []FileService `yaml:"services"`
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(src)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return f.Services
}

const full = `
services:
  - name: web
    address: 192.0.2.10:80
    scheduler: wrr
    persistence: 300s
    persistence_netmask: 24
    check:
      type: http
      path: /health
      host: www.example.org
      status: [200, 204]
      body: OK
      interval: 2s
      timeout: 1s
      fall: 3
      rise: 2
    fallback:
      address: 10.1.0.9:80
    reals:
      - address: 10.1.0.1:80
        weight: 3
      - address: 10.1.0.2
        on_failure: remove
        check: {path: /other, port: 8080}
  - address: "[2001:db8::10]:53"
    protocol: udp
    one_packet: true
    forward: masq
    check: {type: dns, query: example.org, query_type: AAAA}
    reals:
      - address: "[2001:db8:1::1]:5353"
  - fwmark: 7
    family: ipv6
    scheduler: mh
    scheduler_flags: [mh-port]
    forward: ipip
    check: {type: tcp, port: 443}
    reals:
      - address: "2001:db8:1::2"
`

func TestParseFull(t *testing.T) {
	svcs, err := Parse(decode(t, full))
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 3 {
		t.Fatalf("%d services", len(svcs))
	}
	web := svcs[0]
	if web.Name != "web" || web.Virtual.Scheduler != "wrr" || web.Virtual.Timeout != 300*time.Second || web.Virtual.Netmask != 24 {
		t.Fatalf("web: %+v", web.Virtual)
	}
	r0, r1 := web.Reals[0], web.Reals[1]
	if r0.Dest.Weight != 3 || r0.Dest.Forward != ipvs.ForwardRoute || r0.OnFailure != Quiescent || r0.Check.Kind != health.KindHTTP ||
		r0.Check.HTTP.Path != "/health" || r0.Check.Fall != 3 || r0.Check.Rise != 2 {
		t.Fatalf("real 0: %+v", r0)
	}
	// A real's check overrides its service's field by field; the port
	// defaults to the service's.
	if r1.Dest.Port != 80 || r1.OnFailure != Remove || r1.Check.HTTP.Path != "/other" || r1.Check.Port != 8080 ||
		r1.Check.HTTP.Host != "www.example.org" || r1.Check.Interval != 2*time.Second {
		t.Fatalf("real 1: %+v", r1)
	}
	if tg := web.Target(r1); tg.Addr.String() != "10.1.0.2:8080" || tg.VIP.String() != "192.0.2.10" || tg.VPort != 80 {
		t.Fatalf("target %+v", tg)
	}
	if web.Fallback == nil || web.Fallback.Dest.Weight != 1 || web.Fallback.Check.Kind != health.KindNone {
		t.Fatalf("fallback %+v", web.Fallback)
	}
	dns := svcs[1]
	if dns.Virtual.Protocol != ipvs.UDP || dns.Virtual.Flags&ipvs.FlagOnePacket == 0 || dns.Reals[0].Dest.Forward != ipvs.ForwardMasq ||
		dns.Reals[0].Dest.Port != 5353 || dns.Reals[0].Check.DNS.Type != "AAAA" || dns.Name != "udp [2001:db8::10]:53" {
		t.Fatalf("dns: %+v", dns)
	}
	mark := svcs[2]
	if mark.Virtual.FWMark != 7 || !mark.Virtual.Address.Is6() || mark.Virtual.Flags&ipvs.FlagSched2 == 0 ||
		mark.Reals[0].Dest.Forward != ipvs.ForwardTunnel || mark.Reals[0].Dest.Port != 0 {
		t.Fatalf("fwmark: %+v", mark)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"no address", "services: [{reals: [{address: 10.0.0.1:80}]}]", "services[0].address: missing"},
		{"both address and fwmark", "services: [{address: 192.0.2.1:80, fwmark: 3, reals: [{address: 10.0.0.1}]}]", "either an address or a fwmark"},
		{"no reals", "services: [{address: 192.0.2.1:80}]", "services[0].reals: empty"},
		{"bad real", "services: [{address: 192.0.2.1:80, reals: [{address: 10.0.0.x}]}]", "services[0].reals[0].address"},
		{"mixed families", "services: [{address: 192.0.2.1:80, reals: [{address: '[2001:db8::1]:80'}]}]", "other address family"},
		{"DR cannot map ports", "services: [{address: 192.0.2.1:80, reals: [{address: 10.0.0.1:8080}]}]", "only masq (NAT) can map ports"},
		{"unknown scheduler", "services: [{address: 192.0.2.1:80, scheduler: fastest, reals: [{address: 10.0.0.1}]}]", "scheduler: \"fastest\" unknown"},
		{"unknown check", "services: [{address: 192.0.2.1:80, check: {type: telnet}, reals: [{address: 10.0.0.1}]}]", "services[0].reals[0].check.type"},
		{"timeout above interval", "services: [{address: 192.0.2.1:80, check: {type: tcp, interval: 1s, timeout: 2s}, reals: [{address: 10.0.0.1}]}]", "check.timeout"},
		{"fall 0", "services: [{address: 192.0.2.1:80, check: {type: tcp, fall: 0}, reals: [{address: 10.0.0.1}]}]", "check.fall"},
		{"bad regex", "services: [{address: 192.0.2.1:80, check: {type: http, body_regex: '('}, reals: [{address: 10.0.0.1}]}]", "check.body_regex"},
		{"bad digest", "services: [{address: 192.0.2.1:80, check: {type: http, digest: abc}, reals: [{address: 10.0.0.1}]}]", "check.digest"},
		{"dns without query", "services: [{address: 192.0.2.1:53, protocol: udp, check: {type: dns}, reals: [{address: 10.0.0.1}]}]", "check.query: missing"},
		{"external without command", "services: [{address: 192.0.2.1:80, check: {type: external}, reals: [{address: 10.0.0.1}]}]", "check.command: missing"},
		{"fwmark check needs a port", "services: [{fwmark: 3, check: {type: tcp}, reals: [{address: 10.0.0.1}]}]", "check.port: missing"},
		{"duplicate service", "services: [{address: 192.0.2.1:80, reals: [{address: 10.0.0.1}]}, {address: 192.0.2.1:80, reals: [{address: 10.0.0.2}]}]", "declared twice"},
		{"duplicate real", "services: [{address: 192.0.2.1:80, reals: [{address: 10.0.0.1}, {address: 10.0.0.1:80}]}]", "listed twice"},
		{"fallback is a real", "services: [{address: 192.0.2.1:80, fallback: {address: 10.0.0.1}, reals: [{address: 10.0.0.1}]}]", "also a real server"},
		{"checked fallback", "services: [{address: 192.0.2.1:80, fallback: {address: 10.0.0.9, check: {type: tcp}}, reals: [{address: 10.0.0.1}]}]", "fallback server is not checked"},
		{"persistence in minutes is fine, fractions not", "services: [{address: 192.0.2.1:80, persistence: 1.5s, reals: [{address: 10.0.0.1}]}]", "whole seconds"},
		{"netmask without persistence", "services: [{address: 192.0.2.1:80, persistence_netmask: 24, reals: [{address: 10.0.0.1}]}]", "needs persistence"},
		{"weight out of range", "services: [{address: 192.0.2.1:80, reals: [{address: 10.0.0.1, weight: 70000}]}]", "weight: 70000 out of range"},
		{"bad action", "services: [{address: 192.0.2.1:80, on_failure: drop, reals: [{address: 10.0.0.1}]}]", "on_failure"},
		{"dynamic weight on http", "services: [{address: 192.0.2.1:80, check: {type: http, dynamic_weight: true}, reals: [{address: 10.0.0.1}]}]", "dynamic_weight"},
		{"one packet on tcp", "services: [{address: 192.0.2.1:80, one_packet: true, reals: [{address: 10.0.0.1}]}]", "one_packet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(decode(t, tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	a, err := Parse(decode(t, full))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Parse(decode(t, full))
	// Order does not matter; any declared detail does.
	b[0], b[2] = b[2], b[0]
	if Fingerprint(a) != Fingerprint(b) || Fingerprint(a) == 0 {
		t.Fatal("same services, different fingerprints")
	}
	b[0].Reals[0].Dest.Weight++
	if Fingerprint(a) == Fingerprint(b) {
		t.Fatal("a weight change keeps the fingerprint")
	}
	c, _ := Parse(decode(t, strings.Replace(full, "body: OK", "body: KO", 1)))
	if Fingerprint(a) == Fingerprint(c) {
		t.Fatal("a check change keeps the fingerprint")
	}
	if Fingerprint(nil) != 0 {
		t.Fatal("nothing declared must be 0")
	}
}

// TestFileCheckFieldsAreOptional guards merge: a field that cannot be nil
// could not tell "not written" from a value, and would override the
// service's check with its zero.
func TestFileCheckFieldsAreOptional(t *testing.T) {
	ty := reflect.TypeFor[FileCheck]()
	for i := range ty.NumField() {
		if k := ty.Field(i).Type.Kind(); k != reflect.Pointer && k != reflect.Slice {
			t.Errorf("FileCheck.%s is a %v; make it a pointer", ty.Field(i).Name, k)
		}
	}
}
