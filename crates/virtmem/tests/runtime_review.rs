//! Review from a GC and JIT runtime author's seat, through the Rust API: the programs a
//! runtime writes on top of `VirtualAlloc` & co., on the Linux backend (real memory,
//! real pointers, real code) and on the simulated one. Every assertion is a rule of
//! `shared/spec/win32-virtual-memory.md`, a promise of the README or the crate docs, or
//! what the kernel must show for it (mappings, resident pages, faults).
//!
//! - a generational GC heap: a 64 GiB write-watched reservation, segments committed on
//!   demand, card marking with `GetWriteWatch`/`ResetWriteWatch` while a mutator writes
//!   through pointers (also concurrently), decommit and `MEM_RESET` of free space, and
//!   `MEM_RESET_UNDO` after the kernel really took the pages;
//! - a JIT code heap: W^X flips with `VirtualProtect`, real code run after the flip,
//!   guard pages around it;
//! - thread stacks grown through `PAGE_GUARD` (simulated: the one-shot exception;
//!   Linux: what query, protect and the kernel show);
//! - allocators on several threads while another walks the space with `VirtualQuery`;
//! - a GC hitting its commit limit.

mod common;
#[cfg(all(target_os = "linux", not(miri), any(target_arch = "x86_64", target_arch = "aarch64")))]
mod jit;
mod rng;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use common::{snapshot, G, P};
#[cfg(all(target_os = "linux", not(miri), any(target_arch = "x86_64", target_arch = "aarch64")))]
use jit::returns;
use rng::Rng;
use virtmem::{
    AccessKind, AllocationType as T, Error, FreeType as F, MemState, MemType, MemoryBasicInformation, Protection as Pr,
    SimSpace, VirtualSpace, WriteWatchFlags as W,
};

const KB: usize = 1 << 10;
const MB: usize = 1 << 20;
const GB: usize = 1 << 30;

/// The GC heap's reservation: what a server GC reserves up front.
const HEAP: usize = 64 * GB;

/// A space of this process's real memory placing its reservations only in a window of
/// its own: `size` bytes, and 64 MiB more for the test's other reservations. The tests
/// of this binary run in parallel in one process: a space placing reservations anywhere
/// (bottom-up, from the lowest free address) would take the range another test just
/// released and still expects free (the GC heap after its shutdown, the process space's
/// allocators after theirs).
#[cfg(all(target_os = "linux", not(miri)))]
fn real_space(size: usize) -> virtmem::AddressSpace<common::linux::Confined<virtmem::LinuxBackend>> {
    common::linux::space(size + 64 * MB)
}

/// Write a word through a real pointer (what a mutator does).
#[cfg(all(target_os = "linux", not(miri)))]
fn poke(addr: usize, v: u64) {
    // SAFETY: callers pass committed read-write memory of a reservation they own.
    unsafe { std::ptr::write_volatile(addr as *mut u64, v) }
}

/// Read a word through a real pointer.
#[cfg(all(target_os = "linux", not(miri)))]
fn peek(addr: usize) -> u64 {
    // SAFETY: callers pass committed readable memory of a reservation they own.
    unsafe { std::ptr::read_volatile(addr as *const u64) }
}

/// How many pages of `range` are resident (`mincore`).
#[cfg(all(target_os = "linux", not(miri)))]
fn resident_pages(range: std::ops::Range<usize>) -> usize {
    common::linux_util::resident(range).into_iter().filter(|&r| r).count()
}

/// What the CPU may do in `range`: the kernel's mappings, guard markers shown as `---`
/// (looked for in accessible mappings only, so that a 64 GiB inaccessible range costs no
/// 128 MiB read of `/proc/self/pagemap`).
#[cfg(all(target_os = "linux", not(miri)))]
fn kernel_view(range: std::ops::Range<usize>) -> Vec<(usize, usize, String)> {
    let mut out: Vec<(usize, usize, String)> = Vec::new();
    for (s, e, perms) in common::linux::mappings(range) {
        let pieces =
            if perms.starts_with("---") { vec![(s, e, perms)] } else { common::linux_util::effective_mappings(s..e) };
        for (s, e, perms) in pieces {
            match out.last_mut() {
                Some(last) if last.1 == s && last.2 == perms => last.1 = e,
                _ => out.push((s, e, perms)),
            }
        }
    }
    out
}

/// Check one `VirtualQuery` answer for `address` on its own: the fields a walker relies
/// on must agree with each other whatever other threads are doing.
fn check_answer(address: usize, m: &MemoryBasicInformation, top: usize) {
    let ctx = || format!("query {address:#x} -> {m:x?}");
    assert_eq!(m.base_address, address & !(P - 1), "{}", ctx());
    assert!(m.region_size > 0 && m.region_size % P == 0, "{}", ctx());
    assert!(m.base_address + m.region_size <= top, "{}", ctx());
    match m.state {
        MemState::Free => {
            assert_eq!(m.allocation_base, 0, "{}", ctx());
            assert_eq!(m.allocation_protect, Pr::empty(), "{}", ctx());
            assert_eq!(m.protect, Pr::NOACCESS, "{}", ctx());
            assert_eq!(m.mem_type, None, "{}", ctx());
        }
        MemState::Reserve | MemState::Commit => {
            assert!(m.mem_type.is_some(), "{}", ctx());
            assert!(m.allocation_base <= m.base_address && m.allocation_base != 0, "{}", ctx());
            if m.state == MemState::Reserve {
                assert_eq!(m.protect, Pr::empty(), "{}", ctx());
            } else {
                let base = m.protect.base();
                assert_eq!(base.bits().count_ones(), 1, "one base protection: {}", ctx());
                assert!(!(base == Pr::NOACCESS && m.protect.contains(Pr::GUARD)), "{}", ctx());
            }
        }
    }
}

// ----- 1. A generational GC heap ---------------------------------------------------------

