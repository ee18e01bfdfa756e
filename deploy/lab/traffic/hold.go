package traffic

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"
)

// HoldConfig configures a Holder. Zero durations take the defaults.
type HoldConfig struct {
	Target string // VIP:PORT
	Conns  int    // long-lived connections to hold; 0 with Rate > 0 is fine

	Interval time.Duration // between probes on one connection; default 100ms
	// Stall is the reply time beyond which a connection counts as stalled;
	// default 1s.
	Stall time.Duration
	// Break is the reply time beyond which a connection counts as broken.
	// It must outlast TCP's retransmission back-off after a failover
	// (0.2+0.4+0.8+1.6+3.2 s ...), or a connection that would recover is
	// declared dead; default 20s.
	Break time.Duration

	ConnectTimeout time.Duration // per attempt, and again for its first echo; default 3s
	ConnectRetries int           // attempts after the first; negative means 0

	// SourceIPs, if set, are used in turn as the connections' source
	// addresses (the kernel picks the port), to spread flows over hash
	// buckets that hash on the source address.
	SourceIPs []netip.Addr

	// Rate opens this many short connections per second besides the held
	// ones: connect, one echo, close. No retries: the share that fails is
	// what a scenario measures.
	Rate float64

	// PerConn includes per_conn in reports.
	PerConn bool
}

// maxRate bounds Rate: beyond it the ticker, not the network, is measured.
const maxRate = 10000

// dialConcurrency bounds connections being opened at once, so that holding
// thousands does not start as a SYN flood through the directors.
const dialConcurrency = 64

type connState int

const (
	stateConnecting connState = iota
	stateOpen
	stateBroken
	stateNeverOpened
)

// heldConn is the holder's record of one connection, guarded by Holder.mu.
type heldConn struct {
	state    connState
	local    string
	server   string
	kind     string // why it broke
	err      string
	probes   int
	stalls   int
	maxStall time.Duration
	sentAt   time.Time // of the probe in flight; zero if none
	// afterMark is when the first probe sent after the last Mark was
	// answered (zero: not yet), markRTT its round trip.
	afterMark time.Time
	markRTT   time.Duration
}

// Holder holds TCP connections through a virtual service and probes them,
// to tell which survive events such as a director failover.
type Holder struct {
	cfg    HoldConfig
	target netip.AddrPort
	sem    chan struct{}

	mu             sync.Mutex
	start          time.Time
	lastReport     time.Time
	conns          []heldConn
	probes         int
	intervalStall  time.Duration
	intervalBroken int
	newAttempts    int
	newOK          int
	newErrors      map[string]int
	newServers     map[string]int // real server -> new connections it answered
	newBySource    map[string]map[string]int
	newAttemptsAll int
	newOKAll       int
	// markAt is the last Mark.
	markAt time.Time
}

// Mark starts watching each connection for the reply to its first probe
// sent from now on: a scenario marks right after it cut a director off,
// and the replies tell when the connections that director carried were
// forwarded again (Report.FirstReplyAfterMark). Replies to probes sent
// earlier do not count: in direct routing they may come straight from the
// real server after the cut.
func (h *Holder) Mark() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.markAt = time.Now()
	for i := range h.conns {
		h.conns[i].afterMark, h.conns[i].markRTT = time.Time{}, 0
	}
}

