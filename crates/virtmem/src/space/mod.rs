//! The engine: an address space that applies the rules to the bookkeeping and has a
//! backend carry out the side effects.
//!
//! Every call validates completely (rules), then, under the space's lock, checks the
//! bookkeeping and plans a list of backend steps (a commit, decommit or protect of pages
//! of one run makes its one backend call without a plan). The reservation it acts on is
//! marked busy and the lock is dropped while the backend runs the steps, so calls on
//! different reservations never wait for each other's system calls. If a step fails, the steps
//! already done are undone in reverse and the bookkeeping is not touched: a failed call
//! changes nothing. Irrevocable work (dropping contents) only runs once every fallible
//! step has succeeded.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::backend::{Access, Backend, BackendError, Limits, Snapshot};
use crate::error::{Error, Result};
use crate::flags::{Protection, SystemInfo};
use crate::rules::{self, GRANULE, MIN_ADDRESS, PAGE};
use crate::runs::{Book, PageState, Reservation, Slot};

mod access;
mod alloc;
mod flush;
mod free;
mod lock;
mod plan;
mod protect;
mod query;
mod traits;
mod watch;

pub use traits::VirtualSpace;

/// Totals of an address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SpaceStats {
    /// Bytes reserved (committed pages included).
    pub reserved: usize,
    /// Bytes committed.
    pub committed: usize,
    /// Number of reservations.
    pub reservations: usize,
    /// Number of distinct page runs in all reservations.
    pub runs: usize,
    /// The largest free gap that a reservation could use, in bytes.
    pub largest_free: usize,
    /// Number of free gaps.
    pub free_gaps: usize,
    /// Undo steps of failed calls that the backend refused, since the space was made; 0
    /// in normal operation. Each left part of a failed call's change in place (for
    /// example the kernel kept a new protection it could not split back at its
    /// mapping-count limit); the space records it, so `VirtualQuery` shows those pages as
    /// the call left them, but the call reported a failure and nothing else of it stayed.
    pub refused_undos: usize,
    /// Calls on this space waiting, at the moment of the reading, for another call to
    /// end: a call on a reservation whose side effects another call is carrying out
    /// outside the space's lock (a reset, say, or a system call on real memory), a
    /// reserve of a range another reserve has claimed and not yet made, an access to
    /// such a reservation, or a snapshot or restore waiting for the calls under way (and
    /// the calls asked for meanwhile, which wait for it). 0 when no thread waits. A
    /// figure for finding contention, and what tests watch to know that a call waits.
    pub waiting_calls: usize,
}

/// What [`AddressSpace::reset_undo`] (`MEM_RESET_UNDO`) found: whether the data of the
/// range survived its reset.
#[must_use = "a reset's data may be gone: check whether it survived"]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetUndo {
    /// Every page holds what it held before the reset (the alloc form succeeds).
    Intact,
    /// Some data was dropped and reads zero (the alloc form fails with `ERROR_BUSY`,
    /// [`Error::DataDiscarded`]); the rest of the range holds its data. The range is
    /// kept either way: the pages are no longer offered to the system.
    Discarded,
}

impl ResetUndo {
    /// Whether the data survived ([`ResetUndo::Intact`]).
    pub fn is_intact(self) -> bool {
        self == ResetUndo::Intact
    }
}

/// A Win32 virtual address space over backend `B`. See the crate docs.
///
/// `AddressSpace` is `Send + Sync`: share it between threads with `Arc`.
pub struct AddressSpace<B: Backend> {
    backend: B,
    limits: Limits,
    book: Mutex<Book>,
    idle: Condvar,
    /// See [`SpaceStats::refused_undos`].
    refused_undos: AtomicUsize,
    /// See [`SpaceStats::waiting_calls`]: changed only with `book` locked, around a wait
    /// on `idle` ([`AddressSpace::wait_idle`]).
    waiting: AtomicUsize,
}

impl<B: Backend> std::fmt::Debug for AddressSpace<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.stats();
        f.debug_struct("AddressSpace")
            .field("reserved", &s.reserved)
            .field("committed", &s.committed)
            .field("reservations", &s.reservations)
            .finish()
    }
}

