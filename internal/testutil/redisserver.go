package testutil

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a redis-server of the test's own, for what a shared one
// must not be put through (ACL users, SHUTDOWN, FLUSHALL, maxmemory):
// it listens on a free loopback port, keeps nothing on disk, and is
// stopped when the test ends.
type RedisServer struct {
	t    testing.TB
	addr string
	port int
	cmd  *exec.Cmd
}

// NewRedisServer starts a redis-server on a free loopback port with args
// (such as "--maxmemory", "2mb"). It skips without redis-server on PATH,
// or fails when backends are required (DISCOVERY_TEST_REQUIRE=1).
func NewRedisServer(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		unavailable(t, "redis-server is not on PATH: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	s := &RedisServer{t: t, port: port, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	s.start(args...)
	t.Cleanup(s.stop)
	return s
}

// Addr is the server's host:port.
func (s *RedisServer) Addr() string { return s.addr }

func (s *RedisServer) start(args ...string) {
	s.t.Helper()
	cmd := exec.Command("redis-server", append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.t.TempDir()}, args...)...)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redis-server: %v", err)
	}
	s.cmd = cmd
	admin := s.Admin()
	defer admin.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := admin.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s does not answer: %v", s.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Admin returns a new client of the server as its default user; the
// caller closes it.
func (s *RedisServer) Admin() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second})
}

// Do runs one command as the default user, failing the test on an error.
func (s *RedisServer) Do(args ...any) any {
	s.t.Helper()
	admin := s.Admin()
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := admin.Do(ctx, args...).Result()
	if err != nil {
		s.t.Fatalf("redis %v: %v", args, err)
	}
	return v
}

// Stop stops the server as a crash would (SHUTDOWN NOSAVE: everything in
// it is lost, every connection dropped); Start starts it again on the
// same port with args.
func (s *RedisServer) Stop() { s.stop() }

// Start starts a stopped server again: see Stop.
func (s *RedisServer) Start(args ...string) {
	s.t.Helper()
	s.start(args...)
}

func (s *RedisServer) stop() {
	if s.cmd == nil {
		return
	}
	admin := s.Admin()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = admin.Do(ctx, "SHUTDOWN", "NOSAVE").Err() // answered by the connection closing
	cancel()
	_ = admin.Close()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}
