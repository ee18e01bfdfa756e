package peer

import (
	"slices"
	"time"

	"github.com/peerlvs/peerlvs/syncd/table"
)

// dumper serves bulk dumps. It walks the table's shards in a circle and
// dumps a shard when some request still needs it, to every requester that
// needs it at once: requesters that ask while a walk is under way join it
// and get the shards they missed when the walk wraps around, so that each
// entry goes out once per walk, not once per requester.
type dumper struct {
	t       *table.Table
	rate    float64 // entries per second
	burst   float64
	tokens  float64
	last    time.Time
	reqs    []*bulkReq
	walk    int // next shard to consider
	nextID  uint32
	cur     shardDump
	payload []byte
	done    []uint16
}

type bulkReq struct {
	node  table.NodeID
	owner table.NodeID // 0: all
	need  []bool
	left  int
}

// shardDump is the shard being sent: a snapshot taken when it started.
type shardDump struct {
	active  bool
	shard   int
	id      uint32
	part    uint16
	buf     []table.Entry
	pos     int
	reqs    []*bulkReq
	targets []table.NodeID
}

func (d *dumper) busy() bool { return d.cur.active || len(d.reqs) > 0 || len(d.done) > 0 }

// request records that node wants the shards r names, of owner's entries
// (0 all).
func (d *dumper) request(node, owner table.NodeID, r *BulkRequest, now time.Time) {
	n := d.t.Shards()
	var q *bulkReq
	for _, x := range d.reqs {
		if x.node == node {
			q = x
		}
	}
	if q == nil {
		q = &bulkReq{node: node, owner: owner, need: make([]bool, n)}
		d.reqs = append(d.reqs, q)
	} else if q.owner != owner {
		q.owner = 0
	}
	for i := range n {
		if r.Wants(i) && !q.need[i] {
			q.need[i] = true
			q.left++
		}
	}
	if q.left == 0 {
		// Asked for nothing (shards this node does not have): say so at
		// once rather than never.
		d.done = append(d.done, uint16(node))
		d.drop(node)
	}
	if !d.cur.active && len(d.reqs) > 0 {
		d.last = now
		d.tokens = min(d.tokens, d.burst)
	}
}

// drop forgets node's request (it restarted, and will ask again).
func (d *dumper) drop(node table.NodeID) {
	d.reqs = slices.DeleteFunc(d.reqs, func(q *bulkReq) bool { return q.node == node })
}

// next picks the next shard some request needs, starting where the walk
// is, and snapshots it.
func (d *dumper) next() bool {
	n := d.t.Shards()
	for k := range n {
		s := (d.walk + k) % n
		c := &d.cur
		c.reqs, c.targets = c.reqs[:0], c.targets[:0]
		owner, mixed := table.NodeID(0), false
		for _, q := range d.reqs {
			if q.need[s] {
				if len(c.reqs) == 0 {
					owner = q.owner
				} else if owner != q.owner {
					mixed = true
				}
				c.reqs = append(c.reqs, q)
				c.targets = append(c.targets, q.node)
			}
		}
		if len(c.reqs) == 0 {
			continue
		}
		if mixed {
			owner = 0
		}
		d.walk = (s + 1) % n
		d.nextID++
		c.active, c.shard, c.id, c.part, c.pos = true, s, d.nextID, 0, 0
		c.buf = d.t.Snapshot(s, owner, c.buf[:0])
		return true
	}
	return false
}

