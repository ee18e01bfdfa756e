// Package procconn parses the kernel's IPVS connection tables as printed in
// /proc/net/ip_vs_conn and /proc/net/ip_vs_conn_sync.
//
// syncd uses it once at start to seed its table with the connections the
// local kernel already holds, because the kernel has no netlink command that
// lists connections. The snapshot is lossy, and this package says so rather
// than hiding it: the files carry no connection flags (so no forwarding
// method), no firewall mark and no full state timeout, only the seconds left
// before the entry expires. Callers must fill in what is missing from their
// configured services and destinations.
//
// The package must not do any I/O beyond reading the reader it is given (and
// the file ReadFile opens), and must not invent values for fields a file does
// not have: PEName and PEData are empty for ip_vs_conn_sync, Origin is empty
// for ip_vs_conn.
package procconn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Origin values printed by ip_vs_conn_sync.
const (
	// OriginLocal marks a connection the local kernel created from traffic.
	OriginLocal = "LOCAL"
	// OriginSync marks a connection the local kernel learnt from a sync
	// message (IP_VS_CONN_F_SYNC).
	OriginSync = "SYNC"
)

// Entry is one line of the connection table.
type Entry struct {
	// Protocol is the IP protocol number. The kernel prints ESP and AH as
	// "IP_50" and "IP_51", and the firewall-mark "any protocol" case as "IP".
	Protocol uint8
	CAddr    netip.Addr
	CPort    uint16 // 0 in persistence templates
	VAddr    netip.Addr
	VPort    uint16
	DAddr    netip.Addr
	DPort    uint16
	// State is the state name exactly as printed ("ESTABLISHED", "UDP",
	// "NONE", "ASSURED", "C-SENT", and also the kernel's "ERR!" or "?").
	State string
	// Expires is the time left before the entry expires, to the second.
	Expires time.Duration
	// PEName and PEData are the persistence engine and its data
	// (ip_vs_conn only; both empty when the connection has none).
	PEName string
	PEData string
	// Origin is OriginLocal or OriginSync (ip_vs_conn_sync only).
	Origin string
}

// Kind tells which of the two files a header line belongs to.
type Kind int

const (
	// KindConn is /proc/net/ip_vs_conn.
	KindConn Kind = iota + 1
	// KindSync is /proc/net/ip_vs_conn_sync.
	KindSync
)

// LineError reports a line Parse could not understand.
type LineError struct {
	Line int // 1-based
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// ErrNoHeader is returned (inside a LineError) when the input does not start
// with one of the two header lines. An empty input is an error too: the
// kernel always prints the header, so an empty read means something else
// went wrong and must not pass for an empty table.
var ErrNoHeader = errors.New("missing header line (want \"Pro FromIP ...\" from /proc/net/ip_vs_conn or ip_vs_conn_sync)")

// maxLine bounds a line well above the longest the kernel prints (three
// 39-character IPv6 addresses, a 16-byte PE name and 255 bytes of PE data),
// so that garbage input cannot make Parse buffer without limit.
const maxLine = 4096

// ReadFile reads and parses one of the two files.
func ReadFile(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("procconn: %w", err)
	}
	defer f.Close()
	entries, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("procconn: %s: %w", path, err)
	}
	return entries, nil
}

// Parse reads the whole of r, which must hold the contents of
// /proc/net/ip_vs_conn or /proc/net/ip_vs_conn_sync (told apart by the
// header). Errors are *LineError unless reading r failed.
func Parse(r io.Reader) ([]Entry, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxLine)
	var (
		entries []Entry
		kind    Kind
		lineNo  int
	)
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), "\r")
		if kind == 0 {
			k, ok := HeaderKind(line)
			if !ok {
				return nil, &LineError{Line: lineNo, Err: ErrNoHeader}
			}
			kind = k
			continue
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		e, err := parseLine(line, kind)
		if err != nil {
			return nil, &LineError{Line: lineNo, Err: err}
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &LineError{Line: lineNo + 1, Err: fmt.Errorf("line longer than %d bytes", maxLine)}
		}
		return nil, fmt.Errorf("reading after line %d: %w", lineNo, err)
	}
	if kind == 0 {
		return nil, &LineError{Line: 1, Err: ErrNoHeader}
	}
	return entries, nil
}

