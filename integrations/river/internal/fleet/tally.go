package fleet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	saferiver "github.com/safegen/safegen-go/integrations/river"
	"github.com/safegen/safegen-go/safegentest"
)

// Tally is what a fleet run did, counted from the server's requests and
// ledger, River's job rows and the output files.
type Tally struct {
	Jobs, Workers int
	Killed        []string
	// Completed, Cancelled and Discarded are River's final states.
	Completed, Cancelled, Discarded int
	// Verified jobs are completed with their output file on disk, its size
	// and SHA-256 those the job recorded, and its generation charged once.
	Verified int
	// Rescued jobs were made retryable by River's rescuer after their
	// worker died.
	Rescued int
	// PerWorker counts the completed jobs by the worker that completed them.
	PerWorker map[string]int
	// RolledBackRows and RolledBackSent count the job enqueued in a
	// transaction that rolled back: rows of it, and requests that carried
	// its prompt. Both must be 0.
	RolledBackRows, RolledBackSent int

	Attempts, Replays, Charges, Duplicates, Lost int
	Causes                                       map[string]int
	Wall                                         time.Duration
}

// OK reports whether the promise held: every job billed once and finished
// with its output verified, none lost, the rolled-back one never sent.
func (t *Tally) OK() bool {
	return t.Duplicates == 0 && t.Lost == 0 && t.Charges == t.Jobs && t.Verified == t.Jobs &&
		t.RolledBackRows == 0 && t.RolledBackSent == 0
}

func (t *Tally) count(ctx context.Context, pool *pgxpool.Pool, srv *safegentest.Server) error {
	l := srv.Ledger()
	t.Charges = l.Total()
	t.Duplicates = len(l.Duplicates())
	if extra := t.Charges - t.Jobs; extra > t.Duplicates {
		t.Duplicates = extra
	}
	charged := map[string]int{}
	for _, c := range l.Charges {
		charged[c.GenerationID]++
	}
	t.Causes = map[string]int{}
	for _, r := range srv.Requests() {
		if bytes.Contains(r.Body, []byte(RolledBackPrompt)) {
			t.RolledBackSent++
		}
		if r.Method != http.MethodPost || r.Path != "/v1/generations" {
			continue
		}
		t.Attempts++
		if r.Replayed {
			t.Replays++
		}
		if c := r.Cause(); c != "" {
			t.Causes[c]++
		}
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE args->>'prompt' = $1`, RolledBackPrompt).
		Scan(&t.RolledBackRows); err != nil {
		return err
	}
	rows, err := pool.Query(ctx, `SELECT id, state::text, coalesce(attempted_by[array_upper(attempted_by, 1)], ''),
			coalesce(metadata->>'output', ''), coalesce(errors::text, '') LIKE '%rescued by JobRescuer%'
		FROM river_job ORDER BY id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var (
			id             int64
			state, by, out string
			rescued        bool
		)
		if err := rows.Scan(&id, &state, &by, &out, &rescued); err != nil {
			return err
		}
		seen++
		if rescued {
			t.Rescued++
		}
		switch state {
		case "completed":
			t.Completed++
			t.PerWorker[by]++
		case "cancelled":
			t.Cancelled++
			continue
		case "discarded":
			t.Discarded++
			continue
		default:
			continue
		}
		var o saferiver.Output
		if err := json.Unmarshal([]byte(out), &o); err != nil || o.GenerationID == "" {
			continue
		}
		if charged[o.GenerationID] == 1 && verifyFile(o.Path, o.Size, o.SHA256) == nil {
			t.Verified++
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	t.Lost = t.Jobs - t.Verified
	if seen != t.Jobs {
		return fmt.Errorf("fleet: %d job rows for %d jobs enqueued", seen, t.Jobs)
	}
	return nil
}

func verifyFile(path string, size int64, sum string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != size || !strings.EqualFold(hex.EncodeToString(h.Sum(nil)), sum) {
		return fmt.Errorf("%s: %d bytes, sha256 %x: not the recorded output", path, n, h.Sum(nil))
	}
	return nil
}

// Print writes the tally as a table, then the verdict.
func (t *Tally) Print(w io.Writer) {
	keys := make([]string, 0, len(t.Causes))
	for k := range t.Causes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var causes []string
	for _, k := range keys {
		causes = append(causes, fmt.Sprintf("%s: %d", k, t.Causes[k]))
	}
	if len(causes) == 0 {
		causes = []string{"none"}
	}
	workers := make([]string, 0, len(t.PerWorker))
	for k := range t.PerWorker {
		workers = append(workers, k)
	}
	sort.Strings(workers)
	killed := map[string]bool{}
	for _, k := range t.Killed {
		killed[k] = true
	}
	var per []string
	for _, k := range workers {
		s := fmt.Sprintf("%s %d", k, t.PerWorker[k])
		if killed[k] {
			s += " (SIGKILLed)"
		}
		per = append(per, s)
	}
	rows := [][2]string{
		{"jobs (enqueued in transactions)", strconv.Itoa(t.Jobs)},
		{"worker processes", strconv.Itoa(t.Workers)},
		{"SIGKILLed, not restarted", strconv.Itoa(len(t.Killed))},
		{"jobs rescued by River", strconv.Itoa(t.Rescued)},
		{"completed / cancelled / discarded", fmt.Sprintf("%d / %d / %d", t.Completed, t.Cancelled, t.Discarded)},
		{"outputs verified (size, sha256)", strconv.Itoa(t.Verified)},
		{"completed per worker", strings.Join(per, ", ")},
		{"creates (server side)", strconv.Itoa(t.Attempts)},
		{"failed creates by cause", strings.Join(causes, ", ")},
		{"replays (same key, not billed)", strconv.Itoa(t.Replays)},
		{"charges in the ledger", strconv.Itoa(t.Charges)},
		{"duplicates", strconv.Itoa(t.Duplicates)},
		{"lost", strconv.Itoa(t.Lost)},
		{"rolled-back enqueue: rows, sent", fmt.Sprintf("%d, %d", t.RolledBackRows, t.RolledBackSent)},
		{"wall time", t.Wall.Round(time.Millisecond).String()},
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		fmt.Fprintf(w, "  %-34s %s\n", r[0], r[1])
	}
	verdict := "every job billed exactly once and finished, none lost; the rolled-back enqueue never sent"
	if !t.OK() {
		verdict = "PROMISE BROKEN"
	}
	fmt.Fprintf(w, "\n%s\n", verdict)
}
