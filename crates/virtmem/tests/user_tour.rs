//! A runtime author's tour of the API, written from the README and the rustdoc alone:
//! reserve, commit, protect, query, write watch and guard pages, on the simulated space
//! and on the Linux space, each answer checked against
//! `shared/spec/win32-virtual-memory.md`.

use virtmem::{
    AllocationType as A, Error, FreeType, LinuxSpace, MemState, MemType, Protection as P, SimSpace, VirtualSpace,
    WriteWatchFlags,
};

const PAGE: usize = 0x1000;
const GRANULE: usize = 0x10000;

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> u32 {
    r.expect_err("the call should fail").code()
}

/// Everything the spec says about one small reservation's life.
fn tour(space: &dyn VirtualSpace) {
    let info = space.system_info();
    assert_eq!(info.page_size, PAGE);
    assert_eq!(info.allocation_granularity, GRANULE);
    assert_eq!(info.minimum_application_address, 0x10000);

    // "Address space": reserve 3 pages at a NULL address: G-aligned base, size rounded to P.
    let base = space.alloc(0, 0x2001, A::RESERVE, P::NOACCESS).expect("reserve");
    assert_eq!(base % GRANULE, 0);
    let q = space.query(base + 5).unwrap();
    assert_eq!(q.base_address, base);
    assert_eq!(q.allocation_base, base);
    assert_eq!(q.allocation_protect, P::NOACCESS);
    assert_eq!(q.region_size, 0x3000, "size rounded up to P, not G");
    assert_eq!(q.state, MemState::Reserve);
    assert_eq!(q.protect, P::empty(), "reserved pages: Protect 0");
    assert_eq!(q.mem_type, Some(MemType::Private));

    // The tail of the granule is free memory, but blocked for new reservations.
    let tail = space.query(base + 0x3000).unwrap();
    assert_eq!(tail.state, MemState::Free);
    assert_eq!(tail.allocation_base, 0);
    assert_eq!(tail.protect, P::NOACCESS, "free pages: PAGE_NOACCESS");
    assert_eq!(tail.mem_type, None);
    assert_eq!(tail.type_bits(), 0);
    assert_eq!(code(space.alloc(base + 0x8000, PAGE, A::RESERVE, P::READWRITE)), 487);

    // Validation order (VirtualAlloc 1-3).
    assert_eq!(code(space.alloc(base, 0, A::COMMIT, P::READWRITE)), 87);
    assert_eq!(code(space.alloc(0, PAGE, A::TOP_DOWN, P::READWRITE)), 87);
    assert_eq!(code(space.alloc(0, PAGE, A::COMMIT | A::WRITE_WATCH, P::READWRITE)), 87);
    assert_eq!(code(space.alloc(0, PAGE, A::RESERVE, P::READWRITE | P::READONLY)), 87);
    assert_eq!(code(space.alloc(0, PAGE, A::RESERVE, P::NOACCESS | P::GUARD)), 87);
    assert_eq!(code(space.alloc(0, PAGE, A::RESERVE, P::WRITECOPY)), 87);
    assert_eq!(code(space.alloc(base, PAGE, A::RESET, P::empty())), 87);
    assert_eq!(code(space.alloc(0x1000, PAGE, A::RESERVE, P::READWRITE)), 87);
    assert_eq!(code(space.alloc(0, usize::MAX, A::RESERVE, P::READWRITE)), 87);

    // Commit: a 2-byte range straddling a page boundary commits both pages.
    let p = space.alloc(base + 0x1fff, 2, A::COMMIT, P::READWRITE).expect("commit");
    assert_eq!(p, base + 0x1000, "the first page's base");
    let q = space.query(base + 0x1000).unwrap();
    assert_eq!((q.state, q.region_size, q.protect), (MemState::Commit, 0x2000, P::READWRITE));
    assert_eq!(q.allocation_protect, P::NOACCESS, "AllocationProtect never changes");
    let first = space.query(base).unwrap();
    assert_eq!((first.state, first.region_size), (MemState::Reserve, 0x1000));
    // Fresh commit reads zero.
    let mut buf = [0xAAu8; 16];
    space.read(base + 0x1ff8, &mut buf).unwrap();
    assert_eq!(buf, [0; 16]);
    space.write(base + 0x1ffe, b"hi!").unwrap();
    // Past the end of the reservation, or into free memory: 487, nothing committed.
    assert_eq!(code(space.alloc(base, 0x4000, A::COMMIT, P::READWRITE)), 487);
    assert_eq!(space.query(base).unwrap().state, MemState::Reserve);
    assert_eq!(code(space.alloc(base + 0x3000, PAGE, A::COMMIT, P::READWRITE)), 487);
    // Recommitting keeps data and takes the new protection; a mix of states is fine.
    assert_eq!(space.alloc(base, 0x3000, A::COMMIT, P::READONLY).unwrap(), base);
    let mut hi = [0u8; 3];
    space.read(base + 0x1ffe, &mut hi).unwrap();
    assert_eq!(&hi, b"hi!");
    let q = space.query(base).unwrap();
    assert_eq!((q.region_size, q.protect), (0x3000, P::READONLY));
    let e = space.write(base, b"x").unwrap_err();
    assert_eq!(e.exception_code(), Some(0xC000_0005));

    // VirtualProtect: old protection of the first page only.
    assert_eq!(space.protect(base + 0x1000, 0x10, P::READWRITE).unwrap(), P::READONLY);
    assert_eq!(space.protect(base, 0x3000, P::EXECUTE_READ).unwrap(), P::READONLY, "first page's protection");
    // WRITECOPY on private memory, a bad protection: 87.
    assert_eq!(code(space.protect(base, PAGE, P::WRITECOPY)), 87);
    assert_eq!(code(space.protect(base, PAGE, P::empty())), 87);
    // Free memory: 487.
    assert_eq!(code(space.protect(base + 0x3000, PAGE, P::READWRITE)), 487);

    // Decommit a page, then a range with a reserved page: 487 and old = NOACCESS.
    space.free(base + 0x1000, 1, FreeType::DECOMMIT).unwrap();
    let q = space.query(base + 0x1000).unwrap();
    assert_eq!((q.state, q.protect), (MemState::Reserve, P::empty()));
    assert_eq!(space.protect_detailed(base, 0x3000, P::READWRITE), Err((Error::InvalidAddress, Some(P::NOACCESS))));
    // Nothing changed: the first page is still EXECUTE_READ.
    assert_eq!(space.query(base).unwrap().protect, P::EXECUTE_READ);
    // Decommitted pages recommit as zeros.
    space.alloc(base + 0x1000, PAGE, A::COMMIT, P::READWRITE).unwrap();
    let mut one = [0xFFu8; 2];
    space.read(base + 0x1ffe, &mut one).unwrap();
    assert_eq!(one, [0, 0]);

    // Guard pages.
    let old = space.protect(base + 0x1000, PAGE, P::READWRITE | P::GUARD).unwrap();
    assert_eq!(old, P::READWRITE);
    let q = space.query(base + 0x1000).unwrap();
    assert_eq!(q.protect.bits(), 0x104);
    assert_eq!(q.region_size, PAGE);
    let e = space.read(base + 0x1000, &mut [0u8; 4]).unwrap_err();
    assert_eq!(e.exception_code(), Some(0x8000_0001));
    assert!(matches!(e, Error::GuardPage { address, .. } if address == base + 0x1000));
    assert_eq!(space.query(base + 0x1000).unwrap().protect, P::READWRITE);
    space.read(base + 0x1000, &mut [0u8; 4]).expect("the retry succeeds");
    // Re-armed by VirtualProtect; the old protection includes the guard bit while armed.
    space.protect(base + 0x1000, PAGE, P::READONLY | P::GUARD).unwrap();
    assert_eq!(space.protect(base + 0x1000, PAGE, P::READONLY | P::GUARD).unwrap(), P::READONLY | P::GUARD);
    // A write to a read-only guard page: the guard fires first, then the retry faults.
    let e = space.write(base + 0x1000, b"z").unwrap_err();
    assert_eq!(e.exception_code(), Some(0x8000_0001));
    let e = space.write(base + 0x1000, b"z").unwrap_err();
    assert_eq!(e.exception_code(), Some(0xC000_0005));
    // Only the page touched is disarmed.
    space.protect(base, 0x3000, P::READWRITE | P::GUARD).unwrap();
    assert!(space.read(base + 0x1000, &mut [0u8; 1]).is_err());
    let q = space.query(base).unwrap();
    assert_eq!((q.protect.bits(), q.region_size), (0x104, PAGE));
    let q = space.query(base + 0x1000).unwrap();
    assert_eq!((q.protect, q.region_size), (P::READWRITE, PAGE));
    assert_eq!(space.query(base + 0x2000).unwrap().protect.bits(), 0x104);

    // VirtualFree.
    assert_eq!(code(space.free(base, 0, FreeType::DECOMMIT | FreeType::RELEASE)), 87);
    assert_eq!(code(space.free(base, 0, FreeType::empty())), 87);
    assert_eq!(code(space.free(base, PAGE, FreeType::RELEASE)), 87);
    assert_eq!(code(space.free(base + 0x1000, 0, FreeType::RELEASE)), 487);
    assert_eq!(code(space.free(0, 0, FreeType::RELEASE)), 87);
    assert_eq!(code(space.free(base + 0x1000, 0, FreeType::DECOMMIT)), 487);
    assert_eq!(code(space.free(base + 0x2000, 0x2000, FreeType::DECOMMIT)), 87);
    assert_eq!(code(space.free(base + 0x3000, PAGE, FreeType::DECOMMIT)), 487);
    // MEM_DECOMMIT, size 0, at the base: the whole allocation stays reserved.
    space.free(base + 0x10, 0, FreeType::DECOMMIT).unwrap();
    let q = space.query(base).unwrap();
    assert_eq!((q.state, q.region_size), (MemState::Reserve, 0x3000));
    // Release from inside the first page.
    space.free(base + 0xfff, 0, FreeType::RELEASE).unwrap();
    let q = space.query(base).unwrap();
    assert_eq!(q.state, MemState::Free);
    assert_eq!(q.allocation_base, 0);

    // VirtualQuery above the top of user space: 87; address 0 is valid.
    let top = space.system_info().maximum_application_address;
    assert_eq!(code(space.query(top + 1)), 87);
    assert_eq!(space.query(0).unwrap().state, MemState::Free);
}

