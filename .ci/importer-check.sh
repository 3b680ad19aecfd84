#!/usr/bin/env bash
# What an importer of the root package inherits: a scratch module that
# imports only github.com/safegen/safegen-go (replaced by this checkout) must
# list in `go list -m all` only what the root package needs at run time, what
# those modules' own go.mod files bring, and testify. Fails on any heavy
# module (the nested modules' dependencies) or on growth past the budget.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
budget=${IMPORTER_MODULE_BUDGET:-13}
scratch=$(mktemp -d /tmp/safegen-importer.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
cat >"$scratch/go.mod" <<MOD
module example.com/importer

go 1.24.0

require github.com/safegen/safegen-go v0.0.0

replace github.com/safegen/safegen-go => $root
MOD
cat >"$scratch/main.go" <<'SRC'
package main

import (
	"fmt"

	"github.com/safegen/safegen-go"
)

func main() { fmt.Println(safegen.Version) }
SRC
cd "$scratch"
GOFLAGS=-mod=mod go mod tidy >/dev/null
mods=$(go list -m all)
echo "$mods" | sed 's/^/  /'
n=$(echo "$mods" | wc -l)
bad=$(echo "$mods" | grep -E 'jackc/|puddle|goleak|standard-webhooks|golang.org/x/sync|golang.org/x/text|opentelemetry|riverqueue|toxiproxy' || true)
if [ -n "$bad" ]; then
  echo "an importer of the root package inherits heavy modules:"; echo "$bad"; exit 1
fi
if [ "$n" -gt "$budget" ]; then
  echo "an importer of the root package lists $n modules, over the budget of $budget"; exit 1
fi
echo "importer module graph: $n modules (budget $budget), none heavy"
