//! The backend's own record of what it did to the kernel: which ranges it has mapped
//! (live reservations and a pool of released ranges kept for reuse), and the kernel
//! state of their pages where that differs from "fresh" (inaccessible, unguarded,
//! never accessible since last emptied). This is not Win32 bookkeeping: the engine's
//! page runs say what a page *is*; this says how the kernel was told.

use std::ops::Range;

use smallvec::SmallVec;

use super::sorted::{Pos, SortedMap};
use crate::backend::Access;
use crate::rules::{round_down, round_up, GRANULE};

/// Pieces of a range with their values, as [`IntervalMap::runs`] returns them: most
/// ranges meet one to three pieces, kept inline.
pub type Pieces<V> = SmallVec<[(Range<usize>, Option<V>); 4]>;

/// Entries `(start, end, value)` of an [`IntervalMap`] around a change.
type Window<V> = SmallVec<[(usize, usize, V); 4]>;

/// An entry right next to a range, as [`IntervalMap::update_unless`] shows it.
pub type Neighbour<V> = Option<(Range<usize>, V)>;

/// A sparse map from page ranges to values; ranges not in the map have no value.
/// Adjacent ranges with equal values are merged.
#[derive(Debug)]
pub struct IntervalMap<V> {
    /// start → (end, value); ranges never overlap.
    map: SortedMap<(usize, V)>,
}

impl<V> Default for IntervalMap<V> {
    fn default() -> Self {
        IntervalMap { map: SortedMap::default() }
    }
}

impl<V: Copy + Eq> IntervalMap<V> {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// The position of the first entry ending after `addr` (the one holding it, or else
    /// the next): where a walk over a range starting at `addr` begins.
    #[inline]
    fn first_ending_after(&self, addr: usize) -> Option<Pos> {
        match self.map.floor(addr) {
            Some(p) if self.map.value(p).0 > addr => Some(p),
            Some(p) => self.map.next(p),
            None => self.map.first(),
        }
    }

    /// The pieces of `range`, each with its value (`None` for gaps), in order.
    pub fn runs(&self, range: Range<usize>) -> Pieces<V> {
        let mut out = Pieces::new();
        if range.start >= range.end {
            return out;
        }
        let mut at = self.first_ending_after(range.start);
        let mut cursor = range.start;
        while let Some(p) = at {
            let s = self.map.key(p);
            if s >= range.end {
                break;
            }
            let (e, v) = self.map.value(p);
            if s > cursor {
                out.push((cursor..s, None));
            }
            let b = e.min(range.end);
            out.push((s.max(cursor)..b, Some(v)));
            cursor = b;
            at = self.map.next(p);
        }
        if cursor < range.end {
            out.push((cursor..range.end, None));
        }
        out
    }

    /// Whether any part of `range` has a value.
    #[cfg(test)]
    pub fn any(&self, range: Range<usize>) -> bool {
        self.runs(range).iter().any(|(_, v)| v.is_some())
    }

    /// Whether any entry meets `range` (no allocation).
    pub fn any_in(&self, range: &Range<usize>) -> bool {
        self.entries_in(range.clone()).next().is_some()
    }

    /// Give every page of `range` the value `v` (`None` removes).
    pub fn set(&mut self, range: Range<usize>, v: Option<V>) {
        self.update_unless(range, |_| v, |_, _| false);
    }

    /// `set(range, None)`, in place: removes the entries inside `range` and trims those
    /// crossing one of its ends (splits one crossing both). A removal never merges
    /// entries, so nothing else changes. (A release in a busy space clears part of an
    /// entry merged with its neighbours: trimmed in place, that is a key or an end
    /// rewritten, where the general way collected and rewrote the pieces.)
    pub fn clear(&mut self, range: Range<usize>) {
        let (start, end) = (range.start, range.end);
        if start >= end {
            return;
        }
        let mut at = self.first_ending_after(start);
        while let Some(p) = at {
            let (s, (e, v)) = (self.map.key(p), self.map.value(p));
            if s >= end {
                return;
            }
            match (s < start, e > end) {
                (false, false) => at = self.map.remove_at(p),
                (true, false) => {
                    self.map.overwrite(p, s, (start, v));
                    at = self.map.next(p);
                }
                (false, true) => {
                    // (Its new key stays below the next entry's, which starts at or after `e`.)
                    self.map.overwrite(p, end, (e, v));
                    return;
                }
                (true, true) => {
                    self.map.overwrite(p, s, (start, v));
                    self.map.insert(end, (e, v));
                    return;
                }
            }
        }
    }

    /// Give every piece of `range` the value `f(its value)`.
    pub fn update(&mut self, range: Range<usize>, f: impl Fn(Option<V>) -> Option<V>) {
        self.update_unless(range, f, |_, _| false);
    }

    /// [`IntervalMap::update`] unless `veto(left, right)`, where `left` is the entry
    /// ending at the start of `range` and `right` the one starting at its end: one
    /// search finds them and the pieces in between, and the change is made in place
    /// (entries are rewritten where they are; only a change in their number inserts or
    /// removes). Returns whether the change was made.
    pub fn update_unless(
        &mut self,
        range: Range<usize>,
        f: impl Fn(Option<V>) -> Option<V>,
        veto: impl FnOnce(Neighbour<V>, Neighbour<V>) -> bool,
    ) -> bool {
        let (start, end) = (range.start, range.end);
        if start >= end {
            return true;
        }
        let floor = self.map.floor(start);
        // The usual case first: the range is exactly one entry, which takes a new
        // value that its neighbours (if any touch it) do not have.
        if let Some(p) = floor {
            let (e, w) = self.map.value(p);
            if self.map.key(p) == start && e == end {
                let left =
                    self.map.prev(p).map(|q| (self.map.key(q), self.map.value(q))).filter(|(_, (e, _))| *e == start);
                let right = self.map.next(p).map(|q| (self.map.key(q), self.map.value(q))).filter(|&(s, _)| s == end);
                if veto(left.map(|(s, (e, v))| (s..e, v)), right.map(|(s, (e, v))| (s..e, v))) {
                    return false;
                }
                match f(Some(w)) {
                    Some(v) if v == w => return true,
                    Some(v) if !left.is_some_and(|(_, (_, l))| l == v) && !right.is_some_and(|(_, (_, r))| r == v) => {
                        self.map.overwrite(p, start, (end, v));
                        return true;
                    }
                    // Merges or a removal: the general way below (the veto said yes).
                    _ => return self.rewrite(start, end, floor, f, |_, _| false),
                }
            }
            // The next usual case: the range holds no entry, the entry before it ends
            // right at its start and the range takes that entry's value, and nothing
            // starts right at its end: the entry grows over the range.
            if e == start && self.map.next(p).map_or(true, |q| self.map.key(q) > end) && f(None) == Some(w) {
                let key = self.map.key(p);
                if veto(Some((key..start, w)), None) {
                    return false;
                }
                self.map.overwrite(p, key, (end, w));
                return true;
            }
        }
        self.rewrite(start, end, floor, f, veto)
    }

