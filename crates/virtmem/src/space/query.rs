//! `VirtualQuery`: a region's information, and the list of all regions.

use std::ops::Range;

use parking_lot::MutexGuard;

use crate::backend::{Access, Backend, ForeignRegion};
use crate::error::{Error, Result};
use crate::flags::{MemState, MemType, MemoryBasicInformation, Protection};
use crate::rules::{self, PAGE};
use crate::runs::{Book, PageState};

use super::AddressSpace;

impl<B: Backend> AddressSpace<B> {
    // ----- VirtualQuery ---------------------------------------------------------------

    /// `VirtualQuery`: what lives at `address`. Does not wait for other calls' system
    /// calls, with one exception on real memory: where another thread's reserve is
    /// mapping the free range the answer lies in, between its `mmap` and the record of
    /// it (one system call), so that the new mapping is never reported as someone else's
    /// (nor a mapping of the program's that makes that reserve fail as free).
    /// [`AddressSpace::try_query`] never waits.
    pub fn query(&self, address: usize) -> Result<MemoryBasicInformation> {
        if address >= self.limits.end_address {
            return Err(Error::InvalidParameter);
        }
        match self.query_locked(address, self.book.lock()) {
            Ok(answer) => Ok(answer),
            Err(gap) => {
                let found = self.backend.foreign(gap.start, gap.end);
                Ok(self.outside_book(gap, found))
            }
        }
    }

    /// [`AddressSpace::query`] if the bookkeeping is free right now; `None`, at once, if
    /// another thread holds it, or (on real memory) is between the `mmap` of a reserve
    /// and its record where the answer lies (for callers that must never wait for
    /// another thread, which might be suspended there).
    pub fn try_query(&self, address: usize) -> Option<Result<MemoryBasicInformation>> {
        if address >= self.limits.end_address {
            return Some(Err(Error::InvalidParameter));
        }
        let book = self.book.try_lock()?;
        Some(match self.query_locked(address, book) {
            Ok(answer) => Ok(answer),
            Err(gap) => {
                let found = self.backend.try_foreign(gap.start, gap.end)?;
                Ok(self.outside_book(gap, found))
            }
        })
    }

    /// The answer for `address` (below the top of the space) from the locked book, which
    /// is then let go: a reservation's page, or else the free gap of the book's that
    /// holds the page (from it to the next reservation or the top), which only the backend
    /// can tell free or foreign ([`AddressSpace::outside_book`]).
    fn query_locked(
        &self,
        address: usize,
        book: MutexGuard<'_, Book>,
    ) -> std::result::Result<MemoryBasicInformation, Range<usize>> {
        let page = rules::round_down(address, PAGE);
        let next = match book.reservations.find(page) {
            Err(next) => next,
            Ok(res) => {
                let (run, st) = res.pages.get(page);
                let (state, protect) = match st {
                    PageState::Reserved => (MemState::Reserve, Protection::empty()),
                    PageState::Committed(p) => (MemState::Commit, p),
                };
                return Ok(MemoryBasicInformation {
                    base_address: page,
                    allocation_base: res.base,
                    allocation_protect: res.alloc_protect,
                    region_size: run.end - page,
                    state,
                    protect,
                    mem_type: Some(MemType::Private),
                });
            }
        };
        Err(page..next.unwrap_or(self.limits.end_address))
    }

    /// The answer for the page at the start of `gap`, a free gap of the book, given what
    /// the backend found there (`foreign`: the first mapping that is not the engine's).
    fn outside_book(&self, gap: Range<usize>, foreign: Option<ForeignRegion>) -> MemoryBasicInformation {
        let (page, limit) = (gap.start, gap.end);
        let free = |end: usize| MemoryBasicInformation {
            base_address: page,
            allocation_base: 0,
            allocation_protect: Protection::empty(),
            region_size: end - page,
            state: MemState::Free,
            protect: Protection::NOACCESS,
            mem_type: None,
        };
        // (A backend reports page-aligned mappings; one that does not is read as covering
        // the pages it touches, so that a walk of the regions always moves on.)
        let foreign = foreign.map(|f| ForeignRegion {
            start: rules::round_down(f.start, PAGE),
            end: rules::round_up(f.end, PAGE).unwrap_or(limit).max(page + PAGE),
            ..f
        });
        match foreign {
            None => free(limit),
            Some(f) if f.start > page => free(f.start.min(limit)),
            Some(f) => {
                let granted = match (f.copy_on_write, f.access) {
                    (true, Access::ReadWrite) => Protection::WRITECOPY,
                    (true, Access::ExecuteReadWrite) => Protection::EXECUTE_WRITECOPY,
                    (_, a) => rules::protection_of(a),
                };
                let (state, protect) = if f.access == Access::None {
                    (MemState::Reserve, Protection::empty())
                } else {
                    (MemState::Commit, granted)
                };
                MemoryBasicInformation {
                    base_address: page,
                    allocation_base: f.allocation_base,
                    allocation_protect: granted,
                    region_size: f.end.min(limit) - page,
                    state,
                    protect,
                    mem_type: Some(match f.kind {
                        crate::backend::ForeignKind::Private => MemType::Private,
                        crate::backend::ForeignKind::Mapped => MemType::Mapped,
                        crate::backend::ForeignKind::Image => MemType::Image,
                    }),
                }
            }
        }
    }

    /// Every region from address 0 to the top of the space, as a `VirtualQuery` walk.
    pub fn regions(&self) -> Vec<MemoryBasicInformation> {
        let mut out = Vec::new();
        let mut addr = 0;
        while addr < self.limits.end_address {
            match self.query(addr) {
                // (Each region starts at or before `addr` and ends after it.)
                Ok(m) if m.base_address + m.region_size > addr => {
                    addr = m.base_address + m.region_size;
                    out.push(m);
                }
                _ => break,
            }
        }
        out
    }
}
