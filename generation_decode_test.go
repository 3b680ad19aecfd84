package safegen

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// stdDecode is what encoding/json makes of b: the reference the fast path
// must match.
func stdDecode(b []byte) (Generation, error) {
	var g Generation
	type plain Generation
	err := json.Unmarshal(b, (*plain)(&g))
	return g, err
}

// sameGeneration reports whether a and b hold the same values, times
// compared as instants with their offsets.
func sameGeneration(a, b Generation) bool {
	sameTime := func(x, y *time.Time) bool {
		_, ox := x.Zone()
		_, oy := y.Zone()
		ok := x.Equal(*y) && ox == oy && x.IsZero() == y.IsZero()
		*x, *y = time.Time{}, time.Time{}
		return ok
	}
	if !sameTime(&a.CreatedAt, &b.CreatedAt) {
		return false
	}
	if (a.Output == nil) != (b.Output == nil) {
		return false
	}
	if a.Output != nil {
		ao, bo := *a.Output, *b.Output
		if !sameTime(&ao.ExpiresAt, &bo.ExpiresAt) || ao != bo {
			return false
		}
		a.Output, b.Output = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

// decodeCases are answers the fast path must take (fast) or leave to
// encoding/json.
var decodeCases = []struct {
	name string
	body string
	fast bool
}{
	{"queued", `{"id":"gen_1","request_id":"req_1","status":"queued","model":"veo-3-1-fast","cost":12,"created_at":"2026-01-02T03:04:05Z"}`, true},
	{"succeeded", `{"id":"gen_2","status":"succeeded","model":"m","prompt":"a fox","duration_s":8,"cost":12.5,
		"created_at":"2026-01-02T03:04:05.123456789+02:00",
		"output":{"url":"https://cdn.example/o.mp4?sig=abc","size":1048576,"sha256":"00ff","content_type":"video/mp4","expires_at":"2026-01-03T00:00:00Z"}}`, true},
	{"failed", `{"id":"gen_3","status":"failed","cost":0,"error":{"type":"generation_error","code":"content_policy","message":"refused"}}`, true},
	{"unknown fields", `{"object":"generation","id":"gen_4","progress":0.5,"tags":["a",{"b":[1,2e3,-0.5,true,false,null]}],"meta":{"x":"y\n\u00e9"},"status":"processing"}`, true},
	{"nulls", `{"id":"gen_5","model":null,"cost":null,"duration_s":null,"created_at":null,"output":null,"error":null}`, true},
	{"unicode prompt", `{"id":"gen_6","prompt":"一只在雪中奔跑的红狐狸 🦊"}`, true},
	{"white space", " \n\t{ \"id\" : \"gen_7\" , \"cost\" : 1e2 }\r\n", true},
	{"duplicates", `{"id":"a","id":"b","output":{"url":"u"},"output":{"size":3}}`, true},
	{"null after a value", `{"id":"a","model":"m","model":null,"cost":2,"cost":null}`, true},
	{"output then null", `{"id":"a","output":{"url":"u"},"output":null}`, true},
	{"empty output", `{"id":"a","output":{}}`, true},
	{"unknown status", `{"id":"a","status":"paused"}`, true},
	{"negative zero", `{"id":"a","cost":-0,"duration_s":-0}`, true},

	{"escape in value", `{"id":"gen_\u0031"}`, false},
	{"escape in key", `{"\u0069d":"gen_1"}`, false},
	{"key in another case", `{"ID":"gen_1"}`, false},
	{"non-ASCII key", `{"ıd":"gen_1"}`, false},
	{"kelvin sign", "{\"\u212aey\":1,\"id\":\"a\"}", false},
	{"string cost", `{"id":"a","cost":"12"}`, false},
	{"fractional duration", `{"id":"a","duration_s":4.5}`, false},
	{"exponent duration", `{"id":"a","duration_s":4e0}`, false},
	{"huge cost", `{"id":"a","cost":1e400}`, false},
	{"huge size", `{"id":"a","output":{"size":99999999999999999999}}`, false},
	{"bad time", `{"id":"a","created_at":"yesterday"}`, false},
	{"number id", `{"id":5}`, false},
	{"trailing garbage", `{"id":"a"} x`, false},
	{"two values", `{"id":"a"}{"id":"b"}`, false},
	{"leading zero", `{"id":"a","x":01}`, false},
	{"bare dot", `{"id":"a","cost":1.}`, false},
	{"trailing comma", `{"id":"a",}`, false},
	{"unclosed", `{"id":"a"`, false},
	{"invalid utf8", "{\"id\":\"a\xff\"}", false},
	{"control character", "{\"id\":\"a\tb\"}", false},
	{"null", `null`, false},
	{"array", `[{"id":"a"}]`, false},
	{"empty", ``, false},
	{"html", `<html>502 Bad Gateway</html>`, false},
	{"bad escape in unknown", `{"id":"a","x":"\q"}`, false},
	{"short unicode escape", `{"id":"a","x":"\u00"}`, false},
	{"deep unknown", `{"id":"a","x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, false},
	{"output not an object", `{"id":"a","output":"u"}`, false},
	{"bad literal", `{"id":"a","x":tru}`, false},
}

func TestDecodeGenerationFast(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			var g Generation
			ok := decodeGenerationFast([]byte(tc.body), &g)
			if ok != tc.fast {
				t.Fatalf("fast path took it: %v, want %v", ok, tc.fast)
			}
			if !ok {
				return
			}
			want, err := stdDecode([]byte(tc.body))
			if err != nil {
				t.Fatalf("the fast path took what encoding/json refuses: %v", err)
			}
			if !sameGeneration(g, want) {
				t.Fatalf("fast %+v\nwant %+v", g, want)
			}
		})
	}
}

// The fast path allocates only the strings it keeps.
func TestDecodeGenerationFastAllocations(t *testing.T) {
	body := []byte(decodeCases[0].body)
	g := new(Generation)
	n := testing.AllocsPerRun(100, func() {
		*g = Generation{}
		if !decodeGenerationFast(body, g) {
			t.Fatal("not taken")
		}
	})
	// id, request_id and model; the status is a constant and the time
	// UTC.
	if n > 3 {
		t.Errorf("%v allocations, want at most 3", n)
	}
}

// FuzzDecodeGenerationFast: whatever the fast path takes, encoding/json
// takes too and decodes to the same Generation.
func FuzzDecodeGenerationFast(f *testing.F) {
	for _, tc := range decodeCases {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkCharge(t, b)
		var g Generation
		if !decodeGenerationFast(b, &g) {
			return
		}
		want, err := stdDecode(b)
		if err != nil {
			t.Fatalf("the fast path took %q, which encoding/json refuses: %v", b, err)
		}
		if !sameGeneration(g, want) {
			t.Fatalf("%q:\nfast %+v\nwant %+v", b, g, want)
		}
	})
}

// checkCharge fails when decodeCharge takes b and reads it otherwise than
// encoding/json.
func checkCharge(t *testing.T, b []byte) {
	t.Helper()
	c, ok := decodeCharge(b)
	if !ok {
		return
	}
	var v struct {
		ID   string   `json:"id"`
		Cost *float64 `json:"cost"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decodeCharge took %q, which encoding/json refuses: %v", b, err)
	}
	if c.id != v.ID || c.hasCost != (v.Cost != nil) || (c.hasCost && c.cost != *v.Cost) {
		t.Fatalf("%q: decodeCharge %+v, encoding/json %q %v", b, c, v.ID, v.Cost)
	}
}

func TestDecodeCharge(t *testing.T) {
	for _, tc := range []struct {
		body    string
		id      string
		cost    float64
		hasCost bool
		fast    bool
	}{
		{`{"id":"gen_1","status":"queued","cost":12,"output":{"url":"u"}}`, "gen_1", 12, true, true},
		{`{"id":"gen_1"}`, "gen_1", 0, false, true},
		{`{"id":"gen_1","cost":0}`, "gen_1", 0, true, true},
		{`{"cost":3,"cost":null}`, "", 0, false, true},
		{`{"cost":null,"cost":3}`, "", 3, true, true},
		{`{"Cost":3}`, "", 0, false, false},
		{`{"id":5}`, "", 0, false, false},
		{`{"cost":"3"}`, "", 0, false, false},
		{``, "", 0, false, false},
		{`[]`, "", 0, false, false},
	} {
		c, ok := decodeCharge([]byte(tc.body))
		if ok != tc.fast || c.id != tc.id || c.cost != tc.cost || c.hasCost != tc.hasCost {
			t.Errorf("%s: got %+v %v, want %q %v %v %v", tc.body, c, ok, tc.id, tc.cost, tc.hasCost, tc.fast)
		}
		checkCharge(t, []byte(tc.body))
	}
}
