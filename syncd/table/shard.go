package table

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
)

// slot is the stored form of an entry: 64 bytes, one cache line. IPv4
// addresses live in addr; an IPv6 entry keeps the index of its 48-byte
// address block there instead, so that IPv4-heavy tables do not pay for
// IPv6.
type slot struct {
	addr                [12]byte // caddr, vaddr, daddr (IPv4) or addr6 index
	cport, vport, dport uint16
	proto               uint8
	bits                uint8
	state               uint16
	owner               NodeID
	flags               uint32
	fwmark              uint32
	timeout             uint32
	expiry              Stamp
	reported            Stamp
	refreshAt           Stamp // own entries: when to report it due for refresh; 0 none
	version             uint32
	extra               uint32 // index into shard.extras; 0 none
	next, prev          uint32 // timing-wheel list, or free list
}

// slot.bits
const (
	bTemplate   = 1 << iota
	bV6         // addr holds an addr6 index
	bPE         // identity includes extra's pe hash
	bUsed       // live entry (for slab scans)
	bRereported // own entry reported again by the kernel since it was last announced
)

const (
	keyBits = bTemplate | bV6 | bPE

	chunkBits = 9 // 512 slots (32 KiB) per slab chunk: small enough that a half-used last chunk costs little
	chunkSize = 1 << chunkBits
	chunkMask = chunkSize - 1

	// refBits is how many bits of an index slot name a slab slot; the rest
	// hold a tag of the hash so that most probes that miss never touch the
	// slab.
	refBits = 24
	refMask = 1<<refBits - 1
	maxRefs = refMask

	wheelBits  = 10 // 1024 one-second slots: a revolution exceeds most state timeouts
	wheelSlots = 1 << wheelBits
	wheelMask  = wheelSlots - 1
	headTag    = 1 << 31 // slot.prev of a list head: headTag | wheel slot
)

type extra struct {
	seq    *SeqData
	peData []byte
	peName string
	pe     uint64
}

type shard struct {
	mu sync.Mutex

	index []uint32 // 0 empty, else tag<<refBits | slab index
	mask  uint32
	count atomic.Int64

	slab [][]slot
	free uint32 // free slab slots, linked through slot.next
	hi   uint32 // slab slots ever used; slot 0 is never used so that 0 means none

	addr6 [][][48]byte
	free6 uint32
	hi6   uint32

	extras    map[uint32]*extra
	nextExtra uint32

	wheel [wheelSlots]uint32
	tick  Stamp // every wheel slot up to this second has been processed

	created, updated, stale, expired, removed uint64

	_ [64]byte // keep neighbouring shards' mutexes off this cache line
}

// lkey is a Key packed for hashing and comparison.
type lkey struct {
	proto        uint8
	bits         uint8
	cport, vport uint16
	c, v         [16]byte // IPv4 in the first 4 bytes
	pe           uint64
}

func packKey(k *Key) (lkey, error) {
	l := lkey{proto: k.Proto, cport: k.CPort, vport: k.VPort, pe: k.PE}
	if k.Template {
		l.bits |= bTemplate
	}
	if k.PE != 0 {
		l.bits |= bPE
	}
	switch {
	case !k.CAddr.IsValid() || !k.VAddr.IsValid():
		return l, invalid("missing client or virtual address")
	case k.CAddr.Is4() != k.VAddr.Is4():
		return l, invalid("client %v and virtual %v addresses of different families", k.CAddr, k.VAddr)
	case k.CAddr.Zone() != "" || k.VAddr.Zone() != "":
		return l, invalid("zoned address")
	case k.CAddr.Is4():
		a, b := k.CAddr.As4(), k.VAddr.As4()
		copy(l.c[:], a[:])
		copy(l.v[:], b[:])
	default:
		l.bits |= bV6
		l.c, l.v = k.CAddr.As16(), k.VAddr.As16()
	}
	return l, nil
}

// bytes lays l out for the hash: only the bytes that identify it.
func (l *lkey) bytes(b *[48]byte) []byte {
	b[0], b[1] = l.proto, l.bits
	binary.LittleEndian.PutUint16(b[2:], l.cport)
	binary.LittleEndian.PutUint16(b[4:], l.vport)
	n := 6
	if l.bits&bV6 != 0 {
		n += copy(b[n:], l.c[:])
		n += copy(b[n:], l.v[:])
	} else {
		n += copy(b[n:], l.c[:4])
		n += copy(b[n:], l.v[:4])
	}
	if l.bits&bPE != 0 {
		binary.LittleEndian.PutUint64(b[n:], l.pe)
		n += 8
	}
	return b[:n]
}

func (s *shard) at(i uint32) *slot { return &s.slab[i>>chunkBits][i&chunkMask] }

func (s *shard) a6(i uint32) *[48]byte { return &s.addr6[i>>chunkBits][i&chunkMask] }

