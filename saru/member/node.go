package member

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// Member is one director as the local node sees it.
type Member struct {
	Name    string `json:"name"`
	Addr    string `json:"addr,omitempty"`
	Weight  uint32 `json:"weight"`
	State   State  `json:"state"`
	Version string `json:"version,omitempty"`
	// FingerprintOK is false when the director's settings differ from ours
	// (or its metadata is unreadable); such a director must own nothing.
	FingerprintOK bool `json:"fingerprint_ok"`
	// Mismatch says which settings differ when FingerprintOK is false.
	Mismatch string `json:"mismatch,omitempty"`
	// TimingMismatch says which timing settings differ from ours (see
	// Timing); the member is not excluded for it.
	TimingMismatch string `json:"timing_mismatch,omitempty"`
	// Local is true for this node.
	Local bool `json:"local,omitempty"`
	// Run identifies the member's saru process (see Meta.Run).
	Run uint64 `json:"run,omitempty"`
	// Unfit says why the member failed its fitness checks; empty when fit.
	// An unfit member owns no bucket.
	Unfit string `json:"unfit,omitempty"`
	// LinkDown: the member is unfit because a tracked interface is down
	// (see Unfit.LinkDown).
	LinkDown bool `json:"link_down,omitempty"`
	Progress
}

// Config configures a Node.
type Config struct {
	Name          string
	BindAddr      string
	BindPort      int
	AdvertiseAddr string
	AdvertisePort int
	// Seeds are host:port addresses joined at start and rejoined every
	// RejoinInterval, so two halves of a healed partition merge again.
	Seeds          []string
	RejoinInterval time.Duration
	// KeyFile holds gossip keys (see package doc); no encryption if empty.
	KeyFile  string
	Weight   uint32
	Settings Settings
	Version  string
	Logger   *zap.Logger
	// FailureDetection is the time in which the survivors should declare
	// a dead director dead; DefaultFailureDetection if zero. It scales the
	// probe and suspicion timings of Tune: shorter detects faster and
	// declares more live directors dead when they stall (see the package
	// doc).
	FailureDetection time.Duration
	// Tune, if set, adjusts the memberlist configuration after Tune's
	// defaults are applied; tests use it, production should not need to.
	Tune func(*memberlist.Config)
}

// DefaultFailureDetection is the failure detection time Tune aims at.
const DefaultFailureDetection = time.Second

// DefaultRejoinInterval is how often seeds are rejoined.
const DefaultRejoinInterval = 10 * time.Second

// aloneRejoinInterval is how often seeds are rejoined while this node sees
// no other member: a restarted director is not ready until it has heard of
// the others, so a first join that failed must not cost a whole interval.
const aloneRejoinInterval = time.Second

// Probe and suspicion timings at DefaultFailureDetection.
const (
	probeInterval = 200 * time.Millisecond
	probeTimeout  = 100 * time.Millisecond
	suspicionMult = 2
)

func scaleTo(d, base time.Duration) time.Duration {
	return time.Duration(int64(base) * int64(d) / int64(DefaultFailureDetection))
}

// SilentDeadAfter is a lower bound on the time a fleet tuned with
// TuneFor(d) takes to declare dead a director that stopped answering: a
// failed probe (at least ProbeTimeout) and then the suspicion timeout, at
// its minimum SuspicionMult probe intervals (memberlist waits no longer for
// confirmations when SuspicionMult is 2). A director that may have been
// silent for longer must assume its buckets were taken over.
func SilentDeadAfter(d time.Duration) time.Duration {
	return scaleTo(d, probeTimeout+suspicionMult*probeInterval)
}

// Tune applies the failure-detection settings documented in the package
// doc to c.
func Tune(c *memberlist.Config) { TuneFor(c, DefaultFailureDetection) }

