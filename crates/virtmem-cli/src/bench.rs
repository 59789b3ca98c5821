//! `virtmem bench`: the standard workloads on the simulated and Linux backends beside the
//! raw system calls that do the same work, in ns per operation, with each backend's ratio
//! to the raw calls measured in the same run. Every figure is the median of several timed
//! passes after an untimed warm-up pass; the contenders of a workload take turns, one
//! pass each, so that the machine's slow stretches do not all fall on one of them.

use std::process::ExitCode;
use std::time::Instant;

use virtmem::{AllocationType, FreeType, Protection, SimSpace, VirtualSpace};

const KB64: usize = 64 << 10;

/// How `virtmem bench` sets up the Linux backend (`virtmem::LinuxOptions`, which exists
/// on Linux only).
#[derive(Debug, Clone, Copy)]
pub struct LinuxSetup {
    /// The most address space released reservations keep mapped for reuse.
    pub pool_bytes: usize,
    /// Decommit small runs with guard markers where the kernel has them.
    pub guard_regions: bool,
}

/// One workload's result on one contender: ns per operation.
type Ns = Option<f64>;

fn time(ops: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64 / ops.max(1) as f64
}

/// The median of `values` (the mean of the two middle ones for an even count); `None`
/// when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[mid]),
        _ => Some((v[mid - 1] + v[mid]) / 2.0),
    }
}

/// Run `pass` once untimed (warm-up), then `runs` times; the per-position median of
/// the figures each pass returns.
#[cfg(test)]
fn measure<const K: usize>(runs: usize, mut pass: impl FnMut() -> [f64; K]) -> [f64; K] {
    measure_all(runs, &mut [&mut pass])[0]
}

/// Run each of `passes` once untimed (warm-up), then `runs` rounds in which each pass
/// runs once, in turn, so that a slow stretch of the machine falls on every contender
/// alike instead of on whichever ran through it; for each pass, the per-position median
/// of the figures it returned.
fn measure_all<const K: usize>(runs: usize, passes: &mut [&mut dyn FnMut() -> [f64; K]]) -> Vec<[f64; K]> {
    for pass in passes.iter_mut() {
        let _ = pass();
    }
    let mut figures: Vec<Vec<[f64; K]>> = vec![Vec::new(); passes.len()];
    for _ in 0..runs.max(1) {
        for (pass, got) in passes.iter_mut().zip(&mut figures) {
            got.push(pass());
        }
    }
    figures
        .iter()
        .map(|got| std::array::from_fn(|k| median(&got.iter().map(|f| f[k]).collect::<Vec<_>>()).unwrap_or(f64::NAN)))
        .collect()
}

/// One workload on each contender present (the raw calls, the Linux backend, the
/// simulated one), measured round-robin ([`measure_all`]): each contender's figures,
/// `None` for an absent one.
fn contenders<const K: usize>(runs: usize, list: [Option<&dyn Fn() -> [f64; K]>; 3]) -> [[Ns; K]; 3] {
    let mut present: Vec<&dyn Fn() -> [f64; K]> = list.iter().flatten().copied().collect();
    let mut refs: Vec<&mut dyn FnMut() -> [f64; K]> = present.iter_mut().map(|f| f as _).collect();
    let mut got = measure_all(runs, &mut refs).into_iter();
    list.map(|f| match f {
        Some(_) => got.next().map_or([None; K], |g| g.map(Some)),
        None => [None; K],
    })
}

fn check<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            // A benchmark whose calls fail measures nothing: stop loudly.
            errln!("error: bench: {what} failed: {e:?}");
            std::process::exit(2)
        }
    }
}

/// Reserve, commit, decommit, release a 64 KiB block, `n` times.
fn lifecycle(s: &dyn VirtualSpace, n: usize) -> f64 {
    time(n, || {
        for _ in 0..n {
            let p = check(s.alloc(0, KB64, AllocationType::RESERVE, Protection::NOACCESS), "reserve");
            check(s.alloc(p, KB64, AllocationType::COMMIT, Protection::READWRITE), "commit");
            check(s.free(p, KB64, FreeType::DECOMMIT), "decommit");
            check(s.free(p, 0, FreeType::RELEASE), "release");
        }
    })
}

