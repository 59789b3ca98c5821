//! Page-run bookkeeping: ordered interval maps whose cost depends on the number of
//! distinct runs, never on the number of pages.
//!
//! - [`RunMap`]: a range split into maximal runs of equal value (coalesced on every
//!   change), so a 1 TiB reservation with one state is one entry.
//! - [`FreeSpace`]: the free, allocatable gaps of an address space (64 KiB aligned).
//! - [`Book`]: the reservations of a space, each with its page runs.
//!
//! Every operation is `O(log n + runs touched)`.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::backend::ReserveOptions;
use crate::flags::Protection;

/// A range `[start, end)` split into runs of equal value; adjacent runs always differ.
#[derive(Debug, Clone)]
pub(crate) struct RunMap<V> {
    /// Run start → value; a run extends to the next key or to `end`.
    starts: BTreeMap<usize, V>,
    end: usize,
}

impl<V: Copy + Eq> RunMap<V> {
    /// One run covering `range` with value `v`.
    pub fn new(range: Range<usize>, v: V) -> Self {
        let mut starts = BTreeMap::new();
        starts.insert(range.start, v);
        RunMap { starts, end: range.end }
    }

    /// The run containing `addr` (which must lie inside the map) and its value.
    pub fn get(&self, addr: usize) -> (Range<usize>, V) {
        let (&start, &v) = self.starts.range(..=addr).next_back().expect("address inside the run map");
        let end = self.starts.range(addr + 1..).next().map_or(self.end, |(&k, _)| k);
        (start..end, v)
    }

    /// The runs intersecting `range`, clipped to it, in address order.
    pub fn runs(&self, range: Range<usize>) -> impl Iterator<Item = (Range<usize>, V)> + '_ {
        let first = self.starts.range(..=range.start).next_back().map(|(&k, &v)| (k, v));
        let rest = self.starts.range(range.start + 1..range.end).map(|(&k, &v)| (k, v));
        let mut it = first.into_iter().chain(rest).peekable();
        let map_end = self.end;
        std::iter::from_fn(move || {
            let (start, v) = it.next()?;
            let end = it.peek().map_or(map_end, |&(k, _)| k);
            Some((start.max(range.start)..end.min(range.end), v))
        })
    }

    /// Give every address of `range` the value `v`, coalescing with neighbours.
    pub fn set(&mut self, range: Range<usize>, v: V) {
        let (s, e) = (range.start, range.end);
        if s >= e {
            return;
        }
        let after = (e < self.end).then(|| self.get(e).1);
        let inner: Vec<usize> = self.starts.range(s..e).map(|(&k, _)| k).collect();
        for k in inner {
            self.starts.remove(&k);
        }
        let before = self.starts.range(..s).next_back().map(|(_, &b)| b);
        if before != Some(v) {
            self.starts.insert(s, v);
        }
        if let Some(a) = after {
            if a == v {
                self.starts.remove(&e);
            } else {
                self.starts.insert(e, a);
            }
        }
    }

    /// How many runs the map holds.
    pub fn len(&self) -> usize {
        self.starts.len()
    }
}

/// The allocatable free gaps of an address space, 64 KiB aligned at both ends.
#[derive(Debug, Clone, Default)]
pub(crate) struct FreeSpace {
    /// Gap start → gap end.
    gaps: BTreeMap<usize, usize>,
}

impl FreeSpace {
    /// All of `range` free.
    pub fn new(range: Range<usize>) -> Self {
        let mut gaps = BTreeMap::new();
        if range.start < range.end {
            gaps.insert(range.start, range.end);
        }
        FreeSpace { gaps }
    }

    /// Whether all of `range` is inside one free gap.
    pub fn contains(&self, range: &Range<usize>) -> bool {
        self.gaps.range(..=range.start).next_back().is_some_and(|(_, &end)| range.end <= end && range.start < end)
    }

    /// Mark every free address of `range` as taken.
    pub fn take(&mut self, range: &Range<usize>) {
        let mut touched: Vec<(usize, usize)> = Vec::new();
        if let Some((&s, &e)) = self.gaps.range(..range.start).next_back() {
            if e > range.start {
                touched.push((s, e));
            }
        }
        touched.extend(self.gaps.range(range.start..range.end).map(|(&s, &e)| (s, e)));
        for (s, e) in touched {
            self.gaps.remove(&s);
            if s < range.start {
                self.gaps.insert(s, range.start);
            }
            if e > range.end {
                self.gaps.insert(range.end, e);
            }
        }
    }

    /// Mark `range` (none of which is free now) as free, merging with neighbours.
    pub fn give(&mut self, range: Range<usize>) {
        let (mut s, mut e) = (range.start, range.end);
        if let Some((&ps, &pe)) = self.gaps.range(..s).next_back() {
            if pe == s {
                self.gaps.remove(&ps);
                s = ps;
            }
        }
        if let Some(ne) = self.gaps.remove(&e) {
            e = ne;
        }
        self.gaps.insert(s, e);
    }

    /// A base for `size` bytes aligned to `align`: the lowest that fits, or with
    /// `top_down` the highest.
    pub fn find(&self, size: usize, align: usize, top_down: bool) -> Option<usize> {
        let fits = |(&s, &e): (&usize, &usize)| -> Option<usize> {
            if top_down {
                let base = e.checked_sub(size)? & !(align - 1);
                (base >= s).then_some(base)
            } else {
                let base = s.checked_add(align - 1)? & !(align - 1);
                (base.checked_add(size)? <= e).then_some(base)
            }
        };
        if top_down {
            self.gaps.iter().rev().find_map(fits)
        } else {
            self.gaps.iter().find_map(fits)
        }
    }

