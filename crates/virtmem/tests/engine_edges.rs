//! Review 6: edges of the engine's bookkeeping (reservations B+-tree, free space,
//! page runs) at the sizes release builds use, and races between checked accesses
//! (through the simulated backend's grants) and the calls that change pages.
//!
//! Every test here passes: the review found no defect. They are kept because each covers
//! something no other test did: the bookkeeping at release-build leaf, directory and chunk
//! sizes against a naive model (large-page and top-down placement included), a guard page
//! raced by two threads, write-watch counts under racing writes and capped resetting
//! collection, release-then-reuse against a grant-holding writer, determinism across two
//! spaces, and the engine's outside-the-lock paths with a grant-keeping backend.

#[macro_use]
mod forward;
mod paired;
mod rng;

use rng::Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use virtmem::backend::Backend;

use virtmem::{
    AddressSpace, AllocationType as T, Error, FreeType, MemState, Protection as Pr, SimBackend, SimConfig, SimSpace,
    WriteWatchFlags,
};

const P: usize = 4096;
const G: usize = 65536;
const LP: usize = 2 << 20;

fn round_up(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

/// A naive model of placement: reservations by base with their claim end (rounded up
/// to G) and their size.
struct Model {
    lo: usize,
    hi: usize,
    res: BTreeMap<usize, (usize, usize)>,
}

impl Model {
    fn gaps(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut at = self.lo;
        for (&b, &(claim_end, _)) in &self.res {
            if b > at {
                out.push((at, b));
            }
            at = claim_end;
        }
        if self.hi > at {
            out.push((at, self.hi));
        }
        out
    }

    fn place(&self, size: usize, top_down: bool, align: usize) -> Option<usize> {
        let claim = round_up(size, G);
        let gaps = self.gaps();
        if top_down {
            gaps.iter()
                .rev()
                .filter(|(s, e)| e - s >= claim)
                .map(|&(s, e)| ((e - claim) & !(align - 1), s))
                .find(|&(b, s)| b >= s)
                .map(|(b, _)| b)
        } else {
            gaps.iter().map(|&(s, e)| (round_up(s, align), e)).find(|&(b, e)| b + claim <= e).map(|(b, _)| b)
        }
    }

    fn free(&self, claim: std::ops::Range<usize>) -> bool {
        claim.start >= self.lo
            && claim.end <= self.hi
            && self.res.iter().all(|(&b, &(ce, _))| ce <= claim.start || b >= claim.end)
    }
}

fn check_stats(s: &SimSpace, m: &Model, ctx: &str) {
    let st = s.stats();
    let gaps = m.gaps();
    assert_eq!(st.reservations, m.res.len(), "{ctx}: reservations");
    assert_eq!(st.reserved, m.res.values().map(|&(_, sz)| sz).sum::<usize>(), "{ctx}: reserved");
    assert_eq!(
        st.committed,
        m.res.values().filter(|&&(_, sz)| sz % LP == 0).map(|&(_, sz)| sz).sum::<usize>(),
        "{ctx}: committed"
    );
    assert_eq!(st.free_gaps, gaps.len(), "{ctx}: free gaps");
    assert_eq!(st.largest_free, gaps.iter().map(|(s, e)| e - s).max().unwrap_or(0), "{ctx}: largest free");
}

/// Thousands of reservations made and released in adversarial orders (ascending,
/// descending, interleaved, random) in a space of a few thousand granules, so that the
/// reservation index's leaves and directory blocks and the free space's chunks split
/// and merge at the sizes of a release build: every placement (bottom-up and top-down),
/// every fixed reserve's answer, the totals, the free-gap figures and queries match a
/// naive model. (The unit tests' models run with tiny leaf and chunk sizes; the
/// differential test's window holds 16 granules.)
#[test]
fn placement_and_lookup_match_a_model_at_scale() {
    const GRANULES: usize = 6000;
    let lo = 0x1_0000_0000usize;
    let hi = lo + GRANULES * G;
    let config = SimConfig { min_address: lo, end_address: hi, ..SimConfig::default() };
    let s = SimSpace::simulated_with(config);
    let mut m = Model { lo, hi, res: BTreeMap::new() };
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut n = 0usize;
    let mut reserve = |s: &SimSpace, m: &mut Model, rng: &mut Rng, at: Option<usize>, top_down: bool| {
        n += 1;
        let size = match rng.below(4) {
            0 => P,
            1 => (1 + rng.below(16)) * P,
            2 => G,
            _ => (1 + rng.below(3)) * G + rng.below(16) * P,
        };
        let ctx = format!("call {n}: reserve {size:#x} at {at:x?} top_down={top_down}");
        match at {
            None => {
                let large = rng.below(8) == 0;
                let (size, align, ty) = if large {
                    (LP * (1 + rng.below(2)), LP, T::RESERVE | T::COMMIT | T::LARGE_PAGES)
                } else {
                    (size, G, T::RESERVE)
                };
                let ty = if top_down { ty | T::TOP_DOWN } else { ty };
                let want = m.place(size, top_down, align);
                let got = s.alloc(0, size, ty, Pr::READWRITE);
                match want {
                    Some(b) => {
                        assert_eq!(got, Ok(b), "{ctx}");
                        m.res.insert(b, (b + round_up(size, G), size));
                    }
                    None => assert_eq!(got, Err(Error::NotEnoughMemory), "{ctx}"),
                }
            }
            Some(a) => {
                let ok = m.free(a..a + round_up(size, G));
                let got = s.alloc(a, size, T::RESERVE, Pr::READWRITE);
                if a + size > m.hi {
                    assert_eq!(got, Err(Error::InvalidParameter), "{ctx}");
                } else if ok {
                    assert_eq!(got, Ok(a), "{ctx}");
                    m.res.insert(a, (a + round_up(size, G), size));
                } else {
                    assert_eq!(got, Err(Error::InvalidAddress), "{ctx}");
                }
            }
        }
    };
    let release = |s: &SimSpace, m: &mut Model, b: usize| {
        assert_eq!(s.free(b, 0, FreeType::RELEASE), Ok(()), "release {b:#x}");
        m.res.remove(&b);
    };
    let query_some = |s: &SimSpace, m: &Model, rng: &mut Rng, ctx: &str| {
        for _ in 0..64 {
            let a = lo + rng.below(GRANULES * G);
            let q = s.query(a).unwrap();
            match m.res.range(..=a).next_back() {
                Some((&b, &(_, sz))) if a < b + sz => {
                    let st = if sz % LP == 0 { MemState::Commit } else { MemState::Reserve };
                    assert_eq!((q.allocation_base, q.state), (b, st), "{ctx}: query {a:#x}");
                    assert_eq!(q.region_size, b + sz - (a & !(P - 1)), "{ctx}: query {a:#x}");
                }
                _ => {
                    let next = m.res.range(a + 1..).next().map_or(hi, |(&b, _)| b);
                    assert_eq!(q.state, MemState::Free, "{ctx}: query {a:#x}");
                    assert_eq!(q.region_size, next - (a & !(P - 1)), "{ctx}: query {a:#x}");
                }
            }
        }
    };

    for round in 0..4 {
        // Fill bottom-up, then top-down, until full.
        loop {
            let before = m.res.len();
            reserve(&s, &mut m, &mut rng, None, round % 2 == 1);
            if m.res.len() == before {
                break;
            }
        }
        check_stats(&s, &m, &format!("round {round} full"));
        query_some(&s, &m, &mut rng, &format!("round {round} full"));
        // Release every other one ascending, then every third descending.
        let bases: Vec<usize> = m.res.keys().copied().collect();
        for &b in bases.iter().step_by(2) {
            release(&s, &mut m, b);
        }
        check_stats(&s, &m, &format!("round {round} half"));
        let bases: Vec<usize> = m.res.keys().copied().collect();
        for &b in bases.iter().rev().step_by(3) {
            release(&s, &mut m, b);
        }
        check_stats(&s, &m, &format!("round {round} thinned"));
        query_some(&s, &m, &mut rng, &format!("round {round} thinned"));
        // Random mix: NULL bottom-up/top-down, fixed addresses, releases.
        for i in 0..30000 {
            match rng.below(5) {
                0 | 1 => {
                    let td = rng.below(2) == 0;
                    reserve(&s, &mut m, &mut rng, None, td)
                }
                2 => {
                    let a = lo + rng.below(GRANULES) * G;
                    reserve(&s, &mut m, &mut rng, Some(a), false)
                }
                _ => {
                    if !m.res.is_empty() {
                        let k = rng.below(m.res.len());
                        let b = *m.res.keys().nth(k).unwrap();
                        release(&s, &mut m, b);
                    }
                }
            }
            if i % 500 == 0 {
                check_stats(&s, &m, &format!("round {round} mix {i}"));
                query_some(&s, &m, &mut rng, &format!("round {round} mix {i}"));
            }
        }
        check_stats(&s, &m, &format!("round {round} mixed"));
        // Release everything, descending on even rounds, from the middle outwards on odd.
        let mut bases: Vec<usize> = m.res.keys().copied().collect();
        if round % 2 == 0 {
            bases.reverse();
        } else {
            let mid = bases.len() / 2;
            let (a, b) = bases.split_at(mid);
            let mut mixed = Vec::new();
            let (mut ai, mut bi) = (a.iter().rev(), b.iter());
            loop {
                match (ai.next(), bi.next()) {
                    (None, None) => break,
                    (x, y) => mixed.extend(x.into_iter().chain(y).copied()),
                }
            }
            bases = mixed;
        }
        for b in bases {
            release(&s, &mut m, b);
        }
        check_stats(&s, &m, &format!("round {round} empty"));
        assert_eq!(s.stats().largest_free, GRANULES * G);
    }
}

/// Stops the other threads when the main thread leaves, by a failed assertion too.
struct Stop<'a>(&'a AtomicBool);
impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// An armed guard page touched by two threads at once fires exactly once: one thread
/// gets STATUS_GUARD_PAGE_VIOLATION, the other's access succeeds (or, for a write that
/// the disarmed protection forbids, faults as an access violation).
#[test]
fn a_guard_page_hit_by_two_threads_fires_once() {
    let s = SimSpace::simulated();
    let a = s.alloc(0, G, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
    for round in 0..3000 {
        let page = a + (round % 16) * P;
        // Another page of the block written first, so that the block is granted.
        s.write(a + ((round + 1) % 16) * P, &[1]).unwrap();
        s.protect(page, P, Pr::READWRITE | Pr::GUARD).unwrap();
        let go = AtomicBool::new(false);
        let guards = AtomicUsize::new(0);
        std::thread::scope(|t| {
            for k in 0..2 {
                let (go, guards, s) = (&go, &guards, &s);
                t.spawn(move || {
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    let r = if k == 0 { s.write(page + 8, &[2]) } else { s.read(page + 16, &mut [0]) };
                    match r {
                        Ok(()) => {}
                        Err(Error::GuardPage { .. }) => {
                            guards.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => panic!("round {round}: {e:?}"),
                    }
                });
            }
            go.store(true, Ordering::Release);
        });
        assert_eq!(guards.load(Ordering::SeqCst), 1, "round {round}");
        assert_eq!(s.query(page).unwrap().protect, Pr::READWRITE, "round {round}");
    }
}

/// Every page written exactly once, by two threads, while a third collects the dirty
/// pages with WRITE_WATCH_FLAG_RESET in capped batches: each page is reported exactly
/// once overall (no write lost, none invented or reported twice).
#[test]
fn write_watch_reports_each_racing_write_exactly_once() {
    const PAGES: usize = 4096;
    let s = SimSpace::simulated();
    let a = s.alloc(0, PAGES * P, T::RESERVE | T::COMMIT | T::WRITE_WATCH, Pr::READWRITE).unwrap();
    let done = AtomicUsize::new(0);
    let mut seen = vec![0u32; PAGES];
    std::thread::scope(|t| {
        for k in 0..2 {
            let (s, done) = (&s, &done);
            t.spawn(move || {
                // Thread 0 ascending over even pages, thread 1 descending over odd ones,
                // some writes crossing into the next page (which the other thread owns:
                // those are single-byte writes at the page's end instead).
                let pages: Vec<usize> =
                    if k == 0 { (0..PAGES).step_by(2).collect() } else { (1..PAGES).step_by(2).rev().collect() };
                for p in pages {
                    s.write(a + p * P + (p * 37) % P, &[p as u8 | 1]).unwrap();
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let collect = |seen: &mut Vec<u32>| {
            let got = s.get_write_watch(WriteWatchFlags::RESET, a, PAGES * P, 7).unwrap();
            for x in got {
                seen[(x - a) / P] += 1;
            }
        };
        while done.load(Ordering::SeqCst) < 2 {
            collect(&mut seen);
        }
        for _ in 0..PAGES {
            collect(&mut seen);
        }
    });
    let wrong: Vec<(usize, u32)> = seen.iter().enumerate().filter(|(_, &n)| n != 1).map(|(p, &n)| (p, n)).collect();
    assert!(wrong.is_empty(), "pages reported other than once: {:?}", &wrong[..wrong.len().min(10)]);
}

/// A writer hammering a block while the main thread releases it and reserves the same
/// addresses again (committed read-only): no byte of the old reservation shows up in
/// the new one, and no write to the read-only pages succeeds.
#[test]
fn no_write_reaches_a_released_then_reused_range() {
    let s = SimSpace::simulated();
    let a = s.alloc(0, G, T::RESERVE, Pr::NOACCESS).unwrap();
    s.free(a, 0, FreeType::RELEASE).unwrap();
    let stop = AtomicBool::new(false);
    let phase = AtomicUsize::new(0); // odd: the read-only reservation is in place
    let bad = AtomicUsize::new(0);
    std::thread::scope(|t| {
        let _stop = Stop(&stop);
        let (s, stop, phase, bad) = (&s, &stop, &phase, &bad);
        t.spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let before = phase.load(Ordering::SeqCst);
                let ok = s.write(a + 3 * P + 5, &[0xAB; 9]).is_ok();
                if ok && before % 2 == 1 && phase.load(Ordering::SeqCst) == before {
                    bad.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        for round in 0..3000 {
            s.alloc(a, G, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
            for _ in 0..(round % 50) {
                std::hint::spin_loop();
            }
            s.free(a, 0, FreeType::RELEASE).unwrap();
            s.alloc(a, G, T::RESERVE | T::COMMIT, Pr::READONLY).unwrap();
            phase.fetch_add(1, Ordering::SeqCst);
            let mut b = [0u8; 9];
            s.read(a + 3 * P + 5, &mut b).unwrap();
            assert_eq!(b, [0; 9], "round {round}: old data in a fresh reservation");
            s.free(a, 0, FreeType::RELEASE).unwrap();
            phase.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert_eq!(bad.load(Ordering::SeqCst), 0, "writes to read-only pages succeeded");
}

/// Two spaces given the same calls (placement bottom-up and top-down, releases that
/// fragment, reuse) hand out the same addresses and answer every query the same.
#[test]
fn two_spaces_given_the_same_calls_agree() {
    let (x, y) = (SimSpace::simulated(), SimSpace::simulated());
    let mut rng = Rng(77);
    let mut live = Vec::new();
    for i in 0..20000 {
        match rng.below(4) {
            0 | 1 => {
                let size = (1 + rng.below(40)) * P;
                let ty = if rng.below(3) == 0 { T::RESERVE | T::TOP_DOWN } else { T::RESERVE };
                let (p, q) = (x.alloc(0, size, ty, Pr::READWRITE), y.alloc(0, size, ty, Pr::READWRITE));
                assert_eq!(p, q, "call {i}");
                live.push(p.unwrap());
            }
            _ if !live.is_empty() => {
                let b = live.swap_remove(rng.below(live.len()));
                assert_eq!(x.free(b, 0, FreeType::RELEASE), y.free(b, 0, FreeType::RELEASE));
            }
            _ => {}
        }
    }
    assert_eq!(x.regions(), y.regions());
}

/// The simulated backend (grants included) with its side effects run outside the
/// engine's lock, as a backend with system calls has them: the engine's busy marks and
/// pending claims then guard what the inline backend's single lock round trip did.
struct Outside {
    inner: SimBackend,
}
impl Backend for Outside {
    forward!(inner: limits, reserve, release, release_committed, set_access, discard, decommit);
    forward!(inner: reset, reset_undo, lock, unlock, read, write, dirty_pages, clear_dirty, keeps_grants, grant, try_read, try_write);
}

/// Zero coverage before: engine paths outside the lock with a grant-keeping backend
/// answer every call, query and total exactly as the inline simulated space does (with a
/// commit limit, so that refused commits are compared too).
#[test]
fn outside_matches_inline() {
    for seed in 1..=40u64 {
        let with = SimSpace::simulated();
        let without = AddressSpace::with_backend(Outside { inner: SimBackend::default() });
        with.set_commit_limit(Some(40 * P));
        without.set_commit_limit(Some(40 * P));
        paired::same_answers(&with, &without, seed, 3000);
    }
}

/// Zero coverage before: with effects outside the lock, no write through a grant lands
/// after a decommit or protect returned, and an armed guard page is never written through
/// an old grant.
#[test]
fn outside_no_write_after_forbid() {
    let s = AddressSpace::with_backend(Outside { inner: SimBackend::default() });
    let a = s.alloc(0, G, T::RESERVE, Pr::NOACCESS).unwrap();
    let ticket = AtomicU64::new(0);
    let last_ok = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|t| {
        t.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let n = ticket.fetch_add(1, Ordering::SeqCst) + 1;
                if s.write(a + 8, &n.to_le_bytes()).is_ok() {
                    last_ok.fetch_max(n, Ordering::SeqCst);
                }
            }
        });
        for round in 0..1500 {
            s.alloc(a, P, T::COMMIT, Pr::READWRITE).unwrap();
            let from = ticket.load(Ordering::SeqCst);
            while ticket.load(Ordering::SeqCst) < from + 3 {
                std::hint::spin_loop();
            }
            match round % 3 {
                0 => s.free(a, P, FreeType::DECOMMIT).unwrap(),
                1 => {
                    s.protect(a, P, Pr::READONLY).unwrap();
                }
                _ => {
                    s.protect(a, P, Pr::READWRITE | Pr::GUARD).unwrap();
                }
            }
            let forbidden_from = ticket.load(Ordering::SeqCst) + 1;
            while ticket.load(Ordering::SeqCst) < forbidden_from + 3 {
                std::hint::spin_loop();
            }
            let ok = last_ok.load(Ordering::SeqCst);
            if round % 3 != 2 && ok >= forbidden_from {
                stop.store(true, Ordering::SeqCst);
                panic!("round {round}: {ok} >= {forbidden_from}");
            }
            if round % 3 != 0 {
                s.free(a, P, FreeType::DECOMMIT).unwrap();
            }
        }
        stop.store(true, Ordering::SeqCst);
    });
}

/// Enough reservations for the index's leaves to fill its first block of leaves (2 MiB,
/// 618 leaves in release builds) and several more: the first block's last doubling makes
/// it a full-size block and moves its leaves there, later blocks never move. Every
/// reservation keeps its record, its page states and its contents through that, and
/// through releases that empty leaves across the blocks.
#[test]
#[cfg_attr(miri, ignore)] // 60 000 reservations; the leaf store's growth runs under Miri in its unit test.
fn tens_of_thousands_of_reservations_across_several_leaf_blocks() {
    const N: usize = 60_000;
    let s = SimSpace::simulated();
    let mut bases = Vec::with_capacity(N);
    for i in 0..N {
        let b = s.alloc(0, G, T::RESERVE, Pr::READWRITE).unwrap();
        s.alloc(b + (i % 16) * P, P, T::COMMIT, Pr::READWRITE).unwrap();
        s.write(b + (i % 16) * P + 8, &(i as u64).to_le_bytes()).unwrap();
        bases.push(b);
    }
    assert_eq!((s.reserved_bytes(), s.committed_bytes()), (N * G, N * P));
    let check = |i: usize, b: usize| {
        let page = b + (i % 16) * P;
        let q = s.query(page).unwrap();
        assert_eq!((q.allocation_base, q.base_address, q.state, q.region_size), (b, page, MemState::Commit, P), "{i}");
        let mut word = [0u8; 8];
        s.read(page + 8, &mut word).unwrap();
        assert_eq!(u64::from_le_bytes(word), i as u64, "{i}");
        let below = s.query(b).unwrap();
        let want = if i % 16 == 0 { MemState::Commit } else { MemState::Reserve };
        assert_eq!((below.allocation_base, below.state), (b, want), "{i}");
    };
    for (i, &b) in bases.iter().enumerate() {
        check(i, b);
    }
    // Release two in every three, then check the rest and that the released are free.
    for (i, &b) in bases.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
        assert_eq!(s.free(b, 0, FreeType::RELEASE), Ok(()), "{i}");
    }
    for (i, &b) in bases.iter().enumerate() {
        if i % 3 == 0 {
            check(i, b);
        } else {
            assert_eq!(s.query(b).unwrap().state, MemState::Free, "{i}");
            assert_eq!(s.free(b, 0, FreeType::RELEASE), Err(Error::InvalidAddress), "{i}");
        }
    }
    let kept = N.div_ceil(3);
    assert_eq!((s.reserved_bytes(), s.committed_bytes()), (kept * G, kept * P));
    for &b in bases.iter().step_by(3) {
        assert_eq!(s.free(b, 0, FreeType::RELEASE), Ok(()));
    }
    assert_eq!((s.reserved_bytes(), s.committed_bytes()), (0, 0));
    let regions = s.regions();
    assert!(regions.len() == 1 && regions[0].state == MemState::Free, "{regions:?}");
}
