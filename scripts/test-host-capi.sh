#!/usr/bin/env bash
# The host memory manager through libvirtmem's COM interfaces: builds
# target/release/libvirtmem.so, then compiles and runs tests/c/host_*.c (C) and
# tests/c/host_*.cc (C++, if g++ is installed): the C tests drive the vtables
# (host->lpVtbl->Method(host, ...)), the C++ test the mscoree.h-style classes
# the header declares for C++ (host->Method(...)).
# Needs: cargo, gcc (g++ optional).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# Cargo's target directory (CARGO_TARGET_DIR or build.target-dir may move it).
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
lib=$target/release
build=$target/host-capi-tests
mkdir -p "$build"

cargo build --release -q -p virtmem-capi
test -f "$lib/libvirtmem.so"

ldflags=(-L "$lib" -Wl,-rpath,"$lib" -lvirtmem -pthread)
for src in tests/c/host_*.c; do
  name=$(basename "$src" .c)
  gcc -std=gnu11 -O2 -g -Wall -Wextra -Werror -I include -I tests/c "$src" -o "$build/$name" "${ldflags[@]}"
  echo "   $name"
  "$build/$name"
done
if command -v g++ >/dev/null; then
  for src in tests/c/host_*.cc; do
    name=$(basename "$src" .cc)
    g++ -std=c++11 -O2 -g -Wall -Wextra -Wpedantic -Werror -I include -I tests/c "$src" -o "$build/$name" "${ldflags[@]}"
    echo "   $name"
    "$build/$name"
  done
else
  echo "   (g++ not installed: C++ test not run)"
fi
echo "host memory manager: C ABI tests passed"
