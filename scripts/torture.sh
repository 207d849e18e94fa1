#!/usr/bin/env bash
# Runs the randomized operations test (e2e TestTorture) for longer than
# `make test` does: random job operations (submit, update, stop, resume,
# reset, delete and resubmit) while coordinators and workers are killed and
# frozen and the broker goes down, then a check of every job incarnation
# against the ground truth. Usage: scripts/torture.sh [duration, default 30m]
# [seed]. TORTURE_RATE (records/s per source topic) and TORTURE_SKIP
# (operations to leave out, e.g. delete,reset) pass through. The full log
# goes to .tmp/torture-<time>.log; on failure it holds the seed, the
# anomalies, every job incarnation and the operation history, and names the
# directory where the processes' logs are kept.
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
duration="${1:-30m}"
if [[ $# -ge 2 ]]; then
	export TORTURE_SEED="$2"
fi
mkdir -p .tmp
log=".tmp/torture-$(date +%Y%m%d-%H%M%S).log"
echo "torture: $duration, full log in $log"
set +o errexit
TORTURE_DURATION="$duration" go test -count=1 -run '^TestTorture$' -timeout 6h -v ./e2e/ >"$log" 2>&1
status=$?
set -o errexit
grep -E '^(torture:|--- |ok|FAIL|PASS)' "$log" || true
if [[ $status -ne 0 ]]; then
	echo "torture: failed; anomalies, incarnations and the operation history are in $log"
fi
exit $status
