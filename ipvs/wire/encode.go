package wire

import (
	"bytes"
	"fmt"
)

// Builder assembles one datagram at a time in a buffer it reuses, so that a
// relay encodes without allocating: Add entries until Add reports the
// message full, send Bytes, Reset, and Add the entry again.
type Builder struct {
	buf     []byte
	version int
	syncID  uint8
	maxLen  int
	n       int
}

// NewBuilder returns a Builder for datagrams of the given version (0 or 1)
// and syncID, each at most maxLen bytes: the sync_maxlen of the receiving
// kernel, which reads at most that many bytes of a datagram and drops a
// datagram it had to cut short.
func NewBuilder(version int, syncID uint8, maxLen int) (*Builder, error) {
	hdr := HeaderLenV1
	switch version {
	case 0:
		hdr = HeaderLenV0
	case 1:
	default:
		return nil, fmt.Errorf("%w: version %d, want 0 or 1", ErrBadArgument, version)
	}
	if maxLen < hdr || maxLen > MaxMessageLen {
		return nil, fmt.Errorf("%w: maxLen %d, want %d..%d", ErrBadArgument, maxLen, hdr, MaxMessageLen)
	}
	b := &Builder{buf: make([]byte, 0, maxLen), version: version, syncID: syncID, maxLen: maxLen}
	b.Reset()
	return b, nil
}

// Reset starts a new, empty message.
func (b *Builder) Reset() {
	b.n = 0
	if b.version == 0 {
		b.buf = append(b.buf[:0], 0, b.syncID, 0, 0)
	} else {
		b.buf = append(b.buf[:0], 0, b.syncID, 0, 0, 0, 1, 0, 0)
	}
	b.setHeader()
}

func (b *Builder) setHeader() {
	be.PutUint16(b.buf[2:], uint16(len(b.buf)))
	if b.version == 0 {
		b.buf[0] = uint8(b.n)
	} else {
		b.buf[4] = uint8(b.n)
	}
}

// Len is the number of entries in the message.
func (b *Builder) Len() int { return b.n }

// Bytes is the message so far. It aliases the Builder's buffer: it is valid
// until the next Add or Reset.
func (b *Builder) Bytes() []byte { return b.buf }

// Add appends c if it is valid (Conn.Validate), expressible in the
// Builder's version and fits. It returns false and no error when the
// message is full (MaxConnsPerMessage entries or maxLen bytes); then send
// Bytes, Reset and add c again. An entry that does not fit an empty message
// is an ErrTooLarge error.
//
// v0 carries only the low 16 bits of Flags, as the kernel's v0 sender does;
// the bits above are local to a director (FlagNFCT).
func (b *Builder) Add(c *Conn) (bool, error) {
	if err := c.Validate(); err != nil {
		return false, err
	}
	return b.AddUnchecked(c)
}

// AddUnchecked is Add without Validate: it only refuses what the format
// cannot express. It is for tests that must send the kernel entries it
// rejects; never relay peers' entries with it.
func (b *Builder) AddUnchecked(c *Conn) (bool, error) {
	if err := c.checkAddrs(); err != nil {
		return false, err
	}
	if err := c.checkOptionLens(); err != nil {
		return false, err
	}
	var size int
	if b.version == 0 {
		if err := checkV0(c); err != nil {
			return false, err
		}
		size = EntryLenV0
		if c.Flags&FlagSeqMask != 0 {
			size += SeqDataLen
		}
	} else {
		size = entrySizeV1(c)
	}
	pad := -len(b.buf) & 3
	if b.version == 0 {
		pad = 0
	}
	if b.n > 0 && (b.n == MaxConnsPerMessage || len(b.buf)+pad+size > b.maxLen) {
		return false, nil
	}
	hdr := len(b.buf)
	if len(b.buf)+pad+size > b.maxLen {
		return false, fmt.Errorf("%w: entry of %d bytes, message limit %d bytes with a %d-byte header", ErrTooLarge, size, b.maxLen, hdr)
	}
	start := len(b.buf)
	b.buf = b.buf[:start+pad+size]
	e := b.buf[start:]
	clear(e)
	e = e[pad:]
	if b.version == 0 {
		putEntryV0(e, c)
	} else {
		putEntryV1(e, c)
	}
	b.n++
	b.setHeader()
	return true, nil
}

func checkV0(c *Conn) error {
	switch {
	case !c.CAddr.Is4():
		return connErr(ErrUnsupported, "v0 carries IPv4 only, not %v", c.CAddr)
	case c.Fwmark != 0:
		return connErr(ErrUnsupported, "v0 has no fwmark (%d)", c.Fwmark)
	case c.Timeout != 0:
		return connErr(ErrUnsupported, "v0 has no timeout (%d); the receiver uses its default for the state", c.Timeout)
	case len(c.PEData) > 0 || c.PEName != "":
		return connErr(ErrUnsupported, "v0 has no persistence-engine data")
	case c.Seq != nil && c.Flags&FlagSeqMask == 0:
		return connErr(ErrUnsupported, "v0 carries sequence data only with FlagInSeq or FlagOutSeq (flags 0x%x)", c.Flags)
	}
	return nil
}

