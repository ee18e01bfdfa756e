package member

import (
	"encoding/base64"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var settings = Settings{Allocator: 2, Buckets: 4096, Seed: 7, Sense: "addrport",
	VIPs: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}

func TestMetaRoundTripAndDiff(t *testing.T) {
	buf, err := Encode("v1", 3, StateReady, 40, Progress{42, 41}, Unfit{}, settings, memberlist.MetaMaxSize)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	if m.Weight != 3 || m.State != StateReady || m.Version != "v1" || m.Fingerprint != settings.Fingerprint() || m.Progress != (Progress{42, 41}) || m.Run != 40 {
		t.Fatalf("round trip: %+v", m)
	}
	if d := Diff(settings, m); d != nil {
		t.Fatalf("same settings differ: %v", d)
	}
	reordered := settings
	reordered.VIPs = []netip.Addr{settings.VIPs[1], settings.VIPs[0]}
	if reordered.Fingerprint() != settings.Fingerprint() {
		t.Fatal("VIP order changes the fingerprint")
	}

	other := settings
	other.Buckets = 2048
	buf, _ = Encode("v1", 1, StateReady, 0, Progress{}, Unfit{}, other, memberlist.MetaMaxSize)
	m, _ = Decode(buf)
	if d := strings.Join(Diff(settings, m), "; "); d != "buckets=2048, we have 4096" {
		t.Fatalf("diff = %q", d)
	}

	// A director running another allocation algorithm, or one from before
	// the allocator version was advertised, must not count as agreeing.
	for _, tc := range []struct {
		alloc uint32
		want  string
	}{
		{3, "allocator=3, we have 2: run one saru release on every director"},
		{0, "no allocator version (an older saru), we have allocator 2: run one saru release on every director"},
	} {
		other := settings
		other.Allocator = tc.alloc
		buf, _ = Encode("v1", 1, StateReady, 0, Progress{}, Unfit{}, other, memberlist.MetaMaxSize)
		m, _ = Decode(buf)
		if d := strings.Join(Diff(settings, m), "; "); d != tc.want {
			t.Fatalf("allocator %d: diff = %q", tc.alloc, d)
		}
	}

	// Too many VIPs for the metadata: the list is dropped, the hash still
	// tells them apart.
	many := settings
	many.VIPs = nil
	for i := range 100 {
		many.VIPs = append(many.VIPs, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	buf, err = Encode("v1", 1, StateReady, 0, Progress{}, Unfit{}, many, memberlist.MetaMaxSize)
	if err != nil || len(buf) > memberlist.MetaMaxSize {
		t.Fatalf("encode many VIPs: %d bytes, %v", len(buf), err)
	}
	m, _ = Decode(buf)
	if d := strings.Join(Diff(settings, m), "; "); !strings.Contains(d, "different VIP list") {
		t.Fatalf("diff = %q", d)
	}

	// An unfit director says why, bounded to fit the metadata.
	long := strings.Repeat("é", MaxUnfitReason)
	buf, _ = Encode("v1", 1, StateReady, 0, Progress{}, Unfit{Reason: long}, settings, memberlist.MetaMaxSize)
	if m, err = Decode(buf); err != nil || m.Unfit.Reason == "" || len(m.Unfit.Reason) > MaxUnfitReason || !utf8.ValidString(m.Unfit.Reason) {
		t.Fatalf("unfit reason round trip: %q, %v", m.Unfit.Reason, err)
	}
	if d := Diff(settings, m); d != nil {
		t.Fatalf("fitness is not a setting: %v", d)
	}
	for _, u := range []Unfit{{Reason: "interface eth0: no carrier", LinkDown: true}, {Reason: "0 of 1 ping nodes answer"}, {}} {
		buf, _ = Encode("v1", 1, StateReady, 0, Progress{}, u, settings, memberlist.MetaMaxSize)
		if m, err = Decode(buf); err != nil || m.Unfit != u {
			t.Fatalf("unfit %+v round trip: %+v, %v", u, m.Unfit, err)
		}
	}
	// A link down without a reason is no unfitness at all.
	if m, err = Decode([]byte(`{"st":"ready","fp":"0","vh":"0","ld":true}`)); err != nil || m.Unfit != (Unfit{}) {
		t.Fatalf("link down while fit: %+v, %v", m.Unfit, err)
	}

	// Declared services are a fleet setting; none declared keeps the
	// fingerprint of a saru that predates them.
	withSvc := settings
	withSvc.Services = 0x1234
	if withSvc.Fingerprint() == settings.Fingerprint() {
		t.Fatal("services do not change the fingerprint")
	}
	buf, _ = Encode("v1", 1, StateReady, 0, Progress{}, Unfit{}, withSvc, memberlist.MetaMaxSize)
	m, _ = Decode(buf)
	if m.Settings.Services != 0x1234 || m.Fingerprint != withSvc.Fingerprint() {
		t.Fatalf("services round trip: %+v", m)
	}
	if d := strings.Join(Diff(settings, m), "; "); !strings.Contains(d, "a different services section (fingerprint 0000000000001234, we have 0000000000000000") {
		t.Fatalf("diff = %q", d)
	}
}

func TestParseKeys(t *testing.T) {
	k16 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	keys, err := ParseKeys(strings.NewReader("# primary\n"+k16+"\n\n"+strings.Repeat("ab", 32)+"\n"), "k")
	if err != nil || len(keys) != 2 || len(keys[0]) != 16 || len(keys[1]) != 32 {
		t.Fatalf("keys %v err %v", keys, err)
	}
	if _, err := ParseKeys(strings.NewReader("short\n"), "k"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("bad key: %v", err)
	}
	if _, err := ParseKeys(strings.NewReader("# none\n"), "k"); err == nil {
		t.Fatal("empty key file accepted")
	}
}

func wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestEncryptedClusterMismatchAndRotation joins two encrypted nodes with
// different bucket counts, checks the mismatch is named, that state changes
// propagate, and that a key rotation through the key file keeps them
// talking.
func TestEncryptedClusterMismatchAndRotation(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys")
	oldKey := strings.Repeat("11", 16)
	newKey := strings.Repeat("22", 32)
	if err := os.WriteFile(keyFile, []byte(oldKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Name: "d1", BindAddr: "127.0.0.1", KeyFile: keyFile, Weight: 1, Settings: settings, Version: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	other := settings
	other.Buckets = 2048
	b, err := New(Config{Name: "d2", BindAddr: "127.0.0.1", KeyFile: keyFile, Weight: 1, Settings: other, Version: "t",
		Seeds: []string{a.LocalAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	ctx := t.Context()
	a.Start(ctx)
	b.Start(ctx)
	wait(t, "join", func() bool { return len(a.Members()) == 2 })
	mm := a.Mismatches()
	if len(mm) != 1 || mm[0] != "member d2 has buckets=2048, we have 4096" {
		t.Fatalf("mismatches %q", mm)
	}
	if err := b.SetState(StateReady); err != nil {
		t.Fatal(err)
	}
	wait(t, "state", func() bool {
		for _, m := range a.Members() {
			if m.Name == "d2" && m.State == StateReady {
				return true
			}
		}
		return false
	})

	// Rotation: add, use, remove - each step on both before the next.
	steps := []string{oldKey + "\n" + newKey + "\n", newKey + "\n" + oldKey + "\n", newKey + "\n"}
	for _, content := range steps {
		if err := os.WriteFile(keyFile, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, n := range []*Node{a, b} {
			if err := n.ReloadKeys(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := len(a.keyring.GetKeys()); got != 1 {
		t.Fatalf("%d keys after rotation, want 1", got)
	}
	if err := a.SetState(StateDraining); err != nil {
		t.Fatal(err)
	}
	wait(t, "state after rotation", func() bool {
		for _, m := range b.Members() {
			if m.Name == "d1" && m.State == StateDraining {
				return true
			}
		}
		return false
	})
}

func TestTimingRoundTripAndDiff(t *testing.T) {
	ours := Timing{FailureDetection: 2 * time.Second, Lease: 1200 * time.Millisecond, Quorum: 2}
	for _, tc := range []struct {
		name   string
		theirs Timing
		want   string
	}{
		{"same", ours, ""},
		{"an older saru advertises none", Timing{}, ""},
		{"quorum", Timing{FailureDetection: 2 * time.Second, Lease: 1200 * time.Millisecond, Quorum: 1}, "quorum=1, we have 2"},
		{"lease off", Timing{FailureDetection: 2 * time.Second, Lease: LeaseOff, Quorum: 2}, "liveness_lease=off, we have 1.2s"},
		{"all three", Timing{FailureDetection: 3 * time.Second, Lease: 1800 * time.Millisecond, Quorum: 3},
			"failure_detection=3s, we have 2s; liveness_lease=1.8s, we have 1.2s; quorum=3, we have 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := settings
			s.Timing = tc.theirs
			buf, err := Encode("v1", 1, StateReady, 0, Progress{}, Unfit{}, s, memberlist.MetaMaxSize)
			if err != nil {
				t.Fatal(err)
			}
			m, err := Decode(buf)
			if err != nil {
				t.Fatal(err)
			}
			if m.Settings.Timing != tc.theirs {
				t.Fatalf("round trip: %+v, want %+v", m.Settings.Timing, tc.theirs)
			}
			if d := strings.Join(TimingDiff(ours, m.Settings.Timing), "; "); d != tc.want {
				t.Fatalf("diff = %q, want %q", d, tc.want)
			}
			// Timing is not fingerprinted: a fleet whose directors run
			// different releases stays one fleet.
			if m.Fingerprint != settings.Fingerprint() || Diff(settings, m) != nil {
				t.Fatalf("timing changed the fingerprint")
			}
		})
	}
	off := ours
	off.Lease = LeaseOff
	s := settings
	s.Timing = off
	buf, _ := Encode("v1", 1, StateReady, 0, Progress{}, Unfit{}, s, memberlist.MetaMaxSize)
	if m, err := Decode(buf); err != nil || TimingDiff(off, m.Settings.Timing) != nil {
		t.Fatalf("two directors with the lease off differ: %+v, %v", m.Settings.Timing, err)
	}
	for _, bad := range []string{`{"st":"ready","fp":"0","vh":"0","ll":-2}`, `{"st":"ready","fp":"0","vh":"0","q":-1}`,
		`{"st":"ready","fp":"0","vh":"0","fd":9223372036854775807}`} {
		if _, err := Decode([]byte(bad)); err == nil || !strings.Contains(err.Error(), "timing") {
			t.Errorf("%s: %v, want a timing error", bad, err)
		}
	}
}

// TestTimingMismatchReported: two directors whose quorums differ see each
// other named, and neither is excluded for it.
func TestTimingMismatchReported(t *testing.T) {
	s1, s2 := settings, settings
	s1.Timing = Timing{FailureDetection: 2 * time.Second, Lease: 1200 * time.Millisecond, Quorum: 2}
	s2.Timing = s1.Timing
	s2.Timing.Quorum = 1
	core, logs := observer.New(zap.ErrorLevel)
	a, err := New(Config{Name: "d1", BindAddr: "127.0.0.1", Weight: 1, Settings: s1, Version: "t", Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	b, err := New(Config{Name: "d2", BindAddr: "127.0.0.1", Weight: 1, Settings: s2, Version: "t", Seeds: []string{a.LocalAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()
	a.Start(t.Context())
	b.Start(t.Context())
	for _, tc := range []struct {
		n    *Node
		peer string
		want string
	}{{a, "d2", "member d2 has quorum=1, we have 2"}, {b, "d1", "member d1 has quorum=2, we have 1"}} {
		wait(t, "join", func() bool { return len(tc.n.Members()) == 2 })
		for _, m := range tc.n.Members() {
			if m.Name != tc.peer {
				continue
			}
			if !m.FingerprintOK || m.TimingMismatch != tc.want {
				t.Errorf("%s sees %s as %+v; want it included, naming %q", tc.n.cfg.Name, tc.peer, m, tc.want)
			}
		}
	}
	logged := func() int {
		return logs.FilterMessageSnippet("timing settings differ").FilterField(zap.String("mismatch", "member d2 has quorum=1, we have 2")).Len()
	}
	wait(t, "d1 logs the difference", func() bool { return logged() > 0 })
	if n := logged(); n != 1 {
		t.Errorf("d1 logged the difference %d times, want once: %v", n, logs.All())
	}
}
