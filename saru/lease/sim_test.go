package lease

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The fleet simulation: directors with drifting clocks, a network that
// delays, drops, reorders and partitions (one way too), processes that
// pause, and views of the fleet that disagree; every millisecond of real
// time it checks that no bucket is accepted by two kernels at once.

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type simKernel struct {
	deadline time.Time // local clock of its director
	set      []uint32  // buckets accepted while the lease holds
}

func (k *simKernel) LeaseUntil(d time.Time) error {
	k.deadline = d
	return nil
}

type simDirector struct {
	name   string
	rate   float64 // local seconds per real second
	offset time.Duration
	keeper *Keeper
	kernel *simKernel
	real   time.Duration // the simulation's real time, for the clock
	paused time.Duration // paused until (real)
	next   time.Duration // next tick (real)
	inbox  []simMsg      // held while paused
	dead   bool
	run    uint64
}

func (d *simDirector) local(real time.Duration) time.Time {
	return epoch.Add(d.offset + time.Duration(float64(real)*d.rate))
}

func (d *simDirector) accepts(real time.Duration, b uint32) bool {
	if d.dead || !d.local(real).Before(d.kernel.deadline) {
		return false
	}
	_, ok := slices.BinarySearch(d.kernel.set, b)
	return ok
}

type simMsg struct {
	at       time.Duration
	from, to int
	bytes    []byte
}

type simConfig struct {
	n, buckets, quorum int
	lease              time.Duration
	drift              float64
	dur                time.Duration
	loss               float64       // per message
	maxDelay           time.Duration // uniform 0..maxDelay
	pauses             bool          // random process pauses up to 3 leases
	oneWay             bool          // random one-way partitions
	restarts           bool          // kill and restart directors (new run)
	disagree           bool          // each director's view of who is alive is random at times
}

type simResult struct {
	doubles  int           // bucket-milliseconds accepted twice
	first    string        // the first double
	accepted time.Duration // bucket-time accepted by someone, summed
}

func simulate(t *testing.T, seed uint64, c simConfig) simResult {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := Params{Lease: c.lease, Drift: c.drift, Quorum: c.quorum}.WithDefaults()
	ds := make([]*simDirector, c.n)
	newKeeper := func(d *simDirector) {
		d.run = rng.Uint64()
		d.kernel = &simKernel{}
		k, err := NewKeeper(Holder{Name: d.name, Run: d.run}, p, uint32(c.buckets), d.kernel, func() time.Time { return d.local(d.real) })
		if err != nil {
			t.Fatal(err)
		}
		d.keeper = k
	}
	for i := range ds {
		// The extremes of the drift bound are the interesting cases.
		rate := 1.0
		switch rng.IntN(3) {
		case 0:
			rate = 1 / (1 + c.drift)
		case 1:
			rate = 1 + c.drift
		}
		ds[i] = &simDirector{name: fmt.Sprintf("d%d", i), rate: rate, offset: time.Duration(rng.Int64N(int64(time.Hour)))}
		newKeeper(ds[i])
	}
	// cut[i][j]: messages from i to j are dropped.
	cut := make([][]bool, c.n)
	for i := range cut {
		cut[i] = make([]bool, c.n)
	}
	// alive[i][j]: i's view says j is alive.
	alive := make([][]bool, c.n)
	for i := range alive {
		alive[i] = make([]bool, c.n)
		for j := range alive[i] {
			alive[i][j] = true
		}
	}
	var net []simMsg
	send := func(now time.Duration, from, to int, msgs [][]byte) {
		for _, b := range msgs {
			if cut[from][to] || rng.Float64() < c.loss {
				continue
			}
			net = append(net, simMsg{at: now + time.Duration(rng.Int64N(int64(c.maxDelay)+1)), from: from, to: to, bytes: b})
		}
	}
	// wanted: the allocation by i's view, round-robin over the live ones.
	wanted := func(i int) []uint32 {
		var live []int
		for j := range alive[i] {
			if alive[i][j] {
				live = append(live, j)
			}
		}
		var out []uint32
		for b := 0; b < c.buckets; b++ {
			if len(live) > 0 && live[b%len(live)] == i {
				out = append(out, uint32(b))
			}
		}
		return out
	}
	tick := p.Lease / 4
	var res simResult
	const step = time.Millisecond
	for now := time.Duration(0); now < c.dur; now += step {
		for _, d := range ds {
			d.real = now
		}
		// Faults change every 100 ms of real time.
		if now%(100*time.Millisecond) == 0 {
			if c.oneWay {
				for i := range cut {
					for j := range cut[i] {
						cut[i][j] = i != j && rng.Float64() < 0.15
					}
				}
			}
			if c.disagree {
				for i := range alive {
					for j := range alive[i] {
						alive[i][j] = i == j || rng.Float64() < 0.7
					}
				}
			}
			if c.pauses && rng.Float64() < 0.3 {
				d := ds[rng.IntN(c.n)]
				d.paused = now + time.Duration(rng.Int64N(int64(3*c.lease)))
			}
			if c.restarts && rng.Float64() < 0.05 {
				i := rng.IntN(c.n)
				d := ds[i]
				d.dead = true // the kernel stops at once: owner-bound table
				newKeeper(d)
				d.dead = false
				d.inbox = nil
			}
		}
		// Deliver.
		keep := net[:0]
		var due []simMsg
		for _, m := range net {
			if m.at <= now {
				due = append(due, m)
			} else {
				keep = append(keep, m)
			}
		}
		net = keep
		rng.Shuffle(len(due), func(a, b int) { due[a], due[b] = due[b], due[a] })
		for _, m := range due {
			ds[m.to].inbox = append(ds[m.to].inbox, m)
		}
		for i, d := range ds {
			if now < d.paused {
				continue
			}
			for _, m := range d.inbox {
				msg, err := Decode(m.bytes)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				switch {
				case msg.Request != nil:
					g := d.keeper.OnRequest(*msg.Request)
					b, _ := EncodeGrant(g)
					send(now, i, m.from, b)
				case msg.Grant != nil:
					d.keeper.OnGrant(*msg.Grant)
				case msg.Release != nil:
					d.keeper.OnRelease(*msg.Release)
				}
			}
			d.inbox = nil
			if now < d.next {
				continue
			}
			d.next = now + tick
			want := wanted(i)
			d.keeper.Want(want)
			r, _ := d.keeper.Round(0)
			b, _ := EncodeRequest(r)
			for j := range ds {
				if j != i {
					send(now, i, j, b)
				}
			}
			if _, err := d.keeper.Renew(); err != nil {
				t.Fatal(err)
			}
			// The controller: accept what is wanted and valid for a while.
			var acc []uint32
			for _, b := range want {
				if d.keeper.ValidUntil(b).After(d.local(now).Add(tick)) {
					acc = append(acc, b)
				}
			}
			rel, err := d.keeper.Install(acc, func() error { d.kernel.set = slices.Clone(acc); return nil })
			if err != nil {
				t.Fatal(err)
			}
			b, _ = EncodeRelease(rel)
			for j := range ds {
				if j != i {
					send(now, i, j, b)
				}
			}
		}
		// The invariant.
		for b := uint32(0); b < uint32(c.buckets); b++ {
			var who []string
			for _, d := range ds {
				if d.accepts(now, b) {
					who = append(who, d.name)
				}
			}
			if len(who) > 1 {
				res.doubles++
				if res.first == "" {
					res.first = fmt.Sprintf("bucket %d at %v: %v", b, now, who)
				}
			}
			if len(who) > 0 {
				res.accepted += step
			}
		}
	}
	return res
}

