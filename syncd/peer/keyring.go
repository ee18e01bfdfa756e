package peer

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// KeyLen is the length of a key: AES-256.
const KeyLen = 32

// ErrKeyFile is wrapped by every error about a key file's content or
// permissions.
var ErrKeyFile = errors.New("bad key file")

// Keyring is the set of keys a node accepts, one of which it sends with. It
// is immutable: to rotate keys, load a new Keyring and hand it to
// Node.SetKeyring (or Sealer and Opener). Rotation without downtime is three
// rollouts: add the new key everywhere; make it the send key everywhere;
// remove the old key. During each rollout every node still accepts what the
// others send.
type Keyring struct {
	keys map[uint8]*[KeyLen]byte
	send uint8
}

// NewKeyring makes a Keyring from keys by id, sending with send.
func NewKeyring(send uint8, keys map[uint8][]byte) (*Keyring, error) {
	k := &Keyring{keys: map[uint8]*[KeyLen]byte{}, send: send}
	for id, v := range keys {
		if len(v) != KeyLen {
			return nil, fmt.Errorf("%w: key %d is %d bytes, want %d", ErrKeyFile, id, len(v), KeyLen)
		}
		if id == 0 {
			return nil, fmt.Errorf("%w: key id 0; use 1 to 255", ErrKeyFile)
		}
		k.keys[id] = (*[KeyLen]byte)(slices.Clone(v))
	}
	if _, ok := k.keys[send]; !ok {
		return nil, fmt.Errorf("%w: send key %d is not in the keyring", ErrKeyFile, send)
	}
	return k, nil
}

// SendID is the id of the key frames are sealed with.
func (k *Keyring) SendID() uint8 { return k.send }

// IDs lists the accepted key ids in ascending order.
func (k *Keyring) IDs() []uint8 {
	ids := make([]uint8, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (k *Keyring) key(id uint8) *[KeyLen]byte { return k.keys[id] }

// ParseKeyring reads a key file:
//
//	# comments and blank lines are ignored
//	<id> <64 hex digits> [send]
//
// id is 1 to 255. The line marked send is the send key; without a mark the
// first key is. name is used in errors.
func ParseKeyring(r io.Reader, name string) (*Keyring, error) {
	keys := map[uint8][]byte{}
	var send uint8
	var first uint8
	marked := 0
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		where := fmt.Sprintf("%s:%d", name, line)
		if len(f) < 2 || len(f) > 3 || (len(f) == 3 && f[2] != "send") {
			return nil, fmt.Errorf("%w: %s: want \"<id> <64 hex digits> [send]\"", ErrKeyFile, where)
		}
		n, err := strconv.ParseUint(f[0], 10, 8)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%w: %s: key id %q, want a number from 1 to 255", ErrKeyFile, where, f[0])
		}
		id := uint8(n)
		if _, dup := keys[id]; dup {
			return nil, fmt.Errorf("%w: %s: key id %d given twice; give each key its own id", ErrKeyFile, where, id)
		}
		v, err := hex.DecodeString(f[1])
		if err != nil {
			return nil, fmt.Errorf("%w: %s: key %d is not hex (%v); make one with: openssl rand -hex 32", ErrKeyFile, where, id, err)
		}
		if len(v) != KeyLen {
			return nil, fmt.Errorf("%w: %s: key %d is %d bytes (%d hex digits), want %d bytes (%d hex digits); make one with: openssl rand -hex 32",
				ErrKeyFile, where, id, len(v), len(f[1]), KeyLen, 2*KeyLen)
		}
		keys[id] = v
		if len(keys) == 1 {
			first = id
		}
		if len(f) == 3 {
			marked++
			send = id
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	switch {
	case len(keys) == 0:
		return nil, fmt.Errorf("%w: %s has no keys; add a line \"1 <64 hex digits>\"", ErrKeyFile, name)
	case marked > 1:
		return nil, fmt.Errorf("%w: %s marks %d keys send; mark one", ErrKeyFile, name, marked)
	case marked == 0:
		send = first
	}
	return NewKeyring(send, keys)
}

// LoadKeyring reads a key file (see ParseKeyring). The file must not be
// readable or writable by group or others: whoever reads it can forge
// connections on every director.
func LoadKeyring(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o, open to group or others; run: chmod 600 %s", ErrKeyFile, path, m, path)
	}
	return ParseKeyring(f, path)
}