// poll sends as many BULK frames as the rate allows, and BULK_DONE for the
// requests it completed.
func (d *dumper) poll(n *Node, now time.Time) {
	if !d.busy() {
		return
	}
	if dt := now.Sub(d.last); dt > 0 {
		d.tokens = min(d.tokens+d.rate*dt.Seconds(), d.burst)
	}
	d.last = now
	maxPayload := n.seal.MaxPayload()
	ts := table.StampOf(now)
	for d.tokens >= 1 {
		c := &d.cur
		if !c.active && !d.next() {
			break
		}
		h := Bulk{DumpID: c.id, Shard: uint16(c.shard), NShards: uint16(d.t.Shards()), Part: c.part}
		p := AppendBulkHeader(d.payload[:0], &h)
		cnt := 0
		for c.pos < len(c.buf) && cnt < MaxEntriesPerFrame {
			e := &c.buf[c.pos]
			if e.Expires <= ts {
				c.pos++
				continue
			}
			if len(p)+EntryLen(e) > maxPayload {
				break
			}
			var err error
			if p, err = AppendEntry(p, e, e.Expires.Sub(ts), false); err != nil {
				n.stats.EntriesInvalid++
			} else {
				cnt++
			}
			c.pos++
		}
		if c.pos == len(c.buf) {
			p[10] |= BulkLast
		}
		SetEntryCount(p, TypeBulk, cnt)
		d.payload = p
		n.send(TypeBulk, p, c.targets)
		n.stats.BulkFramesSent++
		n.stats.BulkEntriesSent += uint64(cnt)
		d.tokens -= float64(max(cnt, 1))
		c.part++
		if c.pos == len(c.buf) {
			c.active = false
			for _, q := range c.reqs {
				if q.need[c.shard] {
					q.need[c.shard] = false
					q.left--
				}
				if q.left == 0 {
					d.done = append(d.done, uint16(q.node))
					d.drop(q.node)
				}
			}
			clear(c.buf) // let the snapshot's persistence data go
		}
	}
	if len(d.done) > 0 {
		bd := BulkDone{NShards: uint16(d.t.Shards()), Requesters: d.done}
		d.payload = AppendBulkDone(d.payload[:0], &bd)
		to := make([]table.NodeID, len(d.done))
		for i, id := range d.done {
			to[i] = table.NodeID(id)
		}
		n.send(TypeBulkDone, d.payload, to)
		d.done = d.done[:0]
	}
	if !d.cur.active && len(d.reqs) == 0 {
		d.tokens = 0
	}
}

// bulkRecv is the joining side: it asks one ready peer for its table and
// follows the dump shard by shard until it has every part of every shard,
// asking again for the shards a lost frame left incomplete.
type bulkRecv struct {
	done      bool
	started   time.Time
	from      table.NodeID // the peer asked; 0 none yet
	fromInc   uint64
	asked     time.Time
	heard     time.Time // last BULK from the peer asked
	attempts  int
	nshards   int
	shards    []shardProgress
	complete  int
	completed time.Time
}

type shardProgress struct {
	id   uint32
	next uint16 // next part expected
	ok   bool
}

// onBulk follows one BULK part from the peer asked.
func (b *bulkRecv) onBulk(h *Bulk, now time.Time) {
	if b.done {
		return
	}
	b.heard = now
	if b.nshards != int(h.NShards) {
		b.nshards = int(h.NShards)
		b.shards = make([]shardProgress, b.nshards)
		b.complete = 0
	}
	sp := &b.shards[h.Shard]
	if sp.ok {
		return
	}
	if sp.id != h.DumpID {
		*sp = shardProgress{id: h.DumpID}
	}
	if h.Part != sp.next {
		// A part went missing: this dump of the shard is no use for
		// completeness (its entries were applied all the same); wait for
		// the next one.
		sp.next = 0xffff
		return
	}
	sp.next++
	if h.Flags&BulkLast != 0 {
		sp.ok = true
		b.complete++
		if b.complete == b.nshards {
			b.done = true
			b.completed = now
		}
	}
}

// missing builds a request for the shards not yet complete.
func (b *bulkRecv) missing(target table.NodeID) BulkRequest {
	r := BulkRequest{Target: uint16(target)}
	if b.nshards == 0 {
		return r
	}
	r.NShards = uint16(b.nshards)
	r.Bitmap = make([]byte, (b.nshards+7)/8)
	for i, sp := range b.shards {
		if !sp.ok {
			r.Bitmap[i/8] |= 1 << (i % 8)
		}
	}
	return r
}
