// Command v1gen writes journal/testdata/v1.journal, a journal in format
// version 1 (no header record) as the last release before format version 2
// wrote it, and v1.golden.json, what that release's Pending and Begin said
// about it. It builds only inside a checkout of that release (commit
// 1d3b33e); regen-v1.sh runs it there. The file journal's tests open the
// fixture with the current code and compare with the golden file.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
)

// t0 is when the fixture's intents were created; the journal's clock reads
// t0 + 1 min, so its completed intent is within retention until t0 + 25 h.
var t0 = time.Date(2026, 1, 15, 9, 30, 0, 0, time.UTC)

// bigBody is 256 KiB of bytes that are not all UTF-8; journal_v1_test.go
// builds the same bytes.
func bigBody() []byte {
	b := make([]byte, 256<<10)
	for i := range b {
		b[i] = byte(i*31 + i/251)
	}
	return b
}

type summary struct {
	ID         string           `json:"id"`
	Key        string           `json:"key"`
	Method     string           `json:"method"`
	Path       string           `json:"path"`
	CreatedAt  time.Time        `json:"created_at"`
	BodyLen    int              `json:"body_len"`
	BodySHA256 string           `json:"body_sha256"`
	Outcome    *safegen.Outcome `json:"outcome"`
}

func summarize(in safegen.Intent) summary {
	sum := sha256.Sum256(in.Body)
	return summary{in.ID, in.Key, in.Method, in.Path, in.CreatedAt, len(in.Body), hex.EncodeToString(sum[:]), in.Outcome}
}

func main() {
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "v1gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	ctx := context.Background()
	path := filepath.Join(dir, "v1.journal")
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	clock := journal.WithClock(func() time.Time { return t0.Add(time.Minute) })
	j, err := journal.Open(path, clock)
	if err != nil {
		return err
	}
	ins := []safegen.Intent{
		{ID: "order-done", Key: "v1-key-done", Method: "POST", Path: "/v1/generations",
			Body: []byte(`{"model":"veo-3-1-fast","prompt":"a finished fox"}`), CreatedAt: t0},
		{ID: "order-small", Key: "v1-key-small", Method: "POST", Path: "/v1/generations",
			Body: []byte(`{"model":"veo-3-1-fast","prompt":"a cat, \"quoted\" é 日本"}`), CreatedAt: t0.Add(time.Second)},
		{ID: "order-big", Key: "v1-key-big", Method: "POST", Path: "/v1/generations?draft=1",
			Body: bigBody(), CreatedAt: t0.Add(2 * time.Second)},
	}
	for _, in := range ins {
		if _, err := j.Begin(ctx, in); err != nil {
			return err
		}
	}
	out := safegen.Outcome{StatusCode: 201, Body: []byte(`{"id":"gen_v1","status":"queued"}`), RequestID: "req_v1",
		CompletedAt: t0.Add(30 * time.Second)}
	if err := j.Complete(ctx, "v1-key-done", out); err != nil {
		return err
	}
	if err := j.Close(); err != nil {
		return err
	}

	// What this release reads back from the file.
	if j, err = journal.Open(path, clock, journal.WithStrict()); err != nil {
		return err
	}
	defer os.Remove(path + ".lock")
	defer j.Close()
	pending, err := j.Pending(ctx)
	if err != nil {
		return err
	}
	done, err := j.Begin(ctx, safegen.Intent{ID: "order-done", Key: "probe", Method: "GET", Path: "/", CreatedAt: t0})
	if err != nil {
		return err
	}
	golden := struct {
		Pending   []summary `json:"pending"`
		Completed summary   `json:"completed"`
	}{Completed: summarize(done)}
	for _, in := range pending {
		golden.Pending = append(golden.Pending, summarize(in))
	}
	data, err := json.MarshalIndent(golden, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "v1.golden.json"), append(data, '\n'), 0o644)
}
