//! Adversarial review of `AddressSpace::restore_from` under concurrency: a restore is one
//! moment for every call and access, on the space restored and on the space it copies,
//! and a space restored from itself changes nothing, whatever other threads do meanwhile.

#[path = "rng/mod.rs"]
mod rng;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use virtmem::{AllocationType as T, FreeType, MemState, Protection as P, SimSpace, WriteWatchFlags};

const GRANULE: usize = 0x10000;

fn read_u64(s: &SimSpace, at: usize) -> u64 {
    let mut buf = [0u8; 8];
    s.read(at, &mut buf).expect("read");
    u64::from_le_bytes(buf)
}

/// Threads that keep taking the space's lock (queries), so that a restore waits for it
/// among them, as it does in a many-threaded emulator.
fn crowd(s: &Arc<SimSpace>, at: usize, stop: &Arc<AtomicBool>, n: usize) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (s, stop) = (Arc::clone(s), Arc::clone(stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = s.query(at);
                }
            })
        })
        .collect()
}

/// A space restored from itself changes nothing (the docs: "this one included"), so a
/// reservation another thread made and has not freed is there whenever that thread
/// looks, however many restores from itself run meanwhile. A restore that copied the
/// space first and swapped the copy in later would undo the calls that completed in
/// between: the reservation, reported made, would be gone.
#[test]
fn a_restore_from_itself_loses_no_concurrent_call() {
    let s = Arc::new(SimSpace::simulated());
    let anchor = s.alloc(0, GRANULE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let maker = {
        let (s, stop, made) = (Arc::clone(&s), Arc::clone(&stop), Arc::clone(&made));
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                let a = s.alloc(0, GRANULE, T::RESERVE | T::COMMIT, P::READWRITE).map_err(|e| e.to_string())?;
                s.write(a, &[7]).map_err(|e| format!("write to the reservation just made: {e}"))?;
                let q = s.query(a).map_err(|e| e.to_string())?;
                if q.state != MemState::Commit {
                    return Err(format!("the reservation made at {a:#x} is gone: {q:?}"));
                }
                s.free(a, 0, FreeType::RELEASE).map_err(|e| format!("release of {a:#x}: {e}"))?;
                made.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    let others = crowd(&s, anchor, &stop, 1);
    let mut restores = 0u64;
    while (restores < 2000 || made.load(Ordering::Relaxed) < 2000) && !maker.is_finished() {
        s.restore_from(&s).unwrap();
        restores += 1;
        // (A restore from itself may cost nothing: let the maker run on 2 cores.)
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for t in others {
        t.join().unwrap();
    }
    maker.join().unwrap().unwrap();
}

/// A restore of `a` from `b` is one moment for both: a thread that stores `i` into `b`
/// and then into `a` (each a granted write), and then finds `a`'s store undone by a
/// restore, must find `b`'s store `i` in `a` (the restore came after both). A restore
/// that copied `b` first and swapped the copy into `a` later would lose `b`'s store.
#[test]
fn a_restore_is_one_moment_for_its_source_and_its_target() {
    let a = Arc::new(SimSpace::simulated());
    let b = Arc::new(SimSpace::simulated());
    // The same layout in both: block `p` is copied from `b`, block `q` written in `a`
    // alone (it holds 0 in `b`).
    let base = a.alloc(0, 2 * GRANULE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(b.alloc(0, 2 * GRANULE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap(), base);
    let (p, q) = (base, base + GRANULE);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let writer = {
        let (a, b, stop, rounds) = (Arc::clone(&a), Arc::clone(&b), Arc::clone(&stop), Arc::clone(&rounds));
        std::thread::spawn(move || -> Result<(), String> {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                b.write(p, &i.to_le_bytes()).map_err(|e| e.to_string())?;
                a.write(q, &i.to_le_bytes()).map_err(|e| e.to_string())?;
                // `q` first: once it reads 0 a restore came after both stores, and the
                // `p` it put in `a` (or a later restore's) holds `i` or more.
                let in_q = read_u64(&a, q);
                let in_p = read_u64(&a, p);
                if in_q == 0 && in_p < i {
                    return Err(format!("round {i}: a's store undone but b's store not restored (p = {in_p})"));
                }
                rounds.store(i, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    let others = crowd(&a, base, &stop, 1);
    let mut restores = 0u64;
    while (restores < 2000 || rounds.load(Ordering::Relaxed) < 20_000) && !writer.is_finished() {
        assert!(restores < 5_000_000, "the writer stopped making progress");
        a.restore_from(&b).unwrap();
        restores += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for t in others {
        t.join().unwrap();
    }
    writer.join().unwrap().unwrap();
}

/// Two spaces restored from each other at once, over and over, while a third thread
/// snapshots both: every restore ends (a restore holds both spaces
/// at once, so the two must be taken in one order whichever is the target), and each
/// space always holds one of the two states the test gives them (a marker page).
#[test]
fn spaces_restored_from_each_other_at_once_end_and_stay_whole() {
    const ROUNDS: usize = 2000;
    let a = Arc::new(SimSpace::simulated());
    let b = Arc::new(SimSpace::simulated());
    let base = a.alloc(0, GRANULE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(b.alloc(0, GRANULE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap(), base);
    a.write(base, &1u64.to_le_bytes()).unwrap();
    b.write(base, &2u64.to_le_bytes()).unwrap();
    let start = Arc::new(std::sync::Barrier::new(3));
    let restorer = |to: &Arc<SimSpace>, from: &Arc<SimSpace>| {
        let (to, from, start) = (Arc::clone(to), Arc::clone(from), Arc::clone(&start));
        std::thread::spawn(move || {
            start.wait();
            for _ in 0..ROUNDS {
                to.restore_from(&from).expect("restore");
            }
        })
    };
    let ab = restorer(&a, &b);
    let ba = restorer(&b, &a);
    start.wait();
    for _ in 0..ROUNDS / 4 {
        for s in [&a, &b] {
            let copy = s.snapshot();
            let marker = read_u64(&copy, base);
            assert!(marker == 1 || marker == 2, "a marker from no state given: {marker}");
            assert_eq!(copy.regions(), s.snapshot().regions());
        }
    }
    ab.join().unwrap();
    ba.join().unwrap();
    for s in [&a, &b] {
        let marker = read_u64(s, base);
        assert!(marker == 1 || marker == 2, "a marker from no state given: {marker}");
    }
}

/// One step of a random workload on a space, with everything it answers (addresses,
/// errors, contents, write-watch marks), so that two spaces can be compared call by call.
fn step(s: &SimSpace, r: &mut rng::Rng) -> String {
    const PAGE: usize = 4096;
    let bases: Vec<usize> =
        s.regions().iter().filter_map(|m| (m.allocation_base != 0).then_some(m.allocation_base)).collect();
    let pick = |r: &mut rng::Rng| if bases.is_empty() { 0x10000 } else { bases[r.below(bases.len())] };
    let at = |r: &mut rng::Rng| pick(r) + r.below(4) * PAGE;
    match r.below(12) {
        0 => format!("{:?}", s.alloc(0, (1 + r.below(5)) * PAGE, T::RESERVE | T::COMMIT, P::READWRITE)),
        1 => format!("{:?}", s.alloc(0, (1 + r.below(40)) * PAGE, T::RESERVE | T::TOP_DOWN, P::READONLY)),
        2 => format!("{:?}", s.alloc(0, 4 * PAGE, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE)),
        3 => format!("{:?}", s.free(pick(r), 0, FreeType::RELEASE)),
        4 => format!("{:?}", s.free(at(r), PAGE, FreeType::DECOMMIT)),
        5 => {
            format!("{:?}", s.protect(at(r), PAGE, if r.below(2) == 0 { P::READWRITE | P::GUARD } else { P::READONLY }))
        }
        6 => format!("{:?}", s.lock(at(r), PAGE)),
        7 => format!("{:?}", s.unlock(at(r), PAGE)),
        8 => {
            let a = at(r);
            format!("{a:#x} {:?}", s.write(a + r.below(PAGE), &[r.below(255) as u8 + 1; 9]))
        }
        9 => {
            let mut buf = [0u8; 16];
            let a = at(r);
            let res = s.read(a + r.below(PAGE - 16), &mut buf);
            format!("{res:?} {buf:?}")
        }
        10 => {
            let b = pick(r);
            format!(
                "{:?} {:?}",
                s.alloc(b, PAGE, T::RESET, P::READWRITE),
                s.get_write_watch(WriteWatchFlags::RESET, b, 4 * PAGE, 16)
            )
        }
        _ => format!("{:?}", s.alloc(at(r), PAGE, T::RESET_UNDO, P::READWRITE)),
    }
}

/// Everything a space tells of itself without a call that changes it.
fn observe(s: &SimSpace) -> String {
    format!("{:?} {:?} {:?}", s.regions(), s.stats(), s.commit_limit())
}

/// A space restored from a snapshot is, to every call, the snapshot's own copy
/// (`snapshot.snapshot()`): its regions and statistics, and then the same random calls
/// on both (placement bottom-up and top-down, locks, guard pages, write watch, resets and
/// their undo, contents) answer the same, though the space had been taken elsewhere
/// meanwhile by other random calls (many reservations made, freed and changed). Several
/// rounds, each restoring the same space again.
#[test]
fn a_restored_space_answers_every_call_as_the_snapshots_copy() {
    let config = virtmem::SimConfig { reset_policy: virtmem::ResetPolicy::Discard, ..virtmem::SimConfig::default() };
    let s = SimSpace::simulated_with(config);
    let mut r = rng::Rng(0x5eed_cafe);
    for _ in 0..300 {
        step(&s, &mut r);
    }
    s.set_commit_limit(Some(s.committed_bytes() + 64 * 4096));
    let snap = s.snapshot();
    for round in 0..8u64 {
        for _ in 0..200 {
            step(&s, &mut r);
        }
        s.restore_from(&snap).expect("restore");
        let copy = snap.snapshot();
        assert_eq!(observe(&s), observe(&copy), "round {round}: just restored");
        let seed = r.next();
        let (mut a, mut b) = (rng::Rng(seed), rng::Rng(seed));
        for i in 0..200 {
            assert_eq!(step(&s, &mut a), step(&copy, &mut b), "round {round}, call {i}");
        }
        assert_eq!(observe(&s), observe(&copy), "round {round}: after the same calls");
    }
}

/// Many spaces sharing pages through snapshots and restores of one another, written,
/// restored and dropped in a random order: each reads what a model of its own says
/// (a write through one is never seen by another), and once one space is left it
/// shares no page.
#[test]
fn pages_shared_among_many_spaces_stay_each_ones_own() {
    const SPACES: usize = 5;
    const PAGES: usize = 24;
    const PAGE: usize = 4096;
    let first = SimSpace::simulated();
    let base = first.alloc(0, PAGES * PAGE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    let mut spaces: Vec<Option<SimSpace>> = vec![Some(first)];
    let mut model: Vec<Vec<u8>> = vec![vec![0; PAGES]];
    let mut r = rng::Rng(0xc0ff_ee00);
    for i in 0..3000 {
        let live: Vec<usize> = (0..spaces.len()).filter(|&k| spaces[k].is_some()).collect();
        let a = live[r.below(live.len())];
        let b = live[r.below(live.len())];
        match r.below(6) {
            0 | 1 => {
                let p = r.below(PAGES);
                let v = (i % 250) as u8 + 1;
                // Half the writes cover a whole page, half one byte of it.
                let len = if r.below(2) == 0 { PAGE } else { 1 };
                spaces[a].as_ref().unwrap().write(base + p * PAGE, &vec![v; len]).unwrap();
                model[a][p] = v;
            }
            2 if spaces.len() < SPACES || live.len() < spaces.len() => {
                let copy = spaces[a].as_ref().unwrap().snapshot();
                let m = model[a].clone();
                match spaces.iter().position(Option::is_none) {
                    Some(k) => {
                        spaces[k] = Some(copy);
                        model[k] = m;
                    }
                    None => {
                        spaces.push(Some(copy));
                        model.push(m);
                    }
                }
            }
            3 => {
                spaces[a].as_ref().unwrap().restore_from(spaces[b].as_ref().unwrap()).unwrap();
                model[a] = model[b].clone();
            }
            4 if live.len() > 1 => spaces[a] = None,
            _ => {}
        }
        for &k in live.iter().filter(|&&k| spaces[k].is_some()) {
            let s = spaces[k].as_ref().unwrap();
            let p = r.below(PAGES);
            let mut buf = [0u8; 1];
            s.read(base + p * PAGE, &mut buf).unwrap();
            assert_eq!(buf[0], model[k][p], "step {i}: space {k}, page {p}");
            let sim = s.backend();
            assert!(sim.shared_pages() <= sim.stored_pages());
        }
    }
    // Down to one space: everything it holds is its own.
    let keep = spaces.iter().position(Option::is_some).unwrap();
    let last = spaces[keep].take().unwrap();
    drop(spaces);
    assert_eq!(last.backend().shared_pages(), 0);
    for (p, &want) in model[keep].iter().enumerate() {
        let mut buf = [0u8; 1];
        last.read(base + p * PAGE, &mut buf).unwrap();
        assert_eq!(buf[0], want, "page {p}");
    }
}

/// A restore from a space of the same address range but another backend configuration
/// (here its reset policy) is refused with `NotSupported`, and changes nothing on either
/// side: regions, statistics, contents, write-watch marks, and what a reset's undo says.
#[test]
fn a_restore_between_configurations_is_refused_and_changes_nothing() {
    use virtmem::{Error, ResetPolicy, SimConfig};
    const PAGE: usize = 4096;
    let keep = SimSpace::simulated_with(SimConfig { reset_policy: ResetPolicy::Keep, ..SimConfig::default() });
    let discard = SimSpace::simulated_with(SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() });
    for s in [&keep, &discard] {
        let a = s.alloc(0, 4 * PAGE, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap();
        s.write(a + PAGE, if std::ptr::eq(s, &keep) { b"keep" } else { b"drop" }).unwrap();
        s.write(a, b"reset").unwrap();
        s.alloc(a, PAGE, T::RESET, P::READWRITE).unwrap();
    }
    let look = |s: &SimSpace| {
        let mut buf = [0u8; 4];
        s.read(0x10000 + PAGE, &mut buf).unwrap();
        let watch = s.get_write_watch(WriteWatchFlags::empty(), 0x10000, 4 * PAGE, 16).unwrap();
        (observe(s), buf, watch)
    };
    let (k, d) = (look(&keep), look(&discard));
    assert_eq!(keep.restore_from(&discard), Err(Error::NotSupported));
    assert_eq!(discard.restore_from(&keep), Err(Error::NotSupported));
    assert_eq!((look(&keep), look(&discard)), (k, d));
    // Each still answers a reset's undo by its own policy.
    assert_eq!(keep.alloc(0x10000, PAGE, T::RESET_UNDO, P::READWRITE), Ok(0x10000));
    assert_eq!(discard.alloc(0x10000, PAGE, T::RESET_UNDO, P::READWRITE), Err(Error::DataDiscarded));
}
