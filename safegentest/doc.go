// Package safegentest is an in-process fake of the Generation API, built on
// net/http/httptest, for tests of code that calls the API (the way httptest
// or stripe-mock are used).
//
// It implements the server side of CONTRACT.md from the contract alone: it
// does not import the SDK, so a drift between client and contract shows up
// as a failing test instead of being hidden by shared types.
//
//   - Endpoints: POST /v1/generations (billable), GET /v1/generations/{id}
//     (with a Retry-After poll hint while not terminal, see WithPollHint),
//     POST /v1/generations/{id}/cancel (a queued generation is refunded,
//     see Ledger.Refunds), POST /v1/generations/estimate and GET /v1/account.
//   - Outputs: a succeeded generation's output.url is a signed link on the
//     server itself, /v1/outputs/{id}?exp=<unix>&sig=<hex HMAC>, valid for
//     WithOutputTTL (403 url_expired after; a fresh GET of the generation
//     signs a new one). It needs no credentials and answers with
//     Content-Length, Accept-Ranges, a strong ETag (the quoted sha256),
//     Range (206, 416) and If-Range. The bytes (WithOutputSize, default
//     64 KiB) are generated on the fly from the generation id
//     (OutputBytes), so a large output costs no memory.
//   - Idempotency: keys scoped per API key, body fingerprints, byte-for-byte
//     replay, 409 for a reused key with another body and for a key still in
//     progress, 5xx and 429 never stored, a key window on an injectable
//     Clock (see ManualClock).
//   - A Ledger of every charge, so a test can assert "billed exactly once"
//     (Ledger.Total, Ledger.Duplicates), and a log of every request.
//   - Faults, queued with InjectFaults or drawn at seeded random rates with
//     WithFaultRates: 5xx (JSON, HTML or empty), 429 with Retry-After,
//     connection reset before the work, response dropped after the work is
//     committed, latency; and for downloads, a body cut after N bytes, a
//     slow trickle, a flipped byte, a Range ignored (FaultCut, FaultTrickle,
//     FaultCorrupt, FaultIgnoreRange; FaultRates.Download*).
//   - Scopes, credits (402), per-key rate limits with RateLimit-* headers,
//     and signed webhooks with redelivery.
//   - WithDialect switches to one vendor's row of the contract: auth header,
//     replay header, mismatch code, key length and create status.
//
// Webhooks carry two signatures made with the same key: X-Signature
// (X-Clipia-Signature in the Clipia dialect) "t=<unix>,v1=<hex HMAC-SHA256
// of "<t>.<body>">", and the Standard Webhooks headers webhook-id,
// webhook-timestamp and webhook-signature "v1,<base64 HMAC-SHA256 of
// "<id>.<t>.<body>">". For a secret "whsec_<base64>" the HMAC key is the
// base64-decoded bytes after "whsec_", for both forms.
//
// Requests refused before the idempotency key is looked at are never stored
// under it: injected faults, 401, 403, rate-limit 429s, 413 and an invalid
// key. Everything the create handler itself answers with 2xx or 4xx is.
//
// Every API key is its own account, with its own balance, rate limits and
// idempotency keys. Generations can be read with any valid key.
package safegentest
