package lease

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// memNet delivers messages between services in memory.
type memNet struct {
	mu  sync.Mutex
	svc map[string]*Service
}

type memPort struct {
	net  *memNet
	self string
}

func (p memPort) Peers() []string {
	p.net.mu.Lock()
	defer p.net.mu.Unlock()
	var out []string
	for n := range p.net.svc {
		if n != p.self {
			out = append(out, n)
		}
	}
	return out
}

func (p memPort) Send(to string, msg []byte) error {
	p.net.mu.Lock()
	s := p.net.svc[to]
	p.net.mu.Unlock()
	if s != nil {
		s.Deliver(msg)
	}
	return nil
}

// TestServices: three services over an in-memory network grant each
// other their buckets; a bucket one of them holds is not granted to
// another until released.
func TestServices(t *testing.T) {
	p := Params{Lease: 200 * time.Millisecond, Quorum: 2, Margin: 10 * time.Millisecond}
	net := &memNet{svc: map[string]*Service{}}
	kernels := map[string]*fakeKernel{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i, name := range []string{"a", "b", "c"} {
		kernels[name] = &fakeKernel{}
		k, err := NewKeeper(Holder{Name: name, Run: uint64(i + 1)}, p, 8, kernels[name], time.Now)
		if err != nil {
			t.Fatal(err)
		}
		net.svc[name] = NewService(k, memPort{net: net, self: name}, zap.NewNop())
	}
	if msg := []byte("not a lease message"); net.svc["a"].Deliver(msg) {
		t.Fatal("Deliver took a foreign message")
	}
	for _, s := range net.svc {
		go s.Run(ctx)
	}
	a, b := net.svc["a"], net.svc["b"]
	a.Want([]uint32{1, 2})
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("not within 5 s: %s", what)
			}
		}
	}
	waitUntil("a granted 1 and 2", func() bool { return a.Granted(1) && a.Granted(2) })
	if err := a.Install([]uint32{1, 2}, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	// b wants bucket 2 too: refused while a holds it.
	b.Want([]uint32{2})
	time.Sleep(3 * p.Lease)
	if b.Granted(2) {
		t.Fatal("b granted a bucket a holds")
	}
	if !a.Granted(2) {
		t.Fatal("a lost bucket 2 while renewing")
	}
	// a gives bucket 2 away: out of its rules, released, b gets it well
	// before a's grants would have run out.
	a.Want([]uint32{1})
	released := time.Now()
	if err := a.Install([]uint32{1}, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	waitUntil("b granted 2 after the release", func() bool { return b.Granted(2) })
	if took := time.Since(released); took >= p.Hold() {
		t.Errorf("b waited %v for a released bucket, as long as a grant's hold (%v)", took, p.Hold())
	}
}

// countingPort is a memPort that counts what its service sends, and to
// whom, and can go deaf (drop what is sent to it).
type countingPort struct {
	memPort
	mu   *sync.Mutex
	sent map[string]int
	deaf map[string]bool
}

func (p countingPort) Send(to string, msg []byte) error {
	p.mu.Lock()
	deaf := p.deaf[to] || p.deaf[p.self]
	if m, err := Decode(msg); err == nil && m.Request != nil {
		p.sent[to]++
	}
	p.mu.Unlock()
	if deaf {
		return nil
	}
	return p.memPort.Send(to, msg)
}

// TestServiceAsksPreferredGrantors: in a fleet of 8 with quorum 5, a
// director renewing while all is well asks 6 others, always the same ones;
// when three of them stop answering it asks everyone and keeps its
// buckets.
func TestServiceAsksPreferredGrantors(t *testing.T) {
	p := Params{Lease: 200 * time.Millisecond, Quorum: 5, Margin: 10 * time.Millisecond}
	net := &memNet{svc: map[string]*Service{}}
	var mu sync.Mutex
	sent, deaf := map[string]int{}, map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for i, name := range names {
		k, err := NewKeeper(Holder{Name: name, Run: uint64(i + 1)}, p, 8, &fakeKernel{}, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		port := memPort{net: net, self: name}
		var tr Transport = port
		if name == "a" {
			tr = countingPort{memPort: port, mu: &mu, sent: sent, deaf: deaf}
		} else {
			tr = countingPort{memPort: port, mu: &mu, sent: map[string]int{}, deaf: deaf}
		}
		net.svc[name] = NewService(k, tr, zap.NewNop())
	}
	for _, s := range net.svc {
		go s.Run(ctx)
	}
	a := net.svc["a"]
	a.Want([]uint32{1})
	for end := time.Now().Add(5 * time.Second); !a.Granted(1); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("a not granted bucket 1 within 5 s")
		}
	}
	time.Sleep(2 * p.Lease) // past the rounds that asked everyone
	mu.Lock()
	clear(sent)
	mu.Unlock()
	time.Sleep(3 * p.Lease)
	mu.Lock()
	asked := map[string]int{}
	for n, c := range sent {
		asked[n] = c
	}
	mu.Unlock()
	if len(asked) != p.Quorum-1+SpareGrantors {
		t.Fatalf("a asked %d directors while all was well (%v), want %d", len(asked), asked, p.Quorum-1+SpareGrantors)
	}
	want := preferred("a", names[1:], p.Quorum-1+SpareGrantors)
	for _, n := range want {
		if asked[n] == 0 {
			t.Errorf("a did not ask its preferred grantor %s (asked %v)", n, asked)
		}
	}

	// Three preferred grantors go deaf: a's own grant and the other three
	// are one short of a quorum, so a must ask the rest and stay valid.
	mu.Lock()
	deaf[want[0]], deaf[want[1]], deaf[want[2]] = true, true, true
	clear(sent)
	mu.Unlock()
	for end := time.Now().Add(4 * p.Lease); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !a.k.ValidUntil(1).After(time.Now()) {
			t.Fatal("a's bucket 1 lapsed while enough grantors answered")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != len(names)-1 {
		t.Errorf("with three preferred grantors deaf a asked %d directors (%v), want all %d", len(sent), sent, len(names)-1)
	}
}

func TestPreferredSpreads(t *testing.T) {
	var names []string
	for i := range 32 {
		names = append(names, fmt.Sprintf("d%d", i+1))
	}
	chosen := map[string]int{}
	for _, self := range names {
		var peers []string
		for _, n := range names {
			if n != self {
				peers = append(peers, n)
			}
		}
		got := preferred(self, peers, 18)
		if len(got) != 18 || !slices.Equal(got, preferred(self, slices.Clone(peers), 18)) {
			t.Fatalf("%s: preferred %v, not 18 stable names", self, got)
		}
		for _, n := range got {
			if n == self {
				t.Fatalf("%s prefers itself", self)
			}
			chosen[n]++
		}
	}
	// 32·18 choices over 32 grantors: 18 each on average.
	for n, c := range chosen {
		if c < 9 || c > 27 {
			t.Errorf("%s chosen by %d directors; the load is uneven (%v)", n, c, chosen)
		}
	}
	if got := preferred("a", []string{"b", "c"}, 5); len(got) != 2 {
		t.Errorf("fewer peers than wanted: %v", got)
	}
}
