// Command wholejob runs whole paid jobs (create, wait, download) through a
// journal, with the first worker "crashing" mid-download, and a second one
// finishing every job with Resume: no job is created twice, and each output
// lands on disk verified.
//
//	go run ./examples/wholejob
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/safegentest"
)

func main() {
	srv := safegentest.Start(safegentest.WithRateLimit(0, 0), safegentest.WithOutputSize(256<<10),
		safegentest.WithGenerationTiming(20*time.Millisecond, 30*time.Millisecond))
	defer srv.Close()
	dir, err := os.MkdirTemp("", "wholejob-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	jpath := filepath.Join(dir, "jobs.journal")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The first worker: every download is cut after 40 KiB and it does
	// not retry, as if the process died mid-transfer.
	for range 3 {
		srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultCut, CutAfter: 40 << 10})
	}
	worker(ctx, srv, jpath, dir, func(c *safegen.Client) {
		for i, prompt := range []string{"a lighthouse at dusk", "a paper boat", "a fox in the snow"} {
			id := fmt.Sprintf("clip-%d", i+1)
			_, err := c.Generations.Run(ctx, &safegen.GenerationCreateParams{Model: "veo-3-1-fast", Prompt: prompt},
				filepath.Join(dir, id+".mp4"), safegen.WithIntentID(id), safegen.WithMaxRetries(0))
			var je *safegen.JobError
			if errors.As(err, &je) && je.Generation != nil {
				fmt.Printf("worker 1: %s stopped after step %q (generation %s): %v\n", id, je.Step, je.Generation.ID, je.Err)
			}
		}
	})

	// The restarted worker: Resume carries every job on from its last step.
	worker(ctx, srv, jpath, dir, func(c *safegen.Client) {
		rep, err := c.Resume(ctx)
		if err != nil {
			log.Fatal(err)
		}
		for _, jr := range rep.Jobs {
			fmt.Printf("worker 2: %s %s -> %s, err=%v\n", jr.Intent.ID, jr.From, jr.Reached, jr.Err)
		}
	})
	fmt.Printf("charges in the ledger: %d for 3 jobs\n", srv.Ledger().Total())
	files, _ := filepath.Glob(filepath.Join(dir, "*.mp4"))
	fmt.Printf("outputs on disk, verified: %d\n", len(files))
}

func worker(ctx context.Context, srv *safegentest.Server, jpath, dir string, fn func(*safegen.Client)) {
	j, err := journal.Open(jpath)
	if err != nil {
		log.Fatal(err)
	}
	defer j.Close()
	c, err := safegen.NewClient(srv.APIKey, safegen.WithBaseURL(srv.URL), safegen.WithJournal(j),
		safegen.WithPollInterval(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fn(c)
}
