//! Copy-on-write snapshots of a simulated space: a snapshot shares the pages it holds with
//! its original instead of copying them, and the first write to a shared page by either
//! side copies that page alone; and `AddressSpace::restore_from`, which puts a snapshot's
//! state back into a space in place (the fuzzer's loop: one snapshot, one restore per
//! input).

mod snapkit;

use std::sync::Arc;

use virtmem::{
    AllocationType as T, Error, FreeType, Protection as P, ResetPolicy, SimConfig, SimSpace, WriteWatchFlags,
};

use snapkit::{commit, read, GRANULE, PAGE};

/// A snapshot of a space with many written pages stores each of them once for both: the
/// two hold the same pages, every one of them shared, and no new page was stored.
#[test]
fn a_snapshot_shares_the_written_pages_instead_of_copying_them() {
    const PAGES: usize = 1000;
    let s = SimSpace::simulated();
    let a = commit(&s, PAGES * PAGE);
    for p in 0..PAGES {
        s.write(a + p * PAGE + 5, &(p as u32).to_le_bytes()).unwrap();
    }
    assert_eq!((s.backend().stored_pages(), s.backend().shared_pages()), (PAGES, 0));
    let copy = s.snapshot();
    for space in [&s, &copy] {
        assert_eq!(space.backend().stored_pages(), PAGES);
        assert_eq!(space.backend().shared_pages(), PAGES, "every page shared, none copied");
    }
    // A write to one page makes that page alone the writer's own.
    s.write(a + 7 * PAGE, b"mine").unwrap();
    assert_eq!(s.backend().shared_pages(), PAGES - 1);
    assert_eq!(copy.backend().shared_pages(), PAGES - 1);
    // A second write to it copies nothing more.
    s.write(a + 7 * PAGE + 100, b"again").unwrap();
    assert_eq!(s.backend().shared_pages(), PAGES - 1);
    // A snapshot of the snapshot shares the pages three ways; dropping it unshares them.
    let second = copy.snapshot();
    assert_eq!(copy.backend().shared_pages(), PAGES);
    drop(second);
    assert_eq!(copy.backend().shared_pages(), PAGES - 1);
    // Dropping the original leaves the copy's pages its own.
    drop(s);
    assert_eq!(copy.backend().shared_pages(), 0);
    assert_eq!(read(&copy, a + 7 * PAGE, 9), [0, 0, 0, 0, 0, 7, 0, 0, 0]);
}

/// After a snapshot, a write through the engine (the first write to a block, whose grant
/// the snapshot forgot) and a write under a grant (a later write to the same block) by
/// the original are not seen by the snapshot, and the snapshot's own writes by either
/// path are not seen by the original.
#[test]
fn writes_after_a_snapshot_by_either_side_and_either_path_stay_apart() {
    let s = SimSpace::simulated();
    let a = commit(&s, 4 * PAGE);
    for p in 0..4 {
        s.write(a + p * PAGE, &[p as u8 + 1; 16]).unwrap();
    }
    let copy = s.snapshot();
    // The original: page 0 through the engine (its block's grant is gone), page 1 under
    // the grant that write handed out.
    s.write(a, b"orig-engine").unwrap();
    s.write(a + PAGE, b"orig-grant").unwrap();
    // The snapshot: page 2 through its engine, page 3 under its grant.
    copy.write(a + 2 * PAGE, b"copy-engine").unwrap();
    copy.write(a + 3 * PAGE, b"copy-grant").unwrap();

    assert_eq!(read(&s, a, 11), b"orig-engine");
    assert_eq!(read(&s, a + PAGE, 10), b"orig-grant");
    assert_eq!(read(&s, a + 2 * PAGE, 16), [3; 16]);
    assert_eq!(read(&s, a + 3 * PAGE, 16), [4; 16]);
    assert_eq!(read(&copy, a, 16), [1; 16]);
    assert_eq!(read(&copy, a + PAGE, 16), [2; 16]);
    assert_eq!(read(&copy, a + 2 * PAGE, 11), b"copy-engine");
    assert_eq!(read(&copy, a + 3 * PAGE, 10), b"copy-grant");
    // The rest of each page written after the snapshot is as it was before.
    for space in [&s, &copy] {
        for p in 0..4 {
            assert_eq!(read(space, a + p * PAGE + 16, PAGE - 16), vec![0; PAGE - 16]);
        }
    }
    assert_eq!(read(&s, a + 11, 5), [1; 5]);
    assert_eq!(read(&copy, a + 2 * PAGE + 11, 5), [3; 5]);
}

