package peer

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/table"
)

func showEntry(e table.Entry) string {
	var q table.SeqData
	if e.Seq != nil {
		q = *e.Seq
	}
	e.Seq = nil
	return fmt.Sprintf("%+v seq %v", e, q)
}

func TestEntryRoundTrip(t *testing.T) {
	cases := map[string]table.Entry{"ipv4": conn4(1), "ipv6": conn6(2), "sip template": sipTemplate(), "ftp with seq": ftpConn()}
	for name, e := range cases {
		t.Run(name, func(t *testing.T) {
			e.Owner, e.Version = 3, 77
			for _, removed := range []bool{false, true} {
				b, err := AppendEntry([]byte{0xee}, &e, 123, removed)
				if err != nil {
					t.Fatal(err)
				}
				if len(b) != 1+EntryLen(&e) {
					t.Fatalf("%d bytes, EntryLen %d", len(b)-1, EntryLen(&e))
				}
				var got table.Entry
				n, ttl, rem, err := DecodeEntry(b[1:], &got)
				if err != nil {
					t.Fatal(err)
				}
				if n != len(b)-1 || ttl != 123 || rem != removed || showEntry(got) != showEntry(e) {
					t.Errorf("got %d %d %v %s\nwant %s", n, ttl, rem, showEntry(got), showEntry(e))
				}
			}
		})
	}
}

// The kernel part of an entry must be byte for byte what the kernel (and
// ipvs/wire) produce, so that the relay needs no translation beyond
// prefixing a header.
func TestEntryMatchesKernelV1(t *testing.T) {
	for _, e := range []table.Entry{conn4(1), conn6(2), sipTemplate(), ftpConn()} {
		e.Owner = 1
		var c wire.Conn
		ToConn(&e, &c)
		msgs, err := wire.EncodeV1(0, []wire.Conn{c}, wire.MaxMessageLen)
		if err != nil {
			t.Fatal(err)
		}
		ours, _ := AppendEntry(nil, &e, 0, false)
		if k := msgs[0][wire.HeaderLenV1:]; !bytes.Equal(ours[entryPeerLen:], k) {
			t.Errorf("%v:\nours   %x\nkernel %x", e.Key, ours[entryPeerLen:], k)
		}
		var back table.Entry
		FromConn(&c, &back)
		back.Owner = 1
		if showEntry(back) != showEntry(e) {
			t.Errorf("FromConn(ToConn(e)):\n%s\n%s", showEntry(back), showEntry(e))
		}
	}
}

func TestPayloadRoundTrips(t *testing.T) {
	t.Run("UPDATE", func(t *testing.T) {
		p := AppendUpdateHeader(nil, 42, UpdateResend)
		es := []table.Entry{conn4(1), conn6(2), sipTemplate()}
		for i := range es {
			es[i].Owner, es[i].Version = table.NodeID(i+1), uint32(i+10)
			p, _ = AppendEntry(p, &es[i], uint32(i), i == 1)
		}
		SetEntryCount(p, TypeUpdate, len(es))
		u, err := ParseUpdate(p)
		if err != nil || u.USeq != 42 || u.Flags != UpdateResend || u.Count != 3 {
			t.Fatalf("%+v %v", u, err)
		}
		r := u.Entries()
		var e table.Entry
		for i := 0; ; i++ {
			ttl, removed, ok := r.Next(&e)
			if !ok {
				break
			}
			if showEntry(e) != showEntry(es[i]) || ttl != uint32(i) || removed != (i == 1) {
				t.Errorf("entry %d: %s", i, showEntry(e))
			}
		}
		if err := r.Err(); err != nil {
			t.Error(err)
		}
	})
	t.Run("ALIVE", func(t *testing.T) {
		a := Alive{USeq: 1 << 40, Entries: 123456, Flags: AliveReady}
		got, err := ParseAlive(AppendAlive(nil, &a))
		if err != nil || got != a {
			t.Errorf("%+v %v", got, err)
		}
	})
	t.Run("NACK", func(t *testing.T) {
		n := Nack{Target: 3, Incarnation: 99, Ranges: []Range{{5, 1}, {9, 300}}}
		var got Nack
		if err := ParseNack(AppendNack(nil, &n), &got); err != nil || !reflect.DeepEqual(got, n) {
			t.Errorf("%+v %v", got, err)
		}
	})
	t.Run("BULK_REQUEST", func(t *testing.T) {
		for _, r := range []BulkRequest{
			{Target: 2, Owner: 0},
			{Target: 0, Owner: 5, NShards: 10, Bitmap: []byte{0x81, 0x02}},
		} {
			got, err := ParseBulkRequest(AppendBulkRequest(nil, &r))
			if err != nil || got.Target != r.Target || got.Owner != r.Owner || got.NShards != r.NShards || !bytes.Equal(got.Bitmap, r.Bitmap) {
				t.Errorf("%+v %v", got, err)
			}
			for i := range 12 {
				want := r.NShards == 0 || i == 0 || i == 7 || i == 9
				if got.Wants(i) != want {
					t.Errorf("%+v: Wants(%d) = %v", r, i, got.Wants(i))
				}
			}
		}
	})
	t.Run("BULK", func(t *testing.T) {
		h := Bulk{DumpID: 7, Shard: 63, NShards: 64, Part: 12, Flags: BulkLast}
		p := AppendBulkHeader(nil, &h)
		e := conn4(5)
		e.Owner, e.Version = 2, 3
		p, _ = AppendEntry(p, &e, 60, false)
		SetEntryCount(p, TypeBulk, 1)
		got, err := ParseBulk(p)
		if err != nil || got.DumpID != 7 || got.Shard != 63 || got.NShards != 64 || got.Part != 12 || got.Flags != BulkLast || got.Count != 1 {
			t.Fatalf("%+v %v", got, err)
		}
		r := got.Entries()
		var x table.Entry
		if ttl, _, ok := r.Next(&x); !ok || ttl != 60 || showEntry(x) != showEntry(e) || r.Err() != nil {
			t.Errorf("entry %s %v", showEntry(x), r.Err())
		}
	})
	t.Run("BULK_DONE", func(t *testing.T) {
		d := BulkDone{NShards: 64, Requesters: []uint16{2, 9}}
		var got BulkDone
		if err := ParseBulkDone(AppendBulkDone(nil, &d), &got); err != nil || !reflect.DeepEqual(got, d) {
			t.Errorf("%+v %v", got, err)
		}
	})
}

