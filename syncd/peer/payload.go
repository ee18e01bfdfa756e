package peer

// Payload layouts, all big-endian. Each Parse function checks the whole
// payload (lengths, reserved bits, ranges) and returns errors wrapping
// ErrPayload; entry lists are checked as an EntryReader walks them.

// UPDATE: useq be64, flags u8, count u8, count entries.
const (
	updateHeaderLen = 10
	// UpdateResend marks an UPDATE that re-sends the entries of an earlier
	// useq in their current state.
	UpdateResend = 0x01
	// MaxEntriesPerFrame is the most entries an UPDATE or BULK carries:
	// its count is a byte.
	MaxEntriesPerFrame = 255
)

// Update is a parsed UPDATE payload.
type Update struct {
	USeq  uint64 // the sender's update sequence number, from 1
	Flags uint8
	Count int
	body  []byte
}

// AppendUpdateHeader starts an UPDATE payload with no entries; append
// entries and then set the count with SetEntryCount.
func AppendUpdateHeader(dst []byte, useq uint64, flags uint8) []byte {
	dst = be.AppendUint64(dst, useq)
	return append(dst, flags, 0)
}

// ParseUpdate parses an UPDATE payload.
func ParseUpdate(p []byte) (Update, error) {
	if len(p) < updateHeaderLen {
		return Update{}, payloadErr("UPDATE of %d bytes", len(p))
	}
	u := Update{USeq: be.Uint64(p), Flags: p[8], Count: int(p[9]), body: p[updateHeaderLen:]}
	switch {
	case u.USeq == 0:
		return u, payloadErr("UPDATE useq 0")
	case u.Flags&^UpdateResend != 0:
		return u, payloadErr("UPDATE flags 0x%02x", u.Flags)
	}
	return u, nil
}

// Entries walks the update's entries.
func (u *Update) Entries() EntryReader { return EntryReader{b: u.body, left: u.Count} }

// ALIVE: useq be64, entries be32, flags u8.
const (
	aliveLen = 13
	// AliveReady says the sender has a complete table (its own bulk
	// resync is done), so it may serve bulk dumps.
	AliveReady = 0x01
)

// Alive is a parsed ALIVE payload.
type Alive struct {
	USeq    uint64 // the highest update sequence number the sender has sent
	Entries uint32 // its table's size, for operators
	Flags   uint8
}

// AppendAlive appends an ALIVE payload.
func AppendAlive(dst []byte, a *Alive) []byte {
	dst = be.AppendUint64(dst, a.USeq)
	dst = be.AppendUint32(dst, a.Entries)
	return append(dst, a.Flags)
}

// ParseAlive parses an ALIVE payload.
func ParseAlive(p []byte) (Alive, error) {
	if len(p) != aliveLen {
		return Alive{}, payloadErr("ALIVE of %d bytes, want %d", len(p), aliveLen)
	}
	a := Alive{USeq: be.Uint64(p), Entries: be.Uint32(p[8:]), Flags: p[12]}
	if a.Flags&^AliveReady != 0 {
		return a, payloadErr("ALIVE flags 0x%02x", a.Flags)
	}
	return a, nil
}

// NACK: target be16, incarnation be64, n u8, n × (first be64, count be32).
const (
	nackHeaderLen = 11
	nackRangeLen  = 12
	// MaxNackRanges bounds a NACK, and so what one NACK can make a sender
	// resend.
	MaxNackRanges = 64
)

// Range is a run of update sequence numbers.
type Range struct {
	First uint64
	Count uint32
}

// Nack is a parsed NACK payload: the update sequence numbers of Target's run
// Incarnation that the NACK's sender is missing.
type Nack struct {
	Target      uint16
	Incarnation uint64
	Ranges      []Range
}

// AppendNack appends a NACK payload; at most MaxNackRanges ranges are
// written.
func AppendNack(dst []byte, n *Nack) []byte {
	r := n.Ranges[:min(len(n.Ranges), MaxNackRanges)]
	dst = be.AppendUint16(dst, n.Target)
	dst = be.AppendUint64(dst, n.Incarnation)
	dst = append(dst, byte(len(r)))
	for _, x := range r {
		dst = be.AppendUint64(dst, x.First)
		dst = be.AppendUint32(dst, x.Count)
	}
	return dst
}

