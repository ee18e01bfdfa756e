// Package traffic generates and answers the test traffic of the PeerLVS lab:
// an echo server for the real servers, a client that holds many long-lived
// TCP connections through the virtual service and tells which of them
// survived a director failover (and how long they stalled), and a UDP flow
// generator. The lab scenarios run it as the static binary labtraffic inside
// the network namespaces of the qemu guest.
//
// It is lab-only test tooling: the product (cmd/, syncd/, saru/, ipvs/,
// filter/) must never import it.
//
// # Wire protocol
//
// Everything is line-based text so that a capture is readable. The echo
// server answers every line (TCP) or datagram (UDP) with its own name, one
// space and the line itself, so a client learns which real server answered:
//
//	client: probe 3 17\n        server: rs1 probe 3 17\n
//
// The holder sends "open ID" once to prove a new connection end to end,
// then "probe ID SEQ" every interval; the short connections of -rate send
// "new N"; UDP flows send "udp FLOW SEQ". Anything other than the exact echo
// breaks a held connection.
//
// # Holder reports
//
// Holder.Report and Holder.Serve produce a Report, printed as one line of
// JSON. Lab scenarios parse these names, so they are stable:
//
//	t                      seconds since the holder started
//	time                   wall clock, RFC 3339
//	interval_s             seconds since the previous report
//	final                  true on the report printed at exit
//	target                 VIP:PORT
//	conns                  connections asked for (-conns); always equals
//	                       connecting + open + broken + never_opened
//	connecting             still opening (dial and first echo, with retries)
//	open                   established and not broken: ok + stalled
//	ok                     open and never waited longer than -stall
//	stalled                open, but waited longer than -stall for a reply at
//	                       least once (and answered then), or is waiting so now
//	stalled_now            the subset of stalled waiting longer than -stall now
//	broken                 reset, closed, answered wrongly, moved to another
//	                       real server, or silent for longer than -break;
//	                       never reopened, so survivors are counted honestly
//	never_opened           gave up after the connect retries
//	interval_broken        connections that broke since the previous report
//	broken_by              broken connections by cause: "reset", "eof",
//	                       "timeout", "wrong_reply", "server_changed",
//	                       "unreachable", "error"
//	probes                 answered probes, all connections, since start
//	max_stall_ms           longest time from a probe to its reply since start
//	                       (an unanswered probe counts with its age so far)
//	interval_max_stall_ms  the same, for probes answered or waiting since the
//	                       previous report: the stall one event caused
//	servers                open connections per real server name
//	new_attempts, new_ok   -rate connections (connect, one echo, close)
//	                       finished since the previous report, and how many
//	                       of them succeeded; counted when they finish
//	new_errors             failed new connections since the previous report,
//	                       by cause (as broken_by, plus "refused")
//	new_attempts_total,
//	new_ok_total           the same since start
//	per_conn               one object per connection (omitted with
//	                       -per-conn=false): id, local ("ip:port"), server,
//	                       state ("connecting", "ok", "stalled", "broken",
//	                       "never_opened"), max_stall_ms, waiting_ms (age of
//	                       the unanswered probe, 0 if none), stalls (probes
//	                       answered later than -stall), probes (answered),
//	                       err (why it broke or never opened; omitted if
//	                       none)
//
// Only one probe per connection is in flight, so the gap between two replies
// is the stall plus at most one interval; max_stall_ms therefore covers gaps
// too. A broken connection's last, unanswered probe is not a stall: it is
// counted in broken instead.
//
// # UDP summary
//
// UDPFlows.Run returns a UDPSummary, printed as one line of JSON:
//
//	t                     seconds the run took
//	target, flows         as asked
//	rate_per_flow         datagrams per second, per flow
//	sent, received        datagrams sent, and distinct ones echoed back
//	dup, bad              duplicate replies; replies that are not an echo of
//	                      what this flow sent
//	lost, loss            sent - received, and that as a fraction of sent
//	send_errors           sends the kernel refused (for example after an
//	                      ICMP port unreachable); not counted in sent
//	zero_reply_flows      flows that got no reply at all
//	changed_server_flows  flows whose replies came from another real server
//	                      than before: re-balanced
//	max_gap_ms            longest time a flow went without a reply while it
//	                      was sending (the send period if nothing is lost)
//	servers               flows per real server (the first that answered)
//	per_flow              one object per flow (omitted with -per-flow=false):
//	                      id, local ("ip:port"), sent, received, dup, bad,
//	                      lost, loss, send_errors, servers (in order of first
//	                      reply), server_changes, max_gap_ms, err (last read
//	                      or send error, omitted if none)
//
// # Echo server statistics
//
// EchoServer.Stats (printed by labtraffic echo-server as it exits): name,
// accepted and active TCP connections, lines and datagrams answered, and
// accept_errors survived.
package traffic
