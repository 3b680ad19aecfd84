package safegen_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/safegen/safegen-go"
)

// maxExtraAllocs is what a Create may allocate beyond the same call written
// by hand (a UUID key, the same headers, the same decode into Generation).
const maxExtraAllocs = 8

// TestCreateAllocations guards the happy path's cost deterministically: it
// fails when Create allocates more than maxExtraAllocs beyond the
// hand-written call, both over an in-memory transport (no network noise).
func TestCreateAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	ctx := context.Background()
	c, err := safegen.NewClient("sk_allocs", safegen.WithBaseURL("http://127.0.0.1:1"),
		safegen.WithHTTPClient(&http.Client{Transport: memTransport{}}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hc := &http.Client{Transport: memTransport{}}
	hdr := sdkHeaders(t)
	sdk := testing.AllocsPerRun(200, func() {
		if _, err := c.Generations.Create(ctx, benchParams); err != nil {
			t.Fatal(err)
		}
	})
	hand := testing.AllocsPerRun(200, func() {
		if _, err := handCreateHeaders(ctx, hc, "http://127.0.0.1:1", hdr); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("Create: %.0f allocations, hand-written: %.0f", sdk, hand)
	if sdk > hand+maxExtraAllocs {
		t.Errorf("Create allocates %.0f, more than the hand-written call's %.0f + %d", sdk, hand, maxExtraAllocs)
	}
}
