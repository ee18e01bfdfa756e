package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/peerlvs/peerlvs/ipvs/synclink"
	"github.com/peerlvs/peerlvs/ipvs/wire"
	"github.com/peerlvs/peerlvs/syncd/peer"
)

// Peer transport modes.
const (
	ModeMulticast = "multicast"
	ModeUnicast   = "unicast"
	// ModeCompat speaks the plain kernel v1 sync format on the LAN
	// (multicast), unauthenticated, so that stock kernel sync daemons and
	// syncd interoperate.
	ModeCompat = "compat"
)

// Defaults.
const (
	DefaultStatusListen = "127.0.0.1:9476"
	DefaultPort         = wire.DefaultPort // 8848, as ipvsadm
	DefaultTTL          = 1
	// DefaultKernelMaxLen is the kernel master's SYNC_MAXLEN on the
	// private link (the kernel's own default for IPv4).
	DefaultKernelMaxLen = wire.DefaultMaxLen
	// DefaultInjectMaxLen is the size of datagrams handed to the kernel
	// backup thread, whose buffer follows the link MTU (65535).
	DefaultInjectMaxLen = 9000 - 28
	// DefaultInjectBurst is how many datagrams go to the kernel backup per
	// 10 ms tick (about 800,000 IPv4 entries/s at DefaultInjectMaxLen).
	DefaultInjectBurst = 32
	// DefaultSyncSockSize is written to net.ipv4.vs.sync_sock_size before
	// the kernel threads start (the kernel caps it at net.core.rmem_max).
	DefaultSyncSockSize = 4 << 20
	// CompatPseudoBase: in compat mode, entries learnt from a plain kernel
	// sync sender get a pseudo owner id in CompatPseudoBase..65535 derived
	// from its address ("kernel@<ip>"); real node ids must stay below.
	CompatPseudoBase = 0xF000
)

// Config is syncd's configuration (YAML). Zero values take the defaults
// listed with each field.
type Config struct {
	// NodeID is this director's id, 1..65535, unique in the fleet.
	NodeID int `yaml:"node_id"`
	// NodeName names this node in logs and status output [d<node_id>].
	NodeName string `yaml:"node_name"`
	// KeyFile is the shared key file (see docs/protocol.md, Keys). Required
	// except in compat mode. Reloaded on SIGHUP.
	KeyFile string `yaml:"key_file"`
	// SyncID is the kernel sync id, 0..255 (0: the kernel backup accepts
	// every id). It is used on the private link and, in compat mode, on
	// the LAN.
	SyncID int `yaml:"syncid"`
	// StatusListen is the status HTTP endpoint [127.0.0.1:9476]. It must
	// be a loopback address: it is unauthenticated.
	StatusListen string `yaml:"status_listen"`
	// Nodes optionally names other node ids for status output.
	Nodes map[int]string `yaml:"nodes"`

	Peer   PeerConfig   `yaml:"peer"`
	Kernel KernelConfig `yaml:"kernel"`
}

// PeerConfig is the LAN side.
type PeerConfig struct {
	// Mode is multicast, unicast or compat [multicast].
	Mode string `yaml:"mode"`
	// Interface is the LAN interface for multicast (required in multicast
	// and compat modes).
	Interface string `yaml:"interface"`
	// Group is the multicast group, IPv4 or IPv6 [224.0.0.81].
	Group string `yaml:"group"`
	// Port is the UDP port [8848].
	Port int `yaml:"port"`
	// TTL is the multicast TTL / hop limit [1].
	TTL int `yaml:"ttl"`
	// Listen is the local address:port: required in unicast mode; in
	// multicast mode optional, and frames from it are dropped as our own.
	Listen string `yaml:"listen"`
	// Peers are the other nodes' address:port (unicast mode only).
	Peers []string `yaml:"peers"`
	// MTU is the largest UDP payload sent [1400 peer modes, 1472 compat].
	MTU int `yaml:"mtu"`
	// BulkRate is the bulk dump pace, entries/s [1,000,000].
	BulkRate int `yaml:"bulk_rate"`
	// RecvBuffer is the peer socket's receive buffer in bytes [8 MiB]: a
	// bulk dump arrives in bursts of thousands of frames, and the kernel's
	// default (~200 KiB, about 90 frames) drops most of them.
	RecvBuffer int `yaml:"recv_buffer"`
	// AliveInterval, BulkWait: protocol timings (see peer.Config) [1s, 3s].
	AliveInterval time.Duration `yaml:"alive_interval"`
	BulkWait      time.Duration `yaml:"bulk_wait"`
}

