//! The Linux backend: the process's real memory.
//!
//! | engine operation | system call | why |
//! |---|---|---|
//! | reserve | `mmap(PROT_NONE, MAP_NORESERVE \| MAP_FIXED_NOREPLACE)`, or nothing when the range is in the pool (a reservation at no particular address takes a pooled range that fits, see [`Backend::cheap_range`]); a write-watched one also `madvise(MADV_NOHUGEPAGE)` | claims address space without charging commit; `NOREPLACE` makes a collision with someone else's mapping an error (`EEXIST`) instead of silently replacing it |
//! | commit, protect | `mprotect`, and `MADV_GUARD_REMOVE` where a decommit left guard markers | `mprotect` is the only way to change what the CPU allows while keeping contents |
//! | decommit | `MADV_GUARD_INSTALL` (small read-write runs), else `mprotect(PROT_NONE)` + `MADV_DONTNEED`, or `MADV_DONTNEED` first for a run that is a whole mapping between inaccessible ones (see [`Backend::decommit`]) | both drop the pages at once (RSS falls, a recommit reads zeros) and make them fault; guard markers live in the page tables, so they take only the mmap *read* lock and split no kernel mapping |
//! | release | nothing (the range goes to the pool) or `munmap` | reusing a range that is still ours saves an `mmap`/`munmap` pair, each of which takes the mmap write lock and flushes other CPUs' TLBs |
//! | reset | `madvise(MADV_FREE)`; nothing in a write-watched reservation | lets the kernel reclaim pages lazily, the exact meaning of `MEM_RESET` (a reclaimed page would lose its written state) |
//! | lock | `mlock2(MLOCK_ONFAULT)` + `MADV_POPULATE_READ` / `munlock` | a plain `mlock` would populate writable pages with write faults, which write watch would take for writes |
//! | read / write | `process_vm_readv` / `process_vm_writev` on ourselves | copies fail with `EFAULT` instead of crashing when memory is inaccessible |
//! | foreign | `ioctl(PROCMAP_QUERY)` on `/proc/self/maps` | one system call per lookup |
//! | write watch | userfaultfd `UFFD_FEATURE_WP_ASYNC` + `ioctl(PAGEMAP_SCAN)` | the kernel tracks writes in the page tables: no signal handler, no per-page `mprotect`, and a scan that resets exactly the pages it reports, atomically |
//! | flush write buffers ([`flush_process_write_buffers`]) | `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, else `membarrier(MEMBARRIER_CMD_GLOBAL)`, else `mprotect` of a locked helper page just written (`sys::flush`) | interrupts only the CPUs running the process's threads; the fallbacks wait for a grace period, or make the kernel's TLB shootdown interrupt them |
//!
//! Every reservation is mapped to the end of its 64 KiB granule, so nobody else's
//! mapping can land in the unused tail the engine keeps blocked.
//!
//! The backend remembers what it did to the kernel (`state`): the ranges it has
//! mapped, so that [`Backend::foreign`] never reports its own memory (even where the
//! kernel has merged one of its mappings with a neighbour's); the pool of released
//! ranges; and which pages are guard-marked rather than `PROT_NONE`. Its lock is
//! never held across a system call. Its live and pooled ranges are also kept merged
//! where they touch, so that a query in a free gap between reservations carved out of
//! one pooled span finds the gap ours with one lookup among a few ranges.
//!
//! # Kernel mappings
//!
//! Each run of pages with a distinct protection is a kernel mapping (VMA), and the
//! kernel caps their number (`vm.max_map_count`, 65530 by default). Decommitting with
//! guard markers keeps a read-write run one mapping however many holes are punched in
//! it, and pooled ranges merge with their neighbours. A marked run with nothing
//! accessible around it stays a mapping of its own, though, where `PROT_NONE` would
//! have merged it back: once the backend's record of the kernel holds more than
//! 4 096 entries (`CROWDED_RUNS`), such runs (a scattered decommit, a release into the pool)
//! take the merging way, so that scattered commit/decommit in a large reservation
//! stays a few thousand mappings. A call that would cross the cap fails with
//! `ERROR_NOT_ENOUGH_MEMORY` and changes nothing: `mprotect` is reverted.

mod procfs;
mod sorted;
mod state;
mod sys;
mod watch;

pub use sys::flush::FlushMechanism;

/// `FlushProcessWriteBuffers`: "Flushes the write queue of each processor that is running
/// a thread of the current process." When it returns, every store that another thread
/// of the process made before the flush reached its CPU is visible to the caller, and
/// every load that thread makes afterwards sees the stores the caller made before the
/// call; the caller itself passes a full barrier on entry and on return.
///
/// It is the heavy side of an asymmetric barrier (a garbage collector calls it when it
/// suspends threads): a thread that stores then loads with only a compiler fence
/// between ([`std::sync::atomic::compiler_fence`]) is ordered against a thread that
/// stores, calls this, then loads.
///
/// [`flush_mechanism`] says how it is done in this process, chosen once:
/// - `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (Linux 4.14+): an interrupt to each
///   CPU running a thread of the process, and no other; microseconds (10–12 µs on the
///   benchmark VM with another thread running: `benches/flush.rs`). The first
///   call in a process also registers it with the kernel, which may wait milliseconds.
/// - `membarrier(MEMBARRIER_CMD_GLOBAL)` (Linux 4.3+), without the expedited command:
///   waits for an RCU grace period, interrupting no one; milliseconds (14 ms there).
/// - the page-protection flush, without membarrier (or withheld, see [`WITHOUT_ENV`]):
///   a locked helper page is written and then made inaccessible, which makes the kernel
///   interrupt every CPU with the process's address space loaded to flush its TLB; two
///   `mprotect` calls (15 µs there, holding the process's `mmap` lock), a
///   guarantee on x86 only (see [`FlushMechanism::PageProtection`]).
///
/// It never fails and never panics, as `FlushProcessWriteBuffers` returns nothing: a
/// mechanism refused at a later call (`EPERM` for a process no longer registered, which
/// registers again; an `ENOMEM`) hands that call to the ones after it. The
/// page-protection flush, the last, needs the kernel to map its helper page and change its
/// protection: where the kernel refuses for want of memory, the call returns without the
/// barrier (README's "Known limits").
pub fn flush_process_write_buffers() {
    sys::flush::flush(withheld)
}

/// How [`flush_process_write_buffers`] works in this process, probed once (by the first
/// call of either): [`FlushMechanism::MembarrierPrivateExpedited`] where the kernel has it
/// (Linux 4.14+) and neither a seccomp filter nor `VIRTMEM_LINUX_WITHOUT`
/// (`membarrier_expedited` or `membarrier`, see [`WITHOUT_ENV`]) withholds it, else
/// [`FlushMechanism::MembarrierGlobal`] (Linux 4.3+), else
/// [`FlushMechanism::PageProtection`]. (A `VIRTMEM_LINUX_WITHOUT` that is refused
/// withholds nothing here: the flush cannot fail.)
pub fn flush_mechanism() -> FlushMechanism {
    sys::flush::mechanism(withheld)
}

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;
use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use smallvec::SmallVec;

use procfs::{Maps, Pagemap};
use state::{Extent, Kernel, Ranges, State};

/// The kernel state of the pieces of a range (see [`LinuxBackend::kernel_runs`]).
type KernelRuns = SmallVec<[(Range<usize>, Kernel); 4]>;

use super::{Access, Backend, BackendError, ForeignRegion, Limits, ReserveOptions};
use crate::rules::{self, round_down, round_up, GRANULE, PAGE};

/// The top of the x86-64 user address space with 4-level page tables (47 bits): the
/// kernel never hands out addresses above it unless asked to.
const USER_TOP: usize = 0x7FFF_FFFF_F000;

/// The size of a huge page on x86-64.
const HUGE_PAGE: usize = 2 << 20;

/// The largest run decommitted with guard markers. Markers need page tables for the
/// whole run (4 KiB per 2 MiB); beyond this, `mprotect` is cheaper to keep.
const GUARD_MAX: usize = 16 << 20;

/// How many pooled ranges a reserve at no particular address looks at for one that
/// fits (see [`Backend::cheap_range`]).
const POOL_SCAN: usize = 16;

/// Beyond this many entries in the record of the kernel's state (about as many kernel
/// mappings), a decommit with no accessible neighbour merges back instead of being
/// marked (see [`LinuxBackend::decommit`]). Well below the kernel's default cap of
/// 65 530 mappings per process, which the rest of the program shares.
const CROWDED_RUNS: usize = 4096;

/// The most separate ranges the pool keeps (each is at least one kernel mapping). A
/// release next to a pooled range merges into it and adds none, so the cap never
/// refuses it.
const POOL_MAX_RANGES: usize = 256;

/// The most runs that may hold data (accessible ones, and inaccessible ones written
/// before) a release may have and still go to the pool. Pooling drops each such run's
/// pages with a system call of its own (guard markers, or `mprotect` and `madvise`),
/// where `munmap` drops everything at once; what pooling saves is one `mmap` on a later
/// reserve. So a release with more runs is unmapped.
const POOL_MAX_RUNS: usize = 2;

/// The default [`LinuxOptions::pool_bytes`]: 8 TiB, a sixteenth of the 128 TiB that
/// x86-64 and arm64 give a process with 48-bit addresses. Room for terabyte
/// reservations, so that releasing and reserving them again costs no system call, while
/// most of the address space stays to the rest of the program.
const POOL_DEFAULT: usize = 8 << 40;

/// The most the pool holds when the process has an address-space limit
/// (`RLIMIT_AS`), whatever [`LinuxOptions::pool_bytes`] says: pooled ranges count
/// against that limit, and holding more could make the program's other `mmap`s fail.
const POOL_LIMITED: usize = 1 << 30;

/// Tuning of a [`LinuxBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinuxOptions {
    /// The most address space that released reservations keep mapped for reuse
    /// (inaccessible and empty; they cost no memory, only address space). A reserve
    /// that fits a pooled range takes it without a system call, and a release that
    /// the pool takes makes none, or one that drops its pages. 0 unmaps every release
    /// (but one the kernel refuses to unmap, at its mapping-count limit, which is
    /// pooled all the same rather than failed). When the process has an address-space
    /// limit (`RLIMIT_AS`, read when the backend is made), at most 1 GiB whatever this
    /// says, since pooled ranges count against it. A pooled range is reported free; the
    /// backend cannot see a mapping the program itself places over it with `MAP_FIXED`:
    /// a program that does so at free addresses should set 0.
    pub pool_bytes: usize,
    /// Decommit small read-write runs with guard markers (`MADV_GUARD_INSTALL`) where
    /// the kernel has them (6.13+), instead of `mprotect` + `MADV_DONTNEED`. Off, the
    /// backend still puts markers on a run whose pages a decommit dropped before its
    /// `mprotect(PROT_NONE)`, should that `mprotect` fail (see `LinuxBackend`'s
    /// decommit): the one way left to finish the decommit.
    pub guard_regions: bool,
}

impl Default for LinuxOptions {
    /// An 8 TiB pool (1 GiB under an address-space limit) and guard regions.
    fn default() -> Self {
        LinuxOptions { pool_bytes: POOL_DEFAULT, guard_regions: true }
    }
}

/// Kernel features, probed once per process.
#[derive(Debug, Clone, Copy)]
struct Features {
    /// `MAP_FIXED_NOREPLACE` is honoured (Linux 4.17+); without it, a hinted `mmap`
    /// is checked after the fact.
    fixed_noreplace: bool,
    /// `PAGEMAP_SCAN` works (Linux 6.7+).
    pagemap_scan: bool,
    /// `MADV_GUARD_INSTALL` / `MADV_GUARD_REMOVE` work (Linux 6.13+).
    guard: bool,
    /// `PROCMAP_QUERY` works (Linux 6.11+); without it, `/proc/self/maps` is parsed.
    procmap_query: bool,
}

fn features() -> Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    *FEATURES.get_or_init(|| Features {
        fixed_noreplace: !withheld("fixed_noreplace") && probe_fixed_noreplace(),
        pagemap_scan: !withheld("pagemap_scan") && probe_pagemap_scan(),
        guard: !withheld("guard") && probe_guard(),
        procmap_query: !withheld("procmap_query") && Maps::probe_ioctl(),
    })
}

/// The environment variable naming kernel features the backend is to do without, as on
/// a kernel that lacks them: a comma-separated list of `fixed_noreplace`,
/// `pagemap_scan`, `guard`, `procmap_query`, `membarrier_expedited` and `membarrier`
/// (or `all`), in any case, spaces around names and empty items allowed. It exists so
/// that the fallbacks an older kernel takes (a hinted `mmap` checked after the fact, write
/// watch refused, `mprotect` + `MADV_DONTNEED` decommits, `/proc/self/maps` parsed as
/// text; for [`flush_process_write_buffers`], `MEMBARRIER_CMD_GLOBAL` without
/// `membarrier_expedited`, and the page-protection flush without `membarrier`, which
/// withholds the system call whole) can be tested on a new one
/// (`scripts/test-linux-fallbacks.sh`, `tests/flush_write_buffers.rs`). Read once per
/// process.
///
/// A word that names none of them (a typo would otherwise leave a fallback test testing
/// nothing), or a value that is not UTF-8, is refused: no backend is made.
/// [`LinuxBackend::new`] and [`LinuxBackend::with_options`] fail with
/// [`std::io::ErrorKind::InvalidInput`] and a message naming each bad word and the
/// accepted names; `LinuxSpace::linux` and the process-wide space fail with
/// `ERROR_INVALID_PARAMETER`, a code that cannot carry the word, so the message is also
/// written to stderr, once per process.
pub const WITHOUT_ENV: &str = "VIRTMEM_LINUX_WITHOUT";

/// The features [`WITHOUT_ENV`] may name, in the order of
/// [`LinuxBackend::missing_features`]; bit `i` of a withheld set is `FEATURE_NAMES[i]`.
const FEATURE_NAMES: [&str; 6] =
    ["fixed_noreplace", "pagemap_scan", "guard", "procmap_query", "membarrier_expedited", "membarrier"];

/// Why [`WITHOUT_ENV`] is refused: the payload of the `io::Error` a backend's
/// construction fails with, so that the address space can tell it from a missing `/proc`.
#[derive(Debug)]
pub(crate) struct WithoutEnvError(String);

impl std::fmt::Display for WithoutEnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WithoutEnvError {}

/// The features [`WITHOUT_ENV`] withholds (a bit per entry of [`FEATURE_NAMES`]), or why
/// its value is refused. Read and checked once per process; a refusal is also written to
/// stderr then.
fn without_env() -> Result<u8, &'static str> {
    static WITHOUT: OnceLock<Result<u8, String>> = OnceLock::new();
    WITHOUT
        .get_or_init(|| {
            let parsed = match std::env::var_os(WITHOUT_ENV) {
                None => Ok(0),
                Some(value) => match value.to_str() {
                    Some(text) => parse_without(text),
                    None => Err(format!(
                        "{WITHOUT_ENV} is not UTF-8 ({value:?}), so it names no feature; {}",
                        accepted_names()
                    )),
                },
            };
            if let Err(message) = &parsed {
                // (Not `eprintln!`, which panics when stderr cannot be written.)
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "virtmem: {message}");
            }
            parsed
        })
        .as_ref()
        .map(|&bits| bits)
        .map_err(String::as_str)
}

/// What [`WITHOUT_ENV`] accepts, for its error messages.
fn accepted_names() -> String {
    format!("accepted (comma-separated, in any case): {}, all", FEATURE_NAMES.join(", "))
}

/// The features the value of [`WITHOUT_ENV`] withholds, or an error naming each of its
/// words that names no feature.
fn parse_without(value: &str) -> Result<u8, String> {
    let mut bits = 0u8;
    let mut unknown = Vec::new();
    for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let name = word.to_ascii_lowercase();
        if name == "all" {
            bits = (1 << FEATURE_NAMES.len()) - 1;
        } else if let Some(i) = FEATURE_NAMES.iter().position(|&f| f == name) {
            bits |= 1 << i;
        } else {
            unknown.push(format!("`{word}`"));
        }
    }
    if unknown.is_empty() {
        return Ok(bits);
    }
    let (verb, what) = if unknown.len() == 1 { ("is", "a feature") } else { ("are", "features") };
    Err(format!(
        "{WITHOUT_ENV} names {}, which {verb} not {what} the Linux backend can do without; {}",
        unknown.join(", "),
        accepted_names()
    ))
}

