//! `VirtmemCreateProcessEx` and `VirtmemProcessConfigInit`: simulated processes with their
//! own user range, large-page size and reset policy, as an emulator of a 32-bit guest or a
//! fuzzer asks for them; every invalid field refused with `ERROR_INVALID_PARAMETER`, an
//! unreadable configuration with `ERROR_NOACCESS`; snapshots and restores keep the
//! configuration.

use std::ptr::{null, null_mut};

use crate::*;

/// The Win32 x64 size of `MEMORY_BASIC_INFORMATION`.
const MBI: SIZE_T = 48;
const K64: usize = 0x1_0000;

/// A 32-bit guest's user range, 0x10000 to 0x7FFEFFFF, with no large pages.
fn guest32(policy: DWORD) -> VIRTMEM_PROCESS_CONFIG {
    let mut c = defaults();
    c.MinimumApplicationAddress = K64;
    c.MaximumApplicationAddress = 0x7FFE_FFFF;
    c.LargePageSize = 0;
    c.ResetPolicy = policy;
    c
}

fn defaults() -> VIRTMEM_PROCESS_CONFIG {
    let mut c = VIRTMEM_PROCESS_CONFIG {
        cbSize: 0,
        ResetPolicy: 7,
        MinimumApplicationAddress: 1,
        MaximumApplicationAddress: 2,
        LargePageSize: 3,
    };
    // SAFETY: `c` is a live local of the type the function fills.
    assert_eq!(unsafe { VirtmemProcessConfigInit(&mut c) }, TRUE);
    c
}

/// `VirtmemCreateProcessEx(config)`.
fn create_ex(config: *const VIRTMEM_PROCESS_CONFIG) -> HANDLE {
    // SAFETY: the function checks the pointer (NULL: defaults; unreadable: 998).
    unsafe { VirtmemCreateProcessEx(config) }
}

fn create(c: &VIRTMEM_PROCESS_CONFIG) -> HANDLE {
    let h = create_ex(c);
    assert!(!h.is_null(), "VirtmemCreateProcessEx({c:?}): {}", GetLastError());
    h
}

fn alloc(h: HANDLE, address: usize, size: usize, ty: DWORD) -> usize {
    // SAFETY: the address is in the simulated process, never dereferenced here.
    unsafe { VirtualAllocEx(h, address as LPVOID, size, ty, PAGE_READWRITE) as usize }
}

fn expect_error(code: DWORD) {
    assert_eq!(GetLastError(), code);
}

#[test]
fn init_fills_the_windows_x64_defaults() {
    let c = defaults();
    assert_eq!(c.cbSize as usize, std::mem::size_of::<VIRTMEM_PROCESS_CONFIG>());
    assert_eq!(
        (c.MinimumApplicationAddress, c.MaximumApplicationAddress, c.LargePageSize, c.ResetPolicy),
        (0x1_0000, 0x7FFF_FFFE_FFFF, 2 << 20, VIRTMEM_RESET_KEEP)
    );
    // SAFETY: NULL and an unmapped address are what is being tested: they are checked.
    unsafe {
        SetLastError(0);
        assert_eq!(VirtmemProcessConfigInit(null_mut()), FALSE);
        expect_error(ERROR_NOACCESS);
        SetLastError(0);
        assert_eq!(VirtmemProcessConfigInit(8 as *mut VIRTMEM_PROCESS_CONFIG), FALSE);
        expect_error(ERROR_NOACCESS);
    }
}

/// A NULL configuration, and the defaults `VirtmemProcessConfigInit` fills, give the space
/// `VirtmemCreateProcess` gives: top-down allocations at the top of the x64 user range.
#[test]
fn null_and_default_configurations_make_a_windows_x64_process() {
    for h in [create_ex(null()), create_ex(&defaults()), VirtmemCreateProcess()] {
        assert!(!h.is_null());
        assert_eq!(alloc(h, 0, K64, MEM_RESERVE | MEM_TOP_DOWN), 0x7FFF_FFFE_0000);
        assert_eq!(alloc(h, 0x8000_0000, K64, MEM_RESERVE), 0x8000_0000);
        assert_eq!(CloseHandle(h), TRUE);
    }
}

