package verdict

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestDecide(t *testing.T) {
	up, down, pend := Vote{Verdict: 1, Weight: -1}, Vote{Verdict: 2, Weight: -1}, Vote{Verdict: 0, Weight: -1}
	w := func(n int) Vote { return Vote{Verdict: 1, Weight: n} }
	for _, tc := range []struct {
		name   string
		n      int
		votes  []Vote
		up     bool
		weight int
	}{
		{"alone up", 1, []Vote{up}, true, -1},
		{"alone down", 1, []Vote{down}, false, -1},
		{"one of three cannot reach it", 3, []Vote{down, up, up}, true, -1},
		{"two of three", 3, []Vote{down, down, up}, false, -1},
		{"two of three, third silent", 3, []Vote{down, down}, false, -1},
		{"one of two is not a majority", 2, []Vote{down, up}, true, -1},
		{"both of two", 2, []Vote{down, down}, false, -1},
		{"pending counts as not down", 3, []Vote{down, pend, pend}, true, -1},
		{"no votes yet", 3, nil, true, -1},
		{"lower median weight", 3, []Vote{w(5), w(1), w(9)}, true, 5},
		{"lower median of two", 2, []Vote{w(8), w(2)}, true, 2},
		{"weights of up voters only", 3, []Vote{w(8), down, up}, true, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, weight := Decide(tc.n, tc.votes)
			if up != tc.up || weight != tc.weight {
				t.Fatalf("Decide(%d, %v) = %v, %d; want %v, %d", tc.n, tc.votes, up, weight, tc.up, tc.weight)
			}
		})
	}
}

func TestWireRoundTrip(t *testing.T) {
	h := Header{From: "d1", Run: 7, Seq: 9, Services: 0xabc}
	var votes []Vote
	for i := range 250 {
		votes = append(votes, Vote{Key: KeyOf(fmt.Sprint(i)), Verdict: int8(i % 3), Weight: i%5 - 1})
	}
	msgs, err := EncodeVotes(h, votes)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 3 {
		t.Fatalf("250 votes in %d messages", len(msgs))
	}
	var got []Vote
	for _, b := range msgs {
		if len(b) > maxDatagram {
			t.Fatalf("%d-byte datagram", len(b))
		}
		m, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header != h || m.IsDecl {
			t.Fatalf("header %+v", m.Header)
		}
		got = append(got, m.Votes...)
	}
	if !reflect.DeepEqual(got, votes) {
		t.Fatal("votes differ after the round trip")
	}
	var decl []Digest
	for i := range 80 {
		decl = append(decl, Digest{Key: KeyOf(fmt.Sprint(i)), Digest: uint64(i), Name: fmt.Sprintf("tcp [2001:db8::%x]:443", i)})
	}
	msgs, err = EncodeDecl(h, decl)
	if err != nil {
		t.Fatal(err)
	}
	var gotDecl []Digest
	for _, b := range msgs {
		if len(b) > maxDatagram {
			t.Fatalf("%d-byte datagram", len(b))
		}
		m, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		gotDecl = append(gotDecl, m.Decl...)
	}
	if !reflect.DeepEqual(gotDecl, decl) {
		t.Fatal("declaration differs after the round trip")
	}
	// Empty states still make one message each.
	for _, enc := range []func() ([][]byte, error){
		func() ([][]byte, error) { return EncodeVotes(h, nil) },
		func() ([][]byte, error) { return EncodeDecl(h, nil) },
	} {
		if msgs, err := enc(); err != nil || len(msgs) != 1 {
			t.Fatalf("empty: %d messages, %v", len(msgs), err)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := EncodeVotes(Header{From: "d1"}, []Vote{{Key: 1, Verdict: 1, Weight: -1}})
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"lease message", []byte("PL\x01\x01")},
		{"truncated", good[0][:len(good[0])-1]},
		{"trailing byte", append(append([]byte{}, good[0]...), 0)},
		{"bad verdict", func() []byte { b := append([]byte{}, good[0]...); b[len(b)-3] = 9; return b }()},
		{"bad version", func() []byte { b := append([]byte{}, good[0]...); b[2] = 2; return b }()},
		{"bad kind", func() []byte { b := append([]byte{}, good[0]...); b[3] = 9; return b }()},
	} {
		if _, err := Decode(tc.b); err == nil {
			t.Errorf("%s: decoded", tc.name)
		}
	}
}

