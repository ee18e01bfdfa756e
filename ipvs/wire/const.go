package wire

import (
	"net/netip"
	"strconv"
	"strings"
)

// Addresses, ports and sizes of the sync protocol.
const (
	// DefaultPort is the kernel's IP_VS_SYNC_PORT.
	DefaultPort = 8848

	// MaxConnsPerMessage is the most entries one datagram can announce:
	// nr_conns is a single byte.
	MaxConnsPerMessage = 255

	// MaxMessageLen is the largest datagram the 16-bit size field can
	// describe.
	MaxMessageLen = 65535

	// DefaultMaxLen is the kernel master's sync_maxlen when none is
	// configured and the group is IPv4: a 1500-byte MTU less the IPv4 and
	// UDP headers. The kernel backup's receive buffer is at least this big.
	DefaultMaxLen = 1500 - 20 - 8
	// DefaultMaxLen6 is the same for an IPv6 group.
	DefaultMaxLen6 = 1500 - 40 - 8

	HeaderLenV0 = 4  // struct ip_vs_sync_mesg_v0
	HeaderLenV1 = 8  // struct ip_vs_sync_mesg
	EntryLenV0  = 24 // struct ip_vs_sync_conn_v0
	EntryLenV4  = 36 // struct ip_vs_sync_v4
	EntryLenV6  = 72 // struct ip_vs_sync_v6
	SeqDataLen  = 24 // struct ip_vs_sync_conn_options

	// MaxPEDataLen is IP_VS_PEDATA_MAXLEN.
	MaxPEDataLen = 255
	// MaxPENameLen is IP_VS_PENAME_MAXLEN.
	MaxPENameLen = 16
)

// v1 entry types and option types.
const (
	TypeIPv4 = 0
	TypeIPv6 = 1

	OptSeqData = 1 // IPVS_OPT_SEQ_DATA
	OptPEData  = 2 // IPVS_OPT_PE_DATA
	OptPEName  = 3 // IPVS_OPT_PE_NAME
	// OptOptional (IPVS_OPT_F_PARAM) marks an option a receiver that does
	// not know it may skip; an unknown option without it makes the kernel
	// drop the entry.
	OptOptional = 0x40
)

// DefaultGroup is the kernel's IP_VS_SYNC_GROUP, used when no group is
// configured.
var DefaultGroup = netip.AddrFrom4([4]byte{224, 0, 0, 81})

// DefaultGroup6 is PeerLVS's IPv6 group. The kernel has no IPv6 default: an
// IPv6 sync daemon must be given its group explicitly, and without one it
// falls back to the IPv4 DefaultGroup.
var DefaultGroup6 = netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 13: 0x08, 15: 0x81})

// Connection flags (IP_VS_CONN_F_* in include/uapi/linux/ip_vs.h).
const (
	FlagFwdMask   = 0x0007 // forwarding method, see FwdMethod
	FlagMasq      = 0x0000
	FlagLocalNode = 0x0001
	FlagTunnel    = 0x0002
	FlagDRoute    = 0x0003
	FlagBypass    = 0x0004
	FlagSync      = 0x0020 // set by the receiver on every entry it creates
	FlagHashed    = 0x0040 // local bookkeeping; the kernel clears it on send
	FlagNoOutput  = 0x0080
	FlagInactive  = 0x0100
	FlagOutSeq    = 0x0200
	FlagInSeq     = 0x0400
	FlagSeqMask   = 0x0600
	FlagNoCPort   = 0x0800
	FlagTemplate  = 0x1000
	FlagOnePacket = 0x2000
	// FlagNFCT and anything above bit 15 is local to one director; v0
	// cannot carry it and v1 receivers mask it off.
	FlagNFCT = 0x10000

	// FlagBackupMask is what a receiver keeps from the wire when it creates
	// an entry (IP_VS_CONN_F_BACKUP_MASK); it then adds FlagSync.
	FlagBackupMask = FlagFwdMask | FlagNoOutput | FlagInactive | FlagSeqMask |
		FlagNoCPort | FlagTemplate
	// FlagBackupUpdMask is what a receiver changes on an entry it already
	// has (IP_VS_CONN_F_BACKUP_UPD_MASK); other flag changes are ignored.
	FlagBackupUpdMask = FlagInactive | FlagSeqMask
)

// IP protocol numbers that appear in entries.
const (
	ProtoIP     = 0 // persistence templates of firewall-mark services
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoESP    = 50
	ProtoAH     = 51
	ProtoICMPv6 = 58
	ProtoSCTP   = 132
)

// FwdMethod names the forwarding method in flags the way ipvsadm prints it.
func FwdMethod(flags uint32) string {
	switch flags & FlagFwdMask {
	case FlagMasq:
		return "Masq"
	case FlagLocalNode:
		return "Local"
	case FlagTunnel:
		return "Tunnel"
	case FlagDRoute:
		return "Route"
	case FlagBypass:
		return "Bypass"
	}
	return "Fwd" + strconv.Itoa(int(flags&FlagFwdMask))
}

var flagNames = [...]struct {
	bit  uint32
	name string
}{
	{FlagSync, "Sync"},
	{FlagHashed, "Hashed"},
	{FlagNoOutput, "NoOutput"},
	{FlagInactive, "Inactive"},
	{FlagOutSeq, "OutSeq"},
	{FlagInSeq, "InSeq"},
	{FlagNoCPort, "NoCPort"},
	{FlagTemplate, "Template"},
	{FlagOnePacket, "OnePacket"},
	{FlagNFCT, "NFCT"},
}

// FlagNames spells flags out, forwarding method first, for logs and test
// failures: 0x183 is "Route|NoOutput|Inactive". Bits without a name come last
// in hex.
func FlagNames(flags uint32) string {
	var sb strings.Builder
	sb.WriteString(FwdMethod(flags))
	rest := flags &^ FlagFwdMask
	for _, f := range flagNames {
		if rest&f.bit != 0 {
			sb.WriteByte('|')
			sb.WriteString(f.name)
			rest &^= f.bit
		}
	}
	if rest != 0 {
		sb.WriteString("|0x")
		sb.WriteString(strconv.FormatUint(uint64(rest), 16))
	}
	return sb.String()
}

// ProtoName names a protocol the way /proc/net/ip_vs_conn does
// (ip_vs_proto_name): "TCP", "UDP", "SCTP", "IP", "ICMP", "ICMPv6", else
// "IP_<n>".
func ProtoName(proto uint8) string {
	switch proto {
	case ProtoIP:
		return "IP"
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoSCTP:
		return "SCTP"
	case ProtoICMP:
		return "ICMP"
	case ProtoICMPv6:
		return "ICMPv6"
	}
	return "IP_" + strconv.Itoa(int(proto))
}

// ParseProtoName is the inverse of ProtoName.
func ParseProtoName(name string) (uint8, bool) {
	switch name {
	case "IP":
		return ProtoIP, true
	case "TCP":
		return ProtoTCP, true
	case "UDP":
		return ProtoUDP, true
	case "SCTP":
		return ProtoSCTP, true
	case "ICMP":
		return ProtoICMP, true
	case "ICMPv6":
		return ProtoICMPv6, true
	}
	if n, ok := strings.CutPrefix(name, "IP_"); ok {
		v, err := strconv.ParseUint(n, 10, 8)
		if err == nil {
			return uint8(v), true
		}
	}
	return 0, false
}
