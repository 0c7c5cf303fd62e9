#!/usr/bin/env bash
# Interoperability check of krio-streaming against the real Kubernetes
# client (client-go's SPDY and WebSocket executors, its SPDY and
# SPDY-over-WebSocket port-forwarders): builds the echo_server example and
# this Go client, runs both, and prints one PASS/FAIL line per check.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
(cd "$root" && cargo build -q -p krio-streaming --example echo_server)
(cd "$here" && go build -o "$target/krio-streaming-interop" .)
urls="$(mktemp)"
"$target/debug/examples/echo_server" 4 >"$urls" &
server=$!
trap 'kill "$server" 2>/dev/null; rm -f "$urls"' EXIT
for _ in $(seq 50); do [ -s "$urls" ] && break; sleep 0.1; done
"$target/krio-streaming-interop" <"$urls"
