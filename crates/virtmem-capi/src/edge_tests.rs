//! Edge cases of the exported functions against the contract
//! (`shared/spec/win32-virtual-memory.md`) and the documentation in `include/virtmem.h`,
//! each answered wrongly once (found by an independent review), and a test of ranges
//! wrapping past `SIZE_MAX` (`sizes_that_wrap_past_the_top_are_refused_cleanly`), which
//! nothing else covered for most of these functions.

use std::ptr::null_mut;

use crate::*;

/// The Win32 x64 size of `MEMORY_BASIC_INFORMATION`.
const MBI: SIZE_T = 48;

unsafe fn query(h: HANDLE, p: usize) -> MEMORY_BASIC_INFORMATION {
    let mut mbi: MEMORY_BASIC_INFORMATION = std::mem::zeroed();
    assert_eq!(VirtualQueryEx(h, p as LPCVOID, &mut mbi, MBI), MBI, "query {p:#x}: {}", GetLastError());
    mbi
}

/// Two committed read-write pages of this process, the second then made read-only, every
/// byte 0xAB: `base + 0x1000 - k` is a buffer of which only the first `k` bytes are writable.
unsafe fn half_writable() -> usize {
    let p = VirtualAlloc(null_mut(), 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) as usize;
    assert_ne!(p, 0);
    std::ptr::write_bytes(p as *mut u8, 0xAB, 0x2000);
    let mut old = 0;
    assert_eq!(VirtualProtect((p + 0x1000) as LPVOID, 0x1000, PAGE_READONLY, &mut old), TRUE);
    p
}

/// Spec, Address space: "A failed call changes nothing: no page changes state or
/// protection". Header, VirtualProtect: "A NULL or unwritable `lpflOldProtect` ->
/// `ERROR_NOACCESS` and nothing changes."
///
/// `lpflOldProtect` points into the very page being made read-only. It is writable when the
/// call starts (the probe passes), the protection is changed, and then storing the old value
/// faults. Windows writes `*OldProtect` after the change and ignores a fault there: it
/// returns TRUE, and so does the library (it had returned FALSE with 998 after changing the
/// protection). Either a success, or a failure that changed nothing, is acceptable.
#[test]
fn virtual_protect_whose_old_protect_slot_it_protects_succeeds() {
    // SAFETY: the memory is this test's own allocation; the library checks the pointers.
    unsafe {
        let p = VirtualAlloc(null_mut(), 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) as usize;
        assert_ne!(p, 0);
        SetLastError(0);
        let r = VirtualProtect(p as LPVOID, 0x1000, PAGE_READONLY, p as PDWORD);
        let (code, now) = (GetLastError(), query(GetCurrentProcess(), p).Protect);
        let mut old = 0;
        VirtualProtect(p as LPVOID, 0x1000, PAGE_READWRITE, &mut old);
        VirtualFree(p as LPVOID, 0, MEM_RELEASE);
        assert!(
            r == TRUE || now == PAGE_READWRITE,
            "VirtualProtect returned {r} (last error {code}) yet the page's protection is now {now:#x}"
        );
    }
}

/// Header, GetSystemInfo: "A NULL or unwritable `lpSystemInfo` is left alone (the last error
/// is set to `ERROR_NOACCESS`; the function has no return value)."
///
/// A `SYSTEM_INFO` whose last 24 bytes are on a read-only page: the error is reported and
/// nothing is written (the first 24 bytes had been: process_vm_writev copies up to the fault).
#[test]
fn get_system_info_writes_nothing_into_a_buffer_it_reports_as_unwritable() {
    // SAFETY: the buffer is this test's own allocation; the library checks it.
    unsafe {
        let p = half_writable();
        let at = p + 0x1000 - 24;
        SetLastError(0);
        GetSystemInfo(at as LPSYSTEM_INFO);
        assert_eq!(GetLastError(), ERROR_NOACCESS);
        let first = std::slice::from_raw_parts(at as *const u8, 24).to_vec();
        VirtualFree(p as LPVOID, 0, MEM_RELEASE);
        assert_eq!(first, vec![0xAB; 24], "the buffer reported unwritable was partly overwritten");
    }
}

