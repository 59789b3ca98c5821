#!/usr/bin/env python3
"""Cache misses per call, per instruction, from two callgrind runs of the same harness.

Usage:
    callgrind-lines.py BINARY SHORT.out LONG.out CALLS [EVENT ...]

SHORT.out and LONG.out are `valgrind --tool=callgrind --cache-sim=yes --dump-instr=yes
--compress-pos=no --compress-strings=no` profiles of BINARY making N and N + CALLS calls
(for example `linux_profile protect-lines ... 8` and `... 16`: 2048 more protects). Their
difference, divided by CALLS, is what one steady-state call costs, without the set-up and
the first calls' warm-up. For each instruction with misses it prints the misses per call
of each EVENT (default: D1mr D1mw DLmr DLmw), the instruction (objdump), the source line
it was compiled from (innermost inlined frame) and the first frame in this repository's
crates (which structure the line belongs to is read from there). A miss of a cold cache is
a line touched for the first time in the call, so with `protect-lines ... sweep` the
last-level misses count the distinct lines each call touches.
"""

import collections
import re
import subprocess
import sys


def load(path):
    """Exclusive cost of each (object, instruction address), and the event names."""
    events, obj, skip = None, None, False
    cost = collections.defaultdict(collections.Counter)
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("ob="):
                obj = line[3:]
            elif line.startswith("calls="):
                skip = True  # the next cost line is the call's inclusive cost
            elif line.startswith("0x"):
                if skip:
                    skip = False
                    continue
                fields = line.split()
                addr = int(fields[0], 16)
                for name, value in zip(events, fields[2:]):
                    cost[(obj, addr)][name] += int(value)
    if events is None:
        sys.exit(f"{path}: not a callgrind profile")
    return events, cost


def frames(binary, addrs):
    """Inline chain (innermost first) of each address: [(function, file:line)]."""
    if not addrs:
        return {}
    out = subprocess.run(
        ["addr2line", "-a", "-f", "-i", "-C", "-e", binary] + [hex(a) for a in addrs],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    chains, cur, pending = {}, None, None
    for line in out:
        if line.startswith("0x"):
            cur, pending = int(line, 16), None
            chains[cur] = []
        elif cur is not None:
            if pending is None:
                pending = line
            else:
                chains[cur].append((pending, line.split(" ")[0]))
                pending = None
    return chains


def disassembly(binary):
    text = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", "-M", "intel", binary], capture_output=True, text=True, check=True
    ).stdout
    ins = {}
    for line in text.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
        if m:
            ins[int(m.group(1), 16)] = m.group(2).strip()
    return ins


def short(path):
    return re.sub(r"^.*/(crates|library)/", "", path)


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    binary, short_run, long_run, calls = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    wanted = sys.argv[5:] or ["D1mr", "D1mw", "DLmr", "DLmw"]
    events, a = load(short_run)
    _, b = load(long_run)
    missing = [e for e in wanted if e not in events]
    if missing:
        sys.exit(f"events {missing} not recorded (run with --cache-sim=yes)")
    rows, totals = [], collections.Counter()
    instructions = sum(b[k]["Ir"] - a[k]["Ir"] for k in set(a) | set(b)) / calls
    for key in set(a) | set(b):
        per = {e: (b[key][e] - a[key][e]) / calls for e in wanted}
        if any(abs(v) >= 0.005 for v in per.values()):
            rows.append((key, per))
            totals.update(per)
    ours = sorted(addr for (obj, addr), _ in rows if obj == binary)
    chains = frames(binary, ours)
    ins = disassembly(binary)
    print(f"instructions per call: {instructions:.1f}")
    print(" ".join(f"{e:>6}" for e in wanted) + "  instruction | source line | first frame in the repository")
    for (obj, addr), per in sorted(rows, key=lambda r: (r[0][0] != binary, r[0][1])):
        counts = " ".join(f"{per[e]:6.2f}" for e in wanted)
        if obj != binary:
            print(f"{counts}  {obj} {addr:#x}")
            continue
        chain = chains.get(addr, [])
        inner = short(chain[0][1]) if chain else "?"
        own = next((f"{short(loc)} {fn.split('::')[-1]}" for fn, loc in chain if "/crates/" in loc), "")
        print(f"{counts}  {addr:#x} {ins.get(addr, '?')[:44]:44} | {inner} | {own}")
    print(" ".join(f"{totals[e]:6.2f}" for e in wanted) + "  total per call")


if __name__ == "__main__":
    main()