func (s *shard) alloc() uint32 {
	if i := s.free; i != 0 {
		sl := s.at(i)
		s.free = sl.next
		*sl = slot{}
		return i
	}
	if s.hi == 0 {
		s.hi = 1
	}
	i := s.hi
	if int(i>>chunkBits) == len(s.slab) {
		s.slab = append(s.slab, make([]slot, chunkSize))
	}
	s.hi++
	return i
}

func (s *shard) release(i uint32) {
	sl := s.at(i)
	if sl.bits&bV6 != 0 {
		j := binary.LittleEndian.Uint32(sl.addr[:])
		binary.LittleEndian.PutUint32(s.a6(j)[:], s.free6)
		s.free6 = j
	}
	if sl.extra != 0 {
		delete(s.extras, sl.extra)
	}
	*sl = slot{next: s.free}
	s.free = i
}

func (s *shard) alloc6() uint32 {
	if i := s.free6; i != 0 {
		s.free6 = binary.LittleEndian.Uint32(s.a6(i)[:])
		return i
	}
	if s.hi6 == 0 {
		s.hi6 = 1
	}
	i := s.hi6
	if int(i>>chunkBits) == len(s.addr6) {
		s.addr6 = append(s.addr6, make([][48]byte, chunkSize))
	}
	s.hi6++
	return i
}

// keyOf rebuilds the packed key of a stored slot.
func (s *shard) keyOf(sl *slot) lkey {
	l := lkey{proto: sl.proto, bits: sl.bits & keyBits, cport: sl.cport, vport: sl.vport}
	if sl.bits&bV6 != 0 {
		a := s.a6(binary.LittleEndian.Uint32(sl.addr[:]))
		copy(l.c[:], a[0:16])
		copy(l.v[:], a[16:32])
	} else {
		copy(l.c[:], sl.addr[0:4])
		copy(l.v[:], sl.addr[4:8])
	}
	if sl.bits&bPE != 0 {
		l.pe = s.extras[sl.extra].pe
	}
	return l
}

func (s *shard) match(sl *slot, l *lkey) bool {
	if sl.proto != l.proto || sl.bits&keyBits != l.bits || sl.cport != l.cport || sl.vport != l.vport {
		return false
	}
	if l.bits&bV6 != 0 {
		a := s.a6(binary.LittleEndian.Uint32(sl.addr[:]))
		if [16]byte(a[0:16]) != l.c || [16]byte(a[16:32]) != l.v {
			return false
		}
	} else if [4]byte(sl.addr[0:4]) != [4]byte(l.c[:4]) || [4]byte(sl.addr[4:8]) != [4]byte(l.v[:4]) {
		return false
	}
	return l.bits&bPE == 0 || s.extras[sl.extra].pe == l.pe
}

func tagOf(h uint64) uint32 { return uint32(h>>32)&0xff | 1 }

// find returns the index position of l and its slab slot, or the empty
// position where it would go and 0.
func (s *shard) find(l *lkey, h uint64) (pos, idx uint32) {
	if s.index == nil {
		return 0, 0
	}
	tag := tagOf(h)
	for p := uint32(h) & s.mask; ; p = (p + 1) & s.mask {
		v := s.index[p]
		if v == 0 {
			return p, 0
		}
		if v>>refBits == tag && s.match(s.at(v&refMask), l) {
			return p, v & refMask
		}
	}
}

// needGrow reports whether one more entry would load the index past 3/4,
// where linear probing's clusters start to grow fast.
func (s *shard) needGrow() bool {
	return s.index == nil || uint32(s.count.Load()+1) > (s.mask+1)/4*3
}

func (s *shard) grow(t *Table) {
	n := uint32(64)
	if s.index != nil {
		n = (s.mask + 1) * 2
	}
	old := s.index
	s.index = make([]uint32, n)
	s.mask = n - 1
	var buf [48]byte
	for _, v := range old {
		if v == 0 {
			continue
		}
		l := s.keyOf(s.at(v & refMask))
		p := uint32(t.hash(l.bytes(&buf))) & s.mask
		for s.index[p] != 0 {
			p = (p + 1) & s.mask
		}
		s.index[p] = v
	}
}

// unindex removes position pos by shifting later members of its cluster
// back, so that lookups never need tombstones.
func (s *shard) unindex(t *Table, pos uint32) {
	var buf [48]byte
	for {
		s.index[pos] = 0
		j := pos
		for {
			j = (j + 1) & s.mask
			v := s.index[j]
			if v == 0 {
				return
			}
			l := s.keyOf(s.at(v & refMask))
			home := uint32(t.hash(l.bytes(&buf))) & s.mask
			// Move v into the hole unless its home lies cyclically in
			// (pos, j], where it can still be found without passing pos.
			if (j > pos && (home <= pos || home > j)) || (j < pos && home <= pos && home > j) {
				s.index[pos] = v
				pos = j
				break
			}
		}
	}
}