/// Spec, VirtualQuery: "Returns the number of bytes written (48 on x64) or 0 with an error".
///
/// A buffer whose last 8 bytes are read-only: the call returns 0 with 998 and writes nothing
/// (it had written 40 bytes of it: BaseAddress, AllocationBase, ..., State). (Weaker than the GetSystemInfo case:
/// the header only says an unwritable buffer is `ERROR_NOACCESS`, but a result of 0 "bytes
/// written" with 40 written is not what the spec describes, and on Windows the buffer is
/// probed before anything is stored.)
#[test]
fn virtual_query_writes_nothing_into_a_partly_unwritable_buffer() {
    // SAFETY: the buffer is this test's own allocation; the library checks it.
    unsafe {
        let p = half_writable();
        let at = p + 0x1000 - 40;
        SetLastError(0);
        let r = VirtualQuery(p as LPCVOID, at as PMEMORY_BASIC_INFORMATION, MBI);
        let code = GetLastError();
        let first = std::slice::from_raw_parts(at as *const u8, 40).to_vec();
        VirtualFree(p as LPVOID, 0, MEM_RELEASE);
        assert_eq!((r, code), (0, ERROR_NOACCESS));
        assert_eq!(first, vec![0xAB; 40], "VirtualQuery returned 0 bytes written but wrote 40");
    }
}

/// Header, ReadProcessMemory: "`*lpNumberOfBytesRead` (optional) is set to the number of bytes
/// copied: `nSize` on success, 0 when the call fails before copying". Header,
/// WriteProcessMemory: "`*lpNumberOfBytesWritten` (optional) is set to the number of bytes
/// copied (`nSize` on success, 0 on failure)". (Windows' kernel32 stores the count NtRead/
/// NtWriteVirtualMemory returns, 0, also when the handle is bad.)
///
/// With a NULL, an unknown or an exited process's handle both fail (6, 6, 5) and set the
/// caller's count to 0 (they had left it as it was, 77 here).
#[test]
fn process_memory_counts_are_zero_when_the_handle_fails() {
    // SAFETY: valid local buffers and plain values.
    unsafe {
        let h = VirtmemCreateProcess();
        let b = VirtualAllocEx(h, null_mut(), 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) as usize;
        assert_ne!(b, 0);
        assert_eq!(TerminateProcess(h, 0), TRUE);
        let mut buf = [0u8; 8];
        let mut seen = Vec::new();
        for (handle, code) in
            [(null_mut(), ERROR_INVALID_HANDLE), (0x4444 as HANDLE, ERROR_INVALID_HANDLE), (h, ERROR_ACCESS_DENIED)]
        {
            let mut read: SIZE_T = 77;
            assert_eq!(ReadProcessMemory(handle, b as LPCVOID, buf.as_mut_ptr().cast(), 8, &mut read), FALSE);
            assert_eq!(GetLastError(), code);
            let mut written: SIZE_T = 77;
            assert_eq!(WriteProcessMemory(handle, b as LPVOID, buf.as_ptr().cast(), 8, &mut written), FALSE);
            assert_eq!(GetLastError(), code);
            seen.push((handle as usize, read, written));
        }
        assert_eq!(CloseHandle(h), TRUE);
        assert!(
            seen.iter().all(|&(_, r, w)| r == 0 && w == 0),
            "(handle, *lpNumberOfBytesRead, *lpNumberOfBytesWritten) after the failed calls: {seen:x?}"
        );
    }
}

/// Spec, Address space: "A failed call changes nothing". Header, VirtmemAccess: on an armed
/// guard page it "returns the exception the CPU would raise and stores the first faulting
/// address in `*faultAddress` (if not NULL) ... the guard is now disarmed"; "Other errors
/// return `VIRTMEM_ACCESS_FAILED` ... with the last error set".
///
/// With an unwritable `faultAddress`, a read of an armed guard page returns
/// `VIRTMEM_ACCESS_FAILED` (998) and the guard stays armed (it had been disarmed: the
/// caller never learnt of the guard-page violation, and its retry simply succeeded, so an
/// emulator would have lost a stack-growth guard page).
#[test]
fn virtmem_access_failing_on_fault_address_keeps_the_guard_page_armed() {
    // SAFETY: valid local buffers and plain values; the bad pointer is checked by the library.
    unsafe {
        let h = VirtmemCreateProcess();
        let b = VirtualAllocEx(h, null_mut(), 0x1000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD) as usize;
        assert_ne!(b, 0);
        let mut buf = [0u8; 4];
        SetLastError(0);
        let r = VirtmemAccess(h, b, buf.as_mut_ptr().cast(), 4, VIRTMEM_ACCESS_READ, 0x10 as *mut ULONG_PTR);
        let code = GetLastError();
        let now = query(h, b).Protect;
        assert_eq!(CloseHandle(h), TRUE);
        assert!(
            r == STATUS_GUARD_PAGE_VIOLATION || (r == VIRTMEM_ACCESS_FAILED && now == PAGE_READWRITE | PAGE_GUARD),
            "VirtmemAccess returned {r:#x} (last error {code}) and the page's protection is now {now:#x}"
        );
    }
}

