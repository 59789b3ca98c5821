//! What the kernel's side of a Linux-backend call costs, with bare system calls only
//! (no space): thread CPU time per call, several rounds, for the questions behind the
//! `ops_protect` and `tib_*` ratios in `BENCHMARKS.md`.
//!
//! ```sh
//! cargo build --release --example linux_kernel_costs
//! target/release/examples/linux_kernel_costs protect   # one page RW -> R, by layout
//! target/release/examples/linux_kernel_costs split     # the same when it splits a mapping, by size
//! target/release/examples/linux_kernel_costs tib       # 1 TiB mmap/munmap, by address
//! target/release/examples/linux_kernel_costs after     # user code right after a system call
//! ```
//!
//! `protect`: 1000 committed first pages of 64 KiB reservations 128 KiB apart, never
//! written: as separate mappings (the `ops` benchmark's `raw`), punched into one big
//! `PROT_NONE` mapping (the Linux backend's pooled layout), with a guard-marked second
//! page (what `ops_protect/linux` meets in the full run; the call covers both pages), and
//! with page tables but no marker. `split`: one page in the middle of a read-write
//! mapping of 64 KiB, 2 MiB or 16 MiB made read-only (a split) and back (a merge), with
//! and without page tables. `tib`: 8 mappings of 1 TiB by `mmap(NULL)`, at the same
//! addresses again, and bottom-up from 64 KiB next to each other or 64 KiB apart.
//! `after`: a fixed piece of user code (binary searches in 512 KiB) alone, after
//! `getppid` and after a 1 TiB `mmap` or `munmap`.

use libc::{c_void, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_NORESERVE, MAP_PRIVATE, PROT_NONE, PROT_READ, PROT_WRITE};

const PAGE: usize = 4096;
const GRANULE: usize = 64 << 10;
const TIB: usize = 1 << 40;
const MADV_GUARD_INSTALL: i32 = 102;
const MADV_GUARD_REMOVE: i32 = 103;

/// This thread's CPU time, in nanoseconds.
fn cpu_ns() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// A fresh inaccessible mapping of `len` bytes, anywhere (`at` 0) or exactly at `at`.
fn map(at: usize, len: usize) -> usize {
    let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | if at != 0 { MAP_FIXED_NOREPLACE } else { 0 };
    // SAFETY: a new anonymous mapping; MAP_FIXED_NOREPLACE never replaces one.
    let p = unsafe { libc::mmap(at as *mut c_void, len, PROT_NONE, flags, -1, 0) };
    assert!(p != libc::MAP_FAILED && (at == 0 || p as usize == at), "mmap");
    p as usize
}

fn unmap(at: usize, len: usize) {
    // SAFETY: only mappings this program made, which nothing else uses.
    assert_eq!(unsafe { libc::munmap(at as *mut c_void, len) }, 0, "munmap");
}

fn protect(at: usize, len: usize, prot: i32) {
    // SAFETY: only pages of this program's own mappings, which nothing reads or writes.
    assert_eq!(unsafe { libc::mprotect(at as *mut c_void, len, prot) }, 0, "mprotect");
}

fn advise(at: usize, len: usize, advice: i32) {
    // SAFETY: guard markers on this program's own pages, which hold no data.
    assert_eq!(unsafe { libc::madvise(at as *mut c_void, len, advice) }, 0, "madvise {advice}");
}

