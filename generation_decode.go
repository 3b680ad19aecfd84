package safegen

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// This file decodes the common shape of a Generation without reflection.
// encoding/json was the largest part of the SDK's own work on a create
// (about 30 % of its CPU over an in-memory transport, 2.5 µs of 8.7) and of
// every poll of Wait. decodeGenerationFast takes the answers servers send
// (exact field names, strings without escapes) and gives up on anything
// else: a key that only matches a field when case is ignored, an escape, a
// wrong type, a number encoding/json would refuse, malformed JSON. Then the
// caller decodes with encoding/json as before, so every answer decodes to
// exactly what encoding/json makes of it (FuzzDecodeGenerationFast compares
// the two on every input the fast path accepts).

// decodeGenerationFast decodes b into g, which must be zero, and reports
// whether it could; when it could not, g holds partial values and must be
// reset before another decoder runs.
func decodeGenerationFast(b []byte, g *Generation) bool {
	d := fastDecoder{b: b}
	if !d.object(g) {
		return false
	}
	d.ws()
	return d.i == len(d.b)
}

// object reads an object into v (a *Generation, *GenerationOutput,
// *GenerationError or *charge; nil throws the members away), one member at a
// time through field.
func (d *fastDecoder) object(v any) bool {
	if !d.consume('{') {
		return false
	}
	for first := true; ; first = false {
		key, end, ok := d.member(first)
		if !ok || end {
			return ok
		}
		if !d.field(v, key) {
			return false
		}
	}
}

// field decodes the value of key into v (see object).
func (d *fastDecoder) field(v any, key []byte) bool {
	switch v := v.(type) {
	case *Generation:
		return d.generationField(v, key)
	case *GenerationOutput:
		return d.outputField(v, key)
	case *GenerationError:
		return d.errorField(v, key)
	case *charge:
		return d.chargeField(v, key)
	}
	return d.skip()
}

func (d *fastDecoder) generationField(g *Generation, key []byte) bool {
	switch string(key) {
	case "id":
		return d.str(&g.ID)
	case "request_id":
		return d.str(&g.RequestID)
	case "status":
		return d.status(&g.Status)
	case "model":
		return d.str(&g.Model)
	case "prompt":
		return d.str(&g.Prompt)
	case "duration_s":
		var n int64
		ok, set := d.integer(&n, strconv.IntSize)
		if set {
			g.DurationS = int(n)
		}
		return ok
	case "cost":
		return d.float(&g.Cost)
	case "created_at":
		return d.time(&g.CreatedAt)
	case "output":
		return optional(d, &g.Output)
	case "error":
		return optional(d, &g.Error)
	}
	return d.unknown(key, generationKeys)
}

// optional decodes an object into *p, made when nil, as encoding/json
// does for a pointer field; null sets *p to nil.
func optional[T any](d *fastDecoder, p **T) bool {
	if d.null() {
		*p = nil
		return true
	}
	if *p == nil {
		*p = new(T)
	}
	return d.object(*p)
}

var generationKeys = []string{"id", "request_id", "status", "model", "prompt", "duration_s", "cost", "created_at", "output", "error"}

func (d *fastDecoder) outputField(o *GenerationOutput, key []byte) bool {
	switch string(key) {
	case "url":
		return d.str(&o.URL)
	case "size":
		ok, _ := d.integer(&o.Size, 64)
		return ok
	case "sha256":
		return d.str(&o.SHA256)
	case "content_type":
		return d.str(&o.ContentType)
	case "expires_at":
		return d.time(&o.ExpiresAt)
	}
	return d.unknown(key, outputKeys)
}

var outputKeys = []string{"url", "size", "sha256", "content_type", "expires_at"}

func (d *fastDecoder) errorField(e *GenerationError, key []byte) bool {
	switch string(key) {
	case "type":
		return d.str(&e.Type)
	case "code":
		return d.str(&e.Code)
	case "message":
		return d.str(&e.Message)
	}
	return d.unknown(key, errorKeys)
}

var errorKeys = []string{"type", "code", "message"}

// fastDecoder reads one JSON text; every method reports false when the
// input is not what it takes, and the caller gives up.
type fastDecoder struct {
	b     []byte
	i     int
	depth int
}

// maxFastDepth is how deep an unknown value may nest before the fast path
// gives up (encoding/json takes up to 10,000 levels).
const maxFastDepth = 64

