//! A call keeps where it found its reservation (a slot: base, leaf, index) across the
//! system calls it makes without the space's lock. These tests hold one call on one
//! reservation inside the backend while the main thread releases the reservations
//! before it, reserves in every hole around it, releases some of those and re-reserves
//! at the bases it released first (so leaves of the reservation index empty, are reused,
//! split and merge, and the place the call found its reservation at holds other bases),
//! then let the call finish. Its change must land on its own reservation and on no
//! other: every region and total must be what the same calls give, one after another,
//! on a space where nothing was held (on Linux, what the kernel lets the process read
//! too). On the simulated backend and on the Linux one (each wrapped so that its calls
//! run without the space's lock, and can be held).

#[macro_use]
mod common;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use virtmem::backend::{Access, Backend, BackendError, ReserveOptions};
use virtmem::{
    AddressSpace, AllocationType as T, Error, FreeType, MemState, Protection as P, SimBackend, VirtualSpace,
};

const PAGE: usize = 0x1000;
const G: usize = 0x10000;
/// Granules of the layout: reservations at the even ones to start with.
const N: usize = 320;
/// The granule of the reservation whose call is held (an even one, mid-layout).
const X: usize = 160;

/// What the backend does with the next call on the target reservation.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// Wait for `go`, then carry it out.
    Hold,
    /// Fail it (nothing done).
    Fail,
}

/// A backend holding or failing calls on one range as scripted. It has no inline
/// effects, so the engine runs every step without its lock.
struct Held<B> {
    inner: B,
    target: Mutex<Range<usize>>,
    script: Mutex<VecDeque<Act>>,
    entered: AtomicBool,
    go: AtomicBool,
}

impl<B: Backend> Held<B> {
    fn new(inner: B) -> Self {
        Held {
            inner,
            target: Mutex::new(0..0),
            script: Mutex::default(),
            entered: AtomicBool::new(false),
            go: AtomicBool::new(false),
        }
    }

    fn gate(&self, range: &Range<usize>) -> Result<(), BackendError> {
        if !self.target.lock().unwrap().contains(&range.start) {
            return Ok(());
        }
        let act = self.script.lock().unwrap().pop_front();
        match act {
            None => Ok(()),
            Some(Act::Hold) => {
                self.entered.store(true, Ordering::SeqCst);
                while !self.go.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            }
            Some(Act::Fail) => Err(BackendError::OutOfMemory),
        }
    }
}

/// Lets the held call go when dropped, so that a failing assertion while it is held
/// fails the test rather than leaving it waiting forever.
struct LetGo<'a>(&'a AtomicBool);

impl Drop for LetGo<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl<B: Backend> Backend for Held<B> {
    forward!(inner: limits, initial_blocked, initial_avoided, reserve, discard, reset, reset_undo, lock, unlock);
    forward!(inner: read, write, dirty_pages, clear_dirty, foreign);
    // (Not `release_committed` nor `decommit`: the trait's defaults, through the two
    // below, so that every step on the target can be held.)
    fn set_access(&self, range: Range<usize>, from: Access, to: Access) -> Result<(), BackendError> {
        self.gate(&range)?;
        self.inner.set_access(range, from, to)
    }
    fn release(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        self.gate(&range)?;
        self.inner.release(range, opts)
    }
}

/// A space whose calls on one reservation can be held, a plain one over the same kind
/// of backend, and where each lays the test's reservations out (free there at first).
struct Case<B: Backend> {
    held: AddressSpace<Held<B>>,
    at: usize,
    plain: AddressSpace<B>,
    plain_at: usize,
    /// Whether to compare what the kernel lets the process read, page by page (read only
    /// where the Linux backend is built).
    #[cfg_attr(any(miri, not(target_os = "linux")), allow(dead_code))]
    kernel: bool,
}

fn sim_case() -> Case<SimBackend> {
    Case {
        held: AddressSpace::with_backend(Held::new(SimBackend::default())),
        at: common::SIM_WINDOW,
        plain: AddressSpace::with_backend(SimBackend::default()),
        plain_at: common::SIM_WINDOW,
        kernel: false,
    }
}

#[cfg(all(target_os = "linux", not(miri)))]
type Linux = common::linux::Confined<virtmem::LinuxBackend>;

#[cfg(all(target_os = "linux", not(miri)))]
fn linux_case() -> Case<Linux> {
    let confined = || {
        let w = common::linux::window(common::WINDOW);
        let backend = virtmem::LinuxBackend::new().expect("the Linux backend needs /proc");
        (common::linux::Confined::new(backend, w..w + common::WINDOW, false), w)
    };
    let ((a, at), (b, plain_at)) = (confined(), confined());
    Case {
        held: AddressSpace::with_backend(Held::new(a)),
        at,
        plain: AddressSpace::with_backend(b),
        plain_at,
        kernel: true,
    }
}

