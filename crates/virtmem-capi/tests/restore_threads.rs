//! The built `libvirtmem.so`, loaded with dlopen: `VirtmemRestoreProcess` from many
//! threads at once, as a multi-threaded fuzzer calls it: two processes restored from
//! each other at once (every call ends), a process restored from itself through a tagged
//! handle, checked accesses meanwhile, and a snapshot process closed while restores use
//! it (each restore succeeds or fails with `ERROR_INVALID_HANDLE`, and a success leaves
//! the thread's last error alone).

mod common;

use std::ffi::c_void;
use std::sync::{Arc, Barrier};

type H = *mut c_void;
type CreateProcess = unsafe extern "C" fn() -> H;
type SnapshotProcess = unsafe extern "C" fn(H) -> H;
type RestoreProcess = unsafe extern "C" fn(H, H) -> i32;
type CloseHandle = unsafe extern "C" fn(H) -> i32;
type VirtualAllocEx = unsafe extern "C" fn(H, H, usize, u32, u32) -> H;
type Access = unsafe extern "C" fn(H, usize, *mut c_void, usize, u32, *mut usize) -> u32;
type GetLastError = unsafe extern "C" fn() -> u32;
type SetLastError = unsafe extern "C" fn(u32);

const MEM_RESERVE_COMMIT: u32 = 0x3000;
const PAGE_READWRITE: u32 = 4;
const ACCESS_READ: u32 = 0;
const ACCESS_WRITE: u32 = 1;

#[test]
fn restores_from_many_threads_at_once() {
    let lib = Arc::new(common::Lib::open());
    // SAFETY: the signatures match the exports (include/virtmem.h).
    let (create, snapshot, restore, close, alloc, access, get, set) = unsafe {
        (
            lib.get::<CreateProcess>("VirtmemCreateProcess"),
            lib.get::<SnapshotProcess>("VirtmemSnapshotProcess"),
            lib.get::<RestoreProcess>("VirtmemRestoreProcess"),
            lib.get::<CloseHandle>("CloseHandle"),
            lib.get::<VirtualAllocEx>("VirtualAllocEx"),
            lib.get::<Access>("VirtmemAccess"),
            lib.get::<GetLastError>("GetLastError"),
            lib.get::<SetLastError>("SetLastError"),
        )
    };
    // SAFETY: plain values; every handle stays open until the threads using it end,
    // but for `snap`, whose close while in use is the point.
    unsafe {
        let a = create();
        let b = create();
        assert!(!a.is_null() && !b.is_null());
        let base = alloc(a, std::ptr::null_mut(), 0x10000, MEM_RESERVE_COMMIT, PAGE_READWRITE) as usize;
        assert_eq!(alloc(b, std::ptr::null_mut(), 0x10000, MEM_RESERVE_COMMIT, PAGE_READWRITE) as usize, base);
        let mut one = 1u64;
        let mut two = 2u64;
        let mut fault = 0usize;
        assert_eq!(access(a, base, (&mut one as *mut u64).cast(), 8, ACCESS_WRITE, &mut fault), 0);
        assert_eq!(access(b, base, (&mut two as *mut u64).cast(), 8, ACCESS_WRITE, &mut fault), 0);
        let snap = snapshot(a);
        assert!(!snap.is_null());
        let (a, b, snap) = (a as usize, b as usize, snap as usize);
        const ROUNDS: usize = 500;
        let threads = 5;
        let barrier = Arc::new(Barrier::new(threads + 1));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let (a, b, snap) = (a as H, b as H, snap as H);
                    set(4242);
                    barrier.wait();
                    for _ in 0..ROUNDS {
                        match t {
                            0 => assert_eq!(restore(a, b), 1, "a from b: {}", get()),
                            1 => assert_eq!(restore(b, a), 1, "b from a: {}", get()),
                            2 => assert_eq!(restore(a, (a as usize | 1) as H), 1, "a from itself: {}", get()),
                            3 => {
                                // Either marker: b holds one of the two states at every moment.
                                let mut v = 0u64;
                                let mut fault = 0usize;
                                let r = access(b, base, (&mut v as *mut u64).cast(), 8, ACCESS_READ, &mut fault);
                                assert_eq!(r, 0);
                                assert!(v == 1 || v == 2, "a marker from no state given: {v}");
                            }
                            _ => {
                                if restore(b, snap) == 0 {
                                    assert_eq!(get(), 6, "a restore from a closed snapshot");
                                    set(4242);
                                }
                            }
                        }
                    }
                    assert_eq!(get(), 4242, "thread {t}: successes leave the last error alone");
                })
            })
            .collect();
        barrier.wait();
        // The snapshot is closed while thread 4 restores from it.
        assert_eq!(close(snap as H), 1);
        for t in handles {
            t.join().unwrap();
        }
        assert_eq!(restore(a as H, snap as H), 0);
        assert_eq!(get(), 6);
        assert_eq!(close(a as H), 1);
        assert_eq!(close(b as H), 1);
    }
}
