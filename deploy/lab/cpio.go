package lab

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
)

// cpioWriter writes the "newc" format the kernel unpacks into its initramfs.
// The kernel accepts several archives concatenated, which is how a run's own
// files are laid over the cached base archive without rebuilding it.
type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

func newCPIO(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriter(w), ino: 1 << 20, dirs: map[string]bool{}}
}

func (c *cpioWriter) header(name string, mode uint32, size int) {
	if c.err != nil {
		return
	}
	c.ino++
	_, c.err = fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if c.err != nil {
		return
	}
	c.write([]byte(name + "\x00"))
	c.pad(110 + len(name) + 1)
}

func (c *cpioWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

// pad aligns to 4 bytes, as newc requires after headers and file data.
func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// mkdirAll adds every parent directory of name not added yet.
func (c *cpioWriter) mkdirAll(dir string) {
	if dir == "." || dir == "/" || dir == "" || c.dirs[dir] {
		return
	}
	c.mkdirAll(path.Dir(dir))
	c.dirs[dir] = true
	c.header(dir, 0o040755, 0)
}

// addBytes adds a regular file with the given content and permission bits.
func (c *cpioWriter) addBytes(name string, perm uint32, data []byte) {
	c.mkdirAll(path.Dir(name))
	c.header(name, 0o100000|perm, len(data))
	c.write(data)
	c.pad(len(data))
}

// addFile adds a file from the host file system.
func (c *cpioWriter) addFile(name, src string, perm uint32) {
	if c.err != nil {
		return
	}
	data, err := os.ReadFile(src)
	if err != nil {
		c.err = fmt.Errorf("read %s for the initramfs: %w", src, err)
		return
	}
	c.addBytes(name, perm, data)
}

// addDir adds every regular file of a host directory under dest.
func (c *cpioWriter) addDir(dest, src string) {
	if c.err != nil {
		return
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		c.err = fmt.Errorf("list %s for the initramfs: %w", src, err)
		return
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		if e.Type().IsRegular() {
			c.addFile(path.Join(dest, e.Name()), path.Join(src, e.Name()), 0o755)
		}
	}
}

func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0)
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}
