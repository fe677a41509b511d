package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"

	gsqlite "github.com/glebarez/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

var _ = discoverytest.NewBackend

func ExampleNew() {
	// Without WithDB or WithStore a Registry keeps everything in its own
	// memory; production code passes WithDB(db) and WithRedis(rdb).
	reg, err := discovery.New(discovery.WithoutHealthChecks())
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	fmt.Println(reg.Stats().StoreReads)
	// Output: 0
}

func ExampleRegistry_Register() {
	ctx := context.Background()
	reg, _ := discovery.New(discovery.WithoutHealthChecks())
	defer reg.Close() // deregisters

	g, err := reg.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080, Zone: "eu-1a"})
	if err != nil {
		panic(err)
	}
	in := g.Instance()
	fmt.Println(in.ID, in.Weight, in.HealthPath, g.Revision())

	_, err = reg.Register(ctx, discovery.Instance{Service: "db/svc", Host: "10.0.0.7", Port: 8080})
	fmt.Println(err)
	// Output:
	// 10.0.0.7:8080 100 /health 1
	// discovery: invalid service name "db/svc": character '/' not allowed (letters, digits, '-', '_', '.')
}

func ExampleRegistry_Get() {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	a, _ := discovery.New(discovery.WithStore(backend), discovery.WithoutHealthChecks()) // one process
	b, _ := discovery.New(discovery.WithStore(backend), discovery.WithoutHealthChecks()) // another
	defer b.Close()
	defer a.Close()

	a.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080})
	a.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.8", Port: 8080})

	svc, err := b.Get(ctx, "db_svc") // another process sees both
	if err != nil {
		panic(err)
	}
	for _, in := range svc.Instances {
		fmt.Println(in.Addr(), in.Status)
	}
	_, err = b.Get(ctx, "nope")
	fmt.Println(err)
	// Output:
	// 10.0.0.7:8080 unknown
	// 10.0.0.8:8080 unknown
	// discovery: service "nope" not found
}

func ExampleRegistry_Lookup() {
	ctx := context.Background()
	reg, _ := discovery.New(discovery.WithoutHealthChecks())
	defer reg.Close()
	reg.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080})

	for range 2 {
		res, _ := reg.Lookup(ctx, "db_svc")
		fmt.Println(res.Layer, res.Layer.Name(), res.Revision, res.Stale)
	}
	// Output:
	// L3 database 1 false
	// L1 memory 1 false
}

func ExampleRegistry_Pick() {
	ctx := context.Background()
	reg, _ := discovery.New(discovery.WithoutHealthChecks())
	defer reg.Close()
	for i, w := range []int{1, 3} {
		reg.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0." + strconv.Itoa(i+1), Port: 8080, Weight: w})
	}
	// Weights 1 and 3: every 4 picks in a row go once to 10.0.0.1 and three
	// times to 10.0.0.2, from a random place of the rotation in each process.
	picks := map[string]int{}
	for range 4 {
		sel, err := reg.Pick(ctx, "db_svc", discovery.UseStrategy(discovery.StrategyWeightedRoundRobin))
		if err != nil {
			panic(err)
		}
		picks[sel.Instance.Host]++
		sel.Done(nil) // with the call's error: feeds load, latency and passive health
	}
	fmt.Println("10.0.0.1:", picks["10.0.0.1"], "10.0.0.2:", picks["10.0.0.2"])
	// Output: 10.0.0.1: 1 10.0.0.2: 3
}

func ExampleRegistry_HTTPClient() {
	ctx := context.Background()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s%s", r.Host, r.URL.Path)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())

	reg, _ := discovery.New(discovery.WithoutHealthChecks())
	defer reg.Close()
	reg.Register(ctx, discovery.Instance{Service: "greeter", Host: u.Hostname(), Port: port})

	client := reg.HTTPClient() // http://<service>/path goes to an instance Pick chooses
	resp, err := client.Get("http://greeter/hi")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: hello from greeter/hi
}

func ExampleMigrate() {
	// A deployment whose services' database user may not change the schema
	// runs Migrate in a job of its own (with a user that may), and the
	// services pass WithoutMigration. Here the embedded SQLite stands in
	// for the shared PostgreSQL.
	ctx := context.Background()
	db, err := gorm.Open(gsqlite.Open("file:migrate_example?mode=memory&cache=shared"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		panic(err)
	}
	sqlDB, _ := db.DB()
	defer sqlDB.Close() // the Registry never closes the database
	if _, err := discovery.New(discovery.WithDB(db), discovery.WithoutMigration()); errors.Is(err, discovery.ErrUnsupported) {
		fmt.Println("before the job: the schema is missing")
	}
	if err := discovery.Migrate(ctx, db); err != nil { // discovery.WithNamespace(ns) for another namespace
		panic(err)
	}
	reg, err := discovery.New(discovery.WithDB(db), discovery.WithoutMigration(), discovery.WithoutHealthChecks())
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	fmt.Println("after the job:", reg.Stats().StoreErrors)
	// Output:
	// before the job: the schema is missing
	// after the job: 0
}
