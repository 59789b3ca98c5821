//! The Linux backend on this process's real memory: what the kernel really does for
//! each Win32 call.
#![cfg(all(target_os = "linux", not(miri)))]

mod common;

use common::linux_util::*;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use virtmem::{
    AllocationType as T, Error, FreeType, LinuxOptions, LinuxSpace, MemState, MemType, Protection as P, VirtualSpace,
    WriteWatchFlags,
};

const KB: usize = 1024;
const MB: usize = 1024 * KB;

/// The tests of this file run side by side in one process, and every space places its
/// reservations bottom-up from the lowest free address: a range one test releases may be
/// reserved by another at once. A test that checks that a release left nothing mapped
/// holds this lock alone ([`plain_alone`]); every other test holds it shared, for as long
/// as its space lives (recursively: a test may make two spaces, and a second plain read
/// would wait behind a waiting writer while this thread holds the first).
static MAPS: RwLock<()> = RwLock::new(());

/// A space, with the test's turn at [`MAPS`] (dropped after the space).
struct Held {
    space: LinuxSpace,
    _turn: Turn,
}

enum Turn {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

impl std::ops::Deref for Held {
    type Target = LinuxSpace;
    fn deref(&self) -> &LinuxSpace {
        &self.space
    }
}

fn space() -> Held {
    Held { space: LinuxSpace::linux().expect("linux space"), _turn: Turn::Shared(MAPS.read_recursive()) }
}

fn plain_space() -> LinuxSpace {
    LinuxSpace::linux_with(LinuxOptions { pool_bytes: 0, guard_regions: false }).expect("linux space")
}

/// A space whose backend does exactly mmap / mprotect / madvise / munmap: no pool, no
/// guard regions.
fn plain() -> Held {
    let turn = Turn::Shared(MAPS.read_recursive());
    Held { space: plain_space(), _turn: turn }
}

/// [`space`], with no other test of this file running meanwhile.
fn space_alone() -> Held {
    let turn = Turn::Alone(MAPS.write());
    Held { space: LinuxSpace::linux().expect("linux space"), _turn: turn }
}

/// [`plain`], with no other test of this file running meanwhile.
fn plain_alone() -> Held {
    let turn = Turn::Alone(MAPS.write());
    Held { space: plain_space(), _turn: turn }
}

#[test]
fn reserve_commit_decommit_release_are_real() {
    let s = plain_alone();
    let base = s.alloc(0, MB, T::RESERVE, P::NOACCESS).unwrap();
    assert_eq!(base % (64 * KB), 0);
    assert_eq!(mappings(base..base + MB), [(base, base + MB, "---p".to_string())]);

    s.alloc(base + 64 * KB, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(perms_at(base + 64 * KB).unwrap(), "rw-p");
    assert_eq!(perms_at(base).unwrap(), "---p");
    for a in (base + 64 * KB..base + 128 * KB).step_by(4096) {
        store(a, 0xAB);
    }
    assert!(resident(base + 64 * KB..base + 128 * KB).iter().all(|&r| r));
    let mut b = [0u8; 2];
    s.read(base + 64 * KB, &mut b).unwrap();
    assert_eq!(b, [0xAB, 0]);

    s.free(base + 64 * KB, 64 * KB, FreeType::DECOMMIT).unwrap();
    assert_eq!(perms_at(base + 64 * KB).unwrap(), "---p");
    assert!(resident(base + 64 * KB..base + 128 * KB).iter().all(|&r| !r), "decommitted pages left RSS");
    let q = s.query(base + 64 * KB).unwrap();
    assert_eq!((q.state, q.protect), (MemState::Reserve, P::empty()));

    s.alloc(base + 64 * KB, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    for a in (base + 64 * KB..base + 128 * KB).step_by(4096) {
        assert_eq!(load(a), 0, "recommitted page must read zero");
    }
    s.free(base, 0, FreeType::RELEASE).unwrap();
    assert_eq!(mappings(base..base + MB), []);
    assert_eq!(s.query(base).unwrap().state, MemState::Free);
}

#[test]
fn a_small_reservation_maps_its_whole_granule() {
    let s = plain_alone();
    let base = s.alloc(0, 8 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(
        mappings(base..base + 64 * KB),
        [(base, base + 8 * KB, "rw-p".to_string()), (base + 8 * KB, base + 64 * KB, "---p".to_string())]
    );
    // The tail reads as free to VirtualQuery, as on Windows, yet nobody can map there.
    assert_eq!(s.query(base + 8 * KB).unwrap().state, MemState::Free);
    s.free(base, 0, FreeType::RELEASE).unwrap();
    assert_eq!(mappings(base..base + 64 * KB), []);
}

#[test]
fn protections_map_to_the_kernel() {
    let s = space();
    let base = s.alloc(0, 64 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    let cases = [
        (P::READONLY, "r--p"),
        (P::READWRITE, "rw-p"),
        (P::EXECUTE, "--xp"),
        (P::EXECUTE_READ, "r-xp"),
        (P::EXECUTE_READWRITE, "rwxp"),
        (P::NOACCESS, "---p"),
        (P::READWRITE | P::GUARD, "---p"),
        (P::READONLY | P::GUARD, "---p"),
    ];
    store(base, 7);
    for (p, perms) in cases {
        s.protect(base, 4096, p).unwrap();
        assert_eq!(perms_at(base).unwrap(), perms, "{p:?}");
        assert_eq!(s.query(base).unwrap().protect, p);
    }
    s.protect(base, 4096, P::READWRITE).unwrap();
    assert_eq!(load(base), 7, "data survives protection changes");
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn guard_page_is_inaccessible_until_touched_through_the_space() {
    let s = space();
    let base = s.alloc(0, 64 * KB, T::RESERVE | T::COMMIT, P::READWRITE | P::GUARD).unwrap();
    assert_eq!(perms_at(base).unwrap(), "---p");
    assert_eq!(s.query(base).unwrap().protect, P::READWRITE | P::GUARD);
    assert_eq!(
        child_signal(|| {
            let _ = load(base);
        }),
        Some(libc::SIGSEGV)
    );
    // A checked access disarms the guard on that page only.
    let e = s.read(base, &mut [0u8; 1]).unwrap_err();
    assert!(matches!(e, Error::GuardPage { .. }), "{e:?}");
    assert_eq!(perms_at(base).unwrap(), "rw-p");
    assert_eq!(perms_at(base + 4096).unwrap(), "---p");
    assert_eq!(s.query(base + 4096).unwrap().protect, P::READWRITE | P::GUARD);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn malloc_memory_is_not_ours() {
    let s = space();
    let mut block = vec![0x5Au8; 256 * KB];
    let addr = block.as_mut_ptr() as usize;
    let page = (addr + 4095) & !4095;
    assert_eq!(s.free(page, 0, FreeType::RELEASE), Err(Error::InvalidAddress));
    assert_eq!(s.free(page, 4096, FreeType::DECOMMIT), Err(Error::InvalidAddress));
    assert_eq!(s.protect(page, 4096, P::NOACCESS), Err(Error::InvalidAddress));
    assert_eq!(s.alloc(page, 4096, T::COMMIT, P::READONLY), Err(Error::InvalidAddress));
    assert_eq!(s.alloc(page & !0xFFFF, 64 * KB, T::RESERVE, P::READWRITE), Err(Error::InvalidAddress));
    assert!(block.iter().all(|&b| b == 0x5A));
    block[0] = 1; // still writable
    let q = s.query(page).unwrap();
    assert_eq!((q.state, q.mem_type), (MemState::Commit, Some(MemType::Private)));
    assert_eq!(q.protect, P::READWRITE);
}

/// Memory the space did not map is never locked (a lock starting there is
/// ERROR_INVALID_ADDRESS, an unlock ERROR_NOT_LOCKED), while free memory is
/// ERROR_NOACCESS to a lock; accesses through the space are checked against the foreign
/// mapping's own protection, as a CPU access would be: a read of it sees its bytes, a
/// write to a read-only one faults at its first byte and writes nothing.
#[test]
fn foreign_memory_is_never_locked_and_is_accessed_as_its_mapping_allows() {
    use virtmem::AccessKind;
    let s = space();
    let block = vec![0x5Au8; 256 * KB];
    let page = (block.as_ptr() as usize + 4095) & !4095;
    assert_eq!(s.lock(page, 4096), Err(Error::InvalidAddress));
    assert_eq!(s.unlock(page, 4096), Err(Error::NotLocked));
    let mut buf = [0u8; 64];
    s.read(page + 100, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0x5A));
    s.check(page, 8 * 4096, AccessKind::Write).unwrap();
    assert!(block.iter().all(|&b| b == 0x5A));

    let ro = foreign_mapping(64 * KB);
    s.read(ro + 4096, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    s.check_quiet(ro, 64 * KB, AccessKind::Read).unwrap();
    let e = s.write(ro + 8, &[1, 2]).unwrap_err();
    assert_eq!(e, Error::AccessViolation { address: ro + 8, access: AccessKind::Write });
    assert_eq!(
        s.check(ro, 16, AccessKind::Execute),
        Err(Error::AccessViolation { address: ro, access: AccessKind::Execute })
    );
    assert_eq!(s.lock(ro, 4096), Err(Error::InvalidAddress));
    // SAFETY: the mapping is this test's own; reading its first bytes is in bounds.
    assert_eq!(unsafe { std::ptr::read_volatile((ro + 8) as *const u16) }, 0);
    // SAFETY: unmaps the mapping this test made.
    unsafe { libc::munmap(ro as *mut libc::c_void, 64 * KB) };

    // Free memory (a reservation just released): no access, not "not ours". (The
    // backend keeps the released range in its pool, mapped and inaccessible, so no
    // other thread's mapping can land there: it queries free.)
    let base = s.alloc(0, 64 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    s.free(base, 0, FreeType::RELEASE).unwrap();
    assert_eq!(s.query(base).unwrap().state, MemState::Free);
    assert_eq!(s.lock(base, 4096), Err(Error::NoAccess));
    assert_eq!(s.unlock(base, 4096), Err(Error::NotLocked));
}

/// A foreign mapping is reported with the Win32 protection of its access, executable
/// ones included, as its own allocation (private, committed).
#[test]
fn foreign_executable_mappings_report_their_protection() {
    let s = space();
    for (prot, want) in [
        (libc::PROT_EXEC, P::EXECUTE),
        (libc::PROT_READ | libc::PROT_EXEC, P::EXECUTE_READ),
        (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC, P::EXECUTE_READWRITE),
    ] {
        // SAFETY: a fresh anonymous mapping of this test's own, placed by the kernel.
        let p =
            unsafe { libc::mmap(std::ptr::null_mut(), 64 * KB, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert_ne!(p, libc::MAP_FAILED);
        let a = p as usize;
        let q = s.query(a + 4096).unwrap();
        assert_eq!((q.state, q.protect, q.allocation_protect), (MemState::Commit, want, want), "prot {prot:#x}");
        assert_eq!((q.base_address, q.mem_type), (a + 4096, Some(MemType::Private)));
        assert!(q.base_address + q.region_size >= a + 64 * KB, "the region runs to the mapping's end at least");
        // SAFETY: unmaps the mapping made above.
        unsafe { libc::munmap(p, 64 * KB) };
    }
}

#[test]
fn query_never_calls_foreign_memory_free() {
    let s = space();
    let small = Box::new(17u64);
    let local = 5u32;
    let code = libc::malloc as *const () as usize;
    let statik = &MB as *const usize as usize;
    for addr in [&*small as *const u64 as usize, &local as *const u32 as usize, code, statik] {
        let q = s.query(addr).unwrap();
        assert_ne!(q.state, MemState::Free, "{addr:#x}: {q:?}");
        assert!(q.base_address <= addr && addr < q.base_address + q.region_size);
    }
    let q = s.query(code).unwrap();
    assert_eq!(q.mem_type, Some(MemType::Image));
    assert!(q.protect.contains(P::EXECUTE_READ) || q.protect == P::EXECUTE, "{q:?}");
    // A shared mapping is MEM_MAPPED.
    // SAFETY: a fresh shared anonymous mapping.
    let shared = unsafe {
        libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)
    } as usize;
    let q = s.query(shared).unwrap();
    assert_eq!((q.state, q.mem_type, q.protect), (MemState::Commit, Some(MemType::Mapped), P::READONLY));
    // SAFETY: unmaps the mapping made above.
    unsafe { libc::munmap(shared as *mut libc::c_void, 8192) };
    // A whole walk never reports as free a region where a kernel mapping lived
    // throughout the walk (mappings present, identical, before and after it).
    let before = mappings(0..usize::MAX);
    let regions = s.regions();
    let after = mappings(0..usize::MAX);
    let stable: Vec<_> = before.iter().filter(|m| after.contains(m)).collect();
    assert!(stable.len() > 5);
    for r in regions.iter().filter(|r| r.state == MemState::Free) {
        let (a, b) = (r.base_address, r.base_address + r.region_size);
        for m in &stable {
            assert!(!(m.0 < b && a < m.1), "free region {a:#x}..{b:#x} overlaps live mapping {m:x?}");
        }
    }
}

/// Map `len` bytes at exactly `addr` behind the space's back, if nobody is there.
/// A shared mapping, which the kernel never merges with a neighbour, so that its
/// extent stays exactly what was mapped while other tests map memory next to it.
fn map_foreign(addr: usize, len: usize) -> bool {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    p as usize == addr
}

#[test]
fn a_foreign_mapping_is_never_replaced() {
    let s = plain();
    // Find a place the space would choose next, then occupy it behind its back.
    let mut foreign = 0;
    for _ in 0..50 {
        let base = s.alloc(0, MB, T::RESERVE, P::NOACCESS).unwrap();
        s.free(base, 0, FreeType::RELEASE).unwrap();
        if map_foreign(base, 64 * KB) {
            foreign = base;
            break;
        }
    }
    assert_ne!(foreign, 0, "could not occupy a free spot");
    store(foreign, 0x77);
    // At a given address: ERROR_INVALID_ADDRESS, and the mapping is untouched.
    assert_eq!(s.alloc(foreign, MB, T::RESERVE, P::NOACCESS), Err(Error::InvalidAddress));
    assert_eq!(load(foreign), 0x77);
    assert_eq!(perms_at(foreign).unwrap(), "rw-s");
    // With no address: silently placed elsewhere.
    let other = s.alloc(0, MB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    assert!(other + MB <= foreign || other >= foreign + 64 * KB, "{other:#x} overlaps {foreign:#x}");
    assert_eq!(load(foreign), 0x77);
    let q = s.query(foreign).unwrap();
    assert_eq!((q.state, q.allocation_base, q.mem_type), (MemState::Commit, foreign, Some(MemType::Mapped)));
    s.free(other, 0, FreeType::RELEASE).unwrap();
    // SAFETY: unmaps the foreign mapping this test made.
    unsafe { libc::munmap(foreign as *mut libc::c_void, 64 * KB) };
}

#[test]
fn two_spaces_see_each_other_as_foreign() {
    let a = space();
    let b = space();
    let x = a.alloc(0, MB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    let y = b.alloc(0, MB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    assert!(x + MB <= y || y + MB <= x);
    assert_eq!(b.free(x, 0, FreeType::RELEASE), Err(Error::InvalidAddress));
    assert_eq!(b.alloc(x, 4096, T::RESERVE, P::READWRITE), Err(Error::InvalidAddress));
    assert_eq!(b.query(x).unwrap().state, MemState::Commit);
    a.free(x, 0, FreeType::RELEASE).unwrap();
    b.free(y, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn top_down_places_high_and_below_the_stack() {
    let s = space();
    let low = s.alloc(0, MB, T::RESERVE, P::NOACCESS).unwrap();
    let high = s.alloc(0, MB, T::RESERVE | T::TOP_DOWN, P::NOACCESS).unwrap();
    assert!(high > low);
    assert!(high > 1 << 46, "{high:#x} is not near the top");
    let stack = &low as *const usize as usize;
    // The main thread's stack and the room it grows into are never used.
    let main_stack = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .map(|l| usize::from_str_radix(l.split('-').next().unwrap(), 16).unwrap())
        .unwrap();
    assert!(high + MB <= main_stack - (8 * MB), "{high:#x} too close to the stack at {main_stack:#x}");
    let _ = stack;
    s.free(low, 0, FreeType::RELEASE).unwrap();
    s.free(high, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn large_pages_are_real_or_a_clear_error() {
    let s = space();
    let lp = s.system_info().large_page_size;
    let r = s.alloc(0, 2 * MB, T::RESERVE | T::COMMIT | T::LARGE_PAGES, P::READWRITE);
    if lp == 0 {
        assert_eq!(r, Err(Error::NoSystemResources));
        assert_eq!(r.unwrap_err().code(), 1450);
    } else {
        // Huge pages may be configured yet all in use: then the same clear error.
        match r {
            Ok(base) => {
                assert_eq!(base % lp, 0);
                s.free(base, 0, FreeType::RELEASE).unwrap();
            }
            Err(e) => assert_eq!(e, Error::NoSystemResources),
        }
    }
    assert_eq!(s.stats().reservations, 0);
}

#[test]
fn system_info_matches_the_kernel() {
    let s = space();
    let si = s.system_info();
    let min = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr").unwrap().trim().parse::<usize>().unwrap();
    assert!(si.minimum_application_address >= min.max(64 * KB));
    assert_eq!(si.minimum_application_address % (64 * KB), 0);
    assert_eq!(si.maximum_application_address, 0x7FFF_FFFE_FFFF);
}

#[test]
fn reset_keeps_data_when_memory_is_plentiful_and_undo_says_so() {
    let s = space();
    let base = s.alloc(0, 256 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    for i in 0..64 {
        store(base + i * 4096 + 100, i as u8 + 1);
    }
    s.alloc(base, 256 * KB, T::RESET, P::NOACCESS).unwrap();
    s.alloc(base, 256 * KB, T::RESET_UNDO, P::NOACCESS).unwrap();
    for i in 0..64 {
        assert_eq!(load(base + i * 4096 + 100), i as u8 + 1);
    }
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn reset_undo_tells_the_truth_when_pages_were_reclaimed() {
    const MADV_PAGEOUT: i32 = 21;
    const PAGES: usize = 16;
    // MADV_PAGEOUT can only take pages that have left the per-CPU batches, and it drains
    // only the batches of the CPU it runs on: the writes, the reset and the page-out all
    // run on one CPU. Even so the kernel may keep a page, so the truth is read off the
    // page tables (mincore) before the undo, and the scenario is repeated until the
    // kernel dropped at least one page.
    let _pin = Pinned::here();
    let s = space();
    for _ in 0..20 {
        let base = s.alloc(0, PAGES * 4096, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
        for i in 0..PAGES {
            store(base + i * 4096 + 8, 0xC0 | i as u8);
        }
        s.alloc(base, PAGES * 4096, T::RESET, P::NOACCESS).unwrap();
        // Make the kernel reclaim the lazily freed pages now, as memory pressure would.
        // SAFETY: advice on our own committed range; reclaim only drops lazily freed pages.
        let r = unsafe { libc::madvise(base as *mut libc::c_void, PAGES * 4096, MADV_PAGEOUT) };
        assert_eq!(r, 0);
        let kept = resident(base..base + PAGES * 4096);
        let undo = s.alloc(base, PAGES * 4096, T::RESET_UNDO, P::NOACCESS);
        for (i, &k) in kept.iter().enumerate() {
            let want = if k { 0xC0 | i as u8 } else { 0 };
            assert_eq!(load(base + i * 4096 + 8), want, "page {i}: kept {k}");
        }
        let dropped = kept.iter().any(|&k| !k);
        if dropped {
            let e = undo.unwrap_err();
            assert_eq!(e, Error::DataDiscarded);
            assert_eq!(e.code(), 170);
        } else {
            assert_eq!(undo, Ok(base), "nothing was dropped: the undo succeeds");
        }
        s.free(base, 0, FreeType::RELEASE).unwrap();
        if dropped {
            return;
        }
    }
    panic!("in 20 tries MADV_PAGEOUT never reclaimed a lazily freed page");
}

#[test]
fn lock_and_unlock() {
    let s = space();
    let base = s.alloc(0, 64 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    s.lock(base, 16 * KB).unwrap();
    assert!(resident(base..base + 16 * KB).iter().all(|&r| r), "locked pages are resident");
    s.unlock(base, 16 * KB).unwrap();
    assert_eq!(s.unlock(base, 16 * KB), Err(Error::NotLocked));
    s.lock(base, 16 * KB).unwrap();
    // Decommitting unlocks and drops.
    s.free(base, 16 * KB, FreeType::DECOMMIT).unwrap();
    assert!(resident(base..base + 16 * KB).iter().all(|&r| !r));
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn checked_copies_never_crash() {
    let s = space();
    let base = s.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
    s.alloc(base, 4096, T::COMMIT, P::READWRITE).unwrap();
    let e = s.read(base + 4000, &mut [0u8; 200]).unwrap_err();
    assert!(matches!(e, Error::AccessViolation { address, .. } if address == base + 4096), "{e:?}");
    // Straight to the backend, bypassing the rules: a fault, not a crash.
    let e = virtmem::backend::Backend::read(s.backend(), base + 4096, &mut [0u8; 1]).unwrap_err();
    assert_eq!(e, virtmem::backend::BackendError::Fault(base + 4096));
    let e = virtmem::backend::Backend::write(s.backend(), 0x10, &[1]).unwrap_err();
    assert_eq!(e, virtmem::backend::BackendError::Fault(0x10));
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn current_process_is_shared() {
    // The process space places reservations as every space does: its turn too, so that
    // it never takes a range a test holding the lock alone has just released.
    let _turn = MAPS.read_recursive();
    let a = virtmem::current_process();
    let b = virtmem::current_process();
    assert!(std::ptr::eq(a, b));
    let base = a.alloc(0, 64 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(b.query(base).unwrap().state, MemState::Commit);
    b.free(base, 0, FreeType::RELEASE).unwrap();
    let v: &dyn VirtualSpace = a;
    assert_eq!(v.query(base).unwrap().state, MemState::Free);
}

#[test]
fn decommit_with_guard_markers_drops_pages_and_splits_no_mapping() {
    let s = space();
    if !s.backend().uses_guard_regions() {
        eprintln!("kernel without MADV_GUARD_INSTALL: the mprotect path is tested instead");
    }
    let size = 4 * MB;
    let base = s.alloc(0, size, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    for a in (base..base + size).step_by(4096) {
        store(a, 3);
    }
    // Punch a hole in every other 64 KiB.
    for i in (0..size / (64 * KB)).step_by(2) {
        s.free(base + i * 64 * KB, 64 * KB, FreeType::DECOMMIT).unwrap();
    }
    let holes = (0..size / (64 * KB)).step_by(2).map(|i| base + i * 64 * KB);
    for h in holes.clone() {
        assert!(resident(h..h + 64 * KB).iter().all(|&r| !r), "decommitted pages left RSS");
        assert_eq!(s.query(h).unwrap().state, MemState::Reserve);
    }
    assert_eq!(child_signal(|| touch(base)), Some(libc::SIGSEGV));
    assert_eq!(child_signal(|| store(base + 64 * KB * 4, 1)), Some(libc::SIGSEGV));
    assert_eq!(child_signal(|| assert_eq!(load(base + 64 * KB), 3)), None);
    let maps = mappings(base..base + size);
    if s.backend().uses_guard_regions() {
        assert_eq!(maps.len(), 1, "guard markers split no mapping: {maps:x?}");
        assert!(guarded(base..base + 64 * KB).iter().all(|&g| g));
        assert!(guarded(base + 64 * KB..base + 128 * KB).iter().all(|&g| !g));
    } else {
        assert_eq!(maps.len(), size / (64 * KB));
    }
    // Recommit reads zero, the rest kept its data.
    s.alloc(base, size, T::COMMIT, P::READWRITE).unwrap();
    for h in holes {
        assert_eq!(load(h), 0);
        assert_eq!(load(h + 64 * KB), 3);
    }
    assert_eq!(mappings(base..base + size).len(), 1);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

/// Changing the protection of committed pages next to guard-decommitted ones (which
/// share their kernel mapping) takes the marked pages along rather than splitting the
/// mapping around them; they stay inaccessible and empty, and recommit normally.
#[test]
fn protect_beside_guarded_pages_keeps_them_decommitted_and_splits_no_mapping() {
    let s = space();
    let base = s.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
    let page = 4 * KB;
    s.alloc(base, 2 * page, T::COMMIT, P::READWRITE).unwrap();
    store(base, 7);
    store(base + page, 8);
    s.free(base + page, page, FreeType::DECOMMIT).unwrap();
    let maps_before = mappings(base..base + 64 * KB).len();
    for (p, perms) in [(P::READONLY, "r--p"), (P::READWRITE, "rw-p"), (P::EXECUTE_READ, "r-xp")] {
        s.protect(base, page, p).unwrap();
        assert_eq!(perms_at(base).as_deref(), Some(perms));
        assert_eq!(s.query(base + page).unwrap().state, MemState::Reserve);
        assert_eq!(child_signal(|| touch(base + page)), Some(libc::SIGSEGV), "decommitted page became accessible");
        assert_eq!(load(base), 7);
        if s.backend().uses_guard_regions() {
            assert!(guarded(base + page..base + 2 * page)[0], "the guard marker went away");
            assert_eq!(mappings(base..base + 64 * KB).len(), maps_before, "{:x?}", mappings(base..base + 64 * KB));
        }
    }
    s.protect(base, page, P::READWRITE).unwrap();
    s.alloc(base + page, page, T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(load(base + page), 0);
    store(base + page, 1);
    assert_eq!(load(base + page), 1);
    assert_eq!(load(base), 7);
    assert_eq!(effective_mappings(base..base + 2 * page), vec![(base, base + 2 * page, "rw-p".to_string())]);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

/// A protection change that takes guard-marked neighbours along and fails (an injected
/// `mprotect` failure) leaves the kernel and the backend's record as they were: the
/// same change then succeeds and still splits no mapping.
#[test]
fn a_failed_protect_beside_guarded_pages_changes_nothing() {
    let s = space();
    if !s.backend().uses_guard_regions() {
        return;
    }
    let base = s.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
    let page = 4 * KB;
    s.alloc(base, 4 * page, T::COMMIT, P::READWRITE).unwrap();
    store(base + page, 7);
    s.free(base, page, FreeType::DECOMMIT).unwrap();
    s.free(base + 2 * page, 2 * page, FreeType::DECOMMIT).unwrap();
    let before = mappings(base..base + 64 * KB);
    s.backend().inject_failure(1);
    assert!(s.protect(base + page, page, P::READONLY).is_err());
    assert!(!s.backend().failure_pending());
    assert_eq!(mappings(base..base + 64 * KB), before);
    assert_eq!(guarded(base..base + 4 * page), [true, false, true, true]);
    assert_eq!(perms_at(base + page).as_deref(), Some("rw-p"));
    s.protect(base + page, page, P::READONLY).unwrap();
    assert_eq!(mappings(base..base + 64 * KB).len(), before.len());
    assert_eq!(perms_at(base + page).as_deref(), Some("r--p"));
    assert_eq!(guarded(base..base + 4 * page), [true, false, true, true]);
    assert_eq!(load(base + page), 7);
    // Recommitted (all read-write), the marked pages are accessible and empty again.
    s.alloc(base, 4 * page, T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(effective_mappings(base..base + 4 * page), vec![(base, base + 4 * page, "rw-p".to_string())]);
    assert_eq!((load(base), load(base + 2 * page)), (0, 0));
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn released_ranges_are_pooled_empty_and_inaccessible_then_reused_without_mmap() {
    let s = space();
    let base = s.alloc(0, MB, T::RESERVE, P::NOACCESS).unwrap();
    s.alloc(base, 128 * KB, T::COMMIT, P::READWRITE).unwrap();
    store(base + 4096, 1);
    s.protect(base + 64 * KB, 64 * KB, P::READONLY).unwrap();
    s.free(base, 0, FreeType::RELEASE).unwrap();
    // Free to VirtualQuery, inaccessible to the CPU, and holding no pages.
    assert_eq!(s.query(base).unwrap().state, MemState::Free);
    assert_eq!(s.query(base + 64 * KB).unwrap().state, MemState::Free);
    if !mappings(base..base + MB).is_empty() {
        assert!(resident(base..base + MB).iter().all(|&r| !r));
    }
    assert_eq!(child_signal(|| touch(base + 4096)), Some(libc::SIGSEGV));
    assert_eq!(child_signal(|| touch(base + 64 * KB)), Some(libc::SIGSEGV));
    // Another space sees the pooled range as taken, never as its own.
    let other = space();
    assert_eq!(other.alloc(base, 64 * KB, T::RESERVE, P::NOACCESS), Err(Error::InvalidAddress));
    // The same space reuses it (the engine picks the lowest fit) and it reads zero.
    let before = s.backend().stats();
    let again = s.alloc(base, MB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(again, base);
    assert_eq!(load(base + 4096), 0);
    store(base + 64 * KB, 2);
    let after = s.backend().stats();
    assert_eq!(after.pooled_ranges + 1, before.pooled_ranges.max(1));
    s.free(base, 0, FreeType::RELEASE).unwrap();
    assert!(s.backend().stats().pooled_bytes >= MB);
}

/// A query in a released range that the pool still holds answers free without asking
/// the kernel (the range is this backend's mapping: nothing else can live there), and
/// the free region still ends where a mapping that is not ours begins.
#[test]
fn a_query_in_a_pooled_range_asks_the_kernel_only_past_it() {
    // Alone: no other test maps or unmaps memory next to ours meanwhile.
    let s = space_alone();
    let base = s.alloc(0, 320 * KB, T::RESERVE, P::NOACCESS).unwrap();
    s.alloc(base, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    s.free(base, 0, FreeType::RELEASE).unwrap();
    assert!(s.backend().stats().pooled_bytes >= 320 * KB, "the release was pooled");
    // Its last granule reserved again: the free gap below it is all pooled.
    assert_eq!(s.alloc(base + 256 * KB, 64 * KB, T::RESERVE, P::READWRITE), Ok(base + 256 * KB));
    let asked = s.backend().stats().map_queries;
    for at in [base, base + 4096, base + 200 * KB] {
        let q = s.query(at).unwrap();
        assert_eq!((q.state, q.base_address, q.region_size), (MemState::Free, at, base + 256 * KB - at));
    }
    assert_eq!(s.backend().stats().map_queries, asked, "no question to the kernel");
    // Released too, the pool holds all 320 KiB; past it lies a mapping that is not
    // this space's (put there now, or one that was there already: the kernel refuses a
    // second one only where there is one, and no other test runs meanwhile to remove
    // it), where the free region must end.
    s.free(base + 256 * KB, 0, FreeType::RELEASE).unwrap();
    let ours = map_foreign(base + 320 * KB, 64 * KB);
    let asked = s.backend().stats().map_queries;
    let q = s.query(base + 4096).unwrap();
    assert_eq!((q.state, q.region_size), (MemState::Free, 316 * KB));
    assert!(s.backend().stats().map_queries > asked, "what lies past the pool is the kernel's to say");
    if ours {
        // SAFETY: the mapping made just above, which nothing else uses.
        unsafe { libc::munmap((base + 320 * KB) as *mut libc::c_void, 64 * KB) };
    }
}

/// When the kernel refuses to unmap a released reservation (`ENOMEM`: it would have to
/// split a merged mapping past its mapping-count limit), the release still succeeds: the
/// range goes to the pool, inaccessible and empty, even in a space without a pool; free
/// to `VirtualQuery`, and reusable.
#[test]
fn a_release_the_kernel_refuses_to_unmap_is_pooled_instead() {
    let s = plain_alone();
    assert_eq!(s.backend().stats().pooled_ranges, 0, "a space without a pool");
    // Reserved only.
    let a = s.alloc(0, 256 * KB, T::RESERVE, P::NOACCESS).unwrap();
    s.backend().inject_failure(1);
    assert_eq!(s.free(a, 0, FreeType::RELEASE), Ok(()));
    assert!(!s.backend().failure_pending(), "the munmap was refused");
    assert_eq!(s.query(a).unwrap().state, MemState::Free);
    let st = s.backend().stats();
    assert_eq!((st.pooled_ranges, st.pooled_bytes, st.reservations), (1, 256 * KB, 0));
    assert_eq!(mappings(a..a + 256 * KB), vec![(a, a + 256 * KB, "---p".to_string())]);
    // Committed and written: decommitted, then pooled.
    let b = s.alloc(0, 256 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    store(b + 4096, 7);
    s.backend().inject_failure(1);
    assert_eq!(s.free(b, 0, FreeType::RELEASE), Ok(()));
    assert!(!s.backend().failure_pending(), "the munmap was refused");
    assert_eq!(s.query(b + 4096).unwrap().state, MemState::Free);
    assert!(resident(b..b + 256 * KB).iter().all(|&r| !r), "the pooled pages hold nothing");
    assert_eq!(child_signal(|| touch(b + 4096)), Some(libc::SIGSEGV));
    // Reserved again where it was, it reads zero.
    assert_eq!(s.alloc(b, 256 * KB, T::RESERVE | T::COMMIT, P::READWRITE), Ok(b));
    assert_eq!(load(b + 4096), 0);
    s.free(b, 0, FreeType::RELEASE).unwrap();
    if b != a {
        s.alloc(a, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
        s.free(a, 0, FreeType::RELEASE).unwrap();
    }
    // A write-watched reservation never goes to the pool (its tracking must end with
    // it) but at the wall, and there only with guard regions (see the next test): here,
    // without them, its release fails and leaves it exactly as it was.
    assert!(s.backend().write_watch_supported(), "this kernel (6.7+) has write watch");
    let w = s.alloc(0, 64 * KB, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap();
    store(w + 4096, 9);
    let before = s.backend().stats();
    s.backend().inject_failure(1);
    assert_eq!(s.free(w, 0, FreeType::RELEASE), Err(Error::NotEnoughMemory));
    assert!(!s.backend().failure_pending(), "the munmap was refused");
    let q = s.query(w).unwrap();
    assert_eq!((q.state, q.allocation_base, q.region_size), (MemState::Commit, w, 64 * KB));
    assert_eq!(load(w + 4096), 9, "its data stays");
    let after = s.backend().stats();
    assert_eq!((after.pooled_ranges, after.reservations), (before.pooled_ranges, before.reservations));
    assert_eq!(s.get_write_watch(WriteWatchFlags::empty(), w, 64 * KB, 16), Ok(vec![w + 4096]), "still tracked");
    s.free(w, 0, FreeType::RELEASE).unwrap();
}

/// With guard regions, a write-watched reservation whose `munmap` the kernel refuses (at
/// the mapping-count wall) is parked in the pool as well, without the split an
/// `mprotect` would need: its accessible pages get guard markers, its inaccessible
/// pages that hold data are dropped, and the release succeeds. The range is free, empty,
/// faults when touched, and is reusable, with or without write watch; a write-watched
/// reservation there later reports only its own writes.
#[test]
fn a_write_watched_release_the_kernel_refuses_is_parked_with_guard_markers() {
    let s = space_alone();
    assert!(s.backend().uses_guard_regions(), "this kernel (6.13+) has guard regions");
    assert!(s.backend().write_watch_supported(), "this kernel (6.7+) has write watch");
    let w = s.alloc(0, 256 * KB, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap();
    store(w + 4096, 9);
    // Committed, holding data, made inaccessible: no marker, but its page is dropped too.
    store(w + 128 * KB, 4);
    s.protect(w + 128 * KB, 64 * KB, P::NOACCESS).unwrap();
    let before = s.backend().stats();
    s.backend().inject_failure(1);
    assert_eq!(s.free(w, 0, FreeType::RELEASE), Ok(()));
    assert!(!s.backend().failure_pending(), "the munmap was refused");
    assert_eq!(s.query(w + 4096).unwrap().state, MemState::Free);
    let after = s.backend().stats();
    assert_eq!(after.reservations + 1, before.reservations);
    assert!(after.pooled_bytes >= before.pooled_bytes + 256 * KB, "parked in the pool");
    assert!(!mappings(w..w + 256 * KB).is_empty(), "still mapped");
    assert!(resident(w..w + 256 * KB).iter().all(|&r| !r), "the parked pages hold nothing");
    assert_eq!(child_signal(|| touch(w + 4096)), Some(libc::SIGSEGV));
    // Reused without write watch: every page reads zero and takes writes.
    assert_eq!(s.alloc(w, 256 * KB, T::RESERVE | T::COMMIT, P::READWRITE), Ok(w));
    assert_eq!((load(w + 4096), load(w + 128 * KB)), (0, 0));
    store(w + 4096, 5);
    assert_eq!(load(w + 4096), 5);
    s.free(w, 0, FreeType::RELEASE).unwrap();
    // Reused with write watch: clean at first, then exactly its own write.
    assert_eq!(s.alloc(w, 256 * KB, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE), Ok(w));
    assert_eq!(s.get_write_watch(WriteWatchFlags::empty(), w, 256 * KB, 64), Ok(vec![]));
    store(w + 8192, 1);
    assert_eq!(s.get_write_watch(WriteWatchFlags::empty(), w, 256 * KB, 64), Ok(vec![w + 8192]));
    s.free(w, 0, FreeType::RELEASE).unwrap();
}

/// Parking such a release fails cleanly when the kernel also refuses a guard marker: the
/// release reports ERROR_NOT_ENOUGH_MEMORY and the reservation stays, committed, with
/// its protections and its write tracking. The one change left is the documented one: a
/// run whose markers went in before the refusal has its markers removed again, so it is
/// accessible as before, but its pages were dropped.
#[test]
fn a_parked_release_whose_markers_are_refused_fails_and_keeps_the_reservation() {
    let s = space_alone();
    assert!(s.backend().uses_guard_regions(), "this kernel (6.13+) has guard regions");
    assert!(s.backend().write_watch_supported(), "this kernel (6.7+) has write watch");
    let w = s.alloc(0, 256 * KB, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap();
    store(w + 4096, 9);
    store(w + 64 * KB + 4096, 7);
    // Two accessible runs, marked one after the other when parked.
    s.protect(w + 64 * KB, 192 * KB, P::READONLY).unwrap();
    // The munmap (1st) is refused, the first run's markers (2nd) go in, the second
    // run's (3rd) are refused.
    s.backend().inject_failures(1, 3);
    assert_eq!(s.free(w, 0, FreeType::RELEASE), Err(Error::NotEnoughMemory));
    assert!(!s.backend().failure_pending(), "both failures fired");
    let q = s.query(w).unwrap();
    assert_eq!((q.state, q.protect, q.region_size), (MemState::Commit, P::READWRITE, 64 * KB));
    let q = s.query(w + 64 * KB).unwrap();
    assert_eq!((q.state, q.protect, q.region_size), (MemState::Commit, P::READONLY, 192 * KB));
    assert_eq!(load(w + 64 * KB + 4096), 7, "the run never marked keeps its data");
    assert_eq!(load(w + 4096), 0, "the run marked first was emptied");
    store(w + 4096, 3);
    assert_eq!(load(w + 4096), 3, "and is accessible again");
    assert_eq!(child_signal(|| store(w + 64 * KB, 1)), Some(libc::SIGSEGV), "still read-only");
    let dirty = s.get_write_watch(WriteWatchFlags::empty(), w, 256 * KB, 64);
    assert_eq!(dirty, Ok(vec![w + 4096, w + 64 * KB + 4096]), "still tracked");
    assert_eq!(s.free(w, 0, FreeType::RELEASE), Ok(()));
}

/// A reserve-and-commit whose `mprotect` fails, and whose undo (the `munmap` of what it
/// had just mapped) the kernel refuses too: the call fails and leaves nothing behind.
/// The range is pooled rather than left mapped and unknown, so the undo counts as done,
/// the range is free, and a reserve there works.
#[test]
fn a_failed_reserve_whose_unmap_is_refused_leaves_the_range_free() {
    let s = plain_alone();
    let at = s.alloc(0, MB, T::RESERVE, P::NOACCESS).unwrap();
    s.free(at, 0, FreeType::RELEASE).unwrap();
    // mmap (1st), mprotect (2nd, fails), its own revert (3rd), then the munmap of the
    // undo (4th, fails).
    s.backend().inject_failures(2, 4);
    assert_eq!(s.alloc(at, MB, T::RESERVE | T::COMMIT, P::READWRITE), Err(Error::NotEnoughMemory));
    assert!(!s.backend().failure_pending(), "both failures fired");
    assert_eq!(s.stats().refused_undos, 0, "the undo went through, by pooling");
    assert_eq!((s.stats().reserved, s.stats().committed), (0, 0));
    let q = s.query(at).unwrap();
    assert_eq!(q.state, MemState::Free);
    assert!(q.region_size >= MB);
    assert_eq!(s.backend().stats().reservations, 0);
    assert_eq!(mappings(at..at + MB), vec![(at, at + MB, "---p".to_string())], "pooled, inaccessible");
    assert_eq!(s.alloc(at, MB, T::RESERVE | T::COMMIT, P::READWRITE), Ok(at));
    store(at, 1);
    s.free(at, 0, FreeType::RELEASE).unwrap();
}

/// The usual release (one accessible run, nothing else holding data) takes one system
/// call; with data elsewhere too (committed pages made inaccessible) it takes the
/// general way, which drops that data as well. Either way the range is pooled empty
/// and inaccessible, and reads zero when reused.
#[test]
fn a_release_drops_every_page_whichever_way_it_goes() {
    let s = space();
    if !s.backend().uses_guard_regions() {
        return;
    }
    for data_elsewhere in [false, true] {
        let base = s.alloc(0, MB, T::RESERVE, P::NOACCESS).unwrap();
        s.alloc(base, 192 * KB, T::COMMIT, P::READWRITE).unwrap();
        store(base, 1);
        store(base + 128 * KB, 3);
        if data_elsewhere {
            // Committed, holding data, inaccessible: not part of the accessible run.
            s.protect(base + 128 * KB, 64 * KB, P::NOACCESS).unwrap();
        }
        let before = s.backend().stats();
        s.free(base, 0, FreeType::RELEASE).unwrap();
        let after = s.backend().stats();
        if !data_elsewhere {
            assert_eq!(after.syscalls, before.syscalls + 1, "one MADV_GUARD_INSTALL");
        }
        assert_eq!(after.reservations + 1, before.reservations);
        assert_eq!(s.query(base).unwrap().state, MemState::Free);
        if !mappings(base..base + MB).is_empty() {
            assert!(resident(base..base + MB).iter().all(|&r| !r), "data_elsewhere: {data_elsewhere}");
        }
        assert_eq!(child_signal(|| touch(base)), Some(libc::SIGSEGV));
        // Reused: every page reads zero, the guard-marked run included.
        let again = s.alloc(base, MB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
        assert_eq!(again, base);
        assert_eq!((load(base), load(base + 64 * KB), load(base + 128 * KB)), (0, 0, 0));
        store(base, 5);
        assert_eq!(load(base), 5);
        s.free(base, 0, FreeType::RELEASE).unwrap();
    }
}

/// The pool's cap on separate ranges does not refuse a release next to a pooled range:
/// it merges into that range (here joining the holes on both sides into one), so it is
/// kept mapped and reused rather than unmapped, with the kernel splitting a mapping the
/// pool shares with it.
#[test]
fn a_release_next_to_pooled_ranges_is_pooled_even_at_the_cap() {
    let s = space();
    const N: usize = 300; // more holes than the pool keeps separate ranges (256)
    let g = 64 * KB;
    let span = s.alloc(0, 2 * N * g, T::RESERVE, P::NOACCESS).unwrap();
    s.free(span, 0, FreeType::RELEASE).unwrap();
    for i in 0..N {
        assert_eq!(s.alloc(span + 2 * i * g, g, T::RESERVE, P::NOACCESS).unwrap(), span + 2 * i * g);
    }
    // Every hole is a pooled range of its own: the pool is past its cap.
    let before = s.backend().stats();
    assert!(before.pooled_ranges >= 256, "{before:?}");
    let b = span + 2 * 100 * g;
    s.alloc(b, 4096, T::COMMIT, P::READWRITE).unwrap();
    store(b, 9);
    s.free(b, 0, FreeType::RELEASE).unwrap();
    let after = s.backend().stats();
    // Joined with the holes on both sides: one range fewer, and the extent still mapped
    // (inaccessible, its page dropped).
    assert_eq!(after.pooled_ranges + 1, before.pooled_ranges);
    assert_eq!(after.pooled_bytes, before.pooled_bytes + g);
    assert!(!mappings(b..b + g).is_empty());
    assert!(resident(b..b + g).iter().all(|&r| !r));
    assert_eq!(child_signal(|| touch(b)), Some(libc::SIGSEGV));
    // Reused in place, reading zero.
    assert_eq!(s.alloc(b, g, T::RESERVE | T::COMMIT, P::READWRITE).unwrap(), b);
    assert_eq!(load(b), 0);
    for i in 0..N {
        s.free(span + 2 * i * g, 0, FreeType::RELEASE).unwrap();
    }
}

#[test]
fn a_collision_reports_exactly_the_foreign_mapping() {
    use virtmem::backend::{Backend, BackendError, ReserveOptions};
    let s = plain();
    let mut spot = 0;
    for _ in 0..50 {
        let b = s.alloc(0, 512 * KB, T::RESERVE, P::NOACCESS).unwrap();
        s.free(b, 0, FreeType::RELEASE).unwrap();
        if map_foreign(b, 64 * KB) {
            spot = b;
            break;
        }
    }
    assert_ne!(spot, 0);
    let backend = virtmem::LinuxBackend::new().unwrap();
    // The first thing in the way is reported (other tests may map memory further on).
    let r = backend.reserve(spot..spot + 512 * KB, ReserveOptions::default());
    assert_eq!(r, Err(BackendError::Occupied { start: spot, end: spot + 64 * KB }));
    // Nothing of the attempt is left behind.
    assert_eq!(mappings(spot..spot + 64 * KB), [(spot, spot + 64 * KB, "rw-s".to_string())]);
    assert_eq!(backend.stats().reservations, 0);
    assert_eq!(backend.stats().pooled_ranges, 0);
    // SAFETY: unmaps the foreign mapping this test made.
    unsafe { libc::munmap(spot as *mut libc::c_void, 64 * KB) };
}

/// A busy reservation (random commits, decommits and protection changes): no call adds
/// more than two kernel mappings (an `mprotect` splits at most at both ends), and a
/// decommit with guard markers adds none, so the kernel's cap on mappings is only
/// approached by a space with that many distinct protection runs.
#[test]
fn kernel_mappings_grow_at_most_two_per_call_and_not_on_guarded_decommit() {
    for s in [space(), plain()] {
        let pages = 1024;
        let size = pages * 4096;
        let base = s.alloc(0, size, T::RESERVE, P::NOACCESS).unwrap();
        let mut x: u64 = 0x2545F4914F6CDD1D;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let prots = [P::READWRITE, P::READWRITE, P::READWRITE, P::READONLY, P::NOACCESS];
        let count = || mappings(base..base + size).len();
        let (mut worst, mut regions_then) = (0usize, 0usize);
        for _ in 0..1500 {
            let start = next(pages);
            let len = 1 + next(16.min(pages - start));
            let (a, n) = (base + start * 4096, len * 4096);
            let before = count();
            let before_maps = mappings(base..base + size);
            let op = next(3);
            match op {
                0 => {
                    s.alloc(a, n, T::COMMIT, prots[next(prots.len())]).unwrap();
                }
                1 => s.free(a, n, FreeType::DECOMMIT).unwrap(),
                _ => {
                    let _ = s.protect(a, n, prots[next(prots.len())]);
                }
            }
            let after = count();
            assert!(
                after <= before + 2,
                "op {op} at {:#x}+{n:#x} added {} mappings: {:x?} -> {:x?}",
                a - base,
                after - before,
                before_maps
                    .iter()
                    .filter(|m| m.1 + 0x10000 > a && m.0 < a + n + 0x10000)
                    .map(|m| (m.0 - base, m.1 - base, m.2.clone()))
                    .collect::<Vec<_>>(),
                mappings(base..base + size)
                    .iter()
                    .filter(|m| m.1 + 0x10000 > a && m.0 < a + n + 0x10000)
                    .map(|m| (m.0 - base, m.1 - base, m.2.clone()))
                    .collect::<Vec<_>>()
            );
            if op == 1 && s.backend().uses_guard_regions() {
                assert!(after <= before, "a guarded decommit added a mapping");
            }
            if after > worst {
                worst = after;
                regions_then = walk(&*s, base..base + size).len();
            }
        }
        eprintln!(
            "guard regions {}: at most {worst} kernel mappings ({regions_then} VirtualQuery regions then)",
            s.backend().uses_guard_regions()
        );
        s.free(base, 0, FreeType::RELEASE).unwrap();
    }
}

/// Releasing committed memory into the pool drops its pages with one guard-marker call
/// per committed run (no `mprotect`, no `munmap`); without a pool, one `munmap` does it.
#[test]
fn releasing_committed_memory_costs_one_system_call() {
    // Without a pool the release unmaps the range, which then must query free: alone
    // (another test's space would take it at once), one space after the other.
    for make in [space as fn() -> Held, plain_alone] {
        let s = make();
        let base = s.alloc(0, MB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
        for a in (base..base + MB).step_by(4096) {
            store(a, 1);
        }
        let before = s.backend().syscall_count();
        s.free(base, 0, FreeType::RELEASE).unwrap();
        // (A pooled release without guard markers needs mprotect + MADV_DONTNEED.)
        let pooled_without_guards = s.backend().options().pool_bytes > 0 && !s.backend().uses_guard_regions();
        let expected = if pooled_without_guards { 2 } else { 1 };
        assert_eq!(s.backend().syscall_count() - before, expected);
        if !mappings(base..base + MB).is_empty() {
            assert!(resident(base..base + MB).iter().all(|&r| !r), "pooled pages left RSS");
        }
        assert_eq!(child_signal(|| touch(base + 8192)), Some(libc::SIGSEGV));
        assert_eq!(s.query(base).unwrap().state, MemState::Free);
        // Reused, it reads zero.
        let again = s.alloc(0, MB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
        assert_eq!(load(again + 8192), 0);
        s.free(again, 0, FreeType::RELEASE).unwrap();
    }
}

/// A release with many committed runs that may hold data is one `munmap`, pool or no
/// pool: pooling would drop each run's pages with a system call of its own. With one or
/// two runs it is pooled (one guard-marker call per accessible run where the kernel has
/// them). Runs made `PAGE_NOACCESS` after they were written count too (their pages still
/// hold data), alone or beside accessible ones.
#[test]
fn a_release_with_many_committed_runs_is_one_munmap() {
    // Alone: a release that unmaps leaves a range another test's space could take before
    // the query below calls it free.
    let s = space_alone();
    let guards = s.backend().uses_guard_regions();
    // (Runs, of which the first `hidden` are made PAGE_NOACCESS after their write.)
    for (runs, hidden) in [(1u64, 0), (2, 0), (3, 0), (8, 0), (1, 1), (2, 2), (3, 3), (3, 2), (8, 1)] {
        let base = s.alloc(0, MB, T::RESERVE, P::NOACCESS).unwrap();
        for k in 0..runs {
            // Every other 64 KiB committed: separate runs.
            let at = base + 2 * k as usize * 64 * KB;
            s.alloc(at, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
            store(at, 1);
            if k < hidden {
                s.protect(at, 64 * KB, P::NOACCESS).unwrap();
            }
        }
        let (calls, pooled) = (s.backend().syscall_count(), s.backend().stats().pooled_bytes);
        s.free(base, 0, FreeType::RELEASE).unwrap();
        let made = s.backend().syscall_count() - calls;
        let now_pooled = s.backend().stats().pooled_bytes;
        let what = format!("{runs} runs, {hidden} of them PAGE_NOACCESS");
        if runs <= 2 {
            assert_eq!(now_pooled, pooled + MB, "{what}: pooled");
            if hidden == 0 {
                assert_eq!(made, if guards { runs } else { 2 * runs }, "{what}");
            } else {
                assert!(made <= 2 * runs, "{what}: {made} calls");
            }
        } else {
            assert_eq!((now_pooled, made), (pooled, 1), "{what}: one munmap");
        }
        assert_eq!(s.query(base).unwrap().state, MemState::Free);
    }
}

/// A foreign mapping, `len` bytes at an address aligned to 64 KiB.
fn foreign_mapping(len: usize) -> usize {
    // In a window of its own, where nothing else maps: a mapping the kernel placed could
    // be replaced, as soon as it is unmapped, by another thread's (the kernel puts a new
    // mapping without an address at the highest free place, where the unmapped one was).
    let at = common::linux::window(len);
    map_foreign_at(at, len);
    at
}

/// Map `len` bytes read-only at `at`, where nothing is mapped: memory of the program's
/// own that the backend did not make.
fn map_foreign_at(at: usize, len: usize) {
    // SAFETY: a fresh anonymous mapping of our own; NOREPLACE refuses to replace anything.
    let p = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(p as usize, at, "the test's foreign mapping");
}

/// What `VirtualQuery` reports as free can be reserved there, even where the space once
/// found someone else's mapping (it does not pick such a range by itself again, but a
/// caller asking for that address is tried anew).
#[test]
fn a_range_freed_by_its_foreign_owner_can_be_reserved_at() {
    let s = plain();
    let x = foreign_mapping(64 * KB);
    assert_eq!(s.alloc(x, 64 * KB, T::RESERVE, P::NOACCESS), Err(Error::InvalidAddress));
    assert_eq!(s.query(x).unwrap().state, MemState::Commit, "the foreign mapping shows");
    // SAFETY: the mapping made above, unused.
    unsafe { libc::munmap(x as *mut libc::c_void, 64 * KB) };
    assert_eq!(s.query(x).unwrap().state, MemState::Free);
    assert_eq!(s.alloc(x, 64 * KB, T::RESERVE, P::NOACCESS), Ok(x));
    assert_eq!(s.query(x).unwrap().allocation_base, x);
    s.free(x, 0, FreeType::RELEASE).unwrap();
    // A failed attempt leaves the range as it was: still reservable at that address.
    let y = foreign_mapping(128 * KB);
    assert_eq!(s.alloc(y, 128 * KB, T::RESERVE, P::NOACCESS), Err(Error::InvalidAddress));
    // SAFETY: as above.
    unsafe { libc::munmap(y as *mut libc::c_void, 128 * KB) };
    assert_eq!(s.alloc(y, 128 * KB, T::RESERVE | T::COMMIT, P::READWRITE), Ok(y));
    store(y + 100, 7);
    assert_eq!(load(y + 100), 7);
    s.free(y, 0, FreeType::RELEASE).unwrap();
}

/// The room above the program break is not picked by the engine by itself (malloc
/// grows into it), but it is free memory: a reserve at an address there works, as
/// `VirtualQuery` says.
#[test]
fn the_program_breaks_room_is_free_for_a_reserve_at_an_address() {
    let s = plain();
    // SAFETY: sbrk(0) only reports the current program break.
    let brk = unsafe { libc::sbrk(0) } as usize;
    let at = (brk + (256 << 20)) & !(64 * KB - 1);
    let q = s.query(at).unwrap();
    assert_eq!(q.state, MemState::Free, "{q:?}");
    assert_eq!(s.alloc(at, 64 * KB, T::RESERVE, P::NOACCESS), Ok(at));
    s.free(at, 0, FreeType::RELEASE).unwrap();
    // Nothing picks it unasked.
    let anywhere = s.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
    assert!(!(brk..brk + (1 << 30)).contains(&anywhere));
    s.free(anywhere, 0, FreeType::RELEASE).unwrap();
    // Not even once a reservation made there at the caller's address is released into
    // the pool (which reservations anywhere otherwise reuse first).
    let pooled = space();
    assert_eq!(pooled.alloc(at, 64 * KB, T::RESERVE, P::NOACCESS), Ok(at));
    pooled.free(at, 0, FreeType::RELEASE).unwrap();
    let anywhere = pooled.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
    assert!(!(brk..brk + (1 << 30)).contains(&anywhere), "{anywhere:#x} in the program break's room");
    pooled.free(anywhere, 0, FreeType::RELEASE).unwrap();
    assert_eq!(pooled.query(at).unwrap().state, MemState::Free);
    assert_eq!(pooled.alloc(at, 64 * KB, T::RESERVE, P::NOACCESS), Ok(at), "still reservable there");
    pooled.free(at, 0, FreeType::RELEASE).unwrap();
}

/// Scattered commit/decommit of 64 KiB pieces in one large reservation (what a
/// collector does) must not leave a kernel mapping per piece: past a few thousand, a
/// decommitted piece with nothing accessible around it merges back into the
/// reservation's inaccessible mapping, so the space never creeps towards the kernel's
/// cap on mappings (65 530 by default).
#[test]
fn scattered_decommits_do_not_pile_up_kernel_mappings() {
    let s = space();
    let size = 2usize << 30;
    let base = s.alloc(0, size, T::RESERVE, P::NOACCESS).unwrap();
    let slots = size / (64 * KB);
    let n = 12_000;
    for i in 0..n {
        let p = base + (i * 7919 % slots) * 64 * KB;
        s.alloc(p, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
        store(p + 100, 1);
        s.free(p, 64 * KB, FreeType::DECOMMIT).unwrap();
    }
    let maps = mappings(base..base + size).len();
    assert!(maps < 2 * 4096 + 64, "{maps} kernel mappings after {n} scattered decommits");
    // Every piece is decommitted and inaccessible, and reads zero when recommitted.
    for i in [0, 1, n / 2, n - 1] {
        let p = base + (i * 7919 % slots) * 64 * KB;
        let q = s.query(p).unwrap();
        assert_eq!((q.state, q.allocation_base), (MemState::Reserve, base));
        assert_eq!(child_signal(|| touch(p + 100)), Some(libc::SIGSEGV));
        s.alloc(p, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
        assert_eq!(load(p + 100), 0);
    }
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

/// Many small reservations, each with a committed first page, released: their ranges
/// go to the pool, and must not stay one kernel mapping per committed page there (the
/// `ops` benchmark's layout, at a larger count).
#[test]
fn releases_into_the_pool_do_not_pile_up_kernel_mappings() {
    let s = space();
    let n = 10_000;
    let bases: Vec<usize> = (0..n)
        .map(|_| {
            let b = s.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
            s.alloc(b, 4 * KB, T::COMMIT, P::READWRITE).unwrap();
            store(b + 8, 1);
            b
        })
        .collect();
    let (lo, hi) = (*bases.iter().min().unwrap(), *bases.iter().max().unwrap() + 64 * KB);
    for &b in &bases {
        s.free(b, 0, FreeType::RELEASE).unwrap();
    }
    // Count the mappings over our ranges only: tests running beside this one map memory
    // in between.
    let mut sorted = bases.clone();
    sorted.sort_unstable();
    let ours = |(s, e, _): &(usize, usize, String)| {
        let i = sorted.partition_point(|&b| b + 64 * KB <= *s);
        sorted.get(i).is_some_and(|&b| b < *e)
    };
    let maps = mappings(lo..hi).iter().filter(|m| ours(m)).count();
    assert!(maps < 2 * 4096 + 64, "{maps} kernel mappings left by {n} released reservations");
    // Reused, a range reads zero.
    let again = s.alloc(bases[n / 2], 64 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(load(again + 8), 0);
    s.free(again, 0, FreeType::RELEASE).unwrap();
}

/// A reservation at no particular address reuses a released range the backend kept
/// mapped (no system call), even when it is not the lowest free range; it is empty,
/// inaccessible until committed, and reads zero.
#[test]
fn a_reservation_anywhere_reuses_a_pooled_range_without_a_system_call() {
    let s = space();
    let high = s.alloc(0, 64 * KB, T::RESERVE | T::COMMIT | T::TOP_DOWN, P::READWRITE).unwrap();
    store(high + 8, 9);
    s.free(high, 0, FreeType::RELEASE).unwrap();
    let calls = s.backend().syscall_count();
    let again = s.alloc(0, 64 * KB, T::RESERVE, P::READWRITE).unwrap();
    assert_eq!(again, high, "the pooled range, not the lowest free one");
    assert_eq!(s.backend().syscall_count(), calls, "no system call");
    assert_eq!(s.query(again).unwrap().state, MemState::Reserve);
    assert_eq!(child_signal(|| touch(again + 8)), Some(libc::SIGSEGV));
    s.alloc(again, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(load(again + 8), 0);
    s.free(again, 0, FreeType::RELEASE).unwrap();
    // Write tracking needs a mapping of its own: the pooled range is left in the pool
    // (taking it would mean unmapping it and mapping it again).
    let pooled = s.backend().stats().pooled_bytes;
    match s.alloc(0, 64 * KB, T::RESERVE | T::WRITE_WATCH, P::READWRITE) {
        Ok(w) => {
            assert_ne!(w, high);
            assert_eq!(s.backend().stats().pooled_bytes, pooled);
            s.free(w, 0, FreeType::RELEASE).unwrap();
        }
        Err(e) => assert!(!s.backend().write_watch_supported(), "{e}"),
    }
}

/// A range taken whole from the pool goes back to it when released, even when the pool
/// holds its cap of separate ranges (it puts back what it took): no `munmap`, and the
/// next reservation takes it again without a system call.
#[test]
fn a_range_taken_from_a_full_pool_goes_back_to_it() {
    let s = space();
    // One pooled range, then reservations carved out of every other 64 KiB of it: the
    // pool is left holding more separate ranges than its cap.
    let span = s.alloc(0, 700 * 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
    s.free(span, 0, FreeType::RELEASE).unwrap();
    let bases: Vec<usize> =
        (0..350).map(|i| s.alloc(span + (2 * i + 1) * 64 * KB, 64 * KB, T::RESERVE, P::NOACCESS).unwrap()).collect();
    let before = s.backend().stats();
    assert!(before.pooled_ranges > 256, "{before:?}");
    let calls = s.backend().syscall_count();
    for _ in 0..3 {
        let b = s.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
        s.free(b, 0, FreeType::RELEASE).unwrap();
    }
    assert_eq!(s.backend().syscall_count(), calls, "no mmap, no munmap");
    assert_eq!(s.backend().stats().pooled_ranges, before.pooled_ranges);
    for b in bases {
        s.free(b, 0, FreeType::RELEASE).unwrap();
    }
}

/// A large mapping of someone else's where placement looks first is skipped whole after
/// one collision (not one claim-sized piece per collision, which would take thousands of
/// tries and give up).
#[test]
fn a_large_foreign_mapping_is_skipped_in_one_collision() {
    let s = plain_alone();
    // Where a reservation at no particular address goes now, freed again (unmapped),
    // with room for the foreign mapping after it. (Alone, yet not alone in the process:
    // memory the other tests left mapped, such as the process space's pool, which lives
    // as long as the process, may lie a little above the lowest free address. Such a
    // spot is filled with a reservation of the space's own, up to what is in the way, so
    // that placement looks past it.)
    let len = 256 << 20;
    let mut fillers = Vec::new();
    let x = loop {
        let x = s.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
        s.free(x, 0, FreeType::RELEASE).unwrap();
        let Some(&(start, _, _)) = mappings(x..x + len).first() else { break x };
        let upto = (start & !(64 * KB - 1)).max(x + 64 * KB);
        fillers.push(s.alloc(x, upto - x, T::RESERVE, P::NOACCESS).unwrap());
        assert!(fillers.len() < 1000, "no room for the foreign mapping");
    };
    map_foreign_at(x, len);
    let b = s.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
    assert!(!(x..x + len).contains(&b), "{b:#x} inside the foreign mapping");
    assert_eq!(s.query(x + len / 2).unwrap().state, MemState::Commit, "the foreign mapping shows");
    s.free(b, 0, FreeType::RELEASE).unwrap();
    // SAFETY: the mapping made above, unused.
    unsafe { libc::munmap(x as *mut libc::c_void, len) };
    for f in fillers {
        s.free(f, 0, FreeType::RELEASE).unwrap();
    }
}

/// A space placing a reservation where thousands of small mappings that are not its own
/// lie (another space's, another allocator's) gets past them: not one failed system call
/// per foreign mapping, and never `ERROR_NOT_ENOUGH_MEMORY` while room is free.
#[test]
fn a_new_space_gets_past_a_crowd_of_foreign_mappings() {
    let a = space();
    let crowd: Vec<usize> = (0..3000)
        .map(|_| {
            let b = a.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
            a.alloc(b, 4 * KB, T::COMMIT, P::READWRITE).unwrap();
            b
        })
        .collect();
    let b = space();
    let got = b.alloc(0, MB, T::RESERVE, P::NOACCESS).unwrap();
    assert!(crowd.iter().all(|&c| got + MB <= c || c + 64 * KB <= got), "{got:#x} overlaps the crowd");
    b.free(got, 0, FreeType::RELEASE).unwrap();
    for c in crowd {
        a.free(c, 0, FreeType::RELEASE).unwrap();
    }
}

/// While a protect, commit or decommit waits for its system call (the space's lock let
/// go), another thread reserves and releases in the holes between its reservations, so
/// that the reservation index shifts, splits and merges the leaves holding them. The
/// change is still recorded on the call's own reservation, and on no other: what each
/// reservation's pages are afterwards is what its own thread did. (The place where a
/// call found its reservation is then often out of date when its system call returns:
/// 10–15 calls a run found it so when this test was written, and searched again.)
#[test]
fn calls_record_their_change_on_their_own_reservation_while_another_thread_reserves_and_releases() {
    const N: usize = 96;
    // (Alone: another test's space could take a hole meanwhile.)
    let s = space_alone();
    // N reservations with a one-granule hole after each (holes released, so free).
    let span = s.alloc(0, 2 * N * 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
    s.free(span, 0, FreeType::RELEASE).unwrap();
    let ours: Vec<usize> = (0..N)
        .filter_map(|i| {
            let b = s.alloc(span + 2 * i * 64 * KB, 64 * KB, T::RESERVE, P::READWRITE).ok()?;
            s.alloc(b, 4 * KB, T::COMMIT, P::READWRITE).unwrap();
            Some(b)
        })
        .collect();
    assert!(ours.len() > N / 2, "most of the layout could be reserved");
    let holes: Vec<usize> = ours.iter().map(|&b| b + 64 * KB).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|t| {
        t.spawn(|| {
            // Fill the holes (each insertion lands between two of ours) and empty them
            // again, in changing orders, until the other thread is done.
            let mut round = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut made = Vec::new();
                for k in 0..holes.len() {
                    let h = holes[(k * 7 + round) % holes.len()];
                    if let Ok(b) = s.alloc(h, 64 * KB, T::RESERVE, P::READWRITE) {
                        if k % 3 == 0 {
                            s.alloc(b, 4 * KB, T::COMMIT, P::READONLY).unwrap();
                        }
                        made.push(b);
                    }
                }
                for (k, b) in made.into_iter().enumerate().rev() {
                    if k % 2 == round % 2 {
                        s.free(b, 0, FreeType::RELEASE).unwrap();
                    } else {
                        // Release the others after, in the other order.
                        s.free(b, 4 * KB, FreeType::DECOMMIT).unwrap();
                        s.free(b, 0, FreeType::RELEASE).unwrap();
                    }
                }
                round += 1;
            }
        });
        for round in 0..100 {
            for (k, &b) in ours.iter().enumerate() {
                let to = if (k + round) % 2 == 0 { P::READONLY } else { P::EXECUTE_READ };
                assert_eq!(s.protect(b, 4 * KB, to).unwrap(), P::READWRITE, "reservation {k}, round {round}");
                assert_eq!(s.protect(b, 4 * KB, P::READWRITE).unwrap(), to);
                s.alloc(b + 4 * KB, 8 * KB, T::COMMIT, P::READWRITE).unwrap();
                s.free(b + 8 * KB, 4 * KB, FreeType::DECOMMIT).unwrap();
                let q = s.query(b + 4 * KB).unwrap();
                assert_eq!(
                    (q.allocation_base, q.state, q.protect, q.region_size),
                    (b, MemState::Commit, P::READWRITE, 4 * KB)
                );
                s.free(b + 4 * KB, 4 * KB, FreeType::DECOMMIT).unwrap();
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // Each of ours is as its own calls left it: page 0 committed read-write, the rest
    // reserved; the holes are free again.
    for &b in &ours {
        let q = s.query(b).unwrap();
        assert_eq!((q.allocation_base, q.state, q.protect, q.region_size), (b, MemState::Commit, P::READWRITE, 4 * KB));
        let q = s.query(b + 4 * KB).unwrap();
        assert_eq!((q.allocation_base, q.state, q.region_size), (b, MemState::Reserve, 60 * KB));
        s.write(b, &[1]).unwrap();
    }
    for &h in &holes {
        assert_eq!(s.query(h).unwrap().state, MemState::Free, "hole {h:#x}");
    }
    let st = s.stats();
    assert_eq!((st.reservations, st.committed), (ours.len(), ours.len() * 4 * KB));
    for &b in &ours {
        s.free(b, 0, FreeType::RELEASE).unwrap();
    }
}
