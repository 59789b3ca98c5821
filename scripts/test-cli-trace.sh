#!/usr/bin/env bash
# Record a real program through libvirtmem (VIRTMEM_TRACE) and replay the trace with the
# virtmem CLI: every recorded result must be reproduced by the simulated replay.
# Needs: cargo, gcc.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# Cargo's target directory (CARGO_TARGET_DIR or build.target-dir may move it).
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
lib=$target/release
build=$target/cli-trace-test
mkdir -p "$build"
cargo build --release -q -p virtmem-capi -p virtmem-cli
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I include examples/c/growable_buffer.c -o "$build/growable_buffer" \
  -L "$lib" -Wl,-rpath,"$lib" -lvirtmem -pthread
rm -f "$build/trace.vmt"
VIRTMEM_TRACE="$build/trace.vmt" "$build/growable_buffer" >/dev/null
head -1 "$build/trace.vmt" | grep -q '^virtmem-trace 1 pid='
"$lib/virtmem" replay --strict "$build/trace.vmt"
echo "cli trace: recorded $(($(wc -l <"$build/trace.vmt") - 1)) calls through libvirtmem, replayed with no difference"
# Simulated processes and their snapshots (VirtmemSnapshotProcess), commit limits set on
# them (VirtmemSetCommitLimit), guard pages met by VirtmemAccess: the replay makes each
# snapshot from the process as replayed so far.
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I include -I tests/c tests/c/test_snapshot.c -o "$build/test_snapshot" \
  -L "$lib" -Wl,-rpath,"$lib" -lvirtmem -pthread
rm -f "$build/snapshot.vmt"
VIRTMEM_TRACE="$build/snapshot.vmt" "$build/test_snapshot" >/dev/null
grep -q '^VirtmemSnapshotProcess 0x1 -> 0x2 err=0$' "$build/snapshot.vmt"
grep -q '^VirtmemSetCommitLimit 0x1 0x30000 -> 0x1 err=0$' "$build/snapshot.vmt"
"$lib/virtmem" replay --strict "$build/snapshot.vmt"
echo "cli trace: a program's simulated processes and their snapshots replayed with no difference"
# A fuzzer's loop over one process handle (VirtmemRestoreProcess before each input): the
# replay restores the process from its snapshot as replayed so far.
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I include -I tests/c tests/c/test_restore.c -o "$build/test_restore" \
  -L "$lib" -Wl,-rpath,"$lib" -lvirtmem -pthread
rm -f "$build/restore.vmt"
VIRTMEM_TRACE="$build/restore.vmt" "$build/test_restore" >/dev/null
grep -q '^VirtmemRestoreProcess 0x1 0x2 -> 0x1 err=0$' "$build/restore.vmt"
"$lib/virtmem" replay --strict "$build/restore.vmt"
echo "cli trace: a program's restores of a simulated process from its snapshot replayed with no difference"
# Processes made with their own configuration (VirtmemCreateProcessEx: a 32-bit guest's
# range, no large pages, resets discarding data): the replay makes each with the recorded
# configuration, so the refusals past the guest's top and of large pages are reproduced.
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I include -I tests/c tests/c/test_process_config.c \
  -o "$build/test_process_config" -L "$lib" -Wl,-rpath,"$lib" -lvirtmem -pthread
rm -f "$build/process_config.vmt"
VIRTMEM_TRACE="$build/process_config.vmt" "$build/test_process_config" >/dev/null
grep -q '^VirtmemCreateProcessEx 0x10000 0x7ffeffff 0x0 0x0 -> 0x[1-9a-f][0-9a-f]* err=0$' "$build/process_config.vmt"
grep -q '^VirtmemCreateProcessEx 0x10000 0x7ffeffff 0x0 0x2 -> 0x0 err=87$' "$build/process_config.vmt"
"$lib/virtmem" replay --strict "$build/process_config.vmt"
# Without those records the processes replay as Windows-x64 ones, and differ.
grep -v '^VirtmemCreateProcessEx ' "$build/process_config.vmt" >"$build/process_config-x64.vmt"
if "$lib/virtmem" replay --strict "$build/process_config-x64.vmt" >/dev/null; then
  echo "cli trace: the trace replayed without its VirtmemCreateProcessEx records shows no difference" >&2
  exit 1
fi
echo "cli trace: a program's configured processes (VirtmemCreateProcessEx) replayed with no difference"
# VirtualAlloc2 (tests/c/test_valloc2.c without the current process's windows, whose checks
# query free real memory): each record holds the parameters the call read, so the replay
# refuses what the program saw refused, with the same error, and places what it reserved
# inside an address window at the recorded address.
gcc -std=gnu11 -O2 -Wall -Wextra -Werror -I include -I tests/c tests/c/test_valloc2.c -o "$build/test_valloc2" \
  -L "$lib" -Wl,-rpath,"$lib" -lvirtmem -pthread
rm -f "$build/valloc2.vmt"
VIRTMEM_TRACE="$build/valloc2.vmt" "$build/test_valloc2" --simulated >/dev/null
# A window's top-down reserve, a window with no room, a NULL array, a NULL (calling) process.
grep -q '^VirtualAlloc2 0x[0-9a-f]* 0x0 0x20000 0x103000 0x4 \[0x1:0x[0-9a-f]*:0x100000000:0x103ffffff:0x0\] 0x1 -> 0x103fe0000 err=0$' "$build/valloc2.vmt"
grep -q '^VirtualAlloc2 0x[0-9a-f]* 0x0 0x10000 0x2000 0x4 \[0x1:0x[0-9a-f]*:0x100000000:0x10001ffff:0x0\] 0x1 -> 0x0 err=8$' "$build/valloc2.vmt"
grep -q '^VirtualAlloc2 0x[0-9a-f]* 0x0 0x10000 0x2000 0x4 null 0x1 -> 0x0 err=998$' "$build/valloc2.vmt"
grep -q '^VirtualAlloc2 0x0 0x0 0x2000 0x3000 0x4 \[0x1:0x[0-9a-f]*:0x0:0x0:0x0\] 0x1 -> 0x[0-9a-f]* err=0$' "$build/valloc2.vmt"
"$lib/virtmem" replay --strict "$build/valloc2.vmt"
# A reservation recorded outside its window cannot be replayed there: the replay differs.
sed '0,/:0x100000000:0x103ffffff:0x100000\] 0x1 -> 0x100100000 err=0$/s//:0x100000000:0x103ffffff:0x100000] 0x1 -> 0x200100000 err=0/' \
  "$build/valloc2.vmt" >"$build/valloc2-moved.vmt"
if cmp -s "$build/valloc2.vmt" "$build/valloc2-moved.vmt" || "$lib/virtmem" replay --strict "$build/valloc2-moved.vmt" >/dev/null; then
  echo "cli trace: a VirtualAlloc2 reservation moved out of its window replayed without a difference" >&2
  exit 1
fi
echo "cli trace: a program's VirtualAlloc2 calls (address windows, refused parameters) replayed with no difference"
