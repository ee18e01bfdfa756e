package filter

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Reference values of Bob Jenkins' lookup3 hashlittle, which the kernel's
// jhash equals on a little-endian host.
func TestJhashReferenceValues(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("reference values are for little-endian hosts")
	}
	msg := []byte("Four score and seven years ago")
	for _, tc := range []struct {
		key  []byte
		seed uint32
		want uint32
	}{
		{nil, 0, 0xdeadbeef},
		{nil, 0xdeadbeef, 0xbd5b7dde},
		{msg, 0, 0x17770551},
		{msg, 1, 0xcd628161},
	} {
		if got := jhash(tc.key, tc.seed); got != tc.want {
			t.Errorf("jhash(%q, %#x) = %#x, want %#x", tc.key, tc.seed, got, tc.want)
		}
	}
}

func TestReciprocalScale(t *testing.T) {
	for _, tc := range []struct{ h, n, want uint32 }{
		{0, 64, 0}, {0xffffffff, 64, 63}, {0x80000000, 64, 32}, {0xffffffff, 1, 0}, {12345, 0xffffffff, 12344},
	} {
		if got := reciprocalScale(tc.h, tc.n); got != tc.want {
			t.Errorf("reciprocalScale(%#x, %d) = %d, want %d", tc.h, tc.n, got, tc.want)
		}
	}
}

func TestHashKeyLayout(t *testing.T) {
	c4 := netip.MustParseAddrPort("10.1.2.3:258")
	c6 := netip.MustParseAddrPort("[2001:db8::1]:258")
	for _, tc := range []struct {
		s    Sense
		c    netip.AddrPort
		want []byte
	}{
		{SensePort, c4, []byte{1, 2}},
		{SenseAddr, c4, []byte{10, 1, 2, 3}},
		{SenseAddrPort, c4, []byte{10, 1, 2, 3, 1, 2, 0, 0}},
		{SenseAddrPort, netip.MustParseAddrPort("[::ffff:10.1.2.3]:258"), []byte{10, 1, 2, 3, 1, 2, 0, 0}},
		{SenseAddr, c6, c6.Addr().AsSlice()},
		{SenseAddrPort, c6, append(c6.Addr().AsSlice(), 1, 2, 0, 0)},
	} {
		if got := hashKey(nil, tc.s, tc.c); !bytes.Equal(got, tc.want) {
			t.Errorf("hashKey(%v, %v) = %v, want %v", tc.s, tc.c, got, tc.want)
		}
	}
}

func TestBucketProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))
	h := Hasher{Sense: SenseAddrPort, Seed: 0x1234, Buckets: 10}
	hist := make([]int, h.Buckets)
	const n = 100000
	for i := 0; i < n; i++ {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, r.Uint32()))), uint16(r.Uint32()))
		f := Flow{Proto: ProtoTCP, Src: c, Dst: netip.MustParseAddrPort("192.0.2.10:80")}
		b := h.Bucket(f)
		if b >= h.Buckets {
			t.Fatalf("bucket %d out of range", b)
		}
		hist[b]++
		back := Flow{Proto: ProtoTCP, Src: netip.MustParseAddrPort("10.20.0.5:80"), Dst: c}
		if rb := h.ReplyBucket(back); rb != b {
			t.Fatalf("reply of %v in bucket %d, request in %d", c, rb, b)
		}
		// ICMP echo ignores the port whatever the sense.
		icmp := Flow{Proto: ProtoICMP, Src: c}
		if got, want := h.Bucket(icmp), (Hasher{SenseAddr, h.Seed, h.Buckets}).Bucket(Flow{Proto: ProtoUDP, Src: netip.AddrPortFrom(c.Addr(), 0)}); got != want {
			t.Fatalf("echo bucket %d, address bucket %d", got, want)
		}
	}
	for b, k := range hist {
		if k < n/10*9/10 || k > n/10*11/10 {
			t.Errorf("bucket %d got %d of %d flows: not uniform", b, k, n)
		}
	}
}

