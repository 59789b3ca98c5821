//! `VirtualAlloc`: reserve (at an address, anywhere, or inside a window), commit, and
//! `MEM_RESET` and `MEM_RESET_UNDO`.

use std::ops::Range;

use smallvec::smallvec;

use crate::backend::{Access, Backend, BackendError, ReserveOptions};
use crate::error::{Error, Result};
use crate::flags::{AddressRequirements, AllocationType, Protection};
use crate::rules::{self, AllocRequest, GRANULE};
use crate::runs::{PageState, Reservation, RunMap};

use super::plan::{Step, Steps};
use super::{backend_error, AddressSpace, ResetUndo};

impl<B: Backend> AddressSpace<B> {
    // ----- VirtualAlloc ---------------------------------------------------------------

    /// `VirtualAlloc`: reserve and/or commit, reset or undo a reset. Returns the base of
    /// the reservation or of the first committed page. On real memory (the Linux backend)
    /// that is an ordinary pointer into this process's memory, usable directly once
    /// committed (see the crate docs, "Real memory"). What `MEM_RESET` and
    /// `MEM_RESET_UNDO` do there, and cost, is told at [`AllocationType::RESET`] and
    /// [`AllocationType::RESET_UNDO`]; `MEM_WRITE_WATCH`'s needs at
    /// [`AllocationType::WRITE_WATCH`].
    pub fn alloc(&self, address: usize, size: usize, ty: AllocationType, protect: Protection) -> Result<usize> {
        // The usual call first, a commit inside a reservation, with its checks in one go.
        let range = if address != 0 && ty == AllocationType::COMMIT {
            rules::commit_range(address, size, protect, &self.limits)?
        } else {
            match rules::alloc_request(address, size, ty, protect, &self.limits)? {
                AllocRequest::Reserve { base, size, commit, top_down, large, write_watch, physical, protect } => {
                    let opts = ReserveOptions { large_pages: large, write_watch };
                    return self.reserve_range(base, size, commit, top_down, opts, physical, protect, None);
                }
                AllocRequest::Commit { range, .. } => range,
                // Like Windows (recorded under Wine), MEM_RESET and MEM_RESET_UNDO return
                // the address rounded down to its page.
                AllocRequest::Reset { range } => {
                    let start = range.start;
                    return self.reset_span(range).map(|_| start);
                }
                AllocRequest::ResetUndo { range } => {
                    let start = range.start;
                    return match self.reset_undo_span(range)? {
                        ResetUndo::Intact => Ok(start),
                        ResetUndo::Discarded => Err(Error::DataDiscarded),
                    };
                }
            }
        };
        // (A commit's protection is `protect`, checked.)
        self.commit(range, protect)
    }

    /// `VirtualAlloc2` with `MEM_ADDRESS_REQUIREMENTS`: a new reservation (`ty` holds
    /// `MEM_RESERVE`, or is `MEM_COMMIT` alone, which reserves too, with `MEM_TOP_DOWN`,
    /// `MEM_WRITE_WATCH`, `MEM_LARGE_PAGES` as [`alloc`](Self::alloc) allows them) placed
    /// at an address the space picks inside the window `req` gives: starting at or after
    /// its lowest start, ending (its last 64 KiB granule included) at or before its
    /// highest end, its base aligned as asked. Bottom-up the lowest such place, with
    /// `MEM_TOP_DOWN` the highest. What a JIT uses to place code within ±2 GiB of the code
    /// it calls (a `rel32` call's reach).
    ///
    /// Fails as `alloc(0, size, ty, protect)` does, and also with
    /// `ERROR_INVALID_PARAMETER` for a window [`AddressRequirements`] does not allow (with
    /// `MEM_LARGE_PAGES`, a lowest start that is not a multiple of the large-page size) or a
    /// type that does not make a new reservation, and `ERROR_NOT_ENOUGH_MEMORY` when no
    /// free range of the window fits (although the space may have room elsewhere).
    /// Finding the place costs what an `alloc` at no particular address costs (a search
    /// of the free-space index per gap tried).
    ///
    /// ```
    /// use virtmem::{AddressRequirements, AllocationType, Protection, SimSpace};
    ///
    /// let space = SimSpace::simulated();
    /// let code = space.alloc(0, 1 << 20, AllocationType::RESERVE | AllocationType::COMMIT, Protection::EXECUTE_READ)?;
    /// // A stub heap a rel32 call from `code` reaches (±2 GiB), 1 MiB aligned.
    /// let req = AddressRequirements {
    ///     lowest_starting_address: code.saturating_sub(1 << 31).next_multiple_of(1 << 16),
    ///     highest_ending_address: ((code + (1 << 31)) & !0xFFFF) - 1,
    ///     alignment: 1 << 20,
    /// };
    /// let stubs = space.alloc_within(1 << 16, AllocationType::RESERVE, Protection::NOACCESS, req)?;
    /// assert!(stubs.abs_diff(code) < 1 << 31 && stubs % (1 << 20) == 0);
    /// # Ok::<(), virtmem::Error>(())
    /// ```
    pub fn alloc_within(
        &self,
        size: usize,
        ty: AllocationType,
        protect: Protection,
        req: AddressRequirements,
    ) -> Result<usize> {
        // Every rule of a reserve at no particular address first, then the window's.
        let AllocRequest::Reserve { base: None, size, commit, top_down, large, write_watch, physical, protect } =
            rules::alloc_request(0, size, ty, protect, &self.limits)?
        else {
            return Err(Error::InvalidParameter);
        };
        let (window, align) = rules::address_window(&req, &self.limits, large)?;
        let opts = ReserveOptions { large_pages: large, write_watch };
        self.reserve_range(None, size, commit, top_down, opts, physical, protect, Some((window, align)))
    }

