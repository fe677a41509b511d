package testutil

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// UnansweredAddr returns a loopback address whose connection attempts are
// never answered, as those to a host that is down or cut off by a
// partition (its SYNs dropped; no refusal comes back): a socket that
// listens with a backlog of 0, filled by one connection nobody accepts.
// The Proxy's black hole answers connections and then swallows traffic; a
// dial there never waits.
func UnansweredAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		t.Fatalf("getsockname: %T", sa)
	}
	addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: in4.Port}).String()
	// Fill the backlog until a dial goes unanswered.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Skipf("%s: every connection was answered; this kernel does not drop them once the backlog is full", addr)
	return ""
}
