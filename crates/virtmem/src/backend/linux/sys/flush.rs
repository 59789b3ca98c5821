//! `FlushProcessWriteBuffers` on Linux: make every thread of the process that is running
//! on another CPU drain its store buffer (pass a full memory barrier) before the call
//! returns. It is the heavy side of an asymmetric barrier: a garbage collector that
//! suspends threads calls it once, so that the threads' fast paths (a store, then a load
//! of a flag) need no fence of their own, only a compiler barrier.
//!
//! Three ways, tried in this order, once per process ([`mechanism`] says which one the
//! process starts with), each of which gives the guarantee (the third on x86 only):
//!
//! 1. `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (Linux 4.14), after a one-time
//!    `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`. The kernel sends an inter-processor
//!    interrupt to each CPU currently running a thread of this process and waits for
//!    it to run a full barrier; other CPUs and processes are not disturbed. A few
//!    microseconds (one system call and an interrupt round trip per such CPU).
//! 2. `membarrier(MEMBARRIER_CMD_GLOBAL)` (Linux 4.3): waits for an RCU grace period,
//!    after which every CPU has passed through a full barrier (a context switch, idle or
//!    user-mode execution between two ticks counts). It interrupts no one, but the caller
//!    waits milliseconds. The kernel refuses it when `nohz_full` CPUs exist.
//! 3. The page-protection flush, when membarrier is missing (before 4.3), forbidden (a
//!    seccomp filter) or withheld (`VIRTMEM_LINUX_WITHOUT=membarrier`): a helper page of
//!    its own, locked in memory, is made writable, written, then made inaccessible. The
//!    write puts the page's translation, writable, in the page tables (and perhaps
//!    in TLBs); taking the access back obliges the kernel to flush that
//!    translation from every CPU that may cache it before `mprotect` returns. On x86 it
//!    does so by an inter-processor interrupt to each CPU that has the process's address
//!    space loaded (all those running one of its threads) and waits for each to answer;
//!    taking an interrupt drains the CPU's store buffer in order (x86 stores become
//!    visible in program order, and the answer is itself a store), so once `mprotect`
//!    returns every store those threads made before the interrupt is visible to the
//!    caller, and every later load of theirs sees the caller's earlier stores. Two
//!    `mprotect` calls, each taking the process's `mmap` lock for writing (page faults of
//!    other threads wait meanwhile), and an interrupt round trip per CPU that has the
//!    address space loaded (15 µs on the benchmark VM, `benches/flush.rs`). The page is a shared anonymous mapping,
//!    which the kernel never merges with a neighbour, so changing its protection never
//!    splits a mapping and cannot meet the mapping-count limit; it is locked (`mlock`) so
//!    that reclaim cannot take the translation away between the write and the
//!    `mprotect` (where `RLIMIT_MEMLOCK` forbids the lock, the write just before each
//!    `mprotect` still makes the page present). Callers take turns on a lock.
//!
//!    It is a guarantee only where the kernel shoots TLB entries down with interrupts:
//!    x86 (32- and 64-bit). arm64 and others invalidate by broadcast instructions that
//!    interrupt no CPU, and x86-64 kernels from 6.15 may do so too on AMD processors with
//!    `INVLPGB`, for a process running on four or more CPUs at once. Those x86-64
//!    kernels all have membarrier, as do the others from Linux 4.3 on: there only a
//!    seccomp filter, or `VIRTMEM_LINUX_WITHOUT`, sends them here. (An arm64 kernel
//!    older than 4.3, some of which Rust's `aarch64-unknown-linux-gnu` supports, has no
//!    membarrier and no guarantee.)
//!
//! A call never fails and never panics (`FlushProcessWriteBuffers` returns nothing): if
//! the chosen way is refused at a later call (`EPERM`, the process not registered, makes
//! it register again; `ENOMEM`), the ones after it are tried for that call. The last one
//! has none after it: if the kernel refuses the helper page's mapping or a protection
//! change (out of memory), the call returns without the barrier, and cannot say so.
//!
//! Self-contained (the benchmarks compile the `sys` layer into themselves): the backend
//! passes in which features `VIRTMEM_LINUX_WITHOUT` withholds.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;
use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use rustix::param::page_size;
use rustix::thread::{membarrier, membarrier_query, MembarrierCommand, MembarrierQuery};

/// How `FlushProcessWriteBuffers` reaches the other CPUs (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlushMechanism {
    /// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (Linux 4.14): an interrupt to each
    /// CPU running a thread of the process; microseconds.
    MembarrierPrivateExpedited,
    /// `membarrier(MEMBARRIER_CMD_GLOBAL)` (Linux 4.3): waits for an RCU grace period,
    /// interrupting no one; milliseconds.
    MembarrierGlobal,
    /// Write to a locked helper page, then take its access away, which makes the kernel
    /// interrupt every CPU with the process's address space loaded to flush its TLB
    /// (taking an interrupt drains a CPU's store buffer); about 15 µs on the benchmark VM, with the
    /// process's `mmap` lock held for writing during each of the two `mprotect` calls.
    ///
    /// A guarantee only where TLB shootdowns are interrupts: x86. arm64 and others
    /// invalidate with broadcast instructions that interrupt no CPU, and so may x86-64
    /// kernels from 6.15 on AMD processors with `INVLPGB`, for a process running on four
    /// or more CPUs at once. Those x86-64 kernels all have membarrier, as do the others
    /// from Linux 4.3 on, so there only a seccomp filter that forbids it, or
    /// `VIRTMEM_LINUX_WITHOUT`, leaves them this way (an arm64 kernel older than 4.3 has
    /// no membarrier, and no guarantee here).
    PageProtection,
}

