package services

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/ipvs"
)

func TestPersistenceKept(t *testing.T) {
	v4 := ipvs.Service{Protocol: ipvs.TCP, Address: netip.MustParseAddr("192.0.2.10"), Port: 443, Timeout: 300 * time.Second}
	v6 := v4
	v6.Address = netip.MustParseAddr("2001:db8::10")
	with := func(s ipvs.Service, mask int) ipvs.Service { s.Netmask = mask; return s }
	plain := v4
	plain.Timeout = 0
	tests := []struct {
		name  string
		v     ipvs.Service
		sense filter.Sense
		err   string
	}{
		{"not persistent, any sense", plain, filter.SenseAddrPort, ""},
		{"one client per template, sense addr", v4, filter.SenseAddr, ""},
		{"a whole IPv4 address spelled out", with(v4, 32), filter.SenseAddr, ""},
		{"a whole IPv6 address spelled out", with(v6, 128), filter.SenseAddr, ""},
		{"sense addrport", v4, filter.SenseAddrPort, "persistence needs sense: addr; with sense: addrport"},
		{"sense port", v4, filter.SensePort, "with sense: port"},
		{"an IPv4 /24", with(v4, 24), filter.SenseAddr, "persistence_netmask /24 cannot be kept"},
		{"an IPv6 /64", with(v6, 64), filter.SenseAddr, "persistence_netmask /64 cannot be kept"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := PersistenceKept(tc.v, tc.sense)
			if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("PersistenceKept = %v, want %q", err, tc.err)
			}
		})
	}
}