    /// The usual shape of a change of one run, with less work than
    /// [`IntervalMap::update_unless`]: `range` is exactly one entry, with the value `old`,
    /// which takes the value `new` (not `old`); an entry touching it takes the value
    /// `widen(its value)` along when that is `Some` and the entry lies inside `within`,
    /// else keeps its value. Done in place, with one search and no vectors, when no
    /// entry would merge with a neighbour; returns `range` widened over the entries
    /// taken along. `None`, with nothing changed, when the shape is not that one or
    /// entries would merge (the caller takes the general way).
    #[inline]
    pub fn replace_entry_widening(
        &mut self,
        range: &Range<usize>,
        old: V,
        new: V,
        within: &Range<usize>,
        widen: impl Fn(V) -> Option<V>,
    ) -> Option<Range<usize>> {
        let p = self.map.floor(range.start)?;
        {
            // Usually every entry looked at (two on each side) is in the chunk of the
            // entry itself: read and changed there by slot, one bounds check for all.
            let s = p.slot();
            let (keys, vals) = self.map.chunk_mut(p);
            if s >= 2 && s + 2 < keys.len() {
                let (e, w) = vals[s];
                if keys[s] != range.start || e != range.end || w != old || old == new {
                    return None;
                }
                let mut span = range.clone();
                let mut left = None;
                if vals[s - 1].0 == range.start {
                    let (qs, v) = (keys[s - 1], vals[s - 1].1);
                    if v == new {
                        return None;
                    }
                    if let Some(nv) = widen(v).filter(|_| qs >= within.start) {
                        if nv == new || (nv != v && vals[s - 2] == (qs, nv)) {
                            return None;
                        }
                        left = Some(nv);
                        span.start = qs;
                    }
                }
                let mut right = None;
                if keys[s + 1] == range.end {
                    let (qe, v) = vals[s + 1];
                    if v == new {
                        return None;
                    }
                    if let Some(nv) = widen(v).filter(|_| qe <= within.end) {
                        if nv == new || (nv != v && keys[s + 2] == qe && vals[s + 2].1 == nv) {
                            return None;
                        }
                        right = Some(nv);
                        span.end = qe;
                    }
                }
                vals[s] = (range.end, new);
                if let Some(nv) = left {
                    vals[s - 1] = (range.start, nv);
                }
                if let Some(nv) = right {
                    vals[s + 1] = (span.end, nv);
                }
                return Some(span);
            }
        }
        // An entry near either end of its chunk: its neighbours by position.
        let (e, w) = self.map.value(p);
        if self.map.key(p) != range.start || e != range.end || w != old || old == new {
            return None;
        }
        let mut span = range.clone();
        // The entries touching it: each keeps its value, or is taken along with the
        // value `widen` gives unless that would merge it with the entry beyond it.
        let mut left = None;
        if let Some(q) = self.map.prev(p).filter(|&q| self.map.value(q).0 == range.start) {
            let (qs, v) = (self.map.key(q), self.map.value(q).1);
            if v == new {
                return None;
            }
            if let Some(nv) = widen(v).filter(|_| qs >= within.start) {
                if nv == new || (nv != v && self.map.prev(q).is_some_and(|f| self.map.value(f) == (qs, nv))) {
                    return None;
                }
                left = Some((q, nv));
                span.start = qs;
            }
        }
        let mut right = None;
        if let Some(q) = self.map.next(p).filter(|&q| self.map.key(q) == range.end) {
            let (qe, v) = self.map.value(q);
            if v == new {
                return None;
            }
            if let Some(nv) = widen(v).filter(|_| qe <= within.end) {
                if nv == new
                    || (nv != v && self.map.next(q).is_some_and(|f| self.map.key(f) == qe && self.map.value(f).1 == nv))
                {
                    return None;
                }
                right = Some((q, nv));
                span.end = qe;
            }
        }
        self.map.overwrite(p, range.start, (range.end, new));
        if let Some((q, nv)) = left {
            self.map.overwrite(q, span.start, (range.start, nv));
        }
        if let Some((q, nv)) = right {
            self.map.overwrite(q, range.end, (span.end, nv));
        }
        Some(span)
    }

    /// `set(range, Some(new))` when `range` lies inside one entry and `take` accepts its
    /// value: one search, the entry rewritten in place (split around `range` where it
    /// reaches beyond it), `range` merged with the entries touching it that have `new`.
    /// Returns the value it had; `None` (nothing changed) otherwise. (A recommit of a
    /// piece that a decommit guard-marked, where marked pieces side by side have merged
    /// into one entry.)
    pub fn retag_within(&mut self, range: &Range<usize>, new: V, take: impl FnOnce(V) -> bool) -> Option<V> {
        let p = self.map.floor(range.start)?;
        let (s, (e, w)) = (self.map.key(p), self.map.value(p));
        if e < range.end || range.start >= range.end || !take(w) {
            return None;
        }
        if w == new {
            return Some(w);
        }
        match (s < range.start, e > range.end) {
            (false, false) => {}
            (true, true) => {
                self.map.overwrite(p, s, (range.start, w));
                self.map.insert(range.start, (range.end, new));
                self.map.insert(range.end, (e, w));
                return Some(w);
            }
            (false, true) => {
                // The entry keeps its part after `range`, under a new key (still above the
                // entry before it); `range` joins the entry ending at its start, if that
                // has `new`, else is an entry of its own.
                match self.map.prev(p).filter(|&q| self.map.value(q) == (range.start, new)) {
                    Some(l) => {
                        self.map.overwrite(l, self.map.key(l), (range.end, new));
                        self.map.overwrite(p, range.end, (e, w));
                    }
                    None => {
                        self.map.overwrite(p, range.start, (range.end, new));
                        self.map.insert(range.end, (e, w));
                    }
                }
                return Some(w);
            }
            (true, false) => {
                self.map.overwrite(p, s, (range.start, w));
                match self.map.next(p).filter(|&q| self.map.key(q) == range.end && self.map.value(q).1 == new) {
                    Some(r) => {
                        let re = self.map.value(r).0;
                        self.map.overwrite(r, range.start, (re, new));
                    }
                    None => self.map.insert(range.start, (range.end, new)),
                }
                return Some(w);
            }
        }
        let left = self.map.prev(p).filter(|&q| self.map.value(q).0 == range.start);
        let right = self.map.next(p).filter(|&q| self.map.key(q) == range.end);
        self.put_at(p, range, new, left, right);
        Some(w)
    }

    /// The usual shape of a decommit of one run: `range` is exactly one entry, with the
    /// value `old`, and `new(left, right)`, given the values of the entries touching it
    /// (`None` where none does), says what it becomes: `None` to leave the map as it is,
    /// `Some(None)` to remove the entry, `Some(Some(v))` to give it `v` (merged with the
    /// touching entries that have `v`). One search, the change made in place. Returns
    /// what was done; `None` (nothing changed) when `range` is not such an entry or
    /// `new` declines.
    pub fn rewrite_entry(
        &mut self,
        range: &Range<usize>,
        old: V,
        new: impl FnOnce(Option<V>, Option<V>) -> Option<Option<V>>,
    ) -> Option<Option<V>> {
        let p = self.map.floor(range.start)?;
        let (e, w) = self.map.value(p);
        if self.map.key(p) != range.start || e != range.end || w != old {
            return None;
        }
        let left = self.map.prev(p).filter(|&q| self.map.value(q).0 == range.start);
        let right = self.map.next(p).filter(|&q| self.map.key(q) == range.end);
        let v = new(left.map(|q| self.map.value(q).1), right.map(|q| self.map.value(q).1))?;
        let Some(v) = v else {
            self.map.remove_at(p);
            return Some(None);
        };
        self.put_at(p, range, v, left, right);
        Some(Some(v))
    }

