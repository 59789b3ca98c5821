//! `SimSpace::snapshot`: an independent copy of a simulated space, as an emulator or a
//! fuzzer restores between runs. (The differential test also runs every generated
//! sequence on a space replaced by its snapshot before each call, which checks that a
//! copy holds all the state the calls before it left.)

#[path = "rng/mod.rs"]
mod rng;
mod snapkit;

use std::sync::Arc;

use virtmem::{
    AllocationType as T, Error, FreeType, MemState, Protection as P, ResetPolicy, SimConfig, SimSpace, WriteWatchFlags,
};

use snapkit::{commit, read, GRANULE, PAGE};

/// A change to either space after the snapshot leaves the other as it was, and the copy
/// outlives its original.
#[test]
fn the_copy_and_the_original_change_apart() {
    let s = SimSpace::simulated();
    let a = commit(&s, 4 * PAGE);
    s.write(a, b"one").unwrap();
    let b = s.alloc(0, GRANULE, T::RESERVE, P::READWRITE).unwrap();
    let copy = s.snapshot();
    assert_eq!(copy.regions(), s.regions());
    assert_eq!((copy.committed_bytes(), copy.reserved_bytes()), (s.committed_bytes(), s.reserved_bytes()));

    // The original changes: contents, state, protection, a release.
    s.write(a, b"two").unwrap();
    s.free(a + PAGE, PAGE, FreeType::DECOMMIT).unwrap();
    s.protect(a + 2 * PAGE, PAGE, P::READONLY).unwrap();
    s.free(b, 0, FreeType::RELEASE).unwrap();
    assert_eq!(read(&copy, a, 3), b"one");
    let q = copy.query(a + PAGE).unwrap();
    assert_eq!((q.state, q.protect, q.region_size), (MemState::Commit, P::READWRITE, 3 * PAGE));
    assert_eq!(copy.query(b).unwrap().state, MemState::Reserve);

    // The copy changes: the original does not see it.
    copy.write(a + 3 * PAGE, b"copy").unwrap();
    assert_eq!(read(&s, a + 3 * PAGE, 4), [0; 4]);
    copy.free(a, 0, FreeType::RELEASE).unwrap();
    assert_eq!(s.query(a).unwrap().state, MemState::Commit);
    assert_eq!(read(&s, a, 3), b"two");

    // Dropping the original leaves the copy whole.
    let kept = copy.regions();
    drop(s);
    assert_eq!(copy.regions(), kept);
    assert_eq!(copy.query(a).unwrap().state, MemState::Free);
    assert_eq!(copy.query(b).unwrap().state, MemState::Reserve);
}

/// The same calls on a copy and on its original give the same answers, addresses
/// included (both are deterministic from the same state).
#[test]
fn a_copy_answers_the_same_calls_the_same_way() {
    let s = SimSpace::simulated_with(SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() });
    let mut rng = rng::Rng(0x9E37_79B9_7F4A_7C15);
    let mut live = Vec::new();
    for _ in 0..200 {
        let size = (1 + rng.below(8)) * GRANULE;
        let a = s.alloc(0, size, T::RESERVE | T::WRITE_WATCH, P::READWRITE).unwrap();
        s.alloc(a, PAGE * (1 + rng.below(4)), T::COMMIT, P::READWRITE).unwrap();
        s.write(a, &[rng.below(255) as u8 + 1; 100]).unwrap();
        live.push(a);
    }
    for _ in 0..60 {
        let a = live.swap_remove(rng.below(live.len()));
        s.free(a, 0, FreeType::RELEASE).unwrap();
    }
    s.set_commit_limit(Some(s.committed_bytes() + 3 * PAGE));
    s.alloc(live[0], PAGE, T::RESET, P::READWRITE).unwrap();
    let copy = s.snapshot();

    let mut calls = rng::Rng(7);
    for step in 0..400 {
        let a = live[calls.below(live.len())];
        let one = |sp: &SimSpace| -> String {
            match step % 6 {
                0 => format!("{:?}", sp.alloc(0, GRANULE * (1 + step % 3), T::RESERVE, P::READONLY)),
                1 => format!("{:?}", sp.alloc(a + PAGE, 2 * PAGE, T::COMMIT, P::READWRITE)),
                2 => format!("{:?}", sp.get_write_watch(WriteWatchFlags::RESET, a, GRANULE, 16)),
                3 => format!("{:?}", sp.alloc(a, PAGE, T::RESET_UNDO, P::READWRITE)),
                4 => format!("{:?}", sp.protect(a, PAGE, P::READWRITE | P::GUARD)),
                _ => {
                    let mut b = [0u8; 8];
                    format!("{:?} {:?}", sp.read(a, &mut b), b)
                }
            }
        };
        assert_eq!(one(&s), one(&copy), "call {step}");
    }
    assert_eq!(copy.regions(), s.regions());
    assert_eq!(copy.committed_bytes(), s.committed_bytes());
    assert_eq!(copy.commit_limit(), s.commit_limit());
}

/// A reset whose data the space dropped is reported lost by the copy's
/// `MEM_RESET_UNDO` as by the original's.
#[test]
fn a_copy_remembers_what_a_reset_dropped() {
    let s = SimSpace::simulated_with(SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() });
    let a = commit(&s, 2 * PAGE);
    s.write(a, &[5; PAGE]).unwrap();
    s.alloc(a, PAGE, T::RESET, P::READWRITE).unwrap();
    let copy = s.snapshot();
    for space in [&s, &copy] {
        assert_eq!(space.alloc(a, PAGE, T::RESET_UNDO, P::READWRITE), Err(Error::DataDiscarded));
        assert_eq!(read(space, a, PAGE), vec![0; PAGE]);
    }
}

/// A snapshot taken while another thread writes through its granted blocks is one
/// moment's state. The writer stores round `i` into 24 blocks in turn, so at any moment
/// the blocks hold `i` up to some block and `i - 1` after it; a copy made of the parts
/// one after another, with the writer running on, would show later rounds in the parts
/// copied last.
#[test]
fn a_snapshot_taken_during_writes_is_one_moment() {
    const BLOCKS: usize = 24;
    let s = Arc::new(SimSpace::simulated());
    let a = snapkit::round_blocks(&s, BLOCKS);
    let writer = snapkit::Writer::start(&s, a, BLOCKS);
    let started = writer.done();
    // At least 1000 snapshots, and on until the writer has made 2000 more rounds meanwhile.
    let mut taken = 0;
    while taken < 1000 || writer.done() < started + 2000 {
        assert!(taken < 1_000_000, "the writer stopped making progress");
        let copy = s.snapshot();
        let rounds = snapkit::rounds(&copy, a, BLOCKS);
        assert!(snapkit::one_moment(&rounds), "blocks from different moments: {rounds:?}");
        taken += 1;
    }
    writer.stop();
}

/// A copy's cost follows what was written, not what was reserved or committed: a
/// terabyte committed and one page written copy as one stored page.
#[test]
fn a_copy_stores_only_the_pages_written() {
    let s = SimSpace::simulated();
    let a = s.alloc(0, 1 << 40, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    s.write(a + (1 << 39), b"x").unwrap();
    let copy = s.snapshot();
    assert_eq!(copy.backend().stored_pages(), 1);
    assert_eq!(copy.committed_bytes(), 1 << 40);
    assert_eq!(read(&copy, a + (1 << 39), 1), b"x");
}