    /// Reserve `size` bytes at `fixed`, or where the space picks: anywhere, or with
    /// `within` inside that window at that alignment.
    #[allow(clippy::too_many_arguments)]
    fn reserve_range(
        &self,
        fixed: Option<usize>,
        size: usize,
        commit: bool,
        top_down: bool,
        opts: ReserveOptions,
        physical: bool,
        protect: Protection,
        within: Option<(Range<usize>, usize)>,
    ) -> Result<usize> {
        let align = if opts.large_pages { self.limits.large_page_size.max(GRANULE) } else { GRANULE };
        let align = within.as_ref().map_or(align, |&(_, a)| a.max(align));
        let claim_size = rules::round_up(size, GRANULE).ok_or(Error::InvalidParameter)?;
        let charge = if commit { size } else { 0 };
        let mut collisions = 0;
        let inline = self.backend.inline_effects();
        // Avoided pieces of a reserve at a given address, made free for it.
        let mut lent: Vec<Range<usize>> = Vec::new();
        // Whether the avoided ranges were checked with the backend during this call.
        let mut rechecked = false;
        // Where the mapping a claim collided with ends, to look for more after it.
        let mut crowd_after: Option<usize> = None;
        loop {
            let mut book = self.book.lock();
            if !inline && book.snapshots != 0 {
                // A snapshot waits for the reserves under way: start none (see
                // `AddressSpace::snapshot`).
                self.wait_idle(&mut book);
                continue;
            }
            let base = match fixed {
                Some(b) => {
                    let claim = b..b + claim_size;
                    if !book.free.contains(&claim) {
                        if book.pending_overlaps(&claim) {
                            self.wait_idle(&mut book);
                            continue;
                        }
                        // Free but for ranges the engine avoids (not ours): try it.
                        if !book.lend_avoided(&claim, &mut lent) {
                            return Err(Error::InvalidAddress);
                        }
                    }
                    b
                }
                // Where the backend can reserve without a system call, if the book
                // agrees it is free (bottom-up only: top-down asks for the highest).
                None => match (!top_down)
                    .then(|| self.backend.cheap_range(claim_size, align, opts))
                    .flatten()
                    .filter(|&b| b.checked_add(claim_size).is_some_and(|e| book.free.contains(&(b..e))))
                    .filter(|&b| within.as_ref().map_or(true, |(w, _)| w.start <= b && b + claim_size <= w.end))
                {
                    Some(b) => b,
                    None => match match &within {
                        None => book.free.find(claim_size, align, top_down),
                        Some((w, _)) => book.free.find_within(claim_size, align, top_down, w.clone()),
                    } {
                        Some(b) => b,
                        None => {
                            // Out of room: the mappings that made the engine avoid some
                            // ranges may have gone. Look once, then give up.
                            drop(book);
                            if rechecked || !self.recheck_avoided() {
                                return Err(Error::NotEnoughMemory);
                            }
                            rechecked = true;
                            continue;
                        }
                    },
                },
            };
            if let Some(limit) = book.commit_limit {
                // Only new commit charge can exceed the limit (it may have been lowered
                // below the committed total: reserving alone must still work).
                if charge > 0 && book.committed + charge > limit {
                    for p in lent.drain(..) {
                        book.avoid(p);
                    }
                    return Err(Error::CommitmentLimit);
                }
            }
            let claim = base..base + claim_size;
            book.free.take(&claim);
            book.committed += charge;
            book.reserved += size;
            // Side effects run without the lock (the claim marked pending), unless the
            // backend's are inline.
            let held = if inline {
                Some(book)
            } else {
                book.add_pending(claim.clone());
                drop(book);
                None
            };

            let range = base..base + size;
            let mut steps: Steps = smallvec![Step::Reserve(range.clone(), opts)];
            let access = rules::access_of(protect);
            if commit && access != Access::None {
                steps.push(Step::Access(range.clone(), Access::None, access));
            }
            // (The undo of the reserve is a release: the Linux backend pools what the
            // kernel refuses to unmap. A refused undo, which only a write-watched
            // reservation in a backend without guard regions can meet, is counted; what
            // it leaves mapped is not tracked further.)
            let result = self.run(&steps).map_err(|f| f.error);

            let mut book = match held {
                Some(book) => book,
                None => {
                    let mut book = self.book.lock();
                    book.remove_pending(base);
                    book
                }
            };
            let outcome = match result {
                Ok(()) => {
                    let state = if commit { PageState::Committed(protect) } else { PageState::Reserved };
                    let replaced = book.reservations.insert(
                        base,
                        Reservation {
                            base,
                            end: range.end,
                            alloc_protect: protect,
                            opts,
                            physical,
                            pages: RunMap::new(range, state),
                            locked: None,
                            committed: charge,
                        },
                    );
                    // The claim was free: no reservation was there to replace. (Forgotten,
                    // not dropped: the record's drop glue, shared with the release's drop
                    // in place, is a call, ~10 instructions a reserve for a `None`.)
                    debug_assert!(replaced.is_none(), "a reservation replaced over a free claim");
                    std::mem::forget(replaced);
                    Some(Ok(base))
                }
                Err(e) => {
                    book.committed -= charge;
                    book.reserved -= size;
                    book.free.give(claim.clone());
                    // What was avoided before this call is again.
                    for p in lent.drain(..) {
                        book.avoid(p);
                    }
                    match e {
                        BackendError::Occupied { start, end } => {
                            // Something we do not own lives there: do not pick it again
                            // by ourselves (a reserve at that address will still try).
                            // All of it, not just the part this claim met, so that
                            // placement skips it in one step (only its free part becomes
                            // avoided; nothing reserved is touched).
                            let g = rules::granules(start..end);
                            book.avoid(g.clone());
                            collisions += 1;
                            if fixed.is_some() {
                                Some(Err(Error::InvalidAddress))
                            } else if collisions > 1000 {
                                Some(Err(Error::NotEnoughMemory))
                            } else {
                                crowd_after = Some(g.end);
                                None
                            }
                        }
                        e => Some(Err(backend_error(e))),
                    }
                }
            };
            let grew = outcome.is_none() && book.avoided_grew();
            drop(book);
            if let Some(at) = crowd_after.take() {
                // Mappings that are not ours come in crowds (another allocator's, another
                // space's): find those right after this one now, without the lock, rather
                // than by one collision (one failed system call) each.
                self.avoid_crowd(at, claim_size);
            }
            if !inline {
                self.idle.notify_all();
            }
            if let Some(out) = outcome {
                return out;
            }
            if grew {
                // Many collisions since the last look: drop the avoided ranges whose
                // mapping has gone, so that the list stays as long as what is really in
                // the way.
                self.recheck_avoided();
            }
        }
    }

