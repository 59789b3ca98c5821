//! Costs at scale, each beside the bare system calls where Linux can do the same work:
//!
//! - `sim1e6_<op>`: the simulated backend with 10^6 live reservations (64 KiB each, the
//!   first page committed, a 64 KiB hole after each: 3×10^6 regions), each call on a
//!   reservation picked at random, plus placement that must skip every hole
//!   (`sim1e6_reserve_skip`) and top-down placement; `sim1e6hot_<op>`: the same calls on
//!   a working set of 1024 neighbouring reservations among the 10^6;
//!   `sim1e6regions_<op>`: random calls as `sim1e6_<op>`, at 10^6 regions (333 334
//!   reservations in the same layout);
//! - `query1e5`: `VirtualQuery` with 10^5 live regions (5×10^4 reservations and their
//!   holes) beside the `PROCMAP_QUERY` ioctl over as many kernel mappings;
//! - `tib_<op>`: reserve, commit 64 KiB in, query inside, decommit, release a 1 TiB
//!   reservation, beside `mmap`/`mprotect`/`PROCMAP_QUERY`/`madvise`/`munmap`;
//! - `mem_chase/<size>`: one dependent load from a random line of a buffer of that size,
//!   the machine's cost of a cache miss, as a same-run baseline for the simulated
//!   backend at scale (whose calls wait for memory).
//!
//! Memory per live reservation is printed as a `note:` line. `VIRTMEM_PROFILE=<op>`
//! instead runs 10^5 of one operation at 10^6 reservations without criterion, for
//! `valgrind --tool=callgrind --toggle-collect='*profile_run*'`; with
//! `VIRTMEM_PROFILE_HOT=1`, batches of 256 on 1024 neighbouring reservations, as
//! `sim1e6hot_<op>` (not for the reserve operations); with `VIRTMEM_PROFILE_BATCHED=1`,
//! the same batches on reservations picked among all of them, each batch undone, as the
//! criterion groups make them (without it the 10^5 calls are never undone: a release
//! profile then ends with 30 % fewer reservations, and larger free gaps, than it began
//! with); with `VIRTMEM_PROFILE_IRREGULAR=1`,
//! the reservations are placed as [`common::populate_irregular`] places them (holes of
//! random size, made in random order) instead of evenly and in address order. With
//! `VIRTMEM_PROFILE_BATCHED=1`, `VIRTMEM_PROFILE_ROUNDS=<n>` makes n batches (400 by
//! default) and `VIRTMEM_PROFILE_COLD=<bytes>` runs each call alone and then reads a
//! buffer that large outside `profile_run` (and outside no clock: the time printed
//! includes it), so that under `--cache-sim=yes` with a smaller simulated last-level
//! cache each call's data misses are the cache lines it touches.
//!
//! `VIRTMEM_PROFILE=query1e5` instead makes exactly `query1e5/sim`'s calls (5×10^4
//! reservations laid out by [`common::populate`] without commits, the addresses of
//! [`common::query_addrs`] from the same seed, cycled through from the second on) in
//! `profile_query1e5`, `VIRTMEM_PROFILE_CALLS` of them (default: one pass over the
//! 2×10^5 addresses); `VIRTMEM_PROFILE=query1e5linux` makes `query1e5/linux`'s, on a
//! Linux space (the span released before the reservations are made goes to its pool, so
//! a query in a hole makes no system call). Deterministic: runs with `N` and `2N` calls
//! differ by `N` steady-state calls, for `valgrind --tool=callgrind --cache-sim=yes
//! --toggle-collect='*profile_query1e5*'` and `scripts/callgrind-lines.py`.

mod common;

use common::{batched, bench_ops, live_bytes, note, populate, Mem, Rng, GRANULE, PAGE};
use criterion::criterion_group;

type Criterion = criterion::Criterion<common::ThreadCpu>;
use std::hint::black_box;
use std::time::Instant;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

const MILLION: usize = 1_000_000;
const TIB: usize = 1 << 40;

