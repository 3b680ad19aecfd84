package safegen

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// WebhookHandler returns an http.Handler that receives webhook deliveries:
//
//   - only POST (405 otherwise), a body up to the size limit (413 over it);
//   - verified as ParseEvent does: 400 when malformed, 401 when the signature
//     or the timestamp is wrong;
//   - deduplicated by event id through the DedupStore: a delivery already
//     processed answers 204 without calling fn, and one that another request
//     is processing right now answers 409, so the sender tries again later;
//   - fn called with the request's context; nil answers 204, an error (or a
//     panic) answers 500 and releases the event id, so the sender's retry
//     runs fn again.
//
// fn runs before the answer: senders retry what is not answered within
// seconds (10 for the Generation API), so keep it short and hand long work
// to a queue. A store error
// answers 500. With no usable secret every delivery answers 500.
func WebhookHandler(secrets []string, fn func(ctx context.Context, e *Event) error, opts ...WebhookOption) http.Handler {
	cfg := newWebhookConfig(opts)
	if cfg.dedup == nil {
		cfg.dedup = newMemoryDedupStore(defaultDedupTTL, cfg.now)
	}
	return &webhookHandler{cfg: cfg, secrets: append([]string(nil), secrets...), fn: fn}
}

type webhookHandler struct {
	cfg     webhookConfig
	secrets []string
	fn      func(ctx context.Context, e *Event) error
}

func (h *webhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	log := h.cfg.logger
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > h.cfg.maxBody {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	e, err := h.cfg.parseEvent(r.Header, body, h.secrets)
	if err != nil {
		status := http.StatusUnauthorized
		switch {
		case errors.Is(err, ErrWebhookMalformed):
			status = http.StatusBadRequest
		case errors.Is(err, errNoWebhookSecret):
			status = http.StatusInternalServerError
			log.Error("webhook rejected: receiver has no secret")
		}
		if status != http.StatusInternalServerError {
			log.Warn("webhook rejected", "status", status, "reason", err.Error())
		}
		http.Error(w, http.StatusText(status), status)
		return
	}

	ctx := r.Context()
	state, err := h.cfg.dedup.Claim(ctx, e.ID)
	if err != nil {
		log.Error("webhook dedup store: claim failed", "event_id", e.ID, "err", err)
		http.Error(w, "dedup store unavailable", http.StatusInternalServerError)
		return
	}
	switch state {
	case DedupDone:
		log.Debug("webhook duplicate ignored", "event_id", e.ID, "type", e.Type)
		w.WriteHeader(http.StatusNoContent)
		return
	case DedupBusy:
		log.Debug("webhook duplicate while in progress", "event_id", e.ID, "type", e.Type)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "event is being processed", http.StatusConflict)
		return
	case DedupClaimed:
	default:
		log.Error("webhook dedup store: unknown claim state", "event_id", e.ID, "state", int(state))
		http.Error(w, "dedup store error", http.StatusInternalServerError)
		return
	}

	// The store must hear the outcome even if the sender hung up.
	storeCtx := context.WithoutCancel(ctx)
	if err := h.run(ctx, e); err != nil {
		if rerr := h.cfg.dedup.Release(storeCtx, e.ID); rerr != nil {
			log.Error("webhook dedup store: release failed", "event_id", e.ID, "err", rerr)
		}
		log.Error("webhook handler failed; the sender will retry", "event_id", e.ID, "type", e.Type, "err", err)
		http.Error(w, "handler failed", http.StatusInternalServerError)
		return
	}
	if err := h.cfg.dedup.Done(storeCtx, e.ID); err != nil {
		// fn has run: answering 500 would run it again on the retry.
		log.Error("webhook dedup store: done failed", "event_id", e.ID, "err", err)
	}
	log.Debug("webhook processed", "event_id", e.ID, "type", e.Type)
	w.WriteHeader(http.StatusNoContent)
}

// run calls fn, turning a panic into an error so the claim is released.
func (h *webhookHandler) run(ctx context.Context, e *Event) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("safegen: webhook handler panicked: %v", p)
		}
	}()
	if h.fn == nil {
		return nil
	}
	return h.fn(ctx, e)
}

// DedupState is what DedupStore.Claim found.
type DedupState int

const (
	// DedupClaimed: the id was free and is now claimed by the caller, who
	// must call Done or Release.
	DedupClaimed DedupState = iota + 1
	// DedupDone: the id was processed before; skip it.
	DedupDone
	// DedupBusy: another caller holds a claim on the id right now.
	DedupBusy
)

