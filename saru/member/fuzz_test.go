package member

import (
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// FuzzDecode: metadata arrives from the network; Decode must never panic,
// and whatever it accepts must survive a round trip through Encode.
func FuzzDecode(f *testing.F) {
	good, _ := Encode("v1", 2, StateReady, 9, Progress{7, 8}, Unfit{Reason: "eth0: no carrier", LinkDown: true}, settings, memberlist.MetaMaxSize)
	f.Add(good)
	timed := settings
	timed.Timing = Timing{FailureDetection: 2500 * time.Millisecond, Lease: LeaseOff, Quorum: 2}
	withTiming, _ := Encode("v1", 1, StateJoining, 1, Progress{}, Unfit{}, timed, memberlist.MetaMaxSize)
	f.Add(withTiming)
	f.Add([]byte(`{"st":"ready","fp":"zz"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, buf []byte) {
		m, err := Decode(buf)
		if err != nil {
			return
		}
		_ = Diff(settings, m)
		again, err := Encode(m.Version, m.Weight, m.State, m.Run, m.Progress, m.Unfit, m.Settings, 1<<20)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
	})
}
