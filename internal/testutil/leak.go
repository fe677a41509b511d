package testutil

import "go.uber.org/goleak"

// LeakOptions are the goleak options of every package's TestMain: they ignore
// the pool goroutines that database drivers keep for the life of the process.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		// glebarez/go-sqlite and modernc keep no goroutines; database/sql's
		// opener ends when a DB is closed. Nothing to ignore yet.
	}
}