/// In one 4 GiB reservation, commit then decommit a 64 KiB block at a scattered offset;
/// with `write`, one byte written at the block's start between the two (`write(p)`).
fn churn(s: &dyn VirtualSpace, n: usize, write: Option<&dyn Fn(usize)>) -> f64 {
    let base = check(s.alloc(0, 4 << 30, AllocationType::RESERVE, Protection::NOACCESS), "reserve 4 GiB");
    let ns = time(n, || {
        for i in 0..n {
            let p = base + (i * 7919 % 65536) * KB64;
            check(s.alloc(p, KB64, AllocationType::COMMIT, Protection::READWRITE), "commit");
            if let Some(w) = write {
                w(p);
            }
            check(s.free(p, KB64, FreeType::DECOMMIT), "decommit");
        }
    });
    check(s.free(base, 0, FreeType::RELEASE), "release");
    ns
}

/// `n` live 64 KiB reserve+commit allocations, then `q` queries among them, then
/// releasing them: (alloc ns, query ns, free ns).
fn live(s: &dyn VirtualSpace, n: usize, q: usize) -> (f64, f64, f64) {
    let mut blocks = Vec::with_capacity(n);
    let a = time(n, || {
        for _ in 0..n {
            blocks.push(check(
                s.alloc(0, KB64, AllocationType::RESERVE | AllocationType::COMMIT, Protection::READWRITE),
                "alloc",
            ));
        }
    });
    let mut sink = 0usize;
    let qn = time(q, || {
        for i in 0..q {
            let p = blocks[i * 7919 % n] + (i % 16) * 4096;
            sink = sink.wrapping_add(check(s.query(p), "query").region_size);
        }
    });
    std::hint::black_box(sink);
    let f = time(n, || {
        for &p in &blocks {
            check(s.free(p, 0, FreeType::RELEASE), "release");
        }
    });
    (a, qn, f)
}

/// A one-byte CPU store at `p`: the write of the churn workload on real memory.
#[cfg(target_os = "linux")]
fn store(p: usize) {
    // SAFETY: callers pass the start of a 64 KiB block of real memory (a Linux space's or
    // a bare mapping's) they have just committed read-write and nothing else uses.
    unsafe { std::ptr::write_volatile(p as *mut u8, 1) }
}

#[cfg(target_os = "linux")]
mod raw {
    //! The same work done with bare system calls, as a baseline.
    use linux_raw_sys::general::{procmap_query, procmap_query_flags};
    use rustix::mm::{madvise, mmap_anonymous, mprotect, munmap, Advice, MapFlags, MprotectFlags, ProtFlags};
    use std::ffi::c_void;

    use super::{check, time, KB64};

    fn reserve(len: usize) -> *mut c_void {
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses overlaps nothing.
        check(
            unsafe {
                mmap_anonymous(std::ptr::null_mut(), len, ProtFlags::empty(), MapFlags::PRIVATE | MapFlags::NORESERVE)
            },
            "mmap",
        )
    }

    fn commit(p: *mut c_void, len: usize) {
        // SAFETY: `p..p+len` is part of a mapping this module made and nothing else uses.
        check(unsafe { mprotect(p, len, MprotectFlags::READ | MprotectFlags::WRITE) }, "mprotect");
    }

    fn decommit(p: *mut c_void, len: usize) {
        // SAFETY: as in `commit`; dropping the pages of our own mapping is harmless.
        check(unsafe { madvise(p, len, Advice::LinuxDontNeed) }, "madvise");
        // SAFETY: as in `commit`.
        check(unsafe { mprotect(p, len, MprotectFlags::empty()) }, "mprotect");
    }

    fn release(p: *mut c_void, len: usize) {
        // SAFETY: `p..p+len` is a whole mapping this module made; no reference into it lives on.
        check(unsafe { munmap(p, len) }, "munmap");
    }

    /// The lifecycle workload on bare system calls: ns per reserve+commit+decommit+release.
    pub fn lifecycle(n: usize) -> f64 {
        time(n, || {
            for _ in 0..n {
                let p = reserve(KB64);
                commit(p, KB64);
                decommit(p, KB64);
                release(p, KB64);
            }
        })
    }

