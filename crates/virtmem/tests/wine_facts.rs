//! Behaviour the spec does not state, as recorded from Windows through the conformance
//! suite (tests/conformance, recorded under Wine 8 with the corrections of
//! WINE-DIFFERENCES.md applied). Each test names the golden line it pins down.

use virtmem::{win32, AllocationType as T, Error, FreeType, Protection as P, SimSpace};

fn space_with_rw(size: usize) -> (SimSpace, usize) {
    let space = SimSpace::simulated();
    let base = space.alloc(0, size, T::RESERVE | T::COMMIT, P::READWRITE).expect("reserve|commit");
    (space, base)
}

/// reset.expected.txt: `reset +0x1010 size 0x10: ok +0x1000` — MEM_RESET returns the
/// address rounded down to its page, not the address passed in.
#[test]
fn mem_reset_returns_the_page_rounded_address() {
    let (space, base) = space_with_rw(0x8000);
    assert_eq!(space.alloc(base + 0x1010, 0x10, T::RESET, P::READWRITE), Ok(base + 0x1000));
    assert_eq!(space.alloc(base + 0x7fff, 1, T::RESET, P::NOACCESS), Ok(base + 0x7000));
}

/// reset.expected.txt: `reset_undo +0x30000 size 0x10000: ok +0x30000` — the same for
/// MEM_RESET_UNDO.
#[test]
fn mem_reset_undo_returns_the_page_rounded_address() {
    let (space, base) = space_with_rw(0x8000);
    space.alloc(base, 0x8000, T::RESET, P::READWRITE).expect("reset");
    assert_eq!(space.alloc(base + 0x2345, 0x100, T::RESET_UNDO, P::READWRITE), Ok(base + 0x2000));
}

/// free.expected.txt: `decommit NULL size 0x1000: fail err=87` and
/// `decommit NULL size 0: fail err=87`.
#[test]
fn virtual_free_null_decommit_is_invalid_parameter() {
    let space = SimSpace::simulated();
    assert_eq!(space.free(0, 0x1000, FreeType::DECOMMIT), Err(Error::InvalidParameter));
    assert_eq!(space.free(0, 0, FreeType::DECOMMIT), Err(Error::InvalidParameter));
}

/// query.expected.txt: `NULL buffer length 48: ret=0 err=998` and
/// `NULL buffer length 0: ret=0 err=24`.
#[test]
fn virtual_query_null_buffer() {
    let (space, base) = space_with_rw(0x1000);
    assert_eq!(win32::VirtualQuery(&space, base, None, 48), 0);
    assert_eq!(win32::GetLastError(), 998);
    assert_eq!(win32::VirtualQuery(&space, base, None, 0), 0);
    assert_eq!(win32::GetLastError(), 24);
}

/// reset.expected.txt: `reset +0x40000 (free): fail err=487` and
/// `reset +0x8000 (blocked, free): fail err=487`.
#[test]
fn mem_reset_on_free_memory_is_invalid_address() {
    let (space, base) = space_with_rw(0x8000);
    assert_eq!(space.alloc(base + 0x8000, 0x1000, T::RESET, P::READWRITE), Err(Error::InvalidAddress));
    assert_eq!(space.alloc(base + 0x40000, 0x1000, T::RESET, P::READWRITE), Err(Error::InvalidAddress));
}

/// lock.expected.txt: `lock +0x2000 (guard): fail err=2147483649`, then the page reads
/// `prot=0x04` and `lock +0x2000 again: ok` — the first lock of an armed guard page
/// fails with STATUS_GUARD_PAGE_VIOLATION as the last error and disarms the page.
#[test]
fn virtual_lock_of_a_guard_page_trips_the_guard() {
    let (space, base) = space_with_rw(0x4000);
    space.protect(base + 0x2000, 0x1000, P::READWRITE | P::GUARD).expect("protect");
    assert_eq!(win32::VirtualLock(&space, base + 0x2000, 0x1000), 0);
    assert_eq!(win32::GetLastError(), 0x8000_0001);
    assert_eq!(space.query(base + 0x2000).expect("query").protect, P::READWRITE);
    assert_eq!(win32::VirtualLock(&space, base + 0x2000, 0x1000), 1);
    assert_eq!(win32::VirtualUnlock(&space, base + 0x2000, 0x1000), 1);
}

/// lock.expected.txt: `unlock +0 again (not locked): fail err=158` and
/// `unlock +0 after recommit (not locked): fail err=158` (decommit unlocks).
#[test]
fn virtual_unlock_of_unlocked_pages_is_not_locked() {
    let (space, base) = space_with_rw(0x4000);
    assert_eq!(win32::VirtualLock(&space, base, 0x1000), 1);
    assert_eq!(win32::VirtualUnlock(&space, base, 0x1000), 1);
    assert_eq!(win32::VirtualUnlock(&space, base, 0x1000), 0);
    assert_eq!(win32::GetLastError(), 158);
    assert_eq!(win32::VirtualLock(&space, base, 0x1000), 1);
    space.free(base, 0x1000, FreeType::DECOMMIT).expect("decommit");
    space.alloc(base, 0x1000, T::COMMIT, P::READWRITE).expect("recommit");
    assert_eq!(win32::VirtualUnlock(&space, base, 0x1000), 0);
    assert_eq!(win32::GetLastError(), 158);
}

/// alloc_args.expected.txt: `large RESERVE|COMMIT size 0x1000: fail err=87` and
/// `large RESERVE|COMMIT at +0x1000 2M: fail err=87` — misaligned large-page requests
/// are argument errors even where large pages cannot be had; only a well-formed
/// request reports that (ERROR_NO_SYSTEM_RESOURCES).
#[test]
fn misaligned_large_pages_are_87_even_without_large_pages() {
    let config = virtmem::SimConfig { large_page_size: 0, ..Default::default() };
    let space = SimSpace::simulated_with(config);
    let large = T::LARGE_PAGES | T::RESERVE | T::COMMIT;
    assert_eq!(space.alloc(0, 0x1000, large, P::READWRITE), Err(Error::InvalidParameter));
    assert_eq!(space.alloc(0x20_1000, 2 << 20, large, P::READWRITE), Err(Error::InvalidParameter));
    assert_eq!(space.alloc(0, 2 << 20, large, P::READWRITE), Err(Error::NoSystemResources));
}
