package journal_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/journal/journaltest"
)

// benchBody makes a Begin record of about 300 bytes, like BenchmarkRawFsync's.
var benchBody = []byte(`{"model":"veo-3-1-fast","prompt":"a red fox running through fresh snow at dawn, cinematic","seconds":8}`)

// BenchmarkRawFsync is the floor a durable Begin cannot beat: one write of a
// 300-byte record and one fsync, serially.
func BenchmarkRawFsync(b *testing.B) {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rec := make([]byte, 300)
	b.ResetTimer()
	for range b.N {
		if _, err := f.Write(rec); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBegin measures durable Begins of new intents from 1 and from 64
// concurrent callers; ns/op is wall time per Begin, so 64 callers sharing
// fsyncs show as a lower ns/op.
func BenchmarkBegin(b *testing.B) {
	for _, callers := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			j, err := journal.Open(filepath.Join(b.TempDir(), "journal"))
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			journaltest.BenchBegin(b, j, callers, benchBody)
		})
	}
}
