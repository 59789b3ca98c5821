#!/usr/bin/env bash
# Install libvirtmem for C users: the library, the header and a pkg-config file.
#   scripts/install-capi.sh [PREFIX]        (default /usr/local; DESTDIR is honoured)
# Then (after `ldconfig` for a prefix in the loader's search path, such as /usr/local):
#   gcc prog.c -o prog $(pkg-config --cflags --libs virtmem)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
libdir=$prefix/lib
includedir=$prefix/include
dest=${DESTDIR:-}
cargo build --release -q -p virtmem-capi
# Cargo's target directory (CARGO_TARGET_DIR or build.target-dir may move it).
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
install -d "$dest$libdir/pkgconfig" "$dest$includedir"
install -m 0755 "$target/release/libvirtmem.so" "$dest$libdir/libvirtmem.so"
install -m 0644 include/virtmem.h "$dest$includedir/virtmem.h"
sed -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$libdir|" -e "s|@INCLUDEDIR@|$includedir|" \
  crates/virtmem-capi/virtmem.pc.in >"$dest$libdir/pkgconfig/virtmem.pc"
echo "installed libvirtmem into $dest$prefix (pkg-config: virtmem)"