/// One reservation of a granule at granule `k` of the layout at `at`: page 0
/// committed read-write, page 1 read-only (when `k` is even) or reserved, the rest
/// reserved.
fn make(s: &dyn VirtualSpace, at: usize, k: usize) {
    let b = at + k * G;
    assert_eq!(s.alloc(b, G, T::RESERVE, P::READWRITE), Ok(b));
    s.alloc(b, PAGE, T::COMMIT, P::READWRITE).unwrap();
    if k % 2 == 0 {
        s.alloc(b + PAGE, PAGE, T::COMMIT, P::READONLY).unwrap();
    }
}

/// The starting layout: reservations at the even granules.
fn layout(s: &dyn VirtualSpace, at: usize) {
    for k in (0..N).step_by(2) {
        make(s, at, k);
    }
}

/// The reservation index changed all around `X` (none of it touching `X` itself).
fn shuffle(s: &dyn VirtualSpace, at: usize) {
    // Every reservation before X goes (its leaf loses its first entries, leaves before
    // it empty and become vacant).
    for k in (0..X).step_by(2) {
        s.free(at + k * G, 0, FreeType::RELEASE).unwrap();
    }
    // One in every hole, before and after X (splits; vacant leaves reused).
    for k in (1..N).step_by(2) {
        make(s, at, k);
    }
    // Some of those after X go again (thin leaves merge).
    for k in (X + 1..N).step_by(4) {
        s.free(at + k * G, 0, FreeType::RELEASE).unwrap();
    }
    // And the bases released first are reserved again, as new reservations.
    for k in (0..X).step_by(2).rev() {
        make(s, at, k);
    }
}

/// The regions of the layout at `at`, relative to it.
fn regions(s: &dyn VirtualSpace, at: usize) -> Vec<(usize, Option<usize>, usize, MemState, P)> {
    let end = at + N * G;
    let mut out = Vec::new();
    let mut a = at;
    while a < end {
        let q = s.query(a).unwrap();
        let next = (q.base_address + q.region_size).min(end);
        let base = (q.allocation_base != 0).then(|| q.allocation_base - at);
        out.push((a - at, base, next - a, q.state, q.protect));
        a = next;
    }
    out
}

/// Both spaces of `case` agree on the layout's regions and on their totals (but
/// `refused` undos); on Linux, the kernel lets the process read the same pages of both.
fn assert_same<B: Backend>(case: &Case<B>, refused: usize) {
    let (got, want) = (case.held.stats(), case.plain.stats());
    assert_eq!(
        (got.reserved, got.committed, got.reservations, got.runs, got.refused_undos),
        (want.reserved, want.committed, want.reservations, want.runs, refused)
    );
    let (got, want) = (regions(&case.held, case.at), regions(&case.plain, case.plain_at));
    for (a, b) in got.iter().zip(&want) {
        assert_eq!(a, b);
    }
    assert_eq!(got.len(), want.len());
    #[cfg(all(target_os = "linux", not(miri)))]
    if case.kernel {
        for off in (0..N * G).step_by(PAGE) {
            assert_eq!(
                common::linux::readable(case.at + off),
                common::linux::readable(case.plain_at + off),
                "page at {off:#x} of the layout"
            );
        }
    }
}

/// Run `op` on the reservation at granule `X` with the backend following `script` on
/// it (the first act holding the call while the index is shuffled), and the same on a
/// space where nothing is held, with `reference` in place of `op`; then compare.
fn held_during_shuffle<B: Backend>(
    case: Case<B>,
    script: &[Act],
    op: fn(&dyn VirtualSpace, usize),
    reference: fn(&dyn VirtualSpace, usize),
) {
    let (space, at) = (&case.held, case.at);
    let x = at + X * G;
    layout(space, at);
    *space.backend().target.lock().unwrap() = x..x + G;
    space.backend().script.lock().unwrap().extend(script.iter().copied());
    std::thread::scope(|t| {
        let call = t.spawn(|| op(space, x));
        let go = LetGo(&space.backend().go);
        while !space.backend().entered.load(Ordering::SeqCst) {
            assert!(!call.is_finished(), "the call never reached the backend");
            std::thread::sleep(Duration::from_millis(1));
        }
        shuffle(space, at);
        drop(go);
        call.join().unwrap();
    });
    assert!(space.backend().script.lock().unwrap().is_empty(), "every scripted act was used");

    layout(&case.plain, case.plain_at);
    shuffle(&case.plain, case.plain_at);
    reference(&case.plain, case.plain_at + X * G);
    // (The held space counts the undos its backend refused, the plain one none: the
    // first failure fails a step, each later one refuses an undo.)
    let refused = script.iter().filter(|a| matches!(a, Act::Fail)).count().saturating_sub(1);
    assert_same(&case, refused);
}

/// [`held_during_shuffle`] on each backend.
fn on_both(script: &[Act], op: fn(&dyn VirtualSpace, usize), reference: fn(&dyn VirtualSpace, usize)) {
    held_during_shuffle(sim_case(), script, op, reference);
    #[cfg(all(target_os = "linux", not(miri)))]
    held_during_shuffle(linux_case(), script, op, reference);
}

