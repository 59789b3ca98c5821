#!/usr/bin/env bash
# Every test of the project: the Rust workspace, then the suites that drive libvirtmem
# from other languages. Run from anywhere; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release
for extra in scripts/test-*.sh; do
  [ "$extra" = scripts/test-all.sh ] && continue
  echo "== $extra"
  bash "$extra"
done
