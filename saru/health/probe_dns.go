package health

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

func (p *prober) dns() error {
	qtype, err := dnsType(p.spec.DNS.Type)
	if err != nil {
		return err
	}
	name := dns.Fqdn(p.spec.DNS.Name)
	if _, ok := dns.IsDomainName(name); !ok {
		return fmt.Errorf("query %q is not a domain name", p.spec.DNS.Name)
	}
	q := fmt.Sprintf("%s %s", name, dns.Type(qtype))
	m := new(dns.Msg).SetQuestion(name, qtype)

	network := "udp"
	if p.spec.DNS.TCP {
		network = "tcp"
	}
	r, err := p.exchange(network, m)
	// A truncated answer may have dropped the records: ask again over TCP
	// within the same attempt, as resolvers (and ldirectord's Net::DNS) do.
	if err == nil && r.Truncated && network == "udp" {
		r, err = p.exchange("tcp", m)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("%s: rcode %s, want NOERROR", q, rcode(r.Rcode))
	}
	if len(r.Answer) == 0 {
		return fmt.Errorf("%s: empty answer", q)
	}
	return nil
}

// exchange sends m over network and reads its reply.
func (p *prober) exchange(network string, m *dns.Msg) (*dns.Msg, error) {
	c, stop, err := p.dial(network)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	defer stop()
	// dns.Client is not used: it does not stop on the context's
	// cancellation, only at its deadline.
	co := &dns.Conn{Conn: c, UDPSize: dns.DefaultMsgSize}
	if err := co.WriteMsg(m); err != nil {
		return nil, p.udpFail("query", err)
	}
	for {
		r, err := co.ReadMsg()
		if err != nil {
			return nil, p.udpFail("reply", err)
		}
		if r.Id == m.Id && r.Response {
			return r, nil
		}
		// Over UDP, a stray datagram (a late reply to an earlier query from
		// the same port) is no answer to this one.
		if network == "tcp" {
			return nil, errors.New("reply: not an answer to the query")
		}
	}
}

// dnsType parses a record type: a name like AAAA or RFC 3597's TYPE65.
func dnsType(s string) (uint16, error) {
	if s == "" {
		return dns.TypeA, nil
	}
	u := strings.ToUpper(s)
	if t, ok := dns.StringToType[u]; ok {
		return t, nil
	}
	if n, ok := strings.CutPrefix(u, "TYPE"); ok {
		if t, err := strconv.ParseUint(n, 10, 16); err == nil {
			return uint16(t), nil
		}
	}
	return 0, fmt.Errorf("query type %q unknown; use a record type such as A, AAAA, MX, SOA or TYPE65", s)
}

func rcode(c int) string {
	if s, ok := dns.RcodeToString[c]; ok {
		return s
	}
	return strconv.Itoa(c)
}
