package lease

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

var (
	hx = Holder{Name: "x", Run: 1}
	hy = Holder{Name: "y", Run: 2}
)

func testParams() Params {
	return Params{Lease: time.Second, Quorum: 2}.WithDefaults()
}

func TestGrantor(t *testing.T) {
	p := testParams()
	hold := p.Hold()
	start := epoch
	ready := start.Add(hold) // after the quiet period
	type step struct {
		at   time.Time
		req  *Request
		rel  *Release
		want []uint32 // granted, for a request
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"quiet after start", []step{
			{at: start, req: &Request{From: hx, Seq: 1, Buckets: []uint32{1}}, want: nil},
			{at: ready, req: &Request{From: hx, Seq: 2, Buckets: []uint32{1}}, want: []uint32{1}},
		}},
		{"held by another until hold runs out", []step{
			{at: ready, req: &Request{From: hx, Seq: 1, Buckets: []uint32{1, 2}}, want: []uint32{1, 2}},
			{at: ready.Add(hold - 1), req: &Request{From: hy, Seq: 1, Buckets: []uint32{1, 3}}, want: []uint32{3}},
			{at: ready.Add(hold), req: &Request{From: hy, Seq: 2, Buckets: []uint32{1}}, want: []uint32{1}},
		}},
		{"renewal extends", []step{
			{at: ready, req: &Request{From: hx, Seq: 1, Buckets: []uint32{1}}, want: []uint32{1}},
			{at: ready.Add(hold / 2), req: &Request{From: hx, Seq: 2, Buckets: []uint32{1}}, want: []uint32{1}},
			{at: ready.Add(hold), req: &Request{From: hy, Seq: 1, Buckets: []uint32{1}}, want: nil},
		}},
		{"a new run of the same director waits", []step{
			{at: ready, req: &Request{From: hx, Seq: 1, Buckets: []uint32{1}}, want: []uint32{1}},
			{at: ready, req: &Request{From: Holder{Name: "x", Run: 9}, Seq: 1, Buckets: []uint32{1}}, want: nil},
		}},
		{"release frees at once", []step{
			{at: ready, req: &Request{From: hx, Seq: 1, Buckets: []uint32{1}}, want: []uint32{1}},
			{at: ready, rel: &Release{From: hx, UpTo: 1, Buckets: []uint32{1}}},
			{at: ready, req: &Request{From: hy, Seq: 1, Buckets: []uint32{1}}, want: []uint32{1}},
		}},
		{"a stale release does not free a newer grant", []step{
			{at: ready, req: &Request{From: hx, Seq: 5, Buckets: []uint32{1}}, want: []uint32{1}},
			{at: ready, rel: &Release{From: hx, UpTo: 4, Buckets: []uint32{1}}},
			{at: ready, req: &Request{From: hy, Seq: 1, Buckets: []uint32{1}}, want: nil},
		}},
		{"a request overtaken by a release is ignored", []step{
			{at: ready, rel: &Release{From: hx, UpTo: 3, Buckets: []uint32{1}}},
			{at: ready, req: &Request{From: hx, Seq: 3, Buckets: []uint32{1}}, want: nil},
			{at: ready, req: &Request{From: hx, Seq: 4, Buckets: []uint32{1}}, want: []uint32{1}},
		}},
		{"a request overtaken by a newer one is ignored", []step{
			{at: ready, req: &Request{From: hx, Seq: 4, Buckets: []uint32{1}}, want: []uint32{1}},
			{at: ready, req: &Request{From: hx, Seq: 3, Buckets: []uint32{2}}, want: nil},
			{at: ready, req: &Request{From: hx, Seq: 4, Buckets: []uint32{2}}, want: []uint32{2}},
		}},
		{"out-of-range buckets are ignored", []step{
			{at: ready, req: &Request{From: hx, Seq: 1, Buckets: []uint32{7, 8, 1 << 31}}, want: []uint32{7}},
		}},
		{"nameless holder gets nothing", []step{
			{at: ready, req: &Request{From: Holder{Run: 3}, Seq: 1, Buckets: []uint32{1}}, want: nil},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewGrantor("g", p, 8, start)
			for i, s := range tc.steps {
				if s.rel != nil {
					g.Release(s.at, *s.rel)
					continue
				}
				got := g.Request(s.at, *s.req)
				if got.Grantor != "g" || got.To != s.req.From || got.Seq != s.req.Seq {
					t.Fatalf("step %d: grant header %+v", i, got)
				}
				if !reflect.DeepEqual(got.Buckets, s.want) {
					t.Fatalf("step %d: granted %v, want %v", i, got.Buckets, s.want)
				}
			}
		})
	}
}

