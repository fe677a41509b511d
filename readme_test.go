package discovery_test

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// README's example is there to be copied: it must compile against this
// module as it stands. It is vetted from a directory inside the module, so
// that its imports resolve to this code and go.mod's versions.
func TestREADMEExampleCompiles(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the example with")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```go\n(package main\n.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no ```go block holding a main package")
	}
	dir, err := os.MkdirTemp(".", "readme_example_")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "main.go"), m[1], 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(gobin, "vet", "./"+filepath.Base(dir)).CombinedOutput()
	if err != nil {
		t.Fatalf("README's example does not build: %v\n%s", err, out)
	}
}

// README's Options table is where users look for a setting: every exported
// function of this package that returns an Option is named in it.
func TestREADMEOptionsTableListsEveryOption(t *testing.T) {
	section := readmeSection(t, "## Options")
	var table strings.Builder
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "|") {
			table.WriteString(line + "\n")
		}
	}
	_, files := packageFiles(t)
	for name, f := range files {
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !fn.Name.IsExported() || fn.Type.Results == nil || len(fn.Type.Results.List) != 1 {
				continue
			}
			if id, ok := fn.Type.Results.List[0].Type.(*ast.Ident); !ok || id.Name != "Option" {
				continue
			}
			if n := fn.Name.Name; !strings.Contains(table.String(), "`"+n+"(") && !strings.Contains(table.String(), "`"+n+"`") {
				t.Errorf("README's Options table does not list %s (%s)", n, name)
			}
		}
	}
}

// hookCount is a go-redis hook, as tracing and metrics libraries add, that
// counts the commands it sees.
type hookCount struct{ n atomic.Int64 }

func (h *hookCount) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *hookCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *hookCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

// README says what New does with a go-redis client that does not bound its
// own commands (it sends them through a WithTimeout clone), and so what
// becomes of the hooks the caller added to it (tracing, metrics): that must
// be what happens, and the way it gives to keep them must keep them.
func TestREADMERedisClientHooks(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)\*\*The Redis client's timeouts\.\*\*(.*?)\n\n`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no paragraph on the Redis client's timeouts")
	}
	para := strings.Join(strings.Fields(string(m[1])), " ")
	hooked := func(opt *redis.Options) int64 {
		t.Helper()
		opt.Addr = miniredis.RunT(t).Addr()
		c := redis.NewClient(opt)
		defer func() { _ = c.Close() }()
		h := &hookCount{}
		c.AddHook(h)
		r, err := discovery.New(discovery.WithRedis(c), discovery.WithStore(discoverytest.NewBackend()), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = r.Get(context.Background(), "web") // a Redis GET, a miss
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		return h.n.Load()
	}
	if n := hooked(&redis.Options{ContextTimeoutEnabled: true}); n == 0 {
		t.Fatal("a client that bounds its own commands is used as given, yet its hook saw none of the Registry's commands")
	}
	atDefaults := hooked(&redis.Options{})
	switch {
	case atDefaults == 0 && strings.Contains(para, "shares its connections and hooks"):
		t.Errorf("README: %q; but the hook of a client at go-redis's defaults saw none of the Registry's commands", "a clone that shares its connections and hooks")
	case atDefaults == 0 && !strings.Contains(para, "not its hooks"):
		t.Errorf("README does not say that a client's hooks are left out of the clone New makes")
	}
}