/// The GC heap's life on real memory, step by step, with what query, the totals and the
/// kernel (mappings, resident pages) must show at each step.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn gc_heap_on_real_memory() {
    const SEG: usize = 4 * MB;
    let s = real_space(HEAP);
    assert!(s.backend().inner().write_watch_supported(), "this kernel (6.7+) has write watch");

    // Reserve the whole heap, write-watched: free of charge.
    let heap = s.alloc(0, HEAP, T::RESERVE | T::WRITE_WATCH, Pr::NOACCESS).unwrap();
    assert_eq!(heap % G, 0);
    let q = s.query(heap + 17 * GB).unwrap();
    assert_eq!(
        (q.base_address, q.allocation_base, q.allocation_protect, q.region_size, q.state, q.protect, q.mem_type),
        (heap + 17 * GB, heap, Pr::NOACCESS, HEAP - 17 * GB, MemState::Reserve, Pr::empty(), Some(MemType::Private))
    );
    assert_eq!((s.reserved_bytes(), s.committed_bytes()), (HEAP, 0));
    assert_eq!(kernel_view(heap..heap + HEAP), [(heap, heap + HEAP, "---p".to_string())]);

    // Commit the first two segments of gen0 on demand.
    assert_eq!(s.alloc(heap, SEG, T::COMMIT, Pr::READWRITE), Ok(heap));
    assert_eq!(s.alloc(heap + SEG + 10, SEG - 10, T::COMMIT, Pr::READWRITE), Ok(heap + SEG));
    let q = s.query(heap).unwrap();
    assert_eq!((q.state, q.protect, q.region_size), (MemState::Commit, Pr::READWRITE, 2 * SEG));
    let q = s.query(heap + 2 * SEG).unwrap();
    assert_eq!((q.state, q.region_size), (MemState::Reserve, HEAP - 2 * SEG));
    assert_eq!(s.committed_bytes(), 2 * SEG);
    assert_eq!(resident_pages(heap..heap + 2 * SEG), 0, "a commit populates nothing");
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, usize::MAX).unwrap(), []);

    // The mutator allocates objects: one store per page in 64 pages of segment 0, one in
    // segment 1.
    let written: Vec<usize> = (0..64).map(|i| heap + i * 3 * P).collect();
    for (i, &a) in written.iter().enumerate() {
        poke(a + 8, i as u64 + 1);
    }
    poke(heap + SEG + 5 * P + 96, 0xdead);
    let mut dirty = written.clone();
    dirty.push(heap + SEG + 5 * P);
    assert_eq!(resident_pages(heap..heap + 2 * SEG), 65);
    // Reading the cards without a reset, twice: the same answer.
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, usize::MAX).unwrap(), dirty);
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, 1000).unwrap(), dirty);
    // Reads mark nothing.
    assert_eq!(peek(heap + 7 * P), 0);
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, 1000).unwrap(), dirty);

    // A card-table scan with a bounded buffer and WRITE_WATCH_FLAG_RESET: only what it
    // reported becomes clean.
    assert_eq!(s.get_write_watch(W::RESET, heap, HEAP, 16).unwrap(), dirty[..16]);
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, 1000).unwrap(), dirty[16..]);
    // ResetWriteWatch of segment 0 leaves segment 1's card.
    s.reset_write_watch(heap, SEG).unwrap();
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, 1000).unwrap(), [heap + SEG + 5 * P]);
    assert_eq!(s.get_write_watch(W::RESET, heap, HEAP, 1000).unwrap(), [heap + SEG + 5 * P]);
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, 1000).unwrap(), []);
    // A store into a page that already holds data (an old object's field updated) is
    // seen again, and so is a checked write.
    poke(written[3] + 16, 77);
    s.write(written[5] + 24, &7u64.to_ne_bytes()).unwrap();
    assert_eq!(s.get_write_watch(W::empty(), heap, 2 * SEG, 1000).unwrap(), [written[3], written[5]]);
    // A scan of part of the heap reports that part only.
    assert_eq!(s.get_write_watch(W::RESET, written[4], 4 * P, 1000).unwrap(), [written[5]]);
    assert_eq!(s.get_write_watch(W::RESET, heap, HEAP, 1000).unwrap(), [written[3]]);

    // A GC: segment 1 holds nothing live any more. Decommit it: its pages leave RSS,
    // query shows it reserved (merged with the rest of the heap), the charge falls.
    poke(heap + SEG + 9 * P, 1);
    s.free(heap + SEG, SEG, F::DECOMMIT).unwrap();
    assert_eq!(resident_pages(heap + SEG..heap + 2 * SEG), 0, "decommitted pages left RSS");
    assert_eq!(s.committed_bytes(), SEG);
    let q = s.query(heap + SEG).unwrap();
    assert_eq!((q.state, q.protect, q.region_size), (MemState::Reserve, Pr::empty(), HEAP - SEG));
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, 1000).unwrap(), [], "decommit clears the cards");
    assert_eq!(kernel_view(heap + SEG..heap + HEAP), [(heap + SEG, heap + HEAP, "---p".to_string())]);
    // Committed again later, it reads zeros and its cards start clean.
    assert_eq!(s.alloc(heap + SEG, SEG, T::COMMIT, Pr::READWRITE), Ok(heap + SEG));
    assert_eq!(peek(heap + SEG + 5 * P + 96), 0);
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, 1000).unwrap(), []);
    poke(heap + SEG + 6 * P, 3);
    assert_eq!(s.get_write_watch(W::RESET, heap, HEAP, 1000).unwrap(), [heap + SEG + 6 * P]);
    s.free(heap + SEG, SEG, F::DECOMMIT).unwrap();

    // Free space in segment 0 (from page 96 on) is reset: state, protection and charge
    // stay; the data is "unchanged or zero" and, undone at once, intact.
    let free_from = heap + 96 * P;
    let old_cards = {
        poke(written[40] + 8, 41);
        s.get_write_watch(W::empty(), heap, SEG, 1000).unwrap()
    };
    assert_eq!(s.alloc(free_from, heap + SEG - free_from, T::RESET, Pr::READWRITE), Ok(free_from));
    let q = s.query(free_from).unwrap();
    assert_eq!(
        (q.base_address, q.state, q.protect, q.region_size),
        (free_from, MemState::Commit, Pr::READWRITE, heap + SEG - free_from)
    );
    assert_eq!(s.committed_bytes(), SEG);
    assert!([0, 41].contains(&peek(written[40] + 8)), "reset data is unchanged or zero");
    // (On real memory a reset of a write-watched heap keeps the cards, README.)
    assert_eq!(s.get_write_watch(W::empty(), heap, SEG, 1000).unwrap(), old_cards);
    assert_eq!(s.alloc(free_from, heap + SEG - free_from, T::RESET_UNDO, Pr::READWRITE), Ok(free_from));
    assert_eq!(peek(written[40] + 8), 41, "a successful MEM_RESET_UNDO means the data is intact");
    assert_eq!(peek(written[63] + 8), 64);

    // Shutdown: release the heap. Nothing stays: no reservation, no charge, no mapping
    // the CPU could use, nothing resident.
    s.free(heap, 0, F::RELEASE).unwrap();
    let q = s.query(heap).unwrap();
    assert_eq!((q.state, q.allocation_base), (MemState::Free, 0));
    assert!(q.region_size >= HEAP, "the whole heap is free again: {q:x?}");
    let st = s.stats();
    assert_eq!((st.reserved, st.committed, st.reservations), (0, 0, 0));
    // (Nor anything the backend still maps.)
    let b = s.backend().inner().stats();
    assert_eq!((b.reservations, b.pooled_bytes, b.kernel_runs), (0, 0, 0), "a write-watched heap is unmapped: {b:?}");
}

