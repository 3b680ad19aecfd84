package pgjournal

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
)

// Option configures a Journal. Options apply in order; the last one wins.
type Option func(*config) error

type config struct {
	namespace  string
	owner      string
	lease      time.Duration
	retention  time.Duration
	pruneEvery time.Duration
}

func defaultConfig() config {
	return config{
		namespace:  "default",
		lease:      30 * time.Second,
		retention:  25 * time.Hour,
		pruneEvery: time.Minute,
	}
}

// WithNamespace scopes the journal's intents: journals with different
// namespaces share the table but never see each other's intents. Use one
// namespace per API key or per application, the scope in which the server
// deduplicates idempotency keys. Default "default".
func WithNamespace(ns string) Option {
	return func(c *config) error {
		if ns == "" {
			return errors.New("pgjournal: empty namespace")
		}
		c.namespace = ns
		return nil
	}
}

// WithOwner names this worker in the leases it takes. It must be unique
// among the live workers of a namespace: two journals with one owner id
// would both re-drive the same intents. Default: hostname, process id and
// a random suffix, unique per New.
func WithOwner(owner string) Option {
	return func(c *config) error {
		if owner == "" {
			return errors.New("pgjournal: empty owner")
		}
		c.owner = owner
		return nil
	}
}

// WithLease sets how long an intent stays owned by the worker that began or
// claimed it without a renewal. The worker renews its leases every lease/3;
// a dead worker's pending intents become claimable by Pending (and so by
// Client.Resume) one lease after its last renewal. Default 30s.
func WithLease(d time.Duration) Option {
	return func(c *config) error {
		if d < 3*time.Millisecond {
			return fmt.Errorf("pgjournal: lease %v is too short", d)
		}
		c.lease = d
		return nil
	}
}

// WithRetention sets how long a completed intent is kept (on the database
// clock, from its completion) before pruning removes it. Keep it at least
// the server's key window: within it, re-running an intent id returns the
// recorded outcome instead of making a new call. Default 25h (a 24h key
// window plus an hour).
func WithRetention(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("pgjournal: retention %v is not positive", d)
		}
		c.retention = d
		return nil
	}
}

// WithPruneInterval sets how often, at most, the journal's background
// goroutine deletes completed intents older than the retention (Prune does
// it on demand). Default 1m.
func WithPruneInterval(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("pgjournal: prune interval %v is not positive", d)
		}
		c.pruneEvery = d
		return nil
	}
}

// defaultOwner is hostname/pid/random: unique per Journal, readable in the
// table when a human asks who holds an intent.
func defaultOwner() (string, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	u, err := uuid.NewRandom()
	if err != nil {
		return "", fmt.Errorf("pgjournal: making an owner id: %w", err)
	}
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), u.String()[:8]), nil
}
