// Package lab boots a real Linux kernel with IPVS under qemu and runs test
// scenarios inside it, because the development machines' own kernel has no
// IPVS and every PeerLVS claim must hold on a real kernel.
//
// A scenario is an ordinary Go test that calls Run. On the host, Run builds
// the package's test binary and the project's commands as static binaries,
// packs them into an initramfs next to a cached Debian kernel, boots qemu and
// runs the same test inside the guest. Inside the guest, Run executes the
// guest function, which builds its topology out of network namespaces, drives
// traffic, and returns a JSON-serialisable result. The result comes back to
// the host over a 9p share, and the test asserts on it there. qemu's exit
// status carries the guest's verdict through isa-debug-exit, so a guest that
// crashes or hangs never passes.
//
// The package is test infrastructure: it must never be imported by the
// product (cmd/, syncd/, saru/, ipvs/, filter/).
package lab

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Environment variables shared by the host and the guest halves.
const (
	envGuest  = "PEERLVS_LAB_GUEST"  // "1" inside the guest
	envResult = "PEERLVS_LAB_RESULT" // where the guest writes its result
	envAccel  = "PEERLVS_LAB_ACCEL"  // force "tcg" or "kvm" on the host
	envSkip   = "PEERLVS_LAB_SKIP"   // "1": skip lab tests (refused under CI)
	envLive   = "PEERLVS_LAB_LIVE"   // "1": show the guest's "live:" lines while it runs
)

// InGuest reports whether this process runs inside the lab guest.
func InGuest() bool { return os.Getenv(envGuest) == "1" }

// Options tune one boot. The zero value is fine for most scenarios.
type Options struct {
	// Timeout bounds the whole boot; qemu is killed after it. Default 5 min.
	Timeout time.Duration
	// MemoryMB is the guest's memory. Default 768.
	MemoryMB int
	// CPUs is the number of guest CPUs. Default 2.
	CPUs int
}

// Run runs guest inside the lab kernel and returns its result on the host.
//
// Inside the guest it calls guest directly and hands the result back to the
// host, so code after Run sees the same value in both places; assertions on
// the result therefore run in the guest too, which is harmless and makes a
// failure visible in the guest log as well.
func Run[R any](t *testing.T, opts Options, guest func(t *testing.T, g *Guest) R) R {
	t.Helper()
	if InGuest() {
		g := newGuest(t)
		res := guest(t, g)
		g.cleanup()
		if err := writeResult(res); err != nil {
			t.Fatalf("lab: hand the result to the host: %v", err)
		}
		return res
	}
	var res R
	raw := boot(t, opts)
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("lab: decode the guest's result: %v\n%s", err, raw)
	}
	return res
}

func writeResult(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	path := os.Getenv(envResult)
	if path == "" {
		return fmt.Errorf("%s is not set", envResult)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// skipUnlessPossible skips the test, with the reason and the fix, when the lab
// cannot run here; under CI=true it fails instead, so CI never passes a lab
// test that did not run.
func skipUnlessPossible(t *testing.T) {
	t.Helper()
	reason := ""
	switch {
	case os.Getenv(envSkip) == "1":
		reason = envSkip + "=1 is set"
	case os.Geteuid() != 0:
		reason = "the lab needs root to install its packages (run as root, or run `make test` with sudo)"
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("lab: cannot run under CI: %s", reason)
	}
	t.Skipf("lab: skipped: %s", reason)
}

// repoRoot finds the module root by walking up from the working directory,
// which `go test` sets to the package directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the repository root: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/peerlvs/peerlvs") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of github.com/peerlvs/peerlvs above the working directory")
		}
		dir = parent
	}
}
