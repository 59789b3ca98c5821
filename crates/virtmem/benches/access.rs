//! What a checked access costs on the simulated backend (`SimSpace::read`, `write`,
//! `execute`), beside two baselines doing the same copies, in the same run:
//!
//! - `vec`: the same bytes copied from or to a plain `Vec<u8>` as large as the simulated
//!   reservations (an address's byte at its offset from the first reservation's base): no
//!   check at all, the memcpy floor;
//! - `naive`: a simple emulator's memory, written only for this benchmark: a
//!   `HashMap<u64, _>` page table (the standard hasher) whose entries hold a protection
//!   byte, checked on every access, and the page's `Box<[u8; 4096]>`, made at its first
//!   write; an access crossing two pages is split in two (both pages checked first).
//!
//! Groups (each function `<contender>/<case>`):
//!
//! - `access_read8`, `access_write8`, `access_exec8`: an aligned 8-byte read, write or
//!   instruction fetch inside one committed page (read-write; execute-read-write for the
//!   fetch), (`same`) on the same page again and again, (`4096pages`) on pages picked at
//!   random among the 4096 committed pages of one 16 MiB reservation, every page written
//!   once before, (`1e4res`) on the one committed and written page of reservations picked
//!   at random among 10^4 of 64 KiB each; the offset in the page is random too;
//! - `access_copy4k`: a whole page read (`read`) or written (`write`), aligned, on the
//!   `4096pages` layout;
//! - `access_cross`: an 8-byte read straddling two pages (4 bytes on each), on the
//!   `4096pages` layout (1 in 16 of those page pairs straddle two 64 KiB blocks too);
//! - `access_first_write`: an 8-byte write to a committed page never written, whose
//!   storage the write makes, 256 pages at a time among 4096, undone outside the clock
//!   (simulated: decommit and recommit; `naive`: the page's box dropped; `vec`: pages of
//!   a 16 MiB anonymous mapping, what a fresh `Vec<u8>` of that size is, given back
//!   with `MADV_DONTNEED`, so that the write takes the kernel's page fault).
//!
//! The simulated space checks an access inside a 64 KiB block it granted against the
//! grant, under a lock of one of its 32 parts; any other access goes through the engine
//! (the space's lock, the rules, then a grant of the block). The backend keeps 128 grant
//! slots at first, growing up to 16 384 as grants evict each other: all three cases
//! (one block, 256 blocks and 10^4 blocks) are granted once warmed up.
//!
//! Thread CPU time, as `ops` and `scale` (`common::ThreadCpu`). Warm-up 0.2 s and
//! measurement 1 s per function (set for the whole run, so that criterion's own
//! `--warm-up-time` and `--measurement-time` still override them): ~40 functions, under a
//! minute and a half with the defaults.
//!
//! `VIRTMEM_PROFILE=<op>/<case>` (`op` one of `read8`, `write8`, `exec8`; `case` one of
//! `same`, `4096pages`, `1e4res`) instead runs that function's accesses without
//! criterion, for callgrind and cachegrind: the same layouts and the same addresses as
//! the criterion run, one round of the `ADDRS` addresses outside the clock (but inside
//! `profile_sim` or `profile_naive`, so in callgrind's count: the difference of two runs
//! takes it out), then
//! `VIRTMEM_PROFILE_ROUNDS` rounds (default 4) in `profile_sim`, then as many in
//! `profile_naive` (`--toggle-collect='*profile_sim*'` or `'*profile_naive*'`). The
//! difference between a run of 2R rounds and one of R, divided by R × `ADDRS`, is the
//! cost of one access with setup and warm-up left out. Prints thread CPU time per
//! access for each. `VIRTMEM_PROFILE_ONLY=sim` (or `naive`) runs that contender alone, for
//! `valgrind --tool=cachegrind`, which counts the whole program.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use common::{batched, Rng, ThreadCpu, GRANULE, PAGE};
use criterion::measurement::Measurement;
use criterion::{criterion_group, BenchmarkGroup, BenchmarkId};
use virtmem::{AllocationType as T, FreeType, Protection as P, SimSpace};

