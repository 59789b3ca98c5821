//! Tests of the C boundary itself: panics stay inside, the last error is per thread,
//! handles behave as documented, pointer arguments are checked. (The behaviour of the
//! API as C sees it is tested by the C, Python and C# suites under `tests/`.)

use std::ptr::{null, null_mut};
use std::sync::Arc;

use vm::{
    AllocationType, Error, FreeType, MemoryBasicInformation, Protection, Result, SpaceStats, SystemInfo, VirtualSpace,
    WriteWatchFlags,
};

use crate::process::register;
use crate::*;

/// An address space whose every operation panics, standing in for an engine bug.
#[derive(Debug)]
struct Panicking;

impl VirtualSpace for Panicking {
    fn alloc(&self, _: usize, _: usize, _: AllocationType, _: Protection) -> Result<usize> {
        panic!("alloc")
    }
    fn free(&self, _: usize, _: usize, _: FreeType) -> Result<()> {
        panic!("free")
    }
    fn query(&self, _: usize) -> Result<MemoryBasicInformation> {
        panic!("query")
    }
    fn protect(&self, _: usize, _: usize, _: Protection) -> Result<Protection> {
        panic!("protect")
    }
    fn protect_detailed(
        &self,
        _: usize,
        _: usize,
        _: Protection,
    ) -> std::result::Result<Protection, (Error, Option<Protection>)> {
        panic!("protect_detailed")
    }
    fn lock(&self, _: usize, _: usize) -> Result<()> {
        panic!("lock")
    }
    fn unlock(&self, _: usize, _: usize) -> Result<()> {
        panic!("unlock")
    }
    fn get_write_watch(&self, _: WriteWatchFlags, _: usize, _: usize, _: usize) -> Result<Vec<usize>> {
        panic!("get_write_watch")
    }
    fn reset_write_watch(&self, _: usize, _: usize) -> Result<()> {
        panic!("reset_write_watch")
    }
    fn write_watch_pages(&self, _: usize, _: usize) -> Result<usize> {
        panic!("write_watch_pages")
    }
    fn check(&self, _: usize, _: usize, _: vm::AccessKind) -> Result<()> {
        panic!("check")
    }
    fn check_quiet(&self, _: usize, _: usize, _: vm::AccessKind) -> Result<()> {
        panic!("check_quiet")
    }
    fn read(&self, _: usize, _: &mut [u8]) -> Result<()> {
        panic!("read")
    }
    fn write(&self, _: usize, _: &[u8]) -> Result<()> {
        panic!("write")
    }
    fn execute(&self, _: usize, _: &mut [u8]) -> Result<()> {
        panic!("execute")
    }
    fn system_info(&self) -> SystemInfo {
        panic!("system_info")
    }
    fn stats(&self) -> SpaceStats {
        panic!("stats")
    }
    fn regions(&self) -> Vec<MemoryBasicInformation> {
        panic!("regions")
    }
    fn set_commit_limit(&self, _: Option<usize>) {
        panic!("set_commit_limit")
    }
    fn commit_limit(&self) -> Option<usize> {
        panic!("commit_limit")
    }
    fn committed_bytes(&self) -> usize {
        panic!("committed_bytes")
    }
    fn reserved_bytes(&self) -> usize {
        panic!("reserved_bytes")
    }
    fn flush_instruction_cache(&self, _: usize, _: usize) {
        panic!("flush_instruction_cache")
    }
    fn alloc_within(&self, _: usize, _: AllocationType, _: Protection, _: vm::AddressRequirements) -> Result<usize> {
        panic!("alloc_within")
    }
}

/// Run `f`, expecting it to have failed with `code`, and reset the last error.
fn expect_error(code: DWORD) {
    assert_eq!(GetLastError(), code);
    SetLastError(0);
}