/// A decommit, a release or a discarding `MEM_RESET` by one side drops its pages only:
/// the other still reads them, and the pages the first side commits (or reserves) again
/// read as zeros, however the thread's spare pages were filled by the discard.
#[test]
fn discards_after_a_snapshot_leave_the_other_side_its_pages() {
    for side in ["original", "copy"] {
        let s = SimSpace::simulated_with(SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() });
        let a = commit(&s, 3 * PAGE);
        let b = commit(&s, 2 * PAGE);
        s.write(a, &[0xA1; 3 * PAGE]).unwrap();
        s.write(b, &[0xB2; 2 * PAGE]).unwrap();
        let copy = s.snapshot();
        let (changer, keeper) = if side == "original" { (&s, &copy) } else { (&copy, &s) };
        changer.free(a, PAGE, FreeType::DECOMMIT).unwrap();
        changer.alloc(a + PAGE, PAGE, T::RESET, P::READWRITE).unwrap();
        changer.free(b, 0, FreeType::RELEASE).unwrap();
        // Pages stored by the changer afterwards (from its thread's spares) start as zeros.
        changer.alloc(a, PAGE, T::COMMIT, P::READWRITE).unwrap();
        changer.write(a + 1, &[9]).unwrap();
        let b2 = changer.alloc(b, 2 * PAGE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
        assert_eq!(b2, b);
        changer.write(b + PAGE + 1, &[9]).unwrap();
        let mut want = vec![0; PAGE];
        want[1] = 9;
        assert_eq!(read(changer, a, PAGE), want, "{side}");
        assert_eq!(read(changer, a + PAGE, PAGE), vec![0; PAGE], "{side}: reset dropped it");
        assert_eq!(changer.alloc(a + PAGE, PAGE, T::RESET_UNDO, P::READWRITE), Err(Error::DataDiscarded));
        assert_eq!(read(changer, b, 2 * PAGE)[PAGE..], want[..], "{side}");
        assert_eq!(read(changer, b, PAGE), vec![0; PAGE], "{side}");
        // The other side kept every page, and has lost nothing.
        assert_eq!(read(keeper, a, 3 * PAGE), vec![0xA1; 3 * PAGE], "{side}");
        assert_eq!(read(keeper, b, 2 * PAGE), vec![0xB2; 2 * PAGE], "{side}");
        assert_eq!(keeper.alloc(a + PAGE, PAGE, T::RESET_UNDO, P::READWRITE), Ok(a + PAGE));
        assert_eq!(keeper.backend().shared_pages(), 1, "{side}: only the third page of a is still shared");
    }
}

