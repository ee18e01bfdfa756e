package wire

import (
	"fmt"
	"strings"
	"time"
)

// TCP states (IP_VS_TCP_S_* in include/net/ip_vs.h).
const (
	TCPNone uint16 = iota
	TCPEstablished
	TCPSynSent
	TCPSynRecv
	TCPFinWait
	TCPTimeWait
	TCPClose
	TCPCloseWait
	TCPLastAck
	TCPListen
	TCPSynAck
)

// UDPNormal is the only UDP state; the kernel drops a UDP entry in any other.
const UDPNormal uint16 = 0

// SCTP states (IP_VS_SCTP_S_*).
const (
	SCTPNone uint16 = iota
	SCTPInit1
	SCTPInit
	SCTPCookieSent
	SCTPCookieReplied
	SCTPCookieWait
	SCTPCookie
	SCTPCookieEchoed
	SCTPEstablished
	SCTPShutdownSent
	SCTPShutdownReceived
	SCTPShutdownAckSent
	SCTPRejected
	SCTPClosed
)

// Persistence-template states (IP_VS_CTPL_S_*), whatever the protocol.
const (
	TemplateNone uint16 = iota
	TemplateAssured
)

// Names as /proc/net/ip_vs_conn and ipvsadm -Lnc print them, indexed by state.
var (
	tcpStateNames = []string{"NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV",
		"FIN_WAIT", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN",
		"SYNACK"}
	udpStateNames  = []string{"UDP"}
	sctpStateNames = []string{"NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED",
		"C-WAIT", "COOKIE", "C-ECHOED", "ESTABLISHED", "S-SENT", "S-RECEIVED",
		"S-ACK-SENT", "REJECTED", "CLOSED"}
	templateStateNames = []string{"NONE", "ASSURED"}
)

// Compiled-in timeouts in seconds (tcp_timeouts, udp_timeouts, sctp_timeouts).
var (
	tcpTimeouts  = []uint16{2, 15 * 60, 2 * 60, 60, 2 * 60, 2 * 60, 10, 60, 30, 2 * 60, 2 * 60}
	udpTimeouts  = []uint16{5 * 60}
	sctpTimeouts = []uint16{2, 4, 61, 61, 61, 61, 61, 61, 15 * 60, 61, 61, 61, 4, 61}
)

// fallbackTimeout is what the kernel's backup gives an entry that arrives
// without a timeout and has no per-state table: templates, AH and ESP.
const fallbackTimeout = 3 * time.Minute

// StateCount is the number of states the kernel knows for proto
// (pp->num_states), or 0 if the kernel has no IPVS support for proto and so
// drops any non-template entry for it. Debian's 6.1 kernel is built with
// TCP, UDP, SCTP, AH and ESP.
func StateCount(proto uint8) int {
	switch proto {
	case ProtoTCP:
		return len(tcpStateNames)
	case ProtoUDP:
		return len(udpStateNames)
	case ProtoSCTP:
		return len(sctpStateNames)
	case ProtoAH, ProtoESP:
		return 1
	}
	return 0
}

// StateName names a connection's state the way ipvsadm -Lnc prints it. It
// is for connections, not templates (see Conn.StateName). Like the kernel it
// returns "ERR!" for a state out of range and for AH and ESP, which have no
// names, and "NONE" for protocol 0.
func StateName(proto uint8, state uint16) string {
	var names []string
	switch proto {
	case ProtoTCP:
		names = tcpStateNames
	case ProtoUDP:
		names = udpStateNames
	case ProtoSCTP:
		names = sctpStateNames
	case ProtoIP:
		return "NONE"
	default:
		return "ERR!"
	}
	if int(state) >= len(names) {
		return "ERR!"
	}
	return names[state]
}

// TemplateStateName names a persistence template's state: "NONE",
// "ASSURED", or "ERR!".
func TemplateStateName(state uint16) string {
	if int(state) >= len(templateStateNames) {
		return "ERR!"
	}
	return templateStateNames[state]
}

// ParseState is the inverse of StateName. /proc/net/ip_vs_conn does not say
// whether a line is a template, so for protocol 0 (only ever a template) it
// also accepts the template names; for other protocols use
// ParseTemplateState when the line is known to be a template.
func ParseState(proto uint8, name string) (uint16, error) {
	var names []string
	switch proto {
	case ProtoTCP:
		names = tcpStateNames
	case ProtoUDP:
		names = udpStateNames
	case ProtoSCTP:
		names = sctpStateNames
	case ProtoIP:
		names = templateStateNames
	case ProtoAH, ProtoESP:
		// The kernel prints "ERR!" for their single state.
		names = []string{"ERR!"}
	}
	for i, n := range names {
		if strings.EqualFold(n, name) {
			return uint16(i), nil
		}
	}
	return 0, fmt.Errorf("wire: no %s state named %q", ProtoName(proto), name)
}

// ParseTemplateState is the inverse of TemplateStateName.
func ParseTemplateState(name string) (uint16, error) {
	for i, n := range templateStateNames {
		if strings.EqualFold(n, name) {
			return uint16(i), nil
		}
	}
	return 0, fmt.Errorf("wire: no template state named %q", name)
}

// DefaultTimeout is the compiled-in timeout of a connection in state, which
// the kernel's backup applies to an entry received with timeout 0 (always so
// for v0). It returns 0 for a state the kernel would reject. Operators can
// change the TCP and UDP values at run time (ipvsadm --set), so prefer the
// timeout carried by a v1 entry. Templates use their service's persistence
// timeout; see Conn.EffectiveTimeout.
func DefaultTimeout(proto uint8, state uint16) time.Duration {
	var t []uint16
	switch proto {
	case ProtoTCP:
		t = tcpTimeouts
	case ProtoUDP:
		t = udpTimeouts
	case ProtoSCTP:
		t = sctpTimeouts
	case ProtoAH, ProtoESP:
		if state == 0 {
			return fallbackTimeout
		}
		return 0
	default:
		return 0
	}
	if int(state) >= len(t) {
		return 0
	}
	return time.Duration(t[state]) * time.Second
}
