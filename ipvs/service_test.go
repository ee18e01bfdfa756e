package ipvs

import (
	"encoding/binary"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// maskWire is what moby puts on the wire for a Netmask value: the uint32 in
// host byte order. The kernel reads those four bytes as a big-endian IPv4
// mask (nla_get_be32).
func maskWire(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func TestServiceToMoby(t *testing.T) {
	tests := []struct {
		name     string
		svc      Service
		want     mobyipvs.Service
		wantMask []byte // the netmask attribute's bytes, as the kernel sees them
	}{
		{
			name: "tcp IPv4, defaults",
			svc:  Service{Protocol: TCP, Address: netip.MustParseAddr("10.0.0.1"), Port: 80},
			want: mobyipvs.Service{AddressFamily: unix.AF_INET, Protocol: 6, Address: net.IP{10, 0, 0, 1}, Port: 80,
				SchedName: "wlc", Netmask: 0xffffffff},
			wantMask: []byte{255, 255, 255, 255},
		},
		{
			name: "persistent udp, /24",
			svc: Service{Protocol: UDP, Address: netip.MustParseAddr("192.0.2.10"), Port: 53, Scheduler: "rr",
				Timeout: 300 * time.Second, Netmask: 24},
			want: mobyipvs.Service{AddressFamily: unix.AF_INET, Protocol: 17, Address: net.IP{192, 0, 2, 10}, Port: 53,
				SchedName: "rr", Flags: 1, Timeout: 300, Netmask: binary.NativeEndian.Uint32([]byte{255, 255, 255, 0})},
			wantMask: []byte{255, 255, 255, 0},
		},
		{
			name: "IPv4-mapped address is IPv4",
			svc:  Service{Protocol: SCTP, Address: netip.MustParseAddr("::ffff:10.0.0.1"), Port: 9},
			want: mobyipvs.Service{AddressFamily: unix.AF_INET, Protocol: 132, Address: net.IP{10, 0, 0, 1}, Port: 9,
				SchedName: "wlc", Netmask: 0xffffffff},
		},
		{
			name: "sh with its flags, IPv6, prefix length as is",
			svc: Service{Protocol: TCP, Address: netip.MustParseAddr("2001:db8::1"), Port: 443, Scheduler: "sh",
				Flags: FlagSched1 | FlagSched2, Timeout: time.Minute, Netmask: 64},
			want: mobyipvs.Service{AddressFamily: unix.AF_INET6, Protocol: 6, Address: net.ParseIP("2001:db8::1"), Port: 443,
				SchedName: "sh", Flags: 0x19, Timeout: 60, Netmask: 64},
			wantMask: []byte{64, 0, 0, 0}, // the kernel reads (__force u32)
		},
		{
			name: "IPv6 default prefix is 128 (the kernel refuses 0)",
			svc:  Service{Protocol: TCP, Address: netip.MustParseAddr("2001:db8::1"), Port: 80},
			want: mobyipvs.Service{AddressFamily: unix.AF_INET6, Protocol: 6, Address: net.ParseIP("2001:db8::1"), Port: 80,
				SchedName: "wlc", Netmask: 128},
		},
		{
			name: "fwmark IPv4",
			svc:  Service{FWMark: 7, Scheduler: "rr"},
			want: mobyipvs.Service{AddressFamily: unix.AF_INET, FWMark: 7, SchedName: "rr", Netmask: 0xffffffff},
		},
		{
			name: "fwmark IPv6",
			svc:  Service{FWMark: 7, Address: netip.IPv6Unspecified()},
			want: mobyipvs.Service{AddressFamily: unix.AF_INET6, FWMark: 7, SchedName: "wlc", Netmask: 128},
		},
		{
			name: "one-packet scheduling, hashed flag never sent",
			svc:  Service{Protocol: UDP, Address: netip.MustParseAddr("10.0.0.1"), Port: 5, Flags: FlagOnePacket | flagHashed},
			want: mobyipvs.Service{AddressFamily: unix.AF_INET, Protocol: 17, Address: net.IP{10, 0, 0, 1}, Port: 5,
				SchedName: "wlc", Flags: 4, Netmask: 0xffffffff},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.svc.toMoby()
			if err != nil {
				t.Fatalf("toMoby: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
			if tt.wantMask != nil && string(maskWire(got.Netmask)) != string(tt.wantMask) {
				t.Errorf("netmask on the wire % x, want % x", maskWire(got.Netmask), tt.wantMask)
			}
		})
	}
}

func TestServiceToMobyErrors(t *testing.T) {
	v4 := netip.MustParseAddr("10.0.0.1")
	tests := []struct {
		name    string
		svc     Service
		wantErr string
	}{
		{"nothing", Service{Protocol: TCP, Port: 80}, "no address"},
		{"icmp", Service{Protocol: 1, Address: v4}, "tcp, udp and sctp only"},
		{"no protocol", Service{Address: v4, Port: 80}, "tcp, udp and sctp only"},
		{"fwmark with address", Service{FWMark: 1, Address: v4}, "fwmark service has no address"},
		{"zone", Service{Protocol: TCP, Address: netip.MustParseAddr("fe80::1%eth0")}, "zone"},
		{"fractional timeout", Service{Protocol: TCP, Address: v4, Timeout: 1500 * time.Millisecond}, "whole seconds"},
		{"negative timeout", Service{Protocol: TCP, Address: v4, Timeout: -time.Second}, "whole seconds"},
		{"huge timeout", Service{Protocol: TCP, Address: v4, Timeout: (1 << 32) * time.Second}, "whole seconds"},
		{"IPv4 /33", Service{Protocol: TCP, Address: v4, Netmask: 33}, "1..32"},
		{"IPv4 negative", Service{Protocol: TCP, Address: v4, Netmask: -1}, "1..32"},
		{"IPv6 /129", Service{Protocol: TCP, Address: netip.MustParseAddr("2001:db8::1"), Netmask: 129}, "1..128"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.svc.toMoby()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// Services as moby dumps them: IPv4 addresses cut to 4 bytes, flags with
// the kernel's hashed bit, no address and no protocol for fwmark services.
func TestServiceFromMoby(t *testing.T) {
	tests := []struct {
		name string
		m    mobyipvs.Service
		want Service
	}{
		{
			name: "IPv4 persistent",
			m: mobyipvs.Service{AddressFamily: unix.AF_INET, Protocol: 6, Address: net.IP{10, 0, 0, 1}, Port: 80,
				SchedName: "wlc", Flags: 0x3, Timeout: 300, Netmask: binary.NativeEndian.Uint32([]byte{255, 255, 0, 0})},
			want: Service{Protocol: TCP, Address: netip.MustParseAddr("10.0.0.1"), Port: 80, Scheduler: "wlc",
				Timeout: 300 * time.Second, Netmask: 16},
		},
		{
			name: "IPv6",
			m: mobyipvs.Service{AddressFamily: unix.AF_INET6, Protocol: 17, Address: net.ParseIP("2001:db8::5"), Port: 53,
				SchedName: "sh", Flags: 0x2 | 0x8, Netmask: 128},
			want: Service{Protocol: UDP, Address: netip.MustParseAddr("2001:db8::5"), Port: 53, Scheduler: "sh",
				Flags: FlagSched1, Netmask: 128},
		},
		{
			name: "fwmark IPv6",
			m:    mobyipvs.Service{AddressFamily: unix.AF_INET6, FWMark: 9, SchedName: "rr", Flags: 0x2, Netmask: 128},
			want: Service{FWMark: 9, Address: netip.IPv6Unspecified(), Scheduler: "rr", Netmask: 128},
		},
		{
			name: "fwmark IPv4",
			m:    mobyipvs.Service{AddressFamily: unix.AF_INET, FWMark: 9, SchedName: "rr", Flags: 0x2, Netmask: 0xffffffff},
			want: Service{FWMark: 9, Scheduler: "rr", Netmask: 32},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := serviceFromMoby(&tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			// And back: what the kernel listed can be deleted or updated.
			back, err := got.toMoby()
			if err != nil {
				t.Fatalf("back to moby: %v", err)
			}
			m := tt.m
			m.Flags &^= uint32(flagHashed)
			if !reflect.DeepEqual(*back, m) {
				t.Errorf("back to moby\n got %+v\nwant %+v", *back, m)
			}
		})
	}
	if _, err := serviceFromMoby(&mobyipvs.Service{AddressFamily: unix.AF_INET, Address: net.IP{1, 2, 3}}); err == nil {
		t.Error("3-byte address accepted")
	}
}

// A service that was added lists as itself once the kernel has set its
// hashed flag.
func TestServiceRoundTrip(t *testing.T) {
	for _, s := range []Service{
		{Protocol: TCP, Address: netip.MustParseAddr("10.1.2.3"), Port: 80, Scheduler: "wlc", Netmask: 32},
		{Protocol: UDP, Address: netip.MustParseAddr("10.1.2.3"), Port: 53, Scheduler: "rr", Timeout: time.Hour, Netmask: 20},
		{Protocol: TCP, Address: netip.MustParseAddr("2001:db8::7"), Port: 443, Scheduler: "mh", Flags: FlagSched2, Netmask: 56},
		{FWMark: 3, Scheduler: "wrr", Netmask: 32},
		{FWMark: 4, Address: netip.IPv6Unspecified(), Scheduler: "wrr", Netmask: 128},
	} {
		m, err := s.toMoby()
		if err != nil {
			t.Fatalf("%v: %v", s, err)
		}
		m.Flags |= uint32(flagHashed)
		if m.Address != nil && m.AddressFamily == unix.AF_INET {
			m.Address = m.Address.To4()
		}
		got, err := serviceFromMoby(m)
		if err != nil {
			t.Fatalf("%v: %v", s, err)
		}
		if got != s {
			t.Errorf("round trip\n got %+v\nwant %+v", got, s)
		}
	}
}

func TestDestinationConversions(t *testing.T) {
	d := Destination{Address: netip.MustParseAddr("10.0.0.2"), Port: 8080, Weight: 3, Forward: ForwardRoute,
		UpperThreshold: 100, LowerThreshold: 10}
	m, err := d.toMoby(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	want := mobyipvs.Destination{Address: net.IP{10, 0, 0, 2}, AddressFamily: unix.AF_INET, Port: 8080, Weight: 3,
		ConnectionFlags: 3, UpperThreshold: 100, LowerThreshold: 10}
	if !reflect.DeepEqual(*m, want) {
		t.Errorf("toMoby\n got %+v\nwant %+v", *m, want)
	}

	// As dumped: counters filled, other connection flag bits set.
	m.ConnectionFlags = 0x183
	m.ActiveConnections, m.InactiveConnections = 5, 7
	got, err := destinationFromMoby(m)
	if err != nil {
		t.Fatal(err)
	}
	d.ActiveConns, d.InactiveConns = 5, 7
	if got != d {
		t.Errorf("fromMoby\n got %+v\nwant %+v", got, d)
	}

	v6 := Destination{Address: netip.MustParseAddr("2001:db8::2"), Forward: ForwardTunnel, Weight: 65535}
	m6, err := v6.toMoby(unix.AF_INET6)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := destinationFromMoby(m6); err != nil || got != v6 {
		t.Errorf("IPv6 round trip: %+v, %v", got, err)
	}

	for _, tt := range []struct {
		name    string
		d       Destination
		af      uint16
		wantErr string
	}{
		{"no address", Destination{}, unix.AF_INET, "no address"},
		{"IPv6 in IPv4 service", v6, unix.AF_INET, "address family"},
		{"IPv4 in IPv6 service", Destination{Address: netip.MustParseAddr("10.0.0.2")}, unix.AF_INET6, "address family"},
		{"bypass", Destination{Address: netip.MustParseAddr("10.0.0.2"), Forward: 4}, unix.AF_INET, "forwarding method"},
	} {
		if _, err := tt.d.toMoby(tt.af); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: error %v, want one mentioning %q", tt.name, err, tt.wantErr)
		}
	}
	if _, err := destinationFromMoby(&mobyipvs.Destination{Address: net.IP{1, 2, 3, 4}, Weight: 70000}); err == nil {
		t.Error("weight 70000 accepted")
	}
}

func TestProtocolAndNames(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Protocol
	}{{"tcp", TCP}, {"UDP", UDP}, {"sctp", SCTP}, {"6", TCP}, {"47", 47}} {
		got, err := ParseProtocol(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseProtocol(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "icmpv7", "70000", "-1"} {
		if _, err := ParseProtocol(bad); err == nil {
			t.Errorf("ParseProtocol(%q) succeeded", bad)
		}
	}
	for _, tt := range []struct {
		got, want string
	}{
		{TCP.String(), "tcp"},
		{Protocol(47).String(), "proto-47"},
		{ForwardMasq.String(), "masq"},
		{ForwardLocal.String(), "local"},
		{ForwardTunnel.String(), "tunnel"},
		{ForwardRoute.String(), "route"},
		{ForwardMethod(9).String(), "ForwardMethod(9)"},
		{Service{Protocol: TCP, Address: netip.MustParseAddr("10.0.0.1"), Port: 80}.String(), "tcp 10.0.0.1:80"},
		{Service{Protocol: UDP, Address: netip.MustParseAddr("2001:db8::1"), Port: 53}.String(), "udp [2001:db8::1]:53"},
		{Service{FWMark: 5}.String(), "fwmark 5"},
		{Service{FWMark: 5, Address: netip.IPv6Unspecified()}.String(), "fwmark 5 ipv6"},
		{Destination{Address: netip.MustParseAddr("10.0.0.2"), Port: 80}.String(), "10.0.0.2:80"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// Service errors name the service, as the house rules ask; checked without
// a kernel through a closed handle.
func TestServiceErrorsNameTheService(t *testing.T) {
	h := &Handle{}
	s := Service{Protocol: TCP, Address: netip.MustParseAddr("10.0.0.1"), Port: 80}
	d := Destination{Address: netip.MustParseAddr("10.0.0.2"), Port: 80}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{h.AddService(s), "add service tcp 10.0.0.1:80: "},
		{h.UpdateService(s), "update service tcp 10.0.0.1:80: "},
		{h.DelService(s), "delete service tcp 10.0.0.1:80: "},
		{h.AddDestination(s, d), "add destination 10.0.0.2:80 of service tcp 10.0.0.1:80: "},
		{h.DelDestination(s, Destination{Address: netip.MustParseAddr("2001:db8::1")}), "address family"},
		{h.AddService(Service{Protocol: TCP}), "add service tcp <no address>:0: no address"},
		{h.Flush(), "flush services in the current network namespace"},
	} {
		if tt.err == nil || !strings.Contains(tt.err.Error(), tt.want) {
			t.Errorf("error %v, want one containing %q", tt.err, tt.want)
		}
	}
	if _, err := h.Destinations(s); err == nil || !strings.Contains(err.Error(), "list destinations of service tcp 10.0.0.1:80") {
		t.Errorf("Destinations: %v", err)
	}
	if _, err := h.Services(); err == nil {
		t.Error("Services on a closed handle succeeded")
	}
}
