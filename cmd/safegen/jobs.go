package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/safegen/safegen-go"
)

// jobTimeout is the default bound of the commands that wait for a
// generation and download its output: a long video takes its time.
const jobTimeout = 6 * time.Hour

func runRun(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("run", "run --model M --prompt P --output FILE [--journal J --intent-id ID] [--max-credits N] [flags]")
	var a apiFlags
	a.register(fs)
	a.registerBilling(fs)
	a.timeout = jobTimeout
	fs.Lookup("timeout").DefValue = jobTimeout.String()
	var cf createFlags
	cf.register(fs, "file journal: record each step, so a re-run with --intent-id or 'safegen resume' finishes the job")
	var output string
	fs.StringVar(&output, "output", "", "file to write the output to (required); written only once verified")
	pos, code, done := parseFlags(fs, e, args)
	if done {
		return code
	}
	if err := cf.check("run", pos); err != nil {
		return fail(e, a.json, err)
	}
	if output == "" {
		return fail(e, a.json, usageError("run needs --output"))
	}
	extra, callOpts, closeJournal, err := cf.open()
	defer closeJournal()
	if err != nil {
		return fail(e, a.json, err)
	}
	p := &cf.p
	bar := newDownloadBar(e, output, a.json)
	callOpts = append(callOpts, safegen.WithProgress(bar.update))
	return a.do(ctx, e, extra, func(ctx context.Context, c *safegen.Client) (int, error) {
		g, err := c.Generations.Run(ctx, p, output, callOpts...)
		bar.done()
		if err != nil {
			var je *safegen.JobError
			if errors.As(err, &je) && je.Generation != nil {
				printGeneration(e, a.json, je.Generation) // the id of a job paid for is never lost
			}
			return 0, err
		}
		printJob(e, a.json, g, output)
		return exitOK, nil
	})
}

func runDownload(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("download", "download GENERATION_ID --output FILE [flags]")
	var a apiFlags
	a.register(fs)
	a.timeout = jobTimeout
	fs.Lookup("timeout").DefValue = jobTimeout.String()
	var output string
	var idle time.Duration
	fs.StringVar(&output, "output", "", "file to write the output to (required); resumes a partial download left beside it")
	durationFlag(fs, &idle, "idle-timeout", 30*time.Second, "give an attempt up after this long without a byte")
	pos, code, done := parseFlags(fs, e, args)
	if done {
		return code
	}
	if len(pos) != 1 || output == "" {
		return fail(e, a.json, usageError("download takes one generation id and --output"))
	}
	bar := newDownloadBar(e, output, a.json)
	return a.do(ctx, e, []safegen.Option{safegen.WithIdleTimeout(idle)}, func(ctx context.Context, c *safegen.Client) (int, error) {
		g, err := c.Generations.Get(ctx, pos[0])
		if err != nil {
			return 0, err
		}
		if g.Status != safegen.StatusSucceeded {
			printGeneration(e, a.json, g)
			if g.Status.Terminal() {
				return exitGenFailed, nil
			}
			return 0, usageError(fmt.Sprintf("generation %s is %s: nothing to download yet (safegen wait %s)", g.ID, g.Status, g.ID))
		}
		res, err := c.Generations.Download(ctx, g, output, safegen.WithProgress(bar.update))
		bar.done()
		if err != nil {
			return 0, err
		}
		if a.json {
			printJSON(e, map[string]any{"generation_id": g.ID, "path": res.Path, "size": res.Size, "sha256": res.SHA256,
				"fetched": res.Fetched, "reused": res.Reused, "attempts": res.Attempts})
			return exitOK, nil
		}
		fmt.Fprintf(e.stdout, "%s  %d bytes  sha256=%s  (fetched %d, reused %d, %d attempts)\n",
			res.Path, res.Size, res.SHA256, res.Fetched, res.Reused, res.Attempts)
		return exitOK, nil
	})
}

func runCancel(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("cancel", "cancel GENERATION_ID [flags]")
	var a apiFlags
	a.register(fs)
	pos, code, done := parseFlags(fs, e, args)
	if done {
		return code
	}
	if len(pos) != 1 {
		return fail(e, a.json, usageError("cancel takes one generation id"))
	}
	return a.do(ctx, e, nil, func(ctx context.Context, c *safegen.Client) (int, error) {
		g, err := c.Generations.Cancel(ctx, pos[0])
		if err != nil {
			return 0, err
		}
		printGeneration(e, a.json, g)
		return exitOK, nil
	})
}

// printJob prints a finished job: the generation and where its output is.
func printJob(e *env, jsonOut bool, g *safegen.Generation, path string) {
	if jsonOut {
		v := genView{Generation: g, IdempotencyKey: g.Meta.IdempotencyKey, Attempts: g.Meta.Attempts,
			Replayed: g.Meta.Replayed, LastRequestID: g.Meta.RequestID}
		printJSON(e, struct {
			genView
			OutputPath string `json:"output_path"`
		}{v, path})
		return
	}
	printGeneration(e, false, g)
	if g.Output != nil {
		fmt.Fprintf(e.stdout, "  output=%s  %d bytes  sha256=%s  (verified)\n", path, g.Output.Size, g.Output.SHA256)
	}
}

// downloadBar shows a download's progress: a redrawn bar on a terminal,
// a plain line at each quarter otherwise, nothing with --json.
type downloadBar struct {
	e        *env
	name     string
	quiet    bool
	mu       sync.Mutex
	last     int // last quarter (pipe) or percent (terminal) shown
	drawn    bool
	lastDraw time.Time
}

func newDownloadBar(e *env, path string, quiet bool) *downloadBar {
	return &downloadBar{e: e, name: filepath.Base(path), quiet: quiet, last: -1}
}

func (b *downloadBar) update(done, total int64) {
	if b.quiet || total <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	pct := int(done * 100 / total)
	if !b.e.isTerminal {
		q := pct / 25
		if q > b.last {
			b.last = q
			fmt.Fprintf(b.e.stderr, "download %s: %d%% (%s of %s)\n", b.name, pct, mib(done), mib(total))
		}
		return
	}
	if pct == b.last || (pct < 100 && time.Since(b.lastDraw) < 100*time.Millisecond) {
		return
	}
	b.last, b.drawn, b.lastDraw = pct, true, time.Now()
	const width = 30
	fill := pct * width / 100
	fmt.Fprintf(b.e.stderr, "\r\033[K%s [%s%s] %3d%% %s/%s", b.name,
		strings.Repeat("=", fill), strings.Repeat(" ", width-fill), pct, mib(done), mib(total))
}

// done ends the bar's line on a terminal.
func (b *downloadBar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprintln(b.e.stderr)
		b.drawn = false
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
