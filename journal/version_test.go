package journal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
)

// records returns the intact records of the file at path, failing on damage.
func records(t *testing.T, path string) []record {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	res := scan(data)
	require.Empty(t, res.middle)
	require.Nil(t, res.tail)
	var out []record
	for _, r := range res.records {
		out = append(out, r.rec)
	}
	return out
}

func frame(t *testing.T, r record) []byte {
	t.Helper()
	b, err := encodeRecord(nil, &r)
	require.NoError(t, err)
	return b
}

func TestNewJournalStartsWithHeader(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(path string) error
	}{
		{"new path", func(string) error { return nil }},
		{"empty file", func(p string) error { return os.WriteFile(p, nil, 0o600) }},
		{"torn first record", func(p string) error { return os.WriteFile(p, magic[:3], 0o600) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "journal")
			require.NoError(t, tc.setup(path))
			j, err := Open(path)
			require.NoError(t, err)
			require.NoError(t, j.Close())
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, appendFrame(nil, []byte(`{"op":"header","version":2}`)), data,
				"the header, durable before Open returns, and nothing else")
			j, err = Open(path, WithStrict())
			require.NoError(t, err)
			require.Equal(t, FormatVersion, j.version)
			require.NoError(t, j.Close())
		})
	}
}

// A journal from a newer release is refused before anything is created or
// changed, wherever its header sits, with or without WithStrict.
func TestOpenUnsupportedVersion(t *testing.T) {
	in := safegen.Intent{ID: "a", Key: "k", Method: "POST", Path: "/v1/generations", CreatedAt: time.Unix(1, 0)}
	begin := frame(t, record{Op: opBegin, Intent: &in})
	future := frame(t, record{Op: opHeader, Version: FormatVersion + 1})
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"header first", bytes.Join([][]byte{future, begin, {0xff, 'S'}}, nil)},
		{"header alone", future},
		{"header after garbage", bytes.Join([][]byte{[]byte("garbage"), future, begin}, nil)},
		{"second header", bytes.Join([][]byte{frame(t, record{Op: opHeader, Version: 2}), begin, future}, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "journal")
			require.NoError(t, os.WriteFile(path, tc.data, 0o600))
			for _, opts := range [][]Option{nil, {WithStrict()}} {
				_, err := Open(path, opts...)
				require.ErrorIs(t, err, ErrUnsupportedVersion)
				require.ErrorContains(t, err, "version 3")
			}
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, tc.data, got, "the file keeps its bytes")
			_, err = os.Stat(path + ".compact")
			require.ErrorIs(t, err, os.ErrNotExist)
		})
	}
	t.Run("no lock file for a header first", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "journal")
		require.NoError(t, os.WriteFile(path, future, 0o600))
		_, err := Open(path)
		require.ErrorIs(t, err, ErrUnsupportedVersion)
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Len(t, entries, 1)
	})
}

// v1Golden is what the last release wrote beside testdata/v1.journal: its
// Pending, and its Begin of the completed intent (see testdata/v1gen).
type v1Golden struct {
	Pending   []v1Summary `json:"pending"`
	Completed v1Summary   `json:"completed"`
}

type v1Summary struct {
	ID         string           `json:"id"`
	Key        string           `json:"key"`
	Method     string           `json:"method"`
	Path       string           `json:"path"`
	CreatedAt  time.Time        `json:"created_at"`
	BodyLen    int              `json:"body_len"`
	BodySHA256 string           `json:"body_sha256"`
	Outcome    *safegen.Outcome `json:"outcome"`
}

// v1BigBody is the body testdata/v1gen gave intent order-big.
func v1BigBody() []byte {
	b := make([]byte, 256<<10)
	for i := range b {
		b[i] = byte(i*31 + i/251)
	}
	return b
}

// v1Clock is within retention of the fixture's completed intent.
func v1Clock() time.Time { return time.Date(2026, 1, 15, 9, 31, 0, 0, time.UTC) }

// copyV1 copies the fixture to a fresh directory and returns its path, its
// bytes, and the golden answers.
func copyV1(t *testing.T) (string, []byte, v1Golden) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "v1.journal"))
	require.NoError(t, err)
	raw, err := os.ReadFile(filepath.Join("testdata", "v1.golden.json"))
	require.NoError(t, err)
	var golden v1Golden
	require.NoError(t, json.Unmarshal(raw, &golden))
	require.Len(t, golden.Pending, 2)
	path := filepath.Join(t.TempDir(), "journal")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	return path, data, golden
}

func summarize(in safegen.Intent) v1Summary {
	sum := sha256.Sum256(in.Body)
	return v1Summary{in.ID, in.Key, in.Method, in.Path, in.CreatedAt, len(in.Body), hex.EncodeToString(sum[:]), in.Outcome}
}

func requireGolden(t *testing.T, want []v1Summary, got []safegen.Intent) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.Equal(t, want[i], summarize(got[i]))
	}
}

