package safegen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// spendBook is where a Client keeps its spend: its SpendJournal, or memory.
type spendBook interface {
	Reserve(ctx context.Context, key string, credits, limit float64) (SpendReport, error)
	Settle(ctx context.Context, key string, charged float64) (SpendReport, error)
	Spend(ctx context.Context) (SpendReport, error)
}

// memBook is a SpendLedger behind the spendBook interface. It remembers the
// last recentKeys settled keys, so that a replay of one is the same charge;
// older ones are forgotten (their charges stay in Spent), which keeps a
// long-lived Client's memory flat. A key settled again after that is
// counted again: conservative, never optimistic.
type memBook struct {
	l       SpendLedger
	settled boundedMap[struct{}]
}

// recentKeys bounds what a Client remembers per call for its spend limit.
const recentKeys = 1 << 16

func (m *memBook) Reserve(_ context.Context, key string, credits, limit float64) (SpendReport, error) {
	return m.l.Reserve(key, credits, limit)
}

func (m *memBook) Settle(_ context.Context, key string, charged float64) (SpendReport, error) {
	rep := m.l.Settle(key, charged)
	if old, ok := m.settled.store(key, struct{}{}); ok {
		m.l.Forget(old)
	}
	return rep, nil
}

func (m *memBook) Spend(context.Context) (SpendReport, error) { return m.l.Report(), nil }

// spendGuard is a Client's spend limit: the price of every billable call is
// reserved before its first byte and settled to the answer's cost.
type spendGuard struct {
	limit     float64
	observer  Observer // nil without WithObserver
	book      spendBook
	estimates boundedMap[float64] // model, duration and input → price
	genKeys   boundedMap[string]  // generation id → idempotency key, for refunds
	lastMu    sync.Mutex
	last      SpendReport // the latest report, for Spend when the book cannot be read
}

func newSpendGuard(s *settings) *spendGuard {
	if !s.spendOn {
		return nil
	}
	g := &spendGuard{limit: s.spendLimit, observer: s.observer,
		estimates: boundedMap[float64]{max: 1 << 10}, genKeys: boundedMap[string]{max: recentKeys}}
	if sj, ok := s.journal.(SpendJournal); ok {
		g.book = sj
	} else {
		g.book = &memBook{settled: boundedMap[struct{}]{max: recentKeys}}
	}
	return g
}

// price is what a billable call reserves: WithCost, else for a create the
// estimate of its parameters (cached). Other billable calls need WithCost.
func (g *spendGuard) price(ctx context.Context, c *Client, s *settings, r request) (float64, error) {
	if s.costSet {
		return s.cost, nil
	}
	if r.method == http.MethodPost && r.path == "/v1/generations" {
		p := r.params
		if p == nil {
			p = new(GenerationCreateParams)
			if err := json.Unmarshal(r.body, p); err != nil {
				return 0, fmt.Errorf("%w: reading the create's parameters to price it: %v", ErrInvalidRequest, err)
			}
		}
		return g.estimate(ctx, c, p)
	}
	return 0, fmt.Errorf("%w: %s %s is billable and the Client has a spend limit: give its price with WithCost",
		ErrInvalidRequest, r.method, r.path)
}

// estimate returns the price of params from Generations.Estimate, asked once
// per model and parameters (the prompt and webhook do not change a price).
func (g *spendGuard) estimate(ctx context.Context, c *Client, p *GenerationCreateParams) (float64, error) {
	input, _ := json.Marshal(p.Input) // map keys marshal sorted
	key := p.Model + "\x00" + strconv.Itoa(p.DurationS) + "\x00" + string(input)
	if v, ok := g.estimates.load(key); ok {
		return v, nil
	}
	e, err := c.Generations.Estimate(ctx, p, withoutKey)
	if err != nil {
		return 0, fmt.Errorf("safegen: pricing the create for the spend limit (Generations.Estimate; WithCost skips it): %w", err)
	}
	g.estimates.store(key, e.Credits)
	return e.Credits, nil
}

// reserve holds the call's price under its key, or refuses the call.
func (g *spendGuard) reserve(ctx context.Context, r request, key string, price float64) error {
	rep, err := g.book.Reserve(ctx, key, price, g.limit)
	var se *SpendLimitError
	if errors.As(err, &se) {
		se.Method, se.Path, se.IdempotencyKey = r.method, r.path, key
		se.Limit = g.limit
		g.remember(ctx, rep)
		return se
	}
	if err != nil {
		return fmt.Errorf("safegen: %s %s: journal: spend not reserved, nothing sent: %w", r.method, r.path, err)
	}
	g.remember(ctx, rep)
	return nil
}

