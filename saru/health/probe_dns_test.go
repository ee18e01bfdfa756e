package health

import (
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/miekg/dns"
)

// dnsServer serves the zone below on host over UDP and TCP on one port
// until the test ends:
//
//	up.test.       A 192.0.2.1, MX 10 mail.test.
//	nx.test.       NXDOMAIN
//	fail.test.     SERVFAIL
//	empty.test.    NOERROR, no records
//	big.test.      A 192.0.2.1 over TCP, truncated and empty over UDP
//	silent.test.   no reply
//	wrongid.test.  a reply with another ID
func dnsServer(t *testing.T, host string) netip.AddrPort {
	t.Helper()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg).SetReply(req)
		q := req.Question[0]
		a := &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)}
		switch q.Name {
		case "up.test.":
			switch q.Qtype {
			case dns.TypeA:
				m.Answer = append(m.Answer, a)
			case dns.TypeMX:
				m.Answer = append(m.Answer, &dns.MX{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: 60}, Preference: 10, Mx: "mail.test."})
			}
		case "nx.test.":
			m.Rcode = dns.RcodeNameError
		case "fail.test.":
			m.Rcode = dns.RcodeServerFailure
		case "big.test.":
			if w.LocalAddr().Network() == "tcp" {
				m.Answer = append(m.Answer, a)
			} else {
				m.Truncated = true
			}
		case "silent.test.":
			return
		case "wrongid.test.":
			m.Id++
		}
		_ = w.WriteMsg(m)
	})

	// TCP on the port UDP got, which is nearly always free.
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 10 {
		if pc, err = net.ListenPacket("udp", net.JoinHostPort(host, "0")); err != nil {
			t.Fatal(err)
		}
		port := netAddrPort(pc.LocalAddr()).Port()
		if ln, err = net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(int(port)))); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			_ = srv.Shutdown()
			<-done
		})
	}
	return netAddrPort(pc.LocalAddr())
}

func TestProbeDNS(t *testing.T) {
	for _, host := range loopbacks(t) {
		addr := dnsServer(t, host)
		tests := []struct {
			name     string
			d        DNSSpec
			up       bool
			errHas   string
			timedOut bool
		}{
			{name: "answer", d: DNSSpec{Name: "up.test"}, up: true},
			{name: "answer, fully qualified", d: DNSSpec{Name: "up.test."}, up: true},
			{name: "answer over TCP", d: DNSSpec{Name: "up.test", TCP: true}, up: true},
			{name: "type", d: DNSSpec{Name: "up.test", Type: "MX"}, up: true},
			{name: "type in lower case", d: DNSSpec{Name: "up.test", Type: "mx"}, up: true},
			{name: "type by number", d: DNSSpec{Name: "up.test", Type: "TYPE15"}, up: true},
			{name: "no such type", d: DNSSpec{Name: "up.test", Type: "AAAA"}, errHas: "up.test. AAAA: empty answer"},
			{name: "nxdomain", d: DNSSpec{Name: "nx.test"}, errHas: "nx.test. A: rcode NXDOMAIN, want NOERROR"},
			{name: "servfail over TCP", d: DNSSpec{Name: "fail.test", TCP: true}, errHas: "rcode SERVFAIL"},
			{name: "empty", d: DNSSpec{Name: "empty.test"}, errHas: "empty.test. A: empty answer"},
			{name: "truncated, then TCP", d: DNSSpec{Name: "big.test"}, up: true},
			{name: "no reply", d: DNSSpec{Name: "silent.test"}, errHas: "silent.test. A: reply: no answer within 300ms", timedOut: true},
			{name: "no reply over TCP", d: DNSSpec{Name: "silent.test", TCP: true}, errHas: "reply: no answer within 300ms", timedOut: true},
			{name: "reply to another query", d: DNSSpec{Name: "wrongid.test"}, errHas: "reply: no answer", timedOut: true},
			{name: "reply to another query over TCP", d: DNSSpec{Name: "wrongid.test", TCP: true}, errHas: "not an answer to the query"},
			{name: "unknown type", d: DNSSpec{Name: "up.test", Type: "BOGUS"}, errHas: `query type "BOGUS" unknown`},
			{name: "bad name", d: DNSSpec{Name: "a..b"}, errHas: `query "a..b" is not a domain name`},
		}
		for _, tt := range tests {
			t.Run(host+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				s := Spec{Kind: KindDNS, Timeout: okTimeout, DNS: tt.d}
				if !tt.up {
					s.Timeout = shortTimeout
				}
				r, took := runProbe(t, t.Context(), s, Target{Addr: addr})
				wantResult(t, r, tt.up, tt.errHas)
				if !tt.up {
					wantTook(t, took, s.Timeout, tt.timedOut)
				}
			})
		}
	}
	r, took := runProbe(t, t.Context(), Spec{Kind: KindDNS, Timeout: shortTimeout, DNS: DNSSpec{Name: "up.test"}}, Target{Addr: closedPort(t, "udp", "127.0.0.1")})
	wantResult(t, r, false, "connection refused")
	wantTook(t, took, shortTimeout, false)
}
