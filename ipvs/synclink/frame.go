package synclink

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
)

// FrameReader yields kernel sync messages, one per call.
type FrameReader interface {
	// ReadFrame blocks until a message arrives, ctx is done or the reader
	// is closed, then copies the message (a UDP payload) into buf. A
	// message larger than buf is consumed and reported as an error
	// wrapping io.ErrShortBuffer; MaxFrame bytes is always enough.
	ReadFrame(ctx context.Context, buf []byte) (n int, err error)
}

// FrameWriter hands kernel sync messages over, one per call.
type FrameWriter interface {
	// WriteFrame sends b as one datagram. A nil error does not mean the
	// receiver got it: like any local UDP delivery, a full queue on the
	// receiving side drops it silently.
	WriteFrame(b []byte) error
}

// MaxFrame is the largest UDP payload (IPv4: 65535 - 20 - 8), a buffer size
// that never makes ReadFrame fail with io.ErrShortBuffer.
const MaxFrame = 65507

// NewPipe returns the two ends of an in-memory link that holds up to depth
// frames, so that syncd's tests can stand in for the kernel on either side
// without root or sockets. Like the real link it never blocks the writer:
// a frame written to a full pipe is dropped and counted (see Dropped),
// which lets tests exercise loss.
func NewPipe(depth int) (*PipeReader, *PipeWriter) {
	if depth < 1 {
		depth = 1
	}
	p := &pipe{ch: make(chan []byte, depth), done: make(chan struct{})}
	return &PipeReader{p: p}, &PipeWriter{p: p}
}

type pipe struct {
	ch   chan []byte
	done chan struct{} // closed by PipeReader.Close

	mu            sync.Mutex
	writerClosed  bool
	readerClosed  bool
	written, lost uint64
}

// PipeReader is the reading end of a pipe; it implements FrameReader.
type PipeReader struct{ p *pipe }

// PipeWriter is the writing end of a pipe; it implements FrameWriter.
type PipeWriter struct{ p *pipe }

var (
	_ FrameReader = (*PipeReader)(nil)
	_ FrameWriter = (*PipeWriter)(nil)
)

// ReadFrame returns the next frame. After the writer is closed and the
// frames in flight are read it returns io.EOF; after the reader is closed,
// an error wrapping net.ErrClosed.
func (r *PipeReader) ReadFrame(ctx context.Context, buf []byte) (int, error) {
	select {
	case <-r.p.done:
		return 0, fmt.Errorf("synclink: pipe read: %w", net.ErrClosed)
	default:
	}
	select {
	case b, ok := <-r.p.ch:
		if !ok {
			return 0, io.EOF
		}
		if len(b) > len(buf) {
			return 0, fmt.Errorf("synclink: pipe read: %d-byte frame into %d-byte buffer: %w", len(b), len(buf), io.ErrShortBuffer)
		}
		return copy(buf, b), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("synclink: pipe read: %w", ctx.Err())
	case <-r.p.done:
		return 0, fmt.Errorf("synclink: pipe read: %w", net.ErrClosed)
	}
}

// Close makes pending and later ReadFrame and WriteFrame calls fail.
func (r *PipeReader) Close() error {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	if !r.p.readerClosed {
		r.p.readerClosed = true
		close(r.p.done)
	}
	return nil
}

// WriteFrame queues a copy of b, or drops it if the pipe is full.
func (w *PipeWriter) WriteFrame(b []byte) error {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if w.p.writerClosed || w.p.readerClosed {
		return fmt.Errorf("synclink: pipe write: %w", net.ErrClosed)
	}
	select {
	case w.p.ch <- append([]byte(nil), b...):
		w.p.written++
	default:
		w.p.lost++
	}
	return nil
}

// Close tells the reader no more frames will come.
func (w *PipeWriter) Close() error {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	if !w.p.writerClosed {
		w.p.writerClosed = true
		close(w.p.ch)
	}
	return nil
}

// Written reports how many frames were queued.
func (w *PipeWriter) Written() uint64 {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.written
}

// Dropped reports how many frames were dropped because the pipe was full.
func (w *PipeWriter) Dropped() uint64 {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.lost
}
