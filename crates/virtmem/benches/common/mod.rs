//! Helpers shared by the benchmarks: batched timing for operations that must be undone
//! between measurements, a deterministic address picker and a live-bytes counter.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::Criterion;
use std::hint::black_box;

/// Criterion settings that keep the whole suite to a few minutes on a busy machine,
/// measuring the CPU time of the benchmarking thread (user and kernel: system calls
/// and page faults included), so that other processes competing for the CPU do not
/// inflate the figures. Only for single-threaded benchmarks.
pub fn criterion() -> Criterion<ThreadCpu> {
    Criterion::default()
        .with_measurement(ThreadCpu)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20)
        .configure_from_args()
}

/// The same settings measuring wall-clock time (for benchmarks with several threads).
pub fn criterion_wall() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(2000))
        .sample_size(20)
        .configure_from_args()
}

/// The CPU time this thread has used so far.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Criterion measurement: CPU time of the benchmarking thread ([`thread_cpu`]).
pub struct ThreadCpu;

impl criterion::measurement::Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu()
    }
    fn end(&self, started: Duration) -> Duration {
        thread_cpu() - started
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        &Nanoseconds
    }
}

/// Shows CPU times in nanoseconds.
struct Nanoseconds;

impl criterion::measurement::ValueFormatter for Nanoseconds {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ns"
    }
    fn scale_throughputs(&self, _typical: f64, throughput: &criterion::Throughput, values: &mut [f64]) -> &'static str {
        let n = match throughput {
            criterion::Throughput::Bytes(n)
            | criterion::Throughput::BytesDecimal(n)
            | criterion::Throughput::Elements(n) => *n as f64,
        };
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v);
        "/s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// Time `iters` operations done in batches of at most `batch`: for each batch of `n`,
/// `prepare(n)` makes the batch's inputs outside the clock, `timed(&mut inputs)` runs the
/// `n` operations under it, then `undo(inputs)` restores the state outside it, so the
/// measured operation always meets the same state.
pub fn batched<T>(
    iters: u64,
    batch: usize,
    mut prepare: impl FnMut(usize) -> T,
    mut timed: impl FnMut(&mut T),
    mut undo: impl FnMut(T),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(batch);
        let mut inputs = prepare(n);
        let t = thread_cpu();
        timed(&mut inputs);
        total += thread_cpu() - t;
        undo(inputs);
        left -= n;
    }
    total
}

/// A small deterministic generator (xorshift64*), so every run touches the same
/// addresses in the same order.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value but 0).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// The next value in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as usize % n
    }
    /// `n` distinct values of `0..range`, in random order (`n <= range`).
    pub fn distinct(&mut self, n: usize, range: usize) -> Vec<usize> {
        let mut seen = std::collections::HashSet::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let v = self.below(range);
            if seen.insert(v) {
                out.push(v);
            }
        }
        out
    }
}

/// The global allocator of the benchmark binaries: the system allocator, counting the
/// bytes live so that a benchmark can report the memory its bookkeeping holds.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// `GlobalAlloc` contract; the counter is only arithmetic on the sizes passed through.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed on unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `ptr`/`layout` describe a live block of ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

/// Heap bytes live in this process right now (requested sizes, allocator overhead
/// not included).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Print a figure that is not a timing (memory per reservation, setup time) and keep it
/// in `target/criterion/notes/<key>.txt` for `scripts/bench-report.py`.
pub fn note(key: &str, value: impl std::fmt::Display) {
    println!("note: {key} = {value}");
    // The benchmark binary lives in target/<profile>/deps/.
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.parent()?.join("criterion").join("notes")));
    if let Some(dir) = dir {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{key}.txt")), format!("{value}\n"));
    }
}

/// 64 KiB, the allocation granularity.
pub const GRANULE: usize = 0x1_0000;
/// 4 KiB, the page size.
pub const PAGE: usize = 0x1000;

