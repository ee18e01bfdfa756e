package wire

import (
	"encoding/binary"
	"net/netip"
)

var be = binary.BigEndian

// Message is one sync datagram.
type Message struct {
	Version int // 0 or 1
	SyncID  uint8
	Conns   []Conn
}

// Decode parses one datagram. See DecodeInto.
func Decode(b []byte) (Message, error) {
	var m Message
	err := DecodeInto(b, &m)
	return m, err
}

// DecodeInto parses one datagram into m, reusing the capacity of m.Conns so
// that a receive loop allocates nothing for ordinary entries. Entries left
// there by an earlier call are overwritten: copy out the ones to keep.
// Sequence and persistence data, which only FTP-helper connections and SIP
// templates carry, get fresh memory, so entries copied out stay intact.
//
// It tells v0 from v1 as the kernel does and checks the structure the kernel
// checks (see the package documentation); it does not check the meaning of
// entries, which is Conn.Validate's job. On error m holds the entries before
// the bad one, and the error is an *Error wrapping a sentinel.
func DecodeInto(b []byte, m *Message) error {
	conns := m.Conns[:0]
	m.Conns = conns
	m.Version = 0
	m.SyncID = 0
	if len(b) < HeaderLenV0 {
		return decodeErr(-1, 0, ErrTruncated, "datagram of %d bytes is shorter than the %d-byte v0 header", len(b), HeaderLenV0)
	}
	if size := int(be.Uint16(b[2:])); size != len(b) {
		return decodeErr(-1, 2, ErrBadSize, "size field %d, datagram is %d bytes", size, len(b))
	}
	m.SyncID = b[1]
	// The kernel reads a datagram as v1 only if reserved (the old nr_conns)
	// is 0, version is 1 and spare is 0, and as v0 otherwise. A v0 datagram
	// with no entries has nothing after its header, so a leading 0 followed
	// by more bytes can only be a broken v1 header.
	if b[0] == 0 && len(b) > HeaderLenV0 {
		if len(b) < HeaderLenV1 {
			return decodeErr(-1, 0, ErrTruncated, "datagram of %d bytes is shorter than the %d-byte v1 header", len(b), HeaderLenV1)
		}
		if b[5] != 1 {
			return decodeErr(-1, 5, ErrBadVersion, "version %d, want 1", int8(b[5]))
		}
		if spare := be.Uint16(b[6:]); spare != 0 {
			return decodeErr(-1, 6, ErrReserved, "spare 0x%04x (the kernel would take this for an empty v0 message)", spare)
		}
		m.Version = 1
		return decodeV1(b, m)
	}
	return decodeV0(b, m)
}

// nextConn extends conns by one slot, reusing old capacity, and returns the
// slot's old persistence-engine name so that a repeated name costs nothing.
func nextConn(m *Message) (*Conn, string) {
	n := len(m.Conns)
	if n < cap(m.Conns) {
		m.Conns = m.Conns[:n+1]
	} else {
		m.Conns = append(m.Conns, Conn{})
	}
	c := &m.Conns[n]
	old := c.PEName
	*c = Conn{}
	return c, old
}

func decodeV1(b []byte, m *Message) error {
	nr := int(b[4])
	off := HeaderLenV1
	for i := range nr {
		if len(b)-off < EntryLenV4 {
			return decodeErr(i, off, ErrTruncated, "%d bytes left, an entry needs at least %d", max(len(b)-off, 0), EntryLenV4)
		}
		vs := be.Uint16(b[off+2:])
		size := int(vs & 0x0fff)
		if off+size > len(b) {
			return decodeErr(i, off+2, ErrTruncated, "entry size %d runs past the datagram end (%d bytes left)", size, len(b)-off)
		}
		if v := vs >> 12; v != 0 {
			return decodeErr(i, off+2, ErrBadVersion, "entry version %d, want 0", v)
		}
		var hdr int
		switch t := b[off]; t {
		case TypeIPv4:
			hdr = EntryLenV4
		case TypeIPv6:
			hdr = EntryLenV6
		default:
			return decodeErr(i, off, ErrBadType, "type %d, want 0 (IPv4) or 1 (IPv6)", t)
		}
		if size < hdr {
			return decodeErr(i, off+2, ErrBadSize, "entry size %d, a type %d entry needs at least %d", size, b[off], hdr)
		}

		c, oldName := nextConn(m)
		e := b[off : off+size]
		c.Protocol = e[1]
		c.Flags = be.Uint32(e[4:])
		c.State = be.Uint16(e[8:])
		c.CPort = be.Uint16(e[10:])
		c.VPort = be.Uint16(e[12:])
		c.DPort = be.Uint16(e[14:])
		c.Fwmark = be.Uint32(e[16:])
		c.Timeout = be.Uint32(e[20:])
		if hdr == EntryLenV4 {
			c.CAddr = netip.AddrFrom4([4]byte(e[24:28]))
			c.VAddr = netip.AddrFrom4([4]byte(e[28:32]))
			c.DAddr = netip.AddrFrom4([4]byte(e[32:36]))
		} else {
			c.CAddr = netip.AddrFrom16([16]byte(e[24:40]))
			c.VAddr = netip.AddrFrom16([16]byte(e[40:56]))
			c.DAddr = netip.AddrFrom16([16]byte(e[56:72]))
		}
		if err := decodeOptions(e, hdr, i, off, c, oldName); err != nil {
			m.Conns = m.Conns[:i]
			return err
		}

		// The next entry starts 4-aligned; the padding after the last
		// entry may be absent (the kernel never writes it).
		next := off + ((size + 3) &^ 3)
		for p := off + size; p < next && p < len(b); p++ {
			if b[p] != 0 {
				m.Conns = m.Conns[:i]
				return decodeErr(i, p, ErrReserved, "padding byte 0x%02x", b[p])
			}
		}
		off = next
	}
	if off < len(b) {
		return decodeErr(nr, off, ErrTrailingData, "%d bytes after the %d entries the header announces", len(b)-off, nr)
	}
	return nil
}

