package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
)

// apiFlags are the flags every command that calls the API shares.
type apiFlags struct {
	apiKey     string
	baseURL    string
	dialect    string
	json       bool
	timeout    time.Duration
	maxRetries int
	insecure   bool
	maxCredits float64 // < 0: no spend limit
	verbose    bool
}

func (a *apiFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.apiKey, "api-key", "", "API key (default $SAFEGEN_API_KEY)")
	fs.StringVar(&a.baseURL, "base-url", "", "API base URL (default $SAFEGEN_BASE_URL)")
	fs.StringVar(&a.dialect, "dialect", "default", "vendor dialect: default, rimp, realm, relaystation, clipia, patomic")
	fs.BoolVar(&a.json, "json", false, "print JSON for scripts")
	durationFlag(fs, &a.timeout, "timeout", 2*time.Minute, "bound on the whole command, retries included")
	fs.IntVar(&a.maxRetries, "max-retries", 3, "retries after the first attempt")
	fs.BoolVar(&a.insecure, "insecure-http", false, "allow plain http to a host that is not loopback (sends the key in clear)")
	fs.BoolVar(&a.verbose, "verbose", false, "print one line per attempt to stderr: status or cause, wait, key")
	a.maxCredits = -1
}

// registerBilling registers the flags of a command that bills.
func (a *apiFlags) registerBilling(fs *flag.FlagSet) {
	fs.Float64Var(&a.maxCredits, "max-credits", -1, "spend limit in credits: a call whose price does not fit is refused before it is sent (with --journal, counted across runs on that journal)")
}

// printSpend reports where the spend limit stands, on stderr.
func (a *apiFlags) printSpend(e *env, c *safegen.Client) {
	if a.maxCredits < 0 {
		return
	}
	r := c.Spend()
	fmt.Fprintf(e.stderr, "spend: %g of %g credits spent, %g reserved (outcome unknown), %g left\n", r.Spent, r.Limit, r.Reserved, r.Left())
}

// client builds the SDK client from flags and environment.
func (a *apiFlags) client(e *env, extra ...safegen.Option) (*safegen.Client, error) {
	if a.apiKey == "" {
		a.apiKey = e.getenv("SAFEGEN_API_KEY")
	}
	if a.baseURL == "" {
		a.baseURL = e.getenv("SAFEGEN_BASE_URL")
	}
	if a.apiKey == "" {
		return nil, usageError("no API key: pass --api-key or set SAFEGEN_API_KEY")
	}
	if a.baseURL == "" {
		return nil, usageError("no base URL: pass --base-url or set SAFEGEN_BASE_URL")
	}
	d, err := safegen.ParseDialect(a.dialect)
	if err != nil {
		return nil, usageError(err.Error())
	}
	opts := []safegen.Option{safegen.WithBaseURL(a.baseURL), safegen.WithDialect(d), safegen.WithMaxRetries(a.maxRetries),
		safegen.WithUserAgent("safegen-cli/" + safegen.Version)}
	if a.insecure {
		opts = append(opts, safegen.WithInsecureHTTP())
	}
	if a.maxCredits >= 0 {
		opts = append(opts, safegen.WithSpendLimit(a.maxCredits))
	}
	if a.verbose {
		p := &attemptPrinter{w: e.stderr}
		opts = append(opts, safegen.WithAttemptHook(p.print))
	}
	opts = append(opts, e.sdkOptions...)
	c, err := safegen.NewClient(a.apiKey, append(opts, extra...)...)
	if err != nil {
		return nil, usageError(err.Error())
	}
	return c, nil
}

