package testutil

import (
	"errors"
	"testing"
	"time"
)

func TestRecorder(t *testing.T) {
	var r Recorder
	base := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	r.Record(Call{At: at(0), Caller: "a", Op: "get", Service: "s", Revision: 3})
	r.Record(Call{At: at(1), Caller: "b", Op: "get", Service: "s", Revision: 4, Stale: true})
	r.Record(Call{At: at(2), Caller: "a", Op: "get", Service: "s", Revision: 2}) // went back
	r.Record(Call{At: at(3), Caller: "a", Op: "pick", Service: "s", Instance: "x"})
	r.Record(Call{At: at(4), Caller: "b", Op: "get", Service: "s", Err: errors.New("boom")})
	r.Record(Call{At: at(5), Caller: "a", Op: "get", Service: "s", Revision: 5})
	r.Record(Call{At: at(6), Caller: "b", Op: "pick", Service: "s", Instance: "x"})

	if n := r.Len(); n != 7 {
		t.Fatalf("Len = %d", n)
	}
	if f := r.Failed(); len(f) != 1 || f[0].Caller != "b" {
		t.Fatalf("Failed = %+v", f)
	}
	if n := r.Stale(); n != 1 {
		t.Fatalf("Stale = %d", n)
	}
	if reg := r.Regressions(); len(reg) != 1 {
		t.Fatalf("Regressions = %q; want the one of caller a", reg)
	}
	got := r.Reached("s", 4, at(0))
	if len(got) != 2 || !got["a"].Equal(at(5)) || !got["b"].Equal(at(1)) {
		t.Fatalf("Reached = %v", got)
	}
	if got := r.Reached("s", 4, at(2)); len(got) != 1 || !got["a"].Equal(at(5)) {
		t.Fatalf("Reached since 2ms = %v", got)
	}
	if got := r.LastPicked("x"); !got["a"].Equal(at(3)) || !got["b"].Equal(at(6)) {
		t.Fatalf("LastPicked = %v", got)
	}
	if got := r.Callers(); len(got) != 2 || got[0] != "a" {
		t.Fatalf("Callers = %v", got)
	}
}
