package main

import (
	"os"
	"testing"

	"github.com/peerlvs/peerlvs/filter"
)

// FuzzParseConfig feeds saru.yaml's decoder arbitrary bytes: it must
// return an error naming the problem or a configuration whose filter
// settings the filter accepts, and never panic.
func FuzzParseConfig(f *testing.F) {
	if b, err := os.ReadFile("../../deploy/saru/saru.yaml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		goodConfig,
		goodConfig + "settle_time: 10ms\n",
		goodConfig + "liveness_lease: off\n",
		"node: d1\nbuckets: [\n",
		"node: d1\nno_such_key: 1\n",
		"node: &n d1\nseeds: [*n]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseConfig(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if _, err := filter.New(c.filterConfig()); err != nil {
			t.Fatalf("accepted a configuration the filter refuses: %v", err)
		}
	})
}