// TuneFor is Tune with the probe, suspicion and gossip timings scaled so
// that detection takes about d instead of DefaultFailureDetection.
func TuneFor(c *memberlist.Config, d time.Duration) {
	c.ProbeInterval = scaleTo(d, probeInterval)
	c.ProbeTimeout = scaleTo(d, probeTimeout)
	c.SuspicionMult = suspicionMult
	c.SuspicionMaxTimeoutMult = 2
	c.GossipInterval = scaleTo(d, 50*time.Millisecond)
	c.GossipNodes = 3
	c.GossipToTheDeadTime = 2 * time.Second
	c.PushPullInterval = 15 * time.Second
	c.TCPTimeout = 2 * time.Second
	c.IndirectChecks = 2
	c.RetransmitMult = 3
	// Every datagram saru sends fits a packet uncompressed (the lease
	// messages are sized for it), and LZW allocates tables per message:
	// with it on, compression and the garbage it left were a third of an
	// idle director's CPU at 32 directors.
	c.EnableCompression = false
}

// Node is this director's membership in the fleet.
type Node struct {
	cfg      Config
	log      *zap.Logger
	ml       *memberlist.Memberlist
	keyring  *memberlist.Keyring
	changes  chan struct{}
	addr     string
	mu       sync.Mutex
	progress Progress
	unfit    Unfit // why this director is unfit; zero when fit
	run      uint64
	state    State
	warned   map[string]uint64 // member -> fingerprint already reported
	// warnedTiming: member -> timing already reported
	warnedTiming map[string]Timing
	// view is our own copy of the other members, kept by the event
	// delegate: memberlist.Members returns pointers into records its
	// packet handlers rewrite without a lock we could take.
	view map[string]seen
	// handler receives the user messages other directors send (saru's
	// lease messages); nil drops them.
	handler  atomic.Pointer[func([]byte)]
	stopOnce sync.Once
	stop     chan struct{}
	// progressKick asks broadcastProgress for a broadcast (coalesced).
	progressKick chan struct{}
	done         chan struct{}
}

// New creates the memberlist (binding its sockets) with this node in state
// joining. Call Start to join the seeds.
func New(cfg Config) (*Node, error) {
	if cfg.Name == "" {
		return nil, errors.New("member: empty node name")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = DefaultRejoinInterval
	}
	n := &Node{
		cfg: cfg, log: cfg.Logger.With(zap.String("component", "member")),
		changes: make(chan struct{}, 1),
		state:   StateJoining, warned: map[string]uint64{}, warnedTiming: map[string]Timing{}, view: map[string]seen{}, run: rand.Uint64(),
		stop: make(chan struct{}), done: make(chan struct{}), progressKick: make(chan struct{}, 1),
	}
	if _, err := Encode(cfg.Version, cfg.Weight, StateDraining, ^uint64(0), Progress{^uint64(0), ^uint64(0)}, Unfit{Reason: strings.Repeat("x", MaxUnfitReason), LinkDown: true}, cfg.Settings, memberlist.MetaMaxSize); err != nil {
		return nil, err
	}
	mc := memberlist.DefaultLANConfig()
	if cfg.FailureDetection <= 0 {
		cfg.FailureDetection = DefaultFailureDetection
	}
	TuneFor(mc, cfg.FailureDetection)
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	mc.Delegate = (*delegate)(n)
	mc.Events = (*events)(n)
	// memberlist logs through the standard logger; route it to zap.
	mc.Logger = log.New(zapWriter{n.log}, "", 0)
	mc.LogOutput = nil
	if cfg.KeyFile != "" {
		keys, err := ReadKeyFile(cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		kr, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return nil, fmt.Errorf("member: keyring from %s: %w", cfg.KeyFile, err)
		}
		n.keyring = kr
		mc.Keyring = kr
	}
	if cfg.Tune != nil {
		cfg.Tune(mc)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("member: start memberlist on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	n.ml = ml
	// LocalNode returns memberlist's own record, which UpdateNode rewrites
	// without a lock we can take: copy the address once.
	n.addr = ml.LocalNode().Address()
	return n, nil
}

// Start joins the seeds in the background (failure is logged, not fatal:
// the first director of a fleet has nobody to join) and keeps rejoining them
// until ctx ends or the node shuts down.
func (n *Node) Start(ctx context.Context) {
	// Joining happens in the background: a seed that is down costs a TCP
	// timeout, and a director booting while its peers are down must still
	// install its rules and serve its status at once.
	go n.broadcastProgress(ctx)
	go func() {
		defer close(n.done)
		n.Rejoin()
		t := time.NewTimer(n.rejoinInterval())
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-n.stop:
				return
			case <-t.C:
				n.Rejoin()
				t.Reset(n.rejoinInterval())
			}
		}
	}()
}