fn sim_million(c: &mut Criterion) {
    let sim = virtmem::SimSpace::simulated();
    let before = live_bytes();
    let t = Instant::now();
    let bases = populate(&sim, MILLION, true);
    let took = t.elapsed();
    let bytes = live_bytes() - before - bases.capacity() * std::mem::size_of::<usize>();
    let regions = sim.regions().len();
    note("sim1e6_regions", regions);
    note("sim1e6_setup_ms", format!("{:.0}", took.as_secs_f64() * 1e3));
    note("sim1e6_bytes_per_reservation_2runs", bytes / MILLION);
    bench_ops(c, "sim1e6", "sim", &sim, &bases);
    // The same calls confined to a working set of 1024 neighbouring reservations (as an
    // allocator or a GC mostly touches recent memory) among the 10^6: the structures'
    // own cost, without a miss to main memory on every call.
    let hot = &bases[MILLION / 2..MILLION / 2 + 1024];
    bench_ops(c, "sim1e6hot", "sim", &sim, hot);
    // The issue's own measure, 10^6 regions: a third as many reservations in the same
    // layout (each is three regions), in a space of their own.
    {
        let fewer = virtmem::SimSpace::simulated();
        let bases = populate(&fewer, MILLION.div_ceil(3), true);
        note("sim1e6regions_regions", fewer.regions().len());
        bench_ops(c, "sim1e6regions", "sim", &fewer, &bases);
    }

    let mut g = c.benchmark_group("sim1e6_reserve_skip");
    g.bench_function("sim", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                256,
                |k| (k, Vec::with_capacity(k)),
                |(k, made)| made.extend((0..*k).map(|_| sim.reserve(3 * GRANULE))),
                |(_, made)| made.into_iter().for_each(|a| sim.release(a, 3 * GRANULE)),
            )
        })
    });
    drop(g);
    c.benchmark_group("sim1e6_reserve_top_down").bench_function("sim", |b| {
        use virtmem::{AllocationType as A, Protection as P};
        b.iter_custom(|iters| {
            batched(
                iters,
                256,
                |k| (k, Vec::with_capacity(k)),
                |(k, made)| {
                    made.extend(
                        (0..*k).map(|_| sim.alloc(0, GRANULE, A::RESERVE | A::TOP_DOWN, P::NOACCESS).expect("reserve")),
                    )
                },
                |(_, made)| made.into_iter().for_each(|a| sim.release(a, GRANULE)),
            )
        })
    });
    drop(sim);

    // Memory of reservations that are one run each.
    let sim = virtmem::SimSpace::simulated();
    let before = live_bytes();
    let bases = populate(&sim, MILLION, false);
    let bytes = live_bytes() - before - bases.capacity() * std::mem::size_of::<usize>();
    note("sim1e6_bytes_per_reservation_1run", bytes / MILLION);
}

fn query_1e5(c: &mut Criterion) {
    const N: usize = 50_000;
    let mut g = c.benchmark_group("query1e5");
    let mut run = |name: &str, m: &dyn Mem| {
        let bases = populate(m, N, false);
        let mut rng = Rng::new(7);
        let addrs = common::query_addrs(&bases, &mut rng);
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % addrs.len();
                black_box(m.query(addrs[i]))
            })
        });
        bases
    };
    #[cfg(target_os = "linux")]
    {
        let raw = common::Raw::default();
        for b in run("raw", &raw) {
            raw.release(b, GRANULE);
        }
        let linux = virtmem::LinuxSpace::linux().expect("linux space");
        for b in run("linux", &linux) {
            linux.release(b, GRANULE);
        }
    }
    let sim = virtmem::SimSpace::simulated();
    run("sim", &sim);
}

/// The machine's own price of a cache miss, as a baseline for the simulated backend's
/// calls at scale (`mem_chase/<size>`): one load per iteration, each from an address the
/// previous one gave (a random cycle through a buffer of that many bytes, a cache line
/// per step), so no two overlap. A call that must wait for memory twice in a row cannot
/// take less than two of these: `sim1e6regions_<op>` divided by `mem_chase/64MiB` says how
/// many such waits' worth a call costs. 64 MiB is about the simulated space's bookkeeping
/// at 10^6 regions; 1 MiB is twice the L2 cache of the AMD VM these figures were first
/// taken on (512 KiB per core) and half that of the Intel VM of the fifteenth session.
fn mem_chase(c: &mut Criterion) {
    let mut g = c.benchmark_group("mem_chase");
    for (name, bytes) in [("1MiB", 1usize << 20), ("64MiB", 64 << 20)] {
        const LINE: usize = 64 / std::mem::size_of::<usize>();
        let lines = bytes / 64;
        let mut order: Vec<usize> = (0..lines).collect();
        let mut rng = Rng::new(5);
        for i in (1..lines).rev() {
            order.swap(i, rng.below(i + 1));
        }
        // `next[LINE * k]` is the index of the line after line `k` in the cycle.
        let mut next = vec![0usize; lines * LINE];
        for w in 0..lines {
            next[order[w] * LINE] = order[(w + 1) % lines] * LINE;
        }
        let mut at = 0;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let t = common::thread_cpu();
                for _ in 0..iters {
                    at = next[at];
                }
                black_box(at);
                common::thread_cpu() - t
            })
        });
    }
}

