// Dashboard serves the registry's admin dashboard over a few demo services
// that register themselves in this process, each a real HTTP server with a
// /health endpoint; one of them starts failing its health checks after a
// while; orders has two versions of a configuration, which the dashboard
// shows under "configuration". No servers needed: the Registry keeps
// everything in its memory.
//
//	go run ./examples/dashboard                  # then open http://127.0.0.1:8080/discovery/
//	go run ./examples/dashboard -addr 127.0.0.1:9000 -fail-after 10s
//
// The dashboard is mounted at /discovery/ (Registry.AdminHandler), the
// Prometheus metrics at /metrics (WithMetrics). It answers only requests
// for localhost, the loopback addresses and the host of -addr
// (AdminAllowedHosts): its reads are open, and a web page whose own name
// its server points at this address (DNS rebinding) would read them from
// the browser of whoever opened the dashboard.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/rssbot/discovery"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "where to serve the dashboard")
	failAfter := flag.Duration("fail-after", 20*time.Second, "when the failing demo instance starts failing its health checks")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	logger, _ := zap.NewDevelopment()
	d, err := start(ctx, config{addr: *addr, failAfter: *failAfter, interval: time.Second, log: logger}, os.Stdout)
	if err != nil {
		log.Fatal(err)
	}
	<-ctx.Done()
	if err := d.Close(); err != nil {
		log.Fatal(err)
	}
}

type config struct {
	addr      string
	failAfter time.Duration // when the failing instance starts failing
	interval  time.Duration // health-check interval
	log       *zap.Logger
}

// demo is the running example: a Registry, the demo instances and the
// server of the dashboard.
type demo struct {
	reg  *discovery.Registry
	srv  *http.Server
	url  string // of the dashboard
	base string // of the server

	mu        sync.Mutex
	instances []*instance
	stop      chan struct{}
	wg        sync.WaitGroup
}

// instance is one demo instance: an HTTP server that answers /health.
type instance struct {
	srv     *http.Server
	failing atomic.Bool
}

// The demo services and their instances; the last instance of payments is
// the one that fails.
var demoServices = []struct {
	name      string
	instances int
	zone      string
}{{"orders", 2, "eu-1a"}, {"inventory", 2, "eu-1b"}, {"payments", 2, "eu-1a"}}

func start(ctx context.Context, cfg config, out io.Writer) (*demo, error) {
	if cfg.log == nil {
		cfg.log = zap.NewNop()
	}
	metrics := prometheus.NewRegistry()
	reg, err := discovery.New(discovery.WithLogger(cfg.log), discovery.WithMetrics(metrics),
		discovery.WithHealthCheck(cfg.interval, cfg.interval/2), discovery.WithCloseDrain(0))
	if err != nil {
		return nil, err
	}
	d := &demo{reg: reg, stop: make(chan struct{})}
	var failing *instance
	for _, s := range demoServices {
		for range s.instances {
			in, err := d.add(ctx, s.name, s.zone)
			if err != nil {
				_ = d.Close()
				return nil, err
			}
			if s.name == "payments" {
				failing = in
			}
		}
	}
	// Two versions of orders' configuration, for its history on the
	// dashboard (the instances answer the notifications with 200).
	for _, doc := range []string{`{"balancer":{"strategy":"p2c_ewma"},"timeout_ms":800}`, `{"balancer":{"strategy":"p2c_ewma"},"timeout_ms":500}`} {
		if _, err := reg.UpdateConfig(ctx, "orders", json.RawMessage(doc)); err != nil {
			_ = d.Close()
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		_ = d.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	admin := reg.AdminHandler(discovery.AdminTitle("discovery demo"), discovery.AdminAllowedHosts(allowedHosts(cfg.addr)...))
	mux.Handle("/discovery/", http.StripPrefix("/discovery", admin))
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	mux.Handle("GET /{$}", http.RedirectHandler("/discovery/", http.StatusFound))
	d.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	d.base = "http://" + ln.Addr().String()
	d.url = d.base + "/discovery/"
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.log.Error("dashboard server failed", zap.Error(err))
		}
	}()
	go func() { // traffic: lookups and picks, so that the services are in use and checked
		defer d.wg.Done()
		d.traffic(ctx, failing, cfg.failAfter)
	}()
	fmt.Fprintf(out, "dashboard: %s   metrics: %s/metrics\n", d.url, d.base)
	fmt.Fprintf(out, "payments' second instance fails its health checks after %v\n", cfg.failAfter)
	return d, nil
}

// add starts one instance of service and registers it.
func (d *demo) add(ctx context.Context, service, zone string) (*instance, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	in := &instance{}
	in.srv = &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			fmt.Fprintf(w, "%s at %s\n", service, ln.Addr())
			return
		}
		time.Sleep(time.Duration(1+rand.IntN(25)) * time.Millisecond) // a response time worth drawing
		if in.failing.Load() {
			http.Error(w, "database connection lost", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = in.srv.Serve(ln) }()
	d.mu.Lock()
	d.instances = append(d.instances, in)
	d.mu.Unlock()
	port := ln.Addr().(*net.TCPAddr).Port
	_, err = d.reg.Register(ctx, discovery.Instance{Service: service, Host: "127.0.0.1", Port: port, Zone: zone, Version: "v1.0.0"})
	return in, err
}

// traffic looks the demo services up and picks instances every 100 ms, and
// makes the failing instance fail when its time comes.
func (d *demo) traffic(ctx context.Context, failing *instance, failAfter time.Duration) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	fail := time.NewTimer(failAfter)
	defer fail.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-ctx.Done():
			return
		case <-fail.C:
			if failing != nil {
				failing.failing.Store(true)
			}
		case <-tick.C:
			for _, s := range demoServices {
				// A lookup, then a pick, as an application does: a Pick alone
				// counts no lookup, and the dashboard's L1 hit rate stayed 0.
				if _, err := d.reg.Get(ctx, s.name); err != nil {
					continue
				}
				if sel, err := d.reg.Pick(ctx, s.name); err == nil {
					sel.DoneLatency(nil, time.Duration(1+rand.IntN(20))*time.Millisecond)
				}
			}
		}
	}
}

// Close stops the dashboard, deregisters and stops every instance, and
// closes the Registry.
func (d *demo) Close() error {
	close(d.stop)
	var errs []error
	if d.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		errs = append(errs, d.srv.Shutdown(ctx))
		cancel()
	}
	d.wg.Wait()
	errs = append(errs, d.reg.Close())
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, in := range d.instances {
		errs = append(errs, in.srv.Close())
	}
	return errors.Join(errs...)
}

// allowedHosts are the names the dashboard is opened by: localhost, the
// loopback addresses, and the host it listens on unless that is every
// address (0.0.0.0, ::, or none: open it by one of the others then, or
// add the name you use here).
func allowedHosts(addr string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
			hosts = append(hosts, host)
		}
	}
	return hosts
}
