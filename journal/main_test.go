package journal_test

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/safegen/safegen-go/internal/leakcheck"

	"github.com/safegen/safegen-go/journal"
)

// lockChildEnv names the journal a re-executed test binary tries to open; see
// TestLockAcrossProcesses.
const lockChildEnv = "SAFEGEN_JOURNAL_TEST_LOCK_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(lockChildEnv); path != "" {
		os.Exit(lockChild(path))
	}
	leakcheck.VerifyTestMain(m)
}

// lockChild opens path and reports what happened on stdout.
func lockChild(path string) int {
	j, err := journal.Open(path)
	switch {
	case errors.Is(err, journal.ErrLocked):
		fmt.Println("locked:", err)
		return 0
	case err != nil:
		fmt.Println("error:", err)
		return 2
	default:
		j.Close()
		fmt.Println("opened")
		return 3
	}
}
