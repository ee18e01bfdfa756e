package lease

import (
	"cmp"
	"context"
	"hash/fnv"
	"slices"
	"time"

	"go.uber.org/zap"
)

// Transport carries lease messages between directors; *member.Node is one
// (memberlist user messages, authenticated with the gossip key).
type Transport interface {
	// Peers names the other directors to ask for grants: every director
	// the local one can see, whatever its state.
	Peers() []string
	// Send sends one message to a director, best effort.
	Send(to string, msg []byte) error
}

// Service runs a Keeper on the network: a round of requests every
// Lease/4, grants for the others' requests, and the kernel lease renewed
// after each round and whenever grants arrive. It is what the daemon wires
// between memberlist, the controller and the filter.
//
// Whom a round asks is a matter of speed and cost only, never of safety:
// validity needs Quorum distinct grantors whoever they are. A round asks
// Quorum-1+SpareGrantors other directors, the same ones round after round
// (a rendezvous order of the names), while the last round kept every
// wanted bucket valid; it asks every director it sees when it did not
// (a grantor died, a bucket is refused, grants are late) and when buckets
// were newly wanted (a takeover waits for the fastest quorum). So a fleet
// of n directors exchanges O(n·Quorum) messages a round instead of O(n²)
// when all is well.
type Service struct {
	k     *Keeper
	tr    Transport
	log   *zap.Logger
	in    chan []byte
	now   chan struct{} // a round is due before the ticker's, asking all
	every time.Duration
	// OnLapse, if set, is told of every lapse of the kernel lease. It is
	// called from the loop that renews the lease: it must not block.
	OnLapse func(Lapse)
}

// SpareGrantors is how many more directors than a quorum needs a round
// asks while all is well, so that one lost or late grant does not make the
// next round ask everyone.
const SpareGrantors = 2

// NewService returns a service for k over tr.
func NewService(k *Keeper, tr Transport, log *zap.Logger) *Service {
	return &Service{k: k, tr: tr, log: log.With(zap.String("component", "lease")),
		in: make(chan []byte, 1024), now: make(chan struct{}, 1), every: k.Params().Lease / 4}
}

// Keeper returns the service's keeper.
func (s *Service) Keeper() *Keeper { return s.k }

// Deliver hands a received message to the service without blocking; the
// transport calls it from its receive path. Bytes that are not a lease
// message are the caller's to handle: Deliver reports false for them.
func (s *Service) Deliver(msg []byte) bool {
	if !isLease(msg) {
		return false
	}
	select {
	case s.in <- append([]byte(nil), msg...):
	default:
		// A full queue means this process is far behind; the sender
		// asks again next round.
	}
	return true
}

// Want implements controller.Grants. A bucket newly wanted is asked for
// at once, not at the next tick: a taker's wait is what a move costs.
func (s *Service) Want(buckets []uint32) {
	if s.k.Want(buckets) {
		select {
		case s.now <- struct{}{}:
		default:
		}
	}
}

// Changes implements controller.Grants.
func (s *Service) Changes() <-chan struct{} { return s.k.Changes() }

// Granted implements controller.Grants: b is valid for at least one more
// round, so that installing it does not cut the kernel lease short.
func (s *Service) Granted(b uint32) bool {
	return s.k.ValidUntil(b).After(s.k.now().Add(s.every))
}

// Install implements controller.Grants: the keeper's Install, then the
// release of what the kernel no longer accepts, to every other director.
func (s *Service) Install(accepting []uint32, apply func() error) error {
	rel, err := s.k.Install(accepting, apply)
	if err != nil {
		return err
	}
	msgs, err := EncodeRelease(rel)
	if err != nil {
		return err
	}
	s.broadcast(msgs)
	return nil
}

// Run drives the service until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	s.round(true)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.round(false)
		case <-s.now:
			s.round(true)
		case msg := <-s.in:
			renew := s.handle(msg)
			// Drain what else has come, then renew once.
			for more := true; more; {
				select {
				case msg = <-s.in:
					renew = s.handle(msg) || renew
				default:
					more = false
				}
			}
			if renew {
				s.renew()
			}
		}
	}
}

// round asks for grants: everyone when all is true or the last round left
// a wanted bucket short, else the preferred grantors.
func (s *Service) round(all bool) {
	// A good round at t0 makes every wanted bucket valid until t0+Lease,
	// 4 rounds on. Wanting 2.5 rounds of validity at the next round and
	// not one later asks everyone after one short round, with two rounds
	// left for the answers before anything lapses.
	r, fresh := s.k.Round(s.every * 5 / 2)
	msgs, err := EncodeRequest(r)
	if err != nil {
		s.log.Error("encode a lease request", zap.Error(err))
		return
	}
	peers := s.tr.Peers()
	if !all && fresh {
		peers = preferred(r.From.Name, peers, s.k.Params().Quorum-1+SpareGrantors)
	}
	s.send(peers, msgs)
	s.renew()
}

// preferred returns the first n of peers in the rendezvous order of self:
// each director prefers its own grantors, and the fleet's requests spread
// evenly over the grantors.
func preferred(self string, peers []string, n int) []string {
	if len(peers) <= n {
		return peers
	}
	score := func(p string) uint64 {
		h := fnv.New64a()
		h.Write([]byte(self))
		h.Write([]byte{0})
		h.Write([]byte(p))
		return h.Sum64()
	}
	ps := slices.Clone(peers)
	slices.SortFunc(ps, func(a, b string) int { return cmp.Compare(score(a), score(b)) })
	return ps[:n]
}

// broadcast sends msgs to every director this one sees.
func (s *Service) broadcast(msgs [][]byte) { s.send(s.tr.Peers(), msgs) }

func (s *Service) send(peers []string, msgs [][]byte) {
	if len(msgs) == 0 {
		return
	}
	for _, p := range peers {
		for _, m := range msgs {
			if err := s.tr.Send(p, m); err != nil {
				s.log.Debug("send a lease message", zap.String("to", p), zap.Error(err))
			}
		}
	}
}

// handle processes one message and reports whether it was a grant.
func (s *Service) handle(msg []byte) bool {
	m, err := Decode(msg)
	if err != nil {
		s.log.Warn("drop a malformed lease message", zap.Error(err))
		return false
	}
	switch {
	case m.Request != nil:
		g := s.k.OnRequest(*m.Request)
		out, err := EncodeGrant(g)
		if err != nil {
			s.log.Error("encode a grant", zap.Error(err))
			return false
		}
		for _, b := range out {
			if err := s.tr.Send(g.To.Name, b); err != nil {
				s.log.Debug("send a grant", zap.String("to", g.To.Name), zap.Error(err))
			}
		}
	case m.Grant != nil:
		s.k.OnGrant(*m.Grant)
		return true
	case m.Release != nil:
		s.k.OnRelease(*m.Release)
	}
	return false
}

func (s *Service) renew() {
	lapse, err := s.k.Renew()
	if lapse != nil && s.OnLapse != nil {
		s.OnLapse(*lapse)
	}
	if err != nil {
		s.log.Error("renew the kernel lease; this director accepts no new flow once it runs out", zap.Error(err))
	}
}

// KernelFunc adapts a function to Kernel.
type KernelFunc func(deadline time.Time) error

// LeaseUntil implements Kernel.
func (f KernelFunc) LeaseUntil(deadline time.Time) error { return f(deadline) }
