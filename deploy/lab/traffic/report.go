package traffic

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Report is a holder's account of its connections; the package
// documentation describes every field. Scenarios json.Unmarshal it.
type Report struct {
	T                  float64        `json:"t"`
	Time               string         `json:"time"`
	IntervalS          float64        `json:"interval_s"`
	Final              bool           `json:"final"`
	Target             string         `json:"target"`
	Conns              int            `json:"conns"`
	Connecting         int            `json:"connecting"`
	Open               int            `json:"open"`
	OK                 int            `json:"ok"`
	Stalled            int            `json:"stalled"`
	StalledNow         int            `json:"stalled_now"`
	Broken             int            `json:"broken"`
	NeverOpened        int            `json:"never_opened"`
	IntervalBroken     int            `json:"interval_broken"`
	BrokenBy           map[string]int `json:"broken_by"`
	Probes             int            `json:"probes"`
	MaxStallMS         float64        `json:"max_stall_ms"`
	IntervalMaxStallMS float64        `json:"interval_max_stall_ms"`
	Servers            map[string]int `json:"servers"`
	NewAttempts        int            `json:"new_attempts"`
	NewOK              int            `json:"new_ok"`
	NewErrors          map[string]int `json:"new_errors"`
	// NewServers counts the interval's new connections by the real server
	// that answered them.
	NewServers map[string]int `json:"new_servers"`
	// NewBySource counts them by source address, then real server: a
	// persistent service must give each source one real server.
	NewBySource      map[string]map[string]int `json:"new_by_source,omitempty"`
	NewAttemptsTotal int                       `json:"new_attempts_total"`
	NewOKTotal       int                       `json:"new_ok_total"`
	PerConn          []ConnReport              `json:"per_conn,omitempty"`
	// MarkTime is the last "mark" (RFC 3339). FirstReplyAfterMark is the
	// first reply to a probe sent after it among the connections whose
	// first such probe stalled (the ones an outage caught), or among all
	// if none stalled; empty if none was answered yet. MarkStalled counts
	// the connections whose first probe after the mark stalled.
	MarkTime            string `json:"mark_time,omitempty"`
	FirstReplyAfterMark string `json:"first_reply_after_mark,omitempty"`
	MarkStalled         int    `json:"mark_stalled,omitempty"`
}

// ConnReport is one held connection in a Report.
type ConnReport struct {
	ID         int     `json:"id"`
	Local      string  `json:"local"`
	Server     string  `json:"server"`
	State      string  `json:"state"`
	MaxStallMS float64 `json:"max_stall_ms"`
	WaitingMS  float64 `json:"waiting_ms"`
	Stalls     int     `json:"stalls"`
	Probes     int     `json:"probes"`
	Err        string  `json:"err,omitempty"`
}

// States of a connection in a ConnReport.
const (
	StateConnecting  = "connecting"
	StateOK          = "ok"
	StateStalled     = "stalled"
	StateBroken      = "broken"
	StateNeverOpened = "never_opened"
)

