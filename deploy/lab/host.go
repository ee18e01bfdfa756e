package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// host holds what every boot of one test process shares: the prepared kernel,
// the project's binaries and the package's test binary. Building them once
// per process is what keeps a suite of scenarios fast; the state is
// package-level only because testing offers no per-process fixture.
type host struct {
	root      string // repository root
	cache     string // <root>/.cache/lab
	kernelDir string // cached kernel: vmlinuz, base.cpio, version
	kernelVer string
	payload   string // cpio with the project's binaries and the test binary
	accel     string // "tcg" or "kvm"
}

var (
	hostOnce sync.Once
	hostVal  *host
	hostErr  error
)

func prepareHost(t *testing.T) *host {
	t.Helper()
	hostOnce.Do(func() { hostVal, hostErr = newHost() })
	if hostErr != nil {
		t.Fatalf("lab: prepare: %v", hostErr)
	}
	return hostVal
}

func newHost() (*host, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	h := &host{root: root, cache: filepath.Join(root, ".cache", "lab")}
	start := time.Now()
	out, err := command(context.Background(), root, nil, filepath.Join(root, "deploy/lab/setup.sh"), h.cache)
	if err != nil {
		return nil, fmt.Errorf("deploy/lab/setup.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	h.kernelDir = lines[len(lines)-1]
	ver, err := os.ReadFile(filepath.Join(h.kernelDir, "version"))
	if err != nil {
		return nil, fmt.Errorf("read the cached kernel's version: %w", err)
	}
	h.kernelVer = strings.TrimSpace(string(ver))
	if err := h.buildPayload(); err != nil {
		return nil, err
	}
	if h.accel, err = h.chooseAccel(); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "lab: kernel %s, accel %s, prepared in %s\n", h.kernelVer, h.accel, time.Since(start).Round(time.Millisecond))
	return h, nil
}

// buildPayload builds the project's commands and the current package's test
// binary as static executables and packs them into one cpio archive.
func (h *host) buildPayload() error {
	pkgDir, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	removeStaleBuilds(filepath.Join(h.cache, "build"))
	work := filepath.Join(h.cache, "build", fmt.Sprintf("%d", os.Getpid()))
	binDir := filepath.Join(work, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return fmt.Errorf("create build directory: %w", err)
	}
	env := []string{"CGO_ENABLED=0"}
	ctx := context.Background()
	mains, err := command(ctx, h.root, env, "go", "list", "-e", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`, "./cmd/...", "./deploy/lab/cmd/...")
	if err != nil {
		return fmt.Errorf("list the project's commands: %w", err)
	}
	if pkgs := strings.Fields(string(mains)); len(pkgs) > 0 {
		args := append([]string{"build", "-trimpath", "-o", binDir + "/"}, pkgs...)
		if _, err := command(ctx, h.root, env, "go", args...); err != nil {
			return fmt.Errorf("build the project's commands for the guest: %w", err)
		}
	}
	testBin := filepath.Join(work, "scenario.test")
	if _, err := command(ctx, pkgDir, env, "go", "test", "-c", "-trimpath", "-o", testBin, "."); err != nil {
		return fmt.Errorf("build the scenario test binary of %s: %w", pkgDir, err)
	}
	h.payload = filepath.Join(work, "payload.cpio")
	f, err := os.Create(h.payload)
	if err != nil {
		return fmt.Errorf("create payload archive: %w", err)
	}
	defer f.Close()
	c := newCPIO(f)
	c.addDir("usr/local/bin", binDir)
	c.addFile("lab/scenario.test", testBin, 0o755)
	if err := c.close(); err != nil {
		return fmt.Errorf("write payload archive: %w", err)
	}
	return f.Close()
}

// removeStaleBuilds deletes the build directories of test processes that
// are gone; each holds tens of megabytes of binaries.
func removeStaleBuilds(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// chooseAccel uses KVM only where it has been seen to boot the lab kernel:
// on some machines /dev/kvm exists but qemu aborts or the guest hangs.
func (h *host) chooseAccel() (string, error) {
	if a := os.Getenv(envAccel); a != "" {
		if a != "tcg" && a != "kvm" {
			return "", fmt.Errorf("%s=%q: want tcg or kvm", envAccel, a)
		}
		return a, nil
	}
	cached := filepath.Join(h.cache, "accel-"+h.kernelVer)
	if b, err := os.ReadFile(cached); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	accel := "tcg"
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		dir, err := os.MkdirTemp(h.cache, "kvm-probe-")
		if err != nil {
			return "", fmt.Errorf("kvm probe: %w", err)
		}
		defer os.RemoveAll(dir)
		res := h.qemu(dir, "kvm", "exit 0\n", Options{Timeout: 30 * time.Second})
		if res.err == nil && res.guestCode == 0 {
			accel = "kvm"
		}
	}
	if err := os.WriteFile(cached, []byte(accel+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("remember the accelerator: %w", err)
	}
	return accel, nil
}

type bootResult struct {
	guestCode int // the scenario's exit code; -1 when the guest did not report one
	elapsed   time.Duration
	err       error // qemu could not run, timed out, or the guest died
}

// qemu boots the cached kernel with the payload plus a run script in dir and
// waits for it, never longer than opts.Timeout.
func (h *host) qemu(dir, accel, script string, opts Options) bootResult {
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.MemoryMB == 0 {
		opts.MemoryMB = 768
	}
	if opts.CPUs == 0 {
		opts.CPUs = 2
	}
	share := filepath.Join(dir, "share")
	if err := os.MkdirAll(share, 0o755); err != nil {
		return bootResult{guestCode: -1, err: fmt.Errorf("create share: %w", err)}
	}
	initrd := filepath.Join(dir, "initrd")
	if err := h.writeInitrd(initrd, script); err != nil {
		return bootResult{guestCode: -1, err: err}
	}
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	args := []string{
		"-accel", accel, "-cpu", cpu,
		"-m", fmt.Sprint(opts.MemoryMB), "-smp", fmt.Sprint(opts.CPUs),
		"-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", filepath.Join(h.kernelDir, "vmlinuz"),
		"-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1 oops=panic no_timer_check",
		"-serial", "file:" + filepath.Join(dir, "console.log"),
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
		"-virtfs", "local,path=" + share + ",mount_tag=host0,security_model=none,id=host0",
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	start := time.Now()
	err := cmd.Run()
	res := bootResult{guestCode: -1, elapsed: time.Since(start)}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		res.err = fmt.Errorf("qemu killed after %s: the guest hung (raise lab.Options.Timeout if the scenario is just slow)", opts.Timeout)
	case err == nil:
		res.err = errors.New("qemu exited 0: the guest died before reporting a verdict (kernel panic or init crash)")
	case errors.As(err, &exitErr) && exitErr.ExitCode()%2 == 1:
		res.guestCode = exitErr.ExitCode() >> 1
	default:
		res.err = fmt.Errorf("qemu: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return res
}

func (h *host) writeInitrd(path, script string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create initrd: %w", err)
	}
	defer f.Close()
	for _, part := range []string{filepath.Join(h.kernelDir, "base.cpio"), h.payload} {
		b, err := os.ReadFile(part)
		if err != nil {
			return fmt.Errorf("read %s: %w", part, err)
		}
		if _, err := f.Write(b); err != nil {
			return fmt.Errorf("write initrd: %w", err)
		}
	}
	c := newCPIO(f)
	c.addBytes("lab/run", 0o755, []byte(script))
	if err := c.close(); err != nil {
		return fmt.Errorf("write initrd: %w", err)
	}
	return f.Close()
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// runPattern selects exactly this test, subtests included, for -test.run.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// boot runs the calling test inside the guest and returns its raw result.
func boot(t *testing.T, opts Options) []byte {
	t.Helper()
	skipUnlessPossible(t)
	h := prepareHost(t)
	dir := filepath.Join(h.cache, "runs", unsafeName.ReplaceAllString(t.Name(), "_"))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatalf("lab: clean %s: %v", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("lab: %v", err)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	// The guest's test timeout is shorter than the host's so that a stuck
	// scenario dumps its goroutines instead of being killed silently.
	guestTimeout := timeout - 30*time.Second
	if guestTimeout < 30*time.Second {
		guestTimeout = timeout
	}
	// The guest half sees the same CI and PEERLVS_* settings as the host.
	var env strings.Builder
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if (k == "CI" || strings.HasPrefix(k, "PEERLVS_")) && k != envGuest && k != envResult {
			fmt.Fprintf(&env, "export %s=%q\n", k, v)
		}
	}
	// The heartbeat tells a frozen guest (its lines stop) from a stuck
	// scenario (they go on, and the test timeout dumps the goroutines).
	script := fmt.Sprintf(`set -o pipefail
export %s=1 %s=/mnt/host/result.json
%scd /tmp
(while sleep 60; do echo "lab: guest alive, load $(cut -d' ' -f1-3 /proc/loadavg)"; done) &
/lab/scenario.test -test.run '%s' -test.v -test.count=1 -test.timeout=%s 2>&1 | tee /mnt/host/guest.out
`, envGuest, envResult, env.String(), runPattern(t.Name()), guestTimeout)
	stopLive := showLive(filepath.Join(dir, "console.log"))
	res := h.qemu(dir, h.accel, script, opts)
	stopLive()
	console, _ := os.ReadFile(filepath.Join(dir, "console.log"))
	if res.err != nil && !bytes.Contains(console, []byte("lab: guest kernel")) {
		// The guest died before init ran: an emulation hiccup on a loaded
		// host (a failed timer check, say), not the scenario. Boot once more.
		t.Logf("lab: the guest died during boot (%v); booting again\n%s", res.err, tail(console, 20))
		res = h.qemu(dir, h.accel, script, opts)
		console, _ = os.ReadFile(filepath.Join(dir, "console.log"))
	}
	guestKernel := "unknown"
	if m := regexp.MustCompile(`lab: guest kernel (\S+)`).FindSubmatch(console); m != nil {
		guestKernel = string(m[1])
	}
	t.Logf("lab: %s ran on guest kernel %s (%s) in %s; logs in %s", t.Name(), guestKernel, h.accel, res.elapsed.Round(100*time.Millisecond), dir)
	if res.err != nil || res.guestCode != 0 {
		why := fmt.Sprint(res.err)
		if res.err == nil {
			why = fmt.Sprintf("the scenario failed in the guest (exit code %d)", res.guestCode)
		}
		t.Fatalf("lab: %s\n--- what the scenario reported ---\n%s\n--- guest console (%s) ---\n%s", why, reported(console, 60), filepath.Join(dir, "console.log"), tail(console, 200))
	}
	raw, err := os.ReadFile(filepath.Join(dir, "share", "result.json"))
	if err != nil {
		t.Fatalf("lab: the guest passed but left no result: %v\n--- guest console ---\n%s", err, tail(console, 80))
	}
	return raw
}

// showLive copies the guest's "live:" lines to standard error while the
// guest runs, when PEERLVS_LAB_LIVE=1 (make demo): a person watching sees the
// events as they happen instead of a table at the end. It returns a function
// that stops it after a last read.
func showLive(console string) (stop func()) {
	if os.Getenv(envLive) != "1" {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var off int64
		var partial string
		read := func() {
			f, err := os.Open(console)
			if err != nil {
				return
			}
			defer f.Close()
			if _, err := f.Seek(off, io.SeekStart); err != nil {
				return
			}
			b, _ := io.ReadAll(f)
			off += int64(len(b))
			lines := strings.Split(partial+string(b), "\n")
			partial = lines[len(lines)-1]
			for _, l := range lines[:len(lines)-1] {
				if i := strings.Index(l, "live: "); i >= 0 {
					fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), strings.TrimRight(l[i+len("live: "):], "\r"))
				}
			}
		}
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				read()
				return
			case <-t.C:
				read()
			}
		}
	}()
	return func() { close(done); <-finished }
}

// reported returns the first lines of the scenario's own messages (t.Log,
// t.Error, t.Fatal) in the guest's console, at most n: a failure names its
// cause there, while the console's tail is mostly the daemons' logs.
func reported(console []byte, n int) string {
	var out []string
	for _, l := range strings.Split(string(console), "\n") {
		if testMessage.MatchString(l) && !strings.Contains(l, "live: ") {
			out = append(out, strings.TrimRight(l, "\r"))
		}
	}
	if len(out) > n {
		out = append(out[:n], fmt.Sprintf("[... %d more]", len(out)-n))
	}
	return strings.Join(out, "\n")
}

// testMessage matches the first line of a message from package testing.
var testMessage = regexp.MustCompile(`^\s+\w+_test\.go:\d+: `)

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines cut]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// command runs a program and returns its standard output; the error carries
// its standard error, which is where go build and setup.sh say what failed.
func command(ctx context.Context, dir string, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}
