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

/// How many of the ascending `v` come before the first for which `before` is false
/// (`v.partition_point(before)`), with fewer instructions for a slice whose length is
/// not known when compiling: one compare leaves a window of a power of two less one of
/// the elements, and that window is bisected by the standard library's search at a
/// length fixed for that power of two, which the compiler unrolls into three
/// instructions a step (a compare and a conditional move chosen without a branch, and
/// an add), where its loop over any length takes nine (a release bisects the
/// reservation directory's ~300 block keys at 333 334 reservations: nine steps).
/// Windows up to 4095 long are unrolled; longer ones take the loop.
#[inline(always)]
fn bisect(v: &[usize], before: impl Fn(usize) -> bool) -> usize {
    let n = v.len();
    if n == 0 {
        return 0;
    }
    // The greatest power of two at most `n`.
    let p = 1 << (usize::BITS - 1 - n.leading_zeros());
    // `n - p`, without a check that `p` is at most `n` (it is `n`'s highest bit).
    let m = n ^ p;
    // The answer lies in `lo..=lo + p - 1`: past `m` when `v[m]` comes before (then in
    // `m + 1..=n`), else at most `m`, which is less than `p`.
    // SAFETY: `m < n` (`p >= 1`).
    let lo = if before(unsafe { *v.get_unchecked(m) }) { m + 1 } else { 0 };
    // SAFETY: `lo + p - 1 <= n`: either `m + 1 + p - 1 = n`, or `p - 1 < n`.
    let w = unsafe { v.get_unchecked(lo..lo + p - 1) };
    /// [`bisect`]'s window `w`, `N` long, by a search the compiler unrolls.
    #[inline(always)]
    fn fixed<const N: usize>(w: &[usize], before: impl Fn(usize) -> bool) -> usize {
        let w: &[usize; N] = w.try_into().expect("a window of the length its arm is for");
        w.partition_point(|&x| before(x))
    }
    lo + match p {
        1 => 0,
        2 => fixed::<1>(w, before),
        4 => fixed::<3>(w, before),
        8 => fixed::<7>(w, before),
        16 => fixed::<15>(w, before),
        32 => fixed::<31>(w, before),
        64 => fixed::<63>(w, before),
        128 => fixed::<127>(w, before),
        256 => fixed::<255>(w, before),
        512 => fixed::<511>(w, before),
        1024 => fixed::<1023>(w, before),
        2048 => fixed::<2047>(w, before),
        4096 => fixed::<4095>(w, before),
        _ => w.partition_point(|&x| before(x)),
    }
}

/// Ask the processor to start loading every cache line of `v` into its caches, without
/// waiting for any of them: a hint, so that later loads of the lines that turn out to be
/// needed (which of them depends on what the first ones hold) find them on their way
/// instead of each waiting for memory after the one before. No effect where the target
/// has no prefetch instruction.
#[inline(always)]
fn prefetch_lines<T>(v: &T) {
    let start = (v as *const T).cast::<u8>();
    // Lines of 64 bytes; one more than the size needs for a value that may not start a
    // line (the extra address may lie past the value: a prefetch never faults), none for
    // a type aligned to lines (a free-space leaf: its fifth line was the next leaf's).
    let extra = usize::from(std::mem::align_of::<T>() % 64 != 0);
    for k in 0..std::mem::size_of::<T>().div_ceil(64) + extra {
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

#[cfg(test)]
mod tests {
    use super::bisect;

    /// `bisect` answers as `partition_point` for every length up to a few powers of two
    /// and every split point, with keys equal to the compared value too.
    #[test]
    fn bisect_matches_partition_point() {
        for n in (0..=70usize).chain([255, 256, 257, 511, 4095, 4096, 4097, 9000]) {
            let v: Vec<usize> = (0..n).map(|i| 10 + 2 * (i / 2)).collect();
            for key in (0..=(12 + 2 * n)).step_by(if n > 70 { 7 } else { 1 }) {
                assert_eq!(bisect(&v, |x| x <= key), v.partition_point(|&x| x <= key), "n {n} key {key} <=");
                assert_eq!(bisect(&v, |x| x < key), v.partition_point(|&x| x < key), "n {n} key {key} <");
            }
        }
    }
}