/// `0..n` in a fixed shuffled order.
fn shuffled(n: usize, mut x: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// Nanoseconds per `mprotect(base + 0, len, PROT_READ)` over `bases` in random order,
/// in batches of 256, each put back read-write outside the clock.
fn time_protect(bases: &[usize], len: usize, seed: u64) -> f64 {
    let mut total = 0.0;
    for batch in shuffled(bases.len(), seed).chunks(256) {
        let t = cpu_ns();
        for &i in batch {
            protect(bases[i], len, PROT_READ);
        }
        total += cpu_ns() - t;
        for &i in batch {
            protect(bases[i], len, PROT_READ | PROT_WRITE);
        }
    }
    total / bases.len() as f64
}

fn protect_layouts() {
    const N: usize = 1000;
    let layout = |pooled: bool| -> Vec<usize> {
        let span = map(0, 2 * N * GRANULE);
        if !pooled {
            unmap(span, 2 * N * GRANULE);
        }
        (0..N)
            .map(|i| {
                let b = span + 2 * i * GRANULE;
                if !pooled {
                    map(b, GRANULE);
                }
                protect(b, PAGE, PROT_READ | PROT_WRITE);
                b
            })
            .collect()
    };
    let separate = layout(false);
    let pooled = layout(true);
    let marked = layout(true);
    for &b in &marked {
        protect(b + PAGE, PAGE, PROT_READ | PROT_WRITE);
        advise(b + PAGE, PAGE, MADV_GUARD_INSTALL);
    }
    let tables = layout(true);
    for &b in &tables {
        advise(b, PAGE, MADV_GUARD_INSTALL);
        advise(b, PAGE, MADV_GUARD_REMOVE);
    }
    let separate_tables = layout(false);
    for &b in &separate_tables {
        advise(b, PAGE, MADV_GUARD_INSTALL);
        advise(b, PAGE, MADV_GUARD_REMOVE);
    }
    for round in 0..5 {
        let seed = 77 + round;
        println!(
            "round {round}: separate {:.0}, pooled {:.0}, marked neighbour (2 pages) {:.0}, \
             pooled with page tables {:.0}, separate with page tables {:.0} ns",
            time_protect(&separate, PAGE, seed),
            time_protect(&pooled, PAGE, seed),
            time_protect(&marked, 2 * PAGE, seed),
            time_protect(&tables, PAGE, seed),
            time_protect(&separate_tables, PAGE, seed),
        );
    }
}

fn split_sizes() {
    const N: usize = 200;
    for round in 0..3 {
        let mut line = String::new();
        for len in [GRANULE, 2 << 20, 16 << 20] {
            for tables in [false, true] {
                let bases: Vec<usize> = (0..N)
                    .map(|_| {
                        let b = map(0, len + 2 * GRANULE) + GRANULE;
                        protect(b, len, PROT_READ | PROT_WRITE);
                        if tables {
                            advise(b + len / 2 + 2 * PAGE, PAGE, MADV_GUARD_INSTALL);
                        }
                        b
                    })
                    .collect();
                let (mut split, mut merge) = (0.0, 0.0);
                for _ in 0..10 {
                    for &b in &bases {
                        let t = cpu_ns();
                        protect(b + len / 2, PAGE, PROT_READ);
                        let m = cpu_ns();
                        protect(b + len / 2, PAGE, PROT_READ | PROT_WRITE);
                        split += m - t;
                        merge += cpu_ns() - m;
                    }
                }
                for &b in &bases {
                    unmap(b - GRANULE, len + 2 * GRANULE);
                }
                let calls = (10 * N) as f64;
                let tag = if tables { " with page tables" } else { "" };
                line += &format!(" {} KiB{tag}: {:.0}/{:.0};", len >> 10, split / calls, merge / calls);
            }
        }
        println!("round {round} (split/merge ns):{line}");
    }
}

fn tib_addresses() {
    const K: usize = 8;
    for round in 0..5 {
        // mmap(NULL), again at those addresses, bottom-up adjacent, bottom-up 64 KiB apart.
        let mut sums = [(0.0, 0.0); 4];
        let mut chosen = Vec::new();
        for _ in 0..32 {
            for (way, sum) in sums.iter_mut().enumerate() {
                let t = cpu_ns();
                let made: Vec<usize> = (0..K)
                    .map(|j| match way {
                        0 => map(0, TIB),
                        1 => map(chosen[j], TIB),
                        2 => map(GRANULE + j * TIB, TIB),
                        _ => map(GRANULE + j * (TIB + GRANULE), TIB),
                    })
                    .collect();
                sum.0 += cpu_ns() - t;
                if way == 0 {
                    chosen.clone_from(&made);
                }
                let t = cpu_ns();
                for &a in &made {
                    unmap(a, TIB);
                }
                sum.1 += cpu_ns() - t;
            }
        }
        let n = (32 * K) as f64;
        let [a, b, c, d] = sums.map(|(m, u)| format!("{:.0}/{:.0}", m / n, u / n));
        println!(
            "round {round} (mmap/munmap ns): kernel's choice {a}, same addresses fixed {b}, \
             bottom-up adjacent {c}, bottom-up 64 KiB apart {d}"
        );
    }
}

/// Eight binary searches in `sorted` at pseudo-random keys.
#[inline(never)]
fn user_work(sorted: &[u64], x: &mut u64) -> usize {
    let mut found = 0;
    for _ in 0..8 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        found += sorted.partition_point(|&v| v <= *x % (sorted.len() as u64 * 64));
    }
    found
}

fn after_syscalls() {
    const N: usize = 4000;
    let sorted: Vec<u64> = (0..65536u64).map(|i| i * 64).collect();
    let mut x = 0x1234_5678u64;
    let mut sink = 0;
    for round in 0..4 {
        let per = |t: f64, n: usize| (cpu_ns() - t) / n as f64;
        let t = cpu_ns();
        for _ in 0..N {
            sink += user_work(&sorted, &mut x);
        }
        let work = per(t, N);
        let t = cpu_ns();
        for _ in 0..N {
            // SAFETY: getppid has no preconditions.
            unsafe { libc::getppid() };
        }
        let trivial = per(t, N);
        let t = cpu_ns();
        for _ in 0..N {
            // SAFETY: as above.
            unsafe { libc::getppid() };
            sink += user_work(&sorted, &mut x);
        }
        let after_trivial = per(t, N) - trivial;
        let t = cpu_ns();
        for _ in 0..N / 8 {
            unmap(map(0, TIB), TIB);
        }
        let huge = per(t, N / 8);
        let t = cpu_ns();
        for _ in 0..N / 8 {
            let a = map(0, TIB);
            sink += user_work(&sorted, &mut x);
            unmap(a, TIB);
            sink += user_work(&sorted, &mut x);
        }
        let after_huge = (per(t, N / 8) - huge) / 2.0;
        println!(
            "round {round}: the user code alone {work:.0} ns, after getppid {after_trivial:.0} ns, \
             after a 1 TiB mmap or munmap {after_huge:.0} ns"
        );
    }
    std::hint::black_box(sink);
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("protect") => protect_layouts(),
        Some("split") => split_sizes(),
        Some("tib") => tib_addresses(),
        Some("after") => after_syscalls(),
        _ => eprintln!("usage: linux_kernel_costs protect|split|tib|after"),
    }
}