#[test]
fn a_32_bit_guest_range_holds_every_allocation() {
    let h = create(&guest32(VIRTMEM_RESET_KEEP));
    assert_eq!(alloc(h, 0, K64, MEM_RESERVE | MEM_COMMIT), K64, "bottom-up starts at the lowest address");
    assert_eq!(alloc(h, 0, K64, MEM_RESERVE | MEM_TOP_DOWN), 0x7FFE_0000, "top-down starts at the top");
    // Outside the range: what Windows answers outside its user range.
    SetLastError(0);
    assert_eq!(alloc(h, 0x7FFF_0000, K64, MEM_RESERVE), 0);
    expect_error(ERROR_INVALID_PARAMETER);
    SetLastError(0);
    assert_eq!(alloc(h, 0x7FFF_0000 - 0x1000, 0x2000, MEM_RESERVE), 0, "straddling the top");
    expect_error(ERROR_INVALID_PARAMETER);
    SetLastError(0);
    assert_eq!(alloc(h, 0x8000, 0x1000, MEM_RESERVE), 0, "below the lowest address");
    expect_error(ERROR_INVALID_PARAMETER);
    let mut mbi = std::mem::MaybeUninit::<MEMORY_BASIC_INFORMATION>::zeroed();
    // SAFETY: `mbi` is writable local storage of MBI bytes.
    unsafe {
        SetLastError(0);
        assert_eq!(VirtualQueryEx(h, 0x7FFF_0000 as LPCVOID, mbi.as_mut_ptr(), MBI), 0, "query past the top");
        expect_error(ERROR_INVALID_PARAMETER);
        assert_eq!(VirtualQueryEx(h, 0x7FFE_FFFF as LPCVOID, mbi.as_mut_ptr(), MBI), MBI);
        let m = mbi.assume_init();
        assert_eq!((m.BaseAddress as usize, m.AllocationBase as usize), (0x7FFE_F000, 0x7FFE_0000));
    }
    // The whole range between them, then nothing is left.
    let rest = 0x7FFE_0000 - 2 * K64;
    assert_eq!(alloc(h, 0, rest, MEM_RESERVE), 2 * K64);
    SetLastError(0);
    assert_eq!(alloc(h, 0, K64, MEM_RESERVE), 0, "exhausted");
    expect_error(ERROR_NOT_ENOUGH_MEMORY);
    // A size bigger than the whole range is a bad parameter, as on Windows.
    SetLastError(0);
    assert_eq!(alloc(h, 0, 0x8000_0000, MEM_RESERVE), 0);
    expect_error(ERROR_INVALID_PARAMETER);
    assert_eq!(CloseHandle(h), TRUE);
}

#[test]
fn without_large_pages_mem_large_pages_is_refused() {
    let h = create(&guest32(VIRTMEM_RESET_KEEP));
    SetLastError(0);
    assert_eq!(alloc(h, 0, 2 << 20, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES), 0);
    expect_error(ERROR_NO_SYSTEM_RESOURCES);
    assert_eq!(CloseHandle(h), TRUE);
    // With 64 KiB large pages, allocations of whole ones are granted.
    let mut c = guest32(VIRTMEM_RESET_KEEP);
    c.LargePageSize = K64;
    let h = create(&c);
    assert_ne!(alloc(h, 0, K64, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES), 0, "{}", GetLastError());
    assert_eq!(CloseHandle(h), TRUE);
}

/// Writes one byte, resets the page, and tries to undo: the result of the undo.
fn reset_then_undo(h: HANDLE) -> (usize, DWORD) {
    let p = alloc(h, 0, 0x1000, MEM_RESERVE | MEM_COMMIT);
    assert_ne!(p, 0);
    // SAFETY: `b` is one readable byte; `p` is in the simulated process.
    unsafe {
        let b = 0x5Au8;
        assert_eq!(WriteProcessMemory(h, p as LPVOID, (&b as *const u8).cast(), 1, null_mut()), TRUE);
        assert_eq!(alloc(h, p, 0x1000, MEM_RESET), p);
        SetLastError(0);
        (alloc(h, p, 0x1000, MEM_RESET_UNDO), GetLastError())
    }
}

#[test]
fn the_reset_policy_decides_whether_reset_undo_finds_the_data() {
    let kept = create(&guest32(VIRTMEM_RESET_KEEP));
    let (r, _) = reset_then_undo(kept);
    assert_ne!(r, 0);
    let discarding = create(&guest32(VIRTMEM_RESET_DISCARD));
    assert_eq!(reset_then_undo(discarding), (0, ERROR_BUSY));
    for h in [kept, discarding] {
        assert_eq!(CloseHandle(h), TRUE);
    }
}

