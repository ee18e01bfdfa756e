package filter

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
)

func containsElements(nftOutput string) bool {
	return strings.Contains(nftOutput, "elements =")
}

const foreignRuleset = `table inet other {
	set keep { type ipv4_addr; elements = { 198.51.100.1 }; }
	chain input { type filter hook input priority 0; policy accept; ip saddr @keep counter accept; }
}
table ip legacy {
	chain pre { type filter hook prerouting priority -300; policy accept; udp dport 7 counter; }
}
`

// TestVerifyRepair checks the round trips: Apply leaves no drift; foreign
// changes made with nft are reported and repaired, element-only when only
// elements changed; the operator's other tables are never touched.
func TestVerifyRepair(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "drift")
	ctx := context.Background()
	path := t.TempDir() + "/foreign.nft"
	if err := os.WriteFile(path, []byte(foreignRuleset), 0o600); err != nil {
		t.Fatal(err)
	}
	ns.nft("-f", path)
	otherBefore := ns.nft("list", "table", "inet", "other") + ns.nft("list", "table", "ip", "legacy")

	f := newFilter(t, sampleConfig(), ns.fd)
	own := Ownership{Owned: []uint32{1, 2, 3, 40}, HandoverOut: []uint32{7}, HandoverIn: []uint32{9}}
	if err := f.Apply(ctx, own); err != nil {
		t.Fatal(err)
	}
	noDrift := func(when string) {
		t.Helper()
		drift, err := f.Verify(ctx)
		if err != nil {
			t.Fatalf("%s: verify: %v", when, err)
		}
		for _, d := range drift {
			t.Errorf("%s: drift: %s", when, d)
		}
	}
	noDrift("after apply")

	// Some traffic, so that a rebuild would show as reset counters.
	snd := newSender(ns, "lo")
	snd.pace = 100
	for i := 0; i < 200; i++ {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 7, 0, byte(i)}), uint16(3000+i))
		if err := snd.send(make(net.HardwareAddr, 6), pkt{proto: ProtoTCP, src: c, dst: netip.AddrPortFrom(vip4, 80), tcpFlags: tcpACK}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := f.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before.ForeignDropped.Packets == 0 {
		t.Fatalf("no traffic counted: %+v", before)
	}

	cases := []struct {
		name        string
		nft         []string
		want        string // a substring of one drift line
		elementOnly bool
	}{
		{"element removed", []string{"delete element inet peerlvs owned { 2 }"}, "set owned misses {2}", true},
		{"element added", []string{"add element inet peerlvs handover_in { 11 }"}, "set handover_in has extra {11}", true},
		{"VIP added", []string{"add element inet peerlvs vip4 { 203.0.113.9 }"}, "set vip4 has extra {203.0.113.9}", true},
		{"foreign rule", []string{"add rule inet peerlvs request4 counter accept"}, "chain request4: foreign rule", false},
		{"rule inserted first", []string{"insert rule inet peerlvs prerouting accept"}, "chain prerouting: foreign rule at position 0: accept", false},
		{"rule changed", []string{"flush chain inet peerlvs handover_in_request6"}, "chain handover_in_request6: rule 0 (new connection: ours) missing", false},
		{"foreign chain and set", []string{"add chain inet peerlvs sneaky", "add set inet peerlvs sneaky { type ipv4_addr; }"}, "foreign chain sneaky", false},
		{"policy changed", []string{"add chain inet peerlvs prerouting { type filter hook prerouting priority -450; policy drop; }"}, "chain prerouting is", false},
		{"table dormant", []string{"add table inet peerlvs { flags dormant; }"}, "has flags", false},
		{"table deleted", []string{"delete table inet peerlvs"}, "table inet peerlvs missing", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range tc.nft {
				ns.nft(strings.Fields(strings.NewReplacer("{", " { ", "}", " } ", ";", " ; ").Replace(cmd))...)
			}
			drift, err := f.Verify(ctx)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, d := range drift {
				found = found || strings.Contains(d, tc.want)
			}
			if !found {
				t.Fatalf("drift %q does not report %q", drift, tc.want)
			}
			t.Logf("reported: %s", strings.Join(drift, "; "))
			pre, _ := f.Counters(ctx)
			if err := f.Repair(ctx); err != nil {
				t.Fatal(err)
			}
			noDrift("after repair")
			post, err := f.Counters(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tc.elementOnly && post.ForeignDropped != pre.ForeignDropped {
				t.Errorf("element-only repair rebuilt the table: counters %+v -> %+v", pre.ForeignDropped, post.ForeignDropped)
			}
		})
	}

	// A new allocation changes set elements only.
	pre, _ := f.Counters(ctx)
	if err := f.Apply(ctx, Ownership{Owned: []uint32{1, 2, 3, 4, 5}}); err != nil {
		t.Fatal(err)
	}
	post, _ := f.Counters(ctx)
	if post != pre {
		t.Errorf("reallocation touched more than the sets: counters %+v -> %+v", pre, post)
	}
	noDrift("after reallocation")
	if got := ns.nft("list", "set", "inet", DefaultTable, "owned"); !strings.Contains(got, "elements = { 1 counter") {
		t.Errorf("nft lists owned as:\n%s", got)
	}

	if err := f.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := ns.try("nft list table inet peerlvs"); err == nil {
		t.Errorf("table still listed after Remove:\n%s", out)
	}
	if after := ns.nft("list", "table", "inet", "other") + ns.nft("list", "table", "ip", "legacy"); after != otherBefore {
		t.Errorf("other tables changed:\nbefore:\n%s\nafter:\n%s", otherBefore, after)
	}
}

// TestApplyListing logs the rule set as nft prints it, for the docs.
func TestApplyListing(t *testing.T) {
	requireRoot(t)
	ns := newNS(t, "list")
	f := newFilter(t, sampleConfig(), ns.fd)
	if err := f.Apply(context.Background(), Ownership{Owned: []uint32{0, 1, 2, 5}, HandoverOut: []uint32{7}, HandoverIn: []uint32{9}}); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + ns.nft("list", "table", "inet", DefaultTable))
}
