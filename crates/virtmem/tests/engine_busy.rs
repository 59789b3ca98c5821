//! The engine holds a reservation busy while the backend resets it, undoes a reset,
//! clears its write watch, or (on a backend whose effects wait) commits or decommits
//! pages of it, so a concurrent release waits instead of freeing (and letting another
//! call reuse) the range under the backend's feet; and a reserve at a given address
//! waits for a reserve of the same range still being made.

#[macro_use]
mod forward;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtmem::backend::{Access, Backend, BackendError, ReserveOptions};
use virtmem::{AddressSpace, AllocationType, Error, FreeType, MemState, Protection, SimBackend, WriteWatchFlags};

#[derive(Default)]
struct Gate {
    inner: SimBackend,
    entered: AtomicBool,
    go: AtomicBool,
    log: Mutex<Vec<&'static str>>,
    /// Hold the next reserve (then clear this).
    hold_reserve: AtomicBool,
    /// Fail the reserve that was held.
    fail_held_reserve: AtomicBool,
    /// Hold the next access change or decommit (then clear this).
    hold_change: AtomicBool,
    /// Fail the access change or decommit that was held.
    fail_held_change: AtomicBool,
}

impl Gate {
    fn hold(&self, what: &'static str) {
        self.log.lock().unwrap().push(what);
        self.entered.store(true, Ordering::SeqCst);
        while !self.go.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.log.lock().unwrap().push("end");
    }

    /// Hold an access change or decommit if asked to (`hold_change`), and fail it then if
    /// asked to (`fail_held_change`).
    fn held_change(&self, what: &'static str) -> Result<(), BackendError> {
        if self.hold_change.swap(false, Ordering::SeqCst) {
            self.hold(what);
            if self.fail_held_change.load(Ordering::SeqCst) {
                return Err(BackendError::OutOfMemory);
            }
        }
        Ok(())
    }
}

impl Backend for Gate {
    forward!(inner: limits, discard, lock, unlock, read, write, dirty_pages);
    fn reserve(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        if self.hold_reserve.swap(false, Ordering::SeqCst) {
            self.hold("reserve");
            if self.fail_held_reserve.load(Ordering::SeqCst) {
                return Err(BackendError::OutOfMemory);
            }
        }
        self.inner.reserve(range, opts)
    }
    fn release(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        self.log.lock().unwrap().push("release");
        self.inner.release(range, opts)
    }
    fn set_access(&self, range: Range<usize>, from: Access, to: Access) -> Result<(), BackendError> {
        self.held_change("access")?;
        self.inner.set_access(range, from, to)
    }
    fn decommit(&self, runs: &[(Range<usize>, Access)]) -> Result<(), BackendError> {
        self.held_change("decommit")?;
        self.inner.decommit(runs)
    }
    fn reset(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.hold("reset");
        self.inner.reset(range)
    }
    fn reset_undo(&self, range: Range<usize>) -> Result<bool, BackendError> {
        self.hold("undo");
        self.inner.reset_undo(range)
    }
    fn clear_dirty(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.hold("clear");
        self.inner.clear_dirty(range)
    }
}

fn release_waits_for(what: &'static str, call: fn(&AddressSpace<Gate>, usize)) {
    let space = Arc::new(AddressSpace::with_backend(Gate::default()));
    let ty = AllocationType::RESERVE | AllocationType::COMMIT | AllocationType::WRITE_WATCH;
    let base = space.alloc(0, 0x10000, ty, Protection::READWRITE).unwrap();
    let s = space.clone();
    let first = std::thread::spawn(move || call(&s, base));
    while !space.backend().entered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = space.clone();
    let second = std::thread::spawn(move || s.free(base, 0, FreeType::RELEASE).unwrap());
    // The release waits for the call under way on its reservation.
    forward::until_waiting(&space, 1);
    assert!(!second.is_finished());
    space.backend().go.store(true, Ordering::SeqCst);
    first.join().unwrap();
    second.join().unwrap();
    assert_eq!(*space.backend().log.lock().unwrap(), [what, "end", "release"]);
    assert_eq!(space.stats().waiting_calls, 0, "the wait ended");
}

#[test]
fn release_waits_for_reset() {
    release_waits_for("reset", |s, b| {
        s.alloc(b, 0x1000, AllocationType::RESET, Protection::READWRITE).unwrap();
    });
}

#[test]
fn release_waits_for_reset_undo() {
    release_waits_for("undo", |s, b| {
        s.alloc(b, 0x1000, AllocationType::RESET_UNDO, Protection::READWRITE).unwrap();
    });
}

#[test]
fn release_waits_for_reset_write_watch() {
    release_waits_for("clear", |s, b| s.reset_write_watch(b, 0x1000).unwrap());
}