type Criterion = criterion::Criterion<ThreadCpu>;

/// Reservations of the `1e4res` case.
const RESERVATIONS: usize = 10_000;
/// Committed pages of the `4096pages` case (16 MiB).
const PAGES: usize = 4096;
/// Addresses cycled through by each benchmark (a power of two).
const ADDRS: usize = 1 << 16;

/// A contender's memory. Every method panics on a fault: a benchmark that silently
/// measured an error path would measure nothing.
trait Memory {
    /// Copy `buf.len()` bytes at `addr` into `buf`, checked for read access.
    fn read(&mut self, addr: usize, buf: &mut [u8]);
    /// Copy `data` to `addr`, checked for write access.
    fn write(&mut self, addr: usize, data: &[u8]);
    /// Copy `buf.len()` bytes at `addr` into `buf`, checked for execute access.
    fn exec(&mut self, addr: usize, buf: &mut [u8]);
}

/// The simulated space: `SimSpace::read`, `write`, `execute`.
struct Sim(SimSpace);

impl Memory for Sim {
    fn read(&mut self, addr: usize, buf: &mut [u8]) {
        self.0.read(addr, buf).expect("read");
    }
    fn write(&mut self, addr: usize, data: &[u8]) {
        self.0.write(addr, data).expect("write");
    }
    fn exec(&mut self, addr: usize, buf: &mut [u8]) {
        self.0.execute(addr, buf).expect("execute");
    }
}

/// A plain vector standing for the address range from `base` on: no check.
struct Flat {
    base: usize,
    bytes: Vec<u8>,
}

impl Memory for Flat {
    fn read(&mut self, addr: usize, buf: &mut [u8]) {
        let o = addr - self.base;
        buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
    }
    fn write(&mut self, addr: usize, data: &[u8]) {
        let o = addr - self.base;
        self.bytes[o..o + data.len()].copy_from_slice(data);
    }
    fn exec(&mut self, addr: usize, buf: &mut [u8]) {
        self.read(addr, buf);
    }
}

/// `Naive` protection bits.
const R: u8 = 1;
const W: u8 = 2;
const X: u8 = 4;

/// A page of the naive emulator: its protection and its contents (none until written:
/// reads as zeros).
struct NaivePage {
    prot: u8,
    bytes: Option<Box<[u8; PAGE]>>,
}

/// A simple emulator's memory: a page table in a hash map, a protection byte per page.
#[derive(Default)]
struct Naive {
    pages: HashMap<u64, NaivePage>,
}

#[cold]
#[inline(never)]
fn fault(addr: usize) -> ! {
    panic!("access violation at {addr:#x}")
}

impl Naive {
    /// Commit `len` bytes at `addr` (page-aligned) with protection `prot`.
    fn commit(&mut self, addr: usize, len: usize, prot: u8) {
        for p in addr / PAGE..(addr + len) / PAGE {
            self.pages.insert(p as u64, NaivePage { prot, bytes: None });
        }
    }

    /// The page holding `addr`, if it allows `need`.
    fn page(&mut self, addr: usize, need: u8) -> &mut NaivePage {
        match self.pages.get_mut(&((addr / PAGE) as u64)) {
            Some(p) if p.prot & need != 0 => p,
            _ => fault(addr),
        }
    }

    /// Copy out of one page.
    fn load(&mut self, addr: usize, buf: &mut [u8], need: u8) {
        let off = addr % PAGE;
        match &self.page(addr, need).bytes {
            Some(b) => buf.copy_from_slice(&b[off..off + buf.len()]),
            None => buf.fill(0),
        }
    }

    /// Copy into one page, making its storage at its first write.
    fn store(&mut self, addr: usize, data: &[u8]) {
        let off = addr % PAGE;
        let b = self.page(addr, W).bytes.get_or_insert_with(|| Box::new([0; PAGE]));
        b[off..off + data.len()].copy_from_slice(data);
    }

