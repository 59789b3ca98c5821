//! The Linux backend: the process's real memory.
//!
//! | engine operation | system call | why |
//! |---|---|---|
//! | reserve | `mmap(PROT_NONE, MAP_NORESERVE \| MAP_FIXED_NOREPLACE)` | claims address space without charging commit; `NOREPLACE` makes a collision with someone else's mapping an error (`EEXIST`) instead of silently replacing it |
//! | set access | `mprotect` | the only way to change what the CPU allows on a range while keeping its contents |
//! | discard | `madvise(MADV_DONTNEED)` | drops private anonymous pages at once: RSS falls and the next access reads zeros |
//! | release | `munmap` | gives the range back to the kernel |
//! | reset | `madvise(MADV_FREE)` | lets the kernel reclaim pages lazily, the exact meaning of `MEM_RESET` |
//! | lock | `mlock` / `munlock` | |
//! | read / write | `process_vm_readv` / `process_vm_writev` on ourselves | copies fail with `EFAULT` instead of crashing when memory is inaccessible |
//! | foreign | `ioctl(PROCMAP_QUERY)` on `/proc/self/maps` | one system call per lookup |
//! | write watch | userfaultfd `UFFD_FEATURE_WP_ASYNC` + `ioctl(PAGEMAP_SCAN)` | the kernel tracks writes in the page tables: no signal handler, no per-page `mprotect`, and a scan that resets exactly the pages it reports, atomically |
//!
//! Every reservation is mapped to the end of its 64 KiB granule, so nobody else's
//! mapping can land in the unused tail the engine keeps blocked.
//!
//! The backend remembers the extents it has mapped, so that [`Backend::foreign`] never
//! reports its own memory, even where the kernel has merged one of its mappings with
//! a neighbour's.

mod procfs;
mod sys;
mod watch;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;
use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};

use procfs::{Maps, Pagemap};

use super::{Access, Backend, BackendError, ForeignRegion, Limits, ReserveOptions};
use crate::rules::{round_down, round_up, GRANULE, PAGE};

/// The top of the x86-64 user address space with 4-level page tables (47 bits): the
/// kernel never hands out addresses above it unless asked to.
const USER_TOP: usize = 0x7FFF_FFFF_F000;

/// The size of a huge page on x86-64.
const HUGE_PAGE: usize = 2 << 20;

/// Kernel features, probed once per process.
#[derive(Debug, Clone, Copy)]
struct Features {
    /// `MAP_FIXED_NOREPLACE` is honoured (Linux 4.17+); without it, a hinted `mmap`
    /// is checked after the fact.
    fixed_noreplace: bool,
    /// `PAGEMAP_SCAN` works (Linux 6.7+).
    pagemap_scan: bool,
}

fn features() -> Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    *FEATURES.get_or_init(|| Features { fixed_noreplace: probe_fixed_noreplace(), pagemap_scan: probe_pagemap_scan() })
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

/// A value of a page that `MEM_RESET` offered to the kernel: the first non-zero
/// 8-byte word and where it is. A page the kernel reclaims reads as zero, so finding
/// the word intact later proves the page survived.
#[derive(Debug, Clone, Copy)]
struct Witness {
    offset: u16,
    value: u64,
}

