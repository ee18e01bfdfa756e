package peer

import (
	"time"

	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/table"
)

// FromConn fills e's connection fields from a kernel sync entry and clears
// its bookkeeping. It allocates only for sequence data (FTP-helper
// connections).
func FromConn(c *wire.Conn, e *table.Entry) {
	*e = table.Entry{
		Key: table.Key{
			Proto:    c.Protocol,
			Template: c.Flags&wire.FlagTemplate != 0,
			CPort:    c.CPort,
			VPort:    c.VPort,
			CAddr:    c.CAddr,
			VAddr:    c.VAddr,
			PE:       table.PEHash(c.PEName, c.PEData),
		},
		DAddr:   c.DAddr,
		DPort:   c.DPort,
		Flags:   c.Flags,
		State:   c.State,
		Fwmark:  c.Fwmark,
		Timeout: c.Timeout,
		PEData:  c.PEData,
		PEName:  c.PEName,
	}
	if q := c.Seq; q != nil {
		e.Seq = &table.SeqData{q.In.InitSeq, q.In.Delta, q.In.PrevDelta, q.Out.InitSeq, q.Out.Delta, q.Out.PrevDelta}
	}
}

// ToConn fills c from e for the kernel injector. PEData is shared with e.
func ToConn(e *table.Entry, c *wire.Conn) {
	*c = wire.Conn{
		Protocol: e.Proto,
		Flags:    e.Flags,
		State:    e.State,
		CPort:    e.CPort,
		VPort:    e.VPort,
		DPort:    e.DPort,
		Fwmark:   e.Fwmark,
		Timeout:  e.Timeout,
		CAddr:    e.CAddr,
		VAddr:    e.VAddr,
		DAddr:    e.DAddr,
		PEData:   e.PEData,
		PEName:   e.PEName,
	}
	if q := e.Seq; q != nil {
		c.Seq = &wire.SeqData{
			In:  wire.Seq{InitSeq: q[0], Delta: q[1], PrevDelta: q[2]},
			Out: wire.Seq{InitSeq: q[3], Delta: q[4], PrevDelta: q[5]},
		}
	}
}

// KernelTimeout is a table.Config.Timeout: the timeout in seconds the
// kernel's backup gives an entry that carries none.
func KernelTimeout(e *table.Entry) uint32 {
	var c wire.Conn
	c.Protocol, c.Flags, c.State = e.Proto, e.Flags, e.State
	return uint32(c.EffectiveTimeout() / time.Second)
}