func (n *Node) rejoinInterval() time.Duration {
	if n.ml.NumMembers() < 2 {
		return min(aloneRejoinInterval, n.cfg.RejoinInterval)
	}
	return n.cfg.RejoinInterval
}

// Rejoin exchanges the full state with the seeds now (memberlist push/pull),
// as Start does periodically. After this node has stalled, that is how it
// learns at once that the fleet declared it dead, and refutes it.
func (n *Node) Rejoin() {
	self := n.addr
	var seeds []string
	for _, s := range n.cfg.Seeds {
		if s != self {
			seeds = append(seeds, s)
		}
	}
	if len(seeds) == 0 {
		return
	}
	k, err := n.ml.Join(seeds)
	if err != nil {
		n.log.Debug("join seeds", zap.Strings("seeds", seeds), zap.Int("reached", k), zap.Error(err))
	}
}

// Name is the local node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Changes is signalled (coalesced) whenever a member joins, leaves, dies or
// changes its metadata, including the local node.
func (n *Node) Changes() <-chan struct{} { return n.changes }

func (n *Node) notify() {
	select {
	case n.changes <- struct{}{}:
	default:
	}
}

// State is the local node's state.
func (n *Node) State() State {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// SetState changes the local state and gossips it. It returns once the
// update is broadcast or after a second; a timeout is not an error because
// the periodic push/pull delivers the metadata anyway.
func (n *Node) SetState(s State) error {
	if !s.valid() {
		return fmt.Errorf("member: invalid state %q", s)
	}
	n.mu.Lock()
	changed := n.state != s
	n.state = s
	n.mu.Unlock()
	if !changed {
		return nil
	}
	n.log.Info("state", zap.String("state", string(s)))
	n.gossip("gossip state change", zap.String("state", string(s)))
	return nil
}

// gossip broadcasts the local metadata after a change, waiting at most a
// second, and tells the local watchers.
func (n *Node) gossip(what string, fields ...zap.Field) {
	if err := n.ml.UpdateNode(time.Second); err != nil {
		n.log.Warn(what, append(fields, zap.Error(err))...)
	}
	n.notify()
}

// SetUnfit marks this director unfit, or fit again with the zero Unfit,
// and gossips it: the allocation leaves an unfit director out.
func (n *Node) SetUnfit(u Unfit) {
	u.Reason = truncate(u.Reason, MaxUnfitReason)
	if u.Reason == "" {
		u = Unfit{}
	}
	n.mu.Lock()
	changed := n.unfit != u
	n.unfit = u
	n.mu.Unlock()
	if changed {
		n.gossip("gossip fitness", zap.String("unfit", u.Reason), zap.Bool("link_down", u.LinkDown))
	}
}

// SetServices changes the fingerprint of the declared services in this
// node's settings (after a reload) and gossips it: directors whose
// services differ exclude each other from the allocation until they agree
// again.
func (n *Node) SetServices(fp uint64) {
	n.mu.Lock()
	changed := n.cfg.Settings.Services != fp
	n.cfg.Settings.Services = fp
	n.mu.Unlock()
	if changed {
		n.gossip("gossip the services fingerprint", zap.String("services", fmt.Sprintf("%016x", fp)))
	}
}

// SetProgress records how far this node has followed the allocation and
// gossips it in the background. Unlike SetState it does not wait for the
// broadcast: the controller calls it on every step, and a broadcast can
// take up to its second in a large or busy fleet, during which the
// controller would not install the buckets its grants have just allowed
// (that was most of a takeover's time at 32 directors).
func (n *Node) SetProgress(p Progress) error {
	n.mu.Lock()
	changed := n.progress != p
	n.progress = p
	n.mu.Unlock()
	if !changed {
		return nil
	}
	select {
	case n.progressKick <- struct{}{}:
	default: // a broadcast is pending; it will carry the latest progress
	}
	n.notify()
	return nil
}

// broadcastProgress gossips the metadata whenever SetProgress changed it,
// coalescing changes made while a broadcast was under way (the metadata is
// read when it is sent, so the latest progress goes out).
func (n *Node) broadcastProgress(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.stop:
			return
		case <-n.progressKick:
			if err := n.ml.UpdateNode(time.Second); err != nil {
				n.mu.Lock()
				p := n.progress
				n.mu.Unlock()
				n.log.Warn("gossip handover progress", zap.String("applied", fmt.Sprintf("%016x", p.Applied)),
					zap.String("settled", fmt.Sprintf("%016x", p.Settled)), zap.Error(err))
			}
		}
	}
}

