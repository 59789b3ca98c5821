//! `GetWriteWatch` and `ResetWriteWatch` over a whole 256 MiB write-watched heap, as a GC
//! calls them at every collection, with `k` pages written since the last reset (k = 0,
//! 64, 4096, scattered over the heap, the same pages for every backend, chosen with a
//! fixed seed). Thread CPU time, as `ops` (system calls and page faults included).
//!
//! - `linux`: the library on real memory (`LinuxSpace::get_write_watch_into` into a
//!   buffer of one entry per page of the heap, kept from call to call, as a GC keeps its
//!   card buffer; `reset_write_watch`);
//! - `raw`: the bare system calls doing the same work, set up as the Linux backend sets
//!   up a write-watched reservation (`mmap(PROT_NONE, MAP_NORESERVE)` made read-write,
//!   `MADV_NOHUGEPAGE`, a userfaultfd with `UFFD_FEATURE_WP_ASYNC` only, the range
//!   registered in write-protect mode) and one `PAGEMAP_SCAN` ioctl per call, into a
//!   buffer of page ranges large enough for every page, with the backend's page
//!   categories (written, present or swapped out, not the shared zero page: without
//!   them a never-written page would count as written, and a reset would put a marker
//!   into its page-table entry); `PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC` for a
//!   reset;
//! - `sim`: the simulated backend, the same calls on the same layout.
//!
//! Groups (each function is `<backend>/<k>`):
//!
//! - `watch_get`: `GetWriteWatch` without reset; the `k` pages stay written, so every call
//!   reports them;
//! - `watch_get_reset`: with `WRITE_WATCH_FLAG_RESET`; before each call, outside the
//!   clock, the same `k` pages are written again;
//! - `watch_reset`: `ResetWriteWatch` of the whole heap, `k` pages written before each
//!   call (outside the clock); linux and raw;
//! - `watch_get_reset_used`: as `watch_get_reset` on a heap whose every page was written
//!   once before the last reset (a heap in use: the kernel's scan walks 65 536 page-table
//!   entries, where in the other groups only the `k` pages were ever written, in a heap
//!   made afresh for each `k`); linux and raw.
//!
//! A timed call that must be preceded by writes is timed alone, so each of its figures
//! includes the cost of reading the clock once (the same for every backend). When the
//! kernel offers no write watch, the Linux groups are skipped with the reason printed.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{thread_cpu, Rng, PAGE};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId};
use virtmem::{AllocationType as T, Protection as P, VirtualSpace, WriteWatchFlags as W};

type Criterion = criterion::Criterion<common::ThreadCpu>;
type Group<'a> = BenchmarkGroup<'a, common::ThreadCpu>;

/// The heap: 256 MiB.
const HEAP: usize = 256 << 20;
/// Its pages.
const PAGES: usize = HEAP / PAGE;
/// The numbers of pages written between two calls.
const KS: [usize; 3] = [0, 64, 4096];

/// What each benchmark does to a write-watched heap.
trait Heap {
    /// Write to page `i` of the heap (as a program does).
    fn touch(&self, i: usize);
    /// `GetWriteWatch` over the whole heap (resetting what it reports with `reset`): how
    /// many pages it reports.
    fn get(&mut self, reset: bool) -> usize;
    /// `ResetWriteWatch` over the whole heap.
    fn reset_all(&mut self);
}

/// The library's calls on a space's write-watched heap.
struct Lib<S: VirtualSpace> {
    space: S,
    base: usize,
    /// The caller's buffer, one entry per page (never too small).
    buf: Vec<usize>,
    /// Pages are written with a CPU store (real memory) rather than `VirtualSpace::write`.
    direct: bool,
}

impl<S: VirtualSpace> Lib<S> {
    fn new(space: S, direct: bool) -> virtmem::Result<Self> {
        let base = space.alloc(0, HEAP, T::RESERVE | T::WRITE_WATCH, P::NOACCESS)?;
        space.alloc(base, HEAP, T::COMMIT, P::READWRITE)?;
        Ok(Lib { space, base, buf: vec![0; PAGES], direct })
    }
}

impl<S: VirtualSpace> Drop for Lib<S> {
    fn drop(&mut self) {
        let _ = self.space.free(self.base, 0, virtmem::FreeType::RELEASE);
    }
}

impl<S: VirtualSpace> Heap for Lib<S> {
    fn touch(&self, i: usize) {
        let at = self.base + i * PAGE;
        if self.direct {
            // SAFETY: the page is committed read-write in this heap's reservation, which
            // only this benchmark uses.
            unsafe { std::ptr::write_volatile(at as *mut u8, 1) };
        } else {
            self.space.write(at, &[1]).expect("write");
        }
    }
    fn get(&mut self, reset: bool) -> usize {
        let flags = if reset { W::RESET } else { W::empty() };
        self.space.get_write_watch_into(flags, self.base, HEAP, &mut self.buf).expect("GetWriteWatch")
    }
    fn reset_all(&mut self) {
        self.space.reset_write_watch(self.base, HEAP).expect("ResetWriteWatch");
    }
}

