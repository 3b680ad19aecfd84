package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/safegen/safegen-go"
)

// runWithoutKeys is demo --no-keys: the same calls and faults through a plain
// client of the kind most SDKs ship, which retries a failed POST (reset,
// timeout, 5xx, 429) but sends no Idempotency-Key and keeps no journal. Every
// retry of a call whose work was already committed is billed again.
func runWithoutKeys(ctx context.Context, url, apiKey string, d *demoConfig, onDone func(i int, genID string)) error {
	dialect, err := safegen.ParseDialect(d.dialect)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	jobs := make(chan int)
	errs := make(chan error, d.concurrency)
	var wg sync.WaitGroup
	for range d.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := plainCreate(ctx, hc, url, apiKey, dialect, i, onDone); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < d.size && ctx.Err() == nil; i++ {
		select {
		case jobs <- i:
		case <-ctx.Done():
		case err := <-errs:
			close(jobs)
			wg.Wait()
			return err
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	return ctx.Err()
}

// plainCreate makes call i without a key, retrying up to 8 times with a
// short backoff, as a generic HTTP client would.
func plainCreate(ctx context.Context, hc *http.Client, url, apiKey string, d safegen.Dialect, i int, onDone func(int, string)) error {
	body, err := json.Marshal(demoParams(i))
	if err != nil {
		return err
	}
	wait := 5 * time.Millisecond
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/generations", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		if d == safegen.DialectRealm {
			req.Header.Set("X-API-Key", apiKey)
		} else {
			req.Header.Set("Authorization", "Bearer "+apiKey)
		}
		resp, err := hc.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			switch {
			case rerr == nil && resp.StatusCode >= 200 && resp.StatusCode < 300:
				var g struct {
					ID string `json:"id"`
				}
				if json.Unmarshal(b, &g) == nil && g.ID != "" {
					onDone(i, g.ID)
					return nil
				}
			case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests:
				return fmt.Errorf("call %d: %d %s", i, resp.StatusCode, bytes.TrimSpace(b))
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt == 8 {
			return fmt.Errorf("call %d: gave up after %d attempts", i, attempt+1)
		}
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
}