// Members returns the alive (and suspected) directors, sorted by name,
// this node included. Dead and departed directors are not listed.
func (n *Node) Members() []Member {
	n.mu.Lock()
	out := make([]Member, 0, len(n.view)+1)
	out = append(out, Member{Name: n.cfg.Name, Addr: n.addr, Weight: n.cfg.Weight, State: n.state,
		Version: n.cfg.Version, FingerprintOK: true, Local: true, Run: n.run, Progress: n.progress, Unfit: n.unfit.Reason, LinkDown: n.unfit.LinkDown})
	for name, sn := range n.view {
		if name == n.cfg.Name {
			continue
		}
		m := Member{Name: name, Addr: sn.addr}
		meta, err := Decode(sn.meta)
		if err != nil {
			m.Mismatch = fmt.Sprintf("member %s has unreadable metadata: %v", name, err)
		} else {
			m.Weight, m.State, m.Version, m.Run, m.Progress = meta.Weight, meta.State, meta.Version, meta.Run, meta.Progress
			m.Unfit, m.LinkDown = meta.Unfit.Reason, meta.Unfit.LinkDown
			if d := Diff(n.cfg.Settings, meta); len(d) == 0 {
				m.FingerprintOK = true
			} else {
				m.Mismatch = differs(name, d)
			}
			if d := TimingDiff(n.cfg.Settings.Timing, meta.Settings.Timing); len(d) > 0 {
				m.TimingMismatch = differs(name, d)
			}
		}
		out = append(out, m)
	}
	n.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// seen is a copy of what memberlist told us about a member.
type seen struct {
	addr string
	meta []byte
}

func (n *Node) remember(nd *memberlist.Node) {
	sn := seen{addr: net.JoinHostPort(nd.Addr.String(), strconv.Itoa(int(nd.Port))), meta: slices.Clone(nd.Meta)}
	n.mu.Lock()
	n.view[nd.Name] = sn
	n.mu.Unlock()
}

// differs is the sentence naming the settings d in which member name
// differs from us.
func differs(name string, d []string) string {
	return fmt.Sprintf("member %s has %s", name, strings.Join(d, "; "))
}

// Mismatches returns one sentence per director whose settings differ from
// ours.
func (n *Node) Mismatches() []string {
	var out []string
	for _, m := range n.Members() {
		if !m.FingerprintOK {
			out = append(out, m.Mismatch)
		}
	}
	return out
}

// Leave tells the others we are going (so they reallocate at once instead
// of after failure detection) and shuts the node down.
func (n *Node) Leave(timeout time.Duration) error {
	err := n.ml.Leave(timeout)
	if serr := n.Shutdown(); err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("member: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossip without telling anyone: the others will detect us
// as failed.
func (n *Node) Shutdown() error {
	n.stopOnce.Do(func() { close(n.stop) })
	if err := n.ml.Shutdown(); err != nil {
		return fmt.Errorf("member: shutdown: %w", err)
	}
	return nil
}

// LocalAddr is the address others reach this node on.
func (n *Node) LocalAddr() string { return n.addr }

// ErrNoKeyring is returned by key operations when gossip is not encrypted.
var ErrNoKeyring = errors.New("member: gossip encryption is not configured (no key file)")

// InstallKey adds a key accepted for receiving.
func (n *Node) InstallKey(key []byte) error {
	if n.keyring == nil {
		return ErrNoKeyring
	}
	return n.keyring.AddKey(key)
}

// UseKey makes an installed key the one used for sending.
func (n *Node) UseKey(key []byte) error {
	if n.keyring == nil {
		return ErrNoKeyring
	}
	return n.keyring.UseKey(key)
}

// RemoveKey drops a key that is not the primary.
func (n *Node) RemoveKey(key []byte) error {
	if n.keyring == nil {
		return ErrNoKeyring
	}
	return n.keyring.RemoveKey(key)
}

// ReloadKeys rereads the key file: installs new keys, makes the first one
// primary and removes keys no longer listed.
func (n *Node) ReloadKeys() error {
	if n.keyring == nil {
		return ErrNoKeyring
	}
	keys, err := ReadKeyFile(n.cfg.KeyFile)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := n.keyring.AddKey(k); err != nil {
			return fmt.Errorf("member: install key: %w", err)
		}
	}
	if err := n.keyring.UseKey(keys[0]); err != nil {
		return fmt.Errorf("member: use key: %w", err)
	}
	for _, old := range n.keyring.GetKeys() {
		if !slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, old) }) {
			if err := n.keyring.RemoveKey(old); err != nil {
				return fmt.Errorf("member: remove key: %w", err)
			}
		}
	}
	return nil
}

