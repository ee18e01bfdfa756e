package traffic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// UDPConfig configures UDP flows. Zero durations take the defaults.
type UDPConfig struct {
	Target string  // VIP:PORT
	Flows  int     // flows, each from its own socket and so its own source port
	Rate   float64 // datagrams per second, per flow
	// Duration is how long the flows send.
	Duration time.Duration
	// Wait is how long to listen for late replies after sending; default 1s.
	Wait time.Duration
	// SourceIPs, if set, are used in turn as the flows' source addresses.
	SourceIPs []netip.Addr
	// PerFlow includes per_flow in the summary.
	PerFlow bool
}

// Bounds that keep a mistyped flag from exhausting the guest.
const (
	maxFlows       = 60000   // source ports
	maxUDPRate     = 100000  // per flow
	maxUDPDatagram = 1 << 26 // datagrams per flow, so the seen-bitmap stays small
)

// UDPSummary is what UDP flows saw; the package documentation describes
// every field.
type UDPSummary struct {
	T                  float64        `json:"t"`
	Target             string         `json:"target"`
	Flows              int            `json:"flows"`
	RatePerFlow        float64        `json:"rate_per_flow"`
	Sent               int            `json:"sent"`
	Received           int            `json:"received"`
	Dup                int            `json:"dup"`
	Bad                int            `json:"bad"`
	Lost               int            `json:"lost"`
	Loss               float64        `json:"loss"`
	SendErrors         int            `json:"send_errors"`
	ZeroReplyFlows     int            `json:"zero_reply_flows"`
	ChangedServerFlows int            `json:"changed_server_flows"`
	MaxGapMS           float64        `json:"max_gap_ms"`
	Servers            map[string]int `json:"servers"`
	PerFlow            []FlowReport   `json:"per_flow,omitempty"`
}

// FlowReport is one flow in a UDPSummary.
type FlowReport struct {
	ID            int      `json:"id"`
	Local         string   `json:"local"`
	Sent          int      `json:"sent"`
	Received      int      `json:"received"`
	Dup           int      `json:"dup"`
	Bad           int      `json:"bad"`
	Lost          int      `json:"lost"`
	Loss          float64  `json:"loss"`
	SendErrors    int      `json:"send_errors"`
	Servers       []string `json:"servers"`
	ServerChanges int      `json:"server_changes"`
	MaxGapMS      float64  `json:"max_gap_ms"`
	Err           string   `json:"err,omitempty"`
}

// UDPFlows sends sequence-numbered datagrams on many flows and counts the
// echoes, to tell which flows a director event interrupted or re-balanced.
type UDPFlows struct {
	cfg    UDPConfig
	target netip.AddrPort
	count  int // datagrams per flow
}

// NewUDPFlows checks cfg and fills in defaults.
func NewUDPFlows(cfg UDPConfig) (*UDPFlows, error) {
	target, err := parseTarget(cfg.Target, cfg.SourceIPs)
	if err != nil {
		return nil, err
	}
	cfg.Target = target.String()
	if cfg.Wait == 0 {
		cfg.Wait = time.Second
	}
	switch {
	case cfg.Flows < 1 || cfg.Flows > maxFlows:
		return nil, fmt.Errorf("flows %d: want 1 to %d", cfg.Flows, maxFlows)
	case cfg.Rate <= 0 || cfg.Rate > maxUDPRate:
		return nil, fmt.Errorf("rate %g: want more than 0 and at most %d per second per flow", cfg.Rate, maxUDPRate)
	case cfg.Duration <= 0:
		return nil, errors.New("duration must be positive")
	case cfg.Wait < 0:
		return nil, errors.New("wait must not be negative")
	}
	count := int(cfg.Rate * cfg.Duration.Seconds())
	if count > maxUDPDatagram {
		return nil, fmt.Errorf("%d datagrams per flow: at most %d", count, maxUDPDatagram)
	}
	return &UDPFlows{cfg: cfg, target: target, count: max(count, 1)}, nil
}

// flow is one UDP flow. The sender and the receiver each own their half;
// attempted is the only field both touch while the flow runs.
type flow struct {
	id        int
	c         *net.UDPConn
	attempted atomic.Int64 // highest sequence number handed to the kernel

	// sender's
	sent, sendErrors int
	firstAttempt     time.Time
	lastAttempt      time.Time
	sendErr          error

	// receiver's
	seen                  []uint64 // bitmap of sequence numbers echoed
	received, dup, bad    int
	servers               []string
	lastServer            string
	changes               int
	firstReply, lastReply time.Time
	maxGap                time.Duration
	readErr               error
}

// Run sends for the configured duration (less if ctx ends first), waits for
// late replies, and sums up. It fails only if a flow's socket cannot be
// opened.
func (u *UDPFlows) Run(ctx context.Context) (UDPSummary, error) {
	network := "udp4"
	if u.target.Addr().Is6() {
		network = "udp6"
	}
	flows := make([]*flow, u.cfg.Flows)
	for i := range flows {
		var laddr *net.UDPAddr
		if n := len(u.cfg.SourceIPs); n > 0 {
			laddr = &net.UDPAddr{IP: u.cfg.SourceIPs[i%n].AsSlice()}
		}
		c, err := net.DialUDP(network, laddr, net.UDPAddrFromAddrPort(u.target))
		if err != nil {
			for _, f := range flows[:i] {
				f.c.Close()
			}
			return UDPSummary{}, fmt.Errorf("open flow %d: %w", i, err)
		}
		flows[i] = &flow{id: i, c: c, seen: make([]uint64, u.count/64+1)}
	}
	start := time.Now()
	period := time.Duration(float64(time.Second) / u.cfg.Rate)
	var senders, receivers sync.WaitGroup
	for _, f := range flows {
		receivers.Go(func() { f.receive(int64(u.count)) })
		// Spread the flows' datagrams over the period.
		offset := period * time.Duration(f.id) / time.Duration(len(flows))
		senders.Go(func() { f.send(ctx, start.Add(offset), period, u.count) })
	}
	senders.Wait()
	sleep(ctx, u.cfg.Wait)
	for _, f := range flows {
		f.c.Close()
	}
	receivers.Wait()
	return u.summarise(flows, time.Since(start)), nil
}

