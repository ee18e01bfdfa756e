package peer

import (
	"fmt"
	"net/netip"

	"github.com/peerlvs/peerlvs/syncd/table"
)

// An entry on the peer wire is a 12-byte peer part followed by the entry
// exactly as the kernel's v1 sync format lays it out (without the padding
// to 4 bytes), so that the relay copies the kernel's fields one to one and
// a reader of docs/protocol.md needs to learn one entry format, not two:
//
//	0  owner    be16  node id of the owner, never 0
//	2  version  be32  the entry's version (see package table)
//	6  ttl      be32  seconds the entry has left to live at the sender
//	10 eflags   u8    bit 0: removed (the entry is gone; the rest says which)
//	11 reserved u8    0
//	12 kernel v1 entry: type u8 (0 IPv4, 1 IPv6), protocol u8, ver_size be16,
//	   flags be32, state be16, cport, vport, dport be16, fwmark be32,
//	   timeout be32, caddr, vaddr, daddr, then options [type u8][len u8][data]
const (
	entryPeerLen = 12
	entryV4Len   = 36
	entryV6Len   = 72

	// EntryRemoved marks an entry that its owner removed.
	EntryRemoved = 0x01

	optSeqData  = 1
	optPEData   = 2
	optPEName   = 3
	optOptional = 0x40
	seqDataLen  = 24
	maxPEName   = 16 // IP_VS_PENAME_MAXLEN
	maxPEData   = 255
	flagTmpl    = 0x1000 // IP_VS_CONN_F_TEMPLATE

	// MaxEntryLen is the largest encoded entry: IPv6, sequence data, the
	// longest persistence-engine data and name.
	MaxEntryLen = entryPeerLen + entryV6Len + 2 + seqDataLen + 2 + maxPEData + 2 + maxPEName
)

// EntryLen is the encoded size of e.
func EntryLen(e *table.Entry) int {
	n := entryPeerLen + entryV4Len
	if !e.CAddr.Is4() {
		n = entryPeerLen + entryV6Len
	}
	if e.Seq != nil {
		n += 2 + seqDataLen
	}
	if len(e.PEData) > 0 {
		n += 2 + len(e.PEData)
	}
	if e.PEName != "" {
		n += 2 + len(e.PEName)
	}
	return n
}

// AppendEntry appends e with ttl seconds left to dst; removed marks a
// removal.
func AppendEntry(dst []byte, e *table.Entry, ttl uint32, removed bool) ([]byte, error) {
	is4 := e.CAddr.Is4()
	switch {
	case e.Owner == 0:
		return dst, fmt.Errorf("peer: entry without owner")
	case !e.CAddr.IsValid() || !e.VAddr.IsValid() || !e.DAddr.IsValid() || e.VAddr.Is4() != is4 || e.DAddr.Is4() != is4:
		return dst, fmt.Errorf("peer: entry addresses %v %v %v not all of one family", e.CAddr, e.VAddr, e.DAddr)
	case len(e.PEData) > maxPEData || len(e.PEName) > maxPEName:
		return dst, fmt.Errorf("peer: persistence data of %d bytes or engine name of %d bytes, at most %d and %d", len(e.PEData), len(e.PEName), maxPEData, maxPEName)
	}
	size := EntryLen(e)
	n := len(dst)
	dst = append(dst, make([]byte, size)...)
	b := dst[n:]
	be.PutUint16(b[0:], uint16(e.Owner))
	be.PutUint32(b[2:], e.Version)
	be.PutUint32(b[6:], ttl)
	if removed {
		b[10] = EntryRemoved
	}
	k := b[entryPeerLen:]
	k[1] = e.Proto
	be.PutUint16(k[2:], uint16(size-entryPeerLen))
	be.PutUint32(k[4:], e.Flags)
	be.PutUint16(k[8:], e.State)
	be.PutUint16(k[10:], e.CPort)
	be.PutUint16(k[12:], e.VPort)
	be.PutUint16(k[14:], e.DPort)
	be.PutUint32(k[16:], e.Fwmark)
	be.PutUint32(k[20:], e.Timeout)
	p := entryV4Len
	if is4 {
		c, v, d := e.CAddr.As4(), e.VAddr.As4(), e.DAddr.As4()
		copy(k[24:], c[:])
		copy(k[28:], v[:])
		copy(k[32:], d[:])
	} else {
		k[0] = 1
		c, v, d := e.CAddr.As16(), e.VAddr.As16(), e.DAddr.As16()
		copy(k[24:], c[:])
		copy(k[40:], v[:])
		copy(k[56:], d[:])
		p = entryV6Len
	}
	// Options in the kernel's order, so that the bytes match its own.
	if q := e.Seq; q != nil {
		k[p], k[p+1] = optSeqData, seqDataLen
		for i, w := range q {
			be.PutUint32(k[p+2+4*i:], w)
		}
		p += 2 + seqDataLen
	}
	if len(e.PEData) > 0 {
		k[p], k[p+1] = optPEData, byte(len(e.PEData))
		p += 2 + copy(k[p+2:], e.PEData)
	}
	if e.PEName != "" {
		k[p], k[p+1] = optPEName, byte(len(e.PEName))
		copy(k[p+2:], e.PEName)
	}
	return dst, nil
}

func payloadErr(format string, args ...any) error {
	return fmt.Errorf("peer: %w: %s", ErrPayload, fmt.Sprintf(format, args...))
}

