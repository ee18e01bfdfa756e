package traffic

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHoldAllOK(t *testing.T) {
	t.Parallel()
	s, _ := startEcho(t, EchoConfig{Name: "rsA"})
	const conns = 20
	h, _ := startHolder(t, HoldConfig{
		Target:    s.Addr().String(),
		Conns:     conns,
		Interval:  50 * time.Millisecond,
		Stall:     time.Second,
		SourceIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")},
		PerConn:   true,
	})
	waitReport(t, h, 3*time.Second, func(r Report) bool { return r.Open == conns })
	time.Sleep(time.Second)
	r := h.Report()
	if r.Conns != conns || r.Open != conns || r.OK != conns || r.Stalled != 0 || r.Broken != 0 || r.NeverOpened != 0 || r.Connecting != 0 {
		t.Fatalf("report %+v", r)
	}
	// 1 s at 50 ms is 20 probes per connection; allow for a busy machine.
	if r.Probes < conns*5 {
		t.Errorf("%d probes, want at least %d", r.Probes, conns*5)
	}
	if r.Servers["rsA"] != conns {
		t.Errorf("servers %v", r.Servers)
	}
	if len(r.PerConn) != conns {
		t.Fatalf("%d per_conn entries", len(r.PerConn))
	}
	locals := map[string]bool{}
	for i, c := range r.PerConn {
		ap, err := netip.ParseAddrPort(c.Local)
		if err != nil {
			t.Fatalf("conn %d local %q: %v", i, c.Local, err)
		}
		if want := fmt.Sprintf("127.0.0.%d", 1+i%2); ap.Addr().String() != want {
			t.Errorf("conn %d from %s, want source %s", i, ap.Addr(), want)
		}
		if locals[c.Local] {
			t.Errorf("local address %s twice", c.Local)
		}
		locals[c.Local] = true
		if c.ID != i || c.State != StateOK || c.Server != "rsA" || c.Probes < 5 || c.Err != "" {
			t.Errorf("conn %+v", c)
		}
	}
}

func TestHoldServerKilled(t *testing.T) {
	t.Parallel()
	s, kill := startEcho(t, EchoConfig{Name: "rsA"})
	const conns = 20
	h, _ := startHolder(t, HoldConfig{Target: s.Addr().String(), Conns: conns, Interval: 50 * time.Millisecond, PerConn: true})
	waitReport(t, h, 3*time.Second, func(r Report) bool { return r.Open == conns })
	kill()
	r := waitReport(t, h, 3*time.Second, func(r Report) bool { return r.Broken == conns })
	if r.Open != 0 || r.OK != 0 || r.Stalled != 0 {
		t.Errorf("report %+v", r)
	}
	// Closed by the server: FIN if it had read everything, RST if a probe
	// was still unread.
	if r.BrokenBy[kindEOF]+r.BrokenBy[kindReset] != conns {
		t.Errorf("broken_by %v, want eof or reset", r.BrokenBy)
	}
	for _, c := range r.PerConn {
		if c.State != StateBroken || c.Err == "" {
			t.Errorf("conn %+v", c)
		}
	}
}

