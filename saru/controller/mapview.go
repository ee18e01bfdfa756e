package controller

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/saru/allocate"
	"github.com/peerlvs/peerlvs/saru/member"
)

// MapView is the partition map as `saru map` and the status endpoint show
// it. It is display only: nothing decides ownership from it.
type MapView struct {
	Buckets uint32 `json:"buckets"`
	Seed    uint64 `json:"seed"`
	Sense   string `json:"sense,omitempty"`
	// Epoch counts the allocation changes this daemon has applied since it
	// started, so it differs between directors after a restart; the
	// Fingerprint names the allocation and is what the fleet agrees on.
	Epoch       uint64 `json:"epoch"`
	Fingerprint string `json:"fingerprint"`
	// Quorum is how many eligible directors must be seen before any owns a
	// bucket; QuorumMet says whether they are.
	Quorum    int            `json:"quorum"`
	QuorumMet bool           `json:"quorum_met"`
	Directors []DirectorView `json:"directors"`
	Ranges    []RangeView    `json:"ranges"`
	// Filter is what this director's kernel enforces and counts; only the
	// running daemon fills it in.
	Filter *FilterView `json:"filter,omitempty"`
	// FilterError says why Filter is missing from a running daemon's map.
	FilterError string `json:"filter_error,omitempty"`
}

// FilterView is this director's nftables side of the map.
type FilterView struct {
	// Live says whether this saru holds the liveness table, without which
	// the rules accept no flow.
	Live bool `json:"live"`
	// Rules are the rule counters by counter name.
	Rules map[string]filter.Count `json:"rules"`
	// OwnedBuckets are the packets accepted per owned bucket since the
	// bucket was last added.
	OwnedBuckets map[uint32]filter.Count `json:"owned_buckets"`
}

// DirectorView is one member's line in a MapView.
type DirectorView struct {
	Name     string       `json:"name"`
	Weight   uint32       `json:"weight"`
	State    member.State `json:"state"`
	Eligible bool         `json:"eligible"`
	Mismatch string       `json:"mismatch,omitempty"`
	// TimingMismatch names the timing settings that differ from ours.
	TimingMismatch string `json:"timing_mismatch,omitempty"`
	// Unfit says why the director failed its fitness checks.
	Unfit     string  `json:"unfit,omitempty"`
	Buckets   int     `json:"buckets"`
	FairShare float64 `json:"fair_share"`
}

// RangeView is a run of buckets First..Last with one owner ("" for none).
type RangeView struct {
	First uint32 `json:"first"`
	Last  uint32 `json:"last"`
	Owner string `json:"owner"`
}

// Describe builds the MapView of m, listing every member of view (owning
// or not).
func Describe(m allocate.Map, view []member.Member, epoch uint64, sense string, quorum int) MapView {
	v := MapView{Buckets: m.Buckets, Seed: m.Seed, Sense: sense, Epoch: epoch,
		Fingerprint: fmt.Sprintf("%016x", m.Fingerprint), Quorum: quorum, QuorumMet: HasQuorum(view, quorum)}
	counts := m.Counts()
	for _, mb := range view {
		d := DirectorView{Name: mb.Name, Weight: mb.Weight, State: mb.State, Mismatch: mb.Mismatch, TimingMismatch: mb.TimingMismatch, Unfit: mb.Unfit,
			Eligible: mb.State == member.StateReady && mb.FingerprintOK && mb.Unfit == "", Buckets: counts[mb.Name]}
		if d.Eligible {
			d.FairShare = m.FairShare(mb.Name)
		}
		v.Directors = append(v.Directors, d)
	}
	slices.SortFunc(v.Directors, func(a, b DirectorView) int { return strings.Compare(a.Name, b.Name) })
	for _, r := range m.Ranges() {
		v.Ranges = append(v.Ranges, RangeView(r))
	}
	return v
}

// Owner returns the owner of bucket b in v ("" if none).
func (v MapView) Owner(b uint32) string {
	i, ok := slices.BinarySearchFunc(v.Ranges, b, func(r RangeView, b uint32) int {
		switch {
		case r.Last < b:
			return -1
		case r.First > b:
			return 1
		}
		return 0
	})
	if !ok {
		return ""
	}
	return v.Ranges[i].Owner
}

// WriteText prints v for people: a header, one line per director with its
// count against its fair share, then the bucket ranges.
func (v MapView) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "buckets %d  seed %d  sense %s  epoch %d  fingerprint %s\n", v.Buckets, v.Seed, v.Sense, v.Epoch, v.Fingerprint)
	if v.Quorum > 1 {
		met := "met"
		if !v.QuorumMet {
			met = "NOT met: no director owns a bucket"
		}
		fmt.Fprintf(tw, "quorum %d ready directors: %s\n", v.Quorum, met)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "DIRECTOR\tWEIGHT\tSTATE\tBUCKETS\tFAIR SHARE\tNOTE")
	for _, d := range v.Directors {
		note := ""
		switch {
		case d.Mismatch != "":
			note = "excluded: " + d.Mismatch
		case d.Unfit != "":
			note = "unfit: " + d.Unfit
		case !d.Eligible:
			note = "owns nothing until ready"
		}
		if d.TimingMismatch != "" {
			if note != "" {
				note += "; "
			}
			note += "DIFFERENT TIMING: " + d.TimingMismatch
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%.2f\t%s\n", d.Name, d.Weight, d.State, d.Buckets, d.FairShare, note)
	}
	fmt.Fprintf(tw, "\nRANGE\tDIRECTOR\n")
	for _, r := range v.Ranges {
		owner := r.Owner
		if owner == "" {
			owner = "(none)"
		}
		if r.First == r.Last {
			fmt.Fprintf(tw, "%d\t%s\n", r.First, owner)
		} else {
			fmt.Fprintf(tw, "%d-%d\t%s\n", r.First, r.Last, owner)
		}
	}
	if v.FilterError != "" {
		fmt.Fprintf(tw, "\nTHIS DIRECTOR'S RULES: %s\n", v.FilterError)
	}
	if f := v.Filter; f != nil {
		state := "live"
		if !f.Live {
			state = "NOT live: this director accepts no flow"
		}
		fmt.Fprintf(tw, "\nTHIS DIRECTOR'S RULES (%s)\nCOUNTER\tPACKETS\tBYTES\n", state)
		names := make([]string, 0, len(f.Rules))
		for n := range f.Rules {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			fmt.Fprintf(tw, "%s\t%d\t%d\n", n, f.Rules[n].Packets, f.Rules[n].Bytes)
		}
		if len(f.OwnedBuckets) > 0 {
			pk := make([]uint64, 0, len(f.OwnedBuckets))
			for _, c := range f.OwnedBuckets {
				pk = append(pk, c.Packets)
			}
			slices.Sort(pk)
			fmt.Fprintf(tw, "accepted per owned bucket: %d buckets, min %d, median %d, max %d packets (--json lists each)\n",
				len(pk), pk[0], pk[len(pk)/2], pk[len(pk)-1])
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write map: %w", err)
	}
	return nil
}
