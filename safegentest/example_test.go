package safegentest_test

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/safegen/safegen-go/safegentest"
)

// A raw create sent twice with one Idempotency-Key is billed once: the second
// answer is the stored one, replayed. In a test, use NewServer(t) instead of
// Start and Close.
func ExampleNewServer() {
	srv := safegentest.Start()
	defer srv.Close()

	for range 2 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/generations",
			strings.NewReader(`{"model":"veo-3-1-fast","prompt":"a lighthouse at dusk"}`))
		req.Header.Set("Authorization", "Bearer "+srv.APIKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "order-17")
		resp, err := srv.Client().Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode, "replayed:", resp.Header.Get("Idempotent-Replayed") == "true")
	}
	fmt.Println("charges:", srv.Ledger().Total())
	// Output:
	// 202 replayed: false
	// 202 replayed: true
	// charges: 1
}

// Faults are queued and consumed in order by the requests they match.
func ExampleServer_InjectFaults() {
	srv := safegentest.Start()
	defer srv.Close()
	srv.InjectFaults(safegentest.Fault{Kind: safegentest.FaultStatus, Status: http.StatusServiceUnavailable})

	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/account", nil)
		req.Header.Set("Authorization", "Bearer "+srv.APIKey)
		resp, err := srv.Client().Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
	}
	// Output:
	// 503
	// 200
}
