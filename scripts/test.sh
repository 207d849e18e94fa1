#!/usr/bin/env bash
# Runs every check CI relies on: generated code current, buf lint, go vet,
# and all tests (unit, and integration with embedded etcd, kfake, real gRPC,
# child processes, grpcurl) with the race detector; then every fuzz target
# for a short time (TEST_FUZZ_TIME, default 10s each; scripts/fuzz.sh runs
# them longer).
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
export PATH="$PWD/.tmp/bin:$PATH"

make --no-print-directory checkgenerate
buf lint
buf format -d --exit-code
go vet ./...
go test -race -count=1 -timeout 45m ./...
./scripts/fuzz.sh "${TEST_FUZZ_TIME:-10s}"