/// The GC heap's life on the simulated backend (an emulator running a managed runtime),
/// with checked stores and what the backend stores (its "RSS"); `MEM_RESET` drops the
/// data there (`ResetPolicy::Discard`, memory pressure), and the undo says so.
#[test]
fn gc_heap_on_a_simulated_space() {
    use virtmem::{ResetPolicy, SimConfig};
    const SEG: usize = 4 * MB;
    let s = SimSpace::simulated_with(SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() });
    let heap = s.alloc(0, HEAP, T::RESERVE | T::WRITE_WATCH, Pr::NOACCESS).unwrap();
    assert_eq!((s.reserved_bytes(), s.committed_bytes(), s.backend().stored_pages()), (HEAP, 0, 0));
    assert_eq!(s.alloc(heap, 2 * SEG, T::COMMIT, Pr::READWRITE), Ok(heap));
    let objects: Vec<usize> = (0..64).map(|i| heap + i * 5 * P + 24).collect();
    for (i, &a) in objects.iter().enumerate() {
        s.write(a, &(i as u64 + 1).to_ne_bytes()).unwrap();
    }
    let cards: Vec<usize> = objects.iter().map(|a| a & !(P - 1)).collect();
    assert_eq!(s.backend().stored_pages(), 64);
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, usize::MAX).unwrap(), cards);
    assert_eq!(s.get_write_watch(W::RESET, heap, HEAP, 10).unwrap(), cards[..10]);
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, usize::MAX).unwrap(), cards[10..]);
    s.reset_write_watch(heap, HEAP).unwrap();
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, usize::MAX).unwrap(), []);

    // Segment 1 is free: decommitted, its pages are gone; the charge falls.
    s.write(heap + SEG + 3 * P, &[1]).unwrap();
    s.free(heap + SEG, SEG, F::DECOMMIT).unwrap();
    assert_eq!((s.committed_bytes(), s.backend().stored_pages()), (SEG, 64));
    let q = s.query(heap + SEG).unwrap();
    assert_eq!((q.state, q.region_size), (MemState::Reserve, HEAP - SEG));
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, usize::MAX).unwrap(), []);

    // Free space of segment 0 (objects 32 on) is reset: the data goes, the pages stay
    // committed read-write, the undo reports the loss, and the pages read zero.
    let free_from = cards[32];
    assert_eq!(s.alloc(free_from, heap + SEG - free_from, T::RESET, Pr::READWRITE), Ok(free_from));
    let q = s.query(free_from).unwrap();
    assert_eq!((q.state, q.protect, q.region_size), (MemState::Commit, Pr::READWRITE, heap + SEG - free_from));
    assert_eq!(s.backend().stored_pages(), 32);
    assert_eq!(s.alloc(free_from, heap + SEG - free_from, T::RESET_UNDO, Pr::READWRITE), Err(Error::DataDiscarded));
    let mut v = [0xFFu8; 8];
    s.read(objects[40], &mut v).unwrap();
    assert_eq!(v, [0; 8]);
    s.read(objects[31], &mut v).unwrap();
    assert_eq!(u64::from_ne_bytes(v), 32);

    s.free(heap, 0, F::RELEASE).unwrap();
    let st = s.stats();
    assert_eq!((st.reserved, st.committed, st.reservations, s.backend().stored_pages()), (0, 0, 0, 0));
    assert_eq!(s.query(heap).unwrap().state, MemState::Free);
}

/// The kernel memory this process's page tables take (`VmPTE`), in bytes.
#[cfg(all(target_os = "linux", not(miri)))]
fn page_table_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmPTE:")).expect("VmPTE in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * KB
}

/// A GC resets the write watch of its whole heap range when a background GC starts
/// (CoreCLR: `ResetWriteWatch(heap_start, heap_end - heap_start)`), most of it only
/// reserved. That must cost about what the committed, written part does: the reserved
/// pages hold nothing to track. It wrote-protected every page of the range through the
/// userfaultfd, which in asynchronous mode puts a marker into every empty page-table
/// entry: 64 GiB reserved cost 128 MiB of page tables (unswappable kernel memory, not in
/// RSS), 0.6-1.2 s, and made every later `GetWriteWatch` of the heap 2 500 times slower
/// (68 ms instead of 26 µs) and its release 0.4-0.6 s.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn resetting_the_cards_of_a_mostly_reserved_heap_costs_no_page_tables() {
    let s = real_space(HEAP);
    assert!(s.backend().inner().write_watch_supported(), "this kernel (6.7+) has write watch");
    let heap = s.alloc(0, HEAP, T::RESERVE | T::WRITE_WATCH, Pr::NOACCESS).unwrap();
    s.alloc(heap, 8 * MB, T::COMMIT, Pr::READWRITE).unwrap();
    for i in 0..16 {
        poke(heap + i * 64 * KB, 1);
    }
    let before = page_table_bytes();
    s.reset_write_watch(heap, HEAP).unwrap();
    let grown = page_table_bytes().saturating_sub(before);
    assert!(grown < 4 * MB, "ResetWriteWatch of a 64 GiB heap with 8 MiB committed took {grown} bytes of page tables");
    // It still did its work: nothing is dirty, and the next store is seen.
    assert_eq!(s.get_write_watch(W::empty(), heap, HEAP, usize::MAX).unwrap(), []);
    poke(heap + 3 * P, 2);
    assert_eq!(s.get_write_watch(W::RESET, heap, HEAP, usize::MAX).unwrap(), [heap + 3 * P]);
    s.free(heap, 0, F::RELEASE).unwrap();
}

/// A GC heap that is not write-watched (a runtime with its own card table) resets its
/// free space, then the system runs short of memory and the kernel takes those pages
/// (here: `MADV_PAGEOUT`, what memory pressure does to lazily freed pages). A later
/// `MEM_RESET_UNDO` must not claim the data intact: it fails (the README's `ERROR_BUSY`,
/// 170) and the pages read zero; pages the kernel left alone keep their data. Without
/// pressure, the undo succeeds and everything is intact.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn reset_free_space_taken_by_the_kernel_is_reported_lost() {
    const SEG: usize = MB;
    let s = real_space(256 * MB);
    let heap = s.alloc(0, 256 * MB, T::RESERVE, Pr::NOACCESS).unwrap();
    s.alloc(heap, SEG, T::COMMIT, Pr::READWRITE).unwrap();
    for i in 0..SEG / P {
        poke(heap + i * P + 8 * (i % 500), 0x5eed_0000 + i as u64);
    }
    let value = |i: usize| peek(heap + i * P + 8 * (i % 500));
    assert_eq!(resident_pages(heap..heap + SEG), SEG / P);

    // No pressure: reset then undo keeps everything.
    let half = heap + SEG / 2;
    assert_eq!(s.alloc(half, SEG / 2, T::RESET, Pr::READWRITE), Ok(half));
    assert_eq!(s.alloc(half, SEG / 2, T::RESET_UNDO, Pr::READWRITE), Ok(half));
    assert!((0..SEG / P).all(|i| value(i) == 0x5eed_0000 + i as u64));

    // Reset again, then the kernel reclaims the first 16 pages of the reset part.
    assert_eq!(s.alloc(half, SEG / 2, T::RESET, Pr::READWRITE), Ok(half));
    let q = s.query(half).unwrap();
    assert_eq!((q.state, q.protect, q.region_size), (MemState::Commit, Pr::READWRITE, SEG / 2));
    assert_eq!(s.committed_bytes(), SEG, "a reset keeps the charge");
    // SAFETY: a part of our own reservation; MADV_PAGEOUT only reclaims pages, which for
    // lazily freed ones means dropping them.
    let r = unsafe { libc::madvise(half as *mut libc::c_void, 16 * P, libc::MADV_PAGEOUT) };
    assert_eq!(r, 0, "MADV_PAGEOUT: {}", std::io::Error::last_os_error());
    let taken = 16 - resident_pages(half..half + 16 * P);
    assert!(taken > 0, "the kernel took none of the 16 lazily freed pages");
    let got = s.alloc(half, SEG / 2, T::RESET_UNDO, Pr::READWRITE);
    assert_eq!(got, Err(Error::DataDiscarded), "the kernel took {taken} pages; the undo must say so");
    assert_eq!(got.unwrap_err().code(), 170);
    // What the kernel took reads zero; what it left is intact; the first half (never
    // reset) is untouched. (Read after the undo, whose store cancelled the lazy free.)
    let lost: Vec<usize> = (SEG / P / 2..SEG / P).filter(|&i| value(i) == 0).collect();
    assert_eq!(lost.len(), taken, "pages lost: {lost:?}");
    assert!(lost.iter().all(|&i| i < SEG / P / 2 + 16));
    assert!((0..SEG / P).filter(|i| !lost.contains(i)).all(|i| value(i) == 0x5eed_0000 + i as u64));
    let q = s.query(heap).unwrap();
    assert_eq!((q.state, q.protect, q.region_size), (MemState::Commit, Pr::READWRITE, SEG));
    s.free(heap, 0, F::RELEASE).unwrap();
    assert_eq!((s.reserved_bytes(), s.committed_bytes()), (0, 0));
}

