package discovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/store/memory"
)

func outcomeRegistry(tb testing.TB) (*Registry, *svcState, *instState) {
	tb.Helper()
	r, err := New(WithoutHealthChecks())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = r.Close() })
	st := r.state("db_svc")
	return r, st, st.instOrNew("10.0.0.1:5432")
}

// Recording a success is allocation-free, whatever came before.
func TestRecordOutcomeSuccessAllocatesNothing(t *testing.T) {
	r, st, is := outcomeRegistry(t)
	for _, before := range []outcome{outcomeSuccess, outcomeFailure, outcomeCanceled} {
		if n := testing.AllocsPerRun(1000, func() {
			r.recordOutcome(st, is, before, time.Millisecond)
			r.recordOutcome(st, is, outcomeSuccess, time.Millisecond)
		}); n != 0 {
			t.Fatalf("after %v: %v allocations", before, n)
		}
	}
	if is.health.fails.Load() != 0 {
		t.Fatal("a success did not reset the failures")
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want outcome
	}{
		{nil, outcomeSuccess},
		{errors.New("reset"), outcomeFailure},
		{ErrOverloaded, outcomeOverload},
		{errors.Join(errors.New("429"), ErrOverloaded), outcomeOverload},
		{errors.Join(errors.New("rpc"), context.Canceled), outcomeCanceled},
	}
	for _, tt := range tests {
		if got := classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %v; want %v", tt.err, got, tt.want)
		}
	}
}

func BenchmarkRecordOutcome(b *testing.B) {
	r, st, is := outcomeRegistry(b)
	b.Run("outcome=success", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.recordOutcome(st, is, outcomeSuccess, time.Millisecond)
		}
	})
	b.Run("outcome=success/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.recordOutcome(st, is, outcomeSuccess, time.Millisecond)
			}
		})
	})
	b.Run("outcome=canceled", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.recordOutcome(st, is, outcomeCanceled, time.Millisecond)
		}
	})
	b.Run("outcome=failure_then_success", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.recordOutcome(st, is, outcomeFailure, time.Millisecond)
			r.recordOutcome(st, is, outcomeSuccess, time.Millisecond)
		}
	})
}

// hashTag returns what Redis Cluster hashes of a key: the text between the
// first '{' and the next '}', if not empty; else the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// The two keys the sync script touches hash to the same Cluster slot, by the
// service name, and differ between services.
func TestSharedKeysShareAHashTag(t *testing.T) {
	s := &sharer{r: &Registry{opts: defaultOptions()}}
	for _, svc := range []string{"db_svc", "a.b-c", "x"} {
		h, m := s.healthKey(svc), s.membersKey(svc)
		if hashTag(h) != svc || hashTag(m) != svc || h == m {
			t.Fatalf("keys %q and %q: want distinct keys tagged {%s}", h, m, svc)
		}
	}
}

// Failures reported through a Selection picked before its service's state
// was forgotten (the service left L1, and the database no longer knows it:
// an eviction keeps the state while a request is in flight) eject nothing:
// the ejection of the forgotten state rebuilt the current L1 view from it,
// and Get showed the instance ejected while Health and Pick, which read the
// current state, did not.
func TestDoneAfterTheServiceStateWasForgottenEjectsNothing(t *testing.T) {
	ctx := context.Background()
	mem := memory.New()
	r, clock := fakeRegistry(t, WithStore(mem))
	for i := range 3 {
		host := fmt.Sprintf("10.0.0.%d", i+1)
		if _, err := mem.Register(ctx, &core.Instance{Service: "db_svc", ID: host + ":5432", Host: host, Port: 5432, Weight: 1,
			RegisteredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	sel, err := r.Pick(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	old := r.stateIfAny("db_svc")
	e := r.l1.get("db_svc")
	r.l1.remove(e)
	r.dropState(old) // as a load that found no such service does
	if r.stateIfAny("db_svc") == old {
		t.Fatal("the dropped service's state was kept")
	}
	if _, err := r.Get(ctx, "db_svc"); err != nil {
		t.Fatal(err)
	}
	for range DefaultEjectionFailures {
		sel.Done(errors.New("connection refused"))
	}
	svc, err := r.Get(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	hs, err := r.Health(ctx, "db_svc")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if got := svc.Instance(h.ID).Status; got != h.Shown || (got == StatusEjected) != h.Ejected {
			t.Errorf("%s: Get shows %v; Health says shown %v, ejected %v", h.ID, got, h.Shown, h.Ejected)
		}
	}
}
