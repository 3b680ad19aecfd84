package pgjournal_test

import (
	"testing"

	safegen "github.com/safegen/safegen-go"
	"github.com/safegen/safegen-go/journal/journaltest"
)

func TestConformance(t *testing.T) {
	pool := newPool(t)
	journaltest.Run(t, func(t *testing.T) safegen.KeyJournal { return open(t, pool) })
}
