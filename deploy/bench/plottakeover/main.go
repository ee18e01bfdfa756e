// Command plottakeover draws the takeover times TestSaruTakeoverBench
// writes (PEERLVS_BENCH_CSV: lines "directors,takeover_ms") as an SVG:
// every kill as a dot, p50 and p99 per fleet size as bars, the targets of
// issue 10 as dashed lines. It reads the CSV named by -in and writes -out;
// it draws what it is given and nothing else.
package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
)

func main() {
	in := flag.String("in", "", "CSV from TestSaruTakeoverBench (PEERLVS_BENCH_CSV)")
	out := flag.String("out", "takeover.svg", "SVG to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "plottakeover:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	if in == "" {
		return errors.New("-in is required")
	}
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	samples, err := parse(f)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	return os.WriteFile(out, []byte(svg(samples)), 0o644)
}

// parse reads "directors,takeover_ms" lines (a header line is skipped).
func parse(r io.Reader) (map[int][]float64, error) {
	rows, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	m := map[int][]float64{}
	for i, row := range rows {
		if len(row) != 2 {
			return nil, fmt.Errorf("line %d: %d fields, want 2 (directors,takeover_ms)", i+1, len(row))
		}
		n, err1 := strconv.Atoi(strings.TrimSpace(row[0]))
		ms, err2 := strconv.ParseFloat(strings.TrimSpace(row[1]), 64)
		if err1 != nil || err2 != nil {
			if i == 0 {
				continue // the header
			}
			return nil, fmt.Errorf("line %d: %q is not directors,milliseconds", i+1, strings.Join(row, ","))
		}
		m[n] = append(m[n], ms)
	}
	if len(m) == 0 {
		return nil, errors.New("no samples")
	}
	return m, nil
}

func quantile(s []float64, p float64) float64 {
	s = slices.Clone(s)
	sort.Float64s(s)
	return s[int(p*float64(len(s)-1)+0.5)]
}

func svg(m map[int][]float64) string {
	const w, h, left, right, top, bottom = 640.0, 400.0, 70.0, 20.0, 30.0, 50.0
	sizes := make([]int, 0, len(m))
	ymax := 2500.0
	for n, s := range m {
		sizes = append(sizes, n)
		ymax = math.Max(ymax, slices.Max(s)*1.1)
	}
	sort.Ints(sizes)
	x := func(i int) float64 { return left + (float64(i)+0.5)*(w-left-right)/float64(len(sizes)) }
	y := func(ms float64) float64 { return top + (1-ms/ymax)*(h-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="14">saru takeover after kill -9: kill to survivors accepting every bucket</text>`+"\n", left)
	for ms := 0.0; ms <= ymax; ms += 500 {
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" text-anchor="end">%.0f ms</text>`+"\n",
			left, w-right, y(ms), y(ms), left-6, y(ms)+4, ms)
	}
	for _, tgt := range []struct {
		ms   float64
		what string
	}{{1000, "p50 target (3 directors)"}, {2000, "p99 target"}} {
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="6,4"/><text x="%.0f" y="%.1f" fill="#c00" text-anchor="end">%s</text>`+"\n",
			left, w-right, y(tgt.ms), y(tgt.ms), w-right-4, y(tgt.ms)-4, tgt.what)
	}
	for i, n := range sizes {
		s := m[n]
		for j, ms := range s {
			jitter := (float64(j%9) - 4) * 3
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="#36c" fill-opacity="0.5"/>`+"\n", x(i)+jitter, y(ms))
		}
		// p50's label below its bar and p99's above, so close ones do
		// not overlap.
		for _, q := range []struct {
			p     float64
			color string
			dy    float64
		}{{0.5, "#000", 14}, {0.99, "#666", -4}} {
			v := quantile(s, q.p)
			fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/><text x="%.1f" y="%.1f">p%.0f %.0f</text>`+"\n",
				x(i)-25, x(i)+25, y(v), y(v), q.color, x(i)+28, y(v)+q.dy, q.p*100, v)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%d directors (%d kills)</text>`+"\n", x(i), h-bottom+20, n, len(s))
	}
	b.WriteString("</svg>\n")
	return b.String()
}
