//! The memory a fuzzer's loop holds does not grow with the number of inputs: a space
//! restored in place from one snapshot before each input (which writes pages, makes and
//! frees reservations, resets and write-watches) holds, after 10 000 inputs, what it
//! held after the first hundred, as a counting allocator sees it. (Its own test binary:
//! the allocator counts every allocation of the process.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use virtmem::{AllocationType as T, FreeType, Protection as P, SimSpace, WriteWatchFlags};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator with the caller's own arguments,
// which meet `GlobalAlloc`'s contract as the caller's do; the counter has no effect on it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `layout` is the caller's, valid for `alloc` by `GlobalAlloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by this allocator (so by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const GRANULE: usize = 0x10000;
const PAGE: usize = 4096;

/// One input: writes to the snapshot's pages (copies of shared ones) and to new ones,
/// a reservation made and freed, a reset and a write-watch query.
fn run_input(s: &SimSpace, base: usize, i: usize) {
    s.write(base + (i % 16) * PAGE, &[i as u8; 100]).expect("write");
    s.write(base + 20 * PAGE, &[1; PAGE]).expect("write a page the snapshot has not");
    let extra = s.alloc(0, GRANULE, T::RESERVE | T::COMMIT, P::READWRITE).expect("alloc");
    s.write(extra, &[2; 10]).expect("write");
    if i % 2 == 0 {
        s.free(extra, 0, FreeType::RELEASE).expect("free");
    }
    s.alloc(base + 4 * PAGE, PAGE, T::RESET, P::READWRITE).expect("reset");
    let dirty = s.get_write_watch(WriteWatchFlags::RESET, base, 32 * PAGE, 64).expect("write watch");
    assert!(dirty.contains(&(base + 20 * PAGE)));
}

#[test]
fn ten_thousand_restores_hold_no_more_memory_than_a_hundred() {
    let s = SimSpace::simulated();
    let base = s.alloc(0, 32 * PAGE, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).expect("alloc");
    for k in 0..16 {
        s.write(base + k * PAGE, &[0xA5; PAGE]).expect("write");
    }
    let snap = s.snapshot();
    let mut after_100 = 0;
    for i in 0..10_000 {
        s.restore_from(&snap).expect("restore");
        run_input(&s, base, i);
        if i == 99 {
            after_100 = LIVE.load(Ordering::Relaxed);
        }
    }
    let after_10000 = LIVE.load(Ordering::Relaxed);
    // (A margin of a few pages for the thread's spare lists and the index's leaves.)
    assert!(
        after_10000 <= after_100 + 8 * PAGE as isize,
        "live bytes grew from {after_100} after 100 inputs to {after_10000} after 10 000"
    );
    // The snapshot is still as it was.
    let mut buf = [0u8; PAGE];
    snap.read(base + 3 * PAGE, &mut buf).expect("read");
    assert!(buf.iter().all(|&b| b == 0xA5));
    drop(s);
    assert_eq!(snap.backend().shared_pages(), 0, "the restored space's pages went with it");
}
