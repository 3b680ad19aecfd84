package saferiver

import (
	"strconv"

	safegen "github.com/safegen/safegen-go"
)

// Kind is the River job kind of GenerationArgs.
const Kind = "safegen_generation"

// GenerationArgs are the arguments of a River job that runs one paid
// generation: the create's parameters, and where its output goes. They are
// stored as JSON in the job row, and sent byte for byte on every run of the
// job, so a run never differs from the first.
type GenerationArgs struct {
	safegen.GenerationCreateParams

	// Output is the file the output is written to: a relative path is taken
	// in the Worker's output directory (WithOutputDir); empty means
	// "river-job-<id>" there.
	Output string `json:"output,omitempty"`
}

// Kind returns the job kind, Kind.
func (GenerationArgs) Kind() string { return Kind }

// IntentID is the journal intent id under which the Worker runs the River
// job with this id: one job, one intent, one idempotency key, however often
// River runs it.
func IntentID(jobID int64) string { return "river-job-" + strconv.FormatInt(jobID, 10) }
