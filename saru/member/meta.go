package member

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// State is a director's place in its life cycle. Only ready directors own
// buckets.
type State string

// The states a director goes through, in order.
const (
	StateJoining  State = "joining"
	StateReady    State = "ready"
	StateDraining State = "draining"
)

func (s State) valid() bool {
	return s == StateJoining || s == StateReady || s == StateDraining
}

// Settings are what every director of a fleet must agree on: directors
// that hash flows differently, split a different number of buckets, or
// divide them with a different allocation algorithm, would each accept
// flows the others also accept, or none would.
type Settings struct {
	// Allocator is the allocation algorithm's version (allocate.Version).
	// 0 in a remote director's settings means it predates the field.
	Allocator uint32
	Buckets   uint32
	Seed      uint32
	Sense     string
	VIPs      []netip.Addr
	// Services is the fingerprint of the declared IPVS services (0: none
	// declared). Directors whose services differ would apply different
	// weight tables to the same flows.
	Services uint64
	// Timing is compared, not fingerprinted (see TimingDiff).
	Timing Timing
}

// Timing are the settings the exclusivity rule (package saru/lease)
// assumes every director shares: a grantor holds a grant for its own
// lease, a holder relies on the grant for its own, and a holder with a
// smaller quorum than the others counts fewer grants than they do. Zero
// fields are unknown (a saru that predates them).
//
// A difference is reported, not answered by excluding the director from
// the allocation: the allocation does not decide who may accept a bucket,
// the grants do, and a director excluded from the others' maps still asks
// for grants and gives them. Nor does a difference change the fingerprint,
// which would split a fleet whose directors run different saru releases.
// Only the operator can make the settings agree.
type Timing struct {
	FailureDetection time.Duration
	// Lease is the liveness lease; LeaseOff when it is off.
	Lease  time.Duration
	Quorum int
}

// LeaseOff is Timing.Lease of a director whose liveness lease is off.
const LeaseOff time.Duration = -1

// TimingDiff names every timing setting in which theirs differs from ours,
// e.g. "quorum=1, we have 2"; none when they agree or theirs are unknown.
func TimingDiff(ours, theirs Timing) []string {
	var d []string
	if theirs.FailureDetection != 0 && theirs.FailureDetection != ours.FailureDetection {
		d = append(d, fmt.Sprintf("failure_detection=%v, we have %v", theirs.FailureDetection, ours.FailureDetection))
	}
	lease := func(l time.Duration) string {
		if l == LeaseOff {
			return "off"
		}
		return l.String()
	}
	if theirs.Lease != 0 && theirs.Lease != ours.Lease {
		d = append(d, fmt.Sprintf("liveness_lease=%s, we have %s", lease(theirs.Lease), lease(ours.Lease)))
	}
	if theirs.Quorum != 0 && theirs.Quorum != ours.Quorum {
		d = append(d, fmt.Sprintf("quorum=%d, we have %d", theirs.Quorum, ours.Quorum))
	}
	return d
}

func (s Settings) vipList() []string {
	vs := make([]netip.Addr, 0, len(s.VIPs))
	for _, v := range s.VIPs {
		vs = append(vs, v.Unmap())
	}
	slices.SortFunc(vs, netip.Addr.Compare)
	vs = slices.Compact(vs)
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.String()
	}
	return out
}