// README's Logs table is what operators alert on: every message logged at
// info level or above, by this package, by the Redis cache that logs
// through the Registry's logger and by package auth, is in it, whole (the
// prefix "discovery: " may be left out of a second message in a row), in
// a row whose level column names its level and whose fields column names
// every field the call itself adds.
func TestREADMELogsTableListsEveryMessage(t *testing.T) {
	section := readmeSection(t, "### Logs")
	var rows []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "|") {
			rows = append(rows, line)
		}
	}
	for _, dir := range []string{".", "internal/cache/rediscache", "auth"} {
		fset, files := dirFiles(t, dir)
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || (sel.Sel.Name != "Info" && sel.Sel.Name != "Warn" && sel.Sel.Name != "Error") {
					return true
				}
				lit, ok := call.Args[0].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING || !strings.HasPrefix(lit.Value, `"discovery: `) {
					return true
				}
				msg := strings.Trim(lit.Value, `"`)
				var row []string
				for _, r := range rows {
					if strings.Contains(r, "`"+msg+"`") || strings.Contains(r, "`"+strings.TrimPrefix(msg, "discovery: ")+"`") {
						row = strings.Split(r, "|")
						break
					}
				}
				if len(row) < 4 {
					t.Errorf("README's Logs table does not list %q (%s)", msg, fset.Position(lit.Pos()))
					return true
				}
				if level := strings.ToLower(sel.Sel.Name); !strings.Contains(row[2], level) {
					t.Errorf("README's Logs table gives %q the level %q; it is logged at %s (%s)", msg, strings.TrimSpace(row[2]), level, fset.Position(lit.Pos()))
				}
				for _, key := range zapKeys(call.Args[1:]) {
					if !strings.Contains(row[3], "`"+key+"`") {
						t.Errorf("README's Logs table does not name the field %q of %q (%s)", key, msg, fset.Position(lit.Pos()))
					}
				}
				return true
			})
		}
	}
}

// zapKeys returns the keys of the zap fields built in args: zap.Error's
// "error", and the first argument of the others.
func zapKeys(args []ast.Expr) []string {
	var keys []string
	for _, a := range args {
		ast.Inspect(a, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "zap" {
				return true
			}
			if sel.Sel.Name == "Error" {
				keys = append(keys, "error")
			} else if len(call.Args) > 0 {
				if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					keys = append(keys, strings.Trim(lit.Value, `"`))
				}
			}
			return true
		})
	}
	return keys
}

// readmeSection returns the text of README.md under heading (as "## Options"),
// up to the next heading of its level.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	level := heading[:strings.IndexByte(heading, ' ')+1]
	m := regexp.MustCompile("(?s)\n" + regexp.QuoteMeta(heading) + "\n(.*?)\n" + level).FindSubmatch(readme)
	if m == nil {
		t.Fatalf("README.md has no %q section", heading)
	}
	return string(m[1])
}

// packageFiles parses the package's own files (not its tests), by name.
func packageFiles(t *testing.T) (*token.FileSet, map[string]*ast.File) {
	t.Helper()
	return dirFiles(t, ".")
}

// dirFiles parses the files of the package in dir (not its tests), by name.
func dirFiles(t *testing.T, dir string) (*token.FileSet, map[string]*ast.File) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset, files := token.NewFileSet(), map[string]*ast.File{}
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = f
	}
	return fset, files
}

// Where the godoc gives the L1 freshness window as a number of seconds, it
// says the window is jittered (WithCacheJitter): a user who reads "5 s"
// alone expects a lost change message to be made good within 5 s, and
// waits up to 5.5 s.
func TestGodocGivesTheFreshnessWindowWithItsJitter(t *testing.T) {
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	five := regexp.MustCompile(`(^|[^.\d])5 s\b`)
	check := func(where string, doc *ast.CommentGroup) {
		if doc == nil {
			return
		}
		text := strings.Join(strings.Fields(doc.Text()), " ")
		for _, s := range regexp.MustCompile(`[.;] `).Split(text, -1) {
			low := strings.ToLower(s)
			if strings.Contains(low, "fresh") && five.MatchString(s) && !strings.Contains(s, "10%") && !strings.Contains(low, "jitter") {
				t.Errorf("%s: %q gives the freshness window without its jitter", where, s)
			}
		}
	}
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		check(name+": package doc", f.Doc)
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Name.IsExported() {
					check(name+": "+d.Name.Name, d.Doc)
				}
			case *ast.GenDecl:
				check(name+": declaration", d.Doc)
				for _, s := range d.Specs {
					if v, ok := s.(*ast.ValueSpec); ok {
						check(name+": "+v.Names[0].Name, v.Doc)
					}
				}
			}
		}
	}
}

