//! Backends: what carries out the page-range side effects the rule engine decides on.
//!
//! A backend knows nothing of Win32. It is told to claim address ranges, to give a
//! range an [`Access`] (what the CPU would allow), to drop contents, and to copy bytes.
//! A backend that checks accesses itself, as the simulated one does, is also handed
//! [`Grant`]s: what the rules allow on the pages of a block, until the block changes.
//! Every fallible operation is *atomic*: when it returns an error it has changed nothing
//! (a backend that needs several system calls undoes its own partial work). The engine
//! composes operations and undoes the completed ones when a later one fails, so a failed
//! Win32 call never leaves a partial change.
//!
//! - [`sim::SimBackend`]: an address space that exists only as data.
//! - `linux::LinuxBackend` (Linux only): the process's real memory.
//! - [`faulty::Faulty`]: wraps another backend and fails its N-th side effect, for tests.

pub mod faulty;
#[cfg(all(target_os = "linux", not(miri)))]
pub mod linux;
pub mod sim;

use std::ops::Range;

/// The hardware access a range grants: what the engine maps a Win32 protection to.
/// An armed guard page is `None` at this level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// No access (reserved, decommitted, `PAGE_NOACCESS`, armed guard pages).
    None,
    /// Read only.
    Read,
    /// Read and write.
    ReadWrite,
    /// Execute (`PAGE_EXECUTE`: readable too, as on Windows x64; a backend may map it
    /// execute-only, and must then read it by other means).
    Execute,
    /// Execute and read.
    ExecuteRead,
    /// Execute, read and write.
    ExecuteReadWrite,
}

impl Access {
    /// Readable at the hardware level.
    pub fn readable(self) -> bool {
        !matches!(self, Access::None)
    }
    /// Writable at the hardware level.
    pub fn writable(self) -> bool {
        matches!(self, Access::ReadWrite | Access::ExecuteReadWrite)
    }
    /// Executable at the hardware level.
    pub fn executable(self) -> bool {
        matches!(self, Access::Execute | Access::ExecuteRead | Access::ExecuteReadWrite)
    }
}

bitflags::bitflags! {
    /// What the engine allows on one page, as handed to a backend that checks accesses
    /// itself ([`Backend::grant`]): the rule's answer for each kind of access.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Grant: u8 {
        /// Reads are allowed.
        const READ = 1;
        /// Writes are allowed.
        const WRITE = 2;
        /// Instruction fetches are allowed.
        const EXECUTE = 4;
    }
}

/// The pages of one grant block ([`Backend::grant`]): the 4 KiB pages of a 64 KiB
/// aligned block.
pub const GRANT_PAGES: usize = 16;

/// Options of a new reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReserveOptions {
    /// Back the range with large pages (the range is aligned to the large-page size).
    pub large_pages: bool,
    /// Track writes to the range ([`Backend::dirty_pages`]).
    pub write_watch: bool,
}

/// The address range and page sizes a backend offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The lowest address a reservation may start at (a multiple of 64 KiB): the rules
    /// refuse a `VirtualAlloc` below it with `ERROR_INVALID_PARAMETER`.
    pub min_address: usize,
    /// One past the highest usable address (a multiple of 64 KiB).
    pub end_address: usize,
    /// The large-page size, or 0 when the backend has none.
    pub large_page_size: usize,
}

/// What kind of foreign mapping (memory the engine did not allocate) lives at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForeignKind {
    /// Anonymous private memory (a heap, a thread stack).
    Private,
    /// A file or shared mapping.
    Mapped,
    /// An executable image (a program or library).
    Image,
}

