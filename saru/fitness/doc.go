// Package fitness decides whether this director is fit to hold buckets:
// its tracked interfaces are up (carrier and operational state), enough of
// its ping nodes answer (heartbeat's ipfail), and its check command
// succeeds (keepalived's track_script). A director that fails is marked
// unfit in its gossip; the allocation then leaves it out and its buckets
// move through the normal exclusive handover, while it keeps gossiping and
// syncing so that it can come back without a bulk resync. A director that
// recovers becomes fit again only after it has passed every check for the
// hold time, so that a flapping link does not move buckets back and forth.
//
// Judge is the pure rule; Tracker feeds it from the kernel (netlink) and
// from package health's probes. It must not touch the allocation or the
// rules itself: it only says fit or unfit, and why.
package fitness
