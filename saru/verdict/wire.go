package verdict

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
)

// The messages travel as memberlist user messages (one datagram each,
// encrypted and authenticated with the gossip key):
//
//	magic "PV", version u8 (1), kind u8 (1 votes, 2 declaration)
//	from: len u8, bytes; run u64; seq u64; services fingerprint u64
//	count u16, then count entries:
//	  votes:       real key u64, verdict u8 (0 pending, 1 up, 2 down),
//	               weight u16 (0xffff: none)
//	  declaration: service key u64, digest u64, name: len u8, bytes
//
// A director's state is sent as several messages with the same seq when
// it does not fit one; each is handled on its own.
const (
	wireVersion = 1
	kindVotes   = 1
	kindDecl    = 2

	maxDatagram = 1200
	headerMax   = 4 + 1 + 255 + 24 + 2
	voteLen     = 8 + 1 + 2
	noWeight    = 0xffff
)

var magic = [2]byte{'P', 'V'}

// ErrNotVerdict is returned by Decode for bytes that are another kind of
// message altogether.
var ErrNotVerdict = errors.New("verdict: not a verdict message")

// Is reports whether b claims to be a verdict message.
func Is(b []byte) bool { return len(b) >= 2 && b[0] == magic[0] && b[1] == magic[1] }

// Key is a real server's (or a service's) key on the wire: a hash of its
// ID, the same on every director that declares it the same way.
type Key uint64

// KeyOf hashes an ID (services.Service.ID for a real server, the service's
// String for a service).
func KeyOf(id string) Key {
	h := fnv.New64a()
	h.Write([]byte(id))
	return Key(h.Sum64())
}

// Vote is one director's verdict on one real server.
type Vote struct {
	Key Key
	// Verdict is 0 pending, 1 up, 2 down (health.Verdict's values).
	Verdict int8
	// Weight a dynamic check asked for, -1 if none.
	Weight int
}

// Digest is one declared service as a director has it.
type Digest struct {
	Key    Key
	Digest uint64
	Name   string
}

// Header identifies the sender's state a message belongs to.
type Header struct {
	From string
	// Run is the sender's saru process (member.Node.Run); Seq counts its
	// rounds within the run.
	Run, Seq uint64
	// Services is the sender's services fingerprint.
	Services uint64
}

// Message is one decoded message: Votes or Decl is set.
type Message struct {
	Header
	Votes []Vote
	Decl  []Digest
	// IsDecl tells the kinds apart when the list is empty.
	IsDecl bool
}

func putHeader(kind byte, h Header) ([]byte, error) {
	if h.From == "" || len(h.From) > 255 {
		return nil, fmt.Errorf("verdict: sender name of %d bytes, want 1..255", len(h.From))
	}
	b := make([]byte, 0, maxDatagram)
	b = append(b, magic[0], magic[1], wireVersion, kind, byte(len(h.From)))
	b = append(b, h.From...)
	b = binary.BigEndian.AppendUint64(b, h.Run)
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	b = binary.BigEndian.AppendUint64(b, h.Services)
	return b, nil
}

// EncodeVotes returns votes as one or more messages (one even when empty,
// so that a director with no real servers is heard).
func EncodeVotes(h Header, votes []Vote) ([][]byte, error) {
	per := (maxDatagram - headerMax) / voteLen
	var out [][]byte
	for first := true; first || len(votes) > 0; first = false {
		n := min(per, len(votes))
		b, err := putHeader(kindVotes, h)
		if err != nil {
			return nil, err
		}
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		for _, v := range votes[:n] {
			if v.Verdict < 0 || v.Verdict > 2 {
				return nil, fmt.Errorf("verdict: verdict %d of %016x out of range", v.Verdict, uint64(v.Key))
			}
			w := uint16(noWeight)
			if v.Weight >= 0 {
				w = uint16(min(v.Weight, noWeight-1))
			}
			b = binary.BigEndian.AppendUint64(b, uint64(v.Key))
			b = append(b, byte(v.Verdict))
			b = binary.BigEndian.AppendUint16(b, w)
		}
		out = append(out, b)
		votes = votes[n:]
	}
	return out, nil
}

// EncodeDecl returns a director's declared services as messages.
func EncodeDecl(h Header, decl []Digest) ([][]byte, error) {
	var out [][]byte
	for first := true; first || len(decl) > 0; first = false {
		b, err := putHeader(kindDecl, h)
		if err != nil {
			return nil, err
		}
		at := len(b)
		b = append(b, 0, 0)
		n := 0
		for n < len(decl) {
			d := decl[n]
			name := d.Name
			if len(name) > 255 {
				name = name[:255]
			}
			if len(b)+17+len(name) > maxDatagram {
				break
			}
			b = binary.BigEndian.AppendUint64(b, uint64(d.Key))
			b = binary.BigEndian.AppendUint64(b, d.Digest)
			b = append(b, byte(len(name)))
			b = append(b, name...)
			n++
		}
		binary.BigEndian.PutUint16(b[at:], uint16(n))
		out = append(out, b)
		decl = decl[n:]
	}
	return out, nil
}

// Decode parses one message.
func Decode(b []byte) (Message, error) {
	if !Is(b) {
		return Message{}, ErrNotVerdict
	}
	r := reader{b: b[2:]}
	ver, kind := r.u8(), r.u8()
	if r.err == nil && ver != wireVersion {
		return Message{}, fmt.Errorf("verdict: wire version %d, want %d (run one saru release on every director)", ver, wireVersion)
	}
	var m Message
	m.From = string(r.bytes(int(r.u8())))
	m.Run, m.Seq, m.Services = r.u64(), r.u64(), r.u64()
	n := int(r.u16())
	switch kind {
	case kindVotes:
		if r.err == nil && len(r.b) != n*voteLen {
			return Message{}, fmt.Errorf("verdict: %d bytes for %d votes", len(r.b), n)
		}
		m.Votes = make([]Vote, 0, n)
		for range n {
			key, verdict, weight := r.u64(), r.u8(), int(r.u16())
			if verdict > 2 {
				return Message{}, fmt.Errorf("verdict: verdict %d out of range", verdict)
			}
			v := Vote{Key: Key(key), Verdict: int8(verdict), Weight: weight}
			if v.Weight == noWeight {
				v.Weight = -1
			}
			m.Votes = append(m.Votes, v)
		}
	case kindDecl:
		m.IsDecl = true
		for range n {
			d := Digest{Key: Key(r.u64()), Digest: r.u64()}
			d.Name = string(r.bytes(int(r.u8())))
			if r.err != nil {
				break
			}
			m.Decl = append(m.Decl, d)
		}
	default:
		if r.err == nil {
			return Message{}, fmt.Errorf("verdict: unknown message kind %d", kind)
		}
	}
	if r.err != nil {
		return Message{}, fmt.Errorf("verdict: truncated message: %w", r.err)
	}
	if len(r.b) != 0 {
		return Message{}, fmt.Errorf("verdict: %d bytes after the message", len(r.b))
	}
	if m.From == "" {
		return Message{}, errors.New("verdict: no sender name")
	}
	return m, nil
}

type reader struct {
	b   []byte
	err error
}

var errShort = errors.New("short")

func (r *reader) bytes(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = errShort
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}
func (r *reader) u8() byte {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}
func (r *reader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}
func (r *reader) u64() uint64 {
	if b := r.bytes(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}