#[test]
fn a_panicking_engine_never_unwinds_into_c() {
    let h = register(Arc::new(Panicking));
    let mut mbi = std::mem::MaybeUninit::<MEMORY_BASIC_INFORMATION>::zeroed();
    let mut old: DWORD = 0;
    let mut buf = [0u8; 16];
    let mut n: SIZE_T = 0;
    let mut fault: ULONG_PTR = 0;
    // SAFETY: every pointer passed is either NULL-free valid local storage or a plain value.
    unsafe {
        assert!(VirtualAllocEx(h, null_mut(), 4096, MEM_COMMIT, PAGE_READWRITE).is_null());
        expect_error(ERROR_INTERNAL_ERROR);
        assert_eq!(VirtualFreeEx(h, 0x10000 as LPVOID, 0, MEM_RELEASE), FALSE);
        expect_error(ERROR_INTERNAL_ERROR);
        assert_eq!(VirtualQueryEx(h, null(), mbi.as_mut_ptr(), 48), 0);
        expect_error(ERROR_INTERNAL_ERROR);
        assert_eq!(VirtualProtectEx(h, 0x10000 as LPVOID, 1, PAGE_READONLY, &mut old), FALSE);
        expect_error(ERROR_INTERNAL_ERROR);
        assert_eq!(ReadProcessMemory(h, 0x10000 as LPCVOID, buf.as_mut_ptr().cast(), 16, &mut n), FALSE);
        expect_error(ERROR_INTERNAL_ERROR);
        assert_eq!(WriteProcessMemory(h, 0x10000 as LPVOID, buf.as_ptr().cast(), 16, &mut n), FALSE);
        expect_error(ERROR_INTERNAL_ERROR);
        for kind in [VIRTMEM_ACCESS_READ, VIRTMEM_ACCESS_WRITE, VIRTMEM_ACCESS_EXECUTE] {
            assert_eq!(VirtmemAccess(h, 0x10000, buf.as_mut_ptr().cast(), 16, kind, &mut fault), VIRTMEM_ACCESS_FAILED);
            expect_error(ERROR_INTERNAL_ERROR);
        }
        // VirtualAlloc2 without parameters (the engine's alloc) and with a window (its
        // alloc_within); VirtmemGetProcessSystemInfo (its system_info).
        assert!(VirtualAlloc2(h, null_mut(), 4096, MEM_RESERVE, PAGE_READWRITE, null_mut(), 0).is_null());
        expect_error(ERROR_INTERNAL_ERROR);
        let mut req = MEM_ADDRESS_REQUIREMENTS {
            LowestStartingAddress: null_mut(),
            HighestEndingAddress: null_mut(),
            Alignment: 1 << 20,
        };
        let mut param = MEM_EXTENDED_PARAMETER { TypeWord: 1, Value: &mut req as *mut _ as u64 };
        assert!(VirtualAlloc2(h, null_mut(), 4096, MEM_RESERVE, PAGE_READWRITE, &mut param, 1).is_null());
        expect_error(ERROR_INTERNAL_ERROR);
        let mut si = std::mem::MaybeUninit::<SYSTEM_INFO>::zeroed();
        assert_eq!(VirtmemGetProcessSystemInfo(h, si.as_mut_ptr()), FALSE);
        expect_error(ERROR_INTERNAL_ERROR);
    }
    // The library still works afterwards, on the same thread.
    assert_eq!(CloseHandle(h), TRUE);
    assert_eq!(CloseHandle(h), FALSE);
    expect_error(ERROR_INVALID_HANDLE);
}

#[test]
fn last_error_is_per_thread() {
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let spawn = |code: DWORD, fail: fn()| {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            SetLastError(0);
            fail();
            barrier.wait(); // both threads have failed before either reads
            let seen = GetLastError();
            barrier.wait();
            assert_eq!(seen, code);
            SetLastError(12345);
            assert_eq!(GetLastError(), 12345);
        })
    };
    let a = spawn(ERROR_INVALID_PARAMETER, || {
        // SAFETY: plain values.
        assert!(unsafe { VirtualAllocEx(GetCurrentProcess(), null_mut(), 0, MEM_COMMIT, PAGE_READWRITE) }.is_null());
    });
    let b = spawn(ERROR_INVALID_HANDLE, || {
        // SAFETY: plain values.
        assert_eq!(unsafe { VirtualFreeEx(null_mut(), 0x10000 as LPVOID, 0, MEM_RELEASE) }, FALSE);
    });
    a.join().unwrap();
    b.join().unwrap();
    // This thread's last error was never touched by the others.
    SetLastError(7);
    std::thread::spawn(|| SetLastError(99)).join().unwrap();
    assert_eq!(GetLastError(), 7);
}

