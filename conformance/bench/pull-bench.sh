#!/usr/bin/env bash
# Pull benchmark: krio against containerd, side by side, in one invocation.
# Not a CI gate and never fails on timing: it prints figures. Run it by hand
# on an otherwise idle machine.
#
#   sudo conformance/bench/pull-bench.sh [OUT_DIR]      (default target/bench)
#
# It
#   - builds krio and krio-testimages in release mode (BENCH_SKIP_BUILD=1
#     uses the existing target/release binaries);
#   - starts the local registry (unless it runs) and pushes two large images
#     (`krio-testimages bench`): bench.krio.test/pull-a:v1, LAYERS layers of
#     random and hex-text files, and bench.krio.test/pull-b:v1, sharing all
#     of pull-a's layers but the last;
#   - starts krio and containerd, each on its own temp root and socket, both
#     sending bench.krio.test to the local registry as a mirror;
#   - N times, for each runtime (alternating which goes first): makes sure
#     the store is cold (no image, no layer, no content blob, no snapshot:
#     checked on disk, not assumed), times `crictl pull` of pull-a (cold),
#     then of pull-b (shared: only its last layer is new), then removes both;
#   - prints the median seconds and MB/s of each, and the krio/containerd
#     ratio of the medians; writes OUT_DIR/pull-bench.tsv (raw) and
#     OUT_DIR/pull-bench.txt (the table);
#   - stops everything it started, also on failure or interruption.
#
# MB/s is compressed bytes fetched per second: the whole image for a cold
# pull, the new layer for a shared-layer pull. The registry serves from the
# page cache after the first pull, for both runtimes alike.
#
# Environment:
#   BENCH_N=5                    repetitions
#   BENCH_PULL_SIZE_MIB=160      uncompressed size of each image
#   BENCH_PULL_LAYERS=8          layers per image
#   BENCH_RUNTIMES="krio containerd"
#   BENCH_SKIP_BUILD=1           use the existing release binaries
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
conf_dir=$(cd "$here/.." && pwd)
repo=$(cd "$here/../.." && pwd)
out_dir=$(mkdir -p "${1:-$repo/target/bench}" && cd "${1:-$repo/target/bench}" && pwd)
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

n=${BENCH_N:-5}
size_mib=${BENCH_PULL_SIZE_MIB:-160}
layers=${BENCH_PULL_LAYERS:-8}
runtimes=${BENCH_RUNTIMES:-krio containerd}
registry_addr=127.0.0.1:5000
prefix=bench.krio.test
image_a=$prefix/pull-a:v1
image_b=$prefix/pull-b:v1