// A journal written by the last release (format version 1, no header)
// opens without a single byte written, lists the same pending intents with
// the same bytes, keeps its completed intent, and goes on as version 1.
func TestV1FixtureOpens(t *testing.T) {
	ctx := context.Background()
	path, original, golden := copyV1(t)
	require.False(t, bytes.Contains(original, []byte(`"op":"header"`)), "the fixture is a version 1 file")

	j, err := Open(path, WithClock(v1Clock), WithStrict())
	require.NoError(t, err)
	require.Zero(t, j.Recovery())
	require.Equal(t, 1, j.version)
	p, err := j.Pending(ctx)
	require.NoError(t, err)
	requireGolden(t, golden.Pending, p)
	require.Equal(t, v1BigBody(), p[1].Body, "the big body, byte for byte")
	done, err := j.Begin(ctx, safegen.Intent{ID: "order-done", Key: "new-key", Method: "GET", Path: "/", CreatedAt: v1Clock()})
	require.NoError(t, err)
	require.Equal(t, golden.Completed, summarize(done), "the completed intent and its outcome")
	u, err := j.Unfinished(ctx)
	require.NoError(t, err)
	require.Empty(t, u, "a version 1 file holds no jobs")
	now, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, original, now, "opening and reading write nothing")

	require.NoError(t, j.Complete(ctx, "v1-key-small", safegen.Outcome{StatusCode: 201, Body: []byte(`{"id":"gen_s"}`)}))
	require.NoError(t, j.Close())
	now, err = os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(now, original), "a Complete is appended")
	recs := records(t, path)
	require.Equal(t, opComplete, recs[len(recs)-1].Op)
	for _, r := range recs {
		require.NotEqual(t, opHeader, r.Op, "still version 1: no header")
	}

	j, err = Open(path, WithClock(v1Clock), WithStrict())
	require.NoError(t, err)
	p, err = j.Pending(ctx)
	require.NoError(t, err)
	requireGolden(t, golden.Pending[1:], p)
	require.NoError(t, j.Close())

	// Past the retention, on the real clock, the completed intents go, as
	// they did in the last release; the pending one stays.
	j, err = Open(path)
	require.NoError(t, err)
	p, err = j.Pending(ctx)
	require.NoError(t, err)
	requireGolden(t, golden.Pending[1:], p)
	again, err := j.Begin(ctx, safegen.Intent{ID: "order-done", Key: "new-key", Method: "GET", Path: "/", CreatedAt: v1Clock()})
	require.NoError(t, err)
	require.Equal(t, "new-key", again.Key)
	require.NoError(t, j.Close())
}

// The first job record that would go into a version 1 file rewrites it as
// version 2 first, keeping every intent; a job in a Begin does the same.
func TestV1UpgradedByFirstJob(t *testing.T) {
	ctx := context.Background()
	job := safegen.Job{Step: safegen.JobAccepted, Path: "out/big.mp4", GenerationID: "gen_big", UpdatedAt: v1Clock()}
	for _, tc := range []struct {
		name       string
		job        func(j *File) error
		pending    []string
		unfinished string
	}{
		{"Advance", func(j *File) error { return j.Advance(ctx, "v1-key-big", job) },
			[]string{"order-small", "order-big"}, "order-big"},
		{"Begin", func(j *File) error {
			in := safegen.Intent{ID: "run-new", Key: "key-new", Method: "POST", Path: "/v1/generations", CreatedAt: v1Clock(), Job: &job}
			_, err := j.Begin(ctx, in)
			return err
		}, []string{"order-small", "order-big", "run-new"}, "run-new"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, _, golden := copyV1(t)
			j, err := Open(path, WithClock(v1Clock))
			require.NoError(t, err)
			require.ErrorIs(t, j.Advance(ctx, "no-such-key", job), ErrNotFound)
			require.Equal(t, 1, j.version, "a refused Advance upgrades nothing")
			require.NoError(t, tc.job(j))
			require.Equal(t, FormatVersion, j.version)
			require.NoError(t, j.Close())

			recs := records(t, path)
			require.Equal(t, record{Op: opHeader, Version: FormatVersion}, recs[0])
			j, err = Open(path, WithClock(v1Clock), WithStrict())
			require.NoError(t, err)
			require.Zero(t, j.Recovery())
			require.Equal(t, FormatVersion, j.version)
			p, err := j.Pending(ctx)
			require.NoError(t, err)
			ids := []string{}
			for _, in := range p {
				ids = append(ids, in.ID)
			}
			require.Equal(t, tc.pending, ids)
			for _, in := range p {
				if in.ID == "order-big" {
					require.Equal(t, v1BigBody(), in.Body)
				}
			}
			done, err := j.Begin(ctx, safegen.Intent{ID: "order-done", Key: "new-key", Method: "GET", Path: "/", CreatedAt: v1Clock()})
			require.NoError(t, err)
			require.Equal(t, golden.Completed, summarize(done))
			u, err := j.Unfinished(ctx)
			require.NoError(t, err)
			require.Len(t, u, 1)
			require.Equal(t, tc.unfinished, u[0].ID)
			require.Equal(t, job, *u[0].Job)
			require.NoError(t, j.Close())
		})
	}
}
