//! An ordered map from `usize` keys to small `Copy` values, kept as a short list of
//! sorted chunks: a lookup is a binary search over the chunks' first keys (one or two
//! cache lines) and one inside a chunk of at most [`CAP`] keys stored apart from their
//! values, so it touches a handful of cache lines where a `BTreeMap` of the same size
//! walks several nodes. Positions ([`Pos`]) let a caller step to neighbours and change
//! values in place without searching again.

/// Most entries in a chunk (small under test, so that splits and merges are exercised).
#[cfg(not(test))]
const CAP: usize = 64;
#[cfg(test)]
const CAP: usize = 8;

/// Where an entry is: valid until the map is next changed other than through
/// [`SortedMap::overwrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    chunk: usize,
    slot: usize,
}

impl Pos {
    /// Its place in its chunk (what indexes [`SortedMap::chunk_mut`]'s slices).
    #[inline]
    pub fn slot(self) -> usize {
        self.slot
    }
}

#[derive(Debug)]
struct Chunk<V> {
    keys: Vec<usize>,
    values: Vec<V>,
}

impl<V> Chunk<V> {
    fn with(keys: Vec<usize>, values: Vec<V>) -> Self {
        Chunk { keys, values }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct SortedMap<V> {
    /// The first key of each chunk from `head` on; every such chunk holds at least one
    /// entry.
    firsts: Vec<usize>,
    chunks: Vec<Chunk<V>>,
    /// The chunks before this one are gone (left empty, without an allocation). The
    /// first chunk leaves by moving `head` past it, so that removing entries in key
    /// order (a program releasing its reservations in address order) moves no chunk;
    /// a vector's `remove(0)` moved every other chunk each time, which at 10^5
    /// reservations made a release copy kilobytes. Gone chunks are dropped from the
    /// vectors once they are half of them.
    head: usize,
    len: usize,
    /// A chunk that emptied (or was merged away), kept for the next one needed: a map
    /// that goes empty and back, as the backend's records do when a space holds one
    /// reservation at a time, allocates and frees nothing.
    spare: Option<Chunk<V>>,
}

impl<V> Default for SortedMap<V> {
    fn default() -> Self {
        SortedMap { firsts: Vec::new(), chunks: Vec::new(), head: 0, len: 0, spare: None }
    }
}

impl<V: Copy> SortedMap<V> {
    /// An empty chunk: the spare one, or a new one.
    fn fresh_chunk(&mut self) -> Chunk<V> {
        self.spare.take().unwrap_or_else(|| Chunk::with(Vec::with_capacity(CAP + 1), Vec::with_capacity(CAP + 1)))
    }

    /// Keep a chunk no longer in the map as the spare, emptied.
    fn retire(&mut self, mut c: Chunk<V>) {
        if self.spare.is_none() {
            c.keys.clear();
            c.values.clear();
            self.spare = Some(c);
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The position of the last entry whose key is at most `key`.
    #[inline]
    pub fn floor(&self, key: usize) -> Option<Pos> {
        let c = self.firsts[self.head..].partition_point(|&f| f <= key);
        if c == 0 {
            return None;
        }
        let chunk = self.head + c - 1;
        // At least one key of the chunk (its first) is <= key.
        let slot = self.chunks[chunk].keys.partition_point(|&k| k <= key) - 1;
        Some(Pos { chunk, slot })
    }

    /// The position of the first entry whose key is at least `key`.
    pub fn ceil(&self, key: usize) -> Option<Pos> {
        match self.floor(key) {
            Some(p) if self.key(p) == key => Some(p),
            Some(p) => self.next(p),
            None => self.first(),
        }
    }

    /// The position of the first entry.
    pub fn first(&self) -> Option<Pos> {
        (self.head < self.chunks.len()).then_some(Pos { chunk: self.head, slot: 0 })
    }

    /// The position after `p`.
    #[inline]
    pub fn next(&self, p: Pos) -> Option<Pos> {
        if p.slot + 1 < self.chunks[p.chunk].keys.len() {
            Some(Pos { chunk: p.chunk, slot: p.slot + 1 })
        } else if p.chunk + 1 < self.chunks.len() {
            Some(Pos { chunk: p.chunk + 1, slot: 0 })
        } else {
            None
        }
    }

    /// The position before `p`.
    #[inline]
    pub fn prev(&self, p: Pos) -> Option<Pos> {
        if p.slot > 0 {
            Some(Pos { chunk: p.chunk, slot: p.slot - 1 })
        } else if p.chunk > self.head {
            Some(Pos { chunk: p.chunk - 1, slot: self.chunks[p.chunk - 1].keys.len() - 1 })
        } else {
            None
        }
    }

    /// The key at `p`.
    #[inline]
    pub fn key(&self, p: Pos) -> usize {
        self.chunks[p.chunk].keys[p.slot]
    }

    /// The value at `p`.
    #[inline]
    pub fn value(&self, p: Pos) -> V {
        self.chunks[p.chunk].values[p.slot]
    }

    /// The keys and values of the chunk holding `p` (the values to change in place,
    /// which moves no entry and changes no key), for a caller that reads `p`'s
    /// neighbours inside its chunk by their slots rather than through a position each
    /// (one bounds check for all of them). `p.slot` indexes both slices, which have the
    /// same length.
    #[inline]
    pub fn chunk_mut(&mut self, p: Pos) -> (&[usize], &mut [V]) {
        let c = &mut self.chunks[p.chunk];
        let n = c.keys.len();
        (&c.keys, &mut c.values[..n])
    }

    /// Replace the entry at `p`. Keys may be out of order for a while (a caller
    /// rewriting several neighbouring entries in turn), but must be in order again
    /// before the next search or insertion.
    pub fn overwrite(&mut self, p: Pos, key: usize, v: V) {
        let c = &mut self.chunks[p.chunk];
        c.keys[p.slot] = key;
        c.values[p.slot] = v;
        if p.slot == 0 {
            self.firsts[p.chunk] = key;
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: usize) -> Option<V> {
        self.floor(key).filter(|&p| self.key(p) == key).map(|p| self.value(p))
    }

    /// Add an entry for `key`, which must not be in the map yet.
    pub fn insert(&mut self, key: usize, v: V) {
        if self.head == self.chunks.len() {
            // Empty (but for gone chunks): start afresh.
            self.chunks.clear();
            self.firsts.clear();
            self.head = 0;
            let mut c = self.fresh_chunk();
            c.keys.push(key);
            c.values.push(v);
            self.chunks.push(c);
            self.firsts.push(key);
            self.len = 1;
            return;
        }
        let chunk = self.head + self.firsts[self.head..].partition_point(|&f| f <= key).saturating_sub(1);
        let c = &mut self.chunks[chunk];
        let slot = c.keys.partition_point(|&k| k < key);
        debug_assert!(c.keys.get(slot) != Some(&key), "key {key:#x} already present");
        c.keys.insert(slot, key);
        c.values.insert(slot, v);
        if slot == 0 {
            self.firsts[chunk] = key;
        }
        self.len += 1;
        if c.keys.len() > CAP {
            // Split in halves.
            let mut new = self.fresh_chunk();
            let c = &mut self.chunks[chunk];
            let half = c.keys.len() / 2;
            new.keys.extend_from_slice(&c.keys[half..]);
            new.values.extend_from_slice(&c.values[half..]);
            c.keys.truncate(half);
            c.values.truncate(half);
            self.firsts.insert(chunk + 1, new.keys[0]);
            self.chunks.insert(chunk + 1, new);
        }
    }

    /// Take chunk `i` out: the first one by moving `head` past it (nothing moves),
    /// any other by removing it from the vectors. Where the chunk that followed it is now.
    fn unlink(&mut self, i: usize) -> (Chunk<V>, usize) {
        if i == self.head {
            let gone = std::mem::replace(&mut self.chunks[i], Chunk::with(Vec::new(), Vec::new()));
            self.head += 1;
            (gone, i + 1)
        } else {
            self.firsts.remove(i);
            (self.chunks.remove(i), i)
        }
    }

    /// Drop the gone chunks from the vectors once they are half of them (so each removal
    /// pays for this only once, on average); how many places the others moved down.
    fn compact(&mut self) -> usize {
        let gone = self.head;
        if gone < 16 || gone * 2 < self.chunks.len() {
            return 0;
        }
        self.chunks.drain(..gone);
        self.firsts.drain(..gone);
        self.head = 0;
        gone
    }

    /// Remove the entry at `p`; returns the position of the entry that followed it.
    pub fn remove_at(&mut self, p: Pos) -> Option<Pos> {
        let c = &mut self.chunks[p.chunk];
        c.keys.remove(p.slot);
        c.values.remove(p.slot);
        self.len -= 1;
        let n = c.keys.len();
        let mut next = Pos { chunk: p.chunk, slot: p.slot };
        if n == 0 {
            let (empty, after) = self.unlink(p.chunk);
            self.retire(empty);
            next = Pos { chunk: after, slot: 0 };
        } else {
            if p.slot == 0 {
                self.firsts[p.chunk] = c.keys[0];
            }
            if n < CAP / 4 {
                // Join a small chunk with a neighbour when both fit in three quarters
                // of a chunk, so that chunks stay at least a quarter full on average.
                let right = p.chunk + 1;
                if right < self.chunks.len() && n + self.chunks[right].keys.len() <= CAP * 3 / 4 {
                    if p.chunk == self.head {
                        // The first chunk: its entries go to the front of the next one,
                        // and it leaves by `head` (no chunk moves).
                        let (this, _) = self.unlink(p.chunk);
                        let r = &mut self.chunks[right];
                        r.keys.splice(0..0, this.keys.iter().copied());
                        r.values.splice(0..0, this.values.iter().copied());
                        self.firsts[right] = r.keys[0];
                        self.retire(this);
                        // What followed the removed entry keeps its place among `n`
                        // entries put in front of the next chunk's.
                        next = Pos { chunk: right, slot: p.slot };
                    } else {
                        let (other, _) = self.unlink(right);
                        let c = &mut self.chunks[p.chunk];
                        c.keys.extend_from_slice(&other.keys);
                        c.values.extend_from_slice(&other.values);
                        self.retire(other);
                    }
                } else if p.chunk > self.head && n + self.chunks[p.chunk - 1].keys.len() <= CAP * 3 / 4 {
                    let (this, _) = self.unlink(p.chunk);
                    let left = &mut self.chunks[p.chunk - 1];
                    next = Pos { chunk: p.chunk - 1, slot: left.keys.len() + p.slot };
                    left.keys.extend_from_slice(&this.keys);
                    left.values.extend_from_slice(&this.values);
                    self.retire(this);
                }
            }
        }
        let next = if next.chunk < self.chunks.len() && next.slot < self.chunks[next.chunk].keys.len() {
            Some(next)
        } else if next.chunk + 1 < self.chunks.len() {
            Some(Pos { chunk: next.chunk + 1, slot: 0 })
        } else {
            None
        };
        let moved = self.compact();
        next.map(|q| Pos { chunk: q.chunk - moved, slot: q.slot })
    }

    /// Remove the entry of `key`, returning its value.
    pub fn remove(&mut self, key: usize) -> Option<V> {
        let p = self.floor(key).filter(|&p| self.key(p) == key)?;
        let v = self.value(p);
        self.remove_at(p);
        Some(v)
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (usize, V)> + '_ {
        self.chunks[self.head..].iter().flat_map(|c| c.keys.iter().copied().zip(c.values.iter().copied()))
    }

    /// The entries whose keys lie in `[start, end)`, in key order.
    #[cfg(test)]
    pub fn range(&self, start: usize, end: usize) -> impl Iterator<Item = (usize, V)> + '_ {
        let mut at = if start < end { self.ceil(start) } else { None };
        std::iter::from_fn(move || {
            let p = at?;
            let k = self.key(p);
            if k >= end {
                return None;
            }
            at = self.next(p);
            Some((k, self.value(p)))
        })
    }

    /// Check the structure's invariants (tests).
    #[cfg(test)]
    pub fn check(&self) {
        assert_eq!(self.firsts.len(), self.chunks.len());
        assert!(self.head <= self.chunks.len());
        for c in &self.chunks[..self.head] {
            assert!(c.keys.is_empty() && c.values.is_empty() && c.keys.capacity() == 0, "a gone chunk keeps nothing");
        }
        let mut total = 0;
        let mut last = None;
        for (f, c) in self.firsts[self.head..].iter().zip(&self.chunks[self.head..]) {
            assert!(!c.keys.is_empty() && c.keys.len() <= CAP, "chunk of {}", c.keys.len());
            assert_eq!(c.keys.len(), c.values.len());
            assert_eq!(*f, c.keys[0]);
            for &k in &c.keys {
                assert!(last.map_or(true, |l| l < k), "keys out of order");
                last = Some(k);
            }
            total += c.keys.len();
        }
        assert_eq!(total, self.len);
        if let Some(c) = &self.spare {
            assert!(c.keys.is_empty() && c.values.is_empty(), "spare chunk not empty");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, u32),
        Remove(usize),
        /// Remove through the position found by `floor`, checking the successor.
        RemoveAt(usize),
        /// Replace the value found by `floor`, in place.
        Set(usize, u32),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0..200usize, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            1 => (0..200usize).prop_map(Op::Remove),
            1 => (0..200usize).prop_map(Op::RemoveAt),
            1 => (0..200usize, any::<u32>()).prop_map(|(k, v)| Op::Set(k, v)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(if cfg!(miri) { 3 } else { 300 }))]

        /// Every operation agrees with a `BTreeMap`, and so do lookups and walks.
        #[test]
        fn sorted_map_matches_a_btreemap(ops in proptest::collection::vec(op(), 1..300), probes in proptest::collection::vec(0..210usize, 6)) {
            let mut m = SortedMap::default();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        if let std::collections::btree_map::Entry::Vacant(e) = model.entry(k) {
                            e.insert(v);
                            m.insert(k, v);
                        }
                    }
                    Op::Remove(k) => proptest::prop_assert_eq!(m.remove(k), model.remove(&k)),
                    Op::RemoveAt(k) => {
                        let p = m.floor(k);
                        let want = model.range(..=k).next_back().map(|(&k, _)| k);
                        proptest::prop_assert_eq!(p.map(|p| m.key(p)), want);
                        if let (Some(p), Some(key)) = (p, want) {
                            model.remove(&key);
                            let after = m.remove_at(p);
                            let want_after = model.range(key..).next().map(|(&k, &v)| (k, v));
                            proptest::prop_assert_eq!(after.map(|a| (m.key(a), m.value(a))), want_after);
                        }
                    }
                    Op::Set(k, v) => {
                        if let Some(p) = m.floor(k) {
                            m.overwrite(p, m.key(p), v);
                            *model.range_mut(..=k).next_back().unwrap().1 = v;
                        }
                    }
                }
                m.check();
                proptest::prop_assert_eq!(m.len(), model.len());
            }
            proptest::prop_assert_eq!(m.iter().collect::<Vec<_>>(), model.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>());
            for &q in &probes {
                proptest::prop_assert_eq!(m.get(q), model.get(&q).copied());
                proptest::prop_assert_eq!(m.floor(q).map(|p| m.key(p)), model.range(..=q).next_back().map(|(&k, _)| k));
                proptest::prop_assert_eq!(m.ceil(q).map(|p| m.key(p)), model.range(q..).next().map(|(&k, _)| k));
                let got: Vec<_> = m.range(q, q + 40).collect();
                let want: Vec<_> = model.range(q..q + 40).map(|(&k, &v)| (k, v)).collect();
                proptest::prop_assert_eq!(got, want);
                // Stepping forward and back from a position visits the neighbours.
                if let Some(p) = m.floor(q) {
                    let k = m.key(p);
                    proptest::prop_assert_eq!(m.next(p).map(|n| m.key(n)), model.range(k + 1..).next().map(|(&k, _)| k));
                    proptest::prop_assert_eq!(m.prev(p).map(|n| m.key(n)), model.range(..k).next_back().map(|(&k, _)| k));
                }
            }
        }
    }

