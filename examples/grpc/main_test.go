package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rssbot/discovery/grpcresolver"
)

func TestMain(m *testing.M) {
	grpcresolver.RegisterBalancer()
	goleak.VerifyTestMain(m)
}

// The example's story holds: c, failing, gets few calls, then none; a,
// drained, gets none either.
func TestGRPCExample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want 4 rounds:\n%s", out.String())
	}
	// c fails every call from the second round on: each failure makes Pick
	// avoid it, five in a row eject it (30 s), so it gets at most five calls
	// in all. a gets none once drained.
	var cCalls int
	for i, l := range lines[1:] {
		var a, b, c, failed int
		if _, err := fmt.Sscanf(l[strings.Index(l, "300 calls:"):], "300 calls: a %d, b %d, c %d (%d failed)", &a, &b, &c, &failed); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		if failed != c {
			t.Errorf("%q: %d failed, but c got %d calls", l, failed, c)
		}
		if i == 2 && a != 0 {
			t.Errorf("%q: the drained server got %d calls", l, a)
		}
		cCalls += c
	}
	if cCalls > 5 {
		t.Errorf("the failing server got %d calls; want at most 5:\n%s", cCalls, out.String())
	}
}

// Ctrl-C (ctx ending) stops the demo cleanly: run returns at once with the
// context's error, which main does not report as a failure.
func TestGRPCExampleInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	err := run(ctx, &out)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("run under an ended context = %v; want context.Canceled", err)
	}
	if err := interrupted(ctx, err); err != nil {
		t.Fatalf("main would fail an interrupted run with %v", err)
	}
	if err := interrupted(context.Background(), errors.New("boom")); err == nil {
		t.Fatal("an error of a run that was not interrupted was dropped")
	}
}
