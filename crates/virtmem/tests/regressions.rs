//! Regression tests for engine bugs found by the spec and differential tests. Each test
//! names the rule it guards; the spec tests cover the same ground on every backend.

use virtmem::{AllocationType as T, Error, Protection as Pr, SimSpace};

const P: usize = 4096;

/// A lowered commit limit below the committed total must not block calls that add no
/// commit charge: reserving, and recommitting committed pages.
#[test]
fn commit_limit_only_limits_new_charge() {
    let s = SimSpace::simulated();
    let a = s.alloc(0, 8 * P, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
    s.set_commit_limit(Some(4 * P));
    assert_eq!(s.alloc(a, 8 * P, T::COMMIT, Pr::READONLY), Ok(a));
    assert!(s.alloc(0, P, T::RESERVE, Pr::READWRITE).is_ok());
    assert_eq!(s.alloc(0, P, T::RESERVE | T::COMMIT, Pr::READWRITE), Err(Error::CommitmentLimit));
    assert_eq!(s.committed_bytes(), 8 * P);
}

/// VirtualProtect with size 0 changed the page at the address (as if the size were 1)
/// instead of failing with 87 like Windows.
#[test]
fn protect_size_zero_is_invalid_parameter() {
    let s = SimSpace::simulated();
    let a = s.alloc(0, P, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
    assert_eq!(s.protect(a, 0, Pr::READONLY), Err(Error::InvalidParameter));
    assert_eq!(s.query(a).unwrap().protect, Pr::READWRITE);
}

/// VirtualLock / VirtualUnlock error codes follow Windows' kernel: a zero size is 87 (it
/// used to act on one page), locking free memory is 998 (was 487), and unlocking anything
/// that is not locked is 158 (reserved pages gave 998, free memory 487).
#[test]
fn lock_unlock_error_codes() {
    let s = SimSpace::simulated();
    let a = s.alloc(0, 4 * P, T::RESERVE, Pr::READWRITE).unwrap();
    s.alloc(a, P, T::COMMIT, Pr::READWRITE).unwrap();
    assert_eq!(s.lock(a, 0), Err(Error::InvalidParameter));
    assert_eq!(s.unlock(a, 0), Err(Error::InvalidParameter));
    assert_eq!(s.lock(a + 0x10_0000, P), Err(Error::NoAccess));
    assert_eq!(s.lock(a, 8 * P), Err(Error::NoAccess));
    assert_eq!(s.unlock(a + P, P), Err(Error::NotLocked));
    assert_eq!(s.unlock(a + 0x10_0000, P), Err(Error::NotLocked));
    assert_eq!(s.unlock(a, P), Err(Error::NotLocked));
    assert_eq!(s.lock(a, P), Ok(()));
    assert_eq!(s.unlock(a, P), Ok(()));
}

/// Linux: an instruction fetch (`execute`) from a PAGE_EXECUTE page failed with an access
/// violation, because the backend copied with process_vm_readv, which needs PROT_READ,
/// and PAGE_EXECUTE pages are mapped execute-only. Found by the differential test.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn linux_execute_fetch_from_execute_only_pages() {
    let s = virtmem::LinuxSpace::linux().unwrap();
    let a = s.alloc(0, 2 * P, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
    s.write(a + P - 2, &[0xC3, 0x90, 0xCC, 0xF4]).unwrap();
    s.protect(a, 2 * P, Pr::EXECUTE).unwrap();
    let mut code = [0u8; 4];
    s.execute(a + P - 2, &mut code).unwrap();
    assert_eq!(code, [0xC3, 0x90, 0xCC, 0xF4]);
    // Reading it works the same way (PAGE_EXECUTE is readable, as on Windows x64);
    // writing it is refused by the rules.
    let mut read = [0u8; 4];
    s.read(a + P - 2, &mut read).unwrap();
    assert_eq!(read, [0xC3, 0x90, 0xCC, 0xF4]);
    assert!(matches!(s.write(a, &[0]), Err(Error::AccessViolation { .. })));
    s.free(a, 0, virtmem::FreeType::RELEASE).unwrap();
}

/// Linux: VirtualLock on a write-watched range made GetWriteWatch report the locked
/// pages as written (mlock populates pages with write faults). A lock writes nothing;
/// pages written before the lock stay dirty. Found by the differential test.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn linux_lock_does_not_dirty_write_watched_pages() {
    use virtmem::WriteWatchFlags as W;
    let s = virtmem::LinuxSpace::linux().unwrap();
    let a = s.alloc(0, 4 * P, T::RESERVE | T::COMMIT | T::WRITE_WATCH, Pr::READWRITE).unwrap();
    s.write(a + 2 * P, &[1]).unwrap();
    s.lock(a, 4 * P).unwrap();
    assert_eq!(s.get_write_watch(W::empty(), a, 4 * P, 8), Ok(vec![a + 2 * P]));
    s.unlock(a, 4 * P).unwrap();
    s.write(a, &[1]).unwrap();
    assert_eq!(s.get_write_watch(W::empty(), a, 4 * P, 8), Ok(vec![a, a + 2 * P]));
    s.free(a, 0, virtmem::FreeType::RELEASE).unwrap();
}

/// Linux: making locked, write-watched memory writable again (VirtualProtect, or a guard
/// page firing) marked its pages as written (mprotect populates locked memory with write
/// faults). Found by the differential test.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn linux_protecting_locked_memory_does_not_dirty_write_watched_pages() {
    use virtmem::WriteWatchFlags as W;
    let s = virtmem::LinuxSpace::linux().unwrap();
    let a = s.alloc(0, 4 * P, T::RESERVE | T::COMMIT | T::WRITE_WATCH, Pr::READWRITE).unwrap();
    s.lock(a, 4 * P).unwrap();
    s.protect(a, 4 * P, Pr::READONLY).unwrap();
    s.protect(a, 2 * P, Pr::READWRITE).unwrap();
    s.protect(a + 2 * P, 2 * P, Pr::READWRITE | Pr::GUARD).unwrap();
    assert!(matches!(s.write(a + 3 * P, &[1]), Err(Error::GuardPage { .. })));
    assert_eq!(s.get_write_watch(W::empty(), a, 4 * P, 8), Ok(vec![]));
    s.write(a + 3 * P, &[1]).unwrap();
    assert_eq!(s.get_write_watch(W::empty(), a, 4 * P, 8), Ok(vec![a + 3 * P]));
    s.free(a, 0, virtmem::FreeType::RELEASE).unwrap();
}

