package fitness

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// FileConfig is the fitness: section of saru.yaml as written.
type FileConfig struct {
	Interfaces      []string `yaml:"interfaces"`
	PingNodes       []string `yaml:"ping_nodes"`
	PingNeed        *int     `yaml:"ping_need"`
	PingInterval    string   `yaml:"ping_interval"`
	PingTimeout     string   `yaml:"ping_timeout"`
	PingFall        int      `yaml:"ping_fall"`
	PingRise        int      `yaml:"ping_rise"`
	Command         []string `yaml:"command"`
	CommandInterval string   `yaml:"command_interval"`
	CommandTimeout  string   `yaml:"command_timeout"`
	Hold            string   `yaml:"hold"`
}

// Config is FileConfig checked.
type Config struct {
	Interfaces      []string
	PingNodes       []netip.Addr
	PingNeed        int
	PingInterval    time.Duration
	PingTimeout     time.Duration
	PingFall        int
	PingRise        int
	Command         []string
	CommandInterval time.Duration
	CommandTimeout  time.Duration
	Hold            time.Duration
}

// Defaults of the timings.
const (
	DefaultPingInterval    = time.Second
	DefaultPingTimeout     = 500 * time.Millisecond
	DefaultPingFall        = 3
	DefaultPingRise        = 2
	DefaultCommandInterval = 5 * time.Second
	DefaultCommandTimeout  = 3 * time.Second
	DefaultHold            = 10 * time.Second
)

// Empty reports whether nothing is tracked: the director is always fit.
func (c Config) Empty() bool {
	return len(c.Interfaces) == 0 && len(c.PingNodes) == 0 && len(c.Command) == 0
}

// Parse checks f and names every problem with its field.
func Parse(f FileConfig) (Config, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("fitness.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	dur := func(field, s string, def time.Duration) time.Duration {
		if s == "" {
			return def
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			bad(field, "%q is not a positive duration; write it like 1s or 500ms", s)
			return def
		}
		return d
	}
	c := Config{Interfaces: f.Interfaces, Command: f.Command, PingFall: f.PingFall, PingRise: f.PingRise}
	seen := map[string]bool{}
	for i, name := range f.Interfaces {
		if name == "" || len(name) > 15 {
			bad(fmt.Sprintf("interfaces[%d]", i), "%q is not an interface name (1..15 characters)", name)
		}
		if seen[name] {
			bad(fmt.Sprintf("interfaces[%d]", i), "%s is listed twice", name)
		}
		seen[name] = true
	}
	for i, s := range f.PingNodes {
		a, err := netip.ParseAddr(s)
		if err != nil {
			bad(fmt.Sprintf("ping_nodes[%d]", i), "%q is not an IP address (e.g. the front router's)", s)
			continue
		}
		c.PingNodes = append(c.PingNodes, a)
	}
	c.PingNeed = 1
	if f.PingNeed != nil {
		c.PingNeed = *f.PingNeed
	}
	if len(f.PingNodes) > 0 && (c.PingNeed < 1 || c.PingNeed > len(f.PingNodes)) {
		bad("ping_need", "%d out of range; use 1..%d (the number of ping nodes)", c.PingNeed, len(f.PingNodes))
	}
	if len(f.PingNodes) == 0 && f.PingNeed != nil {
		bad("ping_need", "set without ping_nodes")
	}
	c.PingInterval = dur("ping_interval", f.PingInterval, DefaultPingInterval)
	c.PingTimeout = dur("ping_timeout", f.PingTimeout, DefaultPingTimeout)
	if c.PingTimeout > c.PingInterval {
		bad("ping_timeout", "%v is longer than ping_interval %v", c.PingTimeout, c.PingInterval)
	}
	if c.PingFall == 0 {
		c.PingFall = DefaultPingFall
	}
	if c.PingRise == 0 {
		c.PingRise = DefaultPingRise
	}
	if c.PingFall < 1 || c.PingFall > 100 || c.PingRise < 1 || c.PingRise > 100 {
		bad("ping_fall", "ping_fall %d and ping_rise %d must be 1..100", c.PingFall, c.PingRise)
	}
	if len(f.Command) > 0 && f.Command[0] == "" {
		bad("command", "the program is empty")
	}
	c.CommandInterval = dur("command_interval", f.CommandInterval, DefaultCommandInterval)
	c.CommandTimeout = dur("command_timeout", f.CommandTimeout, DefaultCommandTimeout)
	if c.CommandTimeout > c.CommandInterval {
		bad("command_timeout", "%v is longer than command_interval %v", c.CommandTimeout, c.CommandInterval)
	}
	c.Hold = dur("hold", f.Hold, DefaultHold)
	return c, errors.Join(errs...)
}
