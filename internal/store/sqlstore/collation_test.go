package sqlstore_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/rssbot/discovery/internal/core"
	"github.com/rssbot/discovery/internal/testutil"
)

// On a PostgreSQL database whose collation is not byte order (ICU en-US
// here, common in managed databases), instances, keys and services still
// come in byte order, as from memory and SQLite: ORDER BY sorts by the
// database's collation. The CI database's C.UTF-8 sorts by bytes already,
// so the test makes a database of its own.
func TestPostgresICUCollationStillByteOrder(t *testing.T) {
	dsn, u := postgresURL(t)
	admin, err := testutil.OpenPostgres(dsn)
	if err != nil {
		t.Fatal(err)
	}
	sqlAdmin, _ := admin.DB()
	defer sqlAdmin.Close()
	name := "discovery_icu_" + testutil.Prefix(t)[1:11]
	if err := admin.Exec(`CREATE DATABASE ` + name +
		` TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'`).Error; err != nil {
		t.Fatalf("creating an ICU database: %v", err)
	}
	defer admin.Exec(`DROP DATABASE IF EXISTS ` + name + ` WITH (FORCE)`)
	u.Path = "/" + name
	db, err := testutil.OpenPostgres(u.String())
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, _ := db.DB()
	defer sqlDB.Close()
	s := open(t, db, "discovery_")

	now := time.Now()
	ids := []string{"a-1", "B-1", "a1", "_z"}
	for _, svc := range append([]string{"ord"}, "a-1", "B-1", "a1") {
		for _, id := range ids {
			in := core.Instance{ID: id, Service: svc, Host: "10.0.0.1", Port: 1, Method: core.MethodHTTP, Weight: 1,
				RegisteredAt: now, ExpiresAt: now.Add(time.Minute)}
			if _, err := s.Register(t.Context(), &in); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, kid := range ids {
		if _, err := s.PutKey(t.Context(), "ord", core.PublicKey{ID: kid, Algorithm: "EdDSA", Key: []byte{1}, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	var collated []string
	if err := db.Raw(`SELECT id FROM discovery_instances WHERE service = 'ord' ORDER BY id`).Scan(&collated).Error; err != nil {
		t.Fatal(err)
	}
	bytewise := slices.Sorted(slices.Values(ids))
	if slices.Equal(collated, bytewise) {
		t.Fatalf("the database sorts %v in byte order: its collation does not test anything", collated)
	}

	svc, err := s.Load(t.Context(), "ord")
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs, gotKeys []string
	for _, in := range svc.Instances {
		gotIDs = append(gotIDs, in.ID)
	}
	for _, k := range svc.Keys {
		gotKeys = append(gotKeys, k.ID)
	}
	infos, err := s.Services(t.Context(), now)
	if err != nil {
		t.Fatal(err)
	}
	var gotSvcs []string
	for _, si := range infos {
		gotSvcs = append(gotSvcs, si.Name)
	}
	// A public key revoked under every one of the IDs is named by the
	// least of them in byte order, as by the memory store.
	for _, kid := range ids {
		if _, err := s.PutKey(t.Context(), "twins", core.PublicKey{ID: kid, Algorithm: "EdDSA", Key: []byte{2}, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	for _, kid := range ids {
		if _, err := s.RevokeKey(t.Context(), "twins", kid, now); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.PutKey(t.Context(), "twins", core.PublicKey{ID: "new", Algorithm: "EdDSA", Key: []byte{2}, CreatedAt: now})
	if re := (*core.RevokedKeyError)(nil); !errors.As(err, &re) || re.RevokedID != bytewise[0] {
		t.Errorf("PutKey of a key revoked as %v = %v; want a RevokedKeyError naming %s", ids, err, bytewise[0])
	}
	for what, got := range map[string][]string{"instances": gotIDs, "keys": gotKeys, "services": gotSvcs} {
		want := bytewise
		if what == "services" {
			want = []string{"B-1", "a-1", "a1", "ord"}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s in %v; want byte order %v (the database's collation gives %v)", what, got, want, collated)
		}
	}
}
