// Package safegen is a Go client for billable generation APIs (image and
// video generation billed per call) that keeps one promise: a logical call is
// billed at most once, however the network, the server or the caller's own
// process fails, and it is never silently lost.
//
// How:
//
//   - Every billable call gets one idempotency key (a UUID v4, or yours with
//     WithIdempotencyKey) before its first attempt. Every retry re-sends the
//     same key and the same bytes, so the server replays instead of billing
//     again.
//   - Retries back off exponentially with full jitter on transport failures,
//     429, 500, 502, 503, 504 and 409 request_in_progress, and honor Retry-After
//     (seconds, milliseconds, or an HTTP date). A Retry-After longer than
//     WithMaxRetryAfter comes back at once as a typed 429 carrying the wait.
//     A retry budget shared by the Client keeps an outage from multiplying
//     its load. Cancelling the context ends a wait at once.
//   - Errors are typed: *APIError (status, code, request id, key, attempts,
//     RetryAfter) and sentinels such as ErrIdempotencyKeyReuse,
//     ErrRequestInProgress and ErrRateLimited, across every vendor dialect.
//   - With WithJournal, each intent (key, method, path, exact bytes) is
//     recorded durably before it is sent. After a crash, Client.Resume
//     finishes the pending calls with the same key and bytes, and a caller
//     that re-runs its own loop with WithIntentID gets the same keys back.
//   - Webhooks: WebhookHandler verifies both signature forms (X-Signature and
//     Standard Webhooks) in constant time and runs your function once per
//     event however often it is delivered; ParseEvent and VerifyWebhook for
//     your own server, SignPayload for your tests. Generations.Notify hands a
//     verified event to the Client, so a Wait for that generation returns at
//     once instead of at its next poll.
//   - Outputs: Generations.Download streams a succeeded generation's output
//     to a file, resumes a cut transfer from the bytes on disk (also after a
//     crash), refreshes an expired signed URL, and renames the file into
//     place only once its size and SHA-256 match (else ErrOutputCorrupt).
//     Generations.Cancel stops a generation (refunded while still queued).
//
// A create, retried safely:
//
//	c, err := safegen.NewClient(apiKey, safegen.WithBaseURL("https://api.example.com"))
//	if err != nil {
//		return err
//	}
//	gen, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{
//		Model:  "veo-3-1-fast",
//		Prompt: "a red fox running through snow",
//	})
//	var apiErr *safegen.APIError
//	switch {
//	case errors.Is(err, safegen.ErrRateLimited) && errors.As(err, &apiErr):
//		return reschedule(apiErr.RetryAfter)
//	case err != nil:
//		return err
//	}
//	done, err := c.Generations.Wait(ctx, gen.ID)
//	if err != nil || done.Status != safegen.StatusSucceeded {
//		return err // or done.Error
//	}
//	res, err := c.Generations.Download(ctx, done, "out/fox.mp4")
//
// Limits of the promise: the server forgets a key after its window (24 h by
// default), so Resume reports older intents as expired instead of re-sending
// them; a call made without a journal is lost if the process dies before the
// answer arrives (the server has it, under a key nobody remembers); and a
// Realm server answers a key reused with another body with the first result,
// which only the journal can catch.
//
// Where to look next: package journal for the file journal, package
// safegentest for a fake server to test against, cmd/safegen for the
// command-line tool and its demo, and the examples directory.
package safegen
