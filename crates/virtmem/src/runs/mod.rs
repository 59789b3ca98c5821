//! Page-run bookkeeping: ordered interval structures whose cost depends on the number
//! of distinct runs, never on the number of pages.
//!
//! - [`RunMap`]: a range split into maximal runs of equal value (coalesced on every
//!   change), so a 1 TiB reservation with one state is one entry. Up to [`FEW`] runs
//!   live in a sorted inline vector (no allocation for one or two runs); beyond that in
//!   a B-tree.
//! - [`FreeSpace`]: the free, allocatable gaps of an address space (64 KiB aligned), in
//!   a B+-tree whose leaves hold the gaps inline and whose inner nodes hold each child's
//!   largest gap, so that first-fit (lowest or highest address) placement is `O(log n)`
//!   however many small gaps lie before it.
//! - [`Reservations`]: the reservations of a space by base address, in a three-level
//!   B+-tree whose leaves hold the records inline (a lookup at 10^6 reservations touches
//!   two cache lines outside the caches: a leaf's bases and the record).
//! - [`Book`]: the reservations of a space, each with its page runs, and the free space.
//!
//! Every operation is `O(log n + runs touched)`; memory is proportional to the number of
//! runs and gaps.
//!
//! [`FEW`]: map::FEW
//! [`FreeSpace`]: free::FreeSpace
//! [`Reservations`]: reservations::Reservations

mod book;
mod free;
mod map;
mod reservations;

pub(crate) use book::Book;
pub(crate) use map::{RunAt, RunMap};
pub(crate) use reservations::{PageState, Reservation, Slot};

const NIL: u32 = u32::MAX;

/// Ask the processor to start loading every cache line of `v` into its caches, without
/// waiting for any of them: a hint, so that later loads of the lines that turn out to be
/// needed (which of them depends on what the first ones hold) find them on their way
/// instead of each waiting for memory after the one before. No effect where the target
/// has no prefetch instruction.
#[inline(always)]
fn prefetch_lines<T>(v: &T) {
    let start = (v as *const T).cast::<u8>();
    // Lines of 64 bytes; one more than the size needs, for a value that does not start a
    // line (the extra address may lie past the value: a prefetch never faults).
    for k in 0..std::mem::size_of::<T>().div_ceil(64) + 1 {
        prefetch(start.wrapping_add(64 * k));
    }
}

/// Ask the processor to start loading the cache line holding `p` (see [`prefetch_lines`]).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetch` (PREFETCHT0) is only a hint to the caches: it never faults and
    // changes no state the program can see, whatever the address, valid or not.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
