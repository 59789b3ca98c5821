//! Failure injection on real memory: for every call kind and every N, failing the N-th
//! side effect (at the backend interface with `Faulty`, and at the system-call level
//! inside the Linux backend) leaves the space, the kernel's mappings and the data
//! exactly as before the call. Where the backend has a fallback for a failed system
//! call (guard markers → `mprotect`), the call may instead succeed; then it must have
//! done its job.
#![cfg(target_os = "linux")]

mod linux_util;

use std::ops::Range;

use linux_util::*;
use virtmem::backend::faulty::Faulty;
use virtmem::backend::Backend;
use virtmem::{
    AddressSpace, AllocationType as T, FreeType, LinuxBackend, LinuxOptions, MemState, MemoryBasicInformation,
    Protection as P, WriteWatchFlags,
};

const KB: usize = 1024;
const SIZE: usize = 512 * KB;

type Space = AddressSpace<Faulty<LinuxBackend>>;

#[derive(Debug, PartialEq)]
struct Snapshot {
    walk: Vec<MemoryBasicInformation>,
    maps: Vec<(usize, usize, String)>,
    data: Vec<Option<u8>>,
    stats: (usize, usize, usize),
}

fn snapshot(s: &Space, range: Range<usize>) -> Snapshot {
    let data = range
        .clone()
        .step_by(4096)
        .map(|a| {
            let mut b = [0u8; 1];
            // Straight from the kernel, bypassing the rules (which would disarm guards).
            s.backend().inner().read(a + 123, &mut b).ok().map(|_| b[0])
        })
        .collect();
    let st = s.stats();
    let walk = walk(s, range.clone());
    // Ranges the pool keeps mapped are free to the space: compare the kernel's view
    // only where the space has reservations (and everywhere without a pool).
    let pooled = s.backend().inner().options().pool_bytes > 0;
    let maps = effective_mappings(range)
        .into_iter()
        .filter(|m| {
            !pooled
                || walk
                    .iter()
                    .any(|w| w.state != MemState::Free && w.base_address < m.1 && m.0 < w.base_address + w.region_size)
        })
        .collect();
    Snapshot { walk, maps, data, stats: (st.reserved, st.committed, st.reservations) }
}