/// Write watch (spec "Write watch").
fn write_watch(space: &dyn VirtualSpace) {
    let base = space.alloc(0, 0x8000, A::RESERVE | A::WRITE_WATCH, P::READWRITE).expect("reserve with write watch");
    space.alloc(base, 0x8000, A::COMMIT, P::READWRITE).unwrap();
    let none = WriteWatchFlags::empty();
    assert_eq!(space.get_write_watch(none, base, 0x8000, 16).unwrap(), Vec::<usize>::new());
    // A write of any size marks every page it touches.
    space.write(base + 0x0fff, &[1, 2]).unwrap();
    space.write(base + 0x5000, &[3]).unwrap();
    assert_eq!(space.get_write_watch(none, base, 0x8000, 16).unwrap(), vec![base, base + 0x1000, base + 0x5000]);
    // Protection changes keep the dirty state.
    space.protect(base, 0x8000, P::READONLY).unwrap();
    space.protect(base, 0x8000, P::READWRITE).unwrap();
    // A capped reset resets only the pages reported.
    assert_eq!(space.get_write_watch(WriteWatchFlags::RESET, base, 0x8000, 2).unwrap(), vec![base, base + 0x1000]);
    assert_eq!(space.get_write_watch(none, base, 0x8000, 16).unwrap(), vec![base + 0x5000]);
    // Decommit clears the dirty state; the recommitted page starts clean.
    space.free(base + 0x5000, PAGE, FreeType::DECOMMIT).unwrap();
    space.alloc(base + 0x5000, PAGE, A::COMMIT, P::READWRITE).unwrap();
    assert_eq!(space.get_write_watch(none, base, 0x8000, 16).unwrap(), Vec::<usize>::new());
    space.write(base + 0x7000, &[9]).unwrap();
    space.reset_write_watch(base, 0x8000).unwrap();
    assert_eq!(space.get_write_watch(none, base, 0x8000, 16).unwrap(), Vec::<usize>::new());
    // Errors.
    assert_eq!(code(space.get_write_watch(none, base, 0, 16)), 87);
    assert_eq!(code(space.get_write_watch(none, base, 0x8000, 0)), 87);
    assert_eq!(code(space.get_write_watch(none, base, 0x9000, 16)), 87);
    assert_eq!(code(space.reset_write_watch(base, 0)), 87);
    let plain = space.alloc(0, PAGE, A::RESERVE | A::COMMIT, P::READWRITE).unwrap();
    assert_eq!(code(space.get_write_watch(none, plain, PAGE, 16)), 87);
    assert_eq!(code(space.reset_write_watch(plain, PAGE)), 87);
    space.free(plain, 0, FreeType::RELEASE).unwrap();
    space.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn simulated_tour() {
    let space = SimSpace::simulated();
    tour(&space);
    write_watch(&space);
    assert_eq!(space.committed_bytes(), 0);
    assert_eq!(space.reserved_bytes(), 0);
}

#[cfg(target_os = "linux")]
#[test]
fn linux_tour() {
    let space = LinuxSpace::linux().expect("a Linux space");
    tour(&space);
    assert!(
        space.backend().write_watch_supported(),
        "this kernel ({:?} missing) should have write watch",
        space.backend().missing_features()
    );
    write_watch(&space);
    assert_eq!(space.committed_bytes(), 0);
}
