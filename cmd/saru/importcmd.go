package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/peerlvs/peerlvs/saru/importer"
)

const importUsage = `usage: saru import ldirectord|keepalived FILE

Translates an ldirectord.cf, or a keepalived.conf and the files it
includes, into the services: section of saru.yaml and prints it. What has
no equivalent is listed in comments at the top; read them before use.
`

// cmdImport runs `saru import ldirectord|keepalived FILE`: the YAML goes to
// stdout, nothing on error.
func cmdImport(args []string, stdout, stderr io.Writer) error {
	flags := newFlags("import", stderr)
	flags.Usage = func() { fmt.Fprint(stderr, importUsage) }
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() != 2 {
		flags.Usage()
		return errors.New("import: want ldirectord|keepalived FILE")
	}
	kind, file := flags.Arg(0), flags.Arg(1)
	var read func(fs.FS, string) (*importer.Result, error)
	switch kind {
	case "ldirectord":
		read = importer.Ldirectord
	case "keepalived":
		read = importer.Keepalived
	default:
		return fmt.Errorf("import: %q unknown; use ldirectord or keepalived", kind)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return fmt.Errorf("import %s: %w", kind, err)
	}
	// The importer reads through the machine's root so that keepalived's
	// absolute includes (/etc/keepalived/conf.d/*.conf) resolve as they do
	// on the director.
	res, err := read(os.DirFS("/"), strings.TrimPrefix(filepath.ToSlash(abs), "/"))
	if err != nil {
		return fmt.Errorf("import %s: %w", kind, err)
	}
	out, err := res.YAML()
	if err != nil {
		return fmt.Errorf("import %s: %w", kind, err)
	}
	if _, err := stdout.Write(out); err != nil {
		return fmt.Errorf("import %s: write: %w", kind, err)
	}
	fmt.Fprintf(stderr, "saru import: virtual services: %d; notes on what has no equivalent: %d (comments at the top)\n", len(res.Services), len(res.Notes))
	return nil
}