/// The 1 TiB operations of `m` as function `name` of the `tib_<op>` groups.
fn tib_ops(c: &mut Criterion, name: &str, m: &dyn Mem) {
    // Few at a time: 8 TiB of address space per batch at most.
    const BATCH: usize = 8;
    c.benchmark_group("tib_reserve").bench_function(name, |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                BATCH,
                |k| (k, Vec::with_capacity(k)),
                |(k, made)| made.extend((0..*k).map(|_| m.reserve(TIB))),
                |(_, made)| made.into_iter().for_each(|a| m.release(a, TIB)),
            )
        })
    });
    c.benchmark_group("tib_release").bench_function(name, |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                BATCH,
                |k| (0..k).map(|_| m.reserve(TIB)).collect::<Vec<_>>(),
                |made| made.iter().for_each(|&a| m.release(a, TIB)),
                |_| {},
            )
        })
    });
    let base = m.reserve(TIB);
    let mut rng = Rng::new(11);
    let spots: Vec<usize> = (0..1024).map(|_| base + rng.below(TIB / GRANULE) * GRANULE).collect();
    let mut per_spot = |group: &str, op: &dyn Fn(usize), undo: &dyn Fn(usize)| {
        c.benchmark_group(group).bench_function(name, |b| {
            b.iter_custom(|iters| {
                batched(
                    iters,
                    256,
                    |k| rng.distinct(k, spots.len()),
                    |pick| pick.iter().for_each(|&i| op(spots[i])),
                    |pick| pick.into_iter().for_each(|i| undo(spots[i])),
                )
            })
        });
    };
    per_spot("tib_commit", &|a| m.commit(a, GRANULE), &|a| m.decommit(a, GRANULE));
    per_spot("tib_decommit", &|a| m.decommit(a, GRANULE), &|a| m.commit(a, GRANULE));
    // Queries meet a reservation with ~1000 committed 64 KiB islands.
    for &a in &spots {
        m.commit(a, GRANULE);
    }
    let mut i = 0;
    c.benchmark_group("tib_query").bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) % spots.len();
            black_box(m.query(spots[i] + GRANULE + PAGE))
        })
    });
    m.release(base, TIB);
}

fn tib(c: &mut Criterion) {
    #[cfg(target_os = "linux")]
    {
        tib_ops(c, "raw", &common::Raw::default());
        tib_ops(c, "linux", &virtmem::LinuxSpace::linux().expect("linux space"));
    }
    let sim = virtmem::SimSpace::simulated();
    tib_ops(c, "sim", &sim);
    let before = live_bytes();
    let base = sim.reserve(TIB);
    note("tib_sim_bytes_for_reservation", live_bytes() - before);
    sim.release(base, TIB);
}

/// The reservations `pick` names among `bases`, each with its index, looked up before
/// the clock starts (as `bench_ops` does): the timed loop then reads them in order,
/// without a cache miss of its own in the table of every base.
fn picked(bases: &[usize], pick: &[usize]) -> Vec<(usize, usize)> {
    pick.iter().map(|&i| (bases[i], i)).collect()
}

#[inline(never)]
fn profile_run(op: &str, m: &dyn Mem, pick: &[(usize, usize)]) {
    match op {
        "reserve" => pick.iter().for_each(|_| {
            black_box(m.reserve(GRANULE));
        }),
        "reserve_skip" => pick.iter().for_each(|_| {
            black_box(m.reserve(3 * GRANULE));
        }),
        "commit" => pick.iter().for_each(|&(b, _)| m.commit(b + PAGE, PAGE)),
        "decommit" => pick.iter().for_each(|&(b, _)| m.decommit(b, PAGE)),
        "protect" => pick.iter().for_each(|&(b, _)| m.protect(b, PAGE, true)),
        "release" => pick.iter().for_each(|&(b, _)| m.release(b, GRANULE)),
        "query" => pick.iter().for_each(|&(b, i)| {
            black_box(m.query(b + (i % 32) * PAGE));
        }),
        other => panic!("unknown operation {other}"),
    }
}

/// `query1e5/sim`'s timed loop: `calls` queries at `addrs`, from the second address on,
/// cycling (as the benchmark's closure steps its index before each call).
#[inline(never)]
fn profile_query1e5(m: &dyn Mem, addrs: &[usize], calls: usize) {
    let mut i = 0;
    for _ in 0..calls {
        i = (i + 1) % addrs.len();
        black_box(m.query(addrs[i]));
    }
}

