package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The dashboard example must stop everything it starts: its server, the
// demo instances' servers, the Registry. No goroutine is ignored: ignoring
// those blocked in internal/poll.runtime_pollWait hid every leaked server
// (its Accept loop waits there).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type overview struct {
	TotalServices int `json:"total_services"`
	Services      []struct {
		Name      string `json:"name"`
		Status    string `json:"status"`
		Instances []struct {
			ID     string    `json:"id"`
			Status string    `json:"status"`
			RTT    []float64 `json:"rtt_ms"`
		} `json:"instances"`
	} `json:"services"`
}

// startDemo runs the example on a free port, stopped when the test ends.
func startDemo(t *testing.T, failAfter time.Duration) *demo {
	t.Helper()
	var out bytes.Buffer
	d, err := start(context.Background(), config{addr: "127.0.0.1:0", failAfter: failAfter, interval: 300 * time.Millisecond}, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if !strings.Contains(out.String(), d.url) {
		t.Fatalf("the example does not say where the dashboard is:\n%s", out.String())
	}
	return d
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d %s", url, resp.StatusCode, body)
	}
	return body
}

// The example serves the dashboard and the metrics over three services
// with real health endpoints, and the failing instance turns unhealthy.
func TestDashboardExample(t *testing.T) {
	d := startDemo(t, 500*time.Millisecond)
	if page := get(t, d.url); !bytes.Contains(page, []byte("discovery demo")) {
		t.Fatalf("dashboard page:\n%s", page)
	}
	deadline := time.Now().Add(20 * time.Second)
	var ov overview
	for {
		if err := json.Unmarshal(get(t, d.url+"overview"), &ov); err != nil {
			t.Fatal(err)
		}
		unhealthy, checked := 0, 0
		for _, s := range ov.Services {
			for _, in := range s.Instances {
				if in.Status == "unhealthy" {
					unhealthy++
					if s.Name != "payments" {
						t.Fatalf("%s of %s is unhealthy; only payments' second instance fails", in.ID, s.Name)
					}
				}
				if len(in.RTT) > 0 {
					checked++
				}
			}
		}
		if ov.TotalServices == 3 && unhealthy == 1 && checked == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no unhealthy payments instance with every instance checked within 20 s: %+v", ov)
		}
		time.Sleep(100 * time.Millisecond)
	}
	metrics := string(get(t, d.base+"/metrics"))
	for _, want := range []string{`discovery_instances{service="payments",status="unhealthy"} 1`, `discovery_health_checks_total{result="fail"}`,
		`discovery_picks_total{service="orders",strategy="p2c_ewma"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// The demo's traffic looks its services up before it picks, as its comment
// says and as an application does, so the dashboard's L1 hit rate shows
// what the cache answers. It only picked, which counts no lookup: the
// dashboard read "L1 (memory) hit rate 0.0%" for as long as it ran.
func TestDashboardExampleShowsL1Hits(t *testing.T) {
	d := startDemo(t, time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ov struct {
			Cache []struct {
				Layer   string  `json:"layer"`
				Hits    uint64  `json:"hits"`
				HitRate float64 `json:"hit_rate"`
			} `json:"cache"`
		}
		if err := json.Unmarshal(get(t, d.url+"overview"), &ov); err != nil {
			t.Fatal(err)
		}
		if len(ov.Cache) > 0 && ov.Cache[0].Layer == "L1" && ov.Cache[0].Hits > 0 && ov.Cache[0].HitRate > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s of the demo's traffic the dashboard shows no L1 hit: %+v", ov.Cache)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The demo's admin reads are open, so it answers only the names it is
// opened by: a page whose own name its server points at 127.0.0.1 (DNS
// rebinding) read every service, instance and address through the
// browser of whoever had the dashboard open.
func TestDashboardExampleRefusesOtherHosts(t *testing.T) {
	d := startDemo(t, time.Hour)
	for _, tt := range []struct {
		host string
		want int
	}{
		{"localhost:8080", http.StatusOK},
		{strings.TrimPrefix(d.base, "http://"), http.StatusOK},
		{"rebind.attacker.example", http.StatusMisdirectedRequest},
		{"rebind.attacker.example:8080", http.StatusMisdirectedRequest},
	} {
		req, err := http.NewRequest(http.MethodGet, d.url+"overview", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = tt.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("GET /discovery/overview with Host %q = %d; want %d", tt.host, resp.StatusCode, tt.want)
		}
	}
	loopback := []string{"localhost", "127.0.0.1", "::1"}
	for addr, want := range map[string][]string{
		"0.0.0.0:8080": loopback, ":8080": loopback, "[::]:8080": loopback, // every address: no name of its own
		"ops.internal:8080": append(loopback, "ops.internal"),
	} {
		if got := allowedHosts(addr); !slices.Equal(got, want) {
			t.Errorf("allowedHosts(%q) = %q; want %q", addr, got, want)
		}
	}
}