    /// The largest free gap, in bytes.
    pub fn largest(&self) -> usize {
        self.gaps.iter().map(|(&s, &e)| e - s).max().unwrap_or(0)
    }

    /// How many gaps there are.
    pub fn count(&self) -> usize {
        self.gaps.len()
    }
}

/// The state of a page of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PageState {
    /// Reserved (never committed, or decommitted).
    Reserved,
    /// Committed with this protection (GUARD included while armed).
    Committed(Protection),
}

/// One reservation ("allocation").
#[derive(Debug, Clone)]
pub(crate) struct Reservation {
    /// First address (a multiple of 64 KiB).
    pub base: usize,
    /// One past the last page.
    pub end: usize,
    /// The protection given when it was made.
    pub alloc_protect: Protection,
    /// Backend options it was made with.
    pub opts: ReserveOptions,
    /// Made with `MEM_PHYSICAL`.
    pub physical: bool,
    /// Page states.
    pub pages: RunMap<PageState>,
    /// Locked pages (`VirtualLock`), made on first use.
    pub locked: Option<RunMap<bool>>,
    /// Committed bytes.
    pub committed: usize,
    /// An operation on it is under way (its side effects run outside the space's lock).
    pub busy: bool,
}

impl Reservation {
    /// The range it blocks for other reservations: up to the end of its last granule.
    pub fn claim(&self) -> Range<usize> {
        self.base..crate::rules::round_up(self.end, crate::rules::GRANULE).unwrap_or(usize::MAX)
    }

    /// Whether any page of `range` is locked.
    pub fn locked_runs(&self, range: Range<usize>) -> Vec<Range<usize>> {
        match &self.locked {
            None => Vec::new(),
            Some(m) => m.runs(range).filter(|(_, l)| *l).map(|(r, _)| r).collect(),
        }
    }
}

/// All reservations of a space and the free space around them.
#[derive(Debug, Clone)]
pub(crate) struct Book {
    /// Base → reservation.
    pub reservations: BTreeMap<usize, Reservation>,
    /// Allocatable free gaps.
    pub free: FreeSpace,
    /// Ranges claimed by reservations still being made: base → claim end.
    pub pending: BTreeMap<usize, usize>,
    /// Committed bytes in all reservations (charged before side effects run).
    pub committed: usize,
    /// Reserved bytes in all reservations.
    pub reserved: usize,
    /// The commit limit, if any.
    pub commit_limit: Option<usize>,
}

impl Book {
    /// A book with `range` free.
    pub fn new(range: Range<usize>) -> Self {
        Book {
            reservations: BTreeMap::new(),
            free: FreeSpace::new(range),
            pending: BTreeMap::new(),
            committed: 0,
            reserved: 0,
            commit_limit: None,
        }
    }

    /// The base of the reservation containing `addr`.
    pub fn containing(&self, addr: usize) -> Option<usize> {
        self.reservations.range(..=addr).next_back().filter(|(_, r)| addr < r.end).map(|(&b, _)| b)
    }

    /// The base of the first reservation starting after `addr`.
    pub fn next_after(&self, addr: usize) -> Option<usize> {
        self.reservations.range(addr.saturating_add(1)..).next().map(|(&b, _)| b)
    }

    /// Whether a pending reservation claims any of `range`.
    pub fn pending_overlaps(&self, range: &Range<usize>) -> bool {
        self.pending.range(..range.end).next_back().is_some_and(|(_, &e)| e > range.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(m: &RunMap<u8>, r: Range<usize>) -> Vec<(Range<usize>, u8)> {
        m.runs(r).collect()
    }

    #[test]
    fn runmap_split_and_coalesce() {
        let mut m = RunMap::new(0..100, 0u8);
        m.set(10..20, 1);
        assert_eq!(collect(&m, 0..100), vec![(0..10, 0), (10..20, 1), (20..100, 0)]);
        m.set(20..30, 1);
        assert_eq!(collect(&m, 0..100), vec![(0..10, 0), (10..30, 1), (30..100, 0)]);
        m.set(0..100, 0);
        assert_eq!(m.len(), 1);
        m.set(90..100, 2);
        m.set(0..10, 2);
        assert_eq!(collect(&m, 5..95), vec![(5..10, 2), (10..90, 0), (90..95, 2)]);
        assert_eq!(m.get(50), (10..90, 0));
        m.set(10..90, 2);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn freespace_take_give_find() {
        let mut f = FreeSpace::new(0x10000..0x100000);
        assert_eq!(f.find(0x10000, 0x10000, false), Some(0x10000));
        assert_eq!(f.find(0x10000, 0x10000, true), Some(0xF0000));
        f.take(&(0x10000..0x30000));
        assert_eq!(f.find(0x10000, 0x10000, false), Some(0x30000));
        assert!(!f.contains(&(0x20000..0x40000)));
        assert!(f.contains(&(0x30000..0x40000)));
        f.give(0x10000..0x30000);
        assert_eq!(f.count(), 1);
        f.take(&(0x50000..0x60000));
        assert_eq!(f.count(), 2);
        assert_eq!(f.largest(), 0xA0000);
    }
}
