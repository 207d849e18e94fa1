#!/usr/bin/env bash
# Runs every check CI relies on: generated code current, buf lint, go vet,
# and all tests (unit, and integration with embedded etcd, kfake, real gRPC,
# child processes, grpcurl) with the race detector.
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
export PATH="$PWD/.tmp/bin:$PATH"

make --no-print-directory checkgenerate
buf lint
buf format -d --exit-code
go vet ./...
go test -race -count=1 -timeout 45m ./...