func TestLedgerValidity(t *testing.T) {
	p := testParams()
	l := NewLedger(hx, p, 8)
	t0 := epoch
	r1 := l.Request(t0, []uint32{1, 2})
	if !l.ValidUntil(1).IsZero() {
		t.Fatal("valid before any grant")
	}
	l.Granted(Grant{Grantor: "x", To: hx, Seq: r1.Seq, Buckets: []uint32{1, 2}})
	if !l.ValidUntil(1).IsZero() {
		t.Fatal("valid with one grant of quorum 2")
	}
	l.Granted(Grant{Grantor: "y", To: hx, Seq: r1.Seq, Buckets: []uint32{1}})
	if got, want := l.ValidUntil(1), t0.Add(p.Lease); !got.Equal(want) {
		t.Fatalf("valid until %v, want %v", got, want)
	}
	// A newer grant from one grantor moves validity only once a quorum
	// has granted the newer request: the quorum-th newest counts.
	t1 := t0.Add(300 * time.Millisecond)
	r2 := l.Request(t1, []uint32{1})
	l.Granted(Grant{Grantor: "x", To: hx, Seq: r2.Seq, Buckets: []uint32{1}})
	if got, want := l.ValidUntil(1), t0.Add(p.Lease); !got.Equal(want) {
		t.Fatalf("after one newer grant valid until %v, want %v", got, want)
	}
	l.Granted(Grant{Grantor: "z", To: hx, Seq: r2.Seq, Buckets: []uint32{1}})
	if got, want := l.ValidUntil(1), t1.Add(p.Lease); !got.Equal(want) {
		t.Fatalf("after two newer grants valid until %v, want %v", got, want)
	}
	// Grants for another holder, or for a request never sent, count not.
	if l.Granted(Grant{Grantor: "y", To: hy, Seq: r2.Seq, Buckets: []uint32{2}}) {
		t.Fatal("took a grant for another holder")
	}
	if l.Granted(Grant{Grantor: "y", To: hx, Seq: 99, Buckets: []uint32{2}}) {
		t.Fatal("took a grant for an unknown request")
	}
	// Release voids all grants so far; only newer requests count again.
	l.Release([]uint32{1})
	if !l.ValidUntil(1).IsZero() {
		t.Fatal("valid after release")
	}
	l.Granted(Grant{Grantor: "y", To: hx, Seq: r2.Seq, Buckets: []uint32{1}})
	if !l.ValidUntil(1).IsZero() {
		t.Fatal("an old grant revived a released bucket")
	}
	r3 := l.Request(t1, []uint32{1})
	l.Granted(Grant{Grantor: "x", To: hx, Seq: r3.Seq, Buckets: []uint32{1}})
	l.Granted(Grant{Grantor: "y", To: hx, Seq: r3.Seq, Buckets: []uint32{1}})
	if l.ValidUntil(1).IsZero() {
		t.Fatal("not valid after fresh grants")
	}
	// A request older than Lease is forgotten with its grants.
	l.Request(t1.Add(p.Lease), nil)
	if !l.ValidUntil(1).IsZero() {
		t.Fatal("still valid a Lease after the request")
	}
}

type fakeKernel struct {
	deadlines []time.Time
	err       error
}

func (k *fakeKernel) LeaseUntil(d time.Time) error {
	k.deadlines = append(k.deadlines, d)
	return k.err
}