    /// An access of at most a page: within one page, or split in two with both pages
    /// checked before a byte is copied.
    fn access(&mut self, addr: usize, len: usize, need: u8, mut copy: impl FnMut(&mut Self, usize, Range)) {
        let off = addr % PAGE;
        if off + len <= PAGE {
            return copy(self, addr, 0..len);
        }
        let split = PAGE - off;
        self.page(addr + split, need);
        self.page(addr, need);
        copy(self, addr, 0..split);
        copy(self, addr + split, split..len);
    }
}

type Range = std::ops::Range<usize>;

impl Memory for Naive {
    fn read(&mut self, addr: usize, buf: &mut [u8]) {
        self.access(addr, buf.len(), R, |m, a, r| m.load(a, &mut buf[r], R));
    }
    fn write(&mut self, addr: usize, data: &[u8]) {
        self.access(addr, data.len(), W, |m, a, r| m.store(a, &data[r]));
    }
    fn exec(&mut self, addr: usize, buf: &mut [u8]) {
        self.access(addr, buf.len(), X, |m, a, r| m.load(a, &mut buf[r], X));
    }
}

/// One case's memory for each contender, laid out alike, and the addresses to access.
struct Case {
    name: &'static str,
    sim: Sim,
    vec: Flat,
    naive: Naive,
    /// The committed, written pages, in address order.
    pages: Vec<usize>,
}

impl Case {
    /// `span` bytes reserved from one base (as `count` reservations of `span / count`),
    /// the pages at `pages(base)` committed with `prot` and written once.
    fn new(name: &'static str, span: usize, count: usize, prot: P, pages: impl Fn(usize) -> Vec<usize>) -> Case {
        let space = SimSpace::simulated();
        let base = space.alloc(0, span, T::RESERVE, P::NOACCESS).expect("reserve");
        if count > 1 {
            space.free(base, 0, FreeType::RELEASE).expect("release");
            for i in 0..count {
                space.alloc(base + i * (span / count), span / count, T::RESERVE, P::NOACCESS).expect("reserve");
            }
        }
        let naive_prot = if prot == P::EXECUTE_READWRITE { R | W | X } else { R | W };
        let mut case = Case {
            name,
            sim: Sim(space),
            vec: Flat { base, bytes: vec![0; span] },
            naive: Naive::default(),
            pages: pages(base),
        };
        let fill = [0x5Au8; PAGE];
        for &p in &case.pages {
            case.sim.0.alloc(p, PAGE, T::COMMIT, prot).expect("commit");
            case.naive.commit(p, PAGE, naive_prot);
            case.sim.write(p, &fill);
            case.vec.write(p, &fill);
            case.naive.write(p, &fill);
        }
        case
    }

    /// The three layouts of the 8-byte groups, their pages committed with `prot`.
    fn all(prot: P) -> [Case; 3] {
        [
            Case::new("same", GRANULE, 1, prot, |b| vec![b]),
            Case::new("4096pages", PAGES * PAGE, 1, prot, |b| (0..PAGES).map(|i| b + i * PAGE).collect()),
            // One page per reservation, at a different place in each, so that the pages
            // are not all 64 KiB apart (the same cache sets) in the vector.
            Case::new("1e4res", RESERVATIONS * GRANULE, RESERVATIONS, prot, |b| {
                (0..RESERVATIONS).map(|i| b + i * GRANULE + (i * 7 % 16) * PAGE).collect()
            }),
        ]
    }

    /// `ADDRS` addresses on pages picked at random, at random offsets that are multiples
    /// of `align` and leave `len` bytes in the page; with `cross`, 4 bytes before the end
    /// of the page instead (the page after it is written too: the picks leave the last).
    fn addrs(&self, rng: &mut Rng, len: usize, align: usize, cross: bool) -> Vec<usize> {
        let n = if cross { self.pages.len() - 1 } else { self.pages.len() };
        (0..ADDRS)
            .map(|_| {
                let p = self.pages[rng.below(n)];
                if cross {
                    p + PAGE - 4
                } else {
                    p + rng.below((PAGE - len) / align + 1) * align
                }
            })
            .collect()
    }
}

