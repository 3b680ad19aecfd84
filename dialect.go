package safegen

import "fmt"

// Dialect names one vendor's variant of the Generation API contract: how it
// authenticates, how it spells the replay header, how it reports a key reused
// with another body, how long a key may be and which status a create answers.
// The zero value is DialectDefault.
type Dialect string

// The dialects of CONTRACT.md, one per vendor document.
const (
	DialectDefault      Dialect = "default"
	DialectRimp         Dialect = "rimp"
	DialectRealm        Dialect = "realm"
	DialectRelaystation Dialect = "relaystation"
	DialectClipia       Dialect = "clipia"
	DialectPatomic      Dialect = "patomic"
)

// Dialects lists every dialect the SDK knows, in the order of CONTRACT.md.
func Dialects() []Dialect {
	return []Dialect{DialectDefault, DialectRimp, DialectRealm, DialectRelaystation, DialectClipia, DialectPatomic}
}

// ParseDialect returns the dialect named s (case-sensitive, as the constants
// spell it; the empty string is DialectDefault).
func ParseDialect(s string) (Dialect, error) {
	if s == "" {
		return DialectDefault, nil
	}
	for _, d := range Dialects() {
		if string(d) == s {
			return d, nil
		}
	}
	return "", fmt.Errorf("safegen: unknown dialect %q (want one of default, rimp, realm, relaystation, clipia, patomic)", s)
}

// maxKeyLen is the longest Idempotency-Key the dialect's server accepts.
func (d Dialect) maxKeyLen() int {
	if d == DialectRimp {
		return 200
	}
	return 255
}

// usesAPIKeyHeader reports whether the dialect authenticates with X-API-Key
// instead of a bearer token.
func (d Dialect) usesAPIKeyHeader() bool { return d == DialectRealm }
