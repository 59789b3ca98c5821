//! The host's own record of what its reservations look like, for a `VirtualQuery` that
//! must answer while the space's bookkeeping is held by a suspended thread.
//!
//! Every change the host makes to one of its reservations (reserve, commit, decommit,
//! protect, release) is copied here, as the space reports it right after the change,
//! while the host still holds the reservation's lock. The record is kept in a
//! [`Mirror`](super::mirror::Mirror), so reading it never waits. It lags behind the space
//! in one way only: a guard page disarmed by an access (not a host call) still reads as a
//! guard page here until the host next changes that range.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use super::budget::TenantId;
use super::manager::Region;
use crate::flags::{MemState, MemType, MemoryBasicInformation, Protection};
use crate::rules::{self, PAGE};

/// Pages from `start` to the next run's start (or the reservation's end) share a state
/// and protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: usize,
    pub state: MemState,
    pub protect: Protection,
}

impl Run {
    fn same(&self, other: &Run) -> bool {
        self.state == other.state && self.protect == other.protect
    }
}

/// One reservation of the host.
#[derive(Clone)]
pub(crate) struct Shade {
    pub region: Arc<Region>,
    pub end: usize,
    pub tenant: TenantId,
    pub alloc_protect: Protection,
    /// Sorted, covering `base..end`, neighbours different.
    runs: Vec<Run>,
}

impl Shade {
    /// A reservation `base..end` whose pages are `runs` (as the space reported them).
    pub fn new(
        region: Arc<Region>,
        base: usize,
        end: usize,
        tenant: TenantId,
        alloc_protect: Protection,
        runs: Vec<Run>,
    ) -> Shade {
        debug_assert_eq!(runs.first().map(|r| r.start), Some(base));
        let mut s = Shade { region, end, tenant, alloc_protect, runs };
        s.runs.dedup_by(|cur, prev| cur.same(prev));
        s
    }

    /// What `VirtualQuery` says of `address` (inside the reservation at `base`).
    pub fn describe(&self, base: usize, address: usize) -> MemoryBasicInformation {
        let page = rules::round_down(address, PAGE);
        let i = self.runs.partition_point(|r| r.start <= page).saturating_sub(1);
        let run = self.runs[i];
        let next = self.runs.get(i + 1).map_or(self.end, |r| r.start);
        MemoryBasicInformation {
            base_address: page,
            allocation_base: base,
            allocation_protect: self.alloc_protect,
            region_size: next - page,
            state: run.state,
            protect: run.protect,
            mem_type: Some(MemType::Private),
        }
    }

    /// The pages of `range` are now `new` (sorted, covering `range`).
    fn set(&mut self, range: Range<usize>, new: &[Run]) {
        set_runs(&mut self.runs, self.end, range, new);
    }
}

/// In `runs` (sorted, covering up to `end`, neighbours different), the pages of `range`
/// become `new` (sorted, covering `range`); neighbours stay different.
fn set_runs(runs: &mut Vec<Run>, end: usize, range: Range<usize>, new: &[Run]) {
    debug_assert_eq!(new.first().map(|r| r.start), Some(range.start));
    let lo = runs.partition_point(|r| r.start < range.start);
    let hi = runs.partition_point(|r| r.start <= range.end);
    // What covered `range.end` goes on covering what follows it.
    let tail = (range.end < end).then(|| Run { start: range.end, ..runs[hi - 1] });
    let added = new.len() + usize::from(tail.is_some());
    runs.splice(lo..hi, new.iter().copied().chain(tail));
    // Neighbours differed before; only the new runs and those next to them may merge.
    let from = lo.saturating_sub(1);
    let to = (lo + added + 1).min(runs.len());
    let mut kept = from;
    for i in from + 1..to {
        if runs[i].same(&runs[kept]) {
            continue;
        }
        kept += 1;
        runs[kept] = runs[i];
    }
    runs.drain(kept + 1..to);
}

/// Everything a host `VirtualQuery` needs to know without asking anyone.
#[derive(Clone, Default)]
pub(crate) struct Shadow {
    /// The host's reservations by base.
    regions: BTreeMap<usize, Shade>,
    /// Views announced with `AcquiredVirtualAddressSpace`: base → end.
    views: BTreeMap<usize, usize>,
}

impl Shadow {
    /// The reservation holding `address`, with its base.
    pub fn region_at(&self, address: usize) -> Option<(usize, &Shade)> {
        self.regions.range(..=address).next_back().filter(|(_, s)| address < s.end).map(|(&b, s)| (b, s))
    }

    /// Whether `address` is inside an announced view.
    pub fn in_view(&self, address: usize) -> bool {
        self.views.range(..=address).next_back().is_some_and(|(_, &end)| address < end)
    }

    /// Record a new reservation at `base`.
    pub fn insert(&mut self, base: usize, shade: Shade) {
        self.regions.insert(base, shade);
    }

    /// Forget the reservation at `base` if it is `region`.
    pub fn remove(&mut self, base: usize, region: &Arc<Region>) {
        if self.regions.get(&base).is_some_and(|s| Arc::ptr_eq(&s.region, region)) {
            self.regions.remove(&base);
        }
    }

    /// Pages `range` of the reservation at `base` are now `runs`.
    pub fn set(&mut self, base: usize, range: Range<usize>, runs: &[Run]) {
        if let Some(s) = self.regions.get_mut(&base) {
            s.set(range, runs);
        }
    }

    /// Record a view.
    pub fn insert_view(&mut self, base: usize, end: usize) {
        self.views.insert(base, end);
    }

    /// Forget a view.
    pub fn remove_view(&mut self, base: usize) {
        self.views.remove(&base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: MemState = MemState::Reserve;
    const C: MemState = MemState::Commit;

    fn run(start: usize, state: MemState, protect: Protection) -> Run {
        Run { start, state, protect }
    }

    /// The runs of a reservation 0x10000..0x20000, reserved at first, after `sets`.
    fn runs_after(sets: &[(Range<usize>, Vec<Run>)]) -> Vec<Run> {
        let mut runs = vec![run(0x10000, R, Protection::empty())];
        for (range, new) in sets {
            set_runs(&mut runs, 0x20000, range.clone(), new);
        }
        runs
    }

    #[test]
    fn set_splits_and_merges_runs() {
        let rw = Protection::READWRITE;
        let ro = Protection::READONLY;
        let e = Protection::empty();
        // Commit the middle, then its left half read-only, then decommit it all again.
        let a = runs_after(&[(0x12000..0x14000, vec![run(0x12000, C, rw)])]);
        assert_eq!(a, vec![run(0x10000, R, e), run(0x12000, C, rw), run(0x14000, R, e)]);
        let b =
            runs_after(&[(0x12000..0x14000, vec![run(0x12000, C, rw)]), (0x12000..0x13000, vec![run(0x12000, C, ro)])]);
        assert_eq!(b, vec![run(0x10000, R, e), run(0x12000, C, ro), run(0x13000, C, rw), run(0x14000, R, e)]);
        let c = runs_after(&[
            (0x12000..0x14000, vec![run(0x12000, C, rw)]),
            (0x12000..0x13000, vec![run(0x12000, C, ro)]),
            (0x11000..0x15000, vec![run(0x11000, R, e)]),
        ]);
        assert_eq!(c, vec![run(0x10000, R, e)]);
        // Up to the end of the reservation.
        let d = runs_after(&[(0x1f000..0x20000, vec![run(0x1f000, C, rw)])]);
        assert_eq!(d, vec![run(0x10000, R, e), run(0x1f000, C, rw)]);
    }
}
