package discovery_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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
		host := os.Getenv("CHILD_HOST")
		port, _ := strconv.Atoi(os.Getenv("CHILD_PORT"))
		if os.Getenv("CHILD_SERVE") == "1" { // a real service: its health endpoint answers until it dies
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				fail(err)
			}
			go func() { _ = http.Serve(ln, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})) }()
			host, port = "127.0.0.1", ln.Addr().(*net.TCPAddr).Port
		}
		g, err := r.Register(context.Background(), discovery.Instance{Service: "proc_svc", Host: host, Port: port})
		if err != nil {
			fail(err)
		}
		fmt.Printf("ready %d %s\n", g.Revision(), g.Instance().ID)
		_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin (or kills us)
		_ = r.Close()
	})
	testutil.RegisterChild("caller", callerChild)
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

// callerChild picks an instance of proc_svc every millisecond, says when it
// first picks each, and when stdin closes says when it last picked each.
func callerChild() {
	r := childRegistry()
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	last := map[string]int64{}
	for {
		select {
		case <-done:
			for id, at := range last {
				fmt.Printf("last %s %d\n", id, at)
			}
			fmt.Println("end")
			_ = r.Close()
			return
		case <-time.After(time.Millisecond):
		}
		sel, err := r.Pick(context.Background(), "proc_svc")
		if err != nil {
			continue
		}
		sel.Done(nil)
		if _, ok := last[sel.Instance.ID]; !ok {
			fmt.Printf("saw %s\n", sel.Instance.ID)
		}
		last[sel.Instance.ID] = time.Now().UnixNano()
	}
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
	health := discovery.WithoutHealthChecks() // made-up addresses
	if every, err := time.ParseDuration(os.Getenv("CHILD_CHECK")); err == nil {
		health = discovery.WithHealthCheck(every, every/2)
	}
	r, err := discovery.New(discovery.WithDB(db), discovery.WithRedis(redis.NewClient(opt)),
		discovery.WithNamespace(os.Getenv("CHILD_NS")), discovery.WithLeaseTTL(ttl), health, discovery.WithCloseDrain(0))
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

// processWorld is a database and a Redis shared by the test's process (the
// Registry returned) and the child processes it starts with env.
func processWorld(t *testing.T, ttl time.Duration) (env []string, parent *discovery.Registry) {
	t.Helper()
	ns := strings.TrimSuffix(testutil.Prefix(t), "_")
	env = []string{"CHILD_NS=" + ns, "CHILD_TTL=" + ttl.String()}
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
	parent, err := discovery.New(discovery.WithDB(db), discovery.WithRedis(rdb), discovery.WithNamespace(ns), discovery.WithLeaseTTL(ttl),
		discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = parent.Close() })
	return env, parent
}

