//! An address space is `Send + Sync`: many threads on one space, doing whole lifecycles
//! on ranges of their own and random calls on ranges they share, keep every invariant:
//! - a thread's calls on its own ranges behave exactly as if it were alone;
//! - the commit limit is never exceeded, as seen by a thread watching the totals;
//! - every `VirtualQuery` walk taken meanwhile tiles the window;
//! - afterwards the totals equal the sums of a walk, and the reservations alive are
//!   exactly those made and not released (none lost, none invented).
//!
//! Runs on the simulated backend (as it is, and as a backend whose effects wait) and on
//! the Linux backend.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use common::*;
use virtmem::backend::faulty::Faulty;
use virtmem::backend::Backend;
use virtmem::{
    AllocationType as T, Error, FreeType, MemState, Protection as Pr, SimBackend, SimConfig, SimSpace, VirtualSpace,
    WriteWatchFlags,
};

const OWNERS: usize = if cfg!(miri) { 2 } else { 4 };
const SHARERS: usize = if cfg!(miri) { 2 } else { 4 };
const ROUNDS: usize = if cfg!(miri) { 4 } else { 1500 };
/// Granules each owner thread has to itself (from the bottom of the window).
const OWN: usize = 4;
/// The granules the sharers fight over (above the owners').
const SHARED: std::ops::Range<usize> = OWNERS * OWN..OWNERS * OWN + 16;
const LIMIT: usize = 200 * P;

/// A tiny deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as usize
    }
    fn below(&mut self, n: usize) -> usize {
        self.next() % n
    }
}

/// One whole lifecycle on a range nobody else touches: everything must work exactly.
fn owner_round(s: &dyn VirtualSpace, base: usize, t: usize, i: usize) {
    let watch = i % 2 == 0;
    let ty = if watch { T::RESERVE | T::WRITE_WATCH } else { T::RESERVE };
    let n = 1 + (t + i) % (OWN * 16 - 1);
    assert_eq!(s.alloc(base, n * P, ty, Pr::READWRITE), Ok(base));
    let pages = n.min(8);
    match s.alloc(base, pages * P, T::COMMIT, Pr::READWRITE) {
        Ok(a) => assert_eq!(a, base),
        Err(Error::CommitmentLimit) => {
            // Others hold the commit; nothing was committed.
            assert_eq!(s.query(base).map(|m| m.state), Ok(MemState::Reserve));
            assert_eq!(s.free(base, 0, FreeType::RELEASE), Ok(()));
            return;
        }
        Err(e) => panic!("owner {t} round {i}: commit: {e}"),
    }
    let data: Vec<u8> = (0..pages * P).map(|k| (k + t * 7 + i) as u8).collect();
    s.write(base, &data).unwrap();
    let mut back = vec![0; data.len()];
    s.read(base, &mut back).unwrap();
    assert_eq!(back, data, "owner {t} round {i}: data");
    if watch {
        let all: Vec<usize> = (0..pages).map(|k| base + k * P).collect();
        assert_eq!(s.get_write_watch(WriteWatchFlags::RESET, base, n * P, 64), Ok(all));
        assert_eq!(s.get_write_watch(WriteWatchFlags::empty(), base, n * P, 64), Ok(vec![]));
    }
    assert_eq!(s.protect(base, pages * P, Pr::READONLY), Ok(Pr::READWRITE));
    assert!(matches!(s.write(base, &[1]), Err(Error::AccessViolation { .. })));
    s.read(base, &mut back).unwrap();
    assert_eq!(back, data);
    let m = s.query(base).unwrap();
    assert_eq!(
        (m.allocation_base, m.state, m.protect, m.region_size),
        (base, MemState::Commit, Pr::READONLY, pages * P)
    );
    assert_eq!(s.free(base, pages * P, FreeType::DECOMMIT), Ok(()));
    assert_eq!(s.query(base).map(|m| (m.state, m.region_size)), Ok((MemState::Reserve, n * P)));
    assert_eq!(s.free(base, 0, FreeType::RELEASE), Ok(()));
    assert_eq!(s.query(base).map(|m| m.state), Ok(MemState::Free));
}

/// Random calls on granules every sharer uses. Any outcome the spec allows is fine;
/// every reservation made and released is logged.
fn sharer_round(s: &dyn VirtualSpace, w: usize, rng: &mut Rng, log: &Mutex<(BTreeSet<usize>, usize)>) {
    let g = SHARED.start + rng.below(SHARED.len());
    let at = w + g * G + rng.below(16) * P;
    let size = (1 + rng.below(24)) * P;
    let allowed = |r: &Result<(), Error>| {
        matches!(
            r,
            Ok(())
                | Err(Error::InvalidAddress)
                | Err(Error::InvalidParameter)
                | Err(Error::CommitmentLimit)
                | Err(Error::NotLocked)
                | Err(Error::NoAccess)
                | Err(Error::AccessViolation { .. })
                | Err(Error::GuardPage { .. })
        )
    };
    let r: Result<(), Error> = match rng.below(9) {
        0 | 1 => {
            let ty = if rng.below(2) == 0 { T::RESERVE } else { T::RESERVE | T::COMMIT };
            // The log is held across the call, so that the reservation is logged before
            // anyone can release it (calls that do not make or release reservations do
            // not take it).
            let mut l = log.lock().unwrap();
            let r = s.alloc(at, size, ty, Pr::READWRITE);
            if let Ok(b) = r {
                assert!(l.0.insert(b), "reservation {b:#x} made twice");
            }
            r.map(drop)
        }
        2 => {
            // Anywhere, from the top: lands above the owners' granules.
            let mut l = log.lock().unwrap();
            let r = s.alloc(0, size, T::RESERVE | T::COMMIT | T::TOP_DOWN, Pr::READWRITE);
            if let Ok(b) = r {
                assert!(b >= w + SHARED.end * G, "top-down reservation {b:#x} among the owners' granules");
                assert!(l.0.insert(b), "reservation {b:#x} made twice");
            }
            r.map(drop)
        }
        3 => s.alloc(at, size, T::COMMIT, Pr::READWRITE).map(drop),
        4 => {
            // Release whatever starts here (or one of the top-down ones).
            let mut l = log.lock().unwrap();
            let tops: Vec<usize> = l.0.iter().copied().filter(|&b| b >= w + SHARED.end * G).collect();
            let base = if rng.below(2) == 0 || tops.is_empty() { w + g * G } else { tops[rng.below(tops.len())] };
            let r = s.free(base, 0, FreeType::RELEASE);
            if r.is_ok() {
                assert!(l.0.remove(&base), "released {base:#x}, which nobody made");
                l.1 += 1;
            }
            r
        }
        5 => s.free(at, size, FreeType::DECOMMIT),
        6 => s.protect(at, size, if rng.below(2) == 0 { Pr::READONLY } else { Pr::READWRITE | Pr::GUARD }).map(drop),
        7 => s.write(at, &[rng.next() as u8; 64]),
        _ => s.read(at, &mut [0; 64]),
    };
    assert!(allowed(&r), "unexpected outcome {r:?}");
}

