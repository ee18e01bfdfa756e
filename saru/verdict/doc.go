// Package verdict makes the fleet agree on its real servers' health: every
// director gossips its own check verdicts (Gossip), keeps the latest of
// every other director's (Board), and turns the ready directors' votes
// into one fleet verdict per real server with a deterministic rule
// (Decide), so that every director that holds the same votes applies the
// same weights.
//
// It must not probe real servers (package health does) nor touch the
// kernel (package services and ipvs/reconcile do); it only carries and
// counts votes. Its wire format is decoded from the network: Decode must
// reject any malformed message without panicking.
package verdict
