package reconcile

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/ipvs"
)

func TestReadPlanApply(t *testing.T) {
	k := NewFake(Virtual{web, []ipvs.Destination{rs("10.0.0.1", 80, 1), rs("10.0.0.2", 80, 1)}}, Virtual{dns, nil})
	// The persistent service asks for one client per template (netmask
	// 0), which the kernel reports back as /32.
	persistent := mark
	persistent.Timeout = 300 * time.Second
	want := []Virtual{{web, []ipvs.Destination{rs("10.0.0.1", 80, 5)}}, {persistent, []ipvs.Destination{rs("10.0.0.9", 0, 1)}}}
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
	k := NewFake(Virtual{web, []ipvs.Destination{rs("10.0.0.1", 80, 1)}})
	want := []Virtual{{web, []ipvs.Destination{rs("10.0.0.2", 80, 1)}}, {dns, nil}}
	have, _ := Read(k)
	plan, err := Plan(want, have, nil)
	if err != nil {
		t.Fatal(err)
	}
	k.Fail = AddDest
	n, err := Apply(k, plan)
	if !errors.Is(err, ErrFakeRefused) || !strings.Contains(err.Error(), "add real server tcp 192.0.2.10:80 -> 10.0.0.2:80") {
		t.Fatalf("error %v, want the refused change named", err)
	}
	if n != 1 || len(k.Calls) != 2 {
		t.Fatalf("applied %d (calls %v), want the service added and the refused real server tried", n, k.Calls)
	}
	k.Fail = 0
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