// entrySizeV1 is the ver_size of c: fixed part plus options, no padding.
func entrySizeV1(c *Conn) int {
	size := EntryLenV4
	if !c.CAddr.Is4() {
		size = EntryLenV6
	}
	if c.Seq != nil {
		size += 2 + SeqDataLen
	}
	if len(c.PEData) > 0 {
		size += 2 + len(c.PEData)
	}
	if c.PEName != "" {
		size += 2 + len(c.PEName)
	}
	return size
}

// putEntryV1 writes c into e, which is zeroed and exactly entrySizeV1 long.
func putEntryV1(e []byte, c *Conn) {
	e[1] = c.Protocol
	be.PutUint16(e[2:], uint16(len(e))) // version 0 in the top bits
	be.PutUint32(e[4:], c.Flags)
	be.PutUint16(e[8:], c.State)
	be.PutUint16(e[10:], c.CPort)
	be.PutUint16(e[12:], c.VPort)
	be.PutUint16(e[14:], c.DPort)
	be.PutUint32(e[16:], c.Fwmark)
	be.PutUint32(e[20:], c.Timeout)
	var p int
	if c.CAddr.Is4() {
		e[0] = TypeIPv4
		a, v, d := c.CAddr.As4(), c.VAddr.As4(), c.DAddr.As4()
		copy(e[24:], a[:])
		copy(e[28:], v[:])
		copy(e[32:], d[:])
		p = EntryLenV4
	} else {
		e[0] = TypeIPv6
		a, v, d := c.CAddr.As16(), c.VAddr.As16(), c.DAddr.As16()
		copy(e[24:], a[:])
		copy(e[40:], v[:])
		copy(e[56:], d[:])
		p = EntryLenV6
	}
	// Same order as the kernel's sender, so the bytes match its own.
	if s := c.Seq; s != nil {
		e[p], e[p+1] = OptSeqData, SeqDataLen
		d := e[p+2:]
		be.PutUint32(d[0:], s.In.InitSeq)
		be.PutUint32(d[4:], s.In.Delta)
		be.PutUint32(d[8:], s.In.PrevDelta)
		be.PutUint32(d[12:], s.Out.InitSeq)
		be.PutUint32(d[16:], s.Out.Delta)
		be.PutUint32(d[20:], s.Out.PrevDelta)
		p += 2 + SeqDataLen
	}
	if len(c.PEData) > 0 {
		e[p], e[p+1] = OptPEData, uint8(len(c.PEData))
		p += 2 + copy(e[p+2:], c.PEData)
	}
	if c.PEName != "" {
		e[p], e[p+1] = OptPEName, uint8(len(c.PEName))
		copy(e[p+2:], c.PEName)
	}
}

// putEntryV0 writes c into e, which is zeroed and 24 or 48 bytes long.
func putEntryV0(e []byte, c *Conn) {
	e[1] = c.Protocol
	be.PutUint16(e[2:], c.CPort)
	be.PutUint16(e[4:], c.VPort)
	be.PutUint16(e[6:], c.DPort)
	a, v, d := c.CAddr.As4(), c.VAddr.As4(), c.DAddr.As4()
	copy(e[8:], a[:])
	copy(e[12:], v[:])
	copy(e[16:], d[:])
	be.PutUint16(e[20:], uint16(c.Flags))
	be.PutUint16(e[22:], c.State)
	if len(e) > EntryLenV0 && c.Seq != nil {
		putSeqV0(e[EntryLenV0:], c.Seq)
	}
}

// EncodeV1 packs conns, in order, into v1 datagrams of at most maxLen bytes
// (see NewBuilder) and MaxConnsPerMessage entries, filling each before it
// starts the next. No conns give no datagrams. It stops at the first entry
// that is invalid or too large, naming its index. It allocates the
// datagrams; a relay should use a Builder instead.
func EncodeV1(syncID uint8, conns []Conn, maxLen int) ([][]byte, error) {
	return encode(1, syncID, conns, maxLen, true)
}

// EncodeV0 is EncodeV1 for the v0 format: IPv4 only, no fwmark, timeout or
// persistence data.
func EncodeV0(syncID uint8, conns []Conn, maxLen int) ([][]byte, error) {
	return encode(0, syncID, conns, maxLen, true)
}

func encode(version int, syncID uint8, conns []Conn, maxLen int, check bool) ([][]byte, error) {
	b, err := NewBuilder(version, syncID, maxLen)
	if err != nil {
		return nil, fmt.Errorf("wire: %w", err)
	}
	var out [][]byte
	add := b.Add
	if !check {
		add = b.AddUnchecked
	}
	for i := range conns {
		ok, err := add(&conns[i])
		if err == nil && !ok {
			out = append(out, bytes.Clone(b.Bytes()))
			b.Reset()
			ok, err = add(&conns[i])
		}
		if err != nil {
			return nil, fmt.Errorf("wire: conn %d: %w", i, err)
		}
		if !ok {
			return nil, fmt.Errorf("wire: conn %d: %w: rejected by an empty message", i, ErrTooLarge)
		}
	}
	if b.Len() > 0 {
		out = append(out, bytes.Clone(b.Bytes()))
	}
	return out, nil
}
