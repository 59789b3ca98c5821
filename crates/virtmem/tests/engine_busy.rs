//! The engine holds a reservation busy while the backend resets it, undoes a reset or
//! clears its write watch, so a concurrent release waits instead of freeing (and
//! letting another call reuse) the range under the backend's feet; and a reserve at a
//! given address waits for a reserve of the same range still being made.

#[macro_use]
mod forward;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtmem::backend::{Backend, BackendError, ReserveOptions};
use virtmem::{AddressSpace, AllocationType, FreeType, Protection, SimBackend, WriteWatchFlags};

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
}

impl Backend for Gate {
    forward!(inner: limits, set_access, discard, lock, unlock, read, write, dirty_pages);
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
