package synclink

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestPipe(t *testing.T) {
	r, w := NewPipe(2)
	ctx := context.Background()
	buf := make([]byte, 16)

	b := []byte("one")
	if err := w.WriteFrame(b); err != nil {
		t.Fatal(err)
	}
	b[0] = 'X' // the pipe must have copied
	if err := w.WriteFrame([]byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteFrame([]byte("lost")); err != nil {
		t.Fatalf("write to a full pipe: %v, want silent drop", err)
	}
	if w.Written() != 2 || w.Dropped() != 1 {
		t.Errorf("written %d dropped %d, want 2 and 1", w.Written(), w.Dropped())
	}
	for _, want := range []string{"one", "two"} {
		n, err := r.ReadFrame(ctx, buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("ReadFrame = %q, %v; want %q", buf[:n], err, want)
		}
	}

	if err := w.WriteFrame(make([]byte, 17)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadFrame(ctx, buf); !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("17 bytes into 16: %v, want io.ErrShortBuffer", err)
	}

	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := r.ReadFrame(cctx, buf); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("read from an empty pipe: %v, want deadline exceeded", err)
	}

	if err := w.WriteFrame([]byte("last")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := w.WriteFrame([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v, want net.ErrClosed", err)
	}
	if n, err := r.ReadFrame(ctx, buf); err != nil || string(buf[:n]) != "last" {
		t.Errorf("frames written before Close must still arrive: %q, %v", buf[:n], err)
	}
	if _, err := r.ReadFrame(ctx, buf); err != io.EOF {
		t.Errorf("read after writer Close: %v, want io.EOF", err)
	}
	w.Close() // twice is fine
}

func TestPipeReaderClose(t *testing.T) {
	r, w := NewPipe(0)
	errc := make(chan error, 1)
	go func() {
		_, err := r.ReadFrame(context.Background(), make([]byte, 8))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	r.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("pending read after reader Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("reader Close did not unblock ReadFrame")
	}
	if err := w.WriteFrame([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after reader Close: %v, want net.ErrClosed", err)
	}
	r.Close()
}