/// A mapping the engine did not make, reported so that a query never calls it free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ForeignRegion {
    /// First address of the mapping (page aligned).
    pub start: usize,
    /// One past its last address (page aligned).
    pub end: usize,
    /// The access it grants.
    pub access: Access,
    /// Writes go to a private copy of the page (a private file mapping's unwritten
    /// pages): with a writable `access`, queries report `PAGE_WRITECOPY` or
    /// `PAGE_EXECUTE_WRITECOPY`.
    pub copy_on_write: bool,
    /// The first address of the whole mapping this region is a piece of (an image's
    /// sections share their image's base); `start` for a mapping reported whole.
    /// Queries report it as the allocation base.
    pub allocation_base: usize,
    /// Its kind.
    pub kind: ForeignKind,
}

/// Why a backend operation failed. A failed operation changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Something the engine does not own occupies `[start, end)` inside the requested range.
    #[error("range occupied by a foreign mapping {start:#x}..{end:#x}")]
    Occupied {
        /// First occupied address.
        start: usize,
        /// One past the last occupied address.
        end: usize,
    },
    /// The OS is out of memory or out of mappings (`ENOMEM`).
    #[error("out of memory")]
    OutOfMemory,
    /// Large pages cannot be had.
    #[error("large pages unavailable")]
    LargePagesUnavailable,
    /// The feature needs kernel support that is missing.
    #[error("not supported by this kernel: {0}")]
    Unsupported(&'static str),
    /// The OS refused to lock pages.
    #[error("page lock refused")]
    LockRefused,
    /// Memory could not be accessed (a copy hit an inaccessible page).
    #[error("memory fault at {0:#x}")]
    Fault(usize),
    /// An injected failure (see [`faulty::Faulty`]).
    #[error("injected failure")]
    Injected,
    /// Any other OS error, with its errno.
    #[error("os error {0}")]
    Os(i32),
}

/// A backend whose whole state can be copied: what
/// [`AddressSpace::snapshot`](crate::AddressSpace::snapshot) needs. The simulated backend is one; the Linux backend
/// is not (its state is the process's real memory).
pub trait Snapshot: Backend + Sized {
    /// An independent backend holding what this one holds now (contents, marks,
    /// write-tracked ranges). The engine calls it with its lock held and no operation
    /// under way, so nothing but checked accesses can change this backend meanwhile;
    /// the copy must be as of one moment with respect to those.
    fn snapshot(&self) -> Self;

    /// Make this backend hold what `from` holds (contents, marks, write-tracked ranges)
    /// in place of its own, and take back every grant it handed out, for
    /// [`AddressSpace::restore_from`](crate::AddressSpace::restore_from). `from` is a
    /// snapshot made for the purpose, of a backend with the same limits. The engine calls
    /// it as it calls [`snapshot`](Self::snapshot): with its lock held and no operation
    /// under way; the change must be one moment for the checked accesses running
    /// meanwhile (each lands wholly before it, so is undone, or wholly after it).
    /// Returns a backend holding what this one held, for the engine to drop once it has
    /// let go of its lock (freeing it may take a while). The default refuses
    /// (`Unsupported`), changing nothing.
    fn restore(&self, from: Self) -> Result<Self, BackendError> {
        let _ = from;
        Err(BackendError::Unsupported("restoring a snapshot in place"))
    }
}

/// The narrow interface between the rule engine and the memory it manages.
///
/// Ranges are page aligned and non-empty. The engine never asks for an operation on
/// a range it does not own (except [`Backend::foreign`], [`Backend::read`],
/// [`Backend::write`] and [`Backend::sync_instructions`] on foreign memory), never runs two operations on the same
/// reservation at once, and always passes the access a range currently has as `from`.
pub trait Backend: Send + Sync {
    /// The address range this backend offers.
    fn limits(&self) -> Limits;

    /// Ranges the engine must never place a reservation in (e.g. the room a stack grows
    /// into). Asked once, when the space is created.
    fn initial_blocked(&self) -> Vec<Range<usize>> {
        Vec::new()
    }

    /// Ranges the engine should not pick by itself for a reservation, though a caller
    /// may ask for an address there (then [`Backend::reserve`] decides, as anywhere):
    /// e.g. the room a program break grows into. Asked once, when the space is created.
    fn initial_avoided(&self) -> Vec<Range<usize>> {
        Vec::new()
    }