// HeaderKind tells whether line is the header of one of the two files. It
// looks only at the column names, so spacing changes between kernel versions
// (and kernels before 2.6.37 that printed no PE columns) are accepted.
func HeaderKind(line string) (Kind, bool) {
	f := strings.Fields(line)
	base := []string{"Pro", "FromIP", "FPrt", "ToIP", "TPrt", "DestIP", "DPrt", "State"}
	if len(f) < len(base)+1 {
		return 0, false
	}
	for i, name := range base {
		if f[i] != name {
			return 0, false
		}
	}
	rest := f[len(base):]
	switch {
	case len(rest) == 2 && rest[0] == "Origin" && rest[1] == "Expires":
		return KindSync, true
	case len(rest) == 1 && rest[0] == "Expires",
		len(rest) == 3 && rest[0] == "Expires" && rest[1] == "PEName" && rest[2] == "PEData":
		return KindConn, true
	}
	return 0, false
}

// parseLine parses one data line. The kernel's format is
// "%-3s %08X %04X %08X %04X %s %04X %-11s %7u%s" for ip_vs_conn (the last %s
// being empty or " <pename> <pedata>") and the same with "%-6s" (origin)
// before the expiry for ip_vs_conn_sync; IPv6 addresses are printed with %pI6.
func parseLine(line string, kind Kind) (Entry, error) {
	var e Entry
	fixed := 9
	if kind == KindSync {
		fixed = 10
	}
	fields, rest := splitFields(line, fixed)
	if len(fields) < fixed {
		return e, fmt.Errorf("%d fields, want at least %d", len(fields), fixed)
	}
	var err error
	if e.Protocol, err = parseProto(fields[0]); err != nil {
		return e, err
	}
	if e.CAddr, err = parseAddr(fields[1]); err != nil {
		return e, fmt.Errorf("client address: %w", err)
	}
	if e.CPort, err = parsePort(fields[2]); err != nil {
		return e, fmt.Errorf("client port: %w", err)
	}
	if e.VAddr, err = parseAddr(fields[3]); err != nil {
		return e, fmt.Errorf("virtual address: %w", err)
	}
	if e.VPort, err = parsePort(fields[4]); err != nil {
		return e, fmt.Errorf("virtual port: %w", err)
	}
	if e.DAddr, err = parseAddr(fields[5]); err != nil {
		return e, fmt.Errorf("destination address: %w", err)
	}
	if e.DPort, err = parsePort(fields[6]); err != nil {
		return e, fmt.Errorf("destination port: %w", err)
	}
	// Virtual and client address always share a family; the destination may
	// differ (IPv4-in-IPv6 tunnelling), so it is not checked.
	if e.CAddr.Is4() != e.VAddr.Is4() {
		return e, fmt.Errorf("client address %s and virtual address %s differ in family", e.CAddr, e.VAddr)
	}
	e.State = fields[7]
	exp := fields[8]
	if kind == KindSync {
		e.Origin = fields[8]
		if e.Origin != OriginLocal && e.Origin != OriginSync {
			return e, fmt.Errorf("origin %q is neither %s nor %s", e.Origin, OriginLocal, OriginSync)
		}
		exp = fields[9]
	}
	secs, err := strconv.ParseUint(exp, 10, 32)
	if err != nil {
		return e, fmt.Errorf("expires %q: not a count of seconds", exp)
	}
	e.Expires = time.Duration(secs) * time.Second

	if kind == KindSync {
		if strings.TrimSpace(rest) != "" {
			return e, fmt.Errorf("unexpected text after expiry: %q", clip(rest))
		}
		return e, nil
	}
	if strings.TrimSpace(rest) == "" {
		return e, nil
	}
	// The kernel appends " <name> <data>" and the data is copied verbatim
	// (for SIP, the Call-ID), so it is taken as the rest of the line rather
	// than as a field.
	if rest[0] != ' ' {
		return e, fmt.Errorf("unexpected text after expiry: %q", clip(rest))
	}
	rest = rest[1:]
	name, data, _ := strings.Cut(rest, " ")
	if name == "" {
		return e, fmt.Errorf("persistence engine name missing after expiry: %q", clip(rest))
	}
	e.PEName = name
	e.PEData = data
	return e, nil
}

// splitFields returns the first n space-separated fields of line and the
// unparsed remainder, which starts at the separator after the n-th field.
func splitFields(line string, n int) ([]string, string) {
	fields := make([]string, 0, n)
	i := 0
	for len(fields) < n {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		if i == len(line) {
			return fields, ""
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' {
			j++
		}
		fields = append(fields, line[i:j])
		i = j
	}
	return fields, line[i:]
}

