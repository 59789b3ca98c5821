//! `get_write_watch_into` on the steady-state path allocates nothing, on either backend:
//! a GC scanning its cards every collection passes its own buffer and should not pay for
//! a heap allocation per scan. This binary's global allocator counts the allocations
//! made by the thread that asks (other test threads' are not counted).

use virtmem::{AllocationType as T, FreeType as F, Protection as Pr, SimSpace, VirtualSpace, WriteWatchFlags as W};

const P: usize = 4096;

mod alloc_count;
use alloc_count::allocations_in;

/// A GC's card scans on a write-watched heap (`HEAP` bytes, the first `COMMITTED`
/// committed), dirtying pages spread over many 64 KiB blocks between scans with `dirty`
/// (every third page: 5461 separate runs, more than the Linux backend's stack buffer and
/// its kept buffer hold together): after a first scan of two pages, no scan allocates,
/// with reset or without, with a buffer larger or smaller than the dirty set (capped
/// inside the first 341 runs, and past them), and neither does a `ResetWriteWatch` of
/// the whole heap.
/// (The counter itself is checked: the `Vec` form allocates.)
fn scans_allocate_nothing(s: &dyn VirtualSpace, dirty: &dyn Fn(usize)) {
    const HEAP: usize = 1 << 32;
    const PAGES: usize = 16384;
    let heap = s.alloc(0, HEAP, T::RESERVE | T::WRITE_WATCH, Pr::NOACCESS).unwrap();
    s.alloc(heap, PAGES * P, T::COMMIT, Pr::READWRITE).unwrap();
    let mut big = vec![0usize; PAGES];
    let mut small = vec![0usize; 5];
    let mut mid = vec![0usize; 1000];
    let dirty_all = |round: usize| {
        for i in (round % 3..PAGES).step_by(3) {
            dirty(heap + i * P);
        }
    };
    // The first scan may set things up (a descriptor), but it finds only a few pages:
    // what a big dirty set needs (the Linux backend's larger scan buffer) is set up
    // before the first call that needs it.
    dirty(heap);
    dirty(heap + 100 * P);
    assert_eq!(s.get_write_watch_into(W::RESET, heap, HEAP, &mut big), Ok(2));
    for round in 0..20 {
        dirty_all(round);
        let want = (round % 3..PAGES).step_by(3).count();
        let (n, allocs) = allocations_in(|| s.get_write_watch_into(W::empty(), heap, HEAP, &mut big));
        assert_eq!((n, allocs), (Ok(want), 0), "round {round}: scan");
        let (n, allocs) = allocations_in(|| s.get_write_watch_into(W::RESET, heap, HEAP, &mut small));
        assert_eq!((n, allocs), (Ok(5), 0), "round {round}: capped scan with reset");
        let (n, allocs) = allocations_in(|| s.get_write_watch_into(W::RESET, heap, HEAP, &mut mid));
        assert_eq!((n, allocs), (Ok(1000), 0), "round {round}: scan with reset capped past 341 runs");
        let (n, allocs) = allocations_in(|| s.get_write_watch_into(W::RESET, heap, HEAP, &mut big));
        assert_eq!((n, allocs), (Ok(want - 1005), 0), "round {round}: scan with reset");
        let (n, allocs) = allocations_in(|| s.get_write_watch_into(W::RESET, heap, HEAP, &mut big));
        assert_eq!((n, allocs), (Ok(0), 0), "round {round}: clean scan");
        // `ResetWriteWatch` of the whole heap, with thousands of separate dirty runs.
        dirty_all(round + 1);
        let (r, allocs) = allocations_in(|| s.reset_write_watch(heap, HEAP));
        assert_eq!((r, allocs), (Ok(()), 0), "round {round}: ResetWriteWatch");
        assert_eq!(s.get_write_watch_into(W::empty(), heap, HEAP, &mut big), Ok(0), "round {round}: reset");
    }
    dirty_all(0);
    let (v, allocs) = allocations_in(|| s.get_write_watch(W::empty(), heap, HEAP, PAGES));
    assert!(v.unwrap().len() > 5 && allocs > 0, "the counter counts: {allocs}");
    s.free(heap, 0, F::RELEASE).unwrap();
}

#[test]
fn card_scans_on_a_simulated_space_allocate_nothing() {
    let s = SimSpace::simulated();
    scans_allocate_nothing(&s, &|a| s.write(a, &[1]).unwrap());
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn card_scans_on_real_memory_allocate_nothing() {
    let s = virtmem::LinuxSpace::linux().unwrap();
    assert!(s.backend().write_watch_supported(), "this kernel (6.7+) has write watch");
    // SAFETY: only called with committed read-write pages of the test's heap.
    scans_allocate_nothing(&s, &|a| unsafe { std::ptr::write_volatile(a as *mut u8, 1) });
}
