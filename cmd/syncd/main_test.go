package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/peerlvs/peerlvs/syncd/daemon"
	"github.com/peerlvs/peerlvs/syncd/peer"
)

const leadYAML = `node_id: 1
node_name: d1
key_file: /tmp/sync.key
syncid: 1
status_listen: 127.0.0.1:9476
peer:
  mode: multicast        # multicast | unicast | compat
  interface: eth1
  group: 239.255.77.1
  port: 8848
  ttl: 1
  listen: 10.1.0.1:8848  # unicast: local address; multicast: optional
`

func writeFile(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "syncd.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunConfigLeadSchema(t *testing.T) {
	cfg, err := runConfig([]string{"--config", writeFile(t, leadYAML)}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != 1 || cfg.NodeName != "d1" || cfg.SyncID != 1 || cfg.Peer.Group != "239.255.77.1" || cfg.Peer.Interface != "eth1" || cfg.Peer.Mode != "multicast" {
		t.Errorf("cfg %+v", cfg)
	}
	uni := strings.Replace(leadYAML, "mode: multicast", "mode: unicast", 1) + "  peers: [10.1.0.2:8848, 10.1.0.3:8848]\n"
	uni = strings.Replace(uni, "  group: 239.255.77.1\n", "", 1)
	cfg, err = runConfig([]string{"--config", writeFile(t, uni)}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Peer.Peers) != 2 || cfg.Peer.Listen != "10.1.0.1:8848" {
		t.Errorf("unicast cfg %+v", cfg.Peer)
	}
	cfg, err = runConfig([]string{"--config", writeFile(t, leadYAML), "--compat"}, os.Stderr)
	if err != nil || cfg.Peer.Mode != daemon.ModeCompat || cfg.Peer.MTU != 1472 {
		t.Errorf("--compat: %+v %v", cfg.Peer, err)
	}
}

func TestConfigValidationErrors(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{"node_id: 0\nkey_file: k\npeer: {interface: eth1}\n", "node_id: 0 is out of range"},
		{"node_id: 1\npeer: {interface: eth1}\n", "key_file: missing; generate one with `syncd keygen"},
		{"node_id: 1\nkey_file: k\npeer: {}\n", "peer.interface: missing"},
		{"node_id: 1\nkey_file: k\npeer: {interface: eth1, group: 10.0.0.1}\n", "peer.group: \"10.0.0.1\" is not a multicast address"},
		{"node_id: 1\nkey_file: k\npeer: {mode: unicast}\n", "peer.peers: empty"},
		{"node_id: 1\nkey_file: k\npeer: {mode: unicast, listen: x, peers: [1.2.3.4:5]}\n", "peer.listen: \"x\" is not address:port"},
		{"node_id: 1\nkey_file: k\npeer: {mode: bogus}\n", "peer.mode: \"bogus\" is unknown; use multicast, unicast or compat"},
		{"node_id: 1\nkey_file: k\nstatus_listen: 0.0.0.0:9476\npeer: {interface: eth1}\n", "status_listen: 0.0.0.0:9476 is not a loopback address"},
		{"node_id: 1\nkey_file: k\nsyncid: 300\npeer: {interface: eth1}\n", "syncid: 300 is out of range"},
		{"node_id: 1\nkey_file: k\npeer: {interface: eth1}\nbogus_key: 1\n", "field bogus_key not found"},
		{"node_id: 65000\npeer: {mode: compat, interface: eth1}\n", "reserved in compat mode"},
		{"node_id: 1\nkey_file: k\npeer: {interface: eth1}\nkernel: {sync_maxlen: 20000}\n", "kernel.sync_maxlen: 20000 is out of range"},
	}
	for _, c := range cases {
		_, err := daemon.ParseConfig([]byte(c.yaml), "x.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.yaml, err, c.want)
		}
	}
	// Compat mode needs no key.
	if _, err := daemon.ParseConfig([]byte("node_id: 1\npeer: {mode: compat, interface: eth1}\n"), "x"); err != nil {
		t.Errorf("compat without key: %v", err)
	}
}

