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