/// Coverage (passes today): a range that wraps past the top of the address space, or an
/// address at `SIZE_MAX`, is refused with a plain error by every function, on a simulated
/// process and on the current-process pseudo handle; nothing panics (no 1359), nothing
/// crashes, and the allocation made first is unchanged.
#[test]
fn sizes_that_wrap_past_the_top_are_refused_cleanly() {
    // SAFETY: valid local buffers and plain values.
    unsafe {
        for h in [VirtmemCreateProcess(), GetCurrentProcess()] {
            let base = VirtualAllocEx(h, null_mut(), 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) as usize;
            assert_ne!(base, 0);
            let wrap = usize::MAX - base - 0xFFF; // base + 0x1000 + wrap == 0 (mod 2^64)
            let top = (usize::MAX - 3) as LPVOID;
            let mut buf = [0u8; 16];
            let (mut n, mut old, mut fault): (SIZE_T, DWORD, ULONG_PTR) = (0, 0, 0);
            let mut mbi: MEMORY_BASIC_INFORMATION = std::mem::zeroed();
            let expect = |what: &str, failed: bool, code: DWORD| {
                assert!(failed, "{what} succeeded");
                assert_eq!(GetLastError(), code, "{what}");
                SetLastError(0);
            };
            let at = (base + 0x1000) as LPVOID;
            expect(
                "alloc",
                VirtualAllocEx(h, at, wrap + 1, MEM_COMMIT, PAGE_READWRITE).is_null(),
                ERROR_INVALID_PARAMETER,
            );
            expect(
                "reset",
                VirtualAllocEx(h, at, usize::MAX, MEM_RESET, PAGE_READWRITE).is_null(),
                ERROR_INVALID_PARAMETER,
            );
            expect("decommit", VirtualFreeEx(h, at, wrap, MEM_DECOMMIT) == FALSE, ERROR_INVALID_PARAMETER);
            // (Above the highest user address: 87, as Windows' kernel has it.)
            expect(
                "release top",
                VirtualFreeEx(h, usize::MAX as LPVOID, 0, MEM_RELEASE) == FALSE,
                ERROR_INVALID_PARAMETER,
            );
            expect("protect", VirtualProtectEx(h, at, wrap, PAGE_READONLY, &mut old) == FALSE, ERROR_INVALID_PARAMETER);
            expect(
                "protect top",
                VirtualProtectEx(h, top, 8, PAGE_READONLY, &mut old) == FALSE,
                ERROR_INVALID_PARAMETER,
            );
            expect("query top", VirtualQueryEx(h, top, &mut mbi, MBI) == 0, ERROR_INVALID_PARAMETER);
            expect(
                "rpm top",
                ReadProcessMemory(h, top, buf.as_mut_ptr().cast(), 8, &mut n) == FALSE,
                ERROR_PARTIAL_COPY,
            );
            expect(
                "rpm wrap",
                ReadProcessMemory(h, at, buf.as_mut_ptr().cast(), wrap, &mut n) == FALSE,
                ERROR_PARTIAL_COPY,
            );
            expect("wpm top", WriteProcessMemory(h, top, buf.as_ptr().cast(), 8, &mut n) == FALSE, ERROR_NOACCESS);
            assert_eq!(n, 0);
            for kind in [VIRTMEM_ACCESS_READ, VIRTMEM_ACCESS_WRITE, VIRTMEM_ACCESS_EXECUTE] {
                let r = VirtmemAccess(h, usize::MAX - 3, buf.as_mut_ptr().cast(), 8, kind, &mut fault);
                assert_eq!((r, fault), (STATUS_ACCESS_VIOLATION, usize::MAX - 3), "access kind {kind}");
            }
            if h == GetCurrentProcess() {
                expect("lock", VirtualLock(at, wrap) == FALSE, ERROR_INVALID_PARAMETER);
                expect("unlock", VirtualUnlock(at, wrap) == FALSE, ERROR_INVALID_PARAMETER);
                let w = VirtualAlloc(null_mut(), 0x10000, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE)
                    as usize;
                if w != 0 {
                    let ww = usize::MAX - w - 0xFFF;
                    let mut addrs = [null_mut::<std::ffi::c_void>(); 16];
                    let (mut count, mut gran): (ULONG_PTR, DWORD) = (16, 0);
                    let wat = (w + 0x1000) as PVOID;
                    let r = GetWriteWatch(0, wat, ww, addrs.as_mut_ptr(), &mut count, &mut gran);
                    expect("get write watch", r == u32::MAX, ERROR_INVALID_PARAMETER);
                    expect("reset write watch", ResetWriteWatch(wat, ww) == u32::MAX, ERROR_INVALID_PARAMETER);
                    assert_eq!((count, gran), (16, 0), "a refused GetWriteWatch stores nothing");
                    assert_eq!(VirtualFree(w as LPVOID, 0, MEM_RELEASE), TRUE);
                }
            }
            let m = query(h, base);
            assert_eq!((m.State, m.Protect, m.RegionSize), (MEM_COMMIT, PAGE_READWRITE, 0x10000));
            assert_eq!(VirtualFreeEx(h, base as LPVOID, 0, MEM_RELEASE), TRUE);
            if h != GetCurrentProcess() {
                assert_eq!(CloseHandle(h), TRUE);
            }
        }
    }
}