func TestHoldStall(t *testing.T) {
	t.Parallel()
	const pause = 600 * time.Millisecond
	// Arming makes every connection delay the reply to the next line it
	// reads by pause, as a failover that black-holes packets for a while.
	var (
		armed atomic.Int64
		mu    sync.Mutex
		seen  = map[*net.TCPConn]int64{} // the arming each connection has served
	)
	target := startScripted(t, func(c *net.TCPConn, n int, line string) (string, bool) {
		gen := armed.Load()
		mu.Lock()
		delay := seen[c] < gen
		seen[c] = gen
		mu.Unlock()
		if delay {
			time.Sleep(pause)
		}
		return echoLine("rsA", line), true
	})
	const conns = 5
	h, _ := startHolder(t, HoldConfig{
		Target:   target.String(),
		Conns:    conns,
		Interval: 50 * time.Millisecond,
		Stall:    300 * time.Millisecond,
		Break:    5 * time.Second,
		PerConn:  true,
	})
	waitReport(t, h, 3*time.Second, func(r Report) bool { return r.Open == conns })
	armed.Add(1)
	h.Mark()
	// Poll through the pause until every connection has had its delayed
	// reply; polling starts new intervals, so collect their maxima.
	var sawWaiting bool
	var intervalMax float64
	r := waitReport(t, h, 5*time.Second, func(r Report) bool {
		if r.Broken != 0 || r.Open != conns {
			t.Fatalf("during the pause: %+v", r)
		}
		sawWaiting = sawWaiting || r.StalledNow > 0
		intervalMax = max(intervalMax, r.IntervalMaxStallMS)
		for _, c := range r.PerConn {
			if c.MaxStallMS < ms(pause) || c.Stalls == 0 {
				return false
			}
		}
		return true
	})
	if !sawWaiting {
		t.Error("no report saw a connection waiting longer than -stall")
	}
	if r.Stalled != conns || r.OK != 0 {
		t.Errorf("after the pause: %+v", r)
	}
	if r.MaxStallMS < ms(pause) || r.MaxStallMS > ms(pause+2*time.Second) {
		t.Errorf("max_stall_ms %.1f, want about %.0f", r.MaxStallMS, ms(pause))
	}
	// A stall straddles reports; its full length belongs to the interval
	// in which the reply came, so a scenario sees each event's stall.
	if intervalMax < ms(pause) {
		t.Errorf("interval_max_stall_ms at most %.1f, want at least %.0f", intervalMax, ms(pause))
	}
	for _, c := range r.PerConn {
		if c.State != StateStalled {
			t.Errorf("conn %+v", c)
		}
	}
	time.Sleep(300 * time.Millisecond)
	r = h.Report()
	if r.IntervalMaxStallMS >= ms(pause) || r.Stalled != conns || r.Broken != 0 {
		t.Errorf("the interval after the pause: %+v", r)
	}
	// A connection whose probe was already delayed before the mark sends
	// its first probe after the mark once the pause is over, and is not
	// counted as caught; the others are, and the first of them was
	// answered only after the pause.
	marked, err1 := time.Parse(time.RFC3339Nano, r.MarkTime)
	first, err2 := time.Parse(time.RFC3339Nano, r.FirstReplyAfterMark)
	if err1 != nil || err2 != nil || r.MarkStalled == 0 || first.Sub(marked) < pause/2 {
		t.Errorf("after a mark and a pause: %d caught, first reply %v after the mark (%v %v)", r.MarkStalled, first.Sub(marked), err1, err2)
	}
}