// loadFailingStore is the shared backend as one process reaches it while
// its own reads of services fail (a partition between it and the database):
// the others still write, and it still hears their changes.
type loadFailingStore struct {
	*discoverytest.Backend
	fail atomic.Bool
}

func (s *loadFailingStore) Load(ctx context.Context, name string) (*discovery.Service, error) {
	if s.fail.Load() {
		return nil, &discovery.BackendError{Backend: "database", Op: "load", Err: errors.New("connection refused")}
	}
	return s.Backend.Load(ctx, name)
}

// README says what a process does with an entry a change message said is
// superseded: that is the promise a caller relies on to stop picking a
// deregistered instance. While the process's own loads fail it serves the
// superseded entry, marked stale (stale-if-error), and README must say so
// rather than promise that it is never served again.
func TestREADMESupersededEntryWhileLoadsFail(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	clock := discoverytest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	writer := discoverytest.NewRegistry(t, backend, discovery.WithClock(clock), discovery.WithoutHealthChecks())
	fs := &loadFailingStore{Backend: backend}
	reader, err := discovery.New(discovery.WithStore(fs), discovery.WithClock(clock), discovery.WithoutHealthChecks())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reader.Close() })
	if _, err := writer.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	gone, err := writer.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.8", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if svc, err := reader.Get(ctx, "db_svc"); err != nil || len(svc.Instances) != 2 {
		t.Fatalf("Get = %v, %v; want 2 instances", svc, err)
	}
	fs.fail.Store(true)
	if _, err := reader.Get(ctx, "other"); !errors.Is(err, discovery.ErrUnavailable) {
		t.Fatalf("Get of an uncached service with loads failing = %v; want ErrUnavailable", err)
	}
	if err := gone.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := reader.Lookup(ctx, "db_svc")
	servedSuperseded := err == nil && res.Stale && len(res.Service.Instances) == 2
	if !servedSuperseded {
		t.Logf("Lookup after the change, loads failing = %+v, %v", res, err)
	}

	section := readmeSection(t, "## How lookups stay fresh")
	m := regexp.MustCompile(`(?s)- \*\*L1 freshness\.\*\*(.*?)\n- \*\*`).FindStringSubmatch(section)
	if m == nil {
		t.Fatal("README.md has no L1 freshness paragraph")
	}
	para := strings.Join(strings.Fields(m[1]), " ")
	if servedSuperseded && !strings.Contains(strings.ToLower(para), "while its loads fail") {
		t.Errorf("README: %q; but with this process's loads failing, a Lookup after the change message served the superseded revision %d, stale, with the deregistered instance",
			"Once a change message has announced a newer revision the old entry is never served again", res.Revision)
	}
}

// errors.go's godoc tells callers what every error of the package looks
// like. A call whose context ended first returns that context's error as it
// is (README: "a caller whose context ends first gets its context's error"),
// which does not start with "discovery:"; the godoc must not promise that
// every error does without saying so.
func TestGodocErrorPrefixNamesTheContextException(t *testing.T) {
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithoutHealthChecks())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var bare []string
	for name, call := range map[string]func() error{
		"Get": func() error { _, err := r.Get(ctx, "web"); return err },
		"Register": func() error {
			_, err := r.Register(ctx, discovery.Instance{Service: "web", Host: "127.0.0.1", Port: 1})
			return err
		},
		"Services": func() error { _, err := r.Services(ctx); return err },
	} {
		err := call()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context = %v; want the context's error", name, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "discovery:") {
			bare = append(bare, name+": "+err.Error())
		}
	}
	if len(bare) == 0 {
		return
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "errors.go", nil, parser.ParseComments|parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Doc == nil {
			continue
		}
		doc := strings.Join(strings.Fields(g.Doc.Text()), " ")
		if strings.Contains(doc, `starts with "discovery:"`) && !strings.Contains(doc, "context") {
			t.Errorf("errors.go: %q; but %s", doc, strings.Join(bare, "; "))
		}
	}
}

