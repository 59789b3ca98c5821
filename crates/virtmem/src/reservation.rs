//! [`Reservation`]: a reservation released when dropped, for code that reserves address
//! space for a while (a GC's heap, a JIT's code heap) and must not leak it on an early
//! return or a panic.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::flags::{AllocationType, FreeType, Protection};
use crate::rules::{self, PAGE};
use crate::space::{AddressSpace, ResetUndo, VirtualSpace};

/// A reservation of address space that is released (`VirtualFree(base, 0, MEM_RELEASE)`)
/// when dropped, with its committed pages.
///
/// Made on any [`VirtualSpace`] `S` — `&AddressSpace<B>` for any backend (see
/// [`AddressSpace::reservation`]), `&dyn VirtualSpace`, `Arc<dyn VirtualSpace>` (which the
/// guard then keeps alive), or a space itself. Its helpers act on sub-ranges that must
/// lie inside it: a range that does not (or that wraps) is refused with
/// `ERROR_INVALID_ADDRESS` ([`Error::InvalidAddress`]) and a zero size with
/// `ERROR_INVALID_PARAMETER`, before the space is asked; inside it the space's own rules
/// apply. Addresses are the space's (absolute), as everywhere else in the crate.
///
/// A release that fails on drop (the reservation was released behind the guard's back,
/// or the backend refused) is ignored: a drop never panics. Call
/// [`release`](Self::release) to see the answer. [`into_raw`](Self::into_raw) gives up
/// ownership (the reservation then stays, as a [`LinuxSpace`](crate::LinuxSpace)'s
/// reservations stay when the space is dropped); [`from_raw`](Self::from_raw) takes it
/// back.
///
/// ```
/// use virtmem::{Protection, SimSpace};
///
/// let space = SimSpace::simulated();
/// {
///     let heap = space.reservation(1 << 30, Protection::NOACCESS)?; // 1 GiB of address space
///     heap.commit(heap.base(), 1 << 20, Protection::READWRITE)?;
///     space.write(heap.base(), b"object")?;
///     assert!(heap.commit(heap.end(), 4096, Protection::READWRITE).is_err()); // not inside it
/// } // released here, committed pages included
/// assert_eq!(space.reserved_bytes(), 0);
/// # Ok::<(), virtmem::Error>(())
/// ```
#[must_use = "a Reservation releases its memory when dropped: bind it (`let heap = ...`) for as long as the memory is used"]
#[derive(Debug)]
pub struct Reservation<S: VirtualSpace> {
    space: S,
    base: usize,
    len: usize,
    /// Whether the drop releases the reservation (cleared by `into_raw` and `release`).
    owned: bool,
}

impl<S: VirtualSpace> Reservation<S> {
    /// Reserve `size` bytes (rounded up to whole pages) at an address the space picks, as
    /// `alloc(0, size, AllocationType::RESERVE, protect)`; fails as that does.
    pub fn new(space: S, size: usize, protect: Protection) -> Result<Self> {
        Self::with_type(space, 0, size, AllocationType::RESERVE, protect)
    }

    /// Reserve with any `VirtualAlloc` type that makes a new reservation: `ty` must hold
    /// `MEM_RESERVE` (with `MEM_COMMIT`, `MEM_TOP_DOWN`, `MEM_WRITE_WATCH`,
    /// `MEM_LARGE_PAGES` as the space allows), else `ERROR_INVALID_PARAMETER` and nothing
    /// is reserved. `address` is 0 (the space picks) or where to reserve: the reservation
    /// then starts at the 64 KiB boundary at or below it and ends at the page boundary at
    /// or after `address + size`, as `VirtualAlloc` makes it. Fails as
    /// `alloc(address, size, ty, protect)` does.
    pub fn with_type(space: S, address: usize, size: usize, ty: AllocationType, protect: Protection) -> Result<Self> {
        if !ty.contains(AllocationType::RESERVE) {
            return Err(Error::InvalidParameter);
        }
        let base = space.alloc(address, size, ty, protect)?;
        // (The space accepted `[from, from + size)`: its end, rounded up to a page, fits.)
        let from = if address == 0 { base } else { address };
        let end = from.checked_add(size).and_then(|e| rules::round_up(e, PAGE));
        let Some(end) = end.filter(|&e| e > base) else {
            // Not a reservation this guard can describe: give it back.
            let _ = space.free(base, 0, FreeType::RELEASE);
            return Err(Error::InvalidParameter);
        };
        Ok(Reservation { space, base, len: end - base, owned: true })
    }

