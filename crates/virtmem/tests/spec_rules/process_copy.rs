//! Spec § Ex forms and process handles: the helpers `ReadProcessMemory` and
//! `WriteProcessMemory` are built on (`win32::process_copy_error`,
//! `win32::with_code_writable`), on the engine's own errors.

use crate::backend_tests;
use crate::common::*;
use virtmem::{win32, AccessKind, Error, Protection};

/// A reservation of 16 pages at window offset 0:
/// pages 0-2 EXECUTE_READ (bytes 0xC3), 3 READONLY, 4 READWRITE, 5 READONLY, 6-7 reserved,
/// 8-9 EXECUTE_READ|GUARD, the rest reserved.
fn layout(fx: &Fx) -> usize {
    let a = fx.reserve(0, 16 * P, PAGE_NOACCESS);
    fx.commit(a, 6 * P, PAGE_READWRITE);
    fx.write(a, &[0xC3; 3 * P]);
    fx.protect(a, 3 * P, PAGE_EXECUTE_READ).unwrap();
    fx.protect(a + 3 * P, P, PAGE_READONLY).unwrap();
    fx.protect(a + 5 * P, P, PAGE_READONLY).unwrap();
    fx.commit(a + 8 * P, 2 * P, PAGE_EXECUTE_READ | PAGE_GUARD);
    a
}

backend_tests! {
    /// A copy that the engine refused maps to the copy's Win32 error: a read meeting a
    /// page it may not read is 299 wherever that page lies; a write is 998 when its first
    /// byte may not be written and 299 when it runs into such a page further on; an armed
    /// guard page counts as a page that refused; other errors pass through.
    fn refused_copies_map_to_partial_copy_or_noaccess(fx: &Fx) {
        let a = layout(fx);
        let s = &*fx.space;
        let map = |e: Error, at: usize, write: bool| win32::process_copy_error(e, at, write).code();
        // Reads: into the reserved page 6, from its first byte or from page 5 on.
        let e = s.read(a + 6 * P, &mut [0; 8]).unwrap_err();
        assert_eq!(map(e, a + 6 * P, false), 299);
        let e = s.read(a + 6 * P - 4, &mut [0; 8]).unwrap_err();
        assert_eq!(e, Error::AccessViolation { address: a + 6 * P, access: AccessKind::Read });
        assert_eq!(map(e, a + 6 * P - 4, false), 299);
        // Writes: the first byte read-only (page 3), or read-write running into page 5.
        let e = s.write(a + 3 * P, &[1; 8]).unwrap_err();
        assert_eq!(map(e, a + 3 * P, true), 998);
        let e = s.write(a + 5 * P - 4, &[1; 8]).unwrap_err();
        assert_eq!(map(e, a + 5 * P - 4, true), 299);
        // Nothing was written by either refused write.
        assert_eq!(fx.read_vec(a + 5 * P - 4, 4), [0; 4]);
        // A read of an armed guard page (which the check disarms): 299, not 998.
        let e = s.read(a + 8 * P, &mut [0; 8]).unwrap_err();
        assert!(matches!(e, Error::GuardPage { address, .. } if address == a + 8 * P), "{e:?}");
        assert_eq!(map(e, a + 8 * P, false), 299);
        // A write whose first byte is an armed guard page: 998.
        let e = s.write(a + 9 * P, &[1]).unwrap_err();
        assert!(matches!(e, Error::GuardPage { .. }), "{e:?}");
        assert_eq!(map(e, a + 9 * P, true), 998);
        // An engine error that says nothing is 299 for a read; other errors pass through.
        assert_eq!(map(Error::NoAccess, a, false), 299);
        assert_eq!(map(Error::NoAccess, a, true), 998);
        assert_eq!(map(Error::InvalidParameter, a, false), 87);
        assert_eq!(map(Error::InvalidAddress, a, true), 487);
    }

    /// `with_code_writable`: a copy into committed EXECUTE_READ pages sees exactly the
    /// pages of the range in the first page's region made EXECUTE_READWRITE, lands, and
    /// leaves every protection (and an armed guard) as it was; anything else is left to
    /// the copy, which then fails as any other would, changing nothing.
    fn writes_into_code_make_only_its_pages_writable_and_restore_them(fx: &Fx) {
        let a = layout(fx);
        let s = &*fx.space;
        let walk_before = walk(s, a..a + 16 * P);
        // Two bytes straddling pages 1 and 2: page 0 is not touched during the copy.
        let r = win32::with_code_writable(s, a + 2 * P - 1, 2, || {
            assert_eq!(fx.q(a).protect, Protection::EXECUTE_READ, "page 0 is outside the range");
            let q = fx.q(a + P);
            assert_eq!((q.protect, q.region_size), (Protection::EXECUTE_READWRITE, 2 * P));
            s.write(a + 2 * P - 1, &[7, 8])
        });
        assert_eq!(r, Ok(Ok(())));
        assert_eq!(fx.read_vec(a + 2 * P - 2, 4), [0xC3, 7, 8, 0xC3]);
        assert_eq!(walk(s, a..a + 16 * P), walk_before, "protections restored");

        // From code into the read-only page 3: only pages 1-2 are made writable, so the
        // copy meets page 3 and fails; nothing was written, protections restored.
        let before = fx.snapshot();
        let r = win32::with_code_writable(s, a + 3 * P - 2, 4, || s.write(a + 3 * P - 2, &[9; 4]));
        assert_eq!(r, Ok(Err(Error::AccessViolation { address: a + 3 * P, access: AccessKind::Write })));
        assert_eq!(fx.snapshot(), before);

        // An armed guard page of code: written without the guard firing, and still armed.
        let r = win32::with_code_writable(s, a + 8 * P + 16, 4, || s.write(a + 8 * P + 16, &[1, 2, 3, 4]));
        assert_eq!(r, Ok(Ok(())));
        assert_eq!(fx.q(a + 8 * P).protect, Protection::EXECUTE_READ | Protection::GUARD);
        assert_eq!(fx.q(a + 8 * P).region_size, 2 * P);
        assert_eq!(fx.protect(a + 8 * P, P, PAGE_EXECUTE_READ), Ok(PAGE_EXECUTE_READ | PAGE_GUARD));
        assert_eq!(fx.read_vec(a + 8 * P + 16, 4), [1, 2, 3, 4]);

        // A first page that is not code (read-only, reserved), a zero size and a range
        // that wraps: the copy runs on the pages as they are.
        let before = fx.snapshot();
        let r = win32::with_code_writable(s, a + 3 * P, 1, || s.write(a + 3 * P, &[1]));
        assert_eq!(r, Ok(Err(Error::AccessViolation { address: a + 3 * P, access: AccessKind::Write })));
        let r = win32::with_code_writable(s, a + 6 * P, 1, || s.write(a + 6 * P, &[1]));
        assert_eq!(r, Ok(Err(Error::AccessViolation { address: a + 6 * P, access: AccessKind::Write })));
        assert_eq!(win32::with_code_writable(s, a, 0, || fx.q(a).protect), Ok(Protection::EXECUTE_READ));
        assert_eq!(win32::with_code_writable(s, a, usize::MAX, || fx.q(a).protect), Ok(Protection::EXECUTE_READ));
        assert_eq!(fx.snapshot(), before);
    }

    /// Code made writable for a copy keeps its caching modifier (PAGE_WRITECOMBINE, which
    /// is the page's, not the allocation's) during the copy, and gets its own protection
    /// back after it.
    fn code_made_writable_keeps_its_caching_modifier(fx: &Fx) {
        let s = &*fx.space;
        let a = fx.reserve_commit(0, 2 * P, PAGE_READWRITE);
        fx.protect(a, 2 * P, PAGE_EXECUTE_READ | PAGE_WRITECOMBINE).unwrap();
        let r = win32::with_code_writable(s, a + 10, 2, || {
            assert_eq!(fx.q(a).protect, Protection::EXECUTE_READWRITE | Protection::WRITECOMBINE);
            s.write(a + 10, &[5, 6])
        });
        assert_eq!(r, Ok(Ok(())));
        let q = fx.q(a);
        assert_eq!((q.protect, q.region_size), (Protection::EXECUTE_READ | Protection::WRITECOMBINE, 2 * P));
        assert_eq!(fx.read_vec(a + 9, 4), [0, 5, 6, 0]);
    }
}

