package pgjournal

import (
	"context"
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

// Journal is a safegen.KeyJournal stored in PostgreSQL and shared by every
// worker of a fleet that uses the same namespace. Begin commits before it
// returns; every worker finds every intent by its id; a worker owns (leases)
// the intents it begins or claims and renews those leases while it lives, so
// that Pending hands a worker only its own intents and those of workers that
// died. It is safe for concurrent use by multiple goroutines.
type Journal struct {
	pool *pgxpool.Pool
	cfg  config

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once

	mu        sync.Mutex
	lastPrune time.Time

	// claimMu keeps this journal's own renewals and claims apart: a claim
	// skips locked rows, and it must not skip the rows its own renewer
	// holds for an instant.
	claimMu sync.Mutex
}

var _ safegen.KeyJournal = (*Journal)(nil)

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

const cols = `intent_id, key, method, path, body, created_at, done_at IS NOT NULL, status, out_body, request_id, expired, completed_at`

// Begin records in with a lease for this worker and returns it once the
// transaction has committed, or returns the intent already recorded under
// in.ID by any worker, unchanged (compare its bytes with yours). An existing
// pending intent is leased to this worker if its lease ran out. A key
// recorded under another id is an error wrapping safegen.ErrKeyInUse.
// Times are kept to the microsecond.
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
	ns := j.cfg.namespace
	rows, err := j.pool.Query(ctx, `INSERT INTO safegen_intents
			(namespace, intent_id, key, method, path, body, created_at, owner, lease_until)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9 * interval '1 microsecond')
		ON CONFLICT (namespace, intent_id) DO NOTHING
		RETURNING `+cols,
		ns, in.ID, in.Key, in.Method, in.Path, body, in.CreatedAt.UTC(), j.cfg.owner, j.leaseMicros())
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
			WHERE namespace = $1 AND intent_id = $2 AND done_at IS NULL
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
// lease. Completing an unknown key is an error wrapping safegen.ErrIntentNotFound;
// completing a completed one does nothing (the first outcome stays).
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
		    owner = NULL, lease_until = NULL
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
	if j.closed() {
		return nil, safegen.ErrJournalClosed
	}
	j.claimMu.Lock()
	defer j.claimMu.Unlock()
	rows, err := j.pool.Query(ctx, `WITH claimable AS (
			SELECT namespace, intent_id FROM safegen_intents
			WHERE namespace = $1 AND done_at IS NULL
			  AND (owner = $2 OR lease_until IS NULL OR lease_until <= now())
			ORDER BY created_at, seq
			FOR UPDATE SKIP LOCKED)
		UPDATE safegen_intents i SET owner = $2, lease_until = now() + $3 * interval '1 microsecond'
		FROM claimable c WHERE i.namespace = c.namespace AND i.intent_id = c.intent_id
		RETURNING i.seq, `+prefixed("i."),
		j.cfg.namespace, j.cfg.owner, j.leaseMicros())
	if err != nil {
		return nil, fmt.Errorf("pgjournal: pending: %w", err)
	}
	var ps []seqIntent
	for rows.Next() {
		var p seqIntent
		if err := scanIntent(rows, &p.in, &p.seq); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pgjournal: pending: %w", err)
		}
		ps = append(ps, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgjournal: pending: %w", err)
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
	)
	dest := []any{&in.ID, &in.Key, &in.Method, &in.Path, &in.Body, &createdAt, &done, &status, &outBody, &requestID, &expired, &completedAt}
	if seq != nil {
		dest = append([]any{seq}, dest...)
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	in.CreatedAt = createdAt.UTC()
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
