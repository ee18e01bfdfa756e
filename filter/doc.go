// Package filter renders saru's bucket allocation as nftables rules and
// applies them, so that of all the directors sharing a VIP and a MAC on a
// flooding LAN exactly one accepts each flow, before IPVS sees it.
//
// The package holds no policy: saru decides which director owns which
// bucket and when a planned move starts and ends; filter only renders that
// decision, applies it atomically, reports drift and counters, and offers
// the userspace twin of the kernel's hash (Hasher) so that saru can say
// which bucket a flow falls in. It owns exactly one table, inet "peerlvs"
// by default, and never reads into or writes any other table.
//
// # Rules
//
// A base chain at prerouting priority -450 sends packets to a VIP to the
// request chains and packets from the NAT real-server subnets that are not
// addressed to this host to the reply chains. Requests are hashed by their
// source (address, port or both: the sense), replies by their destination,
// which is the same client, so a reply lands on the director that took the
// request. The bucket is `jhash <fields> mod B seed S` looked up in the
// sets owned, handover_out and handover_in; a TCP, UDP or SCTP packet in no
// set is dropped. ICMP echo requests are hashed by source address; other
// ICMP and other protocols pass on every director.
//
// The priority is below defragmentation (-400), raw (-300) and conntrack
// (-200), so a director drops foreign flows before it spends conntrack or
// reassembly memory on them, and long before IPVS (LOCAL_IN and FORWARD).
//
// # Fragments
//
// Because the chain runs before reassembly, a non-first fragment has no
// transport header and cannot be hashed by port. Such fragments are
// accepted on every director: alone they are useless, since whoever
// reassembles (IPVS, conntrack's defragmentation or the local stack) needs
// the first fragment, and the first fragment carries the ports and is
// hashed like any packet. The non-owners' incomplete fragment queues expire
// within the kernel's bounded reassembly memory.
//
// # Planned moves
//
// Moving a bucket from a live director (the giver) to another (the taker)
// goes through handover_out on the giver and handover_in on the taker.
// During the move a packet that opens a connection (TCP SYN without ACK,
// SCTP INIT) belongs to the taker; every other packet belongs to the giver,
// unless its connection was opened during the move. Both directors see the
// opening packet on the flooding LAN and remember its flow (l4proto, client
// address, client port) in the dynamic sets flows4/flows6, so they agree on
// each later packet, replies included, without conntrack (which never sees
// replies in direct routing) and without talking to each other. UDP has no
// opening packet, so UDP flows stay with the giver until the move completes;
// by then syncd has copied the giver's connections to the taker. The rule
// met is: no connection set up before a planned move breaks, and no new
// connection is accepted by two directors. It needs the giver to apply
// handover_out no later than the taker applies handover_in. At the end the
// taker owns the bucket before the giver drops it (saru orders both by the
// directors' gossiped progress): in between, both accept the flows older
// than the move, which costs duplicate forwarding of their packets for a
// moment rather than a stall, and a UDP flow that starts in that moment
// (it has no opening packet to tell) may be taken by both. The handover
// memory of a bucket is cleared whenever the bucket enters or leaves a
// handover set, so a later move of the same bucket starts afresh.
//
// # When saru dies
//
// The main table is an ordinary table: it outlives the daemon, keeping its
// buckets for a restarted daemon to read and for an operator to inspect.
// But it enforces them only while saru runs. A second table, inet
// peerlvs_live, is created with NFT_TABLE_F_OWNER on a netlink socket the
// Filter holds from its first Apply until Close; the kernel deletes such a
// table the moment that socket closes, which a crash (even SIGKILL) does,
// and refuses changes to it from any other socket. Its one base chain, at
// priority -451, sets a bit of the packet mark (Config.Mark) on every
// packet; the main table's first rule sends packets without the bit to the
// orphaned chain, which drops everything addressed to a VIP and every NAT
// reply, and its second rule clears the bit, so no later table or IPVS
// fwmark service sees it.
//
// So a director whose saru died accepts no flow at all: it cannot accept a
// flow the survivors take over once they have declared it dead, and its
// buckets go unserved only until they do (the failure detection time).
// Keeping the last buckets instead would make two directors accept the
// same new flows for as long as the dead director's rules lived; removing
// the table would make it accept everything. A restarted saru owns nothing
// until it is ready, so it withdraws the stale buckets before it arms.
// Remove tears both tables down and is meant only for an operator's
// explicit request.
//
// A stalled (not dead) saru keeps its socket, and the fleet may give its
// buckets to others all the same. With Config.Lease the liveness rule also
// needs the one element of a set with a timeout: the rules accept nothing
// until the daemon's first LeaseUntil, and nothing after the deadline it
// last gave. saru gives deadlines only as far as a quorum of the fleet has
// granted the buckets it accepts (package saru/lease), so a stall, a
// partition or late grants stop this director before any other may take
// its buckets.
//
// # Unclaimed packets
//
// A director that has just started accepting a bucket may not yet hold the
// state of that bucket's established connections (syncd may still be
// delivering it). IPVS takes every packet of a connection it holds at
// LOCAL_IN; a mid-connection packet of one it does not hold falls through
// to the director's own stack, which answers a VIP's packet with a reset.
// A base chain at input priority UnclaimedPriority, after IPVS, drops such
// TCP and SCTP packets (anything but a SYN or an INIT) of buckets in the
// settling set. Apply adds a bucket there, with the timeout Config.Settle,
// in the transaction that starts accepting it, judged against the sets the
// kernel holds; the kernel expires it. The bound matters: a connection
// whose state never comes is reset Settle later instead of never.
//
// # Counters
//
// Each rule counts into a named counter object (owned_accepted,
// foreign_dropped, fragment_accepted, handover_{out,in}_{accepted,dropped},
// orphaned_dropped, unclaimed_dropped),
// summed over families and directions and read with Counters. The owned
// set carries a counter per element, read with BucketCounters: it costs one
// counter update on the lookup that already accepts the packet. Foreign
// packets are not counted per bucket; that would need a further lookup in a
// set of all B buckets for every packet a director drops, which on a
// flooding LAN is most of what it sees.
//
// # Drift
//
// Verify compares what the kernel lists against the rendering (chains,
// rules, sets, set elements, counters) and Repair restores it, preferring
// element-only transactions and rebuilding the table in one transaction
// only when its structure changed.
package filter
