package wire

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Seq is one direction's TCP sequence adjustment (struct ip_vs_seq), kept by
// the kernel for connections whose payload an application helper (FTP)
// rewrote.
type Seq struct {
	InitSeq   uint32 // adjust sequence numbers from this one on
	Delta     uint32 // by this much
	PrevDelta uint32 // and by this much before InitSeq
}

// SeqData is the sequence-data option.
type SeqData struct {
	In  Seq
	Out Seq
}

// Conn is one connection or persistence template as the sync format carries
// it. Ports are in host order. IPv4 or IPv6 follows from the addresses,
// which must all be of one family.
type Conn struct {
	Protocol uint8  // IPPROTO_*; 0 for firewall-mark templates
	Flags    uint32 // Flag*
	State    uint16 // protocol state, or template state with FlagTemplate
	CPort    uint16 // client
	VPort    uint16 // virtual service
	DPort    uint16 // real server
	Fwmark   uint32 // v1 only
	// Timeout is the full timeout of the current state in seconds, not the
	// time left; 0 lets the receiver use its own default. v1 only.
	Timeout uint32
	CAddr   netip.Addr
	VAddr   netip.Addr
	DAddr   netip.Addr

	// Seq is present exactly when Flags has FlagInSeq or FlagOutSeq.
	Seq *SeqData
	// PEData and PEName belong to templates of services with a
	// persistence engine (only "sip" exists in the kernel tree). Decoding
	// gives PEData its own copy of the bytes.
	PEData []byte
	PEName string
}

// IsTemplate reports whether c is a persistence template.
func (c Conn) IsTemplate() bool { return c.Flags&FlagTemplate != 0 }

// Is6 reports whether c is an IPv6 entry.
func (c Conn) Is6() bool { return c.CAddr.Is6() }

// StateName names c's state as ipvsadm -Lnc does, templates included.
func (c Conn) StateName() string {
	if c.IsTemplate() {
		return TemplateStateName(c.State)
	}
	return StateName(c.Protocol, c.State)
}

// EffectiveTimeout is the timeout the kernel's backup gives c: Timeout if
// set, else the compiled-in default for its state, and three minutes for
// templates and protocols without a state table.
func (c Conn) EffectiveTimeout() time.Duration {
	if c.Timeout != 0 {
		return time.Duration(c.Timeout) * time.Second
	}
	if c.IsTemplate() {
		return fallbackTimeout
	}
	return DefaultTimeout(c.Protocol, c.State)
}

// Equal reports whether c and o carry the same information. A nil and an
// empty PEData are equal, as the wire cannot tell them apart.
func (c Conn) Equal(o Conn) bool {
	if c.Protocol != o.Protocol || c.Flags != o.Flags || c.State != o.State ||
		c.CPort != o.CPort || c.VPort != o.VPort || c.DPort != o.DPort ||
		c.Fwmark != o.Fwmark || c.Timeout != o.Timeout ||
		c.CAddr != o.CAddr || c.VAddr != o.VAddr || c.DAddr != o.DAddr ||
		c.PEName != o.PEName || !bytes.Equal(c.PEData, o.PEData) {
		return false
	}
	if (c.Seq == nil) != (o.Seq == nil) {
		return false
	}
	return c.Seq == nil || *c.Seq == *o.Seq
}

// checkAddrs reports whether the addresses can be put on the wire at all.
func (c *Conn) checkAddrs() error {
	if !c.CAddr.IsValid() || !c.VAddr.IsValid() || !c.DAddr.IsValid() {
		return connErr(ErrUnsupported, "missing address (caddr %v, vaddr %v, daddr %v)", c.CAddr, c.VAddr, c.DAddr)
	}
	if c.CAddr.Is4() != c.VAddr.Is4() || c.CAddr.Is4() != c.DAddr.Is4() {
		return connErr(ErrUnsupported, "mixed address families (caddr %v, vaddr %v, daddr %v)", c.CAddr, c.VAddr, c.DAddr)
	}
	if c.CAddr.Zone() != "" || c.VAddr.Zone() != "" || c.DAddr.Zone() != "" {
		return connErr(ErrUnsupported, "zoned address (caddr %v, vaddr %v, daddr %v)", c.CAddr, c.VAddr, c.DAddr)
	}
	return nil
}

// checkOptionLens reports whether the options fit their length bytes.
func (c *Conn) checkOptionLens() error {
	if len(c.PEData) > MaxPEDataLen {
		return connErr(ErrUnsupported, "persistence data of %d bytes, limit %d", len(c.PEData), MaxPEDataLen)
	}
	if len(c.PEName) > MaxPENameLen {
		return connErr(ErrUnsupported, "persistence engine name of %d bytes, limit %d", len(c.PEName), MaxPENameLen)
	}
	return nil
}

