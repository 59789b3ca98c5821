//! Write watch: `GetWriteWatch` and `ResetWriteWatch`.

use std::ops::Range;

use parking_lot::MutexGuard;

use crate::backend::{Backend, BackendError};
use crate::error::{Error, Result};
use crate::flags::WriteWatchFlags;
use crate::rules::{self, PAGE};
use crate::runs::Book;

use super::{backend_error, AddressSpace};

impl<B: Backend> AddressSpace<B> {
    // ----- Write watch ----------------------------------------------------------------

    fn watched_range(&self, base: usize, size: usize) -> Result<(MutexGuard<'_, Book>, usize, Range<usize>)> {
        if size == 0 {
            return Err(Error::InvalidParameter);
        }
        let range = rules::page_span(base, size)?;
        let (book, found) = self.settle(range.start);
        let at = found.ok_or(Error::InvalidParameter)?;
        let res = book.reservations.at(at).expect("reservation");
        if !res.opts.write_watch || range.end > res.end {
            return Err(Error::InvalidParameter);
        }
        Ok((book, at.base(), range))
    }

    /// The number of pages of `[base, base + size)` when it is a range `GetWriteWatch` and
    /// `ResetWriteWatch` accept: inside one `MEM_WRITE_WATCH` reservation, size not 0
    /// (`ERROR_INVALID_PARAMETER` otherwise). Nothing is scanned or changed.
    pub fn write_watch_pages(&self, base: usize, size: usize) -> Result<usize> {
        let (book, _, range) = self.watched_range(base, size)?;
        drop(book);
        Ok((range.end - range.start) / PAGE)
    }

    /// `GetWriteWatch`: the base of each page of `[base, base + size)` written since the
    /// last reset, ascending, at most `max_count` (which must not be 0). The same call as
    /// [`get_write_watch_into`](Self::get_write_watch_into) (same rules, errors and reset
    /// semantics), answered in a new `Vec`.
    pub fn get_write_watch(
        &self,
        flags: WriteWatchFlags,
        base: usize,
        size: usize,
        max_count: usize,
    ) -> Result<Vec<usize>> {
        self.scan_write_watch(flags, base, size, max_count, |b, range, reset| b.dirty_pages(range, max_count, reset))
    }

    /// `GetWriteWatch` into the caller's buffer, as Windows' own call takes one: the base
    /// of each page of `[base, base + size)` written since the last reset goes into
    /// `addresses`, ascending, at most `addresses.len()` of them (Windows' `*count`
    /// going in); returns how many were written (`*count` coming out). Nothing is
    /// written past them: when nothing is dirty the buffer is left as it was.
    ///
    /// With [`WriteWatchFlags::RESET`] exactly the pages reported become clean, in the
    /// same step: a buffer smaller than the dirty set gets the lowest dirty pages, and
    /// the rest stay dirty for the next call (so a scan in a loop until it returns 0 sees
    /// every page once). Errors, in Windows' order, all `ERROR_INVALID_PARAMETER`: flags
    /// other than empty or `RESET`; an empty buffer (`*count == 0`); `size` 0, a range
    /// not inside one `MEM_WRITE_WATCH` reservation. A failed call writes nothing and
    /// resets nothing.
    ///
    /// Once a first call has been served, the call allocates nothing on the simulated or
    /// the Linux backend, so a GC can scan its cards with one buffer every collection.
    ///
    /// ```
    /// use virtmem::{AllocationType, Protection, SimSpace, WriteWatchFlags};
    ///
    /// let space = SimSpace::simulated();
    /// let heap = space.alloc(0, 1 << 30, AllocationType::RESERVE | AllocationType::WRITE_WATCH, Protection::NOACCESS)?;
    /// space.alloc(heap, 1 << 20, AllocationType::COMMIT, Protection::READWRITE)?;
    /// space.write(heap + 3 * 4096, b"card")?;
    /// let mut cards = [0usize; 256]; // kept from one collection to the next
    /// let n = space.get_write_watch_into(WriteWatchFlags::RESET, heap, 1 << 30, &mut cards)?;
    /// assert_eq!(&cards[..n], &[heap + 3 * 4096]);
    /// # Ok::<(), virtmem::Error>(())
    /// ```
    pub fn get_write_watch_into(
        &self,
        flags: WriteWatchFlags,
        base: usize,
        size: usize,
        addresses: &mut [usize],
    ) -> Result<usize> {
        let max = addresses.len();
        self.scan_write_watch(flags, base, size, max, |b, range, reset| b.dirty_pages_into(range, addresses, reset))
    }

    /// A `GetWriteWatch` of at most `max` pages: its arguments checked in Windows' order,
    /// then `scan` run by the backend on the page span (with whether to reset), the
    /// reservation busy meanwhile.
    fn scan_write_watch<T>(
        &self,
        flags: WriteWatchFlags,
        base: usize,
        size: usize,
        max: usize,
        scan: impl FnOnce(&B, Range<usize>, bool) -> std::result::Result<T, BackendError>,
    ) -> Result<T> {
        let reset = rules::write_watch_flags(flags)?;
        if max == 0 {
            return Err(Error::InvalidParameter);
        }
        let (book, b, range) = self.watched_range(base, size)?;
        self.outside_then_done(book, b, || scan(&self.backend, range, reset)).map_err(backend_error)
    }

    /// `ResetWriteWatch`: make every page of the range clean. Once a first write-watch
    /// call has been served, it allocates nothing on the simulated or the Linux backend.
    pub fn reset_write_watch(&self, base: usize, size: usize) -> Result<()> {
        let (book, b, range) = self.watched_range(base, size)?;
        self.outside_then_done(book, b, || self.backend.clear_dirty(range)).map_err(backend_error)
    }
}