func TestKeeperOrdering(t *testing.T) {
	p := testParams()
	now := epoch
	clock := func() time.Time { return now }
	kern := &fakeKernel{}
	k, err := NewKeeper(hx, p, 8, kern, clock)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing valid yet: installing refuses, the kernel is untouched.
	if _, err := k.Install([]uint32{1}, func() error { t.Fatal("applied an invalid bucket"); return nil }); !errors.Is(err, ErrNotValid) {
		t.Fatalf("install of an invalid bucket: %v", err)
	}
	// Past the local grantor's quiet period, with one peer's grant.
	now = now.Add(p.Hold())
	k.Want([]uint32{1, 2})
	r, _ := k.Round(0)
	k.OnGrant(Grant{Grantor: "y", To: hx, Seq: r.Seq, Buckets: []uint32{1, 2}})
	select {
	case <-k.Changes():
	default:
		t.Fatal("no change signalled when buckets turned valid")
	}
	var order []string
	kern.deadlines = nil
	if _, err := k.Install([]uint32{1, 2}, func() error {
		order = append(order, "apply")
		if len(kern.deadlines) != 1 || !kern.deadlines[0].Equal(now.Add(p.Lease)) {
			t.Fatalf("kernel lease before apply: %v, want cut to %v", kern.deadlines, now.Add(p.Lease))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(order) != 1 {
		t.Fatal("apply not called")
	}
	// Renew extends to the validity, no further.
	now = now.Add(100 * time.Millisecond)
	if lapse, err := k.Renew(); err != nil || lapse != nil {
		t.Fatalf("renew: %v %v", lapse, err)
	}
	if got := kern.deadlines[len(kern.deadlines)-1]; !got.Equal(now.Add(-100 * time.Millisecond).Add(p.Lease)) {
		t.Fatalf("renewed to %v", got)
	}
	// Without new grants the validity runs out and renew writes nothing
	// more; the next renew reports the lapse.
	now = now.Add(p.Lease)
	n := len(kern.deadlines)
	if _, err := k.Renew(); err != nil {
		t.Fatal(err)
	}
	if len(kern.deadlines) != n {
		t.Fatal("renewed past the validity")
	}
	// Fresh grants end the lapse; the renewal reports how long it lasted.
	r, _ = k.Round(0)
	k.OnGrant(Grant{Grantor: "y", To: hx, Seq: r.Seq, Buckets: []uint32{1, 2}})
	lapse, err := k.Renew()
	if err != nil || lapse == nil || lapse.For != 100*time.Millisecond {
		t.Fatalf("lapse %+v, %v; want one of 100ms", lapse, err)
	}
	// Giving a bucket away: removed from the kernel first, then released.
	k.Want([]uint32{1})
	applied := false
	rel, err := k.Install([]uint32{1}, func() error { applied = true; return nil })
	if err != nil || !applied {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rel.Buckets, []uint32{2}) || rel.UpTo != r.Seq {
		t.Fatalf("release %+v", rel)
	}
	if !k.ValidUntil(2).IsZero() {
		t.Fatal("a released bucket is still valid")
	}
	// A failed apply leaves both sets counted and releases nothing.
	k.Want(nil)
	if rel, err := k.Install(nil, func() error { return errors.New("boom") }); err == nil || len(rel.Buckets) != 0 {
		t.Fatalf("failed apply: %+v %v", rel, err)
	}
	if got := k.Installed(); !reflect.DeepEqual(got, []uint32{1}) {
		t.Fatalf("installed after a failed apply: %v", got)
	}
}

func TestWireRoundTrip(t *testing.T) {
	big := make([]uint32, 0, 3*WindowBuckets)
	for b := uint32(3); b < 3*WindowBuckets; b += 7 {
		big = append(big, b)
	}
	msgs := []Message{
		{Request: &Request{From: hx, Seq: 42, Buckets: []uint32{0, 1, 9, 255}}},
		{Grant: &Grant{Grantor: "d-2", To: hy, Seq: 7, Buckets: []uint32{8191}}},
		{Release: &Release{From: hx, UpTo: 1 << 40, Buckets: big}},
	}
	for _, m := range msgs {
		var enc [][]byte
		var err error
		switch {
		case m.Request != nil:
			enc, err = EncodeRequest(*m.Request)
		case m.Grant != nil:
			enc, err = EncodeGrant(*m.Grant)
		default:
			enc, err = EncodeRelease(*m.Release)
		}
		if err != nil {
			t.Fatal(err)
		}
		var got Message
		for _, b := range enc {
			if len(b) > 1100 {
				t.Errorf("message of %d bytes does not fit a datagram", len(b))
			}
			d, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case d.Request != nil:
				if got.Request == nil {
					got.Request = d.Request
				} else {
					got.Request.Buckets = append(got.Request.Buckets, d.Request.Buckets...)
				}
			case d.Grant != nil:
				if got.Grant == nil {
					got.Grant = d.Grant
				} else {
					got.Grant.Buckets = append(got.Grant.Buckets, d.Grant.Buckets...)
				}
			default:
				if got.Release == nil {
					got.Release = d.Release
				} else {
					got.Release.Buckets = append(got.Release.Buckets, d.Release.Buckets...)
				}
			}
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip of %+v gave %+v", m, got)
		}
	}
	if enc, _ := EncodeGrant(Grant{Grantor: "g", To: hx}); len(enc) != 0 {
		t.Error("an empty grant encodes to messages")
	}
	if enc, err := EncodeRelease(Release{}); err != nil || len(enc) != 0 {
		t.Errorf("an empty release: %d messages, %v", len(enc), err)
	}
	if _, err := EncodeRequest(Request{Buckets: []uint32{1}}); err == nil {
		t.Error("a nameless request encodes")
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := EncodeGrant(Grant{Grantor: "g", To: hx, Seq: 1, Buckets: []uint32{3}})
	g := good[0]
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, g...)) }
	cases := []struct {
		name string
		in   []byte
		not  bool // ErrNotLease
	}{
		{"empty", nil, true},
		{"other user message", []byte("hello"), true},
		{"version", mut(func(b []byte) []byte { b[2] = 9; return b }), false},
		{"kind", mut(func(b []byte) []byte { b[3] = 9; return b }), false},
		{"truncated", g[:len(g)-1], false},
		{"trailing", append(append([]byte{}, g...), 0), false},
		{"unaligned window", mut(func(b []byte) []byte { b[len(b)-4] = 1; return b }), false},
	}
	for _, tc := range cases {
		_, err := Decode(tc.in)
		if err == nil || errors.Is(err, ErrNotLease) != tc.not {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, m := range [][]uint32{{0}, {1, 8191, 8192}, nil} {
		for _, enc := range [][][]byte{
			must(EncodeRequest(Request{From: hx, Seq: 1, Buckets: m})),
			must(EncodeGrant(Grant{Grantor: "g", To: hy, Seq: 2, Buckets: m})),
			must(EncodeRelease(Release{From: hx, UpTo: 3, Buckets: m})),
		} {
			for _, b := range enc {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		// What decodes must encode back to the same message.
		var enc [][]byte
		switch {
		case m.Request != nil:
			enc, err = EncodeRequest(*m.Request)
		case m.Grant != nil:
			enc, err = EncodeGrant(*m.Grant)
		case m.Release != nil:
			enc, err = EncodeRelease(*m.Release)
		default:
			t.Fatal("decoded to nothing")
		}
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		for _, e := range enc {
			if _, err := Decode(e); err != nil {
				t.Fatalf("re-decode: %v", err)
			}
		}
	})
}

func must(b [][]byte, err error) [][]byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestKeeperWithdrawn: a kernel that withdrew its lease (a write it could
// not trust) has been cut as far as can be: installing goes on, and the
// next renewal reports the lapse.
func TestKeeperWithdrawn(t *testing.T) {
	p := testParams()
	now := epoch
	kern := &fakeKernel{err: fmt.Errorf("slow: %w", ErrWithdrawn)}
	k, err := NewKeeper(hx, p, 8, kern, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(p.Hold())
	k.Want([]uint32{1})
	r, _ := k.Round(0)
	k.OnGrant(Grant{Grantor: "y", To: hx, Seq: r.Seq, Buckets: []uint32{1}})
	applied := false
	if _, err := k.Install([]uint32{1}, func() error { applied = true; return nil }); err != nil || !applied {
		t.Fatalf("install after a withdrawn cut: applied %v, %v", applied, err)
	}
	kern.err = nil
	now = now.Add(10 * time.Millisecond)
	lapse, err := k.Renew()
	if err != nil || lapse == nil {
		t.Fatalf("renew after a withdrawal: lapse %v, %v", lapse, err)
	}
	kern.err = errors.New("netlink: no buffer space")
	now = now.Add(10 * time.Millisecond)
	k.Want([]uint32{1, 2})
	r, _ = k.Round(0)
	k.OnGrant(Grant{Grantor: "y", To: hx, Seq: r.Seq, Buckets: []uint32{2}})
	// Bucket 2 is valid for longer than the lease in force: no cut needed.
	if _, err := k.Install([]uint32{1, 2}, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestKeeperWakesForLapsedBucket: a bucket whose validity nearly ran
// out, and which the controller therefore took out of the rules, signals
// a change again when a fresh grant extends it.
func TestKeeperWakesForLapsedBucket(t *testing.T) {
	p := testParams()
	now := epoch.Add(p.Hold())
	k, err := NewKeeper(hx, p, 8, &fakeKernel{}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(p.Hold())
	k.Want([]uint32{1})
	r, _ := k.Round(0)
	k.OnGrant(Grant{Grantor: "y", To: hx, Seq: r.Seq, Buckets: []uint32{1}})
	<-k.Changes()
	// Its validity nears its end: the controller takes it out of the
	// rules (too short to install), though it still reads as valid.
	now = now.Add(p.Lease - time.Millisecond)
	if _, err := k.Install(nil, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	r, _ = k.Round(0)
	k.OnGrant(Grant{Grantor: "y", To: hx, Seq: r.Seq, Buckets: []uint32{1}})
	select {
	case <-k.Changes():
	default:
		t.Fatal("no change signalled when a lapsed bucket was granted again")
	}
}

// TestKeeperRenewWritesOnlyChanges: grants that do not move the quorum's
// validity (the later grantors of a round) cost no kernel write; a new
// round's quorum does.
func TestKeeperRenewWritesOnlyChanges(t *testing.T) {
	p := testParams() // quorum 2
	now := epoch
	kern := &fakeKernel{}
	k, err := NewKeeper(hx, p, 8, kern, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(p.Hold())
	k.Want([]uint32{1})
	r, _ := k.Round(0)
	k.OnGrant(Grant{Grantor: "y", To: hx, Seq: r.Seq, Buckets: []uint32{1}})
	if _, err := k.Install([]uint32{1}, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Renew(); err != nil {
		t.Fatal(err)
	}
	writes := len(kern.deadlines)
	for _, g := range []string{"z", "w"} {
		now = now.Add(time.Millisecond)
		k.OnGrant(Grant{Grantor: g, To: hx, Seq: r.Seq, Buckets: []uint32{1}})
		if _, err := k.Renew(); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(kern.deadlines) - writes; got != 0 {
		t.Fatalf("%d kernel writes for grants that moved nothing (deadlines %v)", got, kern.deadlines)
	}
	now = now.Add(p.Lease / 4)
	r, _ = k.Round(0)
	k.OnGrant(Grant{Grantor: "y", To: hx, Seq: r.Seq, Buckets: []uint32{1}})
	if _, err := k.Renew(); err != nil {
		t.Fatal(err)
	}
	if got := len(kern.deadlines) - writes; got != 1 {
		t.Fatalf("%d kernel writes after a new round's quorum, want 1", got)
	}
	if d := kern.deadlines[len(kern.deadlines)-1]; !d.Equal(now.Add(p.Lease)) {
		t.Errorf("renewed to %v, want the new round's time plus the lease", d)
	}
}

// The kernel-write limit and the timer slack together fit in the margin,
// which Hold adds on top of the lease.
func TestMaxKernelWrite(t *testing.T) {
	for _, tc := range []struct {
		margin, want time.Duration
	}{
		{DefaultMargin, 450 * time.Millisecond},
		{TimerSlack, 0},
		{10 * time.Millisecond, 0},
		{time.Second, 950 * time.Millisecond},
	} {
		p := Params{Lease: time.Second, Margin: tc.margin}
		if got := p.MaxKernelWrite(); got != tc.want {
			t.Errorf("margin %v: MaxKernelWrite %v, want %v", tc.margin, got, tc.want)
		}
		if got := p.MaxKernelWrite() + TimerSlack; tc.want > 0 && got > p.Margin {
			t.Errorf("margin %v: write limit and slack %v exceed it", tc.margin, got)
		}
	}
}
