#!/usr/bin/env bash
# Runs benchmarks in interleaved rounds and compares them with benchstat.
#
# go test -count N runs each sub-benchmark N times in a row, so a machine
# that drifts (a noisy neighbour, a CPU that warms up) favours whichever
# comes first. This builds the test binary once and runs every sub-benchmark
# once per round instead, ROUNDS times, so all of them see the same drift.
#
#   scripts/bench.sh '^BenchmarkCreate$'                 # 10 rounds, 3000 creates each
#   ROUNDS=6 BENCHTIME=8x scripts/bench.sh '^BenchmarkDownloadStatic$'
#   OUT=create.txt COL=/impl scripts/bench.sh '^BenchmarkCreateCPU$'
#
# PKG picks the package (default .), COL the benchstat column (default /impl),
# OUT keeps the raw results (default: a temporary file).
set -euo pipefail
cd "$(dirname "$0")/.."
pattern=${1:?usage: scripts/bench.sh BENCHMARK-REGEXP}
rounds=${ROUNDS:-10}
benchtime=${BENCHTIME:-3000x}
pkg=${PKG:-.}
col=${COL:-/impl}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=${OUT:-$tmp/bench.txt}
go test -c -o "$tmp/bench.test" "$pkg"
: >"$out"
for i in $(seq "$rounds"); do
  echo "round $i/$rounds" >&2
  (cd "$pkg" && "$tmp/bench.test" -test.run '^$' -test.bench "$pattern" -test.benchtime "$benchtime" -test.benchmem) | grep -E '^(Benchmark|goos|goarch|pkg|cpu)' >>"$out"
done
if command -v benchstat >/dev/null; then
  benchstat -col "$col" "$out"
else
  go run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da -col "$col" "$out"
fi
