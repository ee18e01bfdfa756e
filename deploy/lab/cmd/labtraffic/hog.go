package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// hog runs busy loops, each on a thread of its own at the highest
// priority, busy for share of every period and asleep for the rest: a
// noisy neighbour that takes its share of the CPUs whether the daemons need
// them or not, and never more. The cap comes from the loop's own clock
// rather than from the scheduler's bandwidth control (cgroup cpu.max),
// whose period timers the emulated guest, with its vCPUs descheduled by a
// busy host, has frozen on.
func hog(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("hog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	share := fs.Int("share", 0, "percent of one CPU each loop takes (required, 1-99)")
	loops := fs.Int("loops", 1, "busy loops, each on a thread of its own")
	period := fs.Duration("period", 100*time.Millisecond, "each loop is busy for share of every period")
	duration := fs.Duration("duration", 0, "stop after this long (0: run until SIGTERM/SIGINT)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *share <= 0 || *share >= 100 {
		return usageErr(fmt.Errorf("-share %d: want a percentage between 1 and 99", *share))
	}
	if *loops <= 0 || *period < time.Millisecond {
		return usageErr(errors.New("-loops must be positive and -period at least 1ms"))
	}
	ctx, stop := signalContext(*duration)
	defer stop()
	busy := *period * time.Duration(*share) / 100
	errs := make(chan error, *loops)
	var wg sync.WaitGroup
	for range *loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The thread keeps the loop; its nice value is its own.
			runtime.LockOSThread()
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), -20); err != nil {
				errs <- fmt.Errorf("raise the loop's priority: %w", err)
				return
			}
			for ctx.Err() == nil {
				start := time.Now()
				for time.Since(start) < busy {
				}
				time.Sleep(*period - time.Since(start))
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