/// Header, VirtmemAccess: "a NULL or inaccessible `buffer` (with `size` > 0) ... -> 998
/// (and nothing is accessed: no guard page is disarmed)". Header, ReadProcessMemory: "an
/// unwritable `lpBuffer` -> `ERROR_NOACCESS` (998)"; spec, Address space: "A failed call
/// changes nothing". (Windows probes the caller's buffer before touching the target.)
///
/// A read or instruction fetch of an armed guard page into a read-only buffer, and a
/// `ReadProcessMemory` of it into that buffer, fail with 998 and leave the guard armed
/// (the engine was asked first: the guard was disarmed and reported as
/// `STATUS_GUARD_PAGE_VIOLATION` or `ERROR_PARTIAL_COPY`, so a retry with a good buffer
/// went through the guard page unnoticed).
#[test]
fn an_unwritable_buffer_fails_before_a_guard_page_is_touched() {
    static READ_ONLY: [u8; 16] = [0x5A; 16];
    let ro = READ_ONLY.as_ptr() as *mut std::ffi::c_void;
    // SAFETY: valid local buffers and plain values; the read-only buffer is checked by the library.
    unsafe {
        let h = VirtmemCreateProcess();
        let prot = PAGE_EXECUTE_READWRITE | PAGE_GUARD;
        let b = VirtualAllocEx(h, null_mut(), 0x1000, MEM_RESERVE | MEM_COMMIT, prot) as usize;
        assert_ne!(b, 0);
        let mut seen = Vec::new();
        for kind in [VIRTMEM_ACCESS_READ, VIRTMEM_ACCESS_EXECUTE] {
            let mut fault: ULONG_PTR = 0;
            SetLastError(0);
            let r = VirtmemAccess(h, b, ro, 16, kind, &mut fault);
            seen.push((format!("VirtmemAccess kind {kind}"), r, GetLastError(), query(h, b).Protect));
        }
        let mut n: SIZE_T = 77;
        SetLastError(0);
        let r = ReadProcessMemory(h, b as LPCVOID, ro, 16, &mut n) as u32;
        seen.push(("ReadProcessMemory".into(), r, GetLastError(), query(h, b).Protect));
        assert_eq!(CloseHandle(h), TRUE);
        assert_eq!(READ_ONLY, [0x5A; 16]);
        let want = [
            ("VirtmemAccess kind 0".to_string(), VIRTMEM_ACCESS_FAILED, ERROR_NOACCESS, prot),
            ("VirtmemAccess kind 8".to_string(), VIRTMEM_ACCESS_FAILED, ERROR_NOACCESS, prot),
            ("ReadProcessMemory".to_string(), FALSE as u32, ERROR_NOACCESS, prot),
        ];
        assert_eq!(seen, want, "(call, result, last error, the guard page's protection after it)");
    }
}

