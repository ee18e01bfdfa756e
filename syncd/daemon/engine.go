package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/peerlvs/peerlvs/ipvs/procconn"
	"github.com/peerlvs/peerlvs/ipvs/reconcile"
	"github.com/peerlvs/peerlvs/ipvs/synclink"
	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/peer"
	"github.com/peerlvs/peerlvs/syncd/table"
)

// TickInterval is how often the loop drives the Node.
const TickInterval = 10 * time.Millisecond

// Removal policy (see the package documentation).
const (
	RemovedTCPTimeout   = 10
	RemovedOtherTimeout = 2
)

// KernelIO is the local kernel's side of the loop.
type KernelIO struct {
	// Tap yields the kernel master's sync datagrams.
	Tap synclink.FrameReader
	// Inject hands sync datagrams to the kernel backup thread.
	Inject synclink.FrameWriter
	// Conns lists the kernel's connections (/proc/net/ip_vs_conn), to
	// decide whether idle own entries are still alive. Nil: they expire.
	Conns func() ([]procconn.Entry, error)
	// Services lists the kernel's services with their real servers, to
	// hold back peers' entries whose service the kernel lacks (bind.go).
	// Nil: every entry is written at once.
	Services func() ([]reconcile.Virtual, error)
}

// engine is the loop: it owns the Node (or, in compat mode, the plain
// kernel format on the LAN) and runs on one goroutine.
type engine struct {
	cfg    Config
	log    *zap.Logger
	tbl    *table.Table
	node   *peer.Node // nil in compat mode
	kio    KernelIO
	tr     Transport
	inj    *injector
	compat *compatLAN

	keys chan *peer.Keyring

	// Entries and their services (bind.go): the pairs the last pass saw,
	// the entries held back, when the next pass is due, POST /bind
	// requests and callers waiting for theirs.
	bound       map[bindPair]bool
	held        map[table.Key]struct{}
	nextBind    time.Time
	nextSweep   time.Time
	bindReq     chan chan error
	bindWaiters []chan error

	msg     wire.Message
	ent     table.Entry
	conn    wire.Conn
	idle    []table.Key
	now     time.Time
	started time.Time
	readyAt time.Time
	rb      readBack

	// Counters written by the loop, read through snapshots.
	st  Counters
	rej *rateLog

	http http.Handler // the status endpoint, set before the engine is published

	snapMu sync.Mutex
	snap   *Status
	ready  atomic.Bool
}

// Counters are the loop's own counters.
type Counters struct {
	KernelFramesIn   uint64 `json:"kernel_frames_in"`
	KernelEntriesIn  uint64 `json:"kernel_entries_in"`
	KernelBadFrames  uint64 `json:"kernel_bad_frames"`
	KernelBadEntries uint64 `json:"kernel_bad_entries"`
	KernelFramesOut  uint64 `json:"kernel_frames_out"`
	KernelEntriesOut uint64 `json:"kernel_entries_out"`
	KernelInjectDrop uint64 `json:"kernel_inject_dropped"`
	KernelInjectBad  uint64 `json:"kernel_inject_invalid"`
	KernelInjectErr  uint64 `json:"kernel_inject_errors"`
	KernelReinjected uint64 `json:"kernel_reinjected"`
	KernelRefused    uint64 `json:"kernel_refused"`
	HeldBack         uint64 `json:"held_back"`
	Bound            uint64 `json:"bound"`
	BindErrors       uint64 `json:"bind_errors"`
	PeerFramesIn     uint64 `json:"peer_frames_in"`
	PeerFramesOut    uint64 `json:"peer_frames_out"`
	PeerBytesIn      uint64 `json:"peer_bytes_in"`
	PeerBytesOut     uint64 `json:"peer_bytes_out"`
	PeerSendErrors   uint64 `json:"peer_send_errors"`
	PeerRejected     uint64 `json:"peer_rejected"`
	IdleChecks       uint64 `json:"idle_checks"`
	IdleRefreshed    uint64 `json:"idle_refreshed"`
	Seeded           uint64 `json:"seeded"`
	CompatFramesIn   uint64 `json:"compat_frames_in,omitempty"`
	CompatBadFrames  uint64 `json:"compat_bad_frames,omitempty"`
	CompatOtherSync  uint64 `json:"compat_other_syncid,omitempty"`
	CompatEntriesIn  uint64 `json:"compat_entries_in,omitempty"`
}