// DedupStore remembers which event ids a WebhookHandler has processed, so a
// redelivery does not run the handler's function twice. An implementation
// must be safe for concurrent use, and Claim must be atomic: of two
// concurrent Claims of one id, at most one gets DedupClaimed. A store shared
// by several processes (a database row, a Redis SET NX with expiry) lets
// replicas behind one URL deduplicate together.
type DedupStore interface {
	// Claim marks id as in progress if it is neither done nor claimed.
	Claim(ctx context.Context, id string) (DedupState, error)
	// Done marks a claimed id as processed, for the store's retention time.
	Done(ctx context.Context, id string) error
	// Release drops a claim whose processing failed, so the next delivery
	// of the id can claim it again.
	Release(ctx context.Context, id string) error
}

const (
	// defaultDedupTTL is how long a processed id is remembered: longer than
	// any sender's retry schedule (6 attempts span minutes to hours).
	defaultDedupTTL = 24 * time.Hour
	// dedupClaimLease bounds how long a claim blocks other deliveries when
	// its holder neither finishes nor releases it (a hung handler).
	dedupClaimLease = 10 * time.Minute
	// defaultDedupMaxEntries bounds a MemoryDedupStore's memory.
	defaultDedupMaxEntries = 100_000
)

// MemoryDedupStore is a DedupStore in this process's memory. It remembers a
// processed id for its TTL, prunes expired ids as it goes, and holds at most
// 100,000 ids: past that it forgets the oldest first. A claim that is neither
// done nor released within 10 minutes lapses, so a hung handler does not
// block its event for good. It is safe for concurrent use by multiple
// goroutines. Its contents do not survive a restart, and each process has
// its own: use a shared DedupStore for several replicas.
type MemoryDedupStore struct {
	mu         sync.Mutex
	ttl        time.Duration
	lease      time.Duration
	maxEntries int
	now        func() time.Time
	entries    map[string]*list.Element // of *dedupEntry
	order      *list.List               // oldest update first
}

type dedupEntry struct {
	id      string
	done    bool
	updated time.Time
}

// NewMemoryDedupStore returns an empty MemoryDedupStore that remembers a
// processed id for ttl, on the wall clock. Default (ttl <= 0) 24 hours.
func NewMemoryDedupStore(ttl time.Duration) *MemoryDedupStore {
	return newMemoryDedupStore(ttl, time.Now)
}

func newMemoryDedupStore(ttl time.Duration, now func() time.Time) *MemoryDedupStore {
	if ttl <= 0 {
		ttl = defaultDedupTTL
	}
	return &MemoryDedupStore{
		ttl:        ttl,
		lease:      min(ttl, dedupClaimLease),
		maxEntries: defaultDedupMaxEntries,
		now:        now,
		entries:    make(map[string]*list.Element),
		order:      list.New(),
	}
}

// Claim implements DedupStore.
func (m *MemoryDedupStore) Claim(ctx context.Context, id string) (DedupState, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.pruneLocked(now)
	if el, ok := m.entries[id]; ok {
		e := el.Value.(*dedupEntry)
		if e.done {
			return DedupDone, nil
		}
		if now.Sub(e.updated) < m.lease {
			return DedupBusy, nil
		}
		// A lapsed claim: take it over.
		e.updated = now
		m.order.MoveToBack(el)
		return DedupClaimed, nil
	}
	for m.order.Len() >= m.maxEntries {
		m.removeLocked(m.order.Front())
	}
	m.entries[id] = m.order.PushBack(&dedupEntry{id: id, updated: now})
	return DedupClaimed, nil
}

// Done implements DedupStore. Marking an id that is not claimed records it
// as done all the same.
func (m *MemoryDedupStore) Done(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if el, ok := m.entries[id]; ok {
		e := el.Value.(*dedupEntry)
		e.done, e.updated = true, now
		m.order.MoveToBack(el)
		return nil
	}
	for m.order.Len() >= m.maxEntries {
		m.removeLocked(m.order.Front())
	}
	m.entries[id] = m.order.PushBack(&dedupEntry{id: id, done: true, updated: now})
	return nil
}

// Release implements DedupStore. Releasing an id that is done or unknown
// does nothing.
func (m *MemoryDedupStore) Release(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.entries[id]; ok && !el.Value.(*dedupEntry).done {
		m.removeLocked(el)
	}
	return nil
}

// Len returns how many ids the store holds, done or claimed, expired ones
// included until they are pruned.
func (m *MemoryDedupStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.order.Len()
}

// pruneLocked drops the ids whose retention has passed. The list is in
// update order, so they are at its front.
func (m *MemoryDedupStore) pruneLocked(now time.Time) {
	for el := m.order.Front(); el != nil; el = m.order.Front() {
		if now.Sub(el.Value.(*dedupEntry).updated) < m.ttl {
			return
		}
		m.removeLocked(el)
	}
}

func (m *MemoryDedupStore) removeLocked(el *list.Element) {
	delete(m.entries, el.Value.(*dedupEntry).id)
	m.order.Remove(el)
}