func TestParseSense(t *testing.T) {
	for _, s := range []Sense{SensePort, SenseAddr, SenseAddrPort} {
		got, err := ParseSense(s.String())
		if err != nil || got != s {
			t.Errorf("ParseSense(%q) = %v, %v", s.String(), got, err)
		}
	}
	if _, err := ParseSense("dport"); err == nil {
		t.Error("ParseSense accepted dport")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"seed 0", func(c *Config) { c.Seed = 0 }, "seed must be non-zero"},
		{"no buckets", func(c *Config) { c.Buckets = 0 }, "bucket count"},
		{"too many buckets", func(c *Config) { c.Buckets = MaxBuckets + 1 }, "bucket count"},
		{"no VIPs", func(c *Config) { c.VIPs = nil }, "no VIPs"},
		{"bad sense", func(c *Config) { c.Sense = 9 }, "invalid sense"},
		{"ICMP as protocol", func(c *Config) { c.Protocols = []uint8{ProtoICMP} }, "protocol 1 not supported"},
		{"short flow timeout", func(c *Config) { c.FlowTimeout = time.Millisecond }, "flow timeout"},
		{"bad subnet", func(c *Config) { c.RealServerSubnets = []netip.Prefix{{}} }, "real-server subnet"},
		{"mark of two bits", func(c *Config) { c.Mark = 0x3 }, "single bit"},
		{"short lease", func(c *Config) { c.Lease = 10 * time.Millisecond }, "lease 10ms out of range"},
		{"long lease", func(c *Config) { c.Lease = 2 * time.Minute }, "lease 2m0s out of range"},
		{"lease below a millisecond", func(c *Config) { c.Lease = 100*time.Millisecond + time.Microsecond }, "whole milliseconds"},
	} {
		c := sampleConfig()
		tc.mod(&c)
		_, err := New(c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	f, err := New(sampleConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Config(); got.Table != DefaultTable || len(got.Protocols) != 3 || got.FlowTimeout != DefaultFlowTimeout {
		t.Errorf("defaults not filled: %+v", got)
	}
}

func TestOwnershipValidation(t *testing.T) {
	if _, err := (Ownership{Owned: []uint32{1, 2}, HandoverOut: []uint32{2}}).normalize(8); err == nil {
		t.Error("bucket in owned and handover_out accepted")
	}
	if _, err := (Ownership{HandoverIn: []uint32{8}}).normalize(8); err == nil {
		t.Error("bucket out of range accepted")
	}
	o, err := (Ownership{Owned: []uint32{3, 1, 3}}).normalize(8)
	if err != nil || len(o.Owned) != 2 || o.Owned[0] != 1 {
		t.Errorf("duplicates not folded: %v %v", o, err)
	}
}

// Equal configurations must render equal rules, or every restart with the
// VIPs listed in another order would look like drift and rebuild.
func TestRenderDeterministic(t *testing.T) {
	a := sampleConfig()
	b := sampleConfig()
	b.VIPs = []netip.Addr{a.VIPs[1], a.VIPs[0], a.VIPs[0]}
	b.Protocols = []uint8{ProtoSCTP, ProtoUDP, ProtoTCP}
	fa, err := New(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := New(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range fa.want.chains {
		ra, rb := fa.want.rules[ch.Name], fb.want.rules[ch.Name]
		if len(ra) != len(rb) {
			t.Fatalf("chain %s: %d vs %d rules", ch.Name, len(ra), len(rb))
		}
		for i := range ra {
			if ruleString(ra[i]) != ruleString(rb[i]) {
				t.Errorf("chain %s rule %d differs", ch.Name, i)
			}
		}
	}
	for name, es := range fa.want.static {
		if len(es) != len(fb.want.static[name]) {
			t.Errorf("set %s differs", name)
		}
		for i := range es {
			if !bytes.Equal(es[i].Key, fb.want.static[name][i].Key) {
				t.Errorf("set %s element %d differs", name, i)
			}
		}
	}
}