/// Header, VirtmemAccess: "a NULL or inaccessible `buffer` (with `size` > 0) ... -> 998
/// (and nothing is accessed: no guard page is disarmed)"; header, WriteProcessMemory: "An
/// unreadable `lpBuffer` (any byte of its `nSize`) -> `ERROR_NOACCESS`, and nothing is
/// written".
///
/// A write of more than one 64 KiB piece whose source turns unreadable after the first
/// piece, to an armed guard page, fails with 998 and leaves the guard armed (only the
/// first piece was read before the engine checked the target, disarming the guard).
#[test]
fn an_unreadable_buffer_tail_fails_before_a_guard_page_is_touched() {
    // SAFETY: valid local buffers and plain values; the no-access page is checked by the library.
    unsafe {
        let src = VirtualAlloc(null_mut(), 0x12000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) as usize;
        assert_ne!(src, 0);
        let mut old = 0;
        assert_eq!(VirtualProtect((src + 0x11000) as LPVOID, 0x1000, PAGE_NOACCESS, &mut old), TRUE);
        let h = VirtmemCreateProcess();
        let b = VirtualAllocEx(h, null_mut(), 0x12000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) as usize;
        assert_ne!(b, 0);
        let prot = PAGE_READWRITE | PAGE_GUARD;
        assert_eq!(VirtualProtectEx(h, b as LPVOID, 0x1000, prot, &mut old), TRUE);
        let mut seen = Vec::new();
        let mut fault: ULONG_PTR = 0;
        SetLastError(0);
        let r = VirtmemAccess(h, b, src as *mut std::ffi::c_void, 0x12000, VIRTMEM_ACCESS_WRITE, &mut fault);
        seen.push(("VirtmemAccess", r, GetLastError(), query(h, b).Protect));
        let mut n: SIZE_T = 77;
        SetLastError(0);
        let r = WriteProcessMemory(h, b as LPVOID, src as LPCVOID, 0x12000, &mut n) as u32;
        seen.push(("WriteProcessMemory", r, GetLastError(), query(h, b).Protect));
        assert_eq!(CloseHandle(h), TRUE);
        assert_eq!(VirtualFree(src as LPVOID, 0, MEM_RELEASE), TRUE);
        let want = [
            ("VirtmemAccess", VIRTMEM_ACCESS_FAILED, ERROR_NOACCESS, prot),
            ("WriteProcessMemory", FALSE as u32, ERROR_NOACCESS, prot),
        ];
        assert_eq!(seen, want, "(call, result, last error, the guard page's protection after it)");
    }
}

/// Header, WriteProcessMemory: a destination "that is not entirely writable ... fails and
/// nothing is written: with `ERROR_NOACCESS` (998) when its first byte cannot be written";
/// header, VirtualFree: memory libvirtmem did not allocate "is never touched". The
/// current process's own code (this test's, mapped by the loader) reads as committed
/// `PAGE_EXECUTE_READ`, but the engine cannot make it writable: a write into it is 998.
/// (It had been 487, ERROR_INVALID_ADDRESS, from the failed attempt to make it writable
/// for the copy, an error WriteProcessMemory does not give.)
#[cfg(target_os = "linux")]
#[test]
fn a_write_into_code_libvirtmem_did_not_allocate_is_no_access() {
    // SAFETY: the write is refused by the library (it never changes memory it did not
    // map); the buffers are valid locals.
    unsafe {
        let me = GetCurrentProcess();
        let code = a_write_into_code_libvirtmem_did_not_allocate_is_no_access as *const () as usize;
        let m = query(me, code);
        assert_eq!((m.State, m.Protect & 0xFF), (MEM_COMMIT, PAGE_EXECUTE_READ), "this test's code");
        let before = std::ptr::read_volatile(code as *const u8);
        let b = [0xCCu8; 4];
        let mut n: SIZE_T = 77;
        SetLastError(0);
        let r = WriteProcessMemory(me, code as LPVOID, b.as_ptr().cast(), 4, &mut n);
        assert_eq!((r, GetLastError(), n), (FALSE, ERROR_NOACCESS, 0));
        assert_eq!(std::ptr::read_volatile(code as *const u8), before);
        assert_eq!(query(me, code).Protect, m.Protect, "the code's protection is unchanged");
    }
}

