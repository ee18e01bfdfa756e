package lease

import (
	"context"
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