func newEngine(cfg Config, log *zap.Logger, tbl *table.Table, keys *peer.Keyring, kio KernelIO, tr Transport, now time.Time) (*engine, error) {
	e := &engine{
		cfg: cfg, log: log, tbl: tbl, kio: kio, tr: tr,
		keys:    make(chan *peer.Keyring, 1),
		bindReq: make(chan chan error, 16),
		held:    map[table.Key]struct{}{},
		started: now,
		rb:      newReadBack(),
		rej:     newRateLog(10 * time.Second),
	}
	tbl.SetNodeName(table.NodeID(cfg.NodeID), cfg.NodeName)
	for id, name := range cfg.Nodes {
		tbl.SetNodeName(table.NodeID(id), name)
	}
	inj, err := newInjector(uint8(cfg.SyncID), cfg.Kernel.InjectMaxLen, cfg.Kernel.InjectBurst, kio.Inject, &e.st)
	if err != nil {
		return nil, err
	}
	e.inj = inj
	if cfg.Peer.Mode == ModeCompat {
		e.compat, err = newCompatLAN(cfg)
		if err != nil {
			return nil, err
		}
		e.ready.Store(true)
		e.readyAt = now
	} else {
		e.node, err = peer.NewNode(peer.Config{
			Self:          table.NodeID(cfg.NodeID),
			Incarnation:   peer.NewIncarnation(now),
			Keyring:       keys,
			MTU:           cfg.Peer.MTU,
			BulkRate:      cfg.Peer.BulkRate,
			AliveInterval: cfg.Peer.AliveInterval,
			BulkWait:      cfg.Peer.BulkWait,
			Send:          e.send,
			Applied:       e.applied,
			Idle:          func(d *table.Due) { e.idle = append(e.idle, d.Key) },
		}, tbl)
		if err != nil {
			return nil, err
		}
	}
	e.publish(now)
	return e, nil
}

// SetKeyring hands the loop a new keyring (safe from any goroutine).
func (e *engine) SetKeyring(k *peer.Keyring) {
	select {
	case <-e.keys:
	default:
	}
	e.keys <- k
}

func (e *engine) send(b []byte, to []table.NodeID) {
	e.st.PeerFramesOut++
	e.st.PeerBytesOut += uint64(len(b))
	if err := e.tr.Send(b, to); err != nil {
		e.st.PeerSendErrors++
		e.rej.log(e.log, "send", e.now, "peer send failed", zap.Error(err))
	}
}

// applied injects a peer's entry into the local kernel, once the kernel
// holds its service and real server (bind.go).
func (e *engine) applied(en *table.Entry, ch table.Change) {
	removed := ch&table.Removed != 0
	if !removed && !e.injectable(en) {
		e.held[en.Key] = struct{}{}
		e.st.HeldBack++
		return
	}
	delete(e.held, en.Key)
	peer.ToConn(en, &e.conn)
	if removed {
		removalPolicy(&e.conn)
	}
	e.inj.add(&e.conn)
}

// removalPolicy turns a removed entry into one the kernel drops soon.
func removalPolicy(c *wire.Conn) {
	if c.Flags&wire.FlagTemplate == 0 && c.Protocol == wire.ProtoTCP {
		c.State = wire.TCPClose
		c.Timeout = RemovedTCPTimeout
		return
	}
	c.Timeout = RemovedOtherTimeout
}

type peerDgram struct {
	b    []byte
	from netip.AddrPort
}

// Seed feeds entries (from /proc, already converted) through Local.
func (e *engine) seed(ents []table.Entry, now time.Time) {
	for i := range ents {
		if e.node != nil {
			if _, err := e.node.Local(&ents[i], now); err == nil {
				e.st.Seeded++
			}
		} else if _, err := e.tbl.Upsert(&ents[i], table.NodeID(e.cfg.NodeID), now); err == nil {
			e.st.Seeded++
		}
	}
	if e.node != nil {
		e.node.Flush()
	}
}