// ReadKeyFile reads gossip keys: one per line, base64 or hex, 16, 24 or 32
// bytes; blank lines and lines starting with # are ignored.
func ReadKeyFile(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("member: key file: %w", err)
	}
	defer f.Close()
	return ParseKeys(f, path)
}

// ParseKeys parses key file content; name is used in errors.
func ParseKeys(r io.Reader, name string) ([][]byte, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("member: key file %s: %w", name, err)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := hex.DecodeString(line)
		if err != nil || !validKeyLen(len(k)) {
			k, err = base64.StdEncoding.DecodeString(line)
		}
		if err != nil || !validKeyLen(len(k)) {
			return nil, fmt.Errorf("member: key file %s line %d: want a 16, 24 or 32 byte key in base64 or hex", name, i+1)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("member: key file %s holds no key", name)
	}
	return keys, nil
}

func validKeyLen(n int) bool { return n == 16 || n == 24 || n == 32 }

// Run identifies this saru process among the fleet's (see Meta.Run).
func (n *Node) Run() uint64 { return n.run }

// SetMessageHandler makes h receive every user message another director
// sends with Send. memberlist calls it from its receive path: h must not
// block, and must copy the bytes it keeps.
func (n *Node) SetMessageHandler(h func([]byte)) { n.handler.Store(&h) }

