package ipvs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
)

// Protocol is an IP protocol number of a virtual service.
type Protocol uint16

// The protocols IPVS balances (ip_vs_add_service refuses others).
const (
	TCP  Protocol = unix.IPPROTO_TCP
	UDP  Protocol = unix.IPPROTO_UDP
	SCTP Protocol = unix.IPPROTO_SCTP
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return "proto-" + strconv.Itoa(int(p))
}

// ParseProtocol accepts "tcp", "udp", "sctp" (any case) or a number.
func ParseProtocol(s string) (Protocol, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	case "sctp":
		return SCTP, nil
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("protocol %q: want tcp, udp, sctp or a number", s)
	}
	return Protocol(n), nil
}

// ServiceFlags are IP_VS_SVC_F_* flags.
type ServiceFlags uint32

const (
	// FlagPersistent is implied by Service.Timeout > 0, and then left out
	// of what Services returns.
	FlagPersistent ServiceFlags = 0x0001
	FlagOnePacket  ServiceFlags = 0x0004 // one-packet scheduling (UDP)
	FlagSched1     ServiceFlags = 0x0008 // sh: fallback; mh: fallback
	FlagSched2     ServiceFlags = 0x0010 // sh: hash the port too; mh: port
	FlagSched3     ServiceFlags = 0x0020

	// flagHashed is kernel bookkeeping (the service is in its hash table);
	// it shows up in dumps and must not be sent back.
	flagHashed ServiceFlags = 0x0002
)

// DefaultScheduler is used when Service.Scheduler is empty, as ipvsadm does.
const DefaultScheduler = "wlc"

// Service is a virtual service: either protocol+address+port, or a firewall
// mark (FWMark != 0), in which case Address only chooses the address family
// (zero or 0.0.0.0: IPv4, "::": IPv6).
type Service struct {
	Protocol  Protocol
	Address   netip.Addr
	Port      uint16
	FWMark    uint32
	Scheduler string // "" means DefaultScheduler
	Flags     ServiceFlags
	// Timeout > 0 makes the service persistent for that long (whole
	// seconds); FlagPersistent follows it.
	Timeout time.Duration
	// Netmask is the persistence granularity as a prefix length: clients in
	// the same /Netmask share a real server. 0 means one client per
	// template (/32 or /128).
	Netmask int
}

// PersistPrefix is the persistence granularity as a prefix length, with
// Netmask 0 spelled out as /32 or /128: the kernel reports one client per
// template as a full mask, so two services compare equal only through
// this.
func (s Service) PersistPrefix() int {
	switch {
	case s.Netmask != 0:
		return s.Netmask
	case s.Address.Unmap().Is6():
		return 128
	}
	return 32
}

// ForwardMethod is how a real server is reached (IP_VS_CONN_F_FWD_MASK).
type ForwardMethod uint32

const (
	ForwardMasq   ForwardMethod = 0 // NAT
	ForwardLocal  ForwardMethod = 1 // the director itself
	ForwardTunnel ForwardMethod = 2 // IP-in-IP
	ForwardRoute  ForwardMethod = 3 // direct routing (DR)
)

func (f ForwardMethod) String() string {
	switch f {
	case ForwardMasq:
		return "masq"
	case ForwardLocal:
		return "local"
	case ForwardTunnel:
		return "tunnel"
	case ForwardRoute:
		return "route"
	}
	return fmt.Sprintf("ForwardMethod(%d)", uint32(f))
}

// Destination is a real server of a service. Its address family must be the
// service's: mixed families cannot be synced.
type Destination struct {
	Address        netip.Addr
	Port           uint16 // 0 for fwmark services: the packet's port is kept
	Weight         uint16 // 0 stops new connections (quiesce)
	Forward        ForwardMethod
	UpperThreshold uint32 // 0: no limit
	LowerThreshold uint32

	// Read-only, filled by Destinations.
	ActiveConns   int
	InactiveConns int
}

func (s Service) String() string {
	if s.FWMark != 0 {
		if s.Address.Unmap().Is6() {
			return fmt.Sprintf("fwmark %d ipv6", s.FWMark)
		}
		return fmt.Sprintf("fwmark %d", s.FWMark)
	}
	if !s.Address.IsValid() {
		return fmt.Sprintf("%s <no address>:%d", s.Protocol, s.Port)
	}
	return fmt.Sprintf("%s %s", s.Protocol, netip.AddrPortFrom(s.Address.Unmap(), s.Port))
}

func (d Destination) String() string {
	if !d.Address.IsValid() {
		return fmt.Sprintf("<no address>:%d", d.Port)
	}
	return netip.AddrPortFrom(d.Address.Unmap(), d.Port).String()
}

