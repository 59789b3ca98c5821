//! `GetWriteWatch` through the C ABI: what it does with the caller's array, and that it
//! allocates nothing once a first call has been served (with tracing off): a GC that
//! scans its cards every collection into the same array should not pay for heap
//! allocations per scan, as the Rust API's `get_write_watch_into` does not
//! (`crates/virtmem/tests/write_watch_no_alloc.rs`). This module's global allocator, the
//! one of this crate's unit-test binary, counts the allocations made by the thread that
//! asks (other test threads' are not counted) and passes every call on to the system
//! allocator.

use std::ffi::c_void;
use std::ptr::null_mut;

use crate::*;

#[path = "../../virtmem/tests/alloc_count/mod.rs"]
mod alloc_count;
use alloc_count::allocations_in;

const P: usize = 4096;

/// `GetWriteWatch(flags, base, size, array, &count, &granularity)` with `*count` = `room`
/// going in: (result, `*count` coming out, allocations made by the call).
unsafe fn get(flags: DWORD, base: usize, size: usize, array: *mut PVOID, room: usize) -> (UINT, usize, usize) {
    let (mut count, mut granularity): (ULONG_PTR, DWORD) = (room, 0);
    let (r, allocs) = allocations_in(|| GetWriteWatch(flags, base as PVOID, size, array, &mut count, &mut granularity));
    assert!(r != 0 || granularity == P as DWORD, "*granularity");
    (r, count, allocs)
}

/// A heap of this process written with plain stores between scans (every third page,
/// in separate runs): after a first scan, no `GetWriteWatch` allocates, with reset or
/// without, into an array on the heap (its pages checked through the kernel first) or on
/// the stack, capped or with room for every page, and neither does a `ResetWriteWatch`.
/// Each call reports exactly the pages written. (The counter itself is checked.)
#[test]
fn get_write_watch_through_the_c_abi_allocates_nothing() {
    const PAGES: usize = 1024;
    const HEAP: usize = PAGES * P;
    assert!(!crate::trace::on(), "these calls are measured with tracing off");
    // SAFETY: plain C calls with valid pointers; the stores go to committed read-write
    // pages of the heap this test allocated, which nothing else uses.
    unsafe {
        let heap = VirtualAlloc(null_mut(), HEAP, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE) as usize;
        assert_ne!(heap, 0, "a write-watched heap (Linux 6.7+): error {}", GetLastError());
        let dirty = |i: usize| std::ptr::write_volatile((heap + i * P) as *mut u8, 1);
        let mut cards: Vec<PVOID> = vec![null_mut::<c_void>(); PAGES];
        let mut few: [PVOID; 8] = [null_mut(); 8];
        // A first scan sets up what any scan needs.
        dirty(7);
        assert_eq!(get(WRITE_WATCH_FLAG_RESET, heap, HEAP, cards.as_mut_ptr(), PAGES).0, 0);
        for round in 0..6 {
            let written: Vec<usize> = (round % 3..PAGES).step_by(3).map(|i| heap + i * P).collect();
            let n = written.len();
            written.iter().for_each(|&a| dirty((a - heap) / P));
            let reported = |array: &[PVOID], k: usize| array[..k].iter().map(|&p| p as usize).collect::<Vec<_>>();
            assert_eq!(get(0, heap, HEAP, cards.as_mut_ptr(), PAGES), (0, n, 0), "round {round}: scan");
            assert_eq!(reported(&cards, n), written, "round {round}");
            assert_eq!(get(WRITE_WATCH_FLAG_RESET, heap, HEAP, few.as_mut_ptr(), 8), (0, 8, 0), "round {round}");
            assert_eq!(reported(&few, 8), written[..8], "round {round}: capped, into a stack array");
            let (r, k, allocs) = get(WRITE_WATCH_FLAG_RESET, heap, HEAP, cards.as_mut_ptr(), PAGES);
            assert_eq!((r, k, allocs), (0, n - 8, 0), "round {round}: scan with reset");
            assert_eq!(reported(&cards, n - 8), written[8..], "round {round}");
            assert_eq!(get(WRITE_WATCH_FLAG_RESET, heap, HEAP, cards.as_mut_ptr(), PAGES), (0, 0, 0), "round {round}");
            written.iter().for_each(|&a| dirty((a - heap) / P));
            let (r, allocs) = allocations_in(|| ResetWriteWatch(heap as PVOID, HEAP));
            assert_eq!((r, allocs), (0, 0), "round {round}: ResetWriteWatch");
            assert_eq!(get(0, heap, HEAP, cards.as_mut_ptr(), PAGES).1, 0, "round {round}: reset");
        }
        let (v, allocs) = allocations_in(|| std::hint::black_box(vec![1u8; 16]));
        assert!(v.len() == 16 && allocs > 0, "the counter counts: {allocs}");
        assert_eq!(VirtualFree(heap as LPVOID, 0, MEM_RELEASE), TRUE);
    }
}

/// A write-watched heap of `pages` pages of this process, pages 1, 3 and 5 written.
unsafe fn heap_with_three_dirty_pages(pages: usize) -> usize {
    let heap = VirtualAlloc(null_mut(), pages * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE) as usize;
    assert_ne!(heap, 0, "a write-watched heap (Linux 6.7+): error {}", GetLastError());
    for i in [1, 3, 5] {
        std::ptr::write_volatile((heap + i * P) as *mut u8, 1);
    }
    heap
}

