//! Adversarial review of `AddressSpace::restore_from` under concurrency: a restore is one
//! moment for every call and access, on the space restored and on the space it copies,
//! and a space restored from itself changes nothing, whatever other threads do meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use virtmem::{AllocationType as T, FreeType, MemState, Protection as P, SimSpace};

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
