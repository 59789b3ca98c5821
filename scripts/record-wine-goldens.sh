#!/usr/bin/env bash
# Record the conformance goldens under Wine (needs wine64 and gcc-mingw-w64-x86-64;
# CI does not run this). Each tests/conformance/<scenario>.c is built as a Windows
# program, run with WINEDEBUG=-all, and its output saved as <scenario>.wine.txt; then
# corrections.txt is applied to produce the Windows expectations <scenario>.expected.txt
# and WINE-DIFFERENCES.md.
#
#   scripts/record-wine-goldens.sh              record every scenario, then apply
#   scripts/record-wine-goldens.sh NAME...      record only these scenarios, then apply
#   scripts/record-wine-goldens.sh --apply      only re-apply corrections.txt
#
# WINEPREFIX defaults to /tmp/wpfx-$USER-conformance (created on first use, slowly).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=tests/conformance

if [ "${1:-}" != --apply ]; then
  command -v wine >/dev/null || { echo "wine is not installed" >&2; exit 1; }
  command -v x86_64-w64-mingw32-gcc >/dev/null || { echo "x86_64-w64-mingw32-gcc is not installed" >&2; exit 1; }
  export WINEPREFIX="${WINEPREFIX:-/tmp/wpfx-${USER:-$(id -un)}-conformance}"
  export WINEDEBUG=-all
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  if [ $# -gt 0 ]; then names=("$@"); else names=(); for c in "$dir"/*.c; do names+=("$(basename "$c" .c)"); done; fi
  echo "wine: $(wine --version)  prefix: $WINEPREFIX"
  for name in "${names[@]}"; do
    x86_64-w64-mingw32-gcc -O1 -Wall -Wno-unused-function -o "$build/$name.exe" "$dir/$name.c"
    # The program prints with the C runtime's text mode: drop the carriage returns.
    wine "$build/$name.exe" </dev/null | tr -d '\r' >"$dir/$name.wine.txt"
    echo "recorded $name: $(wc -l <"$dir/$name.wine.txt") lines"
  done
  wineserver -w 2>/dev/null || true
fi

python3 "$dir/corrections.py" apply "$dir"
echo "applied $dir/corrections.txt: $(grep -c '^+ ' "$dir/corrections.txt") corrected lines"