func TestStartDaemonMapping(t *testing.T) {
	args := strings.Fields("--start-daemon backup --mcast-interface eth1 --syncid 1 --sync-maxlen 1400 --mcast-group 239.255.77.1 --mcast-port 8848 --mcast-ttl 1 --node-id 1 --key-file /tmp/sync.key --status-listen 127.0.0.1:9476")
	got, role, err := startDaemonConfig(args, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if role != "backup" {
		t.Errorf("role %q", role)
	}
	// The same node from YAML.
	want, err := daemon.ParseConfig([]byte(`node_id: 1
key_file: /tmp/sync.key
syncid: 1
status_listen: 127.0.0.1:9476
peer:
  mode: multicast
  interface: eth1
  group: 239.255.77.1
  port: 8848
  ttl: 1
  mtu: 1400
`), "x")
	if err != nil {
		t.Fatal(err)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("flags -> %s\nyaml  -> %s", gj, wj)
	}
	// Defaults as ipvsadm's: group 224.0.0.81 port 8848; master == backup.
	m, _, err := startDaemonConfig(strings.Fields("--start-daemon master --mcast-interface eth1 --syncid 3 --node-id 2 --key-file k"), os.Stderr)
	if err != nil || m.Peer.Group != "224.0.0.81" || m.Peer.Port != 8848 || m.Peer.Mode != "multicast" || m.SyncID != 3 || m.StatusListen != "127.0.0.1:9476" {
		t.Errorf("defaults: %+v %v", m, err)
	}
	c, _, err := startDaemonConfig(strings.Fields("--start-daemon master --mcast-interface eth1 --syncid 3 --node-id 2 --compat"), os.Stderr)
	if err != nil || c.Peer.Mode != daemon.ModeCompat {
		t.Errorf("--compat: %+v %v", c.Peer, err)
	}
	for _, bad := range []struct{ args, want string }{
		{"--start-daemon primary --mcast-interface eth1 --node-id 1 --key-file k", "use master or backup"},
		{"--mcast-interface eth1 --node-id 1 --key-file k", "--start-daemon: missing"},
		{"--start-daemon master --node-id 1 --key-file k", "--mcast-interface: missing"},
		{"--start-daemon master --mcast-interface eth1 --key-file k", "--node-id: 0 is out of range"},
		{"--start-daemon master --mcast-interface eth1 --node-id 1", "--key-file: missing"},
	} {
		_, _, err := startDaemonConfig(strings.Fields(bad.args), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: got %v, want %q", bad.args, err, bad.want)
		}
	}
}

const sampleConns = `[
 {"proto":"TCP","source":"198.51.100.7:40007","virtual":"192.0.2.1:80","destination":"10.2.0.1:80","state":"ESTABLISHED","expires":899,"owner":1,"owner_name":"d1","age":1,"forward":"Route","version":1763895000},
 {"proto":"UDP","source":"198.51.100.8:53000","virtual":"192.0.2.1:53","destination":"10.2.0.2:53","state":"UDP","expires":65,"owner":61441,"owner_name":"kernel@10.1.0.9","age":125,"forward":"Masq","version":1}
]`

func TestRenderConns(t *testing.T) {
	var cs []daemon.ConnJSON
	if err := json.Unmarshal([]byte(sampleConns), &cs); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := renderConns(&b, cs); err != nil {
		t.Fatal(err)
	}
	want := `IPVS connection entries
pro expire state       source             virtual            destination        owner      age
TCP 14:59  ESTABLISHED 198.51.100.7:40007 192.0.2.1:80       10.2.0.1:80        d1         1s
UDP 01:05  UDP         198.51.100.8:53000 192.0.2.1:53       10.2.0.2:53        kernel@10.1.0.9 2m5s
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestKeygenLoads(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"keygen", "--id", "7"}, &out, os.Stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := peer.LoadKeyring(p)
	if err != nil {
		t.Fatal(err)
	}
	if k.SendID() != 7 {
		t.Errorf("send id %d", k.SendID())
	}
}

func TestReadyExitCodes(t *testing.T) {
	var ready atomic.Bool
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ready" && ready.Load() {
			w.Write([]byte("ready\n"))
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	var out bytes.Buffer
	if c := run(context.Background(), []string{"ready", "--status", addr}, &out, &out); c != 1 {
		t.Errorf("not ready: exit %d", c)
	}
	ready.Store(true)
	if c := run(context.Background(), []string{"ready", "--status", addr}, &out, &out); c != 0 {
		t.Errorf("ready: exit %d", c)
	}
	srv.Close()
	if c := run(context.Background(), []string{"ready", "--status", addr}, &out, &out); c != 2 {
		t.Errorf("unreachable: exit %d", c)
	}
}

func TestExampleConfigParses(t *testing.T) {
	cfg, err := runConfig([]string{"--config", "../../deploy/syncd/syncd.yaml"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != 1 || cfg.Peer.Interface != "eth1" || cfg.Kernel.Link != "plsync0" {
		t.Errorf("%+v", cfg)
	}
}
