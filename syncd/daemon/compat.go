package daemon

import (
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/peer"
	"github.com/peerlvs/peerlvs/syncd/table"
)

// compatLAN speaks the plain kernel v1 sync format on the LAN, as a stock
// kernel master and backup would: what the local kernel master reports goes
// out as v1 datagrams to (group, port) with our sync id, refreshed while the
// kernel still has the connection; v0/v1 datagrams from stock masters are
// stored under a pseudo owner "kernel@<ip>" and injected into the local
// kernel. There is no authentication, no sequence numbers and no bulk
// resync in this mode: the node is ready at once.
type compatLAN struct {
	b      *wire.Builder
	syncID uint8
	msg    wire.Message
	ent    table.Entry
	conn   wire.Conn
	names  map[netip.Addr]table.NodeID
	last   table.Stamp
}

func newCompatLAN(cfg Config) (*compatLAN, error) {
	b, err := wire.NewBuilder(1, uint8(cfg.SyncID), cfg.Peer.MTU)
	if err != nil {
		return nil, err
	}
	return &compatLAN{b: b, syncID: uint8(cfg.SyncID), names: map[netip.Addr]table.NodeID{}}, nil
}

// local records an entry from the local kernel master and relays it.
func (c *compatLAN) local(e *engine, kc *wire.Conn) {
	if _, err := e.tbl.Upsert(&e.ent, table.NodeID(e.cfg.NodeID), e.now); err != nil {
		e.st.KernelBadEntries++
		return
	}
	c.add(e, kc)
}

func (c *compatLAN) add(e *engine, kc *wire.Conn) {
	ok, err := c.b.Add(kc)
	if err == nil && !ok {
		c.flush(e)
		ok, err = c.b.Add(kc)
	}
	if err != nil || !ok {
		e.st.KernelBadEntries++
	}
}

func (c *compatLAN) sendEntry(e *engine, en *table.Entry) {
	peer.ToConn(en, &c.conn)
	c.add(e, &c.conn)
}

func (c *compatLAN) flush(e *engine) {
	if c.b.Len() == 0 {
		return
	}
	e.send(c.b.Bytes(), nil)
	c.b.Reset()
}

// receive handles a datagram from the LAN: a plain kernel sync message.
func (c *compatLAN) receive(e *engine, d peerDgram) {
	e.st.CompatFramesIn++
	if err := wire.DecodeInto(d.b, &c.msg); err != nil {
		e.st.CompatBadFrames++
		e.rej.log(e.log, "compat-decode", e.now, "bad kernel sync datagram on the LAN", zap.Stringer("from", d.from), zap.Error(err))
		return
	}
	if c.syncID != 0 && c.msg.SyncID != c.syncID {
		e.st.CompatOtherSync++
		return
	}
	src := d.from.Addr().Unmap()
	owner, ok := c.names[src]
	if !ok {
		owner = compatPseudoID(src)
		c.names[src] = owner
		e.tbl.SetNodeName(owner, "kernel@"+src.String())
		e.log.Info("compat: heard a plain kernel sync sender", zap.Stringer("addr", src), zap.Uint16("pseudo_owner", uint16(owner)))
	}
	ver := uint32(table.StampOf(e.now))
	for i := range c.msg.Conns {
		kc := &c.msg.Conns[i]
		if err := kc.Validate(); err != nil {
			e.st.CompatBadFrames++
			continue
		}
		e.st.CompatEntriesIn++
		peer.FromConn(kc, &c.ent)
		c.ent.Owner, c.ent.Version = owner, ver
		ttl := uint32(kc.EffectiveTimeout() / time.Second)
		ch, err := e.tbl.Apply(&c.ent, ttl, e.now)
		if err != nil || ch == 0 || ch&table.Stale != 0 {
			continue
		}
		e.applied(&c.ent, ch)
	}
}

// tick refreshes own entries on stock backups, once a second.
func (c *compatLAN) tick(e *engine, now time.Time) {
	ts := table.StampOf(now)
	if ts != c.last {
		c.last = ts
		e.tbl.Tick(now, nil, func(d *table.Due) {
			if d.Rereported {
				if en, ok := e.tbl.Refresh(&d.Key, 0, now); ok {
					c.sendEntry(e, &en)
				}
				return
			}
			e.idle = append(e.idle, d.Key)
		})
		if len(e.idle) > 0 {
			e.refreshIdle(now)
		}
	}
	c.flush(e)
}
