package daemon

import (
	"os"
	"reflect"
	"testing"
)

// FuzzParseConfig feeds syncd.yaml's decoder arbitrary bytes: it must
// return an error naming the problem or a configuration that validates,
// never panic, and defaults must be settled (applying them again changes
// nothing).
func FuzzParseConfig(f *testing.F) {
	if b, err := os.ReadFile("../../deploy/syncd/syncd.yaml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"node_id: 1\nkey_file: /k\n",
		"node_id: [\n",
		"node_id: 1\nno_such_key: 2\n",
		"node_id: 1\nkey_file: /k\npeer:\n  mode: unicast\n  peers: [\"10.0.0.2:8848\"]\n",
		"node_id: &a 1\nsync_id: *a\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b, "fuzz.yaml")
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed configuration fails validation: %v", err)
		}
		if again := c.WithDefaults(); !reflect.DeepEqual(again, c) {
			t.Fatalf("defaults not settled:\n%+v\n%+v", c, again)
		}
	})
}
