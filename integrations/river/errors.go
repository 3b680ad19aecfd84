package saferiver

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/riverqueue/river"

	safegen "github.com/safegen/safegen-go"
)

// permanent are the errors no retry of the same job can change: the job is
// cancelled.
var permanent = []error{
	safegen.ErrIdempotencyKeyReuse,   // one key, two bodies: a bug, not a blip
	safegen.ErrQuotaExceeded,         // the plan's quota is spent
	safegen.ErrInsufficientCredits,   // top up, then enqueue again
	safegen.ErrInvalidRequest,        // fix the parameters
	safegen.ErrInvalidIdempotencyKey, // the dialect refuses the key
	safegen.ErrGenerationFailed,      // the generation ended failed or canceled
	safegen.ErrIntentExpired,         // past the server's key window: re-sending could bill twice
	safegen.ErrSpendLimit,            // the Client's spend limit is spent: nothing was sent
}

// defaultSnooze is the wait of a rate-limit answer that named none.
const defaultSnooze = time.Minute

// MapError turns the error of Generations.Run into what a River worker
// returns:
//
//   - nil for nil;
//   - river.JobCancel(err) when no retry can change the outcome: a key
//     reused with another body, a spent quota (rimp's quota_exceeded),
//     insufficient credits, an invalid request or idempotency key, a
//     generation that ended failed or canceled, an intent past the key
//     window, a spent spend limit (safegen.ErrSpendLimit), or any of
//     cancelOn (matched with errors.Is: your own);
//   - river.JobSnooze(wait) for a 429 whose Retry-After the Client would not
//     sleep (ErrRetryAfterTooLong) or that was still answered when its
//     retries ran out: the job comes back after the wait (plus up to a
//     tenth, so snoozed jobs do not return together), and a snooze does not
//     count as an attempt;
//   - err itself otherwise (5xx and network failures past their retries, a
//     timeout, a corrupt download…): River retries the job later, under the
//     same intent id, so with the same key.
func MapError(err error, cancelOn ...error) error {
	if err == nil {
		return nil
	}
	for _, target := range append(permanent[:len(permanent):len(permanent)], cancelOn...) {
		if errors.Is(err, target) {
			return river.JobCancel(err)
		}
	}
	if errors.Is(err, safegen.ErrRateLimited) || errors.Is(err, safegen.ErrRetryAfterTooLong) {
		wait := defaultSnooze
		var apiErr *safegen.APIError
		if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
			wait = apiErr.RetryAfter
		}
		return river.JobSnooze(jitter(wait))
	}
	return err
}

// jitter adds up to a tenth of d.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/10+1))
}
