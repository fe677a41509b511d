package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// Every call of a closed Registry that can fail fails with ErrClosed, and
// so does every write of a Registration it held (Drain, like Deregister,
// returns nil for one that is gone): a caller that shuts down
// in some order tells "closed" from a real failure by that one sentinel.
func TestEveryCallAfterCloseIsErrClosed(t *testing.T) {
	ctx := context.Background()
	r, err := discovery.New(discovery.WithStore(discoverytest.NewBackend()), discovery.WithoutHealthChecks(), discovery.WithCloseDrain(0))
	if err != nil {
		t.Fatal(err)
	}
	g := mustRegister(t, r, inst("db_svc", "10.0.0.1", 1))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := json.RawMessage(`{"a":1}`)
	calls := []struct {
		name string
		call func() error
	}{
		{"Register", func() error { _, err := r.Register(ctx, inst("db_svc", "10.0.0.2", 2)); return err }},
		{"Deregister", func() error { return r.Deregister(ctx, "db_svc", g.Instance().ID) }},
		{"Get", func() error { _, err := r.Get(ctx, "db_svc"); return err }},
		{"Lookup", func() error { _, err := r.Lookup(ctx, "db_svc"); return err }},
		{"Pick", func() error { _, err := r.Pick(ctx, "db_svc"); return err }},
		{"Watch", func() error { _, err := r.Watch(ctx, "db_svc"); return err }},
		{"Invalidate", func() error { return r.Invalidate(ctx, "db_svc") }},
		{"Services", func() error { _, err := r.Services(ctx); return err }},
		{"Overview", func() error { _, err := r.Overview(ctx); return err }},
		{"Health", func() error { _, err := r.Health(ctx, "db_svc"); return err }},
		{"ReportOutcome", func() error { return r.ReportOutcome("db_svc", g.Instance().ID, nil, time.Millisecond) }},
		{"UpdateConfig", func() error { _, err := r.UpdateConfig(ctx, "db_svc", cfg); return err }},
		{"UpdateConfigIf", func() error { _, err := r.UpdateConfigIf(ctx, "db_svc", 0, cfg); return err }},
		{"RollbackConfig", func() error { _, err := r.RollbackConfig(ctx, "db_svc", 1); return err }},
		{"ConfigHistory", func() error { _, err := r.ConfigHistory(ctx, "db_svc"); return err }},
		{"Config", func() error { _, _, err := r.Config(ctx, "db_svc"); return err }},
		{"PublishKey", func() error { return r.PublishKey(ctx, "db_svc", discovery.PublicKey{}) }},
		{"RetireKey", func() error { return r.RetireKey(ctx, "db_svc", "k1", time.Now()) }},
		{"Keys", func() error { _, err := r.Keys(ctx, "db_svc"); return err }},
		{"RefreshKeys", func() error { _, err := r.RefreshKeys(ctx, "db_svc"); return err }},
		{"Snapshot", func() error { _, err := r.Snapshot(ctx, "db_svc"); return err }},
		{"Transport", func() error {
			req, _ := http.NewRequest(http.MethodGet, "http://db_svc/", nil)
			resp, err := r.Transport().RoundTrip(req)
			if resp != nil {
				resp.Body.Close()
			}
			return err
		}},
		{"Registration.Update", func() error { return g.Update(ctx, func(in *discovery.Instance) { in.Weight = 3 }) }},
		{"Registration.SetWeight", func() error { return g.SetWeight(ctx, 3) }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, discovery.ErrClosed) {
			t.Errorf("%s after Close = %v; want ErrClosed", c.name, err)
		}
	}
}