// Peers returns the names of the other directors memberlist sees alive (or
// suspected), whatever their state.
func (n *Node) Peers() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.view))
	for name := range n.view {
		if name != n.cfg.Name {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Send sends msg to director to as a memberlist user message: one UDP
// datagram, encrypted and authenticated with the gossip key like the
// gossip itself. Best effort: nothing tells whether it arrived.
func (n *Node) Send(to string, msg []byte) error {
	n.mu.Lock()
	sn, ok := n.view[to]
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("member: send to %s: not a member", to)
	}
	if err := n.ml.SendToAddress(memberlist.Address{Addr: sn.addr, Name: to}, msg); err != nil {
		return fmt.Errorf("member: send to %s: %w", to, err)
	}
	return nil
}

// delegate is the memberlist.Delegate of a Node: metadata, and user
// messages passed to the handler; saru keeps no state of its own to
// push/pull.
type delegate Node

func (d *delegate) NodeMeta(limit int) []byte {
	n := (*Node)(d)
	n.mu.Lock()
	st, pr, set, unfit := n.state, n.progress, n.cfg.Settings, n.unfit
	n.mu.Unlock()
	buf, err := Encode(n.cfg.Version, n.cfg.Weight, st, n.run, pr, unfit, set, limit)
	if err != nil {
		// New checked that the largest metadata fits.
		n.log.Error("encode metadata", zap.Error(err))
		return nil
	}
	return buf
}
func (d *delegate) NotifyMsg(b []byte) {
	if h := (*Node)(d).handler.Load(); h != nil {
		(*h)(b)
	}
}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// events is the memberlist.EventDelegate of a Node. memberlist calls it
// with its own locks held (so the node record is stable while we copy it)
// and it must not call back into memberlist: it only copies, logs and
// signals.
type events Node

func (e *events) check(nd *memberlist.Node) {
	n := (*Node)(e)
	meta, err := Decode(nd.Meta)
	if err != nil {
		n.log.Warn("unreadable member metadata; member excluded", zap.String("member", nd.Name), zap.Error(err))
		return
	}
	n.mu.Lock()
	d := Diff(n.cfg.Settings, meta)
	seen, ok := n.warned[nd.Name]
	if len(d) == 0 {
		delete(n.warned, nd.Name)
	} else {
		n.warned[nd.Name] = meta.Fingerprint
	}
	td := TimingDiff(n.cfg.Settings.Timing, meta.Settings.Timing)
	seenT, okT := n.warnedTiming[nd.Name]
	if len(td) == 0 {
		delete(n.warnedTiming, nd.Name)
	} else {
		n.warnedTiming[nd.Name] = meta.Settings.Timing
	}
	n.mu.Unlock()
	if len(d) > 0 && (!ok || seen != meta.Fingerprint) {
		n.log.Error("member settings differ; member excluded from allocation",
			zap.String("member", nd.Name),
			zap.String("mismatch", differs(nd.Name, d)))
	}
	if len(td) > 0 && (!okT || seenT != meta.Settings.Timing) {
		n.log.Error("member timing settings differ: two directors may accept the same bucket; set failure_detection, liveness_lease and quorum alike on every director",
			zap.String("member", nd.Name),
			zap.String("mismatch", differs(nd.Name, td)))
	}
}

func (e *events) NotifyJoin(nd *memberlist.Node) {
	(*Node)(e).remember(nd)
	e.check(nd)
	(*Node)(e).log.Info("member joined", zap.String("member", nd.Name), zap.String("addr", nd.Address()))
	(*Node)(e).notify()
}

func (e *events) NotifyLeave(nd *memberlist.Node) {
	n := (*Node)(e)
	n.mu.Lock()
	delete(n.warned, nd.Name)
	delete(n.warnedTiming, nd.Name)
	delete(n.view, nd.Name)
	n.mu.Unlock()
	n.log.Info("member left or failed", zap.String("member", nd.Name))
	n.notify()
}

func (e *events) NotifyUpdate(nd *memberlist.Node) {
	(*Node)(e).remember(nd)
	e.check(nd)
	(*Node)(e).notify()
}

// zapWriter turns memberlist's log lines into zap entries.
type zapWriter struct{ l *zap.Logger }

func (w zapWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(msg, "[ERR]"):
		w.l.Error(msg)
	case strings.Contains(msg, "[WARN]"):
		w.l.Warn(msg)
	default:
		w.l.Debug(msg)
	}
	return len(p), nil
}
