#!/usr/bin/env bash
# Benchmarks krio against containerd, side by side, in one invocation. Not a
# CI gate: run it by hand on an otherwise idle machine.
#
#   sudo conformance/bench/run-bench.sh [OUT_DIR]        (default target/bench)
#
# It
#   - installs what it needs: conformance/install-tools.sh (crictl, critest,
#     CNI plugins, runc, the registry) and Debian's containerd 1.6 (never left
#     running as a service: this script starts its own instance);
#   - starts the local registry (unless it runs) and pushes the test images;
#   - builds krio and krio-testimages in release mode and podbench (Go);
#   - starts krio and containerd, each on its own temp root, state dir and
#     socket, with the same CNI conflist (bridge + host-local + portmap +
#     loopback) except for the bridge name, subnet and IPAM data dir, and with
#     registry mirrors sending registry.k8s.io, k8s.gcr.io, gcr.io and
#     public.ecr.aws to the local registry;
#   - runs, against each runtime: the pod lifecycle benchmark, the container
#     lifecycle benchmark, the monitor/shim memory measurement (podbench/) and
#     `critest -benchmark`;
#   - prints median and p90 per operation for both runtimes with the
#     krio/containerd ratio (summarize.py) and writes OUT_DIR/bench.json;
#   - stops everything it started, also on failure or interruption.
#
# Environment:
#   BENCH_N=20               iterations per benchmark (critest too)
#   BENCH_K=10               containers kept running for the memory figure
#   BENCH_CRITEST=1          0 skips critest -benchmark
#   BENCH_CRITEST_TIMEOUT=900  seconds allowed per critest -benchmark run
#   BENCH_STOP_TIMEOUT=0     StopContainer timeout (sleep as PID 1 ignores SIGTERM)
#   BENCH_RUNTIMES="krio containerd"  which runtimes to measure
#   BENCH_SKIP_BUILD=1       use the existing target/release/{krio,krio-testimages}
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
conf_dir=$(cd "$here/.." && pwd)
repo=$(cd "$here/../.." && pwd)
out_dir=$(mkdir -p "${1:-$repo/target/bench}" && cd "${1:-$repo/target/bench}" && pwd)
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

n=${BENCH_N:-20}
k=${BENCH_K:-10}
run_critest=${BENCH_CRITEST:-1}
critest_timeout=${BENCH_CRITEST_TIMEOUT:-900}
stop_timeout=${BENCH_STOP_TIMEOUT:-0}
runtimes=${BENCH_RUNTIMES:-krio containerd}
registry_addr=127.0.0.1:5000
krio_subnet=10.190.0.0/16
containerd_subnet=10.191.0.0/16
test_image=registry.k8s.io/e2e-test-images/busybox:1.29-2
pause_image=registry.k8s.io/pause:3.9

