//! `VirtualProtect`.

use std::ops::Range;

use parking_lot::MutexGuard;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::flags::Protection;
use crate::rules;
use crate::runs::{Book, PageState, RunAt, Slot};

use super::plan::{Step, Steps};
use super::{backend_error, AddressSpace};

impl<B: Backend> AddressSpace<B> {
    // ----- VirtualProtect -------------------------------------------------------------

    /// `VirtualProtect`: returns the old protection of the first page.
    pub fn protect(&self, address: usize, size: usize, protect: Protection) -> Result<Protection> {
        self.protect_detailed(address, size, protect).map_err(|(e, _)| e)
    }

    /// `VirtualProtect`, also returning on failure what Windows stores in `*old_protect`
    /// (`PAGE_NOACCESS` when the range holds reserved pages).
    pub fn protect_detailed(
        &self,
        address: usize,
        size: usize,
        protect: Protection,
    ) -> std::result::Result<Protection, (Error, Option<Protection>)> {
        let (range, protect) =
            rules::protect_request(address, size, protect, self.limits.end_address).map_err(|e| (e, None))?;
        let (book, at) = self.settle_inline(range.start, |_| {});
        let at = at.ok_or((Error::InvalidAddress, None))?;
        let res = book.reservations.found(at);
        if range.end > res.end {
            return Err((Error::InvalidAddress, None));
        }
        let eff = rules::effective_protect(protect, res.alloc_protect);
        let (first, st, run) = res.pages.find(range.start);
        if first.end >= range.end {
            // The usual case: the range lies in one run. At most one backend call, and
            // the run found here is changed in place after it, without a plan, an undo
            // log or a second search.
            let PageState::Committed(old) = st else {
                return Err((Error::InvalidAddress, Some(Protection::NOACCESS)));
            };
            self.whole_large_pages(res, &range).map_err(|e| (e, None))?;
            return self.protect_in_run(book, at, range, run, old, eff).map_err(|e| (e, None));
        }
        let to = rules::access_of(eff);
        let (old, steps): (Protection, Steps) = {
            let mut old = None;
            let mut reserved = false;
            let mut many = Steps::new();
            res.pages.for_each_run(range.clone(), |r, st| match st {
                PageState::Reserved => reserved = true,
                PageState::Committed(p) => {
                    old.get_or_insert(p);
                    let from = rules::access_of(p);
                    if from != to {
                        many.push(Step::Access(r, from, to));
                    }
                }
            });
            if reserved {
                return Err((Error::InvalidAddress, Some(Protection::NOACCESS)));
            }
            self.whole_large_pages(res, &range).map_err(|e| (e, None))?;
            (old.unwrap_or(Protection::NOACCESS), many)
        };
        self.finish(
            book,
            at,
            &steps,
            |book| {
                let res = book.reservations.at_mut(at).expect("reservation");
                res.pages.set(range, PageState::Committed(eff));
                old
            },
            |_| {},
            // The backend kept the new protection there: so does the book.
            |book, r| book.reservations.at_mut(at).expect("reservation").pages.set(r, PageState::Committed(eff)),
        )
        .map_err(|e| (e, None))
    }

    /// The rest of a `VirtualProtect` of `range`, which lies in the committed run
    /// (protection `old`) that [`RunMap::find`](crate::runs::RunMap::find) found at `run`
    /// in the reservation `at`: what [`AddressSpace::finish`] does for a plan of one
    /// access change, without the plan. The backend changes the access (outside the
    /// lock, the reservation busy, unless its effects are cheap:
    /// [`AddressSpace::in_run_outside`]), then the run takes `eff` in place; should the
    /// backend fail (having put back what it did), nothing changes.
    #[inline(always)]
    fn protect_in_run<'a>(
        &'a self,
        mut book: MutexGuard<'a, Book>,
        at: Slot,
        range: Range<usize>,
        run: RunAt,
        old: Protection,
        eff: Protection,
    ) -> Result<Protection> {
        let (from, to) = (rules::access_of(old), rules::access_of(eff));
        if from != to && !self.backend.inline_effects() {
            let (mut book, result) =
                self.in_run_outside(book, at, 0, || self.backend.set_access(range.clone(), from, to));
            if result.is_ok() {
                let res = book.reservations.at_mut(at).expect("reservation");
                res.pages.set_run(run, range, PageState::Committed(eff));
            }
            self.done(book);
            return result.map(|()| old);
        }
        // Nothing for the backend to do, or cheap effects: all under the lock.
        if from != to {
            self.backend.set_access(range.clone(), from, to).map_err(backend_error)?;
        }
        let res = book.reservations.at_mut(at).expect("reservation");
        res.pages.set_run(run, range, PageState::Committed(eff));
        Ok(old)
    }
}