/// The process's real memory. See the module docs.
pub struct LinuxBackend {
    limits: Limits,
    maps: Maps,
    pagemap: Pagemap,
    /// Extents this backend has mapped: start → end.
    owned: Mutex<BTreeMap<usize, usize>>,
    /// Pages offered to the kernel by `MEM_RESET` that held data: page → witness.
    witnesses: Mutex<BTreeMap<usize, Witness>>,
    /// Write tracking, set up on first use.
    watch: OnceLock<Result<watch::Watch, BackendError>>,
    /// Side effects performed (system calls that change memory), for tests and benches.
    syscalls: AtomicU64,
    /// The value of `syscalls` at which a fallible system call is made to fail
    /// instead of being made (0: never); see [`LinuxBackend::inject_failure`].
    fail_at: AtomicU64,
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

impl LinuxBackend {
    /// A backend over this process's memory. Fails if `/proc` is not mounted (the
    /// backend needs `/proc/self/maps` to see other mappings).
    pub fn new() -> std::io::Result<LinuxBackend> {
        let maps = Maps::open()?;
        let pagemap = Pagemap::open()?;
        let min = read_number("/proc/sys/vm/mmap_min_addr").unwrap_or(0);
        let min = round_up(min, GRANULE).unwrap_or(GRANULE).max(GRANULE);
        let huge = ["nr_hugepages", "nr_overcommit_hugepages"]
            .iter()
            .filter_map(|f| read_number(&format!("/sys/kernel/mm/hugepages/hugepages-2048kB/{f}")))
            .any(|n| n > 0);
        Ok(LinuxBackend {
            limits: Limits {
                min_address: min,
                end_address: round_down(USER_TOP, GRANULE),
                large_page_size: if huge { HUGE_PAGE } else { 0 },
            },
            maps,
            pagemap,
            owned: Mutex::new(BTreeMap::new()),
            witnesses: Mutex::new(BTreeMap::new()),
            watch: OnceLock::new(),
            syscalls: AtomicU64::new(0),
            fail_at: AtomicU64::new(0),
        })
    }

    /// How many memory-changing system calls this backend has made.
    pub fn syscall_count(&self) -> u64 {
        self.syscalls.load(Ordering::Relaxed)
    }

    /// Whether write watch (`MEM_WRITE_WATCH`) is available: the kernel has
    /// userfaultfd's asynchronous write protection and `PAGEMAP_SCAN`.
    pub fn write_watch_supported(&self) -> bool {
        self.watch().is_ok()
    }

    /// Failure injection below the backend interface: the `n`-th fallible system call
    /// from now (1-based) fails with `ENOMEM` without being made; 0 disarms. Tests use
    /// it to show that every operation undoes its own partial work.
    #[doc(hidden)]
    pub fn inject_failure(&self, n: u64) {
        let now = self.syscalls.load(Ordering::SeqCst);
        self.fail_at.store(if n == 0 { 0 } else { now + n }, Ordering::SeqCst);
    }

    /// Whether an injected failure is still pending.
    #[doc(hidden)]
    pub fn failure_pending(&self) -> bool {
        self.fail_at.load(Ordering::SeqCst) != 0
    }

    /// Count an infallible system call.
    fn count(&self) {
        self.syscalls.fetch_add(1, Ordering::SeqCst);
    }

