package peer

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/syncd/table"
)

var t0 = time.Unix(1_700_000_000, 0)

// testKey is key id's fixed secret: tests and fuzz seeds must be
// reproducible.
func testKey(id uint8) []byte { return bytes.Repeat([]byte{id, 0x5a}, KeyLen/2) }

func testRing(t testing.TB, send uint8, ids ...uint8) *Keyring {
	t.Helper()
	m := map[uint8][]byte{}
	for _, id := range append(ids, send) {
		m[id] = testKey(id)
	}
	k, err := NewKeyring(send, m)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// conn4 is the i-th of a family of distinct IPv4 connections.
func conn4(i int) table.Entry {
	return table.Entry{
		Key: table.Key{
			Proto: 6,
			CPort: uint16(1024 + i%50000),
			VPort: 80,
			CAddr: netip.AddrFrom4([4]byte{10, byte(i >> 24), byte(i >> 16), byte(i >> 8)}).Next(),
			VAddr: netip.AddrFrom4([4]byte{192, 0, 2, 1}),
		},
		DAddr:   netip.AddrFrom4([4]byte{10, 9, 0, byte(i % 8)}),
		DPort:   80,
		Flags:   0x3,
		State:   1,
		Timeout: 900,
	}
}

func conn6(i int) table.Entry {
	e := conn4(i)
	e.CAddr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i), 14: byte(i >> 8), 13: byte(i >> 16)})
	e.VAddr = netip.MustParseAddr("2001:db8::80")
	e.DAddr = netip.MustParseAddr("2001:db8:1::9")
	return e
}

func sipTemplate() table.Entry {
	e := conn6(3)
	e.Proto, e.CPort, e.Flags, e.State, e.Template = 17, 0, 0x1003, 0, true
	e.PEName, e.PEData = "sip", []byte("a84b4c76e66710@pc33.example.com")
	e.PE = table.PEHash(e.PEName, e.PEData)
	return e
}

func ftpConn() table.Entry {
	e := conn4(4)
	e.Flags |= 0x600
	e.Seq = &table.SeqData{100, 5, 0, 200, 7, 0}
	e.Fwmark = 42
	return e
}