// KernelConfig is the private side: the link to the local kernel's sync
// threads. Everything is optional.
type KernelConfig struct {
	Link       string `yaml:"link"`        // dummy interface name [plsync0]
	Group      string `yaml:"group"`       // private group [239.255.88.48]
	MasterPort int    `yaml:"master_port"` // [8850]
	BackupPort int    `yaml:"backup_port"` // [8950]
	// SyncMaxLen is the kernel master's SYNC_MAXLEN, at most 9000 [1472].
	SyncMaxLen   int    `yaml:"sync_maxlen"`
	InjectMaxLen int    `yaml:"inject_maxlen"` // [8972]
	InjectBurst  int    `yaml:"inject_burst"`  // datagrams per 10 ms [32]
	SyncSockSize int    `yaml:"sync_sock_size"`
	ProcConn     string `yaml:"proc_conn"` // [/proc/net/ip_vs_conn]
}

// LoadConfig reads and validates a YAML file. Unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(b, path)
}

// ParseConfig parses YAML (name is for errors), applies defaults and
// validates.
func ParseConfig(b []byte, name string) (Config, error) {
	return ParseConfigMode(b, name, "")
}

// ParseConfigMode is ParseConfig with peer.mode overridden by mode unless
// mode is empty (syncd run --compat).
func ParseConfigMode(b []byte, name, mode string) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", name, err)
	}
	if mode != "" {
		c.Peer.Mode = mode
	}
	c = c.WithDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", name, err)
	}
	return c, nil
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.NodeName == "" && c.NodeID > 0 {
		c.NodeName = fmt.Sprintf("d%d", c.NodeID)
	}
	if c.StatusListen == "" {
		c.StatusListen = DefaultStatusListen
	}
	p := &c.Peer
	if p.Mode == "" {
		p.Mode = ModeMulticast
	}
	p.Mode = strings.ToLower(p.Mode)
	if p.Port == 0 {
		p.Port = DefaultPort
	}
	if p.TTL == 0 {
		p.TTL = DefaultTTL
	}
	if p.Group == "" && p.Mode != ModeUnicast {
		p.Group = wire.DefaultGroup.String()
	}
	if p.MTU == 0 {
		p.MTU = peer.DefaultMTU
		if p.Mode == ModeCompat {
			p.MTU = wire.DefaultMaxLen
		}
	}
	k := &c.Kernel
	if k.SyncMaxLen == 0 {
		k.SyncMaxLen = DefaultKernelMaxLen
	}
	if k.InjectMaxLen == 0 {
		k.InjectMaxLen = DefaultInjectMaxLen
	}
	if k.InjectBurst == 0 {
		k.InjectBurst = DefaultInjectBurst
	}
	if k.SyncSockSize == 0 {
		k.SyncSockSize = DefaultSyncSockSize
	}
	if k.ProcConn == "" {
		k.ProcConn = "/proc/net/ip_vs_conn"
	}
	return c
}

