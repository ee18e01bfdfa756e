package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/saru/controller"
	"github.com/peerlvs/peerlvs/saru/member"
)

const goodConfig = `
node: d1
bind_addr: 127.0.0.1
seeds: [127.0.0.1:7946]
buckets: 64
seed: 12345
sense: addrport
vips: [192.0.2.10]
readiness_grace: 1s
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "saru.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestMapOfflineText(t *testing.T) {
	cfg := writeConfig(t, goodConfig)
	out, errs, code := runCLI(t, "map", "--config", cfg, "--members", "d1,d2:2,d3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"buckets 64  seed 12345  sense addrport  epoch 0  fingerprint ",
		"DIRECTOR  WEIGHT  STATE  BUCKETS  FAIR SHARE",
		"d1        1       ready  16       16.00",
		"d2        2       ready  32       32.00",
		"d3        1       ready  16       16.00",
		"RANGE", "DIRECTOR",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The ranges cover every bucket once.
	lines := strings.Split(strings.TrimSpace(out[strings.Index(out, "RANGE"):]), "\n")[1:]
	next := 0
	for _, l := range lines {
		f := strings.Fields(l)
		first, last, _ := strings.Cut(f[0], "-")
		if last == "" {
			last = first
		}
		if first != strconv.Itoa(next) {
			t.Fatalf("range %q starts at %s, want %d", l, first, next)
		}
		next = atoi(t, last) + 1
	}
	if next != 64 {
		t.Fatalf("ranges end at %d, want 64", next)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	i, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestMapOfflineJSONAndFlow(t *testing.T) {
	cfg := writeConfig(t, goodConfig)
	out, errs, code := runCLI(t, "map", "--json", "--config", cfg, "--members", "d1,d2:2,d3")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var v controller.MapView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if v.Buckets != 64 || v.Seed != 12345 || v.Sense != "addrport" || len(v.Directors) != 3 || v.Directors[1].Buckets != 32 || v.Directors[1].FairShare != 32 {
		t.Fatalf("JSON map: %+v", v)
	}

	client := "198.51.100.7:40000"
	h := filter.Hasher{Sense: filter.SenseAddrPort, Seed: 12345, Buckets: 64}
	b := h.Bucket(filter.Flow{Proto: filter.ProtoTCP, Src: netip.MustParseAddrPort(client)})
	want := v.Owner(b)
	if want == "" {
		t.Fatal("bucket without owner")
	}
	out, errs, code = runCLI(t, "map", "--config", cfg, "--members", "d1,d2:2,d3", "--flow", client)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if exp := "flow tcp " + client + " -> bucket " + strconv.Itoa(int(b)) + " -> director " + want + "\n"; out != exp {
		t.Fatalf("flow: %q, want %q", out, exp)
	}
	out, _, code = runCLI(t, "map", "--json", "--config", cfg, "--members", "d1,d2:2,d3", "--flow", client, "--proto", "udp")
	var f struct {
		Bucket   uint32
		Director string
		Proto    string
	}
	if code != 0 || json.Unmarshal([]byte(out), &f) != nil || f.Proto != "udp" || f.Director != want || f.Bucket != b {
		t.Fatalf("flow JSON %q (exit %d)", out, code)
	}
	_, errs, code = runCLI(t, "map", "--config", cfg, "--members", "d1", "--flow", "nonsense")
	if code == 0 || !strings.Contains(errs, "ADDR:PORT") {
		t.Fatalf("bad flow accepted: %d %q", code, errs)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"empty", "{}", []string{"node: missing", "buckets: 0 out of range", "seed: missing or 0", "sense: missing", "vips: empty"}},
		{"bad values", `
node: d1
bind_addr: nowhere
seeds: [10.0.0.2]
buckets: 4096
seed: 1
sense: ports
vips: [192.0.2.300]
real_server_subnets: [10.1.0.0]
readiness_grace: soon
status_listen: 0.0.0.0:9475
`, []string{"bind_addr: \"nowhere\" is not an IP address", "seeds[0]: \"10.0.0.2\" must be host:port",
			"sense: \"ports\" unknown; use port, addr or addrport", "vips[0]: \"192.0.2.300\" is not an IP address",
			"real_server_subnets[0]", "readiness_grace: \"soon\" is not a duration", "status_listen: 0.0.0.0:9475 is not a loopback address"}},
		{"typo", "node: d1\nbucket: 4096\n", []string{"field bucket not found"}},
		{"quorum and mark", `
node: d1
seeds: [10.0.0.2:7946, 10.0.0.3:7946]
buckets: 4096
seed: 1
sense: port
vips: [192.0.2.10]
quorum: 4
`, []string{"quorum: 4 out of range"}},
		{"mark of two bits", `
node: d1
buckets: 4096
seed: 1
sense: port
vips: [192.0.2.10]
filter_mark: 0x3000
`, []string{"mark 0x3000 must be a single bit"}},
		{"detection too fast", `