    /// Avoid the mappings that are not ours lying from `at` on with gaps smaller than
    /// `size` between them (where a claim of `size` bytes could not fit anyway), up to
    /// 256 of them: asked of the backend without the lock, then avoided under it.
    fn avoid_crowd(&self, mut at: usize, size: usize) {
        let mut crowd = Vec::new();
        while crowd.len() < 256 {
            let Some(f) = self.backend.foreign(at, at.saturating_add(size)) else { break };
            let g = rules::granules(f.start..f.end);
            if g.end <= at {
                break;
            }
            at = g.end;
            crowd.push(g);
        }
        if !crowd.is_empty() {
            let mut book = self.book.lock();
            for g in crowd {
                book.avoid(g);
            }
        }
    }

    /// Ask the backend, without the lock, which avoided ranges no mapping that is not
    /// ours holds any more, and make those free. Returns whether any became free.
    fn recheck_avoided(&self) -> bool {
        let candidates = self.book.lock().unavoidable();
        let mut vacant = Vec::new();
        for r in candidates {
            let mut at = r.start;
            while at < r.end {
                match self.backend.foreign(at, r.end) {
                    None => {
                        vacant.push(at..r.end);
                        break;
                    }
                    Some(f) => {
                        let g = rules::granules(f.start..f.end);
                        if g.start > at {
                            vacant.push(at..g.start);
                        }
                        at = g.end.max(at + GRANULE);
                    }
                }
            }
        }
        !vacant.is_empty() && self.book.lock().unavoid(&vacant)
    }