/// Header, `ERROR_NOACCESS`: "a bad pointer argument", here an array that cannot hold
/// `*lpdwCount` entries (capped at the range's pages); spec, Write watch: with `WRITE_WATCH_FLAG_RESET`
/// "only the pages it reported are reset", so a call that reports nothing resets
/// nothing. An array whose last page is read-only fails with 998, with the reset flag and
/// without, and neither the array, `*lpdwCount`, `*lpdwGranularity` nor the dirty state
/// changes; the same call with a count that fits in the writable part succeeds. With the
/// reset flag, a read-only `*lpdwCount` fails the same way before anything is reset.
#[test]
fn an_array_that_cannot_hold_the_count_is_998_and_changes_nothing() {
    // SAFETY: plain C calls; the array and the out-parameters point into pages this test
    // allocated (writable or read-only, as each case needs).
    unsafe {
        let heap = heap_with_three_dirty_pages(16);
        // Two pages: the first read-write, the second read-only, every byte 0xAB.
        let buf = VirtualAlloc(null_mut(), 2 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) as usize;
        assert_ne!(buf, 0);
        std::ptr::write_bytes(buf as *mut u8, 0xAB, 2 * P);
        let mut old = 0;
        assert_eq!(VirtualProtect((buf + P) as LPVOID, P, PAGE_READONLY, &mut old), TRUE);
        // Room for 4 entries before the read-only page.
        let array = (buf + P - 4 * size_of::<PVOID>()) as *mut PVOID;
        let untouched = || std::slice::from_raw_parts(buf as *const u8, 2 * P).iter().all(|&b| b == 0xAB);
        for flags in [0, WRITE_WATCH_FLAG_RESET] {
            let (mut count, mut granularity): (ULONG_PTR, DWORD) = (5, 7);
            SetLastError(0);
            let r = GetWriteWatch(flags, heap as PVOID, 16 * P, array, &mut count, &mut granularity);
            assert_eq!((r, GetLastError()), (u32::MAX, ERROR_NOACCESS), "flags {flags}");
            assert_eq!((count, granularity), (5, 7), "flags {flags}: nothing stored");
            assert!(untouched(), "flags {flags}: nothing written into the array");
        }
        // A read-only *lpdwCount with the reset flag: refused before anything is reset.
        let mut room = [null_mut(); 8];
        let ro_count = (buf + P) as PULONG_PTR;
        let mut granularity: DWORD = 7;
        let r =
            GetWriteWatch(WRITE_WATCH_FLAG_RESET, heap as PVOID, 16 * P, room.as_mut_ptr(), ro_count, &mut granularity);
        assert_eq!((r, GetLastError()), (u32::MAX, ERROR_NOACCESS));
        assert_eq!(room, [null_mut(); 8], "nothing written into the array");
        // Nothing was reset: the three pages are still reported, into the writable part.
        let (r, k, _) = get(WRITE_WATCH_FLAG_RESET, heap, 16 * P, array, 4);
        assert_eq!((r, k), (0, 3));
        let got: Vec<usize> = std::slice::from_raw_parts(array, 3).iter().map(|&p| p as usize).collect();
        assert_eq!(got, [heap + P, heap + 3 * P, heap + 5 * P]);
        assert_eq!(get(0, heap, 16 * P, array, 4).1, 0, "reset by the call that succeeded");
        assert_eq!(VirtualFree(heap as LPVOID, 0, MEM_RELEASE), TRUE);
        assert_eq!(VirtualFree(buf as LPVOID, 0, MEM_RELEASE), TRUE);
    }
}

/// An array that is not pointer-aligned (which C code does not make, but which the call
/// accepted) is written as any other: the pages reported, byte for byte, and nothing
/// past them; with the reset flag the pages reported are reset.
#[test]
fn a_misaligned_array_is_filled_as_an_aligned_one() {
    // SAFETY: plain C calls; the array lies inside `bytes`, a buffer of this test.
    unsafe {
        let heap = heap_with_three_dirty_pages(8);
        let mut bytes = vec![0xCDu8; 8 * size_of::<PVOID>() + 1];
        let array = bytes.as_mut_ptr().add(1) as *mut PVOID;
        for flags in [0, WRITE_WATCH_FLAG_RESET] {
            bytes.fill(0xCD);
            let (r, k, _) = get(flags, heap, 8 * P, array, 8);
            assert_eq!((r, k), (0, 3), "flags {flags}");
            let entry = |i: usize| {
                let at = 1 + i * size_of::<PVOID>();
                usize::from_ne_bytes(bytes[at..at + size_of::<PVOID>()].try_into().unwrap())
            };
            assert_eq!([entry(0), entry(1), entry(2)], [heap + P, heap + 3 * P, heap + 5 * P], "flags {flags}");
            assert!(
                bytes[0] == 0xCD && bytes[1 + 3 * size_of::<PVOID>()..].iter().all(|&b| b == 0xCD),
                "flags {flags}"
            );
        }
        assert_eq!(get(0, heap, 8 * P, array, 8).1, 0, "the reset flag reset the pages it reported");
        assert_eq!(VirtualFree(heap as LPVOID, 0, MEM_RELEASE), TRUE);
    }
}