node: d1
buckets: 4096
seed: 1
sense: port
vips: [192.0.2.10]
failure_detection: 100ms
`, []string{"failure_detection: 100ms out of range"}},
		{"lease too long for the detection", `
node: d1
buckets: 4096
seed: 1
sense: port
vips: [192.0.2.10]
failure_detection: 2s
liveness_lease: 1s
`, []string{"liveness_lease: 1s is not below 1s, the least time in which the fleet can declare a silent director dead with failure_detection 2s"}},
		{"lease too short", `
node: d1
buckets: 4096
seed: 1
sense: port
vips: [192.0.2.10]
liveness_lease: 5ms
`, []string{"lease 5ms out of range"}},
		{"settle time too short", `
node: d1
buckets: 4096
seed: 1
sense: port
vips: [192.0.2.10]
settle_time: 10ms
`, []string{"settle_time: 10ms out of range; use 100ms..10m0s"}},
		{"persistence split by port", `
node: d1
buckets: 4096
seed: 1
sense: addrport
vips: [192.0.2.10]
services:
  - address: 192.0.2.10:443
    persistence: 300s
    reals: [{address: 10.0.0.5}]
`, []string{"services[0]: persistence needs sense: addr; with sense: addrport"}},
		{"persistence by netmask", `
node: d1
buckets: 4096
seed: 1
sense: addr
vips: [2001:db8::10]
services:
  - address: "[2001:db8::10]:443"
    persistence: 300s
    persistence_netmask: 64
    reals: [{address: "2001:db8:1::5"}]
`, []string{"services[0]: persistence_netmask /64 cannot be kept across directors"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.body))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	c, err := parseConfig([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.BindPort != defaultBindPort || c.Weight != 1 || c.StatusListen != defaultStatusListen || c.Quorum != 1 {
		t.Fatalf("defaults: %+v", c)
	}
	if c.SettleTime != filter.DefaultSettle {
		t.Fatalf("default settle_time %v, want %v", c.SettleTime, filter.DefaultSettle)
	}
	if c.LivenessLease != 400*time.Millisecond {
		t.Fatalf("default liveness_lease %v at failure_detection %v, want 400ms", c.LivenessLease, c.FailureDetection)
	}
	c, err = parseConfig([]byte(goodConfig + "failure_detection: 2s\n"))
	if err != nil || c.LivenessLease != 800*time.Millisecond {
		t.Fatalf("liveness_lease %v (%v) at failure_detection 2s, want 800ms", c.LivenessLease, err)
	}
	for _, svc := range []string{
		"  - address: 192.0.2.10:443\n    persistence: 300s\n    reals: [{address: 10.0.0.5}]\n",
		"  - address: 192.0.2.10:443\n    persistence: 300s\n    persistence_netmask: 32\n    reals: [{address: 10.0.0.5}]\n",
		"  - fwmark: 1\n    persistence: 300s\n    reals: [{address: 10.0.0.5}]\n",
	} {
		cfg := strings.Replace(goodConfig, "sense: addrport", "sense: addr", 1) + "services:\n" + svc
		if _, err := parseConfig([]byte(cfg)); err != nil {
			t.Errorf("persistence with sense addr rejected: %v\n%s", err, cfg)
		}
	}
	c, err = parseConfig([]byte(goodConfig + "liveness_lease: off\n"))
	if err != nil || c.LivenessLease != 0 {
		t.Fatalf("liveness_lease off: %v (%v)", c.LivenessLease, err)
	}
	// The example shipped in deploy/ must be valid.
	if _, err := loadConfig("../../deploy/saru/saru.yaml"); err != nil {
		t.Fatalf("example config: %v", err)
	}
}

// TestConfigTiming: the timing each director advertises is the one its
// lease rule runs with, defaults and "off" included.
func TestConfigTiming(t *testing.T) {
	for _, tc := range []struct {
		extra string
		want  member.Timing
	}{
		{"", member.Timing{FailureDetection: time.Second, Lease: 400 * time.Millisecond, Quorum: 1}},
		{"failure_detection: 3s\nquorum: 2\n", member.Timing{FailureDetection: 3 * time.Second, Lease: 1200 * time.Millisecond, Quorum: 2}},
		{"liveness_lease: off\n", member.Timing{FailureDetection: time.Second, Lease: member.LeaseOff, Quorum: 1}},
		{"liveness_lease: 300ms\n", member.Timing{FailureDetection: time.Second, Lease: 300 * time.Millisecond, Quorum: 1}},
	} {
		cfg, err := parseConfig([]byte(goodConfig + tc.extra))
		if err != nil {
			t.Fatalf("%q: %v", tc.extra, err)
		}
		if got := cfg.settings().Timing; got != tc.want {
			t.Errorf("%q: timing %+v, want %+v", tc.extra, got, tc.want)
		}
	}
}
