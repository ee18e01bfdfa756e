package table

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// NodeID is a director's number, unique in the fleet and configured, not
// derived: the peer protocol carries it in every frame and every entry, and
// the table stores it in two bytes. 0 means no node.
type NodeID uint16

// Stamp is a time in whole seconds since the Unix epoch. The kernel's
// timeouts are in seconds, and four bytes instead of a time.Time's 24 is a
// fifth of an entry.
type Stamp uint32

// StampOf converts t, saturating at the ends of Stamp's range.
func StampOf(t time.Time) Stamp {
	s := t.Unix()
	switch {
	case s < 0:
		return 0
	case s > int64(^Stamp(0)):
		return ^Stamp(0)
	}
	return Stamp(s)
}

// Time converts s back.
func (s Stamp) Time() time.Time { return time.Unix(int64(s), 0) }

// Add returns s plus d seconds, saturating.
func (s Stamp) Add(d uint32) Stamp {
	if r := s + Stamp(d); r >= s {
		return r
	}
	return ^Stamp(0)
}

// Sub returns s minus o in seconds, or 0 if o is later.
func (s Stamp) Sub(o Stamp) uint32 {
	if s <= o {
		return 0
	}
	return uint32(s - o)
}

// Key identifies a connection or template the way the kernel's sync receive
// path does (see the package documentation).
type Key struct {
	Proto    uint8
	Template bool
	CPort    uint16
	VPort    uint16
	CAddr    netip.Addr
	VAddr    netip.Addr
	// PE is PEHash of a persistence-engine template's engine name and
	// data, 0 for everything else.
	PE uint64
}

// SeqData is the kernel's TCP sequence adjustment option in the order the
// v1 option carries it: in.init_seq, in.delta, in.previous_delta, then the
// same for out.
type SeqData [6]uint32

// Entry is one connection as the table hands it out and takes it in.
type Entry struct {
	Key
	DAddr   netip.Addr
	DPort   uint16
	Flags   uint32
	State   uint16
	Fwmark  uint32
	Timeout uint32 // seconds, the full timeout of State; 0: the kernel's default

	// Rare fields, stored out of line. The table never modifies the
	// PEData it hands out; callers must not either.
	Seq    *SeqData
	PEData []byte
	PEName string

	// Bookkeeping, written by the table.
	Owner    NodeID
	Version  uint32
	Reported Stamp // when the owner's kernel last reported it (as received here)
	Expires  Stamp
}

// PEHash is the Key.PE of a template with a persistence engine. It is a
// cryptographic hash because SIP Call-IDs come from clients, who could
// otherwise make two calls' templates collide.
func PEHash(name string, data []byte) uint64 {
	if name == "" && len(data) == 0 {
		return 0
	}
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(data)
	var sum [sha256.Size]byte
	v := binary.LittleEndian.Uint64(h.Sum(sum[:0]))
	if v == 0 {
		v = 1
	}
	return v
}

// Change says what an Upsert, Apply or Delete did.
type Change uint16

// Change bits.
const (
	Created Change = 1 << iota
	StateChanged
	FlagsChanged
	OwnerChanged
	DestChanged  // real server address or port
	OtherChanged // timeout, fwmark, sequence or persistence data
	Refreshed    // only the report time and expiry moved
	Stale        // Apply: older than what the table has; ignored
	Removed      // Delete or ApplyDelete removed the entry
)

// Changed reports whether the kernel-visible content changed, which is
// what peers must be told about.
func (c Change) Changed() bool {
	return c&(Created|StateChanged|FlagsChanged|OwnerChanged|DestChanged|OtherChanged|Removed) != 0
}

func (c Change) String() string {
	if c == 0 {
		return "none"
	}
	names := [...]string{"created", "state", "flags", "owner", "dest", "other", "refreshed", "stale", "removed"}
	var b []byte
	for i, n := range names {
		if c&(1<<i) != 0 {
			if len(b) > 0 {
				b = append(b, '|')
			}
			b = append(b, n...)
		}
	}
	return string(b)
}

// ErrInvalid is wrapped by every error the table returns for an entry it
// cannot store.
var ErrInvalid = errors.New("invalid entry")

func invalid(format string, args ...any) error {
	return fmt.Errorf("table: %w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
