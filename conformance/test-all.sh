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