// Real OS processes share one database and one Redis: one registers, the
// others see it; one is killed with SIGKILL and its instance disappears for
// the others when its lease expires.
func TestProcesses(t *testing.T) {
	const ttl = 3 * time.Second
	env, parent := processWorld(t, ttl)

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

// A service process (serving its health endpoint) killed with SIGKILL while
// two caller processes pick among it and another: neither caller picks it
// later than its lease TTL plus one health-check interval after the kill,
// and both go on picking the other.
func TestSIGKILLedServiceOutOfEveryCallersPicksWithinTTLPlusOneCheckInterval(t *testing.T) {
	const (
		ttl   = 3 * time.Second
		check = time.Second
	)
	env, _ := processWorld(t, ttl)
	serve := append(env, "CHILD_SERVE=1", "CHILD_CHECK="+check.String())
	var services []*child
	var idsOf []string
	for range 2 {
		c := startChild(t, "registrant", serve...)
		l := c.next(t, 10*time.Second)
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "ready" {
			t.Fatalf("registrant: %q", l)
		}
		services = append(services, c)
		idsOf = append(idsOf, f[2])
	}
	var callers []*child
	for range 2 {
		c := startChild(t, "caller", append(env, "CHILD_CHECK="+check.String())...)
		seen := map[string]bool{}
		for len(seen) < 2 {
			l := c.next(t, 10*time.Second)
			if id, ok := strings.CutPrefix(l, "saw "); ok {
				seen[id] = true
			}
		}
		callers = append(callers, c)
	}
	killed := time.Now()
	if err := services[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl + check + 500*time.Millisecond)
	for i, c := range callers {
		_ = c.stdin.Close()
		last := map[string]time.Time{}
		for l := c.next(t, 10*time.Second); l != "end"; l = c.next(t, 10*time.Second) {
			f := strings.Fields(l)
			if len(f) != 3 || f[0] != "last" {
				continue
			}
			n, _ := strconv.ParseInt(f[2], 10, 64)
			last[f[1]] = time.Unix(0, n)
		}
		d := last[idsOf[0]].Sub(killed)
		t.Logf("caller %d last picked the killed instance %v after SIGKILL (lease TTL %v, check interval %v); last picked the other %v after", i, d.Round(time.Millisecond), ttl, check, last[idsOf[1]].Sub(killed).Round(time.Millisecond))
		if d > ttl+check {
			t.Fatalf("caller %d picked the killed instance %v after SIGKILL; want within %v", i, d, ttl+check)
		}
		if last[idsOf[1]].Sub(killed) < ttl {
			t.Fatalf("caller %d stopped picking the live instance %v after the kill", i, last[idsOf[1]].Sub(killed))
		}
	}
}

// A registrant stopped (SIGSTOP) for twice its lease TTL loses its lease;
// resumed, it registers itself again within 1 s, and no process ever sees
// two copies of it.
func TestPausedRegistrantReregistersWithin1sOfResumeNeverTwoCopies(t *testing.T) {
	const ttl = 3 * time.Second
	env, parent := processWorld(t, ttl)
	observer := startChild(t, "observer", env...)
	observer.next(t, 10*time.Second) // not found yet
	reg := startChild(t, "registrant", append(env, "CHILD_HOST=10.0.0.1", "CHILD_PORT=1")...)
	if l := reg.next(t, 10*time.Second); !strings.HasPrefix(l, "ready") {
		t.Fatalf("registrant: %q", l)
	}
	type sighting struct {
		at  time.Time
		ids string
	}
	var seen []sighting
	read := func(until func(sighting) bool) {
		for {
			l := observer.next(t, 4*ttl)
			ts, rest, _ := strings.Cut(l, " ")
			n, _ := strconv.ParseInt(ts, 10, 64)
			s := sighting{time.Unix(0, n), rest}
			seen = append(seen, s)
			if until(s) {
				return
			}
		}
	}
	read(func(s sighting) bool { return s.ids == "10.0.0.1:1" })

	if err := reg.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	var parentDup int
	for time.Since(stopped) < 2*ttl {
		if svc, err := parent.Get(context.Background(), "proc_svc"); err == nil && len(svc.Instances) > 1 {
			parentDup++
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := reg.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	read(func(s sighting) bool { return s.at.After(resumed) && s.ids == "10.0.0.1:1" })
	back := seen[len(seen)-1].at.Sub(resumed)

	lapsed := false
	for _, s := range seen {
		if s.at.After(stopped) && s.at.Before(resumed) && !strings.Contains(s.ids, "10.0.0.1:1") {
			lapsed = true
		}
		if strings.Count(s.ids, "10.0.0.1:1") > 1 || strings.Count(s.ids, ",") > 0 {
			t.Fatalf("the observer saw two copies: %q", s.ids)
		}
	}
	t.Logf("paused for %v (lease TTL %v): the lease lapsed for the observer: %v; visible again %v after SIGCONT", 2*ttl, ttl, lapsed, back.Round(time.Millisecond))
	if !lapsed {
		t.Fatal("the lease did not lapse during the pause; the test proves nothing")
	}
	if back > time.Second {
		t.Fatalf("registered again %v after SIGCONT; want within 1s", back)
	}
	if parentDup > 0 {
		t.Fatalf("the parent saw two copies %d times", parentDup)
	}
}
