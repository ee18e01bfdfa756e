// Package wire encodes and decodes the datagrams that the Linux kernel's IPVS
// sync threads exchange (net/netfilter/ipvs/ip_vs_sync.c): the original v0
// format (IPv4 only, 24-byte entries) and the v1 format (IPv4 and IPv6,
// firewall marks, timeouts, sequence data and persistence-engine options).
//
// It exists because the kernel has no netlink command that lists or inserts
// IPVS connections: entries leave and enter the kernel only through its sync
// threads, in this format. syncd reads what the local kernel master sends and
// writes what the local kernel backup must inject, so this package has to
// produce byte-for-byte what the kernel produces and accept exactly what the
// kernel accepts.
//
// The package is pure: no I/O, no sockets, no goroutines, no logging and no
// global state. Callers own the buffers; DecodeInto and Builder let a relay
// handle millions of entries per second without allocating.
//
// # What the kernel checks, and where this package does it
//
// The kernel's receive path (ip_vs_process_message) checks two kinds of
// things, and this package splits them the same way:
//
//   - Structure: header size field, version byte, entry sizes, entry type,
//     option framing, option lengths, duplicate options, unknown mandatory
//     options. The kernel drops the rest of the datagram (or, for an unknown
//     mandatory option, the entry). Decode returns an error wrapping one of
//     ErrTruncated, ErrBadSize, ErrBadVersion, ErrBadType, ErrBadOption,
//     ErrUnknownOption, ErrReserved or ErrTrailingData.
//   - Meaning: flags, protocol, state, persistence-engine parameters. The
//     kernel silently drops just that entry. Decode does not check these,
//     because one bad entry must not hide its neighbours; call Conn.Validate
//     on every decoded entry before acting on it. Encoders call Validate
//     themselves (Builder.AddUnchecked exists for lab tests that must craft
//     entries the kernel rejects).
//
// Decode is deliberately stricter than the kernel in a few places where no
// kernel ever sends such bytes, so that corruption is reported instead of
// half-applied: an entry type other than 0 or 1 (the kernel takes any odd
// type as IPv6), non-zero padding, bytes after the last entry (the kernel
// ignores them), a non-zero reserved byte in a v0 entry, a datagram whose
// first byte is 0 but which is not a valid v1 header (the kernel would treat
// it as an empty v0 message and ignore it), and an unknown mandatory option
// (the kernel drops only that entry; Decode rejects the datagram).
//
// # Layout
//
// v1 header (8 bytes): reserved u8 = 0, syncid u8, size be16 (the whole
// datagram), nr_conns u8, version u8 = 1, spare be16 = 0. A datagram is v1
// only if reserved, version and spare all match; anything else is read as v0.
//
// v1 entry: type u8 (0 IPv4, 1 IPv6), protocol u8, ver_size be16 (high 4 bits
// version 0, low 12 bits the entry plus its options without padding), flags
// be32, state be16, cport, vport, dport be16, fwmark be32, timeout be32
// (seconds), caddr, vaddr, daddr (4 or 16 bytes each): 36 or 72 bytes. Then
// options [type u8][len u8][data]: 1 sequence data (24 bytes, big-endian),
// 2 persistence-engine data (1..255 bytes), 3 persistence-engine name (1..16
// bytes). The next entry starts at the next 4-byte boundary; like the kernel,
// the encoder writes no padding after the last entry.
//
// v0 header (4 bytes): nr_conns u8, syncid u8, size be16. v0 entry (24
// bytes): reserved u8, protocol u8, cport, vport, dport be16, caddr, vaddr,
// daddr, flags be16, state be16, followed by 24 bytes of sequence data if and
// only if flags has FlagInSeq or FlagOutSeq. v0 sequence data is a raw copy of
// the kernel's struct, so it is in the sending host's byte order; this
// package uses the byte order of the host it runs on, which is right for the
// local kernel and for any little-endian peer.
package wire
