package discovery

// healthDetail is the part of an instance's health state that only the
// health monitor reads and writes, under instState.hmu.
type healthDetail struct{}
