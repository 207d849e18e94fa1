#!/usr/bin/env bash
# Runs the chaos test for longer than `make test` does: separate etcd+broker,
# two coordinators and three workers, one of them killed with SIGKILL every
# few seconds. Usage: scripts/chaos.sh [duration, default 5m]
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
CHAOS_DURATION="${1:-5m}" go test -count=1 -run '^TestChaos$' -timeout 2h -v ./e2e/ | grep -E '^(chaos:|--- |ok|FAIL|PASS)'
