package ipvs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Sysctls under net.ipv4.vs that matter to sync. They are per network
// namespace; the Handle methods read and write those of the handle's
// namespace.
const (
	SysctlSyncVersion       = "sync_version"        // 1: v1 wire format (0: v0)
	SysctlSyncThreshold     = "sync_threshold"      // two integers: "3 50"
	SysctlSyncRefreshPeriod = "sync_refresh_period" // seconds
	SysctlSyncRetries       = "sync_retries"
	SysctlSyncQlenMax       = "sync_qlen_max"
	SysctlSyncPorts         = "sync_ports" // threads per daemon, on consecutive ports
	SysctlSyncPersistMode   = "sync_persist_mode"
	SysctlSyncSockSize      = "sync_sock_size"
	// SysctlBackupOnly must stay 0 for active-active: 1 turns forwarding
	// off while a backup thread runs.
	SysctlBackupOnly = "backup_only"
)

// sysctlDir is where the net.ipv4.vs sysctls live. It only exists while
// ip_vs is loaded, and shows the namespace of the thread that opens it.
const sysctlDir = "/proc/sys/net/ipv4/vs"

// sysctlPath accepts "sync_version" or "net.ipv4.vs.sync_version" and
// refuses anything that could leave net.ipv4.vs.
func sysctlPath(name string) (string, error) {
	short := strings.TrimPrefix(name, "net.ipv4.vs.")
	if short == "" {
		return "", fmt.Errorf("sysctl %q: empty name", name)
	}
	for _, r := range short {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
			return "", fmt.Errorf("sysctl %q: not a net.ipv4.vs name", name)
		}
	}
	return filepath.Join(sysctlDir, short), nil
}

// Sysctl reads net.ipv4.vs.<name> in the handle's namespace, without the
// trailing newline (multi-value sysctls such as sync_threshold keep their
// tab separators). For a handle on another namespace this enters it on a
// private thread, which needs CAP_SYS_ADMIN.
func (h *Handle) Sysctl(name string) (string, error) {
	p, err := sysctlPath(name)
	if err != nil {
		return "", err
	}
	var b []byte
	err = h.inNetNS(func() error {
		var err error
		b, err = os.ReadFile(p)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read sysctl net.ipv4.vs.%s in %s: %w", filepath.Base(p), h.where(), h.sysctlErr(err))
	}
	return strings.TrimRight(string(b), "\n"), nil
}

// SetSysctl writes net.ipv4.vs.<name> in the handle's namespace. The kernel
// refuses (EINVAL) values out of its range.
func (h *Handle) SetSysctl(name, value string) error {
	p, err := sysctlPath(name)
	if err != nil {
		return err
	}
	err = h.inNetNS(func() error {
		// One write: a proc handler parses each write(2) on its own.
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, werr := f.WriteString(value + "\n")
		cerr := f.Close()
		return errors.Join(werr, cerr)
	})
	if err != nil {
		return fmt.Errorf("set sysctl net.ipv4.vs.%s=%q in %s: %w", filepath.Base(p), value, h.where(), h.sysctlErr(err))
	}
	return nil
}

// SysctlInt reads a single-integer sysctl.
func (h *Handle) SysctlInt(name string) (int, error) {
	s, err := h.Sysctl(name)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("read sysctl net.ipv4.vs.%s in %s: not one integer: %q", strings.TrimPrefix(name, "net.ipv4.vs."), h.where(), s)
	}
	return v, nil
}

// SetSysctlInt writes a single-integer sysctl.
func (h *Handle) SetSysctlInt(name string, value int) error {
	return h.SetSysctl(name, strconv.Itoa(value))
}

// sysctlErr tells a missing IPVS from a missing sysctl: the directory goes
// with the module.
func (h *Handle) sysctlErr(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		var dirErr error
		_ = h.inNetNS(func() error {
			_, dirErr = os.Stat(sysctlDir)
			return nil
		})
		if errors.Is(dirErr, os.ErrNotExist) {
			return withSentinel(ErrNoIPVS, err)
		}
		return fmt.Errorf("no such sysctl in this kernel: %w", err)
	}
	return mapCommon(err)
}
