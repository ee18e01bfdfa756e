package daemon

import (
	"time"

	"go.uber.org/zap"

	"github.com/peerlvs/peerlvs/ipvs/synclink"
	"github.com/peerlvs/peerlvs/ipvs/wire"
)

// maxInjectQueue bounds the datagrams waiting for the kernel backup; beyond
// it the oldest are dropped (and counted): a bulk dump then repairs them.
const maxInjectQueue = 1 << 16

// injector batches entries into kernel v1 datagrams and hands them to the
// kernel backup thread at most burst per tick.
type injector struct {
	b     *wire.Builder
	w     synclink.FrameWriter
	burst int
	left  int
	queue [][]byte
	free  [][]byte
	st    *Counters
}

func newInjector(syncID uint8, maxLen, burst int, w synclink.FrameWriter, st *Counters) (*injector, error) {
	b, err := wire.NewBuilder(1, syncID, maxLen)
	if err != nil {
		return nil, err
	}
	return &injector{b: b, w: w, burst: burst, left: burst, st: st}, nil
}

// add queues c; it is validated first (the kernel drops invalid entries
// silently).
func (i *injector) add(c *wire.Conn) {
	ok, err := i.b.Add(c)
	if err == nil && !ok {
		i.seal()
		ok, err = i.b.Add(c)
	}
	if err != nil || !ok {
		i.st.KernelInjectBad++
		return
	}
	i.st.KernelEntriesOut++
}

// seal moves the datagram being built to the queue.
func (i *injector) seal() {
	if i.b.Len() == 0 {
		return
	}
	var buf []byte
	if n := len(i.free); n > 0 {
		buf, i.free = i.free[n-1][:0], i.free[:n-1]
	}
	if len(i.queue) >= maxInjectQueue {
		i.st.KernelInjectDrop++
		i.queue = i.queue[1:]
	}
	i.queue = append(i.queue, append(buf, i.b.Bytes()...))
	i.b.Reset()
}

func (i *injector) newTick() { i.left = i.burst }

// pump writes queued datagrams within this tick's budget.
func (i *injector) pump() {
	for len(i.queue) > 0 && i.left > 0 {
		d := i.queue[0]
		i.queue[0] = nil
		i.queue = i.queue[1:]
		i.left--
		if err := i.w.WriteFrame(d); err != nil {
			i.st.KernelInjectErr++
		} else {
			i.st.KernelFramesOut++
		}
		if len(i.free) < 64 {
			i.free = append(i.free, d)
		}
	}
	if len(i.queue) == 0 {
		i.queue = i.queue[:0:0]
	}
}

// rateLog logs at most one line per key per interval, with how many were
// suppressed.
type rateLog struct {
	every time.Duration
	last  map[string]time.Time
	supp  map[string]int
}

func newRateLog(every time.Duration) *rateLog {
	return &rateLog{every: every, last: map[string]time.Time{}, supp: map[string]int{}}
}

func (r *rateLog) log(l *zap.Logger, key string, now time.Time, msg string, fields ...zap.Field) {
	if t, ok := r.last[key]; ok && now.Sub(t) < r.every {
		r.supp[key]++
		return
	}
	r.last[key] = now
	if n := r.supp[key]; n > 0 {
		fields = append(fields, zap.Int("suppressed", n))
		r.supp[key] = 0
	}
	l.Warn(msg, fields...)
}
