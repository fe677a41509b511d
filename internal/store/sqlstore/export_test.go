package sqlstore

// AsRelease makes s stand for a process of an older release, whose
// migrations end at version.
func (s *Store) AsRelease(version int) { s.steps = migrations[:version] }

// CheckPostgresVersion is checkPostgresVersion: the verdict on a server of
// server_version_num num (its server_version: version).
var CheckPostgresVersion = checkPostgresVersion

// CheckSQLiteVersion is checkSQLiteVersion: the verdict on an SQLite whose
// sqlite_version() is version.
var CheckSQLiteVersion = checkSQLiteVersion

// OnReaped makes fn run in ReapServices's transaction after its
// deletions, before the floor is raised and the transaction commits.
func (s *Store) OnReaped(fn func()) { s.reapedHook = fn }