    /// Take ownership of the whole reservation `[base, base + len)` of `space`, as
    /// [`into_raw`](Self::into_raw) gave it up: the guard's drop will release the
    /// reservation at `base`. (Nothing is checked: a `base` that is not a reservation's
    /// makes the release fail, quietly on drop.)
    pub fn from_raw(space: S, base: usize, len: usize) -> Self {
        Reservation { space, base, len, owned: true }
    }

    /// Give up ownership: the reservation stays as it is (nothing is released, now or
    /// later) and its `(base, len)` is returned, for [`from_raw`](Self::from_raw) or for
    /// freeing by hand.
    #[must_use = "nothing will release the reservation now: keep its base and length to free it"]
    pub fn into_raw(mut self) -> (usize, usize) {
        self.owned = false;
        (self.base, self.len)
    }

    /// Release the reservation now, and say whether that worked (what the drop does
    /// without saying). On failure nothing was released and the guard no longer owns it.
    pub fn release(mut self) -> Result<()> {
        self.owned = false;
        self.space.free(self.base, 0, FreeType::RELEASE)
    }

    /// The space the reservation is in.
    pub fn space(&self) -> &S {
        &self.space
    }

    /// The first address (64 KiB aligned).
    pub fn base(&self) -> usize {
        self.base
    }

    /// The size in bytes, a whole number of pages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: a reservation holds at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the last address (`usize::MAX` for a pair given to
    /// [`from_raw`](Self::from_raw) whose end would wrap).
    pub fn end(&self) -> usize {
        self.base.saturating_add(self.len)
    }

    /// `base()..end()`.
    pub fn range(&self) -> Range<usize> {
        self.base..self.end()
    }

    /// Whether `[address, address + size)` lies inside the reservation.
    pub fn contains(&self, address: usize, size: usize) -> bool {
        address >= self.base && address.checked_add(size).is_some_and(|e| e <= self.end())
    }

    /// A sub-range a helper may pass on: non-empty, inside.
    fn inside(&self, address: usize, size: usize) -> Result<()> {
        if !self.contains(address, size) {
            return Err(Error::InvalidAddress);
        }
        if size == 0 {
            return Err(Error::InvalidParameter);
        }
        Ok(())
    }

    /// Commit the pages of `[address, address + size)`, which must lie inside, with
    /// `protect`: `alloc(address, size, AllocationType::COMMIT, protect)`. Returns the
    /// first page's address.
    pub fn commit(&self, address: usize, size: usize, protect: Protection) -> Result<usize> {
        self.inside(address, size)?;
        self.space.alloc(address, size, AllocationType::COMMIT, protect)
    }

    /// Decommit the pages of `[address, address + size)`, which must lie inside:
    /// `free(address, size, FreeType::DECOMMIT)` (a zero size, which would decommit the
    /// whole reservation there, is refused: decommit [`range`](Self::range) for that).
    pub fn decommit(&self, address: usize, size: usize) -> Result<()> {
        self.inside(address, size)?;
        self.space.free(address, size, FreeType::DECOMMIT)
    }

    /// Change the protection of the committed pages of `[address, address + size)`,
    /// which must lie inside: `protect(address, size, protect)`. Returns the first page's
    /// old protection.
    pub fn protect(&self, address: usize, size: usize, protect: Protection) -> Result<Protection> {
        self.inside(address, size)?;
        self.space.protect(address, size, protect)
    }

    /// `MEM_RESET` of `[address, address + size)`, which must lie inside (see
    /// [`AddressSpace::reset`]).
    pub fn reset(&self, address: usize, size: usize) -> Result<()> {
        self.inside(address, size)?;
        self.space.reset(address, size)
    }

    /// `MEM_RESET_UNDO` of `[address, address + size)`, which must lie inside (see
    /// [`AddressSpace::reset_undo`]).
    pub fn reset_undo(&self, address: usize, size: usize) -> Result<ResetUndo> {
        self.inside(address, size)?;
        self.space.reset_undo(address, size)
    }
}

impl<S: VirtualSpace> Drop for Reservation<S> {
    fn drop(&mut self) {
        if self.owned {
            // (A failure is not reported: see the type's docs.)
            let _ = self.space.free(self.base, 0, FreeType::RELEASE);
        }
    }
}

impl<B: crate::backend::Backend> AddressSpace<B> {
    /// Reserve `size` bytes (rounded up to whole pages) at an address the space picks,
    /// released when the returned guard is dropped: see [`Reservation`]. For other types
    /// (write watch, top-down, a fixed address) use
    /// [`Reservation::with_type`]`(&space, ..)`. (Not named `reserve`: an inherent method
    /// of that name would take the place of a `reserve` of a caller's own trait on
    /// spaces, as this crate's benchmarks have.)
    pub fn reservation(&self, size: usize, protect: Protection) -> Result<Reservation<&Self>> {
        Reservation::new(self, size, protect)
    }
}
