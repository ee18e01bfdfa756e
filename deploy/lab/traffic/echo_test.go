package traffic

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestEchoServerTCP(t *testing.T) {
	t.Parallel()
	s, _ := startEcho(t, EchoConfig{Name: "rs1"})
	tests := []struct {
		name      string
		send      string
		closeSend bool // half-close after sending
		want      []string
		hangUp    bool // the server must close the connection
	}{
		{name: "one line", send: "hello\n", want: []string{"rs1 hello"}},
		{name: "burst in one write", send: "a\nb 2\nc\n", want: []string{"rs1 a", "rs1 b 2", "rs1 c"}},
		{name: "empty line", send: "\n", want: []string{"rs1 "}},
		{name: "unterminated line before close", send: "tail", closeSend: true, want: []string{"rs1 tail"}, hangUp: true},
		{name: "line too long", send: strings.Repeat("x", maxLine+10), hangUp: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(s.Addr()))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.closeSend {
				c.CloseWrite()
			}
			br := bufio.NewReader(c)
			for _, want := range tc.want {
				got, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("read reply: %v", err)
				}
				if got != want+"\n" {
					t.Errorf("reply %q, want %q", got, want+"\n")
				}
			}
			if tc.hangUp {
				if extra, err := br.ReadString('\n'); err == nil {
					t.Errorf("connection still open, got %q", extra)
				} else if errKind(err) == kindTimeout {
					t.Errorf("server did not hang up: %v", err)
				}
			}
		})
	}
}

func TestEchoServerUDP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		listen string
		target string // host to send to; port is the server's
		ipv6   bool
	}{
		{name: "bound address", listen: "127.0.0.1:0", target: "127.0.0.1"},
		// A connected client drops replies from any other address, so
		// this passes only if the reply leaves from 127.0.0.2, as a DR
		// real server's must leave from the VIP.
		{name: "wildcard answers from the address asked", listen: "0.0.0.0:0", target: "127.0.0.2"},
		{name: "ipv6 wildcard", listen: "[::]:0", target: "::1", ipv6: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.ipv6 && !hasIPv6Loopback() {
				t.Skip("no IPv6 loopback")
			}
			s, _ := startEcho(t, EchoConfig{Listen: tc.listen, Name: "rs2", UDP: true})
			to := netip.AddrPortFrom(netip.MustParseAddr(tc.target), s.Addr().Port())
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 1024)
			// UDP may drop; a few tries keep the test honest without
			// making it flaky.
			for try := 0; ; try++ {
				if _, err := c.Write([]byte("udp 0 1\n")); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				n, err := c.Read(buf)
				if err == nil {
					if got := string(buf[:n]); got != "rs2 udp 0 1\n" {
						t.Fatalf("reply %q", got)
					}
					break
				}
				if try == 3 {
					t.Fatalf("no reply: %v", err)
				}
			}
			if st := s.Stats(); st.Datagrams < 1 || st.Name != "rs2" {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestListenEchoRejects(t *testing.T) {
	t.Parallel()
	for _, cfg := range []EchoConfig{
		{Listen: "127.0.0.1:0", Name: ""},
		{Listen: "127.0.0.1:0", Name: "two words"},
		{Listen: "127.0.0.1:0", Name: "tab\tname"},
		{Listen: ":0", Name: "rs"},
		{Listen: "localhost:80", Name: "rs"},
	} {
		if s, err := ListenEcho(cfg); err == nil {
			s.ln.Close()
			t.Errorf("ListenEcho(%+v) accepted", cfg)
		}
	}
}
