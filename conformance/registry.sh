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
# Extra instances (tests of registry auth and TLS) run from their own
# STATE_DIR on another loopback port, set up by these (read at start):
#   KRIO_REGISTRY_STORAGE   storage root (default STATE_DIR/storage); point
#                           it at the shared registry's storage to serve its
#                           images without pushing them again
#   KRIO_REGISTRY_READONLY=1   refuse pushes and deletes (use it with a
#                           shared storage root)
#   KRIO_REGISTRY_HTPASSWD_USER, KRIO_REGISTRY_HTPASSWD_PASSWORD
#                           require HTTP basic auth; STATE_DIR/htpasswd is
#                           written with bcrypt (htpasswd -B, apache2-utils)
#   KRIO_REGISTRY_TLS=1     serve HTTPS with a certificate for 127.0.0.1 and
#                           localhost, signed by a fresh test CA whose
#                           certificate is STATE_DIR/tls/ca.crt
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
storage=${KRIO_REGISTRY_STORAGE:-$state/storage}
readonly_storage=${KRIO_REGISTRY_READONLY:-0}
htpasswd_user=${KRIO_REGISTRY_HTPASSWD_USER:-}
htpasswd_password=${KRIO_REGISTRY_HTPASSWD_PASSWORD:-}
tls=${KRIO_REGISTRY_TLS:-0}
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

# True when something answers GET /v2/ like a registry: 200, or 401 when it
# asks for credentials. HTTPS when the state dir has a TLS setup (status and
# stop are not given the environment start was).
answers() {
    local scheme=http code
    [[ $tls == 1 || -e $state/tls/server.crt ]] && scheme=https
    code=$(curl -ksS -o /dev/null -w '%{http_code}' --max-time 2 "$scheme://$addr/v2/" 2>/dev/null) || return 1
    [[ $code == 200 || $code == 401 ]]
}

install_package() {
    local p missing=()
    local wanted=(docker-registry curl)
    [[ -n $htpasswd_user ]] && wanted+=(apache2-utils)
    [[ $tls == 1 ]] && wanted+=(openssl)
    for p in "${wanted[@]}"; do
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

# A test CA and a server certificate for 127.0.0.1 and localhost, signed by it.
make_tls() {
    local d=$state/tls
    rm -rf "$d"
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
        -subj "/CN=krio test registry CA" -keyout "$d/ca.key" -out "$d/ca.crt" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=127.0.0.1" -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
    printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'basicConstraints=critical,CA:FALSE' \
        'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >"$d/server.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 7 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null
}

write_config() {
    mkdir -p "$storage"
    rm -f "$state/htpasswd"
    if [[ -n $htpasswd_user ]]; then
        htpasswd -Bbn "$htpasswd_user" "$htpasswd_password" >"$state/htpasswd"
    fi
    if [[ $tls == 1 ]]; then make_tls; else rm -rf "$state/tls"; fi
    cat >"$config.tmp" <<EOF
# Written by conformance/registry.sh; rewritten on every start.
version: 0.1
log:
  level: info
  fields:
    service: krio-conformance-registry
storage:
  filesystem:
    rootdirectory: $storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: $([[ $readonly_storage == 1 ]] && echo true || echo false)
http:
  addr: $addr
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    if [[ $tls == 1 ]]; then
        printf '  tls:\n    certificate: %s\n    key: %s\n' "$state/tls/server.crt" "$state/tls/server.key" >>"$config.tmp"
    fi
    if [[ -n $htpasswd_user ]]; then
        printf 'auth:\n  htpasswd:\n    realm: krio-test\n    path: %s\n' "$state/htpasswd" >>"$config.tmp"
    fi
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
            log "something else already answers on $addr/v2/; not starting"
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