// ----- 2. A JIT code heap ----------------------------------------------------------------

/// Call the code at `addr` as `extern "C" fn() -> u32`.
#[cfg(all(target_os = "linux", not(miri), any(target_arch = "x86_64", target_arch = "aarch64")))]
fn call(addr: usize) -> u32 {
    // SAFETY: callers pass executable memory holding a whole function of that type.
    let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(addr) };
    f()
}

/// A JIT's code heap on real memory: reserve, commit a code page between two reserved
/// guard pages, emit code read-write, flip to execute-read (W^X), run it; patch it by
/// flipping back. `VirtualProtect` reports the old protection, query and the kernel the
/// new one, and the CPU enforces it (a store into code, a jump into a guard page: a
/// forked child dies of SIGSEGV).
#[cfg(all(target_os = "linux", not(miri), any(target_arch = "x86_64", target_arch = "aarch64")))]
#[test]
fn jit_code_heap_with_w_xor_x() {
    use common::linux_util::{child_signal, store};
    let s = real_space(16 * MB);
    let heap = s.alloc(0, 16 * MB, T::RESERVE, Pr::NOACCESS).unwrap();
    // [guard: reserved][code: 2 pages][guard: reserved]
    let code = heap + P;
    assert_eq!(s.alloc(code, 2 * P, T::COMMIT, Pr::READWRITE), Ok(code));
    let emit = |at: usize, bytes: &[u8]| {
        // SAFETY: `at` is committed read-write memory of the code heap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) };
    };
    let f1 = code;
    let f2 = code + P + 64;
    emit(f1, &returns(42));
    emit(f2, &returns(7));

    // W^X: the flip reports the old protection and the kernel shows r-x.
    assert_eq!(s.protect(code, 2 * P, Pr::EXECUTE_READ), Ok(Pr::READWRITE));
    s.flush_instruction_cache(code, 2 * P);
    let q = s.query(code).unwrap();
    assert_eq!(
        (q.base_address, q.allocation_base, q.allocation_protect, q.region_size, q.state, q.protect),
        (code, heap, Pr::NOACCESS, 2 * P, MemState::Commit, Pr::EXECUTE_READ)
    );
    assert_eq!(
        kernel_view(heap..heap + 4 * P),
        [
            (heap, code, "---p".to_string()),
            (code, code + 2 * P, "r-xp".to_string()),
            (code + 2 * P, heap + 4 * P, "---p".to_string()),
        ]
    );
    assert_eq!(call(f1), 42);
    assert_eq!(call(f2), 7);
    // Code is readable (a JIT reads its own code back), not writable.
    let mut back = vec![0u8; returns(42).len()];
    s.read(f1, &mut back).unwrap();
    assert_eq!(back, returns(42));
    s.execute(f2, &mut back).unwrap();
    assert_eq!(back, returns(7));
    assert_eq!(s.write(f1, &[0x90]), Err(Error::AccessViolation { address: f1, access: AccessKind::Write }));
    // Fetching into the guard page after the code faults there, at its first byte.
    assert_eq!(
        s.execute(code + 2 * P - 4, &mut [0u8; 8]),
        Err(Error::AccessViolation { address: code + 2 * P, access: AccessKind::Execute })
    );
    assert_eq!(child_signal(|| store(f1, 0x90)), Some(libc::SIGSEGV), "a store into code must fault");
    assert_eq!(
        child_signal(|| {
            call(heap + 3 * P);
        }),
        Some(libc::SIGSEGV),
        "a jump into a guard page must fault"
    );
    assert_eq!(call(f1), 42, "the child's faults changed nothing here");

    // A protect reaching into the guard page fails and changes nothing.
    assert_eq!(s.protect_detailed(code + P, 2 * P, Pr::READWRITE), Err((Error::InvalidAddress, Some(Pr::NOACCESS))));
    assert_eq!(s.query(code).unwrap().region_size, 2 * P);
    assert_eq!(kernel_view(code..code + 2 * P), [(code, code + 2 * P, "r-xp".to_string())]);

    // Patch the second function: only its page goes back to read-write.
    assert_eq!(s.protect(f2, 1, Pr::READWRITE), Ok(Pr::EXECUTE_READ));
    let q = s.query(code).unwrap();
    assert_eq!((q.protect, q.region_size), (Pr::EXECUTE_READ, P));
    let q = s.query(f2).unwrap();
    assert_eq!((q.base_address, q.protect, q.region_size), (code + P, Pr::READWRITE, P));
    assert_eq!(call(f1), 42, "the first page stays executable while the second is patched");
    emit(f2, &returns(8));
    assert_eq!(s.protect(f2, 1, Pr::EXECUTE_READ), Ok(Pr::READWRITE));
    s.flush_instruction_cache(f2, 8);
    assert_eq!(call(f2), 8);
    let q = s.query(code).unwrap();
    assert_eq!((q.protect, q.region_size), (Pr::EXECUTE_READ, 2 * P), "equal neighbours are one region again");

    // The code is dropped: decommitted pages fault, and recommitted they hold no stale code.
    s.free(code, 2 * P, F::DECOMMIT).unwrap();
    assert_eq!(
        child_signal(|| {
            call(f1);
        }),
        Some(libc::SIGSEGV)
    );
    assert_eq!(s.alloc(code, P, T::COMMIT, Pr::READWRITE), Ok(code));
    let mut zeros = vec![0xFFu8; P];
    s.read(code, &mut zeros).unwrap();
    assert!(zeros.iter().all(|&b| b == 0));
    s.free(heap, 0, F::RELEASE).unwrap();
    assert_eq!((s.reserved_bytes(), s.committed_bytes()), (0, 0));
}

