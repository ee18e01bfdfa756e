package main

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, in string
		want     map[int]int // size -> samples
		err      string
	}{
		{"header and rows", "directors,takeover_ms\n3,900\n3,1100\n32,1500\n", map[int]int{3: 2, 32: 1}, ""},
		{"no header", "8,1000\n", map[int]int{8: 1}, ""},
		{"empty", "", nil, "no samples"},
		{"bad row", "directors,takeover_ms\n3,fast\n", nil, `line 2: "3,fast"`},
		{"short row", "3\n", nil, "line 1: 1 fields"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parse(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for n, c := range tc.want {
				if len(m[n]) != c {
					t.Errorf("size %d: %d samples, want %d", n, len(m[n]), c)
				}
			}
			if s := svg(m); !strings.HasPrefix(s, "<svg") || !strings.Contains(s, "p99") {
				t.Errorf("svg lacks its parts:\n%s", s)
			}
		})
	}
}
