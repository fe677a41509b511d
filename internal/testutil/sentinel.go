package testutil

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Sentinel is a listener that only counts the connections it accepts: a
// test points something that must never connect there at it and expects 0.
type Sentinel struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
}

// NewSentinel listens on a loopback port until the test ends.
func NewSentinel(t testing.TB) *Sentinel {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Sentinel{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.wg.Wait()
	})
	return s
}

// Addr is the sentinel's host:port.
func (s *Sentinel) Addr() string { return s.ln.Addr().String() }

// Accepted counts the connections accepted so far.
func (s *Sentinel) Accepted() int64 { return s.accepted.Load() }