func TestSimulatedFleetExclusive(t *testing.T) {
	base := simConfig{buckets: 16, lease: 200 * time.Millisecond, drift: 0.01, dur: 20 * time.Second, maxDelay: 20 * time.Millisecond}
	cases := []struct {
		name string
		mod  func(*simConfig)
	}{
		{"calm", func(c *simConfig) {}},
		{"loss 30%", func(c *simConfig) { c.loss = 0.3 }},
		{"late messages", func(c *simConfig) { c.maxDelay = 3 * c.lease }},
		{"one-way partitions", func(c *simConfig) { c.oneWay = true }},
		{"views disagree", func(c *simConfig) { c.disagree = true }},
		{"pauses", func(c *simConfig) { c.pauses = true }},
		{"restarts", func(c *simConfig) { c.restarts = true }},
		{"everything", func(c *simConfig) {
			c.loss, c.maxDelay, c.oneWay, c.disagree, c.pauses, c.restarts = 0.2, 2*c.lease, true, true, true, true
		}},
	}
	seeds := 4
	if testing.Short() {
		seeds = 1
	}
	for _, n := range []int{3, 5} {
		for _, tc := range cases {
			c := base
			c.n, c.quorum = n, n/2+1
			tc.mod(&c)
			for s := 0; s < seeds; s++ {
				t.Run(fmt.Sprintf("n=%d/%s/seed=%d", n, tc.name, s), func(t *testing.T) {
					t.Parallel()
					r := simulate(t, uint64(s+1), c)
					if r.doubles > 0 {
						t.Fatalf("%d bucket-ms accepted twice; first %s", r.doubles, r.first)
					}
					if tc.name == "calm" && r.accepted < c.dur*time.Duration(c.buckets)*8/10 {
						t.Errorf("calm fleet accepted only %v of %v bucket-time", r.accepted, c.dur*time.Duration(c.buckets))
					}
				})
			}
		}
	}
}

// TestSimulationHasTeeth: the checker finds doubles when the rule is
// broken on purpose (a quorum that is not a majority, or a Hold without
// the drift margin), so its silence above means something.
func TestSimulationHasTeeth(t *testing.T) {
	c := simConfig{n: 4, quorum: 2, buckets: 16, lease: 200 * time.Millisecond, drift: 0.01, dur: 20 * time.Second,
		maxDelay: 20 * time.Millisecond, oneWay: true, disagree: true}
	r := simulate(t, 1, c)
	if r.doubles == 0 {
		t.Fatalf("quorum 2 of 4 under partitions: no double found; the checker is blind")
	}
	t.Logf("quorum 2 of 4: %d bucket-ms accepted twice (first %s)", r.doubles, r.first)
}