// protoNames are the names ip_vs_proto_name prints; anything else is
// printed as "IP_<number>".
var protoNames = map[string]uint8{
	"IP":     0,
	"ICMP":   1,
	"TCP":    6,
	"UDP":    17,
	"ICMPv6": 58,
	"SCTP":   132,
}

func parseProto(s string) (uint8, error) {
	if p, ok := protoNames[s]; ok {
		return p, nil
	}
	if num, ok := strings.CutPrefix(s, "IP_"); ok && num != "" && num[0] != '+' {
		if n, err := strconv.ParseUint(num, 10, 8); err == nil {
			return uint8(n), nil
		}
	}
	return 0, fmt.Errorf("protocol %q: not a name the kernel prints (TCP, UDP, SCTP, ICMP, ICMPv6, IP, IP_<n>)", clip(s))
}

// parseAddr accepts the two forms the kernel prints: %08X for IPv4 (the
// address in host order, i.e. 0A000001 is 10.0.0.1) and %pI6 for IPv6
// (eight groups of four hex digits). Compressed IPv6 is accepted too, in
// case a kernel switches to %pI6c; zones and dotted quads are not, since no
// kernel prints them.
func parseAddr(s string) (netip.Addr, error) {
	if strings.IndexByte(s, ':') < 0 {
		if len(s) != 8 {
			return netip.Addr{}, fmt.Errorf("%q: want 8 hex digits or an IPv6 address", clip(s))
		}
		v, err := parseHex(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%q: %w", s, err)
		}
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), nil
	}
	if strings.ContainsAny(s, "%.") {
		return netip.Addr{}, fmt.Errorf("%q: not an address as the kernel prints it", clip(s))
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return netip.Addr{}, fmt.Errorf("%q: not an IPv6 address", clip(s))
	}
	return a, nil
}

// parsePort accepts %04X; shorter forms are accepted because the value, not
// the width, is what matters.
func parsePort(s string) (uint16, error) {
	if len(s) == 0 || len(s) > 4 {
		return 0, fmt.Errorf("%q: want 4 hex digits", clip(s))
	}
	v, err := parseHex(s)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	return uint16(v), nil
}

// parseHex parses up to 8 hex digits. strconv would also accept
// underscores or signs in some modes; the kernel prints neither.
func parseHex(s string) (uint32, error) {
	var v uint32
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, errors.New("not hexadecimal")
		}
		v = v<<4 | uint32(d)
	}
	return v, nil
}

// clip keeps error messages short when the input is garbage.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// Format writes entries in the kernel's own format for the given file. It
// exists so tests and fakes of the kernel can produce input for Parse; note
// that it prints IPv6 addresses in the kernel's expanded %pI6 form.
func Format(w io.Writer, kind Kind, entries []Entry) error {
	var b bytes.Buffer
	switch kind {
	case KindConn:
		b.WriteString("Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n")
	case KindSync:
		b.WriteString("Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n")
	default:
		return fmt.Errorf("procconn: unknown kind %d", kind)
	}
	for _, e := range entries {
		fmt.Fprintf(&b, "%-3s %s %04X %s %04X %s %04X %-11s ",
			protoName(e.Protocol), formatAddr(e.CAddr), e.CPort,
			formatAddr(e.VAddr), e.VPort, formatAddr(e.DAddr), e.DPort, e.State)
		secs := uint32(e.Expires / time.Second)
		if kind == KindSync {
			fmt.Fprintf(&b, "%-6s %7d\n", e.Origin, secs)
			continue
		}
		fmt.Fprintf(&b, "%7d", secs)
		if e.PEName != "" {
			fmt.Fprintf(&b, " %s %s", e.PEName, e.PEData)
		}
		b.WriteByte('\n')
	}
	_, err := w.Write(b.Bytes())
	return err
}

func protoName(p uint8) string {
	for name, n := range protoNames {
		if n == p {
			return name
		}
	}
	return "IP_" + strconv.Itoa(int(p))
}

func formatAddr(a netip.Addr) string {
	if a.Is4() {
		b := a.As4()
		return fmt.Sprintf("%02X%02X%02X%02X", b[0], b[1], b[2], b[3])
	}
	b := a.As16()
	var s strings.Builder
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			s.WriteByte(':')
		}
		fmt.Fprintf(&s, "%02x%02x", b[i], b[i+1])
	}
	return s.String()
}
