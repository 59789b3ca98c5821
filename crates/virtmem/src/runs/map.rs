//! The page-run map, [`RunMap`] (see the [module's docs](super)).

use std::collections::BTreeMap;
use std::ops::{Bound, Range};

use smallvec::SmallVec;

/// How many runs a [`RunMap`] keeps in its sorted vector before moving them to a B-tree
/// (an edit of the vector moves at most this many entries).
pub(crate) const FEW: usize = 32;

#[derive(Debug, Clone)]
enum Store<V> {
    /// Run starts and values, ascending; the first start is the map's start.
    Few(SmallVec<[(usize, V); 2]>),
    /// Run start → value.
    Many(BTreeMap<usize, V>),
}

/// A range `[start, end)` split into runs of equal value; adjacent runs always differ.
#[derive(Debug, Clone)]
pub(crate) struct RunMap<V> {
    store: Store<V>,
    pub(super) end: usize,
}

/// Where [`RunMap::find`] found a run (its place among a small map's runs), for
/// [`RunMap::set_run`] to change it without searching again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunAt(usize);

/// The runs of a [`RunMap`] intersecting a range, clipped to it, in address order.
pub(crate) struct Runs<'a, V> {
    inner: RunsInner<'a, V>,
    range: Range<usize>,
    map_end: usize,
}

enum RunsInner<'a, V> {
    Few(&'a [(usize, V)]),
    Many { first: Option<(usize, V)>, rest: std::iter::Peekable<std::collections::btree_map::Range<'a, usize, V>> },
}

impl<V: Copy> Iterator for Runs<'_, V> {
    type Item = (Range<usize>, V);

    fn next(&mut self) -> Option<Self::Item> {
        let (start, v, next) = match &mut self.inner {
            RunsInner::Few(slice) => {
                let (&(start, v), rest) = slice.split_first()?;
                if start >= self.range.end {
                    return None;
                }
                *slice = rest;
                (start, v, rest.first().map(|&(k, _)| k))
            }
            RunsInner::Many { first, rest } => {
                let (start, v) = match first.take() {
                    Some(f) => f,
                    None => rest.next().map(|(&k, &v)| (k, v))?,
                };
                (start, v, rest.peek().map(|(&k, _)| k))
            }
        };
        let end = next.unwrap_or(self.map_end);
        Some((start.max(self.range.start)..end.min(self.range.end), v))
    }
}

/// Remove the `n` runs of `few` from place `at` on (all there). (Runs are `Copy`: the
/// last runs are cut off by a length change, others by a shift of the tail; a
/// `SmallVec::remove` was a call of ~39 instructions, most of a decommit's edit of its
/// reservation's runs.)
#[inline(always)]
fn remove_runs<V: Copy>(few: &mut SmallVec<[(usize, V); 2]>, at: usize, n: usize) {
    let len = few.len();
    debug_assert!(at + n <= len);
    if at + n < len {
        few.copy_within(at + n..len, at);
    }
    few.truncate(len - n);
}

/// The runs of a [`Store::Few`] from the one holding `addr` on.
fn from_run_of<V>(few: &[(usize, V)], addr: usize) -> &[(usize, V)] {
    let i = few.partition_point(|&(k, _)| k <= addr).max(1) - 1;
    &few[i..]
}

impl<V: Copy + Eq> RunMap<V> {
    /// Whether it holds nothing on the heap (its runs in their inline room): dropping
    /// it would free nothing.
    #[inline(always)]
    pub(crate) fn owns_nothing(&self) -> bool {
        matches!(&self.store, Store::Few(v) if !v.spilled())
    }

    /// One run covering `range` with value `v`.
    pub fn new(range: Range<usize>, v: V) -> Self {
        let mut few = SmallVec::new();
        few.push((range.start, v));
        RunMap { store: Store::Few(few), end: range.end }
    }

    /// The run containing `addr` (which must lie inside the map) and its value.
    #[inline]
    pub fn get(&self, addr: usize) -> (Range<usize>, V) {
        let (run, v, _) = self.find(addr);
        (run, v)
    }

