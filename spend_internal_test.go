package safegen

import (
	"context"
	"strconv"
	"testing"
)

// A long-lived Client's spend memory stays bounded: the oldest keys are
// forgotten (their charges kept), the newest still deduplicate replays.
func TestBoundedMapForgetsOldest(t *testing.T) {
	b := boundedMap[int]{max: 3}
	var forgot []string
	for i := range 5 {
		if k, ok := b.store(strconv.Itoa(i), i); ok {
			forgot = append(forgot, k)
		}
	}
	if len(forgot) != 2 || forgot[0] != "0" || forgot[1] != "1" {
		t.Fatalf("forgot %v, want [0 1]", forgot)
	}
	if _, ok := b.load("1"); ok {
		t.Fatal("key 1 still held")
	}
	if v, ok := b.load("4"); !ok || v != 4 {
		t.Fatalf("key 4: %v %v", v, ok)
	}
	if _, ok := b.store("4", 40); ok {
		t.Fatal("storing a held key forgot another")
	}
	if len(b.m) != 3 {
		t.Fatalf("%d entries, want 3", len(b.m))
	}
}

func TestMemBookBoundedKeepsTotals(t *testing.T) {
	m := &memBook{settled: boundedMap[struct{}]{max: 4}}
	for i := range 100 {
		k := strconv.Itoa(i)
		if _, err := m.l.Reserve(k, 2, -1); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Settle(context.Background(), k, 2); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.l.Report(); got.Spent != 200 || got.Reserved != 0 {
		t.Fatalf("report %+v, want spent 200", got)
	}
	if n := len(m.l.Entries()); n > 4 {
		t.Fatalf("%d ledger entries kept, want at most 4", n)
	}
	// A replay of a recent key is the same charge.
	if _, err := m.Settle(context.Background(), "99", 2); err != nil {
		t.Fatal(err)
	}
	if got := m.l.Report(); got.Spent != 200 {
		t.Fatalf("a replay counted twice: %+v", got)
	}
}
