package verdict

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Transport carries verdict messages between directors; *member.Node is
// one.
type Transport interface {
	Send(to string, msg []byte) error
	Peers() []string
}

// DefaultResend is how often a director repeats its whole state even when
// nothing changed: a lost datagram costs at most this long, and a
// director that joins hears everyone within it.
const DefaultResend = time.Second

// Gossip sends this director's votes and declaration to every other
// director at once when they change and every Resend in any case, and
// puts what it hears on the Board.
type Gossip struct {
	tr     Transport
	board  *Board
	log    *zap.Logger
	resend time.Duration

	mu    sync.Mutex
	hdr   Header
	votes []Vote
	decl  []Digest

	kick    chan struct{}
	changes chan struct{}
}

// NewGossip returns the gossip of director name in saru run run; resend
// <= 0 means DefaultResend.
func NewGossip(name string, run uint64, tr Transport, board *Board, resend time.Duration, log *zap.Logger) *Gossip {
	if resend <= 0 {
		resend = DefaultResend
	}
	return &Gossip{tr: tr, board: board, log: log.With(zap.String("component", "verdict")), resend: resend,
		hdr: Header{From: name, Run: run}, kick: make(chan struct{}, 1), changes: make(chan struct{}, 1)}
}

// Changes signals (coalesced) that a vote heard from another director
// changed.
func (g *Gossip) Changes() <-chan struct{} { return g.changes }

// Publish sets this director's state and sends it at once (from Run).
func (g *Gossip) Publish(services uint64, votes []Vote, decl []Digest) {
	g.mu.Lock()
	g.hdr.Services = services
	g.votes, g.decl = slices.Clone(votes), slices.Clone(decl)
	g.mu.Unlock()
	signal(g.kick)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Deliver takes in one message from the transport's receive path. It
// returns ErrNotVerdict for another kind of message and an error for a
// malformed one; it never blocks.
func (g *Gossip) Deliver(b []byte) error {
	m, err := Decode(b)
	if err != nil {
		return err
	}
	if m.From == g.hdr.From {
		return errors.New("verdict: a message from ourselves (two directors with one name?)")
	}
	if g.board.Update(m) {
		signal(g.changes)
	}
	return nil
}

// Run sends until ctx ends.
func (g *Gossip) Run(ctx context.Context) {
	t := time.NewTicker(g.resend)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.kick:
		case <-t.C:
		}
		g.send()
	}
}

func (g *Gossip) send() {
	g.mu.Lock()
	g.hdr.Seq++
	h, votes, decl := g.hdr, g.votes, g.decl
	g.mu.Unlock()
	if h.Services == 0 && len(votes) == 0 && len(decl) == 0 {
		// Nothing declared: a fleet without services pays nothing for
		// them (the member fingerprint still tells the others).
		return
	}
	vm, err := EncodeVotes(h, votes)
	if err != nil {
		g.log.Error("encode votes", zap.Error(err))
		return
	}
	dm, err := EncodeDecl(h, decl)
	if err != nil {
		g.log.Error("encode the declaration", zap.Error(err))
		return
	}
	msgs := append(vm, dm...)
	for _, p := range g.tr.Peers() {
		for _, m := range msgs {
			if err := g.tr.Send(p, m); err != nil {
				g.log.Debug("send verdicts", zap.String("to", p), zap.Error(err))
				break
			}
		}
	}
}
