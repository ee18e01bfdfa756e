// Package member is saru's membership layer: it wires hashicorp/memberlist
// so that every director knows which other directors are alive, with what
// weight, in which state (joining, ready, draining) and whether they agree
// on the settings that decide bucket ownership (bucket count, seed, sense,
// VIPs). It owns the gossip sockets and the seed-rejoin goroutine.
//
// It must not decide ownership or touch nftables: it only reports a view of
// the fleet (Node.Members) and signals changes (Node.Changes); the
// controller turns that view into an allocation.
//
// # Failure detection
//
// Tuned (see Tune) from memberlist.DefaultLANConfig so that at 3 to 10
// directors the survivors declare a dead director within about one second:
//
//   - ProbeInterval 200ms, ProbeTimeout 100ms: each member probes one peer
//     every 200ms, so with N-1 survivors probing, a dead peer is first probed
//     within about 200ms/(N-1)..200ms. 100ms is ample for a round trip on a
//     director LAN but is the knob to raise on a congested sync network.
//   - SuspicionMult 2, SuspicionMaxTimeoutMult 2: the suspicion timeout is
//     2 x ProbeInterval = 400ms once another member confirms the suspicion,
//     800ms at most (memberlist scales it by log10(N) above 10 nodes).
//   - GossipInterval 50ms, GossipNodes 3: the dead message and state changes
//     reach everyone in a few gossip rounds.
//   - PushPullInterval 15s: full-state sync is only the safety net.
//   - GossipToTheDeadTime 2s: a dead director is forgotten after 2s, so it
//     can come back under the same name from another address.
//
// Expected detection: probe (≤200ms) + indirect probes (≤200ms) + suspicion
// (400..800ms) + gossip (~50-100ms) ≈ 0.7..1.3s. The price is false
// positives: a director that stalls for more than about half a second (GC
// pause, CPU starvation, a saturated NIC) is declared dead and its buckets
// move away and back, resetting the new connections that landed during the
// blip (established ones survive through syncd). memberlist's Lifeguard
// awareness stretches a node's own probe timeouts when it notices it is
// slow, which removes most self-inflicted false positives. A fleet that
// flaps (saru logs "Refuting a suspect message" and allocations that drop a
// live director) needs a longer Config.FailureDetection (saru's
// failure_detection), which scales the probe, suspicion and gossip timings
// above together: 2s halves the rate at which they fire and doubles the
// stall a director may survive. The lab's emulated (TCG) guests use 2s
// for a pair and 3s for the saturated fleets of three.
//
// # Encryption
//
// Gossip is encrypted and authenticated with memberlist's keyring (AES-GCM)
// when a key file is configured: one key per line, base64 or hex, 16, 24 or
// 32 bytes; the first line is the primary (sending) key, all others are
// accepted for receiving. Rotate by adding the new key to every director's
// file (second line) and ReloadKeys, then moving it to the first line and
// ReloadKeys everywhere, then deleting the old line and ReloadKeys; or drive
// the same steps through InstallKey, UseKey and RemoveKey.
package member
