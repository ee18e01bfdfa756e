package lease

import (
	"errors"
	"fmt"
	"time"
)

// Defaults for Params.
const (
	// DefaultDrift bounds clock-rate error at 1 %: quartz is good to
	// 0.01 %, NTP slews at most 0.05 %; the rest is headroom.
	DefaultDrift = 0.01
	// DefaultMargin covers the kernel's timer granularity (TimerSlack)
	// and the longest kernel write of the lease the daemon tolerates (the
	// rest: MaxKernelWrite). Lease writes took up to 70 ms on a loaded
	// 2-core host, and 242 to 312 ms in the emulated lab guest with the
	// guest saturated and its host short of CPU; each one slower than
	// allowed is withdrawn and costs the director a moment of accepting.
	// It lengthens a failover only where Hold exceeds the failure
	// detection.
	DefaultMargin = 500 * time.Millisecond
	// TimerSlack bounds how much later than its timeout the kernel lets
	// an nftables element lapse: the timeout is rounded up to a jiffy (at
	// most 10 ms, HZ >= 100) and checked on each lookup. Five jiffies
	// leave room for a kernel that rounds twice.
	TimerSlack = 50 * time.Millisecond
)

// Params are the fleet-wide lease settings; every director must use the
// same ones.
type Params struct {
	// Lease is how long a holder may accept a bucket after it sent the
	// request that a quorum granted. Failover takes about Hold (a dead
	// holder's grants must run out); a holder that cannot renew for Lease
	// stops accepting.
	Lease time.Duration
	// Drift bounds the clock-rate error of every director: ρ = 1 + Drift.
	Drift float64
	// Margin is added to Hold for what happens outside the clocks' rates:
	// timer granularity and a late kernel write.
	Margin time.Duration
	// Quorum is how many distinct grantors (the holder included) must
	// grant a bucket; it must be more than half of the fleet.
	Quorum int
}

// WithDefaults fills the zero fields that have defaults.
func (p Params) WithDefaults() Params {
	if p.Drift == 0 {
		p.Drift = DefaultDrift
	}
	if p.Margin == 0 {
		p.Margin = DefaultMargin
	}
	if p.Quorum == 0 {
		p.Quorum = 1
	}
	return p
}

// Validate reports settings that cannot work.
func (p Params) Validate() error {
	var errs []error
	if p.Lease <= 0 {
		errs = append(errs, fmt.Errorf("lease: lease %v must be positive", p.Lease))
	}
	if p.Drift < 0 || p.Drift > 0.5 {
		errs = append(errs, fmt.Errorf("lease: drift %v out of range 0..0.5", p.Drift))
	}
	if p.Margin < 0 {
		errs = append(errs, fmt.Errorf("lease: margin %v is negative", p.Margin))
	}
	if p.Quorum < 1 {
		errs = append(errs, fmt.Errorf("lease: quorum %d must be at least 1", p.Quorum))
	}
	return errors.Join(errs...)
}

// MaxKernelWrite is the longest a kernel write of the lease may take: the
// kernel starts the element's timeout when it processes the write, which
// may be that much after the daemon computed it, and Margin must cover
// that delay and TimerSlack. A slower write is withdrawn. Zero when the
// margin leaves nothing beyond the slack.
func (p Params) MaxKernelWrite() time.Duration {
	return max(p.Margin-TimerSlack, 0)
}

// Hold is how long a grantor keeps a grant (its own clock, from when it
// received the request) before it may grant the bucket to another holder:
// Lease·ρ² + Margin, so that the holder's Lease on its clock ends, in real
// time, before the grantor's Hold on the grantor's clock does.
func (p Params) Hold() time.Duration {
	r := 1 + p.Drift
	return time.Duration(float64(p.Lease)*r*r) + p.Margin
}
