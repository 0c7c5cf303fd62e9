#!/usr/bin/env bash
# Runs the local image registry for krio's conformance runs: Debian's
# docker-registry (CNCF distribution v2) on 127.0.0.1:5000, storing blobs in
# a cache directory that persists between runs.
#
# Usage: conformance/registry.sh start|stop|status [STATE_DIR]
#   STATE_DIR  default /var/cache/krio-conformance/registry; holds
#              config.yml, registry.pid, registry.log and storage/.
# Environment: KRIO_REGISTRY_ADDR (default 127.0.0.1:5000).
#
# start   installs the docker-registry package if missing, starts the
#         registry in the background unless it already runs, and waits
#         (at most 30 s) until GET /v2/ answers.
# stop    stops the registry this script started (checked by pid file and
#         command line); never touches another process.
# status  prints whether it runs; exit status 0 when it does, 3 when not.
set -euo pipefail

cmd=${1:-}
state=${2:-/var/cache/krio-conformance/registry}
addr=${KRIO_REGISTRY_ADDR:-127.0.0.1:5000}
bin=/usr/bin/docker-registry
config="$state/config.yml"
pidfile="$state/registry.pid"
logfile="$state/registry.log"

log() { printf 'registry: %s\n' "$*" >&2; }

usage() {
    echo "usage: $0 start|stop|status [STATE_DIR]" >&2
    exit 2
}

# Prints the pid of the registry this script started, if it still runs.
our_pid() {
    local pid
    [[ -r $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    # Same binary and our config file: not some unrelated process that
    # reused the pid.
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *docker-registry*" serve $config"* ]] || return 1
    echo "$pid"
}

answers() {
    curl -fsS -o /dev/null --max-time 2 "http://$addr/v2/" 2>/dev/null
}

install_package() {
    local p missing=()
    for p in docker-registry curl; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing Debian packages: ${missing[*]}"
    # Keep the package's own service from starting (it would take :5000).
    local policy=/usr/sbin/policy-rc.d added=false
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        added=true
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        { [[ $added == true ]] && rm -f "$policy"; exit 1; }
    if [[ $added == true ]]; then rm -f "$policy"; fi
}

write_config() {
    mkdir -p "$state/storage"
    cat >"$config.tmp" <<EOF
# Written by conformance/registry.sh; rewritten on every start.
version: 0.1
log:
  level: info
  fields:
    service: krio-conformance-registry
storage:
  filesystem:
    rootdirectory: $state/storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $addr
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    mv "$config.tmp" "$config"
}

start() {
    install_package
    mkdir -p "$state"
    local pid
    if pid=$(our_pid); then
        if answers; then
            log "already running (pid $pid) on $addr"
            return 0
        fi
    else
        rm -f "$pidfile"
        if answers; then
            log "something else already answers on http://$addr/v2/; not starting"
            exit 1
        fi
        write_config
        log "starting $bin on $addr (state $state)"
        # The inner shell writes its own pid, then becomes the registry.
        # shellcheck disable=SC2016 # $$ is the inner shell's, on purpose
        setsid sh -c 'echo $$ >"$1"; exec "$2" serve "$3"' sh "$pidfile" "$bin" "$config" \
            </dev/null >>"$logfile" 2>&1 &
    fi
    local i
    for ((i = 0; i < 300; i++)); do
        if answers; then
            pid=$(our_pid) || true
            log "running (pid ${pid:-?}) on http://$addr"
            return 0
        fi
        if ((i > 5)) && ! our_pid >/dev/null; then
            log "the registry exited; last lines of $logfile:"
            tail -n 20 "$logfile" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    log "no answer from http://$addr/v2/ after 30s; see $logfile"
    exit 1
}

stop() {
    local pid i
    if ! pid=$(our_pid); then
        rm -f "$pidfile"
        log "not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        log "pid $pid ignored SIGTERM for 10s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    log "stopped (pid $pid)"
}

status() {
    local pid
    if pid=$(our_pid); then
        if answers; then
            echo "running (pid $pid) on http://$addr, state $state"
        else
            echo "running (pid $pid) but http://$addr/v2/ does not answer, state $state"
        fi
        return 0
    fi
    echo "not running (state $state)"
    return 3
}

case $cmd in
start) start ;;
stop) stop ;;
status) status ;;
*) usage ;;
esac
