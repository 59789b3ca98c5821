//! Ranges the engine avoids because a mapping that is not its own was found there are
//! given back once that mapping has gone: when placement runs out of room, and when
//! collisions have made the list of avoided ranges long. (A process's allocator maps and
//! unmaps memory all the time; what was in the way once must not stay lost.)

#[macro_use]
mod forward;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use virtmem::backend::{Access, Backend, BackendError, ForeignKind, ForeignRegion, ReserveOptions};
use virtmem::{AddressSpace, AllocationType as T, Error, FreeType, MemState, Protection as P, SimBackend, SimConfig};

const GRANULE: usize = 0x10000;

/// The simulated backend beside mappings that are not the engine's, which come and go.
#[derive(Default)]
struct Crowded {
    inner: SimBackend,
    /// start → end of each foreign mapping.
    foreign: Mutex<BTreeMap<usize, usize>>,
    /// Reserves refused because a foreign mapping was there.
    collisions: AtomicUsize,
}

impl std::fmt::Debug for Crowded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crowded")
    }
}

impl Crowded {
    fn with_space(end: usize) -> Crowded {
        let config = SimConfig { min_address: GRANULE, end_address: end, ..SimConfig::default() };
        Crowded { inner: SimBackend::new(config), ..Crowded::default() }
    }
    fn map(&self, r: Range<usize>) {
        self.foreign.lock().insert(r.start, r.end);
    }
    fn unmap(&self, start: usize) {
        self.foreign.lock().remove(&start);
    }
    fn first_overlap(&self, range: &Range<usize>) -> Option<(usize, usize)> {
        let f = self.foreign.lock();
        f.range(..range.end).filter(|(_, &e)| e > range.start).map(|(&s, &e)| (s, e)).next()
    }
}

impl Backend for Crowded {
    forward!(inner: limits);
    fn reserve(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        if let Some((start, end)) = self.first_overlap(&range) {
            self.collisions.fetch_add(1, Ordering::SeqCst);
            return Err(BackendError::Occupied { start, end });
        }
        self.inner.reserve(range, opts)
    }
    forward!(inner: release, set_access, discard, reset, reset_undo, lock, unlock, read, write, dirty_pages, clear_dirty);
    fn foreign(&self, address: usize, limit: usize) -> Option<ForeignRegion> {
        let f = self.foreign.lock();
        let covering = f.range(..=address).next_back().filter(|(_, &e)| e > address);
        let (&start, &end) = covering.or_else(|| f.range(address..limit).next())?;
        Some(ForeignRegion {
            start,
            end,
            access: Access::ReadWrite,
            copy_on_write: false,
            allocation_base: start,
            kind: ForeignKind::Private,
        })
    }
}

fn reserve(s: &AddressSpace<Crowded>) -> Result<usize, Error> {
    s.alloc(0, GRANULE, T::RESERVE, P::READWRITE)
}

#[test]
fn placement_out_of_room_takes_back_what_a_gone_mapping_held() {
    // 15 granules of address space; a foreign mapping on two of them.
    let s = AddressSpace::with_backend(Crowded::with_space(16 * GRANULE));
    let other = 5 * GRANULE..7 * GRANULE;
    s.backend().map(other.clone());
    let mut mine = Vec::new();
    while let Ok(b) = reserve(&s) {
        mine.push(b);
    }
    assert_eq!(mine.len(), 13, "every granule but the foreign mapping's");
    assert_eq!(s.backend().collisions.load(Ordering::SeqCst), 1, "one collision, then avoided");
    assert!(mine.iter().all(|b| !other.contains(b)));
    // Still there: still out of room, and the range is not reported free.
    assert_eq!(reserve(&s), Err(Error::NotEnoughMemory));
    // It goes: the next reserve finds its room.
    s.backend().unmap(other.start);
    assert_eq!(s.query(other.start).unwrap().state, MemState::Free);
    let a = reserve(&s).unwrap();
    let b = reserve(&s).unwrap();
    assert_eq!([a, b], [other.start, other.start + GRANULE]);
    assert_eq!(reserve(&s), Err(Error::NotEnoughMemory));
    for base in mine.into_iter().chain([a, b]) {
        s.free(base, 0, FreeType::RELEASE).unwrap();
    }
}

#[test]
fn a_mapping_partly_gone_gives_back_only_the_part_it_left() {
    let s = AddressSpace::with_backend(Crowded::with_space(16 * GRANULE));
    s.backend().map(3 * GRANULE..6 * GRANULE);
    let mut mine = Vec::new();
    while let Ok(b) = reserve(&s) {
        mine.push(b);
    }
    assert_eq!(mine.len(), 12);
    // The mapping shrinks to its last granule.
    s.backend().unmap(3 * GRANULE);
    s.backend().map(5 * GRANULE..6 * GRANULE);
    let got: Vec<usize> = std::iter::from_fn(|| reserve(&s).ok()).collect();
    assert_eq!(got, [3 * GRANULE, 4 * GRANULE]);
}

