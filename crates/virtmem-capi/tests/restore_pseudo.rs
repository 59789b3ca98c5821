//! The built `libvirtmem.so`, loaded with dlopen in a process whose current-process
//! memory cannot be managed (`VIRTMEM_LINUX_WITHOUT` names no kernel feature, so every
//! call on `GetCurrentProcess()` fails with `ERROR_INVALID_PARAMETER`): the snapshot and
//! restore extensions still answer the current-process pseudo handle, in either position,
//! with the `ERROR_NOT_SUPPORTED` (50) their documentation gives, since they never act on
//! the current process's memory. (Its own test binary: the variable is read once.)

mod common;

use std::ffi::c_void;

type H = *mut c_void;

#[test]
fn the_pseudo_handle_is_refused_as_documented_whatever_the_current_process() {
    std::env::set_var("VIRTMEM_LINUX_WITHOUT", "no-such-feature");
    let lib = common::Lib::open();
    // SAFETY: the signatures match the exports (include/virtmem.h).
    let (create, snapshot, restore, current, get, alloc, close) = unsafe {
        (
            lib.get::<unsafe extern "C" fn() -> H>("VirtmemCreateProcess"),
            lib.get::<unsafe extern "C" fn(H) -> H>("VirtmemSnapshotProcess"),
            lib.get::<unsafe extern "C" fn(H, H) -> i32>("VirtmemRestoreProcess"),
            lib.get::<unsafe extern "C" fn() -> H>("GetCurrentProcess"),
            lib.get::<unsafe extern "C" fn() -> u32>("GetLastError"),
            lib.get::<unsafe extern "C" fn(H, H, usize, u32, u32) -> H>("VirtualAllocEx"),
            lib.get::<unsafe extern "C" fn(H) -> i32>("CloseHandle"),
        )
    };
    // SAFETY: plain values.
    unsafe {
        let me = current();
        // The current process's memory is indeed out of reach here.
        assert!(alloc(me, std::ptr::null_mut(), 0x10000, 0x3000, 4).is_null());
        assert_eq!(get(), 87, "VIRTMEM_LINUX_WITHOUT makes current-process calls fail");
        let p = create();
        assert!(!p.is_null());
        assert!(snapshot(me).is_null());
        assert_eq!(get(), 50, "VirtmemSnapshotProcess(GetCurrentProcess())");
        assert_eq!(restore(me, p), 0);
        assert_eq!(get(), 50, "VirtmemRestoreProcess(GetCurrentProcess(), process)");
        assert_eq!(restore(p, me), 0);
        assert_eq!(get(), 50, "VirtmemRestoreProcess(process, GetCurrentProcess())");
        assert_eq!(restore(me, me), 0);
        assert_eq!(get(), 50, "VirtmemRestoreProcess(GetCurrentProcess(), GetCurrentProcess())");
        assert_eq!(close(p), 1);
    }
}
