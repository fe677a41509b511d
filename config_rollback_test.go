package discovery_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// betweenStore runs between once, right after the Registry read the
// configuration it rolls back to: another process's write lands between
// the rollback's read and its write, every time.
type betweenStore struct {
	*discoverytest.Backend
	between   func()
	histories int // ConfigHistory calls
}

func (s *betweenStore) after() {
	if f := s.between; f != nil {
		s.between = nil
		f()
	}
}

func (s *betweenStore) ConfigVersion(ctx context.Context, service string, rev int64) (discovery.ConfigVersion, error) {
	v, err := s.Backend.ConfigVersion(ctx, service, rev)
	s.after()
	return v, err
}

func (s *betweenStore) ConfigHistory(ctx context.Context, service string) ([]discovery.ConfigVersion, error) {
	s.histories++
	h, err := s.Backend.ConfigHistory(ctx, service)
	s.after()
	return h, err
}

// A rollback decided on the configuration its caller read does not erase
// one another process stored meanwhile, whether it landed before the call
// or between the rollback's read and its write: it is refused as
// UpdateConfigIf refuses an edit, and the newer configuration stays.
func TestRollbackConfigIfKeepsANewerConfiguration(t *testing.T) {
	ctx := context.Background()
	backend := discoverytest.NewBackend()
	store := &betweenStore{Backend: backend}
	r, err := discovery.New(discovery.WithStore(store), discovery.WithoutHealthChecks())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for n := 1; n <= 2; n++ {
		if _, err := r.UpdateConfig(ctx, "db_svc", cfgDoc(n)); err != nil {
			t.Fatal(err)
		}
	}
	_, read, err := r.Config(ctx, "db_svc") // the operator sees revision 2, and rolls it back to 1
	if err != nil || read != 2 {
		t.Fatalf("Config = %d, %v; want revision 2", read, err)
	}
	other := func(n int) { // another process stores a fix
		if _, _, err := backend.SetConfig(ctx, "db_svc", cfgDoc(n), time.Now(), discovery.DefaultConfigHistory); err != nil {
			t.Fatal(err)
		}
	}
	store.between = func() { other(3) }
	_, err = r.RollbackConfigIf(ctx, "db_svc", read, 1)
	var conflict *discovery.ConfigConflictError
	if !errors.Is(err, discovery.ErrConflict) || !errors.As(err, &conflict) || conflict.Have != 3 || conflict.Want != 2 {
		t.Fatalf("RollbackConfigIf from 2 with revision 3 stored in between = %v; want a ConfigConflictError (have 3, want 2)", err)
	}
	if cfg, rev, err := r.Config(ctx, "db_svc"); err != nil || rev != 3 || string(cfg) != string(cfgDoc(3)) {
		t.Fatalf("Config after the refused rollback = %s, %d, %v; want revision 3 kept", cfg, rev, err)
	}
	// Landed before the call: refused the same way.
	other(4)
	if _, err := r.RollbackConfigIf(ctx, "db_svc", 3, 1); !errors.Is(err, discovery.ErrConflict) {
		t.Fatalf("RollbackConfigIf from 3 with revision 4 stored = %v; want ErrConflict", err)
	}
	// From the revision stored: restored as a new one.
	rep, err := r.RollbackConfigIf(ctx, "db_svc", 4, 1)
	if err != nil || rep.ConfigRevision != 5 {
		t.Fatalf("RollbackConfigIf from 4 = %+v, %v; want config revision 5", rep, err)
	}
	if cfg, rev, err := r.Config(ctx, "db_svc"); err != nil || rev != 5 || string(cfg) != string(cfgDoc(1)) {
		t.Fatalf("Config after the rollback = %s, %d, %v; want revision 1's document as 5", cfg, rev, err)
	}
	// A version beyond the history is not found, whatever the revision.
	if _, err := r.RollbackConfigIf(ctx, "db_svc", 5, 42); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("RollbackConfigIf to 42 = %v; want ErrNotFound", err)
	}
}

// A rollback reads the one version it restores from a Store that can, not
// the whole history (up to 1000 versions of up to 512 KiB each).
func TestRollbackConfigReadsOneVersion(t *testing.T) {
	ctx := context.Background()
	store := &betweenStore{Backend: discoverytest.NewBackend()}
	r, err := discovery.New(discovery.WithStore(store), discovery.WithoutHealthChecks())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for n := 1; n <= 3; n++ {
		if _, err := r.UpdateConfig(ctx, "db_svc", cfgDoc(n)); err != nil {
			t.Fatal(err)
		}
	}
	if rep, err := r.RollbackConfig(ctx, "db_svc", 2); err != nil || rep.ConfigRevision != 4 {
		t.Fatalf("RollbackConfig(2) = %+v, %v; want config revision 4", rep, err)
	}
	if cfg, _, err := r.Config(ctx, "db_svc"); err != nil || string(cfg) != string(cfgDoc(2)) {
		t.Fatalf("Config after RollbackConfig(2) = %s, %v; want revision 2's document", cfg, err)
	}
	if store.histories != 0 {
		t.Fatalf("RollbackConfig read the whole history %d times; want the one version (ConfigVersionReader)", store.histories)
	}
}
