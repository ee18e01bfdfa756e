package daemon

import (
	"time"

	"github.com/peerlvs/peerlvs/ipvs/procconn"
	"github.com/peerlvs/peerlvs/syncd/table"
)

// Read-back policy: how ready is earned after the bulk resync.
const (
	// readBackEvery spaces the reads of the kernel's table: the kernel
	// backup thread applies what was written to its socket on its own
	// schedule, so a read at once would call entries missing that are
	// merely queued.
	readBackEvery = 100 * time.Millisecond
	// readBackTries is how many times an entry the kernel still lacks
	// after a read that showed no progress is written again before it is
	// given up on (counted and logged, not waited for forever).
	readBackTries = 3
	// readBackSkip leaves out entries this close to expiring: the kernel
	// may rightly have let them go already.
	readBackSkip = 3 * time.Second
)

// readBack decides when the kernel holds the table the bulk resync filled.
// A datagram written to the kernel backup's socket can still be dropped
// (socket buffer full, a thread restarting), so syncd declares itself
// ready only after reading the kernel's table back: every peer entry not
// about to expire must be there. Missing entries are written again when a
// read shows the kernel is no longer catching up; after readBackTries
// such writes they are reported as refused and no longer waited for (the
// kernel drops entries it will never take, e.g. for a protocol it does not
// know). It is pure: the engine reads /proc and injects.
type readBack struct {
	next    time.Time
	lastMis int // entries missing at the previous read; -1 before the first
	tries   int
	done    bool
	refused int
}

func newReadBack() readBack { return readBack{lastMis: -1} }

// due reports whether a read of the kernel's table is wanted at now.
func (r *readBack) due(now time.Time) bool { return !r.done && !now.Before(r.next) }

// round compares the kernel's entries with tbl's peer entries that
// wanted accepts (those syncd holds back until their service exists are
// not missing). It returns the entries to write again (nil if none);
// r.done is set once the kernel holds everything wanted or the tries are
// spent.
func (r *readBack) round(now time.Time, kernel []procconn.Entry, tbl *table.Table, wanted func(*table.Entry) bool) []table.Entry {
	r.next = now.Add(readBackEvery)
	have := make(map[procKey]struct{}, len(kernel))
	for i := range kernel {
		p := &kernel[i]
		have[procKey{p.Protocol, p.CAddr.Unmap(), p.VAddr.Unmap(), p.CPort, p.VPort}] = struct{}{}
	}
	self := tbl.Self()
	soon := table.StampOf(now.Add(readBackSkip))
	var missing []table.Entry
	tbl.ForEach(0, func(e *table.Entry) bool {
		if e.Owner == self || e.Expires.Sub(soon) == 0 || !wanted(e) {
			return true
		}
		if _, ok := have[procKey{e.Proto, e.CAddr.Unmap(), e.VAddr.Unmap(), e.CPort, e.VPort}]; !ok {
			missing = append(missing, *e)
		}
		return true
	})
	switch {
	case len(missing) == 0:
		r.done = true
		return nil
	case r.lastMis < 0 || len(missing) < r.lastMis:
		// The kernel is still applying what it was given.
		r.lastMis = len(missing)
		return nil
	case r.tries >= readBackTries:
		r.done, r.refused = true, len(missing)
		return nil
	}
	r.tries++
	r.lastMis = len(missing)
	return missing
}