    #[inline(never)]
    fn commit(&self, range: Range<usize>, protect: Protection) -> Result<usize> {
        let (mut book, at) = self.settle(range.start);
        let at = at.ok_or(Error::InvalidAddress)?;
        // (Found under this lock, which is still held: read without a check, once, for
        // the checks and the usual case's change; the book's totals are other fields.)
        let b = &mut *book;
        let res = b.reservations.found_mut(at);
        if range.end > res.end {
            return Err(Error::InvalidAddress);
        }
        if res.physical {
            return Err(Error::InvalidParameter);
        }
        self.whole_large_pages(res, &range)?;
        let eff = rules::effective_protect(protect, res.alloc_protect);
        let to = rules::access_of(eff);
        let (first, st, run) = res.pages.find(range.start);
        // What committing the run `r` in state `st` charges, and the access it has.
        let charge_of = |r: &Range<usize>, st: PageState| match st {
            PageState::Reserved => (r.len(), Access::None),
            PageState::Committed(p) => (0, rules::access_of(p)),
        };
        if first.end >= range.end {
            // The usual case: the range lies in one run, so the plan would be at most
            // one step, whose failure has nothing before it to undo. What `finish` does
            // with it, without planning it: the charge checked, the step (if the access
            // changes) made (outside the lock on a backend whose effects wait,
            // `in_run_outside`), then the book changed, the run edited where `find`
            // found it.
            let (newly, from) = charge_of(&range, st);
            if let Some(limit) = b.commit_limit {
                // Recommitting committed pages charges nothing, so it never hits the limit.
                if newly > 0 && b.committed + newly > limit {
                    return Err(Error::CommitmentLimit);
                }
            }
            let start = range.start;
            if from != to && !self.backend.inline_effects() {
                let (mut book, result) =
                    self.in_run_outside(book, at, newly, || self.backend.set_access(range.clone(), from, to));
                if result.is_ok() {
                    book.committed += newly;
                    let res = book.reservations.at_mut(at).expect("reservation");
                    res.committed += newly;
                    res.pages.set_at(run, range, PageState::Committed(eff));
                }
                self.done(book);
                return result.map(|()| start);
            }
            // Nothing for the backend to do, or cheap effects: all under the lock.
            if from != to {
                self.backend.set_access(range.clone(), from, to).map_err(backend_error)?;
            }
            b.committed += newly;
            res.committed += newly;
            res.pages.set_at(run, range, PageState::Committed(eff));
            return Ok(start);
        }
        // Several runs: a plan of an access change for each whose access differs.
        let mut newly = 0;
        let mut steps = Steps::new();
        res.pages.for_each_run(range.clone(), |r, st| {
            let (charge, from) = charge_of(&r, st);
            newly += charge;
            if from != to {
                steps.push(Step::Access(r, from, to));
            }
        });
        if let Some(limit) = book.commit_limit {
            // Recommitting committed pages charges nothing, so it never hits the limit.
            if newly > 0 && book.committed + newly > limit {
                return Err(Error::CommitmentLimit);
            }
        }
        book.committed += newly;
        let start = range.start;
        self.finish(
            book,
            at,
            &steps,
            |book| {
                let res = book.reservations.at_mut(at).expect("reservation");
                res.pages.set(range, PageState::Committed(eff));
                res.committed += newly;
                start
            },
            |book| book.committed -= newly,
            |book, r| {
                // The backend kept these pages committed: so does the book.
                let res = book.reservations.at_mut(at).expect("reservation");
                let mut kept = 0;
                res.pages.for_each_run(r.clone(), |run, st| {
                    if matches!(st, PageState::Reserved) {
                        kept += run.len();
                    }
                });
                res.pages.set(r, PageState::Committed(eff));
                res.committed += kept;
                book.committed += kept;
            },
        )
    }