/// Benchmark `op` (8 bytes at a time) on `m` as function `id` of `g`, cycling through
/// `addrs`.
fn bench8<M: Memory, Me: Measurement>(
    g: &mut BenchmarkGroup<'_, Me>,
    id: BenchmarkId,
    m: &mut M,
    addrs: &[usize],
    op: impl Fn(&mut M, usize, &mut [u8; 8]),
) {
    g.bench_function(id, |b| {
        let mut i = 0;
        let mut buf = [0u8; 8];
        b.iter(|| {
            i = (i + 1) & (ADDRS - 1);
            // (All 8 bytes stored at once: a store of one byte of them, as first written,
            // cannot be forwarded to the 8-byte load of a write that follows at once, and
            // the wait had added ~7 ns to `vec`'s write.)
            buf = (i as u64).to_le_bytes();
            op(m, addrs[i], &mut buf);
            black_box(&buf);
        })
    });
}

/// `read`, `write`, `exec` of 8 bytes, as [`bench8`] takes them.
fn read8<M: Memory>(m: &mut M, a: usize, buf: &mut [u8; 8]) {
    m.read(a, buf)
}
fn write8<M: Memory>(m: &mut M, a: usize, buf: &mut [u8; 8]) {
    m.write(a, buf)
}
fn exec8<M: Memory>(m: &mut M, a: usize, buf: &mut [u8; 8]) {
    m.exec(a, buf)
}

/// The three contenders of `case` in group `g` on the same addresses.
macro_rules! each {
    ($g:expr, $case:expr, $addrs:expr, $label:expr, $op:ident) => {{
        let label: &str = $label;
        let (c, a) = (&mut *$case, &$addrs);
        bench8($g, BenchmarkId::new("sim", label), &mut c.sim, a, $op);
        bench8($g, BenchmarkId::new("vec", label), &mut c.vec, a, $op);
        bench8($g, BenchmarkId::new("naive", label), &mut c.naive, a, $op);
    }};
}

fn access(c: &mut Criterion) {
    let mut rng = Rng::new(0xacce55);
    let mut rw = Case::all(P::READWRITE);
    let addrs: Vec<Vec<usize>> = rw.iter().map(|case| case.addrs(&mut rng, 8, 8, false)).collect();

    let mut g = c.benchmark_group("access_read8");
    for (case, a) in rw.iter_mut().zip(&addrs) {
        each!(&mut g, case, a, case.name, read8);
    }
    g.finish();
    let mut g = c.benchmark_group("access_write8");
    for (case, a) in rw.iter_mut().zip(&addrs) {
        each!(&mut g, case, a, case.name, write8);
    }
    g.finish();
    {
        // (A simulated space places its reservations alike for the same calls: the same
        // addresses serve.)
        let mut rwx = Case::all(P::EXECUTE_READWRITE);
        assert!(rwx.iter().zip(&rw).all(|(x, c)| x.pages == c.pages));
        let mut g = c.benchmark_group("access_exec8");
        for (case, a) in rwx.iter_mut().zip(&addrs) {
            each!(&mut g, case, a, case.name, exec8);
        }
        g.finish();
    }

    // A whole page, read and written, on the 4096-page layout.
    let pages = &mut rw[1];
    let whole = pages.addrs(&mut rng, PAGE, PAGE, false);
    let mut g = c.benchmark_group("access_copy4k");
    macro_rules! copy4k {
        ($name:expr, $m:expr) => {{
            let m = $m;
            let whole = &whole;
            let mut buf = vec![0u8; PAGE];
            g.bench_function(BenchmarkId::new($name, "read"), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & (ADDRS - 1);
                    m.read(whole[i], &mut buf);
                    black_box(&buf);
                })
            });
            g.bench_function(BenchmarkId::new($name, "write"), |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & (ADDRS - 1);
                    m.write(whole[i], black_box(&buf[..]));
                })
            });
        }};
    }
    copy4k!("sim", &mut pages.sim);
    copy4k!("vec", &mut pages.vec);
    copy4k!("naive", &mut pages.naive);
    g.finish();

    // 4 bytes at the end of a page and 4 at the start of the next.
    let cross = pages.addrs(&mut rng, 8, 8, true);
    let mut g = c.benchmark_group("access_cross");
    each!(&mut g, pages, cross, "4096pages", read8);
    g.finish();
    drop(rw);

    first_write(c, &mut rng);
}