// do builds the client, runs fn under the command's timeout, and turns its
// error into the exit code.
func (a *apiFlags) do(ctx context.Context, e *env, extra []safegen.Option, fn func(context.Context, *safegen.Client) (int, error)) int {
	c, err := a.client(e, extra...)
	if err != nil {
		return fail(e, a.json, err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	code, err := fn(ctx, c)
	a.printSpend(e, c)
	if err != nil {
		return fail(e, a.json, err)
	}
	return code
}

// printCredits prints a credit figure as JSON or as a line of text.
func printCredits(e *env, jsonOut bool, credits float64, what string) {
	if jsonOut {
		printJSON(e, map[string]any{"credits": credits})
		return
	}
	fmt.Fprintf(e.stdout, "%g %s\n", credits, what)
}

// usageErr is a mistake in the command line.
type usageErr struct{ msg string }

func (u *usageErr) Error() string { return u.msg }

func usageError(msg string) error { return &usageErr{msg: msg} }

// parseFlags parses flags placed anywhere among the positional arguments.
// It returns done=true with the exit code when the command should stop
// (--help, or a bad flag). --help prints the usage once, on stdout; a bad
// flag prints the flag package's complaint and the usage once, on stderr.
func parseFlags(fs *flag.FlagSet, e *env, args []string) (pos []string, code int, done bool) {
	printUsage := fs.Usage
	fs.Usage = func() {} // flag calls it on -help and on errors; print once below
	defer func() { fs.Usage = printUsage }()
	fs.SetOutput(e.stderr)
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(e.stdout)
				printUsage()
				return nil, exitOK, true
			}
			printUsage()
			return nil, exitUsage, true
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, false
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// durationValue is a duration flag that says how to fix a bare number.
type durationValue struct{ d *time.Duration }

func (v durationValue) String() string {
	if v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err == nil {
		*v.d = d
		return nil
	}
	if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
		return fmt.Errorf("%q has no unit: add one, for example %ss or %sms", s, s, s)
	}
	return fmt.Errorf("%q is not a duration (examples: 30s, 2m, 1h30m)", s)
}

// durationFlag registers a duration flag whose errors name the missing unit.
func durationFlag(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(durationValue{p}, name, usage)
}

func newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: safegen %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// fail prints err and returns the exit code its kind calls for.
func fail(e *env, jsonOut bool, err error) int {
	code := exitFor(err)
	if jsonOut {
		out := map[string]any{"message": message(err), "exit_code": code}
		var apiErr *safegen.APIError
		if errors.As(err, &apiErr) {
			out["status"] = apiErr.StatusCode
			out["code"] = apiErr.Code
			out["request_id"] = apiErr.RequestID
			out["idempotency_key"] = apiErr.IdempotencyKey
			out["attempts"] = apiErr.Attempts
			if apiErr.RetryAfter > 0 {
				out["retry_after_seconds"] = apiErr.RetryAfter.Seconds()
			}
		}
		printJSON(e, map[string]any{"error": out})
	}
	fmt.Fprintf(e.stderr, "safegen: %s\n", message(err))
	return code
}

// flagNames turns the SDK's option names in its messages into the flags
// that set them, so a CLI user is told what to type.
var flagNames = strings.NewReplacer(
	"WithInsecureHTTP", "--insecure-http",
	"WithBaseURL", "--base-url",
	"WithJournal to NewClient", "--journal",
	"WithJournal", "--journal",
	"WithIntentID", "--intent-id",
	"WithIdempotencyKey", "--idempotency-key",
	"WithMaxRetries", "--max-retries",
	"WithDialect", "--dialect",
)

// message is err as one line for a person: one "safegen:" prefix (added by
// the caller), flags instead of Go options.
func message(err error) string {
	msg := oneLine(err.Error())
	for strings.HasPrefix(msg, "safegen: ") {
		msg = strings.TrimPrefix(msg, "safegen: ")
	}
	msg = strings.ReplaceAll(msg, ": safegen: ", ": ")
	return flagNames.Replace(msg)
}

func exitFor(err error) int {
	var u *usageErr
	var apiErr *safegen.APIError
	var re *safegen.RetryError
	switch {
	case errors.As(err, &u):
		return exitUsage
	case errors.Is(err, safegen.ErrGenerationFailed):
		return exitGenFailed
	case errors.Is(err, safegen.ErrSpendLimit):
		return exitLocal
	case errors.As(err, &apiErr):
		return exitAPI
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.As(err, &re), errors.Is(err, context.DeadlineExceeded):
		return exitNetwork
	case errors.Is(err, safegen.ErrMalformedResponse), errors.Is(err, safegen.ErrResponseTooLarge):
		return exitAPI
	case errors.Is(err, safegen.ErrInvalidRequest), errors.Is(err, safegen.ErrInvalidIdempotencyKey):
		return exitUsage
	}
	return exitLocal
}

func printJSON(e *env, v any) {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// genView is a generation as the command prints it in JSON.
type genView struct {
	*safegen.Generation
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	Attempts       int    `json:"attempts,omitempty"`
	Replayed       bool   `json:"replayed,omitempty"`
	LastRequestID  string `json:"last_request_id,omitempty"`
}

func printGeneration(e *env, jsonOut bool, g *safegen.Generation) {
	if jsonOut {
		printJSON(e, genView{Generation: g, IdempotencyKey: g.Meta.IdempotencyKey, Attempts: g.Meta.Attempts,
			Replayed: g.Meta.Replayed, LastRequestID: g.Meta.RequestID})
		return
	}
	fmt.Fprintf(e.stdout, "%s  %s  model=%s  cost=%g", g.ID, g.Status, g.Model, g.Cost)
	if g.Output != nil && g.Output.URL != "" {
		fmt.Fprintf(e.stdout, "  output=%s", g.Output.URL)
	}
	if g.Error != nil {
		fmt.Fprintf(e.stdout, "  error=%s: %s", g.Error.Code, oneLine(g.Error.Message))
	}
	fmt.Fprintln(e.stdout)
	if g.Meta.IdempotencyKey != "" {
		fmt.Fprintf(e.stdout, "  idempotency_key=%s  attempts=%d  replayed=%t  request_id=%s\n",
			g.Meta.IdempotencyKey, g.Meta.Attempts, g.Meta.Replayed, requestIDOf(g))
	}
}

// requestIDOf is the id to quote to the vendor: the body's request_id (the
// request that created the generation), else the last exchange's.
func requestIDOf(g *safegen.Generation) string {
	if g.RequestID != "" {
		return g.RequestID
	}
	return g.Meta.RequestID
}

func genExit(g *safegen.Generation) int {
	if g.Status == safegen.StatusFailed || g.Status == safegen.StatusCanceled {
		return exitGenFailed
	}
	return exitOK
}

// createFlags are the flags of the commands that create a generation
// (generate, run): the parameters, the key and the journal.
type createFlags struct {
	p                               safegen.GenerationCreateParams
	key, intent, journalPath, input string
}

func (f *createFlags) register(fs *flag.FlagSet, journalUse string) {
	fs.StringVar(&f.p.Model, "model", "", "model (required)")
	fs.StringVar(&f.p.Prompt, "prompt", "", "prompt (required)")
	fs.IntVar(&f.p.DurationS, "duration", 0, "clip length in seconds (video models)")
	fs.StringVar(&f.p.WebhookURL, "webhook-url", "", "URL to receive the signed completion event")
	fs.StringVar(&f.input, "input", "", "model inputs as a JSON object")
	fs.StringVar(&f.key, "idempotency-key", "", "key to send (default: a fresh UUID v4); reuse it to retry the same call safely")
	fs.StringVar(&f.intent, "intent-id", "", "name of this logical call in the journal (needs --journal)")
	fs.StringVar(&f.journalPath, "journal", "", journalUse)
}

// check validates the flags once parsed.
func (f *createFlags) check(cmd string, pos []string) error {
	switch {
	case len(pos) > 0:
		return usageError(cmd + " takes no positional arguments: " + strings.Join(pos, " "))
	case f.p.Model == "" || f.p.Prompt == "":
		return usageError(cmd + " needs --model and --prompt")
	case f.intent != "" && f.journalPath == "":
		return usageError("--intent-id needs --journal")
	}
	if f.input != "" {
		if err := json.Unmarshal([]byte(f.input), &f.p.Input); err != nil {
			return usageError("--input must be a JSON object: " + err.Error())
		}
	}
	return nil
}

// open opens the journal, if any, and returns the client and call options;
// the caller closes the journal with closeJournal.
func (f *createFlags) open() (client []safegen.Option, call []safegen.RequestOption, closeJournal func(), err error) {
	closeJournal = func() {}
	if f.journalPath != "" {
		j, err := journal.Open(f.journalPath)
		if err != nil {
			return nil, nil, closeJournal, err
		}
		closeJournal = func() { j.Close() }
		client = append(client, safegen.WithJournal(j))
	}
	if f.key != "" {
		call = append(call, safegen.WithIdempotencyKey(f.key))
	}
	if f.intent != "" {
		call = append(call, safegen.WithIntentID(f.intent))
	}
	return client, call, closeJournal, nil
}

func runGenerate(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("generate", "generate --model M --prompt P [--duration S] [--wait] [flags]")
	var a apiFlags
	a.register(fs)
	a.registerBilling(fs)
	var cf createFlags
	cf.register(fs, "file journal: record the intent before sending, so 'safegen resume' can finish it")
	var wait bool
	fs.BoolVar(&wait, "wait", false, "wait until the generation finishes")
	pos, code, done := parseFlags(fs, e, args)
	if done {
		return code
	}
	if err := cf.check("generate", pos); err != nil {
		return fail(e, a.json, err)
	}
	extra, callOpts, closeJournal, err := cf.open()
	defer closeJournal()
	if err != nil {
		return fail(e, a.json, err)
	}
	p := &cf.p
	return a.do(ctx, e, extra, func(ctx context.Context, c *safegen.Client) (int, error) {
		g, err := c.Generations.Create(ctx, p, callOpts...)
		if err != nil {
			return 0, err
		}
		if wait {
			meta := g.Meta
			done, err := c.Generations.Wait(ctx, g.ID)
			if err != nil {
				printGeneration(e, a.json, g)
				return 0, err
			}
			done.Meta, g = meta, done
		}
		printGeneration(e, a.json, g)
		return genExit(g), nil
	})
}

func runGet(ctx context.Context, e *env, args []string) int { return getOrWait(ctx, e, args, false) }

func runWait(ctx context.Context, e *env, args []string) int { return getOrWait(ctx, e, args, true) }

func getOrWait(ctx context.Context, e *env, args []string, wait bool) int {
	name := "get"
	if wait {
		name = "wait"
	}
	fs := newFlagSet(name, name+" GENERATION_ID [flags]")
	var a apiFlags
	a.register(fs)
	pos, code, done := parseFlags(fs, e, args)
	if done {
		return code
	}
	if len(pos) != 1 {
		return fail(e, a.json, usageError(name+" takes one generation id"))
	}
	return a.do(ctx, e, nil, func(ctx context.Context, c *safegen.Client) (int, error) {
		get := c.Generations.Get
		if wait {
			get = c.Generations.Wait
		}
		g, err := get(ctx, pos[0])
		if err != nil {
			return 0, err
		}
		printGeneration(e, a.json, g)
		if wait {
			return genExit(g), nil
		}
		return exitOK, nil
	})
}

func runEstimate(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("estimate", "estimate --model M --prompt P [--duration S] [flags]")
	var a apiFlags
	a.register(fs)
	var p safegen.GenerationCreateParams
	fs.StringVar(&p.Model, "model", "", "model (required)")
	fs.StringVar(&p.Prompt, "prompt", "", "prompt (required)")
	fs.IntVar(&p.DurationS, "duration", 0, "clip length in seconds (video models)")
	pos, code, done := parseFlags(fs, e, args)
	if done {
		return code
	}
	if len(pos) > 0 || p.Model == "" || p.Prompt == "" {
		return fail(e, a.json, usageError("estimate needs --model and --prompt and no positional arguments"))
	}
	return a.do(ctx, e, nil, func(ctx context.Context, c *safegen.Client) (int, error) {
		est, err := c.Generations.Estimate(ctx, &p)
		if err != nil {
			return 0, err
		}
		printCredits(e, a.json, est.Credits, "credits")
		return exitOK, nil
	})
}

func runAccount(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("account", "account [flags]")
	var a apiFlags
	a.register(fs)
	pos, code, done := parseFlags(fs, e, args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return fail(e, a.json, usageError("account takes no positional arguments"))
	}
	return a.do(ctx, e, nil, func(ctx context.Context, c *safegen.Client) (int, error) {
		acct, err := c.Account(ctx)
		if err != nil {
			return 0, err
		}
		printCredits(e, a.json, acct.Credits, "credits left")
		return exitOK, nil
	})
}

func runResume(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("resume", "resume --journal PATH [flags]")
	var a apiFlags
	a.register(fs)
	a.registerBilling(fs)
	var journalPath string
	fs.StringVar(&journalPath, "journal", "", "the file journal whose pending intents to finish (required)")
	pos, code, done := parseFlags(fs, e, args)
	if done {
		return code
	}
	if len(pos) > 0 || journalPath == "" {
		return fail(e, a.json, usageError("resume needs --journal and no positional arguments"))
	}
	// Resume only finishes an existing journal: a mistyped path must not
	// create an empty one (and its folders) and report "0 pending".
	j, err := journal.Open(journalPath, journal.WithMustExist())
	if err != nil {
		return fail(e, a.json, err)
	}
	defer j.Close()
	if r := j.Recovery(); r.TruncatedBytes > 0 || r.SkippedRecords > 0 {
		fmt.Fprintf(e.stderr, "safegen: journal repaired on open: %s\n", oneLine(r.Reason))
	}
	return a.do(ctx, e, []safegen.Option{safegen.WithJournal(j)}, func(ctx context.Context, c *safegen.Client) (int, error) {
		rep, err := c.Resume(ctx)
		if rep != nil {
			printResume(e, a.json, rep)
		}
		if err != nil {
			return 0, err
		}
		for _, jr := range rep.Jobs {
			if jr.Err != nil {
				return exitFor(jr.Err), nil
			}
		}
		if len(rep.Failed) > 0 {
			return exitAPI, nil
		}
		return exitOK, nil
	})
}

func printResume(e *env, jsonOut bool, rep *safegen.ResumeReport) {
	type item struct {
		IntentID       string `json:"intent_id"`
		IdempotencyKey string `json:"idempotency_key"`
		Status         int    `json:"status,omitempty"`
		RequestID      string `json:"request_id,omitempty"`
		Replayed       bool   `json:"replayed,omitempty"`
		Error          string `json:"error,omitempty"`
		StillPending   bool   `json:"still_pending,omitempty"`
		CreatedAt      string `json:"created_at,omitempty"`
	}
	conv := func(rs []safegen.ResumeResult) []item {
		out := []item{}
		for _, r := range rs {
			it := item{IntentID: r.Intent.ID, IdempotencyKey: r.Intent.Key, Status: r.StatusCode, RequestID: r.Meta.RequestID,
				Replayed: r.Meta.Replayed, StillPending: r.StillPending}
			// The id to quote is the body's (the creating request's).
			var body struct {
				RequestID string `json:"request_id"`
			}
			if r.Err == nil && r.Decode(&body) == nil && body.RequestID != "" {
				it.RequestID = body.RequestID
			}
			if r.Err != nil {
				it.Error = message(r.Err)
			}
			out = append(out, it)
		}
		return out
	}
	expired := []item{}
	for _, in := range rep.Expired {
		expired = append(expired, item{IntentID: in.ID, IdempotencyKey: in.Key, CreatedAt: in.CreatedAt.Format(time.RFC3339)})
	}
	type jobItem struct {
		IntentID     string `json:"intent_id"`
		From         string `json:"from"`
		Reached      string `json:"reached"`
		GenerationID string `json:"generation_id,omitempty"`
		Status       string `json:"status,omitempty"`
		Output       string `json:"output,omitempty"`
		Error        string `json:"error,omitempty"`
	}
	jobs := []jobItem{}
	for _, jr := range rep.Jobs {
		it := jobItem{IntentID: jr.Intent.ID, From: string(jr.From), Reached: string(jr.Reached)}
		if jr.Intent.Job != nil {
			it.Output = jr.Intent.Job.Path
		}
		if g := jr.Generation; g != nil {
			it.GenerationID, it.Status = g.ID, string(g.Status)
		}
		if jr.Err != nil {
			it.Error = message(jr.Err)
		}
		jobs = append(jobs, it)
	}
	if jsonOut {
		printJSON(e, map[string]any{"completed": conv(rep.Completed), "failed": conv(rep.Failed), "expired": expired, "jobs": jobs})
		return
	}
	fmt.Fprintf(e.stdout, "resumed: %d completed, %d failed, %d expired, %d jobs\n", len(rep.Completed), len(rep.Failed), len(rep.Expired), len(rep.Jobs))
	for _, it := range jobs {
		if it.Error != "" {
			fmt.Fprintf(e.stdout, "  job        %s  %s -> %s  generation=%s  %s\n", it.IntentID, it.From, it.Reached, it.GenerationID, it.Error)
			continue
		}
		fmt.Fprintf(e.stdout, "  job        %s  %s -> %s  generation=%s  output=%s\n", it.IntentID, it.From, it.Reached, it.GenerationID, it.Output)
	}
	for _, it := range conv(rep.Completed) {
		fmt.Fprintf(e.stdout, "  completed  %s  key=%s  status=%d  replayed=%t  request_id=%s\n", it.IntentID, it.IdempotencyKey, it.Status, it.Replayed, it.RequestID)
	}
	for _, it := range conv(rep.Failed) {
		fmt.Fprintf(e.stdout, "  failed     %s  key=%s  still_pending=%t  %s\n", it.IntentID, it.IdempotencyKey, it.StillPending, it.Error)
	}
	for _, it := range expired {
		fmt.Fprintf(e.stdout, "  expired    %s  key=%s  created_at=%s  (not re-sent: reconcile by hand)\n", it.IntentID, it.IdempotencyKey, it.CreatedAt)
	}
}
