//! The free space, [`FreeSpace`] (see the [module's docs](super)).

use std::cell::Cell;
use std::ops::Range;

use super::{prefetch_lines, NIL};

/// Most gaps a leaf of the free space holds; a full one splits in two before it takes
/// another. (Small under test, so that the model tests split and join leaves all the
/// time.)
#[cfg(not(test))]
const GAPS: usize = 14;
#[cfg(test)]
const GAPS: usize = 6;

/// Most children an inner node of the free space has (small under test, as [`GAPS`]).
#[cfg(not(test))]
const FAN: usize = 16;
#[cfg(test)]
const FAN: usize = 4;
const _: () = assert!(FAN.is_power_of_two());

/// A leaf of the free space's B+-tree: up to [`GAPS`] consecutive gaps, inline.
///
/// Starts and ends lie in separate arrays, so that a bisection reads only the starts'
/// lines and a merge reads one line of ends; each array shares its last line with the
/// fields read beside it (the longest gap, the length and the parent link with the
/// starts; the rest of the longest-gap bookkeeping, `bound` and `own_n`, with the
/// ends): 256 bytes, four whole lines (`repr(align(64))`).
#[derive(Debug, Clone)]
#[repr(C, align(64))]
struct GapLeaf {
    /// Gap starts, ascending (the first `len`).
    starts: [usize; GAPS],
    /// The longest gap of this leaf.
    own: usize,
    /// How many gaps it holds (0 only while vacant).
    len: u32,
    /// Its inner node ([`NIL`] when it is the root).
    parent: u32,
    /// Gap ends, by the same index as `starts`.
    ends: [usize; GAPS],
    /// At least as long as every gap but one of the longest (so at least `own` when
    /// `own_n > 1`): when the one longest gap shrinks and stays longer than this, it is
    /// still the longest, without a rescan (placement carving reservations off the
    /// front of a leaf's big gap does that on every call).
    bound: usize,
    /// How many of its gaps are `own` long (so that losing one of them needs a rescan
    /// only when it was the last).
    own_n: u32,
}

impl GapLeaf {
    const EMPTY: GapLeaf =
        GapLeaf { starts: [0; GAPS], own: 0, len: 0, parent: NIL, ends: [0; GAPS], bound: 0, own_n: 0 };
}

/// An inner node of the free space's B+-tree: each child's first gap start (its key)
/// and its longest gap.
///
/// Keys past the last child are `usize::MAX`, so that a descent bisects the whole
/// array without reading the length.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
struct GapNode {
    /// Each child's key, ascending; `usize::MAX` past `len`.
    keys: [usize; FAN],
    /// The children: leaves when this node is the level just above them, else inner
    /// nodes.
    kids: [u32; FAN],
    /// Each child's longest gap.
    maxs: [usize; FAN],
    /// How many children it has.
    len: u32,
    /// Its own inner node ([`NIL`] at the root).
    parent: u32,
}

impl GapNode {
    const EMPTY: GapNode = GapNode { keys: [usize::MAX; FAN], kids: [NIL; FAN], maxs: [0; FAN], len: 0, parent: NIL };

    /// The longest gap under this node.
    fn max(&self) -> usize {
        self.maxs[..self.len as usize].iter().copied().max().unwrap_or(0)
    }
}

/// The allocatable free gaps of an address space, 64 KiB aligned at both ends.
///
/// Gaps are kept in address order in a B+-tree: leaves hold up to [`GAPS`] gaps inline
/// ([`GapLeaf`]), inner nodes each child's first gap start and longest gap
/// ([`GapNode`]). Finding the gaps around an address is one descent from the root, whose
/// upper levels are few and stay in the caches; after a gap changes, the maxima are
/// fixed on the path up from its leaf only as far as one changes (parent links, no
/// second descent); first-fit placement (lowest or highest address, or within a range)
/// climbs from where it starts to the first node whose maxima show a gap long enough
/// to its right (left) and descends to it: `O(log n)` however many small gaps lie
/// before the one that fits. The shape depends only on the calls made, and placement
/// not even on it: it is a function of the gaps alone.
#[derive(Debug, Clone)]
pub(crate) struct FreeSpace {
    leaves: Vec<GapLeaf>,
    nodes: Vec<GapNode>,
    vacant_leaves: Vec<u32>,
    vacant_nodes: Vec<u32>,
    /// The root: a leaf when `height` is 0, else an inner node; [`NIL`] when no gap.
    root: u32,
    /// Levels of inner nodes above the leaves.
    height: u32,
    count: usize,
    /// The leaf of the last placement or lookup: the claim that follows a placement
    /// takes from it, and [`FreeSpace::locate`] checks it before a descent.
    hint: Cell<u32>,
    /// What the last descent of a [`FreeSpace::warm`] or a [`FreeSpace::give`] read on
    /// its way to a leaf ([`Trail::NONE`] once any parent link changed or any node was
    /// freed since; other lookups' descents leave it). A give to that leaf (a
    /// release's, after its `warm`) raises the maxima above it without a bisection of
    /// each node's keys, and past its parent without a read of the parent's link, on a
    /// line of the parent that nothing else a release reads shares.
    trail: Cell<Trail>,
}

/// The path of a descent to a leaf, as [`FreeSpace`] remembers it.
#[derive(Debug, Clone, Copy)]
struct Trail {
    /// The leaf reached ([`NIL`] when none).
    leaf: u32,
    /// Its parent's parent ([`NIL`] when the leaf is less than two levels down).
    grand: u32,
    /// The path's slot in each of the lowest [`TRAIL_LEVELS`] inner nodes above the
    /// leaf, [`SLOT_BITS`] bits each, the parent's in the lowest bits.
    slots: u64,
}

impl Trail {
    /// No path remembered.
    const NONE: Trail = Trail { leaf: NIL, grand: NIL, slots: 0 };

    /// The path's slots if this trail reached `leaf` and holds every level of a tree of
    /// `height`: read from the parent up with [`next_slot`].
    #[inline(always)]
    fn path_to(self, leaf: u32, height: u32) -> Option<u64> {
        (self.leaf == leaf && height <= TRAIL_LEVELS).then_some(self.slots)
    }
}

/// The next slot (one level up) of the path `slots` from [`Trail::path_to`].
#[inline(always)]
fn next_slot(slots: &mut u64) -> usize {
    let s = (*slots & ((1 << SLOT_BITS) - 1)) as usize;
    *slots >>= SLOT_BITS;
    s
}

/// Bits of a slot in [`Trail::slots`].
const SLOT_BITS: u32 = 4;
const _: () = assert!(FAN <= 1 << SLOT_BITS);
/// Levels of inner nodes whose slots a [`Trail`] holds (those higher are bisected).
const TRAIL_LEVELS: u32 = u64::BITS / SLOT_BITS;

impl Default for FreeSpace {
    fn default() -> Self {
        FreeSpace {
            leaves: Vec::new(),
            nodes: Vec::new(),
            vacant_leaves: Vec::new(),
            vacant_nodes: Vec::new(),
            root: NIL,
            height: 0,
            count: 0,
            hint: Cell::new(NIL),
            trail: Cell::new(Trail::NONE),
        }
    }
}

/// The longest of the gaps `starts[k]..ends[k]`, how many are that long, and the longest
/// of the others once one of the longest is set aside (the longest again when there are
/// several).
fn longest(starts: &[usize], ends: &[usize]) -> (usize, u32, usize) {
    let (mut m, mut n, mut second) = (0, 0, 0);
    for (&s, &e) in starts.iter().zip(ends) {
        let l = e - s;
        match l.cmp(&m) {
            std::cmp::Ordering::Greater => (m, n, second) = (l, 1, m),
            std::cmp::Ordering::Equal => (n, second) = (n + 1, m),
            std::cmp::Ordering::Less => second = second.max(l),
        }
    }
    (m, n, second)
}

/// Make room for one more element in `v` without the standard growth's minimum of four
/// (a 256-byte leaf: an empty space would hold 1 KiB), doubling from one.
fn room_for_one<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(1));
    }
}

impl FreeSpace {
    /// All of `range` free.
    pub fn new(range: Range<usize>) -> Self {
        let mut f = FreeSpace::default();
        if range.start < range.end {
            f.insert(range.start, range.end);
        }
        f
    }

    // ----- the tree -------------------------------------------------------------------

    /// A vacant leaf (or a new one), emptied.
    fn alloc_leaf(&mut self) -> u32 {
        match self.vacant_leaves.pop() {
            Some(c) => {
                self.leaves[c as usize] = GapLeaf::EMPTY;
                c
            }
            None => {
                room_for_one(&mut self.leaves);
                self.leaves.push(GapLeaf::EMPTY);
                (self.leaves.len() - 1) as u32
            }
        }
    }

