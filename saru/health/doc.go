// Package health checks real servers the way ldirectord and keepalived do
// (Probe: tcp, udp, http/https, smtp/pop3/imap greetings, dns, icmp, an
// external command) and keeps one director's own verdict on each of them
// (Monitor: pacing, retries, fall and rise counts).
//
// It must not decide what the fleet applies (package verdict does, from
// every director's verdicts) nor touch the kernel, and it must not log:
// results and verdicts are returned for the caller to act on. A probe
// reads bounded replies from servers that may answer anything, and must
// never panic on them.
package health