/// `VIRTMEM_PROFILE=query1e5`: the space and addresses of `query_1e5`'s `sim` run, and
/// `VIRTMEM_PROFILE_CALLS` of its calls (one pass over the addresses by default);
/// `VIRTMEM_PROFILE=query1e5linux`: the same on a Linux space, as `query1e5/linux`
/// makes them.
fn profile_query_1e5(m: &dyn Mem) {
    const N: usize = 50_000;
    let bases = populate(m, N, false);
    let addrs = common::query_addrs(&bases, &mut Rng::new(7));
    let calls = std::env::var("VIRTMEM_PROFILE_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(addrs.len());
    let start = common::thread_cpu();
    profile_query1e5(m, &addrs, calls);
    let t = common::thread_cpu() - start;
    println!("query1e5: {:.1} ns/op (CPU time)", t.as_nanos() as f64 / calls.max(1) as f64);
}

fn profile(op: &str) {
    if op == "query1e5" {
        return profile_query_1e5(&virtmem::SimSpace::simulated());
    }
    #[cfg(target_os = "linux")]
    if op == "query1e5linux" {
        let linux = virtmem::LinuxSpace::linux().expect("linux space");
        profile_query_1e5(&linux);
        // Left to the process's exit: unmapping the 5×10^4 pooled holes one by one would
        // take valgrind's record of the address space past its count of segments.
        std::mem::forget(linux);
        return;
    }
    let n: usize = std::env::var("VIRTMEM_PROFILE_LIVE").ok().and_then(|v| v.parse().ok()).unwrap_or(MILLION);
    let sim = virtmem::SimSpace::simulated();
    let bases = if std::env::var_os("VIRTMEM_PROFILE_IRREGULAR").is_some() {
        common::populate_irregular(&sim, n, true)
    } else {
        populate(&sim, n, true)
    };
    let t;
    let calls;
    let hot_set = std::env::var_os("VIRTMEM_PROFILE_HOT").is_some();
    if hot_set || std::env::var_os("VIRTMEM_PROFILE_BATCHED").is_some() {
        // As `sim1e6hot_<op>`: batches of 256 distinct calls among 1024 neighbouring
        // reservations, each batch undone (outside `profile_run`) before the next; or,
        // with `VIRTMEM_PROFILE_BATCHED`, the same batches among all the reservations,
        // as `sim1e6_<op>` and `sim1e6regions_<op>` make them (a release's undo makes
        // the reservation again, so the free space is as it was before the batch).
        let hot = if hot_set { &bases[n / 2..n / 2 + 1024.min(n / 2)] } else { &bases[..] };
        let mut rng = Rng::new(3);
        let mut spent = std::time::Duration::ZERO;
        // `VIRTMEM_PROFILE_COLD=<bytes>`: after each call, outside `profile_run`, read one
        // byte of every line of a buffer that large, so that under a simulated cache no
        // larger (`--LL`) the next call finds none of its lines cached: its data misses
        // then count the lines it touches.
        let cold: usize = std::env::var("VIRTMEM_PROFILE_COLD").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let flush = vec![0u8; cold];
        let rounds = std::env::var("VIRTMEM_PROFILE_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
        for _ in 0..rounds {
            let pick = picked(hot, &rng.distinct(256.min(hot.len()), hot.len()));
            let t = common::thread_cpu();
            if cold == 0 {
                profile_run(op, &sim, &pick);
            } else {
                for one in pick.chunks(1) {
                    profile_run(op, &sim, one);
                    evict(black_box(&flush));
                }
            }
            spent += common::thread_cpu() - t;
            profile_undo(op, &sim, &pick);
        }
        calls = rounds * 256.min(hot.len());
        t = spent;
    } else {
        let pick = picked(&bases, &Rng::new(3).distinct(100_000.min(n), n));
        let start = common::thread_cpu();
        profile_run(op, &sim, &pick);
        t = common::thread_cpu() - start;
        calls = pick.len();
    }
    println!("{op}: {:.1} ns/op (CPU time)", t.as_nanos() as f64 / calls as f64);
}

/// Read one byte of each 64-byte line of `buf` (see `VIRTMEM_PROFILE_COLD`).
#[inline(never)]
fn evict(buf: &[u8]) {
    black_box(buf.iter().step_by(64).fold(0u8, |a, &b| a ^ b));
}

/// Undo what [`profile_run`] did (as `bench_ops` does between batches).
#[inline(never)]
fn profile_undo(op: &str, m: &dyn Mem, pick: &[(usize, usize)]) {
    match op {
        "reserve" | "reserve_skip" => panic!("VIRTMEM_PROFILE_HOT is for per-reservation operations, not {op}"),
        "commit" => pick.iter().for_each(|&(b, _)| m.decommit(b + PAGE, PAGE)),
        "decommit" => pick.iter().for_each(|&(b, _)| m.commit(b, PAGE)),
        "protect" => pick.iter().for_each(|&(b, _)| m.protect(b, PAGE, false)),
        "release" => pick.iter().for_each(|&(b, _)| {
            m.reserve_at(b, GRANULE);
            m.commit(b, PAGE);
        }),
        _ => {}
    }
}

criterion_group! { name = benches; config = common::criterion(); targets = mem_chase, sim_million, query_1e5, tib }

fn main() {
    if let Ok(op) = std::env::var("VIRTMEM_PROFILE") {
        return profile(&op);
    }
    benches();
    common::criterion().final_summary();
}