/// What the one-time probe found.
struct Probe {
    /// The mechanism each call tries first.
    first: FlushMechanism,
    /// Whether `MEMBARRIER_CMD_GLOBAL` is there to fall back on.
    global: bool,
}

/// Probe once per process: which membarrier commands the kernel has (but those
/// `withheld` names: `membarrier_expedited`, `membarrier`), and register for the
/// expedited one.
fn probe(withheld: fn(&str) -> bool) -> &'static Probe {
    static PROBE: OnceLock<Probe> = OnceLock::new();
    PROBE.get_or_init(|| {
        let query = if withheld("membarrier") { MembarrierQuery::empty() } else { membarrier_query() };
        let expedited = MembarrierQuery::PRIVATE_EXPEDITED | MembarrierQuery::REGISTER_PRIVATE_EXPEDITED;
        let global = query.contains(MembarrierQuery::GLOBAL);
        let first = if !withheld("membarrier_expedited")
            && query.contains(expedited)
            && membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok()
        {
            FlushMechanism::MembarrierPrivateExpedited
        } else if global {
            FlushMechanism::MembarrierGlobal
        } else {
            FlushMechanism::PageProtection
        };
        Probe { first, global }
    })
}

/// The mechanism [`flush`] tries first in this process, probed on the first call of either
/// (`withheld` says which of `membarrier_expedited` and `membarrier` to do without).
pub fn mechanism(withheld: fn(&str) -> bool) -> FlushMechanism {
    probe(withheld).first
}

/// Flush the write queue of every CPU running a thread of the process (the module's
/// documentation says how), with full barriers on entry and on return. Never fails.
pub fn flush(withheld: fn(&str) -> bool) {
    fence(Ordering::SeqCst);
    let probe = probe(withheld);
    let _flushed = match probe.first {
        FlushMechanism::MembarrierPrivateExpedited => private_expedited() || global(probe) || page_protection(),
        FlushMechanism::MembarrierGlobal => global(probe) || page_protection(),
        FlushMechanism::PageProtection => page_protection(),
    };
    fence(Ordering::SeqCst);
}

/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED`, registering again if the kernel says this process
/// is not registered (`EPERM`).
fn private_expedited() -> bool {
    match membarrier(MembarrierCommand::PrivateExpedited) {
        Ok(()) => true,
        Err(Errno::PERM) => {
            membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok()
                && membarrier(MembarrierCommand::PrivateExpedited).is_ok()
        }
        Err(_) => false,
    }
}

/// `MEMBARRIER_CMD_GLOBAL`, if the kernel has it.
fn global(probe: &Probe) -> bool {
    probe.global && membarrier(MembarrierCommand::Global).is_ok()
}

/// The helper page of the page-protection flush (its address), mapped on first use; the
/// lock also makes callers take turns, so that one never finds the page inaccessible
/// while it writes.
static HELPER: Mutex<Option<usize>> = parking_lot::const_mutex(None);

/// Map the helper page: shared and anonymous (never merged with a neighbouring mapping),
/// locked where `RLIMIT_MEMLOCK` allows, inaccessible between flushes.
fn map_helper() -> Option<usize> {
    // SAFETY: a fresh mapping at an address the kernel chooses touches nothing that exists.
    let page = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            page_size(),
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
        )
    }
    .ok()?;
    // SAFETY: locking pages of the mapping just made changes no contents.
    let _ = unsafe { rustix::mm::mlock(page, page_size()) };
    Some(page as usize)
}

/// The page-protection flush (see the module's documentation): `false` only if the
/// helper page cannot be mapped or its protection changed (no memory for the kernel's
/// page tables).
fn page_protection() -> bool {
    let mut helper = HELPER.lock();
    if helper.is_none() {
        *helper = map_helper();
    }
    let Some(page) = *helper else { return false };
    let page = page as *mut std::ffi::c_void;
    // SAFETY: the helper page is this module's own mapping, used by nobody else; the
    // lock held makes this the only thread changing or touching it.
    if unsafe { rustix::mm::mprotect(page, page_size(), MprotectFlags::READ | MprotectFlags::WRITE) }.is_err() {
        return false;
    }
    // SAFETY: the page is mapped readable and writable (just above), page-aligned, and
    // only this thread touches it (the lock); an atomic add is a store the compiler keeps.
    unsafe { (*(page as *const AtomicUsize)).fetch_add(1, Ordering::SeqCst) };
    // SAFETY: as above; taking the access away is the flush.
    unsafe { rustix::mm::mprotect(page, page_size(), MprotectFlags::empty()) }.is_ok()
}