    /// The usual release's check and change of the record in one search: of the entries
    /// meeting `within`, exactly one meets `range`, and it is `range` exactly with the
    /// value `old`; every other one has a value `rest` accepts. Then that entry takes the
    /// value `new` (merged in place with the touching entries that have it) and the
    /// answer is `true`; else nothing changes and the answer is `false`.
    pub fn rewrite_sole_entry(
        &mut self,
        within: &Range<usize>,
        range: &Range<usize>,
        old: V,
        new: V,
        rest: impl Fn(V) -> bool,
    ) -> bool {
        let mut found = None;
        let mut before = None;
        let mut at = self.first_ending_after(within.start);
        while let Some(p) = at {
            let s = self.map.key(p);
            if s >= within.end {
                break;
            }
            let (e, v) = self.map.value(p);
            if s < range.end && range.start < e {
                if found.is_some() || s != range.start || e != range.end || v != old {
                    return false;
                }
                found = Some((p, before));
            } else if !rest(v) {
                return false;
            }
            before = Some(p);
            at = self.map.next(p);
        }
        let Some((p, before)) = found else { return false };
        // The entry touching it on the left: the one before it in the walk, or (when it
        // is the first entry meeting `within`) the one before it in the map.
        let left = match before {
            Some(q) => Some(q),
            None => self.map.prev(p),
        }
        .filter(|&q| self.map.value(q).0 == range.start);
        let right = self.map.next(p).filter(|&q| self.map.key(q) == range.end);
        self.put_at(p, range, new, left, right);
        true
    }

    /// Give the entry at `p`, which is `range`, the value `v`, merged with `left` (the
    /// entry ending at its start) and `right` (the one starting at its end) where they
    /// have `v`; in place.
    fn put_at(&mut self, p: Pos, range: &Range<usize>, v: V, left: Option<Pos>, right: Option<Pos>) {
        let left = left.filter(|&q| self.map.value(q).1 == v);
        let right = right.filter(|&q| self.map.value(q).1 == v);
        match (left, right) {
            (None, None) => self.map.overwrite(p, range.start, (range.end, v)),
            (Some(l), None) => {
                self.map.overwrite(l, self.map.key(l), (range.end, v));
                self.map.remove_at(p);
            }
            (None, Some(r)) => {
                let end = self.map.value(r).0;
                self.map.overwrite(p, range.start, (end, v));
                self.map.remove_at(r);
            }
            (Some(l), Some(r)) => {
                let end = self.map.value(r).0;
                self.map.overwrite(l, self.map.key(l), (end, v));
                // The entry after `p` is `r`, wherever the removal moved it.
                let r = self.map.remove_at(p).expect("right entry");
                self.map.remove_at(r);
            }
        }
    }

    /// `set(range, Some(v))` when `range` holds no entry (returns whether it held none;
    /// if it held one, nothing is changed): one search, then the entry ending at its
    /// start and the one starting at its end grow over it if they have `v`, else one
    /// entry is inserted.
    pub fn fill_gap(&mut self, range: &Range<usize>, v: V) -> bool {
        let (start, end) = (range.start, range.end);
        if start >= end {
            return true;
        }
        let floor = self.map.floor(start);
        let next = match floor {
            Some(p) if self.map.value(p).0 > start => return false,
            Some(p) => self.map.next(p),
            None => self.map.first(),
        };
        if next.is_some_and(|q| self.map.key(q) < end) {
            return false;
        }
        let left = floor.filter(|&p| self.map.value(p) == (start, v));
        let right = next.filter(|&q| self.map.key(q) == end && self.map.value(q).1 == v);
        match (left, right) {
            (Some(p), Some(q)) => {
                let e = self.map.value(q).0;
                self.map.overwrite(p, self.map.key(p), (e, v));
                self.map.remove_at(q);
            }
            (Some(p), None) => self.map.overwrite(p, self.map.key(p), (end, v)),
            (None, Some(q)) => {
                let e = self.map.value(q).0;
                self.map.overwrite(q, start, (e, v));
            }
            (None, None) => self.map.insert(start, (end, v)),
        }
        true
    }

    /// [`IntervalMap::update_unless`] in general, given `floor`, the position of the
    /// last entry starting at or before `start`.
    fn rewrite(
        &mut self,
        start: usize,
        end: usize,
        floor: Option<Pos>,
        f: impl Fn(Option<V>) -> Option<V>,
        veto: impl FnOnce(Neighbour<V>, Neighbour<V>) -> bool,
    ) -> bool {
        // The window: every entry overlapping or touching the range.
        let first = match floor {
            Some(p) if self.map.value(p).0 >= start => {
                // An entry starting exactly at `start` may have a left neighbour
                // ending there.
                match self.map.prev(p) {
                    Some(q) if self.map.key(p) == start && self.map.value(q).0 == start => Some(q),
                    _ => Some(p),
                }
            }
            Some(p) => self.map.next(p),
            None => self.map.first(),
        };
        let mut old: Window<V> = Window::new();
        let mut at = first;
        while let Some(p) = at {
            let s = self.map.key(p);
            if s > end {
                break;
            }
            let (e, v) = self.map.value(p);
            old.push((s, e, v));
            at = self.map.next(p);
        }
        let left = old.first().filter(|x| x.1 == start).map(|&(s, e, v)| (s..e, v));
        let right = old.last().filter(|x| x.0 == end).map(|&(s, e, v)| (s..e, v));
        if veto(left, right) {
            return false;
        }
        // The window's new entries, merged.
        let mut new: Window<V> = Window::new();
        let mut push = |s: usize, e: usize, v: Option<V>| {
            let Some(v) = v else { return };
            match new.last_mut() {
                Some(last) if last.1 == s && last.2 == v => last.1 = e,
                _ => new.push((s, e, v)),
            }
        };
        let mut cursor = start;
        for &(s, e, v) in &old {
            let gap_end = s.clamp(start, end);
            if cursor < gap_end {
                push(cursor, gap_end, f(None));
                cursor = gap_end;
            }
            if s < start {
                push(s, e.min(start), Some(v));
            }
            let (is, ie) = (s.max(start), e.min(end));
            if is < ie {
                push(is, ie, f(Some(v)));
                cursor = ie;
            }
            if e > end {
                push(s.max(end), e, Some(v));
            }
        }
        if cursor < end {
            push(cursor, end, f(None));
        }
        if new == old {
            return true;
        }
        // Rewrite the window's positions in order, then remove what is left of it or
        // insert what did not fit. (Keys are out of order only until the removals.)
        let mut at = first;
        for &(s, e, v) in new.iter().take(old.len()) {
            let p = at.expect("window position");
            self.map.overwrite(p, s, (e, v));
            at = self.map.next(p);
        }
        for _ in new.len()..old.len() {
            at = self.map.remove_at(at.expect("window position"));
        }
        for &(s, e, v) in new.iter().skip(old.len()) {
            self.map.insert(s, (e, v));
        }
        true
    }

    /// The entries right next to `range`: the one ending at its start and the one
    /// starting at its end.
    pub fn neighbours(&self, range: Range<usize>) -> (Neighbour<V>, Neighbour<V>) {
        let (mut left, mut right) = (None, None);
        let mut at = self.map.floor(range.end);
        while let Some(p) = at {
            let s = self.map.key(p);
            let (e, v) = self.map.value(p);
            if s == range.end {
                right = Some((s..e, v));
            } else if e <= range.start {
                if e == range.start {
                    left = Some((s..e, v));
                }
                break;
            }
            at = self.map.prev(p);
        }
        (left, right)
    }

    /// The range containing `addr` and its value.
    pub fn at(&self, addr: usize) -> Option<(Range<usize>, V)> {
        let p = self.map.floor(addr)?;
        let (e, v) = self.map.value(p);
        (e > addr).then(|| (self.map.key(p)..e, v))
    }

