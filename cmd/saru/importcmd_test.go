package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestImportKeepalived imports a keepalived.conf with an include and
// checks the output completes a saru.yaml that saru itself accepts.
func TestImportKeepalived(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"keepalived.conf": "global_defs {\n  router_id LB1\n}\ninclude conf.d/*.conf\n",
		"conf.d/web.conf": `virtual_server 192.0.2.10 80 {
    delay_loop 6
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 10.0.0.1 80 {
        TCP_CHECK {
            connect_timeout 3
        }
    }
}
`,
	})
	var out, errb bytes.Buffer
	if err := cmdImport([]string{"keepalived", filepath.Join(dir, "keepalived.conf")}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	y := out.String()
	for _, want := range []string{"# keepalived.conf:1: global_defs has no equivalent", "# conf.d/web.conf:1: virtual_server 192.0.2.10 80", "address: 192.0.2.10:80"} {
		if !strings.Contains(y, want) {
			t.Errorf("output lacks %q:\n%s", want, y)
		}
	}
	if _, err := parseConfig([]byte(goodConfig + y)); err != nil {
		t.Errorf("saru refuses the imported services: %v\n%s", err, y)
	}
	if !strings.Contains(errb.String(), "virtual services: 1; notes on what has no equivalent: 1") {
		t.Errorf("stderr %q", errb.String())
	}
}

func TestImportLdirectord(t *testing.T) {
	dir := writeFiles(t, map[string]string{"ldirectord.cf": "checkinterval=5\nvirtual=192.0.2.10:443\n\treal=10.0.0.1:443 gate\n\tservice=https\n\trequest=\"/health\"\n"})
	var out, errb bytes.Buffer
	// A relative path, as an operator types it.
	t.Chdir(dir)
	if err := cmdImport([]string{"ldirectord", "ldirectord.cf"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "type: https") || !strings.Contains(out.String(), "path: /health") {
		t.Errorf("output:\n%s", out.String())
	}
	if _, err := parseConfig([]byte(goodConfig + out.String())); err != nil {
		t.Errorf("saru refuses the imported services: %v\n%s", err, out.String())
	}
}

// TestImportErrors checks nothing reaches stdout when the import fails,
// and the error names what is wrong.
func TestImportErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"keepalived.conf": "virtual_server 192.0.2.10 80 {\n  real_server 10.0.0.x 80\n}\n",
		"ldirectord.cf":   "virtual=192.0.2.10:80\n\treal=10.0.0.1:80 gate\n\tbogus=1\n",
	})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"keepalived", filepath.Join(dir, "keepalived.conf")}, `import keepalived: keepalived.conf:2: real_server: "10.0.0.x" is not an IP address`},
		{[]string{"ldirectord", filepath.Join(dir, "ldirectord.cf")}, "import ldirectord: ldirectord.cf:3: bogus: unknown directive"},
		{[]string{"ldirectord", filepath.Join(dir, "missing.cf")}, "missing.cf"},
		{[]string{"haproxy", filepath.Join(dir, "ldirectord.cf")}, `"haproxy" unknown`},
		{[]string{"keepalived"}, "want ldirectord|keepalived FILE"},
	} {
		var out, errb bytes.Buffer
		err := cmdImport(c.args, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
		if out.Len() != 0 {
			t.Errorf("%v: printed %q on error", c.args, out.String())
		}
	}
}
