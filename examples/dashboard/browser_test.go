package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// EnvRequireBrowser makes the browser test fail, instead of skipping, when
// no Chromium is installed (.ci/run sets it).
const EnvRequireBrowser = "DISCOVERY_TEST_REQUIRE_BROWSER"

// chromium returns the path of a Chromium binary, or skips (or fails, with
// DISCOVERY_TEST_REQUIRE_BROWSER=1) the test.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("DISCOVERY_TEST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv(EnvRequireBrowser) == "1" {
		t.Fatalf("no chromium on PATH and %s=1 (apt-get install -y chromium)", EnvRequireBrowser)
	}
	t.Skipf("no chromium on PATH (apt-get install -y chromium; %s=1 makes this a failure)", EnvRequireBrowser)
	return ""
}

// browser starts a headless Chromium for the test. The flags keep it from
// reaching out to the network, which is closed here and would make it hang.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// In a real browser the dashboard lists the demo services, marks the
// instance that fails its checks, shows a sparkline per instance and cache
// hit rates, and shows an instance registered after the page loaded.
func TestDashboardInBrowser(t *testing.T) {
	d := startDemo(t, time.Second)
	ctx := browser(t)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	if err := chromedp.Do(ctx,
		chromedp.Navigate(d.url),
		chromedp.WaitVisible(chromedp.CSS(`section[data-service="orders"]`)),
		chromedp.WaitVisible(chromedp.CSS(`section[data-service="inventory"]`)),
		chromedp.WaitVisible(chromedp.CSS(`section[data-service="payments"]`)),
	); err != nil {
		t.Fatalf("the dashboard did not list the demo services: %v", err)
	}
	services := evaluate[int](t, ctx, `document.querySelectorAll("section.service").length`)
	layers := evaluate[int](t, ctx, `document.querySelectorAll("#cache [data-layer]").length`)
	if services != 3 || layers != 1 {
		t.Fatalf("%d services and %d cache layers shown; want 3 and 1 (L1)", services, layers)
	}

	// the failing payments instance is marked, and only it
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`section[data-service="payments"] tr.instance.status-unhealthy[data-status="unhealthy"]`)),
		chromedp.WaitVisible(chromedp.CSS(`section[data-service="payments"].status-warning`)),
		chromedp.WaitVisible(chromedp.CSS(`svg.spark polyline`)),
	); err != nil {
		t.Fatalf("the unhealthy instance is not marked: %v", err)
	}
	unhealthy := evaluate[[]string](t, ctx, `Array.from(document.querySelectorAll('tr.instance[data-status="unhealthy"]')).map(function (r) { return r.closest("section").dataset.service; })`)
	if len(unhealthy) != 1 || unhealthy[0] != "payments" {
		t.Fatalf("instances marked unhealthy in services %v; want [payments]", unhealthy)
	}
	if n := evaluate[int](t, ctx, `document.querySelectorAll("svg.spark").length`); n != 6 {
		t.Fatalf("%d sparklines; want one per instance (6)", n)
	}

	// orders' configuration history, on demand, newest first, and still
	// open after the next refreshes redraw the page
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`details[data-config="orders"] > summary`)),
		chromedp.WaitVisible(chromedp.CSS(`details[data-config="orders"] li[data-config-revision="2"] pre`)),
	); err != nil {
		t.Fatalf("orders' configuration history did not open: %v", err)
	}
	revs := evaluate[[]string](t, ctx, `Array.from(document.querySelectorAll('details[data-config="orders"] li')).map(function (li) { return li.dataset.configRevision + " " + JSON.stringify(JSON.parse(li.querySelector("pre").textContent)); })`)
	if len(revs) != 2 || revs[0] != `2 {"balancer":{"strategy":"p2c_ewma"},"timeout_ms":500}` || revs[1] != `1 {"balancer":{"strategy":"p2c_ewma"},"timeout_ms":800}` {
		t.Fatalf("orders' configuration history shows %q; want revisions 2 then 1 with their documents", revs)
	}
	if err := chromedp.Do(ctx, chromedp.Sleep(2*refreshOf(t, ctx))); err != nil {
		t.Fatal(err)
	}
	if open := evaluate[bool](t, ctx, `(function () { var d = document.querySelector('details[data-config="orders"]'); return d.open && d.querySelectorAll("li[data-config-revision]").length === 2; })()`); !open {
		t.Fatal("orders' configuration closed (or emptied) when the page refreshed")
	}
	if n := evaluate[int](t, ctx, `document.querySelectorAll('details.config[open]').length`); n != 1 {
		t.Fatalf("%d configurations open; want only orders'", n)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`details[data-config="inventory"] > summary`)),
		chromedp.WaitVisible(chromedp.CSS(`details[data-config="inventory"] p.muted`)),
	); err != nil {
		t.Fatalf("inventory's configuration did not open: %v", err)
	}
	if text := evaluate[string](t, ctx, `document.querySelector('details[data-config="inventory"] .config-body').textContent`); text != "no configuration" {
		t.Fatalf("inventory, which has no configuration, shows %q", text)
	}

	// a change after the page loaded shows without a reload
	if _, err := d.add(context.Background(), "search", "eu-1c"); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`section[data-service="search"] tr.instance`))); err != nil {
		t.Fatalf("an instance registered after load did not appear: %v", err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := filepath.Join("..", "..", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "dashboard.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// refreshOf is the dashboard's refresh interval, as the page has it.
func refreshOf(t *testing.T, ctx context.Context) time.Duration {
	t.Helper()
	return time.Duration(evaluate[int](t, ctx, `parseInt(document.body.dataset.refreshMs, 10)`)) * time.Millisecond
}

// evaluate runs a JavaScript expression in the page and returns its value.
func evaluate[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}
