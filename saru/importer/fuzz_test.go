package importer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// seeds adds every file under dir whose name ends in one of exts, and the
// files of the error cases, to the corpus of f through add.
func seeds(t testing.TB, dir string, exts []string, add func([]byte)) {
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		for _, e := range exts {
			if strings.HasSuffix(p, e) {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				add(b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fuzzCheck is what both fuzzers require: an error that says something, or
// a result that round-trips through saru's own decoder and Parse.
func fuzzCheck(t *testing.T, r *Result, err error) {
	if err != nil {
		if r != nil {
			t.Fatal("a result with an error")
		}
		if err.Error() == "" {
			t.Fatal("an empty error")
		}
		return
	}
	roundTrip(t, r)
}

// FuzzLdirectord feeds the ldirectord reader arbitrary files: it must
// return an error or a result saru accepts, and never panic.
func FuzzLdirectord(f *testing.F) {
	seeds(f, "testdata/ldirectord", []string{".cf"}, func(b []byte) { f.Add(b) })
	for _, c := range cases(f, "testdata/errors/ldirectord.txt") {
		f.Add(c["ldirectord.cf"].Data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Ldirectord(fstest.MapFS{"ldirectord.cf": {Data: data}}, "ldirectord.cf")
		fuzzCheck(t, r, err)
	})
}

// FuzzKeepalived feeds the keepalived reader an arbitrary main file and an
// arbitrary file it may include (as conf.d/inc.conf), so that includes are
// exercised too.
func FuzzKeepalived(f *testing.F) {
	seeds(f, "testdata/keepalived", []string{".conf"}, func(b []byte) {
		f.Add(b, []byte(nil))
		f.Add([]byte("include conf.d/*.conf\n"), b)
	})
	for _, c := range cases(f, "testdata/errors/keepalived.txt") {
		var inc []byte
		for name, file := range c {
			if name != "keepalived.conf" {
				inc = file.Data
			}
		}
		f.Add(c["keepalived.conf"].Data, inc)
	}
	f.Fuzz(func(t *testing.T, main, inc []byte) {
		fsys := fstest.MapFS{"keepalived.conf": {Data: main}, "conf.d/inc.conf": {Data: inc}}
		r, err := Keepalived(fsys, "keepalived.conf")
		fuzzCheck(t, r, err)
	})
}
