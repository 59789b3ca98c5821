//! Review (review2) tests of the host memory manager's C ABI (`host.rs`). Each fails today.
//!
//! The promise tested: host.rs's module docs, "A NULL or unwritable out-pointer is
//! `E_POINTER`, and an out-pointer that can be written gets NULL / 0 on failure", and the
//! header's `IHostMemoryManagerVtbl::VirtualQuery`: "`*pResult` is the bytes written (48)
//! or 0".

use std::ffi::c_void;
use std::ptr::null_mut;

use crate::*;

/// A manager over a fresh simulated space, started or not, with one reference.
fn simulated(budget: usize, started: bool) -> *mut IHostMemoryManager {
    let mut c = std::mem::MaybeUninit::<VIRTMEM_HOST_CONFIG>::uninit();
    // SAFETY: a writable config.
    assert_eq!(unsafe { VirtmemHostConfigInit(budget, c.as_mut_ptr()) }, S_OK);
    // SAFETY: initialised just above.
    let mut c = unsafe { c.assume_init() };
    c.dwFlags = VIRTMEM_HOST_SIMULATED | if started { 0 } else { VIRTMEM_HOST_NOT_STARTED };
    let mut h = null_mut();
    // SAFETY: valid config and out-pointer.
    assert_eq!(unsafe { VirtmemCreateHostMemoryManagerEx(&c, &mut h) }, S_OK);
    h
}

/// `GetMemoryLoad` on a manager that is not started fails with HOST_E_CLRNOTAVAILABLE
/// (correct) but leaves both writable out-pointers holding the caller's old values, which a
/// caller ignoring the HRESULT reads as a load of 77 % with 77 bytes available.
#[test]
fn get_memory_load_zeroes_its_out_pointers_on_failure() {
    let h = simulated(1 << 20, false);
    // SAFETY: `h` is a live manager object; valid out-pointers.
    unsafe {
        let v = &*(*h).lpVtbl;
        let (mut load, mut avail): (DWORD, SIZE_T) = (77, 77);
        assert_eq!((v.GetMemoryLoad)(h, &mut load, &mut avail), HOST_E_CLRNOTAVAILABLE);
        assert_eq!((load, avail), (0, 0), "writable out-pointers get 0 on failure");
        assert_eq!((v.Release)(h), 0);
    }
}

/// `VirtualQuery` with a NULL or unwritable `lpBuffer` fails with E_POINTER (correct) but
/// leaves the writable `*pResult` as it was instead of 0.
#[test]
fn virtual_query_with_a_bad_buffer_sets_the_result_to_zero() {
    let h = simulated(1 << 20, true);
    // SAFETY: `h` is a live manager object; valid pointers except the buffers under test.
    unsafe {
        let v = &*(*h).lpVtbl;
        let mut mem = null_mut();
        assert_eq!((v.VirtualAlloc)(h, null_mut(), 4096, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &mut mem), S_OK);
        let mut n: SIZE_T = 77;
        assert_eq!((v.VirtualQuery)(h, mem, null_mut(), 48, &mut n), E_POINTER);
        assert_eq!(n, 0, "NULL lpBuffer: *pResult is the bytes written (48) or 0");
        let mut n: SIZE_T = 77;
        let read_only = &IID_IUnknown as *const IID as *mut c_void;
        assert_eq!((v.VirtualQuery)(h, mem, read_only, 48, &mut n), E_POINTER);
        assert_eq!(n, 0, "unwritable lpBuffer: *pResult is the bytes written (48) or 0");
        assert_eq!((v.Release)(h), 0);
    }
}