    /// The entries from the one holding `addr` (or the next) onwards, whole, in order.
    pub fn entries_from(&self, addr: usize) -> impl Iterator<Item = (Range<usize>, V)> + '_ {
        let mut at = self.first_ending_after(addr);
        std::iter::from_fn(move || {
            let p = at?;
            at = self.map.next(p);
            let (e, v) = self.map.value(p);
            Some((self.map.key(p)..e, v))
        })
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The entries overlapping `range`, clipped to it, in order (gaps left out): what
    /// [`IntervalMap::runs`] yields with a value, without collecting.
    pub fn entries_in(&self, range: Range<usize>) -> impl Iterator<Item = (Range<usize>, V)> + '_ {
        let mut at = self.first_ending_after(range.start);
        std::iter::from_fn(move || {
            let p = at.filter(|&p| range.start < range.end && self.map.key(p) < range.end)?;
            at = self.map.next(p);
            let (e, v) = self.map.value(p);
            Some((self.map.key(p).max(range.start)..e.min(range.end), v))
        })
    }

    /// Every range and value.
    pub fn iter(&self) -> impl Iterator<Item = (Range<usize>, V)> + '_ {
        self.map.iter().map(|(s, (e, v))| (s..e, v))
    }

    /// Check the structure (tests).
    #[cfg(test)]
    fn check_structure(&self) {
        self.map.check();
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
    /// Made wholly from pooled ranges: released, it goes back to the pool even when
    /// the pool holds its cap of separate ranges (it held this range before).
    pub from_pool: bool,
}

impl Extent {
    /// Whether its range goes to the pool when released: not write-watched (the
    /// tracking must end with it; only at the mapping-count wall is such a range
    /// parked in the pool) and not of huge pages (which a pooled mapping would keep
    /// reserved).
    pub fn poolable(&self) -> bool {
        !self.write_watch && !self.large
    }
}

/// A few ranges, inline (a reserve usually claims one pooled piece or one hole).
pub type Ranges = SmallVec<[Range<usize>; 2]>;

/// Everything the backend remembers; see the module docs.
///
/// Live extents and pooled ranges never overlap, and [`State::owned`] is always their
/// union. The three are private to this file: the rest of the backend reads them
/// ([`State::live`], [`State::pool`], [`State::pool_bytes`], [`State::owned_at`]) and
/// changes them only through the methods that keep it so, each a whole step of the
/// backend's lifecycle ([`State::add_live`], [`State::forget_live`],
/// [`State::live_to_pool`], [`State::undo_reserve`]).
#[derive(Debug, Default)]
pub struct State {
    /// Live reservations by the start of their mapped extent.
    live: SortedMap<Extent>,
    /// Released ranges still mapped (inaccessible, empty), ready for reuse.
    pool: IntervalMap<()>,
    /// Bytes in the pool.
    pool_bytes: usize,
    /// The union of the live extents and the pooled ranges, adjacent ones merged: where
    /// this backend has mapped (but for [`State::unmapped`] parts), as few ranges as the
    /// mappings are apart. A reservation carved out of a pooled range, or released back
    /// into it, changes nothing here; only a range mapped or unmapped does. So a query in
    /// a free gap between reservations made in one pooled span finds the whole gap ours
    /// with one lookup in a map of a few entries ([`State::owned_at`]), where the live
    /// extents and the pooled ranges are each as many as the reservations.
    owned: IntervalMap<()>,
    /// Per-page kernel state (entries only where it differs from fresh).
    pub kernel: IntervalMap<Kernel>,
    /// Parts of live extents that this backend has not mapped (yet, or any more): a
    /// reserve records its extent before it maps the extent's holes, and a failed one
    /// unmaps them before it forgets the extent. Whatever the kernel has there is not
    /// ours (it may be a mapping of the program's that made the reserve fail), so
    /// [`State::owned_at`] does not count them. Few at a time: one or two per reserve
    /// under way.
    pub unmapped: Vec<Range<usize>>,
}

impl State {
    /// The mapped range of this backend (a live extent or a pooled range) holding `addr`,
    /// unless it is `except`.
    ///
    /// A live extent's parts that are [`State::unmapped`] are not counted: at such an
    /// address the answer is `None`, and elsewhere the range ends where the next such
    /// part begins. With no `except` and no such part, the answer is the whole run of
    /// live extents and pooled ranges next to one another around `addr` ([`State::owned`],
    /// one lookup among a few ranges, where the live extents and the pooled ranges are
    /// each as many as the reservations: a query in a gap between reservations carved
    /// out of one pooled span would otherwise step through two lookups among them).
    /// (Its usual case inline, the rest apart: all of it out of line, `query1e5/linux`'s
    /// calls took ~17 instructions more each, callgrind.)
    #[inline]
    pub fn owned_at(&self, addr: usize, except: Option<&Range<usize>>) -> Option<Range<usize>> {
        if except.is_none() && self.unmapped.is_empty() {
            return self.owned.at(addr).map(|(r, ())| r);
        }
        self.owned_piece_at(addr, except)
    }

    /// [`State::owned_at`] with a range excepted or parts of live extents unmapped: the
    /// live extent or pooled range itself, cut at the next unmapped part.
    fn owned_piece_at(&self, addr: usize, except: Option<&Range<usize>>) -> Option<Range<usize>> {
        let live = self.extent_of(addr).map(|(s, x)| s..x.end);
        let pooled = || self.pool.at(addr).map(|(r, _)| r);
        let r = live.or_else(pooled).filter(|r| Some(r) != except)?;
        if self.unmapped.is_empty() {
            return Some(r);
        }
        if self.unmapped.iter().any(|h| h.contains(&addr)) {
            return None;
        }
        let end = self.unmapped.iter().filter(|h| h.start > addr).map(|h| h.start).fold(r.end, usize::min);
        Some(r.start..end)
    }

    /// The live reservations by the start of their extent (read only).
    pub fn live(&self) -> &SortedMap<Extent> {
        &self.live
    }

    /// The pooled ranges (read only).
    pub fn pool(&self) -> &IntervalMap<()> {
        &self.pool
    }

    /// Bytes in the pool.
    pub fn pool_bytes(&self) -> usize {
        self.pool_bytes
    }

    /// Record the live extent `ext`, made with `x`, before it is mapped: the pooled
    /// pieces inside it leave the pool for it (pushed to `pooled`: mapped already, still
    /// ours) and the rest (pushed to `holes`) is to be mapped by the caller, recorded as
    /// [`State::unmapped`] until [`State::mapped`] says it is. `x.from_pool` is set here:
    /// whether the extent was all pooled (and poolable). The owned ranges change only
    /// when there are holes (the pooled pieces were owned already). `ext` must meet no
    /// live extent (the engine never reserves over a reservation; checked under tests
    /// and debug builds).
    pub fn add_live(&mut self, ext: &Range<usize>, mut x: Extent, pooled: &mut Ranges, holes: &mut Ranges) {
        #[cfg(any(test, debug_assertions))]
        {
            let clash = self.extent_of(ext.start).is_some()
                || self.live.ceil(ext.start).is_some_and(|p| self.live.key(p) < ext.end);
            assert!(!clash, "a reserve of {ext:x?} over a live extent");
        }
        debug_assert_eq!(x.end, ext.end);
        if self.pool_bytes == 0 {
            // Nothing pooled: one hole, without looking at the pool's pieces.
            holes.push(ext.clone());
        } else {
            for (r, v) in self.pool.runs(ext.clone()) {
                if v.is_some() {
                    pooled.push(r)
                } else {
                    holes.push(r)
                }
            }
        }
        for r in pooled.iter() {
            self.pool.clear(r.clone());
            self.pool_bytes -= r.len();
        }
        x.end = ext.end;
        x.from_pool = x.poolable() && holes.is_empty();
        self.live.insert(ext.start, x);
        if !holes.is_empty() {
            self.owned.set(ext.clone(), Some(()));
        }
        // (Until they are mapped, the holes hold nothing of ours: whatever a query finds
        // there meanwhile is someone else's.)
        self.set_unmapped(ext, holes);
    }

