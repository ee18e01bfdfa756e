package lab

import (
	"strings"
	"testing"
)

// TestLabBoots proves the machinery itself: the guest boots the cached
// kernel, has IPVS, can build a namespace topology, and its result reaches
// the host.
func TestLabBoots(t *testing.T) {
	type result struct {
		Kernel string
		IPVS   string
		Ping   bool
	}
	res := Run(t, Options{}, func(t *testing.T, g *Guest) result {
		g.Hub("hub0")
		a := g.NS("a")
		b := g.NS("b")
		a.Plug("hub0", "eth0", "", "10.9.0.1/24")
		b.Plug("hub0", "eth0", "", "10.9.0.2/24")
		_, err := a.Try("ping -c 1 -W 2 10.9.0.2")
		return result{
			Kernel: strings.TrimSpace(g.Sh("uname -r")),
			IPVS:   strings.SplitN(g.Sh("ipvsadm -Ln"), "\n", 2)[0],
			Ping:   err == nil,
		}
	})
	if !strings.Contains(res.IPVS, "IP Virtual Server") {
		t.Errorf("guest has no IPVS: %q", res.IPVS)
	}
	if !res.Ping {
		t.Errorf("namespaces on the hub cannot reach each other")
	}
	t.Logf("guest kernel %s: %s", res.Kernel, res.IPVS)
}

func TestReported(t *testing.T) {
	console := []byte(strings.Join([]string{
		"lab: guest kernel 6.1.0",
		"=== RUN   TestX",
		"        live: d1 saru: {\"msg\":\"x\"} fleet_test.go:12: not a test message",
		"    fleet_test.go:189: a table follows:",
		"        | event | survive |",
		"    fleet_test.go:201: 2. d1 back: 94 of 96 survived\r",
		"--- FAIL: TestX (1.00s)",
	}, "\n"))
	want := "    fleet_test.go:189: a table follows:\n    fleet_test.go:201: 2. d1 back: 94 of 96 survived"
	if got := reported(console, 5); got != want {
		t.Errorf("reported:\n%s\nwant:\n%s", got, want)
	}
	if got := reported(console, 1); !strings.HasSuffix(got, "[... 1 more]") {
		t.Errorf("reported with n 1: %q, want it to say one more", got)
	}
}
