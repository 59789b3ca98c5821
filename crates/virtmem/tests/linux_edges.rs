//! Edge cases of the Linux backend, each answered wrongly once (found by an independent
//! review), and one (`coverage_...`) that had no test. Run in release, as the project's
//! tests are: the MEM_RESET_UNDO defect existed only in optimised builds.
#![cfg(target_os = "linux")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::linux_util::*;
use virtmem::{
    AllocationType as T, FreeType, LinuxOptions, LinuxSpace, MemState, Protection as P, WriteWatchFlags as W,
};

const KB: usize = 1024;
const PAGE: usize = 4096;

/// Write watch reports exactly the pages written since the last reset, and concurrent
/// calls keep every invariant. A thread writes each page of a clean, watched range once
/// while the main thread VirtualLocks/VirtualUnlocks the range in a loop: every write is
/// reported. (The lock had been a plain `mlock`, whose write faults write tracking took
/// for writes; cleaning the pages it dirtied also cleaned pages the other thread wrote
/// meanwhile: hundreds of the 1280 writes went missing. It locks on fault now, and
/// populates with read faults.)
#[test]
fn a_write_racing_virtual_lock_on_a_watched_range_is_never_lost() {
    let s = Arc::new(LinuxSpace::linux().unwrap());
    let pages = 256;
    let base = watched(&s, pages * PAGE);
    let mut lost_total = 0;
    for _round in 0..5 {
        // Populate and clean every page.
        for i in 0..pages {
            store(base + i * PAGE, 1);
        }
        s.get_write_watch(W::RESET, base, pages * PAGE, 1 << 20).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..pages {
                    store(base + i * PAGE, 2);
                    for _ in 0..2000 {
                        std::hint::spin_loop();
                    }
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        while !done.load(Ordering::SeqCst) {
            s.lock(base, pages * PAGE).unwrap();
            s.unlock(base, pages * PAGE).unwrap();
        }
        writer.join().unwrap();
        let got = s.get_write_watch(W::RESET, base, pages * PAGE, 1 << 20).unwrap();
        lost_total += pages - got.len();
    }
    assert_eq!(lost_total, 0, "writes lost from write watch while VirtualLock ran");
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

/// A successful MEM_RESET_UNDO means the data is intact, and it stays: the pages are
/// taken back from the kernel, so memory pressure after the undo (MADV_PAGEOUT here, as
/// in linux_backend.rs) keeps them. (The undo had meant to cancel the lazy free with an
/// atomic `fetch_or(0)`, which LLVM lowers to a fence and a plain load: the pages were
/// never written, stayed MADV_FREE'd, and the pressure zeroed every one.)
#[test]
fn a_successful_reset_undo_keeps_the_data_under_later_memory_pressure() {
    const MADV_PAGEOUT: i32 = 21;
    const PAGES: usize = 16;
    let _pin = Pinned::here();
    let s = LinuxSpace::linux().unwrap();
    let base = s.alloc(0, PAGES * PAGE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    for i in 0..PAGES {
        store(base + i * PAGE + 8, 0xC0 | i as u8);
    }
    s.alloc(base, PAGES * PAGE, T::RESET, P::READWRITE).unwrap();
    s.alloc(base, PAGES * PAGE, T::RESET_UNDO, P::READWRITE).expect("nothing reclaimed yet: the undo succeeds");
    for i in 0..PAGES {
        assert_eq!(load(base + i * PAGE + 8), 0xC0 | i as u8);
    }
    // Memory pressure after the undo.
    // SAFETY: advice on our own committed range; reclaim only drops lazily freed pages.
    let r = unsafe { libc::madvise(base as *mut libc::c_void, PAGES * PAGE, MADV_PAGEOUT) };
    assert_eq!(r, 0);
    let lost: Vec<usize> = (0..PAGES).filter(|&i| load(base + i * PAGE + 8) != 0xC0 | i as u8).collect();
    assert!(lost.is_empty(), "pages {lost:?} lost their data after a successful MEM_RESET_UNDO");
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

/// MEM_RESET and MEM_RESET_UNDO write nothing: on a write-watched range the pages the
/// undo takes back (with a store) are not reported written, while a page the program
/// wrote between the two calls is.
#[test]
fn reset_and_undo_leave_write_watch_clean() {
    let s = LinuxSpace::linux().unwrap();
    let base = watched(&s, 8 * PAGE);
    for i in 0..8 {
        store(base + i * PAGE + 8, 0x40 | i as u8);
    }
    s.get_write_watch(W::RESET, base, 8 * PAGE, 64).unwrap();
    s.alloc(base, 8 * PAGE, T::RESET, P::READWRITE).unwrap();
    store(base + 3 * PAGE + 100, 7);
    s.alloc(base, 8 * PAGE, T::RESET_UNDO, P::READWRITE).expect("nothing reclaimed: the undo succeeds");
    let pages = s.get_write_watch(W::empty(), base, 8 * PAGE, 64).unwrap();
    assert_eq!(pages, vec![base + 3 * PAGE], "only the page the program wrote");
    for i in 0..8 {
        assert_eq!(load(base + i * PAGE + 8), 0x40 | i as u8);
    }
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

fn mmap_at(addr: usize, len: usize, prot: i32, flags: i32) -> bool {
    // SAFETY: the callers map at addresses of their own test window.
    let p = unsafe { libc::mmap(addr as *mut libc::c_void, len, prot, flags | libc::MAP_ANONYMOUS, -1, 0) };
    p as usize == addr
}

/// VirtualQuery must never call free an address where another mapping (one made by the
/// program with libc::mmap) lives, and a reserve at a given address must never take a
/// mapping that is not the space's. Without a pool (`pool_bytes: 0`) a released range is
/// unmapped; when the program maps its own memory there (MAP_FIXED, at an address the
/// space told it was free) and writes to it, VirtualQuery reports that mapping and a
/// reserve there fails with ERROR_INVALID_ADDRESS, leaving the program's data alone.
/// (With a pool the released range stays mapped by the backend, which then cannot see a
/// MAP_FIXED over it: README's known limits say so, and that such programs turn the pool
/// off; the kernel never places any other mapping there.)
#[test]
fn without_a_pool_a_program_mapping_where_a_release_was_is_not_free_nor_taken() {
    let w = common::linux::window(4 << 20);
    let s = LinuxSpace::linux_with(LinuxOptions { pool_bytes: 0, guard_regions: true }).unwrap();
    let base = s.alloc(w, 64 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    s.free(base, 0, FreeType::RELEASE).unwrap();
    assert_eq!(s.query(base).unwrap().state, MemState::Free);
    assert!(mmap_at(base, 64 * KB, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_FIXED));
    store(base, 0x77);
    let q = s.query(base).unwrap();
    let r = s.alloc(base, 64 * KB, T::RESERVE, P::NOACCESS);
    let still = load(base);
    assert_ne!(q.state, MemState::Free, "VirtualQuery calls the program's own mapping free");
    assert_eq!(r, Err(virtmem::Error::InvalidAddress), "a reserve took over the program's mapping");
    assert_eq!(still, 0x77);
    // SAFETY: the test's own mapping, made above.
    assert_eq!(unsafe { libc::munmap(base as *mut libc::c_void, 64 * KB) }, 0);
}

/// A reserve that fails changes nothing, and the pool holds at most
/// `LinuxOptions::pool_bytes` of address space. A reserve at an address whose range
/// is [free hole][pooled piece][the program's mapping] maps the hole, claims the
/// pooled piece and fails on the program's mapping (ERROR_INVALID_ADDRESS): the hole is
/// unmapped again and the piece pooled again. (The hole had been put into the pool,
/// whatever its size and the cap: 1 MiB stayed mapped where nothing was before the
/// call, in a space whose pool cap is 64 KiB.)
#[test]
fn a_failed_reserve_at_an_address_leaves_nothing_mapped_and_the_pool_within_its_cap() {
    let w = common::linux::window(4 << 20);
    let cap = 64 * KB;
    let s = LinuxSpace::linux_with(LinuxOptions { pool_bytes: cap, guard_regions: true }).unwrap();
    // A pooled piece at w + 1 MiB.
    let p = s.alloc(w + MB, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
    s.free(p, 0, FreeType::RELEASE).unwrap();
    assert_eq!(s.backend().stats().pooled_bytes, 64 * KB);
    // The program's mapping right after it.
    let f = w + MB + 64 * KB;
    assert!(mmap_at(f, 64 * KB, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_FIXED_NOREPLACE));
    assert_eq!(mappings(w..w + MB), []);
    assert_eq!(s.alloc(w, MB + 128 * KB, T::RESERVE, P::NOACCESS), Err(virtmem::Error::InvalidAddress));
    let left = mappings(w..w + MB);
    let pooled = s.backend().stats().pooled_bytes;
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(f as *mut libc::c_void, 64 * KB) };
    assert_eq!(left, [], "the failed reserve left [w, w + 1 MiB) mapped");
    assert!(pooled <= cap, "pool holds {pooled:#x} bytes, over its cap {cap:#x}");
}
const MB: usize = 1024 * KB;

/// Coverage: program mappings on both sides of a pooled range, with
/// the same flags as the backend's own, so that the kernel merges all three into one
/// mapping (it does on 6.18: one `---p` line). VirtualQuery reports each program
/// mapping as not free and only the pooled range as free. Existing tests use shared
/// mappings, which the kernel never merges, so `foreign_piece`'s walk of a VMA that
/// mixes pooled and foreign pieces was not exercised.
#[test]
fn coverage_query_of_program_mappings_merged_with_a_pooled_range() {
    let w = common::linux::window(4 << 20);
    let s = LinuxSpace::linux().unwrap();
    let b = s.alloc(w + 64 * KB, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
    s.free(b, 0, FreeType::RELEASE).unwrap();
    // Same flags as the backend's own reserve: the kernel may merge them.
    let fl = libc::MAP_PRIVATE | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE;
    assert!(mmap_at(w, 64 * KB, libc::PROT_NONE, fl));
    assert!(mmap_at(w + 128 * KB, 64 * KB, libc::PROT_NONE, fl));
    let walk = walk(&s, w..w + 256 * KB);
    let got: Vec<_> = walk.iter().map(|m| (m.base_address - w, m.region_size, m.state)).collect();
    // SAFETY: the mappings made above.
    unsafe {
        libc::munmap(w as *mut libc::c_void, 64 * KB);
        libc::munmap((w + 128 * KB) as *mut libc::c_void, 64 * KB);
    }
    assert_eq!(
        got,
        [
            (0, 64 * KB, MemState::Reserve),
            (64 * KB, 64 * KB, MemState::Free),
            (128 * KB, 64 * KB, MemState::Reserve),
            (192 * KB, 64 * KB, MemState::Free)
        ]
    );
}
