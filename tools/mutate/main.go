// Command mutate runs the planted-mutant list against the tests: each mutant
// is one single-point edit of a source file (the exact old text, the new
// text) that plants a bug the tests must catch. It runs the tests of the
// mutant's package with the edit applied and reports whether they failed
// (killed) or passed (survived), then the score per package.
//
// The edit is applied through go's -overlay build flag: the source tree is
// never written, so an interrupted run leaves nothing to revert, and edits
// made meanwhile by someone else are never lost.
//
// Usage, from anywhere in the module:
//
//	go run ./tools/mutate [-only REGEXP] [-run REGEXP] [-pkg PKGS] [-timeout 3m] [-min 95] [-list] [-v]
//
// -only selects mutants by id; -run is passed to go test, to see whether
// given tests alone kill a mutant; -pkg tests other packages instead of the
// mutant's own (say, ./journal/pgjournal, which imports the root); -min is
// the score (percent) under which
// the run fails. A mutant whose old text is not found exactly once is stale
// (the code changed): the run fails until the list is updated. A mutant that
// does not compile is invalid, also a failure: fix its new text.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// mutant is one planted bug.
type mutant struct {
	// ID names the mutant: area-what.
	ID string
	// File is the source file, from the module root. Its package's tests
	// are the ones run.
	File string
	// Old is the exact text replaced; it must occur once in File.
	Old string
	// New replaces it.
	New string
	// Bug says, in a few words, what the edit breaks.
	Bug string
}

// status is what running the tests against one mutant gave.
type status string

const (
	killed   status = "killed"
	timedOut status = "killed (timeout)"
	survived status = "SURVIVED"
	stale    status = "STALE"   // Old not found exactly once
	invalid  status = "INVALID" // does not compile
)

type result struct {
	m       mutant
	status  status
	by      []string // the failing tests
	elapsed time.Duration
	output  string
}

func main() {
	only := flag.String("only", "", "run only the mutants whose id matches this regexp")
	run := flag.String("run", "", "pass -run to go test: which tests may kill the mutants")
	pkgs := flag.String("pkg", "", "comma-separated packages to test instead of each mutant's own")
	timeout := flag.Duration("timeout", 3*time.Minute, "go test -timeout for one mutant; a mutant that hangs the tests is killed")
	minScore := flag.Float64("min", 95, "fail when a package's score (percent killed) is below this")
	list := flag.Bool("list", false, "list the mutants and exit")
	verbose := flag.Bool("v", false, "print the test output of survived, invalid and timed-out mutants")
	flag.Parse()

	root, err := moduleRoot()
	if err != nil {
		fatal(err)
	}
	var sel []mutant
	re, err := regexp.Compile(*only)
	if err != nil {
		fatal(err)
	}
	for _, m := range mutants {
		if re.MatchString(m.ID) {
			sel = append(sel, m)
		}
	}
	if *list {
		for _, m := range sel {
			fmt.Printf("%-32s %-22s %s\n", m.ID, m.File, m.Bug)
		}
		return
	}
	if len(sel) == 0 {
		fatal(errors.New("no mutant matches -only"))
	}
	tmp, err := os.MkdirTemp("", "mutate")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(tmp)

	start := time.Now()
	fmt.Printf("mutate: %d mutants, go test -timeout %s per mutant, tree untouched (-overlay)\n", len(sel), *timeout)
	var results []result
	for i, m := range sel {
		r := runMutant(root, tmp, i, m, *run, *pkgs, *timeout)
		results = append(results, r)
		by := ""
		if len(r.by) > 0 {
			by = " by " + strings.Join(r.by, ", ")
		}
		fmt.Printf("%3d/%d %-18s %-32s %5.1fs%s\n", i+1, len(sel), r.status, m.ID, r.elapsed.Seconds(), by)
		if *verbose && (r.status == survived || r.status == invalid || r.status == timedOut) {
			fmt.Println(indent(r.output))
		}
	}
	ok := report(results, *minScore)
	fmt.Printf("mutate: %s in all\n", time.Since(start).Round(time.Second))
	if !ok {
		os.Exit(1)
	}
}

