//! Review of the Linux backend (review3): failing tests, one per defect found, and one
//! test (`coverage_...`) of a case that had no coverage. Run in release, as the
//! project's tests are: the MEM_RESET_UNDO defect exists only in optimised builds.
#![cfg(target_os = "linux")]

mod common;
mod linux_util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use linux_util::*;
use virtmem::{
    AllocationType as T, FreeType, LinuxOptions, LinuxSpace, MemState, Protection as P, WriteWatchFlags as W,
};

const KB: usize = 1024;
const PAGE: usize = 4096;

fn watched(s: &LinuxSpace, size: usize) -> usize {
    assert!(s.backend().write_watch_supported(), "this kernel (6.7+) has write watch");
    s.alloc(0, size, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap()
}

/// Write watch reports exactly the pages written since the last reset, and concurrent
/// calls keep every invariant. `LinuxBackend::lock` runs `mlock` inside `without_writes`,
/// which scans the range's dirty pages before the `mlock` and clears, after it, every
/// page dirty then that was not dirty before: a store by another thread in that window
/// is erased from tracking. (The code's comment names the window "between op and the
/// clean-up"; it opens at the first scan.) Here a thread writes each page of a clean,
/// watched range once while the main thread VirtualLocks/VirtualUnlocks the range in a
/// loop: hundreds of the 1280 writes are missing from GetWriteWatch.
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

/// Keeps the calling thread on the CPU it runs on until dropped (as in linux_backend.rs).
struct Pinned(libc::cpu_set_t);

impl Pinned {
    fn here() -> Pinned {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity/sched_setaffinity read and
        // write only the set passed, for the calling thread (pid 0).
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old), 0);
            let cpu = libc::sched_getcpu();
            assert!(cpu >= 0);
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one), 0);
            Pinned(old)
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: restores the calling thread's own affinity mask saved by `here`.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

/// A successful MEM_RESET_UNDO means the data is intact, and it stays: the pages are
/// taken back from the kernel. `reset_undo` means to cancel the lazy free with an atomic
/// `fetch_or(0)` on a witness word, but LLVM lowers an idempotent RMW to a fence on the
/// stack (`lock orl $0,-0x40(%rsp)`) plus a plain load, so the page is never written and
/// stays MADV_FREE'd: memory pressure after the undo (MADV_PAGEOUT here, as in
/// linux_backend.rs) zeroes every page. (The same pressure after a real store to the
/// page keeps its data: a store cancels MADV_FREE.)
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

fn mmap_at(addr: usize, len: usize, prot: i32, flags: i32) -> bool {
    // SAFETY: the callers map at addresses of their own test window.
    let p = unsafe { libc::mmap(addr as *mut libc::c_void, len, prot, flags | libc::MAP_ANONYMOUS, -1, 0) };
    p as usize == addr
}

/// VirtualQuery must never call free an address where another mapping (one made by the
/// program with libc::mmap) lives, and a reserve at a given address must never take a
/// mapping that is not the space's. After a release into the pool, VirtualQuery says
/// the range is free; the program maps its own memory there (MAP_FIXED, at an address
/// the space told it was free) and writes to it. The space still calls it free
/// (`foreign_piece` skips pooled ranges without asking the kernel), and a reserve at
/// that address succeeds with no system call, adopting the program's mapping (a commit
/// would `mprotect` it, a decommit `MADV_DONTNEED` it, dropping the backend `munmap` it).
#[test]
fn a_program_mapping_placed_where_a_pooled_release_was_is_not_free_nor_taken() {
    let w = common::linux::window(4 << 20);
    let s = LinuxSpace::linux().unwrap();
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
}

/// A reserve that fails changes nothing, and the pool holds at most
/// `LinuxOptions::pool_bytes` of address space. A reserve at an address whose range
/// is [free hole][pooled piece][the program's mapping] maps the hole, claims the
/// pooled piece, fails on the program's mapping (ERROR_INVALID_ADDRESS, right), and
/// then `give_back` puts the freshly mapped hole into the pool, whatever its size and
/// the cap: 1 MiB stays mapped (`---p`) where nothing was before the call, in a space
/// whose pool cap is 64 KiB. (The same happens when the hole after the first fails
/// with ENOMEM, e.g. at vm.max_map_count.)
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

/// Coverage only (passes today): program mappings on both sides of a pooled range, with
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
