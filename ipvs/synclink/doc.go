// Package synclink is the host-local link between syncd and the kernel's
// own IPVS sync threads.
//
// The kernel lists and inserts connections only through its sync threads, so
// syncd runs them on a private dummy interface where they can talk to no one
// but syncd: the kernel master multicasts its sync messages onto the link,
// where a Tap reads them (AF_PACKET sees the frames leaving, even though the
// master turns multicast loopback off and the dummy device discards them);
// an Injector multicasts messages with loopback on and TTL 0, so the only
// copy is the looped-back one the kernel backup thread receives.
//
//	kernel master --G:MasterPort--> plsync0 --AF_PACKET--> Tap.ReadFrame
//	Injector.WriteFrame --G:BackupPort, loop 1, TTL 0--> plsync0 loopback --> kernel backup
//
// What goes over the link is one kernel sync message per datagram; this
// package hands it over byte for byte.
//
// The link is a dummy device (or, on kernels without the dummy driver, an
// ifb device, which behaves the same here): both discard every frame they
// transmit, after packet sockets have seen it.
//
// The package must not send anything off the host (every socket is pinned
// to the link, multicast TTL/hop limit 0, and OpenInjector refuses any
// device but a dummy or ifb, because the kernel ignores TTL 0 when no local
// socket has joined the group), must not interpret the sync protocol (no
// decoding, no validation of payloads, no retries) and must not log: it
// reports through errors and counters and leaves policy to syncd.
//
// All functions act in the network namespace of the calling OS thread.
// Sockets stay in the namespace they were created in.
package synclink
