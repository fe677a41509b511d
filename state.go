package discovery

import "sync/atomic"

// svcState is what this process keeps about one service across snapshots.
type svcState struct {
	name string
	// wantRev is the newest revision announced; loads repeat until they
	// reach it.
	wantRev atomic.Int64
}

func (st *svcState) raiseWant(rev int64) {
	for {
		cur := st.wantRev.Load()
		if rev <= cur || st.wantRev.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// state returns the state of a service, creating it.
func (r *Registry) state(name string) *svcState {
	if v, ok := r.states.Load(name); ok {
		return v.(*svcState)
	}
	v, _ := r.states.LoadOrStore(name, &svcState{name: name})
	return v.(*svcState)
}

func (r *Registry) stateIfAny(name string) *svcState {
	if v, ok := r.states.Load(name); ok {
		return v.(*svcState)
	}
	return nil
}

// dropState forgets the state of a service the database does not know, so
// that lookups of made-up names leave nothing behind.
func (r *Registry) dropState(st *svcState) { r.states.CompareAndDelete(st.name, st) }
