#!/usr/bin/env bash
# Runs every test: vet, unit and integration tests (embedded etcd, kfake,
# real gRPC, child processes, grpcurl) with the race detector.
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
go vet ./...
go test -race -count=1 -timeout 30m ./...
