package safegentest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// docs/contract.md's models and prices are what the fake charges: the doc
// cannot drift from the server that tests run against.
func TestContractDocPrices(t *testing.T) {
	doc, err := os.ReadFile("../docs/contract.md")
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9-]+)(?:\\*)?`(?: \\(any name\\))? \\| (image|video) \\| (.+) \\|$")
	rows := row.FindAllStringSubmatch(string(doc), -1)
	require.GreaterOrEqual(t, len(rows), 5, "the models table")
	srv := NewServer(t, WithRateLimit(0, 0))
	for _, r := range rows {
		model, kind, price := r[1], r[2], r[3]
		if model == "test-" {
			model = "test-anything"
		}
		want := 0
		if kind == "image" {
			want, err = strconv.Atoi(price)
			require.NoError(t, err, price)
		} else {
			m := regexp.MustCompile(`^(\d+) per second of .*default 4 s: (\d+)\)$`).FindStringSubmatch(price)
			require.NotNil(t, m, price)
			want, _ = strconv.Atoi(m[2])
			perSecond, _ := strconv.Atoi(m[1])
			assert.Equal(t, perSecond*2, estimate(t, srv, model, 2), model)
		}
		assert.Equal(t, want, estimate(t, srv, model, 0), model)
	}
	// The prompt that fails, as documented.
	assert.Contains(t, string(doc), "`[fail]`")
	assert.True(t, strings.Contains(string(doc), "Authorization: Bearer <key>") && strings.Contains(string(doc), "X-API-Key: <key>"))
}

func estimate(t *testing.T, srv *Server, model string, dur int) int {
	t.Helper()
	p := map[string]any{"model": model, "prompt": "x"}
	if dur > 0 {
		p["duration_s"] = dur
	}
	b, _ := json.Marshal(p)
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/generations/estimate", bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+srv.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var out struct {
		Credits int `json:"credits"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out.Credits
}
