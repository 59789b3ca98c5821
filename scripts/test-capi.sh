#!/usr/bin/env bash
# libvirtmem from other languages: builds libvirtmem.so (in cargo's target directory), checks the header
# (cbindgen staleness, compiles cleanly as C and C++), then runs the C tests, the C example
# (built through pkg-config), the Python ctypes test and the C# P/Invoke test.
# Needs: cargo, gcc, pkg-config, python3, mcs + mono (Debian: mono-mcs, mono-runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# Cargo's target directory (CARGO_TARGET_DIR or build.target-dir may move it).
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
lib=$target/release
build=$target/capi-tests
mkdir -p "$build"

cargo build --release -q -p virtmem-capi
test -f "$lib/libvirtmem.so"

echo "-- header: include/virtmem.h is what cbindgen generates now"
cargo test --release -q -p virtmem-capi --test header

echo "-- header: compiles cleanly on its own"
printf '#include "virtmem.h"\nint main(void){return 0;}\n' >"$build/header.c"
gcc -std=c99 -Wall -Wextra -Wpedantic -Werror -I include -c "$build/header.c" -o "$build/header.o"
# C89 too (MSVC-era C ported with -ansi): no // comment may follow a directive.
gcc -std=c89 -Wall -Wextra -Wpedantic -Werror -I include -c "$build/header.c" -o "$build/header-c89.o"
if command -v g++ >/dev/null; then
  cp "$build/header.c" "$build/header.cc"
  g++ -std=c++11 -Wall -Wextra -Wpedantic -Werror -I include -c "$build/header.cc" -o "$build/header-cc.o"
  echo "-- header: C++ written against winnt.h's MEM_EXTENDED_PARAMETER compiles unchanged and runs"
  for std in c++11 c++20; do
    g++ -std=$std -Wall -Werror -I include tests/c/port_valloc2.cc -o "$build/port_valloc2-$std" \
      -L "$lib" -Wl,-rpath,"$lib" -lvirtmem
    "$build/port_valloc2-$std" >/dev/null
  done
else
  echo "   (g++ not installed: C++ compile check not run)"
fi

cflags=(-std=gnu11 -O2 -g -Wall -Wextra -Werror -I include)
ldflags=(-L "$lib" -Wl,-rpath,"$lib" -lvirtmem -pthread)

echo "-- C tests"
for src in tests/c/test_*.c; do
  name=$(basename "$src" .c)
  gcc "${cflags[@]}" "$src" -o "$build/$name" "${ldflags[@]}"
  echo "   $name"
  "$build/$name"
done

echo "-- C example through pkg-config"
sed -e "s|@PREFIX@|$root|" -e "s|@LIBDIR@|$lib|" -e "s|@INCLUDEDIR@|$root/include|" \
  crates/virtmem-capi/virtmem.pc.in >"$build/virtmem.pc"
export PKG_CONFIG_PATH="$build${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
for src in examples/c/*.c; do
  name=$(basename "$src" .c)
  # shellcheck disable=SC2046
  gcc -std=gnu11 -O2 -Wall -Wextra -Werror "$src" -o "$build/$name" $(pkg-config --cflags --libs virtmem) \
    -Wl,-rpath,"$(pkg-config --variable=libdir virtmem)"
  echo "   $name"
  "$build/$name"
done

echo "-- Python (ctypes)"
VIRTMEM_LIB="$lib/libvirtmem.so" python3 -m unittest discover -s tests/python -p 'test_*.py'

echo "-- C# (P/Invoke, mono)"
mcs -nologo -warnaserror -out:"$build/VirtmemTest.exe" tests/csharp/VirtmemTest.cs
sed -e "s|@LIB@|$lib/libvirtmem.so|" tests/csharp/VirtmemTest.exe.config.in >"$build/VirtmemTest.exe.config"
mono "$build/VirtmemTest.exe"

echo "-- C benchmark (smoke run; scripts/bench-capi.sh measures)"
gcc "${cflags[@]}" bench/c/bench.c -o "$build/bench" "${ldflags[@]}"
"$build/bench" --quick >/dev/null

echo "libvirtmem: all C, Python and C# tests passed"
