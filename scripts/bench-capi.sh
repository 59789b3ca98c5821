#!/usr/bin/env bash
# The C benchmark: the same workloads through libvirtmem and through raw Linux system
# calls, in one run (bench/c/bench.c). Pass --quick for a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p virtmem-capi
# Cargo's target directory (CARGO_TARGET_DIR or build.target-dir may move it).
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p "$target/capi-tests"
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I include bench/c/bench.c -o "$target/capi-tests/bench" \
  -L "$target/release" -Wl,-rpath,"$target/release" -lvirtmem
"$target/capi-tests/bench" "$@"
