package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/peerlvs/peerlvs/filter"
	"github.com/peerlvs/peerlvs/saru/allocate"
	"github.com/peerlvs/peerlvs/saru/controller"
	"github.com/peerlvs/peerlvs/saru/fitness"
	"github.com/peerlvs/peerlvs/saru/member"
	"github.com/peerlvs/peerlvs/saru/services"
	"go.yaml.in/yaml/v3"
)

// fileConfig is saru.yaml as written; see deploy/saru/saru.yaml.
type fileConfig struct {
	Node              string   `yaml:"node"`
	BindAddr          string   `yaml:"bind_addr"`
	BindPort          int      `yaml:"bind_port"`
	AdvertiseAddr     string   `yaml:"advertise_addr"`
	Seeds             []string `yaml:"seeds"`
	GossipKeyFile     string   `yaml:"gossip_key_file"`
	Weight            *uint32  `yaml:"weight"`
	Buckets           uint32   `yaml:"buckets"`
	Seed              uint32   `yaml:"seed"`
	Sense             string   `yaml:"sense"`
	VIPs              []string `yaml:"vips"`
	RealServerSubnets []string `yaml:"real_server_subnets"`
	Table             string   `yaml:"table"`
	FilterMark        uint32   `yaml:"filter_mark"`
	Quorum            *int     `yaml:"quorum"`
	FailureDetection  string   `yaml:"failure_detection"`
	LivenessLease     string   `yaml:"liveness_lease"`
	ReadinessGrace    string   `yaml:"readiness_grace"`
	SyncdStatus       string   `yaml:"syncd_status"`
	HandoverStep      string   `yaml:"handover_step"`
	HandoverHold      string   `yaml:"handover_hold"`
	SettleTime        string   `yaml:"settle_time"`
	StatusListen      string   `yaml:"status_listen"`
	CheckVerdicts     string   `yaml:"check_verdicts"`

	Services []services.FileService `yaml:"services"`
	Fitness  fitness.FileConfig     `yaml:"fitness"`
}

// config is fileConfig checked and converted.
type config struct {
	Node              string
	BindAddr          string
	BindPort          int
	AdvertiseAddr     string
	Seeds             []string
	GossipKeyFile     string
	Weight            uint32
	Buckets           uint32
	Seed              uint32
	Sense             filter.Sense
	VIPs              []netip.Addr
	RealServerSubnets []netip.Prefix
	Table             string
	FilterMark        uint32
	Quorum            int
	FailureDetection  time.Duration
	LivenessLease     time.Duration // 0: none
	ReadinessGrace    time.Duration
	SyncdStatus       string // syncd's status endpoint, ip:port; "" = grace time only
	HandoverStep      time.Duration
	HandoverHold      time.Duration
	SettleTime        time.Duration
	StatusListen      string
	// LocalVerdicts applies this director's own check verdicts only.
	LocalVerdicts bool
	Services      []services.Service
	Fitness       fitness.Config
}

const (
	defaultStatusListen = "127.0.0.1:9475"
	defaultBindPort     = 7946
)

func (c config) settings() member.Settings {
	return member.Settings{Allocator: allocate.Version, Buckets: c.Buckets, Seed: c.Seed, Sense: c.Sense.String(), VIPs: c.VIPs,
		Services: services.Fingerprint(c.Services), Timing: c.timing()}
}

// timing is what the lease rule assumes every director shares.
func (c config) timing() member.Timing {
	t := member.Timing{FailureDetection: c.FailureDetection, Lease: c.LivenessLease, Quorum: c.Quorum}
	if t.Lease == 0 {
		t.Lease = member.LeaseOff
	}
	return t
}

func (c config) filterConfig() filter.Config {
	return filter.Config{Table: c.Table, VIPs: c.VIPs, Sense: c.Sense, Seed: c.Seed, Buckets: c.Buckets,
		RealServerSubnets: c.RealServerSubnets, Mark: c.FilterMark, Lease: c.LivenessLease, Settle: c.SettleTime}
}