log() { printf 'run-bench: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

work=$(mktemp -d /tmp/krio-bench.XXXXXX)
suffix=$((RANDOM % 10000))
netname="kbench$suffix"       # CNI network name, the same for both runtimes
krio_bridge="kbk$suffix"
containerd_bridge="kbc$suffix"
krio_ep="unix://$work/krio/run/krio.sock"
containerd_ep="unix://$work/containerd.sock"
krio_pid=""
containerd_pid=""
registry_started=false
run_containerd_created=false
[ -e /run/containerd ] || run_containerd_created=true
netns_dir_created=false
[ -e /var/run/netns ] || netns_dir_created=true
netns_before=$(ls /var/run/netns 2>/dev/null || true)
k8s_cgroup_created=false # containerd's default cgroup parent (cgroupfs): /k8s.io
ls -d /sys/fs/cgroup/*/k8s.io >/dev/null 2>&1 || k8s_cgroup_created=true

# run_child CMD...: runs a long step in the background and waits for it, so
# an INT or TERM reaches our trap at once (bash defers traps while a
# foreground child runs, and drops SIGINT when that child handles it);
# the clean-up then stops the child first.
child_pid=""
run_child() {
  local rc=0
  "$@" &
  child_pid=$!
  wait "$child_pid" || rc=$?
  child_pid=""
  return $rc
}

cri() { # cri ENDPOINT crictl-args...
  local ep=$1
  shift
  crictl --runtime-endpoint "$ep" --image-endpoint "$ep" --timeout 120s "$@"
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

# pids_under_work: processes whose root or command line points into $work
# (container processes, containerd shims, krio monitors), never anything else.
pids_under_work() {
  local p root
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    root=$(readlink "/proc/$p/root" 2>/dev/null) || continue
    if [[ $root == "$work"/* ]] || tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$work/"; then
      echo "$p"
    fi
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e # best effort: every step runs even if an earlier one fails
  local netns_paths=()
  # A running podbench removes its own pods on SIGTERM; critest is stopped.
  [ -n "$child_pid" ] && stop_pid "$child_pid" 60
  # Remove every pod (and so container) the benchmarks or critest left, via
  # the CRI so the CNI DEL runs and releases IPs and iptables rules.
  if [ -n "$containerd_pid" ] && kill -0 "$containerd_pid" 2>/dev/null; then
    for id in $(cri "$containerd_ep" pods -q 2>/dev/null); do
      p=$(cri "$containerd_ep" inspectp "$id" 2>/dev/null | python3 -c '
import json,sys
d=json.load(sys.stdin)
for ns in d.get("info",{}).get("runtimeSpec",{}).get("linux",{}).get("namespaces",[]):
    if ns.get("type")=="network" and ns.get("path"): print(ns["path"])' 2>/dev/null)
      [ -n "$p" ] && netns_paths+=("$p")
    done
    timeout 180 crictl --runtime-endpoint "$containerd_ep" --image-endpoint "$containerd_ep" --timeout 120s rmp -fa >/dev/null 2>&1
  fi
  if [ -n "$krio_pid" ] && kill -0 "$krio_pid" 2>/dev/null; then
    timeout 180 crictl --runtime-endpoint "$krio_ep" --image-endpoint "$krio_ep" --timeout 120s rmp -fa >/dev/null 2>&1
  fi
  [ -n "$krio_pid" ] && stop_pid "$krio_pid" 10
  [ -n "$containerd_pid" ] && stop_pid "$containerd_pid" 10
  # Whatever outlived the CRI clean-up (a daemon that died first): containers
  # in runc state dirs under the temp tree, then shims, monitors and
  # container processes, then containerd's cgroups when this run made them.
  find "$work" -xdev -maxdepth 6 -name state.json 2>/dev/null | while read -r f; do
    d=$(dirname "$f")
    runc --root "$(dirname "$d")" delete -f "$(basename "$d")" >/dev/null 2>&1
  done
  for p in $(pids_under_work); do kill -KILL "$p" 2>/dev/null; done
  if $k8s_cgroup_created; then
    for p in $(cat /sys/fs/cgroup/*/k8s.io/*/cgroup.procs 2>/dev/null | sort -u); do kill -KILL "$p" 2>/dev/null; done
  fi
  sleep 0.5
  if $k8s_cgroup_created; then
    for c in /sys/fs/cgroup/*/k8s.io; do
      [ -d "$c" ] || continue
      for d in "$c"/*/; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
      rmdir "$c" 2>/dev/null
    done
  fi
  # Mounts under the temp tree (overlay rootfs, shm, pinned namespaces) and
  # containerd's network namespaces (it pins them in /var/run/netns).
  findmnt -rn -o TARGET | { grep "^$work/" || true; } | sort -r | while read -r m; do umount -l "$m"; done
  # containerd's pinned netns of pods it could not remove, and those of a
  # containerd that died first: cni-* entries that appeared during the run.
  for f in /var/run/netns/cni-*; do
    [ -e "$f" ] || continue
    grep -qxF "${f##*/}" <<<"$netns_before" || netns_paths+=("$f")
  done
  for p in "${netns_paths[@]}"; do
    [ -e "$p" ] || continue
    umount -l "$p" 2>/dev/null
    rm -f "$p"
  done
  # iptables rules of our CNI network (comment `name: "kbenchNNNN"`) that a
  # failed or interrupted DEL left: the POSTROUTING jumps, then the chains.
  local rules chains
  rules=$(iptables-save -t nat 2>/dev/null | grep -F "name: \\\"$netname\\\"")
  chains=$( (sed -n 's/^-A \(CNI-[0-9a-f]*\) .*/\1/p' <<<"$rules"
    sed -n 's/^-A POSTROUTING .* -j \(CNI-[0-9a-f]*\).*/\1/p' <<<"$rules") | sort -u)
  grep '^-A POSTROUTING' <<<"$rules" | while read -r rule; do
    eval "iptables -t nat ${rule/#-A/-D}" 2>/dev/null
  done
  for chain in $chains; do iptables -t nat -F "$chain" 2>/dev/null; iptables -t nat -X "$chain" 2>/dev/null; done
  if $netns_dir_created; then rmdir /var/run/netns 2>/dev/null; fi
  ip link del "$krio_bridge" 2>/dev/null
  ip link del "$containerd_bridge" 2>/dev/null
  if $run_containerd_created; then
    rm -f /run/containerd/s/* # shim sockets (only ours: the dir is ours)
    rmdir /run/containerd/s /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd 2>/dev/null
  fi
  if $registry_started; then bash "$conf_dir/registry.sh" stop; fi
  for f in krio.log containerd.log; do [ -f "$work/$f" ] && cp "$work/$f" "$out_dir/$f"; done
  rm -rf --one-file-system "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for s in "$krio_subnet" "$containerd_subnet"; do
  if [ -n "$(ip route show "$s" 2>/dev/null)" ]; then
    log "subnet $s is already routed on this host (another run-bench.sh?)"
    exit 1
  fi
done

# --- tools ---------------------------------------------------------------------
bash "$conf_dir/install-tools.sh"
if ! dpkg-query -W -f='${Status}' containerd 2>/dev/null | grep -q 'install ok installed'; then
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
  # The package enables its service for the next boot; this benchmark runs
  # its own instance, so keep the system one off.
  if command -v systemctl >/dev/null; then
    systemctl disable containerd.service >/dev/null 2>&1 || true
    systemctl stop containerd.service >/dev/null 2>&1 || true
  fi
fi

if ! bash "$conf_dir/registry.sh" status >/dev/null 2>&1; then
  bash "$conf_dir/registry.sh" start
  registry_started=true
fi

if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
  for b in krio krio-testimages; do
    [ -x "$repo/target/release/$b" ] || { log "BENCH_SKIP_BUILD=1 but target/release/$b is missing"; exit 1; }
  done
  log "using the existing target/release binaries; building podbench"
else
  log "building krio, krio-monitor and krio-testimages (release) and podbench"
  # krio-monitor is a binary of krio-runtime; krio finds it beside itself.
  cargo build --release --locked -q -p krio -p krio-runtime -p krio-testimages --manifest-path "$repo/Cargo.toml"
fi
"$repo/target/release/krio-testimages" build --registry "$registry_addr" >"$out_dir/images.txt"
log "pushed $(wc -l <"$out_dir/images.txt") images"
(cd "$here/podbench" && CGO_ENABLED=0 go build -trimpath -o "$work/podbench" .)

# --- CNI: one conflist, instantiated per runtime ----------------------------------
write_cni() { # write_cni DIR BRIDGE SUBNET IPAM_DIR
  mkdir -p "$1"
  cat >"$1/10-bench.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "$netname",
  "plugins": [
    {
      "type": "bridge", "bridge": "$2", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": { "type": "host-local", "dataDir": "$4",
                "routes": [{ "dst": "0.0.0.0/0" }],
                "ranges": [[{ "subnet": "$3" }]] }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "loopback" }
  ]
}
CNI
}
write_cni "$work/cni-krio" "$krio_bridge" "$krio_subnet" "$work/ipam-krio"
write_cni "$work/cni-containerd" "$containerd_bridge" "$containerd_subnet" "$work/ipam-containerd"
cni_bin=/usr/lib/cni
[ -x /opt/cni/bin/bridge ] && cni_bin=/opt/cni/bin

# --- krio --------------------------------------------------------------------------
mkdir -p "$work/krio/krio.d"
{
  for upstream in registry.k8s.io k8s.gcr.io gcr.io public.ecr.aws; do
    printf '[[registry]]\nprefix = "%s"\nlocation = "%s"\n\n[[registry.mirror]]\nlocation = "%s/%s"\ninsecure = true\n\n' \
      "$upstream" "$upstream" "$registry_addr" "$upstream"
  done
} >"$work/krio/registries.conf"
cat >"$work/krio/krio.toml" <<TOML
root = "$work/krio/root"
runroot = "$work/krio/run"
listen = "$work/krio/run/krio.sock"
log_level = "info"

[cni]
conf_dir = "$work/cni-krio"

[image]
registries_conf = "$work/krio/registries.conf"
auth_file = "$work/krio/auth.json"
TOML

start_krio() {
  # Own session: a Ctrl-C at the terminal must not stop the daemons before
  # the clean-up has removed their pods through the CRI.
  setsid "$repo/target/release/krio" --config "$work/krio/krio.toml" --config-dir "$work/krio/krio.d" >"$work/krio.log" 2>&1 &
  krio_pid=$!
  for _ in $(seq 200); do [ -S "$work/krio/run/krio.sock" ] && break; kill -0 "$krio_pid" || break; sleep 0.1; done
  [ -S "$work/krio/run/krio.sock" ] || { log "krio did not start:"; tail -n 30 "$work/krio.log" >&2; exit 1; }
  log "krio is serving on $krio_ep"
}

# --- containerd -------------------------------------------------------------------
# Registry mirrors, containerd style: a hosts.toml per upstream registry.
for upstream in registry.k8s.io k8s.gcr.io gcr.io public.ecr.aws; do
  mkdir -p "$work/containerd-certs.d/$upstream"
  cat >"$work/containerd-certs.d/$upstream/hosts.toml" <<TOML
server = "https://$upstream"

[host."http://$registry_addr/v2/$upstream"]
  capabilities = ["pull", "resolve"]
  override_path = true
TOML
done
cat >"$work/containerd.toml" <<TOML
version = 2
root = "$work/containerd/root"
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
  sandbox_image = "$pause_image"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # Without CAP_SYS_RESOURCE (as on these machines) runc cannot lower the
  # pause container's oom_score_adj to -998 and every RunPodSandbox fails
  # ("can't get final child's PID from pipe"); keep the current value.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
        Root = "$work/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$work/cni-containerd"
    max_conf_num = 1
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
  log "containerd is serving on $containerd_ep"
  # Checks the mirrors, and takes the pause image pull out of the first pod.
  if ! cri "$containerd_ep" pull "$pause_image" >/dev/null; then
    log "containerd could not pull $pause_image through the mirror:"
    grep -i 'level=error' "$work/containerd.log" | tail -n 10 >&2
    exit 1
  fi
}

for rt in $runtimes; do
  case $rt in
    krio) start_krio ;;
    containerd) start_containerd ;;
    *) log "unknown runtime $rt"; exit 1 ;;
  esac
done

# --- meta ---------------------------------------------------------------------------
python3 - "$out_dir/meta.json" <<PY
import json, subprocess, sys, time
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip().split("\n")[0]
    except Exception as e:
        return ""
json.dump({
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "n": $n, "k": $k, "stop_timeout": $stop_timeout,
    "runtimes": "$runtimes".split(),
    "krio_commit": sh("git -C '$repo' rev-parse --short HEAD"),
    "krio_version": sh("'$repo/target/release/krio' version"),
    "containerd_version": sh("containerd --version"),
    "runc_version": sh("runc --version"),
    "crictl_version": sh("crictl --version"),
    "kernel": sh("uname -r"),
    "cpus": sh("nproc"),
    "cni_plugins": "$cni_bin",
}, open(sys.argv[1], "w"), indent=2)
PY

# --- podbench --------------------------------------------------------------------------
rm -rf "$out_dir/raw" "$out_dir"/critest-bench-*
mkdir -p "$out_dir/raw"
endpoint_of() { if [ "$1" = krio ]; then echo "$krio_ep"; else echo "$containerd_ep"; fi; }

podbench() { # podbench RUNTIME MODE extra-args...
  local rt=$1 mode=$2
  shift 2
  log "podbench $mode: $rt"
  run_child "$work/podbench" -endpoint "$(endpoint_of "$rt")" -mode "$mode" -n "$n" -image "$test_image" \
    -log-dir "$work/pod-logs-$rt" -stop-timeout "$stop_timeout" "$@" \
    >"$out_dir/raw/$rt-$mode.jsonl" 2>"$out_dir/raw/$rt-$mode.stderr" ||
    log "podbench $mode against $rt exited with $? (see $out_dir/raw/$rt-$mode.stderr)"
}

for mode in pod container; do
  for rt in $runtimes; do podbench "$rt" "$mode"; done
done
for rt in $runtimes; do
  if [ "$rt" = krio ]; then
    podbench krio mem -k "$k" -proc-name krio-monitor -daemon-pid "$krio_pid"
  else
    podbench containerd mem -k "$k" -proc-name containerd-shim-runc-v2 \
      -proc-match "$work/containerd.sock" -daemon-pid "$containerd_pid"
  fi
done

# --- critest -benchmark ------------------------------------------------------------------
if [ "$run_critest" = 1 ]; then
  cat >"$work/critest-params.yaml" <<YAML
podsNumber: $n
podsNumberParallel: 1
podBenchmarkTimeoutSeconds: 300
containersNumber: $n
containersNumberParallel: 1
containerBenchmarkTimeoutSeconds: 300
imagesNumber: $n
imagesNumberParallel: 1
imageBenchmarkTimeoutSeconds: 300
podContainerStartBenchmarkTimeoutSeconds: 60
YAML
  for rt in $runtimes; do
    d="$out_dir/critest-bench-$rt"
    mkdir -p "$d"
    ep=$(endpoint_of "$rt")
    log "critest -benchmark: $rt (at most ${critest_timeout}s)"
    start=$(date +%s)
    # Failures (krio: every RPC not implemented yet) are summarised as n/a.
    run_child timeout --kill-after=30 "$critest_timeout" critest -benchmark \
      --runtime-endpoint "$ep" --image-endpoint "$ep" \
      --benchmarking-params-file "$work/critest-params.yaml" \
      --benchmarking-output-dir "$d" \
      --ginkgo.no-color --ginkgo.json-report="$d/report.json" \
      --ginkgo.timeout="${critest_timeout}s" >"$d/critest.log" 2>&1 || true
    log "critest -benchmark ($rt) took $(($(date +%s) - start))s"
    # Pods a failed spec left behind would skew the next run.
    timeout 180 crictl --runtime-endpoint "$ep" --image-endpoint "$ep" --timeout 120s rmp -fa >/dev/null 2>&1 || true
  done
fi

# --- report -------------------------------------------------------------------------------
python3 "$here/summarize.py" "$out_dir" | tee "$out_dir/table.txt"
exit "${PIPESTATUS[0]}"
