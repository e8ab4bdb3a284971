#!/usr/bin/env bash
# Runs every fuzz target of the module for a bounded time each (default 20s), one at a time:
# `go test -fuzz` accepts a single target per package and run. Minimizing a new input is capped
# at 5s (default 60s), so that a run spends its time finding inputs, not shrinking one.
set -euo pipefail
fuzztime=${1:-20s}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
targets=$(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' 2>/dev/null || true)
[ -n "$targets" ] || { echo "fuzz: no fuzz targets"; exit 0; }
for file in $targets; do
	pkg=./$(dirname "$file")
	for fuzz in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | cut -d' ' -f2); do
		echo "fuzz: $pkg $fuzz for $fuzztime"
		go test "$pkg" -run '^$' -fuzz "^${fuzz}\$" -fuzztime "$fuzztime" -fuzzminimizetime 5s
	done
done