/// A commit (`decommit` false) of reserved pages or a decommit of committed ones, inside
/// one run, on a backend whose effects wait: its one backend call is made outside the
/// space's lock, the reservation busy. Held there, a query answers at once with the pages
/// as they were, the committed total already holds a commit's charge (so that no other
/// call commits past the commit limit meanwhile), and a release of the reservation waits
/// for the call to end. Failed there (`fail`), it changes nothing: pages and totals are as
/// before, and a release still works afterwards.
fn change_while_held(decommit: bool, fail: bool) {
    let space = Arc::new(AddressSpace::with_backend(Gate::default()));
    let base = space.alloc(0, 0x10000, AllocationType::RESERVE, Protection::READWRITE).unwrap();
    space.alloc(base, 0x4000, AllocationType::COMMIT, Protection::READWRITE).unwrap();
    let gate = space.backend();
    gate.fail_held_change.store(fail, Ordering::SeqCst);
    gate.hold_change.store(true, Ordering::SeqCst);
    // The page the call changes, and its state before.
    let (page, was) = if decommit { (base, MemState::Commit) } else { (base + 0x4000, MemState::Reserve) };
    let s = space.clone();
    let first = std::thread::spawn(move || {
        if decommit {
            s.free(base, 0x4000, FreeType::DECOMMIT)
        } else {
            s.alloc(base + 0x4000, 0x4000, AllocationType::COMMIT, Protection::READWRITE).map(drop)
        }
    });
    while !gate.entered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The lock is free while the backend works: a query answers, with the old state.
    let m = space.try_query(page).expect("the space's lock is free during the backend call").unwrap();
    assert_eq!((m.state, m.region_size), (was, if decommit { 0x4000 } else { 0xC000 }));
    let charged = if decommit { 0x4000 } else { 0x8000 };
    assert_eq!(space.committed_bytes(), charged, "the committed total while the call is under way");
    let second = (!fail).then(|| {
        let s = space.clone();
        let second = std::thread::spawn(move || s.free(base, 0, FreeType::RELEASE).unwrap());
        // The release waits for the call under way on its reservation.
        forward::until_waiting(&space, 1);
        assert!(!second.is_finished());
        second
    });
    gate.go.store(true, Ordering::SeqCst);
    let what = if decommit { "decommit" } else { "access" };
    if let Some(second) = second {
        assert_eq!(first.join().unwrap(), Ok(()));
        second.join().unwrap();
        assert_eq!(*gate.log.lock().unwrap(), [what, "end", "release"]);
        assert_eq!(space.query(base).unwrap().state, MemState::Free);
        assert_eq!((space.committed_bytes(), space.reserved_bytes()), (0, 0));
    } else {
        assert_eq!(first.join().unwrap(), Err(Error::NotEnoughMemory));
        assert_eq!(*gate.log.lock().unwrap(), [what, "end"]);
        let m = space.query(page).unwrap();
        assert_eq!((m.state, m.region_size), (was, if decommit { 0x4000 } else { 0xC000 }));
        assert_eq!(space.query(base).unwrap().state, MemState::Commit);
        assert_eq!(space.committed_bytes(), 0x4000, "a failed call leaves the committed total");
        space.free(base, 0, FreeType::RELEASE).unwrap();
        assert_eq!((space.committed_bytes(), space.reserved_bytes()), (0, 0));
    }
    assert_eq!(space.stats().waiting_calls, 0, "the wait ended");
}

#[test]
fn release_waits_for_commit() {
    change_while_held(false, false);
}

#[test]
fn release_waits_for_decommit() {
    change_while_held(true, false);
}

#[test]
fn failed_commit_outside_the_lock_changes_nothing() {
    change_while_held(false, true);
}

#[test]
fn failed_decommit_outside_the_lock_changes_nothing() {
    change_while_held(true, true);
}

#[test]
fn get_write_watch_still_works() {
    let space = AddressSpace::with_backend(Gate::default());
    space.backend().go.store(true, Ordering::SeqCst);
    let ty = AllocationType::RESERVE | AllocationType::COMMIT | AllocationType::WRITE_WATCH;
    let base = space.alloc(0, 0x10000, ty, Protection::READWRITE).unwrap();
    space.write(base + 0x2000, b"x").unwrap();
    assert_eq!(space.get_write_watch(WriteWatchFlags::empty(), base, 0x10000, 8).unwrap(), [base + 0x2000]);
}

/// A reserve at `at` while another reserve of an overlapping range is held in the
/// backend (claimed, not yet made): it must wait for that one's outcome rather than
/// answer from the half-made state. Returns the two results.
fn reserve_during_reserve(fail_first: bool) -> (virtmem::Result<usize>, virtmem::Result<usize>) {
    let space = Arc::new(AddressSpace::with_backend(Gate::default()));
    // Find a free address, then leave it free again.
    let at = space.alloc(0, 0x20000, AllocationType::RESERVE, Protection::READWRITE).unwrap();
    space.free(at, 0, FreeType::RELEASE).unwrap();
    space.backend().hold_reserve.store(true, Ordering::SeqCst);
    space.backend().fail_held_reserve.store(fail_first, Ordering::SeqCst);
    let s = space.clone();
    let first = std::thread::spawn(move || s.alloc(at, 0x20000, AllocationType::RESERVE, Protection::READWRITE));
    while !space.backend().entered.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Overlaps the second half of the first claim.
    let s = space.clone();
    let second =
        std::thread::spawn(move || s.alloc(at + 0x10000, 0x10000, AllocationType::RESERVE, Protection::READWRITE));
    // It waits for the first one's outcome.
    forward::until_waiting(&space, 1);
    assert!(!second.is_finished());
    space.backend().go.store(true, Ordering::SeqCst);
    (first.join().unwrap(), second.join().unwrap())
}

#[test]
fn fixed_reserve_waits_for_a_claim_that_succeeds() {
    let (first, second) = reserve_during_reserve(false);
    assert!(first.is_ok(), "{first:?}");
    assert_eq!(second, Err(virtmem::Error::InvalidAddress));
}

#[test]
fn fixed_reserve_waits_for_a_claim_that_fails() {
    // Had the second reserve not waited, it would have seen the claimed range as taken
    // and failed with ERROR_INVALID_ADDRESS; the first failing leaves the range free.
    let (first, second) = reserve_during_reserve(true);
    assert!(first.is_err(), "{first:?}");
    assert!(second.is_ok(), "{second:?}");
}