    /// A free range of `size` bytes at an `align`-aligned start that this backend
    /// could reserve with `opts` without a system call (a released range it kept mapped,
    /// say), if it has one: the engine takes it for a reservation at no particular
    /// address when its own records agree that the range is free. Default: none.
    fn cheap_range(&self, size: usize, align: usize, opts: ReserveOptions) -> Option<usize> {
        let _ = (size, align, opts);
        None
    }

    /// Whether every side effect of this backend is cheap and never blocks (no system
    /// call, no waiting on anything), so that the engine may carry it out while holding
    /// its own lock: one lock round trip per call instead of two. Default `false`.
    fn inline_effects(&self) -> bool {
        false
    }

    /// Claim `range` as a new reservation: inaccessible, reading as zero once made
    /// accessible. Fails with [`BackendError::Occupied`] if something else lives there.
    fn reserve(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError>;

    /// Give up a reservation made by [`Backend::reserve`]. The engine has already made
    /// the whole range inaccessible; the backend drops contents, locks and write-tracking.
    fn release(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError>;

    /// Give up a whole reservation whose `accessible` runs still grant the given access
    /// (every other page is inaccessible): as [`Backend::set_access`] to
    /// [`Access::None`] on each of them followed by [`Backend::release`], which is the
    /// default. Atomic: on error nothing changed. A backend may drop accessible pages
    /// directly instead of making them inaccessible first.
    fn release_committed(
        &self,
        range: Range<usize>,
        opts: ReserveOptions,
        accessible: &[(Range<usize>, Access)],
    ) -> Result<(), BackendError> {
        let undo = |done: &[(Range<usize>, Access)]| {
            for (r, from) in done.iter().rev() {
                let undone = self.set_access(r.clone(), Access::None, *from);
                debug_assert!(undone.is_ok(), "undo of a release step failed: {undone:?}");
            }
        };
        for (i, (r, from)) in accessible.iter().enumerate() {
            if let Err(e) = self.set_access(r.clone(), *from, Access::None) {
                undo(&accessible[..i]);
                return Err(e);
            }
        }
        if let Err(e) = self.release(range, opts) {
            undo(accessible);
            return Err(e);
        }
        Ok(())
    }

    /// Whether [`Backend::release_committed`] takes every access away from its whole
    /// range by itself, whatever runs it is told are accessible: then the engine tells
    /// it of none (an empty list) and does not look for them, a walk over the
    /// reservation's page runs on every release. Default `false` (the engine lists
    /// them, as the default `release_committed` needs).
    fn release_drops_access(&self) -> bool {
        false
    }

    /// Change the access of `range` from `from` (what it has now) to `to`, keeping contents.
    fn set_access(&self, range: Range<usize>, from: Access, to: Access) -> Result<(), BackendError>;

    /// Drop the contents of `range` (already inaccessible): it reads as zero when made
    /// accessible again, and is clean for write tracking. Cannot fail.
    fn discard(&self, range: Range<usize>);

    /// Decommit: make each committed run (given with its current access) inaccessible
    /// and drop its contents, as [`Backend::set_access`] to [`Access::None`] followed by
    /// [`Backend::discard`] would. Atomic: on error nothing changed, contents included.
    /// The default does exactly that; a backend may do it in fewer steps.
    fn decommit(&self, runs: &[(Range<usize>, Access)]) -> Result<(), BackendError> {
        for (i, (r, from)) in runs.iter().enumerate() {
            if *from == Access::None {
                continue;
            }
            if let Err(e) = self.set_access(r.clone(), *from, Access::None) {
                for (r, from) in runs[..i].iter().rev().filter(|(_, f)| *f != Access::None) {
                    let undone = self.set_access(r.clone(), Access::None, *from);
                    debug_assert!(undone.is_ok(), "undo of a decommit step failed: {undone:?}");
                }
                return Err(e);
            }
        }
        for (r, _) in runs {
            self.discard(r.clone());
        }
        Ok(())
    }

    /// `MEM_RESET`: the contents of accessible `range` may be dropped lazily.
    fn reset(&self, range: Range<usize>) -> Result<(), BackendError>;

    /// `MEM_RESET_UNDO`: keep the contents of `range`; `Ok(true)` if every byte survived
    /// the reset, `Ok(false)` if some were dropped (they now read as zero).
    fn reset_undo(&self, range: Range<usize>) -> Result<bool, BackendError>;

    /// Lock accessible `range` into memory (`VirtualLock`).
    fn lock(&self, range: Range<usize>) -> Result<(), BackendError>;

    /// Undo [`Backend::lock`].
    fn unlock(&self, range: Range<usize>) -> Result<(), BackendError>;

    /// Copy bytes out of memory at `address`. The engine has checked the rules; the
    /// backend still fails cleanly ([`BackendError::Fault`]) rather than crash.
    fn read(&self, address: usize, buf: &mut [u8]) -> Result<(), BackendError>;

    /// Copy bytes into memory at `address`, marking written pages dirty for write tracking.
    fn write(&self, address: usize, data: &[u8]) -> Result<(), BackendError>;

    /// Get ready for a [`Backend::write`] of `len` bytes at `address` that may follow.
    /// The engine calls this before it takes its lock, so work done here (preparing
    /// zeroed pages, say) is work the write does not do while every other call on the
    /// space waits. The write may never come (the access may be refused). Default: nothing.
    fn prepare_write(&self, _address: usize, _len: usize) {}

    /// Whether this backend keeps grants ([`Backend::grant`]) and carries out
    /// [`Backend::try_read`] and [`Backend::try_write`] with them. Default `false`: the
    /// engine then checks every access itself and never calls `grant`.
    fn keeps_grants(&self) -> bool {
        false
    }

    /// Remember that each page of the 64 KiB aligned block at `base` allows what
    /// `pages` says (page `i` at `base + i * 4096`), so that later accesses inside the
    /// block can be checked and carried out by [`Backend::try_read`] and
    /// [`Backend::try_write`] alone, as hardware checks a CPU's accesses against its
    /// page tables. A backend may forget a grant at any time, and must forget it before
    /// an operation that changes the access of any page of its block returns
    /// ([`Backend::set_access`], [`Backend::decommit`], [`Backend::release_committed`],
    /// [`Backend::release`]). The engine grants only what its
    /// rules allow at that moment, and never while an operation on the block's
    /// reservation is under way. Default: nothing.
    fn grant(&self, base: usize, pages: &[Grant; GRANT_PAGES]) {
        let _ = (base, pages);
    }

    /// Read `buf.len()` bytes at `address` (with `need` = [`Grant::EXECUTE`]: fetch
    /// instructions) if grants cover every byte; `true` if it was done. `false` (nothing
    /// was read) leaves the access to the engine, which checks it under its rules.
    /// Default `false`.
    fn try_read(&self, address: usize, buf: &mut [u8], need: Grant) -> bool {
        let _ = (address, buf, need);
        false
    }

    /// Write `data` at `address` if grants allow writing every byte, marking written
    /// pages dirty as [`Backend::write`] does; `true` if it was done. `false` (nothing
    /// was written) leaves the access to the engine. Default `false`.
    fn try_write(&self, address: usize, data: &[u8]) -> bool {
        let _ = (address, data);
        false
    }

    /// The base of each page of write-tracked `range` written since it was last cleaned,
    /// ascending, at most `max`; with `reset`, exactly the reported pages become clean.
    fn dirty_pages(&self, range: Range<usize>, max: usize, reset: bool) -> Result<Vec<usize>, BackendError>;

    /// [`Backend::dirty_pages`] into the caller's buffer: the base of each page of
    /// write-tracked `range` written since it was last cleaned, ascending, at most
    /// `out.len()` of them, written to the front of `out` (nothing past them); returns
    /// how many. With `reset`, exactly the reported pages become clean. A backend should
    /// not allocate here once it has served a first call (a GC scans its cards with it
    /// every collection). The default passes [`Backend::dirty_pages`]'s answer on, so a
    /// backend written before this method existed has it (allocating).
    fn dirty_pages_into(&self, range: Range<usize>, out: &mut [usize], reset: bool) -> Result<usize, BackendError> {
        let found = self.dirty_pages(range, out.len(), reset)?;
        let n = found.len().min(out.len());
        out[..n].copy_from_slice(&found[..n]);
        Ok(n)
    }

    /// Make every page of write-tracked `range` clean.
    fn clear_dirty(&self, range: Range<usize>) -> Result<(), BackendError>;

    /// The first mapping the engine did not make that intersects `[address, limit)`.
    /// Simulated spaces have none.
    fn foreign(&self, address: usize, limit: usize) -> Option<ForeignRegion> {
        let _ = (address, limit);
        None
    }

    /// Whether instruction fetches from this backend's memory may miss earlier stores
    /// until [`Backend::sync_instructions`] names them (a processor whose instruction
    /// cache is not kept coherent with stores, as on AArch64). Default `false`: the engine
    /// then never calls `sync_instructions`.
    fn instructions_need_sync(&self) -> bool {
        false
    }

    /// Make this process's instruction fetches see the stores made in `range`, a byte
    /// range (not rounded to pages) that may lie in memory the engine did not allocate:
    /// the engine names only ranges it has just found committed and readable, on which
    /// cache-maintenance instructions do not fault. Cannot fail. Called only when
    /// [`Backend::instructions_need_sync`] says so. Default: nothing.
    fn sync_instructions(&self, range: Range<usize>) {
        let _ = range;
    }

    /// [`Backend::foreign`] without waiting for another thread: `None` when answering
    /// would have to wait for a lock another thread holds (that thread may be suspended:
    /// a host's `VirtualQuery` must not block). By default, `foreign` itself.
    fn try_foreign(&self, address: usize, limit: usize) -> Option<Option<ForeignRegion>> {
        Some(self.foreign(address, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const P: usize = 4096;

    /// A backend that only keeps the access of each page, checks that every change
    /// starts from the access the page really has, and fails its `fail_at`-th
    /// `set_access` or `release` (1-based; 0 for never). Everything else is unused.
    #[derive(Default)]
    struct Model {
        pages: Mutex<BTreeMap<usize, Access>>,
        discarded: Mutex<Vec<Range<usize>>>,
        released: Mutex<Option<Range<usize>>>,
        calls: AtomicUsize,
        fail_at: usize,
    }

    impl Model {
        fn new(fail_at: usize, runs: &[(Range<usize>, Access)]) -> Model {
            let m = Model { fail_at, ..Model::default() };
            for page in (0..8 * P).step_by(P) {
                let a = runs.iter().find(|(r, _)| r.contains(&page)).map_or(Access::None, |(_, a)| *a);
                m.pages.lock().unwrap().insert(page, a);
            }
            m
        }
        fn failing(&self) -> bool {
            self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at
        }
        fn pages(&self) -> BTreeMap<usize, Access> {
            self.pages.lock().unwrap().clone()
        }
    }

    impl Backend for Model {
        fn limits(&self) -> Limits {
            Limits { min_address: 0, end_address: 8 * P, large_page_size: 0 }
        }
        fn reserve(&self, _: Range<usize>, _: ReserveOptions) -> Result<(), BackendError> {
            unreachable!()
        }
        fn release(&self, range: Range<usize>, _: ReserveOptions) -> Result<(), BackendError> {
            if self.failing() {
                return Err(BackendError::OutOfMemory);
            }
            *self.released.lock().unwrap() = Some(range);
            Ok(())
        }
        fn set_access(&self, range: Range<usize>, from: Access, to: Access) -> Result<(), BackendError> {
            if self.failing() {
                return Err(BackendError::OutOfMemory);
            }
            let mut pages = self.pages.lock().unwrap();
            for page in range.step_by(P) {
                let now = pages.insert(page, to).unwrap();
                assert_eq!(now, from, "page {page:#x} changed from an access it does not have");
            }
            Ok(())
        }
        fn discard(&self, range: Range<usize>) {
            self.discarded.lock().unwrap().push(range);
        }
        fn reset(&self, _: Range<usize>) -> Result<(), BackendError> {
            unreachable!()
        }
        fn reset_undo(&self, _: Range<usize>) -> Result<bool, BackendError> {
            unreachable!()
        }
        fn lock(&self, _: Range<usize>) -> Result<(), BackendError> {
            unreachable!()
        }
        fn unlock(&self, _: Range<usize>) -> Result<(), BackendError> {
            unreachable!()
        }
        fn read(&self, _: usize, _: &mut [u8]) -> Result<(), BackendError> {
            unreachable!()
        }
        fn write(&self, _: usize, _: &[u8]) -> Result<(), BackendError> {
            unreachable!()
        }
        fn dirty_pages(&self, _: Range<usize>, _: usize, _: bool) -> Result<Vec<usize>, BackendError> {
            unreachable!()
        }
        fn clear_dirty(&self, _: Range<usize>) -> Result<(), BackendError> {
            unreachable!()
        }
    }

    /// The default `release_committed` is atomic: whichever of its steps fails (each
    /// run's change to no access, then the release), every run has its access back and
    /// nothing is released; when none fails, every page is inaccessible and the whole
    /// range released.
    #[test]
    fn default_release_committed_undoes_every_step_on_failure() {
        let runs = [(0..2 * P, Access::ReadWrite), (3 * P..4 * P, Access::Read), (5 * P..6 * P, Access::ExecuteRead)];
        for fail_at in 1..=4 {
            let m = Model::new(fail_at, &runs);
            let before = m.pages();
            let r = m.release_committed(0..8 * P, ReserveOptions::default(), &runs);
            assert_eq!(r, Err(BackendError::OutOfMemory), "step {fail_at}");
            assert_eq!(m.pages(), before, "step {fail_at} failing left a run changed");
            assert_eq!(*m.released.lock().unwrap(), None);
        }
        let m = Model::new(0, &runs);
        m.release_committed(0..8 * P, ReserveOptions::default(), &runs).unwrap();
        assert!(m.pages().values().all(|&a| a == Access::None));
        assert_eq!(*m.released.lock().unwrap(), Some(0..8 * P));
    }

    /// The default `decommit` is atomic too: a failing change of a run's access puts
    /// back the runs changed before it and discards nothing; runs already inaccessible
    /// take no change; on success every run is inaccessible and discarded.
    #[test]
    fn default_decommit_undoes_every_step_on_failure() {
        let runs = [
            (0..P, Access::ReadWrite),
            (P..2 * P, Access::None),
            (2 * P..4 * P, Access::Read),
            (4 * P..5 * P, Access::Execute),
        ];
        for fail_at in 1..=3 {
            let m = Model::new(fail_at, &runs);
            let before = m.pages();
            assert_eq!(m.decommit(&runs), Err(BackendError::OutOfMemory), "step {fail_at}");
            assert_eq!(m.pages(), before, "step {fail_at} failing left a run changed");
            assert!(m.discarded.lock().unwrap().is_empty());
        }
        let m = Model::new(0, &runs);
        m.decommit(&runs).unwrap();
        assert_eq!(m.calls.load(Ordering::SeqCst), 3, "one change per accessible run");
        assert!(m.pages().values().all(|&a| a == Access::None));
        assert_eq!(*m.discarded.lock().unwrap(), runs.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>());
    }
}