// Report returns the state of the connections and starts a new interval:
// the interval_* and new_* counts of the next report start from now.
func (h *Holder) Report() Report {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	r := Report{
		T:                  now.Sub(h.start).Seconds(),
		Time:               now.Format(time.RFC3339Nano),
		IntervalS:          now.Sub(h.lastReport).Seconds(),
		Target:             h.cfg.Target,
		Conns:              len(h.conns),
		IntervalBroken:     h.intervalBroken,
		BrokenBy:           map[string]int{},
		Probes:             h.probes,
		Servers:            map[string]int{},
		NewAttempts:        h.newAttempts,
		NewOK:              h.newOK,
		NewErrors:          h.newErrors,
		NewServers:         h.newServers,
		NewBySource:        h.newBySource,
		NewAttemptsTotal:   h.newAttemptsAll,
		NewOKTotal:         h.newOKAll,
		IntervalMaxStallMS: ms(h.intervalStall),
	}
	if !h.markAt.IsZero() {
		r.MarkTime = h.markAt.Format(time.RFC3339Nano)
	}
	var first, firstStalled time.Time
	for i := range h.conns {
		hc := &h.conns[i]
		if hc.afterMark.IsZero() {
			continue
		}
		if first.IsZero() || hc.afterMark.Before(first) {
			first = hc.afterMark
		}
		if hc.markRTT > h.cfg.Stall {
			r.MarkStalled++
			if firstStalled.IsZero() || hc.afterMark.Before(firstStalled) {
				firstStalled = hc.afterMark
			}
		}
	}
	if !firstStalled.IsZero() {
		first = firstStalled
	}
	if !first.IsZero() {
		r.FirstReplyAfterMark = first.Format(time.RFC3339Nano)
	}
	intervalStall := h.intervalStall
	var maxStall time.Duration
	for id := range h.conns {
		hc := &h.conns[id]
		cr := ConnReport{ID: id, Local: hc.local, Server: hc.server, Probes: hc.probes, Stalls: hc.stalls, Err: hc.err}
		stall := hc.maxStall
		switch hc.state {
		case stateConnecting:
			r.Connecting++
			cr.State = StateConnecting
		case stateNeverOpened:
			r.NeverOpened++
			cr.State = StateNeverOpened
		case stateBroken:
			r.Broken++
			r.BrokenBy[hc.kind]++
			cr.State = StateBroken
		case stateOpen:
			r.Open++
			r.Servers[hc.server]++
			if !hc.sentAt.IsZero() {
				wait := now.Sub(hc.sentAt)
				cr.WaitingMS = ms(wait)
				stall = max(stall, wait)
				intervalStall = max(intervalStall, wait)
				if wait > h.cfg.Stall {
					r.StalledNow++
				}
			}
			if stall > h.cfg.Stall {
				r.Stalled++
				cr.State = StateStalled
			} else {
				r.OK++
				cr.State = StateOK
			}
		}
		cr.MaxStallMS = ms(stall)
		maxStall = max(maxStall, stall)
		if h.cfg.PerConn {
			r.PerConn = append(r.PerConn, cr)
		}
	}
	r.MaxStallMS = ms(maxStall)
	r.IntervalMaxStallMS = ms(intervalStall)
	h.lastReport = now
	h.intervalStall = 0
	h.intervalBroken = 0
	h.newAttempts, h.newOK = 0, 0
	h.newErrors = make(map[string]int)
	h.newServers = make(map[string]int)
	h.newBySource = make(map[string]map[string]int)
	return r
}

// Console is how a scenario steers a running holder.
type Console struct {
	// Commands carries lines: "report" prints a report, "mark" calls
	// Holder.Mark, "quit" ends the run. End of input is not a quit: a holder started with its input
	// closed runs on, steered by Trigger and its deadline.
	Commands io.Reader
	// Trigger prints a report on every receive (SIGUSR1 in the CLI).
	Trigger <-chan struct{}
	// Reports receives each report as one line of JSON.
	Reports io.Writer
	// Errors receives complaints about unknown commands; nil drops them.
	Errors io.Writer
}

// Serve runs the holder, answers the console, and when ctx ends or "quit"
// arrives stops it and writes a final report. It fails only if a report
// cannot be written.
func (h *Holder) Serve(ctx context.Context, c Console) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Run(ctx)
	}()
	// mu keeps lines whole when the console's goroutines write at once.
	var mu sync.Mutex
	complain := func(format string, args ...any) {
		if c.Errors == nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(c.Errors, format, args...)
	}
	cmds := make(chan string)
	if c.Commands != nil {
		go readCommands(ctx, c.Commands, cmds, complain)
	}
	write := func(final bool) error {
		r := h.Report()
		r.Final = final
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if _, err := c.Reports.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			<-done
			return write(true)
		case <-c.Trigger:
			if err := write(false); err != nil {
				cancel()
				<-done
				return err
			}
		case cmd := <-cmds:
			switch cmd {
			case "report":
				if err := write(false); err != nil {
					cancel()
					<-done
					return err
				}
			case "mark":
				h.Mark()
			case "quit", "exit":
				cancel()
			default:
				complain("unknown command %q: want report, mark or quit\n", cmd)
			}
		}
	}
}

// readCommands forwards command lines until the input ends or ctx does.
func readCommands(ctx context.Context, r io.Reader, out chan<- string, complain func(string, ...any)) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		cmd := strings.ToLower(strings.TrimSpace(sc.Text()))
		if cmd == "" {
			continue
		}
		select {
		case out <- cmd:
		case <-ctx.Done():
			return
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		complain("reading commands stopped: %v\n", err)
	}
}
