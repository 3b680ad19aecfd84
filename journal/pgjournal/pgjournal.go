package pgjournal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	safegen "github.com/safegen/safegen-go"
)

// Journal is a safegen.JobJournal stored in PostgreSQL and shared by every
// worker of a fleet that uses the same namespace. Begin commits before it
// returns; every worker finds every intent by its id; a worker owns (leases)
// the intents it begins or claims and renews those leases while it lives, so
// that Pending and Unfinished hand a worker only its own intents and those
// of workers that died. A lease lasts while the intent is pending or its job
// unfinished. It is safe for concurrent use by multiple goroutines.
type Journal struct {
	pool *pgxpool.Pool
	cfg  config

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once

	mu        sync.Mutex
	lastPrune time.Time

	// claimMu keeps this journal's own renewals, claims and Advances apart:
	// a claim skips locked rows, and it must not skip the rows its own
	// renewer or Advance holds for an instant. Advances share it (RLock).
	claimMu sync.RWMutex
}

var _ safegen.JobJournal = (*Journal)(nil)

// New creates or migrates the schema in the database pool reaches, and
// returns a Journal that starts renewing its leases in the background. The
// caller keeps owning pool: Close stops the journal, not the pool.
func New(ctx context.Context, pool *pgxpool.Pool, opts ...Option) (*Journal, error) {
	if pool == nil {
		return nil, errors.New("pgjournal: nil pool")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.owner == "" {
		owner, err := defaultOwner()
		if err != nil {
			return nil, err
		}
		cfg.owner = owner
	}
	if err := migrate(ctx, pool); err != nil {
		return nil, fmt.Errorf("pgjournal: migrating the schema: %w", err)
	}
	j := &Journal{pool: pool, cfg: cfg, done: make(chan struct{}), lastPrune: time.Now()}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	go j.background()
	return j, nil
}

// Namespace returns the namespace the journal's intents live in.
func (j *Journal) Namespace() string { return j.cfg.namespace }

// Owner returns the owner id this journal writes into the leases it takes.
func (j *Journal) Owner() string { return j.cfg.owner }

// Close stops the lease renewer and the pruner, and waits for them. The
// leases this journal holds then run out on their own, after which other
// workers may claim its pending intents. It does not close the pool. Calls
// after Close fail with safegen.ErrJournalClosed. Close is safe to call more than
// once.
func (j *Journal) Close() error {
	j.closeOnce.Do(func() {
		j.cancel()
		<-j.done
	})
	return nil
}

func (j *Journal) closed() bool { return j.ctx.Err() != nil }

// leaseMicros is the lease as an integer the SQL multiplies by one
// microsecond: lease ends are computed on the database clock.
func (j *Journal) leaseMicros() int64 { return j.cfg.lease.Microseconds() }

const cols = `intent_id, key, method, path, body, created_at, done_at IS NOT NULL, status, out_body, request_id, expired, completed_at, job`

// Begin records in, with in.Job if it has one, with a lease for this worker
// and returns it once the transaction has committed, or returns the intent
// already recorded under in.ID by any worker, unchanged (compare its bytes
// with yours). An existing intent that is pending or whose job is unfinished
// is leased to this worker if its lease ran out. A key recorded under
// another id is an error wrapping safegen.ErrKeyInUse. Times are kept to the
// microsecond (the job's UpdatedAt to the nanosecond).
func (j *Journal) Begin(ctx context.Context, in safegen.Intent) (safegen.Intent, error) {
	if j.closed() {
		return safegen.Intent{}, safegen.ErrJournalClosed
	}
	if err := in.Validate(); err != nil {
		return safegen.Intent{}, err
	}
	body := in.Body
	if body == nil {
		body = []byte{}
	}
	job, unfinished, err := jobParam(in.Job)
	if err != nil {
		return safegen.Intent{}, fmt.Errorf("pgjournal: begin %q: %w", in.ID, err)
	}
	ns := j.cfg.namespace
	rows, err := j.pool.Query(ctx, `INSERT INTO safegen_intents
			(namespace, intent_id, key, method, path, body, created_at, owner, lease_until, job, job_unfinished)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9 * interval '1 microsecond', $10::jsonb, $11)
		ON CONFLICT (namespace, intent_id) DO NOTHING
		RETURNING `+cols,
		ns, in.ID, in.Key, in.Method, in.Path, body, in.CreatedAt.UTC(), j.cfg.owner, j.leaseMicros(), job, unfinished)
	if err != nil {
		return safegen.Intent{}, fmt.Errorf("pgjournal: begin %q: %w", in.ID, err)
	}
	got, err := collect(rows)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "safegen_intents_key" {
		return safegen.Intent{}, fmt.Errorf("%w: key %q is held by another intent in namespace %q", safegen.ErrKeyInUse, in.Key, ns)
	}
	if err != nil {
		return safegen.Intent{}, fmt.Errorf("pgjournal: begin %q: %w", in.ID, err)
	}
	if len(got) == 1 {
		return got[0], nil
	}
	// Already recorded (perhaps by a transaction that committed while this
	// one waited on the conflict): a new statement sees it. Take its lease
	// if nobody holds one, so the renewer keeps it while this worker sends.
	rows, err = j.pool.Query(ctx, `WITH claim AS (
			UPDATE safegen_intents SET owner = $3, lease_until = now() + $4 * interval '1 microsecond'
			WHERE namespace = $1 AND intent_id = $2 AND (done_at IS NULL OR job_unfinished)
			  AND (owner = $3 OR lease_until IS NULL OR lease_until <= now()))
		SELECT `+cols+` FROM safegen_intents WHERE namespace = $1 AND intent_id = $2`,
		ns, in.ID, j.cfg.owner, j.leaseMicros())
	if err != nil {
		return safegen.Intent{}, fmt.Errorf("pgjournal: begin %q: %w", in.ID, err)
	}
	got, err = collect(rows)
	if err != nil {
		return safegen.Intent{}, fmt.Errorf("pgjournal: begin %q: %w", in.ID, err)
	}
	if len(got) != 1 {
		// Pruned between the two statements: the caller may simply retry.
		return safegen.Intent{}, fmt.Errorf("pgjournal: begin %q: intent vanished while being read", in.ID)
	}
	return got[0], nil
}

// Complete records the outcome of the intent with this key and releases its
// lease, unless its job is unfinished: the lease then stays with its holder
// until the job is done. Completing an unknown key is an error wrapping
// safegen.ErrIntentNotFound; completing a completed one does nothing (the
// first outcome stays).
func (j *Journal) Complete(ctx context.Context, key string, out safegen.Outcome) error {
	if j.closed() {
		return safegen.ErrJournalClosed
	}
	ob := out.Body
	if ob == nil {
		ob = []byte{}
	}
	ns := j.cfg.namespace
	tag, err := j.pool.Exec(ctx, `UPDATE safegen_intents
		SET done_at = now(), status = $3, out_body = $4, request_id = $5, expired = $6, completed_at = $7,
		    owner = CASE WHEN job_unfinished THEN owner END,
		    lease_until = CASE WHEN job_unfinished THEN lease_until END
		WHERE namespace = $1 AND key = $2 AND done_at IS NULL`,
		ns, key, out.StatusCode, ob, out.RequestID, out.Expired, out.CompletedAt.UTC())
	if err != nil {
		return fmt.Errorf("pgjournal: complete %q: %w", key, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var found bool
	if err := j.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM safegen_intents WHERE namespace = $1 AND key = $2)`,
		ns, key).Scan(&found); err != nil {
		return fmt.Errorf("pgjournal: complete %q: %w", key, err)
	}
	if !found {
		return fmt.Errorf("%w: key %q in namespace %q", safegen.ErrIntentNotFound, key, ns)
	}
	return nil
}

// Pending claims and returns, oldest first, the pending intents of the
// namespace that this worker owns or whose lease has run out: in one
// transaction it locks them (FOR UPDATE SKIP LOCKED, so two workers claiming
// at once never get the same intent) and leases them to this worker. Intents
// leased by another live worker are not listed: that worker is sending them.
func (j *Journal) Pending(ctx context.Context) ([]safegen.Intent, error) {
	return j.claim(ctx, "pending", "done_at IS NULL")
}

// Advance records job as the progress of the whole job of the intent with
// this key (in the namespace), replacing the one recorded before, and
// commits before it returns. While the intent is pending or its job
// unfinished, Advance leases it to this worker if this worker holds the
// lease or nobody live does, and leaves another live worker's lease alone
// (both record the same facts; the idempotency key keeps billing single).
// Once the intent has its outcome and its job is Done, Advance releases the
// lease and the retention period starts. An unknown key is an error wrapping
// safegen.ErrIntentNotFound.
func (j *Journal) Advance(ctx context.Context, key string, job safegen.Job) error {
	if j.closed() {
		return safegen.ErrJournalClosed
	}
	doc, unfinished, err := jobParam(&job)
	if err != nil {
		return fmt.Errorf("pgjournal: advance %q: %w", key, err)
	}
	j.claimMu.RLock()
	defer j.claimMu.RUnlock()
	ns := j.cfg.namespace
	tag, err := j.pool.Exec(ctx, `UPDATE safegen_intents SET job = $3::jsonb, job_unfinished = $4,
			job_done_at = CASE WHEN job_unfinished AND NOT $4 THEN now() ELSE job_done_at END,
			owner = CASE
				WHEN done_at IS NOT NULL AND NOT $4 THEN NULL
				WHEN owner = $5 OR lease_until IS NULL OR lease_until <= now() THEN $5
				ELSE owner END,
			lease_until = CASE
				WHEN done_at IS NOT NULL AND NOT $4 THEN NULL
				WHEN owner = $5 OR lease_until IS NULL OR lease_until <= now() THEN now() + $6 * interval '1 microsecond'
				ELSE lease_until END
		WHERE namespace = $1 AND key = $2`,
		ns, key, doc, unfinished, j.cfg.owner, j.leaseMicros())
	if err != nil {
		return fmt.Errorf("pgjournal: advance %q: %w", key, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: key %q in namespace %q", safegen.ErrIntentNotFound, key, ns)
	}
	return nil
}

// Unfinished claims and returns, oldest first, the intents of the namespace
// whose job is not Done, with or without an outcome, that this worker owns
// or whose lease has run out, as Pending does: locked with FOR UPDATE SKIP
// LOCKED and leased to this worker in one statement, so two live workers
// never drive the same job at once. Jobs leased by another live worker are
// not listed: that worker is driving them. A dead worker's unfinished jobs
// are listed one lease after its last renewal.
func (j *Journal) Unfinished(ctx context.Context) ([]safegen.Intent, error) {
	return j.claim(ctx, "unfinished", "job_unfinished")
}

// claim leases to this worker and returns, oldest first, the intents of the
// namespace that match where (an SQL condition on the row) and that this
// worker owns or whose lease has run out.
func (j *Journal) claim(ctx context.Context, op, where string) ([]safegen.Intent, error) {
	if j.closed() {
		return nil, safegen.ErrJournalClosed
	}
	j.claimMu.Lock()
	defer j.claimMu.Unlock()
	rows, err := j.pool.Query(ctx, `WITH claimable AS (
			SELECT namespace, intent_id FROM safegen_intents
			WHERE namespace = $1 AND `+where+`
			  AND (owner = $2 OR lease_until IS NULL OR lease_until <= now())
			ORDER BY created_at, seq
			FOR UPDATE SKIP LOCKED)
		UPDATE safegen_intents i SET owner = $2, lease_until = now() + $3 * interval '1 microsecond'
		FROM claimable c WHERE i.namespace = c.namespace AND i.intent_id = c.intent_id
		RETURNING i.seq, `+prefixed("i."),
		j.cfg.namespace, j.cfg.owner, j.leaseMicros())
	if err != nil {
		return nil, fmt.Errorf("pgjournal: %s: %w", op, err)
	}
	var ps []seqIntent
	for rows.Next() {
		var p seqIntent
		if err := scanIntent(rows, &p.in, &p.seq); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pgjournal: %s: %w", op, err)
		}
		ps = append(ps, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgjournal: %s: %w", op, err)
	}
	// UPDATE ... RETURNING keeps no order.
	sort.Slice(ps, func(a, b int) bool {
		if c := ps[a].in.CreatedAt.Compare(ps[b].in.CreatedAt); c != 0 {
			return c < 0
		}
		return ps[a].seq < ps[b].seq
	})
	out := make([]safegen.Intent, len(ps))
	for i, p := range ps {
		out[i] = p.in
	}
	return out, nil
}

// jobParam returns the JSON of job for a jsonb parameter (nil for no job)
// and whether the job is unfinished.
func jobParam(job *safegen.Job) (doc any, unfinished bool, err error) {
	if job == nil {
		return nil, false, nil
	}
	jb := *job
	jb.UpdatedAt = jb.UpdatedAt.Round(0).UTC()
	b, err := json.Marshal(jb)
	if err != nil {
		return nil, false, fmt.Errorf("encoding the job: %w", err)
	}
	return string(b), !jb.Done(), nil
}

type seqIntent struct {
	seq int64
	in  safegen.Intent
}

// prefixed returns cols with each column qualified by p (such as "i.").
func prefixed(p string) string {
	return p + strings.ReplaceAll(cols, ", ", ", "+p)
}

// collect scans every row of rows (selected as cols) into intents.
func collect(rows pgx.Rows) ([]safegen.Intent, error) {
	defer rows.Close()
	var out []safegen.Intent
	for rows.Next() {
		var in safegen.Intent
		if err := scanIntent(rows, &in, nil); err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	return out, rows.Err()
}

// scanIntent scans one row selected as cols, preceded by seq when seq is
// not nil.
func scanIntent(rows pgx.Rows, in *safegen.Intent, seq *int64) error {
	var (
		done        bool
		status      *int32
		outBody     []byte
		requestID   *string
		expired     bool
		completedAt *time.Time
		createdAt   time.Time
		job         []byte
	)
	dest := []any{&in.ID, &in.Key, &in.Method, &in.Path, &in.Body, &createdAt, &done, &status, &outBody, &requestID, &expired, &completedAt, &job}
	if seq != nil {
		dest = append([]any{seq}, dest...)
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	in.CreatedAt = createdAt.UTC()
	if job != nil {
		in.Job = new(safegen.Job)
		if err := json.Unmarshal(job, in.Job); err != nil {
			return fmt.Errorf("decoding the job of %q: %w", in.ID, err)
		}
	}
	if !done {
		return nil
	}
	o := &safegen.Outcome{Body: outBody, Expired: expired}
	if status != nil {
		o.StatusCode = int(*status)
	}
	if requestID != nil {
		o.RequestID = *requestID
	}
	if completedAt != nil {
		o.CompletedAt = completedAt.UTC()
	}
	in.Outcome = o
	return nil
}
