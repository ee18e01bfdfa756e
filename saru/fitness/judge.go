package fitness

import (
	"fmt"
	"strings"
	"time"
)

// Judge turns observations into fit or unfit. A failed observation makes
// the director unfit at once; it is fit again only after every
// observation for Hold has passed. The first observation decides at once,
// without the hold: a director that starts healthy need not wait.
type Judge struct {
	Hold time.Duration

	known   bool
	fit     bool
	reason  string
	since   time.Time // of the current verdict
	okSince time.Time // while unfit: since when every check passes
}

// Verdict is the judge's current word.
type Verdict struct {
	Fit bool `json:"fit"`
	// Reason names the failed checks while unfit, or the hold still to
	// wait once they pass.
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	// LinkDown: unfit and a tracked interface is down now, so this
	// director can neither receive its flows nor forward them (set by
	// the Tracker; the Judge knows only failures).
	LinkDown bool `json:"link_down,omitempty"`
}

// Observe takes the failed checks of one round (none: all passed) and
// returns the verdict and whether it changed.
func (j *Judge) Observe(now time.Time, failures []string) (Verdict, bool) {
	failing := strings.Join(failures, "; ")
	changed := false
	switch {
	case !j.known:
		j.known, j.fit, j.since, changed = true, len(failures) == 0, now, true
		j.reason = failing
	case len(failures) > 0:
		j.okSince = time.Time{}
		if j.fit {
			j.fit, j.since, changed = false, now, true
		}
		j.reason = failing
	case !j.fit:
		if j.okSince.IsZero() {
			j.okSince = now
		}
		if now.Sub(j.okSince) >= j.Hold {
			j.fit, j.since, j.reason, changed = true, now, "", true
		} else {
			j.reason = fmt.Sprintf("recovered; fit again after the hold of %v, at %s", j.Hold, j.okSince.Add(j.Hold).Format(time.RFC3339))
		}
	}
	return Verdict{Fit: j.fit, Reason: j.reason, Since: j.since}, changed
}