    /// A vacant inner node (or a new one), emptied.
    fn alloc_node(&mut self) -> u32 {
        match self.vacant_nodes.pop() {
            Some(t) => {
                self.nodes[t as usize] = GapNode::EMPTY;
                t
            }
            None => {
                room_for_one(&mut self.nodes);
                self.nodes.push(GapNode::EMPTY);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn free_leaf(&mut self, c: u32) {
        self.trail.set(Trail::NONE);
        // (A length of 0 also fails the hint's check.)
        self.leaves[c as usize].len = 0;
        self.vacant_leaves.push(c);
    }

    fn free_node(&mut self, t: u32) {
        self.trail.set(Trail::NONE);
        self.nodes[t as usize].len = 0;
        self.vacant_nodes.push(t);
    }

    /// No gap left: drop every node.
    fn clear(&mut self) {
        self.trail.set(Trail::NONE);
        self.leaves.clear();
        self.nodes.clear();
        self.vacant_leaves.clear();
        self.vacant_nodes.clear();
        self.root = NIL;
        self.height = 0;
    }

    /// The key (first gap start) of node `t`, a leaf at level 0, else an inner node.
    fn key_of(&self, t: u32, level: u32) -> usize {
        if level == 0 {
            self.leaves[t as usize].starts[0]
        } else {
            self.nodes[t as usize].keys[0]
        }
    }

    /// The longest gap under node `t` at `level`.
    fn max_of(&self, t: u32, level: u32) -> usize {
        if level == 0 {
            self.leaves[t as usize].own
        } else {
            self.nodes[t as usize].max()
        }
    }

    fn parent_of(&self, t: u32, level: u32) -> u32 {
        if level == 0 {
            self.leaves[t as usize].parent
        } else {
            self.nodes[t as usize].parent
        }
    }

    fn set_parent(&mut self, t: u32, level: u32, p: u32) {
        // (Every change of a parent link passes here, and every change of a node's
        // children but those that free a node: a remembered path may no longer be one.)
        self.trail.set(Trail::NONE);
        if level == 0 {
            self.leaves[t as usize].parent = p;
        } else {
            self.nodes[t as usize].parent = p;
        }
    }

    /// Where `child` is among the children of inner node `p` (one line of numbers).
    fn slot(&self, p: u32, child: u32) -> usize {
        let n = &self.nodes[p as usize];
        n.kids[..n.len as usize].iter().position(|&k| k == child).expect("a node is its parent's child")
    }

    /// Where the child of inner node `p` whose keys hold `key` is among its children
    /// (the child whose key is the greatest at most `key`, or the first): a bisection
    /// of the keys a descent just read, where [`FreeSpace::slot`]'s scan for a number
    /// cost a release ~40 instructions a level. A fixed number of halvings ([`FAN`] is
    /// a power of two; keys past the last child are `usize::MAX`, greater than `key`,
    /// which must be less: so the answer is a child without a look at the node's length,
    /// whose line holds nothing else a descent reads), each a compare and a conditional
    /// add.
    #[inline]
    fn slot_by_key(&self, p: u32, key: usize) -> usize {
        debug_assert!(key < usize::MAX);
        let n = &self.nodes[p as usize];
        let mut base = 0;
        let mut half = FAN / 2;
        while half > 0 {
            if n.keys[(base + half) % FAN] <= key {
                base += half;
            }
            half /= 2;
        }
        debug_assert!(base < n.len as usize);
        base
    }

    /// The leaf whose key is the greatest at most `addr`, or the first leaf (the tree
    /// is not empty).
    #[inline]
    fn descend(&self, addr: usize) -> u32 {
        // (As `descend_path`, without the path: a lookup that is not a release's pays
        // nothing for it.)
        let addr = addr.min(usize::MAX - 1);
        let mut t = self.root;
        for _ in 0..self.height {
            t = self.nodes[t as usize].kids[self.slot_by_key(t, addr)];
        }
        t
    }

    /// [`FreeSpace::descend`], and the path to the leaf.
    #[inline]
    fn descend_path(&self, addr: usize) -> Trail {
        // No gap starts at `usize::MAX` (gaps are granules), so every key at most `addr`
        // is at most this too, and it is less than the keys past a node's last child.
        let addr = addr.min(usize::MAX - 1);
        let (mut t, mut up, mut grand, mut slots) = (self.root, NIL, NIL, 0u64);
        for _ in 0..self.height {
            (grand, up) = (up, t);
            // Keys past the last child are usize::MAX: the whole array bisects.
            let s = self.slot_by_key(t, addr);
            // (The levels above the lowest `TRAIL_LEVELS` shift out.)
            slots = slots << SLOT_BITS | s as u64;
            t = self.nodes[t as usize].kids[s];
        }
        Trail { leaf: t, grand, slots }
    }

    /// The first leaf of node `t` at `level` whose longest gap is at least `need`
    /// (`t`'s maximum is), choosing the lowest child at each level, or the highest.
    fn descend_fit(&self, mut t: u32, level: u32, need: usize, highest: bool) -> u32 {
        for _ in 0..level {
            let n = &self.nodes[t as usize];
            let maxs = &n.maxs[..n.len as usize];
            let k = if highest { maxs.iter().rposition(|&m| m >= need) } else { maxs.iter().position(|&m| m >= need) };
            t = n.kids[k.expect("a child holds the maximum")];
        }
        t
    }

    /// After the longest gap under node `t` (at `level`) grew to `m` (or stayed), with
    /// nothing else changed: raise the maxima above it, stopping at the first that is
    /// already as long (no other child is read). Its key is right in its parent.
    #[inline(always)]
    fn raise(&mut self, t: u32, level: u32, m: usize) {
        let trail = self.trail.get();
        if let (0, Some(mut slots)) = (level, trail.path_to(t, self.height)) {
            // The last descent reached `t` and no link changed since: the path's slots
            // are known (no bisection), and so is the parent's parent (no read of the
            // parent's link).
            let mut slot = || next_slot(&mut slots);
            let p = self.leaves[t as usize].parent;
            if p == NIL {
                return;
            }
            let (s, n) = (slot(), &mut self.nodes[p as usize]);
            if n.maxs[s] >= m {
                return;
            }
            n.maxs[s] = m;
            debug_assert_eq!(trail.grand, n.parent, "a remembered grandparent is the parent's parent");
            let mut p = trail.grand;
            while p != NIL {
                let (s, n) = (slot(), &mut self.nodes[p as usize]);
                if n.maxs[s] >= m {
                    return;
                }
                n.maxs[s] = m;
                p = n.parent;
            }
            return;
        }
        // Every node on the way up holds `t`'s key in the child on the path.
        let key = self.key_of(t, level);
        let mut p = self.parent_of(t, level);
        while p != NIL {
            let s = self.slot_by_key(p, key);
            let n = &mut self.nodes[p as usize];
            if n.maxs[s] >= m {
                return;
            }
            n.maxs[s] = m;
            p = n.parent;
        }
    }

    /// After the longest gap under node `t` (at `level`) became `m`: fix the maxima
    /// above it, stopping at the first that stays the same (those above depend on
    /// nothing else that changed). Its key is right in its parent.
    fn refresh(&mut self, t: u32, level: u32, mut m: usize) {
        let key = self.key_of(t, level);
        let mut p = self.parent_of(t, level);
        while p != NIL {
            let s = self.slot_by_key(p, key);
            let n = &mut self.nodes[p as usize];
            if n.maxs[s] == m {
                return;
            }
            n.maxs[s] = m;
            m = n.max();
            p = n.parent;
        }
    }

    /// After the key of node `t` (at `level`) changed from `old`: set it in its parent,
    /// and in the parent's parent while it is a first child (each found by a bisection
    /// for `old`, still there).
    fn fix_key(&mut self, t: u32, level: u32, old: usize) {
        let key = self.key_of(t, level);
        let mut p = self.parent_of(t, level);
        while p != NIL {
            let s = self.slot_by_key(p, old);
            let n = &mut self.nodes[p as usize];
            n.keys[s] = key;
            if s != 0 {
                return;
            }
            p = n.parent;
        }
    }

    /// Link node `n` (at `level`, just split off `c`'s upper part) after `c` in `c`'s
    /// parent, splitting the parent if full, or under a new root. The maxima above are
    /// the same: `c` and `n` hold what `c` held.
    fn adopt(&mut self, c: u32, level: u32, n: u32) {
        let (key, max) = (self.key_of(n, level), self.max_of(n, level));
        let mut p = self.parent_of(c, level);
        if p == NIL {
            let r = self.alloc_node();
            let (ckey, cmax) = (self.key_of(c, level), self.max_of(c, level));
            let node = &mut self.nodes[r as usize];
            (node.keys[0], node.keys[1]) = (ckey, key);
            (node.kids[0], node.kids[1]) = (c, n);
            (node.maxs[0], node.maxs[1]) = (cmax, max);
            node.len = 2;
            self.set_parent(c, level, r);
            self.set_parent(n, level, r);
            self.root = r;
            self.height += 1;
            return;
        }
        if self.nodes[p as usize].len as usize == FAN {
            // (A split at the last child keeps the others: see `split_leaf`.)
            let last = self.nodes[p as usize].kids[FAN - 1] == c;
            let q = self.split_node(p, level + 1, if last { FAN - 1 } else { FAN / 2 });
            let kept = self.nodes[p as usize].len as usize;
            if !self.nodes[p as usize].kids[..kept].contains(&c) {
                p = q;
            }
        }
        let cmax = self.max_of(c, level);
        let s = self.slot(p, c);
        let node = &mut self.nodes[p as usize];
        let len = node.len as usize;
        node.keys.copy_within(s + 1..len, s + 2);
        node.kids.copy_within(s + 1..len, s + 2);
        node.maxs.copy_within(s + 1..len, s + 2);
        node.keys[s + 1] = key;
        node.kids[s + 1] = n;
        node.maxs[s + 1] = max;
        node.maxs[s] = cmax;
        node.len += 1;
        self.set_parent(n, level, p);
    }

    /// Move the children of full inner node `p` (at `level`) from the `mid`-th on to a
    /// new node linked after it; returns the new node.
    fn split_node(&mut self, p: u32, level: u32, mid: usize) -> u32 {
        let q = self.alloc_node();
        let mut upper = GapNode::EMPTY;
        let node = &mut self.nodes[p as usize];
        upper.keys[..FAN - mid].copy_from_slice(&node.keys[mid..]);
        upper.kids[..FAN - mid].copy_from_slice(&node.kids[mid..]);
        upper.maxs[..FAN - mid].copy_from_slice(&node.maxs[mid..]);
        upper.len = (FAN - mid) as u32;
        node.keys[mid..].fill(usize::MAX);
        node.len = mid as u32;
        let kids = upper.kids;
        self.nodes[q as usize] = upper;
        for &k in &kids[..FAN - mid] {
            self.set_parent(k, level - 1, q);
        }
        self.adopt(p, level, q);
        q
    }

    /// Split full leaf `c` in two, the upper part a new leaf linked after it, so that a
    /// gap can be inserted as its `i`-th: returns the leaf and the index where it now
    /// goes. Halves, but for a gap that goes after the last: then only the last moves,
    /// so that gaps made in address order (a space filled bottom-up) leave full leaves
    /// behind them (and full inner nodes: [`FreeSpace::adopt`] splits so too), not half
    /// full ones: half as many leaves, and fewer levels to descend.
    fn split_leaf(&mut self, c: u32, i: usize) -> (u32, usize) {
        let n = self.alloc_leaf();
        let mid = if i == GAPS { GAPS - 1 } else { GAPS / 2 };
        let mut upper = GapLeaf::EMPTY;
        let leaf = &mut self.leaves[c as usize];
        upper.starts[..GAPS - mid].copy_from_slice(&leaf.starts[mid..]);
        upper.ends[..GAPS - mid].copy_from_slice(&leaf.ends[mid..]);
        upper.len = (GAPS - mid) as u32;
        (upper.own, upper.own_n, upper.bound) = longest(&upper.starts[..GAPS - mid], &upper.ends[..GAPS - mid]);
        leaf.len = mid as u32;
        (leaf.own, leaf.own_n, leaf.bound) = longest(&leaf.starts[..mid], &leaf.ends[..mid]);
        self.leaves[n as usize] = upper;
        self.adopt(c, 0, n);
        if i <= mid {
            (c, i)
        } else {
            (n, i - mid)
        }
    }

    /// Take the `s`-th child out of inner node `p` (at `level`), then fix what depends
    /// on it: the node goes if emptied, its key and the maxima above follow, and it
    /// joins a neighbour if thin.
    fn remove_slot(&mut self, p: u32, s: usize, level: u32) {
        let node = &mut self.nodes[p as usize];
        let (len, old) = (node.len as usize, node.keys[0]);
        node.keys.copy_within(s + 1..len, s);
        node.kids.copy_within(s + 1..len, s);
        node.maxs.copy_within(s + 1..len, s);
        node.keys[len - 1] = usize::MAX;
        node.len -= 1;
        if node.len == 0 {
            let up = node.parent;
            self.free_node(p);
            if up == NIL {
                self.clear();
            } else {
                let s = self.slot(up, p);
                self.remove_slot(up, s, level + 1);
            }
            return;
        }
        if s == 0 {
            self.fix_key(p, level, old);
        }
        let m = self.nodes[p as usize].max();
        self.refresh(p, level, m);
        self.join(p, level);
    }

    /// Node `t` (at `level`) may have become thin: if it holds at most a quarter of
    /// what it can, take in its next sibling (or join its previous one) when the two
    /// fit in three quarters of one node; a root with one child gives way to it.
    fn join(&mut self, t: u32, level: u32) {
        let p = self.parent_of(t, level);
        if p == NIL {
            if level > 0 && self.nodes[t as usize].len == 1 {
                let k = self.nodes[t as usize].kids[0];
                self.free_node(t);
                self.root = k;
                self.height -= 1;
                self.set_parent(k, level - 1, NIL);
                self.join(k, level - 1);
            }
            return;
        }
        let cap = if level == 0 { GAPS } else { FAN };
        let len_of = |f: &FreeSpace, t: u32| {
            if level == 0 {
                f.leaves[t as usize].len as usize
            } else {
                f.nodes[t as usize].len as usize
            }
        };
        if len_of(self, t) > cap / 4 {
            return;
        }
        let s = self.slot(p, t);
        let pn = &self.nodes[p as usize];
        let (a, b, sa) = if s + 1 < pn.len as usize {
            (t, pn.kids[s + 1], s)
        } else if s > 0 {
            (pn.kids[s - 1], t, s - 1)
        } else {
            return;
        };
        let (la, lb) = (len_of(self, a), len_of(self, b));
        if la + lb > cap * 3 / 4 {
            return;
        }
        if level == 0 {
            let moved = self.leaves[b as usize].clone();
            let leaf = &mut self.leaves[a as usize];
            leaf.starts[la..la + lb].copy_from_slice(&moved.starts[..lb]);
            leaf.ends[la..la + lb].copy_from_slice(&moved.ends[..lb]);
            leaf.len += lb as u32;
            (leaf.own, leaf.own_n, leaf.bound) = longest(&leaf.starts[..la + lb], &leaf.ends[..la + lb]);
            self.free_leaf(b);
        } else {
            let moved = self.nodes[b as usize].clone();
            let node = &mut self.nodes[a as usize];
            node.keys[la..la + lb].copy_from_slice(&moved.keys[..lb]);
            node.kids[la..la + lb].copy_from_slice(&moved.kids[..lb]);
            node.maxs[la..la + lb].copy_from_slice(&moved.maxs[..lb]);
            node.len += lb as u32;
            for &k in &moved.kids[..lb] {
                self.set_parent(k, level - 1, a);
            }
            self.free_node(b);
        }
        self.nodes[p as usize].maxs[sa] = self.max_of(a, level);
        self.remove_slot(p, sa + 1, level + 1);
    }

    /// The leaf holding the gap with the greatest start at most `addr` (`None` when
    /// every gap starts after it).
    fn locate(&self, addr: usize) -> Option<u32> {
        self.locate_then::<false>(addr, |_| {})
    }

    /// [`FreeSpace::locate`], running `found` on a leaf found by a descent (not on the
    /// hint's, which the last lookup just used); with `REMEMBER`, the descent's path is
    /// remembered (a release's `give`, which raises the maxima on it; as `warm` does).
    #[inline]
    fn locate_then<const REMEMBER: bool>(&self, addr: usize, found: impl FnOnce(u32)) -> Option<u32> {
        // Leaves hold consecutive gaps, so a live leaf whose gaps start on both sides of
        // `addr` (or at it) is the one: no other leaf's key lies in between.
        let h = self.hint.get();
        if let Some(l) = self.leaves.get(h as usize) {
            let n = l.len as usize;
            if n > 0 && l.starts[0] <= addr && addr <= l.starts[n - 1] {
                return Some(h);
            }
        }
        // (Before every gap, as a placement from the bottom asks first: no descent.)
        if self.root == NIL || addr < self.key_of(self.root, self.height) {
            return None;
        }
        let c = if REMEMBER {
            let trail = self.descend_path(addr);
            self.trail.set(trail);
            trail.leaf
        } else {
            self.descend(addr)
        };
        debug_assert!(self.leaves[c as usize].starts[0] <= addr);
        found(c);
        self.hint.set(c);
        Some(c)
    }

    /// The first leaf.
    fn leftmost(&self) -> Option<u32> {
        (self.root != NIL).then(|| self.descend(0))
    }

    /// The leaf after leaf `c`: up to the first node where `c`'s path is not the last
    /// child, then down the first children of the next one. When the last descent
    /// reached `c` (a give's), the path's slots are its [`Trail`]'s, not a scan of each
    /// node's children for the one below.
    fn next_leaf(&self, c: u32) -> Option<u32> {
        let (mut t, mut level) = (c, 0);
        let mut p = self.leaves[c as usize].parent;
        let mut slots = self.trail.get().path_to(c, self.height);
        while p != NIL {
            let s = match slots.as_mut() {
                Some(rest) => {
                    let s = next_slot(rest);
                    debug_assert_eq!(s, self.slot(p, t), "a remembered slot is the path's");
                    s
                }
                None => self.slot(p, t),
            };
            let n = &self.nodes[p as usize];
            if s + 1 < n.len as usize {
                let mut t = n.kids[s + 1];
                for _ in 0..level {
                    t = self.nodes[t as usize].kids[0];
                }
                return Some(t);
            }
            t = p;
            level += 1;
            p = n.parent;
        }
        None
    }

    /// The lowest leaf after leaf `c` holding a gap of `need`, or the highest before it.
    fn fit_beside(&self, c: u32, need: usize, before: bool) -> Option<u32> {
        let (mut t, mut level) = (c, 0);
        let mut p = self.leaves[c as usize].parent;
        while p != NIL {
            let s = self.slot(p, t);
            let n = &self.nodes[p as usize];
            let found = if before {
                n.maxs[..s].iter().rposition(|&m| m >= need)
            } else {
                n.maxs[s + 1..n.len as usize].iter().position(|&m| m >= need).map(|k| s + 1 + k)
            };
            if let Some(k) = found {
                return Some(self.descend_fit(n.kids[k], level, need, before));
            }
            t = p;
            level += 1;
            p = n.parent;
        }
        None
    }

    // ----- gaps -----------------------------------------------------------------------

    /// Gap `i` of leaf `c`.
    fn gap(&self, c: u32, i: usize) -> (usize, usize) {
        let l = &self.leaves[c as usize];
        (l.starts[i], l.ends[i])
    }

    /// The gaps of leaf `c` starting before `addr` (or at it, with `at_too`): the index
    /// of its first gap that does not.
    fn bisect(&self, c: u32, addr: usize, at_too: bool) -> usize {
        let l = &self.leaves[c as usize];
        let starts = &l.starts[..l.len as usize];
        if at_too {
            starts.partition_point(|&s| s <= addr)
        } else {
            starts.partition_point(|&s| s < addr)
        }
    }

    /// Add the gap `[start, end)`, which overlaps and touches no other.
    fn insert(&mut self, start: usize, end: usize) {
        let Some(c) = self.locate(start).or_else(|| self.leftmost()) else {
            self.count += 1;
            let c = self.alloc_leaf();
            let leaf = &mut self.leaves[c as usize];
            (leaf.starts[0], leaf.ends[0], leaf.len) = (start, end, 1);
            (leaf.own, leaf.own_n, leaf.bound) = (end - start, 1, 0);
            self.root = c;
            self.height = 0;
            return;
        };
        // `c` is the leaf before `start`, or the first leaf when `start` precedes every
        // gap (then `start` becomes its key).
        let i = self.bisect(c, start, false);
        self.insert_in(c, i, (start, end));
    }

    /// Insert `gap` as the `i`-th of leaf `c` (where it belongs in the order).
    fn insert_in(&mut self, c: u32, i: usize, gap: (usize, usize)) {
        self.count += 1;
        let (c, i) = if self.leaves[c as usize].len as usize == GAPS { self.split_leaf(c, i) } else { (c, i) };
        let leaf = &mut self.leaves[c as usize];
        let len = leaf.len as usize;
        leaf.starts.copy_within(i..len, i + 1);
        leaf.ends.copy_within(i..len, i + 1);
        (leaf.starts[i], leaf.ends[i]) = gap;
        leaf.len += 1;
        let old = (i == 0).then(|| leaf.starts[1]);
        self.settle(c, old, 0, gap.1 - gap.0);
    }

    /// Cut gap `i` of leaf `c`, `(s, e)`, into `(s, rs)` and `(re, e)`
    /// (`s < rs < re < e`).
    fn cut_in(&mut self, c: u32, i: usize, rs: usize, re: usize) {
        self.count += 1;
        let (s, e) = self.gap(c, i);
        // Where the upper piece goes; the lower one is just before it, in the same leaf.
        let (c, j) = if self.leaves[c as usize].len as usize == GAPS { self.split_leaf(c, i + 1) } else { (c, i + 1) };
        let leaf = &mut self.leaves[c as usize];
        let len = leaf.len as usize;
        leaf.ends[j - 1] = rs;
        leaf.starts.copy_within(j..len, j + 1);
        leaf.ends.copy_within(j..len, j + 1);
        (leaf.starts[j], leaf.ends[j]) = (re, e);
        leaf.len += 1;
        // Both pieces are shorter than the gap that went.
        self.settle(c, None, e - s, 0);
    }

    /// Remove the `i`-th gap of leaf `c`.
    fn remove_in(&mut self, c: u32, i: usize) {
        self.count -= 1;
        let leaf = &mut self.leaves[c as usize];
        let len = leaf.len as usize;
        if len == 1 {
            let p = leaf.parent;
            self.free_leaf(c);
            if p == NIL {
                self.clear();
            } else {
                let s = self.slot(p, c);
                self.remove_slot(p, s, 1);
            }
            return;
        }
        let (s, e) = (leaf.starts[i], leaf.ends[i]);
        leaf.starts.copy_within(i + 1..len, i);
        leaf.ends.copy_within(i + 1..len, i);
        leaf.len -= 1;
        self.settle(c, (i == 0).then_some(s), e - s, 0);
    }

    /// Give the `i`-th gap of leaf `c` the bounds `to`, which keep its place in the
    /// order and overlap and touch no other gap.
    fn reshape_in(&mut self, c: u32, i: usize, to: (usize, usize)) {
        let leaf = &mut self.leaves[c as usize];
        let (s, e) = (leaf.starts[i], leaf.ends[i]);
        (leaf.starts[i], leaf.ends[i]) = to;
        self.settle(c, (i == 0 && s != to.0).then_some(s), e - s, to.1 - to.0);
    }

    /// After the gaps of leaf `c` (still not empty) changed — a gap `lost` long went
    /// (or changed) and one `gained` long came (or is what it changed to); 0 for none,
    /// and any other gap that came is shorter than `lost`; `old` its key before, when
    /// its first gap's start changed — fix its key, update its longest gap (a rescan
    /// only when the last gap of that length went), fix the maxima above it, and join it
    /// with a neighbour if thin.
    fn settle(&mut self, c: u32, old: Option<usize>, lost: usize, gained: usize) {
        if let Some(old) = old {
            self.fix_key(c, 0, old);
        }
        let leaf = &mut self.leaves[c as usize];
        let own = leaf.own;
        if gained > own {
            // Longer than any other (so than the lost one), all at most the old longest.
            (leaf.own, leaf.own_n, leaf.bound) = (gained, 1, own);
        } else if lost != 0 && lost == own && leaf.own_n == 1 && gained != own {
            // The one longest gap went, or shrank to `gained`: that is the longest now
            // if longer than every other gap (those are at most `bound`); else rescan.
            if gained > leaf.bound {
                leaf.own = gained;
            } else {
                let len = leaf.len as usize;
                (leaf.own, leaf.own_n, leaf.bound) = longest(&leaf.starts[..len], &leaf.ends[..len]);
            }
        } else {
            if gained != 0 && gained == own {
                leaf.own_n += 1;
            }
            if lost != 0 && lost == own {
                // (Not the last of that length: handled above.)
                leaf.own_n -= 1;
            }
            // Any other gap that came is shorter than `lost`, so at most `bound`
            // already unless `lost` was the one longest (handled above).
            leaf.bound = leaf.bound.max(gained);
        }
        let (now, len) = (leaf.own, leaf.len as usize);
        if now >= own {
            // Only grew (a give, or a take that left the longest gap as it was): the
            // maxima above can only grow to it, without a look at any other child.
            self.raise(c, 0, now);
        } else {
            self.refresh(c, 0, now);
        }
        if len <= GAPS / 4 {
            self.join(c, 0);
        }
    }

    /// [`FreeSpace::settle`] after a give joined two gaps of leaf `c` and the range
    /// between them into one gap `gained` long (longer than either; the leaf's first gap
    /// starts where it did): the same changes, without the checks that case never needs
    /// (a new key, a lost gap). Most releases end here.
    fn merged(&mut self, c: u32, gained: usize) {
        let leaf = &mut self.leaves[c as usize];
        let own = leaf.own;
        if gained > own {
            (leaf.own, leaf.own_n, leaf.bound) = (gained, 1, own);
            self.raise(c, 0, gained);
        } else {
            // The longest stays as long (the maxima above too).
            if gained == own {
                leaf.own_n += 1;
            }
            leaf.bound = leaf.bound.max(gained);
        }
        if self.leaves[c as usize].len as usize <= GAPS / 4 {
            self.join(c, 0);
        }
    }

    /// The leaf holding the gap starting at `key` (which exists) and its index there.
    fn position(&self, key: usize) -> (u32, usize) {
        let c = self.locate(key).expect("gap exists");
        let i = self.bisect(c, key, false);
        debug_assert_eq!(self.gap(c, i).0, key);
        (c, i)
    }

    /// Remove the gap starting at `key`, which exists.
    fn remove(&mut self, key: usize) {
        let (c, i) = self.position(key);
        self.remove_in(c, i);
    }

    /// Give the gap starting at `key` (which exists) the bounds `to`, which overlap and
    /// touch no other gap (so its place in the order stays the same).
    fn reshape(&mut self, key: usize, to: (usize, usize)) {
        let (c, i) = self.position(key);
        self.reshape_in(c, i, to);
    }

    /// The gap with the greatest start at most `addr`.
    fn floor(&self, addr: usize) -> Option<(usize, usize)> {
        let c = self.locate(addr)?;
        let i = self.bisect(c, addr, true);
        Some(self.gap(c, i - 1))
    }

    /// The free gap holding `addr`, or else the first one after it.
    pub fn next_gap(&self, addr: usize) -> Option<(usize, usize)> {
        match self.floor(addr) {
            Some(g) if g.1 > addr => Some(g),
            _ => self.ceil(addr),
        }
    }

    /// The gap with the least start at least `addr`.
    fn ceil(&self, addr: usize) -> Option<(usize, usize)> {
        let c = match self.locate(addr) {
            Some(c) => c,
            None => return self.leftmost().map(|c| self.gap(c, 0)),
        };
        let i = self.bisect(c, addr, false);
        if i < self.leaves[c as usize].len as usize {
            Some(self.gap(c, i))
        } else {
            self.next_leaf(c).map(|n| self.gap(n, 0))
        }
    }

    /// The first gap of leaf `c` from index `from` at least `need` long, or with
    /// `before` the last one before index `from`.
    fn fit_in(&self, c: u32, from: usize, need: usize, before: bool) -> Option<(usize, usize)> {
        let l = &self.leaves[c as usize];
        let fits = |&k: &usize| l.ends[k] - l.starts[k] >= need;
        let k = if before { (0..from).rev().find(fits) } else { (from..l.len as usize).find(fits) };
        k.map(|k| (l.starts[k], l.ends[k]))
    }

    /// The lowest gap starting at or after `lo` at least `need` long.
    fn lowest_fit(&self, lo: usize, need: usize) -> Option<(usize, usize)> {
        let c = match self.locate(lo) {
            Some(c) => {
                let i = self.bisect(c, lo, false);
                if let Some(g) = self.fit_in(c, i, need, false) {
                    self.hint.set(c);
                    return Some(g);
                }
                self.fit_beside(c, need, false)?
            }
            None => {
                // Every gap starts after `lo`: the lowest anywhere.
                if self.root == NIL || self.max_of(self.root, self.height) < need {
                    return None;
                }
                self.descend_fit(self.root, self.height, need, false)
            }
        };
        self.hint.set(c);
        self.fit_in(c, 0, need, false)
    }

    /// The highest gap starting before `hi` at least `need` long.
    fn highest_fit(&self, hi: usize, need: usize) -> Option<(usize, usize)> {
        let c = self.locate(hi.checked_sub(1)?)?;
        let i = self.bisect(c, hi, false);
        if let Some(g) = self.fit_in(c, i, need, true) {
            self.hint.set(c);
            return Some(g);
        }
        let c = self.fit_beside(c, need, true)?;
        self.hint.set(c);
        self.fit_in(c, self.leaves[c as usize].len as usize, need, true)
    }

    /// Whether all of `range` is inside one free gap.
    pub fn contains(&self, range: &Range<usize>) -> bool {
        self.floor(range.start).is_some_and(|(_, end)| range.end <= end && range.start < end)
    }

    /// Mark every free address of `range` as taken.
    pub fn take(&mut self, range: &Range<usize>) {
        let (rs, re) = (range.start, range.end);
        if rs >= re {
            return;
        }
        // Usually all of `range` lies in one gap: edit it in place.
        if let Some(c) = self.locate(rs) {
            let i = self.bisect(c, rs, true) - 1;
            let (s, e) = self.gap(c, i);
            if e >= re {
                match (s < rs, e > re) {
                    (true, true) => self.cut_in(c, i, rs, re),
                    (true, false) => self.reshape_in(c, i, (s, rs)),
                    (false, true) => self.reshape_in(c, i, (re, e)),
                    (false, false) => self.remove_in(c, i),
                }
                return;
            }
        }
        let mut cur = match self.floor(rs) {
            Some(g) if g.1 > rs => Some(g),
            _ => self.ceil(rs),
        };
        while let Some((s, e)) = cur {
            if s >= re {
                break;
            }
            match (s < rs, e > re) {
                (true, true) => {
                    self.reshape(s, (s, rs));
                    self.insert(re, e);
                }
                (true, false) => self.reshape(s, (s, rs)),
                (false, true) => self.reshape(s, (re, e)),
                (false, false) => self.remove(s),
            }
            if e >= re {
                break;
            }
            cur = self.ceil(e);
        }
    }

    /// Mark `range` (none of which is free now) as free, merging with neighbours.
    pub fn give(&mut self, range: Range<usize>) {
        let (s, e) = (range.start, range.end);
        if s >= e {
            return;
        }
        // Usually both neighbours are in the leaf before `s`: edit it in place.
        // (A leaf found through the hint was used just now, by the last lookup or by a
        // `warm`: its lines are loaded already.)
        if let Some(c) = self.locate_then::<true>(s, |c| self.touch(c)) {
            // The leaf's first gap starts before `s` (which is not free), so i >= 1.
            let i = self.bisect(c, s, false);
            let leaf = &self.leaves[c as usize];
            let len = leaf.len as usize;
            let prev = (leaf.ends[i - 1] == s).then_some(leaf.starts[i - 1]);
            let next = (i < len && leaf.starts[i] == e).then(|| leaf.ends[i]);
            if i == len {
                // The gap after the range, if any, is the next leaf's first: edit the two
                // leaves found here (as the lookups below would find them).
                if let Some(n) = self.next_leaf(c).filter(|&n| self.gap(n, 0).0 == e) {
                    let ne = self.gap(n, 0).1;
                    match prev {
                        Some(ps) => {
                            // (Removing the next leaf's first gap may empty it or join it
                            // with a neighbour, but never moves `c`'s gaps: a join keeps
                            // the lower leaf, appending to it.)
                            self.remove_in(n, 0);
                            self.reshape_in(c, i - 1, (ps, ne));
                        }
                        None => self.reshape_in(n, 0, (s, ne)),
                    }
                    return;
                }
            }
            match (prev, next) {
                (Some(ps), Some(ne)) => {
                    let leaf = &mut self.leaves[c as usize];
                    leaf.ends[i - 1] = ne;
                    leaf.starts.copy_within(i + 1..len, i);
                    leaf.ends.copy_within(i + 1..len, i);
                    leaf.len -= 1;
                    self.count -= 1;
                    // Two gaps went, each shorter than the one they make.
                    self.merged(c, ne - ps);
                }
                (Some(ps), None) => self.reshape_in(c, i - 1, (ps, e)),
                (None, Some(ne)) => self.reshape_in(c, i, (s, ne)),
                (None, None) => self.insert_in(c, i, (s, e)),
            }
            return;
        }
        let prev = self.floor(s).filter(|&(_, pe)| pe == s);
        let next = self.ceil(e).filter(|&(ns, _)| ns == e);
        match (prev, next) {
            (Some((ps, _)), Some((ns, ne))) => {
                self.remove(ns);
                self.reshape(ps, (ps, ne));
            }
            (Some((ps, _)), None) => self.reshape(ps, (ps, e)),
            (None, Some((ns, ne))) => self.reshape(ns, (s, ne)),
            (None, None) => self.insert(s, e),
        }
    }

    /// Request every line of leaf `c` at once (prefetched: no instruction waits for
    /// them): a bisection of its starts and a read of its ends that follow wait for
    /// memory once, not once per step.
    #[inline]
    fn touch(&self, c: u32) {
        prefetch_lines(&self.leaves[c as usize]);
    }

    /// Start loading the leaf a [`FreeSpace::give`] of a range starting at `addr` will
    /// edit, so that the loads overlap whatever the caller does meanwhile: a release
    /// runs this while its reservation's leaf is on its way, and at 333 334
    /// reservations its two waits for memory (the reservation's, then the gaps')
    /// become one.
    ///
    /// It descends without a look at the hint: a release's range is seldom in the leaf
    /// of the lookup before (even a working set of 1024 reservations has its gaps in
    /// ~70 leaves), so the check cost more instructions than the descents it saved
    /// (callgrind, release at 10^6 regions, random and on that working set); the
    /// descent leaves the hint and the path on the leaf, for the give.
    pub fn warm(&self, addr: usize) {
        // (Before every gap, the first leaf: loaded for nothing, but a true path.)
        if self.root == NIL {
            return;
        }
        let trail = self.descend_path(addr);
        self.trail.set(trail);
        self.hint.set(trail.leaf);
        self.touch(trail.leaf);
    }

    /// A base for `size` bytes aligned to `align`: the lowest that fits, or with
    /// `top_down` the highest.
    pub fn find(&self, size: usize, align: usize, top_down: bool) -> Option<usize> {
        if top_down {
            let mut hi = usize::MAX;
            loop {
                let (s, e) = self.highest_fit(hi, size)?;
                let base = (e - size) & !(align - 1);
                if base >= s {
                    return Some(base);
                }
                hi = s;
            }
        } else {
            let mut lo = 0;
            loop {
                let (s, e) = self.lowest_fit(lo, size)?;
                if let Some(base) = s.checked_add(align - 1).map(|b| b & !(align - 1)) {
                    if base.checked_add(size).is_some_and(|end| end <= e) {
                        return Some(base);
                    }
                }
                lo = s + 1;
            }
        }
    }

    /// A base for `size` bytes aligned to `align` with all of them inside `within`: the
    /// lowest that fits, or with `top_down` the highest. As [`FreeSpace::find`], each
    /// step is a search of the index for the next gap long enough (`O(log n)`); only the
    /// gaps at the window's two edges are cut to it, so the subtree maxima stay valid
    /// for every other. (Gaps long enough that the alignment leaves too short are
    /// passed one by one, as `find` passes them.)
    pub fn find_within(&self, size: usize, align: usize, top_down: bool, within: Range<usize>) -> Option<usize> {
        let (lo, hi) = (within.start, within.end);
        if size == 0 || hi <= lo || hi - lo < size {
            return None;
        }
        // The aligned base in gap `(s, e)` cut to the window, lowest or highest.
        let lowest_in = |s: usize, e: usize| {
            let (s, e) = (s.max(lo), e.min(hi));
            let base = s.checked_add(align - 1)? & !(align - 1);
            base.checked_add(size).is_some_and(|end| end <= e).then_some(base)
        };
        let highest_in = |s: usize, e: usize| {
            let (s, e) = (s.max(lo), e.min(hi));
            let base = e.checked_sub(size)? & !(align - 1);
            (base >= s).then_some(base)
        };
        if top_down {
            let mut below = hi;
            loop {
                let (s, e) = self.highest_fit(below, size)?;
                if e <= lo {
                    return None;
                }
                if let Some(base) = highest_in(s, e) {
                    return Some(base);
                }
                if s <= lo {
                    return None;
                }
                below = s;
            }
        }
        // The gap holding `lo`, which starts below the window (`lowest_fit` looks only
        // at gaps starting at or after an address).
        if let Some((s, e)) = self.floor(lo).filter(|&(_, e)| e > lo) {
            if let Some(base) = lowest_in(s, e) {
                return Some(base);
            }
        }
        let mut from = lo;
        loop {
            let (s, e) = self.lowest_fit(from, size)?;
            if s >= hi {
                return None;
            }
            if let Some(base) = lowest_in(s, e) {
                return Some(base);
            }
            if e >= hi {
                return None;
            }
            from = s + 1;
        }
    }

    /// The largest free gap, in bytes.
    pub fn largest(&self) -> usize {
        if self.root == NIL {
            0
        } else {
            self.max_of(self.root, self.height)
        }
    }

    /// How many gaps there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Every gap, in address order (for tests and debugging).
    #[cfg(test)]
    pub fn gaps(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(g) = self.ceil(at) {
            out.push(g);
            at = g.0 + 1;
        }
        out
    }

    /// Every invariant of the tree, or what breaks one: leaves at one depth, each
    /// holding 1..=[`GAPS`] ascending gaps with its longest gap, count and bound right;
    /// inner nodes with 1..=[`FAN`] children (2 or more at the root), each child's key
    /// and maximum right, `usize::MAX` past them, parent links right; gaps ascending
    /// across leaves; every node either in the tree once or vacant and empty.
    #[cfg(test)]
    fn check(&self) -> Result<(), String> {
        // The path remembered by the last descent is still the leaf's: its parent's
        // parent, and its slot in each node above it (as many as are remembered).
        let Trail { leaf: reached, grand, slots } = self.trail.get();
        if reached != NIL {
            let leaf = self.leaves.get(reached as usize).filter(|l| l.len > 0);
            let p = leaf.map(|l| l.parent).ok_or("a remembered path's leaf is gone")?;
            let g = if p == NIL { NIL } else { self.nodes[p as usize].parent };
            if g != grand {
                return Err(format!("leaf {reached}: remembered grandparent {grand}, now {g}"));
            }
            let (mut t, mut p, mut rest) = (reached, p, slots);
            for level in 1..=TRAIL_LEVELS.min(self.height) {
                if p == NIL {
                    return Err(format!("leaf {reached}: no node {level} levels up"));
                }
                let remembered = next_slot(&mut rest);
                let n = &self.nodes[p as usize];
                let now = n.kids[..n.len as usize].iter().position(|&k| k == t);
                if now != Some(remembered) {
                    return Err(format!("leaf {reached}: remembered slot {remembered} {level} levels up, now {now:?}"));
                }
                (t, p) = (p, n.parent);
            }
        }
        if self.root == NIL {
            return if self.count == 0 && self.leaves.is_empty() && self.nodes.is_empty() {
                Ok(())
            } else {
                Err("empty tree with nodes or a count".into())
            };
        }
        let (mut leaves, mut nodes) = (Vec::new(), Vec::new());
        // (node, level, parent)
        let mut stack = vec![(self.root, self.height, NIL)];
        while let Some((t, level, p)) = stack.pop() {
            if self.parent_of(t, level) != p {
                return Err(format!("node {t} at level {level}: parent {} not {p}", self.parent_of(t, level)));
            }
            if level == 0 {
                let l = &self.leaves[t as usize];
                let n = l.len as usize;
                if n == 0 || n > GAPS {
                    return Err(format!("leaf {t} holds {n} gaps"));
                }
                let (own, own_n, _) = longest(&l.starts[..n], &l.ends[..n]);
                if (l.own, l.own_n) != (own, own_n) {
                    return Err(format!("leaf {t}: longest gap {} x{} wrong", l.own, l.own_n));
                }
                let mut lens: Vec<usize> = (0..n).map(|k| l.ends[k] - l.starts[k]).collect();
                lens.sort_unstable();
                lens.pop();
                if lens.iter().any(|&x| x > l.bound) {
                    return Err(format!("leaf {t}: bound {} below a gap", l.bound));
                }
                leaves.push(t);
            } else {
                let node = &self.nodes[t as usize];
                let n = node.len as usize;
                if n == 0 || n > FAN || (p == NIL && n < 2) {
                    return Err(format!("node {t} has {n} children"));
                }
                if node.keys[n..].iter().any(|&k| k != usize::MAX) {
                    return Err(format!("node {t}: a key past its children"));
                }
                for k in 0..n {
                    let kid = node.kids[k];
                    if node.keys[k] != self.key_of(kid, level - 1) || node.maxs[k] != self.max_of(kid, level - 1) {
                        return Err(format!("node {t}, child {k}: key or maximum wrong"));
                    }
                }
                nodes.push(t);
                // Children in reverse, so that leaves come off the stack in order.
                stack.extend(node.kids[..n].iter().rev().map(|&k| (k, level - 1, t)));
            }
        }
        let mut gaps = Vec::new();
        for &c in &leaves {
            let l = &self.leaves[c as usize];
            gaps.extend((0..l.len as usize).map(|k| (l.starts[k], l.ends[k])));
        }
        if gaps.iter().any(|&(s, e)| s >= e) || gaps.windows(2).any(|w| w[0].1 >= w[1].0) {
            return Err("gaps empty, out of order, overlapping or touching".into());
        }
        if gaps.len() != self.count {
            return Err(format!("{} gaps, count {}", gaps.len(), self.count));
        }
        let (mut live_l, mut live_n) = (leaves.clone(), nodes.clone());
        live_l.sort_unstable();
        live_l.dedup();
        live_n.sort_unstable();
        live_n.dedup();
        if live_l.len() != leaves.len() || live_n.len() != nodes.len() {
            return Err("a node reached twice".into());
        }
        if leaves.len() + self.vacant_leaves.len() != self.leaves.len()
            || nodes.len() + self.vacant_nodes.len() != self.nodes.len()
        {
            return Err("nodes neither in the tree nor vacant".into());
        }
        if self.vacant_leaves.iter().any(|&c| self.leaves[c as usize].len != 0 || live_l.binary_search(&c).is_ok())
            || self.vacant_nodes.iter().any(|&t| self.nodes[t as usize].len != 0 || live_n.binary_search(&t).is_ok())
        {
            return Err("a vacant node in use".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The free space's leaves and inner nodes are whole cache lines, aligned to them:
    /// a bisection of a leaf's starts, and a read of its ends, touch no line shared with
    /// another node.
    #[test]
    fn free_space_nodes_are_whole_cache_lines() {
        assert_eq!(std::mem::size_of::<GapLeaf>() % 64, 0);
        assert_eq!(std::mem::align_of::<GapLeaf>(), 64);
        assert_eq!(std::mem::size_of::<GapNode>() % 64, 0);
        assert_eq!(std::mem::align_of::<GapNode>(), 64);
        let f = FreeSpace::new(1 << 16..1 << 30);
        assert_eq!(f.leaves.as_ptr() as usize % 64, 0);
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

    /// Gives in a row to the same leaf (found through the hint, no descent), each making
    /// the longest gap yet and so raising the maxima up to the root, while the leaves
    /// and nodes behind them join and move to other parents: the grandparent remembered
    /// by the last descent must not be used once a link changed. Checked after every
    /// step, in both orders.
    #[test]
    fn free_space_raises_after_joins_move_the_parents() {
        const G: usize = 0x10000;
        let units = 400;
        for ascending in [true, false] {
            let mut f = FreeSpace::new(G..units * G);
            for u in (2..units).step_by(2) {
                f.take(&(u * G..(u + 1) * G));
            }
            assert!(f.height >= 3, "height {}", f.height);
            let mut taken: Vec<usize> = (2..units).step_by(2).collect();
            if !ascending {
                taken.reverse();
            }
            for (k, &u) in taken.iter().enumerate() {
                f.warm(u * G);
                f.give(u * G..(u + 1) * G);
                f.check().unwrap_or_else(|e| panic!("give {k} (granule {u}): {e}"));
                let longest = if ascending { 2 * k + 3 } else { units - u + 1 };
                assert_eq!(f.largest(), longest * G, "give {k}");
            }
            assert_eq!(f.gaps(), [(G, units * G)]);
        }
    }

    /// Gives whose gap after the range is the first gap of the next leaf (a release
    /// whose upper neighbour starts the next leaf, ~7 % of releases at 10^6 regions),
    /// with the gap before in the range's own leaf (the two join across leaves, the
    /// next leaf losing its first gap, or its only one) and without it (the next leaf's
    /// first gap grows down, its key changing), at leaf boundaries under the same and
    /// under different parents, warmed first every other time: after each, the gaps
    /// are the free granules' stretches and every invariant holds.
    #[test]
    fn free_space_gives_joining_the_next_leafs_first_gap() {
        const G: usize = 0x10000;
        let units = 600;
        let mut f = FreeSpace::new(G..units * G);
        let mut free = vec![false; units];
        free[1..units].fill(true);
        // Gaps of one granule between taken stretches of two.
        for u in (2..units - 2).step_by(3) {
            f.take(&(u * G..(u + 2) * G));
            free[u..u + 2].fill(false);
        }
        assert!(f.height >= 2, "height {}", f.height);
        let stretches = |free: &[bool]| {
            let mut gaps = Vec::new();
            let mut u = 0;
            while u < free.len() {
                let s = u;
                while u < free.len() && free[u] {
                    u += 1;
                }
                if u > s {
                    gaps.push((s * G, u * G));
                }
                u += 1;
            }
            gaps
        };
        let (mut k, mut across, mut grown_down) = (0, 0, 0);
        loop {
            // Each leaf's last gap end and its next leaf's first gap start.
            let mut edges = Vec::new();
            let mut c = f.leftmost();
            while let Some(l) = c {
                let n = f.next_leaf(l);
                if let Some(n) = n {
                    let len = f.leaves[l as usize].len as usize;
                    edges.push((f.gap(l, len - 1).1, f.gap(n, 0).0));
                }
                c = n;
            }
            let Some(&(last_end, first_start)) = edges.get(k * 7 % edges.len().max(1)) else { break };
            // The upper granule alone first (no gap before it), then the rest.
            let s = if first_start - last_end > G { first_start - G } else { last_end };
            if s == last_end {
                across += 1;
            } else {
                grown_down += 1;
            }
            if k % 2 == 0 {
                f.warm(s);
            }
            f.give(s..first_start);
            free[s / G..first_start / G].fill(true);
            f.check().unwrap_or_else(|e| panic!("give {k} ({s:#x}..{first_start:#x}): {e}"));
            assert_eq!(f.gaps(), stretches(&free), "give {k}");
            assert_eq!(f.count(), f.gaps().len(), "give {k}");
            k += 1;
        }
        assert!(across >= 50 && grown_down >= 50, "{across} joins across leaves, {grown_down} grown down");
        assert_eq!(f.gaps(), stretches(&free));
        assert_eq!(f.height, 0);
    }

    /// A release's warm-up remembers the path to its leaf; a placement then takes from
    /// an earlier leaf under the same parent, found by a search of the maxima (no
    /// descent: the path stays remembered) and full, so that it splits and the
    /// parent's children after it move one place: the remembered path must be
    /// forgotten (`FreeSpace::check` compares each remembered slot with the tree), and
    /// a give to the warmed leaf then raises the right maxima.
    #[test]
    fn free_space_forgets_the_path_when_a_leaf_before_it_splits() {
        const G: usize = 0x10000;
        let units = 800;
        let mut f = FreeSpace::new(G..units * G);
        // Gaps of seven granules, made top-down (leaves and nodes split in halves, so
        // that inner nodes have room).
        for u in (8..units - 8).step_by(8).rev() {
            f.take(&(u * G..(u + 1) * G));
        }
        f.check().unwrap();
        // A leaf `y` and its next sibling `x` under a parent with room.
        let mut found = None;
        let mut c = f.leftmost();
        while let Some(l) = c {
            let p = f.leaves[l as usize].parent;
            let n = &f.nodes[p as usize];
            let s = f.slot(p, l);
            if (n.len as usize) < FAN && s + 1 < n.len as usize && f.leaves[l as usize].len >= 2 {
                found = Some((l, n.kids[s + 1], p));
                break;
            }
            c = f.next_leaf(l);
        }
        let (y, x, p) = found.expect("a leaf with a next sibling under a parent with room");
        // `y`'s first two gaps joined (the one gap of 15 granules), then its last gap cut
        // while longer than two granules, and then its first near its top, until `y`
        // is full.
        let (a, b) = (f.gap(y, 0), f.gap(y, 1));
        f.give(a.1..b.0);
        while (f.leaves[y as usize].len as usize) < GAPS {
            let len = f.leaves[y as usize].len as usize;
            let (s, e) = f.gap(y, len - 1);
            if e - s > 2 * G {
                f.take(&(s + G..s + 2 * G));
            } else {
                let (s, e) = f.gap(y, 0);
                assert!(e - s >= 13 * G, "y's first gap is long enough to cut");
                f.take(&(e - 2 * G..e - G));
            }
        }
        f.check().unwrap();
        let x_first = f.gap(x, 0);
        let slot_x = f.slot(p, x);
        // The release's warm-up: the path to `x` remembered.
        f.warm(x_first.0);
        assert_eq!(f.trail.get().leaf, x);
        // Nine granules at a 2-granule alignment fit only in `y`'s first gap, and cut it.
        let base = f.find(9 * G, 2 * G, false).expect("a fit");
        assert_eq!(base, a.0 + G);
        f.take(&(base..base + 9 * G));
        assert_eq!(f.nodes[p as usize].kids[slot_x + 1], x, "y split, x moved one place");
        f.check().unwrap();
        // A give that makes `x` hold the longest gap yet raises the maxima above it.
        let (xs, xe) = f.gap(x, 0);
        let (ns, ne) = f.gap(x, 1);
        f.warm(xs);
        f.give(xe..ns);
        f.check().unwrap();
        assert_eq!(f.gap(x, 0), (xs, ne));
        assert_eq!(f.largest(), f.gaps().iter().map(|&(s, e)| e - s).max().unwrap_or(0));
    }

    /// A release's warm-up at an address before every gap (its range then joins the
    /// first gap from below, or stands alone) leaves a true path (the first leaf's), and
    /// the give that follows finds its neighbours by lookups.
    #[test]
    fn free_space_warms_before_every_gap() {
        const G: usize = 0x10000;
        let mut f = FreeSpace::new(4 * G..400 * G);
        for u in (6..400).step_by(2) {
            f.take(&(u * G..(u + 1) * G));
        }
        f.take(&(4 * G..5 * G));
        assert!(f.height >= 2, "height {}", f.height);
        let first = f.gap(f.leftmost().unwrap(), 0);
        assert_eq!(first, (5 * G, 6 * G));
        f.warm(0);
        f.check().unwrap();
        assert_eq!(f.trail.get().leaf, f.leftmost().unwrap());
        // Joins the first gap from below.
        f.warm(4 * G);
        f.give(4 * G..5 * G);
        f.check().unwrap();
        assert_eq!(f.gaps()[0], (4 * G, 6 * G));
        // Alone, before it.
        f.warm(G);
        f.give(G..2 * G);
        f.check().unwrap();
        assert_eq!(f.gaps()[..2], [(G, 2 * G), (4 * G, 6 * G)]);
    }

    /// Lookups at and just below `usize::MAX` in a tree of several levels find the last
    /// gap (or none past it), as every other lookup finds its floor.
    #[test]
    fn free_space_lookups_at_the_top_of_the_address_range() {
        // A descent bisects each node's keys without its length: the keys past its last
        // child are usize::MAX, which an address of usize::MAX would not sort before.
        const G: usize = 0x10000;
        let top = usize::MAX & !(G - 1);
        let mut f = FreeSpace::new(G..top);
        // Gaps of one granule from the bottom (several levels), and one just below the
        // top that spans the rest.
        for u in (2..200).step_by(2) {
            f.take(&(u * G..(u + 1) * G));
        }
        f.take(&(200 * G..top - 4 * G));
        f.check().unwrap();
        assert!(f.height >= 2, "height {}", f.height);
        let last = (top - 4 * G, top);
        for addr in [usize::MAX, usize::MAX - 1, top, top - 1] {
            // The gap holding `addr` (none past the top), the last gap before it, and a
            // release's warm-up and give around it.
            f.warm(addr);
            assert_eq!(f.next_gap(addr), (addr < top).then_some(last), "at {addr:#x}");
            assert_eq!(f.floor(addr), Some(last), "at {addr:#x}");
        }
        f.take(&(top - 2 * G..top));
        f.warm(usize::MAX);
        assert_eq!(f.floor(usize::MAX), Some((top - 4 * G, top - 2 * G)));
        f.give(top - 2 * G..top);
        f.check().unwrap();
        assert_eq!(f.floor(usize::MAX), Some(last));
        assert!(f.contains(&(top - G..top)));
        // The gaps of the odd granules 1 to 199, and the last.
        assert_eq!(f.count(), 101);
    }

    /// The tree grows several levels as gaps multiply, leaves and inner nodes split at
    /// their edges, and giving everything back joins them level by level until the root
    /// is one leaf again; taking everything empties it, and it then works again. Every
    /// step is checked against the tree's invariants and the gaps expected.
    #[test]
    fn free_space_tree_grows_collapses_empties_and_regrows() {
        const G: usize = 0x10000;
        let units = 400;
        let mut f = FreeSpace::new(G..units * G);
        // Every other granule taken, bottom-up: 200 one-granule gaps (one more a take),
        // each take a cut at a leaf's last gap (the split at its upper edge).
        for u in (2..units).step_by(2) {
            f.take(&(u * G..(u + 1) * G));
            f.check().unwrap();
        }
        assert_eq!(f.count(), units / 2);
        assert!(f.height >= 3, "height {}", f.height);
        assert_eq!(f.largest(), G);
        // Lowest and highest placement of two granules: none fits.
        assert_eq!(f.find(2 * G, G, false), None);
        assert_eq!(f.find(2 * G, G, true), None);
        // A window's edges at a leaf's first and last gaps.
        assert_eq!(f.find_within(G, G, false, 3 * G..4 * G), Some(3 * G));
        assert_eq!(f.find_within(G, G, true, 3 * G..(units - 1) * G), Some((units - 3) * G));
        assert_eq!(f.find_within(G, G, false, 2 * G..3 * G), None);
        // Back in a scrambled order: merges, leaf joins, inner joins, root collapse.
        let taken: Vec<usize> = (2..units).step_by(2).collect();
        for k in 0..taken.len() {
            let u = taken[k * 37 % taken.len()];
            f.give(u * G..(u + 1) * G);
            f.check().unwrap();
        }
        assert_eq!((f.height, f.count()), (0, 1));
        assert_eq!(f.gaps(), [(G, units * G)]);
        // Everything taken: empty, no nodes kept.
        f.take(&(0..usize::MAX));
        f.check().unwrap();
        assert_eq!((f.count(), f.largest(), f.root), (0, 0, NIL));
        assert!(f.leaves.is_empty() && f.nodes.is_empty());
        assert_eq!(f.find(G, G, false), None);
        assert_eq!(f.find(G, G, true), None);
        assert_eq!(f.next_gap(0), None);
        // And again, top-down placement from the new gaps.
        f.give(5 * G..9 * G);
        f.give(20 * G..21 * G);
        f.check().unwrap();
        assert_eq!(f.find(G, G, true), Some(20 * G));
        assert_eq!(f.find(2 * G, 2 * G, true), Some(6 * G));
        assert_eq!(f.find(2 * G, 2 * G, false), Some(6 * G));
        assert_eq!(f.next_gap(10 * G), Some((20 * G, 21 * G)));
    }

    mod model {
        //! The structures against naive per-unit models, over random operation sequences.
        use super::super::*;
        use proptest::prelude::*;

        const UNITS: usize = 80;
        /// Granules of the free-space tests with many leaves (fewer under Miri, which
        /// is a thousand times slower; still several leaves and levels of them).
        const MANY: usize = if cfg!(miri) { 48 } else { 1200 };
        /// Most operations of those tests (fewer under Miri).
        const MANY_OPS: usize = if cfg!(miri) { 24 } else { 400 };

        /// Gives between two gaps (a release between two holes, the usual case): joined
        /// in their leaf (`FreeSpace::merged`) when both gaps lie in it, across the two
        /// leaves when the gap after starts the next leaf; against the model after each,
        /// in an order that makes longest gaps, empties leaves and joins them.
        #[test]
        fn freespace_gives_between_two_gaps_match_model() {
            const N: usize = 60;
            // Every other granule taken: 29 gaps of one granule, over several leaves.
            let taken: Vec<usize> = (2..N - 1).step_by(2).collect();
            let mut ops: Vec<(bool, usize, usize, u8)> = taken.iter().map(|&u| (true, u, 1, 0)).collect();
            // Given back in a scrambled order (a stride prime to the count), warmed first
            // every other time.
            for k in 0..taken.len() {
                ops.push((false, taken[k * 7 % taken.len()], 1, (k % 2) as u8));
            }
            freespace_run(N, &ops).unwrap();
        }

        /// Random takes and gives over `units` granules against a per-granule model:
        /// the gaps, counts, placement and every invariant of the index after each.
        fn freespace_run(units: usize, ops: &[(bool, usize, usize, u8)]) -> Result<(), TestCaseError> {
            // Units are granules; unit 0 and the last are never free (bounds).
            let g = 0x10000;
            let mut f = FreeSpace::new(g..(units - 1) * g);
            let mut free = vec![false; units];
            free[1..units - 1].fill(true);
            for &(take, at, len, mode) in ops {
                let (s, e) = (at.max(1), (at + len).min(units - 1));
                if s >= e {
                    continue;
                }
                if take {
                    f.take(&(s * g..e * g));
                    free[s..e].fill(false);
                } else {
                    // Give back the taken stretch starting at `s` (up to `e`), if any.
                    let e = (s..e).find(|&u| free[u]).unwrap_or(e);
                    if e > s {
                        // As a release does, half the time: load the gaps first (and
                        // leave the hint on their leaf).
                        if mode & 1 == 1 {
                            f.warm(s * g);
                        }
                        f.give(s * g..e * g);
                        free[s..e].fill(true);
                    }
                }
                // Gaps are exactly the maximal free stretches.
                let mut gaps = Vec::new();
                let mut u = 0;
                while u < units {
                    if free[u] {
                        let s = u;
                        while u < units && free[u] {
                            u += 1;
                        }
                        gaps.push((s * g, u * g));
                    } else {
                        u += 1;
                    }
                }
                prop_assert_eq!(f.gaps(), gaps.clone());
                prop_assert_eq!(f.count(), gaps.len());
                prop_assert_eq!(f.largest(), gaps.iter().map(|(s, e)| e - s).max().unwrap_or(0));
                // Every invariant of the tree (leaves' gaps and longest gaps, keys,
                // maxima, parent links, vacant nodes).
                if let Err(e) = f.check() {
                    return Err(TestCaseError::fail(e));
                }
                // Placement: lowest / highest fitting base, with 64 KiB or 128 KiB alignment.
                let align = if mode == 2 { 2 * g } else { g };
                let size = len * g;
                let lowest = gaps.iter().find_map(|&(s, e)| {
                    let b = (s + align - 1) & !(align - 1);
                    (b + size <= e).then_some(b)
                });
                let highest = gaps.iter().rev().find_map(|&(s, e)| {
                    let b = e.checked_sub(size)? & !(align - 1);
                    (b >= s).then_some(b)
                });
                prop_assert_eq!(f.find(size, align, false), lowest);
                prop_assert_eq!(f.find(size, align, true), highest);
                // Placement inside a window (its edges cutting the gaps there), against
                // every gap cut to it.
                let wlo = (s * 7 + len) % units * g;
                let whi = (wlo + (len * 13 + mode as usize * 5 + 1) % units * g).min(units * g);
                let cut = |&(s, e): &(usize, usize)| (s.max(wlo), e.min(whi));
                let lowest_in = gaps.iter().map(cut).find_map(|(s, e)| {
                    let b = (s + align - 1) & !(align - 1);
                    (size > 0 && b + size <= e).then_some(b)
                });
                let highest_in = gaps.iter().rev().map(cut).find_map(|(s, e)| {
                    let b = e.checked_sub(size)? & !(align - 1);
                    (size > 0 && b >= s).then_some(b)
                });
                prop_assert_eq!(f.find_within(size, align, false, wlo..whi), lowest_in, "{:#x}..{:#x}", wlo, whi);
                prop_assert_eq!(f.find_within(size, align, true, wlo..whi), highest_in, "{:#x}..{:#x}", wlo, whi);
                // The longest gap, which placement may have to skip every other to reach.
                if let Some(big) = gaps.iter().map(|&(s, e)| e - s).max() {
                    let first = gaps.iter().find(|&&(s, e)| e - s == big).map(|&(s, _)| s);
                    let last = gaps.iter().rev().find(|&&(s, e)| e - s == big).map(|&(s, _)| s);
                    prop_assert_eq!(f.find(big, g, false), first);
                    prop_assert_eq!(f.find(big, g, true), last);
                }
                let probe = s * g..e * g;
                prop_assert_eq!(f.contains(&probe), free[s..e].iter().all(|&x| x));
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 3 } else { 300 }))]

            #[test]
            fn freespace_matches_model(
                ops in prop::collection::vec((any::<bool>(), 0..UNITS, 1..12usize, 0..3u8), 1..150)
            ) {
                freespace_run(UNITS, &ops)?;
            }

            #[test]
            fn freespace_with_many_chunks_matches_model(
                ops in prop::collection::vec((any::<bool>(), 0..MANY, 1..4usize, 0..3u8), 1..MANY_OPS)
            ) {
                // Enough small gaps for dozens of leaves and several levels of inner
                // nodes, so that placement must skip some and nodes split and join.
                freespace_run(MANY, &ops)?;
            }

            #[test]
            fn freespace_fragmented_then_healed_matches_model(
                spots in prop::collection::vec((0..MANY, 1..4usize), 1..MANY_OPS)
            ) {
                // Takes cut the space into many leaves and nodes; giving the same
                // stretches back merges gaps, empties leaves and thins nodes until
                // they merge and go.
                let takes = spots.iter().map(|&(at, len)| (true, at, len, 0u8));
                let gives = spots.iter().rev().map(|&(at, len)| (false, at, len, 1u8));
                let ops: Vec<_> = takes.chain(gives).collect();
                freespace_run(MANY, &ops)?;
            }
        }
    }
}
