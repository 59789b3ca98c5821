//! Review findings against `/work/shared/spec/win32-virtual-memory.md`: each test states the
//! rule it checks and fails where the library breaks it (on the backends named in its doc).

#[allow(dead_code)]
mod common;

use common::*;

backend_tests! {
    /// Spec, MEM_LARGE_PAGES: "size and address must be multiples of the large-page size,
    /// with MEM_RESERVE|MEM_COMMIT; otherwise 87". A size of one byte less than a large page
    /// is not a multiple. The rules check the size only after it has been rounded up to a
    /// page (`rules::alloc_request`), so that size counts as a multiple. Fails on the simulated
    /// backend (the call succeeds with a 2 MiB reservation) and on Linux without large pages
    /// (1450 instead of 87).
    fn large_pages_null_address_size_not_a_multiple_is_87(fx: &Fx) {
        let lp = fx.space.system_info().large_page_size.max(2 << 20);
        let rc = MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES;
        let before = fx.snapshot();
        for size in [lp - 1, lp - P + 1, 2 * lp - 1] {
            let r = fx.alloc(0, size, rc, PAGE_READWRITE);
            assert_eq!(code(&r), 87, "VirtualAlloc(NULL, {size:#x}, RESERVE|COMMIT|LARGE_PAGES) = {r:x?}");
        }
        assert_eq!(fx.snapshot(), before);
        assert_eq!(fx.space.stats().reservations, 0);
    }

    /// The same rule with a large-page-aligned address: the size is still not a multiple.
    fn large_pages_fixed_address_size_not_a_multiple_is_87(fx: &Fx) {
        let lp = fx.space.system_info().large_page_size.max(2 << 20);
        let rc = MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES;
        let a = (fx.w + lp - 1) & !(lp - 1);
        let before = fx.snapshot();
        let r = fx.alloc(a, lp - P + 1, rc, PAGE_READWRITE);
        assert_eq!(code(&r), 87, "VirtualAlloc({a:#x}, lp - P + 1, RESERVE|COMMIT|LARGE_PAGES) = {r:x?}");
        assert_eq!(fx.snapshot(), before);
    }

    /// Spec, MEM_RESET_UNDO: "on a range that MEM_RESET was applied to, success means all
    /// data is intact; failure means some of it was lost (zeroed)." Here nothing is lost:
    /// the program simply writes to the first bytes of a page after the reset. The Linux
    /// backend keeps one "witness" word per reset page and reports a loss
    /// (ERROR_BUSY, 170) whenever that word changed, even if the page was never reclaimed
    /// and nothing reads as zero. Fails on Linux; the simulated backend passes.
    fn reset_undo_fails_only_when_data_was_lost(fx: &Fx) {
        let a = fx.reserve_commit(0, 2 * P, PAGE_READWRITE);
        fx.write(a, &vec![4; 2 * P]);
        fx.alloc(a, 2 * P, MEM_RESET, PAGE_READWRITE).unwrap();
        // A store to the reset range after the reset (e.g. an allocator reusing the memory).
        fx.write(a, &[0x77; 16]);
        let mut want = vec![4u8; 2 * P];
        want[..16].fill(0x77);
        let r = fx.alloc(a, 2 * P, MEM_RESET_UNDO, PAGE_READWRITE);
        let v = fx.read_vec(a, 2 * P);
        match r {
            Ok(_) => assert_eq!(v, want, "undo succeeded: all data must be intact"),
            Err(e) => {
                // A failure is only right if some data really was dropped (the kernel
                // reclaimed a page: it reads zero apart from what was written afterwards).
                let lost = v[16..P].iter().all(|&b| b == 0) || v[P..].iter().all(|&b| b == 0);
                assert!(lost, "MEM_RESET_UNDO failed with {e} ({}) but no data was lost", e.code());
            }
        }
    }

    /// Spec, VirtualProtect: "NOCACHE belongs to the allocation: a reservation made with
    /// NOCACHE keeps it on every VirtualProtect (a request without it still reports it)".
    /// A PAGE_NOACCESS request is such a request; the engine (`rules::effective_protect`)
    /// exempts NOACCESS and the page then reports 0x01. Wine 8 reports 0x201 (Protect and
    /// the next old protection), as the spec says. Fails on both backends.
    fn nocache_allocation_keeps_nocache_on_a_noaccess_protect(fx: &Fx) {
        let nc = fx.reserve_commit(0, 2 * P, PAGE_READWRITE | PAGE_NOCACHE);
        assert_eq!(fx.protect(nc, P, PAGE_NOACCESS), Ok(PAGE_READWRITE | PAGE_NOCACHE));
        assert_eq!(fx.q(nc).protect.bits(), PAGE_NOACCESS | PAGE_NOCACHE, "Protect after NOACCESS");
        assert_eq!(fx.protect(nc, P, PAGE_READWRITE), Ok(PAGE_NOACCESS | PAGE_NOCACHE), "old protection");
        // A commit of NOACCESS pages inside a reserve-only NOCACHE allocation: the same
        // (Wine: 0x201).
        let nr = fx.reserve(G, 2 * P, PAGE_READWRITE | PAGE_NOCACHE);
        fx.commit(nr, P, PAGE_NOACCESS);
        assert_eq!(fx.q(nr).protect.bits(), PAGE_NOACCESS | PAGE_NOCACHE, "Protect after a NOACCESS commit");
    }
}
