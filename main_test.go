package discovery_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/rssbot/discovery/internal/testutil"
)

func TestMain(m *testing.M) {
	if testutil.RunChild() { // re-executed as a child process by a multi-process test
		return
	}
	goleak.VerifyTestMain(m, testutil.LeakOptions()...)
}