// settle turns the reservation into the answer's charge: the response's
// cost for a 2xx (the price reserved when it has none), nothing for a
// refusal. A key reuse refusal changes nothing: the key belongs to another
// request, whose charge stands.
func (g *spendGuard) settle(ctx context.Context, s *settings, key string, out *response, apiErr *APIError, price float64) {
	charged := 0.0
	switch {
	case apiErr == nil:
		charged = price
		if c, ok := readCharge(out.body); ok {
			if c.hasCost {
				charged = c.cost
			}
			if c.id != "" {
				g.genKeys.store(c.id, key)
			}
		}
	case errors.Is(apiErr, ErrIdempotencyKeyReuse):
		return
	}
	g.book1(ctx, s, key, charged)
}

// refund settles a canceled generation to what it still costs.
func (g *spendGuard) refund(ctx context.Context, s *settings, gen *Generation) {
	if gen.Status != StatusCanceled {
		return
	}
	if key, ok := g.genKeys.load(gen.ID); ok {
		g.book1(ctx, s, key, gen.Cost)
	}
}

func (g *spendGuard) book1(ctx context.Context, s *settings, key string, charged float64) {
	if ctx.Done() != nil {
		ctx = context.WithoutCancel(ctx) // a settlement is not the caller's to cut short
	}
	rep, err := g.book.Settle(ctx, key, charged)
	if err != nil {
		s.logger.Warn("safegen: journal: spend not settled; its reservation stays counted until a later settle",
			"idempotency_key", key, "error", err.Error())
		return
	}
	g.remember(ctx, rep)
}

// remember keeps the latest report and tells the observer.
func (g *spendGuard) remember(ctx context.Context, rep SpendReport) {
	rep.Limit = g.limit
	g.lastMu.Lock()
	g.last = rep
	g.lastMu.Unlock()
	if g.observer != nil {
		g.observer.SpendChange(ctx, SpendEvent(rep))
	}
}

// Spend reports where the Client's spend limit stands: the limit, what
// answered calls were charged, and what is reserved for calls in flight or
// whose outcome is unknown. With a SpendJournal the figures are the
// journal's (every Client sharing it); if it cannot be read within a few
// seconds, the figures as of this Client's last reservation or settlement.
// Without WithSpendLimit it is the zero SpendReport.
func (c *Client) Spend() SpendReport {
	g := c.spend
	if g == nil {
		return SpendReport{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := g.book.Spend(ctx)
	if err != nil {
		g.lastMu.Lock()
		defer g.lastMu.Unlock()
		return g.last
	}
	rep.Limit = g.limit
	return rep
}

// boundedMap is a map safe for concurrent use that forgets its oldest keys
// past max entries, so what a Client remembers per call stays bounded.
type boundedMap[V any] struct {
	max   int
	mu    sync.Mutex
	m     map[string]V
	order []string // keys in insertion order, a ring once full
	next  int      // the ring's oldest slot
}

func (b *boundedMap[V]) load(k string) (V, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.m[k]
	return v, ok
}

// store sets k to v; it returns the key it forgot to make room, if any.
func (b *boundedMap[V]) store(k string, v V) (forgot string, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[string]V)
	}
	if _, had := b.m[k]; had {
		b.m[k] = v
		return "", false
	}
	b.m[k] = v
	if len(b.order) < b.max {
		b.order = append(b.order, k)
		return "", false
	}
	forgot, b.order[b.next] = b.order[b.next], k
	b.next = (b.next + 1) % b.max
	delete(b.m, forgot)
	return forgot, true
}

// readCharge reads an answer's id and cost (decodeCharge, else
// encoding/json); ok is false for a body that is not such an object.
func readCharge(body []byte) (c charge, ok bool) {
	if c, ok = decodeCharge(body); ok {
		return c, true
	}
	var v struct {
		ID   string   `json:"id"`
		Cost *float64 `json:"cost"`
	}
	if json.Unmarshal(body, &v) != nil {
		return charge{}, false
	}
	c.id = v.ID
	if v.Cost != nil {
		c.cost, c.hasCost = *v.Cost, true
	}
	return c, true
}