    /// [`RunMap::get`], also telling where the run is, for a later
    /// [`RunMap::set_run`] on it.
    #[inline]
    pub fn find(&self, addr: usize) -> (Range<usize>, V, RunAt) {
        match &self.store {
            Store::Few(few) => {
                // (The runs' slice taken once: each access to the `SmallVec` itself
                // asks again whether it is inline.)
                let few = few.as_slice();
                // (A reservation mostly has a few runs: counted one by one then, with
                // no bisection's set-up: 8 instructions fewer a `VirtualProtect` on Linux,
                // callgrind, `linux_profile protect`, 787.0 -> 779.0.)
                let i = if few.len() <= 4 {
                    let mut i = 1;
                    while i < few.len() && few[i].0 <= addr {
                        i += 1;
                    }
                    i
                } else {
                    few.partition_point(|&(k, _)| k <= addr)
                };
                debug_assert!(i > 0, "address inside the run map");
                let (start, v) = few[i.max(1) - 1];
                let end = few.get(i).map_or(self.end, |&(k, _)| k);
                (start..end, v, RunAt(i.max(1) - 1))
            }
            Store::Many(map) => {
                let (run, v) = Self::get_many(map, addr, self.end);
                (run, v, RunAt(usize::MAX))
            }
        }
    }

    /// [`RunMap::get`] in a [`Store::Many`] ending at `end` (apart, so that the usual
    /// case is small enough to inline).
    #[inline(never)]
    fn get_many(map: &BTreeMap<usize, V>, addr: usize, end: usize) -> (Range<usize>, V) {
        let (&start, &v) = map.range(..=addr).next_back().expect("address inside the run map");
        let end = map.range((Bound::Excluded(addr), Bound::Unbounded)).next().map_or(end, |(&k, _)| k);
        (start..end, v)
    }