    /// Removing entries in key order (as releases in address order do) takes the first
    /// chunks off by `head`, joins the shrinking first chunk into the next one, drops
    /// gone chunks in bulk, and keeps every lookup and step right throughout; so does
    /// removing them in reverse order, and a map emptied this way takes new entries.
    #[test]
    fn removing_in_key_order_and_in_reverse_keeps_the_map_whole() {
        for reverse in [false, true] {
            let mut m = SortedMap::default();
            let n = 40 * CAP;
            for k in 0..n {
                m.insert(k * 2, k as u32);
            }
            m.check();
            let order: Vec<usize> = if reverse { (0..n).rev().collect() } else { (0..n).collect() };
            let mut max_head = 0;
            for (done, &k) in order.iter().enumerate() {
                let p = m.floor(k * 2).unwrap();
                assert_eq!(m.key(p), k * 2);
                let after = m.remove_at(p).map(|q| m.key(q));
                let want = if reverse { None } else { (k + 1 < n).then_some((k + 1) * 2) };
                assert_eq!(after, want, "the successor of {k}");
                max_head = max_head.max(m.head);
                m.check();
                assert_eq!(m.len(), n - done - 1);
                let rest = if reverse { 0..k } else { k + 1..n };
                if let Some(first) = rest.clone().next() {
                    assert_eq!(m.first().map(|q| m.key(q)), Some(first * 2));
                    assert_eq!(m.ceil(0).map(|q| m.key(q)), Some(first * 2));
                    assert_eq!(m.get(first * 2), Some(first as u32));
                }
                assert_eq!(m.get(k * 2), None);
                if done % 97 == 0 {
                    let all: Vec<usize> = m.iter().map(|(k, _)| k).collect();
                    assert_eq!(all, rest.map(|k| k * 2).collect::<Vec<_>>());
                }
            }
            assert_eq!(m.first(), None);
            assert!(m.chunks.len() <= 2 * 16 + 2, "gone chunks were dropped ({} left)", m.chunks.len());
            if !reverse {
                assert!(max_head > 0, "the first chunk left by head");
            }
            m.insert(5, 1);
            m.insert(3, 2);
            m.check();
            assert_eq!(m.iter().collect::<Vec<_>>(), vec![(3, 2), (5, 1)]);
        }
    }

    #[test]
    fn overwrite_moves_a_key_between_its_neighbours() {
        let mut m = SortedMap::default();
        for k in [10, 20, 30, 40, 50, 60] {
            m.insert(k, k as u32);
        }
        m.check();
        let p = m.floor(30).unwrap();
        m.overwrite(p, 25, 7);
        m.check();
        assert_eq!(m.get(25), Some(7));
        assert_eq!(m.get(30), None);
        // The first key of a later chunk.
        let p = m.floor(50).unwrap();
        let q = m.prev(p).unwrap();
        m.overwrite(p, 45, 1);
        m.check();
        assert_eq!(m.key(m.next(q).unwrap()), 45);
        assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), vec![10, 20, 25, 40, 45, 60]);
    }
}
