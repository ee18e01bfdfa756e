package peer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKeyring(t *testing.T) {
	k1 := strings.Repeat("11", 32)
	k2 := strings.Repeat("22", 32)
	cases := []struct {
		name    string
		text    string
		send    uint8
		ids     []uint8
		wantErr string
	}{
		{"one", "1 " + k1 + "\n", 1, []uint8{1}, ""},
		{"first is send", "# keys\n\n2 " + k2 + "\n1 " + k1 + "  # old\n", 2, []uint8{1, 2}, ""},
		{"marked send", "1 " + k1 + "\n2 " + k2 + " send\n", 2, []uint8{1, 2}, ""},
		{"empty", "# nothing\n", 0, nil, "has no keys"},
		{"short", "1 " + k1[:62] + "\n", 0, nil, "31 bytes (62 hex digits), want 32 bytes (64 hex digits)"},
		{"bad hex", "1 " + strings.Repeat("zz", 32) + "\n", 0, nil, "not hex"},
		{"dup", "1 " + k1 + "\n1 " + k2 + "\n", 0, nil, "given twice"},
		{"id 0", "0 " + k1 + "\n", 0, nil, "from 1 to 255"},
		{"id 256", "256 " + k1 + "\n", 0, nil, "from 1 to 255"},
		{"two send", "1 " + k1 + " send\n2 " + k2 + " send\n", 0, nil, "mark one"},
		{"junk word", "1 " + k1 + " primary\n", 0, nil, "want \"<id> <64 hex digits> [send]\""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := ParseKeyring(strings.NewReader(c.text), "keys")
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.Is(err, ErrKeyFile) {
					t.Fatalf("error %v, want one saying %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.SendID() != c.send || !bytes.Equal(k.IDs(), c.ids) {
				t.Errorf("send %d ids %v", k.SendID(), k.IDs())
			}
		})
	}
}