func TestPayloadRejects(t *testing.T) {
	e := conn4(1)
	e.Owner, e.Version = 1, 1
	good, _ := AppendEntry(nil, &e, 1, false)
	update := func(count byte, body []byte) []byte {
		return append(AppendUpdateHeader(nil, 1, 0)[:9], append([]byte{count}, body...)...)
	}
	mut := func(off int, v byte) []byte {
		b := bytes.Clone(good)
		b[off] = v
		return update(1, b)
	}
	nack := func(b ...byte) []byte { return append([]byte{0, 1, 0, 0, 0, 0, 0, 0, 0, 1}, b...) }
	cases := []struct {
		name string
		fn   func() error
	}{
		{"update short", func() error { _, err := ParseUpdate(make([]byte, 9)); return err }},
		{"update useq 0", func() error { _, err := ParseUpdate(make([]byte, 10)); return err }},
		{"update flags", func() error { _, err := ParseUpdate(append(AppendUpdateHeader(nil, 1, 0)[:8], 2, 0)); return err }},
		{"entry cut", func() error { return walk(update(1, good[:len(good)-1])) }},
		{"count too high", func() error { return walk(update(2, good)) }},
		{"trailing", func() error { return walk(update(1, append(bytes.Clone(good), 0))) }},
		{"owner 0", func() error { return walk(mut(1, 0)) }},
		{"eflags", func() error { return walk(mut(10, 2)) }},
		{"reserved", func() error { return walk(mut(11, 1)) }},
		{"entry type", func() error { return walk(mut(12, 2)) }},
		{"entry version", func() error { return walk(mut(14, 0x10)) }},
		{"entry size small", func() error { return walk(mut(15, 35)) }},
		{"entry size big", func() error { return walk(mut(15, 37)) }},
		{"unknown option", func() error {
			b := bytes.Clone(good)
			b[15] = 40
			return walk(update(1, append(b, 9, 2, 0, 0)))
		}},
		{"alive length", func() error { _, err := ParseAlive(make([]byte, 12)); return err }},
		{"alive flags", func() error { _, err := ParseAlive(append(make([]byte, 12), 2)); return err }},
		{"nack no ranges", func() error { return ParseNack(nack(0), &Nack{}) }},
		{"nack length", func() error { return ParseNack(nack(1, 0, 0), &Nack{}) }},
		{"nack zero count", func() error { return ParseNack(nack(1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0), &Nack{}) }},
		{"nack wraps", func() error {
			return ParseNack(nack(1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2), &Nack{})
		}},
		{"bulk request bitmap", func() error { _, err := ParseBulkRequest([]byte{0, 1, 0, 0, 0, 3, 0x08}); return err }},
		{"bulk request length", func() error { _, err := ParseBulkRequest([]byte{0, 1, 0, 0, 0, 9, 1}); return err }},
		{"bulk shard", func() error { _, err := ParseBulk([]byte{0, 0, 0, 1, 0, 4, 0, 4, 0, 0, 0, 0}); return err }},
		{"bulk done requester 0", func() error { return ParseBulkDone([]byte{0, 4, 1, 0, 0}, &BulkDone{}) }},
	}
	for _, c := range cases {
		if err := c.fn(); !errors.Is(err, ErrPayload) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// walk parses an UPDATE payload and all its entries.
func walk(p []byte) error {
	u, err := ParseUpdate(p)
	if err != nil {
		return err
	}
	r := u.Entries()
	var e table.Entry
	for {
		if _, _, ok := r.Next(&e); !ok {
			break
		}
	}
	return r.Err()
}