/// The operations every benchmarked memory provider offers, in the shape of the Win32
/// calls: implemented by any [`virtmem::VirtualSpace`] and by [`Raw`] system calls
/// doing the same work. Every method panics on failure: a benchmark that silently
/// measures an error path measures nothing.
pub trait Mem: Sync {
    /// Reserve `size` bytes anywhere (bottom-up for a simulated space).
    fn reserve(&self, size: usize) -> usize;
    /// Reserve `size` bytes at `addr`.
    fn reserve_at(&self, addr: usize, size: usize);
    /// Commit read-write.
    fn commit(&self, addr: usize, size: usize);
    /// Decommit (contents dropped, no access).
    fn decommit(&self, addr: usize, size: usize);
    /// Release the reservation at `base` of `size` bytes.
    fn release(&self, base: usize, size: usize);
    /// Make committed pages read-only (`true`) or read-write (`false`).
    fn protect(&self, addr: usize, size: usize, read_only: bool);
    /// The size of the region at `addr` (what `VirtualQuery` tells).
    fn query(&self, addr: usize) -> usize;
    /// Write one byte at `addr` (committed read-write).
    fn touch(&self, addr: usize);
}

impl<S: virtmem::VirtualSpace> Mem for S {
    fn reserve(&self, size: usize) -> usize {
        self.alloc(0, size, virtmem::AllocationType::RESERVE, virtmem::Protection::NOACCESS).expect("reserve")
    }
    fn reserve_at(&self, addr: usize, size: usize) {
        self.alloc(addr, size, virtmem::AllocationType::RESERVE, virtmem::Protection::NOACCESS).expect("reserve_at");
    }
    fn commit(&self, addr: usize, size: usize) {
        self.alloc(addr, size, virtmem::AllocationType::COMMIT, virtmem::Protection::READWRITE).expect("commit");
    }
    fn decommit(&self, addr: usize, size: usize) {
        self.free(addr, size, virtmem::FreeType::DECOMMIT).expect("decommit");
    }
    fn release(&self, base: usize, _size: usize) {
        self.free(base, 0, virtmem::FreeType::RELEASE).expect("release");
    }
    fn protect(&self, addr: usize, size: usize, read_only: bool) {
        let p = if read_only { virtmem::Protection::READONLY } else { virtmem::Protection::READWRITE };
        virtmem::VirtualSpace::protect(self, addr, size, p).expect("protect");
    }
    fn query(&self, addr: usize) -> usize {
        virtmem::VirtualSpace::query(self, addr).expect("query").region_size
    }
    fn touch(&self, addr: usize) {
        self.write(addr, &[1]).expect("touch");
    }
}

/// A space over this process's real memory whose pages a benchmark touches with a
/// plain CPU store, as a program does (the [`VirtualSpace::write`] of any space is a
/// checked copy: for the Linux backend a `process_vm_writev` system call per call).
#[cfg(target_os = "linux")]
pub struct Direct<'a>(pub &'a virtmem::LinuxSpace);

#[cfg(target_os = "linux")]
impl Mem for Direct<'_> {
    fn reserve(&self, size: usize) -> usize {
        self.0.reserve(size)
    }
    fn reserve_at(&self, addr: usize, size: usize) {
        self.0.reserve_at(addr, size)
    }
    fn commit(&self, addr: usize, size: usize) {
        self.0.commit(addr, size)
    }
    fn decommit(&self, addr: usize, size: usize) {
        self.0.decommit(addr, size)
    }
    fn release(&self, base: usize, size: usize) {
        self.0.release(base, size)
    }
    fn protect(&self, addr: usize, size: usize, read_only: bool) {
        Mem::protect(self.0, addr, size, read_only)
    }
    fn query(&self, addr: usize) -> usize {
        Mem::query(self.0, addr)
    }
    fn touch(&self, addr: usize) {
        // SAFETY: the caller has committed `addr` read-write in one of the space's
        // reservations, which is ordinary memory of this process.
        unsafe { std::ptr::write_volatile(addr as *mut u8, 1) };
    }
}

/// Lay out `n` live 64 KiB reservations 128 KiB apart (a free 64 KiB hole after each),
/// the first page of each committed read-write when `commit_first` (then each
/// reservation is two regions and two kernel mappings). Returns their bases.
pub fn populate(m: &dyn Mem, n: usize, commit_first: bool) -> Vec<usize> {
    let span = m.reserve(2 * n * GRANULE);
    m.release(span, 2 * n * GRANULE);
    (0..n)
        .map(|i| {
            let b = span + 2 * i * GRANULE;
            m.reserve_at(b, GRANULE);
            if commit_first {
                m.commit(b, PAGE);
            }
            b
        })
        .collect()
}

