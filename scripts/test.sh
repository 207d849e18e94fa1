#!/usr/bin/env bash
# Runs every check CI relies on: generated code current, buf lint, go vet,
# and all tests (unit, and integration with embedded etcd, kfake, real gRPC,
# child processes, grpcurl) with the race detector; then every fuzz target
# for a while (TEST_FUZZ_TIME, default 5000 inputs each: a count, not a
# duration, since Go before 1.27 can fail a target whose -fuzztime duration
# ends while a worker is busy, go.dev/issue/75804; scripts/fuzz.sh runs them
# longer).
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
export PATH="$PWD/.tmp/bin:$PATH"

make --no-print-directory checkgenerate
buf lint
buf format -d --exit-code
go vet ./...
go test -race -count=1 -timeout 45m ./...
./scripts/fuzz.sh "${TEST_FUZZ_TIME:-5000x}"
