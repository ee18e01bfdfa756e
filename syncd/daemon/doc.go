// Package daemon is syncd's daemon: it wires the kernel's own IPVS sync
// threads, the connection table (syncd/table) and the peer protocol
// (syncd/peer) to sockets, timers, metrics and a status endpoint.
//
// What it is for. The kernel lists and inserts connections only through its
// sync threads, so Run sets up a host-local link (ipvs/synclink), starts the
// kernel master and backup threads on it, reads what the master sends (the
// tap), feeds what peers send to the backup (the injector), seeds the table
// from /proc/net/ip_vs_conn, and drives a peer.Node on one goroutine over a
// UDP transport (multicast or unicast, IPv4 or IPv6). In compatibility mode
// it speaks the plain kernel v1 sync format on the LAN instead, so that stock
// kernel sync daemons and syncd can be mixed during a migration (no
// authentication in that mode).
//
// What it must not do. It holds no protocol logic (that is syncd/peer and
// syncd/table), keeps no global state (the logger and the Prometheus registry
// are passed in), never lets the kernel threads talk to the LAN directly,
// never stops a kernel sync thread it did not start (a thread on another
// interface is an operator's ipvsadm --start-daemon: Run refuses to start),
// and never calls the Node from more than one goroutine.
//
// # Removed entries
//
// The kernel has no command to delete a connection. An entry that a peer
// reports as removed is injected with a short life instead: a TCP
// connection in state CLOSE with a 10 s timeout, anything else in its
// state with a 2 s timeout, so that the local kernel drops it soon unless
// traffic arrives here (then the local kernel reports it again and this node
// becomes its owner).
//
// # Entries held back until their service exists
//
// A peer's entry is written to the kernel only once the kernel holds its
// service and real server (bind.go): written earlier, it stays unbound to
// its real server, which loses a persistence template's client and, with
// IP-in-IP, the connection. The kernel's services are read every second
// and on POST /bind (saru's, before it turns ready), and what was held back
// for a service that appeared is written then.
//
// # Pacing
//
// The kernel backup thread's socket buffer is small, so the injector queues
// datagrams and writes at most Kernel.InjectBurst of them per 10 ms tick,
// and Run raises net.ipv4.vs.sync_sock_size (bounded by net.core.rmem_max).
package daemon
