// Package peer is syncd's peer protocol: the frame format, its
// authenticated encryption and replay protection, the keyring and its
// rotation, the payload codecs of every message type, and the state machines
// that make replication reliable over a lossy datagram network — per-sender
// update sequence numbers, NACKs of gaps, resends carrying the latest state,
// ALIVE heartbeats, bulk dumps to joining nodes, and refreshes that keep
// peers' kernel entries from expiring. docs/protocol.md specifies it byte by
// byte.
//
// The package is pure. It must not open sockets, read a clock, start
// goroutines, log, or keep global state: the daemon feeds a Node the frames
// it receives and the time, and sends what the Node hands to Config.Send,
// over multicast or unicast, IPv4 or IPv6, which the package neither knows
// nor cares about. That keeps every rule here testable in memory, down to a
// simulated lossy network of several nodes.
//
// Layers, each usable alone:
//
//   - Sealer and Opener seal and open frames (AES-256-GCM under a key per
//     sender run, derived with HKDF; the header is authenticated data) and
//     reject replays. Keyring holds the accepted keys and the send key.
//   - Append*/Parse* encode and decode payloads; EntryReader walks entry
//     lists; AppendEntry/DecodeEntry are the entry codec, whose kernel part
//     is the kernel's own v1 sync entry. FromConn/ToConn convert to and from
//     ipvs/wire for the kernel tap and injector.
//   - Node runs the protocol over a table.Table.
//
// Bad input is never a crash: every decoder returns an error wrapping one
// of the sentinels (ErrPayload and the frame errors), rejections are
// counted by reason (OpenerStats), and every decoder is fuzzed from the
// seed corpora under testdata/fuzz.
package peer
