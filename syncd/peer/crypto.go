package peer

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync/atomic"
)

// frameKeyInfo labels the HKDF derivation of frame keys, so that the shared
// key could be used for something else one day without the two colliding.
const frameKeyInfo = "peerlvs syncd frame key v1"

// deriveAEAD makes the AES-256-GCM instance of one sender's run under one
// shared key. A key per (shared key, sender, incarnation) is what lets the
// nonce be just the frame's sequence number: within one run the sequence
// number never repeats, and two runs never share a key. A random nonce
// would instead cap a shared key at about 2^32 frames fleet-wide, which a
// busy fleet reaches in days.
func deriveAEAD(secret *[KeyLen]byte, sender uint16, inc uint64) (cipher.AEAD, error) {
	info := make([]byte, 0, len(frameKeyInfo)+10)
	info = append(info, frameKeyInfo...)
	info = be.AppendUint16(info, sender)
	info = be.AppendUint64(info, inc)
	k, err := hkdf.Key(sha256.New, secret[:], nil, string(info), 32)
	if err != nil {
		return nil, fmt.Errorf("derive frame key: %w", err)
	}
	blk, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("frame key: %w", err)
	}
	a, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("frame key: %w", err)
	}
	return a, nil
}

// nonce builds the nonce of seq in n, which lives in the Sealer or Opener
// so that passing it to the AEAD interface does not allocate.
func nonce(n *[12]byte, seq uint64) []byte {
	be.PutUint64(n[4:], seq)
	return n[:]
}

// Sealer seals one node's frames. A Sealer must be the only one ever made
// for its (sender, incarnation): it numbers frames itself so that no
// caller can reuse a sequence number, and with it a nonce. It is not safe
// for concurrent use, except SetKeyring.
type Sealer struct {
	sender uint16
	inc    uint64
	seq    uint64
	mtu    int
	ring   atomic.Pointer[Keyring]

	aead    cipher.AEAD
	aeadID  uint8
	aeadKey [KeyLen]byte
	nonce   [12]byte
}

// NewSealer returns a Sealer for sender's run inc (see Config.Incarnation)
// whose frames are at most mtu bytes.
func NewSealer(sender uint16, inc uint64, ring *Keyring, mtu int) (*Sealer, error) {
	switch {
	case sender == 0:
		return nil, fmt.Errorf("peer: sender id 0; node ids are 1 to 65535")
	case inc == 0:
		return nil, fmt.Errorf("peer: incarnation 0")
	case ring == nil:
		return nil, fmt.Errorf("peer: no keyring")
	case mtu < MinMTU || mtu > MaxMTU:
		return nil, fmt.Errorf("peer: MTU %d, want %d to %d", mtu, MinMTU, MaxMTU)
	}
	s := &Sealer{sender: sender, inc: inc, mtu: mtu}
	s.ring.Store(ring)
	return s, nil
}

// SetKeyring switches to ring for the next frame.
func (s *Sealer) SetKeyring(ring *Keyring) { s.ring.Store(ring) }

// MaxPayload is the largest payload that fits a frame.
func (s *Sealer) MaxPayload() int { return s.mtu - Overhead }

// Seq is the sequence number of the last frame sealed.
func (s *Sealer) Seq() uint64 { return s.seq }

// Begin appends a header for a frame of type t to dst; append the payload
// after it and pass the lot to Finish, which seals it in place.
func (s *Sealer) Begin(dst []byte, t Type) []byte {
	h := Header{Version: Version, Type: t, Sender: s.sender, Incarnation: s.inc}
	n := len(dst)
	dst = append(dst, make([]byte, HeaderLen)...)
	putHeader(dst[n:], &h)
	return dst
}

