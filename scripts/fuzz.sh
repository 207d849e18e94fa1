#!/usr/bin/env bash
# Runs every Go fuzz target (func FuzzXxx in a _test.go file) for a while,
# one at a time: go test -fuzz takes one target per run. Usage:
# scripts/fuzz.sh [duration per target, default 5m] [target regexp]. FUZZ_PARALLEL
# sets the fuzz workers per run (go's default is GOMAXPROCS). Each target's
# log goes to .tmp/fuzz/<target>.log; a summary line per target gives its
# executions and new interesting inputs. A failing input is written by go
# to <package>/testdata/fuzz/<target>/: commit it as a regression seed once
# fixed. Exits non-zero if any target failed.
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
duration="${1:-5m}"
only="${2:-.}"
parallel=()
if [[ -n "${FUZZ_PARALLEL:-}" ]]; then
	parallel=(-parallel "$FUZZ_PARALLEL")
fi
mkdir -p .tmp/fuzz

# deadline_race reports whether a failed run's log is Go's fuzz coordinator
# race at the end of a -fuzztime duration (go.dev/issue/75804, fixed in Go
# 1.27): the target's only failure is a bare "context deadline exceeded",
# and no failing input was written. A real finding always writes one.
deadline_race() {
	local log="$1"
	! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$log" &&
		[[ "$(grep -A1 -E '^--- FAIL' "$log" | tail -n 1 | sed -E 's/^[[:space:]]+//')" == "context deadline exceeded" ]]
}

# path:func FuzzName, for every fuzz target outside .tmp.
mapfile -t targets < <(grep -rHoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' --exclude-dir=.tmp . | sed 's/:func /:/' | sort)
failed=()
for t in "${targets[@]}"; do
	file="${t%%:*}"
	name="${t##*:}"
	[[ "$name" =~ $only ]] || continue
	pkg="./$(dirname "${file#./}")"
	log=".tmp/fuzz/$name.log"
	set +o errexit
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$duration" "${parallel[@]}" "$pkg" >"$log" 2>&1
	status=$?
	set -o errexit
	# The last progress line, without its rate of the last 3s.
	last="$(grep -E '^fuzz: elapsed: .*execs:' "$log" | tail -n 1 | sed -E 's/^fuzz: //; s/ \([0-9]+\/sec\)//' || true)"
	if [[ -z "$last" ]]; then
		# The time went on running the corpus once: no new inputs tried.
		last="$(grep -E 'gathering baseline coverage' "$log" | tail -n 1 | sed -E 's/^fuzz: //' || true)"
	fi
	if [[ $status -eq 0 ]]; then
		printf 'fuzz: %-20s %-14s ok    %s\n' "$name" "$pkg" "$last"
	elif deadline_race "$log"; then
		printf 'fuzz: %-20s %-14s ok    %s (stopped by go'"'"'s -fuzztime race, go.dev/issue/75804)\n' "$name" "$pkg" "$last"
	else
		printf 'fuzz: %-20s %-14s FAIL  %s (log: %s)\n' "$name" "$pkg" "$last" "$log"
		grep -E -A20 -- '^--- FAIL|Failing input written|panic:' "$log" | head -n 40 || true
		failed+=("$name")
	fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
	echo "fuzz: failed: ${failed[*]}"
	exit 1
fi