    /// Count a fallible system call about to be made, or fail it by injection.
    fn gate(&self) -> Result<(), Errno> {
        let n = self.syscalls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_at.load(Ordering::SeqCst) == n {
            self.fail_at.store(0, Ordering::SeqCst);
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

    /// The mapped extent of a reservation: to the end of its last granule (large-page
    /// reservations are already aligned).
    fn extent(range: &Range<usize>) -> Range<usize> {
        range.start..round_up(range.end, GRANULE).unwrap_or(range.end)
    }

    /// The first part of `[addr, limit)` that the kernel has mapped and this backend
    /// did not, with the whole extent of that foreign piece.
    fn foreign_piece(&self, addr: usize, limit: usize) -> Option<procfs::Vma> {
        let mut a = addr;
        while a < limit {
            let vma = self.maps.at_or_after(a)?;
            if vma.start >= limit {
                return None;
            }
            // The kernel merges adjacent compatible mappings, so a VMA may hold
            // some of ours: subtract every owned extent from it.
            let owned = self.owned.lock();
            let mut cursor = vma.start;
            let first = owned.range(..=vma.start).next_back().filter(|(_, &e)| e > vma.start);
            let rest = owned.range(vma.start + 1..vma.end);
            let mut pieces = Vec::new();
            for (&s, &e) in first.into_iter().chain(rest) {
                if s > cursor {
                    pieces.push(cursor..s);
                }
                cursor = cursor.max(e);
            }
            drop(owned);
            if cursor < vma.end {
                pieces.push(cursor..vma.end);
            }
            if let Some(p) = pieces.into_iter().find(|p| p.end > a && p.start < limit) {
                return Some(procfs::Vma { start: p.start, end: p.end, ..vma });
            }
            a = vma.end;
        }
        None
    }

    /// Who occupies `ext`, for an `mmap` that found it taken.
    fn occupant(&self, ext: &Range<usize>) -> Option<BackendError> {
        self.foreign_piece(ext.start, ext.end).map(|v| BackendError::Occupied { start: v.start, end: v.end })
    }

    /// Map `ext` inaccessible without replacing anything.
    fn map_new(&self, ext: &Range<usize>, large: bool) -> Result<(), BackendError> {
        let mut flags = MapFlags::PRIVATE;
        if large {
            // Hugetlb pages are reserved at mmap time (no NORESERVE), so a system
            // without them fails here, cleanly, rather than at the first touch.
            flags |= MapFlags::HUGETLB | MapFlags::HUGE_2MB;
        } else {
            flags |= MapFlags::NORESERVE;
        }
        let noreplace = features().fixed_noreplace;
        if noreplace {
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
                Err(Errno::NOMEM) if large => return Err(BackendError::LargePagesUnavailable),
                Err(e) if large && e != Errno::AGAIN => return Err(BackendError::LargePagesUnavailable),
                Err(e) => return Err(errno_error(e)),
            }
            if let Some(occupied) = self.occupant(ext) {
                return Err(occupied);
            }
            // The occupant went away between the two calls: try again.
        }
        Err(BackendError::Occupied { start: ext.start, end: ext.end })
    }

    /// Drop the witnesses of pages in `range`.
    fn forget_witnesses(&self, range: &Range<usize>) {
        let mut w = self.witnesses.lock();
        if w.range(range.clone()).next().is_none() {
            return;
        }
        let doomed: Vec<usize> = w.range(range.clone()).map(|(&k, _)| k).collect();
        for k in doomed {
            w.remove(&k);
        }
    }

    /// The kernel mappings covering `range`, clipped to it.
    fn vmas_in(&self, range: &Range<usize>) -> Vec<procfs::Vma> {
        let mut out = Vec::new();
        let mut a = range.start;
        while a < range.end {
            let Some(v) = self.maps.at_or_after(a) else { break };
            if v.start >= range.end {
                break;
            }
            out.push(procfs::Vma { start: v.start.max(a), end: v.end.min(range.end), ..v });
            a = v.end;
        }
        out
    }
}

impl Backend for LinuxBackend {
    fn limits(&self) -> Limits {
        self.limits
    }

