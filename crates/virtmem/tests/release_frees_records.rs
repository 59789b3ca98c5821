//! A release gives back every byte its reservation's record held on the heap: the page
//! runs once they outgrow their inline room (a few runs, then many) and the runs of
//! locked pages (`VirtualLock`). A global allocator counts the bytes this thread holds;
//! a reservation made and released again leaves the count where it was.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use virtmem::{AllocationType as T, FreeType, Protection as Pr, SimSpace};

struct Counting;

thread_local! {
    /// Bytes this thread allocated and has not freed (may wrap below zero).
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    let _ = HELD.try_with(|h| h.set(h.get().wrapping_add(n)));
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches
// only a const-initialised thread-local `Cell`, which allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn held() -> isize {
    HELD.with(|h| h.get())
}

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
