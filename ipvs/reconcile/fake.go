package reconcile

import (
	"errors"
	"slices"
	"sync"

	"github.com/peerlvs/peerlvs/ipvs"
)

// Fake is an in-memory Kernel for tests of the packages that reconcile:
// it holds services the way the kernel does, refusing what the kernel
// refuses (a duplicate service, a real server of no service). It is safe
// for concurrent use.
type Fake struct {
	mu    sync.Mutex
	svcs  map[Key]*Virtual
	order []Key
	// Fail is the operation that fails, 0 for none; Calls records every
	// write. Set and read them only while no one else uses the Fake.
	Fail  Op
	Calls []Op
}

// NewFake returns a Fake holding vs.
func NewFake(vs ...Virtual) *Fake {
	k := &Fake{svcs: map[Key]*Virtual{}}
	for _, v := range vs {
		k.svcs[KeyOf(v.Service)] = &Virtual{Service: v.Service, Dests: append([]ipvs.Destination(nil), v.Dests...)}
		k.order = append(k.order, KeyOf(v.Service))
	}
	return k
}

// ErrFakeRefused is what the Fake returns for its Fail operation.
var ErrFakeRefused = errors.New("refused")

func (k *Fake) op(o Op) error {
	k.Calls = append(k.Calls, o)
	if o == k.Fail {
		return ErrFakeRefused
	}
	return nil
}

// Services implements Kernel.
func (k *Fake) Services() ([]ipvs.Service, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []ipvs.Service
	for _, key := range k.order {
		if v := k.svcs[key]; v != nil {
			out = append(out, v.Service)
		}
	}
	return out, nil
}

// Destinations implements Kernel.
func (k *Fake) Destinations(s ipvs.Service) ([]ipvs.Destination, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := k.svcs[KeyOf(s)]
	if v == nil {
		return nil, errors.New("no such service")
	}
	return slices.Clone(v.Dests), nil
}

// AddService implements Kernel.
func (k *Fake) AddService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.op(AddService); err != nil {
		return err
	}
	if k.svcs[KeyOf(s)] != nil {
		return errors.New("exists")
	}
	k.svcs[KeyOf(s)] = &Virtual{Service: asKernel(s)}
	if !slices.Contains(k.order, KeyOf(s)) {
		k.order = append(k.order, KeyOf(s))
	}
	return nil
}

// UpdateService implements Kernel.
func (k *Fake) UpdateService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.op(EditService); err != nil {
		return err
	}
	v := k.svcs[KeyOf(s)]
	if v == nil {
		return errors.New("no such service")
	}
	v.Service = asKernel(s)
	return nil
}

// asKernel is s as the kernel reports it back: with the persistence
// netmask always spelled out (one client per template is a full mask).
func asKernel(s ipvs.Service) ipvs.Service {
	s.Netmask = s.PersistPrefix()
	return s
}

// DelService implements Kernel.
func (k *Fake) DelService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.op(DelService); err != nil {
		return err
	}
	delete(k.svcs, KeyOf(s))
	return nil
}

func (k *Fake) dests(s ipvs.Service, d ipvs.Destination, keep bool) error {
	v := k.svcs[KeyOf(s)]
	if v == nil {
		return errors.New("no such service")
	}
	ds := v.Dests[:0]
	for _, x := range v.Dests {
		if destKeyOf(x) != destKeyOf(d) {
			ds = append(ds, x)
		}
	}
	if keep {
		ds = append(ds, d)
	}
	v.Dests = ds
	return nil
}

// AddDestination implements Kernel.
func (k *Fake) AddDestination(s ipvs.Service, d ipvs.Destination) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.op(AddDest); err != nil {
		return err
	}
	return k.dests(s, d, true)
}

// UpdateDestination implements Kernel.
func (k *Fake) UpdateDestination(s ipvs.Service, d ipvs.Destination) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.op(EditDest); err != nil {
		return err
	}
	return k.dests(s, d, true)
}

// DelDestination implements Kernel.
func (k *Fake) DelDestination(s ipvs.Service, d ipvs.Destination) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.op(DelDest); err != nil {
		return err
	}
	return k.dests(s, d, false)
}