/// In a `MEM_LARGE_PAGES` allocation, whose protection changes by whole large pages only,
/// `with_code_writable` makes the large pages the copy touches writable (not just its 4 KiB
/// pages, which the space would refuse with 87) and restores them. (Simulated: the Linux
/// backend rarely has large pages to give.)
#[test]
fn sim_writes_into_large_page_code_change_whole_large_pages() {
    let fx = Fx::sim();
    let s = &*fx.space;
    let lp = s.system_info().large_page_size;
    assert!(lp > 0);
    let a = fx.alloc(0, 3 * lp, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_EXECUTE_READ).unwrap();
    assert_eq!(code(&fx.space.protect(a, P, Protection::READWRITE)), 87, "no 4 KiB change in large pages");
    let before = walk(s, a..a + 3 * lp);
    let r = win32::with_code_writable(s, a + 2 * lp - 2, 4, || {
        let q = fx.q(a);
        assert_eq!((q.protect, q.region_size), (Protection::EXECUTE_READ, lp), "the first is not touched");
        let q = fx.q(a + lp);
        assert_eq!((q.protect, q.region_size), (Protection::EXECUTE_READWRITE, 2 * lp), "the two touched");
        s.write(a + 2 * lp - 2, &[1, 2, 3, 4])
    });
    assert_eq!(r, Ok(Ok(())));
    assert_eq!(walk(s, a..a + 3 * lp), before);
    assert_eq!(fx.read_vec(a + 2 * lp - 3, 6), [0, 1, 2, 3, 4, 0]);
}
