package lease

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Kernel is the director's kernel lease: the rules installed accept new
// flows only until the deadline last given. *filter.Filter is one (through
// the daemon's adapter).
type Kernel interface {
	// LeaseUntil makes the kernel stop accepting at deadline at the
	// latest; a deadline not after now withdraws at once. An error that
	// matches ErrWithdrawn says the kernel now accepts nothing (the write
	// could not be trusted and was undone); any other leaves the previous
	// lease or the new one in force.
	LeaseUntil(deadline time.Time) error
}

// ErrWithdrawn marks a Kernel error after which the kernel lease is known
// to be withdrawn: safe, and as good as any cut.
var ErrWithdrawn = errors.New("lease: kernel lease withdrawn")

// Keeper ties a director's Ledger and Grantor to its kernel so that the
// kernel never accepts a bucket longer than the ledger holds it valid:
//
//   - the kernel lease never runs past the least validity of the buckets
//     the kernel accepts (Renew);
//   - a bucket enters the kernel only if valid, and only after the kernel
//     lease has been cut to its validity if that is shorter (Install);
//   - a bucket is released to the grantors only after the kernel stopped
//     accepting it (Install returns the Release to send).
//
// Its methods are safe for concurrent use; they serialise on one lock, so
// a renewal never races an install.
type Keeper struct {
	install sync.Mutex // one Install at a time
	mu      sync.Mutex
	now     func() time.Time
	ledger  *Ledger
	grantor *Grantor
	kernel  Kernel

	want      []uint32 // sorted
	installed []uint32 // the buckets whose new flows the kernel may accept
	// deadline is the kernel lease's end as last written; until the first
	// write it is unknown, taken as never.
	deadline time.Time
	changes  chan struct{}
}

// NewKeeper returns a keeper for holder me (its Name is also this
// director's name as a grantor) with nothing installed.
func NewKeeper(me Holder, p Params, buckets uint32, kernel Kernel, now func() time.Time) (*Keeper, error) {
	p = p.WithDefaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if me.Name == "" {
		return nil, errors.New("lease: empty holder name")
	}
	t := now()
	return &Keeper{now: now, ledger: NewLedger(me, p, buckets), grantor: NewGrantor(me.Name, p, buckets, t),
		kernel: kernel, deadline: t.AddDate(100, 0, 0), changes: make(chan struct{}, 1)}, nil
}

// Changes signals when a bucket became valid or is about to stop being
// valid: the controller should look again.
func (k *Keeper) Changes() <-chan struct{} { return k.changes }

func (k *Keeper) kick() {
	select {
	case k.changes <- struct{}{}:
	default:
	}
}

// Params returns the settings in force.
func (k *Keeper) Params() Params { return k.ledger.Params() }

// Want sets the buckets to ask grants for from the next round on. It
// reports whether it adds a bucket not wanted before.
func (k *Keeper) Want(buckets []uint32) bool {
	want := slices.Clone(buckets)
	slices.Sort(want)
	k.mu.Lock()
	defer k.mu.Unlock()
	added := false
	for _, b := range want {
		if _, ok := slices.BinarySearch(k.want, b); !ok {
			added = true
			break
		}
	}
	k.want = want
	return added
}

// Round starts a renewal round: it returns the request to send to the
// other directors and grants it locally at once. fresh reports whether,
// before this round, every wanted bucket was valid until at least by,
// which tells the service whether recent rounds came back from a quorum.
func (k *Keeper) Round(by time.Duration) (r Request, fresh bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	fresh = !k.ledger.Deadline(now, k.want).Before(now.Add(by))
	r = k.ledger.Request(now, k.want)
	k.grantedLocked(k.grantor.Request(now, r))
	return r, fresh
}

// OnRequest handles another director's request and returns the grant to
// send back.
func (k *Keeper) OnRequest(r Request) Grant {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.grantor.Request(k.now(), r)
}

// OnGrant handles a grant for this director.
func (k *Keeper) OnGrant(g Grant) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.grantedLocked(g)
}

func (k *Keeper) grantedLocked(g Grant) {
	if len(g.Buckets) == 0 || !k.ledger.Granted(g) {
		return
	}
	// A valid bucket the kernel does not accept yet may be installed
	// now: wake the controller. (Whether it was valid before does not
	// tell: a validity that ran out still reads as a time, and a bucket
	// dropped from the rules for it must come back on its next grant.)
	now := k.now()
	for _, b := range g.Buckets {
		if _, in := slices.BinarySearch(k.installed, b); !in && k.ledger.ValidUntil(b).After(now) {
			k.kick()
			return
		}
	}
}

