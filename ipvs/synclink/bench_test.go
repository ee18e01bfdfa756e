package synclink

import (
	"context"
	"errors"
	"testing"
	"time"
)

// benchSize is a full kernel sync message at the kernel's default
// SYNC_MAXLEN for IPv4 (1500 - 28).
const benchSize = 1472

// BenchmarkTap measures how many kernel-master-like datagrams per second
// the Tap delivers. "unpaced": the sender writes as fast as it can, as the
// kernel master does when it flushes its queue, and drop% is what the
// kernel discarded because the Tap fell behind. "batch256": the sender waits
// for each batch of 256 to be read, which measures what the Tap sustains
// without loss.
func BenchmarkTap(b *testing.B) {
	for _, bc := range []struct {
		name  string
		batch int
	}{{"unpaced", 0}, {"batch256", 256}} {
		b.Run(bc.name, func(b *testing.B) { benchTap(b, bc.batch) })
	}
}

func benchTap(b *testing.B, batch int) {
	ns := newNetns(b)
	l := setupLinkIn(b, ns, LinkConfig{})
	port := l.Config().MasterPort
	var tap *Tap
	ns.must(b, func() error {
		var err error
		tap, err = OpenTap(l.Name(), DefaultGroup, port)
		return err
	})
	defer tap.Close()
	master, err := kernelMaster(ns, l, DefaultGroup, port, false)
	if err != nil {
		b.Fatal(err)
	}
	defer master.Close()
	payload := make([]byte, benchSize)
	buf := make([]byte, MaxFrame)
	if batch == 0 {
		batch = b.N
	}
	read := make(chan struct{}, 1)

	b.SetBytes(benchSize)
	b.ResetTimer()
	start := time.Now()
	sendErr := make(chan error, 1)
	go func() {
		for i := 0; i < b.N; i++ {
			if i > 0 && i%batch == 0 {
				<-read
			}
			if _, err := master.Write(payload); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	got := 0
	for got < b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := tap.ReadFrame(ctx, buf)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			if batch == b.N {
				break // the rest was dropped
			}
			b.Fatalf("paced run lost frames: read %d of %d, stats %+v", got, b.N, tap.Stats())
		}
		if err != nil {
			b.Fatal(err)
		}
		got++
		if got%batch == 0 {
			read <- struct{}{}
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if err := <-sendErr; err != nil {
		b.Fatal(err)
	}
	st := tap.Stats()
	b.ReportMetric(float64(got)/elapsed.Seconds(), "frames/s")
	b.ReportMetric(100*float64(st.KernelDrops)/float64(b.N), "drop%")
}

// BenchmarkInjector measures how many datagrams per second the Injector
// sends and what share a kernel-backup-like listener with a 4 MiB buffer,
// reading concurrently, receives.
func BenchmarkInjector(b *testing.B) {
	ns := newNetns(b)
	l := setupLinkIn(b, ns, LinkConfig{})
	port := l.Config().BackupPort
	backup, err := kernelBackup(ns, l, DefaultGroup, port)
	if err != nil {
		b.Fatal(err)
	}
	defer backup.Close()
	var inj *Injector
	ns.must(b, func() error {
		var err error
		inj, err = OpenInjector(l.Name(), DefaultGroup, port)
		return err
	})
	defer inj.Close()
	payload := make([]byte, benchSize)

	received := make(chan int, 1)
	go func() {
		buf := make([]byte, MaxFrame)
		n := 0
		for {
			_ = backup.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := backup.Read(buf); err != nil {
				received <- n
				return
			}
			n++
		}
	}()

	b.SetBytes(benchSize)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := inj.WriteFrame(payload); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	got := <-received
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "frames/s")
	b.ReportMetric(100*float64(b.N-got)/float64(b.N), "drop%")
}
