//! The backend's own record of what it did to the kernel: which ranges it has mapped
//! (live reservations and a pool of released ranges kept for reuse), and the kernel
//! state of their pages where that differs from "fresh" (inaccessible, unguarded,
//! never accessible since last emptied). This is not Win32 bookkeeping: the engine's
//! page runs say what a page *is*; this says how the kernel was told.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::backend::Access;

/// A sparse map from page ranges to values; ranges not in the map have no value.
/// Adjacent ranges with equal values are merged.
#[derive(Debug)]
pub struct IntervalMap<V> {
    /// start → (end, value); ranges never overlap.
    map: BTreeMap<usize, (usize, V)>,
}

impl<V> Default for IntervalMap<V> {
    fn default() -> Self {
        IntervalMap { map: BTreeMap::new() }
    }
}

impl<V: Copy + Eq> IntervalMap<V> {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// The pieces of `range`, each with its value (`None` for gaps), in order.
    pub fn runs(&self, range: Range<usize>) -> Vec<(Range<usize>, Option<V>)> {
        let mut out = Vec::new();
        let mut cursor = range.start;
        let first = self.map.range(..=range.start).next_back().filter(|(_, (e, _))| *e > range.start);
        let rest = self.map.range(range.start + 1..range.end);
        for (&s, &(e, v)) in first.into_iter().chain(rest) {
            if s > cursor {
                out.push((cursor..s, None));
            }
            let (a, b) = (s.max(cursor), e.min(range.end));
            if a < b {
                out.push((a..b, Some(v)));
            }
            cursor = cursor.max(b);
        }
        if cursor < range.end {
            out.push((cursor..range.end, None));
        }
        out
    }

    /// Whether any part of `range` has a value.
    #[cfg(test)]
    pub fn any(&self, range: Range<usize>) -> bool {
        self.map.range(..range.end).next_back().is_some_and(|(_, (e, _))| *e > range.start)
    }

    /// Give every page of `range` the value `v` (`None` removes).
    pub fn set(&mut self, range: Range<usize>, v: Option<V>) {
        if range.start >= range.end {
            return;
        }
        // Cut the entries overlapping `range` out.
        let mut touched: Vec<(usize, usize, V)> = Vec::new();
        if let Some((&s, &(e, val))) = self.map.range(..range.start).next_back() {
            if e > range.start {
                touched.push((s, e, val));
            }
        }
        touched.extend(self.map.range(range.start..range.end).map(|(&s, &(e, val))| (s, e, val)));
        for &(s, e, val) in &touched {
            self.map.remove(&s);
            if s < range.start {
                self.map.insert(s, (range.start, val));
            }
            if e > range.end {
                self.map.insert(range.end, (e, val));
            }
        }
        let Some(v) = v else { return };
        let (mut s, mut e) = (range.start, range.end);
        if let Some((&ps, &(pe, pv))) = self.map.range(..s).next_back() {
            if pe == s && pv == v {
                self.map.remove(&ps);
                s = ps;
            }
        }
        if let Some(&(ne, nv)) = self.map.get(&e) {
            if nv == v {
                self.map.remove(&e);
                e = ne;
            }
        }
        self.map.insert(s, (e, v));
    }

    /// The range containing `addr` and its value.
    pub fn at(&self, addr: usize) -> Option<(Range<usize>, V)> {
        self.map.range(..=addr).next_back().filter(|(_, (e, _))| *e > addr).map(|(&s, &(e, v))| (s..e, v))
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every range and value.
    pub fn iter(&self) -> impl Iterator<Item = (Range<usize>, V)> + '_ {
        self.map.iter().map(|(&s, &(e, v))| (s..e, v))
    }
}

/// How the kernel was told to treat a page this backend mapped. A page with no entry
/// is inaccessible (`PROT_NONE`), unguarded and empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    /// The protection of its kernel mapping (`mprotect`).
    pub prot: Access,
    /// Guard-region markers make it fault whatever `prot` says (`MADV_GUARD_INSTALL`);
    /// it holds no data.
    pub guarded: bool,
    /// It has been accessible since it was last emptied, so it may hold data.
    pub touched: bool,
}

impl Kernel {
    /// The access the CPU really grants.
    pub fn access(&self) -> Access {
        if self.guarded {
            Access::None
        } else {
            self.prot
        }
    }
}

/// What a live reservation was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub end: usize,
    pub write_watch: bool,
    pub large: bool,
}

/// Everything the backend remembers; see the module docs.
#[derive(Debug, Default)]
pub struct State {
    /// Live reservations by the start of their mapped extent.
    pub live: BTreeMap<usize, Extent>,
    /// Released ranges still mapped (inaccessible, empty), ready for reuse.
    pub pool: IntervalMap<()>,
    /// Bytes in the pool.
    pub pool_bytes: usize,
    /// Per-page kernel state (entries only where it differs from fresh).
    pub kernel: IntervalMap<Kernel>,
}

impl State {
    /// The mapped ranges of this backend (live or pooled) intersecting `range`, in
    /// order (adjacent ones may touch).
    pub fn owned_in(&self, range: Range<usize>) -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> =
            self.pool.runs(range.clone()).into_iter().filter(|(_, v)| v.is_some()).map(|(r, _)| r).collect();
        let first = self.live.range(..=range.start).next_back().filter(|(_, x)| x.end > range.start);
        let rest = self.live.range(range.start + 1..range.end);
        for (&s, x) in first.into_iter().chain(rest) {
            out.push(s..x.end);
        }
        out.sort_by_key(|r| r.start);
        out
    }

    /// `range` widened over the guard-marked pages next to it (inside `within`).
    pub fn widen_over_guards(&self, range: &Range<usize>, within: &Range<usize>) -> Range<usize> {
        let (mut s, mut e) = (range.start, range.end);
        while s > within.start {
            match self.kernel.at(s - 1) {
                Some((r, k)) if k.guarded => s = r.start.max(within.start),
                _ => break,
            }
        }
        while e < within.end {
            match self.kernel.at(e) {
                Some((r, k)) if k.guarded => e = r.end.min(within.end),
                _ => break,
            }
        }
        s..e
    }

    /// The live extent containing `addr`.
    pub fn extent_of(&self, addr: usize) -> Option<(usize, Extent)> {
        self.live.range(..=addr).next_back().filter(|(_, x)| x.end > addr).map(|(&s, &x)| (s, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_map_sets_splits_and_merges() {
        let mut m = IntervalMap::new();
        m.set(10..20, Some(1));
        m.set(20..30, Some(1));
        assert_eq!(m.len(), 1);
        m.set(15..25, Some(2));
        assert_eq!(
            m.runs(0..40),
            vec![(0..10, None), (10..15, Some(1)), (15..25, Some(2)), (25..30, Some(1)), (30..40, None)]
        );
        m.set(12..28, None);
        assert_eq!(m.runs(10..30), vec![(10..12, Some(1)), (12..28, None), (28..30, Some(1))]);
        assert!(m.any(11..13));
        assert!(!m.any(12..28));
        m.set(12..28, Some(1));
        assert_eq!(m.len(), 1);
    }
}
