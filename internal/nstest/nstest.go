// Package nstest holds what the kernel tests on the host share: the rule
// for when a test that needs root may skip. It is imported by tests only and
// must never be imported by the product.
package nstest

import (
	"os"
	"testing"
)

// RequireRoot skips a test that needs root (to create network namespaces
// and configure them) for an unprivileged developer, and fails it under
// CI=true, where a silent skip would hide a broken environment. need says
// what the test does with root, for the message.
func RequireRoot(tb testing.TB, need string) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("this test needs root to %s, and CI=true forbids skipping", need)
	}
	tb.Skipf("skipped: needs root to %s; run go test as root (CI=true turns this skip into a failure)", need)
}