#[test]
fn many_collisions_with_mappings_since_gone_do_not_pile_up() {
    // A process whose allocator keeps mapping memory where the engine looks next, and
    // unmapping it later: the ranges avoided for mappings that have gone are given back,
    // so reserves keep landing low (bottom-up) instead of ever higher.
    let s = AddressSpace::with_backend(Crowded::with_space(1 << 40));
    let mut mine = Vec::new();
    for _ in 0..400 {
        // A foreign mapping right where the next reserve would go, which then collides.
        let next = {
            let b = reserve(&s).unwrap();
            s.free(b, 0, FreeType::RELEASE).unwrap();
            b
        };
        s.backend().map(next..next + GRANULE);
        let b = reserve(&s).unwrap();
        assert_ne!(b, next);
        s.backend().unmap(next);
        mine.push(b);
    }
    assert_eq!(s.backend().collisions.load(Ordering::SeqCst), 400);
    // 400 reservations and at most a few hundred avoided granules below the highest:
    // without the check, 400 avoided granules would sit below them (the highest at 800).
    let highest = *mine.iter().max().unwrap();
    assert!(highest < 700 * GRANULE, "reservations climb over ranges no longer in the way: {highest:#x}");
    for b in mine {
        s.free(b, 0, FreeType::RELEASE).unwrap();
    }
    // Everything given back or avoided is usable again: a reserve lands at the bottom.
    assert_eq!(reserve(&s).unwrap(), GRANULE);
}

#[test]
fn a_reserve_at_an_address_still_works_over_an_avoided_range() {
    let s = AddressSpace::with_backend(Crowded::with_space(16 * GRANULE));
    s.backend().map(GRANULE..2 * GRANULE);
    let b = reserve(&s).unwrap();
    assert_eq!(b, 2 * GRANULE);
    s.backend().unmap(GRANULE);
    assert_eq!(s.alloc(GRANULE, GRANULE, T::RESERVE, P::READWRITE), Ok(GRANULE));
}

/// A backend is to report page-aligned foreign mappings; one that does not (the CLI's
/// replay placed a hand-edited Wine view at 0x10001..0x10002) is read as covering the
/// pages it touches: a query there reports the whole page, and a walk of the regions
/// ends (it had looped forever, growing its list: each query rounded the address down to
/// the page and found a one-byte region that led back into the same page).
#[test]
fn an_unaligned_foreign_mapping_is_read_as_whole_pages_and_walks_end() {
    let s = AddressSpace::with_backend(Crowded::with_space(1 << 32));
    s.backend().map(0x10001..0x10002);
    let m = s.query(0x10000).unwrap();
    assert_eq!((m.base_address, m.region_size, m.state), (0x10000, 0x1000, MemState::Commit));
    let below = s.query(0x1000).unwrap();
    assert_eq!((below.base_address, below.region_size, below.state), (0x1000, 0xF000, MemState::Free));
    let regions = s.regions();
    let spans: Vec<(usize, usize, MemState)> =
        regions.iter().map(|m| (m.base_address, m.region_size, m.state)).collect();
    assert_eq!(
        spans,
        vec![
            (0, 0x10000, MemState::Free),
            (0x10000, 0x1000, MemState::Commit),
            (0x11000, (1 << 32) - 0x11000, MemState::Free)
        ]
    );
}

/// A reserve at an address over an avoided range borrows that range only for the call:
/// when the commit it asks for would pass the commit limit (1455), nothing is reserved
/// and the range is avoided again, so placement still does not pick it by itself, while
/// a reserve at that address still works.
#[test]
fn a_reserve_over_an_avoided_range_refused_by_the_commit_limit_leaves_it_avoided() {
    let s = AddressSpace::with_backend(Crowded::with_space(16 * GRANULE));
    s.backend().map(GRANULE..2 * GRANULE);
    assert_eq!(reserve(&s), Ok(2 * GRANULE));
    s.backend().unmap(GRANULE);
    s.set_commit_limit(Some(0x1000));
    let regions = s.regions();
    assert_eq!(s.alloc(GRANULE, GRANULE, T::RESERVE | T::COMMIT, P::READWRITE), Err(Error::CommitmentLimit));
    assert_eq!(s.alloc(GRANULE, 0x2000, T::COMMIT, P::READWRITE), Err(Error::InvalidAddress), "not reserved");
    assert_eq!(s.regions(), regions);
    assert_eq!((s.committed_bytes(), s.reserved_bytes()), (0, GRANULE));
    assert_eq!(reserve(&s), Ok(3 * GRANULE), "placement still avoids the range");
    assert_eq!(s.alloc(GRANULE, GRANULE, T::RESERVE | T::COMMIT, P::READWRITE), Err(Error::CommitmentLimit));
    assert_eq!(s.alloc(GRANULE, 0x1000, T::RESERVE | T::COMMIT, P::READWRITE), Ok(GRANULE));
    assert_eq!(s.committed_bytes(), 0x1000);
}
