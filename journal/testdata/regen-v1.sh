#!/usr/bin/env bash
# Regenerates journal/testdata/v1.journal and v1.golden.json with the code of
# the last release that wrote journal format version 1 (commit 1d3b33e): it
# checks that release out in a temporary worktree, runs v1gen/main.go there,
# and removes the worktree. Run from anywhere inside the repository:
#
#   journal/testdata/regen-v1.sh [WORKTREE_DIR]   (default: a fresh temp dir)
set -euo pipefail
release=1d3b33e
repo=$(git rev-parse --show-toplevel)
out="$repo/journal/testdata"
tmp=""
if [ -n "${1:-}" ]; then wt=$1; else tmp=$(mktemp -d); wt=$tmp/oldrel; fi
git -C "$repo" worktree add --detach "$wt" "$release" >&2
trap 'git -C "$repo" worktree remove --force "$wt"; [ -z "$tmp" ] || rmdir "$tmp"' EXIT
mkdir -p "$wt/internal/v1gen"
cp "$out/v1gen/main.go" "$wt/internal/v1gen/main.go"
(cd "$wt" && GOFLAGS=-buildvcs=false go run ./internal/v1gen "$out")
echo "wrote $out/v1.journal and $out/v1.golden.json" >&2