// NewHolder checks cfg and fills in defaults.
func NewHolder(cfg HoldConfig) (*Holder, error) {
	target, err := parseTarget(cfg.Target, cfg.SourceIPs)
	if err != nil {
		return nil, err
	}
	cfg.Target = target.String()
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.Stall == 0 {
		cfg.Stall = time.Second
	}
	if cfg.Break == 0 {
		cfg.Break = 20 * time.Second
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 3 * time.Second
	}
	cfg.ConnectRetries = max(cfg.ConnectRetries, 0)
	switch {
	case cfg.Conns < 0:
		return nil, fmt.Errorf("conns %d: must not be negative", cfg.Conns)
	case cfg.Conns == 0 && cfg.Rate == 0:
		return nil, errors.New("nothing to do: need conns > 0 or rate > 0")
	case cfg.Rate < 0 || cfg.Rate > maxRate:
		return nil, fmt.Errorf("rate %g: want 0 to %d per second", cfg.Rate, maxRate)
	case cfg.Interval < 0 || cfg.Stall < 0 || cfg.Break < 0 || cfg.ConnectTimeout < 0:
		return nil, errors.New("durations must be positive")
	case cfg.Stall >= cfg.Break:
		return nil, fmt.Errorf("stall %s must be shorter than break %s", cfg.Stall, cfg.Break)
	}
	now := time.Now()
	return &Holder{
		cfg:         cfg,
		target:      target,
		sem:         make(chan struct{}, dialConcurrency),
		start:       now,
		lastReport:  now,
		conns:       make([]heldConn, cfg.Conns),
		newErrors:   make(map[string]int),
		newServers:  make(map[string]int),
		newBySource: make(map[string]map[string]int),
	}, nil
}

// Run opens the connections and probes them until ctx ends, then closes
// them and returns once every goroutine is gone. Call it once. Failures of
// connections are results, not errors: Run returns nil.
func (h *Holder) Run(ctx context.Context) error {
	h.mu.Lock()
	h.start = time.Now()
	h.lastReport = h.start
	h.mu.Unlock()
	var wg sync.WaitGroup
	for id := range h.cfg.Conns {
		wg.Go(func() { h.hold(ctx, id) })
	}
	if h.cfg.Rate > 0 {
		wg.Go(func() { h.churn(ctx) })
	}
	wg.Wait()
	return nil
}

func (h *Holder) dialer(n int) *net.Dialer {
	d := &net.Dialer{Timeout: h.cfg.ConnectTimeout}
	if len(h.cfg.SourceIPs) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: h.cfg.SourceIPs[n%len(h.cfg.SourceIPs)].AsSlice()}
	}
	return d
}

// dialEcho connects and checks one echo of msg, all within the connect
// timeout twice over; it returns the open connection and the server name.
func (h *Holder) dialEcho(ctx context.Context, n int, msg string) (net.Conn, *bufio.Reader, string, error) {
	c, err := h.dialer(n).DialContext(ctx, "tcp", h.target.String())
	if err != nil {
		return nil, nil, "", err
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetDeadline(time.Now().Add(h.cfg.ConnectTimeout))
	br := bufio.NewReaderSize(c, maxLine)
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		c.Close()
		return nil, nil, "", err
	}
	reply, err := readLine(br)
	if err != nil {
		c.Close()
		return nil, nil, "", err
	}
	server, err := checkEcho(reply, msg)
	if err != nil {
		c.Close()
		return nil, nil, "", err
	}
	c.SetDeadline(time.Time{})
	return c, br, server, nil
}

// open makes connection id, retrying with back-off.
func (h *Holder) open(ctx context.Context, id int) (net.Conn, *bufio.Reader, string, error) {
	backoff := 100 * time.Millisecond
	var lastErr error
	for attempt := 0; attempt <= h.cfg.ConnectRetries; attempt++ {
		if attempt > 0 {
			if !sleep(ctx, backoff) {
				return nil, nil, "", ctx.Err()
			}
			backoff = min(2*backoff, time.Second)
		}
		select {
		case h.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, nil, "", ctx.Err()
		}
		c, br, server, err := h.dialEcho(ctx, id, "open "+strconv.Itoa(id))
		<-h.sem
		if err == nil {
			return c, br, server, nil
		}
		if ctx.Err() != nil {
			return nil, nil, "", ctx.Err()
		}
		lastErr = err
	}
	return nil, nil, "", fmt.Errorf("%d attempts, last: %w", h.cfg.ConnectRetries+1, lastErr)
}