/// A JIT's code must lie within ±2 GiB of the runtime's own helpers for `call rel32`.
/// A runtime written for `VirtualAlloc` (not `VirtualAlloc2`'s address requirements,
/// `alloc_within` here) walks the space upwards from its own code with `VirtualQuery`
/// for a free range and reserves there. The walk describes the program's image (`MEM_IMAGE`, executable, its
/// own base) and the free gap after it; the reservation at the found address works; and
/// the runtime's own code is not the space's to change (487).
#[cfg(all(target_os = "linux", not(miri), any(target_arch = "x86_64", target_arch = "aarch64")))]
#[test]
fn jit_code_heap_near_the_runtimes_own_code() {
    use virtmem::LinuxSpace;
    const CODE_HEAP: usize = 64 * MB;
    let s = LinuxSpace::linux().unwrap();
    let helper = jit_code_heap_near_the_runtimes_own_code as *const () as usize;
    let m = s.query(helper).unwrap();
    assert_eq!((m.state, m.mem_type), (MemState::Commit, Some(MemType::Image)), "{m:x?}");
    assert!(m.protect.can_execute() && !m.protect.can_write(), "{m:x?}");
    assert!(m.allocation_base <= m.base_address && m.base_address + m.region_size > helper, "{m:x?}");
    assert_eq!(s.protect(helper, 1, Pr::EXECUTE_READWRITE), Err(Error::InvalidAddress), "the program's own code");
    assert_eq!(s.free(m.allocation_base, 0, F::RELEASE), Err(Error::InvalidAddress));

    // Down from the program's image to the first free range that holds the code heap
    // (below it, not above: above lies the program break's growth room, which query
    // reports free like any other; a reserve there stops malloc's brk growth).
    let image = m.allocation_base;
    let mut candidate = (image - CODE_HEAP) & !(G - 1);
    let found = loop {
        let m = s.query(candidate).unwrap();
        check_answer(candidate, &m, s.system_info().maximum_application_address + 1);
        if m.state == MemState::Free && m.base_address + m.region_size >= candidate + CODE_HEAP {
            break candidate;
        }
        candidate -= CODE_HEAP;
        assert!(helper - candidate < GB, "no free 64 MiB within 1 GiB below the program's code");
    };
    // (Another thread's mmap may take the range between the query and the reserve: then
    // a runtime looks again. Nothing in this test binary maps there without an address.)
    let heap = s.alloc(found, CODE_HEAP, T::RESERVE, Pr::NOACCESS).unwrap();
    assert_eq!(heap, found);
    assert!(helper - heap < 2 * GB);
    s.alloc(heap, P, T::COMMIT, Pr::READWRITE).unwrap();
    // SAFETY: committed read-write memory of the code heap.
    unsafe { std::ptr::copy_nonoverlapping(returns(5).as_ptr(), heap as *mut u8, returns(5).len()) };
    assert_eq!(s.protect(heap, P, Pr::EXECUTE_READ), Ok(Pr::READWRITE));
    s.flush_instruction_cache(heap, P);
    assert_eq!(call(heap), 5);
    s.free(heap, 0, F::RELEASE).unwrap();
}

// ----- 3. Thread stacks with PAGE_GUARD --------------------------------------------------

/// A runtime's thread stack on the simulated backend, grown as Windows grows one: a
/// reserved megabyte, the top pages committed, a `PAGE_GUARD` page below them. Each push
/// that reaches the guard page raises `STATUS_GUARD_PAGE_VIOLATION` once, the page is then
/// plain read-write (the retry succeeds) and the runtime arms the next page down; at the
/// last page, a push into reserved memory is the stack overflow
/// (`STATUS_ACCESS_VIOLATION`).
#[test]
fn thread_stack_grows_through_its_guard_page_on_the_simulated_backend() {
    const STACK: usize = 256 * KB;
    let s = SimSpace::simulated();
    let base = s.alloc(0, STACK, T::RESERVE, Pr::READWRITE).unwrap();
    let top = base + STACK;
    s.alloc(top - 2 * P, 2 * P, T::COMMIT, Pr::READWRITE).unwrap();
    let mut guard = top - 3 * P;
    s.alloc(guard, P, T::COMMIT, Pr::READWRITE | Pr::GUARD).unwrap();
    let q = s.query(guard).unwrap();
    assert_eq!((q.state, q.protect, q.region_size), (MemState::Commit, Pr::READWRITE | Pr::GUARD, P));

    // A read of the guard page that a check only looks at leaves it armed.
    let e = s.check_quiet(guard + 8, 8, AccessKind::Read).unwrap_err();
    assert_eq!(e, Error::GuardPage { address: guard + 8, access: AccessKind::Read });
    assert_eq!(s.query(guard).unwrap().protect, Pr::READWRITE | Pr::GUARD);
    // An access that meets a reserved page first faults there and disarms nothing.
    assert_eq!(
        s.write(guard - 8, &[1; 16]),
        Err(Error::AccessViolation { address: guard - 8, access: AccessKind::Write })
    );
    assert_eq!(s.query(guard).unwrap().protect, Pr::READWRITE | Pr::GUARD);

    let frame = [0xAB_u8; 1000];
    let mut sp = top;
    let (mut hits, mut overflow) = (0, None);
    while overflow.is_none() {
        sp -= frame.len();
        match s.write(sp, &frame) {
            Ok(()) => {}
            Err(e @ Error::GuardPage { address, access }) => {
                hits += 1;
                assert_eq!((e.exception_code(), e.code()), (Some(0x8000_0001), 998));
                // The first byte of the push on the guard page (the push may start above it).
                assert_eq!((address, access), (sp.max(guard), AccessKind::Write));
                // One-shot: the page is plain read-write now and joins the stack above.
                let q = s.query(guard).unwrap();
                assert_eq!((q.protect, q.region_size), (Pr::READWRITE, top - guard));
                // Nothing of the push was written.
                let mut old = vec![0u8; frame.len()];
                s.read(sp, &mut old).unwrap_or_else(|e| panic!("{e}"));
                assert!(old[..address - sp].iter().all(|&b| b == 0xAB || b == 0), "a failed push wrote nothing");
                // The runtime arms the next page down, keeping the last one as the hard stop.
                if guard - P > base {
                    guard -= P;
                    s.alloc(guard, P, T::COMMIT, Pr::READWRITE | Pr::GUARD).unwrap();
                }
                s.write(sp, &frame).expect("the retried push succeeds");
            }
            Err(e) => overflow = Some(e),
        }
    }
    // Every page from the third from the top down to base + P was a guard page once.
    assert_eq!(hits, STACK / P - 3);
    let e = overflow.unwrap();
    assert_eq!(e.exception_code(), Some(0xC000_0005));
    // (Its first byte, in address order, lies in the reserved last page.)
    assert!(sp < base + P);
    assert_eq!(e, Error::AccessViolation { address: sp, access: AccessKind::Write });
    let q = s.query(base).unwrap();
    assert_eq!((q.state, q.region_size), (MemState::Reserve, P));
    assert_eq!(s.committed_bytes(), STACK - P);

    // Re-arming through VirtualProtect reports the old protection, and the GUARD bit
    // while armed; a lock touching the armed page fails with the guard exception and
    // disarms it, as an access does.
    assert_eq!(s.protect(top - P, P, Pr::READWRITE | Pr::GUARD), Ok(Pr::READWRITE));
    assert_eq!(s.protect(top - P, P, Pr::READWRITE | Pr::GUARD), Ok(Pr::READWRITE | Pr::GUARD));
    assert_eq!(s.lock(top - 2 * P, 2 * P), Err(Error::GuardPage { address: top - P, access: AccessKind::Read }));
    assert_eq!(s.query(top - P).unwrap().protect, Pr::READWRITE);
    s.free(base, 0, F::RELEASE).unwrap();
    assert_eq!(s.stats().reservations, 0);
}