    /// Forget the live extent starting at `ext.start`, which is unmapped (or about to
    /// be): no longer ours. Nothing when no live extent starts there.
    pub fn forget_live(&mut self, ext: &Range<usize>) {
        if let Some(x) = self.live.remove(ext.start) {
            self.owned.clear(ext.start..x.end);
            self.set_unmapped(&(ext.start..x.end), &[]);
        }
    }

    /// The live extent `ext` is about to be unmapped whole: none of it counts as ours
    /// from now on ([`State::unmapped`]) until [`State::forget_live`] forgets it (or
    /// [`State::set_unmapped`] with no pieces takes the mark back, should the kernel
    /// refuse): whatever a query finds there meanwhile waits for that record.
    pub fn unmapping(&mut self, ext: &Range<usize>) {
        self.set_unmapped(ext, std::slice::from_ref(ext));
    }

    /// Move the live extent starting at `ext.start` to the pool, whole: still mapped,
    /// still ours, so the owned ranges stay as they are. Nothing when no live extent
    /// starts there.
    pub fn live_to_pool(&mut self, ext: &Range<usize>) {
        if let Some(p) = self.live.floor(ext.start).filter(|&p| self.live.key(p) == ext.start) {
            self.live_to_pool_at(p);
        }
    }

    /// The live extent starting at `start` and its position among the live extents, for
    /// [`State::live_to_pool_at`] in the same hold of the state's lock (a position holds
    /// only until the live extents change).
    pub fn live_entry(&self, start: usize) -> Option<(Pos, Extent)> {
        let p = self.live.floor(start).filter(|&p| self.live.key(p) == start)?;
        Some((p, self.live.value(p)))
    }

    /// [`State::live_to_pool`] of the live extent at `p` (from [`State::live_entry`], the
    /// live extents unchanged since): no second search among them. A pooled range never
    /// meets another (live extents and pooled ranges never overlap), so it fills a gap of
    /// the pool, merged with the pooled ranges touching it.
    pub fn live_to_pool_at(&mut self, p: Pos) {
        let (start, x) = (self.live.key(p), self.live.value(p));
        self.live.remove_at(p);
        let r = start..x.end;
        self.pool_bytes += r.len();
        let filled = self.pool.fill_gap(&r, ());
        debug_assert!(filled, "a live extent {r:x?} met the pool");
        if !filled {
            self.pool.set(r, Some(()));
        }
    }

    /// Undo the reserve of the live extent `ext` (see [`State::add_live`]): forget it,
    /// with its record of [`State::unmapped`] parts, and pool the parts of it in
    /// `still_mapped` (the pooled pieces it took, the holes the kernel refused to unmap):
    /// those stay ours, the rest of it does not. Nothing when no live extent starts at
    /// `ext.start` (then nothing of it can be told to be neither live nor pooled). A
    /// piece is clipped to the extent: inside it, it is neither live nor pooled once the
    /// extent is forgotten, so the pool never meets a live extent.
    pub fn undo_reserve(&mut self, ext: &Range<usize>, still_mapped: &[Range<usize>]) {
        let Some(x) = self.live.remove(ext.start) else { return };
        let ext = ext.start..x.end;
        self.owned.clear(ext.clone());
        self.set_unmapped(&ext, &[]);
        for r in still_mapped {
            let r = r.start.max(ext.start)..r.end.min(ext.end);
            if r.start < r.end && !self.pool.any_in(&r) {
                self.pool_bytes += r.len();
                self.pool.set(r.clone(), Some(()));
                self.owned.set(r, Some(()));
            }
        }
    }

    /// The owned ranges, in order (tests).
    #[cfg(test)]
    pub fn owned_ranges(&self) -> Vec<Range<usize>> {
        self.owned.iter().map(|(r, ())| r).collect()
    }

    /// Check that [`State::owned`] is the union of the live extents and the pooled
    /// ranges, and that none of those overlap (tests).
    #[cfg(test)]
    pub fn check_owned(&self) {
        let mut all: Vec<Range<usize>> =
            self.live.iter().map(|(s, x)| s..x.end).chain(self.pool.iter().map(|(r, ())| r)).collect();
        all.sort_by_key(|r| r.start);
        let mut union: Vec<Range<usize>> = Vec::new();
        for r in all {
            match union.last_mut() {
                Some(last) => {
                    assert!(last.end <= r.start, "live extents and pooled ranges overlap: {last:?}, {r:?}");
                    if last.end == r.start {
                        last.end = r.end;
                    } else {
                        union.push(r);
                    }
                }
                None => union.push(r),
            }
        }
        let owned: Vec<Range<usize>> = self.owned.iter().map(|(r, ())| r).collect();
        assert_eq!(owned, union, "the owned ranges are not the union of the live and the pooled");
    }

    /// The lowest start above `addr` of a mapped range of this backend (live or pooled)
    /// other than `except`. No allocation: a query asks this.
    pub fn next_owned_after(&self, addr: usize, except: Option<&Range<usize>>) -> Option<usize> {
        let mut live = self.live.ceil(addr.checked_add(1)?);
        while let Some(p) = live {
            let s = self.live.key(p);
            if Some(&(s..self.live.value(p).end)) != except {
                break;
            }
            live = self.live.next(p);
        }
        let live = live.map(|p| self.live.key(p));
        let pooled =
            self.pool.entries_from(addr + 1).find(|(r, _)| r.start > addr && Some(r) != except).map(|(r, _)| r.start);
        // Past a part of a live extent that is not mapped yet, the extent's mapped part
        // resumes (see `unmapped`).
        let resumed = self
            .unmapped
            .iter()
            .filter(|h| h.contains(&addr))
            .map(|h| h.end)
            .find(|&e| self.owned_at(e, except).is_some());
        [live, pooled, resumed].into_iter().flatten().min()
    }

    /// Record that the parts `pieces` of the live extent at `ext` are not mapped by this
    /// backend (see [`State::unmapped`]), in place of what was recorded for it before.
    pub fn set_unmapped(&mut self, ext: &Range<usize>, pieces: &[Range<usize>]) {
        self.unmapped.retain(|h| !(ext.start <= h.start && h.end <= ext.end));
        self.unmapped.extend(pieces.iter().cloned());
    }

    /// Whether `range` meets a part of a live extent that is [`State::unmapped`], other
    /// than one inside `except`: a part that a reserve under way is about to map (or has
    /// just mapped), or that a failed one is about to unmap. What the kernel has there
    /// changes with that call's next system call, and is told apart from someone else's
    /// mapping only once the call has recorded what it did. No allocation: a query asks.
    pub fn in_flux(&self, range: &Range<usize>, except: Option<&Range<usize>>) -> bool {
        let inside = |h: &Range<usize>| except.is_some_and(|e| e.start <= h.start && h.end <= e.end);
        self.unmapped.iter().any(|h| h.start < range.end && range.start < h.end && !inside(h))
    }

