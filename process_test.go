package discovery_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/internal/testutil"
)

// Child processes of TestProcesses. Their environment says where the
// shared database and Redis are.
func init() {
	testutil.RegisterChild("registrant", func() {
		r := childRegistry()
		port, _ := strconv.Atoi(os.Getenv("CHILD_PORT"))
		g, err := r.Register(context.Background(), discovery.Instance{Service: "proc_svc", Host: os.Getenv("CHILD_HOST"), Port: port})
		if err != nil {
			fail(err)
		}
		fmt.Printf("ready %d\n", g.Revision())
		_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin (or kills us)
		_ = r.Close()
	})
	testutil.RegisterChild("observer", func() {
		r := childRegistry()
		done := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
		last := "?"
		for {
			select {
			case <-done:
				_ = r.Close()
				return
			case <-time.After(2 * time.Millisecond):
			}
			got := ids(r.Get(context.Background(), "proc_svc"))
			if got != last {
				fmt.Printf("%d %s\n", time.Now().UnixNano(), got)
				last = got
			}
		}
	})
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "child:", err)
	os.Exit(1)
}

func childRegistry() *discovery.Registry {
	var (
		db  *gorm.DB
		err error
	)
	if dsn := os.Getenv("CHILD_POSTGRES"); dsn != "" {
		db, err = testutil.OpenPostgres(dsn)
	} else {
		db, err = testutil.OpenSQLite(os.Getenv("CHILD_SQLITE"))
	}
	if err != nil {
		fail(err)
	}
	opt, err := redis.ParseURL(os.Getenv("CHILD_REDIS"))
	if err != nil {
		fail(err)
	}
	ttl, _ := time.ParseDuration(os.Getenv("CHILD_TTL"))
	r, err := discovery.New(discovery.WithDB(db), discovery.WithRedis(redis.NewClient(opt)),
		discovery.WithNamespace(os.Getenv("CHILD_NS")), discovery.WithLeaseTTL(ttl), discovery.WithoutHealthChecks()) // made-up addresses
	if err != nil {
		fail(err)
	}
	return r
}

type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startChild(t *testing.T, role string, env ...string) *child {
	t.Helper()
	cmd := testutil.Child(t, role, env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 1024)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return c
}

// next returns the child's next line, failing after d.
func (c *child) next(t *testing.T, d time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatal("child exited")
		}
		return l
	case <-time.After(d):
		t.Fatalf("child said nothing for %v", d)
	}
	return ""
}

// Real OS processes share one database and one Redis: one registers, the
// others see it; one is killed with SIGKILL and its instance disappears for
// the others when its lease expires.
func TestProcesses(t *testing.T) {
	const ttl = 3 * time.Second
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	env := []string{"CHILD_NS=" + ns, "CHILD_TTL=" + ttl.String()}
	var db *gorm.DB
	if os.Getenv(testutil.EnvPostgres) != "" || testutil.Required() {
		db = testutil.Postgres(t, ns+"_")
		env = append(env, "CHILD_POSTGRES="+testutil.PostgresDSN(t))
	} else {
		path := filepath.Join(t.TempDir(), "shared.db")
		var err error
		if db, err = testutil.OpenSQLite(path); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if s, err := db.DB(); err == nil {
				_ = s.Close()
			}
		})
		env = append(env, "CHILD_SQLITE="+path)
	}
	addr, dbn, _ := testutil.RedisAddr(t)
	rdb := testutil.RedisClient(t, addr, dbn, ns)
	env = append(env, fmt.Sprintf("CHILD_REDIS=redis://%s/%d", addr, dbn))

	// The parent is a process too; it migrates the schema first.
	parent, err := discovery.New(discovery.WithDB(db), discovery.WithRedis(rdb), discovery.WithNamespace(ns), discovery.WithLeaseTTL(ttl), discovery.WithoutHealthChecks())
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()

	observer := startChild(t, "observer", env...)
	if l := observer.next(t, 10*time.Second); !strings.HasSuffix(l, "error: discovery: service \"proc_svc\" not found") {
		t.Fatalf("observer first saw %q", l)
	}
	a := startChild(t, "registrant", append(env, "CHILD_HOST=10.0.0.1", "CHILD_PORT=1")...)
	if l := a.next(t, 10*time.Second); !strings.HasPrefix(l, "ready") {
		t.Fatalf("registrant a: %q", l)
	}
	b := startChild(t, "registrant", append(env, "CHILD_HOST=10.0.0.2", "CHILD_PORT=2")...)
	if l := b.next(t, 10*time.Second); !strings.HasPrefix(l, "ready") {
		t.Fatalf("registrant b: %q", l)
	}
	for {
		l := observer.next(t, 5*time.Second)
		if strings.HasSuffix(l, " 10.0.0.1:1,10.0.0.2:2") {
			break
		}
	}
	if got := ids(parent.Get(context.Background(), "proc_svc")); got != "10.0.0.1:1,10.0.0.2:2" {
		t.Fatalf("parent sees %s", got)
	}

	killed := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var gone time.Time
	for gone.IsZero() {
		l := observer.next(t, 2*ttl)
		ts, rest, _ := strings.Cut(l, " ")
		if rest == "10.0.0.2:2" {
			n, _ := strconv.ParseInt(ts, 10, 64)
			gone = time.Unix(0, n)
		} else if rest != "10.0.0.1:1,10.0.0.2:2" {
			t.Fatalf("observer saw %q after the kill", l)
		}
	}
	d := gone.Sub(killed)
	t.Logf("the killed instance disappeared from another process %v after SIGKILL (lease TTL %v)", d, ttl)
	// Its last renewal was at most TTL/3 before the kill; its lease ended
	// at most TTL after the kill.
	if d < ttl*2/3-100*time.Millisecond || d > ttl+500*time.Millisecond {
		t.Fatalf("disappeared %v after SIGKILL; want when its lease expired (between %v and %v)", d, ttl*2/3, ttl)
	}
	if got := ids(parent.Get(context.Background(), "proc_svc")); got != "10.0.0.2:2" {
		t.Fatalf("parent sees %s after the lease expired", got)
	}
}