impl<B: Snapshot> AddressSpace<B> {
    /// An independent copy of this space as it is now: its reservations, their page
    /// states, protections, armed guard pages and locks, the page contents, write-watch
    /// marks and reset losses, the totals and the commit limit. The two spaces share
    /// nothing afterwards: a change to either (or its drop) leaves the other as it was.
    /// The copy is deterministic as the original is: the same calls on both give the
    /// same answers and addresses.
    ///
    /// This is the snapshot an emulator or a fuzzer restores between runs: make the
    /// space once, take a snapshot, and run each input on `snapshot()` of it.
    ///
    /// It waits for the calls under way on the space to end, and keeps the calls that
    /// would start meanwhile waiting until it has copied (so it is not put off by other
    /// threads' calls, however many overlap). Checked accesses running meanwhile on other threads are either
    /// wholly in the copy or not at all. It costs time and memory in proportion to the
    /// space's runs and to the pages written, never to the size reserved or committed.
    /// Over the simulated backend the page contents are not copied but shared,
    /// copy-on-write: the copy takes a reference to each written page (~100 ns a page,
    /// mostly the cache miss on its reference count, against ~800 ns for a copy of its
    /// 4 KiB), and the first write to a shared page by either space afterwards copies
    /// that page alone for the writer (~0.6 µs more than a write to a page of its own).
    /// To run each input on one space object, restore it in place with
    /// [`restore_from`](Self::restore_from).
    ///
    /// ```
    /// use virtmem::{AllocationType, Protection, SimSpace};
    ///
    /// let space = SimSpace::simulated();
    /// let base = space.alloc(0, 4096, AllocationType::COMMIT | AllocationType::RESERVE, Protection::READWRITE)?;
    /// space.write(base, b"before")?;
    /// let saved = space.snapshot();
    /// space.write(base, b"after!")?;
    /// let mut buf = [0u8; 6];
    /// saved.read(base, &mut buf)?;
    /// assert_eq!(&buf, b"before");
    /// # Ok::<(), virtmem::Error>(())
    /// ```
    #[must_use = "a snapshot dropped at once was copied for nothing"]
    pub fn snapshot(&self) -> Self {
        let book = self.quiet();
        let backend = self.backend.snapshot();
        let mut copied = book.clone();
        copied.snapshots = 0;
        drop(book);
        self.idle.notify_all();
        AddressSpace {
            backend,
            limits: self.limits,
            book: Mutex::new(copied),
            idle: Condvar::new(),
            refused_undos: AtomicUsize::new(self.refused_undos.load(Ordering::Relaxed)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// This space's book, locked, once no call is under way on it (for a snapshot or a
    /// restore, which must see and change no reservation half made or half changed).
    /// Calls that run their side effects outside the lock must finish first; calls that
    /// would start some meanwhile wait instead (see `settle` and `reserve`): waiting for
    /// a moment with none under way at all could last as long as other threads keep
    /// making such calls. The caller wakes the waiting calls (`idle`) once it lets go.
    fn quiet(&self) -> MutexGuard<'_, Book> {
        let mut book = self.book.lock();
        book.snapshots += 1;
        while !book.busy.is_empty() || !book.pending.is_empty() {
            self.wait_idle(&mut book);
        }
        book.snapshots -= 1;
        book
    }

    /// Put `snapshot`'s state back into this space, in place: its reservations, page
    /// states, protections, armed guard pages and locks, the page contents, write-watch
    /// marks and reset losses, the totals and the commit limit replace this space's own,
    /// as if this space were `snapshot.snapshot()`. `snapshot` is left as it was (usually
    /// a [`snapshot`](Self::snapshot) of this space, taken once; any space over the same
    /// backend configuration will do, this one included). This is the fuzzer's loop: set
    /// a space up, take a snapshot, and before each input restore the space from it.
    ///
    /// Where replacing the space (`*space = snapshot.snapshot()`) cannot be done because
    /// other threads or handles hold this one (a C caller's process handle), a restore
    /// keeps the same object. It waits for the calls under way on this space and on
    /// `snapshot` as [`snapshot`](Self::snapshot) does, holds the other calls on both
    /// meanwhile, and is one moment for both: every call and checked access on either
    /// lands wholly before it (and, on this space, is undone) or after it. Over
    /// the simulated backend the pages are shared, copy-on-write, with `snapshot` rather
    /// than copied, so a restore costs about what a snapshot does (time in proportion to
    /// the runs and the pages stored) plus freeing this space's pages written since.
    ///
    /// Fails with [`Error::InvalidParameter`] if `snapshot`'s address range or large-page
    /// size differ from this space's, and with [`Error::NotSupported`] if its backend
    /// refuses (the simulated backend does when the two configurations differ, say in
    /// their reset policy); then nothing changes.
    ///
    /// A [host memory manager](crate::host::HostMemoryManager) made over this space keeps
    /// its own account of the reservations it made here, which a restore does not change:
    /// once a restore has taken one away (or changed its commits), the manager finds the
    /// space changed behind its back at its next call on it and disables itself. Restore
    /// only spaces that no manager allocates in.
    ///
    /// ```
    /// use virtmem::{AllocationType, FreeType, Protection, SimSpace};
    ///
    /// let space = SimSpace::simulated();
    /// let base = space.alloc(0, 4096, AllocationType::COMMIT | AllocationType::RESERVE, Protection::READWRITE)?;
    /// space.write(base, b"start")?;
    /// let start = space.snapshot();
    /// for input in [b"one!!", b"two!!"] {
    ///     space.restore_from(&start)?;
    ///     space.write(base, input)?;
    ///     space.free(base, 0, FreeType::RELEASE)?;
    /// }
    /// space.restore_from(&start)?;
    /// let mut buf = [0u8; 5];
    /// space.read(base, &mut buf)?;
    /// assert_eq!(&buf, b"start");
    /// # Ok::<(), virtmem::Error>(())
    /// ```
    pub fn restore_from(&self, snapshot: &Self) -> Result<()> {
        if snapshot.limits != self.limits {
            return Err(Error::InvalidParameter);
        }
        if std::ptr::eq(self, snapshot) {
            // A space restored from itself holds what it held: nothing to do. (A copy
            // swapped in after letting go of the lock would undo the calls that other
            // threads completed in between.)
            return Ok(());
        }
        // Both spaces are held at once, so that the copy of `snapshot` and the swap into
        // this space are one moment for the calls and accesses on either (a copy taken
        // under `snapshot`'s lock alone and swapped in later would bring back `snapshot`
        // as it was before calls that this space's restored state undoes). The two locks
        // are taken in one order for every pair of spaces (by address), so that two
        // spaces restored from each other at once wait for each other without deadlock.
        let (mut book, from) = if (self as *const Self as usize) < (snapshot as *const Self as usize) {
            let book = self.quiet();
            (book, snapshot.quiet())
        } else {
            let from = snapshot.quiet();
            (self.quiet(), from)
        };
        let fresh = snapshot.backend.snapshot();
        let restored = self.backend.restore(fresh).map_err(backend_error);
        let old = restored.map(|old_backend| {
            let mut copied = Book::clone(&from);
            copied.snapshots = book.snapshots;
            self.refused_undos.store(snapshot.refused_undos.load(Ordering::Relaxed), Ordering::Relaxed);
            (old_backend, std::mem::replace(&mut *book, copied))
        });
        drop(from);
        drop(book);
        snapshot.idle.notify_all();
        self.idle.notify_all();
        // The old pages and bookkeeping are freed outside the locks.
        old.map(drop)
    }
}

fn backend_error(e: BackendError) -> Error {
    match e {
        BackendError::Occupied { .. } => Error::InvalidAddress,
        BackendError::OutOfMemory | BackendError::Injected => Error::NotEnoughMemory,
        BackendError::LargePagesUnavailable => Error::NoSystemResources,
        BackendError::Unsupported(_) => Error::NotSupported,
        BackendError::LockRefused => Error::WorkingSetQuota,
        BackendError::Fault(_) => Error::NoAccess,
        BackendError::Os(errno) => match errno {
            22 => Error::InvalidParameter,
            1 | 13 => Error::AccessDenied,
            _ => Error::NotEnoughMemory,
        },
    }
}

impl<B: Backend> AddressSpace<B> {
    /// An empty address space over `backend`.
    pub fn with_backend(backend: B) -> Self {
        let limits = rules::normalized(backend.limits());
        let min = limits.min_address;
        let mut book = Book::new(min..limits.end_address);
        for r in backend.initial_blocked() {
            book.free.take(&rules::granules(r));
        }
        for r in backend.initial_avoided() {
            let r = rules::granules(r);
            book.avoid(r.clone());
            book.room.push(r);
        }
        AddressSpace {
            backend,
            limits,
            book: Mutex::new(book),
            idle: Condvar::new(),
            refused_undos: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// What `GetSystemInfo` reports for this space.
    pub fn system_info(&self) -> SystemInfo {
        SystemInfo {
            page_size: PAGE,
            allocation_granularity: GRANULE,
            minimum_application_address: self.limits.min_address.max(MIN_ADDRESS),
            maximum_application_address: self.limits.end_address - 1,
            large_page_size: self.limits.large_page_size,
        }
    }

    /// Set (or with `None` remove) the commit limit: a commit that would take the
    /// committed total past it fails with `ERROR_COMMITMENT_LIMIT` and commits nothing.
    pub fn set_commit_limit(&self, limit: Option<usize>) {
        self.book.lock().commit_limit = limit;
    }

    /// The commit limit, if any.
    pub fn commit_limit(&self) -> Option<usize> {
        self.book.lock().commit_limit
    }

    /// Bytes committed.
    pub fn committed_bytes(&self) -> usize {
        self.book.lock().committed
    }

    /// Bytes reserved (committed included).
    pub fn reserved_bytes(&self) -> usize {
        self.book.lock().reserved
    }

    /// Totals and fragmentation figures.
    pub fn stats(&self) -> SpaceStats {
        let book = self.book.lock();
        SpaceStats {
            reserved: book.reserved,
            committed: book.committed,
            reservations: book.reservations.len(),
            runs: book.reservations.values().map(|r| r.pages.len()).sum(),
            largest_free: book.free.largest(),
            free_gaps: book.free.count(),
            refused_undos: self.refused_undos.load(Ordering::Relaxed),
            waiting_calls: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// Wait on `idle` for a call under way to end (the book's lock let go meanwhile),
    /// counted in [`SpaceStats::waiting_calls`] while it waits.
    fn wait_idle(&self, book: &mut MutexGuard<'_, Book>) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.idle.wait(book);
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// Lock the book and wait until the reservation containing `addr` is not busy (and
    /// no snapshot waits for the calls under way).
    /// Returns the guard and where the reservation is (its base, and a handle that
    /// reaches its record again without a search while the index is unchanged), or
    /// `None` if no reservation contains `addr`. (Inlined: the lookup is most of a
    /// call's instructions, and `commit` left it out of line once the directory's
    /// bisection took more code, ~55 instructions more a call, callgrind.)
    #[inline(always)]
    fn settle(&self, addr: usize) -> (MutexGuard<'_, Book>, Option<Slot>) {
        self.settle_warm(addr, |_| {})
    }

    /// [`AddressSpace::settle`], running `warm` on the locked book while the lookup
    /// waits for the reservation's leaf (after its lines were requested, before any is
    /// read): `warm` starts loading what the call will need later, and whatever it must
    /// read to know where that is arrives while the leaf does. (Run before the lookup,
    /// `warm`'s own reads of the free space (then a directory and a chunk, now a
    /// descent of its B+-tree) came first and the leaf's request only after them: a
    /// release at 333 334 reservations took ~0.8–0.9 times as long with the order
    /// changed, thirteenth session.)
    fn settle_warm(&self, addr: usize, warm: impl Fn(&Book)) -> (MutexGuard<'_, Book>, Option<Slot>) {
        self.settle_inline(addr, warm)
    }

    /// [`AddressSpace::settle_warm`], inlined into its caller (`VirtualProtect`'s, whose
    /// whole user-space part is a few hundred instructions: the call's frame and its
    /// answer passed through memory were ~30 of them).
    #[inline(always)]
    fn settle_inline(&self, addr: usize, warm: impl Fn(&Book)) -> (MutexGuard<'_, Book>, Option<Slot>) {
        let mut book = self.book.lock();
        loop {
            if book.snapshots != 0 {
                // A snapshot waits for the calls under way: start none (see
                // `AddressSpace::snapshot`).
                self.wait_idle(&mut book);
                continue;
            }
            match book.reservations.locate_during(addr, || warm(&book)) {
                // (The length first: usually no call is under way, and the scan's
                // unrolled loop took ~12 instructions to find that, callgrind.)
                Ok(at) if !book.busy.is_empty() && book.busy.contains(&at.base()) => self.wait_idle(&mut book),
                Ok(at) => return (book, Some(at)),
                Err(_) => return (book, None),
            }
        }
    }

    /// Mark the reservation at `base` busy, run `f` without the lock, then take the lock
    /// back and clear the mark. Other calls on that reservation wait; all others go on.
    #[inline(always)]
    fn outside<T>(
        &self,
        mut book: MutexGuard<'_, Book>,
        base: usize,
        f: impl FnOnce() -> T,
    ) -> (MutexGuard<'_, Book>, T) {
        debug_assert!(book.reservations.get(&base).is_some() && !book.busy.contains(&base));
        book.busy.push(base);
        drop(book);
        let out = f();
        let mut book = self.book.lock();
        if let Some(i) = book.busy.iter().position(|&b| b == base) {
            book.busy.swap_remove(i);
        }
        (book, out)
    }

    /// The backend call of a commit, decommit or protect of a range inside one page run
    /// of the reservation `at` (just found under the lock `book`) on a backend whose
    /// effects wait: what [`AddressSpace::finish`] does for a plan of one step, without
    /// the plan or its undo log. `effect` runs outside the lock with the reservation
    /// marked busy ([`AddressSpace::outside`]); `charge` is the commit charge the call
    /// takes should it succeed, counted in the book's total meanwhile (so that no other
    /// call commits past the commit limit in the meantime) and then given back. Returns
    /// the book, locked again, and `effect`'s outcome: on success the caller records the
    /// change (its run found again without a search, by the handle `find` gave), on
    /// failure (the backend having put back its own partial work) nothing; then it lets
    /// the book go with [`AddressSpace::done`]. (The record is the caller's own code,
    /// not a closure passed here: the compiler left such a closure out of line in
    /// `VirtualProtect`, ~35 instructions more a call on Linux, callgrind.)
    #[inline(always)]
    fn in_run_outside<'a>(
        &'a self,
        mut book: MutexGuard<'a, Book>,
        at: Slot,
        charge: usize,
        effect: impl FnOnce() -> std::result::Result<(), BackendError>,
    ) -> (MutexGuard<'a, Book>, Result<()>) {
        book.committed += charge;
        let (mut book, result) = self.outside(book, at.base(), effect);
        book.committed -= charge;
        (book, result.map_err(backend_error))
    }

    /// Let the book go after a call made outside the lock, and wake the calls that
    /// waited for its reservation.
    #[inline(always)]
    fn done(&self, book: MutexGuard<'_, Book>) {
        drop(book);
        self.idle.notify_all();
    }

    /// [`AddressSpace::outside`] for a call that has nothing left to record: run `f`
    /// with the reservation at `base` marked busy, then clear the mark, let the lock go
    /// and wake the calls that waited for the reservation.
    fn outside_then_done<T>(&self, book: MutexGuard<'_, Book>, base: usize, f: impl FnOnce() -> T) -> T {
        let (book, out) = self.outside(book, base, f);
        self.done(book);
        out
    }

    /// The reservation holding all of `range`, settled (see [`AddressSpace::settle`]);
    /// `ERROR_INVALID_ADDRESS` when no reservation holds its start or the range runs past
    /// the end of the one that does. (Not for `commit`: its own copy reads the record once
    /// for these checks and the ones after, ~56 fewer instructions a call.)
    fn settle_within(&self, range: &Range<usize>) -> Result<(MutexGuard<'_, Book>, Slot)> {
        let (book, at) = self.settle(range.start);
        let at = at.ok_or(Error::InvalidAddress)?;
        if range.end > book.reservations.at(at).expect("reservation").end {
            return Err(Error::InvalidAddress);
        }
        Ok((book, at))
    }

    /// In a `MEM_LARGE_PAGES` allocation, commit, decommit, protect, reset and its undo
    /// act on whole large pages: a range that would split one is `ERROR_INVALID_PARAMETER`
    /// (a large page has one protection and is present or not as a whole; the same
    /// answer on every backend, where the kernel refuses to split a huge page).
    fn whole_large_pages(&self, res: &Reservation, range: &Range<usize>) -> Result<()> {
        let lp = self.limits.large_page_size;
        if res.opts.large_pages && lp != 0 && (range.start % lp != 0 || range.end % lp != 0) {
            return Err(Error::InvalidParameter);
        }
        Ok(())
    }

    /// The pages whose guard an access to `page` of `res` clears: that page, or in a
    /// `MEM_LARGE_PAGES` allocation its whole large page (which has one protection, as
    /// [`AddressSpace::whole_large_pages`] has every change act on).
    fn guard_unit(&self, res: &Reservation, page: usize) -> Range<usize> {
        let lp = self.limits.large_page_size;
        if res.opts.large_pages && lp != 0 {
            let start = rules::round_down(page, lp).max(res.base);
            start..(start + lp).min(res.end)
        } else {
            page..page + PAGE
        }
    }

    /// Disarm the armed guard page `page` (protection `armed`) of the reservation at `at`,
    /// as the first access to it does: its guard unit (see [`AddressSpace::guard_unit`])
    /// loses the guard. Should the backend refuse to open the pages, the guard stays armed
    /// (the next access reports it again) and nothing changes.
    fn disarm_guard(&self, book: &mut Book, at: Slot, page: usize, armed: Protection) {
        let disarmed = armed - Protection::GUARD;
        let to = rules::access_of(disarmed);
        let res = book.reservations.at_mut(at).expect("reservation");
        let unit = self.guard_unit(res, page);
        if to == Access::None || self.backend.set_access(unit.clone(), Access::None, to).is_ok() {
            res.pages.set(unit, PageState::Committed(disarmed));
        }
    }
}