func loadConfig(path string) (config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return config{}, fmt.Errorf("config: %w", err)
	}
	c, err := parseConfig(data)
	if err != nil {
		return config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// parseConfig checks every field and reports all problems at once, each
// naming the field and what to write instead.
func parseConfig(data []byte) (config, error) {
	var f fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return config{}, fmt.Errorf("parse YAML (check field names and indentation): %w", err)
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	c := config{Node: f.Node, BindAddr: f.BindAddr, BindPort: f.BindPort, AdvertiseAddr: f.AdvertiseAddr,
		Seeds: f.Seeds, GossipKeyFile: f.GossipKeyFile, Buckets: f.Buckets, Seed: f.Seed, Table: f.Table, FilterMark: f.FilterMark,
		StatusListen: f.StatusListen}
	if c.Node == "" {
		bad("node", "missing; set it to this director's unique name, e.g. its hostname")
	}
	if c.BindAddr == "" {
		c.BindAddr = "0.0.0.0"
	} else if _, err := netip.ParseAddr(c.BindAddr); err != nil {
		bad("bind_addr", "%q is not an IP address; use the address of the gossip network, e.g. 10.0.0.1", c.BindAddr)
	}
	if c.BindPort == 0 {
		c.BindPort = defaultBindPort
	} else if c.BindPort < 1 || c.BindPort > 65535 {
		bad("bind_port", "%d out of range; use 1..65535 (default %d)", c.BindPort, defaultBindPort)
	}
	for i, s := range c.Seeds {
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" {
			bad(fmt.Sprintf("seeds[%d]", i), "%q must be host:port, e.g. 10.0.0.2:%d", s, defaultBindPort)
			continue
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			bad(fmt.Sprintf("seeds[%d]", i), "port %q out of range 1..65535", port)
		}
	}
	if f.Weight == nil {
		c.Weight = 1
	} else {
		c.Weight = *f.Weight
	}
	switch {
	case f.Quorum == nil:
		c.Quorum = 1
	case *f.Quorum < 1 || (len(c.Seeds) > 0 && *f.Quorum > len(c.Seeds)+1):
		bad("quorum", "%d out of range; use 1 (no quorum) up to the fleet size, e.g. 2 for three directors", *f.Quorum)
	default:
		c.Quorum = *f.Quorum
	}
	if c.Buckets == 0 || c.Buckets > allocate.MaxBuckets {
		bad("buckets", "%d out of range; use 1..%d, the same on every director (e.g. 4096)", c.Buckets, allocate.MaxBuckets)
	}
	if c.Seed == 0 {
		bad("seed", "missing or 0; set a non-zero number shared by every director (the kernel's jhash needs a fixed seed)")
	}
	if f.Sense == "" {
		bad("sense", "missing; use port, addr or addrport (the same on every director)")
	} else if s, err := filter.ParseSense(f.Sense); err != nil {
		bad("sense", "%q unknown; use port, addr or addrport", f.Sense)
	} else {
		c.Sense = s
	}
	if len(f.VIPs) == 0 {
		bad("vips", "empty; list the virtual addresses whose traffic saru splits")
	}
	for i, v := range f.VIPs {
		a, err := netip.ParseAddr(v)
		if err != nil {
			bad(fmt.Sprintf("vips[%d]", i), "%q is not an IP address", v)
			continue
		}
		c.VIPs = append(c.VIPs, a)
	}
	for i, s := range f.RealServerSubnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			bad(fmt.Sprintf("real_server_subnets[%d]", i), "%q is not a prefix; write it like 10.1.0.0/24", s)
			continue
		}
		c.RealServerSubnets = append(c.RealServerSubnets, p)
	}
	dur := func(field, s string, def time.Duration) time.Duration {
		if s == "" {
			return def
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			bad(field, "%q is not a duration; write it like 30s or 1m", s)
		}
		return d
	}
	c.ReadinessGrace = dur("readiness_grace", f.ReadinessGrace, 30*time.Second)
	if f.SyncdStatus != "" {
		if _, err := netip.ParseAddrPort(f.SyncdStatus); err != nil {
			bad("syncd_status", "%q must be ip:port of syncd's status endpoint, e.g. 127.0.0.1:9476", f.SyncdStatus)
		}
		c.SyncdStatus = f.SyncdStatus
	}
	c.FailureDetection = dur("failure_detection", f.FailureDetection, member.DefaultFailureDetection)
	if c.FailureDetection < 500*time.Millisecond || c.FailureDetection > 30*time.Second {
		bad("failure_detection", "%v out of range; use 500ms..30s (default %v)", c.FailureDetection, member.DefaultFailureDetection)
	}
	// The lease must run out before the fleet can declare this director
	// dead; a fifth of that is left for renewals that come late.
	dead := member.SilentDeadAfter(c.FailureDetection)
	defaultLease := (dead * 4 / 5).Truncate(time.Millisecond)
	switch f.LivenessLease {
	case "off", "0":
	case "":
		c.LivenessLease = defaultLease
	default:
		c.LivenessLease = dur("liveness_lease", f.LivenessLease, 0)
		if c.LivenessLease >= dead {
			bad("liveness_lease", "%v is not below %v, the least time in which the fleet can declare a silent director dead with failure_detection %v: a stalled director would still accept flows its peers have taken over; leave it unset (%v) or use off",
				c.LivenessLease, dead, c.FailureDetection, defaultLease)
		}
	}
	c.HandoverStep = dur("handover_step", f.HandoverStep, controller.DefaultHandoverStep)
	c.HandoverHold = dur("handover_hold", f.HandoverHold, 5*time.Second)
	c.SettleTime = dur("settle_time", f.SettleTime, filter.DefaultSettle)
	if c.SettleTime < filter.MinSettle || c.SettleTime > filter.MaxSettle || c.SettleTime%time.Millisecond != 0 {
		bad("settle_time", "%v out of range; use %v..%v in whole milliseconds (default %v)", c.SettleTime, filter.MinSettle, filter.MaxSettle, filter.DefaultSettle)
	}
	if c.StatusListen == "" {
		c.StatusListen = defaultStatusListen
	} else if ap, err := netip.ParseAddrPort(c.StatusListen); err != nil {
		bad("status_listen", "%q must be ip:port, e.g. %s", c.StatusListen, defaultStatusListen)
	} else if !ap.Addr().IsLoopback() {
		bad("status_listen", "%s is not a loopback address; the endpoint can drain the director without authentication, so use 127.0.0.1 or [::1]", c.StatusListen)
	}
	switch f.CheckVerdicts {
	case "", "fleet":
	case "local":
		c.LocalVerdicts = true
	default:
		bad("check_verdicts", "%q unknown; use fleet (the ready directors decide together, the default) or local (this director's own checks only, as keepalived does)", f.CheckVerdicts)
	}
	fit, err := fitness.Parse(f.Fitness)
	if err != nil {
		errs = append(errs, err)
	}
	c.Fitness = fit
	svcs, err := services.Parse(f.Services)
	if err != nil {
		errs = append(errs, err)
	}
	c.Services = svcs
	for i, s := range svcs {
		if s.Virtual.FWMark == 0 && !slices.Contains(c.VIPs, s.Virtual.Address) {
			bad(fmt.Sprintf("services[%d].address", i), "%s is not among vips: every director would accept its flows, unsplit; add it to vips", s.Virtual.Address)
		}
		if err := services.PersistenceKept(s.Virtual, c.Sense); err != nil {
			bad(fmt.Sprintf("services[%d]", i), "%v", err)
		}
	}
	if len(errs) == 0 {
		// Let filter apply its own rules too, so `saru run` fails here and
		// not after joining the fleet.
		if _, err := filter.New(c.filterConfig()); err != nil {
			errs = append(errs, err)
		}
	}
	return c, errors.Join(errs...)
}
