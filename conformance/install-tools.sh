#!/usr/bin/env bash
# Installs what krio's conformance runs need on a Debian 12 host:
#   - Debian packages: the local registry (with apache2-utils for htpasswd
#     and openssl for the auth and TLS registry tests), busybox (for the test images),
#     CNI plugins, runc, crun, iptables and a C toolchain;
#   - crictl, critest and ginkgo from cri-tools $CRI_TOOLS_VERSION, built with
#     the Go toolchain from conformance/critest-module (go.mod + go.sum pin
#     every dependency), installed into $BIN_DIR (default /usr/local/bin).
#
# Idempotent and fast when everything is present: apt is only consulted when
# a package is missing, and a Go tool is only rebuilt when its version output
# does not name $CRI_TOOLS_VERSION.
#
# Usage: conformance/install-tools.sh        (as root)
set -euo pipefail

CRI_TOOLS_VERSION=v1.37.0
BIN_DIR=${BIN_DIR:-/usr/local/bin}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODULE_DIR="$HERE/critest-module"
export PATH="/usr/local/go/bin:$PATH"

installed=()

log() { printf 'install-tools: %s\n' "$*" >&2; }

# --- Debian packages ---------------------------------------------------------
packages=(docker-registry apache2-utils openssl busybox containernetworking-plugins runc crun iptables iproute2 iputils-ping curl util-linux gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    # Keep package maintainer scripts from starting services (the Debian
    # docker-registry service would take port 5000); registry.sh runs the
    # registry itself. Only add the policy file when none exists.
    policy=/usr/sbin/policy-rc.d
    added_policy=false
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        added_policy=true
    fi
    cleanup_policy() { if [[ $added_policy == true ]]; then rm -f "$policy"; fi; }
    trap cleanup_policy EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    cleanup_policy
    trap - EXIT
    installed+=("${missing[@]}")
fi

# --- Go tools ----------------------------------------------------------------
command -v go >/dev/null || { log "go not found (expected /usr/local/go/bin/go)"; exit 1; }

# has_version BINARY ARGS...: true when BINARY exists and its version output
# names $CRI_TOOLS_VERSION (with or without the leading v).
has_version() {
    local bin=$1
    shift
    [[ -x $bin ]] || return 1
    local out
    # Captured first: grep -q closing the pipe early would SIGPIPE the tool
    # and, under pipefail, read as "not installed".
    out=$("$bin" "$@" 2>/dev/null) || true
    grep -Eq "(^|[^0-9.])v?${CRI_TOOLS_VERSION#v}([^0-9.]|$)" <<<"$out"
}

ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION"
build_dir=$(mktemp -d)
trap 'rm -rf "$build_dir"' EXIT

if ! has_version "$BIN_DIR/crictl" --version; then
    log "building crictl $CRI_TOOLS_VERSION"
    (cd "$MODULE_DIR" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$build_dir/crictl" sigs.k8s.io/cri-tools/cmd/crictl)
    install -m 0755 "$build_dir/crictl" "$BIN_DIR/crictl"
    installed+=("crictl $CRI_TOOLS_VERSION")
fi

if ! has_version "$BIN_DIR/critest" -version; then
    log "building critest $CRI_TOOLS_VERSION"
    (cd "$MODULE_DIR" && CGO_ENABLED=0 go test -c -trimpath -ldflags "$ldflags" -o "$build_dir/critest" sigs.k8s.io/cri-tools/cmd/critest)
    install -m 0755 "$build_dir/critest" "$BIN_DIR/critest"
    installed+=("critest $CRI_TOOLS_VERSION")
fi

# ginkgo runs `critest -parallel N`; use the version cri-tools pins.
ginkgo_version=$(cd "$MODULE_DIR" && go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)
if ! [[ -x $BIN_DIR/ginkgo ]] || ! "$BIN_DIR/ginkgo" version 2>/dev/null | grep -q "${ginkgo_version#v}"; then
    log "building ginkgo $ginkgo_version"
    (cd "$MODULE_DIR" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$build_dir/ginkgo" github.com/onsi/ginkgo/v2/ginkgo)
    install -m 0755 "$build_dir/ginkgo" "$BIN_DIR/ginkgo"
    installed+=("ginkgo $ginkgo_version")
fi

if ((${#installed[@]})); then
    for item in "${installed[@]}"; do echo "installed: $item"; done
else
    echo "install-tools: everything already installed"
fi