fn hammer(space: Arc<dyn VirtualSpace>, w: usize) {
    space.set_commit_limit(Some(LIMIT));
    let log = Arc::new(Mutex::new((BTreeSet::new(), 0usize)));
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(OWNERS + SHARERS + 1));
    let mut workers = Vec::new();
    for t in 0..OWNERS {
        let (s, start) = (space.clone(), start.clone());
        workers.push(std::thread::spawn(move || {
            start.wait();
            for i in 0..ROUNDS {
                owner_round(&*s, w + t * OWN * G, t, i);
            }
        }));
    }
    for t in 0..SHARERS {
        let (s, start, log) = (space.clone(), start.clone(), log.clone());
        workers.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
            start.wait();
            for _ in 0..ROUNDS {
                sharer_round(&*s, w, &mut rng, &log);
            }
        }));
    }
    // The watcher: the commit limit holds and every walk tiles the window.
    let watcher = {
        let (s, done, start) = (space.clone(), done.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut walks = 0;
            while !done.load(Ordering::SeqCst) || walks == 0 {
                assert!(s.committed_bytes() <= LIMIT, "commit limit exceeded: {}", s.committed_bytes());
                let regions = walk(&*s, w..w + WINDOW);
                let covered: usize = regions.iter().map(|m| m.region_size).sum();
                assert_eq!(covered, WINDOW, "a walk does not tile the window");
                walks += 1;
            }
            walks
        })
    };
    for h in workers {
        h.join().expect("a worker failed");
    }
    done.store(true, Ordering::SeqCst);
    let walks = watcher.join().expect("the watcher failed");
    assert!(walks > 0);

    // Afterwards: the owners left nothing; the sharers' live reservations are exactly
    // the ones the log holds; the totals are the sums of a walk.
    let regions = walk(&*space, w..w + WINDOW);
    for m in &regions {
        if m.state != MemState::Free {
            assert!(m.base_address >= w + SHARED.start * G, "owner memory left at {:#x}", m.base_address);
        }
    }
    let live: BTreeSet<usize> =
        regions.iter().filter(|m| m.state != MemState::Free).map(|m| m.allocation_base).collect();
    let (made, released) = {
        let l = log.lock().unwrap();
        (l.0.clone(), l.1)
    };
    assert_eq!(live, made, "live reservations vs the log");
    assert_eq!(space.stats().reservations, live.len());
    assert_totals_match_walk(&*space, w..w + WINDOW);
    assert!(space.committed_bytes() <= LIMIT);
    if !cfg!(miri) {
        assert!(released > 0, "the sharers never released anything: the test did not exercise much");
    }
    release_all(&*space, w..w + WINDOW);
    assert_eq!((space.committed_bytes(), space.reserved_bytes()), (0, 0));
}

#[test]
fn simulated_space_under_many_threads() {
    let w = SIM_WINDOW;
    let config = SimConfig { min_address: w, end_address: w + WINDOW, ..SimConfig::default() };
    hammer(Arc::new(SimSpace::simulated_with(config)), w);
}

/// The simulated backend as a backend whose effects wait (`Faulty`'s general mode,
/// disarmed): every side effect is made outside the space's lock, the reservation marked
/// busy, as over the Linux backend; a commit, decommit or protect inside one run by one
/// backend call without a plan, with the commit's charge held meanwhile.
#[test]
fn simulated_space_with_effects_outside_the_lock_under_many_threads() {
    let w = SIM_WINDOW;
    let config = SimConfig { min_address: w, end_address: w + WINDOW, ..SimConfig::default() };
    let backend = Faulty::new(SimBackend::new(config));
    assert!(!backend.inline_effects());
    hammer(Arc::new(virtmem::AddressSpace::with_backend(backend)), w);
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn linux_space_under_many_threads() {
    let w = linux::window(WINDOW);
    let backend = linux::Confined::new(virtmem::LinuxBackend::new().unwrap(), w..w + WINDOW, true);
    hammer(Arc::new(virtmem::AddressSpace::with_backend(backend)), w);
}

/// The types say it too.
#[test]
fn spaces_are_send_and_sync() {
    fn check<S: Send + Sync>() {}
    check::<SimSpace>();
    check::<Arc<dyn VirtualSpace>>();
    #[cfg(all(target_os = "linux", not(miri)))]
    check::<virtmem::LinuxSpace>();
}