func TestLoadKeyringPermissions(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "keys")
	if err := os.WriteFile(p, []byte("1 "+strings.Repeat("ab", 32)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyring(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("mode 0644: %v", err)
	}
	os.Chmod(p, 0o600)
	if _, err := LoadKeyring(p); err != nil {
		t.Errorf("mode 0600: %v", err)
	}
	if _, err := LoadKeyring(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

func sealT(t testing.TB, s *Sealer, typ Type, payload []byte) []byte {
	t.Helper()
	f, err := s.Seal(nil, typ, payload)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSealOpen(t *testing.T) {
	ring := testRing(t, 1)
	s, err := NewSealer(7, 1000, ring, DefaultMTU)
	if err != nil {
		t.Fatal(err)
	}
	o := NewOpener(9, ring)
	for i, typ := range []Type{TypeUpdate, TypeAlive, TypeNack, TypeBulkRequest, TypeBulk, TypeBulkDone} {
		payload := bytes.Repeat([]byte{byte(i)}, 10*i)
		f := sealT(t, s, typ, payload)
		if len(f) != Overhead+len(payload) {
			t.Errorf("%v: %d bytes", typ, len(f))
		}
		got, err := o.Open(f)
		if err != nil {
			t.Fatalf("%v: %v", typ, err)
		}
		want := Header{Version: 1, Type: typ, KeyID: 1, Sender: 7, Incarnation: 1000, Seq: uint64(i + 1)}
		if got.Header != want || !bytes.Equal(got.Payload, payload) {
			t.Errorf("%v: got %+v %x", typ, got.Header, got.Payload)
		}
	}
	if _, err := s.Seal(nil, TypeUpdate, make([]byte, s.MaxPayload()+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize: %v", err)
	}
	if f := sealT(t, s, TypeUpdate, make([]byte, s.MaxPayload())); len(f) != DefaultMTU {
		t.Errorf("full frame %d bytes", len(f))
	}
}

func TestOpenRejects(t *testing.T) {
	ring := testRing(t, 1)
	mk := func() (*Sealer, *Opener) {
		s, _ := NewSealer(7, 1000, ring, DefaultMTU)
		return s, NewOpener(9, ring)
	}
	payload := []byte("hello, peers")
	cases := []struct {
		name  string
		frame func(t *testing.T, s *Sealer, o *Opener) []byte
		want  error
	}{
		{"truncated", func(t *testing.T, s *Sealer, o *Opener) []byte { return sealT(t, s, TypeAlive, nil)[:Overhead-1] }, ErrTruncated},
		{"magic", func(t *testing.T, s *Sealer, o *Opener) []byte {
			f := sealT(t, s, TypeAlive, payload)
			f[0] = 'X'
			return f
		}, ErrBadMagic},
		{"version", func(t *testing.T, s *Sealer, o *Opener) []byte {
			f := sealT(t, s, TypeAlive, payload)
			f[4] = 2
			return f
		}, ErrVersion},
		{"type", func(t *testing.T, s *Sealer, o *Opener) []byte {
			f := sealT(t, s, TypeAlive, payload)
			f[5] = 99
			return f
		}, ErrType},
		{"flags", func(t *testing.T, s *Sealer, o *Opener) []byte {
			f := sealT(t, s, TypeAlive, payload)
			f[7] = 1
			return f
		}, ErrBadHeader},
		{"unknown key", func(t *testing.T, s *Sealer, o *Opener) []byte {
			s.SetKeyring(testRing(t, 2))
			return sealT(t, s, TypeAlive, payload)
		}, ErrUnknownKey},
		{"same id, other secret", func(t *testing.T, s *Sealer, o *Opener) []byte {
			k, _ := NewKeyring(1, map[uint8][]byte{1: testKey(3)})
			s.SetKeyring(k)
			return sealT(t, s, TypeAlive, payload)
		}, ErrAuth},
		{"tampered payload", func(t *testing.T, s *Sealer, o *Opener) []byte {
			f := sealT(t, s, TypeAlive, payload)
			f[HeaderLen+3] ^= 0x10
			return f
		}, ErrAuth},
		{"tampered header", func(t *testing.T, s *Sealer, o *Opener) []byte {
			f := sealT(t, s, TypeAlive, payload)
			f[5] = byte(TypeUpdate)
			return f
		}, ErrAuth},
		{"tampered tag", func(t *testing.T, s *Sealer, o *Opener) []byte {
			f := sealT(t, s, TypeAlive, payload)
			f[len(f)-1] ^= 1
			return f
		}, ErrAuth},
		{"tampered seq", func(t *testing.T, s *Sealer, o *Opener) []byte {
			f := sealT(t, s, TypeAlive, payload)
			f[25]++
			return f
		}, ErrAuth},
		{"own frame", func(t *testing.T, s *Sealer, o *Opener) []byte {
			s2, _ := NewSealer(9, 5, ring, DefaultMTU)
			return sealT(t, s2, TypeAlive, payload)
		}, ErrSelf},
		{"replay", func(t *testing.T, s *Sealer, o *Opener) []byte {
			f := sealT(t, s, TypeAlive, payload)
			c := bytes.Clone(f)
			if _, err := o.Open(f); err != nil {
				t.Fatal(err)
			}
			return c
		}, ErrReplay},
		{"older than the window", func(t *testing.T, s *Sealer, o *Opener) []byte {
			old := sealT(t, s, TypeAlive, payload)
			for range windowBits {
				o.Open(sealT(t, s, TypeAlive, payload))
			}
			return old
		}, ErrReplay},
		{"old incarnation", func(t *testing.T, s *Sealer, o *Opener) []byte {
			old := sealT(t, s, TypeAlive, payload)
			s2, _ := NewSealer(7, 2000, ring, DefaultMTU)
			if f, err := o.Open(sealT(t, s2, TypeAlive, payload)); err != nil || f.NewIncarnation {
				t.Fatalf("first contact with run 2000: %v %v", err, f.NewIncarnation)
			}
			return old
		}, ErrOldIncarnation},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, o := mk()
			_, err := o.Open(c.frame(t, s, o))
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if got := o.Stats().Rejected[ReasonIndex(c.want)]; got != 1 {
				t.Errorf("counted %d times", got)
			}
		})
	}
}

func TestNewIncarnationResetsWindow(t *testing.T) {
	ring := testRing(t, 1)
	o := NewOpener(9, ring)
	a, _ := NewSealer(7, 1000, ring, DefaultMTU)
	for range 5 {
		if _, err := o.Open(sealT(t, a, TypeAlive, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// The restarted node numbers from 1 again; that is not a replay.
	b, _ := NewSealer(7, 1001, ring, DefaultMTU)
	f, err := o.Open(sealT(t, b, TypeAlive, nil))
	if err != nil || !f.NewIncarnation || f.Seq != 1 {
		t.Fatalf("new run: %v %+v", err, f)
	}
	if _, err := o.Open(sealT(t, a, TypeAlive, nil)); !errors.Is(err, ErrOldIncarnation) {
		t.Errorf("old run after new: %v", err)
	}
}

// Rotation: A already sends with the new key 2 while B still sends with
// key 1; both keyrings hold both keys, so both are accepted.
func TestKeyRotationOverlap(t *testing.T) {
	ringA := testRing(t, 2, 1) // new key sends, old accepted
	ringB := testRing(t, 1, 2) // old key sends, new accepted
	a, _ := NewSealer(1, 10, ringA, DefaultMTU)
	b, _ := NewSealer(2, 20, ringB, DefaultMTU)
	oa, ob := NewOpener(1, ringA), NewOpener(2, ringB)
	for i := range 3 {
		fa := sealT(t, a, TypeAlive, []byte{byte(i)})
		fb := sealT(t, b, TypeAlive, []byte{byte(i)})
		if fa[6] != 2 || fb[6] != 1 {
			t.Fatalf("key ids %d %d", fa[6], fb[6])
		}
		if _, err := ob.Open(fa); err != nil {
			t.Errorf("B opening A's k2 frame: %v", err)
		}
		if _, err := oa.Open(fb); err != nil {
			t.Errorf("A opening B's k1 frame: %v", err)
		}
	}
	// Last step: key 1 removed from A; B's stragglers with key 1 are now
	// refused, B's frames with key 2 are not.
	oa.SetKeyring(testRing(t, 2))
	if _, err := oa.Open(sealT(t, b, TypeAlive, nil)); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("after removal: %v", err)
	}
	b.SetKeyring(testRing(t, 2, 1))
	if _, err := oa.Open(sealT(t, b, TypeAlive, nil)); err != nil {
		t.Errorf("B switched to k2: %v", err)
	}
}

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	accept := func(s uint64) bool {
		if w.ok(s) != nil {
			return false
		}
		w.mark(s)
		return true
	}
	steps := []struct {
		seq  uint64
		want bool
	}{
		{1, true}, {1, false}, {3, true}, {2, true}, {2, false}, {1000, true}, {5, true},
		{1100, true}, {77, true}, {76, false}, {3000, true}, {1977, true}, {1976, false},
		{3000, false}, {2999, true}, {100000, true}, {99000, true}, {98976, false},
	}
	for _, s := range steps {
		if got := accept(s.seq); got != s.want {
			t.Errorf("seq %d: accepted %v, want %v", s.seq, got, s.want)
		}
	}
}