log() { printf 'pull-bench: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

work=$(mktemp -d /tmp/krio-pullbench.XXXXXX)
krio_ep="unix://$work/krio/run/krio.sock"
containerd_ep="unix://$work/containerd.sock"
krio_root="$work/krio/root"
cd_root="$work/containerd/root"
krio_pid=""
containerd_pid=""
registry_started=false

cri() { # cri ENDPOINT crictl-args...
  local ep=$1
  shift
  crictl --runtime-endpoint "$ep" --image-endpoint "$ep" --timeout 600s "$@"
}

# stop_pid PID SECONDS: SIGTERM, then SIGKILL after SECONDS; reaps our child.
stop_pid() {
  local pid=$1 secs=$2
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((secs * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [ -n "$krio_pid" ] && stop_pid "$krio_pid" 10
  [ -n "$containerd_pid" ] && stop_pid "$containerd_pid" 10
  # Nothing runs containers here, but be sure no mount outlives the tree.
  findmnt -rn -o TARGET | { grep "^$work/" || true; } | sort -r | while read -r m; do umount -l "$m"; done
  if $registry_started; then bash "$conf_dir/registry.sh" stop; fi
  for f in krio.log containerd.log; do [ -f "$work/$f" ] && cp "$work/$f" "$out_dir/pull-bench-$f"; done
  rm -rf --one-file-system "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools, registry, binaries, images ------------------------------------------
command -v crictl >/dev/null || bash "$conf_dir/install-tools.sh"
if ! command -v containerd >/dev/null; then
  log "installing Debian's containerd"
  policy=/usr/sbin/policy-rc.d
  added_policy=false
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' >$policy
    chmod 0755 $policy
    added_policy=true
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd >/dev/null
  if $added_policy; then rm -f $policy; fi
fi
if ! bash "$conf_dir/registry.sh" status >/dev/null 2>&1; then
  bash "$conf_dir/registry.sh" start
  registry_started=true
fi
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
  for b in krio krio-testimages; do
    [ -x "$repo/target/release/$b" ] || { log "BENCH_SKIP_BUILD=1 but target/release/$b is missing"; exit 1; }
  done
else
  log "building krio and krio-testimages (release)"
  cargo build --release -q -p krio -p krio-testimages --manifest-path "$repo/Cargo.toml"
fi
log "building and pushing the benchmark images ($size_mib MiB, $layers layers each)"
"$repo/target/release/krio-testimages" bench --registry "$registry_addr" --prefix "$prefix" \
  --size-mib "$size_mib" --layers "$layers" >"$work/images.txt"
# NAME:TAG@DIGEST COMPRESSED_BYTES LAST_LAYER_BYTES, pull-a then pull-b.
bytes_a=$(awk 'NR==1 {print $2}' "$work/images.txt")
bytes_b_new=$(awk 'NR==2 {print $3}' "$work/images.txt")
cp "$work/images.txt" "$out_dir/pull-bench-images.txt"

# --- krio -------------------------------------------------------------------------
mkdir -p "$work/krio" "$work/cni"
printf '[[registry]]\nprefix = "%s"\nlocation = "%s"\n\n[[registry.mirror]]\nlocation = "%s/%s"\ninsecure = true\n' \
  "$prefix" "$prefix" "$registry_addr" "$prefix" >"$work/krio/registries.conf"
cat >"$work/krio/krio.toml" <<TOML
root = "$krio_root"
runroot = "$work/krio/run"
listen = "$work/krio/run/krio.sock"
log_level = "info"

[cni]
conf_dir = "$work/cni"

[image]
registries_conf = "$work/krio/registries.conf"
auth_file = "$work/krio/auth.json"
certs_dir = "$work/krio/certs.d"
TOML

start_krio() {
  setsid "$repo/target/release/krio" --config "$work/krio/krio.toml" --config-dir "$work/krio/krio.d" >"$work/krio.log" 2>&1 &
  krio_pid=$!
  for _ in $(seq 200); do [ -S "$work/krio/run/krio.sock" ] && break; kill -0 "$krio_pid" || break; sleep 0.1; done
  [ -S "$work/krio/run/krio.sock" ] || { log "krio did not start:"; tail -n 30 "$work/krio.log" >&2; exit 1; }
}

# --- containerd -----------------------------------------------------------------------
mkdir -p "$work/containerd-certs.d/$prefix"
cat >"$work/containerd-certs.d/$prefix/hosts.toml" <<TOML
server = "https://$prefix"

[host."http://$registry_addr/v2/$prefix"]
  capabilities = ["pull", "resolve"]
  override_path = true
TOML
cat >"$work/containerd.toml" <<TOML
version = 2
root = "$cd_root"
state = "$work/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
[debug]
  address = "$work/containerd-debug.sock"
  level = "info"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$work/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "$work/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$work/containerd-certs.d"
TOML

start_containerd() {
  setsid containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
  containerd_pid=$!
  for _ in $(seq 200); do
    [ -S "$work/containerd.sock" ] && cri "$containerd_ep" version >/dev/null 2>&1 && break
    kill -0 "$containerd_pid" || break
    sleep 0.1
  done
  cri "$containerd_ep" version >/dev/null 2>&1 || { log "containerd did not start:"; tail -n 30 "$work/containerd.log" >&2; exit 1; }
}

for rt in $runtimes; do
  case $rt in
    krio) start_krio ;;
    containerd) start_containerd ;;
    *) log "unknown runtime $rt"; exit 1 ;;
  esac
done

# --- cold stores ------------------------------------------------------------------------
endpoint_of() { if [ "$1" = krio ]; then echo "$krio_ep"; else echo "$containerd_ep"; fi; }

# count DIR: entries directly in DIR (0 when it does not exist).
count() { if [ -d "$1" ]; then find "$1" -mindepth 1 -maxdepth 1 | wc -l; else echo 0; fi; }

# what_is_left RUNTIME: a description of image data still on disk, or nothing.
what_is_left() {
  local left=""
  if [ "$1" = krio ]; then
    local l b
    l=$(count "$krio_root/images/layers")
    b=$(count "$krio_root/images/blobs/sha256")
    [ "$l" = 0 ] || left+="$l layer dirs "
    [ "$b" = 0 ] || left+="$b blobs "
  else
    local c s
    c=$(count "$cd_root/io.containerd.content.v1.content/blobs/sha256")
    s=$(count "$cd_root/io.containerd.snapshotter.v1.overlayfs/snapshots")
    [ "$c" = 0 ] || left+="$c content blobs "
    [ "$s" = 0 ] || left+="$s snapshots "
  fi
  echo "$left"
}

# make_cold RUNTIME: removes the benchmark images and checks that nothing
# of them is left; containerd's content is pruned when its GC kept some.
make_cold() {
  local rt=$1 ep left
  ep=$(endpoint_of "$rt")
  cri "$ep" rmi "$image_a" >/dev/null 2>&1 || true
  cri "$ep" rmi "$image_b" >/dev/null 2>&1 || true
  left=$(what_is_left "$rt")
  if [ -n "$left" ] && [ "$rt" = containerd ]; then
    local c
    for c in $(ctr --address "$work/containerd.sock" -n k8s.io content ls -q 2>/dev/null); do
      ctr --address "$work/containerd.sock" -n k8s.io content rm "$c" >/dev/null 2>&1 || true
    done
    left=$(what_is_left "$rt")
  fi
  if [ -n "$left" ]; then
    log "$rt: not cold after removing the images: ${left}left"
    exit 1
  fi
}

# timed_pull RUNTIME IMAGE: prints the seconds `crictl pull` took.
timed_pull() {
  local ep start end
  ep=$(endpoint_of "$1")
  start=$(date +%s.%N)
  cri "$ep" pull "$2" >/dev/null || { log "$1: pull of $2 failed"; exit 1; }
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f\n", e - s }'
}

# --- runs ---------------------------------------------------------------------------------
tsv="$out_dir/pull-bench.tsv"
printf 'rep\truntime\tkind\tseconds\tbytes\n' >"$tsv"
read -r -a rts <<<"$runtimes"
for ((rep = 1; rep <= n; rep++)); do
  order=("${rts[@]}")
  if ((rep % 2 == 0)); then # alternate who goes first
    order=()
    for ((i = ${#rts[@]} - 1; i >= 0; i--)); do order+=("${rts[$i]}"); done
  fi
  for rt in "${order[@]}"; do
    make_cold "$rt"
    t_cold=$(timed_pull "$rt" "$image_a")
    # The cold check must see a pulled image, or it looks in the wrong place.
    if [ -z "$(what_is_left "$rt")" ]; then
      log "$rt: no image data found on disk after a pull; the cold check cannot be trusted"
      exit 1
    fi
    t_shared=$(timed_pull "$rt" "$image_b")
    printf '%d\t%s\tcold\t%s\t%s\n' "$rep" "$rt" "$t_cold" "$bytes_a" >>"$tsv"
    printf '%d\t%s\tshared\t%s\t%s\n' "$rep" "$rt" "$t_shared" "$bytes_b_new" >>"$tsv"
    log "rep $rep $rt: cold ${t_cold}s, shared ${t_shared}s"
  done
done
for rt in "${rts[@]}"; do make_cold "$rt"; done

# --- report ---------------------------------------------------------------------------------
python3 - "$tsv" "$size_mib" "$layers" <<'PY' | tee "$out_dir/pull-bench.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
size_mib, layers = sys.argv[2], sys.argv[3]
runtimes = list(dict.fromkeys(r["runtime"] for r in rows))
reps = max(int(r["rep"]) for r in rows)
print(f"pull benchmark: {reps} repetitions; images of {layers} layers, {size_mib} MiB unpacked each")
for kind, what in (("cold", "image A, nothing local"), ("shared", "image B after A: one new layer")):
    sel = [r for r in rows if r["kind"] == kind]
    nbytes = int(sel[0]["bytes"])
    print(f"\n{kind} pull ({what}; {nbytes / 1e6:.1f} MB compressed to fetch)")
    print(f"  {'runtime':<12}{'median s':>10}{'min s':>9}{'max s':>9}{'MB/s':>9}")
    med = {}
    for rt in runtimes:
        secs = [float(r["seconds"]) for r in sel if r["runtime"] == rt]
        med[rt] = statistics.median(secs)
        print(f"  {rt:<12}{med[rt]:>10.3f}{min(secs):>9.3f}{max(secs):>9.3f}{nbytes / 1e6 / med[rt]:>9.1f}")
    if "krio" in med and "containerd" in med:
        print(f"  krio/containerd median time ratio: {med['krio'] / med['containerd']:.2f} (below 1: krio is faster)")
PY
