//! The steps a call plans and their execution: [`Step`], [`AddressSpace::finish`] (run
//! the steps outside the lock, then record the change or what a failure left), and the
//! undo of a failed run.

use std::ops::Range;
use std::sync::atomic::Ordering;

use parking_lot::MutexGuard;
use smallvec::SmallVec;

use crate::backend::{Access, Backend, BackendError, ReserveOptions};
use crate::error::{Error, Result};
use crate::runs::{Book, Slot};

use super::{backend_error, AddressSpace};

/// The steps of one call: most calls plan one or two, kept inline.
pub(super) type Steps = SmallVec<[Step; 4]>;

/// Runs with their access, for a release or decommit step: usually one or two, inline.
pub(super) type AccessRuns = SmallVec<[(Range<usize>, Access); 2]>;

/// A backend side effect, as planned by the engine.
#[derive(Debug, Clone)]
pub(super) enum Step {
    Reserve(Range<usize>, ReserveOptions),
    /// Give up a reservation whose committed runs have the given (accessible) access;
    /// always last.
    Release(Range<usize>, ReserveOptions, AccessRuns),
    Access(Range<usize>, Access, Access),
    Lock(Range<usize>),
    Unlock(Range<usize>),
    /// Drop committed runs (each with its current access); irrevocable, so always last.
    Decommit(AccessRuns),
}

/// A failed run of steps: the error, and the completed steps whose undo the backend
/// refused.
pub(super) struct Failed {
    pub(super) error: BackendError,
    kept: SmallVec<[Step; 1]>,
}

impl<B: Backend> AddressSpace<B> {
    /// Run planned `steps` on the reservation at `base` outside the lock; on success
    /// `apply` the bookkeeping change under the lock, on failure (steps already undone)
    /// run `undo_charge`. A completed step whose undo the backend refused stays done, and
    /// the book says so: `keep` records the call's new state for the range of such an
    /// access change (a lock or unlock is recorded here), so that the space's answers go
    /// on matching the memory.
    pub(super) fn finish<T>(
        &self,
        book: MutexGuard<'_, Book>,
        at: Slot,
        steps: &[Step],
        apply: impl FnOnce(&mut Book) -> T,
        undo_charge: impl FnOnce(&mut Book),
        keep: impl FnMut(&mut Book, Range<usize>),
    ) -> Result<T> {
        // Nothing to wait for (no steps, or cheap ones): carry them out under the lock.
        let held = steps.is_empty() || self.backend.inline_effects();
        let (mut book, result) =
            if held { (book, self.run(steps)) } else { self.outside(book, at.base(), || self.run(steps)) };
        // (One call of `apply`, which the compiler can then inline.)
        let out = match result {
            Ok(()) => Ok(apply(&mut book)),
            Err(failed) => {
                undo_charge(&mut book);
                Err(self.keep(&mut book, at, *failed, keep))
            }
        };
        if !held {
            drop(book);
            self.idle.notify_all();
        }
        out
    }

    /// Record in the book the kept steps of a failed call on the reservation `at` (see
    /// [`AddressSpace::finish`]); the call's error.
    #[cold]
    fn keep(
        &self,
        book: &mut Book,
        at: Slot,
        Failed { error, kept }: Failed,
        mut access: impl FnMut(&mut Book, Range<usize>),
    ) -> Error {
        for step in &kept {
            match step {
                Step::Access(r, _, _) => access(book, r.clone()),
                Step::Lock(r) | Step::Unlock(r) => {
                    if let Some(res) = book.reservations.at_mut(at) {
                        res.set_locked(r.clone(), matches!(step, Step::Lock(_)));
                    }
                }
                // Only the first step of a reserve (not through here); never undone.
                Step::Reserve(..) | Step::Release(..) | Step::Decommit(..) => {}
            }
        }
        backend_error(error)
    }

    // ----- Steps ----------------------------------------------------------------------

    /// Carry out one step on the backend. (Inlined, as [`AddressSpace::run`] is, into
    /// each operation: the usual call has one step, and the calls and their saved
    /// registers had cost more than the step's own work on the simulated backend.)
    #[inline(always)]
    fn apply(&self, step: &Step) -> std::result::Result<(), BackendError> {
        match step {
            Step::Reserve(r, o) => self.backend.reserve(r.clone(), *o),
            Step::Release(r, o, accessible) => self.backend.release_committed(r.clone(), *o, accessible),
            Step::Access(r, from, to) => self.backend.set_access(r.clone(), *from, *to),
            Step::Lock(r) => self.backend.lock(r.clone()),
            Step::Unlock(r) => self.backend.unlock(r.clone()),
            Step::Decommit(runs) => self.decommit_step(runs),
        }
    }

    /// A planned decommit step on the backend, out of line: a backend may have its
    /// `decommit` inlined (the simulated one, for `decommit`'s usual case), and inlined
    /// into every plan's `apply` it had cost a reserve ~17 instructions, in code and
    /// registers around steps a reserve never makes.
    #[inline(never)]
    fn decommit_step(&self, runs: &[(Range<usize>, Access)]) -> std::result::Result<(), BackendError> {
        self.backend.decommit(runs)
    }

    /// Undo a completed step; whether the backend did.
    fn undo(&self, step: &Step) -> bool {
        let undone = match step {
            Step::Reserve(r, o) => self.backend.release(r.clone(), *o),
            Step::Release(..) => unreachable!("a release is always the last step"),
            Step::Decommit(..) => unreachable!("a decommit is always the last step"),
            Step::Access(r, from, to) => self.backend.set_access(r.clone(), *to, *from),
            Step::Lock(r) => self.backend.unlock(r.clone()),
            Step::Unlock(r) => self.backend.lock(r.clone()),
        };
        // Nothing more can be done: the step stays done. Counted, so that a caller can
        // tell (`SpaceStats::refused_undos`).
        if undone.is_err() {
            self.refused_undos.fetch_add(1, Ordering::Relaxed);
        }
        undone.is_ok()
    }

    /// Run `steps` in order; on failure undo the completed ones in reverse, and report
    /// the error with the completed steps whose undo the backend refused (they stay done).
    #[inline(always)]
    pub(super) fn run(&self, steps: &[Step]) -> std::result::Result<(), Box<Failed>> {
        for (i, step) in steps.iter().enumerate() {
            if let Err(error) = self.apply(step) {
                return Err(self.undo_steps(&steps[..i], error));
            }
        }
        Ok(())
    }

    /// Undo the completed steps `done` of a run that failed with `error`, in reverse
    /// (out of line: the usual run inlined into its caller has no failure to handle).
    #[cold]
    #[inline(never)]
    fn undo_steps(&self, done: &[Step], error: BackendError) -> Box<Failed> {
        let mut kept = SmallVec::new();
        for step in done.iter().rev() {
            if !self.undo(step) {
                kept.push(step.clone());
            }
        }
        Box::new(Failed { error, kept })
    }
}
