package analyzer

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any leaves a goroutine running: the
// Analyzer starts its tick loop, which Shutdown must end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