// Finish seals a frame that Begin started: it numbers it, stamps the send
// key's id and encrypts the payload in place, appending the tag.
func (s *Sealer) Finish(frame []byte) ([]byte, error) {
	if len(frame) < HeaderLen || string(frame[:4]) != Magic {
		return nil, fmt.Errorf("peer: Finish of a frame Begin did not start")
	}
	if len(frame)+TagLen > s.mtu {
		return nil, fmt.Errorf("peer: %w: %d bytes sealed, MTU %d", ErrTooLarge, len(frame)+TagLen, s.mtu)
	}
	ring := s.ring.Load()
	id := ring.SendID()
	if key := ring.key(id); s.aead == nil || s.aeadID != id || s.aeadKey != *key {
		a, err := deriveAEAD(key, s.sender, s.inc)
		if err != nil {
			return nil, err
		}
		s.aead, s.aeadID, s.aeadKey = a, id, *key
	}
	s.seq++
	frame[6] = id
	be.PutUint64(frame[18:], s.seq)
	return s.aead.Seal(frame[:HeaderLen], nonce(&s.nonce, s.seq), frame[HeaderLen:], frame[:HeaderLen]), nil
}

// Seal appends a sealed frame of type t carrying payload to dst.
func (s *Sealer) Seal(dst []byte, t Type, payload []byte) ([]byte, error) {
	n := len(dst)
	// Room for the tag too, so that Finish seals in place.
	f := slices.Grow(dst, Overhead+len(payload))
	f = append(s.Begin(f, t), payload...)
	out, err := s.Finish(f[n:])
	if err != nil {
		return dst, err
	}
	return f[:n+len(out)], nil
}

// replayWindow remembers which of the last windowBits sequence numbers of
// one sender's run were accepted. Frames arrive out of order on a LAN
// rarely and by little, so 1024 is plenty; older frames are refused.
type replayWindow struct {
	top  uint64
	bits [windowBits / 64]uint64
}

const windowBits = 1024

func (w *replayWindow) ok(seq uint64) error {
	switch {
	case seq > w.top:
		return nil
	case w.top-seq >= windowBits:
		return fmt.Errorf("%w: sequence number %d is more than %d behind %d", ErrReplay, seq, windowBits, w.top)
	case w.bits[seq/64%(windowBits/64)]&(1<<(seq%64)) != 0:
		return fmt.Errorf("%w: sequence number %d seen before", ErrReplay, seq)
	}
	return nil
}

func (w *replayWindow) mark(seq uint64) {
	if seq > w.top {
		if seq-w.top >= windowBits {
			w.bits = [windowBits / 64]uint64{}
		} else {
			for s := w.top + 1; s <= seq; s++ {
				w.bits[s/64%(windowBits/64)] &^= 1 << (s % 64)
			}
		}
		w.top = seq
	}
	w.bits[seq/64%(windowBits/64)] |= 1 << (seq % 64)
}

// Opener authenticates and decrypts frames from peers and rejects replays.
// It is not safe for concurrent use, except SetKeyring and Stats.
type Opener struct {
	self   uint16
	ring   atomic.Pointer[Keyring]
	peers  map[uint16]*peerCrypto
	counts [NumReasons]atomic.Uint64
	opened atomic.Uint64
	nonce  [12]byte
}

// peerCrypto is what the Opener keeps per sender: its latest run, the
// replay window of that run, and the frame keys derived for it.
type peerCrypto struct {
	inc   uint64
	win   replayWindow
	aeads [4]aeadCache // one per key id in use; rotation needs two
}

type aeadCache struct {
	id   uint8
	key  [KeyLen]byte
	inc  uint64
	aead cipher.AEAD
}

// NewOpener returns an Opener for node self, which refuses frames that
// claim to come from self (its own multicast looped back, or a node
// configured with the same id, which would reuse nonces).
func NewOpener(self uint16, ring *Keyring) *Opener {
	o := &Opener{self: self, peers: map[uint16]*peerCrypto{}}
	o.ring.Store(ring)
	return o
}

// SetKeyring replaces the accepted keys.
func (o *Opener) SetKeyring(ring *Keyring) { o.ring.Store(ring) }