    /// The main thread's stack, the room it may grow into (its `RLIMIT_STACK`, and
    /// the kernel's guard gap) and everything above it (vDSO, vvar); and the next GiB
    /// above the program break, where `malloc` grows the heap with `brk`.
    fn initial_blocked(&self) -> Vec<Range<usize>> {
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

    fn reserve(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        if opts.large_pages && self.limits.large_page_size == 0 {
            return Err(BackendError::LargePagesUnavailable);
        }
        let watch = if opts.write_watch { Some(self.watch()?) } else { None };
        let ext = Self::extent(&range);
        // Owned before it exists, so that a concurrent `foreign` never sees it as
        // someone else's.
        self.owned.lock().insert(ext.start, ext.end);
        let mapped = self.map_new(&ext, opts.large_pages).and_then(|()| {
            if let Some(w) = watch {
                if let Err(e) = self.gate().map_err(errno_error).and_then(|()| w.register(&ext)) {
                    self.count();
                    // SAFETY: `ext` is the mapping made just above.
                    let _ = unsafe { rustix::mm::munmap(ptr(ext.start), ext.len()) };
                    return Err(e);
                }
            }
            Ok(())
        });
        if mapped.is_err() {
            self.owned.lock().remove(&ext.start);
        }
        mapped
    }

    fn release(&self, range: Range<usize>, _opts: ReserveOptions) -> Result<(), BackendError> {
        let ext = Self::extent(&range);
        self.gate().map_err(errno_error)?;
        // SAFETY: the engine releases only reservations this backend mapped, and
        // `ext` is exactly what `reserve` mapped. munmap also ends write tracking.
        unsafe { rustix::mm::munmap(ptr(ext.start), ext.len()) }.map_err(errno_error)?;
        self.owned.lock().remove(&ext.start);
        self.forget_witnesses(&ext);
        Ok(())
    }

    /// `mprotect`: changes what the CPU allows and keeps the contents. A call that
    /// fails part-way (the kernel splits mappings one by one and may hit
    /// `vm.max_map_count`) is reverted to `from`.
    fn set_access(&self, range: Range<usize>, from: Access, to: Access) -> Result<(), BackendError> {
        // SAFETY: the range belongs to one of our reservations (engine contract);
        // changing its protection cannot affect memory Rust code relies on.
        let r = self.gate().and_then(|()| unsafe { rustix::mm::mprotect(ptr(range.start), range.len(), prot_of(to)) });
        if let Err(e) = r {
            self.count();
            // SAFETY: as above; restores the protection the whole range had.
            let _ = unsafe { rustix::mm::mprotect(ptr(range.start), range.len(), prot_of(from)) };
            return Err(errno_error(e));
        }
        Ok(())
    }

    /// `MADV_DONTNEED` drops private anonymous pages immediately (unlike `MADV_FREE`),
    /// so RSS falls now and the range reads zero when made accessible again. The
    /// emptied page-table entries also carry no write-protect state, so the pages are
    /// clean for write watch.
    fn discard(&self, range: Range<usize>) {
        self.count();
        // SAFETY: the range is an inaccessible part of one of our reservations whose
        // contents the engine has decided to drop.
        let _ = unsafe { rustix::mm::madvise(ptr(range.start), range.len(), rustix::mm::Advice::LinuxDontNeed) };
        self.forget_witnesses(&range);
    }

    /// `MADV_FREE` on the read-write parts of the range: the kernel may reclaim those
    /// pages lazily, whenever it needs memory, and a write before then cancels it.
    /// Before offering a page, one non-zero word of it is noted as a witness so that
    /// `MEM_RESET_UNDO` can tell whether the page survived. Parts that are not
    /// writable keep their contents (allowed: a reset leaves data "unchanged or zero").
    fn reset(&self, range: Range<usize>) -> Result<(), BackendError> {
        let scan = features().pagemap_scan;
        for v in self.vmas_in(&range) {
            if v.access != Access::ReadWrite && v.access != Access::ExecuteReadWrite {
                continue;
            }
            let piece = v.start..v.end;
            let mut found = Vec::new();
            for run in self.pagemap.populated(piece.clone(), scan) {
                for page in run.step_by(PAGE) {
                    // SAFETY: the page is readable (its mapping is read-write) and
                    // populated, and the engine keeps the reservation busy, so no
                    // other call changes it meanwhile.
                    let words = unsafe { std::slice::from_raw_parts(page as *const u64, PAGE / 8) };
                    if let Some(i) = words.iter().position(|&w| w != 0) {
                        found.push((page, Witness { offset: i as u16, value: words[i] }));
                    }
                }
            }
            self.witnesses.lock().extend(found);
            self.count();
            // SAFETY: a part of one of our reservations; MADV_FREE only lets the kernel
            // drop contents, which MEM_RESET allows.
            let _ = unsafe { rustix::mm::madvise(ptr(piece.start), piece.len(), rustix::mm::Advice::LinuxFree) };
        }
        Ok(())
    }

    /// Every page a reset offered that held data is checked with an atomic
    /// read-modify-write of its witness word: the write cancels the lazy free for a
    /// page that is still there, and a page the kernel took reads zero. Pages that are
    /// no longer writable cannot be checked that way and are discarded, so that the
    /// answer (`false`: some data was dropped and reads zero) stays true.
    fn reset_undo(&self, range: Range<usize>) -> Result<bool, BackendError> {
        let taken: Vec<(usize, Witness)> = {
            let mut w = self.witnesses.lock();
            let keys: Vec<usize> = w.range(range.clone()).map(|(&k, _)| k).collect();
            keys.into_iter().filter_map(|k| w.remove(&k).map(|v| (k, v))).collect()
        };
        if taken.is_empty() {
            return Ok(true);
        }
        let mut intact = true;
        let mut vma: Option<procfs::Vma> = None;
        for (page, w) in taken {
            if !matches!(vma, Some(v) if v.start <= page && page < v.end) {
                vma = self.maps.at_or_after(page);
            }
            let writable = vma
                .is_some_and(|v| v.start <= page && matches!(v.access, Access::ReadWrite | Access::ExecuteReadWrite));
            if writable {
                let word = (page + w.offset as usize * 8) as *mut u64;
                // SAFETY: the word lies in a writable, mapped page of a reservation the
                // engine keeps busy; an atomic RMW of 0 leaves its value unchanged.
                let now = unsafe { std::sync::atomic::AtomicU64::from_ptr(word) }.fetch_or(0, Ordering::SeqCst);
                if now != w.value {
                    intact = false;
                }
            } else {
                intact = false;
                self.count();
                // SAFETY: a page of one of our reservations whose data we report lost.
                let _ = unsafe { rustix::mm::madvise(ptr(page), PAGE, rustix::mm::Advice::LinuxDontNeed) };
            }
        }
        Ok(intact)
    }

    fn lock(&self, range: Range<usize>) -> Result<(), BackendError> {
        // SAFETY: locking pages of our reservation has no effect on their contents.
        if let Err(e) = self.gate().and_then(|()| unsafe { rustix::mm::mlock(ptr(range.start), range.len()) }) {
            // mlock may have locked some mappings before failing: undo them all.
            // SAFETY: as above.
            let _ = unsafe { rustix::mm::munlock(ptr(range.start), range.len()) };
            return Err(match e {
                Errno::NOMEM | Errno::AGAIN | Errno::PERM => BackendError::LockRefused,
                e => BackendError::Os(e.raw_os_error()),
            });
        }
        Ok(())
    }

    fn unlock(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.gate().map_err(errno_error)?;
        // SAFETY: unlocking pages of our reservation has no effect on their contents.
        unsafe { rustix::mm::munlock(ptr(range.start), range.len()) }.map_err(errno_error)
    }

    fn read(&self, address: usize, buf: &mut [u8]) -> Result<(), BackendError> {
        copy(address, buf.as_mut_ptr(), buf.len(), false)
    }

    fn write(&self, address: usize, data: &[u8]) -> Result<(), BackendError> {
        self.gate().map_err(errno_error)?;
        copy(address, data.as_ptr() as *mut u8, data.len(), true)
    }

    fn dirty_pages(&self, range: Range<usize>, max: usize, reset: bool) -> Result<Vec<usize>, BackendError> {
        let w = self.watch()?;
        if reset {
            self.gate().map_err(errno_error)?;
        }
        w.dirty_pages(&self.pagemap, range, max, reset)
    }

    fn clear_dirty(&self, range: Range<usize>) -> Result<(), BackendError> {
        let w = self.watch()?;
        self.gate().map_err(errno_error)?;
        w.clear(&range)
    }

    fn foreign(&self, address: usize, limit: usize) -> Option<ForeignRegion> {
        self.foreign_piece(address, limit).map(|v| ForeignRegion {
            start: v.start,
            end: v.end,
            access: v.access,
            kind: v.kind,
        })
    }
}

/// Copy between `local` and our own memory at `address` with `process_vm_readv` /
/// `process_vm_writev`: the kernel walks our page tables and reports `EFAULT` (or a
/// short count) at an inaccessible page, so a bad address is an error, never a crash.
fn copy(address: usize, local: *mut u8, len: usize, write: bool) -> Result<(), BackendError> {
    let mut done = 0;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    while done < len {
        let l = libc::iovec { iov_base: local.wrapping_add(done) as *mut libc::c_void, iov_len: len - done };
        let r = libc::iovec { iov_base: (address + done) as *mut libc::c_void, iov_len: len - done };
        // SAFETY: the local iovec covers the caller's buffer (readable, and writable
        // for a read); the remote one is only accessed by the kernel, which checks it.
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
            return Err(match e {
                Errno::FAULT | Errno::NOMEM => BackendError::Fault(address + done),
                e => BackendError::Os(e.raw_os_error()),
            });
        }
        if n == 0 {
            return Err(BackendError::Fault(address + done));
        }
        done += n as usize;
    }
    Ok(())
}