/// The same stack on real memory: query and protect report the GUARD bit and the kernel
/// keeps the page inaccessible. A CPU touch is a SIGSEGV there (README, known limits),
/// but a checked access gives Windows' one-shot behaviour, after which the page is
/// really read-write.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn thread_stack_guard_page_on_real_memory() {
    use common::linux_util::{child_signal, load, store};
    const STACK: usize = MB;
    let s = real_space(STACK);
    let base = s.alloc(0, STACK, T::RESERVE, Pr::READWRITE).unwrap();
    let top = base + STACK;
    s.alloc(top - 2 * P, 2 * P, T::COMMIT, Pr::READWRITE).unwrap();
    let guard = top - 3 * P;
    assert_eq!(s.alloc(guard, P, T::COMMIT, Pr::READWRITE | Pr::GUARD), Ok(guard));
    let q = s.query(guard).unwrap();
    assert_eq!(
        (q.allocation_base, q.allocation_protect, q.state, q.protect, q.region_size),
        (base, Pr::READWRITE, MemState::Commit, Pr::READWRITE | Pr::GUARD, P)
    );
    assert_eq!(
        kernel_view(guard - P..top),
        [(guard - P, guard + P, "---p".to_string()), (guard + P, top, "rw-p".to_string()),]
    );
    store(top - 8, 1);
    assert_eq!(child_signal(|| touch_guard(guard)), Some(libc::SIGSEGV), "a CPU touch of a guard page");
    assert_eq!(s.query(guard).unwrap().protect, Pr::READWRITE | Pr::GUARD, "the child's fault changed nothing here");
    // protect's old value includes GUARD while armed.
    assert_eq!(s.protect(guard, P, Pr::READWRITE | Pr::GUARD), Ok(Pr::READWRITE | Pr::GUARD));
    assert_eq!(s.protect(guard, 2 * P, Pr::READWRITE | Pr::GUARD), Ok(Pr::READWRITE | Pr::GUARD));
    assert_eq!(s.protect(guard + P, P, Pr::READWRITE), Ok(Pr::READWRITE | Pr::GUARD));
    // The one-shot exception through a checked write, then plain read-write memory.
    assert_eq!(
        s.write(guard + P - 8, &[5; 16]),
        Err(Error::GuardPage { address: guard + P - 8, access: AccessKind::Write })
    );
    let q = s.query(guard).unwrap();
    assert_eq!((q.protect, q.region_size), (Pr::READWRITE, 3 * P));
    assert_eq!(kernel_view(guard..top), [(guard, top, "rw-p".to_string())]);
    s.write(guard + P - 8, &[5; 16]).unwrap();
    assert_eq!((load(guard + P - 1), load(guard + P)), (5, 5));
    store(guard, 9);
    s.free(base, 0, F::RELEASE).unwrap();
    assert_eq!((s.reserved_bytes(), s.committed_bytes()), (0, 0));
}

#[cfg(all(target_os = "linux", not(miri)))]
fn touch_guard(addr: usize) {
    common::linux_util::touch(addr)
}

// ----- 4. Allocators on several threads, a walker on another -----------------------------

/// The reservation each allocator thread makes, told apart in a walk by its
/// `AllocationProtect`: (AllocationProtect, size). One is smaller than a granule. (The
/// `PAGE_WRITECOMBINE` bit, which the reservation keeps as its AllocationProtect but
/// passes to no page, tells them from memory that is not the space's: on the process
/// space, other tests' mappings come and go at the same addresses.)
const TAGS: [(Pr, usize); 3] = [
    (Pr::READWRITE.union(Pr::WRITECOMBINE), 5 * G + 3 * P),
    (Pr::EXECUTE_READWRITE.union(Pr::WRITECOMBINE), 2 * G + P),
    (Pr::READONLY.union(Pr::WRITECOMBINE), 9 * P),
];
/// The protections the allocators commit with.
const COMMITS: [Pr; 4] = [Pr::READWRITE, Pr::READONLY, Pr::EXECUTE_READ, Pr::READWRITE.union(Pr::GUARD)];

/// One allocator thread: reserve at no particular address (the space picks, so threads
/// race for the same places), commit, write, protect, decommit, reset, release; never
/// more than two reservations alive. Every call on its own reservations must succeed.
fn allocator(
    s: &dyn VirtualSpace,
    t: usize,
    stop: &AtomicBool,
    bases: &Mutex<BTreeSet<usize>>,
    done: &AtomicUsize,
) -> usize {
    let (tag, size) = TAGS[t];
    let pages = size.div_ceil(P);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
    let mut alive: Vec<usize> = Vec::new();
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) || !alive.is_empty() {
        rounds += 1;
        done.fetch_add(1, Ordering::Relaxed);
        if alive.len() < 2 && !stop.load(Ordering::Relaxed) {
            let ty = if rng.below(2) == 0 { T::RESERVE } else { T::RESERVE | T::WRITE_WATCH };
            let b = s.alloc(0, size, ty, tag).unwrap_or_else(|e| panic!("thread {t}: reserve: {e}"));
            bases.lock().unwrap().insert(b);
            alive.push(b);
        }
        let b = alive[rng.below(alive.len())];
        let at = rng.below(pages);
        let n = 1 + rng.below(pages - at);
        let (a, len) = (b + at * P, n * P);
        match rng.below(6) {
            0 | 1 => {
                let p = COMMITS[rng.below(COMMITS.len())];
                assert_eq!(s.alloc(a, len, T::COMMIT, p), Ok(a), "thread {t}: commit");
                if p == Pr::READWRITE {
                    s.write(a, &[t as u8 + 1; 64]).unwrap();
                }
            }
            2 => s.free(a, len, F::DECOMMIT).unwrap(),
            3 => {
                let p = COMMITS[rng.below(3)];
                let all_committed = common::walk(s, a..a + len).iter().all(|m| m.state == MemState::Commit);
                let got = s.protect(a, len, p);
                assert_eq!(got.is_ok(), all_committed, "thread {t}: protect {a:#x}+{len:#x}: {got:?}");
            }
            4 => assert_eq!(s.alloc(a, len, T::RESET, Pr::READWRITE), Ok(a)),
            _ => {
                let i = alive.iter().position(|&x| x == b).unwrap();
                s.free(alive.swap_remove(i), 0, F::RELEASE).unwrap();
            }
        }
    }
    rounds
}

