package health

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// mailServer greets with greeting, then hands the command it gets to
// commands and answers it with bye (nothing when empty).
func mailServer(greeting, bye string, commands chan<- string) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := io.WriteString(c, greeting); err != nil {
			return
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return
		}
		commands <- strings.TrimRight(line, "\r\n")
		if bye != "" {
			_, _ = io.WriteString(c, bye)
		} else {
			silent(c)
		}
	}
}

func TestProbeMail(t *testing.T) {
	tests := []struct {
		name     string
		kind     Kind
		greeting string
		bye      string
		up       bool
		quit     string // the command the server must get
		errHas   string
	}{
		{name: "smtp", kind: KindSMTP, greeting: "220 mail.example.org ESMTP\r\n", bye: "221 bye\r\n", up: true, quit: "QUIT"},
		{name: "smtp multi-line", kind: KindSMTP, greeting: "220-mail.example.org ESMTP\r\n220-no UCE\r\n220 ready\r\n", bye: "221 bye\r\n", up: true, quit: "QUIT"},
		{name: "smtp bare 220", kind: KindSMTP, greeting: "220\r\n", bye: "221 bye\r\n", up: true, quit: "QUIT"},
		{name: "smtp no answer to quit", kind: KindSMTP, greeting: "220 ok\r\n", up: true, quit: "QUIT"},
		{name: "smtp refused", kind: KindSMTP, greeting: "554 no service\r\n", errHas: `greeting "554 no service", want "220"`},
		{name: "smtp bad continuation", kind: KindSMTP, greeting: "220-hello\r\n421 busy\r\n", errHas: `greeting continues with "421 busy", want "220"`},
		{name: "smtp cut short", kind: KindSMTP, greeting: "220-hello\r\n", errHas: "greeting: no answer"},
		{name: "pop3", kind: KindPOP3, greeting: "+OK POP3 ready\r\n", bye: "+OK bye\r\n", up: true, quit: "QUIT"},
		{name: "pop3 refused", kind: KindPOP3, greeting: "-ERR go away\r\n", errHas: `greeting "-ERR go away", want "+OK"`},
		{name: "imap", kind: KindIMAP, greeting: "* OK [CAPABILITY IMAP4rev1] ready\r\n", bye: "* BYE\r\na1 OK\r\n", up: true, quit: "a1 LOGOUT"},
		{name: "imap refused", kind: KindIMAP, greeting: "* BYE overloaded\r\n", errHas: `greeting "* BYE overloaded", want "* OK"`},
		{name: "no greeting", kind: KindPOP3, errHas: "greeting: no answer within 300ms"},
	}
	for _, host := range loopbacks(t) {
		for _, tt := range tests {
			commands := make(chan string, 1)
			addr := serveTCP(t, host, mailServer(tt.greeting, tt.bye, commands))
			t.Run(host+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				s := Spec{Kind: tt.kind, Timeout: okTimeout}
				if !tt.up {
					s.Timeout = shortTimeout
				}
				r, took := runProbe(t, t.Context(), s, Target{Addr: addr})
				wantResult(t, r, tt.up, tt.errHas)
				if tt.up {
					if took > quitGrace+slack {
						t.Errorf("took %v", took)
					}
					select {
					case got := <-commands:
						if got != tt.quit {
							t.Errorf("server got %q, want %q", got, tt.quit)
						}
					case <-time.After(time.Second):
						t.Errorf("server got no %q", tt.quit)
					}
				}
			})
		}
	}
}

func TestProbeMailClosed(t *testing.T) {
	addr := serveTCP(t, "127.0.0.1", func(net.Conn) {})
	r, took := runProbe(t, t.Context(), Spec{Kind: KindSMTP, Timeout: shortTimeout}, Target{Addr: addr})
	wantResult(t, r, false, "greeting: connection closed")
	wantTook(t, took, shortTimeout, false)
	r, took = runProbe(t, t.Context(), Spec{Kind: KindIMAP, Timeout: shortTimeout}, Target{Addr: closedPort(t, "tcp", "127.0.0.1")})
	wantResult(t, r, false, "connect: connection refused")
	wantTook(t, took, shortTimeout, false)
}