// DecodeEntry parses the entry at the start of b into e (all of e is
// overwritten) and returns its length, its ttl and whether it is a removal.
// Persistence-engine data gets its own copy; nothing else allocates.
func DecodeEntry(b []byte, e *table.Entry) (n int, ttl uint32, removed bool, err error) {
	if len(b) < entryPeerLen+entryV4Len {
		return 0, 0, false, payloadErr("entry: %d bytes left, at least %d", len(b), entryPeerLen+entryV4Len)
	}
	owner := be.Uint16(b[0:])
	if owner == 0 {
		return 0, 0, false, payloadErr("entry: owner 0")
	}
	if b[10]&^EntryRemoved != 0 || b[11] != 0 {
		return 0, 0, false, payloadErr("entry: reserved bits 0x%02x 0x%02x", b[10], b[11])
	}
	k := b[entryPeerLen:]
	vs := be.Uint16(k[2:])
	size := int(vs & 0x0fff)
	var base int
	switch {
	case vs>>12 != 0:
		return 0, 0, false, payloadErr("entry: version %d", vs>>12)
	case k[0] == 0:
		base = entryV4Len
	case k[0] == 1:
		base = entryV6Len
	default:
		return 0, 0, false, payloadErr("entry: type %d", k[0])
	}
	if size < base || size > len(k) {
		return 0, 0, false, payloadErr("entry: size %d, type %d needs %d, %d bytes left", size, k[0], base, len(k))
	}
	*e = table.Entry{
		Key: table.Key{
			Proto: k[1],
			CPort: be.Uint16(k[10:]),
			VPort: be.Uint16(k[12:]),
		},
		Flags:   be.Uint32(k[4:]),
		State:   be.Uint16(k[8:]),
		DPort:   be.Uint16(k[14:]),
		Fwmark:  be.Uint32(k[16:]),
		Timeout: be.Uint32(k[20:]),
		Owner:   table.NodeID(owner),
		Version: be.Uint32(b[2:]),
	}
	e.Template = e.Flags&flagTmpl != 0
	if base == entryV4Len {
		e.CAddr = netip.AddrFrom4([4]byte(k[24:28]))
		e.VAddr = netip.AddrFrom4([4]byte(k[28:32]))
		e.DAddr = netip.AddrFrom4([4]byte(k[32:36]))
	} else {
		e.CAddr = netip.AddrFrom16([16]byte(k[24:40]))
		e.VAddr = netip.AddrFrom16([16]byte(k[40:56]))
		e.DAddr = netip.AddrFrom16([16]byte(k[56:72]))
	}
	if err := decodeOptions(k[base:size], e); err != nil {
		return 0, 0, false, err
	}
	if e.PEName != "" || len(e.PEData) > 0 {
		e.PE = table.PEHash(e.PEName, e.PEData)
	}
	return entryPeerLen + size, be.Uint32(b[6:]), b[10]&EntryRemoved != 0, nil
}

func decodeOptions(o []byte, e *table.Entry) error {
	var seen uint8
	for len(o) > 0 {
		if len(o) < 2 {
			return payloadErr("entry: option header cut short")
		}
		typ, l := o[0], int(o[1])
		if l == 0 || 2+l > len(o) {
			return payloadErr("entry: option %d of length %d, %d bytes left", typ, l, len(o)-2)
		}
		data := o[2 : 2+l]
		o = o[2+l:]
		known := typ &^ optOptional
		if known >= optSeqData && known <= optPEName {
			if seen&(1<<known) != 0 {
				return payloadErr("entry: option %d twice", known)
			}
			seen |= 1 << known
		}
		switch known {
		case optSeqData:
			if l != seqDataLen {
				return payloadErr("entry: sequence data of %d bytes", l)
			}
			var q table.SeqData
			for i := range q {
				q[i] = be.Uint32(data[4*i:])
			}
			e.Seq = &q
		case optPEData:
			e.PEData = append([]byte(nil), data...)
		case optPEName:
			if l > maxPEName {
				return payloadErr("entry: engine name of %d bytes", l)
			}
			if string(data) == "sip" {
				e.PEName = "sip"
			} else {
				e.PEName = string(data)
			}
		default:
			if typ&optOptional == 0 {
				return payloadErr("entry: unknown mandatory option %d", typ)
			}
		}
	}
	return nil
}

// EntryReader walks the entries of an UPDATE or BULK payload.
type EntryReader struct {
	b    []byte
	left int
	err  error
}

// Next decodes the next entry into e. It returns false at the end or on
// a malformed entry; then Err tells which.
func (r *EntryReader) Next(e *table.Entry) (ttl uint32, removed bool, ok bool) {
	if r.err != nil || r.left == 0 {
		if r.err == nil && len(r.b) != 0 {
			r.err = payloadErr("%d bytes after the last entry", len(r.b))
		}
		return 0, false, false
	}
	n, ttl, removed, err := DecodeEntry(r.b, e)
	if err != nil {
		r.err = err
		return 0, false, false
	}
	r.b = r.b[n:]
	r.left--
	return ttl, removed, true
}

// Err is nil if every announced entry decoded and nothing followed them.
func (r *EntryReader) Err() error {
	if r.err == nil && r.left == 0 && len(r.b) != 0 {
		r.err = payloadErr("%d bytes after the last entry", len(r.b))
	}
	if r.err == nil && r.left != 0 {
		return payloadErr("%d entries not read", r.left)
	}
	return r.err
}
