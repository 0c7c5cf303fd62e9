#!/usr/bin/env bash
# Runs the CRI conformance suite (critest, cri-tools v1.37.0) against krio:
#   - starts the local registry and pushes the offline-built test images;
#   - starts krio on its own temp root, run dir and socket, with a test CNI
#     bridge network and registry mirrors that send registry.k8s.io,
#     k8s.gcr.io, gcr.io and public.ecr.aws to the local registry (so critest
#     runs with upstream image names unchanged);
#   - runs critest once with SPDY streaming and once with the WebSocket flags;
#   - writes junit-spdy.xml and junit-websocket.xml into REPORT_DIR;
#   - prints `critest: N passed, M failed, K skipped` with the failing specs,
#     and fails when a spec outside conformance/critest-baseline.tsv fails;
#   - stops everything it started, also on failure or interruption.
#
#   sudo conformance/run-critest.sh [REPORT_DIR]
# Environment: CRITEST_FOCUS / CRITEST_SKIP (ginkgo regexps) narrow the run;
# CRITEST_MODES ("spdy websocket" by default) picks the runs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
report_dir=$(mkdir -p "${1:-$repo/target/critest}" && cd "${1:-$repo/target/critest}" && pwd)
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
modes=${CRITEST_MODES:-spdy websocket}
registry_addr=127.0.0.1:5000

log() { printf 'run-critest: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

work=$(mktemp -d /tmp/krio-critest.XXXXXX)
# Traversable: runc reaches user-namespaced pods' root filesystems as the
# pods' unprivileged root.
chmod 0711 "$work"
bridge="krct$((RANDOM % 10000))"
krio_pid=""
registry_started=false

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e   # best effort: every step runs even if an earlier one fails
  # Pods a failed spec left behind: remove them through krio while it runs.
  if [ -n "$krio_pid" ] && kill -0 "$krio_pid" 2>/dev/null; then
    crictl --runtime-endpoint "unix://$work/run/krio.sock" rmp --all --force >/dev/null 2>&1
  fi
  if [ -n "$krio_pid" ] && kill -0 "$krio_pid" 2>/dev/null; then
    kill -TERM "$krio_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$krio_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$krio_pid" 2>/dev/null || true
  fi
  # Any pod infra process or monitor still naming the temp tree.
  for pid in $(pgrep -f -- "$work/" 2>/dev/null); do
    [ "$pid" != "$$" ] && kill -KILL "$pid" 2>/dev/null
  done
  # Anything krio or its containers left mounted under the temp tree.
  findmnt -rn -o TARGET | { grep "^$work/" || true; } | sort -r | while read -r m; do umount -l "$m"; done
  ip link del "$bridge" 2>/dev/null || true
  if $registry_started; then bash "$here/registry.sh" stop || true; fi
  if [ -f "$work/krio.log" ]; then cp "$work/krio.log" "$report_dir/krio.log"; fi
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash "$here/install-tools.sh"

if ! bash "$here/registry.sh" status >/dev/null 2>&1; then
  bash "$here/registry.sh" start
  registry_started=true
fi

log "building krio and the test images"
cargo build --locked -q -p krio -p krio-runtime -p krio-testimages --bins --manifest-path "$repo/Cargo.toml"
"$repo/target/debug/krio-testimages" build --registry "$registry_addr" >"$report_dir/images.txt"
log "pushed $(wc -l <"$report_dir/images.txt") images"

# krio's configuration for the run: everything under $work.
mkdir -p "$work/cni" "$work/krio.d"
cat >"$work/cni/10-critest.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "critest",
  "plugins": [
    {
      "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": { "type": "host-local", "dataDir": "$work/ipam",
                "routes": [{ "dst": "0.0.0.0/0" }],
                "ranges": [[{ "subnet": "10.89.0.0/16" }]] }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "loopback" }
  ]
}
CNI
{
  for upstream in registry.k8s.io k8s.gcr.io gcr.io public.ecr.aws; do
    printf '[[registry]]\nprefix = "%s"\nlocation = "%s"\n\n[[registry.mirror]]\nlocation = "%s/%s"\ninsecure = true\n\n' \
      "$upstream" "$upstream" "$registry_addr" "$upstream"
  done
} >"$work/registries.conf"
cat >"$work/krio.toml" <<TOML
root = "$work/root"
runroot = "$work/run"
listen = "$work/run/krio.sock"
log_level = "debug"

[cni]
conf_dir = "$work/cni"

[image]
registries_conf = "$work/registries.conf"
auth_file = "$work/auth.json"
TOML

"$repo/target/debug/krio" --config "$work/krio.toml" --config-dir "$work/krio.d" >"$work/krio.log" 2>&1 &
krio_pid=$!
for _ in $(seq 200); do [ -S "$work/run/krio.sock" ] && break; kill -0 "$krio_pid" || break; sleep 0.1; done
[ -S "$work/run/krio.sock" ] || { log "krio did not start:"; tail -n 30 "$work/krio.log" >&2; exit 1; }
log "krio is serving on $work/run/krio.sock"

endpoint="unix://$work/run/krio.sock"
for mode in $modes; do
  flags=()
  [ "$mode" = websocket ] && flags=(--websocket-exec --websocket-attach --websocket-portforward)
  focus=()
  [ -n "${CRITEST_FOCUS:-}" ] && focus=(--ginkgo.focus "$CRITEST_FOCUS")
  skip=()
  [ -n "${CRITEST_SKIP:-}" ] && skip=(--ginkgo.skip "$CRITEST_SKIP")
  log "critest ($mode)"
  start=$(date +%s)
  # critest's exit status is judged against the baseline below, not here.
  timeout --kill-after=30 1800 critest \
    --runtime-endpoint "$endpoint" --image-endpoint "$endpoint" \
    "${flags[@]}" "${focus[@]}" "${skip[@]}" \
    --ginkgo.no-color --ginkgo.junit-report="$report_dir/junit-$mode.xml" \
    --ginkgo.timeout=30m >"$report_dir/critest-$mode.log" 2>&1 || true
  log "critest ($mode) took $(( $(date +%s) - start ))s"
  [ -s "$report_dir/junit-$mode.xml" ] || { log "critest wrote no report:"; tail -n 40 "$report_dir/critest-$mode.log" >&2; exit 1; }
done

reports=()
for mode in $modes; do reports+=("$mode=$report_dir/junit-$mode.xml"); done
python3 "$here/critest_report.py" --baseline "$here/critest-baseline.tsv" "${reports[@]}"
