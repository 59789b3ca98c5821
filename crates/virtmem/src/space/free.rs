//! `VirtualFree`: release a reservation, decommit pages.

use std::ops::Range;

use parking_lot::MutexGuard;

use crate::backend::{Access, Backend};
use crate::error::{Error, Result};
use crate::flags::FreeType;
use crate::rules::{self, FreeRequest};
use crate::runs::{Book, PageState, Reservation, Slot};

use super::plan::{AccessRuns, Step, Steps};
use super::{backend_error, AddressSpace};

impl<B: Backend> AddressSpace<B> {
    // ----- VirtualFree ----------------------------------------------------------------

    /// `VirtualFree`: decommit pages or release a whole reservation.
    pub fn free(&self, address: usize, size: usize, ty: FreeType) -> Result<()> {
        match rules::free_request(address, size, ty, self.limits.end_address)? {
            FreeRequest::Release { base } => self.release(base),
            FreeRequest::DecommitAll { base } => {
                let (book, found) = self.settle(base);
                match found {
                    Some(at) if at.base() == base => {
                        let end = book.reservations.at(at).expect("reservation").end;
                        self.decommit(book, at, base..end)
                    }
                    _ => Err(Error::InvalidAddress),
                }
            }
            FreeRequest::Decommit { range } => {
                // (Inlined: the call and its answer passed through memory were ~35
                // instructions of a decommit's ~620, callgrind.)
                let (book, found) = self.settle_inline(range.start, |_| {});
                let at = found.ok_or(Error::InvalidAddress)?;
                // (`decommit` checks that the range ends inside the reservation.)
                self.decommit(book, at, range)
            }
        }
    }

    fn release(&self, base: usize) -> Result<()> {
        let (book, found) = self.settle_warm(base, |book| book.free.warm(base));
        let Some(at) = found.filter(|at| at.base() == base) else {
            return Err(Error::InvalidAddress);
        };
        // (Just found under this lock: read without a check.)
        let res = book.reservations.found(at);
        let whole = res.base..res.end;
        let opts = res.opts;
        let mut accessible = AccessRuns::new();
        // (A backend that takes every access away by itself is told of no runs: no walk.)
        if !self.backend.release_drops_access() {
            res.pages.for_each_run(whole.clone(), |r, st| {
                if let PageState::Committed(p) = st {
                    let from = rules::access_of(p);
                    if from != Access::None {
                        accessible.push((r, from));
                    }
                }
            });
        }
        let unlocked = res.locked.is_none();
        // `unchanged`: the index is as the lookup left it (the lock was held since), so
        // the slot needs no check.
        let record = |book: &mut Book, unchanged: bool| {
            // (Read in place, then dropped there: not moved out.)
            let read = |res: &Reservation| (res.committed, res.end - res.base, res.claim());
            let (committed, reserved, claim) = if unchanged {
                book.reservations.remove_found(at, read)
            } else {
                book.reservations.remove_at(at, read).expect("reservation")
            };
            book.committed -= committed;
            book.reserved -= reserved;
            book.give_back(claim);
        };
        // One backend operation: it may drop accessible pages in the same stroke as
        // it gives the range up, rather than make them inaccessible first.
        if unlocked && self.backend.inline_effects() {
            // The usual case on a backend whose effects never wait (the simulated one):
            // what `finish` does with this one step under the lock (a failed step has
            // nothing before it to undo), without planning it.
            let mut book = book;
            return match self.backend.release_committed(whole, opts, &accessible) {
                Ok(()) => {
                    record(&mut book, true);
                    Ok(())
                }
                Err(e) => Err(backend_error(e)),
            };
        }
        let release = Step::Release(whole.clone(), opts, accessible);
        // (Usually nothing is locked: then the plan is that one step, not a vector.)
        let with_unlocks: Steps;
        let steps = if unlocked {
            std::slice::from_ref(&release)
        } else {
            let locked = res.locked_runs(whole);
            with_unlocks = locked.into_iter().map(Step::Unlock).chain([release.clone()]).collect();
            &with_unlocks
        };
        self.finish(book, at, steps, |book| record(book, false), |_| {}, |_, _| {} /* (no access steps) */)
    }

