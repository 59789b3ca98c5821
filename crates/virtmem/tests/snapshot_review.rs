//! Adversarial review of `SimSpace::snapshot`: snapshots taken while other threads keep
//! making calls of every kind, copies of copies, and the state a copy must carry.

#[macro_use]
mod forward;
#[path = "rng/mod.rs"]
mod rng;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use virtmem::backend::{Backend, BackendError, Snapshot};
use virtmem::{
    AddressSpace, AllocationType as T, FreeType, Protection as P, ResetPolicy, SimBackend, SimConfig, SimSpace,
    WriteWatchFlags,
};

const PAGE: usize = 4096;
const GRANULE: usize = 0x10000;

/// Snapshots are made, whole, while other threads keep the space busy with calls whose
/// side effects run outside its lock (GetWriteWatch, ResetWriteWatch, MEM_RESET on their
/// own reservations). (That a snapshot waits only for the calls under way when it is
/// asked for, rather than for a moment with none, which such a load may never leave, is
/// checked without timing by `a_snapshot_waits_only_for_the_calls_under_way_when_asked`;
/// here it would only show as time, which tests do not measure.)
#[test]
fn snapshots_are_made_among_calls_on_other_threads() {
    let s =
        Arc::new(SimSpace::simulated_with(SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() }));
    let stop = Arc::new(AtomicBool::new(false));
    // Workers that have finished a round: the snapshots start once all six are running.
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..6)
        .map(|t| {
            let (s, stop, running) = (Arc::clone(&s), Arc::clone(&stop), Arc::clone(&running));
            let a = s.alloc(0, 16 * GRANULE, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    s.write(a + (1 + n as usize % 8) * GRANULE - 8, &[t as u8 + 1; 16]).unwrap();
                    match n % 3 {
                        0 => drop(s.get_write_watch(WriteWatchFlags::RESET, a, 16 * GRANULE, 4096).unwrap()),
                        1 => s.reset_write_watch(a, 16 * GRANULE).unwrap(),
                        _ => drop(s.alloc(a, 16 * GRANULE, T::RESET, P::READWRITE).unwrap()),
                    }
                    n += 1;
                    if n == 1 {
                        running.fetch_add(1, Ordering::SeqCst);
                    }
                }
                n
            })
        })
        .collect();
    while running.load(Ordering::SeqCst) < 6 {
        std::thread::yield_now();
    }
    for _ in 0..20 {
        let copy = s.snapshot();
        assert_eq!(copy.stats().reservations, 6);
        assert_eq!(copy.committed_bytes(), 6 * 16 * GRANULE);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        assert!(w.join().unwrap() > 0);
    }
}

/// The simulated backend, whose `MEM_RESET` of a range starting at a gated address
/// waits until the test opens that gate: a call whose side effects run outside the
/// space's lock, held under way as long as the test wants.
#[derive(Default)]
struct Gated {
    inner: SimBackend,
    /// Gate address → open; `entered` lists the gates a reset waits at.
    gates: Mutex<(HashMap<usize, bool>, Vec<usize>)>,
    changed: Condvar,
}

impl Gated {
    fn close(&self, at: usize) {
        self.gates.lock().unwrap().0.insert(at, false);
    }
    fn open(&self, at: usize) {
        self.gates.lock().unwrap().0.insert(at, true);
        self.changed.notify_all();
    }
    /// Whether a reset waits at gate `at`, waiting up to `limit` for one to.
    fn entered(&self, at: usize, limit: Duration) -> bool {
        let g = self.gates.lock().unwrap();
        let (g, _) = self.changed.wait_timeout_while(g, limit, |g| !g.1.contains(&at)).unwrap();
        g.1.contains(&at)
    }
}

impl Snapshot for Gated {
    fn snapshot(&self) -> Self {
        Gated { inner: self.inner.snapshot(), ..Gated::default() }
    }
}

impl Backend for Gated {
    forward!(inner: limits, inline_effects, reserve, release, set_access, discard, reset_undo, lock, unlock, read, write, keeps_grants, grant, try_read, try_write, dirty_pages, clear_dirty);
    fn reset(&self, range: Range<usize>) -> Result<(), BackendError> {
        let mut g = self.gates.lock().unwrap();
        if g.0.contains_key(&range.start) {
            g.1.push(range.start);
            self.changed.notify_all();
            let _g = self.changed.wait_while(g, |g| g.0.get(&range.start) == Some(&false)).unwrap();
        } else {
            drop(g);
        }
        self.inner.reset(range)
    }
}