    /// The churn workload on bare system calls: ns per commit+decommit (with `write`, a
    /// one-byte store to each block between the two).
    pub fn churn(n: usize, write: bool) -> f64 {
        let base = reserve(4 << 30);
        let ns = time(n, || {
            for i in 0..n {
                // SAFETY: the offset stays inside the 4 GiB mapping.
                let p = unsafe { base.cast::<u8>().add((i * 7919 % 65536) * KB64) }.cast::<c_void>();
                commit(p, KB64);
                if write {
                    super::store(p as usize);
                }
                decommit(p, KB64);
            }
        });
        release(base, 4 << 30);
        ns
    }

    /// `n` live reserve+commit 64 KiB mappings, `q` queries among them with `query`,
    /// releasing them: (alloc ns, query ns, free ns).
    pub fn live(n: usize, q: usize, query: &Query) -> (f64, f64, f64) {
        let mut blocks = Vec::with_capacity(n);
        let a = time(n, || {
            for _ in 0..n {
                let p = reserve(KB64);
                commit(p, KB64);
                blocks.push(p as usize);
            }
        });
        let mut sink = 0usize;
        let qn = time(q, || {
            for i in 0..q {
                let p = blocks[i * 7919 % n] + (i % 16) * 4096;
                sink = sink.wrapping_add(check(query.region_size(p), "raw query"));
            }
        });
        std::hint::black_box(sink);
        let f = time(n, || {
            for &p in &blocks {
                release(p as *mut c_void, KB64);
            }
        });
        (a, qn, f)
    }

    /// The bare kernel interface answering "what mapping is at this address": the
    /// `PROCMAP_QUERY` ioctl on `/proc/self/maps` (Linux 6.11+), else reading and
    /// scanning `/proc/self/maps` text.
    pub enum Query {
        /// `PROCMAP_QUERY` on this open `/proc/self/maps`.
        Ioctl(std::fs::File),
        /// Read `/proc/self/maps` whole for every query.
        Maps,
    }

    /// `PROCMAP_QUERY`: `_IOWR('f', 17, struct procmap_query)`. linux-raw-sys has the
    /// structure but not this number; the core library declares it too, in its Linux
    /// backend, which it does not make public, so the command needs its own.
    const PROCMAP_QUERY: rustix::ioctl::Opcode = rustix::ioctl::opcode::read_write::<procmap_query>(b'f', 17);
    const _: () = assert!(std::mem::size_of::<procmap_query>() == 104);

    impl Query {
        /// The ioctl when this kernel answers it, else the text fallback.
        pub fn new() -> Query {
            if let Ok(f) = std::fs::File::open("/proc/self/maps") {
                let q = Query::Ioctl(f);
                let probe = 0u8;
                if q.region_size(&probe as *const u8 as usize).is_ok() {
                    return q;
                }
            }
            Query::Maps
        }

        /// How the baseline queries, for the report.
        pub fn describe(&self) -> &'static str {
            match self {
                Query::Ioctl(_) => "the PROCMAP_QUERY ioctl on /proc/self/maps",
                Query::Maps => "reading /proc/self/maps (this kernel has no PROCMAP_QUERY ioctl, Linux 6.11+)",
            }
        }