    /// `MEM_RESET` of `[address, address + size)`: the contents of its committed pages are
    /// no longer of interest, and may be dropped (they then read zero) until written
    /// again; every page keeps its state, protection and commit charge. Exactly
    /// `alloc(address, size, AllocationType::RESET, protection)` without a protection to
    /// give (the alloc form checks one and then ignores it): the same rules, in the same
    /// order, with the same errors (`ERROR_INVALID_PARAMETER` for a zero size, an address
    /// below the lowest or a range past the top; `ERROR_INVALID_ADDRESS` for a range not
    /// inside one reservation; `ERROR_INVALID_PARAMETER` for one that would split a large
    /// page). A reset of reserved-only pages succeeds and does nothing.
    ///
    /// What it does and costs on real memory (`MADV_FREE`, and a record of the data so
    /// that [`reset_undo`](Self::reset_undo) can answer truthfully) is told at
    /// [`AllocationType::RESET`].
    ///
    /// ```
    /// use virtmem::{AllocationType, Protection, ResetUndo, SimSpace};
    ///
    /// let space = SimSpace::simulated();
    /// let heap = space.alloc(0, 1 << 20, AllocationType::RESERVE | AllocationType::COMMIT, Protection::READWRITE)?;
    /// space.write(heap, b"free object")?;
    /// space.reset(heap, 1 << 20)?; // the GC no longer needs these pages' contents
    /// // ... later the GC wants the space back: did the contents survive?
    /// match space.reset_undo(heap, 1 << 20)? {
    ///     ResetUndo::Intact => {}                 // as they were
    ///     ResetUndo::Discarded => { /* some pages read zero: rebuild them */ }
    /// }
    /// # Ok::<(), virtmem::Error>(())
    /// ```
    pub fn reset(&self, address: usize, size: usize) -> Result<()> {
        let range = self.reset_request(address, size, AllocationType::RESET)?;
        self.reset_span(range)
    }

    /// `MEM_RESET_UNDO` of `[address, address + size)`: keep the contents of the range
    /// after a [`reset`](Self::reset), and say whether they survived it:
    /// [`ResetUndo::Intact`] when every page holds what it held before the reset,
    /// [`ResetUndo::Discarded`] when some data was dropped (those pages read zero).
    /// `Discarded` is exactly when `alloc(address, size, AllocationType::RESET_UNDO, _)`
    /// fails with `ERROR_BUSY` ([`Error::DataDiscarded`]); every other answer, errors
    /// included, is the alloc form's (see [`reset`](Self::reset) for the rules). A range
    /// that was not reset, or whose reset was already undone, is `Intact`.
    ///
    /// How real memory tells (and, in doubt, says `Discarded`) is told at
    /// [`AllocationType::RESET_UNDO`].
    pub fn reset_undo(&self, address: usize, size: usize) -> Result<ResetUndo> {
        let range = self.reset_request(address, size, AllocationType::RESET_UNDO)?;
        self.reset_undo_span(range)
    }

    /// The page span of a `MEM_RESET` (`ty`) or `MEM_RESET_UNDO` of `size` bytes at
    /// `address`, by the rules of `VirtualAlloc` (its protection, checked and then
    /// ignored, given as a valid one).
    fn reset_request(&self, address: usize, size: usize, ty: AllocationType) -> Result<Range<usize>> {
        match rules::alloc_request(address, size, ty, Protection::NOACCESS, &self.limits)? {
            AllocRequest::Reset { range } | AllocRequest::ResetUndo { range } => Ok(range),
            // (Not a request `ty` alone can make.)
            AllocRequest::Reserve { .. } | AllocRequest::Commit { .. } => Err(Error::InvalidParameter),
        }
    }

    fn reset_span(&self, range: Range<usize>) -> Result<()> {
        let (book, at) = self.settle_within(&range)?;
        let res = book.reservations.at(at).expect("reservation");
        self.whole_large_pages(res, &range)?;
        let committed: Vec<Range<usize>> =
            res.pages.runs(range).filter(|(_, st)| matches!(st, PageState::Committed(_))).map(|(r, _)| r).collect();
        // A reset is not undoable, so it runs as one atomic backend operation per call
        // on the smallest range holding every committed page. The reservation is held
        // busy meanwhile, so that no other call frees or reuses the range under it.
        let (Some(first), Some(last)) = (committed.first(), committed.last()) else { return Ok(()) };
        let span = first.start..last.end;
        self.outside_then_done(book, at.base(), || self.backend.reset(span)).map_err(backend_error)
    }

    fn reset_undo_span(&self, range: Range<usize>) -> Result<ResetUndo> {
        let (book, at) = self.settle_within(&range)?;
        self.whole_large_pages(book.reservations.at(at).expect("reservation"), &range)?;
        match self.outside_then_done(book, at.base(), || self.backend.reset_undo(range)) {
            Ok(true) => Ok(ResetUndo::Intact),
            Ok(false) => Ok(ResetUndo::Discarded),
            Err(e) => Err(backend_error(e)),
        }
    }
}
