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

# Debian packages some tests need, installed with apt-get only where the
# command is missing: chromium (the web UI's e2e test drives it headless),
# openssl (the deploy test runs the setup scripts, which make certificates)
# and iproute2 (`ip`: the multi-host test's network namespaces). Without root
# (and no password-less sudo) it says how to install them instead of failing;
# the tests that need them fail under CI=true without them.
debian() { # debian PACKAGE COMMAND...: install PACKAGE unless a COMMAND exists
  local pkg=$1 c
  shift
  for c in "$@"; do
    command -v "$c" >/dev/null && return
  done
  if ! command -v apt-get >/dev/null; then
    echo "$1 not found and no apt-get: install $pkg for the tests" >&2
    return
  fi
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! sudo -n true 2>/dev/null; then
      echo "$1 not found: run 'sudo apt-get install $pkg' for the tests" >&2
      return
    fi
    sudo=(sudo -n)
  fi
  echo "installing $pkg with apt-get" >&2
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg"
}

want=("$@")
[[ ${#want[@]} -gt 0 ]] || want=(buf protoc-gen-go protoc-gen-go-grpc grpcurl chromium openssl iproute2)
for tool in "${want[@]}"; do
  case "$tool" in
    buf) install buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION" ;;
    protoc-gen-go) install protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION" ;;
    protoc-gen-go-grpc) install protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION" ;;
    grpcurl) install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION" ;;
    chromium) debian chromium chromium chromium-browser google-chrome google-chrome-stable ;;
    openssl) debian openssl openssl ;;
    iproute2) debian iproute2 ip ;;
    *) echo "unknown tool $tool" >&2; exit 2 ;;
  esac
done