// decodeOptions parses the options of entry e (ip_vs_proc_sync_conn).
func decodeOptions(e []byte, p, entry, base int, c *Conn, oldName string) error {
	var seen uint8
	for p < len(e) {
		if len(e)-p < 2 {
			return decodeErr(entry, base+p, ErrBadOption, "1 byte left in the entry, an option header needs 2")
		}
		typ, l := e[p], int(e[p+1])
		p += 2
		if l == 0 {
			return decodeErr(entry, base+p-2, ErrBadOption, "option type %d has length 0", typ)
		}
		if p+l > len(e) {
			return decodeErr(entry, base+p-2, ErrBadOption, "option type %d of length %d runs past the entry (%d bytes left)", typ, l, len(e)-p)
		}
		data := e[p : p+l]
		// The kernel masks the optional bit off before looking at the
		// type, so 0x41 is sequence data too.
		known := typ &^ OptOptional
		switch known {
		case OptSeqData, OptPEData, OptPEName:
			if seen&(1<<known) != 0 {
				return decodeErr(entry, base+p-2, ErrBadOption, "option type %d given twice", known)
			}
			seen |= 1 << known
		}
		switch known {
		case OptSeqData:
			if l != SeqDataLen {
				return decodeErr(entry, base+p-2, ErrBadOption, "sequence data of length %d, want %d", l, SeqDataLen)
			}
			c.Seq = &SeqData{
				In:  Seq{be.Uint32(data[0:]), be.Uint32(data[4:]), be.Uint32(data[8:])},
				Out: Seq{be.Uint32(data[12:]), be.Uint32(data[16:]), be.Uint32(data[20:])},
			}
		case OptPEData:
			c.PEData = append([]byte(nil), data...)
		case OptPEName:
			if l > MaxPENameLen {
				return decodeErr(entry, base+p-2, ErrBadOption, "engine name of length %d, limit %d", l, MaxPENameLen)
			}
			switch {
			case string(data) == oldName:
				c.PEName = oldName
			case string(data) == "sip":
				c.PEName = "sip"
			default:
				c.PEName = string(data)
			}
		default:
			if typ&OptOptional == 0 {
				return decodeErr(entry, base+p-2, ErrUnknownOption, "option type %d (the kernel drops the entry)", typ)
			}
		}
		p += l
	}
	return nil
}

func decodeV0(b []byte, m *Message) error {
	nr := int(b[0])
	off := HeaderLenV0
	for i := range nr {
		if len(b)-off < EntryLenV0 {
			return decodeErr(i, off, ErrTruncated, "%d bytes left, a v0 entry needs %d", len(b)-off, EntryLenV0)
		}
		e := b[off : off+EntryLenV0]
		if e[0] != 0 {
			return decodeErr(i, off, ErrReserved, "reserved byte 0x%02x", e[0])
		}
		flags := uint32(be.Uint16(e[20:]))
		n := EntryLenV0
		if flags&FlagSeqMask != 0 {
			n += SeqDataLen
			if len(b)-off < n {
				return decodeErr(i, off, ErrTruncated, "flags 0x%x announce sequence data, %d bytes left, need %d", flags, len(b)-off, n)
			}
		}
		c, _ := nextConn(m)
		c.Protocol = e[1]
		c.CPort = be.Uint16(e[2:])
		c.VPort = be.Uint16(e[4:])
		c.DPort = be.Uint16(e[6:])
		c.CAddr = netip.AddrFrom4([4]byte(e[8:12]))
		c.VAddr = netip.AddrFrom4([4]byte(e[12:16]))
		c.DAddr = netip.AddrFrom4([4]byte(e[16:20]))
		c.Flags = flags
		c.State = be.Uint16(e[22:])
		if n > EntryLenV0 {
			c.Seq = getSeqV0(b[off+EntryLenV0 : off+n])
		}
		off += n
	}
	if off < len(b) {
		return decodeErr(nr, off, ErrTrailingData, "%d bytes after the %d entries the header announces", len(b)-off, nr)
	}
	return nil
}

// v0 sequence data is a memcpy of the kernel's struct: host byte order.
var v0SeqOrder = binary.NativeEndian

func getSeqV0(d []byte) *SeqData {
	o := v0SeqOrder
	return &SeqData{
		In:  Seq{o.Uint32(d[0:]), o.Uint32(d[4:]), o.Uint32(d[8:])},
		Out: Seq{o.Uint32(d[12:]), o.Uint32(d[16:]), o.Uint32(d[20:])},
	}
}

func putSeqV0(d []byte, s *SeqData) {
	o := v0SeqOrder
	o.PutUint32(d[0:], s.In.InitSeq)
	o.PutUint32(d[4:], s.In.Delta)
	o.PutUint32(d[8:], s.In.PrevDelta)
	o.PutUint32(d[12:], s.Out.InitSeq)
	o.PutUint32(d[16:], s.Out.Delta)
	o.PutUint32(d[20:], s.Out.PrevDelta)
}
