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
	checkAllocs(t, sdk, hand)
}

// checkAllocs fails when sdk allocations are more than hand's +
// maxExtraAllocs.
func checkAllocs(t *testing.T, sdk, hand float64) {
	t.Helper()
	t.Logf("Create: %.0f allocations, hand-written: %.0f", sdk, hand)
	if sdk > hand+maxExtraAllocs {
		t.Errorf("Create allocates %.0f, more than the hand-written call's %.0f + %d", sdk, hand, maxExtraAllocs)
	}
}

// TestCreateAllocationsLoopback is the same guard over a real connection
// to a local server (whose allocations, the same for both calls since they
// send the same bytes, count too), for a caller context that cannot end and
// for one that can (each attempt then has a context of its own).
func TestCreateAllocationsLoopback(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	srv := benchServer(t)
	hdr := sdkHeaders(t)
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer hc.CloseIdleConnections()
	hand := testing.AllocsPerRun(200, func() {
		if _, err := handCreateHeaders(context.Background(), hc, srv.URL, hdr); err != nil {
			t.Fatal(err)
		}
	})
	cancelable, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
	}{{"background", context.Background()}, {"cancelable", cancelable}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := safegen.NewClient("sk_bench", safegen.WithBaseURL(srv.URL))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sdk := testing.AllocsPerRun(200, func() {
				if _, err := c.Generations.Create(tc.ctx, benchParams); err != nil {
					t.Fatal(err)
				}
			})
			checkAllocs(t, sdk, hand)
		})
	}
}
