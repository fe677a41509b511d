package auth_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/rssbot/discovery/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testutil.LeakOptions()...)
}
