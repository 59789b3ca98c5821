//! `virtmem bench`: the standard workloads on the simulated and Linux backends beside the
//! raw system calls that do the same work, in ns per operation, with each backend's ratio
//! to the raw calls measured in the same run.

use std::process::ExitCode;
use std::time::Instant;

use virtmem::{AllocationType, FreeType, Protection, SimSpace, VirtualSpace};

const KB64: usize = 64 << 10;

/// One workload's result on one contender: ns per operation.
type Ns = Option<f64>;

fn time(ops: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64 / ops.max(1) as f64
}

fn check<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            // A benchmark whose calls fail measures nothing: stop loudly.
            eprintln!("error: bench: {what} failed: {e:?}");
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

/// In one 4 GiB reservation, commit then decommit a 64 KiB block at a scattered offset.
fn churn(s: &dyn VirtualSpace, n: usize) -> f64 {
    let base = check(s.alloc(0, 4 << 30, AllocationType::RESERVE, Protection::NOACCESS), "reserve 4 GiB");
    let ns = time(n, || {
        for i in 0..n {
            let p = base + (i * 7919 % 65536) * KB64;
            check(s.alloc(p, KB64, AllocationType::COMMIT, Protection::READWRITE), "commit");
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

#[cfg(target_os = "linux")]
mod raw {
    //! The same work done with bare system calls, as a baseline.
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

    pub fn churn(n: usize) -> f64 {
        let base = reserve(4 << 30);
        let ns = time(n, || {
            for i in 0..n {
                // SAFETY: the offset stays inside the 4 GiB mapping.
                let p = unsafe { base.cast::<u8>().add((i * 7919 % 65536) * KB64) }.cast::<c_void>();
                commit(p, KB64);
                decommit(p, KB64);
            }
        });
        release(base, 4 << 30);
        ns
    }

    pub fn live(n: usize) -> (f64, f64) {
        let mut blocks = Vec::with_capacity(n);
        let a = time(n, || {
            for _ in 0..n {
                let p = reserve(KB64);
                commit(p, KB64);
                blocks.push(p);
            }
        });
        let f = time(n, || {
            for &p in &blocks {
                release(p, KB64);
            }
        });
        (a, f)
    }
}

fn cell(ns: Ns, raw: Ns) -> String {
    match (ns, raw) {
        (Some(v), Some(r)) if r > 0.0 => format!("{v:>9.0} ns ({:>5.2}x)", v / r),
        (Some(v), _) => format!("{v:>9.0} ns        "),
        (None, _) => format!("{:>9}           ", "-"),
    }
}

/// Entry point of `virtmem bench`.
pub fn main(scale: f64) -> ExitCode {
    if !(scale.is_finite() && scale > 0.0 && scale <= 100.0) {
        eprintln!("error: --scale must be a number above 0 and at most 100");
        return ExitCode::from(2);
    }
    let n = |base: usize| ((base as f64 * scale) as usize).max(10);
    let (n_life, n_churn, n_live, n_query) = (n(10_000), n(10_000), n(100_000), n(100_000));

    let sim = SimSpace::simulated();
    #[cfg(target_os = "linux")]
    let linux = match virtmem::LinuxSpace::linux() {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("note: Linux backend unavailable ({e}); its column is empty");
            None
        }
    };
    #[cfg(not(target_os = "linux"))]
    let linux: Option<SimSpace> = None;

    let mut rows: Vec<(String, Ns, Ns, Ns)> = Vec::new();

    #[cfg(target_os = "linux")]
    let raw_life = Some(raw::lifecycle(n_life));
    #[cfg(not(target_os = "linux"))]
    let raw_life = None;
    let lin = linux.as_ref().map(|l| lifecycle(l, n_life));
    rows.push((
        format!("lifecycle: reserve+commit+decommit+release 64 KiB (x{n_life})"),
        raw_life,
        lin,
        Some(lifecycle(&sim, n_life)),
    ));

    #[cfg(target_os = "linux")]
    let raw_churn = Some(raw::churn(n_churn));
    #[cfg(not(target_os = "linux"))]
    let raw_churn = None;
    let lin = linux.as_ref().map(|l| churn(l, n_churn));
    rows.push((
        format!("churn: commit+decommit 64 KiB in a 4 GiB reservation (x{n_churn})"),
        raw_churn,
        lin,
        Some(churn(&sim, n_churn)),
    ));

    #[cfg(target_os = "linux")]
    let (raw_a, raw_f) = {
        let (a, f) = raw::live(n_live);
        (Some(a), Some(f))
    };
    #[cfg(not(target_os = "linux"))]
    let (raw_a, raw_f) = (None, None);
    let lin = linux.as_ref().map(|l| live(l, n_live, n_query));
    let s = live(&sim, n_live, n_query);
    rows.push((format!("{n_live} live allocations: reserve+commit 64 KiB each"), raw_a, lin.map(|l| l.0), Some(s.0)));
    rows.push((format!("query among {n_live} live allocations (x{n_query})"), None, lin.map(|l| l.1), Some(s.1)));
    rows.push((format!("{n_live} live allocations: release each"), raw_f, lin.map(|l| l.2), Some(s.2)));

    println!("virtmem bench (ns per operation; ratio = backend / raw system calls, measured in this run)");
    println!("{:<66} {:>20} {:>20} {:>20}", "workload", "raw syscalls", "linux backend", "simulated");
    for (name, raw, lin, sim) in rows {
        println!("{name:<66} {:>20} {:>20} {:>20}", cell(raw, None), cell(lin, raw), cell(sim, raw));
    }
    println!("raw syscalls: mmap(PROT_NONE) / mprotect / madvise(DONTNEED)+mprotect / munmap; queries have no raw equivalent here");
    ExitCode::SUCCESS
}