// Validate reports what would make the kernel's backup drop c, or keep it
// but silently lose part of it (ip_vs_proc_sync_conn, ip_vs_proc_conn,
// ip_vs_conn_new), as an error wrapping ErrInvalidConn (or ErrUnsupported
// for addresses and lengths no datagram can carry). The kernel logs none of
// these drops, so check every entry before injecting it.
//
// Validate does not know which persistence engines the receiving kernel has
// loaded; an entry naming one it lacks is dropped there.
func (c Conn) Validate() error {
	if err := c.checkAddrs(); err != nil {
		return err
	}
	if err := c.checkOptionLens(); err != nil {
		return err
	}
	tpl := c.IsTemplate()
	// Templates of masked persistence (netmask 0) have client 0.0.0.0.
	if (!tpl && c.CAddr.IsUnspecified()) || c.VAddr.IsUnspecified() || c.DAddr.IsUnspecified() {
		return connErr(ErrInvalidConn, "unspecified address (caddr %v, vaddr %v, daddr %v)", c.CAddr, c.VAddr, c.DAddr)
	}

	// ip_vs_sync_validate_flags.
	if c.Flags&FlagOnePacket != 0 {
		return connErr(ErrInvalidConn, "flags 0x%x: one-packet entries are never synced", c.Flags)
	}
	if tpl && c.Flags&FlagNoCPort != 0 {
		return connErr(ErrInvalidConn, "flags 0x%x: a template cannot have NoCPort", c.Flags)
	}
	// The kernel keeps these; an unknown method leaves no transmitter bound.
	if c.Flags&FlagFwdMask > FlagBypass {
		return connErr(ErrInvalidConn, "flags 0x%x: unknown forwarding method %d", c.Flags, c.Flags&FlagFwdMask)
	}

	if tpl {
		if int(c.State) >= len(templateStateNames) {
			return connErr(ErrInvalidConn, "template state %d, want NONE (0) or ASSURED (1)", c.State)
		}
	} else {
		n := StateCount(c.Protocol)
		if n == 0 {
			return connErr(ErrInvalidConn, "protocol %d has no IPVS support", c.Protocol)
		}
		if int(c.State) >= n {
			return connErr(ErrInvalidConn, "%s state %d out of range (%d states)", ProtoName(c.Protocol), c.State, n)
		}
	}

	// The kernel's master sends sequence data exactly when a sequence flag
	// is set; v0 cannot even express anything else.
	if (c.Flags&FlagSeqMask != 0) != (c.Seq != nil) {
		return connErr(ErrInvalidConn, "flags 0x%x and sequence data present=%t disagree", c.Flags, c.Seq != nil)
	}

	// ip_vs_conn_fill_param_sync drops data without a name; the backup
	// ignores a name without data; ip_vs_conn_new frees the data of
	// anything but a template.
	switch {
	case len(c.PEData) > 0 && c.PEName == "":
		return connErr(ErrInvalidConn, "persistence data without an engine name")
	case len(c.PEData) == 0 && c.PEName != "":
		return connErr(ErrInvalidConn, "persistence engine name %q without data", c.PEName)
	case len(c.PEData) > 0 && !tpl:
		return connErr(ErrInvalidConn, "persistence data on a connection that is not a template")
	case strings.IndexByte(c.PEName, 0) >= 0:
		return connErr(ErrInvalidConn, "persistence engine name %q contains NUL", c.PEName)
	}
	return nil
}

// String formats c like a line of ipvsadm -Lnc (with the full timeout in
// the expire column) followed by what ipvsadm does not show.
func (c Conn) String() string {
	var sb strings.Builder
	t := c.Timeout
	expire := fmt.Sprintf("%02d:%02d", t/60, t%60)
	fmt.Fprintf(&sb, "%-3s %-6s %-11s %-18s %-18s %s flags=0x%x(%s)",
		ProtoName(c.Protocol), expire, c.StateName(),
		addrPort(c.CAddr, c.CPort), addrPort(c.VAddr, c.VPort), addrPort(c.DAddr, c.DPort),
		c.Flags, FlagNames(c.Flags))
	if c.Fwmark != 0 {
		sb.WriteString(" fwmark=")
		sb.WriteString(strconv.FormatUint(uint64(c.Fwmark), 10))
	}
	if c.Seq != nil {
		fmt.Fprintf(&sb, " seq=in{%d,%d,%d},out{%d,%d,%d}",
			c.Seq.In.InitSeq, c.Seq.In.Delta, c.Seq.In.PrevDelta,
			c.Seq.Out.InitSeq, c.Seq.Out.Delta, c.Seq.Out.PrevDelta)
	}
	if c.PEName != "" || len(c.PEData) > 0 {
		fmt.Fprintf(&sb, " pe=%q:%q", c.PEName, c.PEData)
	}
	return sb.String()
}

func addrPort(a netip.Addr, port uint16) string {
	if !a.IsValid() {
		return "invalid:" + strconv.Itoa(int(port))
	}
	return netip.AddrPortFrom(a, port).String()
}