#[test]
fn a_held_protect_changes_its_own_reservation() {
    let op: fn(&dyn VirtualSpace, usize) = |s, x| assert_eq!(s.protect(x, PAGE, P::EXECUTE_READ), Ok(P::READWRITE));
    on_both(&[Act::Hold], op, op);
}

#[test]
fn a_held_protect_of_two_runs_changes_its_own_reservation() {
    // Two steps (read-write, then read-only pages), the first held; the new protection
    // joins the two runs into one.
    let op: fn(&dyn VirtualSpace, usize) = |s, x| assert_eq!(s.protect(x, 2 * PAGE, P::READONLY), Ok(P::READWRITE));
    on_both(&[Act::Hold], op, op);
}

#[test]
fn a_held_commit_changes_its_own_reservation() {
    let op: fn(&dyn VirtualSpace, usize) =
        |s, x| assert_eq!(s.alloc(x + 2 * PAGE, 3 * PAGE, T::COMMIT, P::READONLY), Ok(x + 2 * PAGE));
    on_both(&[Act::Hold], op, op);
}

#[test]
fn a_held_decommit_changes_its_own_reservation() {
    let op: fn(&dyn VirtualSpace, usize) = |s, x| assert_eq!(s.free(x, 2 * PAGE, FreeType::DECOMMIT), Ok(()));
    on_both(&[Act::Hold], op, op);
}

#[test]
fn a_held_release_removes_its_own_reservation() {
    on_both(
        &[Act::Hold],
        |s, x| {
            assert_eq!(s.free(x, 0, FreeType::RELEASE), Ok(()));
            assert_eq!(s.query(x).unwrap().state, MemState::Free);
        },
        |s, x| assert_eq!(s.free(x, 0, FreeType::RELEASE), Ok(())),
    );
}

#[test]
fn a_commit_whose_undo_is_refused_records_the_kept_pages_on_its_own_reservation() {
    // Commit read-write over page 1 (read-only) and pages 2-3 (reserved): two steps,
    // page 1 to read-write, then pages 2-3. The first is held, the second fails and the
    // undo of the first is refused: the call fails, and page 1 stays read-write, as the
    // backend left it, in the book of the call's own reservation (found again after the
    // shuffle) and nowhere else.
    on_both(
        &[Act::Hold, Act::Fail, Act::Fail],
        |s, x| assert_eq!(s.alloc(x + PAGE, 3 * PAGE, T::COMMIT, P::READWRITE), Err(Error::NotEnoughMemory)),
        |s, x| assert_eq!(s.protect(x + PAGE, PAGE, P::READWRITE), Ok(P::READONLY)),
    );
}

/// A protect on the reservation at granule `X` is held while another thread releases
/// that reservation and reserves the same range again: the release must wait for the
/// protect (had it not, the protect would come back to a new reservation at the same
/// base and record its change there).
fn release_and_reserve_wait<B: Backend>(case: Case<B>) {
    let (space, at) = (&case.held, case.at);
    let x = at + X * G;
    layout(space, at);
    *space.backend().target.lock().unwrap() = x..x + G;
    space.backend().script.lock().unwrap().push_back(Act::Hold);
    std::thread::scope(|t| {
        let call = t.spawn(|| assert_eq!(space.protect(x, PAGE, P::EXECUTE_READ), Ok(P::READWRITE)));
        let go = LetGo(&space.backend().go);
        while !space.backend().entered.load(Ordering::SeqCst) {
            assert!(!call.is_finished(), "the call never reached the backend");
            std::thread::sleep(Duration::from_millis(1));
        }
        let again = t.spawn(|| {
            assert_eq!(space.free(x, 0, FreeType::RELEASE), Ok(()));
            make(space, at, X);
        });
        shuffle(space, at);
        // The release waits for the call under way (and nothing else waits).
        common::forward::until_waiting(space, 1);
        assert_eq!(space.stats().waiting_calls, 1);
        assert!(!again.is_finished(), "the reservation was released while a call on it was under way");
        drop(go);
        call.join().unwrap();
        again.join().unwrap();
    });
    let (plain, x) = (&case.plain, case.plain_at + X * G);
    layout(plain, case.plain_at);
    shuffle(plain, case.plain_at);
    assert_eq!(plain.protect(x, PAGE, P::EXECUTE_READ), Ok(P::READWRITE));
    plain.free(x, 0, FreeType::RELEASE).unwrap();
    make(plain, case.plain_at, X);
    assert_same(&case, 0);
    assert_eq!(space.query(at + X * G).unwrap().protect, P::READWRITE);
}

#[test]
fn a_release_and_reserve_at_the_same_base_wait_for_the_held_call() {
    release_and_reserve_wait(sim_case());
    #[cfg(all(target_os = "linux", not(miri)))]
    release_and_reserve_wait(linux_case());
}
