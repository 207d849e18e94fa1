#!/usr/bin/env bash
# Installs the pinned developer tools into .tmp/bin from the Go module proxy.
# Each tool is rebuilt only when its pinned version changes.
set -o errexit -o nounset -o pipefail

cd "$(dirname "$0")/.."
BIN="$PWD/.tmp/bin"
mkdir -p "$BIN"

# Versions are pinned here; protoc-gen-go follows google.golang.org/protobuf in go.mod.
BUF_VERSION=v1.75.0
GRPCURL_VERSION=v1.9.3
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
PROTOC_GEN_GO_VERSION=$(go list -m -f '{{.Version}}' google.golang.org/protobuf)

install() { # name package version
  local name=$1 pkg=$2 version=$3 stamp="$BIN/.$1.version"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    return
  fi
  echo "installing $name $version" >&2
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "$pkg@$version"
  echo "$version" >"$stamp"
}

want=("$@")
[[ ${#want[@]} -gt 0 ]] || want=(buf protoc-gen-go protoc-gen-go-grpc grpcurl)
for tool in "${want[@]}"; do
  case "$tool" in
    buf) install buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION" ;;
    protoc-gen-go) install protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION" ;;
    protoc-gen-go-grpc) install protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION" ;;
    grpcurl) install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION" ;;
    *) echo "unknown tool $tool" >&2; exit 2 ;;
  esac
done
