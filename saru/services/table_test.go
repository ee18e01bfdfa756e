package services

import (
	"testing"

	"github.com/peerlvs/peerlvs/saru/health"
	"github.com/peerlvs/peerlvs/saru/verdict"
)

const two = `
services:
  - address: 192.0.2.10:80
    check: {type: tcp}
    fallback: {address: 10.1.0.9:80, weight: 2}
    reals:
      - {address: 10.1.0.1:80, weight: 3}
      - {address: 10.1.0.2:80, on_failure: remove}
`

func TestDecide(t *testing.T) {
	svcs, err := Parse(decode(t, two))
	if err != nil {
		t.Fatal(err)
	}
	r1, r2 := svcs[0].ID(svcs[0].Reals[0]), svcs[0].ID(svcs[0].Reals[1])
	st := func(v health.Verdict) health.Status { return health.Status{Verdict: v, Weight: -1} }
	peerVotes := func(m map[string]map[string]health.Verdict) func(verdict.Key, []string) ([]string, []verdict.Vote) {
		return func(k verdict.Key, from []string) ([]string, []verdict.Vote) {
			var names []string
			var votes []verdict.Vote
			for _, name := range from {
				for id, v := range m[name] {
					if verdict.KeyOf(id) == k {
						names = append(names, name)
						votes = append(votes, verdict.Vote{Key: k, Verdict: int8(v), Weight: -1})
					}
				}
			}
			return names, votes
		}
	}
	type want struct {
		w1, w2, fallback int // -1: out of the table
		broken           bool
	}
	for _, tc := range []struct {
		name string
		in   Input
		want want
	}{
		{"alone, all up", Input{Own: map[string]health.Status{r1: st(health.Up), r2: st(health.Up)}}, want{3, 1, -1, false}},
		{"alone, pending counts as up", Input{}, want{3, 1, -1, false}},
		{"alone, one down: quiescent and removed", Input{Own: map[string]health.Status{r1: st(health.Down), r2: st(health.Down)}}, want{0, -1, 2, false}},
		{"broken path: the others see it up", Input{SelfReady: true, Peers: []string{"d2", "d3"},
			Own:   map[string]health.Status{r1: st(health.Down), r2: st(health.Up)},
			Votes: peerVotes(map[string]map[string]health.Verdict{"d2": {r1: health.Up, r2: health.Up}, "d3": {r1: health.Up, r2: health.Up}})},
			want{3, 1, -1, true}},
		{"a majority sees it down", Input{SelfReady: true, Peers: []string{"d2", "d3"},
			Own:   map[string]health.Status{r1: st(health.Up), r2: st(health.Up)},
			Votes: peerVotes(map[string]map[string]health.Verdict{"d2": {r1: health.Down}, "d3": {r1: health.Down}})},
			want{0, 1, -1, false}},
		{"not ready: the ready ones decide", Input{SelfReady: false, Peers: []string{"d2"},
			Own:   map[string]health.Status{r1: st(health.Up), r2: st(health.Up)},
			Votes: peerVotes(map[string]map[string]health.Verdict{"d2": {r1: health.Down, r2: health.Down}})},
			want{0, -1, 2, false}},
		{"local mode ignores the fleet", Input{SelfReady: true, Local: true, Peers: []string{"d2"},
			Own:   map[string]health.Status{r1: st(health.Up), r2: st(health.Down)},
			Votes: peerVotes(map[string]map[string]health.Verdict{"d2": {r1: health.Down}})},
			want{3, -1, -1, false}},
		{"dynamic weight", Input{Own: map[string]health.Status{r1: {Verdict: health.Up, Weight: 9}}}, want{9, 1, -1, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Services, tc.in.Self = svcs, "d1"
			tb := Decide(tc.in)
			got := want{-1, -1, -1, false}
			for _, r := range tb.Rows {
				switch {
				case r.Fallback:
					got.fallback = r.Weight
				case r.ID() == r1:
					got.w1 = r.Weight
					got.broken = r.BrokenPath
				case r.ID() == r2:
					got.w2 = r.Weight
				}
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			// The desired kernel state says the same.
			n := 0
			for _, w := range []int{tc.want.w1, tc.want.w2, tc.want.fallback} {
				if w >= 0 {
					n++
				}
			}
			if len(tb.Want) != 1 || len(tb.Want[0].Dests) != n {
				t.Fatalf("want %+v", tb.Want)
			}
		})
	}
}
