package discoverytest_test

import (
	"testing"
	"time"

	"github.com/rssbot/discovery"
	"github.com/rssbot/discovery/discoverytest"
)

// A timer of the fake Clock stops and resets as a time.Timer does since Go
// 1.23 (the module's go line): once Stop or Reset returns, no tick from
// before the call is received, and a timer that fired but whose tick was
// not received counts as stopped (true). The fake kept the tick in the
// channel after Stop, where code written for time.Timer (stop, then wait
// on C for the next arming) woke at once for a tick that no real timer
// would deliver, and both returned false.
func TestClockTimerStopAndResetAsTimeTimer(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		receive bool // the owner received the tick before the call
		call    func(tm discovery.Timer) bool
		want    bool
	}{
		{"Stop of a fired timer whose tick is unread", false, func(tm discovery.Timer) bool {
			return tm.Stop()
		}, true},
		{"Stop of a fired timer whose tick was read", true, func(tm discovery.Timer) bool {
			return tm.Stop()
		}, false},
		{"Reset of a fired timer whose tick is unread", false, func(tm discovery.Timer) bool {
			return tm.Reset(time.Hour)
		}, true},
		{"Reset of a fired timer whose tick was read", true, func(tm discovery.Timer) bool {
			return tm.Reset(time.Hour)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := discoverytest.NewClock(start)
			tm := c.NewTimer(time.Second)
			c.Advance(time.Second)
			if tt.receive {
				<-tm.C()
			}
			if got := tt.call(tm); got != tt.want {
				t.Errorf("= %v; want %v, as time.Timer", got, tt.want)
			}
			select {
			case at := <-tm.C():
				t.Errorf("received a tick (%v) from before the call", at)
			default:
			}
			tm.Stop()
		})
	}
}
