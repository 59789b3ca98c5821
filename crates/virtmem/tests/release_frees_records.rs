//! A release gives back every byte its reservation's record held on the heap: the page
//! runs once they outgrow their inline room (a few runs, then many) and the runs of
//! locked pages (`VirtualLock`). A global allocator counts the bytes this thread holds;
//! a reservation made and released again leaves the count where it was.

use virtmem::{AllocationType as T, FreeType, Protection as Pr, SimSpace};

mod heap_bytes;

use heap_bytes::held;

const P: usize = 4096;

/// Reserve 64 pages beside a neighbour, give them `runs` runs by committing every other
/// page (each alone, so that the runs alternate), lock one committed page if `lock`,
/// and release the reservation.
fn make_and_release(s: &SimSpace, runs: usize, lock: bool) {
    let a = s.alloc(0, 64 * P, T::RESERVE, Pr::READWRITE).unwrap();
    for k in (1..runs).step_by(2) {
        s.alloc(a + k * P, P, T::COMMIT, Pr::READWRITE).unwrap();
    }
    if lock {
        s.lock(a + P, P).unwrap();
    }
    s.free(a, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn a_release_frees_what_its_record_held() {
    // One run (inline), a few (the inline room outgrown), many (a tree), and each locked.
    for (runs, lock) in [(1, false), (2, false), (8, false), (60, false), (2, true), (8, true), (60, true)] {
        let s = SimSpace::simulated();
        let _neighbour = s.alloc(0, 64 * P, T::RESERVE, Pr::READWRITE).unwrap();
        // Once first, so that whatever the space keeps for later (room in its
        // indexes) is already there.
        make_and_release(&s, runs, lock);
        let before = held();
        make_and_release(&s, runs, lock);
        assert_eq!(held(), before, "{runs} runs, locked: {lock}");
    }
}
