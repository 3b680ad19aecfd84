package journal

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	safegen "github.com/safegen/safegen-go"
)

// TestIntactFrameWithBadRecordIsDamage: a frame whose checksum holds but
// whose record cannot describe an intent (an intent without a key, an
// outcome without one, an unknown op) is dropped as damage, exactly its own
// bytes, and never replayed: Strict refuses the file, repair keeps the
// neighbours.
func TestIntactFrameWithBadRecordIsDamage(t *testing.T) {
	good := func(i int) []byte {
		in := safegen.Intent{ID: "id-" + string(rune('a'+i)), Key: "key-" + string(rune('a'+i)), Method: "POST",
			Path: "/v1/generations", Body: []byte(`{"model":"img-2"}`), CreatedAt: time.Unix(int64(1_700_000_000+i), 0)}
		b, err := encodeRecord(nil, &record{Op: opBegin, Intent: &in})
		require.NoError(t, err)
		return b
	}
	for _, tc := range []struct {
		name string
		bad  []byte
		why  string
	}{
		{"intent without key", appendFrame(nil, []byte(`{"op":"begin","intent":{"id":"x","method":"POST","path":"/v1/generations","created_at":"2025-01-01T00:00:00Z"}}`)), "begin record"},
		{"begin without intent", appendFrame(nil, []byte(`{"op":"begin"}`)), "begin record without intent"},
		{"complete without key", appendFrame(nil, []byte(`{"op":"complete","outcome":{"status":201,"completed_at":"2025-01-01T00:00:00Z"}}`)), "complete record without key"},
		{"unknown op", appendFrame(nil, []byte(`{"op":"rewind"}`)), "unknown record op"},
		{"not JSON", appendFrame(nil, []byte(`not json`)), "undecodable payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := bytes.Join([][]byte{good(0), tc.bad, good(1)}, nil)
			res := scan(data)
			require.Len(t, res.records, 2)
			require.Len(t, res.middle, 1)
			require.Equal(t, len(good(0)), res.middle[0].off)
			require.Equal(t, len(tc.bad), res.middle[0].n)
			require.Contains(t, res.middle[0].why, tc.why)
			require.Nil(t, res.tail)

			path := filepath.Join(t.TempDir(), "journal")
			require.NoError(t, os.WriteFile(path, data, 0o600))
			_, err := Open(path, WithStrict())
			require.ErrorIs(t, err, ErrCorrupt)
			j, err := Open(path)
			require.NoError(t, err)
			defer j.Close()
			require.Equal(t, int64(len(tc.bad)), j.Recovery().TruncatedBytes)
			p, err := j.Pending(t.Context())
			require.NoError(t, err)
			require.Len(t, p, 2)
			require.Equal(t, "key-a", p[0].Key)
			require.Equal(t, "key-b", p[1].Key)
		})
	}
}