// family returns the service's address family.
func (s Service) family() uint16 {
	if s.Address.Unmap().Is6() {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// toMoby checks s against what the kernel accepts and converts it.
func (s Service) toMoby() (*mobyipvs.Service, error) {
	addr := s.Address.Unmap()
	m := &mobyipvs.Service{
		AddressFamily: s.family(),
		SchedName:     s.Scheduler,
		FWMark:        s.FWMark,
		Flags:         uint32(s.Flags &^ flagHashed),
	}
	if m.SchedName == "" {
		m.SchedName = DefaultScheduler
	}
	if addr.Zone() != "" {
		return nil, errors.New("address zones are not supported")
	}
	if s.FWMark != 0 {
		if addr.IsValid() && !addr.IsUnspecified() {
			return nil, errors.New("a fwmark service has no address; set Address to zero, 0.0.0.0 or :: to choose the family")
		}
	} else {
		if !addr.IsValid() {
			return nil, errors.New("no address (and no fwmark)")
		}
		if s.Protocol != TCP && s.Protocol != UDP && s.Protocol != SCTP {
			return nil, fmt.Errorf("protocol %s: IPVS balances tcp, udp and sctp only", s.Protocol)
		}
		m.Protocol = uint16(s.Protocol)
		m.Address = net.IP(addr.AsSlice())
		m.Port = s.Port
	}

	switch {
	case s.Timeout < 0 || s.Timeout%time.Second != 0 || s.Timeout/time.Second > math.MaxUint32:
		return nil, fmt.Errorf("persistence timeout %v: want whole seconds, 0..%d", s.Timeout, uint32(math.MaxUint32))
	case s.Timeout > 0:
		m.Flags |= uint32(FlagPersistent)
		m.Timeout = uint32(s.Timeout / time.Second)
	}

	mask, err := netmaskToMoby(m.AddressFamily, s.Netmask)
	if err != nil {
		return nil, err
	}
	m.Netmask = mask
	return m, nil
}

// netmaskToMoby encodes the persistence netmask for moby, which writes
// Service.Netmask in host byte order while the kernel reads the attribute
// as a big-endian IPv4 mask, or for IPv6 as a host-order prefix length.
func netmaskToMoby(af uint16, prefix int) (uint32, error) {
	if af == unix.AF_INET6 {
		if prefix == 0 {
			prefix = 128
		}
		if prefix < 1 || prefix > 128 {
			return 0, fmt.Errorf("netmask /%d: want 1..128 for IPv6", prefix)
		}
		return uint32(prefix), nil
	}
	if prefix == 0 {
		prefix = 32
	}
	if prefix < 1 || prefix > 32 {
		return 0, fmt.Errorf("netmask /%d: want 1..32 for IPv4", prefix)
	}
	mask := [4]byte(net.CIDRMask(prefix, 32))
	return binary.NativeEndian.Uint32(mask[:]), nil
}

func netmaskFromMoby(af uint16, v uint32) int {
	if af == unix.AF_INET6 {
		return int(v)
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return bits.OnesCount32(binary.BigEndian.Uint32(b[:]))
}

// serviceFromMoby converts a service as moby dumps it.
func serviceFromMoby(m *mobyipvs.Service) (Service, error) {
	s := Service{
		Protocol:  Protocol(m.Protocol),
		Port:      m.Port,
		FWMark:    m.FWMark,
		Scheduler: m.SchedName,
		Flags:     ServiceFlags(m.Flags) &^ flagHashed,
		Timeout:   time.Duration(m.Timeout) * time.Second,
		Netmask:   netmaskFromMoby(m.AddressFamily, m.Netmask),
	}
	switch {
	case m.Address != nil:
		a, ok := netip.AddrFromSlice(m.Address)
		if !ok {
			return s, fmt.Errorf("service address of %d bytes", len(m.Address))
		}
		if m.AddressFamily == unix.AF_INET {
			a = a.Unmap()
		}
		s.Address = a
	case m.AddressFamily == unix.AF_INET6:
		// A fwmark service carries no address; "::" keeps its family.
		s.Address = netip.IPv6Unspecified()
	}
	if s.Timeout > 0 {
		// Implied by Timeout; dropped so that a listed service compares
		// equal to the one that was added.
		s.Flags &^= FlagPersistent
	}
	return s, nil
}

// toMoby converts d for a service of family af.
func (d Destination) toMoby(af uint16) (*mobyipvs.Destination, error) {
	addr := d.Address.Unmap()
	if !addr.IsValid() {
		return nil, errors.New("no address")
	}
	if addr.Zone() != "" {
		return nil, errors.New("address zones are not supported")
	}
	if (af == unix.AF_INET6) != addr.Is6() {
		return nil, errors.New("address family differs from the service's (mixed families cannot be synced)")
	}
	if d.Forward > ForwardRoute {
		return nil, fmt.Errorf("forwarding method %s: want masq, local, tunnel or route", d.Forward)
	}
	return &mobyipvs.Destination{
		Address:         net.IP(addr.AsSlice()),
		AddressFamily:   af,
		Port:            d.Port,
		Weight:          int(d.Weight),
		ConnectionFlags: uint32(d.Forward),
		UpperThreshold:  d.UpperThreshold,
		LowerThreshold:  d.LowerThreshold,
	}, nil
}

func destinationFromMoby(m *mobyipvs.Destination) (Destination, error) {
	a, ok := netip.AddrFromSlice(m.Address)
	if !ok {
		return Destination{}, fmt.Errorf("destination address of %d bytes", len(m.Address))
	}
	if m.AddressFamily == unix.AF_INET {
		a = a.Unmap()
	}
	if m.Weight < 0 || m.Weight > math.MaxUint16 {
		return Destination{}, fmt.Errorf("destination %s: weight %d out of range", a, m.Weight)
	}
	return Destination{
		Address:        a,
		Port:           m.Port,
		Weight:         uint16(m.Weight),
		Forward:        ForwardMethod(m.ConnectionFlags & mobyipvs.ConnFwdMask),
		UpperThreshold: m.UpperThreshold,
		LowerThreshold: m.LowerThreshold,
		ActiveConns:    m.ActiveConnections,
		InactiveConns:  m.InactiveConnections,
	}, nil
}

// withMoby runs fn with moby's handle under the lock that keeps its
// requests and replies paired.
func (h *Handle) withMoby(fn func(*mobyipvs.Handle) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.svc == nil {
		return errors.New("handle is closed")
	}
	return mapCommon(fn(h.svc))
}

// AddService creates a virtual service. An existing one fails with EEXIST.
func (h *Handle) AddService(s Service) error {
	return h.serviceOp("add", s, (*mobyipvs.Handle).NewService)
}

// UpdateService changes the scheduler, flags, timeout and netmask of an
// existing service (ESRCH if there is none).
func (h *Handle) UpdateService(s Service) error {
	return h.serviceOp("update", s, (*mobyipvs.Handle).UpdateService)
}

// DelService deletes a service and its real servers (ESRCH if there is
// none).
func (h *Handle) DelService(s Service) error {
	return h.serviceOp("delete", s, (*mobyipvs.Handle).DelService)
}

func (h *Handle) serviceOp(verb string, s Service, fn func(*mobyipvs.Handle, *mobyipvs.Service) error) error {
	m, err := s.toMoby()
	if err != nil {
		return fmt.Errorf("%s service %s: %w", verb, s, err)
	}
	if err := h.withMoby(func(mh *mobyipvs.Handle) error { return fn(mh, m) }); err != nil {
		return fmt.Errorf("%s service %s: %w", verb, s, err)
	}
	return nil
}

// Services lists the virtual services.
func (h *Handle) Services() ([]Service, error) {
	var ms []*mobyipvs.Service
	err := h.withMoby(func(mh *mobyipvs.Handle) error {
		var err error
		ms, err = mh.GetServices()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list services in %s: %w", h.where(), err)
	}
	out := make([]Service, 0, len(ms))
	for _, m := range ms {
		s, err := serviceFromMoby(m)
		if err != nil {
			return nil, fmt.Errorf("list services in %s: %w", h.where(), err)
		}
		out = append(out, s)
	}
	return out, nil
}

// AddDestination adds a real server to an existing service.
func (h *Handle) AddDestination(s Service, d Destination) error {
	return h.destinationOp("add", s, d, (*mobyipvs.Handle).NewDestination)
}

// UpdateDestination changes an existing real server's weight, method and
// thresholds.
func (h *Handle) UpdateDestination(s Service, d Destination) error {
	return h.destinationOp("update", s, d, (*mobyipvs.Handle).UpdateDestination)
}

// DelDestination removes a real server. The kernel keeps it, unlisted,
// while connections still point at it.
func (h *Handle) DelDestination(s Service, d Destination) error {
	return h.destinationOp("delete", s, d, (*mobyipvs.Handle).DelDestination)
}

func (h *Handle) destinationOp(verb string, s Service, d Destination, fn func(*mobyipvs.Handle, *mobyipvs.Service, *mobyipvs.Destination) error) error {
	ms, err := s.toMoby()
	if err != nil {
		return fmt.Errorf("%s destination %s of service %s: %w", verb, d, s, err)
	}
	md, err := d.toMoby(ms.AddressFamily)
	if err != nil {
		return fmt.Errorf("%s destination %s of service %s: %w", verb, d, s, err)
	}
	if err := h.withMoby(func(mh *mobyipvs.Handle) error { return fn(mh, ms, md) }); err != nil {
		return fmt.Errorf("%s destination %s of service %s: %w", verb, d, s, err)
	}
	return nil
}

// Destinations lists the real servers of a service.
func (h *Handle) Destinations(s Service) ([]Destination, error) {
	ms, err := s.toMoby()
	if err != nil {
		return nil, fmt.Errorf("list destinations of service %s: %w", s, err)
	}
	var mds []*mobyipvs.Destination
	err = h.withMoby(func(mh *mobyipvs.Handle) error {
		var err error
		mds, err = mh.GetDestinations(ms)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list destinations of service %s: %w", s, err)
	}
	out := make([]Destination, 0, len(mds))
	for _, md := range mds {
		d, err := destinationFromMoby(md)
		if err != nil {
			return nil, fmt.Errorf("list destinations of service %s: %w", s, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// Flush deletes every service and real server in the handle's namespace.
// Sync daemons keep running.
func (h *Handle) Flush() error {
	if err := h.withMoby((*mobyipvs.Handle).Flush); err != nil {
		return fmt.Errorf("flush services in %s: %w", h.where(), err)
	}
	return nil
}
