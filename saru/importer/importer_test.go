package importer

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"go.yaml.in/yaml/v3"

	"github.com/peerlvs/peerlvs/saru/services"
)

// importFunc is Ldirectord or Keepalived.
type importFunc func(fs.FS, string) (*Result, error)

// roundTrip encodes r, decodes it the way saru reads saru.yaml (strictly)
// and checks services.Parse accepts it and nothing was lost on the way.
func roundTrip(t testing.TB, r *Result) []byte {
	t.Helper()
	y, err := r.YAML()
	if err != nil {
		t.Fatalf("YAML: %v", err)
	}
	var back struct {
		Services []services.FileService `yaml:"services"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(y))
	dec.KnownFields(true)
	if err := dec.Decode(&back); err != nil {
		t.Fatalf("decode the YAML: %v\n%s", err, y)
	}
	if _, err := services.Parse(back.Services); err != nil {
		t.Fatalf("services.Parse refuses the YAML: %v\n%s", err, y)
	}
	want := r.Services
	if want == nil {
		want = []services.FileService{}
	}
	if back.Services == nil {
		back.Services = []services.FileService{}
	}
	if !reflect.DeepEqual(back.Services, want) {
		t.Fatalf("the YAML does not decode to the result's services\n%s", y)
	}
	return y
}

// TestGolden translates the sample configurations and compares the YAML
// with testdata/golden; UPDATE_GOLDEN=1 rewrites the golden files after a
// deliberate change (review the diff).
func TestGolden(t *testing.T) {
	for _, c := range []struct {
		golden string
		read   importFunc
		dir    string
		file   string
	}{
		{"ldirectord-web.yaml", Ldirectord, "testdata/ldirectord", "web.cf"},
		{"ldirectord-mixed.yaml", Ldirectord, "testdata/ldirectord", "mixed.cf"},
		{"ldirectord-manpage.yaml", Ldirectord, "testdata/ldirectord", "manpage.cf"},
		{"keepalived.yaml", Keepalived, "testdata/keepalived", "keepalived.conf"},
		{"keepalived-checks.yaml", Keepalived, "testdata/keepalived", "checks.conf"},
		{"keepalived-ipv6.yaml", Keepalived, "testdata/keepalived", "ipv6.conf"},
		{"keepalived-braces.yaml", Keepalived, "testdata/keepalived", "braces.conf"},
	} {
		t.Run(c.golden, func(t *testing.T) {
			r, err := c.read(os.DirFS(c.dir), c.file)
			if err != nil {
				t.Fatal(err)
			}
			got := roundTrip(t, r)
			p := filepath.Join("testdata", "golden", c.golden)
			if os.Getenv("UPDATE_GOLDEN") != "" {
				if err := os.WriteFile(p, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s (UPDATE_GOLDEN=1 rewrites it):\n%s", c.file, p, got)
			}
		})
	}
}

// service finds the service at address (or "fwmark N").
func service(t *testing.T, r *Result, address string) services.FileService {
	t.Helper()
	for _, s := range r.Services {
		if s.Address == address || (s.FWMark != 0 && fmt.Sprintf("fwmark %d", s.FWMark) == address) {
			return s
		}
	}
	t.Fatalf("no service %s among %d", address, len(r.Services))
	return services.FileService{}
}

func addresses(rs []services.FileReal) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Address)
	}
	return out
}

func hasNote(r *Result, file string, line int, text string) bool {
	for _, n := range r.Notes {
		if n.File == file && n.Line == line && strings.Contains(n.Text, text) {
			return true
		}
	}
	return false
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func TestLdirectord(t *testing.T) {
	load := func(t *testing.T, file string) *Result {
		r, err := Ldirectord(os.DirFS("testdata/ldirectord"), file)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, r)
		return r
	}
	for _, c := range []struct {
		name  string
		file  string
		check func(t *testing.T, r *Result)
	}{
		{"range expands to one real per address", "web.cf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.11:80")
			want := []string{"10.1.1.2:80", "10.1.1.3:80", "10.1.1.4:80", "10.1.1.5:80", "10.1.1.6:80", "10.1.1.7:80", "10.1.1.20:80"}
			if got := addresses(s.Reals); !slices.Equal(got, want) {
				t.Errorf("reals %v, want %v", got, want)
			}
			if s.Forward != "gate" || s.OnFailure != "quiescent" || *s.Check.Fall != 3 || str(s.Check.Type) != "tcp" {
				t.Errorf("forward %q, on_failure %q, check %+v", s.Forward, s.OnFailure, s.Check)
			}
		}},
		{"globals apply; quiescent=no removes", "web.cf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.10:80")
			c := s.Check
			if s.Name != "storefront" || s.OnFailure != "remove" || str(c.Interval) != "5s" || str(c.Timeout) != "3s" {
				t.Errorf("name %q on_failure %q interval %s timeout %s", s.Name, s.OnFailure, str(c.Interval), str(c.Timeout))
			}
			if str(c.Type) != "http" || str(c.Path) != "/health/ok.html" || str(c.Host) != "shop.example.com" || str(c.Body) != "OK" {
				t.Errorf("check %+v", c)
			}
			if s.Fallback == nil || s.Fallback.Address != "127.0.0.1:80" {
				t.Errorf("fallback %+v", s.Fallback)
			}
		}},
		{"masq keeps its ports; receive regex; netmask", "web.cf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.10:443")
			if s.Forward != "masq" || !slices.Equal(addresses(s.Reals), []string{"10.1.0.11:8443", "10.1.0.12:8443"}) {
				t.Errorf("forward %q reals %v", s.Forward, addresses(s.Reals))
			}
			if s.Persistence != "600s" || s.PersistMask == nil || *s.PersistMask != 24 {
				t.Errorf("persistence %q mask %v", s.Persistence, s.PersistMask)
			}
			if str(s.Check.BodyRegex) != "^up [0-9]+$" || s.Check.Body != nil {
				t.Errorf("receive became %+v", s.Check)
			}
		}},
		{"fwmark with checkport and scheduler flags", "mixed.cf", func(t *testing.T, r *Result) {
			s := service(t, r, "fwmark 1")
			if s.Protocol != "" || s.Check.Port == nil || *s.Check.Port != 80 || !slices.Equal(addresses(s.Reals), []string{"10.2.0.5", "10.2.0.6"}) {
				t.Errorf("service %+v check %+v", s, s.Check)
			}
			if !slices.Equal(s.SchedulerFlags, []string{"sh-fallback", "sh-port"}) || s.Fallback != nil {
				t.Errorf("flags %v fallback %+v (the global fallback is not for fwmark services)", s.SchedulerFlags, s.Fallback)
			}
		}},
		{"port 53 defaults to udp; dns query; ops", "mixed.cf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.53:53")
			if s.Protocol != "udp" || !s.OnePacket || str(s.Check.Query) != "www.example.com" || s.Check.QueryTCP != nil {
				t.Errorf("service %+v check %+v", s, s.Check)
			}
			if !hasNote(r, "mixed.cf", 29, "receive=") {
				t.Errorf("no note on the dns receive string: %v", r.Notes)
			}
		}},
		{"thresholds and weights; global fallback with port of the virtual", "mixed.cf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.25:587")
			re := s.Reals[0]
			if *re.Weight != 10 || re.LowerThreshold != 100 || re.UpperThreshold != 2000 || str(s.Check.Type) != "smtp" {
				t.Errorf("real %+v", re)
			}
			if s.Fallback == nil || s.Fallback.Address != "127.0.0.1:587" || s.Fallback.Forward != "gate" {
				t.Errorf("fallback %+v", s.Fallback)
			}
		}},
		{"ping: checkcount becomes retries", "mixed.cf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.70:5060")
			if str(s.Check.Type) != "icmp" || *s.Check.Retries != 2 || *s.Check.Fall != 2 {
				t.Errorf("check %+v", s.Check)
			}
		}},
		{"external command split like a shell", "mixed.cf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.90:3306")
			if !slices.Equal(s.Check.Command, []string{"/usr/local/bin/check_mysql", "--quiet"}) || str(s.Check.Timeout) != "4s" {
				t.Errorf("check %+v", s.Check)
			}
		}},
		{"IPv6 in brackets, per-real request", "mixed.cf", func(t *testing.T, r *Result) {
			s := service(t, r, "[2001:db8::80]:80")
			if !slices.Equal(addresses(s.Reals), []string{"[2001:db8:1::11]:80", "[2001:db8:1::12]:80"}) {
				t.Errorf("reals %v", addresses(s.Reals))
			}
			if s.Reals[1].Check == nil || str(s.Reals[1].Check.Path) != "/healthz" || str(s.Reals[1].Check.Body) != "alive" {
				t.Errorf("per-real check %+v", s.Reals[1].Check)
			}
			if s.Fallback == nil || s.Fallback.Address != "[::1]:80" || *s.PersistMask != 64 {
				t.Errorf("fallback %+v mask %v", s.Fallback, s.PersistMask)
			}
		}},
		{"simpletcp sends the request", "mixed.cf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.91:7000")
			if str(s.Check.Send) != "PING\n" || str(s.Check.Expect) != "PONG" {
				t.Errorf("check %+v", s.Check)
			}
		}},
		{"checktype=on is no check", "mixed.cf", func(t *testing.T, r *Result) {
			if s := service(t, r, "192.0.2.23:23"); str(s.Check.Type) != "none" {
				t.Errorf("check %+v", s.Check)
			}
		}},
		{"man page: quiescent=yes, defaults of ldirectord", "manpage.cf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.168.6.240:80")
			if s.Name != "Web Site" || s.OnFailure != "quiescent" || s.Scheduler != "rr" {
				t.Errorf("service %+v", s)
			}
			if s := service(t, r, "192.168.6.240:8080"); s.Scheduler != "wrr" {
				t.Errorf("default scheduler %q, want ldirectord's wrr", s.Scheduler)
			}
			if !hasNote(r, "manpage.cf", 9, "check timeout 3s is longer than the check interval 1s") {
				t.Errorf("no note on the timeout: %v", r.Notes)
			}
		}},
		{"man page: unsupported service and combined check are notes", "manpage.cf", func(t *testing.T, r *Result) {
			if s := service(t, r, "192.168.6.240:21"); str(s.Check.Type) != "tcp" {
				t.Errorf("ftp check %+v", s.Check)
			}
			for _, n := range []struct {
				line int
				text string
			}{{42, "service=ftp has no equivalent"}, {47, "login, passwd"}, {68, "checktype=5"}, {76, "checktype=off"}, {4, "autoreload"}} {
				if !hasNote(r, "manpage.cf", n.line, n.text) {
					t.Errorf("no note %q at line %d: %v", n.text, n.line, r.Notes)
				}
			}
			if s := service(t, r, "192.168.6.240:23"); *s.Reals[0].Weight != 0 {
				t.Errorf("checktype=off: weight %v, want 0", s.Reals[0].Weight)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) { c.check(t, load(t, c.file)) })
	}
}

func TestKeepalived(t *testing.T) {
	load := func(t *testing.T, file string) *Result {
		r, err := Keepalived(os.DirFS("testdata/keepalived"), file)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, r)
		return r
	}
	for _, c := range []struct {
		name  string
		file  string
		check func(t *testing.T, r *Result)
	}{
		{"the sample: NAT, sorry server, digest, retries", "keepalived.conf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.10:1358")
			c := s.Check
			if s.Forward != "masq" || s.Persistence != "50s" || s.Scheduler != "rr" || s.OnFailure != "remove" {
				t.Errorf("service %+v", s)
			}
			if str(c.Type) != "http" || str(c.Interval) != "6s" || str(c.Timeout) != "3s" || *c.Retries != 3 || str(c.RetryDelay) != "3s" ||
				str(c.Digest) != "640205b7b0fc66c1ea91c463fac6334d" || str(c.Path) != "/testurl3/test.jsp" {
				t.Errorf("check %+v", c)
			}
			if s.Fallback == nil || s.Fallback.Address != "192.0.2.200:1358" {
				t.Errorf("fallback %+v", s.Fallback)
			}
		}},
		{"includes with globs and braces, in reading order", "keepalived.conf", func(t *testing.T, r *Result) {
			var got []string
			for _, s := range r.Services {
				got = append(got, s.Address)
			}
			want := []string{"", "192.0.2.20:80", "192.0.2.21:80", "192.0.2.22:80", "192.0.2.23:80", "", "192.0.2.10:443", "192.0.2.11:25", "192.0.2.10:1358"}
			if !slices.Equal(got, want) {
				t.Errorf("services %q, want %q", got, want)
			}
		}},
		{"fwmark with connect_port and per-real inhibit", "keepalived.conf", func(t *testing.T, r *Result) {
			s := service(t, r, "fwmark 1")
			if s.Forward != "gate" || *s.Check.Port != 80 || *s.PersistMask != 24 || !slices.Equal(addresses(s.Reals), []string{"10.1.0.100", "10.1.0.101"}) {
				t.Errorf("service %+v check %+v", s, s.Check)
			}
			if s.Reals[0].OnFailure != "remove" || s.Reals[1].OnFailure != "quiescent" {
				t.Errorf("on_failure %q %q", s.Reals[0].OnFailure, s.Reals[1].OnFailure)
			}
		}},
		{"virtual_server_group: one service per address and mark", "keepalived.conf", func(t *testing.T, r *Result) {
			for _, a := range []string{"192.0.2.20:80", "192.0.2.21:80", "192.0.2.23:80", "fwmark 7"} {
				s := service(t, r, a)
				if s.Scheduler != "wrr" || s.OnFailure != "quiescent" || str(s.Check.Host) != "www.example.net" ||
					!slices.Equal(s.Check.Status, []int{200, 204}) || len(s.Reals) != 2 {
					t.Errorf("%s: %+v check %+v", a, s, s.Check)
				}
			}
		}},
		{"status ranges expand; several urls", "keepalived.conf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.10:443")
			st := s.Reals[0].Check.Status
			if len(st) != 202 || st[0] != 200 || st[99] != 299 || st[100] != 400 || st[201] != 505 {
				t.Errorf("status %v", st)
			}
			if s.Reals[1].Check.Status != nil || str(s.Reals[1].Check.SNI) != "shop.example.net" {
				t.Errorf("200-299 is the default and needs no list: %+v", s.Reals[1].Check)
			}
			if !hasNote(r, "site/web.conf", 16, "only the first") {
				t.Errorf("no note on the second url: %v", r.Notes)
			}
		}},
		{"global sections are notes", "keepalived.conf", func(t *testing.T, r *Result) {
			if !hasNote(r, "keepalived.conf", 19, "vrrp_instance VI_1 has no equivalent: saru replaces VRRP") ||
				!hasNote(r, "keepalived.conf", 4, "global_defs") || !hasNote(r, "site/mail.conf", 13, "notify_down") {
				t.Errorf("notes %v", r.Notes)
			}
		}},
		{"misc check: quoted command, dynamic weight, timeout", "checks.conf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.30:1358")
			c0, c1 := s.Reals[0].Check, s.Reals[1].Check
			if !slices.Equal(c0.Command, []string{"/usr/local/bin/script.sh", "arg1", "arg two"}) || c0.DynamicWeight == nil || str(c0.Timeout) != "5s" {
				t.Errorf("check %+v", c0)
			}
			if c1.DynamicWeight != nil || str(c1.Timeout) != "6s" || s.Check.Retries != nil {
				t.Errorf("check %+v (a commented misc_dynamic; no retries for MISC_CHECK)", c1)
			}
			if !hasNote(r, "checks.conf", 14, "VIP VPORT RIP RPORT") {
				t.Errorf("no note on the appended arguments: %v", r.Notes)
			}
		}},
		{"dns check defaults", "checks.conf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.53:53")
			if !s.OnePacket || s.Protocol != "udp" || *s.Check.Retries != 3 || str(s.Check.RetryDelay) != "20s" {
				t.Errorf("service %+v check %+v", s, s.Check)
			}
			if str(s.Reals[1].Check.Query) != "." || str(s.Reals[1].Check.QueryType) != "SOA" || str(s.Reals[0].Check.QueryType) != "A" {
				t.Errorf("checks %+v %+v", s.Reals[0].Check, s.Reals[1].Check)
			}
		}},
		{"udp check payload in hex; several checkers", "checks.conf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.54:1812")
			c := s.Reals[0].Check
			if str(c.Send) != "\x01\x02\x03\x04" || str(c.Expect) != "\x0a\x0b" {
				t.Errorf("check %+v", c)
			}
			if !hasNote(r, "checks.conf", 66, "PING_CHECK left out") || !hasNote(r, "checks.conf", 68, "without require_reply") {
				t.Errorf("notes %v", r.Notes)
			}
		}},
		{"tunnel, scheduler flags, timeout bounded by delay_loop", "checks.conf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.55:8080")
			if s.Forward != "ipip" || !slices.Equal(s.SchedulerFlags, []string{"sh-port"}) {
				t.Errorf("service %+v", s)
			}
			if c := s.Reals[0].Check; str(c.Type) != "icmp" || str(c.Timeout) != "3s" || str(s.Reals[1].Check.Type) != "none" || *s.Reals[1].Weight != 0 {
				t.Errorf("checks %+v %+v", c, s.Reals[1].Check)
			}
			if !hasNote(r, "checks.conf", 80, "mh-port only applies") || !hasNote(r, "checks.conf", 81, "GUE tunnels") {
				t.Errorf("notes %v", r.Notes)
			}
		}},
		{"IPv6 as keepalived writes it; ranges in hex", "ipv6.conf", func(t *testing.T, r *Result) {
			for _, a := range []string{"[2001:db8::2]:80", "[2001:db8::3]:80", "[2001:db8::4]:80", "[2001:db8::1]:80"} {
				s := service(t, r, a)
				if str(s.Check.Source) != "2001:db8::fe" || !slices.Equal(addresses(s.Reals), []string{"[2001:db8:1::10]:80"}) {
					t.Errorf("%s: %+v", a, s)
				}
			}
			s := service(t, r, "[2001:db8::25]:25")
			if s.Reals[0].Address != "[2001:db8:1::25]:2525" || s.Fallback.Address != "[::1]:25" {
				t.Errorf("NAT maps ports: %+v", s)
			}
		}},
		{"braces anywhere, fractions of seconds", "braces.conf", func(t *testing.T, r *Result) {
			s := service(t, r, "192.0.2.40:80")
			c := s.Reals[0].Check
			if str(c.Interval) != "2500ms" || str(c.Timeout) != "1500ms" || str(c.Path) != "/ping" || !slices.Equal(c.Status, []int{200}) {
				t.Errorf("check %+v", c)
			}
			if *s.Reals[1].Weight != 3 || s.Scheduler != "wlc" {
				t.Errorf("service %+v", s)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) { c.check(t, load(t, c.file)) })
	}
}

// cases reads a testdata file of cases: "-- case/file --" lines start
// each file of each case.
func cases(t testing.TB, name string) map[string]fstest.MapFS {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fstest.MapFS{}
	var cur *fstest.MapFile
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if h, ok := strings.CutPrefix(strings.TrimSpace(line), "-- "); ok && strings.HasSuffix(h, " --") {
			c, file, _ := strings.Cut(strings.TrimSuffix(h, " --"), "/")
			if out[c] == nil {
				out[c] = fstest.MapFS{}
			}
			cur = &fstest.MapFile{Mode: 0o644}
			out[c][file] = cur
			continue
		}
		if cur != nil {
			cur.Data = append(cur.Data, line...)
		}
	}
	return out
}

func TestErrors(t *testing.T) {
	for _, d := range []struct {
		cases string
		main  string
		read  importFunc
	}{
		{"testdata/errors/ldirectord.txt", "ldirectord.cf", Ldirectord},
		{"testdata/errors/keepalived.txt", "keepalived.conf", Keepalived},
	} {
		all := cases(t, d.cases)
		if len(all) < 10 {
			t.Fatalf("%s: only %d cases", d.cases, len(all))
		}
		for name, fsys := range all {
			t.Run(path.Base(d.cases)+"/"+name, func(t *testing.T) {
				first, _, _ := strings.Cut(string(fsys[d.main].Data), "\n")
				want, ok := strings.CutPrefix(first, "# want: ")
				if !ok {
					t.Fatalf("the case has no # want: line")
				}
				r, err := d.read(fsys, d.main)
				if err == nil {
					y, _ := r.YAML()
					t.Fatalf("no error, want %q; got\n%s", want, y)
				}
				if r != nil {
					t.Errorf("a result with the error")
				}
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error\n  %v\nwant it to contain\n  %s", err, want)
				}
			})
		}
	}
}

func TestMissingFile(t *testing.T) {
	if _, err := Ldirectord(fstest.MapFS{}, "ldirectord.cf"); err == nil || !strings.Contains(err.Error(), "ldirectord.cf") {
		t.Errorf("err %v", err)
	}
	if _, err := Keepalived(fstest.MapFS{}, "etc/keepalived/keepalived.conf"); err == nil || !strings.Contains(err.Error(), "keepalived.conf") {
		t.Errorf("err %v", err)
	}
}

// TestIncludes covers keepalived's include rules: relative to the
// including file, absolute from the root, globs, and a pattern that
// matches nothing (keepalived's plain include goes on).
func TestIncludes(t *testing.T) {
	vs := func(addr string) []byte {
		return []byte("virtual_server " + addr + " 80 {\n protocol TCP\n real_server 10.0.0.1 80\n}\n")
	}
	fsys := fstest.MapFS{
		"etc/keepalived/keepalived.conf": {Data: []byte("include conf.d/*.conf\ninclude /srv/lb/extra.conf\ninclude nothing/*.conf\n")},
		"etc/keepalived/conf.d/a.conf":   {Data: append([]byte("include ../more/b.conf\n"), vs("192.0.2.1")...)},
		"etc/keepalived/more/b.conf":     {Data: vs("192.0.2.2")},
		"etc/keepalived/conf.d/c.conf":   {Data: []byte("virtual_server 192.0.2.3 80 {\n protocol TCP\n include ../reals/*.conf\n}\n")},
		"etc/keepalived/reals/r1.conf":   {Data: []byte("real_server 10.0.0.1 80\nreal_server 10.0.0.2 80 {\n")},
		"etc/keepalived/reals/r2.conf":   {Data: []byte("  weight 2\n}\n")},
		"etc/keepalived/conf.d/c.txt":    {Data: []byte("not included\n")},
		"srv/lb/extra.conf":              {Data: vs("192.0.2.4")},
	}
	r, err := Keepalived(fsys, "etc/keepalived/keepalived.conf")
	if err != nil {
		t.Fatal(err)
	}
	y := roundTrip(t, r)
	var got []string
	for _, s := range r.Services {
		got = append(got, s.Address)
	}
	if want := []string{"192.0.2.2:80", "192.0.2.1:80", "192.0.2.3:80", "192.0.2.4:80"}; !slices.Equal(got, want) {
		t.Errorf("services %v, want %v", got, want)
	}
	if s := r.Services[2]; len(s.Reals) != 2 || *s.Reals[1].Weight != 2 {
		t.Errorf("an include inside a block (and a block across two files): %+v", s.Reals)
	}
	if !hasNote(r, "keepalived.conf", 3, "matches no file") {
		t.Errorf("notes %v", r.Notes)
	}
	for _, want := range []string{"# conf.d/a.conf:2: virtual_server 192.0.2.1 80", "# more/b.conf:1: virtual_server 192.0.2.2 80", "# /srv/lb/extra.conf:1:"} {
		if !bytes.Contains(y, []byte(want)) {
			t.Errorf("the YAML lacks %q:\n%s", want, y)
		}
	}
}

// TestYAMLComments checks notes cannot break out of their comment lines,
// whatever the input put in them.
func TestYAMLComments(t *testing.T) {
	r := &Result{
		Services: []services.FileService{{Address: "192.0.2.1:80", Reals: []services.FileReal{{Address: "10.0.0.1"}}}},
		Notes:    []Note{{File: "x.conf", Line: 1, Text: "evil\nservices: []\r\u2028# more\x00 \uffff \x85"}},
		origins:  []string{"line\nbreak"},
	}
	y := roundTrip(t, r)
	for _, line := range strings.Split(strings.TrimSpace(string(y)), "\n") {
		if strings.HasPrefix(line, "services: []") {
			t.Errorf("a note escaped its comment:\n%s", y)
		}
	}
	empty := roundTrip(t, &Result{})
	if !strings.Contains(string(empty), "services: []") {
		t.Errorf("empty result:\n%s", empty)
	}
}

func TestNames(t *testing.T) {
	fsys := fstest.MapFS{"ldirectord.cf": {Data: []byte(`virtual=192.0.2.1:80
	servicename=web
	real=10.0.0.1:80 gate
virtual=192.0.2.2:80
	servicename=web
	real=10.0.0.2:80 gate
virtual=192.0.2.3:80
	servicename=tcp 192.0.2.1:80
	real=10.0.0.3:80 gate
`)}}
	r, err := Ldirectord(fsys, "ldirectord.cf")
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, r)
	var names []string
	for _, s := range r.Services {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"web", "", ""}) || !hasNote(r, "ldirectord.cf", 4, `"web" is already taken`) || !hasNote(r, "ldirectord.cf", 7, "already taken") {
		t.Errorf("names %q notes %v", names, r.Notes)
	}
}

func TestHelpers(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{`/bin/check`, []string{"/bin/check"}},
		{`/bin/check -a 'b c' "d \"e\"" f\ g`, []string{"/bin/check", "-a", "b c", `d "e"`, "f g"}},
		{`  spaced   out  `, []string{"spaced", "out"}},
		{`''`, []string{""}},
	} {
		got, err := shellSplit(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("shellSplit(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{`'open`, `"open`} {
		if _, err := shellSplit(bad); err == nil {
			t.Errorf("shellSplit(%q): no error", bad)
		}
	}
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"a.conf", []string{"a.conf"}},
		{"site/{web,mail}.conf", []string{"site/web.conf", "site/mail.conf"}},
		{"{a,b{1,2}}/x", []string{"a/x", "b1/x", "b2/x"}},
		{"open{a,b", []string{"open{a,b"}},
	} {
		if got := expandBraces(c.in, 10); !slices.Equal(got, c.want) {
			t.Errorf("expandBraces(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	for _, c := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"10.0.0.1", []string{"10.0.0.1"}, false},
		{"10.0.0.3-5", []string{"10.0.0.3", "10.0.0.4", "10.0.0.5"}, false},
		{"10.0.0.254-10.0.1.1", []string{"10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"}, false},
		{"10.0.0.8/30", []string{"10.0.0.8", "10.0.0.9", "10.0.0.10", "10.0.0.11"}, false},
		{"2001:db8::a-c", []string{"2001:db8::a", "2001:db8::b", "2001:db8::c"}, false},
		{"10.0.0.9/30", nil, true},
		{"10.0.0.0/8", nil, true},
		{"10.0.0.5-3", nil, true},
		{"10.0.0.5-300", nil, true},
	} {
		addrs, err := kaRange(c.in)
		var got []string
		for _, a := range addrs {
			got = append(got, a.String())
		}
		if (err != nil) != c.err || !slices.Equal(got, c.want) {
			t.Errorf("kaRange(%q) = %v, %v; want %v (error %v)", c.in, got, err, c.want, c.err)
		}
	}
	for _, c := range []struct {
		in   string
		is6  bool
		want int
	}{{"255.255.255.0", false, 24}, {"255.255.255.255", false, 32}, {"128.0.0.0", false, 1}, {"24", false, 24}, {"64", true, 64}} {
		if got, err := prefixLen(c.in, c.is6); err != nil || got != c.want {
			t.Errorf("prefixLen(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"0.0.0.0", "255.0.255.0", "33", "ffff::"} {
		if _, err := prefixLen(bad, false); err == nil {
			t.Errorf("prefixLen(%q): no error", bad)
		}
	}
}
