// Package reconcile computes the changes that bring a director's IPVS
// services and real servers to a declared set: services added, edited and
// removed in place, real servers added, edited (weight, forwarding method,
// thresholds) and removed, in an order the kernel accepts.
//
// It is pure: it reads the kernel's state and the declaration as values and
// returns the changes, so `saru services diff` can show them and the daemon
// can apply them through ipvs.Handle. It must never plan a flush, and never
// touch a service the caller does not manage: a service present in the
// kernel but not declared is removed only if the caller says it manages it
// (it declared it before), so services set up by hand or by other tools
// stay as they are.
package reconcile

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/peerlvs/peerlvs/ipvs"
)

// Virtual is a virtual service with its real servers.
type Virtual struct {
	Service ipvs.Service
	Dests   []ipvs.Destination
}

// Op is what a Change does.
type Op int

// The operations, in the order Plan emits them.
const (
	AddService Op = iota + 1
	EditService
	AddDest
	EditDest
	DelDest
	DelService
)

func (o Op) String() string {
	switch o {
	case AddService:
		return "add service"
	case EditService:
		return "edit service"
	case AddDest:
		return "add real server"
	case EditDest:
		return "edit real server"
	case DelDest:
		return "remove real server"
	case DelService:
		return "remove service"
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Change is one kernel operation. Dest is set for the real-server ones.
type Change struct {
	Op      Op
	Service ipvs.Service
	Dest    ipvs.Destination
	// Why names what differs, for edits.
	Why string
}

func (c Change) String() string {
	s := fmt.Sprintf("%s %s", c.Op, c.Service)
	if c.Op == AddDest || c.Op == EditDest || c.Op == DelDest {
		s += " -> " + c.Dest.String()
	}
	if c.Why != "" {
		s += " (" + c.Why + ")"
	}
	return s
}

// Key identifies a virtual service the way the kernel does: by firewall
// mark and family, or by protocol, address and port.
type Key struct {
	FWMark   uint32
	V6       bool
	Protocol ipvs.Protocol
	Addr     netip.Addr
	Port     uint16
}

// KeyOf returns s's key.
func KeyOf(s ipvs.Service) Key {
	a := s.Address.Unmap()
	if s.FWMark != 0 {
		return Key{FWMark: s.FWMark, V6: a.Is6()}
	}
	return Key{V6: a.Is6(), Protocol: s.Protocol, Addr: a, Port: s.Port}
}

type destKey struct {
	addr netip.Addr
	port uint16
}

func destKeyOf(d ipvs.Destination) destKey { return destKey{d.Address.Unmap(), d.Port} }

// Plan returns the changes that turn have (the kernel's services) into
// want. A service in have but not in want is removed only if managed says
// so. It refuses a declaration that names a service or a real server
// twice, or a real server of the other address family (the kernel's sync
// cannot carry mixed families).
func Plan(want, have []Virtual, managed func(Key) bool) ([]Change, error) {
	w, err := index(want)
	if err != nil {
		return nil, err
	}
	h, err := index(have)
	if err != nil {
		return nil, fmt.Errorf("the kernel's services: %w", err)
	}
	var out []Change
	for _, k := range sortedKeys(w) {
		wv := w[k]
		hv, ok := h[k]
		if !ok {
			out = append(out, Change{Op: AddService, Service: wv.Service})
			for _, d := range sortedDests(wv.Dests) {
				out = append(out, Change{Op: AddDest, Service: wv.Service, Dest: d})
			}
			continue
		}
		if why := serviceDiff(wv.Service, hv.Service); why != "" {
			out = append(out, Change{Op: EditService, Service: wv.Service, Why: why})
		}
		out = append(out, destChanges(wv, hv)...)
	}
	for _, k := range sortedKeys(h) {
		if _, ok := w[k]; ok || managed == nil || !managed(k) {
			continue
		}
		hv := h[k]
		// Removing the service removes its real servers with it.
		out = append(out, Change{Op: DelService, Service: hv.Service})
	}
	slices.SortStableFunc(out, func(a, b Change) int { return cmp.Compare(a.Op, b.Op) })
	return out, nil
}

func index(vs []Virtual) (map[Key]Virtual, error) {
	m := make(map[Key]Virtual, len(vs))
	var errs []error
	for _, v := range vs {
		k := KeyOf(v.Service)
		if _, dup := m[k]; dup {
			errs = append(errs, fmt.Errorf("service %s declared twice", v.Service))
			continue
		}
		seen := map[destKey]bool{}
		for _, d := range v.Dests {
			dk := destKeyOf(d)
			if seen[dk] {
				errs = append(errs, fmt.Errorf("service %s: real server %s declared twice", v.Service, d))
			}
			seen[dk] = true
			if d.Address.Unmap().Is6() != k.V6 {
				errs = append(errs, fmt.Errorf("service %s: real server %s is of the other address family", v.Service, d))
			}
		}
		m[k] = v
	}
	return m, errors.Join(errs...)
}

func sortedKeys(m map[Key]Virtual) []Key {
	ks := make([]Key, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	v6 := func(k Key) int {
		if k.V6 {
			return 1
		}
		return 0
	}
	slices.SortFunc(ks, func(a, b Key) int {
		return cmp.Or(cmp.Compare(a.FWMark, b.FWMark), cmp.Compare(v6(a), v6(b)),
			cmp.Compare(a.Protocol, b.Protocol), a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
	})
	return ks
}

func sortedDests(ds []ipvs.Destination) []ipvs.Destination {
	out := slices.Clone(ds)
	slices.SortFunc(out, func(a, b ipvs.Destination) int {
		return cmp.Or(a.Address.Unmap().Compare(b.Address.Unmap()), cmp.Compare(a.Port, b.Port))
	})
	return out
}

func scheduler(s ipvs.Service) string {
	if s.Scheduler == "" {
		return ipvs.DefaultScheduler
	}
	return s.Scheduler
}

// serviceDiff names what an edit must change, "" if nothing.
func serviceDiff(want, have ipvs.Service) string {
	var d []string
	if scheduler(want) != scheduler(have) {
		d = append(d, fmt.Sprintf("scheduler %s -> %s", scheduler(have), scheduler(want)))
	}
	if f := ipvs.FlagOnePacket | ipvs.FlagSched1 | ipvs.FlagSched2 | ipvs.FlagSched3; want.Flags&f != have.Flags&f {
		d = append(d, fmt.Sprintf("flags %#x -> %#x", uint32(have.Flags&f), uint32(want.Flags&f)))
	}
	if want.Timeout != have.Timeout {
		d = append(d, fmt.Sprintf("persistence %v -> %v", have.Timeout, want.Timeout))
	}
	if want.Timeout > 0 && want.PersistPrefix() != have.PersistPrefix() {
		d = append(d, fmt.Sprintf("persistence netmask /%d -> /%d", have.PersistPrefix(), want.PersistPrefix()))
	}
	return strings.Join(d, ", ")
}

func destChanges(want, have Virtual) []Change {
	h := make(map[destKey]ipvs.Destination, len(have.Dests))
	for _, d := range have.Dests {
		h[destKeyOf(d)] = d
	}
	var out []Change
	w := make(map[destKey]bool, len(want.Dests))
	for _, d := range sortedDests(want.Dests) {
		k := destKeyOf(d)
		w[k] = true
		hd, ok := h[k]
		if !ok {
			out = append(out, Change{Op: AddDest, Service: want.Service, Dest: d})
			continue
		}
		if why := destDiff(d, hd); why != "" {
			out = append(out, Change{Op: EditDest, Service: want.Service, Dest: d, Why: why})
		}
	}
	for _, d := range sortedDests(have.Dests) {
		if !w[destKeyOf(d)] {
			out = append(out, Change{Op: DelDest, Service: want.Service, Dest: d})
		}
	}
	return out
}

func destDiff(want, have ipvs.Destination) string {
	var d []string
	if want.Weight != have.Weight {
		d = append(d, fmt.Sprintf("weight %d -> %d", have.Weight, want.Weight))
	}
	if want.Forward != have.Forward {
		d = append(d, fmt.Sprintf("forwarding %s -> %s", have.Forward, want.Forward))
	}
	if want.UpperThreshold != have.UpperThreshold || want.LowerThreshold != have.LowerThreshold {
		d = append(d, fmt.Sprintf("thresholds %d/%d -> %d/%d", have.UpperThreshold, have.LowerThreshold, want.UpperThreshold, want.LowerThreshold))
	}
	return strings.Join(d, ", ")
}
