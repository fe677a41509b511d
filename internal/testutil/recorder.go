package testutil

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Call is one recorded Get or Pick: who made it, when, and what it saw.
type Call struct {
	At       time.Time
	Caller   string // a Registry or process, named by the test
	Op       string // "get" or "pick"
	Service  string
	Revision int64  // of the snapshot read (0 for a Pick)
	Instance string // the instance picked, or the instances read
	Stale    bool
	Err      error
}

// Recorder keeps every Get and Pick result of a test, so that properties
// over the whole history (nothing failed, no caller ever read an older
// revision than it had read before, when each caller reached a revision)
// can be checked afterwards. It is safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex
	calls []Call
}

// Record adds c, stamped now if c.At is zero.
func (r *Recorder) Record(c Call) {
	if c.At.IsZero() {
		c.At = time.Now()
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

// Calls returns a copy of the history in the order recorded.
func (r *Recorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

// Len is how many calls were recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// Failed returns the calls that returned an error.
func (r *Recorder) Failed() []Call {
	var out []Call
	for _, c := range r.Calls() {
		if c.Err != nil {
			out = append(out, c)
		}
	}
	return out
}

// Stale counts the calls answered with a stale snapshot.
func (r *Recorder) Stale() int {
	n := 0
	for _, c := range r.Calls() {
		if c.Stale {
			n++
		}
	}
	return n
}

// Regressions describes every Get that read a lower revision of a service
// than the same caller had read before it.
func (r *Recorder) Regressions() []string {
	type key struct{ caller, service string }
	high := map[key]Call{}
	var out []string
	for _, c := range r.Calls() {
		if c.Op != "get" || c.Err != nil {
			continue
		}
		k := key{c.Caller, c.Service}
		if prev, ok := high[k]; ok && c.Revision < prev.Revision {
			out = append(out, fmt.Sprintf("%s read %s revision %d at %s after revision %d at %s",
				c.Caller, c.Service, c.Revision, c.At.Format("15:04:05.000000"), prev.Revision, prev.At.Format("15:04:05.000000")))
			continue
		}
		high[k] = c
	}
	return out
}

// Reached returns, for each caller, when it first read revision rev (or a
// newer one) of service at or after since; callers that never did are
// absent.
func (r *Recorder) Reached(service string, rev int64, since time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for _, c := range r.Calls() {
		if c.Op != "get" || c.Err != nil || c.Service != service || c.Revision < rev || c.At.Before(since) {
			continue
		}
		if t, ok := out[c.Caller]; !ok || c.At.Before(t) {
			out[c.Caller] = c.At
		}
	}
	return out
}

// LastPicked returns when each caller last picked instance.
func (r *Recorder) LastPicked(instance string) map[string]time.Time {
	out := map[string]time.Time{}
	for _, c := range r.Calls() {
		if c.Op == "pick" && c.Err == nil && c.Instance == instance && c.At.After(out[c.Caller]) {
			out[c.Caller] = c.At
		}
	}
	return out
}

// Callers returns the names of the callers recorded, sorted.
func (r *Recorder) Callers() []string {
	seen := map[string]bool{}
	for _, c := range r.Calls() {
		seen[c.Caller] = true
	}
	out := make([]string, 0, len(seen))
	for c := range seen {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}