#[test]
fn failures_also_set_errno_and_successes_keep_it() {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap();
    // SAFETY: plain values; the handle is a simulated process created here.
    unsafe {
        let h = VirtmemCreateProcess();
        assert!(!h.is_null());
        assert!(VirtualAllocEx(h, null_mut(), 0, MEM_RESERVE, PAGE_NOACCESS).is_null());
        assert_eq!(errno(), ERROR_INVALID_PARAMETER as i32);
        *libc::__errno_location() = 4242;
        assert!(!VirtualAllocEx(h, null_mut(), 4096, MEM_RESERVE, PAGE_NOACCESS).is_null());
        assert_eq!(errno(), 4242);
        assert_eq!(GetLastError(), ERROR_INVALID_PARAMETER, "success leaves the last error alone");
        assert_eq!(CloseHandle(h), TRUE);
    }
}

#[test]
fn handles_are_checked_and_never_reused() {
    // SAFETY: plain values and valid local storage.
    unsafe {
        let mut mbi = std::mem::MaybeUninit::<MEMORY_BASIC_INFORMATION>::zeroed();
        for bad in [null_mut(), 0x1234 as HANDLE, 4 as HANDLE] {
            assert!(VirtualAllocEx(bad, null_mut(), 4096, MEM_COMMIT, PAGE_READWRITE).is_null());
            expect_error(ERROR_INVALID_HANDLE);
            assert_eq!(VirtualQueryEx(bad, null(), mbi.as_mut_ptr(), 48), 0);
            expect_error(ERROR_INVALID_HANDLE);
            assert_eq!(TerminateProcess(bad, 0), FALSE);
            expect_error(ERROR_INVALID_HANDLE);
            assert_eq!(CloseHandle(bad), FALSE);
            expect_error(ERROR_INVALID_HANDLE);
        }
        // The pseudo handle: closing is a no-op, terminating is refused.
        assert_eq!(CloseHandle(GetCurrentProcess()), TRUE);
        assert_eq!(TerminateProcess(GetCurrentProcess(), 0), FALSE);
        expect_error(ERROR_ACCESS_DENIED);

        let h1 = VirtmemCreateProcess();
        let h2 = VirtmemCreateProcess();
        assert!(!h1.is_null() && !h2.is_null() && h1 != h2);
        assert_eq!(h1 as usize % 4, 0);
        let p = VirtualAllocEx(h1, null_mut(), 0x10000, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
        assert!(!p.is_null());
        // Each simulated process has its own space: the same address is free in the other.
        assert_eq!(VirtualQueryEx(h2, p, mbi.as_mut_ptr(), 48), 48);
        assert_eq!(mbi.assume_init().State, MEM_FREE);
        assert_eq!(VirtualQueryEx(h1, p, mbi.as_mut_ptr(), 48), 48);
        assert_eq!(mbi.assume_init().State, MEM_COMMIT);
        // Windows ignores a handle's low two bits (tag bits): h1 | 1 and h1 | 3 are h1.
        for tagged in [h1 as usize | 1, h1 as usize | 3] {
            assert_eq!(VirtualQueryEx(tagged as HANDLE, p, mbi.as_mut_ptr(), 48), 48);
            assert_eq!(mbi.assume_init().State, MEM_COMMIT);
        }
        assert_eq!(crate::process::trace_id((h1 as usize | 2) as HANDLE), crate::process::trace_id(h1));

        assert_eq!(TerminateProcess(h1, 3), TRUE);
        assert_eq!(TerminateProcess(h1, 3), FALSE);
        expect_error(ERROR_ACCESS_DENIED);
        assert_eq!(VirtualQueryEx(h1, p, mbi.as_mut_ptr(), 48), 0);
        expect_error(ERROR_ACCESS_DENIED);
        assert_eq!(VirtualFreeEx(h1, p, 0, MEM_RELEASE), FALSE);
        expect_error(ERROR_ACCESS_DENIED);
        assert_eq!(CloseHandle((h1 as usize | 2) as HANDLE), TRUE);
        assert_eq!(VirtualQueryEx(h1, p, mbi.as_mut_ptr(), 48), 0);
        expect_error(ERROR_INVALID_HANDLE);
        let h3 = VirtmemCreateProcess();
        assert!(h3 != h1 && h3 != h2, "a closed handle's value is never handed out again");
        assert_eq!(CloseHandle(h2), TRUE);
        assert_eq!(CloseHandle(h3), TRUE);
    }
}

#[test]
fn pointer_arguments_are_checked_not_dereferenced() {
    let unmapped = 0x10 as *mut u8; // the first page is never mapped
    static READ_ONLY: [u8; 64] = [0; 64];
    // SAFETY: bad pointers are passed on purpose: the library must check them.
    unsafe {
        let h = VirtmemCreateProcess();
        let p = VirtualAllocEx(h, null_mut(), 0x10000, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
        assert!(!p.is_null());
        assert_eq!(VirtualQueryEx(h, p, null_mut(), 48), 0);
        expect_error(ERROR_NOACCESS);
        assert_eq!(VirtualQueryEx(h, p, unmapped.cast(), 48), 0);
        expect_error(ERROR_NOACCESS);
        assert_eq!(VirtualQueryEx(h, p, READ_ONLY.as_ptr() as PMEMORY_BASIC_INFORMATION, 48), 0);
        expect_error(ERROR_NOACCESS);
        assert_eq!(VirtualQueryEx(h, p, null_mut(), 47), 0);
        expect_error(ERROR_BAD_LENGTH);

        // A bad old-protect pointer: 998 and the protection is unchanged.
        assert_eq!(VirtualProtectEx(h, p, 4096, PAGE_READONLY, null_mut()), FALSE);
        expect_error(ERROR_NOACCESS);
        assert_eq!(VirtualProtectEx(h, p, 4096, PAGE_READONLY, unmapped.cast()), FALSE);
        expect_error(ERROR_NOACCESS);
        let mut mbi = std::mem::MaybeUninit::<MEMORY_BASIC_INFORMATION>::zeroed();
        assert_eq!(VirtualQueryEx(h, p, mbi.as_mut_ptr(), 48), 48);
        assert_eq!(mbi.assume_init().Protect, PAGE_READWRITE);

        // Copies: a bad caller buffer is 998 and nothing is written to the target.
        let mut n: SIZE_T = 77;
        assert_eq!(WriteProcessMemory(h, p, unmapped as LPCVOID, 8, &mut n), FALSE);
        expect_error(ERROR_NOACCESS);
        assert_eq!(n, 0);
        assert_eq!(ReadProcessMemory(h, p, unmapped.cast(), 8, &mut n), FALSE);
        expect_error(ERROR_NOACCESS);
        assert_eq!(ReadProcessMemory(h, p, READ_ONLY.as_ptr() as LPVOID, 8, null_mut()), FALSE);
        expect_error(ERROR_NOACCESS);
        assert_eq!(VirtmemAccess(h, p as usize, null_mut(), 8, VIRTMEM_ACCESS_READ, null_mut()), VIRTMEM_ACCESS_FAILED);
        expect_error(ERROR_NOACCESS);
        assert_eq!(
            VirtmemAccess(h, p as usize, unmapped.cast(), 8, VIRTMEM_ACCESS_WRITE, null_mut()),
            VIRTMEM_ACCESS_FAILED
        );
        expect_error(ERROR_NOACCESS);
        let mut eight = [0u8; 8];
        assert_eq!(VirtmemAccess(h, p as usize, eight.as_mut_ptr().cast(), 8, VIRTMEM_ACCESS_READ, null_mut()), 0);
        assert_eq!(eight, [0; 8], "the failed writes above changed nothing");

        GetSystemInfo(null_mut());
        expect_error(ERROR_NOACCESS);
        GetSystemInfo(unmapped.cast());
        expect_error(ERROR_NOACCESS);
        assert_eq!(CloseHandle(h), TRUE);
    }
}

#[test]
fn process_memory_copies_follow_the_spec() {
    // SAFETY: valid local buffers and plain values.
    unsafe {
        let h = VirtmemCreateProcess();
        let base = VirtualAllocEx(h, null_mut(), 0x10000, MEM_RESERVE, PAGE_NOACCESS) as usize;
        assert_ne!(base, 0);
        assert!(!VirtualAllocEx(h, base as LPVOID, 0x2000, MEM_COMMIT, PAGE_READWRITE).is_null());
        assert!(!VirtualAllocEx(h, (base + 0x2000) as LPVOID, 0x1000, MEM_COMMIT, PAGE_READONLY).is_null());
        let data: Vec<u8> = (0..0x2000u32).map(|i| (i * 7) as u8).collect();
        let mut n: SIZE_T = 0;
        assert_eq!(WriteProcessMemory(h, base as LPVOID, data.as_ptr().cast(), data.len(), &mut n), TRUE);
        assert_eq!(n, data.len());
        let mut back = vec![0u8; 0x2000];
        assert_eq!(ReadProcessMemory(h, base as LPCVOID, back.as_mut_ptr().cast(), back.len(), &mut n), TRUE);
        assert_eq!((n, &back), (0x2000, &data));
        // A read running into reserved pages: 299, nothing copied, count 0.
        let mut over = vec![0xEEu8; 0x2000];
        n = 5;
        assert_eq!(ReadProcessMemory(h, (base + 0x2000) as LPCVOID, over.as_mut_ptr().cast(), 0x2000, &mut n), FALSE);
        expect_error(ERROR_PARTIAL_COPY);
        assert_eq!(n, 0);
        assert!(over.iter().all(|&b| b == 0xEE));
        // A write that starts writable and reaches the read-only page: 299, nothing written.
        let ones = [1u8; 0x20];
        assert_eq!(WriteProcessMemory(h, (base + 0x1FF0) as LPVOID, ones.as_ptr().cast(), 0x20, &mut n), FALSE);
        expect_error(ERROR_PARTIAL_COPY);
        assert_eq!(n, 0);
        // One that starts on the read-only page: 998.
        assert_eq!(WriteProcessMemory(h, (base + 0x2000) as LPVOID, ones.as_ptr().cast(), 0x20, &mut n), FALSE);
        expect_error(ERROR_NOACCESS);
        assert_eq!(ReadProcessMemory(h, (base + 0x1FF0) as LPCVOID, back.as_mut_ptr().cast(), 0x10, null_mut()), TRUE);
        assert_eq!(&back[..0x10], &data[0x1FF0..0x2000]);
        // A write into reserved or free memory fails the same way.
        assert_eq!(WriteProcessMemory(h, (base + 0x4000) as LPVOID, ones.as_ptr().cast(), 1, null_mut()), FALSE);
        expect_error(ERROR_NOACCESS);
        assert_eq!(CloseHandle(h), TRUE);
    }
}

/// The protection of the page at `p` in process `h`.
unsafe fn protect_at(h: HANDLE, p: usize) -> DWORD {
    let mut m: MEMORY_BASIC_INFORMATION = std::mem::zeroed();
    assert_eq!(VirtualQueryEx(h, p as LPCVOID, &mut m, std::mem::size_of::<MEMORY_BASIC_INFORMATION>()), 48);
    m.Protect
}

/// `count` bytes at `p` in process `h`, read with the page made readable for a moment.
unsafe fn bytes_at(h: HANDLE, p: usize, count: usize) -> Vec<u8> {
    let page = p & !0xFFF;
    let mut old = 0;
    assert_eq!(VirtualProtectEx(h, page as LPVOID, 0x1000, PAGE_READONLY, &mut old), TRUE);
    let mut out = vec![0u8; count];
    assert_eq!(ReadProcessMemory(h, p as LPCVOID, out.as_mut_ptr().cast(), count, null_mut()), TRUE);
    assert_eq!(VirtualProtectEx(h, page as LPVOID, 0x1000, old, &mut old), TRUE);
    out
}

/// Windows' WriteProcessMemory writes into `PAGE_EXECUTE` and `PAGE_EXECUTE_READ` code
/// (a debugger's breakpoint): the first page's region is made writable for the copy and
/// gets its protection back, an armed guard included; the rest of the range
/// follows the usual rule. On a simulated process and on the current one (real pages).
#[test]
fn write_process_memory_writes_into_code_and_gives_its_protection_back() {
    // SAFETY: valid local buffers and plain values; the pages written are the test's own.
    unsafe {
        for h in [VirtmemCreateProcess(), GetCurrentProcess()] {
            let b = VirtualAllocEx(h, null_mut(), 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE) as usize;
            assert_ne!(b, 0);
            let layout = [
                PAGE_EXECUTE_READ,
                PAGE_EXECUTE,
                PAGE_READWRITE,
                PAGE_EXECUTE_READ | PAGE_GUARD,
                PAGE_EXECUTE_READWRITE,
                PAGE_READONLY,
                PAGE_EXECUTE_READ,
                PAGE_READONLY,
            ];
            let mut old = 0;
            for (i, &p) in layout.iter().enumerate() {
                assert_eq!(VirtualProtectEx(h, (b + i * 0x1000) as LPVOID, 0x1000, p, &mut old), TRUE);
            }
            let cc = [0xCCu8; 0x20];
            let wpm = |at: usize, len: usize| {
                let mut n: SIZE_T = 77;
                SetLastError(0);
                let r = WriteProcessMemory(h, (b + at) as LPVOID, cc.as_ptr().cast(), len, &mut n);
                (r, GetLastError(), n)
            };
            // Within one page, execute-read and execute-only.
            assert_eq!(wpm(0x10, 0x10), (TRUE, 0, 0x10));
            assert_eq!(wpm(0x1010, 0x10), (TRUE, 0, 0x10));
            // From execute-only code into read-write data.
            assert_eq!(wpm(0x1FF0, 0x20), (TRUE, 0, 0x20));
            // A guarded page: written, and still guarded.
            assert_eq!(wpm(0x3010, 0x10), (TRUE, 0, 0x10));
            assert_eq!(wpm(0x4010, 0x10), (TRUE, 0, 0x10));
            // From code into read-only data: 299 and nothing written.
            assert_eq!(wpm(0x6FF0, 0x20), (FALSE, ERROR_PARTIAL_COPY, 0));
            // Read-only first: 998, as before.
            assert_eq!(wpm(0x5010, 0x10), (FALSE, ERROR_NOACCESS, 0));
            for (i, &p) in layout.iter().enumerate() {
                assert_eq!(protect_at(h, b + i * 0x1000), p, "page {i}'s protection after the copies");
            }
            assert_eq!(bytes_at(h, b, 0x30), [[0u8; 0x10], [0xCC; 0x10], [0; 0x10]].concat());
            assert_eq!(bytes_at(h, b + 0x1000, 0x30), [[0u8; 0x10], [0xCC; 0x10], [0; 0x10]].concat());
            assert_eq!(bytes_at(h, b + 0x1FF0, 0x10), [0xCC; 0x10]);
            assert_eq!(bytes_at(h, b + 0x2000, 0x11), [[0xCCu8; 0x10].as_slice(), &[0]].concat());
            assert_eq!(bytes_at(h, b + 0x4010, 0x11), [[0xCCu8; 0x10].as_slice(), &[0]].concat());
            assert_eq!(bytes_at(h, b + 0x6FF0, 0x10), [0; 0x10], "nothing written by the failed copy");
            // The guard is still armed: the first read of the page reports it.
            let mut fault: ULONG_PTR = 0;
            let mut one = [0u8; 1];
            let r = VirtmemAccess(h, b + 0x3010, one.as_mut_ptr().cast(), 1, VIRTMEM_ACCESS_READ, &mut fault);
            assert_eq!((r, fault), (STATUS_GUARD_PAGE_VIOLATION, b + 0x3010));
            assert_eq!(bytes_at(h, b + 0x3010, 0x11), [[0xCCu8; 0x10].as_slice(), &[0]].concat());
            assert_eq!(VirtualFreeEx(h, b as LPVOID, 0, MEM_RELEASE), TRUE);
            assert_eq!(CloseHandle(h), TRUE);
        }
    }
}

/// Header, WriteProcessMemory: code is writable to it, in a `MEM_LARGE_PAGES` allocation
/// too, where the protection changes by whole large pages: a write inside a large page of
/// code, and one across two, succeed and leave the code `PAGE_EXECUTE_READ`. (Both had
/// failed with ERROR_INVALID_PARAMETER: the pages were made writable one small page at a
/// time, which splits a large page.)
#[test]
fn write_process_memory_writes_into_large_page_code() {
    const LARGE: usize = 2 << 20;
    // SAFETY: valid local buffers and plain values.
    unsafe {
        let h = VirtmemCreateProcess();
        let ty = MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES;
        let b = VirtualAllocEx(h, null_mut(), 2 * LARGE, ty, PAGE_EXECUTE_READ) as usize;
        assert_ne!(b, 0);
        let cc = [0xCCu8; 0x20];
        for (at, len) in [(0x1010, 0x10), (LARGE - 0x10, 0x20)] {
            let mut n: SIZE_T = 77;
            SetLastError(0);
            let r = WriteProcessMemory(h, (b + at) as LPVOID, cc.as_ptr().cast(), len, &mut n);
            assert_eq!((r, GetLastError(), n), (TRUE, 0, len), "{len:#x} bytes at +{at:#x}");
        }
        let mut m: MEMORY_BASIC_INFORMATION = std::mem::zeroed();
        assert_eq!(VirtualQueryEx(h, b as LPCVOID, &mut m, 48), 48);
        assert_eq!((m.Protect, m.RegionSize), (PAGE_EXECUTE_READ, 2 * LARGE), "the code's protection is back");
        let mut old = 0;
        assert_eq!(VirtualProtectEx(h, b as LPVOID, 2 * LARGE, PAGE_READONLY, &mut old), TRUE);
        let mut got = [0u8; 0x20];
        assert_eq!(ReadProcessMemory(h, (b + 0x1000) as LPCVOID, got.as_mut_ptr().cast(), 0x20, null_mut()), TRUE);
        assert_eq!(got, [[0u8; 0x10], [0xCC; 0x10]].concat()[..]);
        assert_eq!(
            ReadProcessMemory(h, (b + LARGE - 0x10) as LPCVOID, got.as_mut_ptr().cast(), 0x20, null_mut()),
            TRUE
        );
        assert_eq!(got, cc);
        assert_eq!(CloseHandle(h), TRUE);
    }
}

#[test]
fn virtmem_access_reports_exceptions() {
    // SAFETY: valid local buffers and plain values.
    unsafe {
        let h = VirtmemCreateProcess();
        let base = VirtualAllocEx(h, null_mut(), 0x10000, MEM_RESERVE, PAGE_NOACCESS) as usize;
        assert!(!VirtualAllocEx(h, base as LPVOID, 0x1000, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD).is_null());
        assert!(!VirtualAllocEx(h, (base + 0x1000) as LPVOID, 0x1000, MEM_COMMIT, PAGE_EXECUTE_READ).is_null());
        let mut buf = *b"ABCDEFGH";
        let mut fault: ULONG_PTR = 0;
        // The guard page: one guard violation, then the access goes through.
        assert_eq!(
            VirtmemAccess(h, base + 8, buf.as_mut_ptr().cast(), 8, VIRTMEM_ACCESS_WRITE, &mut fault),
            STATUS_GUARD_PAGE_VIOLATION
        );
        assert_eq!(fault, base + 8);
        assert_eq!(VirtmemAccess(h, base + 8, buf.as_mut_ptr().cast(), 8, VIRTMEM_ACCESS_WRITE, &mut fault), 0);
        let mut back = [0u8; 8];
        assert_eq!(VirtmemAccess(h, base + 8, back.as_mut_ptr().cast(), 8, VIRTMEM_ACCESS_READ, null_mut()), 0);
        assert_eq!(&back, b"ABCDEFGH");
        // Writing the execute-read page, and crossing into reserved memory, are violations.
        assert_eq!(
            VirtmemAccess(h, base + 0x1000, buf.as_mut_ptr().cast(), 1, VIRTMEM_ACCESS_WRITE, &mut fault),
            STATUS_ACCESS_VIOLATION
        );
        assert_eq!(fault, base + 0x1000);
        assert_eq!(
            VirtmemAccess(h, base + 0x1FFC, back.as_mut_ptr().cast(), 8, VIRTMEM_ACCESS_EXECUTE, &mut fault),
            STATUS_ACCESS_VIOLATION
        );
        assert_eq!(fault, base + 0x2000);
        assert_eq!(
            VirtmemAccess(h, base, back.as_mut_ptr().cast(), 8, VIRTMEM_ACCESS_EXECUTE, &mut fault),
            STATUS_ACCESS_VIOLATION
        );
        assert_eq!(fault, base, "the read-write page is not executable");
        assert_eq!(VirtmemAccess(h, base + 0x1000, back.as_mut_ptr().cast(), 8, VIRTMEM_ACCESS_EXECUTE, &mut fault), 0);
        // Bad kinds and handles are errors, not exceptions.
        assert_eq!(VirtmemAccess(h, base, back.as_mut_ptr().cast(), 8, 2, &mut fault), VIRTMEM_ACCESS_FAILED);
        expect_error(ERROR_INVALID_PARAMETER);
        assert_eq!(TerminateProcess(h, 0), TRUE);
        assert_eq!(VirtmemAccess(h, base, back.as_mut_ptr().cast(), 8, 0, &mut fault), VIRTMEM_ACCESS_FAILED);
        expect_error(ERROR_ACCESS_DENIED);
        assert_eq!(CloseHandle(h), TRUE);
        assert_eq!(VirtmemAccess(h, base, back.as_mut_ptr().cast(), 8, 0, &mut fault), VIRTMEM_ACCESS_FAILED);
        expect_error(ERROR_INVALID_HANDLE);
    }
}

#[test]
fn system_info_describes_the_current_space_and_machine() {
    let mut si = std::mem::MaybeUninit::<SYSTEM_INFO>::zeroed();
    // SAFETY: valid local storage.
    let si = unsafe {
        GetSystemInfo(si.as_mut_ptr());
        si.assume_init()
    };
    assert_eq!(si.dwPageSize, 4096);
    assert_eq!(si.dwAllocationGranularity, 65536);
    assert_eq!(si.lpMinimumApplicationAddress as usize, 0x10000);
    assert!(si.lpMaximumApplicationAddress as usize > 0x7FFF_0000);
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    assert!(si.dwNumberOfProcessors >= cpus);
    assert_eq!(si.dwActiveProcessorMask.count_ones(), si.dwNumberOfProcessors.min(64));
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(si.wProcessorArchitecture, PROCESSOR_ARCHITECTURE_AMD64);
        assert_eq!(si.dwProcessorType, PROCESSOR_AMD_X8664);
        assert!(si.wProcessorLevel >= 6);
    }
}

#[test]
fn large_page_minimum_is_the_current_spaces_and_sets_no_error() {
    let want = vm::try_current_process().expect("current process").system_info().large_page_size;
    SetLastError(1234);
    let size = GetLargePageMinimum();
    assert_eq!(size, want);
    assert_eq!(GetLastError(), 1234, "GetLargePageMinimum leaves the last error alone");
    // SAFETY: plain values; the memory, if any, is this test's own allocation.
    unsafe {
        let ty = MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES;
        if size == 0 {
            assert!(VirtualAlloc(null_mut(), 2 << 20, ty, PAGE_READWRITE).is_null());
            expect_error(ERROR_NO_SYSTEM_RESOURCES);
        } else {
            assert!(size.is_power_of_two() && size % 65536 == 0, "{size:#x}");
            // Not a multiple of the large-page size: 87, whether or not hugetlb pages are free.
            assert!(VirtualAlloc(null_mut(), size + 4096, ty, PAGE_READWRITE).is_null());
            expect_error(ERROR_INVALID_PARAMETER);
        }
    }
}

#[test]
fn locking_a_guard_page_reports_the_guard_violation() {
    // SAFETY: plain values; the memory is this test's own allocation.
    unsafe {
        let p = VirtualAlloc(null_mut(), 0x2000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
        assert!(!p.is_null());
        assert_eq!(VirtualLock(p, 0x1000), FALSE);
        expect_error(STATUS_GUARD_PAGE_VIOLATION);
        let mut info: MEMORY_BASIC_INFORMATION = std::mem::zeroed();
        assert_ne!(VirtualQuery(p, &mut info, size_of::<MEMORY_BASIC_INFORMATION>()), 0);
        assert_eq!((info.Protect, info.RegionSize), (PAGE_READWRITE, 0x1000), "the first page is disarmed");
        assert_eq!(VirtualLock(p, 0x1000), TRUE);
        assert_eq!(VirtualUnlock(p, 0x1000), TRUE);
        assert_eq!(VirtualFree(p, 0, MEM_RELEASE), TRUE);
    }
}