// README says how long Registration.Drain waits without fan-out before it
// deregisters: the longest L1 freshness window plus the propagation delay
// (TestDrainWithoutFanOutWaitsFreshness). An operator sizing a shutdown
// budget from README must read the figure the code waits.
func TestREADMEDrainWaitWithoutFanOut(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)`Registration.Drain\\(ctx\\)`(.*?)\n\n").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no paragraph on Registration.Drain")
	}
	para := strings.Join(strings.Fields(string(m[1])), " ")
	wait := longestFresh + discovery.DefaultPropagationDelay
	want := strconv.FormatFloat(wait.Seconds(), 'f', -1, 64) + " s"
	if !strings.Contains(para, "("+want+")") {
		t.Errorf("README's Drain paragraph does not give the wait without fan-out as (%s), the longest freshness window (%v) plus the propagation delay (%v):\n%s",
			want, longestFresh, discovery.DefaultPropagationDelay, para)
	}
}

// README says how long "no such service" is remembered and what clears it.
// A registration clears it in the processes that hear of changes; on a SQL
// database without Redis nothing tells the others, and they keep answering
// ErrNotFound until the negative TTL ends (WithNegativeTTL's godoc says so).
// README must not promise "everywhere at once" to a deployment without
// Redis, whose callers would retry at once and fail again.
func TestREADMENegativeLookupWithoutFanOut(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, worldKind{name: "sqlite", sql: sqlite})
	a, b := w.registry(t), w.registry(t)
	if _, err := b.Get(ctx, "new_svc"); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("Get of a service nobody registered = %v; want ErrNotFound", err)
	}
	mustRegister(t, a, inst("new_svc", "10.0.0.1", 1))
	_, err := b.Get(ctx, "new_svc")
	if !errors.Is(err, discovery.ErrNotFound) {
		return // cleared at once after all: any wording holds
	}
	section := readmeSection(t, "## How lookups stay fresh")
	m := regexp.MustCompile(`(?s)- \*\*Stampedes\.\*\*(.*?)\n- \*\*`).FindStringSubmatch(section)
	if m == nil {
		t.Fatal("README.md has no Stampedes paragraph")
	}
	para := strings.Join(strings.Fields(m[1]), " ")
	if !strings.Contains(para, "without Redis") {
		t.Errorf("README: %q; but on SQLite without Redis another process's Get right after the registration = %v",
			para, err)
	}
}

// README says what Invalidate does to the other processes: they reload the
// service on its forced change message. Without Redis there is no message
// (Invalidate's godoc says so): the others keep their entry until its
// freshness window ends, and README must say so to an operator who runs
// Invalidate on a deployment without Redis after fixing a row by hand.
func TestREADMEInvalidateWithoutRedis(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, worldKind{name: "sqlite", sql: sqlite})
	a, b := w.registry(t), w.registry(t)
	mustRegister(t, a, inst("db_svc", "10.0.0.1", 1))
	if _, err := b.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	if err := a.Invalidate(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	res, err := b.Lookup(ctx, "db_svc")
	if err != nil || res.Layer != discovery.LayerL1 {
		return // reloaded after all: any wording holds
	}
	section := readmeSection(t, "## How lookups stay fresh")
	m := regexp.MustCompile(`(?s)- \*\*Invalidate\.\*\*(.*?)\n- \*\*`).FindStringSubmatch(section)
	if m == nil {
		t.Fatal("README.md has no Invalidate paragraph")
	}
	if para := strings.Join(strings.Fields(m[1]), " "); !strings.Contains(para, "Without Redis") {
		t.Errorf("README's Invalidate paragraph says every other process reloads the service on its forced change message; "+
			"but on SQLite without Redis another process's Lookup right after the Invalidate was answered by %v", res.Layer)
	}
}