// Open authenticates and decrypts the frame b in place (b's payload bytes
// are overwritten) and checks it against replay. The returned payload
// aliases b. Every error wraps one of the package's sentinels and is counted
// in Stats.
func (o *Opener) Open(b []byte) (Frame, error) {
	f, err := o.open(b)
	if err != nil {
		if i := ReasonIndex(err); i >= 0 {
			o.counts[i].Add(1)
		}
		return Frame{}, err
	}
	o.opened.Add(1)
	return f, nil
}

func (o *Opener) open(b []byte) (Frame, error) {
	h, err := parseHeader(b)
	if err != nil {
		return Frame{}, fmt.Errorf("peer: %w", err)
	}
	if h.Sender == o.self {
		return Frame{}, fmt.Errorf("peer: %w: sender %d is this node (multicast loopback, or two nodes share an id)", ErrSelf, h.Sender)
	}
	key := o.ring.Load().key(h.KeyID)
	if key == nil {
		return Frame{}, fmt.Errorf("peer: %w: key %d from node %d is not in the keyring", ErrUnknownKey, h.KeyID, h.Sender)
	}
	p := o.peers[h.Sender]
	if p != nil {
		if h.Incarnation < p.inc {
			return Frame{}, fmt.Errorf("peer: %w: node %d run %d, already seen run %d", ErrOldIncarnation, h.Sender, h.Incarnation, p.inc)
		}
		if h.Incarnation == p.inc {
			if err := p.win.ok(h.Seq); err != nil {
				return Frame{}, fmt.Errorf("peer: node %d: %w", h.Sender, err)
			}
		}
	}
	var slot *aeadCache
	var aead cipher.AEAD
	if p != nil {
		for i := range p.aeads {
			c := &p.aeads[i]
			if c.aead != nil && c.id == h.KeyID && c.inc == h.Incarnation && c.key == *key {
				slot, aead = c, c.aead
				break
			}
		}
	}
	if aead == nil {
		// Derived per frame until one authenticates, so that forged
		// headers cannot fill the cache.
		if aead, err = deriveAEAD(key, h.Sender, h.Incarnation); err != nil {
			return Frame{}, err
		}
	}
	pt, err := aead.Open(b[HeaderLen:HeaderLen], nonce(&o.nonce, h.Seq), b[HeaderLen:], b[:HeaderLen])
	if err != nil {
		return Frame{}, fmt.Errorf("peer: %w: frame from node %d with key %d", ErrAuth, h.Sender, h.KeyID)
	}
	if p == nil {
		p = &peerCrypto{}
		o.peers[h.Sender] = p
	}
	f := Frame{Header: h, Payload: pt}
	if h.Incarnation > p.inc {
		f.NewIncarnation = p.inc != 0
		p.inc = h.Incarnation
		p.win = replayWindow{}
	}
	p.win.mark(h.Seq)
	if slot == nil {
		p.cache(h.KeyID, key, h.Incarnation, aead)
	}
	return f, nil
}

func (p *peerCrypto) cache(id uint8, key *[KeyLen]byte, inc uint64, a cipher.AEAD) {
	victim := &p.aeads[0]
	for i := range p.aeads {
		c := &p.aeads[i]
		if c.aead == nil || c.inc != inc || c.id == id {
			victim = c
			break
		}
	}
	*victim = aeadCache{id: id, key: *key, inc: inc, aead: a}
}

// OpenerStats counts what an Opener did.
type OpenerStats struct {
	Opened   uint64
	Rejected [NumReasons]uint64 // by ReasonIndex
}

// Stats returns the counters; safe to call from any goroutine.
func (o *Opener) Stats() OpenerStats {
	st := OpenerStats{Opened: o.opened.Load()}
	for i := range o.counts {
		st.Rejected[i] = o.counts[i].Load()
	}
	return st
}

// Count records a rejection found after Open (a malformed payload), so that
// all rejections are counted in one place.
func (o *Opener) Count(err error) {
	if i := ReasonIndex(err); i >= 0 {
		o.counts[i].Add(1)
	}
}
