package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/rssbot/discovery/internal/core"
)

// nothing is the condition of a service row left with nothing: no
// instance row, no key, and never a configuration (none now, no version
// kept).
const nothing = `config_revision = 0
	AND NOT EXISTS (SELECT 1 FROM {p}instances i WHERE i.service = {p}services.name)
	AND NOT EXISTS (SELECT 1 FROM {p}keys k WHERE k.service = {p}services.name)
	AND NOT EXISTS (SELECT 1 FROM {p}config_history h WHERE h.service = {p}services.name)`

// created returns the revision of service name after a bump in tx that
// returned rev: rev, unless the bump created the service (revision 1) and
// ReapServices has deleted services before (the floor is above 0), which
// moves it above the floor: a name deleted and created again never goes
// back in revision, where caches that hold its old revision would keep
// what they hold. It costs a statement only when a service is created.
//
// Not the bump's own VALUES: on PostgreSQL an INSERT ... ON CONFLICT that
// meets a row a DELETE holds waits for it, and once the DELETE commits it
// inserts the values it computed before the wait, from a snapshot that
// predates the floor the deletion raised. This statement's snapshot comes
// after: the DELETE committed before the insert went on (on SQLite the
// write lock orders them).
func (s *Store) created(tx *gorm.DB, name string, rev int64) (int64, error) {
	if rev != 1 {
		return rev, nil
	}
	err := tx.Raw(s.q.created, name).Row().Scan(&rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 1, nil
	}
	return rev, err
}

// bump bumps the revision of service name in tx (creating the service if
// it is new) and sets *rev to it.
func (s *Store) bump(tx *gorm.DB, name string, rev *int64) (err error) {
	if err := tx.Raw(s.q.bumpService, name, time.Now().UnixNano()).Row().Scan(rev); err != nil {
		return err
	}
	*rev, err = s.created(tx, name, *rev)
	return err
}

// ReapServices implements core.ServiceReaper. On PostgreSQL a
// transaction-scoped advisory lock lets one reaper work at a time; the
// others return at once.
//
// Its statements read every service row (each with a probe of the
// instances, keys and configuration history by their primary keys: 15 ms
// for 10,000 services on PostgreSQL on loopback), so a round is made only
// if no process has made one within a quarter of the delay (now - cutoff):
// with many processes, one such read between them, not one each. A
// service is then deleted up to a quarter of the delay, and a reap
// interval, past its delay.
func (s *Store) ReapServices(ctx context.Context, now, cutoff time.Time) ([]core.Change, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	throttle := max(now.Sub(cutoff)/4, 0)
	if !s.postgres {
		var at int64
		if err := s.db.WithContext(ctx).Raw(s.q.sweptAt).Scan(&at).Error; err != nil {
			return nil, mapErr(ctx, "reap services", err)
		}
		if at > now.Add(-throttle).UnixNano() && at <= now.Add(throttle).UnixNano() {
			return nil, nil
		}
		// SQLite: answered without the write lock when there is nothing to
		// record or delete, as Reap does.
		var n int64
		if err := s.db.WithContext(ctx).Raw(s.q.emptyServices, cutoff.UnixNano()).Scan(&n).Error; err != nil {
			return nil, mapErr(ctx, "reap services", err)
		}
		if n == 0 {
			return nil, nil
		}
	}
	var changes []core.Change
	err := s.tx(ctx, func(tx *gorm.DB) error {
		changes = nil // a retried transaction starts over
		if s.postgres {
			var got bool
			if err := tx.Raw(`SELECT pg_try_advisory_xact_lock(`+lockKeySQL+`)`, s.lockKey("reap services")).Row().Scan(&got); err != nil {
				return err
			}
			if !got {
				return nil
			}
		} else if err := tx.Exec(s.q.writeLock).Error; err != nil {
			return err // the write lock before reading, as in Reap
		}
		res := tx.Exec(s.q.sweep, now.UnixNano(), now.Add(-throttle).UnixNano(), now.Add(throttle).UnixNano())
		if res.Error != nil || res.RowsAffected == 0 {
			return res.Error // another process's round came within the throttle
		}
		// Deleted before recording: a service recorded now is not deleted
		// before cutoff comes past now.
		rows, err := tx.Raw(s.q.reapEmpty, cutoff.UnixNano()).Rows()
		if err != nil {
			return err
		}
		var floor int64
		for rows.Next() {
			var ch core.Change
			if err := rows.Scan(&ch.Service, &ch.Revision); err != nil {
				rows.Close()
				return err
			}
			ch.Revision++ // the deletion is a change of its own
			ch.Gone = true
			floor = max(floor, ch.Revision)
			changes = append(changes, ch)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return err
		}
		if s.reapedHook != nil {
			s.reapedHook()
		}
		if floor > 0 {
			if err := tx.Exec(s.q.raiseFloor, floor, floor).Error; err != nil {
				return err
			}
		}
		return tx.Exec(s.q.markEmpty, now.UnixNano()).Error
	})
	if err != nil {
		return nil, mapErr(ctx, "reap services", err)
	}
	// byte order, as Services
	slices.SortFunc(changes, func(a, b core.Change) int { return strings.Compare(a.Service, b.Service) })
	return changes, nil
}