#[test]
fn every_invalid_field_is_refused_and_makes_nothing() {
    let good = guest32(VIRTMEM_RESET_KEEP);
    let mut bad = Vec::new();
    for cb in [0, 4, std::mem::size_of::<VIRTMEM_PROCESS_CONFIG>() as DWORD + 8, DWORD::MAX] {
        bad.push(VIRTMEM_PROCESS_CONFIG { cbSize: cb, ..good });
    }
    for min in [0, 0x8000, K64 + 0x1000, 0x7FFF_0000, 0x8000_0000] {
        bad.push(VIRTMEM_PROCESS_CONFIG { MinimumApplicationAddress: min, ..good });
    }
    for max in [0x7FFF_0000, 0x7FFE_FFFE, K64 - 1, 0x7FFF_FFFF_FFFF, usize::MAX] {
        bad.push(VIRTMEM_PROCESS_CONFIG { MaximumApplicationAddress: max, ..good });
    }
    for lp in [0x1000, 0x8000, 3 * K64, usize::MAX, 1] {
        bad.push(VIRTMEM_PROCESS_CONFIG { LargePageSize: lp, ..good });
    }
    for policy in [2, DWORD::MAX] {
        bad.push(VIRTMEM_PROCESS_CONFIG { ResetPolicy: policy, ..good });
    }
    for c in bad {
        SetLastError(0);
        assert!(create_ex(&c).is_null(), "{c:?}");
        expect_error(ERROR_INVALID_PARAMETER);
    }
    // The smallest range (one granule) and the largest are valid.
    let one =
        VIRTMEM_PROCESS_CONFIG { MinimumApplicationAddress: 0x40_0000, MaximumApplicationAddress: 0x40_FFFF, ..good };
    let h = create(&one);
    assert_eq!(alloc(h, 0, K64, MEM_RESERVE), 0x40_0000);
    SetLastError(0);
    assert_eq!(alloc(h, 0, 0x1000, MEM_RESERVE), 0);
    expect_error(ERROR_NOT_ENOUGH_MEMORY);
    assert_eq!(CloseHandle(h), TRUE);
}

#[test]
fn an_unreadable_configuration_is_no_access() {
    for p in [8usize, usize::MAX - 4] {
        SetLastError(0);
        assert!(create_ex(p as *const VIRTMEM_PROCESS_CONFIG).is_null());
        expect_error(ERROR_NOACCESS);
    }
    // A configuration whose first field is readable and the rest is not.
    let page = alloc(GetCurrentProcess(), 0, 0x2000, MEM_RESERVE | MEM_COMMIT);
    assert_ne!(page, 0);
    // SAFETY: the second page of our own allocation is made inaccessible, and the first
    // four bytes before it hold the cbSize.
    unsafe {
        let mut old = 0;
        assert_eq!(VirtualProtect((page + 0x1000) as LPVOID, 0x1000, PAGE_NOACCESS, &mut old), TRUE);
        let at = page + 0x1000 - 8;
        std::ptr::write_unaligned(at as *mut DWORD, std::mem::size_of::<VIRTMEM_PROCESS_CONFIG>() as DWORD);
        SetLastError(0);
        assert!(create_ex(at as *const VIRTMEM_PROCESS_CONFIG).is_null());
        expect_error(ERROR_NOACCESS);
        assert_eq!(VirtualFree(page as LPVOID, 0, MEM_RELEASE), TRUE);
    }
}

#[test]
fn snapshots_and_restores_keep_the_configuration() {
    let h = create(&guest32(VIRTMEM_RESET_DISCARD));
    assert_eq!(alloc(h, 0, K64, MEM_RESERVE | MEM_TOP_DOWN), 0x7FFE_0000);
    let snap = VirtmemSnapshotProcess(h);
    assert!(!snap.is_null());
    assert_eq!(alloc(snap, 0, K64, MEM_RESERVE | MEM_TOP_DOWN), 0x7FFD_0000, "the snapshot's range");
    SetLastError(0);
    assert_eq!(alloc(snap, 0x7FFF_0000, K64, MEM_RESERVE), 0);
    expect_error(ERROR_INVALID_PARAMETER);
    assert_eq!(reset_then_undo(snap), (0, ERROR_BUSY), "the snapshot's reset policy");
    // A restore between processes of the same configuration works both ways.
    assert_eq!(VirtmemRestoreProcess(snap, h), TRUE);
    assert_eq!(alloc(snap, 0, K64, MEM_RESERVE | MEM_TOP_DOWN), 0x7FFD_0000);
    // Across configurations it fails and changes nothing: another range or large-page
    // size -> ERROR_INVALID_PARAMETER, only another reset policy -> ERROR_NOT_SUPPORTED.
    let x64 = VirtmemCreateProcess();
    let keeping = create(&guest32(VIRTMEM_RESET_KEEP));
    let mut other_lp = guest32(VIRTMEM_RESET_DISCARD);
    other_lp.LargePageSize = K64;
    let other_lp = create(&other_lp);
    for (to, from, code) in [
        (h, x64, ERROR_INVALID_PARAMETER),
        (x64, h, ERROR_INVALID_PARAMETER),
        (h, other_lp, ERROR_INVALID_PARAMETER),
        (h, keeping, ERROR_NOT_SUPPORTED),
        (keeping, h, ERROR_NOT_SUPPORTED),
    ] {
        SetLastError(0);
        assert_eq!(VirtmemRestoreProcess(to, from), FALSE);
        expect_error(code);
    }
    assert_eq!(alloc(h, 0, K64, MEM_RESERVE | MEM_TOP_DOWN), 0x7FFD_0000, "h unchanged");
    assert_eq!(alloc(keeping, 0, K64, MEM_RESERVE | MEM_TOP_DOWN), 0x7FFE_0000, "keeping unchanged");
    for p in [h, snap, x64, keeping, other_lp] {
        assert_eq!(CloseHandle(p), TRUE);
    }
}
