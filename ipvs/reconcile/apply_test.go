package reconcile

import (
	"errors"
	"strings"
	"testing"

	"github.com/peerlvs/peerlvs/ipvs"
)

// fakeKernel holds services the way the kernel does, refusing what the
// kernel refuses (a duplicate service, a real server of no service).
type fakeKernel struct {
	svcs  map[Key]*Virtual
	order []Key
	fail  Op // the operation that fails, 0 for none
	calls []Op
}

func newFake(vs ...Virtual) *fakeKernel {
	k := &fakeKernel{svcs: map[Key]*Virtual{}}
	for _, v := range vs {
		k.svcs[KeyOf(v.Service)] = &Virtual{Service: v.Service, Dests: append([]ipvs.Destination(nil), v.Dests...)}
		k.order = append(k.order, KeyOf(v.Service))
	}
	return k
}

var errRefused = errors.New("refused")

func (k *fakeKernel) op(o Op) error {
	k.calls = append(k.calls, o)
	if o == k.fail {
		return errRefused
	}
	return nil
}

func (k *fakeKernel) Services() ([]ipvs.Service, error) {
	var out []ipvs.Service
	for _, key := range k.order {
		if v := k.svcs[key]; v != nil {
			out = append(out, v.Service)
		}
	}
	return out, nil
}

func (k *fakeKernel) Destinations(s ipvs.Service) ([]ipvs.Destination, error) {
	v := k.svcs[KeyOf(s)]
	if v == nil {
		return nil, errors.New("no such service")
	}
	return v.Dests, nil
}

func (k *fakeKernel) AddService(s ipvs.Service) error {
	if err := k.op(AddService); err != nil {
		return err
	}
	if k.svcs[KeyOf(s)] != nil {
		return errors.New("exists")
	}
	k.svcs[KeyOf(s)] = &Virtual{Service: s}
	k.order = append(k.order, KeyOf(s))
	return nil
}

func (k *fakeKernel) UpdateService(s ipvs.Service) error {
	if err := k.op(EditService); err != nil {
		return err
	}
	k.svcs[KeyOf(s)].Service = s
	return nil
}

func (k *fakeKernel) DelService(s ipvs.Service) error {
	if err := k.op(DelService); err != nil {
		return err
	}
	delete(k.svcs, KeyOf(s))
	return nil
}

func (k *fakeKernel) dests(s ipvs.Service, d ipvs.Destination, keep bool) error {
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

func (k *fakeKernel) AddDestination(s ipvs.Service, d ipvs.Destination) error {
	if err := k.op(AddDest); err != nil {
		return err
	}
	return k.dests(s, d, true)
}

func (k *fakeKernel) UpdateDestination(s ipvs.Service, d ipvs.Destination) error {
	if err := k.op(EditDest); err != nil {
		return err
	}
	return k.dests(s, d, true)
}

func (k *fakeKernel) DelDestination(s ipvs.Service, d ipvs.Destination) error {
	if err := k.op(DelDest); err != nil {
		return err
	}
	return k.dests(s, d, false)
}

func TestReadPlanApply(t *testing.T) {
	k := newFake(Virtual{web, []ipvs.Destination{rs("10.0.0.1", 80, 1), rs("10.0.0.2", 80, 1)}}, Virtual{dns, nil})
	want := []Virtual{{web, []ipvs.Destination{rs("10.0.0.1", 80, 5)}}, {mark, []ipvs.Destination{rs("10.0.0.9", 0, 1)}}}
	managed := func(Key) bool { return true }
	have, err := Read(k)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := Plan(want, have, managed)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Apply(k, plan); err != nil || n != len(plan) {
		t.Fatalf("applied %d of %d: %v", n, len(plan), err)
	}
	have, err = Read(k)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := Plan(want, have, managed); len(again) != 0 {
		t.Errorf("after Apply, Plan still finds:\n%s", lines(again))
	}
}

// A change the kernel refuses stops Apply there, names the change, and a
// fresh Read and Plan take up from the state left.
func TestApplyStopsAtRefusal(t *testing.T) {
	k := newFake(Virtual{web, []ipvs.Destination{rs("10.0.0.1", 80, 1)}})
	want := []Virtual{{web, []ipvs.Destination{rs("10.0.0.2", 80, 1)}}, {dns, nil}}
	have, _ := Read(k)
	plan, err := Plan(want, have, nil)
	if err != nil {
		t.Fatal(err)
	}
	k.fail = AddDest
	n, err := Apply(k, plan)
	if !errors.Is(err, errRefused) || !strings.Contains(err.Error(), "add real server tcp 192.0.2.10:80 -> 10.0.0.2:80") {
		t.Fatalf("error %v, want the refused change named", err)
	}
	if n != 1 || len(k.calls) != 2 {
		t.Fatalf("applied %d (calls %v), want the service added and the refused real server tried", n, k.calls)
	}
	k.fail = 0
	have, _ = Read(k)
	rest, err := Plan(want, have, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Apply(k, rest); err != nil || n != len(rest) {
		t.Fatalf("second pass applied %d of %d: %v", n, len(rest), err)
	}
	have, _ = Read(k)
	if again, _ := Plan(want, have, nil); len(again) != 0 {
		t.Errorf("still to do:\n%s", lines(again))
	}
}
