package testutil

import "go.uber.org/goleak"

// LeakOptions are the goleak options of every package's TestMain: they ignore
// the pool goroutines that database drivers keep for the life of the process.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		// glebarez/go-sqlite and modernc keep no goroutines; database/sql's
		// opener ends when a DB is closed. GORM's prepared-statement cache
		// (a handle with PrepareStmt, the user's, not the library's) starts
		// an expiry goroutine that nothing stops.
		goleak.IgnoreTopFunction("gorm.io/gorm/internal/lru.NewLRU[...].func1"),
	}
}
