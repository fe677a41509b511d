// Package fakeclock is a manual clock for tests: time moves only when the
// test calls Advance or Set, and timers fire then.
package fakeclock

import (
	"sort"
	"sync"
	"time"

	"github.com/rssbot/discovery/internal/core"
)

// Clock is a fake core.Clock. The zero value is not usable; call New.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*timer
	fired   int           // timers fired and not yet stopped or reset by their owner
	changed chan struct{} // closed and replaced whenever timers change
}

// New returns a clock that reads start until it is advanced.
func New(start time.Time) *Clock {
	return &Clock{now: start, changed: make(chan struct{})}
}

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock reaches Now()+d.
func (c *Clock) NewTimer(d time.Duration) core.Timer {
	t := &timer{c: c, ch: make(chan time.Time, 1)}
	c.mu.Lock()
	t.at = c.now.Add(d)
	c.add(t)
	c.mu.Unlock()
	if d <= 0 {
		c.Advance(0)
	}
	return t
}

// Advance moves the clock forward by d, firing every timer that falls due,
// in order of due time. A negative d counts as 0: the clock never goes
// backwards.
func (c *Clock) Advance(d time.Duration) {
	d = max(d, 0)
	c.mu.Lock()
	c.setLocked(c.now.Add(d))
	c.mu.Unlock()
}

// Set moves the clock to t (never backwards), firing due timers.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	if t.After(c.now) {
		c.setLocked(t)
	}
	c.mu.Unlock()
}

func (c *Clock) setLocked(end time.Time) {
	for {
		sort.Slice(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
		if len(c.timers) == 0 || c.timers[0].at.After(end) {
			break
		}
		t := c.timers[0]
		c.timers = c.timers[1:]
		if t.at.After(c.now) {
			c.now = t.at
		}
		if !t.fired {
			t.fired = true
			c.fired++
		}
		select {
		case t.ch <- c.now:
		default:
		}
		c.notify()
	}
	c.now = end
}

// Timers returns how many timers are waiting.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// BlockUntil waits until at least n timers are waiting, which tells a test
// that the goroutines it depends on have reached their sleep.
func (c *Clock) BlockUntil(n int) {
	for {
		c.mu.Lock()
		if len(c.timers) >= n {
			c.mu.Unlock()
			return
		}
		ch := c.changed
		c.mu.Unlock()
		<-ch
	}
}

// BlockUntilHandled waits until every timer that has fired has been stopped
// or reset by its owner: the goroutines the timers woke have done what they
// woke for (a lease renewal, a reaping) and gone back to sleep, or ended.
// A timer the test itself made and let fire must be stopped or reset too,
// or this waits for ever.
func (c *Clock) BlockUntilHandled() {
	for {
		c.mu.Lock()
		if c.fired == 0 {
			c.mu.Unlock()
			return
		}
		ch := c.changed
		c.mu.Unlock()
		<-ch
	}
}

// handled notes that t's owner has stopped or reset it after it fired.
func (c *Clock) handled(t *timer) {
	if t.fired {
		t.fired = false
		c.fired--
		c.notify()
	}
}

func (c *Clock) add(t *timer) {
	c.timers = append(c.timers, t)
	c.notify()
}

func (c *Clock) remove(t *timer) bool {
	for i, u := range c.timers {
		if u == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			c.notify()
			return true
		}
	}
	return false
}

func (c *Clock) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

type timer struct {
	c     *Clock
	ch    chan time.Time
	at    time.Time
	fired bool // fired, and not stopped or reset since
}

func (t *timer) C() <-chan time.Time { return t.ch }

// Stop stops the timer as time.Timer's Stop does since Go 1.23: no tick
// from before the call is received after it, and a timer that fired but
// whose tick was not received yet counts as stopped (true). Kept in the
// channel, that tick woke code written for time.Timer (stop, then wait on
// C for the next arming) at once.
func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.c.handled(t)
	active := t.c.remove(t)
	return t.drain() || active
}

// drain drops a tick not received yet and reports whether there was one.
func (t *timer) drain() bool {
	select {
	case <-t.ch:
		return true
	default:
		return false
	}
}

// Reset re-arms the timer as time.Timer's Reset does since Go 1.23: a
// stale tick is dropped, and a timer that fired but whose tick was not
// received yet counts as active (true).
func (t *timer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	t.c.handled(t)
	active := t.c.remove(t)
	active = t.drain() || active
	t.at = t.c.now.Add(d)
	t.c.add(t)
	t.c.mu.Unlock()
	if d <= 0 {
		t.c.Advance(0)
	}
	return active
}

// BlockUntilAt waits until a timer is waiting to fire at exactly when: a
// way to wait for one goroutine's sleep that other timers cannot confuse.
func (c *Clock) BlockUntilAt(when time.Time) {
	for {
		c.mu.Lock()
		for _, t := range c.timers {
			if t.at.Equal(when) {
				c.mu.Unlock()
				return
			}
		}
		ch := c.changed
		c.mu.Unlock()
		<-ch
	}
}