/// Walk `[from, to)` with `VirtualQuery` until `stop`; check every answer (see
/// [`check_answer`]), and, for an answer in a reservation of one of the allocators (its
/// AllocationProtect a tag), that the region stays inside that reservation and has a
/// protection the allocators use. Returns the number of walks (also counted in `done`).
fn walker(s: &dyn VirtualSpace, from: usize, to: usize, stop: &AtomicBool, done: &AtomicUsize) -> usize {
    let mut walks = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut a = from;
        while a < to {
            let m = s.query(a).unwrap_or_else(|e| panic!("query {a:#x}: {e}"));
            check_answer(a, &m, to);
            if let Some(&(_, size)) = TAGS.iter().find(|(tag, _)| *tag == m.allocation_protect) {
                assert_ne!(m.state, MemState::Free, "{m:x?}");
                assert_eq!(m.mem_type, Some(MemType::Private), "{m:x?}");
                assert_eq!(m.allocation_base % G, 0, "{m:x?}");
                assert!(
                    m.base_address + m.region_size <= m.allocation_base + size,
                    "region past its reservation: {m:x?}"
                );
                if m.state == MemState::Commit {
                    assert!(COMMITS.contains(&m.protect), "{m:x?}");
                }
            }
            let st = s.stats();
            assert!(st.committed <= st.reserved, "{st:?}");
            a = m.base_address + m.region_size;
        }
        walks += 1;
        done.fetch_add(1, Ordering::Relaxed);
    }
    walks
}

/// Three allocators and a walker on one space for `ms` milliseconds, and longer until the
/// walker has walked the space 3 times and the allocators made 1000 rounds (on a loaded
/// machine the scheduler may give the walker a single walk in `ms`); afterwards the
/// space's totals are back where they were and every reservation made is free again.
fn allocators_and_walker(s: &dyn VirtualSpace, walk: std::ops::Range<usize>, ms: u64) {
    let before = (s.reserved_bytes(), s.committed_bytes());
    let stop = AtomicBool::new(false);
    let bases = Mutex::new(BTreeSet::new());
    let (turned, walked) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (rounds, walks) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..TAGS.len())
            .map(|t| {
                scope.spawn({
                    let (stop, bases, turned) = (&stop, &bases, &turned);
                    move || allocator(s, t, stop, bases, turned)
                })
            })
            .collect();
        let w = scope.spawn(|| walker(s, walk.start, walk.end, &stop, &walked));
        std::thread::sleep(std::time::Duration::from_millis(ms));
        // (A minute more at most: a walker that makes no progress fails below.)
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while (walked.load(Ordering::Relaxed) < 3 || turned.load(Ordering::Relaxed) < 1000)
            && std::time::Instant::now() < give_up
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        let rounds: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        (rounds, w.join().unwrap())
    });
    assert!(walks >= 3 && rounds >= 1000, "{walks} walks, {rounds} rounds: no race");
    assert_eq!((s.reserved_bytes(), s.committed_bytes()), before);
    for &b in bases.lock().unwrap().iter() {
        let m = s.query(b).unwrap();
        assert_eq!((m.state, m.allocation_base), (MemState::Free, 0), "{b:#x} after every release: {m:x?}");
    }
}

#[test]
fn allocators_and_a_walker_on_a_simulated_space() {
    let s = SimSpace::simulated();
    let top = s.system_info().maximum_application_address + 1;
    allocators_and_walker(&s, 0..top, 700);
    assert_eq!(s.stats().reservations, 0);
}

/// The same on the process's own space (`virtmem::current_process()`, what a runtime
/// uses), the walker going over the whole process: the program's own mappings, other
/// threads' stacks and heaps come and go meanwhile, and must be answered just as
/// consistently. (No other test of this binary uses the process space, nor places
/// reservations where it does: the others' spaces are confined to windows of their own,
/// see [`real_space`], so a reservation of the allocators is free once released.)
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn allocators_and_a_walker_on_the_process_space() {
    let s = virtmem::current_process();
    let top = s.system_info().maximum_application_address + 1;
    allocators_and_walker(s, 0..top, 700);
}

/// A background GC scans the cards (`GetWriteWatch` with `WRITE_WATCH_FLAG_RESET`) while
/// mutators keep storing into pages that already hold objects, each store a value never
/// stored before. No store may be lost: after the mutators stop and a last scan, every
/// page whose value changed since the GC last read it after reporting it must be in that
/// last scan. (A store after the scan that reported its page either is reported by a
/// later scan, or was seen by the read that followed the report.)
fn cards_under_concurrent_stores(
    s: &dyn VirtualSpace,
    heap: usize,
    pages: usize,
    store: &(dyn Fn(usize, u64) + Sync),
    load: &dyn Fn(usize) -> u64,
) {
    for i in 0..pages {
        store(heap + i * P, 1);
    }
    s.reset_write_watch(heap, pages * P).unwrap();
    let stop = AtomicBool::new(false);
    let seq = std::sync::atomic::AtomicU64::new(2);
    let mut seen = vec![1u64; pages];
    let mut scans = 0;
    std::thread::scope(|scope| {
        let mutators: Vec<_> = (0..2u64)
            .map(|m| {
                let (stop, seq) = (&stop, &seq);
                scope.spawn(move || {
                    let mut rng = Rng(0x1234_5678 + m);
                    while !stop.load(Ordering::Relaxed) {
                        // Each mutator owns every other page: one store at a time per page.
                        let page = 2 * rng.below(pages / 2) + m as usize;
                        store(heap + page * P, seq.fetch_add(1, Ordering::Relaxed));
                    }
                })
            })
            .collect();
        // 400 ms of scans, and at least 11 of them however little of the processor this
        // thread gets on a loaded machine (a minute at most: a scan that never ends fails
        // below).
        let start = std::time::Instant::now();
        let (least, give_up) = (std::time::Duration::from_millis(400), std::time::Duration::from_secs(60));
        while (start.elapsed() < least || scans <= 10) && start.elapsed() < give_up {
            for a in s.get_write_watch(W::RESET, heap, pages * P, usize::MAX).unwrap() {
                let i = (a - heap) / P;
                seen[i] = load(heap + i * P);
            }
            scans += 1;
        }
        stop.store(true, Ordering::Relaxed);
        mutators.into_iter().for_each(|m| m.join().unwrap());
    });
    let last: BTreeSet<usize> = s
        .get_write_watch(W::empty(), heap, pages * P, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|a| (a - heap) / P)
        .collect();
    let lost: Vec<usize> = (0..pages).filter(|&i| load(heap + i * P) != seen[i] && !last.contains(&i)).collect();
    assert!(lost.is_empty(), "stores to pages {lost:?} were never reported ({scans} scans)");
    assert!(scans > 10, "{scans} scans: no race");
}

