package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
)

var be = binary.BigEndian

// Type is a frame's message type.
type Type uint8

// Message types. Their payloads are described in docs/protocol.md and by
// the Append* and Parse* functions.
const (
	TypeUpdate      Type = 1 // connection entries, in the sender's update sequence
	TypeAlive       Type = 2 // heartbeat: the sender's highest update sequence number
	TypeNack        Type = 3 // update sequence numbers one sender's stream is missing
	TypeBulkRequest Type = 4 // send me your table (or some shards of it)
	TypeBulk        Type = 5 // one part of one shard of a bulk dump
	TypeBulkDone    Type = 6 // a bulk dump for the listed requesters has ended
	typeMax              = TypeBulkDone
)

var typeNames = [...]string{"0", "UPDATE", "ALIVE", "NACK", "BULK_REQUEST", "BULK", "BULK_DONE"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type%d", uint8(t))
}

// Frame layout. All integers are big-endian.
const (
	// Magic starts every frame: "PLVS". A kernel sync datagram starts with
	// a zero byte (v1) or a small entry count (v0), so the two can never be
	// mistaken for each other even on one port.
	Magic = "PLVS"
	// Version is the frame format version this package speaks.
	Version = 1

	HeaderLen = 26 // magic 4, version 1, type 1, key id 1, flags 1, sender 2, incarnation 8, seq 8
	TagLen    = 16 // AES-GCM tag
	Overhead  = HeaderLen + TagLen

	// DefaultMTU is the largest sealed frame by default: a 1500-byte
	// Ethernet MTU less IPv6 and UDP headers, with room for tunnels.
	DefaultMTU = 1400
	// MinMTU fits the largest possible entry (IPv6 with sequence data and
	// the longest persistence-engine data and name) in one frame.
	MinMTU = 512
	// MaxMTU is the largest UDP payload.
	MaxMTU = 65507
)

// Header is the clear-text, authenticated part of a frame.
type Header struct {
	Version     uint8
	Type        Type
	KeyID       uint8
	Flags       uint8  // reserved, 0
	Sender      uint16 // node id, never 0
	Incarnation uint64 // the sender's run, never 0; a restart picks a larger one
	Seq         uint64 // per sender and incarnation, from 1, every frame
}

// Frame is an opened frame.
type Frame struct {
	Header
	// Payload is the decrypted payload. It aliases the buffer given to
	// Open.
	Payload []byte
	// NewIncarnation is set on the first frame of a sender's run that is
	// later than the one seen before: the sender restarted.
	NewIncarnation bool
}

func putHeader(b []byte, h *Header) {
	copy(b[0:4], Magic)
	b[4] = h.Version
	b[5] = byte(h.Type)
	b[6] = h.KeyID
	b[7] = h.Flags
	be.PutUint16(b[8:], h.Sender)
	be.PutUint64(b[10:], h.Incarnation)
	be.PutUint64(b[18:], h.Seq)
}

// parseHeader checks everything that can be checked without a key.
func parseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < Overhead {
		return h, fmt.Errorf("%w: frame of %d bytes, at least %d", ErrTruncated, len(b), Overhead)
	}
	if string(b[0:4]) != Magic {
		return h, fmt.Errorf("%w: %q", ErrBadMagic, b[0:4])
	}
	h = Header{
		Version:     b[4],
		Type:        Type(b[5]),
		KeyID:       b[6],
		Flags:       b[7],
		Sender:      be.Uint16(b[8:]),
		Incarnation: be.Uint64(b[10:]),
		Seq:         be.Uint64(b[18:]),
	}
	switch {
	case h.Version != Version:
		return h, fmt.Errorf("%w: version %d, this node speaks %d", ErrVersion, h.Version, Version)
	case h.Type == 0 || h.Type > typeMax:
		return h, fmt.Errorf("%w: %d", ErrType, uint8(h.Type))
	case h.Flags != 0:
		return h, fmt.Errorf("%w: flags 0x%02x", ErrBadHeader, h.Flags)
	case h.Sender == 0:
		return h, fmt.Errorf("%w: sender 0", ErrBadHeader)
	case h.Incarnation == 0:
		return h, fmt.Errorf("%w: incarnation 0", ErrBadHeader)
	case h.Seq == 0:
		return h, fmt.Errorf("%w: sequence number 0", ErrBadHeader)
	}
	return h, nil
}

// Errors. Open and the Parse functions return errors wrapping one of these;
// Reason names the one an error wraps, for counters.
var (
	ErrTruncated      = errors.New("truncated")
	ErrBadMagic       = errors.New("bad magic")
	ErrVersion        = errors.New("unsupported version")
	ErrType           = errors.New("unknown message type")
	ErrBadHeader      = errors.New("bad header")
	ErrSelf           = errors.New("frame from this node")
	ErrUnknownKey     = errors.New("unknown key id")
	ErrAuth           = errors.New("authentication failed")
	ErrReplay         = errors.New("replayed or too old")
	ErrOldIncarnation = errors.New("old incarnation")
	ErrPayload        = errors.New("malformed payload")
	ErrTooLarge       = errors.New("frame larger than the MTU")
)

// reasons lists the counted rejection reasons in Stats order.
var reasons = [...]error{ErrTruncated, ErrBadMagic, ErrVersion, ErrType, ErrBadHeader, ErrSelf,
	ErrUnknownKey, ErrAuth, ErrReplay, ErrOldIncarnation, ErrPayload, ErrTooLarge}

// NumReasons is the number of rejection reasons.
const NumReasons = len(reasons)

// ReasonIndex is the index of the sentinel err wraps in Reasons, or -1.
func ReasonIndex(err error) int {
	for i, r := range reasons {
		if errors.Is(err, r) {
			return i
		}
	}
	return -1
}

// ReasonName is a short name for counters and logs.
func ReasonName(i int) string {
	if i < 0 || i >= len(reasons) {
		return "other"
	}
	return reasons[i].Error()
}
