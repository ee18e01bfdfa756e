package scenarios

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/peerlvs/peerlvs/deploy/lab"
	"github.com/peerlvs/peerlvs/syncd/daemon"
	"github.com/peerlvs/peerlvs/syncd/peer"
)

// Security in the fleet: a director with the wrong keys can neither join the
// gossip nor inject connections.

func syncdStats(t *testing.T, d *director) daemon.Status {
	t.Helper()
	var st daemon.Status
	out := d.ns.Sh("syncd stats --json --status %s", syncdStatus)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%s: syncd stats --json: %v\n%s", d.name, err, out)
	}
	return st
}

func mapShares(t *testing.T, d *director) map[string]int {
	t.Helper()
	m, err := saruMap(d)
	if err != nil {
		t.Fatalf("%s: saru map: %v", d.name, err)
	}
	out := map[string]int{}
	for _, dv := range m.Directors {
		out[dv.Name] = dv.Buckets
	}
	return out
}

// ---------------------------------------------------------------------------
// TestFleetWrongKey

const rogueVIP = "10.0.0.51" // a service only the rogue director carries

type wrongKeyResult struct {
	Before       map[string]map[string]int `json:"before"` // director -> its map's shares
	After        map[string]map[string]int `json:"after"`
	Members      map[string][]string       `json:"members"` // director -> saru status members
	SyncPeers    map[string][]string       `json:"sync_peers"`
	TableBefore  map[string]string         `json:"table_before"`
	TableAfter   map[string]string         `json:"table_after"`
	Rejected     map[string]map[string]uint64
	AuthRejected map[string]uint64 `json:"auth_rejected"` // director -> authentication failures counted during the run
	D4Seen       int               `json:"d4_seen"`       // times d4 showed up in a member's status or map
	RogueConns   int               `json:"rogue_conns"`   // connections d4's own kernel holds
	RogueSent    uint64            `json:"rogue_sent"`    // entries d4's syncd sent
	RogueOwned   int               `json:"rogue_owned"`   // buckets d4's saru owns in its own lonely view (quorum 2 keeps it at 0)
	RogueMembers []string          `json:"rogue_members"`
	RogueSaruLog string            `json:"rogue_saru_log"`
}

