package testutil

import (
	"bufio"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err = bufio.NewReader(c).ReadString('\n')
	return err
}

func TestProxyModes(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	if err := roundTrip(p.Addr()); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	p.Down()
	if err := roundTrip(p.Addr()); err == nil {
		t.Fatal("Down: a round trip succeeded")
	}
	p.Up()
	if err := roundTrip(p.Addr()); err != nil {
		t.Fatalf("after Up: %v", err)
	}
	p.Blackhole(true)
	if err := roundTrip(p.Addr()); err == nil {
		t.Fatal("Blackhole: a round trip succeeded")
	}
	p.Blackhole(false)
	p.Latency(50 * time.Millisecond)
	start := time.Now()
	if err := roundTrip(p.Addr()); err != nil || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("Latency: %v after %v", err, time.Since(start))
	}
}