    /// Decommit `range` of the reservation `at` (just found by `settle` under the lock
    /// `book`, the reservation holding `range.start`): `ERROR_INVALID_PARAMETER` if the
    /// range runs past its end or would split a large page.
    #[inline(always)]
    fn decommit(&self, mut book: MutexGuard<'_, Book>, at: Slot, range: Range<usize>) -> Result<()> {
        // (Found under this lock, which is still held: read without a check, once, for
        // the checks and the change; the book's totals are other fields of it.)
        let b = &mut *book;
        let res = b.reservations.found_mut(at);
        if range.end > res.end {
            return Err(Error::InvalidParameter);
        }
        self.whole_large_pages(res, &range)?;
        let (first, st, run) = res.pages.find(range.start);
        if first.end >= range.end && res.locked.is_none() {
            // The usual case: the range lies in one run and nothing is locked, so the
            // plan would be at most one step, whose failure has nothing before it to
            // undo. What `finish` does with it, without planning it: no list of runs
            // and step built and moved, no second search of the run (its backend call
            // outside the lock on a backend whose effects wait, `in_run_outside`).
            let PageState::Committed(p) = st else {
                // Nothing committed: nothing to tell the backend, nothing to record.
                return Ok(());
            };
            let runs = [(range.clone(), rules::access_of(p))];
            if !self.backend.inline_effects() {
                let (mut book, result) = self.in_run_outside(book, at, 0, || self.backend.decommit(&runs));
                if result.is_ok() {
                    let freed = range.len();
                    book.committed -= freed;
                    let res = book.reservations.at_mut(at).expect("reservation");
                    res.committed -= freed;
                    res.pages.set_at(run, range, PageState::Reserved);
                }
                self.done(book);
                return result;
            }
            // A backend whose effects never wait (the simulated one): all under the lock.
            self.backend.decommit(&runs).map_err(backend_error)?;
            let freed = range.len();
            b.committed -= freed;
            res.committed -= freed;
            res.pages.set_at(run, range, PageState::Reserved);
            return Ok(());
        }
        self.decommit_planned(book, at, range)
    }

    /// [`AddressSpace::decommit`] past its usual case (a range of several runs, or
    /// locked pages), its checks made: the plan of steps, carried out by `finish`. (Out of line: its frame and saved registers had been the usual
    /// case's too.)
    #[inline(never)]
    fn decommit_planned(&self, book: MutexGuard<'_, Book>, at: Slot, range: Range<usize>) -> Result<()> {
        let res = book.reservations.found(at);
        let (first, st) = res.pages.get(range.start);
        let mut committed = AccessRuns::new();
        let mut freed = 0;
        let mut note = |r: Range<usize>, st: PageState| {
            if let PageState::Committed(p) = st {
                freed += r.len();
                committed.push((r, rules::access_of(p)));
            }
        };
        // The range in one run: no walk over runs.
        if first.end >= range.end {
            note(range.clone(), st);
        } else {
            res.pages.for_each_run(range.clone(), note);
        }
        // One atomic backend operation that makes the runs inaccessible and drops them,
        // so that a backend can do both at once (and undo its own partial work); after
        // unlocking the range's locked pages, if any. (Usually nothing is locked: then
        // the plan is at most that one step, not a vector.)
        let decommit = (!committed.is_empty()).then(|| Step::Decommit(committed));
        let with_unlocks: Steps;
        let steps = if res.locked.is_none() {
            decommit.as_slice()
        } else {
            with_unlocks = res.locked_runs(range.clone()).into_iter().map(Step::Unlock).chain(decommit).collect();
            &with_unlocks
        };
        self.finish(
            book,
            at,
            steps,
            |book| {
                book.committed -= freed;
                let res = book.reservations.at_mut(at).expect("reservation");
                res.committed -= freed;
                res.pages.set(range.clone(), PageState::Reserved);
                res.set_locked(range, false);
            },
            |_| {},
            |_, _| {}, // (no access steps)
        )
    }
}
