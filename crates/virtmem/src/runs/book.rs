//! The [`Book`] (see the [module's docs](super)).

use std::ops::Range;

use super::free::FreeSpace;
use super::reservations::Reservations;

/// All reservations of a space and the free space around them.
#[derive(Debug, Clone)]
pub(crate) struct Book {
    /// Base → reservation.
    pub reservations: Reservations,
    /// Allocatable free gaps.
    pub free: FreeSpace,
    /// Ranges claimed by reservations still being made, in no order: one per reserve in
    /// flight, so a few at most (one per thread), and a vector that keeps its capacity
    /// costs a reserve no allocation (an ordered map allocated and freed its node on
    /// every call).
    pub pending: Vec<Range<usize>>,
    /// Bases of the reservations an operation is under way on, its side effects running
    /// outside the space's lock (other calls on them wait). One per thread in flight at
    /// most, so a vector searched in place: marking and clearing cost no search of the
    /// reservation index.
    pub busy: Vec<usize>,
    /// Ranges kept off the free list without being reserved: room the backend asked
    /// the engine not to pick by itself (where a stack or the program break grows), and
    /// granules where a mapping that is not ours was found. Disjoint, never free, never
    /// reserved. Placement never picks them; a reserve at an address inside them is
    /// tried (see [`Book::lend_avoided`]), so that what `VirtualQuery` reports free
    /// (the kernel has nothing there) can be reserved.
    pub avoided: Vec<Range<usize>>,
    /// The backend's avoided room (see [`Backend::initial_avoided`](crate::backend::Backend::initial_avoided)):
    /// a reservation made there at a caller's address gives it back as avoided, not
    /// free, when released.
    pub room: Vec<Range<usize>>,
    /// Committed bytes in all reservations (charged before side effects run).
    pub committed: usize,
    /// Reserved bytes in all reservations.
    pub reserved: usize,
    /// The commit limit, if any.
    pub commit_limit: Option<usize>,
    /// How many avoided ranges there were after their last check with the backend
    /// (see [`Book::avoided_grew`]).
    pub avoided_checked: usize,
    /// Snapshots waiting for the calls under way (`busy`, `pending`) to end: while not
    /// 0, no call starts anything outside the space's lock, so that they do end.
    pub snapshots: usize,
}

impl Book {
    /// A book with `range` free.
    pub fn new(range: Range<usize>) -> Self {
        Book {
            reservations: Reservations::default(),
            free: FreeSpace::new(range),
            pending: Vec::new(),
            busy: Vec::new(),
            avoided: Vec::new(),
            room: Vec::new(),
            committed: 0,
            reserved: 0,
            commit_limit: None,
            avoided_checked: 0,
            snapshots: 0,
        }
    }

    /// Whether a pending reservation claims any of `range`.
    pub fn pending_overlaps(&self, range: &Range<usize>) -> bool {
        self.pending.iter().any(|c| c.start < range.end && range.start < c.end)
    }

    /// Make a released reservation's `claim` free again, except what lies in the
    /// backend's avoided room, which becomes avoided again.
    #[inline]
    pub fn give_back(&mut self, claim: Range<usize>) {
        self.free.give(claim.clone());
        for i in 0..self.room.len() {
            let r = &self.room[i];
            let (s, e) = (r.start.max(claim.start), r.end.min(claim.end));
            if s < e {
                self.avoid(s..e);
            }
        }
    }

    /// Keep the free part of `range` off the free list, as avoided.
    pub fn avoid(&mut self, range: Range<usize>) {
        if range.start >= range.end {
            return;
        }
        // Only what is free now becomes avoided (the invariant: never free, never
        // reserved); the parts of `range` that are not free stay as they are.
        let mut at = range.start;
        while at < range.end {
            match self.free.next_gap(at) {
                Some((s, e)) if s < range.end => {
                    let piece = s.max(at)..e.min(range.end);
                    self.free.take(&piece);
                    self.avoided.push(piece.clone());
                    at = piece.end;
                }
                _ => break,
            }
        }
    }

    /// For a reserve of `claim` at a given address: when `claim` is free but for
    /// avoided pieces, make those pieces free (no longer avoided), push them to `lent`
    /// and return `true`; otherwise change nothing and return `false`.
    pub fn lend_avoided(&mut self, claim: &Range<usize>, lent: &mut Vec<Range<usize>>) -> bool {
        let pieces: Vec<Range<usize>> = self
            .avoided
            .iter()
            .filter(|r| r.start < claim.end && claim.start < r.end)
            .map(|r| r.start.max(claim.start)..r.end.min(claim.end))
            .collect();
        if pieces.is_empty() {
            return false;
        }
        for p in &pieces {
            self.free.give(p.clone());
        }
        if !self.free.contains(claim) {
            for p in &pieces {
                self.free.take(p);
            }
            return false;
        }
        let mut kept = Vec::with_capacity(self.avoided.len() + 1);
        for r in self.avoided.drain(..) {
            if r.start < claim.end && claim.start < r.end {
                if r.start < claim.start {
                    kept.push(r.start..claim.start);
                }
                if r.end > claim.end {
                    kept.push(claim.end..r.end);
                }
            } else {
                kept.push(r);
            }
        }
        self.avoided = kept;
        lent.extend(pieces);
        true
    }

    /// Whether the avoided ranges have doubled (and number more than 64) since they were
    /// last checked with the backend: then some of them may have been left by the mapping
    /// that was in the way, and are worth a check ([`Book::unavoidable`]), at a cost
    /// spread over the collisions that made them.
    pub fn avoided_grew(&self) -> bool {
        self.avoided.len() > 2 * self.avoided_checked.max(32)
    }