        /// From `addr` to the end of the mapping holding it, or to the next mapping when
        /// it is in a gap (what a region size answers).
        pub fn region_size(&self, addr: usize) -> Result<usize, String> {
            match self {
                Query::Ioctl(f) => {
                    use std::os::fd::AsRawFd;
                    let mut q = procmap_query {
                        size: std::mem::size_of::<procmap_query>() as u64,
                        // The mapping covering the address, or else the next one above it.
                        query_flags: procmap_query_flags::PROCMAP_QUERY_COVERING_OR_NEXT_VMA as u64,
                        query_addr: addr as u64,
                        vma_start: 0,
                        vma_end: 0,
                        vma_flags: 0,
                        vma_page_size: 0,
                        vma_offset: 0,
                        inode: 0,
                        dev_major: 0,
                        dev_minor: 0,
                        vma_name_size: 0,
                        build_id_size: 0,
                        vma_name_addr: 0,
                        build_id_addr: 0,
                    };
                    // SAFETY: PROCMAP_QUERY reads and writes one `struct procmap_query`,
                    // which `q` is (linux-raw-sys's, its size in `size`); no name or
                    // build-id buffers are passed.
                    let r = unsafe { libc::ioctl(f.as_raw_fd(), PROCMAP_QUERY as _, &mut q as *mut procmap_query) };
                    if r != 0 {
                        return Err(std::io::Error::last_os_error().to_string());
                    }
                    Ok(gap_or_rest(addr, q.vma_start as usize, q.vma_end as usize))
                }
                Query::Maps => maps_region_size(addr),
            }
        }
    }

    fn gap_or_rest(addr: usize, start: usize, end: usize) -> usize {
        if start <= addr {
            end - addr
        } else {
            start - addr
        }
    }

    /// [`Query::region_size`] from the text of `/proc/self/maps` (`START-END perms ...`
    /// lines, ascending).
    pub fn maps_region_size(addr: usize) -> Result<usize, String> {
        let text = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
        for line in text.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            let Some((s, e)) = range.split_once('-') else { continue };
            let (Ok(s), Ok(e)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16)) else { continue };
            if e > addr {
                return Ok(gap_or_rest(addr, s, e));
            }
        }
        Err(format!("no mapping at or above {addr:#x}"))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn both_query_baselines_see_a_fresh_mapping() {
            let p = reserve(3 * KB64);
            // Its middle read-write between two PROT_NONE pieces of our own: a mapping
            // of exactly 64 KiB no other thread's mapping can merge with.
            commit(p.cast::<u8>().wrapping_add(KB64).cast(), KB64);
            let mid = p as usize + KB64;
            let q = Query::new();
            assert_eq!(q.region_size(mid + 4096), Ok(KB64 - 4096), "{}", q.describe());
            assert_eq!(maps_region_size(mid + 4096), Ok(KB64 - 4096));
            release(p, 3 * KB64);
        }
    }
}

fn cell(ns: Ns, raw: Ns) -> String {
    match (ns, raw) {
        (Some(v), Some(r)) if r > 0.0 => format!("{v:>9.0} ns ({:>5.2}x)", v / r),
        (Some(v), _) => format!("{v:>9.0} ns        "),
        (None, _) => format!("{:>9}           ", "-"),
    }
}