// run is the loop. It returns when ctx is done or a reader fails for good.
func (e *engine) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kch := make(chan []byte, 256)
	pch := make(chan peerDgram, 1024)
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, synclink.MaxFrame)
		for {
			n, err := e.kio.Tap.ReadFrame(ctx, buf)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if errors.Is(err, io.ErrShortBuffer) {
					continue
				}
				errc <- fmt.Errorf("kernel tap: %w", err)
				return
			}
			select {
			case kch <- append([]byte(nil), buf[:n]...):
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := e.tr.Recv(ctx, buf)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				errc <- fmt.Errorf("peer transport: %w", err)
				return
			}
			select {
			case pch <- peerDgram{append([]byte(nil), buf[:n]...), from}:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer wg.Wait()
	defer cancel()

	tick := time.NewTicker(TickInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case k := <-e.keys:
			if e.node != nil {
				e.node.SetKeyring(k)
			}
		case w := <-e.bindReq:
			e.now = time.Now()
			e.bindNow(w)
			e.inj.seal()
			e.inj.pump()
		case b := <-kch:
			e.now = time.Now()
			e.kernelFrame(b)
			// Drain what else is queued, then send one batch.
		drain:
			for range 64 {
				select {
				case b := <-kch:
					e.kernelFrame(b)
				default:
					break drain
				}
			}
			e.flush()
		case d := <-pch:
			e.now = time.Now()
			e.peerFrame(d)
		drainp:
			for range 256 {
				select {
				case d := <-pch:
					e.peerFrame(d)
				default:
					break drainp
				}
			}
			e.inj.seal()
			e.inj.pump()
		case now := <-tick.C:
			_ = now
			e.tick(time.Now())
		}
	}
}

func (e *engine) flush() {
	if e.node != nil {
		e.node.Flush()
	} else {
		e.compat.flush(e)
	}
}

// kernelFrame handles one datagram from the local kernel master.
func (e *engine) kernelFrame(b []byte) {
	e.st.KernelFramesIn++
	if err := wire.DecodeInto(b, &e.msg); err != nil {
		e.st.KernelBadFrames++
		e.rej.log(e.log, "kernel-decode", e.now, "bad datagram from the kernel master", zap.Error(err))
		return
	}
	for i := range e.msg.Conns {
		c := &e.msg.Conns[i]
		if err := c.Validate(); err != nil {
			e.st.KernelBadEntries++
			e.rej.log(e.log, "kernel-validate", e.now, "kernel master sent an entry that fails validation", zap.Error(err))
			continue
		}
		e.st.KernelEntriesIn++
		peer.FromConn(c, &e.ent)
		if e.node != nil {
			if _, err := e.node.Local(&e.ent, e.now); err != nil {
				e.st.KernelBadEntries++
			}
			continue
		}
		e.compat.local(e, c)
	}
}

// peerFrame handles one datagram from the LAN.
func (e *engine) peerFrame(d peerDgram) {
	e.st.PeerFramesIn++
	e.st.PeerBytesIn += uint64(len(d.b))
	if e.node == nil {
		e.compat.receive(e, d)
		return
	}
	var sender table.NodeID
	if len(d.b) >= 10 {
		sender = table.NodeID(binary.BigEndian.Uint16(d.b[8:10]))
	}
	if err := e.node.Receive(d.b, e.now); err != nil {
		e.st.PeerRejected++
		reason := peer.ReasonName(peer.ReasonIndex(err))
		e.rej.log(e.log, "peer-"+reason, e.now, "peer frame rejected",
			zap.String("reason", reason), zap.Stringer("from", d.from), zap.Error(err))
		return
	}
	e.tr.Learn(sender, d.from)
}