func vipHash(vips []string) uint64 {
	h := fnv.New64a()
	for _, v := range vips {
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// Fingerprint is a hash of s that is independent of VIP order and
// spelling, so equal settings give equal fingerprints on every director.
func (s Settings) Fingerprint() uint64 {
	h := fnv.New64a()
	var b [20]byte
	binary.BigEndian.PutUint32(b[0:], s.Buckets)
	binary.BigEndian.PutUint32(b[4:], s.Seed)
	binary.BigEndian.PutUint64(b[8:], vipHash(s.vipList()))
	binary.BigEndian.PutUint32(b[16:], s.Allocator)
	h.Write(b[:])
	h.Write([]byte(strings.ToLower(s.Sense)))
	// Only when set, so that fleets without services keep the
	// fingerprints of earlier releases (a rolling upgrade stays whole).
	if s.Services != 0 {
		binary.BigEndian.PutUint64(b[:8], s.Services)
		h.Write([]byte("services"))
		h.Write(b[:8])
	}
	return h.Sum64()
}

// Meta is what a director advertises in its memberlist node metadata.
type Meta struct {
	Version string
	Weight  uint32
	State   State
	// Settings as the remote director has them. VIPs may be nil when the
	// list did not fit the metadata limit; VIPHash still tells them apart.
	Settings    Settings
	VIPHash     uint64
	Fingerprint uint64
	// Run identifies the director's current saru process: random, drawn
	// at start. An allocation that comes back (a director leaves and
	// returns) is then told apart from its earlier self.
	Run uint64
	// Unfit says why the director failed its fitness checks (zero while
	// fit): it owns no bucket while so.
	Unfit Unfit
	Progress
}

// Progress is how far a director has followed the allocation: both are
// allocation fingerprints (0 before the first). The planned handover of a
// bucket waits on them instead of on timing alone.
type Progress struct {
	// Applied is the allocation whose rules the director last applied. A
	// director taking a bucket over waits until the giver's Applied names
	// the allocation that moves it: the giver has stopped taking new flows
	// of it by then.
	Applied uint64 `json:"applied,omitempty"`
	// Settled is the allocation the director has completed: it holds
	// every bucket it takes in that allocation outright, none half-taken.
	// The giver keeps accepting the established flows of a bucket until
	// the taker's Settled names the allocation that moves it.
	Settled uint64 `json:"settled,omitempty"`
}

// wire is the JSON form of Meta. Short keys because memberlist caps the
// metadata at 512 bytes and the VIP list should fit as often as possible.
type wire struct {
	V  string `json:"v"`
	W  uint32 `json:"w"`
	St State  `json:"st"`
	FP string `json:"fp"`
	Al uint32 `json:"al,omitempty"`
	B  uint32 `json:"b"`
	Sd uint32 `json:"sd"`
	Sn string `json:"sn"`
	VH string `json:"vh"`
	Ap string `json:"ap,omitempty"`
	Se string `json:"se,omitempty"`
	Rn string `json:"rn,omitempty"`
	Sv string `json:"sv,omitempty"`
	Uf string `json:"uf,omitempty"`
	LD bool   `json:"ld,omitempty"`
	// Timing in milliseconds (lease -1: off).
	FD   int64    `json:"fd,omitempty"`
	LL   int64    `json:"ll,omitempty"`
	Q    int      `json:"q,omitempty"`
	VIPs []string `json:"vips,omitempty"`
}

// maxTimingMs bounds the timing settings in metadata: a day, far beyond
// any that saru accepts, and far from overflowing a time.Duration.
const maxTimingMs = 24 * 3600 * 1000

// Unfit is why a director failed its fitness checks; the zero value is
// fit.
type Unfit struct {
	Reason string
	// LinkDown: a tracked interface is down, so the director can neither
	// receive the flows of its buckets nor forward them. The others then
	// take its buckets as from a failed director, without waiting for it
	// to hand their established flows over.
	LinkDown bool
}

// MaxUnfitReason bounds the unfit reason in the metadata (memberlist
// caps the whole at 512 bytes).
const MaxUnfitReason = 120

// Encode returns the metadata of the saru run run of a director with
// settings s, handover progress pr and fitness unfit (zero when fit),
// at most limit bytes. The VIP list is left out when it does not fit; its
// hash stays.
func Encode(version string, weight uint32, st State, run uint64, pr Progress, unfit Unfit, s Settings, limit int) ([]byte, error) {
	vips := s.vipList()
	w := wire{
		V: version, W: weight, St: st, Rn: fmt.Sprintf("%016x", run),
		Ap: fmt.Sprintf("%016x", pr.Applied), Se: fmt.Sprintf("%016x", pr.Settled),
		FP: fmt.Sprintf("%016x", s.Fingerprint()),
		Al: s.Allocator, B: s.Buckets, Sd: s.Seed, Sn: strings.ToLower(s.Sense),
		VH: fmt.Sprintf("%016x", vipHash(vips)), VIPs: vips,
		FD: s.Timing.FailureDetection.Milliseconds(), LL: s.Timing.Lease.Milliseconds(), Q: s.Timing.Quorum,
	}
	if s.Timing.Lease < 0 {
		w.LL = -1 // off
	}
	if s.Services != 0 {
		w.Sv = fmt.Sprintf("%016x", s.Services)
	}
	if unfit.Reason != "" {
		w.Uf = truncate(unfit.Reason, MaxUnfitReason)
		w.LD = unfit.LinkDown
	}
	buf, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("member: encode metadata: %w", err)
	}
	if len(buf) > limit {
		w.VIPs = nil
		if buf, err = json.Marshal(w); err != nil {
			return nil, fmt.Errorf("member: encode metadata: %w", err)
		}
	}
	if len(buf) > limit {
		return nil, fmt.Errorf("member: metadata is %d bytes, limit %d: shorten the version string", len(buf), limit)
	}
	return buf, nil
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Decode parses metadata written by Encode.
func Decode(buf []byte) (Meta, error) {
	var w wire
	if err := json.Unmarshal(buf, &w); err != nil {
		return Meta{}, fmt.Errorf("member: decode metadata: %w", err)
	}
	if !w.St.valid() {
		return Meta{}, fmt.Errorf("member: decode metadata: unknown state %q", w.St)
	}
	if w.FD < 0 || w.LL < -1 || w.Q < 0 || w.FD > maxTimingMs || w.LL > maxTimingMs {
		return Meta{}, fmt.Errorf("member: decode metadata: timing fd=%d ll=%d q=%d out of range", w.FD, w.LL, w.Q)
	}
	timing := Timing{FailureDetection: time.Duration(w.FD) * time.Millisecond, Lease: time.Duration(w.LL) * time.Millisecond, Quorum: w.Q}
	if w.LL == -1 {
		timing.Lease = LeaseOff
	}
	m := Meta{Version: w.V, Weight: w.W, State: w.St, Unfit: Unfit{Reason: w.Uf, LinkDown: w.LD && w.Uf != ""},
		Settings: Settings{Allocator: w.Al, Buckets: w.B, Seed: w.Sd, Sense: w.Sn, Timing: timing}}
	if _, err := fmt.Sscanf(w.FP, "%x", &m.Fingerprint); err != nil {
		return Meta{}, fmt.Errorf("member: decode metadata: fingerprint %q: %w", w.FP, err)
	}
	if _, err := fmt.Sscanf(w.VH, "%x", &m.VIPHash); err != nil {
		return Meta{}, fmt.Errorf("member: decode metadata: VIP hash %q: %w", w.VH, err)
	}
	for _, f := range []struct {
		name string
		in   string
		out  *uint64
	}{{"applied", w.Ap, &m.Applied}, {"settled", w.Se, &m.Settled}, {"run", w.Rn, &m.Run}, {"services", w.Sv, &m.Settings.Services}} {
		if f.in == "" {
			continue
		}
		if _, err := fmt.Sscanf(f.in, "%x", f.out); err != nil {
			return Meta{}, fmt.Errorf("member: decode metadata: %s %q: %w", f.name, f.in, err)
		}
	}
	for _, v := range w.VIPs {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return Meta{}, fmt.Errorf("member: decode metadata: VIP: %w", err)
		}
		m.Settings.VIPs = append(m.Settings.VIPs, a)
	}
	return m, nil
}

// Diff names every setting in which a remote director (theirs, as decoded
// from its metadata) differs from ours, e.g. "buckets=2048, we have 4096".
// It is empty when the fingerprints agree.
func Diff(ours Settings, theirs Meta) []string {
	if theirs.Fingerprint == ours.Fingerprint() {
		return nil
	}
	var d []string
	switch a := theirs.Settings.Allocator; {
	case a == ours.Allocator:
	case a == 0:
		d = append(d, fmt.Sprintf("no allocator version (an older saru), we have allocator %d: run one saru release on every director", ours.Allocator))
	default:
		d = append(d, fmt.Sprintf("allocator=%d, we have %d: run one saru release on every director", a, ours.Allocator))
	}
	if theirs.Settings.Buckets != ours.Buckets {
		d = append(d, fmt.Sprintf("buckets=%d, we have %d", theirs.Settings.Buckets, ours.Buckets))
	}
	if theirs.Settings.Seed != ours.Seed {
		d = append(d, fmt.Sprintf("seed=%d, we have %d", theirs.Settings.Seed, ours.Seed))
	}
	if !strings.EqualFold(theirs.Settings.Sense, ours.Sense) {
		d = append(d, fmt.Sprintf("sense=%s, we have %s", theirs.Settings.Sense, strings.ToLower(ours.Sense)))
	}
	if ov := ours.vipList(); theirs.VIPHash != vipHash(ov) {
		if theirs.Settings.VIPs != nil {
			d = append(d, fmt.Sprintf("vips=%s, we have %s",
				strings.Join(theirs.Settings.vipList(), ","), strings.Join(ov, ",")))
		} else {
			d = append(d, fmt.Sprintf("a different VIP list (hash %016x), we have %s", theirs.VIPHash, strings.Join(ov, ",")))
		}
	}
	if theirs.Settings.Services != ours.Services {
		d = append(d, fmt.Sprintf("a different services section (fingerprint %016x, we have %016x; the log names the service)",
			theirs.Settings.Services, ours.Services))
	}
	if len(d) == 0 {
		d = append(d, "an unknown setting (fingerprint differs; different saru version?)")
	}
	return d
}
