package reconcile

import (
	"fmt"

	"github.com/peerlvs/peerlvs/ipvs"
)

// Kernel is the part of *ipvs.Handle that Read and Apply use, so that the
// daemon runs against the kernel and tests against a fake.
type Kernel interface {
	Services() ([]ipvs.Service, error)
	Destinations(ipvs.Service) ([]ipvs.Destination, error)
	AddService(ipvs.Service) error
	UpdateService(ipvs.Service) error
	DelService(ipvs.Service) error
	AddDestination(ipvs.Service, ipvs.Destination) error
	UpdateDestination(ipvs.Service, ipvs.Destination) error
	DelDestination(ipvs.Service, ipvs.Destination) error
}

// Read returns the kernel's services with their real servers: the "have"
// of Plan.
func Read(k Kernel) ([]Virtual, error) {
	svcs, err := k.Services()
	if err != nil {
		return nil, fmt.Errorf("reconcile: read services: %w", err)
	}
	out := make([]Virtual, 0, len(svcs))
	for _, s := range svcs {
		ds, err := k.Destinations(s)
		if err != nil {
			return nil, fmt.Errorf("reconcile: read the real servers of %s: %w", s, err)
		}
		out = append(out, Virtual{Service: s, Dests: ds})
	}
	return out, nil
}

// Apply carries out changes in order and stops at the first that fails,
// returning how many were applied: the kernel then holds a state between
// the old and the declared one, and the next Plan, made from a fresh Read,
// starts from there.
func Apply(k Kernel, changes []Change) (int, error) {
	for i, c := range changes {
		var err error
		switch c.Op {
		case AddService:
			err = k.AddService(c.Service)
		case EditService:
			err = k.UpdateService(c.Service)
		case DelService:
			err = k.DelService(c.Service)
		case AddDest:
			err = k.AddDestination(c.Service, c.Dest)
		case EditDest:
			err = k.UpdateDestination(c.Service, c.Dest)
		case DelDest:
			err = k.DelDestination(c.Service, c.Dest)
		default:
			err = fmt.Errorf("unknown operation %v", c.Op)
		}
		if err != nil {
			return i, fmt.Errorf("reconcile: %s: %w", c, err)
		}
	}
	return len(changes), nil
}

var _ Kernel = (*ipvs.Handle)(nil)