/// Write-watch marks made after a snapshot are the writer's own.
#[test]
fn dirty_marks_after_a_snapshot_stay_apart() {
    let s = SimSpace::simulated();
    let a = s.alloc(0, 4 * PAGE, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap();
    s.write(a, &[1; 2 * PAGE]).unwrap();
    s.reset_write_watch(a, 4 * PAGE).unwrap();
    let copy = s.snapshot();
    s.write(a + PAGE, &[2]).unwrap();
    copy.write(a + 3 * PAGE, &[3]).unwrap();
    assert_eq!(s.get_write_watch(WriteWatchFlags::empty(), a, 4 * PAGE, 16).unwrap(), vec![a + PAGE]);
    assert_eq!(copy.get_write_watch(WriteWatchFlags::empty(), a, 4 * PAGE, 16).unwrap(), vec![a + 3 * PAGE]);
}

/// Many snapshots taken while another thread writes through its granted blocks, each
/// read after the writer has gone on: each holds one moment's data and keeps it, though
/// the writer's later stores copy the pages it shares. (The writer stores round `i` into
/// 24 blocks in turn, so a moment's blocks hold `i` up to some block and `i - 1` after it.)
#[test]
fn snapshots_taken_during_writes_keep_their_moment() {
    const BLOCKS: usize = 24;
    let s = Arc::new(SimSpace::simulated());
    let a = snapkit::round_blocks(&s, BLOCKS);
    let writer = snapkit::Writer::start(&s, a, BLOCKS);
    let started = writer.done();
    let mut kept: Vec<(SimSpace, Vec<u64>)> = Vec::new();
    let mut taken = 0;
    while taken < 500 || writer.done() < started + 1000 {
        assert!(taken < 1_000_000, "the writer stopped making progress");
        let copy = s.snapshot();
        let rounds = snapkit::rounds(&copy, a, BLOCKS);
        assert!(snapkit::one_moment(&rounds), "blocks from different moments: {rounds:?}");
        if taken % 50 == 0 {
            kept.push((copy, rounds));
        }
        taken += 1;
    }
    writer.stop();
    for (copy, rounds) in &kept {
        assert_eq!(&snapkit::rounds(copy, a, BLOCKS), rounds, "a snapshot changed after it was taken");
    }
}

// ----- restore_from ----------------------------------------------------------------------

/// Everything `VirtualQuery` tells of a space, and its totals.
fn state(s: &SimSpace) -> (Vec<virtmem::MemoryBasicInformation>, usize, usize, Option<usize>) {
    (s.regions(), s.committed_bytes(), s.reserved_bytes(), s.commit_limit())
}

/// A restore puts back the snapshot's reservations, page states and protections, armed
/// guard pages, contents, write-watch marks, reset losses, totals and commit limit, and
/// the space goes on deterministically: the same calls on it and on the snapshot give the
/// same answers and addresses.
#[test]
fn a_restore_puts_every_piece_of_state_back() {
    let s = SimSpace::simulated_with(SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() });
    let w = s.alloc(0, 4 * PAGE, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap();
    s.write(w + PAGE, b"watched").unwrap();
    let g = commit(&s, 2 * PAGE);
    s.protect(g + PAGE, PAGE, P::READWRITE | P::GUARD).unwrap();
    let r = commit(&s, 2 * PAGE);
    s.write(r, &[7; PAGE]).unwrap();
    s.alloc(r, PAGE, T::RESET, P::READWRITE).unwrap();
    s.write(r + PAGE, b"kept").unwrap();
    s.set_commit_limit(Some(s.committed_bytes() + 8 * PAGE));
    let snap = s.snapshot();
    let before = state(&snap);

    // The space goes on: everything changes.
    s.write(w, b"later").unwrap();
    s.reset_write_watch(w, 4 * PAGE).unwrap();
    s.write(w + 2 * PAGE, b"later").unwrap();
    assert!(matches!(s.read(g + PAGE, &mut [0; 1]), Err(Error::GuardPage { .. })));
    s.alloc(r, PAGE, T::RESET_UNDO, P::READWRITE).unwrap_err();
    s.write(r + PAGE, b"over").unwrap();
    s.free(r, 0, FreeType::RELEASE).unwrap();
    let extra = commit(&s, 8 * PAGE);
    s.set_commit_limit(None);
    assert_ne!(state(&s), before);

    s.restore_from(&snap).unwrap();
    assert_eq!(state(&s), before);
    assert_eq!(s.commit_limit(), snap.commit_limit());
    assert_eq!(s.stats(), snap.stats());
    // Write watch: the snapshot's marks, not the later ones.
    for space in [&s, &snap] {
        assert_eq!(space.get_write_watch(WriteWatchFlags::empty(), w, 4 * PAGE, 16).unwrap(), vec![w + PAGE]);
        assert_eq!(read(space, w + PAGE, 7), b"watched");
        assert_eq!(read(space, w, 5), [0; 5]);
    }
    // The guard page is armed again (on both: each disarms its own).
    for space in [&s, &snap] {
        assert!(matches!(space.read(g + PAGE, &mut [0; 1]), Err(Error::GuardPage { .. })));
        space.read(g + PAGE, &mut [0; 1]).unwrap();
    }
    // The reset's loss is remembered; the contents are back.
    assert_eq!(s.alloc(r, PAGE, T::RESET_UNDO, P::READWRITE), Err(Error::DataDiscarded));
    assert_eq!(read(&s, r + PAGE, 4), b"kept");
    // The commit limit holds again (the reservation made since is gone), and the same
    // calls give the same answers and addresses on both.
    assert_eq!(s.query(extra), snap.query(extra));
    for space in [&s, &snap] {
        assert_eq!(space.alloc(0, 9 * PAGE, T::RESERVE | T::COMMIT, P::READWRITE), Err(Error::CommitmentLimit));
    }
    let (x, y) = (commit(&s, 8 * PAGE), commit(&snap, 8 * PAGE));
    assert_eq!(x, y);
    assert_eq!(state(&s), state(&snap));
}

/// The fuzzer's loop: restore, run an input, restore again. Each restore brings the
/// snapshot's contents back, shares them rather than copying them, and leaves the
/// snapshot as it was (an input's writes never reach it).
#[test]
fn a_fuzzers_loop_restores_the_same_state_each_time() {
    const PAGES: usize = 64;
    let s = SimSpace::simulated();
    let a = commit(&s, PAGES * PAGE);
    for p in 0..PAGES {
        s.write(a + p * PAGE, &[p as u8; 8]).unwrap();
    }
    let snap = s.snapshot();
    let regions = snap.regions();
    for input in 0..20u8 {
        s.restore_from(&snap).unwrap();
        assert_eq!(s.backend().shared_pages(), PAGES, "input {input}: nothing copied by the restore");
        for p in 0..PAGES {
            assert_eq!(
                read(&s, a + p * PAGE, 9),
                [p as u8, p as u8, p as u8, p as u8, p as u8, p as u8, p as u8, p as u8, 0]
            );
        }
        // The input: writes, a decommit, a release, a new reservation.
        s.write(a + (input as usize % PAGES) * PAGE, &[0xFF; 8]).unwrap();
        s.free(a + PAGE, PAGE, FreeType::DECOMMIT).unwrap();
        commit(&s, GRANULE);
        s.free(a, 0, FreeType::RELEASE).unwrap();
    }
    assert_eq!(snap.regions(), regions);
    for p in 0..PAGES {
        assert_eq!(read(&snap, a + p * PAGE, 8), [p as u8; 8]);
    }
}

/// A restore takes back the grants the space handed out: a write that a grant allowed
/// before the restore is checked against the restored state (here a page the snapshot
/// holds read-only, or not committed at all) and fails.
#[test]
fn a_restore_takes_back_the_grants() {
    let s = SimSpace::simulated();
    let a = s.alloc(0, 2 * PAGE, T::RESERVE, P::READWRITE).unwrap();
    s.alloc(a, PAGE, T::COMMIT, P::READONLY).unwrap();
    let snap = s.snapshot();
    s.protect(a, PAGE, P::READWRITE).unwrap();
    s.alloc(a + PAGE, PAGE, T::COMMIT, P::READWRITE).unwrap();
    // Twice each: the second write goes under the grant the first one's check handed out.
    for _ in 0..2 {
        s.write(a, b"x").unwrap();
        s.write(a + PAGE, b"y").unwrap();
    }
    s.restore_from(&snap).unwrap();
    assert!(matches!(s.write(a, b"x"), Err(Error::AccessViolation { .. })));
    assert!(matches!(s.write(a + PAGE, b"y"), Err(Error::AccessViolation { .. })));
    assert_eq!(read(&s, a, 1), [0]);
}

/// A space can be restored from a snapshot of a different configuration only if their
/// address ranges and large-page sizes agree; otherwise the restore fails and changes
/// nothing. Restoring a space from itself changes nothing either.
#[test]
fn a_restore_from_a_different_kind_of_space_fails() {
    let s = SimSpace::simulated();
    let a = commit(&s, PAGE);
    s.write(a, b"keep").unwrap();
    let other = SimSpace::simulated_with(SimConfig { end_address: 1 << 40, ..SimConfig::default() });
    let regions = s.regions();
    assert_eq!(s.restore_from(&other), Err(Error::InvalidParameter));
    assert_eq!(s.regions(), regions);
    assert_eq!(read(&s, a, 4), b"keep");
    s.restore_from(&s).unwrap();
    assert_eq!(s.regions(), regions);
    assert_eq!(read(&s, a, 4), b"keep");
}

/// Whether blocks a writer fills in turn with its round number (from zeros restored at
/// one moment, its round `m` at block `j0`) can hold `rounds` at a later moment (its round
/// `r` at block `j`): `0… r… 0…` if `r == m` (the blocks from `j0` to `j` rewritten), else
/// `r… 0… (r-1)…` (the blocks before `j` rewritten in round `r`, those from `j0` on in
/// round `r - 1`), the zeros possibly none.
fn after_a_restore(rounds: &[u64]) -> bool {
    let runs: Vec<u64> = rounds.iter().fold(Vec::new(), |mut runs, &x| {
        if runs.last() != Some(&x) {
            runs.push(x);
        }
        runs
    });
    match runs[..] {
        [_] => true,
        [x, y] => x == 0 || y == 0 || y + 1 == x,
        [x, 0, z] => x != 0 && z + 1 == x,
        [0, y, 0] => y != 0,
        _ => false,
    }
}

/// A restore while another thread writes through its grants is a moment for it: each
/// write lands wholly before the restore (and is undone by it) or after it (and stays).
/// A restore made of the parts one after another, with the writer running on, would
/// leave blocks that do not fit the writer's order (see `after_a_restore`).
#[test]
fn a_restore_during_writes_is_one_moment() {
    const BLOCKS: usize = 24;
    let s = Arc::new(SimSpace::simulated());
    let a = snapkit::round_blocks(&s, BLOCKS);
    let snap = s.snapshot();
    let writer = snapkit::Writer::start(&s, a, BLOCKS);
    let started = writer.done();
    let mut restores = 0;
    while restores < 300 || writer.done() < started + 1000 {
        assert!(restores < 1_000_000, "the writer stopped making progress");
        s.restore_from(&snap).unwrap();
        // The moment after the restore, read as a snapshot: the writer's stores since
        // the restore are on top of zeros (see `after_a_restore`).
        let rounds = snapkit::rounds(&s.snapshot(), a, BLOCKS);
        assert!(after_a_restore(&rounds), "blocks from different moments: {rounds:?}");
        restores += 1;
    }
    writer.stop();
    for k in 0..BLOCKS {
        assert_eq!(read(&snap, a + k * GRANULE, 8), [0; 8]);
    }
}
