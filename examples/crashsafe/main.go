// Command crashsafe shows a key surviving a crash of the caller's process.
//
// It journals each generation before sending it. The first run "crashes"
// (exits without waiting) after the server has billed a call whose answer was
// lost; the second run, as a restarted worker would, calls Resume and then
// re-runs its own loop with the same intent ids. The fake server's ledger
// shows one charge per job.
//
//	go run ./examples/crashsafe
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

var jobs = []struct{ id, prompt string }{
	{"order-101", "a lighthouse at dusk"},
	{"order-102", "a paper boat on a rainy street"},
	{"order-103", "a fox in the snow"},
}

func main() {
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0))
	defer srv.Close()
	dir, err := os.MkdirTemp("", "crashsafe-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "intents.journal")

	// First life: order-102's answer is lost after the server billed it
	// (twice over, so even net/http's silent re-send fails), and the
	// process dies before it can retry.
	drop := safegentest.Fault{Kind: safegentest.FaultDropAfterCommit, Method: "POST", Path: "/v1/generations"}
	run(srv, path, "first life", func(i int) {
		if i == 1 {
			srv.InjectFaults(drop, drop)
		}
	}, 2)

	// Second life: finish what was in flight, then the same loop again.
	run(srv, path, "after the crash", nil, 3)

	l := srv.Ledger()
	fmt.Printf("ledger: %d charges for %d jobs, %d keys charged twice\n", l.Total(), len(jobs), len(l.Duplicates()))
}

// run opens the journal, resumes, and makes the first n jobs.
func run(srv *safegentest.Server, path, life string, before func(i int), n int) {
	j, err := journal.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer j.Close()
	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL), safegen.WithJournal(j),
		safegen.WithMaxRetries(0), safegen.WithBackoff(10*time.Millisecond, 2, 100*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	fmt.Printf("-- %s\n", life)
	rep, err := c.Resume(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range rep.Completed {
		fmt.Printf("resumed %s: status %d, replayed %t\n", r.Intent.ID, r.StatusCode, r.Meta.Replayed)
	}
	for i, job := range jobs[:n] {
		if before != nil {
			before(i)
		}
		gen, err := c.Generations.Create(ctx, &safegen.GenerationCreateParams{Model: "img-2", Prompt: job.prompt},
			safegen.WithIntentID(job.id))
		if err != nil {
			fmt.Printf("%s: %v\n", job.id, err)
			if life == "first life" {
				fmt.Println("(the process dies here)")
				return
			}
			continue
		}
		fmt.Printf("%s: %s (from journal %t, replayed %t)\n", job.id, gen.ID, gen.Meta.FromJournal, gen.Meta.Replayed)
	}
}
