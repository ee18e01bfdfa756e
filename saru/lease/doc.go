// Package lease is the fleet's exclusivity rule, as pure state machines: a
// director may accept new flows of a bucket only while it holds grants for
// that bucket from a quorum of the fleet's directors, and no director ever
// grants one bucket to two holders whose grants could overlap in time.
//
// Views of membership disagree (flaps, one-way loss, partitions, a starved
// host), so the allocation alone cannot decide who accepts: two directors
// that see different fleets compute different maps. The allocation only
// decides which buckets a director asks for; the grants decide which it may
// accept, and they stay exclusive whatever the views.
//
// # The rule
//
// Every director runs a Grantor and a Ledger. The Ledger sends a Request
// (its buckets, a sequence number) to directors it can reach (the Service
// picks which: enough for a quorum and two more while all is well, all of
// them otherwise; see Service), itself included, every Params.Lease/4 or
// so, and remembers when it sent
// each one (t0, its own monotonic clock). A Grantor that receives it at r
// (its own clock) grants each bucket that is free, already held by the
// same holder (same director and same saru run), or whose previous grant
// has run out (r >= the previous grant's r + Params.Hold()); it records the
// holder and the new end, r + Hold. A bucket held by another holder is not
// granted. The Ledger counts, per bucket, the latest t0 each grantor granted;
// the bucket is valid until the Quorum-th latest of those t0 plus Lease.
// The director's kernel accepts a bucket's new flows only while the bucket
// is valid (the daemon keeps its kernel lease no longer than the least
// validity of the buckets installed).
//
// A holder that gives a bucket away first removes it from its kernel rules,
// then sends a Release naming the last sequence number it asked with; a
// grantor frees the bucket only if its grant came from a request no newer
// than that. The Ledger forgets every grant of a released bucket and counts
// only grants of later requests, so an old grant can never revive it.
//
// # Why two directors never accept one bucket
//
// Let ρ ≥ 1 bound clock-rate error: any clock measures a real interval d as
// between d/ρ and d·ρ. Hold is Lease·ρ² plus Margin. Quorum is more than half
// of the directors that can grant (the operator's part: see saru's quorum).
// Suppose X and Y both accept bucket b at real time τ. Each relies on grants
// from a quorum, and two quorums share a grantor g. X relies on a grant g
// gave at r_X for a request sent at t0_X with τ < t0_X + Lease (X's clock),
// so real(r_X) ≥ real(t0_X) > τ - Lease·ρ; likewise for Y at r_Y. Say g
// granted X first. Between its last grant to X before r_Y and r_Y, either
// Hold passed on g's clock (≥ Hold/ρ ≥ Lease·ρ real time, so X's reliance on
// that grant ended before r_Y), or X released b, after its kernel stopped
// accepting it and counting only grants newer than the release. And g
// grants X again only once Y's grant has run out or been released. So X's
// and Y's reliance on g never overlap: contradiction.
//
// # Assumptions, stated
//
//   - Clock rates: no clock runs faster or slower than real time by more
//     than Params.Drift (ρ = 1 + Drift). Monotonic clocks only; wall-clock
//     steps do not matter here.
//   - A paused process (SIGSTOP, GC, starvation) may pause anywhere: the
//     argument uses only send and receive times, and a late message only
//     shortens what it grants. The one step outside this package is the
//     daemon's kernel write of the lease: it computes the remaining time
//     before the write, so a pause between that reading and the kernel's
//     processing of the write lengthens the kernel's lease by the pause.
//     The daemon measures every write and withdraws at once if one took
//     longer than Params.MaxKernelWrite (see saru's lease keeper).
//   - A grantor that restarts has forgotten its grants: it grants nothing for
//     Hold after it starts (NewGrantor), by which time every grant it may
//     have given before has run out.
//   - Quorum is a majority of the directors that run with the same
//     settings. With quorum 1 every director grants itself: a partitioned
//     fleet then accepts twice, as the operator chose. Every director
//     uses the same Params; nothing here can check that (saru's member
//     package compares and reports them, see member.Timing).
//
// It must not do I/O: messages go in and out as values (and bytes, through
// the codec in wire.go); the daemon sends them, keeps the clock and writes
// the kernel.
package lease