    /// Record that `piece` (a part of a live extent) is mapped now.
    pub fn mapped(&mut self, piece: &Range<usize>) {
        self.unmapped.retain(|h| h != piece);
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

    /// `range` (of pages with protection `prot`) widened over the guard-marked runs
    /// right next to it that have the same protection, inside its live extent. Such
    /// runs are part of the same kernel mapping: changing their protection along with
    /// the range (they stay inaccessible) spares the kernel a split and a merge.
    pub fn widen_over_same_guards(&self, range: &Range<usize>, prot: Access) -> Range<usize> {
        let (left, right) = self.kernel.neighbours(range.clone());
        let same =
            |n: &Option<(Range<usize>, Kernel)>| n.as_ref().filter(|(_, k)| k.guarded && k.prot == prot).cloned();
        let (left, right) = (same(&left), same(&right));
        if left.is_none() && right.is_none() {
            return range.clone();
        }
        // Within the granules the range touches, pages belong to its extent
        // (extents are whole granules); beyond them, ask where the extent ends.
        let within = round_down(range.start, GRANULE)..round_up(range.end, GRANULE).unwrap_or(range.end);
        let s = left.map_or(range.start, |(r, _)| r.start);
        let e = right.map_or(range.end, |(r, _)| r.end);
        if s >= within.start && e <= within.end {
            return s..e;
        }
        let Some((xs, x)) = self.extent_of(range.start) else { return range.clone() };
        s.max(xs)..e.min(x.end)
    }

    /// Whether the pages on both sides of `range` are inaccessible in the kernel (or
    /// not ours): then `PROT_NONE` on `range` merges it into its neighbours' mappings.
    pub fn between_inaccessible(&self, range: &Range<usize>) -> bool {
        let inaccessible = |addr: Option<usize>| !matches!(addr.and_then(|a| self.kernel.at(a)), Some((_, k)) if k.prot != Access::None);
        inaccessible(range.start.checked_sub(1)) && inaccessible(Some(range.end))
    }

    /// The live extent containing `addr`.
    pub fn extent_of(&self, addr: usize) -> Option<(usize, Extent)> {
        let p = self.live.floor(addr)?;
        let x = self.live.value(p);
        (x.end > addr).then(|| (self.live.key(p), x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_entry_changes_exactly_one_entry_in_place_or_nothing() {
        let mut m = IntervalMap::new();
        m.set(10..20, Some(1));
        m.set(20..30, Some(2));
        m.set(40..50, Some(3));
        // Not exactly one entry, or not the old value: nothing, `new` not asked.
        for (r, old) in [(10..25, 1), (12..20, 1), (20..30, 1), (31..39, 2)] {
            assert_eq!(m.rewrite_entry(&r, old, |_, _| panic!("asked")), None);
        }
        // The touching entries' values; declined: nothing changes.
        assert_eq!(
            m.rewrite_entry(&(20..30), 2, |l, r| {
                assert_eq!((l, r), (Some(1), None));
                None
            }),
            None
        );
        assert_eq!(m.runs(10..30).to_vec(), vec![(10..20, Some(1)), (20..30, Some(2))]);
        assert_eq!(m.rewrite_entry(&(20..30), 2, |_, _| Some(Some(4))), Some(Some(4)));
        assert_eq!(
            m.rewrite_entry(&(10..20), 1, |l, r| {
                assert_eq!((l, r), (None, Some(4)));
                Some(None)
            }),
            Some(None)
        );
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(20..30, 4), (40..50, 3)]);
        // Merged with the touching entries that take the same value: on the left, the
        // right, both.
        m.set(30..40, Some(5));
        assert_eq!(m.rewrite_entry(&(30..40), 5, |_, _| Some(Some(4))), Some(Some(4)));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(20..40, 4), (40..50, 3)]);
        m.set(50..60, Some(6));
        assert_eq!(m.rewrite_entry(&(40..50), 3, |_, _| Some(Some(6))), Some(Some(6)));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(20..40, 4), (40..60, 6)]);
        m.set(60..70, Some(4));
        m.set(40..60, Some(7));
        assert_eq!(
            m.rewrite_entry(&(40..60), 7, |l, r| {
                assert_eq!((l, r), (Some(4), Some(4)));
                Some(Some(4))
            }),
            Some(Some(4))
        );
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(20..70, 4)]);
        m.check_structure();
        // Many entries, so that the neighbours sit in other chunks of the map.
        let mut big = IntervalMap::new();
        for i in 0..2000 {
            big.set(i * 10..i * 10 + 10, Some(i % 2));
        }
        for i in (1..1999).step_by(2) {
            assert_eq!(big.rewrite_entry(&(i * 10..i * 10 + 10), 1, |_, _| Some(Some(0))), Some(Some(0)));
            big.check_structure();
        }
        assert_eq!(big.iter().collect::<Vec<_>>(), vec![(0..19990, 0), (19990..20000, 1)]);
    }

    #[test]
    fn rewrite_sole_entry_checks_the_whole_range_and_changes_one_entry_or_nothing() {
        let mut m = IntervalMap::new();
        m.set(0..10, Some(9));
        m.set(10..20, Some(1));
        m.set(20..30, Some(2));
        m.set(40..50, Some(3));
        let rest_even = |v: u8| v % 2 == 0;
        // Refused, nothing changed: the run is not exactly one entry, has another value,
        // is met by a second entry, is no entry at all, or another entry of `within` is
        // refused by `rest`.
        for (within, r, old) in
            [(10..40, 10..25, 1), (10..40, 12..20, 1), (10..40, 10..20, 2), (10..40, 31..39, 1), (10..50, 10..20, 1)]
        {
            assert!(!m.rewrite_sole_entry(&within, &r, old, 4, rest_even), "{within:?} {r:?}");
        }
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(0..10, 9), (10..20, 1), (20..30, 2), (40..50, 3)]);
        // `rest` sees only the entries meeting `within`: 0..10 (9, odd) lies outside it.
        assert!(m.rewrite_sole_entry(&(10..40), &(10..20), 1, 4, rest_even));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(0..10, 9), (10..20, 4), (20..30, 2), (40..50, 3)]);
        // Merged with the touching entries that take its new value: the one before it in
        // the walk, the one after it, and one before `within` (found outside the walk).
        assert!(m.rewrite_sole_entry(&(20..40), &(20..30), 2, 4, rest_even));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(0..10, 9), (10..30, 4), (40..50, 3)]);
        m.set(30..40, Some(5));
        m.set(50..60, Some(4));
        assert!(m.rewrite_sole_entry(&(40..64), &(40..50), 3, 4, rest_even));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(0..10, 9), (10..30, 4), (30..40, 5), (40..60, 4)]);
        assert!(m.rewrite_sole_entry(&(32..40), &(30..40), 5, 4, rest_even));
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(0..10, 9), (10..60, 4)]);
        m.check_structure();
        // Many entries, so that the neighbours sit in other chunks of the map.
        let mut big = IntervalMap::new();
        for i in 0..2000 {
            big.set(i * 10..i * 10 + 10, Some((i % 2) as u8));
        }
        for i in (1..1999).step_by(2) {
            let r = i * 10..i * 10 + 10;
            assert!(big.rewrite_sole_entry(&(r.start - 5..r.end + 5), &r, 1, 0, |v| v == 0));
            big.check_structure();
        }
        assert_eq!(big.iter().collect::<Vec<_>>(), vec![(0..19990, 0), (19990..20000, 1)]);
    }

    #[test]
    fn interval_map_sets_splits_and_merges() {
        let mut m = IntervalMap::new();
        m.set(10..20, Some(1));
        m.set(20..30, Some(1));
        assert_eq!(m.len(), 1);
        m.set(15..25, Some(2));
        assert_eq!(
            m.runs(0..40).to_vec(),
            vec![(0..10, None), (10..15, Some(1)), (15..25, Some(2)), (25..30, Some(1)), (30..40, None)]
        );
        m.set(12..28, None);
        assert_eq!(m.runs(10..30).to_vec(), vec![(10..12, Some(1)), (12..28, None), (28..30, Some(1))]);
        assert!(m.any(11..13));
        assert!(!m.any(12..28));
        m.set(12..28, Some(1));
        assert_eq!(m.len(), 1);
    }

    /// `replace_entry_widening` on an entry with two entries on each side in its chunk
    /// (the way that reads them by slot): a touching entry is taken along unless its new
    /// value would merge it with the entry beyond it, on either side; then nothing
    /// changes. (Under test a chunk holds at most 8 entries: these 5 are one chunk.)
    #[test]
    fn replacing_an_entry_inside_its_chunk_takes_neighbours_along_unless_they_would_merge() {
        let widen = |n: u8| (n == 0).then_some(2);
        let build = |vals: [u8; 5]| {
            let mut m = IntervalMap::new();
            for (i, v) in vals.into_iter().enumerate() {
                m.set(i..i + 1, Some(v));
            }
            assert_eq!(m.len(), 5);
            m
        };
        let entries = |m: &IntervalMap<u8>| m.iter().collect::<Vec<_>>();
        // Taken along on the left, then on the right.
        let mut m = build([3, 0, 5, 7, 8]);
        assert_eq!(m.replace_entry_widening(&(2..3), 5, 6, &(0..10), widen), Some(1..3));
        assert_eq!(entries(&m), vec![(0..1, 3), (1..2, 2), (2..3, 6), (3..4, 7), (4..5, 8)]);
        let mut m = build([3, 7, 5, 0, 8]);
        assert_eq!(m.replace_entry_widening(&(2..3), 5, 6, &(0..10), widen), Some(2..4));
        assert_eq!(entries(&m), vec![(0..1, 3), (1..2, 7), (2..3, 6), (3..4, 2), (4..5, 8)]);
        // Taken along, it would merge with the entry beyond it: refused, nothing changed.
        for vals in [[2, 0, 5, 7, 8], [3, 7, 5, 0, 2]] {
            let mut m = build(vals);
            assert_eq!(m.replace_entry_widening(&(2..3), 5, 6, &(0..10), widen), None);
            assert_eq!(entries(&m), build(vals).iter().collect::<Vec<_>>());
        }
        // Outside `within`, a touching entry keeps its value; one holding the new value
        // would merge: refused.
        let mut m = build([2, 0, 5, 7, 8]);
        assert_eq!(m.replace_entry_widening(&(2..3), 5, 6, &(2..10), widen), Some(2..3));
        assert_eq!(entries(&m), vec![(0..1, 2), (1..2, 0), (2..3, 6), (3..4, 7), (4..5, 8)]);
        let mut m = build([3, 7, 5, 6, 8]);
        assert_eq!(m.replace_entry_widening(&(2..3), 5, 6, &(0..10), widen), None);
    }

    /// Clearing exactly one entry (as a release forgets its extent) removes it and
    /// leaves its neighbours as they were, apart, even when they hold the same value;
    /// clearing part of an entry trims it, or splits it in two.
    #[test]
    fn clearing_exactly_one_entry_keeps_its_neighbours() {
        let mut m = IntervalMap::new();
        m.set(0..4, Some(1));
        m.set(4..8, Some(2));
        m.set(8..12, Some(1));
        m.set(20..24, Some(3));
        assert_eq!(m.len(), 4);
        m.clear(4..8);
        assert_eq!(m.len(), 3);
        assert_eq!(m.runs(0..12).to_vec(), vec![(0..4, Some(1)), (4..8, None), (8..12, Some(1))]);
        // The first entry, then the last.
        m.clear(0..4);
        m.clear(20..24);
        assert_eq!(m.runs(0..30).to_vec(), vec![(0..8, None), (8..12, Some(1)), (12..30, None)]);
        // Set back between them: merges with the right one only.
        m.set(4..8, Some(1));
        assert_eq!(m.runs(0..12).to_vec(), vec![(0..4, None), (4..12, Some(1))]);
        assert_eq!(m.len(), 1);
        // Its front, its back, then its middle.
        m.clear(4..5);
        m.clear(11..12);
        m.clear(7..9);
        assert_eq!(
            m.runs(0..12).to_vec(),
            vec![(0..5, None), (5..7, Some(1)), (7..9, None), (9..11, Some(1)), (11..12, None)]
        );
        assert_eq!(m.len(), 2);
        // Across two entries and the gap between them.
        m.clear(6..10);
        assert_eq!(
            m.runs(0..12).to_vec(),
            vec![(0..5, None), (5..6, Some(1)), (6..10, None), (10..11, Some(1)), (11..12, None)]
        );
        assert_eq!(m.len(), 2);
    }

    /// Each shape `set` meets inside one entry or one gap, with the neighbours that
    /// must (not) merge.
    #[test]
    fn interval_map_sets_inside_one_piece() {
        let mut m = IntervalMap::new();
        m.set(10..20, Some(1));
        m.set(12..14, Some(1)); // same value: nothing
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10..20, 1)]);
        m.set(12..14, Some(2)); // middle: split in three
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10..12, 1), (12..14, 2), (14..20, 1)]);
        m.set(12..14, Some(1)); // equal to an entry, both neighbours merge
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10..20, 1)]);
        m.set(10..12, None); // left end removed
        m.set(18..20, None); // right end removed
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(12..18, 1)]);
        m.set(20..22, Some(1)); // gap, no neighbour touching
        m.set(18..20, Some(1)); // gap between two equal entries: all three merge
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(12..22, 1)]);
        m.set(22..24, Some(1)); // gap after an equal entry
        m.set(10..12, Some(1)); // gap before an equal entry
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10..24, 1)]);
        m.set(30..32, Some(2));
        m.set(28..30, Some(1)); // gap before an unequal entry
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10..24, 1), (28..30, 1), (30..32, 2)]);
        m.set(30..32, Some(1)); // equal to an entry, left neighbour merges
        m.set(28..32, None); // equal to an entry: removed
        m.set(10..24, Some(3)); // whole entry, new value
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10..24, 3)]);
        m.set(5..6, None); // gap to gap: nothing
        assert_eq!(m.len(), 1);
    }

    /// `retag_within` in each shape: a whole entry (no merge, merging left, right,
    /// both), part of one (splitting it, merging with a neighbour); refusals.
    #[test]
    fn interval_map_retags_one_entry() {
        let mut m = IntervalMap::new();
        for (r, v) in [(10..12, 1), (12..14, 2), (14..16, 1), (16..18, 3), (20..22, 2)] {
            m.set(r, Some(v));
        }
        assert_eq!(m.retag_within(&(12..14), 1, |_| false), None); // refused
        assert_eq!(m.retag_within(&(12..15), 1, |_| true), None); // not within one entry
        assert_eq!(m.retag_within(&(19..20), 1, |_| true), None); // no entry
        assert_eq!(m.retag_within(&(12..14), 1, |o| o == 2), Some(2)); // merges both sides
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10..16, 1), (16..18, 3), (20..22, 2)]);
        assert_eq!(m.retag_within(&(16..18), 1, |_| true), Some(3)); // merges left
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10..18, 1), (20..22, 2)]);
        m.set(18..20, Some(4));
        assert_eq!(m.retag_within(&(18..20), 2, |_| true), Some(4)); // merges right
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10..18, 1), (18..22, 2)]);
        assert_eq!(m.retag_within(&(18..22), 5, |_| true), Some(2)); // no merge
        assert_eq!(m.retag_within(&(18..22), 5, |_| true), Some(5)); // already so
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10..18, 1), (18..22, 5)]);
        assert_eq!(m.retag_within(&(12..14), 6, |_| true), Some(1)); // splits in three
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(10..12, 1), (12..14, 6), (14..18, 1), (18..22, 5)]);
        assert_eq!(m.retag_within(&(14..15), 6, |_| true), Some(1)); // its start, merging left
        assert_eq!(m.retag_within(&(11..12), 6, |_| true), Some(1)); // its end, merging right
        assert_eq!(m.retag_within(&(17..18), 7, |_| true), Some(1)); // its end, no merge
        assert_eq!(m.retag_within(&(18..19), 8, |_| true), Some(5)); // its start, no merge
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![(10..11, 1), (11..15, 6), (15..17, 1), (17..18, 7), (18..19, 8), (19..22, 5)]
        );
        m.check_structure();
    }

    const PAGES: usize = 48;

    /// `m` holds exactly the per-page `model`, as maximal runs.
    fn check(m: &IntervalMap<u8>, model: &[Option<u8>]) {
        m.check_structure();
        let mut last: Option<(Range<usize>, u8)> = None;
        for (r, v) in m.iter() {
            assert!(r.start < r.end && r.end <= PAGES, "bad entry {r:?}");
            if let Some((l, lv)) = &last {
                assert!(l.end <= r.start, "overlap {l:?} {r:?}");
                assert!(l.end < r.start || *lv != v, "unmerged {l:?} {r:?} = {v}");
            }
            last = Some((r, v));
        }
        for (p, want) in model.iter().enumerate() {
            assert_eq!(m.at(p).map(|(_, v)| v), *want, "page {p}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(if cfg!(miri) { 3 } else { 300 }))]

        /// `set` and `runs` agree with a per-page model whatever the sequence of sets.
        #[test]
        fn interval_map_matches_a_per_page_model(
            ops in proptest::collection::vec((0..PAGES, 1..9usize, proptest::option::of(0u8..4)), 1..80),
            queries in proptest::collection::vec((0..PAGES, 1..PAGES), 8),
        ) {
            let mut m = IntervalMap::new();
            let mut model = vec![None; PAGES];
            for (start, len, v) in ops {
                let end = (start + len).min(PAGES);
                if v == Some(3) {
                    // A value-dependent change: 0 <-> 1, none -> 2, 2 -> none.
                    let f = |x: Option<u8>| match x {
                        None => Some(2),
                        Some(2) => None,
                        Some(x) => Some(1 - x),
                    };
                    m.update(start..end, f);
                    model[start..end].iter_mut().for_each(|x| *x = f(*x));
                } else if let (Some(x), Some(o), 0) = (v, model[start], len % 3) {
                    // The one-entry shortcut: the change `set` would make, or nothing.
                    // Entries touching it that hold 0 are taken along as 2, when they lie
                    // within 3 pages of it (as the backend's granules around a range).
                    let r = start..end;
                    let within = start.saturating_sub(3)..end + 3;
                    let widen = |n: u8| (n == 0).then_some(2);
                    let run_of = |p: usize| {
                        let v = model[p]?;
                        let s = (0..=p).rev().take_while(|&i| model[i] == Some(v)).last().unwrap_or(p);
                        let e = (p..PAGES).take_while(|&i| model[i] == Some(v)).last().unwrap_or(p) + 1;
                        Some((s..e, v))
                    };
                    let whole = model[r.clone()].iter().all(|&y| y == Some(o))
                        && (start == 0 || model[start - 1] != Some(o))
                        && model.get(end).copied().flatten() != Some(o);
                    let left = start.checked_sub(1).and_then(run_of);
                    let right = (end < PAGES).then(|| run_of(end)).flatten();
                    // What a touching run becomes: Ok(Some) taken along, Err: a merge.
                    let plan = |n: &Option<(Range<usize>, u8)>, far: Option<usize>| -> Result<Option<(Range<usize>, u8)>, ()> {
                        let Some((nr, nv)) = n else { return Ok(None) };
                        if *nv == x {
                            return Err(());
                        }
                        let inside = nr.start >= within.start && nr.end <= within.end;
                        match widen(*nv).filter(|_| inside) {
                            None => Ok(None),
                            Some(w) if w == x || far.and_then(|f| model.get(f).copied().flatten()) == Some(w) => Err(()),
                            Some(w) => Ok(Some((nr.clone(), w))),
                        }
                    };
                    let want = if !whole || o == x {
                        None
                    } else {
                        match (
                            plan(&left, left.as_ref().and_then(|(lr, _)| lr.start.checked_sub(1))),
                            plan(&right, right.as_ref().map(|(rr, _)| rr.end)),
                        ) {
                            (Ok(l), Ok(rt)) => Some((l, rt)),
                            _ => None,
                        }
                    };
                    let got = m.replace_entry_widening(&r, o, x, &within, widen);
                    match want {
                        Some((l, rt)) => {
                            let span = l.as_ref().map_or(start, |(lr, _)| lr.start)..rt.as_ref().map_or(end, |(rr, _)| rr.end);
                            proptest::prop_assert_eq!(got, Some(span));
                            model[r].fill(Some(x));
                            for (nr, w) in l.into_iter().chain(rt) {
                                model[nr].fill(Some(w));
                            }
                        }
                        None => proptest::prop_assert_eq!(got, None),
                    }
                } else if let (Some(x), 1) = (v, len % 3) {
                    // Filling a gap: the change `set` would make, or nothing.
                    let gap = model[start..end].iter().all(|y| y.is_none());
                    proptest::prop_assert_eq!(m.fill_gap(&(start..end), x), gap);
                    if gap {
                        model[start..end].fill(Some(x));
                    }
                } else if let (Some(x), 2) = (v, len % 3) {
                    // Retagging within one entry: the change `set` would make, or nothing.
                    let o = model[start];
                    let within = o.is_some() && model[start..end].iter().all(|&y| y == o);
                    let want = o.filter(|&o| within && o != 0);
                    proptest::prop_assert_eq!(m.retag_within(&(start..end), x, |o| o != 0), want);
                    if want.is_some() {
                        model[start..end].fill(Some(x));
                    }
                } else if v.is_none() && len % 2 == 0 {
                    m.clear(start..end);
                    model[start..end].fill(None);
                } else {
                    m.set(start..end, v);
                    model[start..end].fill(v);
                }
                check(&m, &model);
                for &(qs, ql) in &queries {
                    let q = qs..(qs + ql).min(PAGES);
                    // The neighbours are the maximal runs of one value that end at the
                    // query's start and start at its end.
                    let run_of = |p: usize| {
                        let v = model[p]?;
                        let s = (0..=p).rev().take_while(|&i| model[i] == Some(v)).last().unwrap_or(p);
                        let e = (p..PAGES).take_while(|&i| model[i] == Some(v)).last().unwrap_or(p) + 1;
                        Some((s..e, v))
                    };
                    let left = if q.start == 0 { None } else { run_of(q.start - 1).filter(|(r, _)| r.end == q.start) };
                    let right = if q.end == PAGES { None } else { run_of(q.end).filter(|(r, _)| r.start == q.end) };
                    proptest::prop_assert_eq!(m.neighbours(q.clone()), (left, right));
                    let runs = m.runs(q.clone());
                    let entries: Vec<_> = m.entries_in(q.clone()).collect();
                    let valued: Vec<_> = runs.iter().filter_map(|(r, v)| v.map(|v| (r.clone(), v))).collect();
                    proptest::prop_assert_eq!(entries, valued);
                    let mut at = q.start;
                    for (r, v) in &runs {
                        proptest::prop_assert_eq!(r.start, at);
                        proptest::prop_assert!(r.start < r.end);
                        proptest::prop_assert!(model[r.clone()].iter().all(|x| x == v));
                        at = r.end;
                    }
                    proptest::prop_assert_eq!(at, q.end);
                    // Maximal within the query: neighbouring pieces differ.
                    proptest::prop_assert!(runs.windows(2).all(|w| w[0].1 != w[1].1));
                }
            }
        }
    }
}
