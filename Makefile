SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help

BIN := $(CURDIR)/.tmp/bin
export PATH := $(BIN):$(PATH)
GO_TEST_FLAGS ?=
FUZZ_TIME ?= 5m

.PHONY: help
help: ## Describe the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build bin/sluice
	go build -o bin/sluice ./cmd/sluice

.PHONY: demo
demo: build ## Run sluice dev --demo: embedded etcd + Kafka broker, workers, a demo job
	./bin/sluice dev --demo --data-dir .tmp/dev

.PHONY: tools
tools: ## Install the pinned tools (buf, protoc plugins, grpcurl) into .tmp/bin
	./scripts/tools.sh

.PHONY: test
test: tools ## Run every check and test: generated code, buf lint, vet, unit + integration (-race)
	./scripts/test.sh

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZ_TIME each (default 5m), one at a time; FUZZ_PARALLEL workers
	./scripts/fuzz.sh $(FUZZ_TIME)

.PHONY: test-short
test-short: ## Unit tests only
	go test -short ./...

.PHONY: bench
bench: build ## One table, side by side in one run: backlog vs bare consumers, RSS, sustained rate, overhead at 64 to 10,000 partitions, 1,024-partition throughput (SLUICE_BENCH_QUICK=1: short)
	go build -o $(BIN)/sluice-bench ./cmd/sluice-bench
	$(BIN)/sluice-bench -sluice bin/sluice

.PHONY: bench-go
bench-go: ## Run the Go benchmarks (go test -bench) of every package
	go test -run '^$$' -bench . -benchmem ./...

.PHONY: generate
generate: ## Generate Go code from the protos
	./scripts/tools.sh buf protoc-gen-go protoc-gen-go-grpc
	buf generate
	buf format -w

.PHONY: checkgenerate
checkgenerate: generate ## Fail if generated code is not current
	@if [[ -n "$$(git status --porcelain -- proto)" ]]; then git status --porcelain -- proto; echo "generated code is stale: run make generate"; exit 1; fi

.PHONY: lint
lint: ## go vet, gofmt and buf lint
	./scripts/tools.sh buf
	go vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	buf lint
	buf format -d --exit-code