// tick runs the timers.
func (e *engine) tick(now time.Time) {
	e.now = now
	e.inj.newTick()
	if e.node != nil {
		e.node.Tick(now)
		if len(e.idle) > 0 {
			e.refreshIdle(now)
		}
	} else {
		e.compat.tick(e, now)
	}
	e.bindTick(now)
	e.inj.seal()
	e.inj.pump()
	if e.node != nil && !e.ready.Load() && e.node.Ready() && len(e.inj.queue) == 0 {
		e.earnReady(now)
	}
	e.publishMaybe(now)
}

// earnReady declares the node ready once the kernel holds the table. Ready
// means the kernel has it, not just syncd: saru hands this director
// buckets as soon as it says so, and a packet of a connection the kernel
// lacks is answered with a reset. So the injection queue the bulk dump
// filled must have drained, and the kernel's table is read back (see
// readBack).
func (e *engine) earnReady(now time.Time) {
	if e.kio.Conns != nil {
		if !e.rb.due(now) {
			return
		}
		kernel, err := e.kio.Conns()
		if err != nil {
			// Without the kernel's table there is nothing to check against;
			// not ready is the safe answer, and the log says why.
			e.rej.log(e.log, "readback", now, "cannot read the kernel's connections back; staying not ready", zap.Error(err))
			e.rb.next = now.Add(readBackEvery)
			return
		}
		again := e.rb.round(now, kernel, e.tbl, e.notHeld)
		for i := range again {
			e.applied(&again[i], 0)
		}
		if len(again) > 0 {
			e.st.KernelReinjected += uint64(len(again))
			e.log.Info("the kernel lacks entries after the bulk resync; writing them again",
				zap.Int("missing", len(again)), zap.Int("try", e.rb.tries))
			e.inj.seal()
			e.inj.pump()
		}
		if !e.rb.done {
			return
		}
		if e.rb.refused > 0 {
			e.st.KernelRefused += uint64(e.rb.refused)
			e.log.Warn("the kernel did not take some entries even when written again; they are not waited for",
				zap.Int("entries", e.rb.refused), zap.Int("tries", readBackTries))
		}
	}
	e.readyAt = now
	e.ready.Store(true)
	e.log.Info("bulk resync complete and read back from the kernel: ready",
		zap.Duration("took", now.Sub(e.started)), zap.Int("entries", e.tbl.Len()))
}

// procKey identifies a /proc entry the way table.Key does (without the
// template bit and persistence data, which /proc does not show apart).
type procKey struct {
	proto        uint8
	caddr, vaddr netip.Addr
	cport, vport uint16
}

// refreshIdle asks the kernel which idle own entries are still there.
func (e *engine) refreshIdle(now time.Time) {
	keys := e.idle
	e.idle = e.idle[:0]
	if e.kio.Conns == nil {
		return
	}
	e.st.IdleChecks++
	ents, err := e.kio.Conns()
	if err != nil {
		e.rej.log(e.log, "proc", now, "cannot read the kernel's connections; idle entries will expire", zap.Error(err))
		return
	}
	left := make(map[procKey]uint32, len(ents))
	for _, p := range ents {
		left[procKey{p.Protocol, p.CAddr.Unmap(), p.VAddr.Unmap(), p.CPort, p.VPort}] = uint32((p.Expires + time.Second - 1) / time.Second)
	}
	for i := range keys {
		k := &keys[i]
		if s, ok := left[procKey{k.Proto, k.CAddr.Unmap(), k.VAddr.Unmap(), k.CPort, k.VPort}]; ok && s > 0 {
			if e.refresh(k, s, now) {
				e.st.IdleRefreshed++
			}
		}
	}
	e.flush()
}

func (e *engine) refresh(k *table.Key, alive uint32, now time.Time) bool {
	if e.node != nil {
		return e.node.Refresh(k, alive, now)
	}
	en, ok := e.tbl.Refresh(k, alive, now)
	if ok {
		e.compat.sendEntry(e, &en)
	}
	return ok
}

// compatPseudoID is the owner id of entries learnt from a plain kernel
// sender at addr.
func compatPseudoID(addr netip.Addr) table.NodeID {
	h := fnv.New32a()
	b := addr.Unmap().AsSlice()
	h.Write(b)
	return table.NodeID(CompatPseudoBase + h.Sum32()%(65536-CompatPseudoBase))
}
