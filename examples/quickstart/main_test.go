package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The quickstart is the first program a user runs and copies: it must stop
// everything it starts. No goroutine is ignored: ignoring those blocked in
// internal/poll.runtime_pollWait hid every leaked server (its Accept loop
// waits there), so the check passed with no srv.Close at all.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestQuickstart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, "", "", &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"Get(db_svc): 3 instances", "answered by L1 (memory)", "Pick(db_svc) -> ", "GET http://db_svc/ -> db_svc instance ", "Deregistering", "user_svc"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	tables := strings.Split(s, "Deregistering")
	if strings.Count(tables[0], "db_svc  ") != 3 || strings.Count(tables[1], "db_svc  ") != 2 {
		t.Errorf("want 3 db_svc rows, then 2:\n%s", s)
	}
}