// README's Metrics table is what dashboards and alerts are written from:
// every metric the collector exports is in it, with its type and label
// names, and every row names a metric the collector exports.
func TestREADMEMetricsTableMatchesTheCollector(t *testing.T) {
	type row struct{ typ, labels string }
	table := map[string]row{}
	for _, line := range strings.Split(readmeSection(t, "### Metrics"), "\n") {
		cols := strings.Split(line, "|")
		if len(cols) < 5 || !strings.HasPrefix(strings.TrimSpace(cols[1]), "`discovery_") {
			continue
		}
		// label names are the backticked words outside parentheses (which give values)
		labels := regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(cols[3], "")
		var names []string
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(labels, -1) {
			names = append(names, m[1])
		}
		sort.Strings(names)
		table[strings.Trim(strings.TrimSpace(cols[1]), "`")] = row{strings.TrimSpace(cols[2]), strings.Join(names, ",")}
	}
	if len(table) == 0 {
		t.Fatal("README.md's Metrics section has no table of metrics")
	}

	ctx := context.Background()
	reg := prometheus.NewRegistry()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	r := discoverytest.NewRegistry(t, discoverytest.NewBackend(), discovery.WithRedis(rdb), discovery.WithMetrics(reg), discovery.WithoutHealthChecks())
	mustRegister(t, r, inst("web", "10.0.0.1", 80))
	if _, err := r.Get(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	sel, err := r.Pick(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	sel.Done(nil)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		name := f.GetName()
		exported[name] = true
		want, ok := table[name]
		if !ok {
			t.Errorf("README's Metrics table does not list %s", name)
			continue
		}
		if typ := strings.ToLower(f.GetType().String()); typ != want.typ {
			t.Errorf("README gives %s the type %q; it is a %s", name, want.typ, typ)
		}
		if len(f.GetMetric()) == 0 {
			continue
		}
		var names []string
		for _, l := range f.GetMetric()[0].GetLabel() {
			names = append(names, l.GetName())
		}
		sort.Strings(names)
		if got := strings.Join(names, ","); got != want.labels {
			t.Errorf("README gives %s the labels %q; it has %q", name, want.labels, got)
		}
	}
	for name := range table {
		if !exported[name] {
			t.Errorf("README's Metrics table lists %s, which the collector does not export", name)
		}
	}
}

// README's test snippets (a shared backend and a fake clock, then advancing
// it in renewal-sized steps) are what users paste into their own tests: they
// must compile, together, in a test function, as they stand.
func TestREADMETestSnippetsCompile(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the snippets with")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	for _, start := range []string{"backend := discoverytest.NewBackend()", "for range 12 {"} {
		m := regexp.MustCompile("(?s)```go\n(" + regexp.QuoteMeta(start) + ".*?)```").FindSubmatch(readme)
		if m == nil {
			t.Fatalf("README.md has no ```go block starting %q", start)
		}
		body.Write(m[1])
	}
	src := "package snippets\n\nimport (\n\t\"testing\"\n\t\"time\"\n\n\t\"github.com/rssbot/discovery\"\n\t\"github.com/rssbot/discovery/discoverytest\"\n)\n\n" +
		"func TestSnippets(t *testing.T) {\n" + body.String() + "\t_, _ = a, b\n}\n"
	dir, err := os.MkdirTemp(".", "readme_snippets_")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "snippets_test.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(gobin, "vet", "./"+filepath.Base(dir)).CombinedOutput()
	if err != nil {
		t.Fatalf("README's test snippets do not build: %v\n%s\n%s", err, out, src)
	}
}
