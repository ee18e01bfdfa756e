// Package table is syncd's connection table: one entry for every IPVS
// connection and persistence template that some director's kernel reported,
// holding what a kernel's backup thread needs to recreate it (the v1 sync
// fields), which director owns it (the one whose kernel reported it last),
// the version that last changed it, when it was last reported and when it
// expires.
//
// The package is pure. It must not do I/O, start goroutines, read a clock
// (every method takes now), log, or keep global state, and it knows no wire
// format: the peer protocol and the kernel injector convert to and from
// Entry. It decides nothing about sending either; it reports what changed
// so that its caller sends only changes.
//
// # Identity
//
// An entry is identified by what the kernel's receive path looks a synced
// connection up by (ip_vs_proc_conn: ip_vs_conn_in_get for connections,
// ip_vs_ct_in_get for templates): protocol, client address and port, virtual
// address and port, and whether it is a template. The real server (daddr,
// dport) is not part of the identity: the kernel replaces a connection whose
// real server changed, and so does Upsert. The firewall mark is not either:
// a firewall-mark template carries the mark in its virtual address. A
// persistence-engine template (SIP) is further identified by its engine data
// (the Call-ID), which Key.PE carries as a hash (see PEHash).
//
// # Versions
//
// Every entry carries a version and an owner. A report from the local kernel
// (Upsert) that changes anything the kernel acts on bumps the version; an
// entry from a peer (Apply) replaces the stored one only if its (version,
// owner) pair is greater. Because every node applies the same rule whatever
// order entries arrive in, and in whatever way (live update, resend, bulk
// dump, relayed by a third node), all tables converge to the same content
// without a master: a last-writer-wins register per connection.
//
// # Expiry and refresh
//
// An entry expires when the timeout of its state runs out after the owner's
// last report; Tick removes expired entries using a hashed timing wheel of
// one-second slots per shard, so a tick costs what is due, not a scan of the
// table. The kernel announces a TCP connection only on its third packet and
// then every 50 packets and never again when idle, so a peer's kernel entry
// would expire while the owner still has the connection. For entries this
// node owns the table remembers when peers will expire them and, a margin
// before that, Tick reports them as due for refresh.
//
// # Memory
//
// Entries live in per-shard slabs of 64-byte records (IPv6 addresses in a
// second slab of 48-byte blocks, sequence and persistence-engine data, which
// only FTP-helper connections and SIP templates have, out of line), indexed
// by an open-addressing hash table of 4-byte slots. That costs about 74 bytes
// per IPv4 entry and 123 per IPv6 entry at a million entries, index and
// slack included; TestMemoryBudget and BenchmarkMemory measure it.
//
// # Concurrency
//
// A Table is safe for concurrent use. It is split into shards by a seeded
// hash of the key, each with its own mutex, so that the daemon's tap,
// peer-receive and timer goroutines rarely contend. Callbacks are never called
// with a lock held, so they may call back into the Table.
package table