func TestHoldBrokenBy(t *testing.T) {
	t.Parallel()
	// Each script answers the opening echo and two probes properly, then
	// misbehaves on the third probe (line 4).
	tests := []struct {
		name    string
		bad     func(c *net.TCPConn, line string) (string, bool)
		kind    string
		errText string
		probes  int // answered before the break, if not 2
	}{
		{
			name: "wrong sequence number",
			bad: func(c *net.TCPConn, line string) (string, bool) {
				var id, seq int
				fmt.Sscanf(line, "probe %d %d", &id, &seq)
				return echoLine("rsA", fmt.Sprintf("probe %d %d", id, seq+1)), true
			},
			kind: kindWrongReply, errText: "got probe",
		},
		{
			name:    "garbage",
			bad:     func(*net.TCPConn, string) (string, bool) { return "\x00\xff\xfe junk\n", true },
			kind:    kindWrongReply,
			errText: "sent",
		},
		{
			name:    "no server name",
			bad:     func(_ *net.TCPConn, line string) (string, bool) { return " " + line + "\n", true },
			kind:    kindWrongReply,
			errText: "sent",
		},
		{
			name:    "another server",
			bad:     func(_ *net.TCPConn, line string) (string, bool) { return echoLine("rsB", line), true },
			kind:    kindServerChanged,
			errText: "rsA to rsB",
		},
		{
			name:    "endless line",
			bad:     func(*net.TCPConn, string) (string, bool) { return strings.Repeat("z", 2*maxLine), true },
			kind:    kindWrongReply,
			errText: "longer than",
		},
		{
			name: "extra line",
			bad: func(_ *net.TCPConn, line string) (string, bool) {
				return echoLine("rsA", line) + echoLine("rsA", line), true
			},
			// The third probe is answered; the fourth gets the extra.
			kind: kindWrongReply, errText: "sent probe 0 4, got probe 0 3", probes: 3,
		},
		{
			name:    "closed",
			bad:     func(*net.TCPConn, string) (string, bool) { return "", false },
			kind:    kindEOF,
			errText: "EOF",
		},
		{
			name:    "closed inside a line",
			bad:     func(*net.TCPConn, string) (string, bool) { return "rsA probe", false },
			kind:    kindEOF,
			errText: "inside a line",
		},
		{
			name: "reset",
			bad: func(c *net.TCPConn, _ string) (string, bool) {
				c.SetLinger(0)
				return "", false
			},
			kind: kindReset,
		},
		{
			name:    "silent",
			bad:     func(*net.TCPConn, string) (string, bool) { return "", true },
			kind:    kindTimeout,
			errText: "no reply within",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			target := startScripted(t, func(c *net.TCPConn, n int, line string) (string, bool) {
				if n == 4 {
					return tc.bad(c, line)
				}
				return echoLine("rsA", line), true
			})
			const conns = 3
			h, _ := startHolder(t, HoldConfig{
				Target:   target.String(),
				Conns:    conns,
				Interval: 20 * time.Millisecond,
				Stall:    200 * time.Millisecond,
				Break:    500 * time.Millisecond,
				PerConn:  true,
			})
			r := waitReport(t, h, 3*time.Second, func(r Report) bool { return r.Broken == conns })
			if r.BrokenBy[tc.kind] != conns || r.Open != 0 {
				t.Errorf("broken_by %v, want %d %q; report %+v", r.BrokenBy, conns, tc.kind, r)
			}
			probes := tc.probes
			if probes == 0 {
				probes = 2
			}
			for _, c := range r.PerConn {
				errText := strings.ReplaceAll(tc.errText, "probe 0 ", fmt.Sprintf("probe %d ", c.ID))
				if c.State != StateBroken || c.Probes != probes || !strings.Contains(c.Err, errText) {
					t.Errorf("conn %+v, want %d probes and an error with %q", c, probes, errText)
				}
			}
		})
	}
}

func TestHoldNeverOpened(t *testing.T) {
	t.Parallel()
	h, _ := startHolder(t, HoldConfig{
		Target:         closedPort(t).String(),
		Conns:          4,
		ConnectRetries: 1,
		ConnectTimeout: time.Second,
		PerConn:        true,
	})
	r := waitReport(t, h, 3*time.Second, func(r Report) bool { return r.NeverOpened == 4 })
	if r.Open != 0 || r.Broken != 0 || r.Connecting != 0 {
		t.Errorf("report %+v", r)
	}
	for _, c := range r.PerConn {
		if c.State != StateNeverOpened || !strings.Contains(c.Err, "2 attempts") {
			t.Errorf("conn %+v", c)
		}
	}
}

func TestHoldRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		up     bool
		wantOK bool
	}{
		{name: "server up", up: true, wantOK: true},
		{name: "nothing listens", up: false, wantOK: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			target := closedPort(t)
			if tc.up {
				s, _ := startEcho(t, EchoConfig{})
				target = s.Addr()
			}
			const rate = 50
			h, stop := startHolder(t, HoldConfig{Target: target.String(), Rate: rate})
			time.Sleep(600 * time.Millisecond)
			r1 := h.Report()
			time.Sleep(400 * time.Millisecond)
			r2 := h.Report()
			stop()
			// 50/s for 0.6 s and then 0.4 s. A ticker drops ticks rather
			// than bunch them, so a busy machine makes fewer, never more.
			if r1.NewAttempts < 1 || r1.NewAttempts > 32 || r2.NewAttempts < 1 || r2.NewAttempts > 22 ||
				r1.NewAttempts+r2.NewAttempts < 10 {
				t.Errorf("new_attempts %d then %d, want about 30 then 20", r1.NewAttempts, r2.NewAttempts)
			}
			if r2.NewAttemptsTotal != r1.NewAttempts+r2.NewAttempts || r2.NewOKTotal != r1.NewOK+r2.NewOK {
				t.Errorf("totals %d/%d are not the sum of %d/%d and %d/%d",
					r2.NewOKTotal, r2.NewAttemptsTotal, r1.NewOK, r1.NewAttempts, r2.NewOK, r2.NewAttempts)
			}
			for _, r := range []Report{r1, r2} {
				if tc.wantOK && (r.NewOK != r.NewAttempts || len(r.NewErrors) != 0) {
					t.Errorf("%d of %d new connections ok, errors %v", r.NewOK, r.NewAttempts, r.NewErrors)
				}
				if !tc.wantOK && (r.NewOK != 0 || r.NewErrors[kindRefused] != r.NewAttempts) {
					t.Errorf("%d of %d new connections ok, errors %v; want all refused", r.NewOK, r.NewAttempts, r.NewErrors)
				}
				if r.Conns != 0 || r.Open != 0 {
					t.Errorf("held connections in a rate-only run: %+v", r)
				}
			}
		})
	}
}