// OnRelease handles another director's release.
func (k *Keeper) OnRelease(r Release) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.grantor.Release(k.now(), r)
}

// ValidUntil returns until when this director may accept new flows of b.
func (k *Keeper) ValidUntil(b uint32) time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ledger.ValidUntil(b)
}

// ErrNotValid is returned by Install for a bucket this director holds no
// valid grant for.
var ErrNotValid = errors.New("lease: bucket not granted by a quorum")

// Install makes the kernel accept new flows of accepting instead of the
// buckets installed before, through apply, which must change the kernel's
// rules in one transaction and return only once they are in force. It
// returns the release of the buckets the kernel no longer accepts and that
// are no longer wanted, for the caller to send to every other director (it
// has been applied to the local grantor already).
func (k *Keeper) Install(accepting []uint32, apply func() error) (Release, error) {
	k.install.Lock()
	defer k.install.Unlock()
	accepting = slices.Clone(accepting)
	slices.Sort(accepting)
	old, err := k.prepare(accepting)
	if err != nil {
		return Release{}, err
	}
	// The lock is not held while apply runs, so that a slow rules
	// transaction never delays a renewal; until apply has answered the
	// kernel may hold either set, and renewals count both.
	if err := apply(); err != nil {
		return Release{}, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.installed = accepting
	var gone []uint32
	for _, b := range old {
		_, still := slices.BinarySearch(accepting, b)
		if _, wanted := slices.BinarySearch(k.want, b); !still && !wanted {
			gone = append(gone, b)
		}
	}
	if len(gone) == 0 {
		return Release{}, nil
	}
	rel := k.ledger.Release(gone)
	k.grantor.Release(k.now(), rel)
	return rel, nil
}

// prepare checks that every bucket to add is valid, cuts the kernel lease
// to the new buckets' validity if that is shorter, and counts both sets as
// installed. It returns the set installed before.
func (k *Keeper) prepare(accepting []uint32) ([]uint32, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	var added []uint32
	for _, b := range accepting {
		if _, ok := slices.BinarySearch(k.installed, b); !ok {
			if !k.ledger.ValidUntil(b).After(now) {
				return nil, fmt.Errorf("%w: bucket %d", ErrNotValid, b)
			}
			added = append(added, b)
		}
	}
	if d := k.ledger.Deadline(now, added); len(added) > 0 && d.Before(k.deadline) {
		switch err := k.kernel.LeaseUntil(d); {
		case errors.Is(err, ErrWithdrawn):
			k.deadline = now // accepting nothing is a cut too
		case err != nil:
			return nil, fmt.Errorf("lease: shorten the kernel lease before installing: %w", err)
		default:
			k.deadline = d
		}
	}
	old := k.installed
	k.installed = union(old, accepting)
	return old, nil
}

// Lapse describes a kernel lease that had run out before Renew renewed it.
type Lapse struct {
	// For is how long the kernel accepted nothing that needs a grant.
	For time.Duration
}

// Renew extends the kernel lease as far as the installed buckets are
// valid. It returns a *Lapse when it ends one: the previous lease had run
// out before this renewal (the process, or the grants, came late). It
// writes nothing if the installed buckets are no longer valid (the
// controller must drop them; Changes fires).
func (k *Keeper) Renew() (*Lapse, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	d := k.ledger.Deadline(now, k.installed)
	// Look again well before a bucket runs out, so that one late grant
	// costs that bucket, not the whole director.
	if d.Before(now.Add(k.ledger.Params().Lease / 2)) {
		k.kick()
	}
	if !d.After(now) {
		return nil, nil
	}
	var lapse *Lapse
	if !k.deadline.After(now) {
		lapse = &Lapse{For: now.Sub(k.deadline)}
	} else if d.Equal(k.deadline) {
		// The kernel holds this very lease: the later grants of a round
		// move nothing once its quorum-th came. A write costs a netlink
		// transaction, and with many grantors most renewals are these.
		return nil, nil
	}
	if err := k.kernel.LeaseUntil(d); err != nil {
		switch {
		case errors.Is(err, ErrWithdrawn):
			k.deadline = now
		case d.After(k.deadline):
			// The kernel holds the old lease or the new one: keep the
			// later end as the bound.
			k.deadline = d
		}
		return nil, fmt.Errorf("lease: renew the kernel lease: %w", err)
	}
	k.deadline = d
	return lapse, nil
}

// Installed returns the buckets whose new flows the kernel may accept.
func (k *Keeper) Installed() []uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.installed)
}

func union(a, b []uint32) []uint32 {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}
