package table

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"
)

const self NodeID = 1

var t0 = time.Unix(1_700_000_000, 0)

func newTable(t testing.TB, shards int) *Table {
	t.Helper()
	tb, err := New(Config{Self: self, Shards: shards})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// v4 makes the i-th of a family of distinct IPv4 connections.
func v4(i int) Entry {
	return Entry{
		Key: Key{
			Proto: 6,
			CPort: uint16(1024 + i%50000),
			VPort: 80,
			CAddr: netip.AddrFrom4([4]byte{10, byte(i >> 24), byte(i >> 16), byte(i >> 8)}).Next(),
			VAddr: netip.AddrFrom4([4]byte{192, 0, 2, 1}),
		},
		DAddr:   netip.AddrFrom4([4]byte{10, 9, 0, byte(i % 8)}),
		DPort:   80,
		Flags:   0x3,
		State:   1,
		Timeout: 900,
	}
}

func v6(i int) Entry {
	e := v4(i)
	c := [16]byte{0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
	e.CAddr = netip.AddrFrom16(c)
	e.VAddr = netip.MustParseAddr("2001:db8::80")
	e.DAddr = netip.MustParseAddr("2001:db8:1::9")
	return e
}

func TestUpsert(t *testing.T) {
	base := v4(1)
	mod := func(f func(e *Entry)) Entry { e := base; f(&e); return e }
	steps := []struct {
		name  string
		e     Entry
		owner NodeID
		dt    time.Duration
		want  Change
	}{
		{"create", base, self, 0, Created},
		{"same again", base, self, time.Second, Refreshed},
		{"state", mod(func(e *Entry) { e.State = 4 }), self, 0, StateChanged},
		{"flags", mod(func(e *Entry) { e.State = 4; e.Flags |= 0x100 }), self, 0, FlagsChanged},
		{"dest", mod(func(e *Entry) { e.State = 4; e.Flags |= 0x100; e.DPort = 8080 }), self, 0, DestChanged},
		{"owner", mod(func(e *Entry) { e.State = 4; e.Flags |= 0x100; e.DPort = 8080 }), 2, 0, OwnerChanged},
		{"seq", mod(func(e *Entry) {
			e.State = 4
			e.Flags |= 0x100
			e.DPort = 8080
			e.Seq = &SeqData{1, 2, 3, 4, 5, 6}
		}), 2, 0, OtherChanged},
	}
	tb := newTable(t, 4)
	now := t0
	var lastVersion uint32
	for _, st := range steps {
		now = now.Add(st.dt)
		e := st.e
		got, err := tb.Upsert(&e, st.owner, now)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got != st.want {
			t.Errorf("%s: change %v, want %v", st.name, got, st.want)
		}
		if got.Changed() && e.Version <= lastVersion {
			t.Errorf("%s: version %d did not grow past %d", st.name, e.Version, lastVersion)
		}
		if !got.Changed() && e.Version != lastVersion {
			t.Errorf("%s: version moved to %d without a change", st.name, e.Version)
		}
		lastVersion = e.Version
		stored, ok := tb.Get(&e.Key)
		if !ok {
			t.Fatalf("%s: not stored", st.name)
		}
		if stored.State != e.State || stored.Flags != e.Flags || stored.DPort != e.DPort || stored.Owner != st.owner {
			t.Errorf("%s: stored %+v", st.name, stored)
		}
		if want := StampOf(now).Add(900); stored.Expires != want {
			t.Errorf("%s: expires %d, want %d", st.name, stored.Expires, want)
		}
	}
	if tb.Len() != 1 {
		t.Errorf("Len %d", tb.Len())
	}
}

func TestApplyLastWriterWins(t *testing.T) {
	e := v4(7)
	at := func(v uint32, o NodeID, state uint16) Entry {
		x := e
		x.Version, x.Owner, x.State = v, o, state
		return x
	}
	steps := []struct {
		name      string
		e         Entry
		want      Change
		wantState uint16
		wantOwner NodeID
	}{
		{"first", at(10, 2, 1), Created, 1, 2},
		{"older", at(9, 3, 5), Stale, 1, 2},
		{"same pair", at(10, 2, 1), Refreshed, 1, 2},
		{"tie, lower owner", at(10, 1, 5), Stale, 1, 2},
		{"tie, higher owner", at(10, 3, 5), StateChanged | OwnerChanged, 5, 3},
		{"newer", at(11, 2, 4), StateChanged | OwnerChanged, 4, 2},
		// Changed and changed back while this node missed the middle: the
		// version must still move, or the middle would be taken for news.
		{"newer, same content", at(13, 2, 4), Refreshed, 4, 2},
		{"the missed middle", at(12, 3, 6), Stale, 4, 2},
	}
	tb := newTable(t, 1)
	for _, st := range steps {
		x := st.e
		got, err := tb.Apply(&x, 60, t0)
		if err != nil {
			t.Fatal(err)
		}
		if got != st.want {
			t.Errorf("%s: %v, want %v", st.name, got, st.want)
		}
		s, _ := tb.Get(&e.Key)
		if s.State != st.wantState || s.Owner != st.wantOwner {
			t.Errorf("%s: stored state %d owner %d", st.name, s.State, s.Owner)
		}
	}
	// Our own entry echoed back by a peer changes nothing: this node's
	// kernel is the authority on it.
	own := v4(8)
	tb.Upsert(&own, self, t0)
	echo := own
	if ch, _ := tb.Apply(&echo, 5, t0.Add(time.Minute)); ch != 0 {
		t.Errorf("echo of own entry: %v", ch)
	}
	if got, _ := tb.Get(&own.Key); got.Expires != own.Expires {
		t.Errorf("echo moved the expiry to %d", got.Expires)
	}
	tb.Delete(&own.Key)
	// A removal older than the stored pair must not remove it.
	if ch, _ := tb.ApplyDelete(&e.Key, 2, 12); ch != Stale || tb.Len() != 1 {
		t.Errorf("old removal: %v, len %d", ch, tb.Len())
	}
	if ch, _ := tb.ApplyDelete(&e.Key, 2, 14); ch != Removed || tb.Len() != 0 {
		t.Errorf("removal: %v, len %d", ch, tb.Len())
	}
}

// A local report after the local copy expired must outrank a peer's copy
// that is still around, or the two would disagree until the peer's expired.
func TestRecreatedOutranksOldCopy(t *testing.T) {
	tb := newTable(t, 1)
	e := v4(3)
	e.Version, e.Owner = uint32(StampOf(t0)), 2
	if _, err := tb.Apply(&e, 10, t0); err != nil {
		t.Fatal(err)
	}
	tb.Expire(t0.Add(11*time.Second), nil)
	if tb.Len() != 0 {
		t.Fatal("not expired")
	}
	e = v4(3)
	if _, err := tb.Upsert(&e, self, t0.Add(12*time.Second)); err != nil {
		t.Fatal(err)
	}
	if e.Version <= uint32(StampOf(t0)) {
		t.Errorf("recreated version %d not above the old %d", e.Version, StampOf(t0))
	}
}

func TestInvalid(t *testing.T) {
	tb := newTable(t, 1)
	cases := map[string]func(e *Entry){
		"no caddr":      func(e *Entry) { e.CAddr = netip.Addr{} },
		"mixed family":  func(e *Entry) { e.VAddr = netip.MustParseAddr("::1") },
		"mixed dest":    func(e *Entry) { e.DAddr = netip.MustParseAddr("::1") },
		"no dest":       func(e *Entry) { e.DAddr = netip.Addr{} },
		"zone":          func(e *Entry) { e.CAddr = netip.MustParseAddr("fe80::1%eth0"); e.VAddr = e.CAddr; e.DAddr = e.CAddr },
		"pe without pe": func(e *Entry) { e.PEName = "sip" },
		"pe wrong hash": func(e *Entry) { e.PEName = "sip"; e.PE = 42 },
	}
	for name, f := range cases {
		e := v4(1)
		f(&e)
		if _, err := tb.Upsert(&e, self, t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	e := v4(1)
	if _, err := tb.Upsert(&e, 0, t0); !errors.Is(err, ErrInvalid) {
		t.Errorf("owner 0: %v", err)
	}
	if tb.Len() != 0 {
		t.Errorf("Len %d", tb.Len())
	}
}

func TestRoundTripFields(t *testing.T) {
	tb := newTable(t, 2)
	sip := v6(5)
	sip.Template, sip.Proto, sip.CPort, sip.Flags = true, 17, 0, 0x1003
	sip.PEName, sip.PEData = "sip", []byte("call-id-1")
	sip.PE = PEHash(sip.PEName, sip.PEData)
	sip2 := sip
	sip2.PEData = []byte("call-id-2")
	sip2.PE = PEHash(sip2.PEName, sip2.PEData)
	ftp := v4(9)
	ftp.Flags |= 0x600
	ftp.Seq = &SeqData{1, 2, 3, 4, 5, 6}
	ftp.Fwmark = 77
	for _, e := range []Entry{sip, sip2, ftp, v6(6), v4(6)} {
		in := e
		if _, err := tb.Upsert(&in, self, t0); err != nil {
			t.Fatal(err)
		}
		got, ok := tb.Get(&e.Key)
		if !ok {
			t.Fatalf("%v missing", e.Key)
		}
		e.Owner, e.Version, e.Reported, e.Expires = in.Owner, in.Version, in.Reported, in.Expires
		if show(got) != show(e) {
			t.Errorf("got  %+v\nwant %+v", got, e)
		}
	}
	if tb.Len() != 5 {
		t.Errorf("Len %d, want 5 (two SIP calls are two templates)", tb.Len())
	}
	// Dropping the sequence data must be a change, and must free it.
	ftp2 := ftp
	ftp2.Seq, ftp2.Flags = nil, 0x3
	if ch, _ := tb.Upsert(&ftp2, self, t0); ch&OtherChanged == 0 {
		t.Errorf("dropping seq: %v", ch)
	}
	if got, _ := tb.Get(&ftp.Key); got.Seq != nil {
		t.Errorf("seq kept: %v", got.Seq)
	}
}

// show prints an entry with its sequence data rather than the pointer.
func show(e Entry) string {
	var q SeqData
	if e.Seq != nil {
		q = *e.Seq
	}
	e.Seq = nil
	return fmt.Sprintf("%+v seq %v", e, q)
}

func TestExpire(t *testing.T) {
	tb := newTable(t, 4)
	timeouts := []uint32{1, 5, 10, 120, 900, 2000, 5000}
	for i, to := range timeouts {
		e := v4(i)
		e.Timeout = to
		if _, err := tb.Upsert(&e, 2, t0); err != nil {
			t.Fatal(err)
		}
	}
	var gone []uint32
	for s := 1; s <= 6000; s += 7 {
		tb.Expire(t0.Add(time.Duration(s)*time.Second), func(e *Entry) {
			if e.Expires > StampOf(t0.Add(time.Duration(s)*time.Second)) {
				t.Errorf("expired early: %d at +%d", e.Timeout, s)
			}
			gone = append(gone, e.Timeout)
		})
		want := 0
		for _, to := range timeouts {
			if int(to) > s {
				want++
			}
		}
		if tb.Len() != want {
			t.Fatalf("+%ds: Len %d, want %d", s, tb.Len(), want)
		}
	}
	if len(gone) != len(timeouts) {
		t.Errorf("expired %v", gone)
	}
}

// A shorter timeout (a close) must take effect even though the entry sits
// in a later wheel slot.
func TestExpireShortened(t *testing.T) {
	tb := newTable(t, 1)
	e := v4(1)
	tb.Upsert(&e, 2, t0)
	e.State, e.Timeout = 6, 10
	if ch, _ := tb.Upsert(&e, 2, t0.Add(time.Second)); ch != StateChanged|OtherChanged {
		t.Fatalf("change %v", ch)
	}
	if n := tb.Expire(t0.Add(12*time.Second), nil); n != 1 || tb.Len() != 0 {
		t.Errorf("expired %d, len %d", n, tb.Len())
	}
}

func TestRefresh(t *testing.T) {
	tb := newTable(t, 1)
	idle, busy, peer := v4(1), v4(2), v4(3)
	for _, e := range []*Entry{&idle, &busy} {
		if ch, _ := tb.Upsert(e, self, t0); ch != Created {
			t.Fatal(ch)
		}
	}
	peer.Owner, peer.Version = 2, 1
	tb.Apply(&peer, 900, t0)
	// The busy one is reported again, unchanged: nothing to send now, but
	// the refresh must say it is alive.
	if ch, _ := tb.Upsert(&busy, self, t0.Add(100*time.Second)); ch.Changed() {
		t.Fatalf("unchanged report: %v", ch)
	}
	due := map[Key]bool{}
	// 900 s timeout, 30 s margin: due at +870.
	for s := 1; s <= 880; s++ {
		tb.DueForRefresh(t0.Add(time.Duration(s)*time.Second), func(d *Due) {
			if s < 870 {
				t.Errorf("due at +%d", s)
			}
			due[d.Key] = d.Rereported
		})
	}
	if len(due) != 2 || due[idle.Key] || !due[busy.Key] {
		t.Fatalf("due %v", due)
	}
	// Resending the busy one reschedules it; the idle one is not refreshed
	// and expires on time.
	if _, ok := tb.Refresh(&busy.Key, 0, t0.Add(880*time.Second)); !ok {
		t.Fatal("refresh failed")
	}
	if _, ok := tb.Refresh(&peer.Key, 0, t0); ok {
		t.Error("refreshed a peer's entry")
	}
	n := 0
	tb.Tick(t0.Add(901*time.Second), func(e *Entry) {
		n++
		if e.Key != idle.Key && e.Key != peer.Key {
			t.Errorf("expired %v", e.Key)
		}
	}, func(d *Due) { t.Errorf("due again %v", d.Key) })
	if n != 2 || tb.Len() != 1 {
		t.Errorf("expired %d, len %d", n, tb.Len())
	}
}

func TestSnapshot(t *testing.T) {
	tb := newTable(t, 8)
	for i := range 1000 {
		e := v4(i)
		o := NodeID(1 + i%3)
		tb.Upsert(&e, o, t0)
	}
	seen := map[Key]bool{}
	owned := 0
	var buf []Entry
	for s := range tb.Shards() {
		buf = tb.Snapshot(s, 0, buf[:0])
		for _, e := range buf {
			if seen[e.Key] {
				t.Fatalf("%v twice", e.Key)
			}
			seen[e.Key] = true
		}
		owned += len(tb.Snapshot(s, 2, nil))
	}
	if len(seen) != 1000 || owned != 333 {
		t.Errorf("%d entries, %d owned by 2", len(seen), owned)
	}
}

// TestModel checks Upsert, Apply, Delete and Tick against a plain map: the
// table's Len and contents must always agree with it.
func TestModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tb := newTable(t, 4)
	type rec struct {
		state   uint16
		expires Stamp
	}
	model := map[Key]rec{}
	now := t0
	keys := make([]Entry, 3000)
	for i := range keys {
		if i%5 == 0 {
			keys[i] = v6(i)
		} else {
			keys[i] = v4(i)
		}
	}
	for step := range 200000 {
		e := keys[r.IntN(len(keys))]
		switch op := r.IntN(20); {
		case op < 12:
			e.State = uint16(r.IntN(3))
			e.Timeout = uint32(1 + r.IntN(60))
			if _, err := tb.Upsert(&e, self, now); err != nil {
				t.Fatal(err)
			}
			model[e.Key] = rec{e.State, StampOf(now).Add(e.Timeout)}
		case op < 14:
			_, ok := tb.Delete(&e.Key)
			if _, want := model[e.Key]; ok != want {
				t.Fatalf("step %d: Delete %v, model %v", step, ok, want)
			}
			delete(model, e.Key)
		case op < 15:
			now = now.Add(time.Duration(r.IntN(5)) * time.Second)
			tb.Expire(now, nil)
			for k, v := range model {
				if v.expires <= StampOf(now) {
					delete(model, k)
				}
			}
		default:
			got, ok := tb.Get(&e.Key)
			want, wok := model[e.Key]
			if ok != wok || (ok && (got.State != want.state || got.Expires != want.expires)) {
				t.Fatalf("step %d: Get %v %+v, model %v %+v", step, ok, got, wok, want)
			}
		}
		if tb.Len() != len(model) {
			t.Fatalf("step %d: Len %d, model %d", step, tb.Len(), len(model))
		}
	}
	n := 0
	tb.ForEach(0, func(e *Entry) bool {
		n++
		if m, ok := model[e.Key]; !ok || m.state != e.State {
			t.Fatalf("ForEach %v not in model", e.Key)
		}
		return true
	})
	if n != len(model) {
		t.Errorf("ForEach %d, model %d", n, len(model))
	}
}

func TestConcurrent(t *testing.T) {
	tb := newTable(t, 16)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20000 {
				e := v4(g*100000 + i%5000)
				e.State = uint16(i % 3)
				tb.Upsert(&e, NodeID(1+g), t0.Add(time.Duration(i/1000)*time.Second))
				if i%7 == 0 {
					tb.Delete(&e.Key)
				}
				if i%1000 == 0 {
					tb.Tick(t0.Add(time.Duration(i/1000)*time.Second), nil, nil)
				}
			}
		})
	}
	wg.Wait()
	n := 0
	tb.ForEach(0, func(*Entry) bool { n++; return true })
	if n != tb.Len() {
		t.Errorf("ForEach %d, Len %d", n, tb.Len())
	}
}