func TestHoldServe(t *testing.T) {
	t.Parallel()
	s, _ := startEcho(t, EchoConfig{})

	t.Run("commands", func(t *testing.T) {
		t.Parallel()
		h, err := NewHolder(HoldConfig{Target: s.Addr().String(), Conns: 2, Interval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		cmdR, cmdW := io.Pipe()
		outR, outW := io.Pipe()
		trigger := make(chan struct{})
		var errs syncBuffer
		served := make(chan error, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		go func() {
			served <- h.Serve(ctx, Console{Commands: cmdR, Trigger: trigger, Reports: outW, Errors: &errs})
			outW.Close()
		}()
		lines := make(chan string, 16)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(outR)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		next := func(what string) Report {
			t.Helper()
			l, err := readLineWithin(lines, 3*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			var r Report
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("%s: %q is not a report: %v", what, l, err)
			}
			return r
		}
		time.Sleep(300 * time.Millisecond)
		io.WriteString(cmdW, "report\n")
		if r := next("report"); r.Conns != 2 || r.Open+r.Connecting != 2 || r.Final || r.PerConn != nil {
			t.Errorf("report %+v", r)
		}
		trigger <- struct{}{}
		if r := next("triggered report"); r.Final || r.Conns != 2 || r.MarkTime != "" || r.FirstReplyAfterMark != "" {
			t.Errorf("triggered report %+v", r)
		}
		io.WriteString(cmdW, "mark\n")
		time.Sleep(200 * time.Millisecond) // probes every 20 ms
		io.WriteString(cmdW, "report\n")
		r := next("report after a mark")
		marked, err1 := time.Parse(time.RFC3339Nano, r.MarkTime)
		first, err2 := time.Parse(time.RFC3339Nano, r.FirstReplyAfterMark)
		if err1 != nil || err2 != nil || first.Before(marked) {
			t.Errorf("report after a mark: marked %q, first reply after it %q", r.MarkTime, r.FirstReplyAfterMark)
		}
		io.WriteString(cmdW, "  bogus \n\n QUIT\n")
		if r := next("final report"); !r.Final || r.Open+r.Connecting != 2 {
			t.Errorf("final report %+v", r)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("Serve did not return after quit")
		}
		if _, ok := <-lines; ok {
			t.Error("output after the final report")
		}
		if !strings.Contains(errs.String(), `unknown command "bogus"`) {
			t.Errorf("errors %q", errs.String())
		}
		cmdW.Close()
	})

	t.Run("end of commands is not quit", func(t *testing.T) {
		t.Parallel()
		h, err := NewHolder(HoldConfig{Target: s.Addr().String(), Conns: 1})
		if err != nil {
			t.Fatal(err)
		}
		var out syncBuffer
		const run = 500 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), run)
		defer cancel()
		start := time.Now()
		if err := h.Serve(ctx, Console{Commands: strings.NewReader("report\n"), Reports: &out}); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < run {
			t.Errorf("Serve returned after %s, before its deadline", took)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != 2 {
			t.Fatalf("want a report and a final report, got %q", out.String())
		}
		var r Report
		if err := json.Unmarshal([]byte(lines[1]), &r); err != nil || !r.Final {
			t.Errorf("final report %q: %v", lines[1], err)
		}
	})

	t.Run("report cannot be written", func(t *testing.T) {
		t.Parallel()
		h, err := NewHolder(HoldConfig{Target: s.Addr().String(), Conns: 1})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = h.Serve(ctx, Console{Commands: strings.NewReader("report\n"), Reports: failWriter{}})
		if err == nil || ctx.Err() != nil {
			t.Errorf("Serve = %v, want a prompt write error", err)
		}
	})
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestNewHolderRejects(t *testing.T) {
	t.Parallel()
	good := HoldConfig{Target: "127.0.0.1:80", Conns: 1}
	tests := []struct {
		name   string
		change func(*HoldConfig)
	}{
		{"no target", func(c *HoldConfig) { c.Target = "" }},
		{"host name", func(c *HoldConfig) { c.Target = "localhost:80" }},
		{"no port", func(c *HoldConfig) { c.Target = "127.0.0.1:0" }},
		{"wildcard", func(c *HoldConfig) { c.Target = "0.0.0.0:80" }},
		{"family mismatch", func(c *HoldConfig) { c.SourceIPs = []netip.Addr{netip.MustParseAddr("::1")} }},
		{"negative conns", func(c *HoldConfig) { c.Conns = -1 }},
		{"nothing to do", func(c *HoldConfig) { c.Conns = 0 }},
		{"rate too high", func(c *HoldConfig) { c.Rate = maxRate + 1 }},
		{"negative rate", func(c *HoldConfig) { c.Rate = -1 }},
		{"stall not below break", func(c *HoldConfig) { c.Stall, c.Break = time.Second, time.Second }},
		{"negative interval", func(c *HoldConfig) { c.Interval = -time.Second }},
	}
	if _, err := NewHolder(good); err != nil {
		t.Fatalf("good config rejected: %v", err)
	}
	for _, tc := range tests {
		cfg := good
		tc.change(&cfg)
		if _, err := NewHolder(cfg); err == nil {
			t.Errorf("%s: accepted %+v", tc.name, cfg)
		}
	}
}

func TestParseAddrs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string
		bad  bool
	}{
		{in: "", want: "[]"},
		{in: "10.0.0.1", want: "[10.0.0.1]"},
		{in: " 10.0.0.1, 10.0.0.2 ,", want: "[10.0.0.1 10.0.0.2]"},
		{in: "::ffff:10.0.0.1,::1", want: "[10.0.0.1 ::1]"},
		{in: "10.0.0.1,nope", bad: true},
		{in: "10.0.0.0/24", bad: true},
	}
	for _, tc := range tests {
		got, err := ParseAddrs(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseAddrs(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != tc.want {
			t.Errorf("ParseAddrs(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}
