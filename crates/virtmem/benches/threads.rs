//! Allocation lifecycles on one thread and on two threads at once, on disjoint memory:
//! reserve 1 MiB, commit 64 KiB, touch each of its pages, query, decommit, release.
//! Each benchmark times the same number of lifecycles; with two threads each does
//! half, so `threads_<provider>/2` over `threads_<provider>/1` is the inverse of the
//! throughput gained (below 1: two threads get more done than one).
//!
//! Providers: `raw` (the bare system calls), `linux` (one shared `LinuxSpace`; pages
//! touched by CPU stores, as with `raw`) and `sim` (one shared simulated space, whose
//! pages can only be touched through its checked `write`).

mod common;

use common::{Mem, GRANULE, PAGE};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::Barrier;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

const MIB: usize = 1 << 20;

/// One lifecycle; returns what the query saw so that nothing is optimised away.
#[inline(never)]
fn lifecycle(m: &dyn Mem) -> usize {
    let base = m.reserve(MIB);
    m.commit(base, GRANULE);
    for p in (0..GRANULE).step_by(PAGE) {
        m.touch(base + p);
    }
    let seen = m.query(base);
    m.decommit(base, GRANULE);
    m.release(base, MIB);
    seen
}

/// Time `iters` lifecycles split over `threads` threads started together.
fn run(m: &dyn Mem, threads: usize, iters: u64) -> Duration {
    if threads == 1 {
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(lifecycle(m));
        }
        return t.elapsed();
    }
    let start = Barrier::new(threads + 1);
    let per = iters.div_ceil(threads as u64);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                for _ in 0..per {
                    std::hint::black_box(lifecycle(m));
                }
            });
        }
        // Threads are made before the clock starts; it stops when the last one is done.
        start.wait();
        let t = Instant::now();
        // Leaving the scope joins every thread.
        (t, ())
    })
    .0
    .elapsed()
}

fn bench(c: &mut Criterion, name: &str, m: &dyn Mem) {
    let mut g = c.benchmark_group(format!("threads_{name}"));
    for threads in [1, 2] {
        g.bench_function(format!("{threads}"), |b| b.iter_custom(|iters| run(m, threads, iters)));
    }
}

fn threads(c: &mut Criterion) {
    #[cfg(target_os = "linux")]
    {
        bench(c, "raw", &common::Raw::default());
        // Pages touched by CPU stores, as with `raw` (not through the checked `write`).
        bench(c, "linux", &common::Direct(&virtmem::LinuxSpace::linux().expect("linux space")));
    }
    bench(c, "sim", &virtmem::SimSpace::simulated());
}

criterion_group! { name = benches; config = common::criterion_wall(); targets = threads }
criterion_main!(benches);