// ParseNack parses a NACK payload into n, reusing n.Ranges.
func ParseNack(p []byte, n *Nack) error {
	n.Ranges = n.Ranges[:0]
	if len(p) < nackHeaderLen {
		return payloadErr("NACK of %d bytes", len(p))
	}
	n.Target, n.Incarnation = be.Uint16(p), be.Uint64(p[2:])
	cnt := int(p[10])
	switch {
	case n.Target == 0 || n.Incarnation == 0:
		return payloadErr("NACK for node %d run %d", n.Target, n.Incarnation)
	case cnt == 0 || cnt > MaxNackRanges:
		return payloadErr("NACK with %d ranges, want 1 to %d", cnt, MaxNackRanges)
	case len(p) != nackHeaderLen+cnt*nackRangeLen:
		return payloadErr("NACK of %d bytes for %d ranges", len(p), cnt)
	}
	for i := range cnt {
		q := p[nackHeaderLen+i*nackRangeLen:]
		r := Range{First: be.Uint64(q), Count: be.Uint32(q[8:])}
		if r.First == 0 || r.Count == 0 || r.First+uint64(r.Count) < r.First {
			return payloadErr("NACK range %d+%d", r.First, r.Count)
		}
		n.Ranges = append(n.Ranges, r)
	}
	return nil
}

// BULK_REQUEST: target be16, owner be16, nshards be16, bitmap.
const (
	bulkRequestHeaderLen = 6
	// MaxShards is the most shards a bulk dump can name.
	MaxShards = 4096
)

// BulkRequest is a parsed BULK_REQUEST payload.
type BulkRequest struct {
	Target uint16 // the node asked to dump; 0 any (every node that hears it)
	Owner  uint16 // dump only entries of this owner; 0 all
	// NShards and Bitmap name the target's shards wanted (bit i of byte
	// i/8, least significant first); NShards 0 means all of them.
	NShards uint16
	Bitmap  []byte
}

// Wants reports whether shard i is requested.
func (r *BulkRequest) Wants(i int) bool {
	return r.NShards == 0 || (i < int(r.NShards) && r.Bitmap[i/8]&(1<<(i%8)) != 0)
}

// AppendBulkRequest appends a BULK_REQUEST payload.
func AppendBulkRequest(dst []byte, r *BulkRequest) []byte {
	dst = be.AppendUint16(dst, r.Target)
	dst = be.AppendUint16(dst, r.Owner)
	dst = be.AppendUint16(dst, r.NShards)
	if r.NShards > 0 {
		dst = append(dst, r.Bitmap[:(int(r.NShards)+7)/8]...)
	}
	return dst
}

// ParseBulkRequest parses a BULK_REQUEST payload; Bitmap aliases p.
func ParseBulkRequest(p []byte) (BulkRequest, error) {
	if len(p) < bulkRequestHeaderLen {
		return BulkRequest{}, payloadErr("BULK_REQUEST of %d bytes", len(p))
	}
	r := BulkRequest{Target: be.Uint16(p), Owner: be.Uint16(p[2:]), NShards: be.Uint16(p[4:])}
	nb := (int(r.NShards) + 7) / 8
	switch {
	case r.NShards > MaxShards:
		return r, payloadErr("BULK_REQUEST for %d shards, at most %d", r.NShards, MaxShards)
	case len(p) != bulkRequestHeaderLen+nb:
		return r, payloadErr("BULK_REQUEST of %d bytes for %d shards", len(p), r.NShards)
	}
	r.Bitmap = p[bulkRequestHeaderLen:]
	if nb > 0 {
		if extra := r.Bitmap[nb-1] >> (int(r.NShards-1)%8 + 1); extra != 0 {
			return r, payloadErr("BULK_REQUEST bitmap names shards past %d", r.NShards)
		}
	}
	return r, nil
}