func FuzzDecode(f *testing.F) {
	v, _ := EncodeVotes(Header{From: "d1", Run: 1, Seq: 2, Services: 3}, []Vote{{Key: 1, Verdict: 2, Weight: 4}})
	d, _ := EncodeDecl(Header{From: "d2"}, []Digest{{Key: 5, Digest: 6, Name: "tcp 10.0.0.1:80"}})
	f.Add(v[0])
	f.Add(d[0])
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		// What decodes must encode back to the same bytes.
		var again [][]byte
		if m.IsDecl {
			again, err = EncodeDecl(m.Header, m.Decl)
		} else {
			again, err = EncodeVotes(m.Header, m.Votes)
		}
		if err != nil || len(again) != 1 || string(again[0]) != string(b) {
			t.Fatalf("re-encoding %x gives %x, %v", b, again, err)
		}
	})
}

func TestBoard(t *testing.T) {
	b := NewBoard()
	k := KeyOf("tcp 10.0.0.1:80 -> 10.1.0.1:80")
	msg := func(from string, run, seq, svc uint64, verdict int8) Message {
		return Message{Header: Header{From: from, Run: run, Seq: seq, Services: svc}, Votes: []Vote{{Key: k, Verdict: verdict, Weight: -1}}}
	}
	if !b.Update(msg("d2", 1, 5, 42, 1)) {
		t.Fatal("a new director is a change")
	}
	if !b.Update(msg("d3", 1, 1, 42, 2)) {
		t.Fatal("a new director is a change")
	}
	if b.Update(msg("d2", 1, 4, 42, 2)) {
		t.Fatal("an older round changed the board")
	}
	names, votes := b.Votes(k, []string{"d2", "d3", "d4"}, 42)
	if !reflect.DeepEqual(names, []string{"d2", "d3"}) || votes[0].Verdict != 1 || votes[1].Verdict != 2 {
		t.Fatalf("votes %v %v", names, votes)
	}
	if _, votes := b.Votes(k, []string{"d2"}, 43); len(votes) != 0 {
		t.Fatal("votes of another declaration counted")
	}
	// A restarted director starts afresh even with a lower sequence.
	b.Update(msg("d2", 2, 1, 42, 2))
	if _, votes := b.Votes(k, []string{"d2"}, 42); votes[0].Verdict != 2 {
		t.Fatal("a new run's vote ignored")
	}
	b.Forget("d2")
	if names, _ := b.Votes(k, []string{"d2"}, 42); len(names) != 0 {
		t.Fatal("forgotten director still votes")
	}
}

func TestDeclDiff(t *testing.T) {
	b := NewBoard()
	a := Digest{Key: KeyOf("a"), Digest: 1, Name: "tcp 10.0.0.1:80"}
	c := Digest{Key: KeyOf("c"), Digest: 3, Name: "fwmark 3"}
	theirs := []Digest{{Key: a.Key, Digest: 2, Name: a.Name}, c}
	b.Update(Message{Header: Header{From: "d2", Seq: 1}, Decl: theirs, IsDecl: true})
	ours := []Digest{a, {Key: KeyOf("u"), Digest: 4, Name: "udp 10.0.0.1:53"}}
	got := b.DeclDiff("d2", ours)
	want := []string{"fwmark 3 is declared only on d2", "tcp 10.0.0.1:80 is declared differently on d2", "udp 10.0.0.1:53 is not declared on d2"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

type countingTransport struct {
	mu   sync.Mutex
	sent int
}

func (c *countingTransport) Send(string, []byte) error {
	c.mu.Lock()
	c.sent++
	c.mu.Unlock()
	return nil
}
func (c *countingTransport) Peers() []string { return []string{"d2", "d3"} }

func (c *countingTransport) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent
}

// TestGossipQuietWithoutServices: a fleet that declares no services sends
// no verdict messages; one that does sends at once and then every resend.
func TestGossipQuietWithoutServices(t *testing.T) {
	tr := &countingTransport{}
	g := NewGossip("d1", 1, tr, NewBoard(), 20*time.Millisecond, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	g.Publish(0, nil, nil)
	time.Sleep(100 * time.Millisecond)
	if n := tr.count(); n != 0 {
		t.Fatalf("%d messages sent with nothing declared", n)
	}
	g.Publish(42, []Vote{{Key: 1, Verdict: 1, Weight: -1}}, []Digest{{Key: 2, Digest: 3, Name: "tcp 10.0.0.1:80"}})
	deadline := time.Now().Add(2 * time.Second)
	for tr.count() < 2*2*3 { // 2 peers, votes + declaration, 3 rounds
		if time.Now().After(deadline) {
			t.Fatalf("only %d messages sent", tr.count())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