// TestFleetWrongKey: a fourth director with a different gossip key and a
// different sync key, pointed at the fleet's seeds and sync group. It must
// not join the gossip, change the allocation, or put anything in the
// fleet's kernels; its sync frames must be rejected and counted.
func TestFleetWrongKey(t *testing.T) {
	res := lab.Run(t, lab.Options{Timeout: 8 * time.Minute, MemoryMB: 1024}, func(t *testing.T, g *lab.Guest) wrongKeyResult {
		f := newFleet(t, g)
		all := f.directors
		waitSettled(t, all, 90*time.Second)
		r := wrongKeyResult{Before: map[string]map[string]int{}, After: map[string]map[string]int{}, Members: map[string][]string{},
			SyncPeers: map[string][]string{}, TableBefore: map[string]string{}, TableAfter: map[string]string{},
			Rejected: map[string]map[string]uint64{}, AuthRejected: map[string]uint64{}}
		authReason := peer.ReasonName(peer.ReasonIndex(peer.ErrAuth))
		keyReason := peer.ReasonName(peer.ReasonIndex(peer.ErrUnknownKey))
		authBefore := map[string]uint64{}
		for _, d := range all {
			r.Before[d.name] = mapShares(t, d)
			r.TableBefore[d.name] = kernelTable(t, d)
			rej := syncdStats(t, d).Peer.Rejected
			authBefore[d.name] = rej[authReason] + rej[keyReason]
		}

		// The rogue: its own service on 10.0.0.51 (the real servers carry
		// that address too), so that its kernel holds connections its
		// syncd tries to spread; no 10.0.0.50.
		for _, rs := range f.servers {
			rs.Sh("ip addr add %s/32 dev lo", rogueVIP)
		}
		d4 := &director{name: "d4", frontIP: "10.0.0.4/24", syncIP: "10.1.0.4/24"}
		d4.ns = g.NS(d4.name)
		d4.frontDev = d4.ns.Plug("front", "eth0", "", d4.frontIP)
		d4.syncDev = d4.ns.Plug("sync", "eth1", "", d4.syncIP)
		d4.ns.Sh("ip addr add %s/32 dev eth0", rogueVIP)
		d4.ns.Sh("ipvsadm -A -t %s:%d -s rr && ipvsadm -a -t %[1]s:%[2]d -r 10.0.0.11:%[2]d -g && ipvsadm -a -t %[1]s:%[2]d -r 10.0.0.12:%[2]d -g", rogueVIP, vipPort)
		g.Sh("umask 077 && syncd keygen > /tmp/bad.key")
		g.Sh("head -c 32 /dev/urandom | base64 > /tmp/bad-gossip.key && chmod 600 /tmp/bad-gossip.key")
		syncCfg := fmt.Sprintf("node_id: 4\nnode_name: d4\nkey_file: /tmp/bad.key\nsyncid: 1\nstatus_listen: %s\npeer:\n  mode: multicast\n  interface: eth1\n  group: 239.255.77.1\n  port: 8848\n  ttl: 1\n", syncdStatus)
		g.Sh("cat > /tmp/d4.yaml <<'EOF'\n%sEOF", syncCfg)
		d4.proc = d4.ns.Start("syncd", "run", "--config", "/tmp/d4.yaml")
		saruCfg := strings.Replace(f.saruConfig(d4, 4), "/tmp/gossip.key", "/tmp/bad-gossip.key", 1)
		g.Sh("cat > /tmp/saru-d4.yaml <<'EOF'\n%sEOF", saruCfg)
		rogueSaru := d4.ns.Start("saru", "run", "--config", "/tmp/saru-d4.yaml")

		// Connections through the rogue, so its kernel master announces them.
		rogue := f.client.Start("labtraffic", "hold", "-target", fmt.Sprintf("%s:%d", rogueVIP, vipPort),
			"-conns", "5", "-interval", "200ms", "-stall", "1s", "-duration", "15m")
		(&holder{p: rogue}).waitOpen(t, 5, 60*time.Second)

		// Several gossip rejoin intervals (10 s) and sync alive periods.
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			for _, d := range all {
				st, err := saruStatusOf(d)
				if err != nil {
					t.Fatalf("%s: saru status: %v", d.name, err)
				}
				for _, m := range st.Members {
					if m.Name == "d4" {
						r.D4Seen++
					}
				}
				if mv, err := saruMap(d); err == nil {
					for _, dv := range mv.Directors {
						if dv.Name == "d4" {
							r.D4Seen++
						}
					}
				}
			}
			time.Sleep(2 * time.Second)
		}
		r.RogueConns = len(clientConnsTo(t, d4, rogueVIP))
		// Under TCG the fleet's own gossip may flap for a moment; the
		// allocation is a function of the members, so once it settles
		// again it must be the one from before d4 appeared.
		waitSettled(t, all, 90*time.Second)
		for _, d := range all {
			r.After[d.name] = mapShares(t, d)
			r.TableAfter[d.name] = kernelTable(t, d)
			st, err := saruStatusOf(d)
			if err != nil {
				t.Fatalf("%v", err)
			}
			for _, m := range st.Members {
				r.Members[d.name] = append(r.Members[d.name], m.Name)
			}
			ss := syncdStats(t, d)
			r.Rejected[d.name] = ss.Peer.Rejected
			r.AuthRejected[d.name] = ss.Peer.Rejected[authReason] + ss.Peer.Rejected[keyReason] - authBefore[d.name]
			for _, p := range ss.Peers {
				r.SyncPeers[d.name] = append(r.SyncPeers[d.name], fmt.Sprintf("%+v", p))
			}
		}
		r4 := syncdStats(t, d4)
		r.RogueSent = r4.Peer.EntriesSent
		if st, err := saruStatusOf(d4); err == nil {
			r.RogueOwned = st.Owned
			for _, m := range st.Members {
				r.RogueMembers = append(r.RogueMembers, m.Name)
			}
		} else {
			r.RogueOwned = -1
		}
		log := rogueSaru.Stderr()
		if len(log) > 3000 {
			log = log[len(log)-3000:]
		}
		r.RogueSaruLog = log
		rogue.Kill()
		return r
	})

	t.Logf("d4 (wrong keys): its kernel holds %d connections to %s, its syncd sent %d entries; its own saru sees members %v and owns %d buckets (quorum 2)",
		res.RogueConns, rogueVIP, res.RogueSent, res.RogueMembers, res.RogueOwned)
	if res.D4Seen != 0 {
		t.Errorf("d4 showed up %d times in the fleet's members or maps", res.D4Seen)
	}
	if res.RogueConns == 0 {
		t.Errorf("the rogue's kernel holds no connection: the test proves nothing about the fleet's tables")
	}
	if res.RogueOwned != 0 {
		t.Errorf("d4 owns %d buckets in its lonely view: with quorum 2 a director that sees only itself must own none (it would accept every flow reaching it)", res.RogueOwned)
	}
	for _, name := range []string{"d1", "d2", "d3"} {
		t.Logf("%s: members %v; map before %v after %v; authentication failures during the run %d; rejected %v",
			name, res.Members[name], res.Before[name], res.After[name], res.AuthRejected[name], res.Rejected[name])
		for _, m := range res.Members[name] {
			if m == "d4" {
				t.Errorf("%s lists d4 as a gossip member", name)
			}
		}
		if _, ok := res.After[name]["d4"]; ok {
			t.Errorf("%s's map lists d4: %v", name, res.After[name])
		}
		if fmt.Sprint(res.Before[name]) != fmt.Sprint(res.After[name]) {
			t.Errorf("%s: allocation changed: %v -> %v", name, res.Before[name], res.After[name])
		}
		if res.TableBefore[name] != res.TableAfter[name] {
			t.Errorf("%s: kernel table changed:\nbefore:\n%s\nafter:\n%s", name, res.TableBefore[name], res.TableAfter[name])
		}
		if strings.Contains(res.TableAfter[name], rogueVIP) {
			t.Errorf("%s: a connection of the rogue reached the kernel", name)
		}
		if res.AuthRejected[name] == 0 {
			t.Errorf("%s: no frame of the rogue counted as authentication failure: %v", name, res.Rejected[name])
		}
	}
}

// clientConnsTo is clientConns for another virtual address.
func clientConnsTo(t *testing.T, d *director, v string) map[string]string {
	t.Helper()
	conns, err := parseIpvsadmConns(d.ns.Sh("ipvsadm -Lnc"))
	if err != nil {
		t.Fatalf("%s: %v", d.name, err)
	}
	m := map[string]string{}
	for _, c := range conns {
		if c.Proto == "TCP" && c.VIP == fmt.Sprintf("%s:%d", v, vipPort) {
			m[c.Source] = c.State
		}
	}
	return m
}

// ---------------------------------------------------------------------------