// runMutant applies m through an overlay and runs its package's tests.
func runMutant(root, tmp string, i int, m mutant, run, pkgs string, timeout time.Duration) result {
	r := result{m: m}
	path := filepath.Join(root, filepath.FromSlash(m.File))
	src, err := os.ReadFile(path)
	if err != nil {
		r.status, r.output = stale, err.Error()
		return r
	}
	if n := bytes.Count(src, []byte(m.Old)); n != 1 {
		r.status, r.output = stale, fmt.Sprintf("old text found %d times in %s", n, m.File)
		return r
	}
	mutated := bytes.Replace(src, []byte(m.Old), []byte(m.New), 1)
	dir := filepath.Join(tmp, fmt.Sprint(i))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fatal(err)
	}
	file := filepath.Join(dir, filepath.Base(path))
	if err := os.WriteFile(file, mutated, 0o600); err != nil {
		fatal(err)
	}
	overlay, err := json.Marshal(map[string]map[string]string{"Replace": {path: file}})
	if err != nil {
		fatal(err)
	}
	ov := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ov, overlay, 0o600); err != nil {
		fatal(err)
	}

	args := []string{"test", "-count=1", "-failfast", "-overlay=" + ov, "-timeout=" + timeout.String()}
	if run != "" {
		args = append(args, "-run="+run)
	}
	if pkgs != "" {
		args = append(args, strings.Split(pkgs, ",")...)
	} else {
		args = append(args, "./"+filepath.ToSlash(filepath.Dir(m.File)))
	}
	// go test's own -timeout panics the test binary; this one is the
	// backstop for a build or a binary that will not die.
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	r.elapsed = time.Since(t0)
	r.output = string(out)
	switch {
	case err == nil:
		r.status = survived
	case bytes.Contains(out, []byte("[build failed]")) || bytes.Contains(out, []byte("[setup failed]")):
		r.status = invalid
	case ctx.Err() != nil || bytes.Contains(out, []byte("panic: test timed out")):
		r.status = timedOut
	default:
		r.status = killed
	}
	r.by = failedTests(out)
	return r
}

var failLine = regexp.MustCompile(`(?m)^--- FAIL: (\S+)`)

// failedTests returns the top-level tests (and examples) that failed.
func failedTests(out []byte) []string {
	seen := map[string]bool{}
	var names []string
	for _, m := range failLine.FindAllSubmatch(out, -1) {
		name := string(m[1])
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		if i := bytes.Index(out, []byte("panic: test timed out")); i >= 0 {
			names = append(names, "(timeout)")
		}
	}
	return names
}

// report prints the score per package and says whether the run passed.
func report(results []result, minScore float64) bool {
	type tally struct{ killed, survived, stale, invalid int }
	pkgs := map[string]*tally{}
	ok := true
	for _, r := range results {
		pkg := filepath.ToSlash(filepath.Dir(r.m.File))
		t := pkgs[pkg]
		if t == nil {
			t = &tally{}
			pkgs[pkg] = t
		}
		switch r.status {
		case killed, timedOut:
			t.killed++
		case survived:
			t.survived++
		case stale:
			t.stale++
			ok = false
		case invalid:
			t.invalid++
			ok = false
		}
	}
	names := make([]string, 0, len(pkgs))
	for p := range pkgs {
		names = append(names, p)
	}
	sort.Strings(names)
	fmt.Println()
	fmt.Printf("%-10s %7s %9s %6s %8s %7s\n", "package", "killed", "survived", "stale", "invalid", "score")
	for _, p := range names {
		t := pkgs[p]
		score := 0.0
		if n := t.killed + t.survived; n > 0 {
			score = 100 * float64(t.killed) / float64(n)
		}
		if score < minScore {
			ok = false
		}
		fmt.Printf("%-10s %7d %9d %6d %8d %6.1f%%\n", p, t.killed, t.survived, t.stale, t.invalid, score)
	}
	for _, r := range results {
		switch r.status {
		case survived:
			fmt.Printf("survived: %s (%s): %s\n", r.m.ID, r.m.File, r.m.Bug)
		case stale, invalid:
			fmt.Printf("%s: %s (%s): %s\n", strings.ToLower(string(r.status)), r.m.ID, r.m.File, firstLine(r.output))
		}
	}
	return ok
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mutate:", err)
	os.Exit(2)
}