/// `access_first_write`: 8 bytes to each of 256 committed pages never written, picked at
/// random among 4096 (16 MiB), undone outside the clock.
fn first_write(c: &mut Criterion, rng: &mut Rng) {
    const BATCH: usize = 256;
    let mut g = c.benchmark_group("access_first_write");
    let pick = |rng: &mut Rng, k: usize, base: usize| -> Vec<usize> {
        rng.distinct(k, PAGES).into_iter().map(|p| base + p * PAGE + rng.below(PAGE / 8) * 8).collect()
    };

    let space = SimSpace::simulated();
    let base = space.alloc(0, PAGES * PAGE, T::RESERVE | T::COMMIT, P::READWRITE).expect("commit");
    g.bench_function(BenchmarkId::new("sim", "4096pages"), |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                BATCH,
                |k| pick(rng, k, base),
                |addrs| {
                    for (i, &a) in addrs.iter().enumerate() {
                        space.write(a, &(i as u64).to_le_bytes()).expect("write");
                    }
                },
                |addrs| {
                    for a in addrs {
                        let p = a & !(PAGE - 1);
                        space.free(p, PAGE, FreeType::DECOMMIT).expect("decommit");
                        space.alloc(p, PAGE, T::COMMIT, P::READWRITE).expect("commit");
                    }
                },
            )
        })
    });
    drop(space);

    // A fresh `Vec<u8>` of 16 MiB is a fresh anonymous mapping (the allocator maps one for
    // a block that large); here the mapping itself, so that its pages can be given back
    // between batches. 4 KiB pages, as the simulated pages are (no transparent huge page).
    use rustix::mm::{self, Advice, MapFlags, ProtFlags};
    let len = PAGES * PAGE;
    // SAFETY: a fresh private mapping at an address the kernel picks touches nothing that
    // exists.
    let map =
        unsafe { mm::mmap_anonymous(std::ptr::null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE) }
            .expect("mmap");
    // SAFETY: advice on our own mapping; it changes no contents.
    let _ = unsafe { mm::madvise(map, len, Advice::LinuxNoHugepage) };
    let base = map as usize;
    g.bench_function(BenchmarkId::new("vec", "4096pages"), |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                BATCH,
                |k| pick(rng, k, base),
                |addrs| {
                    for (i, &a) in addrs.iter().enumerate() {
                        let v = (i as u64).to_le_bytes();
                        // SAFETY: `a` lies 8-aligned in the read-write mapping above, which
                        // only this benchmark uses, with 8 bytes left in its page.
                        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), a as *mut u8, 8) };
                    }
                },
                // SAFETY: the mapping is ours and nothing holds a reference into it; its
                // pages read as zeros again afterwards, as never written.
                |_| unsafe { mm::madvise(map, len, Advice::LinuxDontNeed) }.expect("madvise"),
            )
        })
    });
    // SAFETY: the mapping is ours and no longer used.
    unsafe { mm::munmap(map, len) }.expect("munmap");

    // (Shared by the timed writes and the undo.)
    let naive = std::cell::RefCell::new(Naive::default());
    let base = 0x1000_0000;
    naive.borrow_mut().commit(base, PAGES * PAGE, R | W);
    g.bench_function(BenchmarkId::new("naive", "4096pages"), |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                BATCH,
                |k| pick(rng, k, base),
                |addrs| {
                    let mut naive = naive.borrow_mut();
                    for (i, &a) in addrs.iter().enumerate() {
                        naive.write(a, &(i as u64).to_le_bytes());
                    }
                },
                |addrs| {
                    let mut naive = naive.borrow_mut();
                    for a in addrs {
                        naive.page(a, W).bytes = None;
                    }
                },
            )
        })
    });
    g.finish();
}

