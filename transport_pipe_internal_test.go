package discovery

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// The in-process body's buffer is bounded: a writer ahead by more than
// localPipeBuffer waits for the reader, reads get what was written in order
// and then the writer's error, and a reader that closes fails the writer.
func TestLocalPipe(t *testing.T) {
	p := newLocalPipe()
	data := bytes.Repeat([]byte("0123456789abcdef"), localPipeBuffer/16+100) // over the buffer
	wrote := make(chan error, 1)
	go func() {
		_, err := p.Write(data)
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("a write %d bytes over the buffer returned (%v) before any read", len(data)-localPipeBuffer, err)
	case <-time.After(50 * time.Millisecond):
	}
	boom := errors.New("boom")
	got := make([]byte, 0, len(data))
	buf := make([]byte, 1000)
	for len(got) < len(data) {
		n, err := p.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
	}
	if err := <-wrote; err != nil || !bytes.Equal(got, data) {
		t.Fatalf("write: %v; read %d bytes, equal %v", err, len(got), bytes.Equal(got, data))
	}
	_, _ = p.Write([]byte("tail"))
	p.CloseWrite(boom)
	if n, err := p.Read(buf); n != 4 || err != nil {
		t.Fatalf("read after the writer closed = %d, %v; want what was written first", n, err)
	}
	if _, err := p.Read(buf); err != boom {
		t.Fatalf("read of a drained pipe = %v; want the writer's error", err)
	}

	p = newLocalPipe()
	p.CloseWrite(nil)
	if _, err := p.Read(buf); err != io.EOF {
		t.Fatalf("read of a pipe closed without error = %v; want io.EOF", err)
	}
	p = newLocalPipe()
	go func() {
		_, err := p.Write(data)
		wrote <- err
	}()
	time.Sleep(10 * time.Millisecond) // most likely waiting for room by now; either way it must fail
	p.CloseRead(boom)
	if err := <-wrote; err != boom {
		t.Fatalf("write to a pipe whose reader closed = %v; want the reader's error", err)
	}
}