/// Spec, VirtualQuery: "an address above the highest user address -> 87"; header: the
/// checks come in the order length, address, buffer. An address above the top with a
/// NULL buffer is ERROR_INVALID_PARAMETER, as Wine 8 answers and as replay (which runs
/// `vm::win32::VirtualQuery`) finds it; libvirtmem had answered ERROR_NOACCESS, so
/// a trace of the call replayed with a difference.
#[test]
fn virtual_query_checks_the_address_before_the_buffer() {
    // SAFETY: NULL buffers are checked by the library; plain values otherwise.
    unsafe {
        let high = 0xFFFF_8000_0000_0000usize as LPCVOID;
        let h = VirtmemCreateProcess();
        SetLastError(0);
        assert_eq!(VirtualQueryEx(h, high, null_mut(), MBI), 0);
        assert_eq!(GetLastError(), ERROR_INVALID_PARAMETER, "a simulated process");
        SetLastError(0);
        assert_eq!(VirtualQueryEx(h, 0x10000 as LPCVOID, null_mut(), MBI), 0);
        assert_eq!(GetLastError(), ERROR_NOACCESS, "a valid address, a NULL buffer");
        assert_eq!(CloseHandle(h), TRUE);
        #[cfg(target_os = "linux")]
        {
            SetLastError(0);
            assert_eq!(VirtualQuery(high, null_mut(), MBI), 0);
            assert_eq!(GetLastError(), ERROR_INVALID_PARAMETER, "the current process");
        }
        let r = vm::win32::VirtualQuery(&vm::SimSpace::simulated(), high as usize, None, MBI);
        assert_eq!((r, vm::win32::GetLastError()), (0, ERROR_INVALID_PARAMETER), "the replayed call");
    }
}

/// Header, VirtualQueryEx: "A `dwLength` < 48 is `ERROR_BAD_LENGTH` before the handle is
/// looked at" (as Wine 8 answers: tests/conformance/exproc.c). With a NULL, an unknown
/// and an exited process's handle a short length is 24 (it had been 6, 6 and 5).
#[test]
fn virtual_query_ex_checks_the_length_before_the_handle() {
    // SAFETY: a valid local buffer and plain values.
    unsafe {
        let h = VirtmemCreateProcess();
        assert_eq!(TerminateProcess(h, 0), TRUE);
        let mut m: MEMORY_BASIC_INFORMATION = std::mem::zeroed();
        for handle in [null_mut(), 0x4444 as HANDLE, h] {
            SetLastError(0);
            assert_eq!(VirtualQueryEx(handle, 0x10000 as LPCVOID, &mut m, 4), 0);
            assert_eq!(GetLastError(), ERROR_BAD_LENGTH, "handle {:#x}", handle as usize);
        }
        SetLastError(0);
        assert_eq!(VirtualQueryEx(h, 0x10000 as LPCVOID, &mut m, MBI), 0);
        assert_eq!(GetLastError(), ERROR_ACCESS_DENIED, "a full length: the handle's error");
        assert_eq!(CloseHandle(h), TRUE);
    }
}

/// Header, VirtualAllocEx: "A `dwSize` of 0 is `ERROR_INVALID_PARAMETER` before the
/// handle is looked at" (as Wine 8 answers: tests/conformance/exproc.c). With a NULL, an
/// unknown and an exited process's handle a zero size is 87 (it had been 6, 6 and 5), for
/// a reservation and for MEM_RESET alike.
#[test]
fn virtual_alloc_ex_checks_a_zero_size_before_the_handle() {
    // SAFETY: plain values.
    unsafe {
        let h = VirtmemCreateProcess();
        assert_eq!(TerminateProcess(h, 0), TRUE);
        for handle in [null_mut(), 0x4444 as HANDLE, h] {
            for (address, ty) in [(null_mut(), MEM_RESERVE), (0x10000 as LPVOID, MEM_RESET)] {
                SetLastError(0);
                assert_eq!(VirtualAllocEx(handle, address, 0, ty, PAGE_READWRITE), null_mut());
                assert_eq!(GetLastError(), ERROR_INVALID_PARAMETER, "handle {:#x}, type {ty:#x}", handle as usize);
            }
        }
        SetLastError(0);
        assert_eq!(VirtualAllocEx(h, null_mut(), 0x1000, MEM_RESERVE, PAGE_READWRITE), null_mut());
        assert_eq!(GetLastError(), ERROR_ACCESS_DENIED, "a nonzero size: the handle's error");
        assert_eq!(CloseHandle(h), TRUE);
    }
}