/// A snapshot waits for the calls under way when it is asked for, not for those that
/// start after: a reset on reservation B that begins while the snapshot waits for a
/// reset on reservation A waits in turn, so the snapshot is made as soon as A's ends.
/// (It waited for a moment with no call under way at all, which calls overlapping on
/// other threads may never leave: here, until B's ended too.)
#[test]
fn a_snapshot_waits_only_for_the_calls_under_way_when_asked() {
    let s = Arc::new(AddressSpace::with_backend(Gated::default()));
    let a = s.alloc(0, GRANULE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    let b = s.alloc(0, GRANULE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    s.write(b, b"b's data").unwrap();
    s.backend().close(a);
    s.backend().close(b);
    let reset = |at: usize| {
        let s = Arc::clone(&s);
        std::thread::spawn(move || s.alloc(at, PAGE, T::RESET, P::READWRITE).unwrap())
    };
    let on_a = reset(a);
    assert!(s.backend().entered(a, Duration::from_secs(60)), "the reset on A is under way");
    let done = Arc::new(AtomicBool::new(false));
    let snap = {
        let (s, done) = (Arc::clone(&s), Arc::clone(&done));
        std::thread::spawn(move || {
            let copy = s.snapshot();
            done.store(true, Ordering::Release);
            copy
        })
    };
    // The snapshot is waiting for A's reset when B's is asked for.
    forward::until_waiting(&s, 1);
    let on_b = reset(b);
    // B's reset waits for the snapshot (or, wrongly, reaches the backend and holds the
    // snapshot up until B's gate opens).
    let started = Instant::now();
    while s.stats().waiting_calls < 2 && !s.backend().entered(b, Duration::from_millis(1)) {
        assert!(started.elapsed() < Duration::from_secs(60), "B's reset neither waited nor started");
    }
    s.backend().open(a);
    on_a.join().unwrap();
    let started = Instant::now();
    // (Made at once once A's reset ends; the bound only ends a failing run, with B's
    // reset still held.)
    while !done.load(Ordering::Acquire) && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let made_before_b_ended = done.load(Ordering::Acquire);
    s.backend().open(b);
    let copy = snap.join().unwrap();
    on_b.join().unwrap();
    assert!(made_before_b_ended, "the snapshot waited for a call that began after it was asked for");
    let mut buf = [0u8; 8];
    copy.read(b, &mut buf).unwrap();
    assert_eq!(&buf, b"b's data");
}

/// The state of the reservation `[base, base + RES)` of `s` as one number: its regions,
/// its raw contents and its write-watch marks (all read without changing anything).
fn digest(s: &SimSpace, base: usize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut at = base;
    while at < base + RES {
        let q = s.query(at).unwrap();
        (q.base_address, q.region_size, q.state, q.protect.bits()).hash(&mut h);
        at = q.base_address + q.region_size;
    }
    let mut bytes = vec![0u8; RES];
    s.backend().read(base, &mut bytes).unwrap();
    bytes.hash(&mut h);
    s.get_write_watch(WriteWatchFlags::empty(), base, RES, RES / PAGE).unwrap().hash(&mut h);
    h.finish()
}

/// Bytes of each worker's reservation in [`snapshots_among_calls_of_every_kind_are_moments`].
const RES: usize = 4 * GRANULE;

/// Step `step` of worker `rng`'s sequence on its reservation at `base`: a call of any
/// kind (results ignored: the same state gives the same result).
fn one_call(s: &SimSpace, base: usize, rng: &mut rng::Rng, step: usize) {
    let page = rng.below(RES / PAGE);
    let pages = (1 + rng.below(4)).min(RES / PAGE - page);
    let (at, len) = (base + page * PAGE, pages * PAGE);
    let _ = match rng.below(11) {
        0..=2 => {
            // Often across a 64 KiB block: the engine's path.
            let off = rng.below(RES - 9000);
            s.write(base + off, &vec![(step % 251) as u8 + 1; 1 + rng.below(9000)])
        }
        3 => {
            let p = [P::READWRITE, P::READONLY, P::READWRITE | P::GUARD, P::NOACCESS][rng.below(4)];
            s.protect(at, len, p).map(drop)
        }
        4 => s.alloc(at, len, T::COMMIT, P::READWRITE).map(drop),
        5 => s.free(at, len, FreeType::DECOMMIT),
        6 => s.get_write_watch(WriteWatchFlags::RESET, at, len, 64).map(drop),
        7 => s.reset_write_watch(base, RES),
        8 => s.alloc(at, len, T::RESET, P::READWRITE).map(drop),
        9 => {
            if rng.below(2) == 0 {
                s.lock(at, len)
            } else {
                s.unlock(at, len)
            }
        }
        _ => {
            let mut buf = vec![0u8; 1 + rng.below(9000)];
            s.read(base + rng.below(RES - 9000), &mut buf)
        }
    };
}

/// Snapshots taken while three threads make calls of every kind (writes and reads
/// across 64 KiB blocks, protections with guard pages, commits, decommits, write-watch
/// queries and resets, discarding MEM_RESETs, locks) each on its own reservation: in
/// every copy, each reservation is as its thread's calls left it after some number of
/// them, and a later copy after no fewer.
#[test]
fn snapshots_among_calls_of_every_kind_are_moments() {
    const THREADS: usize = 3;
    const CALLS: usize = 1500;
    let config = SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() };
    let setup = |s: &SimSpace, t: usize| {
        let base = 0x100_0000 * (t + 1);
        s.alloc(base, RES, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap();
        base
    };
    let s = Arc::new(SimSpace::simulated_with(config));
    let bases: Vec<usize> = (0..THREADS).map(|t| setup(&s, t)).collect();
    // Snapshots taken so far: a worker makes its calls in batches of 100 and, after each,
    // waits until two more were taken, so that at least one was begun and finished
    // between its batches (whatever the scheduling): each copy is then sure to catch
    // every thread midway at least once.
    let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = bases
        .iter()
        .enumerate()
        .map(|(t, &base)| {
            let (s, taken) = (Arc::clone(&s), Arc::clone(&taken));
            std::thread::spawn(move || {
                let mut rng = rng::Rng(0x1234_5678 + t as u64);
                for step in 0..CALLS {
                    if step % 100 == 0 && step > 0 {
                        let before = taken.load(Ordering::Acquire);
                        while taken.load(Ordering::Acquire) < before + 2 {
                            std::thread::yield_now();
                        }
                    }
                    one_call(&s, base, &mut rng, step);
                }
            })
        })
        .collect();
    let mut seen: Vec<Vec<u64>> = Vec::new();
    while !workers.iter().all(|w| w.is_finished()) {
        let copy = s.snapshot();
        seen.push(bases.iter().map(|&b| digest(&copy, b)).collect());
        taken.fetch_add(1, Ordering::Release);
    }
    for w in workers {
        w.join().unwrap();
    }
    assert!(seen.len() > 1, "snapshots were taken while the threads ran");
    let mut midway = false;
    // Each thread's states after 0, 1, ... calls, made alone on a fresh space.
    for (t, &base) in bases.iter().enumerate() {
        let alone = SimSpace::simulated_with(config);
        assert_eq!(setup(&alone, t), base);
        let mut rng = rng::Rng(0x1234_5678 + t as u64);
        let mut states = vec![digest(&alone, base)];
        for step in 0..CALLS {
            one_call(&alone, base, &mut rng, step);
            states.push(digest(&alone, base));
        }
        assert_eq!(digest(&s, base), states[CALLS], "thread {t}: the original after all calls");
        let mut after = 0;
        for (i, copy) in seen.iter().enumerate() {
            let found = states[after..].iter().position(|&d| d == copy[t]);
            assert!(found.is_some(), "snapshot {i}: thread {t}'s reservation is in no state its calls went through");
            after += found.unwrap_or(0);
            midway |= after > 0 && after < CALLS;
        }
    }
    assert!(midway, "some snapshot caught a thread midway");
}

/// A copy keeps its original's configuration (bounds, large pages, reset policy) and
/// every piece of per-page state, each side changing apart: a guard page hit on one side
/// only, write-watch marks reset on one side only, discarded data undone on each side,
/// locks, and a copy of a copy outliving both.
#[test]
fn a_copy_of_a_custom_space_keeps_every_piece_of_state_apart() {
    let config = SimConfig {
        min_address: 0x40_0000,
        end_address: 0x1_0000_0000,
        large_page_size: 0x20_0000,
        reset_policy: ResetPolicy::Discard,
    };
    let s = SimSpace::simulated_with(config);
    let large = s.alloc(0, 0x40_0000, T::RESERVE | T::COMMIT | T::LARGE_PAGES, P::READWRITE).unwrap();
    let w = s.alloc(0, 4 * GRANULE, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap();
    let g = s.alloc(0, GRANULE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    s.protect(g + PAGE, PAGE, P::READWRITE | P::GUARD).unwrap();
    s.write(large + 0x20_0000, b"large").unwrap();
    s.write(w, &[1; 3 * PAGE]).unwrap();
    s.write(g, &[9; PAGE]).unwrap();
    s.lock(g, PAGE).unwrap();
    s.alloc(g, PAGE, T::RESET, P::READWRITE).unwrap();
    s.set_commit_limit(Some(s.committed_bytes() + GRANULE));
    let before = s.backend().stored_pages();

    let c = s.snapshot();
    assert_eq!(c.backend().config(), &config);
    assert_eq!(c.system_info(), s.system_info());
    assert_eq!(c.stats(), s.stats());
    assert_eq!(c.regions(), s.regions());
    assert_eq!(c.commit_limit(), s.commit_limit());
    assert_eq!(c.backend().stored_pages(), before);
    assert_eq!(s.backend().stored_pages(), before, "the original keeps its pages");

    // The guard page is hit on the copy only.
    let mut b = [0u8; 1];
    assert!(matches!(c.read(g + PAGE, &mut b), Err(virtmem::Error::GuardPage { .. })));
    assert_eq!(c.query(g + PAGE).unwrap().protect, P::READWRITE);
    assert_eq!(s.query(g + PAGE).unwrap().protect, P::READWRITE | P::GUARD);
    // Write-watch marks reset on the original only.
    let dirty = s.get_write_watch(WriteWatchFlags::RESET, w, 4 * GRANULE, 64).unwrap();
    assert_eq!(dirty, vec![w, w + PAGE, w + 2 * PAGE]);
    assert_eq!(c.get_write_watch(WriteWatchFlags::empty(), w, 4 * GRANULE, 64).unwrap(), dirty);
    assert_eq!(s.get_write_watch(WriteWatchFlags::empty(), w, 4 * GRANULE, 64).unwrap(), vec![]);
    // The discarded data is reported lost on each side, once.
    for sp in [&s, &c] {
        assert_eq!(sp.alloc(g, PAGE, T::RESET_UNDO, P::READWRITE), Err(virtmem::Error::DataDiscarded));
        assert_eq!(sp.alloc(g, PAGE, T::RESET_UNDO, P::READWRITE), Ok(g));
    }
    // The lock is on both; unlocking one leaves the other's.
    c.unlock(g, PAGE).unwrap();
    assert_eq!(c.unlock(g, PAGE), Err(virtmem::Error::NotLocked));
    s.unlock(g, PAGE).unwrap();
    // The commit limit holds on the copy, and the copy's commits are its own.
    assert_eq!(c.alloc(0, 2 * GRANULE, T::RESERVE | T::COMMIT, P::READWRITE), Err(virtmem::Error::CommitmentLimit));
    c.alloc(0, GRANULE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(s.committed_bytes() + GRANULE, c.committed_bytes());
    // Large pages: a copy of a copy, the two before it dropped.
    let cc = c.snapshot();
    drop(s);
    drop(c);
    let mut five = [0u8; 5];
    cc.read(large + 0x20_0000, &mut five).unwrap();
    assert_eq!(&five, b"large");
    assert_eq!(cc.free(large, 0x1000, FreeType::DECOMMIT), Err(virtmem::Error::InvalidParameter));
    cc.free(large, 0, FreeType::RELEASE).unwrap();
    // Placement stays inside the configured bounds.
    let next = cc.alloc(0, GRANULE, T::RESERVE, P::READWRITE).unwrap();
    assert!(next >= config.min_address && next < config.end_address);
    assert_eq!(cc.backend().stored_pages(), 3, "w's three pages (the reset dropped g's, the release the large page's)");
}