/// Entry point of `virtmem bench`: `scale` multiplies every workload's iteration count,
/// `runs` is how many timed passes each figure is the median of; `linux` is how the
/// Linux backend is set up (its pool of released ranges, its guard regions).
pub fn main(scale: f64, runs: usize, linux: LinuxSetup) -> ExitCode {
    if !(scale.is_finite() && scale > 0.0 && scale <= 100.0) {
        errln!("error: --scale must be a number above 0 and at most 100");
        return ExitCode::from(2);
    }
    if !(1..=100).contains(&runs) {
        errln!("error: --runs must be between 1 and 100");
        return ExitCode::from(2);
    }
    // Each workload runs 1 + `runs` times per contender, at the sizes the standard
    // workloads name (10^5 live allocations); `--scale` below 1 makes a quicker run.
    let n = |base: usize| ((base as f64 * scale) as usize).max(10);
    let (n_life, n_churn, n_live, n_query) = (n(10_000), n(10_000), n(100_000), n(100_000));

    let sim = SimSpace::simulated();
    #[cfg(target_os = "linux")]
    let setup = linux;
    #[cfg(target_os = "linux")]
    let linux = match virtmem::LinuxSpace::linux_with(virtmem::LinuxOptions {
        pool_bytes: setup.pool_bytes,
        guard_regions: setup.guard_regions,
    }) {
        Ok(s) => Some(s),
        // The environment asks for something that is not a kernel feature (the library
        // has named the word on stderr): a benchmark without its Linux column would
        // look like a successful run of the fallbacks that were asked for.
        Err(virtmem::Error::InvalidParameter) => {
            errln!(
                "error: {} names something that is not a kernel feature (see above)",
                virtmem::backend::linux::WITHOUT_ENV
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            errln!("note: Linux backend unavailable ({e}); its column is empty");
            None
        }
    };
    #[cfg(not(target_os = "linux"))]
    let linux: Option<SimSpace> = {
        let _ = linux;
        None
    };
    #[cfg(target_os = "linux")]
    let query = raw::Query::new();
    #[cfg(target_os = "linux")]
    let query_baseline = query.describe();
    #[cfg(not(target_os = "linux"))]
    let query_baseline = "none on this system";
    // Reading /proc/self/maps costs far more than a query: fewer raw queries then.
    #[cfg(target_os = "linux")]
    let n_raw_query = if matches!(query, raw::Query::Maps) { (n_query / 20).max(10) } else { n_query };

    let mut rows: Vec<(String, Ns, Ns, Ns)> = Vec::new();

    // Each closure is bound before it is borrowed: `Some(&|| ...)` extends the temporary's
    // life only from Rust 1.89 on (the MSRV is older).
    #[cfg(target_os = "linux")]
    let raw_life = || [raw::lifecycle(n_life)];
    #[cfg(target_os = "linux")]
    let raw_life: Option<&dyn Fn() -> [f64; 1]> = Some(&raw_life);
    #[cfg(not(target_os = "linux"))]
    let raw_life: Option<&dyn Fn() -> [f64; 1]> = None;
    let lin_life = linux.as_ref().map(|l| move || [lifecycle(l, n_life)]);
    let [[raw], [lin], [s]] = contenders(
        runs,
        [raw_life, lin_life.as_ref().map(|f| f as &dyn Fn() -> [f64; 1]), Some(&|| [lifecycle(&sim, n_life)])],
    );
    rows.push((format!("lifecycle: reserve+commit+decommit+release 64 KiB (x{n_life})"), raw, lin, s));

    #[cfg(target_os = "linux")]
    let raw_churn = || [raw::churn(n_churn, false)];
    #[cfg(target_os = "linux")]
    let raw_churn: Option<&dyn Fn() -> [f64; 1]> = Some(&raw_churn);
    #[cfg(not(target_os = "linux"))]
    let raw_churn: Option<&dyn Fn() -> [f64; 1]> = None;
    let lin_churn = linux.as_ref().map(|l| move || [churn(l, n_churn, None)]);
    let [[raw], [lin], [s]] = contenders(
        runs,
        [raw_churn, lin_churn.as_ref().map(|f| f as &dyn Fn() -> [f64; 1]), Some(&|| [churn(&sim, n_churn, None)])],
    );
    rows.push((format!("churn: commit+decommit 64 KiB in a 4 GiB reservation (x{n_churn})"), raw, lin, s));

    // The same with a one-byte write to each block: then the decommit has a page to drop.
    // On real memory a CPU store (a Linux space's `write` is a system call); on the
    // simulated backend its `write`.
    #[cfg(target_os = "linux")]
    let raw_churn_w = || [raw::churn(n_churn, true)];
    #[cfg(target_os = "linux")]
    let raw_churn_w: Option<&dyn Fn() -> [f64; 1]> = Some(&raw_churn_w);
    #[cfg(not(target_os = "linux"))]
    let raw_churn_w: Option<&dyn Fn() -> [f64; 1]> = None;
    #[cfg(target_os = "linux")]
    let lin_store: &dyn Fn(usize) = &store;
    #[cfg(not(target_os = "linux"))]
    let lin_store: &dyn Fn(usize) = &|_| {};
    let lin_churn_w = linux.as_ref().map(|l| move || [churn(l, n_churn, Some(lin_store))]);
    let sim_write = |p: usize| check(sim.write(p, &[1]), "write");
    let [[raw], [lin], [s]] = contenders(
        runs,
        [
            raw_churn_w,
            lin_churn_w.as_ref().map(|f| f as &dyn Fn() -> [f64; 1]),
            Some(&|| [churn(&sim, n_churn, Some(&sim_write))]),
        ],
    );
    rows.push((format!("churn, each piece written: commit+write+decommit 64 KiB (x{n_churn})"), raw, lin, s));

    let triple = |(a, q, f): (f64, f64, f64)| [a, q, f];
    #[cfg(target_os = "linux")]
    let raw_live = move || triple(raw::live(n_live, n_raw_query, &query));
    #[cfg(target_os = "linux")]
    let raw_live: Option<&dyn Fn() -> [f64; 3]> = Some(&raw_live);
    #[cfg(not(target_os = "linux"))]
    let raw_live: Option<&dyn Fn() -> [f64; 3]> = None;
    let lin_live = linux.as_ref().map(|l| move || triple(live(l, n_live, n_query)));
    let [raw, lin, s] = contenders(
        runs,
        [
            raw_live,
            lin_live.as_ref().map(|f| f as &dyn Fn() -> [f64; 3]),
            Some(&|| triple(live(&sim, n_live, n_query))),
        ],
    );
    rows.push((format!("{n_live} live allocations: reserve+commit 64 KiB each"), raw[0], lin[0], s[0]));
    rows.push((format!("query among {n_live} live allocations (x{n_query})"), raw[1], lin[1], s[1]));
    rows.push((format!("{n_live} live allocations: release each"), raw[2], lin[2], s[2]));

    outln!(
        "virtmem bench (ns per operation, the median of {runs} timed run(s) after a warm-up, the contenders taking turns; ratio = backend / raw system calls, measured in this run)"
    );
    outln!("{:<66} {:>20} {:>20} {:>20}", "workload", "raw syscalls", "linux backend", "simulated");
    for (name, raw, lin, sim) in rows {
        outln!("{name:<66} {:>20} {:>20} {:>20}", cell(raw, None), cell(lin, raw), cell(sim, raw));
    }
    outln!("raw syscalls: mmap(PROT_NONE) / mprotect / madvise(DONTNEED)+mprotect / munmap");
    #[cfg(target_os = "linux")]
    let raw_count = if n_raw_query == n_query { String::new() } else { format!(", {n_raw_query} of them") };
    #[cfg(not(target_os = "linux"))]
    let raw_count = String::new();
    outln!("raw query baseline: {query_baseline}{raw_count}");
    #[cfg(target_os = "linux")]
    if let Some(l) = &linux {
        // What the backend was really made with, and whether this kernel has guard regions.
        let b = l.backend();
        let o = b.options();
        let capped = if b.pool_cap() < o.pool_bytes {
            format!(" (asked for {}: the address-space limit caps it)", o.pool_bytes)
        } else {
            String::new()
        };
        outln!(
            "linux backend: pool of {} bytes{capped}, guard regions {} ({})",
            b.pool_cap(),
            if o.guard_regions { "asked for" } else { "off" },
            if b.uses_guard_regions() { "in use" } else { "not in use" }
        );
        let missing = b.missing_features();
        outln!(
            "linux backend does without: {} (kernel features missing or withheld by VIRTMEM_LINUX_WITHOUT)",
            if missing.is_empty() { "nothing".to_string() } else { missing.join(", ") }
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        // One outlier (a preempted run) does not move it.
        assert_eq!(median(&[100.0, 101.0, 99.0, 1e9, 100.5]), Some(100.5));
    }

    #[test]
    fn measure_warms_up_then_takes_each_figures_median() {
        let mut calls = 0;
        let figures = [[1e9, 0.0], [3.0, 30.0], [1.0, 10.0], [2.0, 20.0]];
        let got = measure(3, || {
            calls += 1;
            figures[calls - 1]
        });
        assert_eq!(calls, 4, "one warm-up pass and three timed ones");
        assert_eq!(got, [2.0, 20.0], "the warm-up's figures are left out");
    }

    #[test]
    fn contenders_take_turns_and_absent_ones_give_nothing() {
        let order = std::cell::RefCell::new(Vec::new());
        let a = || {
            order.borrow_mut().push('a');
            [1.0, 2.0]
        };
        let c = || {
            order.borrow_mut().push('c');
            [5.0, 6.0]
        };
        let got = contenders(2, [Some(&a as &dyn Fn() -> [f64; 2]), None, Some(&c)]);
        assert_eq!(got, [[Some(1.0), Some(2.0)], [None, None], [Some(5.0), Some(6.0)]]);
        // Warm-ups first, then one pass of each present contender per round.
        assert_eq!(*order.borrow(), ['a', 'c', 'a', 'c', 'a', 'c']);
    }
}