func (d *fastDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// consume skips white space and then c, if that is what comes.
func (d *fastDecoder) consume(c byte) bool {
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// member reads an object up to its next member's value, after the '{'
// (first) or after the last value: the member's key, or end when the object
// closed.
func (d *fastDecoder) member(first bool) (key []byte, end, ok bool) {
	if d.consume('}') {
		return nil, true, true
	}
	if !first && !d.consume(',') {
		return nil, false, false
	}
	d.ws()
	key, ok = d.plainString()
	if !ok || !d.consume(':') {
		return nil, false, false
	}
	d.ws()
	return key, false, true
}

// unknown skips the value of a key no field is named by, unless the key
// would name one with case ignored, or is not ASCII (encoding/json matches
// keys without regard to case, Unicode folding included).
func (d *fastDecoder) unknown(key []byte, known []string) bool {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	for _, k := range known {
		if bytes.EqualFold(key, []byte(k)) {
			return false
		}
	}
	return d.skip()
}

// plainString reads a string without escapes, control characters or
// invalid UTF-8, and returns its bytes (aliasing the input).
func (d *fastDecoder) plainString() ([]byte, bool) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, false
	}
	start := d.i + 1
	ascii := true
	for j := start; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			d.i = j + 1
			s := d.b[start:j]
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// null reads a null, if that is what comes.
func (d *fastDecoder) null() bool {
	if bytes.HasPrefix(d.b[d.i:], []byte("null")) {
		d.i += 4
		return true
	}
	return false
}

// str reads a string into s; null leaves s as it is (as encoding/json does).
func (d *fastDecoder) str(s *string) bool {
	if d.null() {
		return true
	}
	v, ok := d.plainString()
	if ok {
		*s = string(v)
	}
	return ok
}

// status reads a status, without allocating for the contract's five.
func (d *fastDecoder) status(s *GenerationStatus) bool {
	if d.null() {
		return true
	}
	v, ok := d.plainString()
	if !ok {
		return false
	}
	switch string(v) {
	case string(StatusQueued):
		*s = StatusQueued
	case string(StatusProcessing):
		*s = StatusProcessing
	case string(StatusSucceeded):
		*s = StatusSucceeded
	case string(StatusFailed):
		*s = StatusFailed
	case string(StatusCanceled):
		*s = StatusCanceled
	default:
		*s = GenerationStatus(v)
	}
	return true
}

// number reads a JSON number and returns its text.
func (d *fastDecoder) number() (text []byte, ok bool) {
	b, i := d.b, d.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return nil, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return nil, false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return nil, false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	text = b[d.i:i]
	d.i = i
	return text, true
}

// integer reads an integer of the given bit size into n; set says whether
// it stored one (null stores nothing). A fraction, an exponent or an
// overflow is refused (by ParseInt), as encoding/json refuses them for an
// int field.
func (d *fastDecoder) integer(n *int64, bits int) (ok, set bool) {
	if d.null() {
		return true, false
	}
	text, ok := d.number()
	if !ok {
		return false, false
	}
	v, err := strconv.ParseInt(string(text), 10, bits)
	if err != nil {
		return false, false
	}
	*n = v
	return true, true
}

// float reads a number into f; null leaves f as it is.
func (d *fastDecoder) float(f *float64) bool {
	if d.null() {
		return true
	}
	text, ok := d.number()
	if !ok {
		return false
	}
	v, err := strconv.ParseFloat(string(text), 64)
	if err != nil {
		return false
	}
	*f = v
	return true
}

// time reads a time the way time.Time's UnmarshalJSON does (it is what
// decodes it); null leaves t as it is.
func (d *fastDecoder) time(t interface{ UnmarshalJSON([]byte) error }) bool {
	if d.null() {
		return true
	}
	start := d.i
	if _, ok := d.plainString(); !ok {
		return false
	}
	return t.UnmarshalJSON(d.b[start:d.i]) == nil
}

// skip reads any JSON value and throws it away.
func (d *fastDecoder) skip() bool {
	if d.i >= len(d.b) {
		return false
	}
	switch c := d.b[d.i]; {
	case c == '"':
		return d.skipString()
	case c == '{':
		if d.depth++; d.depth > maxFastDepth {
			return false
		}
		ok := d.object(nil)
		d.depth--
		return ok
	case c == '[':
		if d.depth++; d.depth > maxFastDepth {
			return false
		}
		d.i++
		ok := d.skipArray()
		d.depth--
		return ok
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	default:
		_, ok := d.number()
		return ok
	}
}

func (d *fastDecoder) skipArray() bool {
	if d.consume(']') {
		return true
	}
	for {
		d.ws()
		if !d.skip() {
			return false
		}
		if d.consume(',') {
			continue
		}
		return d.consume(']')
	}
}

func (d *fastDecoder) literal(s string) bool {
	if bytes.HasPrefix(d.b[d.i:], []byte(s)) {
		d.i += len(s)
		return true
	}
	return false
}

// skipString reads a string that may hold escapes (encoding/json takes
// invalid UTF-8 in one, replacing it).
func (d *fastDecoder) skipString() bool {
	b := d.b
	for j := d.i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			d.i = j + 1
			return true
		case c < 0x20:
			return false
		case c == '\\':
			j++
			if j >= len(b) {
				return false
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(b) {
					return false
				}
				for _, h := range b[j+1 : j+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				j += 4
			default:
				return false
			}
		}
	}
	return false
}

// charge is an answer's top-level "id" and "cost" as encoding/json reads
// them into struct{ ID string; Cost *float64 } (the spend guard settles a
// call with them).
type charge struct {
	id      string
	cost    float64
	hasCost bool
}

// decodeCharge reads an answer's charge, and reports whether it could;
// when it could not, the caller asks encoding/json.
func decodeCharge(b []byte) (c charge, ok bool) {
	d := fastDecoder{b: b}
	if !d.object(&c) {
		return charge{}, false
	}
	d.ws()
	if d.i != len(d.b) {
		return charge{}, false
	}
	return c, true
}

func (d *fastDecoder) chargeField(c *charge, key []byte) bool {
	switch string(key) {
	case "id":
		return d.str(&c.id)
	case "cost":
		if d.null() { // a null pointer, as encoding/json leaves it
			c.cost, c.hasCost = 0, false
			return true
		}
		if !d.float(&c.cost) {
			return false
		}
		c.hasCost = true
		return true
	}
	return d.unknown(key, chargeKeys)
}

var chargeKeys = []string{"id", "cost"}
