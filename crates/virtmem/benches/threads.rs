//! Allocation lifecycles on one thread and on two threads at once, on disjoint memory:
//! reserve 1 MiB, commit 64 KiB, touch each of its pages, query, decommit, release.
//! Each benchmark times the same number of lifecycles; with two threads each does
//! half, so `threads_<provider>/2` over `threads_<provider>/1` is the inverse of the
//! throughput gained (below 1: two threads get more done than one).
//!
//! `threads_<provider>/1_sibling` is one thread's lifecycles while a second thread of
//! the process spins in user space and touches no memory: the second thread keeps the
//! process's address space loaded on the other CPU, so every page the lifecycle's
//! decommit drops makes the kernel interrupt that CPU to flush its TLB (a shootdown),
//! as it does when two threads both run lifecycles. Its ratio to `/1` is what that
//! interrupt costs a lifecycle, with no other sharing between the threads.
//!
//! Providers: `raw` (the bare system calls), `linux` (one shared `LinuxSpace`; pages
//! touched by CPU stores, as with `raw`) and `sim` (one shared simulated space, whose
//! pages can only be touched through its checked `write`).

mod common;

use common::{Mem, GRANULE, PAGE};
use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Time `iters` lifecycles on one thread while another thread of the process spins.
fn run_beside_spinner(m: &dyn Mem, iters: u64) -> Duration {
    let done = AtomicBool::new(false);
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            start.wait();
            while !done.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        start.wait();
        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(lifecycle(m));
        }
        let took = t.elapsed();
        done.store(true, Ordering::Relaxed);
        took
    })
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
    g.bench_function("1_sibling", |b| b.iter_custom(|iters| run_beside_spinner(m, iters)));
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