#[cfg(target_os = "linux")]
impl Heap for common::raw_watch::RawWatch {
    fn touch(&self, i: usize) {
        common::raw_watch::RawWatch::touch(self, i)
    }
    fn get(&mut self, reset: bool) -> usize {
        self.scan(reset)
    }
    fn reset_all(&mut self) {
        self.scan(true);
    }
}

/// The `k` pages written between calls: scattered over the heap, the same for every
/// backend and every run.
fn scattered(k: usize) -> Vec<usize> {
    let mut v = Rng::new(0x3a7c_b00f + k as u64).distinct(k, PAGES);
    v.sort_unstable();
    v
}

/// Write the `k` pages, reset, write them again: `h` is then as a heap is between two
/// collections (`used`: every page of the heap written once before that reset).
fn prepare(h: &mut dyn Heap, pages: &[usize], used: bool) {
    if used {
        (0..PAGES).for_each(|i| h.touch(i));
    }
    pages.iter().for_each(|&i| h.touch(i));
    h.reset_all();
    assert_eq!(h.get(false), 0, "a reset heap reports nothing");
    pages.iter().for_each(|&i| h.touch(i));
    assert_eq!(h.get(false), pages.len(), "the pages written are reported");
}

/// `iters` timed calls of `call`, each after writing `pages` again outside the clock.
fn each_after_writes(
    h: &mut dyn Heap,
    pages: &[usize],
    iters: u64,
    mut call: impl FnMut(&mut dyn Heap) -> usize,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        pages.iter().for_each(|&i| h.touch(i));
        let t = thread_cpu();
        let n = black_box(call(h));
        total += thread_cpu() - t;
        assert_eq!(n, pages.len());
    }
    total
}

/// What a group times.
#[derive(Clone, Copy, PartialEq)]
enum Call {
    Get,
    GetReset,
    Reset,
}

/// The benchmarks `name/<k>` of group `g`: `call` on a heap of one backend, made afresh
/// for each `k` by `make` (every page written once before, with `used`).
fn bench_heap<'h>(g: &mut Group<'_>, name: &str, make: &dyn Fn() -> Box<dyn Heap + 'h>, call: Call, used: bool) {
    for k in KS {
        let pages = scattered(k);
        let mut heap = make();
        let h = &mut *heap;
        prepare(h, &pages, used);
        g.bench_function(BenchmarkId::new(name, k), |b| match call {
            Call::Get => b.iter_custom(|iters| {
                let t = thread_cpu();
                for _ in 0..iters {
                    black_box(h.get(false));
                }
                thread_cpu() - t
            }),
            Call::GetReset => b.iter_custom(|iters| each_after_writes(h, &pages, iters, |h| h.get(true))),
            Call::Reset => b.iter_custom(|iters| {
                each_after_writes(h, &pages, iters, |h| {
                    h.reset_all();
                    pages.len()
                })
            }),
        });
    }
}

/// The benchmarks of group `name`: linux and raw (when write watch works), and sim
/// with `sim`.
fn group(c: &mut Criterion, name: &str, call: Call, used: bool, sim: bool) {
    let mut g = c.benchmark_group(name);
    #[cfg(target_os = "linux")]
    {
        match linux_space() {
            Ok(space) => {
                let linux = || Box::new(Lib::new(&space, true).expect("linux heap")) as Box<dyn Heap>;
                bench_heap(&mut g, "linux", &linux, call, used);
                let raw = || Box::new(common::raw_watch::RawWatch::new(HEAP).expect("raw heap")) as Box<dyn Heap>;
                bench_heap(&mut g, "raw", &raw, call, used);
            }
            Err(why) => println!("{name}: linux and raw skipped: {why}"),
        }
    }
    if sim {
        let space = virtmem::SimSpace::simulated();
        let sim = || Box::new(Lib::new(&space, false).expect("sim heap")) as Box<dyn Heap>;
        bench_heap(&mut g, "sim", &sim, call, used);
    }
    g.finish();
}

/// A Linux space with write watch, or why there is none.
#[cfg(target_os = "linux")]
fn linux_space() -> Result<virtmem::LinuxSpace, String> {
    let space = virtmem::LinuxSpace::linux().map_err(|e| format!("no Linux space: {e}"))?;
    match space.alloc(0, HEAP, T::RESERVE | T::WRITE_WATCH, P::NOACCESS) {
        Ok(base) => {
            space.free(base, 0, virtmem::FreeType::RELEASE).map_err(|e| e.to_string())?;
            Ok(space)
        }
        Err(e) => Err(format!("a MEM_WRITE_WATCH reservation fails: {e}")),
    }
}

fn watch(c: &mut Criterion) {
    group(c, "watch_get", Call::Get, false, true);
    group(c, "watch_get_reset", Call::GetReset, false, true);
    group(c, "watch_reset", Call::Reset, false, false);
    group(c, "watch_get_reset_used", Call::GetReset, true, false);
}

// (No plots: 30 benchmarks, and drawing them took longer than measuring them.)
criterion_group! { name = benches; config = common::criterion().without_plots(); targets = watch }
criterion_main!(benches);
