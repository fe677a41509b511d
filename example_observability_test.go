package discovery_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rssbot/discovery"
)

func ExampleWithMetrics() {
	ctx := context.Background()
	metrics := prometheus.NewRegistry() // serve it with promhttp.HandlerFor(metrics, ...)
	reg, _ := discovery.New(discovery.WithMetrics(metrics), discovery.WithoutHealthChecks())
	defer reg.Close()

	reg.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080})
	reg.Get(ctx, "db_svc") // loaded
	reg.Get(ctx, "db_svc") // from L1

	n, _ := testutil.GatherAndCount(metrics, "discovery_lookups_total")
	fmt.Println(n, "series of discovery_lookups_total (one per layer)")
	err := testutil.GatherAndCompare(metrics, strings.NewReader(`
# HELP discovery_cache_hits_total Cache hits: lookups L1 answered, Redis reads that found a usable snapshot.
# TYPE discovery_cache_hits_total counter
discovery_cache_hits_total{layer="L1"} 1
`), "discovery_cache_hits_total")
	fmt.Println(err)
	// Output:
	// 3 series of discovery_lookups_total (one per layer)
	// <nil>
}

func ExampleRegistry_Overview() {
	ctx := context.Background()
	reg, _ := discovery.New(discovery.WithoutHealthChecks())
	defer reg.Close()
	reg.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080})
	reg.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.8", Port: 8080})

	ov, err := reg.Overview(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println(ov.TotalServices, "service,", ov.HealthyServices, "healthy")
	for _, s := range ov.Services {
		fmt.Println(s.Name, s.Status, s.Method, s.Usable, "of", s.Live, "usable")
	}
	// Output:
	// 1 service, 1 healthy
	// db_svc healthy http 2 of 2 usable
}

func ExampleRegistry_AdminHandler() {
	ctx := context.Background()
	reg, _ := discovery.New(discovery.WithoutHealthChecks())
	defer reg.Close()
	reg.Register(ctx, discovery.Instance{Service: "db_svc", Host: "10.0.0.7", Port: 8080})

	// Mount it on your own server, under a path ending in "/".
	mux := http.NewServeMux()
	mux.Handle("/discovery/", http.StripPrefix("/discovery", reg.AdminHandler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, _ := http.Get(srv.URL + "/discovery/services")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(body))

	// Without an Authorizer the handler is read-only.
	req, _ := http.NewRequest("DELETE", srv.URL+"/discovery/services/db_svc/instances/10.0.0.7:8080", nil)
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	fmt.Println(resp.Status)
	// Output:
	// {
	//   "services": [
	//     {
	//       "name": "db_svc",
	//       "revision": 1,
	//       "live": 1,
	//       "expired": 0
	//     }
	//   ]
	// }
	// 403 Forbidden
}