#[test]
fn cards_under_concurrent_stores_on_a_simulated_space() {
    let s = SimSpace::simulated();
    let heap = s.alloc(0, HEAP, T::RESERVE | T::WRITE_WATCH, Pr::NOACCESS).unwrap();
    s.alloc(heap, 256 * P, T::COMMIT, Pr::READWRITE).unwrap();
    let store = |a: usize, v: u64| s.write(a, &v.to_ne_bytes()).unwrap();
    let load = |a: usize| {
        let mut b = [0u8; 8];
        s.read(a, &mut b).unwrap();
        u64::from_ne_bytes(b)
    };
    cards_under_concurrent_stores(&s, heap, 256, &store, &load);
    s.free(heap, 0, F::RELEASE).unwrap();
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn cards_under_concurrent_stores_through_pointers() {
    let s = real_space(HEAP);
    let heap = s.alloc(0, HEAP, T::RESERVE | T::WRITE_WATCH, Pr::NOACCESS).unwrap();
    s.alloc(heap, 256 * P, T::COMMIT, Pr::READWRITE).unwrap();
    let store = |a: usize, v: u64| {
        // SAFETY: committed read-write memory of the heap; one thread per page at a time.
        unsafe { (*(a as *const std::sync::atomic::AtomicU64)).store(v, Ordering::SeqCst) }
    };
    // SAFETY: as for `store`.
    let load = |a: usize| unsafe { (*(a as *const std::sync::atomic::AtomicU64)).load(Ordering::SeqCst) };
    cards_under_concurrent_stores(&s, heap, 256, &store, &load);
    s.free(heap, 0, F::RELEASE).unwrap();
}

// ----- 5. A GC at its commit limit -------------------------------------------------------

/// A GC heap under a commit limit of ten 1 MiB segments: it commits segments until the
/// eleventh fails with `ERROR_COMMITMENT_LIMIT` (1455). Every way a GC can then ask for
/// more (the next segment, a range overlapping committed pages with another protection,
/// a new reserve-and-commit, a single page) fails alike and changes nothing: the walk,
/// the contents, the totals and (on Linux) the kernel's mappings are as before.
/// Recommitting what is committed needs no new charge; freeing a segment makes room for
/// exactly one; a limit lowered below the charge blocks commits but not decommits.
fn gc_at_its_commit_limit(
    s: &dyn VirtualSpace,
    kernel: &dyn Fn(std::ops::Range<usize>) -> Vec<(usize, usize, String)>,
) {
    const SEG: usize = MB;
    const LIMIT: usize = 10 * SEG;
    s.set_commit_limit(Some(LIMIT));
    assert_eq!(s.commit_limit(), Some(LIMIT));
    let heap = s.alloc(0, HEAP, T::RESERVE, Pr::NOACCESS).expect("reserving is not committing");
    let mut n = 0;
    let err = loop {
        match s.alloc(heap + n * SEG, SEG, T::COMMIT, Pr::READWRITE) {
            Ok(a) => {
                assert_eq!(a, heap + n * SEG);
                s.write(a + 40, &(n as u64 + 1).to_ne_bytes()).unwrap();
                n += 1;
            }
            Err(e) => break e,
        }
    };
    assert_eq!((n, err, err.code(), err.name()), (10, Error::CommitmentLimit, 1455, "ERROR_COMMITMENT_LIMIT"));
    assert_eq!(s.committed_bytes(), LIMIT);

    let whole = heap..heap + 12 * SEG;
    let before = (snapshot(s, whole.clone()), s.stats(), kernel(whole.clone()));
    let attempts: [(usize, usize, T, Pr); 6] = [
        (heap + 10 * SEG, SEG, T::COMMIT, Pr::READWRITE), // the next segment
        (heap + 10 * SEG - P, 2 * P, T::COMMIT, Pr::READONLY), // one committed page, one new
        (heap + 9 * SEG, SEG + 1, T::COMMIT, Pr::EXECUTE_READWRITE), // a segment and a byte
        (heap + 11 * SEG, 1, T::COMMIT, Pr::READWRITE),   // a single page
        (0, SEG, T::RESERVE | T::COMMIT, Pr::READWRITE),  // a new reservation
        (0, P, T::COMMIT, Pr::READWRITE),                 // the same, Windows' other way
    ];
    for (a, size, ty, p) in attempts {
        assert_eq!(s.alloc(a, size, ty, p), Err(Error::CommitmentLimit), "{ty:?} {a:#x}+{size:#x} {p:?}");
        assert_eq!(
            (snapshot(s, whole.clone()), s.stats(), kernel(whole.clone())),
            before,
            "after {ty:?} {a:#x}+{size:#x}"
        );
    }

    // What is committed may be committed again (another protection too): no new charge.
    assert_eq!(s.alloc(heap + 9 * SEG, SEG, T::COMMIT, Pr::READONLY), Ok(heap + 9 * SEG));
    assert_eq!(s.committed_bytes(), LIMIT);
    assert_eq!(s.query(heap + 9 * SEG).unwrap().protect, Pr::READONLY);
    // The GC frees segment 3: room for one segment, exactly.
    s.free(heap + 3 * SEG, SEG, F::DECOMMIT).unwrap();
    assert_eq!(s.alloc(heap + 10 * SEG, SEG, T::COMMIT, Pr::READWRITE), Ok(heap + 10 * SEG));
    assert_eq!(s.committed_bytes(), LIMIT);
    assert_eq!(s.alloc(heap + 3 * SEG, P, T::COMMIT, Pr::READWRITE), Err(Error::CommitmentLimit));
    // A limit lowered below the charge: nothing new, but decommit and protect work.
    s.set_commit_limit(Some(LIMIT / 2));
    assert_eq!(s.alloc(heap + 3 * SEG, P, T::COMMIT, Pr::READWRITE), Err(Error::CommitmentLimit));
    assert_eq!(s.protect(heap, SEG, Pr::READONLY), Ok(Pr::READWRITE));
    s.free(heap + 4 * SEG, 2 * SEG, F::DECOMMIT).unwrap();
    assert_eq!(s.committed_bytes(), LIMIT - 2 * SEG);
    // No limit: commits go on; the data of the surviving segments is intact.
    s.set_commit_limit(None);
    assert_eq!(s.alloc(heap + 3 * SEG, SEG, T::COMMIT, Pr::READWRITE), Ok(heap + 3 * SEG));
    for i in [0, 1, 2, 6, 7, 8] {
        let mut v = [0u8; 8];
        s.read(heap + i * SEG + 40, &mut v).unwrap();
        assert_eq!(u64::from_ne_bytes(v), i as u64 + 1);
    }
    s.free(heap, 0, F::RELEASE).unwrap();
    assert_eq!((s.reserved_bytes(), s.committed_bytes(), s.stats().reservations), (0, 0, 0));
}

#[test]
fn gc_at_its_commit_limit_on_a_simulated_space() {
    gc_at_its_commit_limit(&SimSpace::simulated(), &|_| Vec::new());
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn gc_at_its_commit_limit_on_real_memory() {
    gc_at_its_commit_limit(&real_space(HEAP), &kernel_view);
}
