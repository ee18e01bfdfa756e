package procconn

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The samples below were written by hand from the format strings in
// net/netfilter/ipvs/ip_vs_conn.c (ip_vs_conn_seq_show and
// ip_vs_conn_sync_seq_show), column widths included, so they are independent
// of Format.
const (
	hdrConn    = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
	hdrSync    = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n"
	hdrConnOld = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires\n"
)

var (
	client4 = netip.MustParseAddr("192.168.10.100")
	vip4    = netip.MustParseAddr("10.0.0.1")
	rs4     = netip.MustParseAddr("192.168.20.2")
	client6 = netip.MustParseAddr("2001:db8::64")
	vip6    = netip.MustParseAddr("2001:db8:0:1::1")
	rs6     = netip.MustParseAddr("fd00:20::2")
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Entry
	}{
		{
			name: "empty table",
			in:   hdrConn,
			want: nil,
		},
		{
			name: "ipv4 tcp udp and template",
			in: hdrConn +
				"TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED     899\n" +
				"UDP C0A80A64 A3F2 0A000001 0035 C0A81402 0035 UDP             293\n" +
				"TCP C0A80A64 0000 0A000001 0050 C0A81402 0050 NONE            358\n" +
				"TCP C0A80A64 D432 0A000001 0050 C0A81402 0050 FIN_WAIT          0\n" +
				"SCTP C0A80A64 0B59 0A000001 0B59 C0A81402 0B59 C-ECHOED          9\n",
			want: []Entry{
				{Protocol: 6, CAddr: client4, CPort: 0xD431, VAddr: vip4, VPort: 80, DAddr: rs4, DPort: 80, State: "ESTABLISHED", Expires: 899 * time.Second},
				{Protocol: 17, CAddr: client4, CPort: 0xA3F2, VAddr: vip4, VPort: 53, DAddr: rs4, DPort: 53, State: "UDP", Expires: 293 * time.Second},
				{Protocol: 6, CAddr: client4, VAddr: vip4, VPort: 80, DAddr: rs4, DPort: 80, State: "NONE", Expires: 358 * time.Second},
				{Protocol: 6, CAddr: client4, CPort: 0xD432, VAddr: vip4, VPort: 80, DAddr: rs4, DPort: 80, State: "FIN_WAIT"},
				{Protocol: 132, CAddr: client4, CPort: 2905, VAddr: vip4, VPort: 2905, DAddr: rs4, DPort: 2905, State: "C-ECHOED", Expires: 9 * time.Second},
			},
		},
		{
			name: "fwmark template, esp, ah and unknown protocols",
			in: hdrConn +
				"IP  C0A80A64 0000 00000001 0000 C0A81402 0000 ASSURED         300\n" +
				"IP_50 C0A80A64 0000 0A000001 0000 C0A81402 0000 ERR!             12\n" +
				"IP_51 C0A80A64 0000 0A000001 0000 C0A81402 0000 ?                12\n" +
				"ICMP C0A80A64 0000 0A000001 0000 C0A81402 0000 ERR!              1\n",
			want: []Entry{
				{Protocol: 0, CAddr: client4, VAddr: netip.MustParseAddr("0.0.0.1"), DAddr: rs4, State: "ASSURED", Expires: 300 * time.Second},
				{Protocol: 50, CAddr: client4, VAddr: vip4, DAddr: rs4, State: "ERR!", Expires: 12 * time.Second},
				{Protocol: 51, CAddr: client4, VAddr: vip4, DAddr: rs4, State: "?", Expires: 12 * time.Second},
				{Protocol: 1, CAddr: client4, VAddr: vip4, DAddr: rs4, State: "ERR!", Expires: 1 * time.Second},
			},
		},
		{
			name: "sip persistence engine",
			in: hdrConn +
				"UDP C0A80A64 0000 0A000001 13C4 C0A81402 13C4 NONE            178 sip a84b4c76e66710@pc33.example.com\n" +
				"UDP C0A80A64 13C4 0A000001 13C4 C0A81402 13C4 UDP             178\n" +
				"UDP C0A80A64 0000 0A000001 13C4 C0A81402 13C4 NONE            170 sip \n" +
				"UDP C0A80A64 0000 0A000001 13C4 C0A81402 13C4 NONE            170 sip odd call id\n",
			want: []Entry{
				{Protocol: 17, CAddr: client4, VAddr: vip4, VPort: 5060, DAddr: rs4, DPort: 5060, State: "NONE", Expires: 178 * time.Second, PEName: "sip", PEData: "a84b4c76e66710@pc33.example.com"},
				{Protocol: 17, CAddr: client4, CPort: 5060, VAddr: vip4, VPort: 5060, DAddr: rs4, DPort: 5060, State: "UDP", Expires: 178 * time.Second},
				{Protocol: 17, CAddr: client4, VAddr: vip4, VPort: 5060, DAddr: rs4, DPort: 5060, State: "NONE", Expires: 170 * time.Second, PEName: "sip"},
				{Protocol: 17, CAddr: client4, VAddr: vip4, VPort: 5060, DAddr: rs4, DPort: 5060, State: "NONE", Expires: 170 * time.Second, PEName: "sip", PEData: "odd call id"},
			},
		},
		{
			name: "ipv6 as printed by %pI6, and a v4 real server behind a v6 service",
			in: hdrConn +
				"TCP 2001:0db8:0000:0000:0000:0000:0000:0064 D431 2001:0db8:0000:0001:0000:0000:0000:0001 01BB fd00:0020:0000:0000:0000:0000:0000:0002 01BB ESTABLISHED     900\n" +
				"TCP 2001:0db8:0000:0000:0000:0000:0000:0064 D432 2001:0db8:0000:0001:0000:0000:0000:0001 01BB C0A81402 01BB SYN_RECV         59\n",
			want: []Entry{
				{Protocol: 6, CAddr: client6, CPort: 0xD431, VAddr: vip6, VPort: 443, DAddr: rs6, DPort: 443, State: "ESTABLISHED", Expires: 900 * time.Second},
				{Protocol: 6, CAddr: client6, CPort: 0xD432, VAddr: vip6, VPort: 443, DAddr: rs4, DPort: 443, State: "SYN_RECV", Expires: 59 * time.Second},
			},
		},
		{
			name: "ip_vs_conn_sync",
			in: hdrSync +
				"TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED LOCAL      899\n" +
				"UDP C0A80A64 A3F2 0A000001 0035 C0A81402 0035 UDP         SYNC       293\n" +
				"TCP 2001:0db8:0000:0000:0000:0000:0000:0064 D431 2001:0db8:0000:0001:0000:0000:0000:0001 01BB fd00:0020:0000:0000:0000:0000:0000:0002 01BB ESTABLISHED SYNC    1234567\n",
			want: []Entry{
				{Protocol: 6, CAddr: client4, CPort: 0xD431, VAddr: vip4, VPort: 80, DAddr: rs4, DPort: 80, State: "ESTABLISHED", Expires: 899 * time.Second, Origin: OriginLocal},
				{Protocol: 17, CAddr: client4, CPort: 0xA3F2, VAddr: vip4, VPort: 53, DAddr: rs4, DPort: 53, State: "UDP", Expires: 293 * time.Second, Origin: OriginSync},
				{Protocol: 6, CAddr: client6, CPort: 0xD431, VAddr: vip6, VPort: 443, DAddr: rs6, DPort: 443, State: "ESTABLISHED", Expires: 1234567 * time.Second, Origin: OriginSync},
			},
		},
		{
			name: "old header without PE columns, CRLF, blank lines, compressed ipv6, lower-case hex",
			in: hdrConnOld +
				"TCP c0a80a64 d431 0a000001 0050 c0a81402 0050 ESTABLISHED     899\r\n" +
				"\n" +
				"TCP 2001:db8::64 D431 2001:db8:0:1::1 01BB fd00:20::2 01BB ESTABLISHED     900\n",
			want: []Entry{
				{Protocol: 6, CAddr: client4, CPort: 0xD431, VAddr: vip4, VPort: 80, DAddr: rs4, DPort: 80, State: "ESTABLISHED", Expires: 899 * time.Second},
				{Protocol: 6, CAddr: client6, CPort: 0xD431, VAddr: vip6, VPort: 443, DAddr: rs6, DPort: 443, State: "ESTABLISHED", Expires: 900 * time.Second},
			},
		},
		{
			name: "no final newline",
			in:   hdrSync + "TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED LOCAL      899",
			want: []Entry{
				{Protocol: 6, CAddr: client4, CPort: 0xD431, VAddr: vip4, VPort: 80, DAddr: rs4, DPort: 80, State: "ESTABLISHED", Expires: 899 * time.Second, Origin: OriginLocal},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse mismatch\n got: %+v\nwant: %+v", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	const good = "TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED     899\n"
	tests := []struct {
		name     string
		in       string
		wantLine int
		wantText string
	}{
		{"empty input", "", 1, "missing header"},
		{"no header", good, 1, "missing header"},
		{"header with unknown trailing column", "Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires Foo\n", 1, "missing header"},
		{"second header", hdrConn + good + hdrConn, 3, "protocol \"Pro\""},
		{"too few fields", hdrConn + "TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED\n", 2, "8 fields, want at least 9"},
		{"sync too few fields", hdrSync + good, 2, "9 fields, want at least 10"},
		{"sync columns swapped", hdrSync + "TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED 899 LOCAL\n", 2, "origin \"899\""},
		{"sync trailing text", hdrSync + "TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED LOCAL 899 x\n", 2, "unexpected text"},
		{"bad origin", hdrSync + "TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED MASTER 899\n", 2, "origin \"MASTER\""},
		{"bad protocol", hdrConn + "GRE C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED 899\n", 2, "protocol \"GRE\""},
		{"protocol number too big", hdrConn + "IP_256 C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED 899\n", 2, "protocol \"IP_256\""},
		{"short ipv4", hdrConn + "TCP C0A80A6 D431 0A000001 0050 C0A81402 0050 ESTABLISHED 899\n", 2, "client address"},
		{"non-hex ipv4", hdrConn + "TCP C0A80A6G D431 0A000001 0050 C0A81402 0050 ESTABLISHED 899\n", 2, "not hexadecimal"},
		{"dotted ipv4", hdrConn + "TCP 192.168.10.100 D431 0A000001 0050 C0A81402 0050 ESTABLISHED 899\n", 2, "client address"},
		{"zoned ipv6", hdrConn + "TCP fe80::1%eth0 D431 fe80::2 0050 C0A81402 0050 ESTABLISHED 899\n", 2, "client address"},
		{"bad ipv6", hdrConn + "TCP 2001:db8:::1 D431 2001:db8::2 0050 C0A81402 0050 ESTABLISHED 899\n", 2, "not an IPv6 address"},
		{"mixed families", hdrConn + "TCP 2001:db8::1 D431 0A000001 0050 C0A81402 0050 ESTABLISHED 899\n", 2, "differ in family"},
		{"long port", hdrConn + "TCP C0A80A64 1D431 0A000001 0050 C0A81402 0050 ESTABLISHED 899\n", 2, "client port"},
		{"bad vport", hdrConn + "TCP C0A80A64 D431 0A000001 +050 C0A81402 0050 ESTABLISHED 899\n", 2, "virtual port"},
		{"bad dport", hdrConn + "TCP C0A80A64 D431 0A000001 0050 C0A81402 x050 ESTABLISHED 899\n", 2, "destination port"},
		{"bad daddr", hdrConn + "TCP C0A80A64 D431 0A000001 0050 C0A8140 0050 ESTABLISHED 899\n", 2, "destination address"},
		{"negative expiry", hdrConn + "TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED -1\n", 2, "expires \"-1\""},
		{"huge expiry", hdrConn + "TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED 4294967296\n", 2, "expires"},
		{"glued pe", hdrConn + "TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED 899\tsip x\n", 2, "unexpected text"},
		{"line too long", hdrConn + good + strings.Repeat("x", maxLine+1) + "\n", 3, "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want error", got)
			}
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("error %v is not a *LineError", err)
			}
			if le.Line != tt.wantLine {
				t.Errorf("line = %d, want %d (%v)", le.Line, tt.wantLine, err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not mention %q", err, tt.wantText)
			}
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("boom") }

func TestParseReadError(t *testing.T) {
	_, err := Parse(failingReader{})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v, want the reader's error", err)
	}
}

func TestHeaderKind(t *testing.T) {
	for line, want := range map[string]Kind{
		hdrConn:    KindConn,
		hdrConnOld: KindConn,
		hdrSync:    KindSync,
		"Pro FromIP FPrt ToIP TPrt DestIP DPrt State Origin Expires": KindSync,
	} {
		if got, ok := HeaderKind(line); !ok || got != want {
			t.Errorf("HeaderKind(%q) = %v, %v; want %v", line, got, ok, want)
		}
	}
	for _, line := range []string{"", "Pro", "TCP C0A80A64 D431", "Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires Origin"} {
		if _, ok := HeaderKind(line); ok {
			t.Errorf("HeaderKind(%q) accepted", line)
		}
	}
}

func TestFormatRoundTrip(t *testing.T) {
	entries := []Entry{
		{Protocol: 6, CAddr: client4, CPort: 0xD431, VAddr: vip4, VPort: 80, DAddr: rs4, DPort: 80, State: "ESTABLISHED", Expires: 899 * time.Second},
		{Protocol: 17, CAddr: client4, VAddr: vip4, VPort: 5060, DAddr: rs4, DPort: 5060, State: "NONE", Expires: 178 * time.Second, PEName: "sip", PEData: "a84b4c76e66710@pc33"},
		{Protocol: 51, CAddr: client6, VAddr: vip6, DAddr: rs4, State: "ERR!", Expires: time.Second},
	}
	var b bytes.Buffer
	if err := Format(&b, KindConn, entries); err != nil {
		t.Fatal(err)
	}
	// The kernel's own rendering of the first line, column for column.
	if want := "TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED     899\n"; !strings.Contains(b.String(), want) {
		t.Errorf("Format output\n%s\nlacks kernel line\n%s", b.String(), want)
	}
	if want := "IP_51 2001:0db8:0000:0000:0000:0000:0000:0064 0000 "; !strings.Contains(b.String(), want) {
		t.Errorf("Format output\n%s\nlacks %%pI6 rendering %q", b.String(), want)
	}
	got, err := Parse(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, entries) {
		t.Errorf("round trip\n got: %+v\nwant: %+v", got, entries)
	}

	for i := range entries {
		entries[i].PEName, entries[i].PEData, entries[i].Origin = "", "", OriginSync
	}
	b.Reset()
	if err := Format(&b, KindSync, entries); err != nil {
		t.Fatal(err)
	}
	if want := "ESTABLISHED SYNC       899\n"; !strings.Contains(b.String(), want) {
		t.Errorf("sync Format output\n%s\nlacks %q", b.String(), want)
	}
	got, err = Parse(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, entries) {
		t.Errorf("sync round trip\n got: %+v\nwant: %+v", got, entries)
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ip_vs_conn")
	if err := os.WriteFile(p, []byte(hdrConn+"TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED     899\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(p)
	if err != nil || len(got) != 1 || got[0].CAddr != client4 {
		t.Fatalf("ReadFile = %+v, %v", got, err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte(hdrConn+"junk\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("ReadFile(bad) error = %v, want path and line", err)
	}
	if _, err := ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile(missing) error = %v, want ErrNotExist", err)
	}
}

// The local kernel has no IPVS, but if a machine running the tests does,
// the real file must parse.
func TestReadFileLive(t *testing.T) {
	for _, p := range []string{"/proc/net/ip_vs_conn", "/proc/net/ip_vs_conn_sync"} {
		if _, err := os.Stat(p); err != nil {
			t.Logf("%s: %v (no IPVS here)", p, err)
			continue
		}
		if _, err := ReadFile(p); err != nil {
			t.Errorf("ReadFile(%s): %v", p, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(hdrConn + "TCP C0A80A64 D431 0A000001 0050 C0A81402 0050 ESTABLISHED     899\n"))
	f.Add([]byte(hdrSync + "UDP C0A80A64 A3F2 0A000001 0035 C0A81402 0035 UDP         SYNC       293\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := Parse(bytes.NewReader(data))
		if err != nil {
			var le *LineError
			if !errors.As(err, &le) || le.Line < 1 {
				t.Fatalf("error without a line number: %v", err)
			}
			return
		}
		// Whatever parses must survive a trip through the kernel's format.
		kind, _ := HeaderKind(firstLine(data))
		var b bytes.Buffer
		if err := Format(&b, kind, entries); err != nil {
			t.Fatal(err)
		}
		again, err := Parse(&b)
		if err != nil {
			t.Fatalf("re-parse of formatted entries: %v\n%s", err, b.String())
		}
		if !reflect.DeepEqual(entries, again) {
			t.Fatalf("round trip differs\n got: %+v\nwant: %+v", again, entries)
		}
	})
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return strings.TrimSuffix(string(line), "\r")
}
