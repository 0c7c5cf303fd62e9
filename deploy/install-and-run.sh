#!/usr/bin/env bash
# Installs what krio needs on a fresh Debian machine, builds and installs
# krio, and starts it on its defaults (socket /run/krio/krio.sock), ready for
# crictl. Idempotent: run it again after a change to rebuild and restart.
#
#   sudo deploy/install-and-run.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CRICTL_VERSION=v1.37.0

log() { printf '==> %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "run as root (krio manages namespaces, mounts and cgroups)" >&2; exit 1; }

# Debian packages: OCI runtimes, CNI plugins, and the tools CNI needs.
packages=(runc crun containernetworking-plugins iptables iproute2 ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "cargo (Rust >= 1.90) is required: install it with rustup" >&2; exit 1; }
command -v go >/dev/null || { echo "go is required to build crictl" >&2; exit 1; }

# crictl from the Go module proxy.
if ! crictl --version 2>/dev/null | grep -q "${CRICTL_VERSION#v}"; then
  log "installing crictl ${CRICTL_VERSION}"
  GOBIN=/usr/local/bin GOFLAGS=-mod=mod go install "sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}"
fi

log "building krio (release)"
cargo build --release --locked -p krio -p krio-runtime --bins --manifest-path "$repo/Cargo.toml"
# krio looks for krio-monitor beside its own binary.
for bin in krio krio-monitor; do
  install -m 0755 "$repo/target/release/$bin" "/usr/local/bin/$bin.new"
  mv -f "/usr/local/bin/$bin.new" "/usr/local/bin/$bin"
done

# Configuration: never overwrite what an operator already has.
install -d -m 0755 /etc/krio /etc/krio/krio.d /etc/cni/net.d
[ -e /etc/krio/krio.toml ] || install -m 0644 "$repo/deploy/krio.toml" /etc/krio/krio.toml
if ! ls /etc/cni/net.d/*.conflist /etc/cni/net.d/*.conf /etc/cni/net.d/*.json >/dev/null 2>&1; then
  install -m 0644 "$repo/deploy/cni/10-krio-bridge.conflist" /etc/cni/net.d/10-krio-bridge.conflist
fi
[ -e /etc/crictl.yaml ] || install -m 0644 "$repo/deploy/crictl.yaml" /etc/crictl.yaml
krio config >/dev/null   # fails loudly, naming file and key, on a bad config

# (Re)start krio: through its systemd unit when systemd is PID 1, else in
# the background as a plain process.
socket=$(krio config | sed -n 's/^listen = "\(.*\)"$/\1/p')
if [ -d /run/systemd/system ]; then   # systemd is PID 1 (sd_booted)
  log "installing the systemd unit /etc/systemd/system/krio.service"
  install -m 0644 "$repo/deploy/krio.service" /etc/systemd/system/krio.service
  systemctl daemon-reload
  systemctl enable krio >/dev/null
  # A restart stops only the daemon (KillMode=process): containers keep running.
  log "(re)starting krio.service (log: journalctl -u krio)"
  systemctl restart krio
else
  if pid=$(pgrep -x krio); then
    log "stopping the running krio (pid $pid)"
    kill -TERM $pid
    for _ in $(seq 100); do pgrep -x krio >/dev/null || break; sleep 0.1; done
  fi
  log "starting krio (log: /var/log/krio.log)"
  nohup krio >>/var/log/krio.log 2>&1 </dev/null &
fi
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || { echo "krio did not start; see /var/log/krio.log or journalctl -u krio" >&2; tail -n 20 /var/log/krio.log >&2 2>/dev/null; exit 1; }

crictl version
log "krio is running; try: crictl info"