// Validate reports every problem, each naming the field and the fix.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	p := c.Peer
	switch {
	case c.NodeID < 1 || c.NodeID > 65535:
		bad("node_id: %d is out of range; set it to a number from 1 to 65535, unique in the fleet", c.NodeID)
	case p.Mode == ModeCompat && c.NodeID >= CompatPseudoBase:
		bad("node_id: %d is reserved in compat mode for plain kernel senders; use a number below %d", c.NodeID, CompatPseudoBase)
	}
	if c.SyncID < 0 || c.SyncID > 255 {
		bad("syncid: %d is out of range; use 0..255 (0: accept every sync id)", c.SyncID)
	}
	if p.Mode != ModeCompat && c.KeyFile == "" {
		bad("key_file: missing; generate one with `syncd keygen > /etc/syncd/sync.key; chmod 600 /etc/syncd/sync.key` and set key_file to its path")
	}
	if ap, err := netip.ParseAddrPort(c.StatusListen); err != nil {
		bad("status_listen: %q is not address:port (%v); use e.g. %s", c.StatusListen, err, DefaultStatusListen)
	} else if !ap.Addr().IsLoopback() {
		bad("status_listen: %s is not a loopback address; the status endpoint is unauthenticated, use 127.0.0.1:PORT or [::1]:PORT", ap)
	}
	switch p.Mode {
	case ModeMulticast, ModeCompat:
		if p.Interface == "" {
			bad("peer.interface: missing; name the LAN interface that carries sync traffic (e.g. eth1)")
		}
		if g, err := netip.ParseAddr(p.Group); err != nil || !g.IsMulticast() {
			bad("peer.group: %q is not a multicast address; use one in 224.0.0.0/4 or ff00::/8 (e.g. 239.255.77.1)", p.Group)
		}
		if len(p.Peers) > 0 {
			bad("peer.peers: only used in unicast mode; remove it or set peer.mode: unicast")
		}
		if p.Listen != "" {
			if _, err := netip.ParseAddrPort(p.Listen); err != nil {
				bad("peer.listen: %q is not address:port (%v)", p.Listen, err)
			}
		}
	case ModeUnicast:
		if _, err := netip.ParseAddrPort(p.Listen); err != nil {
			bad("peer.listen: %q is not address:port (%v); in unicast mode set it to this node's sync address, e.g. 10.1.0.1:8848", p.Listen, err)
		}
		if len(p.Peers) == 0 {
			bad("peer.peers: empty; in unicast mode list the other nodes' address:port")
		}
		for i, s := range p.Peers {
			if _, err := netip.ParseAddrPort(s); err != nil {
				bad("peer.peers[%d]: %q is not address:port (%v)", i, s, err)
			}
		}
	default:
		bad("peer.mode: %q is unknown; use multicast, unicast or compat", p.Mode)
	}
	if p.Port < 1 || p.Port > 65535 {
		bad("peer.port: %d is out of range; use 1..65535 (default %d)", p.Port, DefaultPort)
	}
	if p.TTL < 1 || p.TTL > 255 {
		bad("peer.ttl: %d is out of range; use 1..255", p.TTL)
	}
	if p.Mode == ModeCompat {
		if p.MTU < wire.HeaderLenV1+wire.EntryLenV6+64 || p.MTU > wire.MaxMessageLen-28 {
			bad("peer.mtu: %d is out of range for kernel datagrams; use 200..65507 (default %d)", p.MTU, wire.DefaultMaxLen)
		}
	} else if p.MTU < peer.MinMTU || p.MTU > peer.MaxMTU {
		bad("peer.mtu: %d is out of range; use %d..%d (default %d)", p.MTU, peer.MinMTU, peer.MaxMTU, peer.DefaultMTU)
	}
	if p.RecvBuffer < 0 {
		bad("peer.recv_buffer: %d is negative; use bytes, 0 for the default", p.RecvBuffer)
	}
	if p.BulkRate < 0 {
		bad("peer.bulk_rate: %d is negative; use entries per second, 0 for the default", p.BulkRate)
	}
	if p.AliveInterval < 0 || p.BulkWait < 0 {
		bad("peer.alive_interval/bulk_wait: negative; use a duration such as 1s, or leave them out")
	}
	k := c.Kernel
	if k.Group != "" {
		if g, err := netip.ParseAddr(k.Group); err != nil || !g.Is4() || !g.IsMulticast() {
			bad("kernel.group: %q is not an IPv4 multicast address; leave it out for %s", k.Group, synclink.DefaultGroup)
		}
	}
	if k.MasterPort < 0 || k.MasterPort > 65535 || k.BackupPort < 0 || k.BackupPort > 65535 {
		bad("kernel.master_port/backup_port: out of range; leave them out for %d/%d", synclink.DefaultMasterPort, synclink.DefaultBackupPort)
	}
	if k.SyncMaxLen < 512 || k.SyncMaxLen > 9000 {
		bad("kernel.sync_maxlen: %d is out of range; use 512..9000 (default %d)", k.SyncMaxLen, DefaultKernelMaxLen)
	}
	if k.InjectMaxLen < 512 || k.InjectMaxLen > synclink.MaxFrame {
		bad("kernel.inject_maxlen: %d is out of range; use 512..%d (default %d)", k.InjectMaxLen, synclink.MaxFrame, DefaultInjectMaxLen)
	}
	if k.InjectBurst < 1 {
		bad("kernel.inject_burst: %d; use at least 1 datagram per 10 ms (default %d)", k.InjectBurst, DefaultInjectBurst)
	}
	if k.SyncSockSize < 0 {
		bad("kernel.sync_sock_size: %d is negative; use bytes, or leave it out", k.SyncSockSize)
	}
	for id := range c.Nodes {
		if id < 1 || id > 65535 {
			bad("nodes: id %d is out of range 1..65535", id)
		}
	}
	return errors.Join(errs...)
}

// linkConfig is the private link's configuration.
func (c Config) linkConfig() synclink.LinkConfig {
	lc := synclink.LinkConfig{Name: c.Kernel.Link, MasterPort: uint16(c.Kernel.MasterPort), BackupPort: uint16(c.Kernel.BackupPort)}
	if g, err := netip.ParseAddr(c.Kernel.Group); err == nil {
		lc.Group = g
	}
	return lc.WithDefaults()
}