/// As [`populate`], but irregular: a hole of 1 to 7 granules (at random) after each
/// reservation, and the reservations made in random order, so that neither their spacing
/// nor the order they were made in follows their addresses. Returns the bases in
/// address order.
pub fn populate_irregular(m: &dyn Mem, n: usize, commit_first: bool) -> Vec<usize> {
    let mut rng = Rng::new(0x1e6);
    let steps: Vec<usize> = (0..n).map(|_| 1 + 1 + rng.below(7)).collect();
    let total: usize = steps.iter().sum();
    let span = m.reserve(total * GRANULE);
    m.release(span, total * GRANULE);
    let mut bases = Vec::with_capacity(n);
    let mut at = span;
    for s in &steps {
        bases.push(at);
        at += s * GRANULE;
    }
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for &i in &order {
        m.reserve_at(bases[i], GRANULE);
        if commit_first {
            m.commit(bases[i], PAGE);
        }
    }
    bases
}

#[cfg(target_os = "linux")]
#[allow(unused_imports)] // (not every benchmark compares with the bare system calls)
pub use raw::Raw;

/// The Linux backend's kernel declarations (the `PROCMAP_QUERY` request number, which
/// linux-raw-sys lacks), compiled into the benchmark from the same file rather than
/// declared a second time: the backend is no part of the library's public API.
#[cfg(target_os = "linux")]
#[path = "../../src/backend/linux/sys/mod.rs"]
#[allow(unused_imports, dead_code)]
pub mod sys;

/// Write watch by the bare system calls (also compiled into `examples/linux_profile.rs`).
#[cfg(target_os = "linux")]
pub mod raw_watch;

#[cfg(target_os = "linux")]
mod raw {
    use super::sys;
    use rustix::mm::{self, MapFlags, MprotectFlags, ProtFlags};
    use std::ffi::c_void;

    /// The bare system calls doing the work of each operation: reserve = `mmap(PROT_NONE,
    /// MAP_NORESERVE)`, commit = `mprotect(RW)`, decommit = `madvise(DONTNEED)` +
    /// `mprotect(NONE)`, release = `munmap`, protect = `mprotect`, query = the
    /// `PROCMAP_QUERY` ioctl on `/proc/self/maps` (covering-or-next mapping).
    pub struct Raw {
        maps: std::fs::File,
    }

    impl Default for Raw {
        fn default() -> Self {
            Raw { maps: std::fs::File::open("/proc/self/maps").expect("open /proc/self/maps") }
        }
    }

    fn ptr(addr: usize) -> *mut c_void {
        addr as *mut c_void
    }

    impl super::Mem for Raw {
        fn reserve(&self, size: usize) -> usize {
            // SAFETY: a fresh anonymous mapping at an address the kernel picks touches no
            // existing memory.
            unsafe {
                mm::mmap_anonymous(
                    std::ptr::null_mut(),
                    size,
                    ProtFlags::empty(),
                    MapFlags::PRIVATE | MapFlags::NORESERVE,
                )
            }
            .expect("mmap") as usize
        }
        fn reserve_at(&self, addr: usize, size: usize) {
            // SAFETY: MAP_FIXED_NOREPLACE fails instead of replacing anything mapped there.
            let p = unsafe {
                mm::mmap_anonymous(
                    ptr(addr),
                    size,
                    ProtFlags::empty(),
                    MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED_NOREPLACE,
                )
            }
            .expect("mmap fixed");
            assert_eq!(p as usize, addr);
        }
        fn commit(&self, addr: usize, size: usize) {
            // SAFETY: the range is one of the benchmark's own mappings; nothing else uses it.
            unsafe { mm::mprotect(ptr(addr), size, MprotectFlags::READ | MprotectFlags::WRITE) }.expect("mprotect");
        }
        fn decommit(&self, addr: usize, size: usize) {
            // SAFETY: as for `commit`; dropping the contents of our own pages is the intent.
            unsafe {
                mm::madvise(ptr(addr), size, mm::Advice::LinuxDontNeed).expect("madvise");
                mm::mprotect(ptr(addr), size, MprotectFlags::empty()).expect("mprotect");
            }
        }
        fn release(&self, base: usize, size: usize) {
            // SAFETY: the range is one of the benchmark's own mappings, no longer used.
            unsafe { mm::munmap(ptr(base), size) }.expect("munmap");
        }
        fn protect(&self, addr: usize, size: usize, read_only: bool) {
            let f = if read_only { MprotectFlags::READ } else { MprotectFlags::READ | MprotectFlags::WRITE };
            // SAFETY: as for `commit`.
            unsafe { mm::mprotect(ptr(addr), size, f) }.expect("mprotect");
        }
        fn query(&self, addr: usize) -> usize {
            use std::os::fd::AsFd;
            let mut q = sys::procmap_query_covering_or_next(addr);
            // SAFETY: PROCMAP_QUERY reads and writes exactly one `struct procmap_query`,
            // which `q` is (linux-raw-sys's, its size in `size`); no name or build-id
            // buffers.
            unsafe { sys::ioctl(self.maps.as_fd(), sys::PROCMAP_QUERY, &mut q) }.expect("PROCMAP_QUERY");
            if (q.vma_start as usize) <= addr {
                q.vma_end as usize - addr
            } else {
                q.vma_start as usize - addr
            }
        }
        fn touch(&self, addr: usize) {
            // SAFETY: the caller has committed `addr` read-write in one of our mappings.
            unsafe { std::ptr::write_volatile(addr as *mut u8, 1) };
        }
    }
}

