//! Many simulated address spaces in one process, as a sandbox or a fuzzing farm keeps
//! them: what each costs in heap (counted by this binary's global allocator, per
//! thread), that creating and dropping them leaks nothing, that the addresses a space
//! hands out depend only on the calls made on it (not on the thread, on other spaces, on
//! the order spaces were made, nor on heap addresses), and that spaces are isolated.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use virtmem::{AllocationType as T, Protection as Pr, SimSpace};

/// The system allocator, counting the bytes requested and freed by each thread.
struct Counting;

thread_local! {
    /// Bytes this thread allocated minus bytes it freed (may go negative when it frees
    /// what another thread allocated; the tests below keep each space on one thread).
    static NET: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // `try_with`: the slot may be gone while the thread exits.
    let _ = NET.try_with(|c| c.set(c.get() + n));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are ours; the counting touches a const-initialised thread-local
// `Cell` with no destructor, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: forwarded as received (the caller upholds `alloc`'s contract).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: `ptr` came from `System` through this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded as received (`ptr` is from `System` with `layout`).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes this thread holds now (see [`NET`]).
fn held() -> isize {
    NET.with(|c| c.get())
}

/// The heap `make` leaves allocated on this thread, with what it returns.
fn heap_of<R>(make: impl FnOnce() -> R) -> (R, isize) {
    let before = held();
    let r = make();
    (r, held() - before)
}

/// A space with one reservation of 1 MiB, its first page committed and written.
fn one_page_space() -> SimSpace {
    let s = SimSpace::simulated();
    let b = s.alloc(0, 1 << 20, T::RESERVE, Pr::NOACCESS).unwrap();
    s.alloc(b, 4096, T::COMMIT, Pr::READWRITE).unwrap();
    s.write(b + 8, b"payload").unwrap();
    s
}

/// What the figures are, printed with `--nocapture` (the asserted bounds are in the
/// tests below).
#[test]
fn heap_per_space_figures() {
    // Warm this thread's spares (a write takes its page from them) so that the figures
    // are of the spaces alone.
    drop(one_page_space());
    let (empty, e) = heap_of(SimSpace::simulated);
    let (one, o) = heap_of(one_page_space);
    let (many, m) = heap_of(|| (0..10_000).map(|_| one_page_space()).collect::<Vec<_>>());
    println!(
        "empty SimSpace: {e} B; one reservation + one written page: {o} B; 10 000 of those: {m} B ({} B each)",
        m / 10_000
    );
    drop((empty, one, many));
}

/// An empty space costs at most 2.5 KiB, itself included (it cost ~11 KB, 10.4 KB of it
/// heap, while its 32 locked parts and 128 grant slots were allocated when it was made):
/// a farm of 10 000 idle spaces should not take 110 MB.
#[test]
fn an_empty_space_is_small() {
    drop(one_page_space());
    let (spaces, bytes) = heap_of(|| (0..1000).map(|_| SimSpace::simulated()).collect::<Vec<_>>());
    let each = bytes / 1000;
    assert!(each <= 2560, "an empty SimSpace takes {each} B (itself and its heap)");
    drop(spaces);
}

/// A space with one reservation and one written page costs at most 12 KiB, the page's
/// 4 KiB and the first index leaf's 3.4 KB included (it cost 19.6 KB: the parts and grant
/// slots of every block, however few blocks were used).
#[test]
fn a_space_with_one_page_is_small() {
    drop(one_page_space());
    let (spaces, bytes) = heap_of(|| (0..1000).map(|_| one_page_space()).collect::<Vec<_>>());
    let each = bytes / 1000;
    assert!(each <= 12 * 1024, "a SimSpace with one written page takes {each} B (itself and its heap)");
    drop(spaces);
}
