package sqlstore_test

import (
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/storetest"
	"github.com/rssbot/discovery/internal/testutil"
)

// severable forwards connections to PostgreSQL until sever, which closes
// the clients' ends and leaves the server's open and silent: a client
// whose host froze or was cut off by a partition, which the server hears
// nothing from (until TCP keepalive, two hours by default).
type severable struct {
	ln      net.Listener
	mu      sync.Mutex
	clients []net.Conn
	servers []net.Conn
}

func newSeverable(t *testing.T) (*severable, string) {
	t.Helper()
	cfg, err := pgconn.ParseConfig(testutil.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &severable{ln: ln}
	target := net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			s.mu.Lock()
			s.clients, s.servers = append(s.clients, c), append(s.servers, up)
			s.mu.Unlock()
			go func() { _, _ = io.Copy(up, c) }() // ends when the client's end closes; up is left open
			go func() { _, _ = io.Copy(c, up) }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range append(s.clients, s.servers...) {
			_ = c.Close()
		}
	})
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	dsn := "host=" + host + " port=" + port + " user=" + cfg.User + " dbname=" + cfg.Database + " sslmode=disable"
	if cfg.Password != "" {
		dsn += " password=" + cfg.Password
	}
	return s, dsn
}

// sever closes the client ends of every connection; the server ends stay
// open, and hear nothing more.
func (s *severable) sever() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.clients {
		_ = c.Close()
	}
}

// A process cut off from PostgreSQL in the middle of a write (a partition,
// a frozen host) left its transaction open on the server, which hears
// nothing from it until TCP keepalive gives up (two hours by default): the
// service's row stayed locked, and every other process's writes of the
// service (a reap's: of every service it had bumped) waited for it, each
// failing with ErrUnavailable at its timeout, for as long. Now the server
// ends a store's transaction left idle longer than the store's bound.
func TestPostgresWriteCutOffMidwayReleasesItsLocks(t *testing.T) {
	p := testutil.Prefix(t)
	direct := testutil.Postgres(t, p)
	b := openBounded(t, direct, p, 10*time.Second)
	fwd, dsn := newSeverable(t)
	db := opened(t)(testutil.OpenPostgres(dsn))
	a := openBounded(t, db, p, time.Second)
	cut := false
	err := db.Callback().Raw().Before("gorm:raw").Register("test:sever", func(tx *gorm.DB) {
		if !cut && strings.Contains(tx.Statement.SQL.String(), "INSERT INTO "+p+"instances") {
			cut = true // the service's row is bumped and locked
			fwd.sever()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(t.Context(), storetest.Instance("svc", "a", time.Now().Add(time.Hour))); err == nil || !cut {
		t.Fatalf("Register cut off midway = %v (cut: %v); want an error", err, cut)
	}
	start := time.Now()
	rev, err := b.Register(t.Context(), storetest.Instance("svc", "b", time.Now().Add(time.Hour)))
	if took := time.Since(start); err != nil || took > 5*time.Second {
		t.Fatalf("another process's Register of the service = %d, %v after %v; want it within 5 s (the cut-off one's bound is 1 s)",
			rev, err, took.Round(time.Millisecond))
	}
}