/// A reservation with every kind of page: RW data, RO data, guard, no-access,
/// reserved, locked, and a decommitted hole.
fn setup(s: &Space, watch: bool) -> usize {
    let ty = if watch { T::RESERVE | T::WRITE_WATCH } else { T::RESERVE };
    let base = s.alloc(0, SIZE, ty, P::READWRITE).unwrap();
    s.alloc(base, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    s.alloc(base + 64 * KB, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    s.alloc(base + 320 * KB, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    for a in (base..base + 128 * KB).step_by(4096) {
        s.write(a + 123, &[(a >> 12) as u8 | 1]).unwrap();
    }
    s.free(base + 320 * KB, 32 * KB, FreeType::DECOMMIT).unwrap();
    s.protect(base + 64 * KB, 64 * KB, P::READONLY).unwrap();
    s.alloc(base + 128 * KB, 64 * KB, T::COMMIT, P::READWRITE | P::GUARD).unwrap();
    s.alloc(base + 192 * KB, 64 * KB, T::COMMIT, P::NOACCESS).unwrap();
    s.lock(base, 16 * KB).unwrap();
    base
}

#[derive(Clone, Copy)]
enum Layer {
    Interface,
    Syscall,
}

fn arm(s: &Space, layer: Layer, n: usize) {
    s.backend().arm(0);
    s.backend().inner().inject_failure(0);
    match layer {
        Layer::Interface => s.backend().arm(n),
        Layer::Syscall => s.backend().inner().inject_failure(n as u64),
    }
}

fn fired(s: &Space, layer: Layer) -> bool {
    match layer {
        Layer::Interface => s.backend().fired(),
        Layer::Syscall => !s.backend().inner().failure_pending(),
    }
}

/// For N = 1, 2, ...: `setup` a state, call `op` with the N-th side effect failing,
/// check, `cleanup`; until a call meets no injected failure. Returns how many failures
/// were injected.
fn every_failure(
    s: &Space,
    layer: Layer,
    setup: &dyn Fn(&Space) -> usize,
    op: &dyn Fn(&Space, usize) -> Option<usize>,
    cleanup: &dyn Fn(&Space, usize, Option<usize>),
) -> usize {
    for n in 1..200 {
        let base = setup(s);
        let range = base..base + SIZE;
        let before = snapshot(s, range.clone());
        arm(s, layer, n);
        let out = op(s, base);
        let hit = fired(s, layer);
        arm(s, layer, 0);
        if !hit {
            assert!(out.is_some(), "the call failed with nothing injected");
            cleanup(s, base, out);
            return n - 1;
        }
        if out.is_none() {
            let after = snapshot(s, range);
            assert_eq!(after.walk, before.walk, "failure #{n} changed the regions");
            assert_eq!(after.maps, before.maps, "failure #{n} changed the kernel mappings");
            assert_eq!(after.data, before.data, "failure #{n} changed the data");
            assert_eq!(after.stats, before.stats, "failure #{n} changed the totals");
        }
        cleanup(s, base, out);
    }
    panic!("never succeeded");
}

fn release(s: &Space, b: usize) {
    s.free(b, 0, FreeType::RELEASE).unwrap();
}

fn kinds(layer: Layer, options: LinuxOptions) {
    let s: Space = AddressSpace::with_backend(Faulty::new(LinuxBackend::with_options(options).unwrap()));
    type Op = fn(&Space, usize) -> bool;
    let ops: &[(&str, bool, Op)] = &[
        ("commit mixed", false, |s, b| s.alloc(b, SIZE, T::COMMIT, P::EXECUTE_READ).is_ok()),
        ("commit rw", false, |s, b| s.alloc(b, SIZE, T::COMMIT, P::READWRITE).is_ok()),
        ("protect", false, |s, b| s.protect(b, 256 * KB, P::READWRITE).is_ok()),
        // The engine's path for a range in one run, and the backend's for one entry of
        // its record: a whole run (whose new protection its left neighbour has), part of
        // a run, and a whole run beside a decommitted hole (guard-marked, with the
        // default options: the `mprotect` covers it too).
        ("protect one run", false, |s, b| s.protect(b + 64 * KB, 64 * KB, P::READWRITE).is_ok()),
        ("protect in a run", false, |s, b| s.protect(b + 32 * KB, 8 * KB, P::READONLY).is_ok()),
        ("protect beside a hole", false, |s, b| s.protect(b + 352 * KB, 32 * KB, P::READONLY).is_ok()),
        ("decommit mixed", false, |s, b| s.free(b, SIZE, FreeType::DECOMMIT).is_ok()),
        ("decommit rw", false, |s, b| s.free(b + 16 * KB, 48 * KB, FreeType::DECOMMIT).is_ok()),
        ("lock", false, |s, b| s.lock(b, 64 * KB).is_ok()),
        ("unlock", false, |s, b| s.unlock(b, 16 * KB).is_ok()),
        ("write", false, |s, b| s.write(b + 100, &[9; 10]).is_ok()),
        ("watch reset", true, |s, b| s.get_write_watch(WriteWatchFlags::RESET, b, SIZE, 100).is_ok()),
        ("watch clear", true, |s, b| s.reset_write_watch(b, SIZE).is_ok()),
        ("decommit watched", true, |s, b| s.free(b, SIZE, FreeType::DECOMMIT).is_ok()),
        ("release", false, |s, b| s.free(b, 0, FreeType::RELEASE).is_ok()),
        ("release watched", true, |s, b| s.free(b, 0, FreeType::RELEASE).is_ok()),
    ];
    for &(name, watch, op) in ops {
        let injected = every_failure(&s, layer, &|s| setup(s, watch), &|s, b| op(s, b).then_some(b), &|s, b, _| {
            let _ = s.free(b, 0, FreeType::RELEASE);
        });
        assert!(injected > 0, "{name}: nothing to inject?");
    }
    // MEM_RESET and MEM_RESET_UNDO are one backend call each, whose system calls
    // (`madvise(MADV_FREE)`, the stores that take pages back) cannot fail: only the
    // interface can fail them, and then nothing changes. Undo is tried on pages a reset
    // offered (their witnesses noted), reset on written, read-only, guard and reserved
    // pages alike.
    let reset = |s: &Space, b: usize| s.alloc(b, SIZE, T::RESET, P::READWRITE).is_ok();
    let undo = |s: &Space, b: usize| s.alloc(b, SIZE, T::RESET_UNDO, P::READWRITE).is_ok();
    for watch in [false, true] {
        let offered = |s: &Space| {
            let b = setup(s, watch);
            s.alloc(b, SIZE, T::RESET, P::READWRITE).unwrap();
            b
        };
        type Prepare<'a> = &'a dyn Fn(&Space) -> usize;
        let calls: [(&str, Prepare, Op); 2] = [("reset", &|s| setup(s, watch), reset), ("undo", &offered, undo)];
        for (name, prepare, op) in calls {
            let injected = every_failure(&s, layer, prepare, &|s, b| op(s, b).then_some(b), &|s, b, out| {
                if out.is_some() && name == "undo" {
                    // A successful undo says the data survived: the offered pages
                    // read what was written.
                    let mut byte = [0u8];
                    s.read(b + 123, &mut byte).unwrap();
                    assert_eq!(byte, [(b >> 12) as u8 | 1], "undo: data lost");
                }
                release(s, b);
            });
            match layer {
                Layer::Interface => assert_eq!(injected, 1, "{name} (watched {watch}): one backend call"),
                Layer::Syscall => assert_eq!(injected, 0, "{name} (watched {watch}): a system call that can fail?"),
            }
        }
    }
    // The usual release (one accessible run, nothing else holding data) has a path of
    // its own in the backend: a failure anywhere in it changes nothing, or the call
    // still succeeds and leaves the range free.
    let one_run = |s: &Space| {
        let b = s.alloc(0, SIZE, T::RESERVE, P::READWRITE).unwrap();
        s.alloc(b, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
        s.write(b + 5, &[7]).unwrap();
        b
    };
    let injected = every_failure(
        &s,
        layer,
        &one_run,
        &|s, b| s.free(b, 0, FreeType::RELEASE).is_ok().then_some(b),
        &|s, b, out| {
            if out.is_some() {
                // Free, and its data really gone: reused in place, it reads zero.
                assert_eq!(s.query(b).unwrap().state, MemState::Free);
                assert_eq!(s.alloc(b, SIZE, T::RESERVE | T::COMMIT, P::READWRITE), Ok(b));
                let mut byte = [1u8];
                s.read(b + 5, &mut byte).unwrap();
                assert_eq!(byte, [0]);
            }
            release(s, b);
        },
    );
    assert!(injected > 0, "one-run release: nothing to inject?");
    // A protect whose range is one entry of the backend's record with two entries on
    // each side in the same chunk of it (pages of alternating protections): the backend
    // reads and changes them by slot. Its right neighbour touches it but keeps its
    // protection (the `mprotect` must not take it along, nor the undo give it the
    // range's old one); then the same with a decommitted page on the right, which
    // with the default options is guard-marked under the range's protection and taken
    // along.
    for hole in [false, true] {
        let alternating = move |s: &Space| {
            let b = s.alloc(0, SIZE, T::RESERVE, P::READWRITE).unwrap();
            let prots = [P::READWRITE, P::EXECUTE_READ, P::READWRITE, P::EXECUTE_READ, P::READWRITE, P::EXECUTE_READ];
            for (i, p) in prots.into_iter().enumerate() {
                let a = b + i * 4 * KB;
                s.alloc(a, 4 * KB, T::COMMIT, P::READWRITE).unwrap();
                s.write(a + 123, &[(a >> 12) as u8 | 1]).unwrap();
                s.protect(a, 4 * KB, p).unwrap();
            }
            if hole {
                s.protect(b + 12 * KB, 4 * KB, P::READWRITE).unwrap();
                s.free(b + 12 * KB, 4 * KB, FreeType::DECOMMIT).unwrap();
            }
            b
        };
        let injected = every_failure(
            &s,
            layer,
            &alternating,
            &|s, b| s.protect(b + 8 * KB, 4 * KB, P::READONLY).is_ok().then_some(b),
            &|s, b, out| {
                if out.is_some() {
                    let q = |a: usize| s.query(a).unwrap();
                    assert_eq!((q(b + 8 * KB).protect, q(b + 8 * KB).region_size), (P::READONLY, 4 * KB));
                    if hole {
                        assert_eq!(q(b + 12 * KB).state, MemState::Reserve);
                    } else {
                        assert_eq!(q(b + 12 * KB).protect, P::EXECUTE_READ);
                    }
                    let mut byte = [0u8];
                    s.read(b + 8 * KB + 123, &mut byte).unwrap();
                    assert_eq!(byte, [((b + 8 * KB) >> 12) as u8 | 1]);
                    assert_eq!(s.write(b + 8 * KB, &[1]).unwrap_err().exception_code(), Some(0xC000_0005));
                }
                release(s, b);
            },
        );
        assert!(injected > 0, "protect inside a chunk (hole {hole}): nothing to inject?");
    }
    // New reservations, at a chosen address (free, or pooled) and anywhere.
    for ty in [T::RESERVE, T::RESERVE | T::COMMIT, T::RESERVE | T::COMMIT | T::WRITE_WATCH] {
        let spot = |s: &Space| {
            let at = setup(s, false);
            release(s, at);
            at
        };
        every_failure(&s, layer, &spot, &|s, at| s.alloc(at, SIZE, ty, P::READWRITE).ok(), &|s, at, out| {
            if let Some(b) = out {
                assert_eq!(b, at);
                assert_eq!(
                    s.query(at + SIZE - 1).unwrap().state,
                    if ty == T::RESERVE { MemState::Reserve } else { MemState::Commit }
                );
                release(s, b);
            }
        });
        every_failure(&s, layer, &spot, &|s, _| s.alloc(0, SIZE, ty, P::READWRITE).ok(), &|s, _, out| {
            if let Some(b) = out {
                release(s, b);
            }
        });
    }
}

/// A decommit of a run that is a whole kernel mapping between inaccessible ones, which
/// the backend drops first (`MADV_DONTNEED`, which cannot fail) and then makes
/// `PROT_NONE`, where guard markers exist: for guard regions off, a 64 KiB run; for
/// the default options, a run too long for markers (16 MiB is the most they take). A
/// failure at each system call: the `mprotect` failing ends in guard markers on the
/// emptied run (the decommit done: the pages fault, and read zero once recommitted);
/// the `mprotect` and then the markers failing fails the call with nothing changed
/// but the run's data, which is gone (the one data loss the backend allows, see
/// `LinuxBackend::decommit`). Without guard markers, the run takes the revoking order,
/// and a failure changes nothing.
fn drop_first(options: LinuxOptions, run: usize) {
    let s: Space = AddressSpace::with_backend(Faulty::new(LinuxBackend::with_options(options).unwrap()));
    let inner = || s.backend().inner();
    let marks = !inner().missing_features().contains(&"guard");
    let size = 3 * run;
    let setup = || {
        let b = s.alloc(0, size, T::RESERVE, P::READWRITE).unwrap();
        s.alloc(b + run, run, T::COMMIT, P::READWRITE).unwrap();
        for a in (b + run..b + 2 * run).step_by(4096) {
            s.write(a + 123, &[(a >> 12) as u8 | 1]).unwrap();
        }
        b
    };
    let piece = |b: usize| b + run..b + 2 * run;
    let decommit = |b: usize| s.free(b + run, run, FreeType::DECOMMIT);
    // Undisturbed: one drop, one mprotect, in that order where markers exist.
    let b = setup();
    let before = inner().syscall_count();
    decommit(b).unwrap();
    assert_eq!(inner().syscall_count() - before, 2, "a drop and an mprotect");
    assert_eq!(mappings(piece(b)), vec![(b + run, b + 2 * run, "---p".to_string())]);
    assert!(guarded(piece(b)).iter().all(|g| !g));
    release(&s, b);
    for n in 1..=6u64 {
        let b = setup();
        let before = snapshot(&s, b..b + size);
        inner().inject_failure(n);
        let out = decommit(b);
        let fired = !inner().failure_pending();
        inner().inject_failure(0);
        match (marks, n) {
            // The first call, the drop, cannot fail: nothing is injected into it.
            (true, 1) => {
                assert!(!fired && out.is_ok(), "the drop failed? {out:?}");
                assert_eq!(mappings(piece(b)), vec![(b + run, b + 2 * run, "---p".to_string())]);
            }
            // The mprotect after it fails: guard markers on the (empty) run instead.
            (true, 2) => {
                assert!(fired, "the second call is the mprotect");
                assert_eq!(out, Ok(()), "the markers did the decommit");
                assert_eq!(s.query(b + run).unwrap().state, MemState::Reserve);
                assert_eq!(mappings(piece(b)), vec![(b + run, b + 2 * run, "rw-p".to_string())]);
                assert!(guarded(piece(b)).iter().all(|&g| g), "the run is guard-marked");
                let mut byte = [0u8];
                assert!(inner().read(b + run + 123, &mut byte).is_err(), "a marked page faults");
                assert_eq!(s.stats().committed, before.stats.1 - run);
                s.alloc(b + run, run, T::COMMIT, P::READWRITE).unwrap();
                for a in piece(b).step_by(4096) {
                    s.read(a + 123, &mut byte).unwrap();
                    assert_eq!(byte, [0], "a recommitted page reads zero");
                }
                s.write(b + run + 7, &[5]).unwrap();
                assert!(guarded(piece(b)).iter().all(|g| !g));
            }
            // Without markers, the first call is the mprotect, and its failure changes
            // nothing.
            (false, 1) => {
                assert!(fired && out.is_err());
                assert_eq!(snapshot(&s, b..b + size), before, "failure #1 changed something");
            }
            _ => assert!(!fired && out.is_ok(), "call #{n}: {out:?}"),
        }
        release(&s, b);
    }
    if marks {
        // The mprotect fails, then the markers (the 4th call: the 3rd puts the
        // protection back): the call fails; all is as before but the run's data.
        let b = setup();
        let before = snapshot(&s, b..b + size);
        inner().inject_failures(2, 4);
        let out = decommit(b);
        assert!(!inner().failure_pending(), "both failures fired");
        assert!(out.is_err(), "two failures in a row fail the call");
        let after = snapshot(&s, b..b + size);
        assert_eq!((&after.walk, &after.maps, after.stats), (&before.walk, &before.maps, before.stats));
        assert!(guarded(piece(b)).iter().all(|g| !g), "the markers are removed");
        for (i, (a, d)) in (b..b + size).step_by(4096).zip(&after.data).enumerate() {
            let want = if piece(b).contains(&a) { Some(0) } else { before.data[i] };
            assert_eq!(*d, want, "page at {a:#x}");
        }
        // Still committed read-write: written and read back; then it decommits.
        s.write(b + run + 9, &[3]).unwrap();
        let mut byte = [0u8];
        s.read(b + run + 9, &mut byte).unwrap();
        assert_eq!(byte, [3]);
        decommit(b).unwrap();
        assert_eq!(mappings(piece(b)), vec![(b + run, b + 2 * run, "---p".to_string())]);
        release(&s, b);
    }
}

/// A decommit of one small read-write run with the default options: guard markers, in
/// one system call. Their failure: markers off again, `mprotect(PROT_NONE)`, the drop
/// (the call done); the markers and then that `mprotect` failing: nothing changed. After
/// each, the backend's record agrees with the kernel: the run decommits, recommits
/// (reading zero) and takes writes as it should.
fn guard_one() {
    let s: Space =
        AddressSpace::with_backend(Faulty::new(LinuxBackend::with_options(LinuxOptions::default()).unwrap()));
    let inner = || s.backend().inner();
    if !inner().uses_guard_regions() {
        return;
    }
    let run = 64 * KB;
    let size = 3 * run;
    let setup = || {
        let b = s.alloc(0, size, T::RESERVE, P::READWRITE).unwrap();
        s.alloc(b + run, run, T::COMMIT, P::READWRITE).unwrap();
        for a in (b + run..b + 2 * run).step_by(4096) {
            s.write(a + 123, &[(a >> 12) as u8 | 1]).unwrap();
        }
        b
    };
    let piece = |b: usize| b + run..b + 2 * run;
    let decommit = |b: usize| s.free(b + run, run, FreeType::DECOMMIT);
    // Decommitted again if need be, then recommitted: reads zero, takes a write.
    let recommit = |b: usize| {
        s.alloc(b + run, run, T::COMMIT, P::READWRITE).unwrap();
        let mut byte = [1u8];
        for a in piece(b).step_by(4096) {
            s.read(a + 123, &mut byte).unwrap();
            assert_eq!(byte, [0], "a recommitted page reads zero");
        }
        s.write(b + run + 7, &[5]).unwrap();
        assert!(guarded(piece(b)).iter().all(|g| !g));
        assert_eq!(mappings(piece(b)), vec![(b + run, b + 2 * run, "rw-p".to_string())]);
    };
    let b = setup();
    let before = inner().syscall_count();
    decommit(b).unwrap();
    assert_eq!(inner().syscall_count() - before, 1, "one call: the markers");
    assert!(guarded(piece(b)).iter().all(|&g| g));
    recommit(b);
    release(&s, b);
    for n in 1..=5u64 {
        let b = setup();
        inner().inject_failure(n);
        let out = decommit(b);
        let fired = !inner().failure_pending();
        inner().inject_failure(0);
        if n == 1 {
            // The markers failed: PROT_NONE and the drop instead.
            assert!(fired);
            assert_eq!(out, Ok(()));
            assert_eq!(s.query(b + run).unwrap().state, MemState::Reserve);
            assert_eq!(mappings(piece(b)), vec![(b + run, b + 2 * run, "---p".to_string())]);
            assert!(guarded(piece(b)).iter().all(|g| !g));
        } else {
            assert!(!fired && out.is_ok(), "call #{n}: {out:?}");
        }
        recommit(b);
        release(&s, b);
    }
    // The markers fail, then the mprotect (the 3rd call: the 2nd takes the markers
    // off): nothing changed, and the run decommits afterwards.
    let b = setup();
    let before = snapshot(&s, b..b + size);
    inner().inject_failures(1, 3);
    let out = decommit(b);
    assert!(!inner().failure_pending(), "both failures fired");
    assert!(out.is_err());
    assert_eq!(snapshot(&s, b..b + size), before, "a failed decommit changed something");
    decommit(b).unwrap();
    assert!(guarded(piece(b)).iter().all(|&g| g));
    recommit(b);
    release(&s, b);
    // A recommit of part of the marked pieces side by side (one entry of the record):
    // its one call (the markers off) failing changes nothing; then it works, and only
    // that part reads and writes.
    let b = setup();
    s.alloc(b + 2 * run, run, T::COMMIT, P::READWRITE).unwrap();
    s.free(b + run, 2 * run, FreeType::DECOMMIT).unwrap();
    let part = b + run + 16 * KB..b + run + 32 * KB;
    let before = snapshot(&s, b..b + size);
    inner().inject_failure(1);
    assert!(s.alloc(part.start, part.len(), T::COMMIT, P::READWRITE).is_err());
    assert!(!inner().failure_pending());
    assert_eq!(snapshot(&s, b..b + size), before, "a failed recommit changed something");
    s.alloc(part.start, part.len(), T::COMMIT, P::READWRITE).unwrap();
    s.write(part.start + 5, &[9]).unwrap();
    let marks = guarded(b + run..b + 3 * run);
    for (i, g) in marks.into_iter().enumerate() {
        let a = b + run + i * 4096;
        assert_eq!(g, !part.contains(&a), "page at {a:#x}");
    }
    assert!(inner().read(part.start - 4096, &mut [0u8]).is_err());
    assert!(inner().read(part.end, &mut [0u8]).is_err());
    release(&s, b);
}

const PLAIN: LinuxOptions = LinuxOptions { pool_bytes: 0, guard_regions: false };

/// One test, so that no other test's space maps memory into the ranges this one
/// watches (every space places its reservations bottom-up from the same address).
#[test]
fn every_failure_changes_nothing() {
    for layer in [Layer::Interface, Layer::Syscall] {
        kinds(layer, LinuxOptions::default());
        kinds(layer, PLAIN);
    }
    drop_first(PLAIN, 64 * KB);
    drop_first(LinuxOptions::default(), 17 << 20);
    guard_one();
}
