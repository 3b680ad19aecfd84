package saferiver_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/safegen/safegen-go/integrations/river/internal/fleet"
	"github.com/safegen/safegen-go/safegentest"
)

// TestFleet: 300 jobs enqueued transactionally (each batch with its order
// rows), and one in a transaction that rolls back; 4 worker processes (this
// test binary) work them through River against a faulty fake API; 2 are
// SIGKILLed mid-run and not restarted, and River's rescuer hands their jobs
// to the survivors. Every job is billed exactly once and finished, its
// output on disk with the size and SHA-256 it recorded; none is lost; the
// rolled-back job never existed and was never sent.
func TestFleet(t *testing.T) {
	var progress strings.Builder
	tally, err := fleet.Run(context.Background(), fleet.Config{
		DatabaseURL: dsn(t),
		Jobs:        300,
		Workers:     4,
		Kills:       2,
		Concurrency: 8,
		Seed:        7,
		Faults: safegentest.FaultRates{Status500: 0.03, Status502HTML: 0.03, Status503: 0.03,
			RateLimit429: 0.05, Reset: 0.05, DropAfterCommit: 0.05, RetryAfter: "1"},
		OutputSize:  4 << 10,
		Lease:       2 * time.Second,
		JobTimeout:  8 * time.Second,
		RescueAfter: 10 * time.Second,
		Deadline:    3 * time.Minute,
		Command:     func() *exec.Cmd { return exec.Command(os.Args[0], "-test.run=^$") },
		Progress:    &progress,
	})
	require.NoError(t, err, progress.String())
	var table strings.Builder
	tally.Print(&table)
	t.Logf("%s%s", progress.String(), table.String())

	assert.True(t, tally.OK(), "the promise")
	assert.Equal(t, 300, tally.Charges, "billed once each")
	assert.Zero(t, tally.Duplicates)
	assert.Zero(t, tally.Lost)
	assert.Equal(t, 300, tally.Completed)
	assert.Equal(t, 300, tally.Verified, "outputs on disk, size and SHA-256 as recorded")
	assert.Len(t, tally.Killed, 2)
	assert.Positive(t, tally.Rescued, "River rescued the dead workers' jobs")
	assert.Zero(t, tally.RolledBackRows, "the rolled-back enqueue left no job")
	assert.Zero(t, tally.RolledBackSent, "and was never sent")
	assert.Positive(t, tally.Replays, "lost answers were replayed, not billed")
	sum := 0
	for _, n := range tally.PerWorker {
		sum += n
	}
	assert.Equal(t, 300, sum)
	assert.Len(t, tally.PerWorker, 4, "every worker completed jobs before or after the kills")
}