/// Whether `feature` (one of [`FEATURE_NAMES`]) is withheld by [`WITHOUT_ENV`]. (Only
/// a backend probes features, and none is made when the variable is refused: the
/// refusal withholds nothing here.)
fn withheld(feature: &str) -> bool {
    let bit = FEATURE_NAMES.iter().position(|&f| f == feature).expect("a feature name");
    without_env().unwrap_or(0) & (1 << bit) != 0
}

/// Map a page anywhere, then ask for the same page with `MAP_FIXED_NOREPLACE`: a
/// kernel that knows the flag answers `EEXIST`; an older one treats the address as a
/// hint and returns another address.
fn probe_fixed_noreplace() -> bool {
    // SAFETY: a fresh anonymous mapping at an address the kernel chooses touches
    // nothing that exists.
    let Ok(p) =
        (unsafe { rustix::mm::mmap_anonymous(std::ptr::null_mut(), PAGE, ProtFlags::empty(), MapFlags::PRIVATE) })
    else {
        return false;
    };
    // SAFETY: NOREPLACE never replaces an existing mapping; on an old kernel the
    // address is only a hint and the result is unmapped below.
    let r = unsafe {
        rustix::mm::mmap_anonymous(p, PAGE, ProtFlags::empty(), MapFlags::PRIVATE | MapFlags::FIXED_NOREPLACE)
    };
    let ok = match r {
        Err(Errno::EXIST) => true,
        Ok(q) => {
            // SAFETY: `q` is the mapping just made by the call above.
            let _ = unsafe { rustix::mm::munmap(q, PAGE) };
            false
        }
        Err(_) => false,
    };
    // SAFETY: `p` is the probe mapping made above.
    let _ = unsafe { rustix::mm::munmap(p, PAGE) };
    ok
}

fn probe_pagemap_scan() -> bool {
    let Ok(pm) = Pagemap::open() else { return false };
    // SAFETY: as in probe_fixed_noreplace.
    let Ok(p) =
        (unsafe { rustix::mm::mmap_anonymous(std::ptr::null_mut(), PAGE, ProtFlags::empty(), MapFlags::PRIVATE) })
    else {
        return false;
    };
    let q = procfs::Scan { flags: 0, inverted: 0, mask: 0, anyof: sys::PAGE_IS_PRESENT, ret: sys::PAGE_IS_PRESENT };
    let ok = pm.scan(p as usize..p as usize + PAGE, &q, 0).is_ok();
    // SAFETY: `p` is the probe mapping made above.
    let _ = unsafe { rustix::mm::munmap(p, PAGE) };
    ok
}

/// Install and remove a guard marker on a private probe page (`EINVAL` before 6.13).
fn probe_guard() -> bool {
    // SAFETY: as in probe_fixed_noreplace.
    let Ok(p) = (unsafe {
        rustix::mm::mmap_anonymous(std::ptr::null_mut(), PAGE, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE)
    }) else {
        return false;
    };
    let p = p as usize;
    // SAFETY: the probe page is ours alone.
    let ok = unsafe {
        sys::madvise_raw(p, PAGE, sys::MADV_GUARD_INSTALL).is_ok()
            && sys::madvise_raw(p, PAGE, sys::MADV_GUARD_REMOVE).is_ok()
    };
    // SAFETY: the probe mapping made above.
    let _ = unsafe { rustix::mm::munmap(ptr(p), PAGE) };
    ok
}

fn errno_error(e: Errno) -> BackendError {
    match e {
        Errno::NOMEM | Errno::AGAIN => BackendError::OutOfMemory,
        e => BackendError::Os(e.raw_os_error()),
    }
}

fn prot_of(a: Access) -> MprotectFlags {
    match a {
        Access::None => MprotectFlags::empty(),
        Access::Read => MprotectFlags::READ,
        Access::ReadWrite => MprotectFlags::READ | MprotectFlags::WRITE,
        Access::Execute => MprotectFlags::EXEC,
        Access::ExecuteRead => MprotectFlags::READ | MprotectFlags::EXEC,
        Access::ExecuteReadWrite => MprotectFlags::READ | MprotectFlags::WRITE | MprotectFlags::EXEC,
    }
}

fn ptr(addr: usize) -> *mut std::ffi::c_void {
    addr as *mut std::ffi::c_void
}

/// Where a released extent goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    /// To the pool if it has room, else unmapped.
    IfRoom,
    /// To the pool (its accessible pages were already dropped).
    Always,
}

/// What the first step of a release ([`LinuxBackend::release_start`]) decided.
#[derive(Debug)]
enum Start {
    /// Nothing needed dropping: the extent is in the pool already.
    Pooled,
    /// The extent goes with `munmap` (not poolable, no room, or too many runs to drop).
    Unmap,
    /// To the pool once the pages of these inaccessible runs are dropped.
    Drop(Ranges),
    /// Its one accessible run (with that access) is recorded guard-marked: the markers
    /// to install, then to the pool ([`LinuxBackend::pool_by_guard`]).
    Guard(Range<usize>, Access),
    /// Its accessible runs to decommit the general way, then to the pool.
    Decommit,
}

/// How [`Backend::decommit`] takes one run's access away and drops its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Guard markers (`MADV_GUARD_INSTALL`): both in one call.
    Guard,
    /// `MADV_DONTNEED`, then `mprotect(PROT_NONE)`, markers should that fail.
    DropFirst,
    /// `mprotect(PROT_NONE)` (revocable), then `MADV_DONTNEED`; or only the drop, for a
    /// run that is inaccessible already.
    Revoke,
}

/// The kernel state of a page with no entry: inaccessible, unguarded, empty.
const FRESH: Kernel = Kernel { prot: Access::None, guarded: false, touched: false };

/// The kernel state of a page the CPU may access with `a`: never guard-marked, and
/// it has been accessible.
fn granting(a: Access) -> Kernel {
    Kernel { prot: a, guarded: false, touched: true }
}

fn entry(k: Kernel) -> Option<Kernel> {
    (k != FRESH).then_some(k)
}

/// How many words of a page [`Witness`] keeps at most: one per quarter of the page.
const WITNESS_WORDS: usize = 4;

/// Values of a page that `MEM_RESET` offered to the kernel: in each quarter of the page
/// that held data, its first non-zero 8-byte word and where it is (the first `len`
/// entries). A page the kernel reclaims reads as zero wherever the program has not
/// written since; one it kept holds its old values wherever the program has not written
/// since. Several words, spread over the page, so that a program writing into part of
/// a page after the reset (an allocator reusing a block's first bytes) does not make a
/// page that survived look lost.
#[derive(Debug, Clone, Copy)]
struct Witness {
    len: u8,
    offsets: [u16; WITNESS_WORDS],
    values: [u64; WITNESS_WORDS],
}

/// How much of a reset range is copied out at a time to find its pages' witnesses.
const RESET_CHUNK: usize = 64 * PAGE;

impl Witness {
    /// The witness of a page whose words could not be read: no words, so the page counts
    /// as lost ([`Witness::survived`] of nothing is false).
    const UNKNOWN: Witness = Witness { len: 0, offsets: [0; WITNESS_WORDS], values: [0; WITNESS_WORDS] };

    /// The witness of the page whose words are `words`, or `None` if it holds only zeros.
    fn of(words: &[u64]) -> Option<Witness> {
        let mut w = Witness { len: 0, offsets: [0; WITNESS_WORDS], values: [0; WITNESS_WORDS] };
        let quarter = words.len() / WITNESS_WORDS;
        for (q, part) in words.chunks(quarter).enumerate() {
            if let Some(i) = part.iter().position(|&v| v != 0) {
                w.offsets[w.len as usize] = (q * quarter + i) as u16;
                w.values[w.len as usize] = part[i];
                w.len += 1;
            }
        }
        (w.len > 0).then_some(w)
    }

    /// Whether the page survived, given the words now at the witness's offsets: none
    /// reads zero (a reclaimed page reads zero where the program has not written since)
    /// and one at least still holds its value (the program may have written the others).
    /// A page where the program wrote zero into a witness word, or new values into all
    /// of them, counts as lost: when in doubt, say the data is gone, as the program can
    /// then rebuild it, where a false "intact" would let it use zeros as its data.
    fn survived(&self, now: &[u64]) -> bool {
        let kept = &self.values[..self.len as usize];
        !now.contains(&0) && now.iter().zip(kept).any(|(n, k)| n == k)
    }
}

/// Take back from the kernel the writable page at `page` that a reset offered it, and
/// say whether its data survived ([`Witness::survived`]). A store to the page makes it
/// dirty, which cancels the lazy free of a page still there (one the kernel took reads
/// zero, and the store faults in a zeroed page). The store is a compare-and-swap of the
/// first witness word's current value with itself, repeated until it succeeds: it
/// changes nothing a racing store wrote, and it is a real write — an atomic RMW that
/// adds or ORs 0 is compiled to a fence and a load (LLVM folds idempotent RMWs), which
/// cancels nothing and let a "successful" undo lose its data later. The other witness
/// words are read after it, when the page can no longer be taken.
fn keep_page(page: usize, w: &Witness) -> bool {
    let mut now = [0u64; WITNESS_WORDS];
    for (k, &offset) in w.offsets[..w.len as usize].iter().enumerate() {
        // SAFETY: the word is 8-byte aligned (the witness offsets count 8-byte words)
        // and lies in a writable, mapped page of a reservation the engine keeps busy for
        // as long as this call; it is only read, or compared and swapped with the value it
        // holds, which changes no value. The program's threads may store to the page
        // meanwhile, with plain stores of their own: an atomic access is the only way to
        // store here without losing such a store (the compare-and-swap fails and retries
        // instead), and no Rust reference to the word exists.
        let word = unsafe { std::sync::atomic::AtomicU64::from_ptr((page + offset as usize * 8) as *mut u64) };
        now[k] = if k == 0 {
            let mut v = word.load(Ordering::SeqCst);
            loop {
                match word.compare_exchange(v, v, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => break v,
                    Err(seen) => v = seen,
                }
            }
        } else {
            word.load(Ordering::SeqCst)
        };
    }
    w.survived(&now[..w.len as usize])
}

/// The process's real memory. See the module docs.
pub struct LinuxBackend {
    limits: Limits,
    options: LinuxOptions,
    /// The pool's cap in bytes: `options.pool_bytes`, or less under an address-space
    /// limit (see [`LinuxOptions::pool_bytes`]).
    pool_cap: usize,
    maps: Maps,
    pagemap: Pagemap,
    /// What this backend did to the kernel; never locked across a system call.
    state: Mutex<State>,
    /// Pages offered to the kernel by `MEM_RESET` that held data: page → witness.
    witnesses: Mutex<BTreeMap<usize, Witness>>,
    /// Whether `witnesses` has ever held an entry: set under its lock before the first
    /// is added, so that the paths that forget witnesses (every decommit and release)
    /// skip that lock in a program that never resets. (A range's witnesses are added by
    /// an earlier call on its reservation, which the engine orders before this one.)
    witnessed: AtomicBool,
    /// Write tracking, set up on first use.
    watch: OnceLock<Result<watch::Watch, BackendError>>,
    /// Side effects performed (system calls that change memory), for tests and benches.
    syscalls: AtomicU64,
    /// Questions asked of the kernel's map of mappings (see [`LinuxStats::map_queries`]).
    map_queries: AtomicU64,
    /// The value of `syscalls` at which a fallible system call is made to fail
    /// instead of being made (0: never); see [`LinuxBackend::inject_failure`].
    fail_at: AtomicU64,
    /// The value of `syscalls` at which a second injected failure follows the first (0:
    /// none); see [`LinuxBackend::inject_failures`].
    fail_then: AtomicU64,
}