// event is when the wheel must next look at an entry.
func (sl *slot) event() Stamp {
	if sl.refreshAt != 0 && sl.refreshAt < sl.expiry {
		return sl.refreshAt
	}
	return sl.expiry
}

// link puts entry i in the wheel slot of second ev. An entry sits in a slot
// no later than its event; when its event moves later the entry stays put
// and is moved on when that slot comes due, so that the common update (a
// refresh) costs no list surgery.
func (s *shard) link(i uint32, ev Stamp) {
	if ev <= s.tick {
		ev = s.tick + 1
	}
	w := uint32(ev) & wheelMask
	sl := s.at(i)
	sl.next, sl.prev = s.wheel[w], headTag|w
	if sl.next != 0 {
		s.at(sl.next).prev = i
	}
	s.wheel[w] = i
}

func (s *shard) unlink(i uint32) {
	sl := s.at(i)
	if sl.prev&headTag != 0 {
		s.wheel[sl.prev&wheelMask] = sl.next
	} else {
		s.at(sl.prev).next = sl.next
	}
	if sl.next != 0 {
		s.at(sl.next).prev = sl.prev
	}
	sl.next, sl.prev = 0, 0
}

// relink moves entry i earlier in the wheel if its event moved before
// oldEv.
func (s *shard) relink(i uint32, oldEv Stamp) {
	if ev := s.at(i).event(); ev < oldEv {
		s.unlink(i)
		s.link(i, ev)
	}
}

// remove deletes entry i, which must be linked in the wheel unless
// detached is set (Tick has taken its wheel slot's list apart).
func (s *shard) remove(t *Table, i uint32, detached bool) {
	sl := s.at(i)
	l := s.keyOf(sl)
	var buf [48]byte
	pos, idx := s.find(&l, t.hash(l.bytes(&buf)))
	if idx == i {
		s.unindex(t, pos)
	}
	if !detached {
		s.unlink(i)
	}
	s.release(i)
	s.count.Add(-1)
}

func (s *shard) start(now Stamp) {
	if s.tick == 0 && now > 0 {
		s.tick = now - 1
	}
}

// advance processes the wheel slots of every second up to now: it removes
// expired entries, appending them to exp, and appends own entries that are
// due for refresh to ref.
func (s *shard) advance(t *Table, now Stamp, exp *[]Entry, ref *[]Due, keepExp bool) (nExp, nRef int) {
	s.start(now)
	if now <= s.tick {
		return 0, 0
	}
	steps := uint32(now - s.tick)
	if steps > wheelSlots {
		steps = wheelSlots
	}
	first := uint32(s.tick) + 1
	s.tick = now
	for k := range steps {
		w := (first + k) & wheelMask
		i := s.wheel[w]
		s.wheel[w] = 0
		for i != 0 {
			sl := s.at(i)
			next := sl.next
			switch {
			case sl.expiry <= now:
				if keepExp {
					*exp = append(*exp, s.export(i))
				}
				s.remove(t, i, true)
				s.expired++
				nExp++
			case sl.refreshAt != 0 && sl.refreshAt <= now:
				sl.refreshAt = 0
				*ref = append(*ref, Due{Entry: s.export(i), Rereported: sl.bits&bRereported != 0})
				s.link(i, sl.expiry)
				nRef++
			default:
				s.link(i, sl.event())
			}
			i = next
		}
	}
	return nExp, nRef
}

func (s *shard) export(i uint32) Entry {
	sl := s.at(i)
	e := Entry{
		Key: Key{
			Proto:    sl.proto,
			Template: sl.bits&bTemplate != 0,
			CPort:    sl.cport,
			VPort:    sl.vport,
		},
		DPort:    sl.dport,
		Flags:    sl.flags,
		State:    sl.state,
		Fwmark:   sl.fwmark,
		Timeout:  sl.timeout,
		Owner:    sl.owner,
		Version:  sl.version,
		Reported: sl.reported,
		Expires:  sl.expiry,
	}
	if sl.bits&bV6 != 0 {
		a := s.a6(binary.LittleEndian.Uint32(sl.addr[:]))
		e.CAddr = netip.AddrFrom16([16]byte(a[0:16]))
		e.VAddr = netip.AddrFrom16([16]byte(a[16:32]))
		e.DAddr = netip.AddrFrom16([16]byte(a[32:48]))
	} else {
		e.CAddr = netip.AddrFrom4([4]byte(sl.addr[0:4]))
		e.VAddr = netip.AddrFrom4([4]byte(sl.addr[4:8]))
		e.DAddr = netip.AddrFrom4([4]byte(sl.addr[8:12]))
	}
	if sl.extra != 0 {
		x := s.extras[sl.extra]
		e.Seq, e.PEData, e.PEName, e.PE = x.seq, x.peData, x.peName, x.pe
	}
	return e
}
