// Quickstart starts three small HTTP services in this process that register
// themselves, looks the service up, prints the services and instances,
// deregisters one and shows the change.
//
//	go run ./examples/quickstart                       # embedded SQLite, no servers
//	go run ./examples/quickstart -postgres "$DSN" -redis redis://127.0.0.1:6379/0
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/rssbot/discovery"
)

func main() {
	pgDSN := flag.String("postgres", "", "PostgreSQL DSN (default: an embedded SQLite database in a temporary directory)")
	redisURL := flag.String("redis", "", "Redis URL for the shared L2 cache and change fan-out (default: none)")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := run(ctx, *pgDSN, *redisURL, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, pgDSN, redisURL string, out io.Writer) error {
	var dialector gorm.Dialector
	if pgDSN != "" {
		dialector = postgres.Open(pgDSN)
	} else {
		dir, err := os.MkdirTemp("", "discovery-quickstart")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		dialector = sqlite.Open("file:" + filepath.Join(dir, "registry.db") + "?_txlock=immediate&_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	}
	db, err := gorm.Open(dialector, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	opts := []discovery.Option{discovery.WithDB(db), discovery.WithNamespace("quickstart")}
	if redisURL != "" {
		ropt, err := redis.ParseURL(redisURL)
		if err != nil {
			return err
		}
		rdb := redis.NewClient(ropt)
		defer rdb.Close()
		opts = append(opts, discovery.WithRedis(rdb))
	}
	reg, err := discovery.New(opts...)
	if err != nil {
		return err
	}
	defer reg.Close()

	// Three instances of db_svc, each a real HTTP server on a loopback port
	// that registers itself at start-up.
	var regs []*discovery.Registration
	for i, zone := range []string{"eu-1a", "eu-1b", "eu-1c"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "db_svc instance %d\n", i+1)
		}), ReadHeaderTimeout: time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		g, err := reg.Register(ctx, discovery.Instance{
			Service: "db_svc", Host: "127.0.0.1", Port: port, Zone: zone, Version: "v1.4.2",
			Tags: []string{"primary"}, Metadata: map[string]string{"team": "storage"},
		})
		if err != nil {
			return err
		}
		regs = append(regs, g)
	}
	if _, err := reg.Register(ctx, discovery.Instance{Service: "user_svc", Host: "127.0.0.1", Port: 9000, Method: discovery.MethodRouter}); err != nil {
		return err
	}

	res, err := reg.Lookup(ctx, "db_svc")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Get(db_svc): %d instances, revision %d, answered by %s (%s)\n", len(res.Service.Instances), res.Revision, res.Layer, res.Layer.Name())
	again, _ := reg.Lookup(ctx, "db_svc")
	fmt.Fprintf(out, "Get(db_svc) again: answered by %s (%s)\n", again.Layer, again.Layer.Name())

	// Pick an instance with the balancer (p2c_ewma by default), call it, and
	// report the outcome; then let the HTTP client do all of that.
	sel, err := reg.Pick(ctx, "db_svc")
	if err != nil {
		return err
	}
	resp, err := http.Get("http://" + sel.Instance.Addr() + "/")
	sel.Done(err)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Fprintf(out, "Pick(db_svc) -> %s (%s): %s\n", sel.Instance.ID, sel.Strategy, strings.TrimSpace(string(body)))
	client := reg.HTTPClient(discovery.BaseTransport(&http.Transport{DisableKeepAlives: true}))
	for range 3 {
		resp, err := client.Get("http://db_svc/")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(out, "GET http://db_svc/ -> %s\n", strings.TrimSpace(string(body)))
	}

	if err := printTable(ctx, reg, out); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nDeregistering %s ...\n\n", regs[1].Instance().ID)
	if err := regs[1].Deregister(ctx); err != nil {
		return err
	}
	return printTable(ctx, reg, out)
}

func printTable(ctx context.Context, reg *discovery.Registry, out io.Writer) error {
	infos, err := reg.Services(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tREVISION\tINSTANCE\tMETHOD\tZONE\tWEIGHT\tSTATUS\tLEASE LEFT")
	for _, info := range infos {
		svc, err := reg.Get(ctx, info.Name)
		if err != nil {
			fmt.Fprintf(tw, "%s\t%d\t(none)\t\t\t\t\t\n", info.Name, info.Revision)
			continue
		}
		for _, in := range svc.Instances {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\n", svc.Name, svc.Revision, in.ID, in.Method, in.Zone, in.Weight,
				in.Status, time.Until(in.ExpiresAt).Round(time.Second))
		}
	}
	return tw.Flush()
}
