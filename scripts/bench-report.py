#!/usr/bin/env python3
"""Turn the criterion results of `cargo bench -p virtmem` into the tables of BENCHMARKS.md.

Reads target/criterion/<group>/<function>/new/estimates.json (the median of each
benchmark) and target/criterion/notes/*.txt (figures that are not timings), and prints
Markdown: every ratio is between two benchmarks of the same run.

Usage: python3 scripts/bench-report.py [target-dir]
"""
import json
import os
import sys

target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "target")
root = os.path.join(target, "criterion")


def median(group, function):
    path = os.path.join(root, group, function, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None


def ns(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    if v >= 1e4:
        return f"{v / 1e3:.1f} µs"
    return f"{v:.0f} ns"


def ratio(a, b):
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


OPS = ["reserve", "commit", "decommit", "protect", "release", "query"]

print("### Per call, 1000 live reservations (`ops_*`)\n")
rows = []
for op in OPS:
    raw, sim, lin = (median(f"ops_{op}", f) for f in ("raw", "sim", "linux"))
    rows.append([op, ns(raw), ns(lin), ratio(lin, raw), ns(sim), ratio(sim, raw)])
print(table(["operation", "raw syscalls", "linux", "linux / raw", "sim", "sim / raw"], rows))

print("\n### Simulated backend, 10^6 live reservations (`sim1e6_*`, target < 300 ns)\n")
rows = []
for op in OPS + ["reserve_skip", "reserve_top_down"]:
    v = median(f"sim1e6_{op}", "sim")
    hot = median(f"sim1e6hot_{op}", "sim") if op in OPS else None
    small = median(f"ops_{op}", "sim")
    rows.append([op, ns(v), ratio(v, 300.0), ns(hot), ratio(hot, 300.0), ns(small), ratio(v, small)])
print(table(["operation", "sim at 10^6, random", "/ 300 ns target", "sim at 10^6, 1024 hot",
             "/ 300 ns target", "sim at 10^3", "random 10^6 / 10^3"], rows))

print("\n### Simulated backend, 10^6 live regions (`sim1e6regions_*`: 333 334 reservations, target < 300 ns)\n")
# One dependent load from a random line of 64 MiB (`mem_chase`): the machine's price of
# waiting for memory once, measured in the same run.
wait = median("mem_chase", "64MiB")
rows = []
for op in OPS:
    v = median(f"sim1e6regions_{op}", "sim")
    rows.append([op, ns(v), ratio(v, 300.0), ratio(v, wait)])
print(table(["operation", "sim at 10^6 regions, random", "/ 300 ns target", "/ one memory wait"], rows))
print(f"\nOne memory wait (`mem_chase/64MiB`, a dependent load from a random line of 64 MiB): {ns(wait)};"
      f" from a 1 MiB buffer (`mem_chase/1MiB`, beyond a 512 KiB L2, within a 2 MiB one): {ns(median('mem_chase', '1MiB'))}.")

print("\n### VirtualQuery, 10^5 live regions (`query1e5`, target < 100 ns)\n")
raw = median("query1e5", "raw")
rows = [[f, ns(median("query1e5", f)), ratio(median("query1e5", f), 100.0), ratio(median("query1e5", f), raw)]
        for f in ("raw", "linux", "sim")]
print(table(["provider", "per query", "/ 100 ns target", "/ raw PROCMAP_QUERY"], rows))

print("\n### 1 TiB reservation (`tib_*`)\n")
rows = []
for op in ["reserve", "commit", "query", "decommit", "release"]:
    raw, sim, lin = (median(f"tib_{op}", f) for f in ("raw", "sim", "linux"))
    rows.append([op, ns(raw), ns(lin), ratio(lin, raw), ns(sim)])
print(table(["operation", "raw syscalls", "linux", "linux / raw", "sim"], rows))

print("\n### Allocation lifecycles, 1 thread vs 2 threads (`threads_*`)\n")
rows = []
for p in ("raw", "linux", "sim"):
    one, two = median(f"threads_{p}", "1"), median(f"threads_{p}", "2")
    rows.append([p, ns(one), ns(two), ratio(one, two)])
print(table(["provider", "per lifecycle, 1 thread", "per lifecycle, 2 threads", "throughput 2 threads / 1"], rows))
one = median("threads_linux", "1")
print(f"\nlinux / raw on one thread: {ratio(one, median('threads_raw', '1'))}; "
      f"on two: {ratio(median('threads_linux', '2'), median('threads_raw', '2'))}")

if median("linux_design", "both_1") is not None:
    print("\n### Linux backend design variants, allocation lifecycle (`linux_design`, wall clock)\n")
    rows = []
    for v in ("raw", "plain", "pool", "guard", "both"):
        one, two = median("linux_design", f"{v}_1"), median("linux_design", f"{v}_2")
        cpu = median("linux_design", f"cpu_{v}")
        rows.append([v, ns(one), ns(two), ratio(one, two), ns(cpu), ratio(one, median("linux_design", "raw_1"))])
    print(table(["variant", "1 thread", "2 threads", "throughput 2 / 1", "CPU per lifecycle", "1 thread / raw"],
                rows))

if median("heap_mixed_1thread", "host") is not None:
    print("\n### IHostMalloc heap vs the system allocator, mixed sizes (`heap_mixed_*`)\n")
    rows = []
    for g in ("heap_mixed_1thread", "heap_mixed_2threads"):
        host, system = median(g, "host"), median(g, "system")
        rows.append([g, ns(system), ns(host), ratio(host, system)])
    print(table(["workload (20 000 operations)", "system allocator", "IHostMalloc", "host / system"], rows))

notes = os.path.join(root, "notes")
if os.path.isdir(notes):
    print("\n### Other figures\n")
    for name in sorted(os.listdir(notes)):
        with open(os.path.join(notes, name)) as f:
            print(f"- `{name[:-4]}`: {f.read().strip()}")
