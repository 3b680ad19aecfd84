package journal_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "journal-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "safegen.journal")
	ctx := context.Background()

	j, err := journal.Open(path)
	if err != nil {
		panic(err)
	}
	in := safegen.Intent{
		ID: "order-17", Key: "3f1c9a0e-key", Method: "POST", Path: "/v1/generations",
		Body: []byte(`{"model":"veo-3-1-fast","prompt":"a cat"}`), CreatedAt: time.Now(),
	}
	// Durable before the call's first byte is sent.
	if _, err := j.Begin(ctx, in); err != nil {
		panic(err)
	}
	j.Close() // or a crash: Begin's record is already on disk

	// After a restart, the same intent id finds the same key.
	j, err = journal.Open(path)
	if err != nil {
		panic(err)
	}
	defer j.Close()
	again := in
	again.Key = "a-fresh-key"
	got, err := j.Begin(ctx, again)
	if err != nil {
		panic(err)
	}
	fmt.Println("key:", got.Key, "pending:", got.Pending())

	if err := j.Complete(ctx, got.Key, safegen.Outcome{StatusCode: 201, Body: []byte(`{"id":"gen_1"}`)}); err != nil {
		panic(err)
	}
	pending, _ := j.Pending(ctx)
	fmt.Println("pending intents:", len(pending))
	// Output:
	// key: 3f1c9a0e-key pending: true
	// pending intents: 0
}

// A whole job's steps survive a restart: Unfinished lists the job, with its
// recorded outcome and its last step, until its output is on disk.
func ExampleFile_Unfinished() {
	dir, err := os.MkdirTemp("", "journal-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "safegen.journal")
	ctx := context.Background()

	j, err := journal.Open(path)
	if err != nil {
		panic(err)
	}
	in := safegen.Intent{
		ID: "order-17", Key: "3f1c9a0e-key", Method: "POST", Path: "/v1/generations",
		Body: []byte(`{"model":"veo-3-1-fast","prompt":"a fox"}`), CreatedAt: time.Now(),
		Job: &safegen.Job{Step: safegen.JobStarted, Path: "out/fox.mp4"},
	}
	if _, err := j.Begin(ctx, in); err != nil {
		panic(err)
	}
	if err := j.Complete(ctx, in.Key, safegen.Outcome{StatusCode: 201, Body: []byte(`{"id":"gen_1"}`)}); err != nil {
		panic(err)
	}
	accepted := safegen.Job{Step: safegen.JobAccepted, Path: "out/fox.mp4", GenerationID: "gen_1", UpdatedAt: time.Now()}
	if err := j.Advance(ctx, in.Key, accepted); err != nil {
		panic(err)
	}
	j.Close() // a crash may lose the last Advance: the job then redoes that step

	j, err = journal.Open(path)
	if err != nil {
		panic(err)
	}
	defer j.Close()
	jobs, err := j.Unfinished(ctx)
	if err != nil {
		panic(err)
	}
	for _, u := range jobs {
		fmt.Println(u.ID, u.Job.Step, u.Job.GenerationID, "create answered:", u.Outcome.StatusCode)
	}
	// Output:
	// order-17 accepted gen_1 create answered: 201
}
