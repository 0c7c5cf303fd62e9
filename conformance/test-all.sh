#!/usr/bin/env bash
# krio's whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. install the tools the tests use (Debian packages, crictl, critest);
#   2. cargo fmt --check and cargo clippy --all-targets -D warnings;
#   3. cargo test for the whole workspace (root integration tests included:
#      they start the real daemon, real runtimes and real CNI plugins);
#   4. the critest conformance run against krio, checked against the baseline.
#
#   sudo conformance/test-all.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="/usr/local/go/bin:$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export CARGO_TERM_COLOR=never
# Root-only tests fail instead of skipping when CI (root) cannot run them.
export KRIO_REQUIRE_ROOT_TESTS=1

step() { printf '\n==> %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "run as root: the integration tests need namespaces, mounts and cgroups" >&2; exit 1; }

step "installing test tools"
bash conformance/install-tools.sh

# The image tests and critest pull the offline-built test images from a
# local registry: start it (unless it runs already) and push them first.
registry_started=false
stop_registry() { if $registry_started; then bash conformance/registry.sh stop || true; fi; }
trap stop_registry EXIT
step "local registry and test images"
if ! bash conformance/registry.sh status >/dev/null 2>&1; then
  bash conformance/registry.sh start
  registry_started=true
fi
cargo build --locked -q -p krio-testimages
target/debug/krio-testimages build --registry 127.0.0.1:5000 >/dev/null

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --locked --workspace --no-fail-fast

if [ -x conformance/run-critest.sh ]; then
  step "critest conformance"
  bash conformance/run-critest.sh "${CRITEST_REPORT_DIR:-$repo/target/critest}"
fi