    /// The avoided ranges found holding a mapping that is not ours (the backend's room
    /// left out: it stays avoided whatever the kernel has there), to check which still do.
    pub fn unavoidable(&mut self) -> Vec<Range<usize>> {
        self.avoided_checked = self.avoided.len();
        let mut out = Vec::new();
        for r in &self.avoided {
            let mut at = r.start;
            for room in self.room.iter().filter(|m| m.start < r.end && r.start < m.end) {
                if room.start > at {
                    out.push(at..room.start);
                }
                at = at.max(room.end);
            }
            if at < r.end {
                out.push(at..r.end);
            }
        }
        out
    }

    /// Make free again the parts of `vacant` that are still avoided (no mapping that is
    /// not ours lives there any more). Returns whether anything became free.
    pub fn unavoid(&mut self, vacant: &[Range<usize>]) -> bool {
        let mut freed = false;
        let mut kept = Vec::with_capacity(self.avoided.len());
        for r in std::mem::take(&mut self.avoided) {
            // `r` minus the vacant ranges: what is left stays avoided, the rest is free.
            let mut at = r.start;
            let mut cuts: Vec<&Range<usize>> = vacant.iter().filter(|v| v.start < r.end && r.start < v.end).collect();
            cuts.sort_by_key(|v| v.start);
            for v in cuts {
                let (s, e) = (v.start.max(at), v.end.min(r.end));
                if s >= e {
                    continue;
                }
                if s > at {
                    kept.push(at..s);
                }
                self.free.give(s..e);
                freed = true;
                at = e;
            }
            if at < r.end {
                kept.push(at..r.end);
            }
        }
        self.avoided = kept;
        self.avoided_checked = self.avoided_checked.min(self.avoided.len());
        freed
    }

    /// Mark `claim` as claimed by a reservation being made.
    pub fn add_pending(&mut self, claim: Range<usize>) {
        self.pending.push(claim);
    }

    /// Forget the pending claim that starts at `base`.
    pub fn remove_pending(&mut self, base: usize) {
        if let Some(i) = self.pending.iter().position(|c| c.start == base) {
            self.pending.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avoided_ranges_are_lent_only_when_the_whole_claim_is_then_free() {
        const K: usize = 1 << 16;
        let mut b = Book::new(0..64 * K);
        b.free.take(&(10 * K..11 * K)); // a reservation, say
        b.avoid(8 * K..12 * K); // its free parts only: 8..10 and 11..12
        assert_eq!(b.avoided, [8 * K..10 * K, 11 * K..12 * K]);
        assert!(!b.free.contains(&(8 * K..9 * K)));
        let mut lent = Vec::new();
        // Overlapping the reservation: refused, nothing changed.
        assert!(!b.lend_avoided(&(9 * K..11 * K), &mut lent));
        assert!(lent.is_empty());
        assert_eq!(b.avoided, [8 * K..10 * K, 11 * K..12 * K]);
        assert_eq!(b.free.gaps(), [(0, 8 * K), (12 * K, 64 * K)]);
        // Partly avoided, partly free: lent, and the rest stays avoided.
        assert!(b.lend_avoided(&(9 * K..10 * K), &mut lent));
        assert_eq!(lent, vec![9 * K..10 * K]);
        assert_eq!(b.avoided, [8 * K..9 * K, 11 * K..12 * K]);
        assert!(b.free.contains(&(9 * K..10 * K)));
        // Wholly free: nothing to lend.
        assert!(!b.lend_avoided(&(20 * K..21 * K), &mut lent));
    }

    /// The avoided ranges to check with the backend leave out the backend's room (which
    /// stays avoided whatever is there); of those, only the parts found vacant become
    /// free again, however the vacant ranges overlap, and the rest stays avoided.
    #[test]
    #[allow(clippy::single_range_in_vec_init)] // (lists of ranges that hold one range)
    fn only_the_vacated_parts_of_avoided_ranges_become_free() {
        const K: usize = 1 << 16;
        let mut b = Book::new(0..64 * K);
        b.room = vec![20 * K..24 * K];
        b.avoid(10 * K..30 * K);
        assert_eq!(b.avoided, [10 * K..30 * K]);
        assert_eq!(b.unavoidable(), [10 * K..20 * K, 24 * K..30 * K], "the room is not asked about");
        assert_eq!(b.avoided_checked, 1);
        // Nothing vacant: nothing changes.
        assert!(!b.unavoid(&[40 * K..50 * K]));
        assert_eq!(b.avoided, [10 * K..30 * K]);
        assert_eq!(b.free.gaps(), [(0, 10 * K), (30 * K, 64 * K)]);
        // Two vacant ranges, unsorted, the second inside the first.
        assert!(b.unavoid(&[13 * K..15 * K, 12 * K..16 * K]));
        assert_eq!(b.avoided, [10 * K..12 * K, 16 * K..30 * K]);
        assert_eq!(b.free.gaps(), [(0, 10 * K), (12 * K, 16 * K), (30 * K, 64 * K)]);
        // Vacant ranges at both ends of one avoided range and across two of them.
        assert!(b.unavoid(&[9 * K..11 * K, 28 * K..31 * K]));
        assert_eq!(b.avoided, [11 * K..12 * K, 16 * K..28 * K]);
        assert_eq!(b.free.gaps(), [(0, 11 * K), (12 * K, 16 * K), (28 * K, 64 * K)]);
        assert!(b.unavoid(&[11 * K..17 * K]));
        assert_eq!(b.avoided, [17 * K..28 * K]);
        assert_eq!(b.free.gaps(), [(0, 17 * K), (28 * K, 64 * K)]);
        assert_eq!(b.avoided_checked, 1);
    }
}
