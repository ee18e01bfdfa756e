package daemon

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/peerlvs/peerlvs/ipvs"
	"github.com/peerlvs/peerlvs/ipvs/reconcile"
	"github.com/peerlvs/peerlvs/syncd/table"
)

// Synced entries and the services they belong to.
//
// The kernel's backup thread binds a synced entry to its real server when
// it installs it, if the service and the real server exist at that moment;
// otherwise the entry stays unbound. An unbound persistence template is
// thrown away at the client's next connection (ip_vs_check_template),
// which is then scheduled afresh: the client changes real server. An
// unbound IP-in-IP connection stalled in the lab once its director took
// its bucket, and writing it again once the service existed did not revive
// it (with the services there first, the same scenario kept every
// connection). Entries arrive before their services whenever a director's
// services are declared after syncd's bulk resync (saru declares them
// after syncd starts), or a real server is added on one director before
// another.
//
// So syncd writes a peer's entry to the kernel only once the kernel holds
// its service and real server (injectable), and holds the others back: a
// pass that sees their pair appear writes them. Passes run every bindEvery
// and on POST /bind. (The entries held back are kept by key, not found by
// owner: a restarted director's bulk resync brings back entries its own
// earlier run reported, which its fresh kernel lacks all the same.)

// bindEvery is how often the kernel's services are read to see pairs
// appear. A pair that appears between two reads keeps its entries held
// back until the next one; saru does not wait for that, it asks for a pass
// itself (POST /bind) before it turns ready.
const bindEvery = time.Second

// bindPair is a service with one of its real servers' addresses. The real
// server's port is left out (a fwmark service's real servers often have
// none): an entry whose real server the service has on another port only
// is written, and stays unbound, as it would have without holding back.
type bindPair struct {
	svc   reconcile.Key
	daddr netip.Addr
}

func pairsOf(vs []reconcile.Virtual) map[bindPair]bool {
	out := map[bindPair]bool{}
	for _, v := range vs {
		k := reconcile.KeyOf(v.Service)
		for _, d := range v.Dests {
			out[bindPair{k, d.Address.Unmap()}] = true
		}
	}
	return out
}

// entryPairs fills buf with the pairs an entry may belong to and returns
// them: the kernel looks a synced entry's service up by firewall mark
// first, then by protocol, address and port, then as a port-zero service.
// A persistence template of a fwmark service has protocol IPPROTO_IP and
// the mark in its virtual address.
func entryPairs(en *table.Entry, buf *[3]bindPair) []bindPair {
	v, d := en.VAddr.Unmap(), en.DAddr.Unmap()
	mark := en.Fwmark
	if en.Proto == 0 && mark == 0 {
		b := v.As16()
		if v.Is4() {
			a := v.As4()
			b = [16]byte{a[0], a[1], a[2], a[3]}
		}
		mark = binary.BigEndian.Uint32(b[:4])
	}
	out := buf[:0]
	if mark != 0 {
		out = append(out, bindPair{reconcile.Key{FWMark: mark, V6: v.Is6()}, d})
	}
	if en.Proto != 0 {
		k := reconcile.Key{V6: v.Is6(), Protocol: ipvs.Protocol(en.Proto), Addr: v, Port: en.VPort}
		out = append(out, bindPair{k, d})
		k.Port = 0
		out = append(out, bindPair{k, d})
	}
	return out
}

// injectable reports whether en may be written to the kernel now: its
// service and real server were there at the last pass, or syncd cannot
// read the services at all. The bind pass that sees them appear writes it.
func (e *engine) injectable(en *table.Entry) bool {
	if e.kio.Services == nil {
		return true
	}
	var buf [3]bindPair
	for _, p := range entryPairs(en, &buf) {
		if e.bound[p] {
			return true
		}
	}
	return false
}

// bindPass reads the kernel's services and writes the held-back entries
// whose service and real server are there now.
func (e *engine) bindPass(now time.Time) error {
	vs, err := e.kio.Services()
	if err != nil {
		e.st.BindErrors++
		e.rej.log(e.log, "bind", now, "cannot read the kernel's services; entries of services that appear since are held back", zap.Error(err))
		return err
	}
	cur := pairsOf(vs)
	if maps.Equal(cur, e.bound) && e.bound != nil {
		return nil // nothing appeared: the held entries still wait
	}
	e.bound = cur
	n := 0
	for k := range e.held {
		en, ok := e.tbl.Get(&k)
		if !ok {
			delete(e.held, k) // gone from the table meanwhile
			continue
		}
		if e.injectable(&en) {
			e.applied(&en, 0)
			n++
		}
	}
	if n > 0 {
		e.st.Bound += uint64(n)
		e.log.Info("held-back entries written to the kernel: their service and real server appeared",
			zap.Int("entries", n), zap.Int("still_held", len(e.held)))
	}
	return nil
}

// notHeld is the read-back's filter: an entry held back is not missing
// from the kernel, it waits for its service.
func (e *engine) notHeld(en *table.Entry) bool {
	_, held := e.held[en.Key]
	return !held
}

// heldSweepEvery is how often held keys whose entries left the table
// (expired while their service never came) are forgotten.
const heldSweepEvery = 30 * time.Second

// bindTick runs a pass when one is due, forgets held keys gone from the
// table, and releases the POST /bind callers whose pass has been handed
// to the kernel.
func (e *engine) bindTick(now time.Time) {
	if e.kio.Services != nil && !now.Before(e.nextBind) {
		e.nextBind = now.Add(bindEvery)
		_ = e.bindPass(now)
	}
	if len(e.held) > 0 && !now.Before(e.nextSweep) {
		e.nextSweep = now.Add(heldSweepEvery)
		for k := range e.held {
			if _, ok := e.tbl.Get(&k); !ok {
				delete(e.held, k)
			}
		}
	}
	if len(e.bindWaiters) > 0 && len(e.inj.queue) == 0 {
		for _, w := range e.bindWaiters {
			w <- nil
		}
		e.bindWaiters = e.bindWaiters[:0]
	}
}

// bindNow runs a pass for a POST /bind caller, who is answered once the
// entries it wrote have left the injection queue.
func (e *engine) bindNow(w chan error) {
	if e.kio.Services == nil {
		w <- nil
		return
	}
	if err := e.bindPass(e.now); err != nil {
		w <- err
		return
	}
	e.nextBind = e.now.Add(bindEvery)
	e.bindWaiters = append(e.bindWaiters, w)
}