impl std::fmt::Debug for LinuxBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxBackend").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// Read a number from a `/proc/sys` or `/sys` file.
fn read_number(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Statistics of a [`LinuxBackend`], for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LinuxStats {
    /// Memory-changing system calls made so far.
    pub syscalls: u64,
    /// Questions asked of the kernel's map of this process's mappings so far (one
    /// `PROCMAP_QUERY` system call each, or a read of `/proc/self/maps` where the
    /// kernel lacks it): how `VirtualQuery` and placement learn of memory that is not
    /// this backend's.
    pub map_queries: u64,
    /// `PAGEMAP_SCAN` system calls made so far (write watch's scans and resets, and
    /// the scans for populated pages), a call restarted after a signal counted once.
    pub page_scans: u64,
    /// Live reservations.
    pub reservations: usize,
    /// Ranges in the pool, and their bytes.
    pub pooled_ranges: usize,
    /// Bytes in the pool.
    pub pooled_bytes: usize,
    /// Runs of pages whose kernel state differs from fresh.
    pub kernel_runs: usize,
    /// Runs decommitted with guard markers.
    pub guarded_runs: usize,
}

impl LinuxBackend {
    /// A backend over this process's memory. Fails if `/proc` is not mounted (the
    /// backend needs `/proc/self/maps` to see other mappings), and with
    /// [`std::io::ErrorKind::InvalidInput`] if [`WITHOUT_ENV`] names something that is
    /// not a feature (the message names it and the accepted names).
    pub fn new() -> std::io::Result<LinuxBackend> {
        LinuxBackend::with_options(LinuxOptions::default())
    }

    /// A backend with the given tuning; fails as [`LinuxBackend::new`] does.
    pub fn with_options(options: LinuxOptions) -> std::io::Result<LinuxBackend> {
        // Before anything probes the kernel's features, which the variable withholds.
        without_env().map_err(|message| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, WithoutEnvError(message.to_string()))
        })?;
        let maps = Maps::open()?;
        let pagemap = Pagemap::open()?;
        let min = read_number("/proc/sys/vm/mmap_min_addr").unwrap_or(0);
        let min = round_up(min, GRANULE).unwrap_or(GRANULE).max(GRANULE);
        let huge = ["nr_hugepages", "nr_overcommit_hugepages"]
            .iter()
            .filter_map(|f| read_number(&format!("/sys/kernel/mm/hugepages/hugepages-2048kB/{f}")))
            .any(|n| n > 0);
        // Pooled ranges count against an address-space limit (`None`: unlimited).
        let limited = rustix::process::getrlimit(rustix::process::Resource::As).current.is_some();
        let pool_cap = if limited { options.pool_bytes.min(POOL_LIMITED) } else { options.pool_bytes };
        Ok(LinuxBackend {
            pool_cap,
            limits: Limits {
                min_address: min,
                end_address: round_down(USER_TOP, GRANULE),
                large_page_size: if huge { HUGE_PAGE } else { 0 },
            },
            options,
            maps,
            pagemap,
            state: Mutex::new(State::default()),
            witnesses: Mutex::new(BTreeMap::new()),
            witnessed: AtomicBool::new(false),
            watch: OnceLock::new(),
            syscalls: AtomicU64::new(0),
            map_queries: AtomicU64::new(0),
            fail_at: AtomicU64::new(0),
            fail_then: AtomicU64::new(0),
        })
    }

    /// How many memory-changing system calls this backend has made.
    pub fn syscall_count(&self) -> u64 {
        self.syscalls.load(Ordering::Relaxed)
    }

    /// Counters describing the backend's state.
    pub fn stats(&self) -> LinuxStats {
        let st = self.state.lock();
        LinuxStats {
            syscalls: self.syscall_count(),
            map_queries: self.map_queries.load(Ordering::Relaxed),
            page_scans: self.pagemap.scan_count(),
            reservations: st.live().len(),
            pooled_ranges: st.pool().len(),
            pooled_bytes: st.pool_bytes(),
            kernel_runs: st.kernel.len(),
            guarded_runs: st.kernel.iter().filter(|(_, k)| k.guarded).count(),
        }
    }

    /// Whether write watch (`MEM_WRITE_WATCH`) is available: the kernel has
    /// userfaultfd's asynchronous write protection (`UFFD_FEATURE_WP_ASYNC`) and
    /// `PAGEMAP_SCAN` (Linux 6.7+), and this process may use userfaultfd. When `false`, a
    /// write-watched reserve fails with `ERROR_NOT_SUPPORTED`. The first call sets up the
    /// write tracking (it opens a userfaultfd).
    pub fn write_watch_supported(&self) -> bool {
        self.watch().is_ok()
    }

    /// The kernel features this backend does without, each taking its fallback: missing
    /// from the kernel, or withheld by the `VIRTMEM_LINUX_WITHOUT` environment variable
    /// ([`WITHOUT_ENV`]). Names, in this order: `fixed_noreplace` (`MAP_FIXED_NOREPLACE`,
    /// Linux 4.17: a reserve at a chosen address maps with a hint and checks the result),
    /// `pagemap_scan` (`PAGEMAP_SCAN`, Linux 6.7: write watch is refused with
    /// `ERROR_NOT_SUPPORTED`, and a reset finds written pages in `/proc/self/pagemap`),
    /// `guard` (`MADV_GUARD_INSTALL`, Linux 6.13: decommit is `mprotect` +
    /// `MADV_DONTNEED`), `procmap_query` (`PROCMAP_QUERY`, Linux 6.11: memory that is not
    /// the backend's is looked up in the text of `/proc/self/maps`, which costs time in
    /// proportion to the process's mappings), `membarrier_expedited`
    /// (`MEMBARRIER_CMD_PRIVATE_EXPEDITED`, Linux 4.14: [`flush_process_write_buffers`]
    /// waits for an RCU grace period with `MEMBARRIER_CMD_GLOBAL`) and `membarrier` (the
    /// system call, Linux 4.3, or a seccomp filter that forbids it: the page-protection
    /// flush, see [`FlushMechanism`]). The last two are process-wide and probed on the
    /// first call that needs them (this one, or a flush).
    pub fn missing_features(&self) -> Vec<&'static str> {
        let f = features();
        [
            ("fixed_noreplace", f.fixed_noreplace),
            ("pagemap_scan", f.pagemap_scan),
            ("guard", f.guard),
            ("procmap_query", self.maps.uses_ioctl()),
            ("membarrier_expedited", flush_mechanism() == FlushMechanism::MembarrierPrivateExpedited),
            ("membarrier", flush_mechanism() != FlushMechanism::PageProtection),
        ]
        .into_iter()
        .filter_map(|(name, has)| (!has).then_some(name))
        .collect()
    }

    /// Whether decommit uses guard markers (`MADV_GUARD_INSTALL`, Linux 6.13+, and
    /// [`LinuxOptions::guard_regions`]).
    pub fn uses_guard_regions(&self) -> bool {
        self.options.guard_regions && features().guard
    }

    /// The tuning this backend was made with.
    pub fn options(&self) -> LinuxOptions {
        self.options
    }

    /// The most address space the pool holds: [`LinuxOptions::pool_bytes`], or at most
    /// 1 GiB when the process had an address-space limit (`RLIMIT_AS`) as the backend
    /// was made.
    pub fn pool_cap(&self) -> usize {
        self.pool_cap
    }

    /// Failure injection below the backend interface: the `n`-th fallible system call
    /// from now (1-based) fails with `ENOMEM` without being made; 0 disarms. Tests use
    /// it to show that every operation undoes its own partial work.
    #[doc(hidden)]
    pub fn inject_failure(&self, n: u64) {
        self.inject_failures(n, 0);
    }

    /// As [`LinuxBackend::inject_failure`], and the `m`-th call from now (`m > n`; 0 for
    /// none) fails too: a failure, then the failure of an undo, say.
    #[doc(hidden)]
    pub fn inject_failures(&self, n: u64, m: u64) {
        let now = self.syscalls.load(Ordering::SeqCst);
        self.fail_then.store(if n == 0 || m <= n { 0 } else { now + m }, Ordering::SeqCst);
        self.fail_at.store(if n == 0 { 0 } else { now + n }, Ordering::SeqCst);
    }

    /// Whether an injected failure is still pending.
    #[doc(hidden)]
    pub fn failure_pending(&self) -> bool {
        self.fail_at.load(Ordering::SeqCst) != 0
    }

    /// Count an infallible system call.
    fn count(&self) {
        self.syscalls.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a fallible system call about to be made, or fail it by injection.
    fn gate(&self) -> Result<(), Errno> {
        let n = self.syscalls.fetch_add(1, Ordering::Relaxed) + 1;
        let at = self.fail_at.load(Ordering::Relaxed);
        if at != 0 && at == n {
            self.fail_at.store(self.fail_then.swap(0, Ordering::SeqCst), Ordering::SeqCst);
            return Err(Errno::NOMEM);
        }
        Ok(())
    }

    fn watch(&self) -> Result<&watch::Watch, BackendError> {
        self.watch
            .get_or_init(|| {
                if !features().pagemap_scan {
                    return Err(BackendError::Unsupported("PAGEMAP_SCAN (Linux 6.7)"));
                }
                watch::Watch::new()
            })
            .as_ref()
            .map_err(|e| *e)
    }

    /// `w` as this process's own: in a forked child, the first call opens the child's
    /// userfaultfd and registers with it the mapped extents of the live write-watched
    /// reservations (see the `watch` module), which takes the state lock: not to be
    /// called with it held.
    fn adopted(&self, w: &watch::Watch) -> Result<watch::Adopted, BackendError> {
        w.adopt(|| {
            let st = self.state.lock();
            st.live().iter().filter(|(_, x)| x.write_watch).map(|(start, x)| start..x.end).collect()
        })
    }

    /// The mapped extent of a reservation: to the end of its last granule (large-page
    /// reservations are already aligned).
    fn extent(range: &Range<usize>) -> Range<usize> {
        range.start..round_up(range.end, GRANULE).unwrap_or(range.end)
    }

    /// The first part of `[addr, limit)` that the kernel has mapped and this backend
    /// did not, with the whole extent of that foreign piece. `mapping` is an extent
    /// being mapped right now: recorded as ours, but not yet (all) in the kernel.
    fn foreign_piece(&self, addr: usize, limit: usize, mapping: Option<&Range<usize>>) -> Option<procfs::Vma> {
        self.foreign_piece_then(addr, limit, mapping, true).flatten()
    }

    /// [`LinuxBackend::foreign_piece`]; unless `wait`, the backend's state lock is only
    /// tried, and `None` is the answer when another thread holds it, or when the answer
    /// depends on another thread's reserve that is mapping (or unmapping) part of the
    /// range right now.
    ///
    /// Such a part ([`State::in_flux`]) is told apart from someone else's mapping only
    /// once that reserve has recorded what its system call did: a mapping found there
    /// meanwhile may be the reservation being made (which a query must not call someone
    /// else's: to the engine it is free until the reserve is recorded, and then whole)
    /// or a mapping of the program's that makes the reserve fail (which a query must
    /// never call free). So the answer waits for that one system call and its record,
    /// and is then looked for again.
    fn foreign_piece_then(
        &self,
        addr: usize,
        limit: usize,
        mapping: Option<&Range<usize>>,
        wait: bool,
    ) -> Option<Option<procfs::Vma>> {
        loop {
            match self.foreign_piece_look(addr, limit, mapping, wait) {
                Look::Found(found) => return Some(found),
                Look::Busy => return None,
                // (The other reserve needs nothing this thread holds, and is between a
                // system call and its record: not for long.)
                Look::InFlux if wait => std::thread::yield_now(),
                Look::InFlux => return None,
            }
        }
    }

    /// One look of [`LinuxBackend::foreign_piece_then`].
    fn foreign_piece_look(&self, addr: usize, limit: usize, mapping: Option<&Range<usize>>, wait: bool) -> Look {
        let lock = || if wait { Some(self.state.lock()) } else { self.state.try_lock() };
        // What this backend has mapped (live or pooled) holds nothing foreign: skip
        // it without asking the kernel, so a query in a pooled hole (or a check of
        // room that is all ours) makes no system call.
        let mut a = addr;
        {
            let Some(state) = lock() else { return Look::Busy };
            #[cfg(test)]
            state.check_owned();
            while let Some(o) = state.owned_at(a, mapping) {
                a = o.end;
                if a >= limit {
                    return Look::Found(None);
                }
            }
        }
        while a < limit {
            self.map_queries.fetch_add(1, Ordering::Relaxed);
            let Some(vma) = self.maps.at_or_after(a) else { return Look::Found(None) };
            if vma.start >= limit {
                return Look::Found(None);
            }
            // The kernel merges adjacent compatible mappings, so a VMA may hold some of
            // ours: walk the pieces of it that are not ours, in order, without
            // collecting them (a query must not allocate: a host may call it while other
            // threads are suspended).
            let Some(state) = lock() else { return Look::Busy };
            let mut cursor = vma.start;
            while cursor < vma.end {
                if let Some(o) = state.owned_at(cursor, mapping) {
                    cursor = o.end;
                    continue;
                }
                let end = state.next_owned_after(cursor, mapping).map_or(vma.end, |s| s.min(vma.end));
                if end > a && cursor < limit {
                    let piece = cursor.max(a)..end.min(limit);
                    if state.in_flux(&piece, mapping) {
                        return Look::InFlux;
                    }
                    return Look::Found(Some(procfs::Vma { start: cursor, end, ..vma }));
                }
                cursor = end;
            }
            drop(state);
            a = vma.end;
        }
        Look::Found(None)
    }

    /// Map `ext` (part of the reservation extent `whole`) inaccessible without
    /// replacing anything.
    fn map_new(&self, ext: &Range<usize>, whole: &Range<usize>, large: bool) -> Result<(), BackendError> {
        let mut flags = MapFlags::PRIVATE;
        if large {
            // Hugetlb pages are reserved at mmap time (no NORESERVE), so a system
            // without them fails here, cleanly, rather than at the first touch.
            flags |= MapFlags::HUGETLB | MapFlags::HUGE_2MB;
        } else {
            flags |= MapFlags::NORESERVE;
        }
        if features().fixed_noreplace {
            flags |= MapFlags::FIXED_NOREPLACE;
        }
        let len = ext.end - ext.start;
        for _ in 0..4 {
            // SAFETY: with MAP_FIXED_NOREPLACE the kernel refuses (EEXIST) rather
            // than replace an existing mapping; without it the address is only a
            // hint and a mapping elsewhere is undone below. Either way no existing
            // memory is touched.
            let mapped = self
                .gate()
                .and_then(|()| unsafe { rustix::mm::mmap_anonymous(ptr(ext.start), len, ProtFlags::empty(), flags) });
            match mapped {
                Ok(p) if p as usize == ext.start => return Ok(()),
                Ok(p) => {
                    // SAFETY: `p` is the mapping the kernel just made for us elsewhere.
                    let _ = unsafe { rustix::mm::munmap(p, len) };
                }
                Err(Errno::EXIST) => {}
                Err(e) if large && e != Errno::AGAIN => return Err(BackendError::LargePagesUnavailable),
                Err(e) => return Err(errno_error(e)),
            }
            if let Some(v) = self.foreign_piece(ext.start, ext.end, Some(whole)) {
                return Err(BackendError::Occupied { start: v.start, end: v.end });
            }
            // The occupant went away between the two calls: try again.
        }
        Err(BackendError::Occupied { start: ext.start, end: ext.end })
    }

    /// Drop the witnesses of pages in `range`.
    fn forget_witnesses(&self, range: &Range<usize>) {
        if !self.witnessed.load(Ordering::Acquire) {
            return;
        }
        let mut w = self.witnesses.lock();
        if w.is_empty() || w.range(range.clone()).next().is_none() {
            return;
        }
        let doomed: Vec<usize> = w.range(range.clone()).map(|(&k, _)| k).collect();
        for k in doomed {
            w.remove(&k);
        }
    }

    /// `MADV_DONTNEED` drops private anonymous pages immediately (unlike `MADV_FREE`):
    /// RSS falls now, the range reads zero when next accessible, and the emptied
    /// page-table entries carry no write-protect bit, so the pages are clean for write
    /// watch. It leaves guard markers in place.
    fn drop_pages(&self, range: &Range<usize>) {
        self.count();
        // SAFETY: a range of one of our reservations whose contents the engine has
        // decided to drop.
        let _ = unsafe { rustix::mm::madvise(ptr(range.start), range.len(), rustix::mm::Advice::LinuxDontNeed) };
        self.forget_witnesses(range);
    }

    /// Hand the live extent `ext`, now inaccessible and empty, to the pool, with the
    /// state lock `st` held; then let the lock go and forget the extent's witnesses.
    fn hand_to_pool(&self, mut st: parking_lot::MutexGuard<'_, State>, ext: &Range<usize>) {
        st.live_to_pool(ext);
        drop(st);
        self.forget_witnesses(ext);
    }

    /// Record that the pages of `runs` were dropped: they hold no data now.
    fn mark_emptied(st: &mut State, runs: impl IntoIterator<Item = Range<usize>>) {
        for r in runs {
            st.kernel.update(r, |k| k.and_then(|k| entry(Kernel { touched: false, ..k })));
        }
    }

    /// Run `op` on `range` so that its stores do not count as writes for write watch:
    /// on a write-watched range the pages that were clean before `op` and are dirty
    /// after it are made clean again. If that fails, `undo` reverts `op`. Used by
    /// `MEM_RESET_UNDO`, whose stores take pages back from the kernel (an undo writes
    /// nothing). A store by the program itself to such a page while `op` runs would be
    /// lost from tracking: a program does not write to a range it is resetting or
    /// undoing a reset of (Windows asks the same); the engine's own writes wait.
    fn without_writes(
        &self,
        range: &Range<usize>,
        op: impl FnOnce() -> Result<(), BackendError>,
        undo: impl FnOnce(),
    ) -> Result<(), BackendError> {
        let watch = self.watch.get().and_then(|w| w.as_ref().ok()).map(|w| self.adopted(w)).transpose()?;
        let before = match &watch {
            Some(w) => w.written_if_watched(&self.pagemap, range)?,
            None => None,
        };
        op()?;
        let (Some(w), Some(before)) = (watch, before) else { return Ok(()) };
        let cleaned = w.written_if_watched(&self.pagemap, range).and_then(|after| {
            for run in after.unwrap_or_default() {
                for page in run.step_by(PAGE) {
                    if !before.iter().any(|b| b.contains(&page)) {
                        w.clear(&self.pagemap, &(page..page + PAGE))?;
                    }
                }
            }
            Ok(())
        });
        if cleaned.is_err() {
            undo();
        }
        cleaned
    }

    /// The work of [`Backend::set_access`].
    fn change_access(&self, range: &Range<usize>, from: Access, to: Access) -> Result<(), BackendError> {
        let range = range.clone();
        let accessible = from != Access::None && to != Access::None;
        if accessible {
            // Pages the CPU may access are not guard-marked, have the protection `from`
            // (the engine passes the access they have) and have been accessible, so
            // their new state is known without reading the old one, and one `mprotect`
            // does it. A guard-marked run with the same protection right next to the
            // range is part of the same kernel mapping: it is taken along (it stays
            // marked, under the new protection), which spares the kernel a split and a
            // merge (see `State::widen_over_same_guards`). The record is changed first,
            // in the same walk that looks at the neighbours, and put back should the
            // call fail (the engine runs nothing else on this reservation meanwhile).
            // (Usually the range is exactly one entry of the record, with such runs,
            // if any, inside its granules: then it and they are rewritten in place with
            // one search, see `IntervalMap::replace_entry_widening`. A decommit with
            // guard markers next to the range, as in scattered commit/decommit, is
            // common: the general way below costs several searches and collections.)
            let same_guard = |k: Kernel| k.guarded && k.prot == from;
            let within = rules::granules(range.clone());
            let recorded = {
                let mut st = self.state.lock();
                let along = |k: Kernel| same_guard(k).then_some(Kernel { prot: to, ..k });
                match st.kernel.replace_entry_widening(&range, granting(from), granting(to), &within, along) {
                    Some(span) => Some(span),
                    None => st
                        .kernel
                        .update_unless(
                            range.clone(),
                            |k| {
                                let k = k.unwrap_or(FRESH);
                                debug_assert_eq!(k, granting(from), "kernel state disagrees with the engine");
                                entry(Kernel { prot: to, ..k })
                            },
                            |left, right| {
                                left.is_some_and(|(_, k)| same_guard(k)) || right.is_some_and(|(_, k)| same_guard(k))
                            },
                        )
                        .then(|| range.clone()),
                }
            };
            if let Some(span) = recorded {
                if let Err(e) = self.protect(&span, to) {
                    // Every page of the span had the protection `from`.
                    self.restore(&[(span.clone(), Kernel { prot: from, ..FRESH })]);
                    let mut st = self.state.lock();
                    st.kernel.set(range.clone(), Some(granting(from)));
                    for side in [span.start..range.start, range.end..span.end] {
                        st.kernel.update(side, |k| k.map(|k| Kernel { prot: from, ..k }));
                    }
                    return Err(errno_error(e));
                }
                return Ok(());
            }
        }
        if from == Access::None && to != Access::None {
            // Usually the record holds nothing for pages made accessible (never made
            // accessible, or decommitted the merging way): they are fresh, and their
            // new state is known. It is recorded first, in one search, and taken back
            // should the call fail, as above.
            // Or they lie in one run a decommit guard-marked under the protection they
            // now take (marked pieces side by side are one entry): then only the markers
            // go, and the record is changed first the same way.
            let (filled, unguarded) = {
                let mut st = self.state.lock();
                if st.kernel.fill_gap(&range, granting(to)) {
                    (true, None)
                } else {
                    (false, st.kernel.retag_within(&range, granting(to), |k| k.guarded && k.prot == to))
                }
            };
            if filled {
                if let Err(e) = self.protect(&range, to) {
                    self.restore(&[(range.clone(), FRESH)]);
                    self.state.lock().kernel.clear(range);
                    return Err(errno_error(e));
                }
                return Ok(());
            }
            if let Some(old) = unguarded {
                if let Err(e) = self.guard(&range, false) {
                    self.state.lock().kernel.set(range, Some(old));
                    return Err(errno_error(e));
                }
                return Ok(());
            }
        }
        let (span, runs) = {
            let st = self.state.lock();
            let span = if accessible {
                st.widen_over_same_guards(&range, from)
            } else if to == Access::None {
                // Going to PROT_NONE, take the guard-marked pages on either side along:
                // they are inaccessible whatever their mapping's protection, and giving
                // them PROT_NONE too lets the kernel merge the whole run into one
                // mapping instead of splitting around them.
                match st.extent_of(range.start) {
                    Some((s, x)) => st.widen_over_guards(&range, &(s..x.end)),
                    None => range.clone(),
                }
            } else {
                range.clone()
            };
            (span.clone(), Self::kernel_runs(&st, &span))
        };
        debug_assert!(from == Access::None || runs.iter().all(|(r, k)| !k.guarded || !r.contains(&range.start)));
        let reprotect = runs.iter().any(|(_, k)| k.prot != to);
        // (Guard-marked neighbours the span was widened over stay marked.)
        let unguard = to != Access::None && runs.iter().any(|(r, k)| k.guarded && range.contains(&r.start));
        let changed = || runs.iter().filter(|(_, k)| k.prot != to).cloned().collect::<Vec<_>>();
        if reprotect {
            if let Err(e) = self.protect(&span, to) {
                // A failed mprotect may have changed some mappings before failing.
                self.restore(&changed());
                return Err(errno_error(e));
            }
        }
        if unguard {
            if let Err(e) = self.guard(&range, false) {
                self.restore(&changed());
                return Err(errno_error(e));
            }
        }
        let mut st = self.state.lock();
        for (r, k) in runs {
            let inside = r.start >= range.start && r.end <= range.end;
            let k = if inside {
                let touched = k.touched || (from == Access::None && to != Access::None);
                Kernel { prot: to, guarded: false, touched }
            } else {
                // A guard-marked neighbour: still marked, now under the new protection.
                Kernel { prot: to, ..k }
            };
            st.kernel.set(r, entry(k));
        }
        Ok(())
    }

    /// `mprotect`, counted and subject to failure injection.
    fn protect(&self, range: &Range<usize>, to: Access) -> Result<(), Errno> {
        self.gate()?;
        // SAFETY: the engine passes only pages of its own reservations (mapped by this
        // backend with MAP_FIXED_NOREPLACE, never over anyone else's mapping), so no Rust
        // allocation, stack or static lives there: nothing the compiler or the allocator
        // relies on changes. A program that dereferences these pages does so through raw
        // pointers, under the Win32 contract that decommitting or protecting them ends
        // such use.
        unsafe { rustix::mm::mprotect(ptr(range.start), range.len(), prot_of(to)) }
    }

    /// The usual decommit, of one accessible run that is one entry of the record, by
    /// guard markers or dropped first (see [`Backend::decommit`], which this does in
    /// fewer steps: one hold of the state lock and one search of the record when all
    /// goes well). The record is changed first, in the search that looks at the run's
    /// neighbours, and put back should the calls fail (the engine runs nothing else on
    /// this reservation meanwhile). `None` when the run is not of that shape, would take
    /// the revoking order, or its new entry would merge with a neighbour: nothing has
    /// changed and the general way takes over.
    fn decommit_one(&self, r: &Range<usize>, from: Access) -> Option<Result<(), BackendError>> {
        if from == Access::None {
            return None;
        }
        let marked = Kernel { prot: from, guarded: true, touched: false };
        let way = {
            let mut st = self.state.lock();
            let (_, x) = st.extent_of(r.start)?;
            if x.write_watch || x.large || !features().guard {
                return None;
            }
            let (guards, crowded) = (self.options.guard_regions, st.kernel.len() > CROWDED_RUNS);
            let mut way = Way::Revoke;
            st.kernel.rewrite_entry(r, granting(from), |left, right| {
                let between =
                    !left.is_some_and(|k| k.prot != Access::None) && !right.is_some_and(|k| k.prot != Access::None);
                if guards && r.len() <= GUARD_MAX && !(crowded && between) {
                    way = Way::Guard;
                    Some(Some(marked))
                } else if between {
                    way = Way::DropFirst;
                    Some(None)
                } else {
                    None
                }
            })?;
            way
        };
        let put_back = |k: Kernel| self.state.lock().kernel.set(r.clone(), Some(k));
        if way == Way::Guard {
            if self.guard(r, true).is_ok() {
                self.forget_witnesses(r);
                return Some(Ok(()));
            }
            // As in the general way: markers off again, then PROT_NONE and the drop.
            self.count();
            // SAFETY: removing markers from our own run only makes its (empty) pages
            // accessible again, as they were.
            let _ = unsafe { sys::madvise_raw(r.start, r.len(), sys::MADV_GUARD_REMOVE) };
            if let Err(e) = self.protect(r, Access::None) {
                put_back(granting(from));
                return Some(Err(errno_error(e)));
            }
            self.drop_pages(r);
            self.state.lock().kernel.clear(r.clone());
            return Some(Ok(()));
        }
        self.drop_pages(r);
        if self.protect(r, Access::None).is_ok() {
            return Some(Ok(()));
        }
        // As in the general way: the protection back, then markers on the empty pages.
        self.restore(&[(r.clone(), granting(from))]);
        if let Err(e) = self.guard(r, true) {
            self.count();
            // SAFETY: as above: the run's pages, empty, stay accessible.
            let _ = unsafe { sys::madvise_raw(r.start, r.len(), sys::MADV_GUARD_REMOVE) };
            put_back(granting(from));
            return Some(Err(errno_error(e)));
        }
        put_back(marked);
        Some(Ok(()))
    }

    /// Put each run back to the kernel protection it had (after a failed change).
    fn restore(&self, runs: &[(Range<usize>, Kernel)]) {
        for (r, k) in runs {
            self.count();
            // SAFETY: as in `protect`; restores what the kernel had before.
            let r = unsafe { rustix::mm::mprotect(ptr(r.start), r.len(), prot_of(k.prot)) };
            debug_assert!(r.is_ok(), "restoring a protection failed: {r:?}");
        }
    }

    /// `madvise` guard advice, counted and subject to failure injection.
    fn guard(&self, range: &Range<usize>, install: bool) -> Result<(), Errno> {
        self.gate()?;
        let advice = if install { sys::MADV_GUARD_INSTALL } else { sys::MADV_GUARD_REMOVE };
        loop {
            // SAFETY: a range of one of our reservations: installing markers drops its
            // pages (a decommit), removing them makes empty pages accessible again.
            match unsafe { sys::madvise_raw(range.start, range.len(), advice) } {
                Err(Errno::INTR) | Err(Errno::AGAIN) => continue,
                r => return r,
            }
        }
    }

    /// The kernel state of each piece of `range`.
    fn kernel_runs(st: &State, range: &Range<usize>) -> KernelRuns {
        st.kernel.runs(range.clone()).into_iter().map(|(r, k)| (r, k.unwrap_or(FRESH))).collect()
    }

    /// Whether the pool may take the live extent `ext` (`from_pool`: it was taken whole
    /// from the pool): within its bytes, and within its count of ranges unless it was
    /// taken whole from the pool (it puts back what it took) or touches a pooled range
    /// (then it merges into it and adds no range; it may even join two into one).
    fn pool_has_room(&self, st: &State, ext: &Range<usize>, from_pool: bool) -> bool {
        st.pool_bytes() + ext.len() <= self.pool_cap
            && (st.pool().len() < POOL_MAX_RANGES || from_pool || {
                let (left, right) = st.pool().neighbours(ext.clone());
                left.is_some() || right.is_some()
            })
    }

    /// How many entries of the record in `ext` are inaccessible pages that may hold data
    /// (counted up to one past [`POOL_MAX_RUNS`]).
    fn touched_inaccessible(st: &State, ext: &Range<usize>) -> usize {
        st.kernel
            .entries_in(ext.clone())
            .filter(|(_, k)| k.touched && k.access() == Access::None)
            .take(POOL_MAX_RUNS + 1)
            .count()
    }

    /// The first step of the release of the live extent `ext`, whose accessible runs are
    /// `accessible`: one hold of the state lock decides the way (see [`Start`]) and goes
    /// as far along it as it can without a system call. The extent is looked up once
    /// and its position carried to the pool when nothing needs dropping; with one
    /// accessible run that guard markers can take, one walk over the record checks that
    /// nothing else may hold data and records the run marked (put back by
    /// [`LinuxBackend::pool_by_guard`] should the markers fail: the engine runs nothing
    /// else on this reservation meanwhile). `pooling`: whether the pool's room counts.
    fn release_start(
        &self,
        ext: &Range<usize>,
        accessible: &[(Range<usize>, Access)],
        pooling: Pooling,
    ) -> Result<Start, BackendError> {
        let mut st = self.state.lock();
        let Some((p, x)) = st.live_entry(ext.start) else {
            return Err(BackendError::Os(libc::EINVAL));
        };
        let if_room = pooling == Pooling::IfRoom;
        if !x.poolable() || (if_room && !self.pool_has_room(&st, ext, x.from_pool)) {
            // munmap drops everything: the kernel state is not needed.
            return Ok(Start::Unmap);
        }
        match accessible {
            [] => {
                // Nothing accessible: the runs to drop are those that may hold data (at
                // most `POOL_MAX_RUNS` when the room counts).
                let mut touched = Ranges::new();
                for (r, k) in st.kernel.entries_in(ext.clone()) {
                    debug_assert!(k.access() == Access::None, "pooling accessible pages");
                    if k.touched {
                        if if_room && touched.len() == POOL_MAX_RUNS {
                            return Ok(Start::Unmap);
                        }
                        touched.push(r);
                    }
                }
                if !touched.is_empty() {
                    return Ok(Start::Drop(touched));
                }
                // Nothing to drop: to the pool now, no system call.
                st.live_to_pool_at(p);
                drop(st);
                self.forget_witnesses(ext);
                return Ok(Start::Pooled);
            }
            [(run, from)] if self.uses_guard_regions() && *from != Access::None && run.len() <= GUARD_MAX => {
                // (As in `decommit`: when mappings are many, a run that would merge back
                // into inaccessible neighbours is not left a marked mapping of its own.)
                let crowded = st.kernel.len() > CROWDED_RUNS && st.between_inaccessible(run);
                // The run is as the engine says (accessible, so one entry granting
                // `from`), and no other page of the extent may hold data that would need
                // dropping (pages without an entry never do).
                let marked = Kernel { prot: *from, guarded: true, touched: false };
                if !crowded && st.kernel.rewrite_sole_entry(ext, run, granting(*from), marked, |k| !k.touched) {
                    return Ok(Start::Guard(run.clone(), *from));
                }
            }
            _ => {}
        }
        // (Room, and few enough runs to drop: see `POOL_MAX_RUNS`.)
        if if_room && accessible.len() + Self::touched_inaccessible(&st, ext) > POOL_MAX_RUNS {
            return Ok(Start::Unmap);
        }
        Ok(Start::Decommit)
    }

    /// The usual release of a reservation with one accessible run and nothing else that
    /// may hold data, its record changed by [`LinuxBackend::release_start`]: guard markers
    /// on the run (`MADV_GUARD_INSTALL` drops its pages and makes it fault in one stroke,
    /// without splitting the mapping), then the whole extent to the pool; one system call
    /// and a second short hold of the state lock. Should the markers fail, they come off
    /// again, the record is put back and the general way takes over ([`Backend::decommit`]
    /// of `accessible`, then the pool).
    fn pool_by_guard(
        &self,
        ext: Range<usize>,
        run: &Range<usize>,
        from: Access,
        accessible: &[(Range<usize>, Access)],
    ) -> Result<(), BackendError> {
        if self.guard(run, true).is_ok() {
            // (Nothing else changed the extent meanwhile: the engine runs nothing else on it.)
            let st = self.state.lock();
            self.hand_to_pool(st, &ext);
            return Ok(());
        }
        self.count();
        // SAFETY: removing markers from our own run only makes its (empty) pages
        // accessible again, as they were.
        let _ = unsafe { sys::madvise_raw(run.start, run.len(), sys::MADV_GUARD_REMOVE) };
        // (The run was exactly one entry granting `from`.)
        self.state.lock().kernel.set(run.clone(), Some(granting(from)));
        self.decommit(accessible)?;
        // Pooled even if another release filled the pool meanwhile: nothing may fail now.
        self.release_extent(ext, Pooling::Always)
    }

    /// Release the live extent `ext`, none of whose pages is accessible: to the pool
    /// after dropping pages that may hold data, or with `munmap`.
    fn release_extent(&self, ext: Range<usize>, pooling: Pooling) -> Result<(), BackendError> {
        match self.release_start(&ext, &[], pooling)? {
            Start::Pooled => Ok(()),
            Start::Drop(touched) => {
                self.drop_and_pool(&ext, touched);
                Ok(())
            }
            // (Unmap: the other ways need accessible runs.)
            _ => self.unmap_or_pool(ext, &[]),
        }
    }

    /// Drop the pages of the inaccessible runs `touched` of the live extent `ext`, then
    /// hand it to the pool.
    fn drop_and_pool(&self, ext: &Range<usize>, touched: Ranges) {
        for r in &touched {
            self.drop_pages(r);
        }
        let mut st = self.state.lock();
        // (The state of the extent did not change meanwhile: the engine runs
        // nothing else on it.)
        Self::mark_emptied(&mut st, touched);
        self.hand_to_pool(st, ext);
    }

    /// `munmap` the live extent `ext` (whose accessible runs are `accessible`); if the
    /// kernel refuses, pool it instead.
    ///
    /// The kernel refuses (`ENOMEM`) to unmap part of a merged mapping when the split
    /// would pass its mapping-count limit, which a busy process nears. The extent then
    /// goes to the pool whatever the pool's cap (it stays mapped either way): its
    /// accessible runs decommitted first, as a pooled release does, so that it is
    /// inaccessible and empty. The release succeeds, the range is free to the engine,
    /// and this backend's to reuse (or unmap when it is dropped). A write-watched extent
    /// is parked the same way by [`LinuxBackend::park_watched`] when guard regions are in
    /// use. Not for large-page extents (a mapping of huge pages never merges with a
    /// neighbour, so unmapping one whole never needs a split), nor for a write-watched
    /// extent without guard regions: their release fails.
    fn unmap_or_pool(&self, ext: Range<usize>, accessible: &[(Range<usize>, Access)]) -> Result<(), BackendError> {
        match self.unmap_extent(ext.clone()) {
            Err(BackendError::OutOfMemory) => {
                let x = self.state.lock().live().get(ext.start);
                match x {
                    Some(x) if x.poolable() => {
                        self.decommit(accessible)?;
                        self.release_extent(ext, Pooling::Always)
                    }
                    Some(x) if x.write_watch && !x.large && self.uses_guard_regions() => self.park_watched(ext),
                    _ => Err(BackendError::OutOfMemory),
                }
            }
            other => other,
        }
    }

    /// Pool the write-watched extent `ext` that the kernel refused to unmap (see
    /// [`LinuxBackend::unmap_or_pool`]), without splitting a mapping: its accessible
    /// runs get guard markers (`MADV_GUARD_INSTALL` drops their pages and makes them
    /// fault; `mprotect` would split the merged mapping, which is what the kernel just
    /// refused), its other pages that may hold data are dropped (`MADV_DONTNEED`), and the
    /// range goes to the pool. It stays registered for write tracking, which nothing reads
    /// any more: a reservation that reuses it without write watch never scans it, and one
    /// with write watch never takes pooled ranges (they are unmapped and mapped afresh).
    /// Should the kernel fail to install a marker (out of memory for page tables), the
    /// markers already installed are removed, the release fails, and the runs already
    /// marked stay committed but empty.
    fn park_watched(&self, ext: Range<usize>) -> Result<(), BackendError> {
        let runs = Self::kernel_runs(&self.state.lock(), &ext);
        let mut marked: KernelRuns = KernelRuns::new();
        let mut dropped: Ranges = Ranges::new();
        for (r, k) in runs {
            if k.access() != Access::None {
                if let Err(e) = self.guard(&r, true) {
                    self.count();
                    for (done, _) in marked.iter().chain([&(r.clone(), k)]) {
                        // SAFETY: removing markers from our own runs only makes their
                        // (empty) pages accessible again, as the engine has them.
                        let _ = unsafe { sys::madvise_raw(done.start, done.len(), sys::MADV_GUARD_REMOVE) };
                    }
                    let mut st = self.state.lock();
                    for (done, k) in marked {
                        st.kernel.set(done, entry(Kernel { touched: false, ..k }));
                    }
                    return Err(errno_error(e));
                }
                marked.push((r, k));
            } else if k.touched {
                self.drop_pages(&r);
                dropped.push(r);
            }
        }
        let mut st = self.state.lock();
        // (Nothing else changed the extent meanwhile: the engine runs nothing else on it.)
        for (r, k) in marked {
            st.kernel.set(r, Some(Kernel { prot: k.prot, guarded: true, touched: false }));
        }
        Self::mark_emptied(&mut st, dropped);
        self.hand_to_pool(st, &ext);
        Ok(())
    }

    /// `munmap` the live extent `ext`, which drops everything (accessible pages, guard
    /// markers, locks, write tracking), and forget it.
    ///
    /// The extent stops counting as this backend's before the `munmap`
    /// ([`State::unmapping`]): its last granule's pages past the reservation's end lie in
    /// a free gap of the engine's, which a query may ask about while this runs, and from
    /// the `munmap` on someone else may map there. A query that meets the extent
    /// meanwhile waits for this call's record (as for a reserve under way, see
    /// [`State::in_flux`]) instead of calling that mapping free.
    fn unmap_extent(&self, ext: Range<usize>) -> Result<(), BackendError> {
        self.gate().map_err(errno_error)?;
        self.state.lock().unmapping(&ext);
        // SAFETY: the engine releases only reservations this backend mapped, and
        // `ext` is exactly what `reserve` mapped. munmap also ends write tracking.
        if let Err(e) = unsafe { rustix::mm::munmap(ptr(ext.start), ext.len()) } {
            self.state.lock().set_unmapped(&ext, &[]);
            return Err(errno_error(e));
        }
        #[cfg(test)]
        tests::after_unmap(self, &ext);
        let mut st = self.state.lock();
        st.forget_live(&ext);
        st.kernel.clear(ext.clone());
        drop(st);
        self.forget_witnesses(&ext);
        Ok(())
    }
}

