package wire

import (
	"errors"
	"fmt"
)

// Sentinel errors; every error this package returns wraps one of them.
var (
	// ErrTruncated: the datagram ends inside a header or an entry.
	ErrTruncated = errors.New("truncated")
	// ErrBadSize: a size field disagrees with the bytes (the header's size
	// with the datagram's length, an entry's ver_size with its type).
	ErrBadSize = errors.New("bad size")
	// ErrBadVersion: a header or entry version the kernel does not know.
	ErrBadVersion = errors.New("bad version")
	// ErrBadType: a v1 entry type other than IPv4 (0) or IPv6 (1).
	ErrBadType = errors.New("bad entry type")
	// ErrBadOption: malformed option framing, a wrong option length or an
	// option given twice.
	ErrBadOption = errors.New("bad option")
	// ErrUnknownOption: an option type the kernel does not know and may
	// not skip.
	ErrUnknownOption = errors.New("unknown mandatory option")
	// ErrReserved: a reserved, spare or padding byte is not zero.
	ErrReserved = errors.New("reserved bytes not zero")
	// ErrTrailingData: bytes after the last announced entry.
	ErrTrailingData = errors.New("trailing data")

	// ErrInvalidConn: the entry is well formed but the kernel would drop it
	// or silently lose part of it (see Conn.Validate).
	ErrInvalidConn = errors.New("invalid connection")
	// ErrUnsupported: the entry cannot be expressed in the chosen version
	// (IPv6, fwmark, timeout or persistence data in v0; a zoned address).
	ErrUnsupported = errors.New("not expressible in this format")
	// ErrTooLarge: a single entry does not fit in maxLen.
	ErrTooLarge = errors.New("entry larger than message limit")
	// ErrBadArgument: a bad version or maxLen given to an encoder.
	ErrBadArgument = errors.New("bad argument")
)

// Error locates a decoding problem: which entry and which byte.
type Error struct {
	Entry  int    // index of the entry, or -1 for the message header
	Offset int    // byte offset in the datagram where the problem is
	Err    error  // one of the sentinel errors
	Detail string // what exactly is wrong
}

func (e *Error) Error() string {
	if e.Entry < 0 {
		return fmt.Sprintf("wire: header at offset %d: %s: %s", e.Offset, e.Err, e.Detail)
	}
	return fmt.Sprintf("wire: entry %d at offset %d: %s: %s", e.Entry, e.Offset, e.Err, e.Detail)
}

func (e *Error) Unwrap() error { return e.Err }

func decodeErr(entry, off int, err error, format string, args ...any) error {
	return &Error{Entry: entry, Offset: off, Err: err, Detail: fmt.Sprintf(format, args...)}
}

func connErr(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}
