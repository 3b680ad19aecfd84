package pgjournal_test

import (
	"fmt"
	"path/filepath"
	"testing"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal"
	"github.com/safegen/safegen-go/journal/journaltest"
)

// benchBody is a Begin of about 300 bytes, like package journal's benchmarks.
var benchBody = []byte(`{"model":"veo-3-1-fast","prompt":"a red fox running through fresh snow at dawn, cinematic","seconds":8}`)

// BenchmarkBegin measures durable Begins of new intents from 1 and from 64
// concurrent callers, in PostgreSQL (one committed INSERT each, over a pool
// of up to 80 connections) beside the file journal (group-committed fsyncs)
// in a temporary folder. ns/op is wall time per Begin.
func BenchmarkBegin(b *testing.B) {
	eachStore(b, func(b *testing.B, j storeJournal, callers int) { journaltest.BenchBegin(b, j, callers, benchBody) })
}

// BenchmarkReserve measures Reserves of new keys from 1 and from 64
// concurrent callers, in PostgreSQL (a transaction that takes the
// namespace's totals row lock, so one namespace's Reserves commit one after
// another) beside the file journal (group-committed fsyncs). ns/op is wall
// time per Reserve.
func BenchmarkReserve(b *testing.B) {
	eachStore(b, func(b *testing.B, j storeJournal, callers int) { journaltest.BenchReserve(b, j, callers) })
}

// storeJournal is what both stores are.
type storeJournal interface {
	safegen.KeyJournal
	safegen.SpendJournal
}

// eachStore runs bench as store=pg and store=file sub-benchmarks, with 1
// and with 64 callers, each on a fresh journal: PostgreSQL, or the file
// journal in a temporary folder.
func eachStore(b *testing.B, bench func(b *testing.B, j storeJournal, callers int)) {
	for _, store := range []string{"pg", "file"} {
		for _, callers := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/callers=%d", store, callers), func(b *testing.B) {
				var j storeJournal
				switch store {
				case "pg":
					j = open(b, newPool(b))
				case "file":
					f, err := journal.Open(filepath.Join(b.TempDir(), "journal"))
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { _ = f.Close() })
					j = f
				}
				bench(b, j, callers)
			})
		}
	}
}