/// A simulated configuration with impossible values made a space that panicked
/// (`end_address: 0`) or handed out large-page allocations not aligned to a large page
/// (`large_page_size: 3 MiB`). The space now normalises its limits: an end below the
/// start gives an empty space, and a large-page size that is not a power-of-two
/// multiple of 64 KiB means no large pages.
#[test]
fn impossible_simulated_limits_are_normalised() {
    use virtmem::{MemState, SimConfig};
    for (min, end) in [(0x1_0000, 0), (0x100_0000, 0x10_0000), (0x1_0000, 0x1_0000)] {
        let s = SimSpace::simulated_with(SimConfig { min_address: min, end_address: end, ..Default::default() });
        let info = s.system_info();
        assert!(info.minimum_application_address <= info.maximum_application_address + 1);
        // (No size fits an empty space: ERROR_INVALID_PARAMETER, as for any size larger
        // than the whole space.)
        assert_eq!(s.alloc(0, P, T::RESERVE, Pr::READWRITE), Err(Error::InvalidParameter));
        assert!(s.alloc(0x10_0000, P, T::RESERVE, Pr::READWRITE).is_err());
        assert!(s.query(0x10_0000).is_err() || s.query(0x10_0000).unwrap().state == MemState::Free);
    }
    // Unaligned bounds are rounded inwards to 64 KiB.
    let s = SimSpace::simulated_with(SimConfig { min_address: 0x1_8000, end_address: 0x4_8000, ..Default::default() });
    assert_eq!(s.system_info().minimum_application_address, 0x2_0000);
    assert_eq!(s.system_info().maximum_application_address, 0x3_FFFF);
    let s = SimSpace::simulated_with(SimConfig { large_page_size: 3 << 20, ..Default::default() });
    assert_eq!(s.system_info().large_page_size, 0);
    let ty = T::RESERVE | T::COMMIT | T::LARGE_PAGES;
    assert!(s.alloc(0, 6 << 20, ty, Pr::READWRITE).is_err());
}

/// `check_quiet` answers as `check` does, without `check`'s side effect: an armed guard
/// page met is reported (at the first faulting address) and stays armed, so a caller (the
/// C ABI's copies) can check its own buffer before an access disarms it.
#[test]
fn check_quiet_reports_a_guard_page_and_leaves_it_armed() {
    use virtmem::AccessKind;
    let s = SimSpace::simulated();
    let b = s.alloc(0, 0x3000, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
    s.protect(b + 0x1000, 0x1000, Pr::READWRITE | Pr::GUARD).unwrap();
    let guard = |e: Result<(), Error>| matches!(e, Err(Error::GuardPage { address, .. }) if address == b + 0x1000);
    for _ in 0..2 {
        assert!(guard(s.check_quiet(b + 0xff0, 0x20, AccessKind::Read)));
        assert_eq!(s.query(b + 0x1000).unwrap().protect, Pr::READWRITE | Pr::GUARD);
    }
    assert!(s.check_quiet(b, 0x1000, AccessKind::Write).is_ok());
    assert!(matches!(s.check_quiet(b + 0x2000, 0x2000, AccessKind::Read), Err(Error::AccessViolation { .. })));
    assert!(guard(s.check(b + 0xff0, 0x20, AccessKind::Read)));
    assert_eq!(s.query(b + 0x1000).unwrap().protect, Pr::READWRITE);
    assert!(s.check_quiet(b + 0xff0, 0x20, AccessKind::Read).is_ok());
}