/// [`common::criterion`]'s settings with shorter times (see the module docs).
fn config() -> Criterion {
    criterion::Criterion::default()
        .with_measurement(ThreadCpu)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(1000))
        .sample_size(20)
        .configure_from_args()
}

/// One of [`profile`]'s timed loops: `rounds` passes of `op` over `addrs`, the bytes
/// read or written summed so that nothing is optimised away.
#[inline(always)]
fn profile_loop<M: Memory>(m: &mut M, addrs: &[usize], rounds: usize, op: fn(&mut M, usize, &mut [u8; 8])) -> u64 {
    let mut sum = 0u64;
    for r in 0..rounds {
        for (i, &a) in addrs.iter().enumerate() {
            let mut buf = ((r * ADDRS + i) as u64).to_le_bytes();
            op(m, a, &mut buf);
            sum = sum.wrapping_add(u64::from_le_bytes(buf));
        }
    }
    sum
}

/// The simulated contender's timed loop (`--toggle-collect='*profile_sim*'`).
#[inline(never)]
fn profile_sim(m: &mut Sim, addrs: &[usize], rounds: usize, op: fn(&mut Sim, usize, &mut [u8; 8])) -> u64 {
    profile_loop(m, addrs, rounds, op)
}

/// The naive table's timed loop (`--toggle-collect='*profile_naive*'`).
#[inline(never)]
fn profile_naive(m: &mut Naive, addrs: &[usize], rounds: usize, op: fn(&mut Naive, usize, &mut [u8; 8])) -> u64 {
    profile_loop(m, addrs, rounds, op)
}

/// `VIRTMEM_PROFILE=<op>/<case>`: see the module docs.
fn profile(which: &str) {
    let (op, case) = which.split_once('/').unwrap_or_else(|| panic!("VIRTMEM_PROFILE=<op>/<case>, not {which}"));
    let rounds: usize = std::env::var("VIRTMEM_PROFILE_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    // The addresses the criterion run uses: the same generator, drawn in the same order.
    let mut rng = Rng::new(0xacce55);
    let prot = if op == "exec8" { P::EXECUTE_READWRITE } else { P::READWRITE };
    let mut cases = Case::all(prot);
    let addrs: Vec<Vec<usize>> = cases.iter().map(|c| c.addrs(&mut rng, 8, 8, false)).collect();
    let i = cases.iter().position(|c| c.name == case).unwrap_or_else(|| panic!("unknown case {case}"));
    let (c, a) = (&mut cases[i], &addrs[i]);
    // `VIRTMEM_PROFILE_ONLY=sim` or `naive`: that contender alone (for cachegrind, which
    // counts the whole program).
    let only = std::env::var("VIRTMEM_PROFILE_ONLY").ok();
    let (sim, naive) = (only.as_deref() != Some("naive"), only.as_deref() != Some("sim"));
    let per = |d: Duration| d.as_nanos() as f64 / (rounds * ADDRS) as f64;
    macro_rules! run {
        ($f:ident) => {{
            if sim {
                profile_sim(&mut c.sim, a, 1, $f);
                let t = common::thread_cpu();
                black_box(profile_sim(&mut c.sim, a, rounds, $f));
                println!("{which}: sim {:.1} ns per access (thread CPU time)", per(common::thread_cpu() - t));
            }
            if naive {
                profile_naive(&mut c.naive, a, 1, $f);
                let t = common::thread_cpu();
                black_box(profile_naive(&mut c.naive, a, rounds, $f));
                println!("{which}: naive {:.1} ns per access (thread CPU time)", per(common::thread_cpu() - t));
            }
        }};
    }
    match op {
        "read8" => run!(read8),
        "write8" => run!(write8),
        "exec8" => run!(exec8),
        other => panic!("unknown operation {other}"),
    }
}

criterion_group! { name = benches; config = config(); targets = access }

fn main() {
    if let Ok(which) = std::env::var("VIRTMEM_PROFILE") {
        return profile(&which);
    }
    benches();
    config().final_summary();
}