// BULK: dump be32, shard be16, nshards be16, part be16, flags u8, count u8,
// count entries.
const (
	bulkHeaderLen = 12
	// BulkLast marks the last part of a shard's dump.
	BulkLast = 0x01
)

// Bulk is a parsed BULK payload: part Part of dump DumpID, which is shard
// Shard of the sender's NShards.
type Bulk struct {
	DumpID  uint32
	Shard   uint16
	NShards uint16
	Part    uint16
	Flags   uint8
	Count   int
	body    []byte
}

// AppendBulkHeader starts a BULK payload with no entries; append entries
// and then set the count with SetEntryCount.
func AppendBulkHeader(dst []byte, b *Bulk) []byte {
	dst = be.AppendUint32(dst, b.DumpID)
	dst = be.AppendUint16(dst, b.Shard)
	dst = be.AppendUint16(dst, b.NShards)
	dst = be.AppendUint16(dst, b.Part)
	return append(dst, b.Flags, 0)
}

// ParseBulk parses a BULK payload.
func ParseBulk(p []byte) (Bulk, error) {
	if len(p) < bulkHeaderLen {
		return Bulk{}, payloadErr("BULK of %d bytes", len(p))
	}
	b := Bulk{
		DumpID:  be.Uint32(p),
		Shard:   be.Uint16(p[4:]),
		NShards: be.Uint16(p[6:]),
		Part:    be.Uint16(p[8:]),
		Flags:   p[10],
		Count:   int(p[11]),
		body:    p[bulkHeaderLen:],
	}
	switch {
	case b.NShards == 0 || b.NShards > MaxShards || b.Shard >= b.NShards:
		return b, payloadErr("BULK shard %d of %d", b.Shard, b.NShards)
	case b.Flags&^BulkLast != 0:
		return b, payloadErr("BULK flags 0x%02x", b.Flags)
	}
	return b, nil
}

// Entries walks the part's entries.
func (b *Bulk) Entries() EntryReader { return EntryReader{b: b.body, left: b.Count} }

// SetEntryCount stores the entry count in an UPDATE or BULK payload that
// starts at p.
func SetEntryCount(p []byte, t Type, n int) {
	switch t {
	case TypeUpdate:
		p[9] = byte(n)
	case TypeBulk:
		p[11] = byte(n)
	}
}

// BULK_DONE: nshards be16, n u8, n × requester be16.
const bulkDoneHeaderLen = 3

// BulkDone is a parsed BULK_DONE payload: the sender's dump pass has covered
// every shard the listed requesters asked for.
type BulkDone struct {
	NShards    uint16
	Requesters []uint16
}

// AppendBulkDone appends a BULK_DONE payload (at most 255 requesters).
func AppendBulkDone(dst []byte, d *BulkDone) []byte {
	r := d.Requesters[:min(len(d.Requesters), 255)]
	dst = be.AppendUint16(dst, d.NShards)
	dst = append(dst, byte(len(r)))
	for _, id := range r {
		dst = be.AppendUint16(dst, id)
	}
	return dst
}

// ParseBulkDone parses a BULK_DONE payload into d, reusing d.Requesters.
func ParseBulkDone(p []byte, d *BulkDone) error {
	d.Requesters = d.Requesters[:0]
	if len(p) < bulkDoneHeaderLen {
		return payloadErr("BULK_DONE of %d bytes", len(p))
	}
	d.NShards = be.Uint16(p)
	n := int(p[2])
	switch {
	case d.NShards == 0 || d.NShards > MaxShards:
		return payloadErr("BULK_DONE for %d shards", d.NShards)
	case len(p) != bulkDoneHeaderLen+2*n:
		return payloadErr("BULK_DONE of %d bytes for %d requesters", len(p), n)
	}
	for i := range n {
		id := be.Uint16(p[bulkDoneHeaderLen+2*i:])
		if id == 0 {
			return payloadErr("BULK_DONE requester 0")
		}
		d.Requesters = append(d.Requesters, id)
	}
	return nil
}