impl LinuxBackend {
    /// The written pages of write-tracked `range`, ascending, at most `max`, each handed
    /// to `found` (with `reset`, exactly those become clean in the same scan); how many.
    /// What `dirty_pages` and `dirty_pages_into` share: they differ only in where the
    /// pages go.
    fn scan_dirty(
        &self,
        range: Range<usize>,
        max: usize,
        reset: bool,
        found: impl FnMut(usize),
    ) -> Result<usize, BackendError> {
        let w = self.watch()?;
        if reset {
            self.gate().map_err(errno_error)?;
        }
        self.adopted(w)?.dirty_pages(&self.pagemap, range, max, reset, found)
    }
}

impl Drop for LinuxBackend {
    /// Unmap the pool. Live reservations stay mapped: memory a caller may still use
    /// is never pulled from under it.
    fn drop(&mut self) {
        let st = self.state.get_mut();
        for (r, _) in st.pool().iter() {
            // SAFETY: pooled ranges are mapped by us and used by nobody.
            let _ = unsafe { rustix::mm::munmap(ptr(r.start), r.len()) };
        }
    }
}

impl Backend for LinuxBackend {
    fn limits(&self) -> Limits {
        self.limits
    }

    /// The main thread's stack, the room it may grow into (its `RLIMIT_STACK`, and
    /// the kernel's guard gap) and everything above it (vDSO, vvar); and the next GiB
    /// above the program break, where `malloc` grows the heap with `brk`. Avoided, not
    /// blocked: the engine does not pick them by itself, but a caller may reserve at an
    /// address there when the kernel has nothing there (what `VirtualQuery` reports as
    /// free must be reservable).
    fn initial_avoided(&self) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let top = self.limits.end_address;
        if let Some(stack) = procfs::named_mapping("[stack]") {
            let limit = rustix::process::getrlimit(rustix::process::Resource::Stack)
                .current
                .map(|l| l as usize)
                .unwrap_or(1 << 30)
                .clamp(128 << 20, 64 << 30);
            let gap = 1 << 20;
            let low = stack.end.saturating_sub(limit + gap).min(stack.start);
            out.push(low..top);
        }
        // SAFETY: sbrk(0) only reports the current program break.
        let brk = unsafe { libc::sbrk(0) } as usize;
        if brk != usize::MAX && brk != 0 {
            out.push(brk..brk.saturating_add(1 << 30).min(top));
        }
        out
    }

    /// Ranges in the pool are reused as they are (inaccessible and empty, possibly with
    /// guard markers that the backend remembers); the rest is mapped.
    /// The lowest pooled range that fits: reserving it needs no system call (it is
    /// mapped, inaccessible and empty). Looks at the first few pooled ranges only, so
    /// that a pool of small pieces costs a reserve little. None for write tracking and
    /// huge pages, which need a mapping of their own (a pooled range would be unmapped
    /// and mapped again).
    fn cheap_range(&self, size: usize, align: usize, opts: ReserveOptions) -> Option<usize> {
        // (More than the pool may ever hold, such as a huge reservation: no need to look.)
        if opts.write_watch || opts.large_pages || size > self.pool_cap {
            return None;
        }
        let st = self.state.lock();
        if st.pool_bytes() < size {
            return None;
        }
        let found = st.pool().iter().take(POOL_SCAN).find_map(|(r, _)| {
            let start = round_up(r.start, align)?;
            (start.checked_add(size)? <= r.end).then_some(start)
        });
        found
    }

    fn reserve(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        if opts.large_pages && self.limits.large_page_size == 0 {
            return Err(BackendError::LargePagesUnavailable);
        }
        if opts.large_pages && opts.write_watch {
            // The kernel tracks writes to a huge page as a whole (one page-table entry):
            // one write would report its 512 pages, and a count or range that splits it
            // could be neither reported nor reset. Refused rather than inexact.
            return Err(BackendError::Unsupported("write watch on huge pages"));
        }
        let watch = if opts.write_watch {
            let w = self.watch()?;
            // The buffer for scans of big dirty sets, so that no `GetWriteWatch` allocates.
            self.pagemap.keep_buffer();
            Some(w)
        } else {
            None
        };
        let ext = Self::extent(&range);
        let extent = Extent { end: ext.end, write_watch: opts.write_watch, large: opts.large_pages, from_pool: false };
        let poolable = extent.poolable();
        // Claim the pooled pieces and record the reservation before mapping, so that
        // a concurrent `foreign` never sees it as someone else's (and its holes, until
        // mapped, as ours).
        let (mut pooled, mut holes) = (Ranges::new(), Ranges::new());
        self.state.lock().add_live(&ext, extent, &mut pooled, &mut holes);
        // Undo a reserve that failed: the pooled pieces it took go back to the pool, as
        // they were; the holes it had mapped so far are unmapped, so that the failed call
        // leaves nothing mapped and the pool within its size. (A hole the kernel refuses
        // to unmap, at the mapping-count limit, is fresh, inaccessible and empty: it is
        // pooled, as a refused release is.)
        let give_back = |pooled: &[Range<usize>], mapped: &[Range<usize>]| {
            // (Not ours from the moment they are unmapped: see `State::unmapped`.)
            self.state.lock().unmapped.extend(mapped.iter().cloned());
            let mut kept = Ranges::new();
            for r in mapped {
                // SAFETY: `r` was mapped by this call, for this reservation, which no
                // one else knows yet: nothing else lives there.
                if self.gate().and_then(|()| unsafe { rustix::mm::munmap(ptr(r.start), r.len()) }).is_err() {
                    kept.push(r.clone());
                }
            }
            let mut st = self.state.lock();
            for r in mapped {
                st.kernel.clear(r.clone());
            }
            kept.extend(pooled.iter().cloned());
            st.undo_reserve(&ext, &kept);
        };
        if !poolable && !pooled.is_empty() {
            // Write tracking and huge pages need a mapping of their own: unmap the
            // pooled pieces and map the whole extent afresh.
            // (The whole extent is to be mapped afresh: none of it counts as ours until
            // it is, see `State::unmapped`; a piece not unmapped after all goes back to
            // the pool.)
            self.state.lock().set_unmapped(&ext, std::slice::from_ref(&ext));
            while let Some(r) = pooled.last().cloned() {
                // SAFETY: the piece is ours (it was pooled) and unused.
                let unmapped = self.gate().and_then(|()| unsafe { rustix::mm::munmap(ptr(r.start), r.len()) });
                if let Err(e) = unmapped {
                    give_back(&pooled, &[]);
                    return Err(errno_error(e));
                }
                self.state.lock().kernel.clear(r);
                pooled.pop();
            }
            holes = smallvec::smallvec![ext.clone()];
        }
        let mut mapped = Ranges::new();
        for h in holes {
            if let Err(e) = self.map_new(&h, &ext, opts.large_pages) {
                give_back(&pooled, &mapped);
                return Err(e);
            }
            self.state.lock().mapped(&h);
            mapped.push(h);
        }
        if let Some(w) = watch {
            // No transparent huge pages: a write fault that maps one makes all its pages
            // written at once (the kernel tracks writes by page-table entry, and a huge
            // page has one), where a write must mark only the pages it touches. Best
            // effort: a kernel without huge pages has none to give.
            self.count();
            // SAFETY: `ext` was mapped just above for this reservation; the advice only
            // says how the kernel may back its pages.
            let _ = unsafe { rustix::mm::madvise(ptr(ext.start), ext.len(), rustix::mm::Advice::LinuxNoHugepage) };
            if let Err(e) = self.gate().map_err(errno_error).and_then(|()| self.adopted(w)?.register(&ext)) {
                // (Not ours from the moment it is unmapped: see `State::unmapped`.)
                self.state.lock().set_unmapped(&ext, std::slice::from_ref(&ext));
                // SAFETY: `ext` was mapped just above for this reservation, which no one
                // else knows yet: nothing else lives there.
                let unmapped = self.gate().and_then(|()| unsafe { rustix::mm::munmap(ptr(ext.start), ext.len()) });
                // (Refused, it stays mapped, inaccessible and empty, and not registered:
                // pooled, as `give_back` pools a hole it cannot unmap, rather than left
                // mapped and forgotten.)
                let kept = if unmapped.is_err() { std::slice::from_ref(&ext) } else { &[] };
                self.state.lock().undo_reserve(&ext, kept);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Every committed run is inaccessible. Pages that were ever accessible are
    /// dropped; then the range goes to the pool (no system call when it was already
    /// empty) or, when the pool is full or the reservation tracked writes or used huge
    /// pages, is unmapped.
    fn release(&self, range: Range<usize>, _opts: ReserveOptions) -> Result<(), BackendError> {
        self.release_extent(Self::extent(&range), Pooling::IfRoom)
    }

    /// Accessible runs need no `mprotect` first: an unmapped range drops everything at
    /// once, and a pooled one has its accessible runs decommitted the cheap way (guard
    /// markers) before it joins the pool.
    fn release_committed(
        &self,
        range: Range<usize>,
        _opts: ReserveOptions,
        accessible: &[(Range<usize>, Access)],
    ) -> Result<(), BackendError> {
        let ext = Self::extent(&range);
        match self.release_start(&ext, accessible, Pooling::IfRoom)? {
            Start::Pooled => Ok(()),
            Start::Unmap => self.unmap_or_pool(ext, accessible),
            Start::Drop(touched) => {
                self.drop_and_pool(&ext, touched);
                Ok(())
            }
            Start::Guard(run, from) => self.pool_by_guard(ext, &run, from, accessible),
            Start::Decommit => {
                self.decommit(accessible)?;
                // Pooled even if another release filled the pool meanwhile: nothing may fail now.
                self.release_extent(ext, Pooling::Always)
            }
        }
    }

    /// `mprotect` changes what the CPU allows and keeps the contents; pages a decommit
    /// left guard-marked also need `MADV_GUARD_REMOVE` (after the `mprotect`, so they
    /// stay inaccessible until both have worked). A failure part-way is reverted.
    fn set_access(&self, range: Range<usize>, from: Access, to: Access) -> Result<(), BackendError> {
        self.change_access(&range, from, to)
    }

    fn discard(&self, range: Range<usize>) {
        self.drop_pages(&range);
        let mut st = self.state.lock();
        for (r, k) in Self::kernel_runs(&st, &range) {
            st.kernel.set(r, entry(Kernel { touched: false, ..k }));
        }
    }

    /// Small accessible runs of ordinary reservations get guard markers
    /// (`MADV_GUARD_INSTALL`): one system call under the mmap read lock that drops the
    /// pages and makes them fault, with no mapping split. Other accessible runs are
    /// made `PROT_NONE` and dropped (`MADV_DONTNEED`), in one of two orders:
    ///
    /// - Drop first, then `PROT_NONE` (`Way::DropFirst`): cheaper, since `mprotect`
    ///   then finds no present page to change and the kernel flushes the TLB once,
    ///   where revoking access over present pages and then zapping them walks and
    ///   flushes twice. The drop cannot be undone, so this order is used only where a
    ///   failure of the `mprotect` after it can still end in a done decommit: the run is
    ///   a whole kernel mapping with no accessible neighbour in the record (so the
    ///   `mprotect` merges it back and needs no split; in practice it cannot fail), it
    ///   is the only run of the call that needs a system call that can fail (no earlier
    ///   run's change is left to undo should it fail), and the kernel has guard markers,
    ///   which the extent may take (not write-watched, not of huge pages). Should the
    ///   `mprotect` fail all the same, the run's protection is put back and it gets
    ///   guard markers instead: its pages are already empty, and the markers make them
    ///   fault, so the decommit is done (recorded as guarded, as on the guard path). Only
    ///   if the markers fail too (two failures in a row, for want of memory) does the
    ///   call fail, with the run's pages still accessible but emptied: the data the
    ///   caller was discarding is gone (the one exception to "a failed call changes
    ///   nothing", as for a release parked at the mapping-count limit). A store that
    ///   another thread of the program makes to the run between the two calls (writing
    ///   to memory it is decommitting, a race in the program) is not dropped: the page
    ///   would hold it when recommitted, where in the revoking order it faults.
    /// - `PROT_NONE` first, then the drop (`Way::Revoke`): everywhere else. The
    ///   `mprotect`s are revocable, so a failure puts every run back as it was, contents
    ///   included; the drops, last, cannot fail.
    fn decommit(&self, runs: &[(Range<usize>, Access)]) -> Result<(), BackendError> {
        if let [(r, from)] = runs {
            if let Some(done) = self.decommit_one(r, *from) {
                return done;
            }
        }
        let Some(first) = runs.first() else { return Ok(()) };
        let guards_ok = self.uses_guard_regions();
        let (plan, kernel) = {
            let st = self.state.lock();
            let markable = st.extent_of(first.0.start).is_some_and(|(_, x)| !x.write_watch && !x.large);
            let guards_ok = guards_ok && markable;
            // Markers keep a run's mapping as it is, which saves the split a
            // `PROT_NONE` would make inside accessible memory; but a run with no
            // accessible neighbour would instead merge back into the inaccessible
            // mapping around it, and marked it stays a mapping of its own. Once the
            // backend's mappings are many, such runs take the merging way, so that
            // scattered commit/decommit cannot creep towards the kernel's cap on
            // mappings (`vm.max_map_count`).
            let crowded = st.kernel.len() > CROWDED_RUNS;
            // (Drop first only in a call where one run alone needs a fallible call.)
            let lone = runs.iter().filter(|(_, from)| *from != Access::None).count() == 1;
            let plan: SmallVec<[Way; 2]> = runs
                .iter()
                .map(|(r, from)| {
                    if *from == Access::None {
                        Way::Revoke
                    } else if guards_ok && r.len() <= GUARD_MAX && !(crowded && st.between_inaccessible(r)) {
                        Way::Guard
                    } else if lone && markable && features().guard && st.between_inaccessible(r) {
                        Way::DropFirst
                    } else {
                        Way::Revoke
                    }
                })
                .collect();
            // The kernel state of the runs that will not be guarded (a guarded run's
            // new state does not depend on its old one).
            let kernel: SmallVec<[KernelRuns; 2]> = runs
                .iter()
                .zip(&plan)
                .map(|((r, _), &w)| if w == Way::Guard { KernelRuns::new() } else { Self::kernel_runs(&st, r) })
                .collect();
            (plan, kernel)
        };
        // 1. Revocable: PROT_NONE for the runs that take the revoking order.
        let mut protected: KernelRuns = KernelRuns::new();
        for (((r, from), k), &way) in runs.iter().zip(&kernel).zip(&plan) {
            if *from == Access::None || way != Way::Revoke {
                continue;
            }
            if let Err(e) = self.protect(r, Access::None) {
                protected.extend(k.iter().cloned());
                self.restore(&protected);
                return Err(errno_error(e));
            }
            protected.extend(k.iter().cloned());
        }
        // 2. Irrevocable: guard markers, and the drops of the runs dropped first (each
        // alone in its call, so the last fallible step of it). Should a marker fail
        // (only an allocation failure for page tables can do that), its markers are
        // removed and the run takes the PROT_NONE path instead. Should the `mprotect`
        // after a drop fail, the run gets markers instead (see above).
        let mut fallback: SmallVec<[Range<usize>; 2]> = SmallVec::new();
        let mut st_updates: SmallVec<[(Range<usize>, Option<Kernel>); 4]> = SmallVec::new();
        for (((r, from), k), &way) in runs.iter().zip(&kernel).zip(&plan) {
            match way {
                Way::Guard => {
                    if self.guard(r, true).is_err() {
                        self.count();
                        // SAFETY: removing markers from our own run only makes its (empty)
                        // pages accessible again, as they were.
                        let _ = unsafe { sys::madvise_raw(r.start, r.len(), sys::MADV_GUARD_REMOVE) };
                        if let Err(e) = self.protect(r, Access::None) {
                            self.restore(&protected);
                            return Err(errno_error(e));
                        }
                        fallback.push(r.clone());
                    }
                }
                Way::DropFirst => {
                    self.drop_pages(r);
                    if self.protect(r, Access::None).is_ok() {
                        st_updates.extend(k.iter().map(|(piece, k)| {
                            (piece.clone(), entry(Kernel { prot: Access::None, guarded: k.guarded, touched: false }))
                        }));
                        continue;
                    }
                    // A failed mprotect may have changed part of the run: all of it back
                    // to `from`, then markers on the (empty) pages.
                    self.restore(k);
                    if let Err(e) = self.guard(r, true) {
                        self.count();
                        // SAFETY: as above: the run's pages, empty, stay accessible.
                        let _ = unsafe { sys::madvise_raw(r.start, r.len(), sys::MADV_GUARD_REMOVE) };
                        self.restore(&protected);
                        return Err(errno_error(e));
                    }
                    st_updates.push((r.clone(), Some(Kernel { prot: *from, guarded: true, touched: false })));
                }
                Way::Revoke => {}
            }
        }
        // 3. Drop what is not guarded nor dropped already.
        for (((r, from), k), &way) in runs.iter().zip(&kernel).zip(&plan) {
            if way == Way::DropFirst {
                continue;
            }
            let guarded = way == Way::Guard && !fallback.contains(r);
            let fell_back;
            let k = if way == Way::Guard && !guarded {
                // Its state was not read above: read it now (nothing else changes it).
                fell_back = Self::kernel_runs(&self.state.lock(), r);
                &fell_back
            } else {
                k
            };
            if guarded {
                st_updates.push((r.clone(), Some(Kernel { prot: *from, guarded: true, touched: false })));
                self.forget_witnesses(r);
            } else {
                if k.iter().any(|(_, k)| k.touched) {
                    self.drop_pages(r);
                }
                for (piece, k) in k {
                    st_updates.push((
                        piece.clone(),
                        entry(Kernel {
                            prot: if *from == Access::None { k.prot } else { Access::None },
                            guarded: k.guarded,
                            touched: false,
                        }),
                    ));
                }
            }
        }
        let mut st = self.state.lock();
        for (r, k) in st_updates {
            st.kernel.set(r, k);
        }
        Ok(())
    }

    /// `MADV_FREE` on the read-write parts of the range that may hold data: the kernel
    /// may reclaim those pages lazily, whenever it needs memory, and a write before
    /// then cancels it. Before offering a page, a few of its non-zero words are noted as a
    /// witness so that `MEM_RESET_UNDO` can tell whether the page survived. Other parts
    /// keep their contents (allowed: a reset leaves data "unchanged or zero"), and so does
    /// a write-watched reservation as a whole: a page the kernel reclaims after
    /// `MADV_FREE` loses its page-table entry, and with it the record that it was written
    /// (a reset is no write-watch reset: `GetWriteWatch` must go on reporting it).
    fn reset(&self, range: Range<usize>) -> Result<(), BackendError> {
        let scan = features().pagemap_scan;
        let runs = {
            let st = self.state.lock();
            if st.extent_of(range.start).is_some_and(|(_, x)| x.write_watch) {
                return Ok(());
            }
            Self::kernel_runs(&st, &range)
        };
        for (piece, k) in runs {
            if !k.touched || !k.access().writable() {
                continue;
            }
            let mut found = Vec::new();
            // The pages are copied out by the kernel (`process_vm_readv`), not read in
            // place: the engine keeps the reservation busy, so no other call of ours
            // changes it, but the program's own threads may store to these pages at any
            // moment (a reset does not forbid it), and a Rust read racing with those
            // stores would be a data race.
            let mut buf = vec![0u64; RESET_CHUNK / 8];
            for run in self.pagemap.populated(piece.clone(), scan) {
                let mut at = run.start;
                while at < run.end {
                    let n = (run.end - at).min(RESET_CHUNK);
                    // SAFETY: `buf` is our own buffer of `RESET_CHUNK` ≥ `n` bytes, writable,
                    // and not part of any reservation.
                    let copied = unsafe { checked_copy(at, buf.as_mut_ptr().cast(), n, false) };
                    for (k, words) in buf[..n / 8].chunks_exact(PAGE / 8).enumerate() {
                        let page = at + k * PAGE;
                        match copied {
                            Ok(()) => found.extend(Witness::of(words).map(|w| (page, w))),
                            // Unreadable after all (the checked copies forbidden, say): a
                            // witness with no words, which an undo counts as lost.
                            Err(_) => found.push((page, Witness::UNKNOWN)),
                        }
                    }
                    at += n;
                }
            }
            if !found.is_empty() {
                let mut w = self.witnesses.lock();
                self.witnessed.store(true, Ordering::Release);
                w.extend(found);
            }
            self.count();
            // SAFETY: a part of one of our reservations; MADV_FREE only lets the kernel
            // drop contents, which MEM_RESET allows.
            let _ = unsafe { rustix::mm::madvise(ptr(piece.start), piece.len(), rustix::mm::Advice::LinuxFree) };
        }
        Ok(())
    }

    /// Every page a reset offered that held data is taken back with a store and
    /// checked by its witness words (see `keep_page`). Pages that are no longer writable
    /// cannot be checked that way and are discarded, so that the answer (`false`: some
    /// data was dropped and reads zero) stays true.
    fn reset_undo(&self, range: Range<usize>) -> Result<bool, BackendError> {
        let taken: Vec<(usize, Witness)> = {
            let mut w = self.witnesses.lock();
            let keys: Vec<usize> = w.range(range.clone()).map(|(&k, _)| k).collect();
            keys.into_iter().filter_map(|k| w.remove(&k).map(|v| (k, v))).collect()
        };
        if taken.is_empty() {
            return Ok(true);
        }
        let runs = Self::kernel_runs(&self.state.lock(), &range);
        let writable = |page: usize| runs.iter().any(|(r, k)| r.contains(&page) && k.access().writable());
        let mut intact = true;
        // The check writes to every page it keeps (see `keep_page`): on a write-watched
        // range those pages are made clean again (an undo writes nothing).
        self.without_writes(
            &range,
            || {
                for (page, w) in &taken {
                    if !writable(*page) {
                        intact = false;
                        self.drop_pages(&(*page..*page + PAGE));
                    } else if !keep_page(*page, w) {
                        intact = false;
                    }
                }
                Ok(())
            },
            || {},
        )?;
        Ok(intact)
    }

    /// `mlock2(MLOCK_ONFAULT)`, then `MADV_POPULATE_READ`. A plain `mlock` of private
    /// writable memory populates it with *write* faults (to break copy-on-write ahead of
    /// time), and so does an `mprotect` that makes such locked memory writable; write
    /// tracking takes those for writes, and cleaning them afterwards also cleaned what
    /// the program really wrote meanwhile (a race that lost writes). Locked on fault,
    /// nothing is populated by either call: the pages that hold data are locked where
    /// they are, and the read-populate brings in the rest (never-written pages map the
    /// zero page, which a first write replaces with a minor fault, as a lock allows) —
    /// no write fault anywhere, so a lock writes nothing, as on Windows. (Kernels before
    /// 5.14 lack the read-populate: the pages are then locked as they are first touched.)
    fn lock(&self, range: Range<usize>) -> Result<(), BackendError> {
        // SAFETY: locking pages of our reservation has no effect on their contents.
        let locked = self.gate().and_then(|()| unsafe {
            rustix::mm::mlock_with(ptr(range.start), range.len(), rustix::mm::MlockFlags::ONFAULT)
        });
        if let Err(e) = locked {
            // mlock may have locked some mappings before failing: undo them all.
            // SAFETY: as above.
            let _ = unsafe { rustix::mm::munlock(ptr(range.start), range.len()) };
            return Err(match e {
                Errno::NOMEM | Errno::AGAIN | Errno::PERM => BackendError::LockRefused,
                e => BackendError::Os(e.raw_os_error()),
            });
        }
        self.count();
        // SAFETY: read faults on committed, readable pages of our reservation (the engine
        // locks only such pages) change no contents. Best effort: see above.
        let _ = unsafe { rustix::mm::madvise(ptr(range.start), range.len(), rustix::mm::Advice::LinuxPopulateRead) };
        Ok(())
    }

    fn unlock(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.gate().map_err(errno_error)?;
        // SAFETY: unlocking pages of our reservation has no effect on their contents.
        unsafe { rustix::mm::munlock(ptr(range.start), range.len()) }.map_err(errno_error)
    }

    fn read(&self, address: usize, buf: &mut [u8]) -> Result<(), BackendError> {
        match copy(address, buf.as_mut_ptr(), buf.len(), false) {
            // Execute-only pages (PROT_EXEC without PROT_READ: PAGE_EXECUTE) cannot be
            // copied with process_vm_readv: where every page of the copy is one of ours
            // that is accessible (execute-only, or readable like the data beside such
            // code), read them the way a debugger does (the engine has checked that this
            // access is allowed: an instruction fetch, or a read, which PAGE_EXECUTE
            // allows as on Windows x64). Anything else stays a fault.
            Err(BackendError::Fault(at)) => {
                let span = round_down(address, PAGE)..round_up(address + buf.len(), PAGE).unwrap_or(usize::MAX);
                let accessible = self
                    .state
                    .lock()
                    .kernel
                    .runs(span)
                    .iter()
                    .all(|(_, k)| k.is_some_and(|k| k.prot.readable() && !k.guarded));
                if accessible {
                    read_forced(address, buf).map_err(|()| BackendError::Fault(at))
                } else {
                    Err(BackendError::Fault(at))
                }
            }
            r => r,
        }
    }

    fn write(&self, address: usize, data: &[u8]) -> Result<(), BackendError> {
        self.gate().map_err(errno_error)?;
        copy(address, data.as_ptr() as *mut u8, data.len(), true)
    }

    fn dirty_pages(&self, range: Range<usize>, max: usize, reset: bool) -> Result<Vec<usize>, BackendError> {
        let mut found = Vec::new();
        self.scan_dirty(range, max, reset, |page| found.push(page))?;
        Ok(found)
    }

    fn dirty_pages_into(&self, range: Range<usize>, out: &mut [usize], reset: bool) -> Result<usize, BackendError> {
        let mut slots = out.iter_mut();
        let max = slots.len();
        self.scan_dirty(range, max, reset, |page| {
            if let Some(slot) = slots.next() {
                *slot = page;
            }
        })
    }

    fn clear_dirty(&self, range: Range<usize>) -> Result<(), BackendError> {
        let w = self.watch()?;
        self.gate().map_err(errno_error)?;
        self.adopted(w)?.clear(&self.pagemap, &range)
    }

    /// On x86 instruction fetches see stores: nothing to do. Elsewhere (AArch64) the
    /// instruction cache is not kept coherent with stores.
    fn instructions_need_sync(&self) -> bool {
        !cfg!(any(target_arch = "x86", target_arch = "x86_64"))
    }

    /// `__clear_cache` over the range.
    fn sync_instructions(&self, range: Range<usize>) {
        // SAFETY: the engine names only ranges it found committed and readable (see
        // `Backend::sync_instructions`); the cache maintenance changes no memory.
        unsafe { sys::clear_cache(range) }
    }

    fn foreign(&self, address: usize, limit: usize) -> Option<ForeignRegion> {
        self.foreign_piece(address, limit, None).map(region_of)
    }

    fn try_foreign(&self, address: usize, limit: usize) -> Option<Option<ForeignRegion>> {
        // (Never waits for the state lock: see `Backend::try_foreign`.)
        self.foreign_piece_then(address, limit, None, false).map(|found| found.map(region_of))
    }
}

/// What one look for a mapping that is not the backend's found
/// (see [`LinuxBackend::foreign_piece_then`]).
enum Look {
    /// The answer: the first piece that is not the backend's, if any.
    Found(Option<procfs::Vma>),
    /// The state lock was held by another thread (only when not waiting for it).
    Busy,
    /// The first piece found lies where another thread's reserve is mapping or
    /// unmapping part of its extent right now ([`State::in_flux`]).
    InFlux,
}

/// A kernel mapping that is not the backend's, as the engine sees one.
fn region_of(v: procfs::Vma) -> ForeignRegion {
    ForeignRegion {
        start: v.start,
        end: v.end,
        access: v.access,
        copy_on_write: false,
        allocation_base: v.start,
        kind: v.kind,
    }
}

/// Read our own memory through `/proc/self/mem`, which (like a debugger, with the
/// kernel's forced access) can read pages mapped without `PROT_READ`, such as
/// execute-only code. (A [`procfs::ProcFile`]: the descriptor names the process that
/// opened it, so a forked child opens its own rather than read its parent's pages.)
fn read_forced(address: usize, buf: &mut [u8]) -> Result<(), ()> {
    use std::os::unix::fs::FileExt;
    static MEM: OnceLock<Option<procfs::ProcFile>> = OnceLock::new();
    let mem = MEM.get_or_init(|| procfs::ProcFile::open("/proc/self/mem").ok()).as_ref().ok_or(())?;
    mem.get().read_exact_at(buf, address as u64).map_err(|_| ())
}

/// Copy between `local` and our own memory at `address` (see [`checked_copy`]).
fn copy(address: usize, local: *mut u8, len: usize, write: bool) -> Result<(), BackendError> {
    // SAFETY: the engine passes a buffer of `len` bytes it owns (mutably for a read).
    unsafe { checked_copy(address, local, len, write) }.map_err(|(at, e)| match e {
        libc::EFAULT | libc::ENOMEM => BackendError::Fault(at),
        e => BackendError::Os(e),
    })
}

/// Copy `len` bytes between `local` and this process's memory at `address` — from
/// `address` into `local` when `write` is false, from `local` to `address` when it is
/// true — through `process_vm_readv` / `process_vm_writev` on this process: the kernel
/// walks the page tables and reports `EFAULT` (or a short count) at an inaccessible page,
/// so a bad `address` is an error, never a crash. Retries after partial progress and
/// `EINTR`. The process id is asked for on every call, so that a forked child copies
/// within itself, not within its parent.
///
/// On failure returns the first address that could not be copied and the `errno`
/// (`EFAULT` or `ENOMEM` for an inaccessible page; `EPERM` or `ENOSYS` where the system
/// calls are forbidden, e.g. by seccomp).
///
/// # Safety
/// `local` must be valid for `len` bytes: readable when `write`, writable otherwise, and
/// not overlapping `address..address + len`.
pub unsafe fn checked_copy(address: usize, local: *mut u8, len: usize, write: bool) -> Result<(), (usize, i32)> {
    let mut done = 0;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    while done < len {
        let l = libc::iovec { iov_base: local.wrapping_add(done) as *mut libc::c_void, iov_len: len - done };
        let r = libc::iovec { iov_base: (address + done) as *mut libc::c_void, iov_len: len - done };
        // SAFETY: the local iovec covers the caller's buffer (readable, and writable
        // for a read: the function's contract); the remote one is only accessed by the
        // kernel, which checks it.
        let n = unsafe {
            if write {
                libc::process_vm_writev(pid, &l, 1, &r, 1, 0)
            } else {
                libc::process_vm_readv(pid, &l, 1, &r, 1, 0)
            }
        };
        if n < 0 {
            let e = sys::last_errno();
            if e == Errno::INTR {
                continue;
            }
            return Err((address + done, e.raw_os_error()));
        }
        if n == 0 {
            return Err((address + done, libc::EFAULT));
        }
        done += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Backend, Extent, LinuxBackend, LinuxOptions, Ranges, Witness, GRANULE, PAGE};
    use crate::{AllocationType, FreeType, MemState, Protection};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// What runs inside `unmap_extent` between its `munmap` and its record, for the
    /// extent it is set for (tests run in parallel: no other test's unmap runs it).
    type AfterUnmap = (std::ops::Range<usize>, Box<dyn FnOnce(&LinuxBackend) + Send>);
    static AFTER_UNMAP: parking_lot::Mutex<Option<AfterUnmap>> = parking_lot::Mutex::new(None);

    /// Called by `unmap_extent` between its `munmap` and its record.
    pub(super) fn after_unmap(b: &LinuxBackend, ext: &std::ops::Range<usize>) {
        let hook = {
            let mut h = AFTER_UNMAP.lock();
            if h.as_ref().is_some_and(|(r, _)| r == ext) {
                h.take()
            } else {
                None
            }
        };
        if let Some((_, f)) = hook {
            f(b);
        }
    }

    /// A release that unmaps its extent: a mapping the program makes in the extent's
    /// last granule, past the reservation's end (a free gap of the engine's), between
    /// the `munmap` and the backend's record of it, is never reported free, neither
    /// then (the answer waits, or a call that must not wait gets none) nor after.
    #[cfg(not(miri))]
    #[test]
    fn a_mapping_made_while_a_release_unmaps_is_never_free() {
        use super::ReserveOptions;
        let b = LinuxBackend::with_options(LinuxOptions { pool_bytes: 0, guard_regions: true }).unwrap();
        let base = window(GRANULE);
        let ext = base..base + GRANULE;
        b.reserve(base..base + PAGE, ReserveOptions::default()).unwrap();
        let tail = base + PAGE..base + GRANULE;
        let program = base + 12 * PAGE;
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(None));
        let seen_in_hook = seen.clone();
        let hook_tail = tail.clone();
        *AFTER_UNMAP.lock() = Some((
            ext.clone(),
            Box::new(move |b: &LinuxBackend| {
                // SAFETY: NOREPLACE maps only where nothing is mapped (the extent was
                // just unmapped); the page is unmapped by the test below.
                let p = unsafe {
                    rustix::mm::mmap_anonymous(
                        program as *mut std::ffi::c_void,
                        PAGE,
                        rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                        rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::FIXED_NOREPLACE,
                    )
                };
                assert_eq!(p.map(|p| p as usize), Ok(program), "the program's page");
                *seen_in_hook.lock() = Some(b.try_foreign(hook_tail.start, hook_tail.end));
            }),
        ));
        b.release(base..base + PAGE, ReserveOptions::default()).unwrap();
        let during = seen.lock().take().expect("the release unmapped its extent");
        assert!(!matches!(during, Some(None)), "the program's page was called free while the release unmapped");
        let after = b.foreign(tail.start, tail.end).map(|f| f.start);
        assert_eq!(after, Some(program), "the program's page after the release");
        // SAFETY: the page the hook mapped.
        unsafe { rustix::mm::munmap(program as *mut std::ffi::c_void, PAGE) }.unwrap();
    }

    /// After each failure of a one-run decommit (guard markers, then the `mprotect` of
    /// their fallback; or the `mprotect` after a drop, then the markers of its fallback)
    /// the backend's record of the run is what the kernel has: as before the call where
    /// the call failed, guard-marked or fresh where it did its job another way.
    #[cfg(not(miri))]
    #[test]
    fn a_one_run_decommit_records_what_its_failures_leave() {
        use super::{granting, Access, Kernel, ReserveOptions};
        if !super::features().guard {
            return;
        }
        let rw = Access::ReadWrite;
        let marked = Kernel { prot: rw, guarded: true, touched: false };
        for (guard_regions, (n, m), want) in [
            (true, (1, 3), Some(granting(rw))),
            (true, (1, 0), None),
            (false, (2, 4), Some(granting(rw))),
            (false, (2, 0), Some(marked)),
            (true, (0, 0), Some(marked)),
            (false, (0, 0), None),
        ] {
            let b = LinuxBackend::with_options(LinuxOptions { guard_regions, pool_bytes: 0 }).unwrap();
            let base = window(3 * GRANULE);
            let all = base..base + 3 * GRANULE;
            b.reserve(all.clone(), ReserveOptions::default()).unwrap();
            let r = base + GRANULE..base + 2 * GRANULE;
            b.set_access(r.clone(), Access::None, rw).unwrap();
            b.write(r.start, &[1]).unwrap();
            b.inject_failures(n, m);
            let out = b.decommit(&[(r.clone(), rw)]);
            assert!(!b.failure_pending(), "{n}, {m}: not fired");
            assert_eq!(out.is_err(), m != 0, "{n}, {m}: {out:?}");
            let record = b.state.lock().kernel.runs(all.clone()).to_vec();
            let fresh = |r: std::ops::Range<usize>| (r, None);
            assert_eq!(
                record,
                match want {
                    Some(k) => vec![fresh(base..r.start), (r.clone(), Some(k)), fresh(r.end..all.end)],
                    None => vec![fresh(all.clone())],
                },
                "{n}, {m}"
            );
            let accessible: &[(std::ops::Range<usize>, Access)] =
                if want == Some(granting(rw)) { &[(r.clone(), rw)] } else { &[] };
            b.release_committed(all, ReserveOptions::default(), accessible).unwrap();
        }
    }

    /// A pooled release of one accessible run whose guard markers fail (the first way,
    /// which records the run marked before the call) puts the record back and takes the
    /// general way: the run's pages are dropped all the same, so the range, reserved
    /// again from the pool and committed, reads zero and the record says what the
    /// kernel has (inaccessible, empty) once it is pooled again.
    #[cfg(not(miri))]
    #[test]
    fn a_pooled_release_whose_markers_fail_drops_the_run_the_general_way() {
        use super::{granting, Access, ReserveOptions};
        if !super::features().guard {
            return;
        }
        let rw = Access::ReadWrite;
        // The markers fail (the first system call), then nothing else or one of the
        // general way's later calls (whose own fallbacks may still get the release done:
        // then it must have dropped the run; else it must have changed nothing). Without
        // the record put back, the general way took the run for marked already and
        // pooled it with its data (m = 3).
        for m in [0, 2, 3, 4, 5, 6] {
            let b =
                LinuxBackend::with_options(LinuxOptions { guard_regions: true, ..LinuxOptions::default() }).unwrap();
            let base = window(GRANULE);
            let all = base..base + GRANULE;
            let run = base..base + PAGE;
            b.reserve(all.clone(), ReserveOptions::default()).unwrap();
            b.set_access(run.clone(), Access::None, rw).unwrap();
            b.write(run.start, &[7]).unwrap();
            b.inject_failures(1, m);
            let out = b.release_committed(all.clone(), ReserveOptions::default(), &[(run.clone(), rw)]);
            // (A later failure past the general way's calls never fires: disarmed.)
            assert!(m != 0 || !b.failure_pending(), "the markers were not tried");
            b.inject_failure(0);
            let mut byte = [1u8];
            if out.is_err() {
                // Nothing changed: live, the run read-write with its data, so recorded.
                let st = b.state.lock();
                assert!(st.live().get(base).is_some(), "{m}: not live after a failed release");
                assert_eq!(
                    st.kernel.runs(all.clone()).to_vec(),
                    vec![(run.clone(), Some(granting(rw))), (run.end..all.end, None)],
                    "{m}: {out:?}"
                );
                drop(st);
                b.read(run.start, &mut byte).unwrap();
                assert_eq!(byte, [7], "{m}: a failed release lost the run's data");
                b.release_committed(all, ReserveOptions::default(), &[(run, rw)]).unwrap();
                continue;
            }
            {
                let st = b.state.lock();
                assert!(st.live().get(base).is_none(), "{m}: still live");
                assert!(st.pool().at(base).is_some(), "{m}: not pooled");
                assert!(
                    st.kernel.entries_in(all.clone()).all(|(_, k)| k.access() == Access::None && !k.touched),
                    "{m}: the record has data or access in the pooled range: {:?}",
                    st.kernel.runs(all.clone())
                );
            }
            b.reserve(all.clone(), ReserveOptions::default()).unwrap();
            b.set_access(run.clone(), Access::None, rw).unwrap();
            b.read(run.start, &mut byte).unwrap();
            assert_eq!(byte, [0], "{m}: the released run kept its data");
            b.release_committed(all, ReserveOptions::default(), &[(run, rw)]).unwrap();
        }
    }

    /// The arena the windows of [`window`] are cut from.
    #[cfg(not(miri))]
    const ARENA: usize = 1 << 40;

    /// A window of `size` bytes (rounded up to 2 MiB) that nothing maps, for a test
    /// that places reservations at given addresses (or within it): cut from a 1 TiB
    /// arena found free once per process, each window handed out once. The lib tests
    /// run in threads of one process, and their spaces that are not confined place
    /// reservations bottom-up from the lowest free address, while the kernel places
    /// mappings made without an address top-down under the stack: the arena lies from
    /// an eighth of the user address space up (16 TiB on x86-64), where neither goes
    /// before filling terabytes. (What `tests/common` does for the integration tests.)
    #[cfg(not(miri))]
    pub(super) fn window(size: usize) -> usize {
        static BASE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let base = *BASE.get_or_init(|| {
            let first = ((super::USER_TOP / 8) & !(ARENA - 1)).max(ARENA);
            (0..8)
                .map(|k| first + k * ARENA)
                .find(|&a| {
                    // SAFETY: NOREPLACE refuses to replace a mapping (without it, the address
                    // is a hint); the mapping made is undone at once.
                    let p = unsafe {
                        rustix::mm::mmap_anonymous(
                            a as *mut std::ffi::c_void,
                            ARENA,
                            rustix::mm::ProtFlags::empty(),
                            rustix::mm::MapFlags::PRIVATE
                                | rustix::mm::MapFlags::NORESERVE
                                | rustix::mm::MapFlags::FIXED_NOREPLACE,
                        )
                    };
                    let Ok(p) = p else { return false };
                    // SAFETY: the mapping made just above.
                    unsafe { rustix::mm::munmap(p, ARENA) }.expect("munmap the arena probe");
                    p as usize == a
                })
                .expect("a free terabyte for the window arena")
        });
        let size = size.next_multiple_of(2 << 20);
        let off = NEXT.fetch_add(size, Ordering::SeqCst);
        assert!(off + size <= ARENA, "the window arena is exhausted");
        base + off
    }

    /// The owned ranges (the live extents and pooled ranges merged) follow every way a
    /// range becomes or stops being the backend's: a span released into the pool and
    /// reservations carved out of it are one owned range, whose free gaps a query
    /// answers free from it; a reserve that maps, a failed one that gives back what it
    /// took, and a release that unmaps change it. A range unmapped and then mapped by
    /// the program is reported as the program's, never free. (Each `foreign` lookup
    /// also checks, under test, that the owned ranges are the union they stand for.)
    /// Every reservation is made at an address of a window of the test's own (see
    /// [`window`]), so that no other test's memory can be where one is expected to fit.
    #[cfg(not(miri))]
    #[test]
    fn the_owned_ranges_follow_reserves_and_releases_and_never_hide_a_mapping_of_the_programs() {
        let (reserve, release) = (AllocationType::RESERVE, FreeType::RELEASE);
        let owned = |s: &crate::LinuxSpace| s.backend().state.lock().owned_ranges();
        let check = |s: &crate::LinuxSpace| s.backend().state.lock().check_owned();
        let w = window(64 * GRANULE);
        let space = crate::LinuxSpace::linux().expect("linux space");
        let span = space.alloc(w, 8 * GRANULE, reserve, Protection::NOACCESS).expect("span");
        assert_eq!(span, w);
        space.free(span, 0, release).expect("release the span");
        for i in [0, 2, 4, 6] {
            space.alloc(span + i * GRANULE, GRANULE, reserve, Protection::NOACCESS).expect("carve");
        }
        check(&space);
        assert_eq!(owned(&space), vec![span..span + 8 * GRANULE], "reservations carved out of one pooled span");
        for i in [1, 3, 5] {
            let q = space.query(span + i * GRANULE + PAGE).expect("query");
            assert_eq!((q.state, q.region_size), (MemState::Free, GRANULE - PAGE), "pooled gap {i}");
        }
        // (Past the span's last granule the free region goes on to whatever is next.)
        let q = space.query(span + 7 * GRANULE + PAGE).expect("query");
        assert!(q.state == MemState::Free && q.region_size >= GRANULE - PAGE, "{q:?}");
        // A reserve that fails (the `mmap` of its part past the span refused by
        // injection: nothing else is there) gives back the pooled granule it took, and
        // owns nothing it had not.
        space.backend().inject_failure(1);
        let across = space.alloc(span + 7 * GRANULE, 2 * GRANULE, reserve, Protection::NOACCESS);
        assert_eq!(across, Err(crate::Error::NotEnoughMemory), "the injected failure");
        assert!(!space.backend().failure_pending(), "the failure was the one injected");
        check(&space);
        assert_eq!(owned(&space), vec![span..span + 8 * GRANULE]);
        // One that maps (past the pooled span) owns its extent.
        let big = 16 * GRANULE;
        let fresh = space.alloc(w + 16 * GRANULE, big, reserve, Protection::NOACCESS).expect("fresh");
        check(&space);
        assert_eq!(owned(&space), vec![span..span + 8 * GRANULE, fresh..fresh + big]);
        for i in [0, 2, 4, 6] {
            space.free(span + i * GRANULE, 0, release).expect("release into the pool");
        }
        space.free(fresh, 0, release).expect("release");
        check(&space);
        // Without a pool, a release unmaps: the range is no longer the backend's, and
        // a mapping the program makes there is reported as the program's.
        let unpooled = crate::LinuxSpace::linux_with(LinuxOptions { pool_bytes: 0, ..LinuxOptions::default() })
            .expect("linux space");
        let gone = unpooled.alloc(w + 40 * GRANULE, GRANULE, reserve, Protection::NOACCESS).expect("reserve");
        unpooled.free(gone, 0, release).expect("release, unmapped");
        check(&unpooled);
        assert_eq!(owned(&unpooled), Vec::new());
        // SAFETY: `gone` was unmapped just above, in this test's window; NOREPLACE
        // refuses to replace anything mapped there since.
        let program = unsafe {
            rustix::mm::mmap_anonymous(
                gone as *mut std::ffi::c_void,
                GRANULE,
                rustix::mm::ProtFlags::READ,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::FIXED_NOREPLACE,
            )
        }
        .expect("the program's mapping where the release unmapped");
        assert_eq!(program as usize, gone);
        let q = unpooled.query(gone).expect("query");
        assert_eq!(q.state, MemState::Commit, "the program's mapping where a release unmapped: {q:?}");
        // SAFETY: the mapping made just above.
        unsafe { rustix::mm::munmap(program, GRANULE) }.expect("munmap");
        // (The pooled span goes with the space; nothing of the window stays mapped.)
        drop(space);
        assert_eq!(kernel_mappings(w..w + 64 * GRANULE), Vec::new());
    }

    /// A reserve that fails at any of its system calls, and then at the next one (its
    /// undo's `munmap`, where the failed call was the write-tracking registration of a
    /// write-watched reserve), leaves the backend owning exactly what the kernel maps:
    /// an extent the kernel refused to unmap is pooled, not left mapped and forgotten.
    /// For plain and write-watched reserves, over a pooled piece and a hole.
    #[cfg(not(miri))]
    #[test]
    fn a_reserve_failing_at_any_system_call_and_at_its_undo_owns_what_the_kernel_maps() {
        use super::ReserveOptions;
        let backend = LinuxBackend::new().expect("/proc");
        if !backend.write_watch_supported() {
            return;
        }
        let w = window(64 * GRANULE);
        let check = |what: &str| {
            let st = backend.state.lock();
            st.check_owned();
            assert!(st.unmapped.is_empty(), "{what}: {:x?}", st.unmapped);
            assert_eq!(kernel_mappings(w..w + 64 * GRANULE), st.owned_ranges(), "{what}");
        };
        let mut at = w;
        let mut refused_undo = 0;
        for write_watch in [false, true] {
            let opts = ReserveOptions { write_watch, ..ReserveOptions::default() };
            for n in 1..8 {
                // A granule pooled, then a reserve of it and the granule after it.
                let pooled = at..at + GRANULE;
                backend.reserve(pooled.clone(), ReserveOptions::default()).expect("reserve");
                backend.release(pooled.clone(), ReserveOptions::default()).expect("release");
                let r = at..at + 2 * GRANULE;
                backend.inject_failures(n, n + 1);
                let got = backend.reserve(r.clone(), opts);
                let left_armed = backend.failure_pending();
                backend.inject_failure(0);
                check(&format!("write_watch {write_watch}, failure at call {n}: {got:?}"));
                if got.is_ok() {
                    backend.release(r.clone(), opts).expect("release");
                } else if !left_armed && backend.state.lock().pool().at(r.end - PAGE).is_some() {
                    // (Both failures were made, and the mapped part stayed ours, pooled.)
                    refused_undo += 1;
                }
                check("after");
                at += 4 * GRANULE;
            }
        }
        assert!(refused_undo >= 1, "an undo's munmap was refused only {refused_undo} times");
    }

    /// The kernel's mappings in `range`, clipped to it, adjacent ones merged.
    fn kernel_mappings(range: std::ops::Range<usize>) -> Vec<std::ops::Range<usize>> {
        let maps = super::procfs::Maps::open().expect("/proc/self/maps");
        let mut out: Vec<std::ops::Range<usize>> = Vec::new();
        let mut a = range.start;
        while let Some(v) = maps.at_or_after(a).filter(|v| v.start < range.end) {
            let r = v.start.max(range.start)..v.end.min(range.end);
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
            a = v.end;
        }
        out
    }

    /// One step of [`random_steps_keep_the_owned_ranges_the_union_and_free_gaps_free`].
    #[derive(Debug, Clone)]
    enum Step {
        /// Reserve (and commit, with `commit`) `pages` at granule `at` of the window,
        /// write-watched with `watch`.
        ReserveAt { at: usize, pages: usize, commit: bool, watch: bool },
        /// Reserve `pages` anywhere in the window (`alloc_within`).
        ReserveIn { pages: usize, commit: bool, watch: bool },
        /// Release the `pick`-th reservation (modulo their number).
        Release { pick: usize },
        /// Commit read-write (or decommit, with `decommit`) `pages` from page `off` of
        /// the `pick`-th reservation (clipped to it).
        Commit { pick: usize, off: usize, pages: usize, decommit: bool },
        /// The `n`-th fallible system call of the next step fails.
        Inject { n: u64 },
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..WINDOW_GRANULES, 1..3 * PAGES_PER_GRANULE, any::<bool>(), proptest::bool::weighted(0.15))
                .prop_map(|(at, pages, commit, watch)| Step::ReserveAt { at, pages, commit, watch }),
            3 => (1..3 * PAGES_PER_GRANULE, any::<bool>(), proptest::bool::weighted(0.15))
                .prop_map(|(pages, commit, watch)| Step::ReserveIn { pages, commit, watch }),
            4 => any::<usize>().prop_map(|pick| Step::Release { pick }),
            3 => (any::<usize>(), 0..3 * PAGES_PER_GRANULE, 1..PAGES_PER_GRANULE, any::<bool>())
                .prop_map(|(pick, off, pages, decommit)| Step::Commit { pick, off, pages, decommit }),
            2 => (1..5u64).prop_map(|n| Step::Inject { n }),
        ]
    }

    /// Granules in the window of one case.
    const WINDOW_GRANULES: usize = 32;
    /// Pages in a granule.
    const PAGES_PER_GRANULE: usize = GRANULE / PAGE;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(if cfg!(miri) { 0 } else { 200 }))]

        /// Random reserves (at given addresses, and anywhere in a window), releases,
        /// commits and decommits, some with a system call failed by injection, in a space
        /// whose every reservation lies in a window of its own (with a pool of the default
        /// size, of 4 granules, or none). After each step: the owned ranges are the union
        /// of the live extents and the pooled ranges; the kernel maps in the window
        /// exactly those (nothing of ours unrecorded, nothing recorded unmapped); every
        /// reservation is where the model has it; and every free gap of the window is
        /// answered free by a query, and by the backend as holding nothing foreign.
        #[cfg(not(miri))]
        #[test]
        fn random_steps_keep_the_owned_ranges_the_union_and_free_gaps_free(
            pool in 0..3usize,
            steps in proptest::collection::vec(step(), 1..40),
        ) {
            use std::collections::BTreeMap;
            let pool_bytes = [LinuxOptions::default().pool_bytes, 4 * GRANULE, 0][pool];
            let space = crate::LinuxSpace::linux_with(LinuxOptions { pool_bytes, ..LinuxOptions::default() })
                .expect("linux space");
            let backend = space.backend();
            let win = window(WINDOW_GRANULES * GRANULE);
            let wend = win + WINDOW_GRANULES * GRANULE;
            // The reservations: base -> size, each taking whole granules.
            let mut model: BTreeMap<usize, usize> = BTreeMap::new();
            let extent = |base: usize, size: usize| base..(base + size).next_multiple_of(GRANULE);
            let meets = |model: &BTreeMap<usize, usize>, r: &std::ops::Range<usize>| {
                model.iter().any(|(&b, &s)| {
                    let e = extent(b, s);
                    e.start < r.end && r.start < e.end
                })
            };
            let pick = |model: &BTreeMap<usize, usize>, i: usize| {
                (!model.is_empty()).then(|| model.iter().nth(i % model.len()).map(|(&b, &s)| (b, s))).flatten()
            };
            let ty = |commit: bool, watch: bool| {
                let mut t = AllocationType::RESERVE;
                if commit {
                    t |= AllocationType::COMMIT;
                }
                if watch {
                    t |= AllocationType::WRITE_WATCH;
                }
                t
            };
            let prot = |commit: bool| if commit { Protection::READWRITE } else { Protection::NOACCESS };
            let mut armed = false;
            for step in steps {
                match step {
                    Step::Inject { n } => {
                        backend.inject_failure(n);
                        armed = true;
                        continue;
                    }
                    Step::ReserveAt { at, pages, commit, watch } => {
                        // (Clipped to the window: past it is other tests' business.)
                        let base = win + at * GRANULE;
                        let size = (pages * PAGE).min(wend - base);
                        let got = space.alloc(base, size, ty(commit, watch), prot(commit));
                        let fits = !meets(&model, &extent(base, size));
                        if let Ok(b) = got {
                            proptest::prop_assert!(fits, "reserved over a reservation");
                            proptest::prop_assert_eq!(b, base);
                            model.insert(b, size);
                        } else if fits {
                            proptest::prop_assert!(armed || (watch && !backend.write_watch_supported()),
                                "a reserve at a free address failed: {:?}", got);
                        }
                    }
                    Step::ReserveIn { pages, commit, watch } => {
                        let size = pages * PAGE;
                        let req = crate::AddressRequirements {
                            lowest_starting_address: win,
                            highest_ending_address: wend - 1,
                            alignment: 0,
                        };
                        if let Ok(b) = space.alloc_within(size, ty(commit, watch), prot(commit), req) {
                            proptest::prop_assert!(win <= b && extent(b, size).end <= wend, "{:#x} outside the window", b);
                            proptest::prop_assert!(!meets(&model, &extent(b, size)), "{:#x} over a reservation", b);
                            model.insert(b, size);
                        }
                    }
                    Step::Release { pick: i } => {
                        if let Some((b, _)) = pick(&model, i) {
                            let got = space.free(b, 0, FreeType::RELEASE);
                            if got.is_ok() {
                                model.remove(&b);
                            } else {
                                proptest::prop_assert!(armed, "a release failed: {:?}", got);
                            }
                        }
                    }
                    Step::Commit { pick: i, off, pages, decommit } => {
                        if let Some((b, s)) = pick(&model, i) {
                            let start = b + (off * PAGE) % s;
                            let len = (pages * PAGE).min(b + s - start);
                            let got = if decommit {
                                space.free(start, len, FreeType::DECOMMIT)
                            } else {
                                space.alloc(start, len, AllocationType::COMMIT, Protection::READWRITE).map(|_| ())
                            };
                            proptest::prop_assert!(got.is_ok() || armed, "{:?}", got);
                        }
                    }
                }
                backend.inject_failure(0);
                armed = false;
                // The owned ranges are the union (and live and pooled never overlap).
                let owned = {
                    let st = backend.state.lock();
                    st.check_owned();
                    proptest::prop_assert!(st.unmapped.is_empty(), "no reserve is under way: {:x?}", st.unmapped);
                    st.owned_ranges()
                };
                // The kernel maps in the window exactly what the backend owns.
                proptest::prop_assert_eq!(kernel_mappings(win..wend), owned.clone());
                proptest::prop_assert!(owned.iter().all(|r| win <= r.start && r.end <= wend), "{:x?}", owned);
                // Each reservation is where the model has it.
                for (&b, &s) in &model {
                    let q = space.query(b).expect("query");
                    proptest::prop_assert!(q.state != MemState::Free && q.allocation_base == b, "{:#x}+{:#x}: {:?}", b, s, q);
                }
                // Each free gap is free, to its end, and holds nothing foreign.
                let mut at = win;
                let bounds = model.iter().map(|(&b, &s)| extent(b, s)).chain(std::iter::once(wend..wend));
                for e in bounds {
                    if at < e.start {
                        for probe in [at, (at + e.start) / 2 / PAGE * PAGE, e.start - PAGE] {
                            let q = space.query(probe).expect("query");
                            proptest::prop_assert_eq!(q.state, MemState::Free, "{:#x} in the gap {:#x}..{:#x}", probe, at, e.start);
                            let end = q.base_address + q.region_size;
                            proptest::prop_assert!(end == e.start || (e.start == wend && end >= wend),
                                "the free region at {:#x} ends at {:#x}, not {:#x}", probe, end, e.start);
                        }
                        proptest::prop_assert_eq!(backend.foreign(at, e.start), None);
                    }
                    at = at.max(e.end);
                }
                proptest::prop_assert_eq!(backend.foreign(win, wend), None, "nothing in the window is foreign");
            }
            backend.inject_failure(0);
            for &b in model.keys() {
                space.free(b, 0, FreeType::RELEASE).expect("release at the end");
            }
            backend.state.lock().check_owned();
            drop(space);
            proptest::prop_assert_eq!(kernel_mappings(win..wend), Vec::new(), "the window left mapped");
        }
    }

    #[test]
    fn a_witness_keeps_the_first_nonzero_word_of_each_quarter_with_data() {
        let mut words = vec![0u64; PAGE / 8];
        assert!(Witness::of(&words).is_none(), "a page of zeros needs no witness");
        words[3] = 7;
        words[5] = 9;
        words[3 * PAGE / 32 + 1] = 11;
        let w = Witness::of(&words).expect("data");
        assert_eq!(w.len, 2);
        assert_eq!((w.offsets[0], w.values[0]), (3, 7));
        assert_eq!((w.offsets[1], w.values[1]), ((3 * PAGE / 32 + 1) as u16, 11));
    }

    #[test]
    fn a_page_survived_when_no_witness_word_reads_zero_and_one_kept_its_value() {
        let w = Witness { len: 3, offsets: [0, 128, 256, 0], values: [5, 6, 7, 0] };
        assert!(w.survived(&[5, 6, 7]), "untouched");
        assert!(w.survived(&[0x77, 6, 7]), "the program wrote over one word since");
        assert!(!w.survived(&[0, 0, 0]), "reclaimed: zeros");
        assert!(!w.survived(&[0x77, 0, 0]), "reclaimed, then written");
        assert!(!w.survived(&[5, 0, 7]), "a zero where data was: counted lost");
        assert!(!w.survived(&[1, 2, 3]), "every word rewritten: counted lost");
        assert!(!Witness::UNKNOWN.survived(&[]), "a page whose words could not be read: counted lost");
    }

    /// A mapping found where another thread's reserve is between its `mmap` and the
    /// record of it (a live extent's part still marked unmapped) is neither called
    /// someone else's while that lasts nor free: `try_foreign` says it cannot answer
    /// now, and `foreign` answers once the reserve has recorded what happened — nothing
    /// foreign when the mapping was the reserve's, the mapping when it was the
    /// program's (the reserve failed and forgot its extent).
    #[cfg(not(miri))]
    #[test]
    fn a_mapping_where_a_reserve_is_under_way_is_told_apart_once_the_reserve_has_recorded_it() {
        const LEN: usize = 32 * PAGE;
        for mapping_was_the_reserves in [true, false] {
            let backend = LinuxBackend::new().expect("/proc");
            // The mapping that sits in the reserve's extent: made here, as the reserve's
            // own `mmap` (or the program's) would have made it, in the middle of a window
            // of this test's own, so that no other test's mapping merges with it (and
            // changes its bounds between two looks).
            let at = window(4 * LEN) + LEN;
            // SAFETY: a fresh anonymous mapping in a free window; NOREPLACE refuses to
            // replace anything.
            let p = unsafe {
                rustix::mm::mmap_anonymous(
                    at as *mut std::ffi::c_void,
                    LEN,
                    rustix::mm::ProtFlags::empty(),
                    rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::FIXED_NOREPLACE,
                )
            }
            .expect("mmap") as usize;
            assert_eq!(p, at);
            let ext = p..p + LEN;
            {
                // A reserve of `ext` under way: recorded before its `mmap`, not yet after.
                let mut st = backend.state.lock();
                // (Nothing pooled: the whole extent is a hole, recorded as not mapped yet.)
                let (mut pooled, mut holes) = (Ranges::new(), Ranges::new());
                let x = Extent { end: ext.end, write_watch: false, large: false, from_pool: false };
                st.add_live(&ext, x, &mut pooled, &mut holes);
                assert_eq!((pooled.as_slice(), holes.as_slice()), (&[][..], std::slice::from_ref(&ext)));
            }
            assert_eq!(backend.try_foreign(p, ext.end), None, "answered while the reserve was under way");
            assert_eq!(backend.try_foreign(p + LEN / 2, ext.end), None, "answered inside it");
            let recorded = AtomicBool::new(false);
            let found = std::thread::scope(|t| {
                let asker = t.spawn(|| {
                    let found = backend.foreign(p, ext.end);
                    (found, recorded.load(Ordering::SeqCst))
                });
                // (Long enough for the asker to be asking, usually; if it asks later, it
                // finds the record made and the check below still holds.)
                std::thread::sleep(std::time::Duration::from_millis(20));
                let mut st = backend.state.lock();
                recorded.store(true, Ordering::SeqCst);
                if mapping_was_the_reserves {
                    st.mapped(&ext);
                } else {
                    st.forget_live(&ext);
                    st.set_unmapped(&ext, &[]);
                }
                drop(st);
                asker.join().expect("asker")
            });
            assert!(found.1, "foreign answered before the reserve recorded what it did: {:?}", found.0);
            if mapping_was_the_reserves {
                assert_eq!(found.0, None, "the reserve's own mapping called someone else's");
                assert_eq!(backend.try_foreign(p, ext.end), Some(None));
                backend.state.lock().forget_live(&ext);
            } else {
                let f = found.0.expect("the program's mapping called free");
                assert_eq!((f.start, f.end), (p, ext.end), "{f:?} is not the mapping at {p:#x}");
                assert_eq!(backend.try_foreign(p, ext.end).map(|f| f.map(|f| f.start)), Some(Some(f.start)));
            }
            // SAFETY: the mapping made above, no longer recorded by the backend.
            unsafe { rustix::mm::munmap(p as *mut std::ffi::c_void, LEN) }.expect("munmap");
        }
    }
}
