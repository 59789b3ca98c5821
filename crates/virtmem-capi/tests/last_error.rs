//! The built `libvirtmem.so`, loaded with dlopen: `GetLastError` is per thread, set by
//! every failing call on that thread only, and kept by succeeding calls.

mod common;

use std::ffi::c_void;
use std::sync::{Arc, Barrier};

type VirtualAllocEx = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, u32, u32) -> *mut c_void;
type VirtualFreeEx = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, u32) -> i32;
type GetLastError = unsafe extern "C" fn() -> u32;
type SetLastError = unsafe extern "C" fn(u32);
type GetCurrentProcess = unsafe extern "C" fn() -> *mut c_void;
type CreateProcess = unsafe extern "C" fn() -> *mut c_void;
type CloseHandle = unsafe extern "C" fn(*mut c_void) -> i32;

#[test]
fn each_thread_sees_only_its_own_last_error() {
    let lib = Arc::new(common::Lib::open());
    // SAFETY: the signatures match the exports (include/virtmem.h).
    let (alloc, free, get, set, current, create, close) = unsafe {
        (
            lib.get::<VirtualAllocEx>("VirtualAllocEx"),
            lib.get::<VirtualFreeEx>("VirtualFreeEx"),
            lib.get::<GetLastError>("GetLastError"),
            lib.get::<SetLastError>("SetLastError"),
            lib.get::<GetCurrentProcess>("GetCurrentProcess"),
            lib.get::<CreateProcess>("VirtmemCreateProcess"),
            lib.get::<CloseHandle>("CloseHandle"),
        )
    };
    // SAFETY: plain values throughout.
    let process = unsafe { create() } as usize;
    assert_ne!(process, 0);
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let h = process as *mut c_void;
                // SAFETY: plain values; the process handle stays open until all threads end.
                unsafe {
                    set(1000 + i as u32);
                    barrier.wait();
                    // Each thread fails differently, or succeeds, at the same moment.
                    let expected = match i % 4 {
                        0 => {
                            assert!(alloc(h, std::ptr::null_mut(), 0, 0x2000, 4).is_null());
                            87
                        }
                        1 => {
                            assert_eq!(free(std::ptr::null_mut(), 0x10000 as *mut c_void, 0, 0x8000), 0);
                            6
                        }
                        2 => {
                            assert_eq!(free(h, 0x7000_0000 as *mut c_void, 0, 0x8000), 0);
                            487
                        }
                        _ => {
                            let p = alloc(h, std::ptr::null_mut(), 0x10000, 0x3000, 4);
                            assert!(!p.is_null());
                            assert_eq!(free(h, p, 0, 0x8000), 1);
                            1000 + i as u32 // success leaves the thread's value alone
                        }
                    };
                    barrier.wait();
                    assert_eq!(get(), expected, "thread {i}");
                    // The current process's failures are per thread too.
                    assert!(alloc(current(), 0x1000 as *mut c_void, 0x1000, 0x3000, 4).is_null());
                    assert_eq!(get(), 87);
                }
            })
        })
        .collect();
    for t in handles {
        t.join().unwrap();
    }
    // SAFETY: plain values.
    unsafe {
        set(42);
        assert_eq!(get(), 42, "the main thread's value is its own");
        assert_eq!(close(process as *mut c_void), 1);
    }
}
