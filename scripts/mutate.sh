#!/usr/bin/env bash
# Mutation testing: plants each bug listed in tools/mutate/mutants.go, one at
# a time, and runs the tests of its package; a bug the tests miss "survives".
# The edit goes through go's -overlay build flag, so the tree is never
# written and nothing needs reverting. See docs/mutation.md.
#
#   scripts/mutate.sh                       # every mutant; fails under 95% per package
#   scripts/mutate.sh -only '^journal-'     # some of them
#   scripts/mutate.sh -only resume -run TestResumeExpiryMargin   # does this test alone kill them?
#   scripts/mutate.sh -list                 # what is planted where
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./tools/mutate "$@"
