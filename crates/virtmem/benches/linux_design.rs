//! The Linux backend's design choices, measured against each other and against the
//! bare system calls in one run: the allocation lifecycle (reserve 1 MiB, commit
//! 64 KiB, touch each page, query, decommit, release) on one thread and on two at once,
//! for each `LinuxOptions` variant:
//!
//! - `plain`: mmap / mprotect / madvise(DONTNEED) / munmap, nothing else;
//! - `pool`: released ranges kept mapped and reused (no mmap/munmap);
//! - `guard`: decommit with `MADV_GUARD_INSTALL`, recommit with `MADV_GUARD_REMOVE`;
//! - `both`: the default.
//!
//! Each benchmark times the same number of lifecycles (with two threads, half each):
//! `<variant>/2` below `<variant>/1` means two threads get more done than one. Besides
//! wall time, `cpu_<variant>` reports the process CPU time per lifecycle on one thread.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use virtmem::{AllocationType as T, FreeType, LinuxOptions, LinuxSpace, Protection as P};

const MIB: usize = 1 << 20;
const KIB64: usize = 64 << 10;

fn lifecycle_space(s: &LinuxSpace) {
    let b = s.alloc(0, MIB, T::RESERVE, P::NOACCESS).unwrap();
    s.alloc(b, KIB64, T::COMMIT, P::READWRITE).unwrap();
    for a in (b..b + KIB64).step_by(4096) {
        // SAFETY: the page was just committed read-write.
        unsafe { std::ptr::write_volatile(a as *mut u8, 1) };
    }
    std::hint::black_box(s.query(b + 4096).unwrap());
    s.free(b, KIB64, FreeType::DECOMMIT).unwrap();
    s.free(b, 0, FreeType::RELEASE).unwrap();
}

/// The same lifecycle in bare system calls (the query is a `PROCMAP_QUERY`-free no-op:
/// the kernel keeps no Win32 state to ask).
fn lifecycle_raw() {
    // SAFETY: a fresh mapping the kernel places, used and unmapped here only.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            MIB,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        libc::mprotect(p, KIB64, libc::PROT_READ | libc::PROT_WRITE);
        for a in (p as usize..p as usize + KIB64).step_by(4096) {
            std::ptr::write_volatile(a as *mut u8, 1);
        }
        libc::mprotect(p, KIB64, libc::PROT_NONE);
        libc::madvise(p, KIB64, libc::MADV_DONTNEED);
        libc::munmap(p, MIB);
    }
}

/// A lifecycle to time.
type Lifecycle<'a> = Box<dyn Fn() + Sync + 'a>;

fn run(threads: usize, iters: u64, f: &(dyn Fn() + Sync)) -> Duration {
    let per = iters.div_ceil(threads as u64);
    let start = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                start.wait();
                for _ in 0..per {
                    f();
                }
            });
        }
        start.wait();
        Instant::now()
    })
    .elapsed()
}

fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid, writable timespec and a clock Linux knows.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn design(c: &mut Criterion) {
    let variants = [
        ("plain", LinuxOptions { pool_bytes: 0, guard_regions: false }),
        ("pool", LinuxOptions { pool_bytes: 1 << 30, guard_regions: false }),
        ("guard", LinuxOptions { pool_bytes: 0, guard_regions: true }),
        ("both", LinuxOptions::default()),
    ];
    let spaces: Vec<(&str, LinuxSpace)> =
        variants.iter().map(|(n, o)| (*n, LinuxSpace::linux_with(*o).expect("linux space"))).collect();
    let mut providers: Vec<(&str, Lifecycle<'_>)> = vec![("raw", Box::new(lifecycle_raw))];
    for (name, s) in &spaces {
        providers.push((name, Box::new(move || lifecycle_space(s))));
    }
    let mut g = c.benchmark_group("linux_design");
    for (name, f) in &providers {
        for threads in [1, 2] {
            g.bench_function(format!("{name}/{threads}"), |b| b.iter_custom(|iters| run(threads, iters, f.as_ref())));
        }
        g.bench_function(format!("cpu_{name}"), |b| {
            b.iter_custom(|iters| {
                let t = process_cpu();
                run(1, iters, f.as_ref());
                process_cpu() - t
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(15)
        .configure_from_args()
}

criterion_group! { name = benches; config = config(); targets = design }
criterion_main!(benches);