// sleep waits d or until ctx ends, and says whether it waited the whole d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// hold opens connection id and probes it until it breaks or ctx ends. One
// probe is in flight at a time, so its round trip is exactly the stall a
// user of the connection would see.
func (h *Holder) hold(ctx context.Context, id int) {
	c, br, server, err := h.open(ctx, id)
	if err != nil {
		if ctx.Err() == nil {
			h.mu.Lock()
			hc := &h.conns[id]
			hc.state, hc.kind, hc.err = stateNeverOpened, errKind(err), err.Error()
			h.mu.Unlock()
		}
		return
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	h.mu.Lock()
	hc := &h.conns[id]
	hc.state, hc.local, hc.server = stateOpen, c.LocalAddr().String(), server
	h.mu.Unlock()

	// Spread the connections' probes over the interval rather than
	// sending them all at once.
	next := time.Now().Add(h.cfg.Interval * time.Duration(id) / time.Duration(h.cfg.Conns))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for seq := 1; ; seq++ {
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		msg := "probe " + strconv.Itoa(id) + " " + strconv.Itoa(seq)
		sent := time.Now()
		h.mu.Lock()
		hc.sentAt = sent
		h.mu.Unlock()
		reply, err := h.probe(c, br, msg, sent)
		now := time.Now()
		if ctx.Err() != nil {
			h.mu.Lock()
			hc.sentAt = time.Time{}
			h.mu.Unlock()
			return
		}
		var got string
		if err == nil {
			got, err = checkEcho(reply, msg)
			if err != nil {
				err = wrongSeq(reply, msg, err)
			}
		}
		if err == nil && got != server {
			err = &replyError{kind: kindServerChanged, msg: fmt.Sprintf("server changed from %s to %s", server, got)}
		}
		h.mu.Lock()
		hc.sentAt = time.Time{}
		if err != nil {
			hc.state, hc.kind, hc.err = stateBroken, errKind(err), err.Error()
			h.intervalBroken++
			h.mu.Unlock()
			return
		}
		rtt := now.Sub(sent)
		if !h.markAt.IsZero() && hc.afterMark.IsZero() && !sent.Before(h.markAt) {
			hc.afterMark, hc.markRTT = now, rtt
		}
		hc.probes++
		h.probes++
		hc.maxStall = max(hc.maxStall, rtt)
		h.intervalStall = max(h.intervalStall, rtt)
		if rtt > h.cfg.Stall {
			hc.stalls++
		}
		h.mu.Unlock()
		next = next.Add(h.cfg.Interval)
		if next.Before(now) {
			// After a stall, probe at once but do not catch up on the
			// probes missed.
			next = now
		}
	}
}

// probe sends msg and reads the reply, giving up at the break bound.
func (h *Holder) probe(c net.Conn, br *bufio.Reader, msg string, sent time.Time) ([]byte, error) {
	c.SetDeadline(sent.Add(h.cfg.Break))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return nil, err
	}
	reply, err := readLine(br)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil, fmt.Errorf("no reply within %s: %w", h.cfg.Break, err)
	}
	return reply, err
}

// wrongSeq words a wrong echo of a probe for a human where it can.
func wrongSeq(reply []byte, msg string, err error) error {
	var name, word string
	var id, seq, wantID, wantSeq int
	if _, e := fmt.Sscanf(msg, "probe %d %d", &wantID, &wantSeq); e != nil {
		return err
	}
	if n, e := fmt.Sscanf(string(reply), "%s %s %d %d", &name, &word, &id, &seq); e != nil || n != 4 || word != "probe" {
		return err
	}
	return &replyError{kind: kindWrongReply, msg: fmt.Sprintf("sent probe %d %d, got probe %d %d from %s", wantID, wantSeq, id, seq, name)}
}

// churn opens Rate short connections per second until ctx ends.
func (h *Holder) churn(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(time.Duration(float64(time.Second) / h.cfg.Rate))
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		wg.Go(func() {
			c, _, server, err := h.dialEcho(ctx, n, "new "+strconv.Itoa(n))
			var src string
			if c != nil {
				src = c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()
				c.Close()
			}
			if ctx.Err() != nil {
				// Cut short by the end of the run: neither success
				// nor failure.
				return
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			h.newAttempts++
			h.newAttemptsAll++
			if err != nil {
				h.newErrors[errKind(err)]++
				return
			}
			h.newOK++
			h.newOKAll++
			h.newServers[server]++
			if h.newBySource[src] == nil {
				h.newBySource[src] = map[string]int{}
			}
			h.newBySource[src][server]++
		})
	}
}
