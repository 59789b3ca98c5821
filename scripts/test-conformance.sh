#!/usr/bin/env bash
# The conformance suite (tests/conformance): build every scenario natively with gcc
# against libvirtmem, run it, and compare its output with the golden file recorded
# from Windows behaviour (Wine 8 plus corrections.txt). Also checks that the goldens
# are exactly the Wine recordings with the corrections applied. No Wine needed; to
# re-record the goldens see scripts/record-wine-goldens.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/conformance

python3 "$dir/corrections.py" check "$dir"

cargo build --release -p virtmem-capi
# Cargo's target directory (CARGO_TARGET_DIR or build.target-dir may move it).
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
lib=$target/release
test -f "$lib/libvirtmem.so"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

failed=0
checked=0
for src in "$dir"/*.c; do
  name=$(basename "$src" .c)
  gcc -std=c11 -D_GNU_SOURCE -O1 -Wall -Wextra -Werror -Wno-unused-function -Iinclude \
    -o "$build/$name" "$src" -L"$lib" -lvirtmem -Wl,-rpath,"$lib"
  if ! "$build/$name" >"$build/$name.out" 2>"$build/$name.err"; then
    echo "FAIL $name: exited with status $? (stderr below)"
    cat "$build/$name.err"
    failed=1
  fi
  lines=$(wc -l <"$dir/$name.expected.txt")
  checked=$((checked + lines))
  if diff -u --label "$name.expected.txt (Windows)" --label "$name (libvirtmem)" \
      "$dir/$name.expected.txt" "$build/$name.out" >"$build/$name.diff"; then
    echo "ok   $name ($lines lines)"
  else
    echo "FAIL $name: output differs from $dir/$name.expected.txt"
    cat "$build/$name.diff"
    failed=1
  fi
done
echo "conformance: $checked checked lines"
exit $failed
