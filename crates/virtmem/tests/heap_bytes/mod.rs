//! A global allocator that counts, per thread, the bytes the thread allocated minus the
//! bytes it freed, and passes every call on to the system allocator: for tests of what a
//! space or a call holds on the heap. Included as a module (it installs itself as the
//! binary's `#[global_allocator]`) by `many_spaces.rs` and `release_frees_records.rs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting the bytes requested and freed by each thread.
struct Counting;

thread_local! {
    /// Bytes this thread allocated minus bytes it freed (may go negative when it frees
    /// what another thread allocated; the tests keep what they measure on one thread).
    static NET: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // `try_with`: the slot may be gone while the thread exits.
    let _ = NET.try_with(|c| c.set(c.get().wrapping_add(n)));
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

/// Bytes this thread holds now (allocated minus freed, see [`NET`]).
pub fn held() -> isize {
    NET.with(|c| c.get())
}