func (f *flow) send(ctx context.Context, start time.Time, period time.Duration, count int) {
	t := time.NewTimer(0)
	defer t.Stop()
	for i := 1; i <= count; i++ {
		t.Reset(time.Until(start.Add(period * time.Duration(i-1))))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.attempted.Store(int64(i))
		now := time.Now()
		if f.firstAttempt.IsZero() {
			f.firstAttempt = now
		}
		f.lastAttempt = now
		if _, err := f.c.Write([]byte("udp " + strconv.Itoa(f.id) + " " + strconv.Itoa(i) + "\n")); err != nil {
			// Typically an ICMP error for an earlier datagram, reported
			// on this send; the flow goes on, as a real one would.
			f.sendErrors++
			f.sendErr = err
			continue
		}
		f.sent++
	}
}

// receive counts echoes until the socket is closed.
func (f *flow) receive(count int64) {
	buf := make([]byte, 64<<10)
	prefix := []byte("udp " + strconv.Itoa(f.id) + " ")
	for {
		n, err := f.c.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			f.readErr = err
			// An ICMP error answers one datagram; anything else will
			// not get better.
			if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
				errors.Is(err, syscall.ENETUNREACH) {
				continue
			}
			return
		}
		now := time.Now()
		name, rest, ok := bytes.Cut(bytes.TrimSuffix(buf[:n], []byte("\n")), []byte(" "))
		seqText, ok2 := bytes.CutPrefix(rest, prefix)
		seq, err := strconv.ParseInt(string(seqText), 10, 64)
		if !ok || !ok2 || len(name) == 0 || err != nil || seq < 1 || seq > min(f.attempted.Load(), count) ||
			strconv.FormatInt(seq, 10) != string(seqText) {
			f.bad++
			continue
		}
		if f.seen[seq/64]&(1<<(seq%64)) != 0 {
			f.dup++
			continue
		}
		f.seen[seq/64] |= 1 << (seq % 64)
		f.received++
		if server := string(name); server != f.lastServer {
			if f.lastServer != "" {
				f.changes++
			}
			f.lastServer = server
			known := false
			for _, s := range f.servers {
				known = known || s == server
			}
			if !known {
				f.servers = append(f.servers, server)
			}
		}
		if !f.lastReply.IsZero() {
			f.maxGap = max(f.maxGap, now.Sub(f.lastReply))
		} else {
			f.firstReply = now
		}
		f.lastReply = now
	}
}

func (u *UDPFlows) summarise(flows []*flow, took time.Duration) UDPSummary {
	s := UDPSummary{
		T:           took.Seconds(),
		Target:      u.cfg.Target,
		Flows:       len(flows),
		RatePerFlow: u.cfg.Rate,
		Servers:     map[string]int{},
	}
	var maxGap time.Duration
	for _, f := range flows {
		r := FlowReport{
			ID:            f.id,
			Local:         f.c.LocalAddr().String(),
			Sent:          f.sent,
			Received:      f.received,
			Dup:           f.dup,
			Bad:           f.bad,
			Lost:          max(f.sent-f.received, 0),
			SendErrors:    f.sendErrors,
			Servers:       f.servers,
			ServerChanges: f.changes,
		}
		if r.Servers == nil {
			r.Servers = []string{}
		}
		if r.Sent > 0 {
			r.Loss = float64(r.Lost) / float64(r.Sent)
		}
		// The longest silence while sending: between replies, before the
		// first, and after the last if datagrams went on going out.
		gap := f.maxGap
		switch {
		case f.firstAttempt.IsZero():
		case f.firstReply.IsZero():
			gap = f.lastAttempt.Sub(f.firstAttempt)
		default:
			gap = max(gap, f.firstReply.Sub(f.firstAttempt), f.lastAttempt.Sub(f.lastReply))
		}
		r.MaxGapMS = ms(gap)
		maxGap = max(maxGap, gap)
		switch {
		case f.readErr != nil:
			r.Err = f.readErr.Error()
		case f.sendErr != nil:
			r.Err = f.sendErr.Error()
		}
		s.Sent += r.Sent
		s.Received += r.Received
		s.Dup += r.Dup
		s.Bad += r.Bad
		s.Lost += r.Lost
		s.SendErrors += r.SendErrors
		if r.Received == 0 {
			s.ZeroReplyFlows++
		}
		if f.changes > 0 {
			s.ChangedServerFlows++
		}
		if len(f.servers) > 0 {
			s.Servers[f.servers[0]]++
		}
		if u.cfg.PerFlow {
			s.PerFlow = append(s.PerFlow, r)
		}
	}
	if s.Sent > 0 {
		s.Loss = float64(s.Lost) / float64(s.Sent)
	}
	s.MaxGapMS = ms(maxGap)
	return s
}