    /// The runs intersecting `range`, clipped to it, in address order.
    pub fn runs(&self, range: Range<usize>) -> Runs<'_, V> {
        let inner = match &self.store {
            _ if range.start >= range.end => RunsInner::Few(&[]),
            Store::Few(few) => RunsInner::Few(from_run_of(few, range.start)),
            Store::Many(map) => RunsInner::Many {
                first: map.range(..=range.start).next_back().map(|(&k, &v)| (k, v)),
                rest: map.range((Bound::Excluded(range.start), Bound::Excluded(range.end))).peekable(),
            },
        };
        Runs { inner, range, map_end: self.end }
    }

    /// Call `f` on each run intersecting `range`, clipped to it, in address order: what
    /// [`RunMap::runs`] yields, without an iterator's state between the runs (a release
    /// or decommit visits every run this way).
    pub fn for_each_run(&self, range: Range<usize>, mut f: impl FnMut(Range<usize>, V)) {
        if range.start >= range.end {
            return;
        }
        match &self.store {
            Store::Few(few) => {
                let few = from_run_of(few, range.start);
                for (j, &(start, v)) in few.iter().enumerate() {
                    if start >= range.end {
                        break;
                    }
                    let end = few.get(j + 1).map_or(self.end, |&(k, _)| k);
                    f(start.max(range.start)..end.min(range.end), v);
                }
            }
            Store::Many(_) => self.runs(range).for_each(|(r, v)| f(r, v)),
        }
    }

    /// [`RunMap::set`] for a caller whose `range` is usually exactly the run that
    /// [`RunMap::find`] found at `at` (a protection change of what one call committed),
    /// with neighbours that do not have `v`: that case is inlined, without a search (the
    /// run just takes the new value); any other goes to `set`. `at` is only a hint: one
    /// from before a change of the map, or of another run, is checked and costs the
    /// general way.
    #[inline(always)]
    pub fn set_run(&mut self, at: RunAt, range: Range<usize>, v: V) {
        if let Store::Few(few) = &mut self.store {
            let (s, e) = (range.start, range.end);
            let lo = at.0;
            let runs = few.as_mut_slice();
            if let Some(&(k, _)) = runs.get(lo) {
                // (Run starts are distinct: the run starting at `s` is the one at `lo`.)
                let next = runs.get(lo + 1).copied();
                if k == s
                    && next.map_or(self.end, |(k, _)| k) == e
                    && next.map_or(true, |(_, n)| n != v)
                    && (lo == 0 || runs[lo - 1].1 != v)
                {
                    runs[lo].1 = v;
                    return;
                }
            }
        }
        self.set(range, v)
    }

    /// [`RunMap::set`] for a caller that found the run holding `range.start` with
    /// [`RunMap::find`] (`at`) and whose `range` usually lies in that run: a decommit or
    /// commit of pages of one run. Inlined without a search when `range` lies in the run
    /// at `at` and the change is made in place: the range is the whole run (which takes
    /// `v`, or is taken over by a neighbour that has it), or it starts the run and the
    /// run before has `v`, or it ends the run and the run after has `v` (the boundary
    /// between the two moves), or the run already has `v`. Any other change goes to
    /// `set`. `at` is only a hint: whether `range` lies in the run there is checked, so
    /// a wrong or stale one costs the general way and does no harm. (Always inlined:
    /// its callers' `v` is often a constant, and as a call of its own it cost a
    /// decommit ~70 instructions, most of them the call's.)
    #[inline(always)]
    pub fn set_at(&mut self, at: RunAt, range: Range<usize>, v: V) {
        let (s, e) = (range.start, range.end);
        if let Store::Few(few) = &mut self.store {
            let lo = at.0;
            let runs = few.as_mut_slice();
            if let Some(&(k, cur)) = runs.get(lo) {
                let next = runs.get(lo + 1).copied();
                let next_start = next.map_or(self.end, |(k, _)| k);
                // (Run starts ascend: `[s, e)` lies in the run at `lo` exactly when
                // this holds, whatever `lo` is.)
                if k <= s && s < e && e <= next_start {
                    if cur == v {
                        return;
                    }
                    let next_v = next.is_some_and(|(_, n)| n == v);
                    if k == s {
                        let before_v = lo > 0 && runs[lo - 1].1 == v;
                        if e == next_start {
                            match (before_v, next_v) {
                                (false, false) => runs[lo].1 = v,
                                // The run before takes it over.
                                (true, false) => remove_runs(few, lo, 1),
                                // The run after does: it starts at `s` now.
                                (false, true) => {
                                    runs[lo].1 = v;
                                    remove_runs(few, lo + 1, 1);
                                }
                                // All three are one run.
                                (true, true) => remove_runs(few, lo, 2),
                            }
                            return;
                        }
                        if before_v {
                            // The run before grows to `e`.
                            runs[lo].0 = e;
                            return;
                        }
                    } else if e == next_start && next_v {
                        // The run after grows down to `s`.
                        runs[lo + 1].0 = s;
                        return;
                    }
                }
            }
        }
        self.set(range, v)
    }

    /// Give every address of `range` the value `v`, coalescing with neighbours.
    pub fn set(&mut self, range: Range<usize>, v: V) {
        let (s, e) = (range.start, range.end);
        if s >= e {
            return;
        }
        match &mut self.store {
            Store::Few(few) => {
                // Runs starting in [s, e] are replaced by at most two: `v` at `s` (unless
                // the run before already has it) and what was at `e` (unless it is `v`).
                let lo = few.partition_point(|&(k, _)| k < s);
                // The usual cases first, without the general splice: `range` is exactly
                // the run at `lo` and neither neighbour has `v`, so the run just takes
                // the new value, or one has it and takes the run over (a decommit next
                // to reserved pages, say); or `range` lies in one run, at its start or
                // at its end, and the run it touches there has `v` (a commit next to
                // pages committed alike), so the boundary between the two moves.
                let runs = few.as_mut_slice();
                match runs.get(lo) {
                    Some(&(k, _)) if k == s => {
                        let next = runs.get(lo + 1).copied();
                        let next_start = next.map_or(self.end, |(k, _)| k);
                        let before_v = lo > 0 && runs[lo - 1].1 == v;
                        if next_start == e {
                            match (before_v, next.is_some_and(|(_, n)| n == v)) {
                                (false, false) => runs[lo].1 = v,
                                (true, false) => remove_runs(few, lo, 1),
                                (false, true) => {
                                    runs[lo].1 = v;
                                    remove_runs(few, lo + 1, 1);
                                }
                                (true, true) => remove_runs(few, lo, 2),
                            }
                            return;
                        }
                        if e < next_start && before_v {
                            // The run before grows to `e`.
                            runs[lo].0 = e;
                            return;
                        }
                    }
                    // (`lo > 0`: the run before starts below `s`.)
                    Some(&(k, n)) if k == e && n == v => {
                        // The run after grows down to `s`.
                        runs[lo].0 = s;
                        return;
                    }
                    _ => {}
                }
                let hi = few.partition_point(|&(k, _)| k <= e);
                let after = if e < self.end { Some(few[hi - 1].1) } else { None };
                let before = lo.checked_sub(1).map(|i| few[i].1);
                // At most two runs to put, in order (a fixed array: no vector to build).
                let mut put = [(s, v); 2];
                let mut n = 0;
                if before != Some(v) {
                    n = 1;
                }
                if let Some(a) = after.filter(|&a| a != v) {
                    put[n] = (e, a);
                    n += 1;
                }
                let removed = hi - lo;
                // Overwrite in place what can be, then insert or remove the difference
                // (by a shift of the tail: a smallvec drain or splice costs more than
                // the few runs it moves).
                let common = removed.min(n);
                few[lo..lo + common].copy_from_slice(&put[..common]);
                if n > removed {
                    for (j, &run) in put[common..n].iter().enumerate() {
                        few.insert(lo + common + j, run);
                    }
                } else if removed > n {
                    let len = few.len();
                    few.copy_within(hi..len, lo + common);
                    few.truncate(len - (removed - n));
                }
                if few.len() > FEW {
                    self.store = Store::Many(few.iter().copied().collect());
                }
            }
            Store::Many(map) => {
                let after = (e < self.end).then(|| map.range(..=e).next_back().map(|(_, &a)| a)).flatten();
                let inner: SmallVec<[usize; 8]> = map.range(s..e).map(|(&k, _)| k).collect();
                for k in inner {
                    map.remove(&k);
                }
                let before = map.range(..s).next_back().map(|(_, &b)| b);
                if before != Some(v) {
                    map.insert(s, v);
                }
                if let Some(a) = after {
                    if a == v {
                        map.remove(&e);
                    } else {
                        map.insert(e, a);
                    }
                }
                if map.len() <= FEW / 4 {
                    self.store = Store::Few(map.iter().map(|(&k, &v)| (k, v)).collect());
                }
            }
        }
    }

    /// How many runs the map holds.
    pub fn len(&self) -> usize {
        match &self.store {
            Store::Few(few) => few.len(),
            Store::Many(map) => map.len(),
        }
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

    /// `m`, a map of `model.len()` units from `base`, holds exactly `model`'s values in
    /// maximal runs: the first starting at `base`, the last ending at the map's end,
    /// adjacent runs differing; `get` and `len` agree.
    fn check_units(m: &RunMap<u8>, model: &[u8], base: usize) {
        let runs: Vec<_> = m.runs(base..base + model.len()).collect();
        let mut at = base;
        for (i, (r, v)) in runs.iter().enumerate() {
            assert_eq!(r.start, at, "runs {runs:?}, model {model:?}");
            assert!(r.end > r.start, "empty run in {runs:?}");
            assert!(model[r.start - base..r.end - base].iter().all(|x| x == v), "runs {runs:?}, model {model:?}");
            if i > 0 {
                assert_ne!(runs[i - 1].1, *v, "adjacent runs with one value: {runs:?}");
            }
            at = r.end;
        }
        assert_eq!(at, base + model.len());
        assert_eq!(m.end, base + model.len());
        assert_eq!(m.len(), runs.len(), "runs {runs:?}");
        for (u, &want) in model.iter().enumerate() {
            let (r, v) = m.get(base + u);
            assert_eq!(v, want);
            assert!(runs.contains(&(r, v)));
        }
    }

    /// Every range (the empty ones too) and value, by `set` and by `set_run` (with a
    /// right and a wrong hint), on a clone of `m` (which holds `model` from `base`),
    /// against the model. (Under Miri, the ranges starting at every `miri_stride`-th
    /// unit.)
    fn set_everywhere(m: &RunMap<u8>, model: &[u8], base: usize, miri_stride: usize) {
        let n = model.len();
        for s in (0..=n).step_by(if cfg!(miri) { miri_stride } else { 1 }) {
            for e in s..=n {
                for v in 0..3u8 {
                    let mut want = model.to_vec();
                    want[s..e].fill(v);
                    // `set`, then `set_run` and `set_at` with the place of the run
                    // holding the range's start, and with that of the first run (a wrong
                    // hint), and `set_at` with that of the last run and with a place
                    // past every run (wrong too).
                    for way in 0..7 {
                        let mut got = m.clone();
                        let hint = |m: &RunMap<u8>| match way {
                            1 | 3 => m.find(base + s.min(n - 1)).2,
                            5 => m.find(base + n - 1).2,
                            6 => RunAt(m.len()),
                            _ => m.find(base).2,
                        };
                        match way {
                            0 => got.set(base + s..base + e, v),
                            1 | 2 => got.set_run(hint(m), base + s..base + e, v),
                            _ => got.set_at(hint(m), base + s..base + e, v),
                        }
                        check_units(&got, &want, base);
                    }
                }
            }
        }
    }

    #[test]
    fn runmap_set_exhaustive_on_small_maps() {
        // Every map of 1 to 5 units over three values (so single-run maps, ranges at
        // the map's start and end, one-unit runs and ranges, every in-place case of
        // `set` and `set_run` and the general splice), every range and value.
        let base = 1000;
        for n in 1..=if cfg!(miri) { 4 } else { 5 } {
            for code in 0..3usize.pow(n) {
                let model: Vec<u8> = (0..n).map(|u| (code / 3usize.pow(u) % 3) as u8).collect();
                let mut m = RunMap::new(base..base + n as usize, model[0]);
                for (u, &v) in model.iter().enumerate().skip(1) {
                    m.set(base + u..base + u + 1, v);
                }
                check_units(&m, &model, base);
                set_everywhere(&m, &model, base, 1);
            }
        }
    }

    #[test]
    // `RunMap` has no unsafe code of its own (a `SmallVec` or a `BTreeMap`); the smaller
    // exhaustive test above and the model tests run its edits under Miri. This one (maps
    // of up to 76 units, every range, three ways) did not finish there in 45 minutes.
    #[cfg_attr(miri, ignore = "too slow under Miri; the run map has no unsafe code")]
    fn runmap_set_exhaustive_around_the_change_of_store() {
        // Runs of two units with values cycling 0, 1, 2: `k` runs. Few runs, up to just
        // below, at and past FEW (where a split moves the map to the B-tree), and a
        // B-tree holding few runs (it goes back to the vector only at FEW / 4 runs).
        let base = 0x40;
        let cycle = |k: usize| -> Vec<u8> { (0..2 * k).map(|u| (u / 2 % 3) as u8).collect() };
        // (Each unit's value given to the whole rest of the map: never more runs on the
        // way than at the end.)
        let build = |model: &[u8]| {
            let end = base + model.len();
            let mut m = RunMap::new(base..end, model[0]);
            for (u, &v) in model.iter().enumerate().skip(1) {
                m.set(base + u..end, v);
            }
            m
        };
        for k in [1, 2, FEW / 4, FEW / 4 + 1, FEW - 1, FEW, FEW + 1, FEW + 6] {
            let model = cycle(k);
            let m = build(&model);
            assert_eq!(matches!(m.store, Store::Many(_)), k > FEW, "{k} runs");
            check_units(&m, &model, base);
            set_everywhere(&m, &model, base, 9);
        }
        // A B-tree of FEW / 4 + 1 runs: FEW + 6 runs, then the tail made one run.
        let mut model = cycle(FEW + 6);
        let mut m = build(&model);
        let cut = 2 * FEW / 4;
        let tail = (model[cut - 1] + 1) % 3;
        m.set(base + cut..base + model.len(), tail);
        model[cut..].fill(tail);
        assert!(matches!(m.store, Store::Many(_)));
        assert_eq!(m.len(), FEW / 4 + 1);
        check_units(&m, &model, base);
        set_everywhere(&m, &model, base, 9);
    }

    mod model {
        //! The structures against naive per-unit models, over random operation sequences.
        use super::super::*;
        use proptest::prelude::*;

        const UNITS: usize = 80;

        fn check_runmap(m: &RunMap<u8>, model: &[u8], base: usize) {
            // Maximal runs, each matching the model, coalesced.
            let runs: Vec<_> = m.runs(base..base + UNITS).collect();
            let mut at = base;
            for (i, (r, v)) in runs.iter().enumerate() {
                assert_eq!(r.start, at);
                assert!(r.end > r.start);
                for u in r.clone() {
                    assert_eq!(model[u - base], *v, "unit {u}");
                }
                if i > 0 {
                    assert_ne!(runs[i - 1].1, *v, "adjacent runs must differ");
                }
                at = r.end;
            }
            assert_eq!(at, base + UNITS);
            assert_eq!(m.len(), runs.len());
            for (u, &want) in model.iter().enumerate() {
                let (r, v) = m.get(base + u);
                assert_eq!(v, want);
                assert!(r.contains(&(base + u)));
                assert!(runs.contains(&(r, v)));
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 3 } else { 300 }))]

            #[test]
            fn runmap_matches_model(ops in prop::collection::vec((0..UNITS, 0..UNITS, 0u8..3), 1..120)) {
                let base = 1000;
                let mut m = RunMap::new(base..base + UNITS, 0u8);
                let mut model = vec![0u8; UNITS];
                for (a, b, v) in ops {
                    let (s, e) = (a.min(b), a.max(b) + 1);
                    // (`set_run` and `set_at` must do what `set` does, whatever the
                    // range.)
                    if b % 3 != 1 {
                        // (With the place of the run holding the range's start, or of
                        // another run: a wrong hint must do no harm.)
                        let (_, _, at) = m.find(base + if a % 2 == 0 { s } else { (s + UNITS / 2) % UNITS });
                        if b % 3 == 0 {
                            m.set_run(at, base + s..base + e, v);
                        } else {
                            m.set_at(at, base + s..base + e, v);
                        }
                    } else {
                        m.set(base + s..base + e, v);
                    }
                    model[s..e].fill(v);
                    check_runmap(&m, &model, base);
                    // A clipped query sees the same values.
                    for (r, rv) in m.runs(base + s..base + e) {
                        prop_assert!(r.start >= base + s && r.end <= base + e);
                        prop_assert!(model[r.start - base..r.end - base].iter().all(|&x| x == rv));
                    }
                    // Giving a whole run a new value (the in-place case of `set` and
                    // `set_run` when neither neighbour has it, the general one when one
                    // does).
                    let (run, rv, at) = m.find(base + s);
                    prop_assert_eq!((run.clone(), rv), m.get(base + s));
                    let nv = (rv + 1 + (a % 2) as u8) % 3;
                    if a % 3 == 0 {
                        m.set(run.clone(), nv);
                    } else {
                        m.set_run(at, run.clone(), nv);
                    }
                    model[run.start - base..run.end - base].fill(nv);
                    check_runmap(&m, &model, base);
                    // And `for_each_run` visits exactly what `runs` yields, whole and
                    // clipped (to a range from the previous edit, so often partial runs).
                    for q in [base..base + UNITS, base + s / 2..base + (e + UNITS) / 2] {
                        let mut seen = Vec::new();
                        m.for_each_run(q.clone(), |r, v| seen.push((r, v)));
                        prop_assert_eq!(seen, m.runs(q).collect::<Vec<_>>());
                    }
                }
            }

            #[test]
            fn runmap_many_runs(ops in prop::collection::vec((0..UNITS, 0u8..2), 1..200)) {
                // Single-unit sets of alternating values push past FEW and back.
                let mut m = RunMap::new(0..UNITS, 0u8);
                let mut model = vec![0u8; UNITS];
                for (u, v) in ops {
                    if u % 2 == 0 {
                        m.set(u..u + 1, v);
                    } else {
                        let (_, _, at) = m.find(u);
                        if u % 4 == 1 {
                            m.set_run(at, u..u + 1, v);
                        } else {
                            m.set_at(at, u..u + 1, v);
                        }
                    }
                    model[u] = v;
                }
                check_runmap(&m, &model, 0);
                for u in (0..UNITS).step_by(2) {
                    m.set(u..u + 1, 1);
                    model[u] = 1;
                }
                check_runmap(&m, &model, 0);
                m.set(0..UNITS, 2);
                model.fill(2);
                check_runmap(&m, &model, 0);
            }
        }
    }
}