/// Addresses for a query benchmark: each in a reservation of `bases` picked at random, or
/// in the hole after it. Four per reservation (at least 4096, at most 2^20: 8 MB, read in
/// order), so that consecutive queries land on reservations spread over all of them and
/// a query finds its record where a random query would, not in the caches because the
/// same few thousand addresses came round again. (Up to the fourteenth session's runs a
/// fixed set of 4096 addresses was cycled: at 10^5 regions their records then all stayed
/// in the caches, and a query looked ~25 % cheaper than a random one.)
pub fn query_addrs(bases: &[usize], rng: &mut Rng) -> Vec<usize> {
    let n = bases.len();
    (0..(4 * n).clamp(4096, 1 << 20)).map(|_| bases[rng.below(n)] + rng.below(2 * GRANULE)).collect()
}

/// Benchmark every operation of `m` (already populated with `bases`) as function `name`
/// of the groups `<prefix>_<op>`.
pub fn bench_ops(c: &mut Criterion<ThreadCpu>, prefix: &str, name: &str, m: &dyn Mem, bases: &[usize]) {
    let mut rng = Rng::new(0x5eed);
    let n = bases.len();
    let batch = 256.min(n);

    c.benchmark_group(format!("{prefix}_reserve")).bench_function(name, |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                batch,
                |k| (k, Vec::with_capacity(k)),
                |(k, made)| made.extend((0..*k).map(|_| m.reserve(GRANULE))),
                |(_, made)| made.into_iter().for_each(|a| m.release(a, GRANULE)),
            )
        })
    });

    let mut per_base = |group: &str, op: &dyn Fn(usize), undo: &dyn Fn(usize)| {
        c.benchmark_group(format!("{prefix}_{group}")).bench_function(name, |b| {
            b.iter_custom(|iters| {
                // The bases are picked before the clock starts: reading them from the
                // table of every base (8 MB at 10^6) would add a cache miss of the
                // harness's own to every timed call.
                batched(
                    iters,
                    batch,
                    |k| rng.distinct(k, n).into_iter().map(|i| bases[i]).collect::<Vec<usize>>(),
                    |picked| picked.iter().for_each(|&b| op(b)),
                    |picked| picked.into_iter().for_each(undo),
                )
            })
        });
    };
    per_base("commit", &|b| m.commit(b + PAGE, PAGE), &|b| m.decommit(b + PAGE, PAGE));
    per_base("decommit", &|b| m.decommit(b, PAGE), &|b| m.commit(b, PAGE));
    per_base("protect", &|b| m.protect(b, PAGE, true), &|b| m.protect(b, PAGE, false));
    per_base("release", &|b| m.release(b, GRANULE), &|b| {
        m.reserve_at(b, GRANULE);
        m.commit(b, PAGE);
    });

    c.benchmark_group(format!("{prefix}_query")).bench_function(name, |b| {
        let addrs = query_addrs(bases, &mut rng);
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % addrs.len();
            black_box(m.query(addrs[i]))
        })
    });
}
