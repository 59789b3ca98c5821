//! Spec § VirtualAlloc: validation order and every bad-argument kind, reserve and commit
//! rounding, conflicts, MEM_LARGE_PAGES argument rules.

use crate::backend_tests;
use crate::common::*;
use virtmem::{MemState, Protection};

/// Type values VirtualAlloc must reject with 87, one per kind of mistake.
const BAD_TYPES: [u32; 27] = [
    0,
    MEM_TOP_DOWN,
    MEM_WRITE_WATCH,
    MEM_LARGE_PAGES,
    MEM_TOP_DOWN | MEM_WRITE_WATCH,
    MEM_WRITE_WATCH | MEM_COMMIT,
    MEM_WRITE_WATCH | MEM_COMMIT | MEM_TOP_DOWN,
    MEM_PHYSICAL,
    MEM_PHYSICAL | MEM_COMMIT,
    MEM_PHYSICAL | MEM_RESERVE | MEM_COMMIT,
    MEM_RESET | MEM_COMMIT,
    MEM_RESET | MEM_RESERVE,
    MEM_RESET | MEM_TOP_DOWN,
    MEM_RESET | MEM_WRITE_WATCH,
    MEM_RESET | MEM_RESET_UNDO,
    MEM_RESET_UNDO | MEM_COMMIT,
    MEM_RESET_UNDO | MEM_RESERVE,
    MEM_RESERVE | AT_ROUND_TO_PAGE,
    MEM_COMMIT | AT_ROUND_TO_PAGE,
    MEM_DECOMMIT,
    MEM_RELEASE,
    MEM_RESERVE | MEM_DECOMMIT,
    MEM_COMMIT | MEM_RELEASE,
    MEM_RESERVE | MEM_FREE,
    MEM_RESERVE | MEM_PRIVATE,
    MEM_RESERVE | 0x8000_0000,
    MEM_RESERVE | 0x1,
];

backend_tests! {
    /// Rule 1: size 0 → 87 for every type, before anything else is looked at.
    fn size_zero_is_invalid_parameter(fx: &Fx) {
        let a = fx.reserve_commit(0, G, PAGE_READWRITE);
        let before = fx.snapshot();
        for ty in [MEM_RESERVE, MEM_COMMIT, MEM_RESERVE | MEM_COMMIT, MEM_RESET, MEM_RESET_UNDO, 0, MEM_TOP_DOWN] {
            for addr in [0, a, a + P, fx.w + 4 * G] {
                assert_eq!(code(&fx.alloc(addr, 0, ty, PAGE_READWRITE)), 87, "type {ty:#x} at {addr:#x}");
                assert_eq!(code(&fx.alloc(addr, 0, ty, 0)), 87);
            }
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// Rule 1: every type combination outside the accepted list → 87, with a NULL
    /// address, a free address and an address inside a reservation; nothing changes.
    fn rejected_type_combinations(fx: &Fx) {
        let a = fx.reserve(0, G, PAGE_READWRITE);
        fx.commit(a, P, PAGE_READWRITE);
        let before = fx.snapshot();
        for ty in BAD_TYPES {
            for addr in [0, a, a + P, fx.w + 4 * G] {
                assert_eq!(code(&fx.alloc(addr, P, ty, PAGE_READWRITE)), 87, "type {ty:#x} at {addr:#x}");
            }
        }
        assert_eq!(fx.snapshot(), before);
        assert_eq!(fx.space.stats().reservations, 1);
    }

    /// Rule 1: the accepted combinations work: MEM_RESERVE, MEM_COMMIT, both, each with
    /// any of MEM_TOP_DOWN and MEM_WRITE_WATCH (write watch only with MEM_RESERVE), and
    /// MEM_PHYSICAL|MEM_RESERVE.
    fn accepted_type_combinations(fx: &Fx) {
        for base_ty in [MEM_RESERVE, MEM_COMMIT, MEM_RESERVE | MEM_COMMIT] {
            for extra in [0, MEM_TOP_DOWN, MEM_WRITE_WATCH, MEM_TOP_DOWN | MEM_WRITE_WATCH] {
                let ty = base_ty | extra;
                let r = fx.alloc(0, 3 * P, ty, PAGE_READWRITE);
                if extra & MEM_WRITE_WATCH != 0 && base_ty & MEM_RESERVE == 0 {
                    assert_eq!(code(&r), 87, "type {ty:#x}");
                    continue;
                }
                let base = r.unwrap_or_else(|e| panic!("type {ty:#x}: {e}"));
                assert_eq!(base % G, 0);
                let m = fx.q(base);
                let want = if base_ty & MEM_COMMIT != 0 { MemState::Commit } else { MemState::Reserve };
                assert_eq!((m.state, m.region_size, m.allocation_base), (want, 3 * P, base), "type {ty:#x}");
                fx.free(base, 0, MEM_RELEASE).unwrap();
            }
        }
        // With a fixed address too.
        for (i, ty) in [MEM_RESERVE, MEM_RESERVE | MEM_COMMIT, MEM_RESERVE | MEM_WRITE_WATCH, MEM_RESERVE | MEM_TOP_DOWN]
            .into_iter()
            .enumerate()
        {
            assert_eq!(fx.alloc(fx.w + i * G, P, ty, PAGE_READONLY), Ok(fx.w + i * G), "type {ty:#x}");
        }
        let phys = fx.alloc(0, G, MEM_PHYSICAL | MEM_RESERVE, PAGE_READWRITE).unwrap();
        assert_eq!(fx.q(phys).state, MemState::Reserve);
        fx.free(phys, 0, MEM_RELEASE).unwrap();
    }

    /// Rule 2: exactly one base protection, optionally with one of GUARD, NOCACHE,
    /// WRITECOMBINE (not on NOACCESS); every accepted value is what the pages report.
    fn accepted_protections(fx: &Fx) {
        for (i, p) in valid_protections().into_iter().enumerate() {
            let a = fx.alloc(fx.w + i * G, 2 * P, MEM_RESERVE | MEM_COMMIT, p).unwrap_or_else(|e| panic!("{p:#x}: {e}"));
            let m = fx.q(a);
            assert_eq!(m.protect.bits(), p, "Protect after reserve+commit {p:#x}");
            assert_eq!(m.allocation_protect.bits(), p);
            // Commit (again) with the same value inside the reservation.
            assert_eq!(fx.alloc(a + P, P, MEM_COMMIT, p), Ok(a + P));
            assert_eq!(fx.q(a + P).protect.bits(), p);
        }
    }

    /// Rule 2: every bad protection → 87 for reserve, reserve+commit, commit, MEM_RESET
    /// and MEM_RESET_UNDO (checked even though those two ignore the value).
    fn rejected_protections(fx: &Fx) {
        let a = fx.reserve_commit(0, G, PAGE_READWRITE);
        fx.write(a, b"data");
        let before = fx.snapshot();
        for p in BAD_PROTECTIONS {
            for (ty, addr) in [
                (MEM_RESERVE, 0),
                (MEM_RESERVE, fx.w + 2 * G),
                (MEM_RESERVE | MEM_COMMIT, 0),
                (MEM_COMMIT, 0),
                (MEM_COMMIT, a),
                (MEM_RESET, a),
                (MEM_RESET_UNDO, a),
            ] {
                assert_eq!(code(&fx.alloc(addr, P, ty, p)), 87, "protect {p:#x} type {ty:#x}");
            }
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// MEM_PHYSICAL|MEM_RESERVE (an AWE region) takes PAGE_READWRITE and nothing else:
    /// any other valid protection, a modifier on PAGE_READWRITE included, → 87 and no
    /// reservation. The spec is silent; Microsoft's VirtualAlloc, VirtualAllocEx and
    /// VirtualAlloc2 documentation says the page protection must be PAGE_READWRITE.
    fn physical_reserve_needs_readwrite(fx: &Fx) {
        let before = fx.snapshot();
        for p in valid_protections().into_iter().filter(|&p| p != PAGE_READWRITE) {
            for (ty, addr) in [
                (MEM_PHYSICAL | MEM_RESERVE, 0),
                (MEM_PHYSICAL | MEM_RESERVE, fx.w + 2 * G),
            ] {
                assert_eq!(code(&fx.alloc(addr, G, ty, p)), 87, "protect {p:#x} at {addr:#x}");
            }
        }
        assert_eq!(fx.snapshot(), before);
        assert_eq!(fx.space.stats().reservations, 0);
        // An invalid protection is 87 as before; PAGE_READWRITE works, NULL or fixed.
        assert_eq!(code(&fx.alloc(0, G, MEM_PHYSICAL | MEM_RESERVE, 0)), 87);
        let a = fx.alloc(0, G, MEM_PHYSICAL | MEM_RESERVE, PAGE_READWRITE).unwrap();
        assert_eq!(fx.q(a).allocation_protect.bits(), PAGE_READWRITE);
        assert_eq!(fx.alloc(fx.w + 2 * G, G, MEM_PHYSICAL | MEM_RESERVE, PAGE_READWRITE), Ok(fx.w + 2 * G));
    }

    /// Rule 3: addresses below 0x10000, past the top of user space or wrapping → 87;
    /// a size that can never fit → 87.
    fn address_range_checks(fx: &Fx) {
        let top = fx.space.system_info().maximum_application_address + 1;
        let before = fx.snapshot();
        for ty in [MEM_RESERVE, MEM_COMMIT, MEM_RESERVE | MEM_COMMIT, MEM_RESET, MEM_RESET_UNDO] {
            for (addr, size) in [
                (1, P),
                (0x1000, P),
                (0xFFFF, 1),
                (0x8000, 0x10000),
                (top, P),
                (top - P, 2 * P),
                (top - 1, 2),
                (usize::MAX - P, 2 * P),
                (usize::MAX & !(G - 1), G),
                (fx.w, usize::MAX),
                (fx.w, usize::MAX - fx.w + 1),
                (fx.w, top - fx.w + 1),
            ] {
                assert_eq!(code(&fx.alloc(addr, size, ty, PAGE_READWRITE)), 87, "type {ty:#x} {addr:#x}+{size:#x}");
            }
        }
        for ty in [MEM_RESERVE, MEM_COMMIT, MEM_RESERVE | MEM_COMMIT] {
            for size in [usize::MAX, usize::MAX - G, top, top - 0x10000 + P] {
                assert_eq!(code(&fx.alloc(0, size, ty, PAGE_READWRITE)), 87, "NULL type {ty:#x} size {size:#x}");
            }
        }
        assert_eq!(fx.snapshot(), before);
        assert_eq!(fx.space.stats().reservations, 0);
    }

    /// Validation order: size, type and protection (87) are checked before the address
    /// (87) and before the state of the address space (487).
    fn argument_errors_come_before_address_space_errors(fx: &Fx) {
        let a = fx.reserve(0, G, PAGE_READWRITE);
        let free = fx.w + 8 * G;
        // Occupied address: a good call says 487, any bad argument says 87.
        assert_eq!(code(&fx.alloc(a, P, MEM_RESERVE, PAGE_READWRITE)), 487);
        assert_eq!(code(&fx.alloc(a, 0, MEM_RESERVE, PAGE_READWRITE)), 87);
        assert_eq!(code(&fx.alloc(a, P, MEM_RESERVE | MEM_RESET, PAGE_READWRITE)), 87);
        assert_eq!(code(&fx.alloc(a, P, MEM_RESERVE, PAGE_WRITECOPY)), 87);
        // Free address: a good commit or reset says 487, bad arguments 87.
        assert_eq!(code(&fx.alloc(free, P, MEM_COMMIT, PAGE_READWRITE)), 487);
        assert_eq!(code(&fx.alloc(free, P, MEM_COMMIT, 0)), 87);
        assert_eq!(code(&fx.alloc(free, P, MEM_COMMIT | MEM_PHYSICAL, PAGE_READWRITE)), 87);
        assert_eq!(code(&fx.alloc(free, P, MEM_RESET, PAGE_READWRITE)), 487);
        assert_eq!(code(&fx.alloc(free, P, MEM_RESET, 0)), 87);
        assert_eq!(code(&fx.alloc(free, P, MEM_RESET_UNDO, PAGE_READWRITE)), 487);
        assert_eq!(code(&fx.alloc(free, P, MEM_RESET_UNDO, PAGE_NOACCESS | PAGE_GUARD)), 87);
        // A low address is 87 even for calls that would otherwise be 487.
        assert_eq!(code(&fx.alloc(0xF000, P, MEM_COMMIT, PAGE_READWRITE)), 87);
        assert_eq!(code(&fx.alloc(0xF000, P, MEM_RESET, PAGE_READWRITE)), 87);
    }

    /// Reserve with a NULL address: a G-aligned base; the size rounds up to a page, not
    /// to the granularity.
    fn null_reserve_rounds_size_to_pages(fx: &Fx) {
        for (size, want) in [(1, P), (5, P), (P, P), (P + 1, 2 * P), (G + 1, G + P), (3 * G - 7, 3 * G)] {
            let a = fx.alloc(0, size, MEM_RESERVE, PAGE_READWRITE).unwrap();
            assert_eq!(a % G, 0);
            let m = fx.q(a);
            assert_eq!((m.state, m.region_size, m.allocation_base), (MemState::Reserve, want, a), "size {size:#x}");
            if want % G != 0 {
                let tail = fx.q(a + want);
                assert_eq!(tail.state, MemState::Free, "the rest of the granule is not reserved");
            }
            assert_eq!(fx.space.reserved_bytes(), want);
            fx.free(a, 0, MEM_RELEASE).unwrap();
        }
    }

    /// MEM_TOP_DOWN places the reservation at the highest address that fits.
    fn top_down_takes_the_highest_fit(fx: &Fx) {
        let low = fx.alloc(0, G, MEM_RESERVE, PAGE_READWRITE).unwrap();
        let high = fx.alloc(0, G + P, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE).unwrap();
        assert!(high > low, "top-down {high:#x} above bottom-up {low:#x}");
        assert_eq!(high % G, 0);
        assert_eq!(fx.q(high).region_size, G + P);
        if fx.kind == Kind::Sim {
            // Nothing else is mapped in a simulated space: the highest fit ends at the top.
            let top = fx.space.system_info().maximum_application_address + 1;
            assert_eq!(high + 2 * G, top);
            let next = fx.alloc(0, P, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE).unwrap();
            assert_eq!(next, high - G, "the next top-down reservation goes right below");
        }
    }

    /// Reserve at an address: base = address rounded down to G, end = (address + size)
    /// rounded up to P.
    fn fixed_reserve_rounds_base_down_and_end_up(fx: &Fx) {
        let w = fx.w;
        assert_eq!(fx.alloc(w + 0x5123, 0x2000, MEM_RESERVE, PAGE_READWRITE), Ok(w));
        let m = fx.q(w);
        assert_eq!((m.allocation_base, m.region_size), (w, 0x8000));
        // A 2-byte range straddling a page boundary.
        assert_eq!(fx.alloc(w + G + 0xFFF, 2, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE), Ok(w + G));
        let m = fx.q(w + G);
        assert_eq!((m.state, m.region_size), (MemState::Commit, 0x2000));
        // Exactly one granule.
        assert_eq!(fx.alloc(w + 2 * G + 0xABC, G - 0xABC, MEM_RESERVE, PAGE_READWRITE), Ok(w + 2 * G));
        assert_eq!(fx.q(w + 2 * G).region_size, G);
        assert_eq!(fx.space.reserved_bytes(), 0x8000 + 0x2000 + G);
    }

    /// Reserve at an address: if any page of [base, roundup(end, G)) is not free → 487.
    fn fixed_reserve_conflicts_are_invalid_address(fx: &Fx) {
        let w = fx.w;
        let b = fx.reserve(G, P, PAGE_READWRITE); // occupies granule w+G
        let before = fx.snapshot();
        // Would need granule w+G for its last page.
        assert_eq!(code(&fx.alloc(w, G + 1, MEM_RESERVE, PAGE_READWRITE)), 487);
        assert_eq!(code(&fx.alloc(w + 0x8000, G, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)), 487);
        // Starts inside it.
        assert_eq!(code(&fx.alloc(b + 0x4000, P, MEM_RESERVE, PAGE_READWRITE)), 487);
        // Covers it entirely.
        assert_eq!(code(&fx.alloc(w, 4 * G, MEM_RESERVE, PAGE_READWRITE)), 487);
        assert_eq!(fx.snapshot(), before);
        // Ending exactly at its granule is fine.
        assert_eq!(fx.alloc(w, G, MEM_RESERVE, PAGE_READWRITE), Ok(w));
        assert_eq!(fx.alloc(w + 2 * G, 1, MEM_RESERVE, PAGE_READWRITE), Ok(w + 2 * G));
    }

    /// MEM_RESERVE|MEM_COMMIT commits the whole new reservation; MEM_COMMIT alone with a
    /// NULL address does exactly the same.
    fn reserve_commit_and_null_commit_commit_everything(fx: &Fx) {
        for ty in [MEM_RESERVE | MEM_COMMIT, MEM_COMMIT] {
            let a = fx.alloc(0, 5 * P + 3, ty, PAGE_EXECUTE_READWRITE).unwrap();
            let m = fx.q(a);
            assert_eq!(m.state, MemState::Commit, "type {ty:#x}");
            assert_eq!(m.region_size, 6 * P);
            assert_eq!(m.allocation_base, a);
            assert_eq!(m.protect, Protection::EXECUTE_READWRITE);
            assert_eq!(m.allocation_protect, Protection::EXECUTE_READWRITE);
            assert_eq!(fx.space.committed_bytes(), 6 * P);
            assert_eq!(fx.read_vec(a, 6 * P), vec![0; 6 * P]);
            fx.free(a, 0, MEM_RELEASE).unwrap();
        }
    }

    /// Commit: every page touched by [address, address+size) is committed; the result is
    /// the first page's base.
    fn commit_covers_every_touched_page(fx: &Fx) {
        let a = fx.reserve(0, 8 * P, PAGE_NOACCESS);
        assert_eq!(fx.alloc(a + P - 1, 2, MEM_COMMIT, PAGE_READWRITE), Ok(a), "2 bytes straddling pages 0 and 1");
        assert_eq!(fx.alloc(a + 3 * P + 5, 10, MEM_COMMIT, PAGE_READONLY), Ok(a + 3 * P));
        assert_eq!(fx.alloc(a + 5 * P + 1, P, MEM_COMMIT, PAGE_EXECUTE), Ok(a + 5 * P));
        let got: Vec<_> = fx.walk(a..a + 8 * P).iter().map(|m| (m.state, m.protect.bits(), m.region_size)).collect();
        assert_eq!(
            got,
            vec![
                (MemState::Commit, PAGE_READWRITE, 2 * P),
                (MemState::Reserve, 0, P),
                (MemState::Commit, PAGE_READONLY, P),
                (MemState::Reserve, 0, P),
                (MemState::Commit, PAGE_EXECUTE, 2 * P),
                (MemState::Reserve, 0, P),
            ]
        );
        assert_eq!(fx.space.committed_bytes(), 5 * P);
    }

    /// Commit: the range must lie inside one reservation: free pages, the blocked tail
    /// of a granule, past the end, or spanning two reservations → 487.
    fn commit_outside_one_reservation_is_invalid_address(fx: &Fx) {
        let a = fx.reserve(0, 4 * P, PAGE_READWRITE);
        let b = fx.reserve(G, G, PAGE_READWRITE);
        let c = fx.reserve(2 * G, G, PAGE_READWRITE);
        let before = fx.snapshot();
        for (addr, size, what) in [
            (fx.w + 8 * G, P, "free granule"),
            (a + 4 * P, P, "blocked tail of a granule"),
            (a + 3 * P, 2 * P, "past the end"),
            (a, 4 * P + 1, "one byte past the end"),
            (b + G - P, 2 * P, "spanning two adjacent reservations"),
            (b, 2 * G, "two whole reservations"),
            (a + 4 * P, G, "from the free tail into the next reservation"),
            (c + G, P, "right after the last reservation"),
        ] {
            assert_eq!(code(&fx.alloc(addr, size, MEM_COMMIT, PAGE_READWRITE)), 487, "{what}");
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// Commit on a mix of committed and reserved pages succeeds; committed pages keep
    /// their data and take the new protection.
    fn commit_over_committed_pages_keeps_data(fx: &Fx) {
        let a = fx.reserve(0, 6 * P, PAGE_READWRITE);
        fx.commit(a + P, P, PAGE_READWRITE);
        fx.commit(a + 3 * P, P, PAGE_EXECUTE_READWRITE);
        fx.write(a + P, b"one");
        fx.write(a + 3 * P, b"three");
        assert_eq!(fx.alloc(a, 6 * P, MEM_COMMIT, PAGE_READONLY), Ok(a));
        let m = fx.q(a);
        assert_eq!((m.state, m.protect, m.region_size), (MemState::Commit, Protection::READONLY, 6 * P));
        assert_eq!(fx.read_vec(a + P, 3), b"one");
        assert_eq!(fx.read_vec(a + 3 * P, 5), b"three");
        assert_eq!(fx.read_vec(a, 3), [0, 0, 0]);
        assert_eq!(fx.space.committed_bytes(), 6 * P);
    }

    /// MEM_LARGE_PAGES: with MEM_RESERVE|MEM_COMMIT only, size and address multiples of
    /// the large-page size, otherwise 87; where large pages cannot be had, a clear error
    /// and never small pages.
    fn large_pages_argument_rules(fx: &Fx) {
        let lp = fx.space.system_info().large_page_size;
        let rc = MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES;
        let before = fx.snapshot();
        // Wrong type combinations are 87 whatever the machine offers.
        for ty in [MEM_LARGE_PAGES, MEM_RESERVE | MEM_LARGE_PAGES, MEM_COMMIT | MEM_LARGE_PAGES] {
            assert_eq!(code(&fx.alloc(0, 2 << 20, ty, PAGE_READWRITE)), 87, "type {ty:#x}");
        }
        let a = fx.reserve(0, 4 << 20, PAGE_READWRITE);
        assert_eq!(code(&fx.alloc(a, 2 << 20, MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE)), 87);
        fx.free(a, 0, MEM_RELEASE).unwrap();
        assert_eq!(fx.snapshot(), before);
        if lp == 0 {
            let r = fx.alloc(0, 2 << 20, rc, PAGE_READWRITE);
            assert_eq!(code(&r), 1450, "no large pages: a clear error");
            assert_eq!(fx.snapshot(), before);
            return;
        }
        // Misaligned sizes and addresses.
        for (addr, size) in [(0, lp + P), (0, P), (0, lp / 2), (fx.w + G, lp), (fx.w + lp + P, lp)] {
            assert_eq!(code(&fx.alloc(addr, size, rc, PAGE_READWRITE)), 87, "{addr:#x}+{size:#x}");
        }
        assert_eq!(fx.snapshot(), before);
        match fx.alloc(0, lp, rc, PAGE_READWRITE) {
            Ok(b) => {
                assert_eq!(b % lp, 0, "large-page reservations are large-page aligned");
                let m = fx.q(b);
                assert_eq!((m.state, m.region_size), (MemState::Commit, lp));
                fx.write(b + lp - 1, &[7]);
                assert_eq!(fx.read_vec(b + lp - 1, 1), [7]);
                // Commit, decommit, protect, reset and its undo act on whole large pages:
                // a range that splits one is 87 and changes nothing.
                let whole = fx.snapshot();
                assert_eq!(code(&fx.alloc(b + P, lp - P, MEM_RESET_UNDO, PAGE_READWRITE)), 87);
                assert_eq!(code(&fx.protect(b + P, P, PAGE_READONLY)), 87);
                assert_eq!(code(&fx.free(b, P, MEM_DECOMMIT)), 87);
                assert_eq!(code(&fx.alloc(b + P, P, MEM_COMMIT, PAGE_READWRITE)), 87);
                assert_eq!(code(&fx.alloc(b, lp / 2, MEM_RESET, PAGE_READWRITE)), 87);
                assert_eq!(fx.snapshot(), whole);
                assert_eq!(fx.protect(b, lp, PAGE_READONLY), Ok(PAGE_READWRITE));
                assert_eq!(fx.q(b + P).protect, Protection::READONLY);
                fx.free(b, lp, MEM_DECOMMIT).unwrap();
                assert_eq!(fx.q(b).state, MemState::Reserve);
                assert_eq!(fx.alloc(b, lp, MEM_COMMIT, PAGE_READWRITE), Ok(b));
                assert_eq!(fx.read_vec(b + lp - 1, 1), [0], "a recommitted large page reads zero");
                fx.free(b, 0, MEM_RELEASE).unwrap();
            }
            Err(e) => assert_eq!(e.code(), 1450, "large pages that cannot be had: {e}"),
        }
    }

    /// Spec, MEM_LARGE_PAGES: "size and address must be multiples of the large-page size,
    /// with MEM_RESERVE|MEM_COMMIT; otherwise 87". The caller's size, not its rounding up to
    /// a page: one byte short of a large page is not a multiple (the rules had checked the
    /// rounded size, so the simulated backend made a 2 MiB reservation and Linux without
    /// large pages said 1450). Nothing is reserved.
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

    /// Rule 1: "MEM_RESET alone; MEM_RESET_UNDO alone ... MEM_RESET with any other flag,
    /// unknown bits such as AT_ROUND_TO_PAGE → 87", and MEM_PHYSICAL only with MEM_RESERVE:
    /// MEM_RESET and MEM_RESET_UNDO with each other flag (not only the few in BAD_TYPES),
    /// AT_ROUND_TO_PAGE alone or with RESERVE|COMMIT, MEM_PHYSICAL with COMMIT and a
    /// modifier. On committed, reserved and free pages and with a NULL address, each is 87
    /// and nothing changes (the committed page keeps its data: no reset happened).
    fn reset_types_with_any_other_flag_are_87(fx: &Fx) {
        let a = fx.reserve(0, 4 * P, PAGE_READWRITE);
        fx.commit(a, 2 * P, PAGE_READWRITE);
        fx.write(a, &[0x3C; 2 * P]);
        let before = fx.snapshot();
        let others = [
            MEM_COMMIT,
            MEM_RESERVE,
            MEM_RESERVE | MEM_COMMIT,
            MEM_TOP_DOWN,
            MEM_WRITE_WATCH,
            MEM_PHYSICAL,
            MEM_LARGE_PAGES,
            AT_ROUND_TO_PAGE,
            MEM_DECOMMIT,
            MEM_RELEASE,
            0x8000_0000,
            0x1,
        ];
        let mut bad = Vec::new();
        for reset in [MEM_RESET, MEM_RESET_UNDO] {
            for other in others {
                bad.push(reset | other);
            }
        }
        bad.extend([
            MEM_RESET | MEM_RESET_UNDO | MEM_COMMIT,
            AT_ROUND_TO_PAGE,
            MEM_RESERVE | MEM_COMMIT | AT_ROUND_TO_PAGE,
            MEM_PHYSICAL | MEM_COMMIT | MEM_TOP_DOWN,
            MEM_PHYSICAL | MEM_TOP_DOWN,
            MEM_TOP_DOWN | MEM_LARGE_PAGES,
        ]);
        for ty in bad {
            for (addr, what) in [(0, "NULL"), (a, "committed"), (a + 2 * P, "reserved"), (fx.w + 4 * G, "free")] {
                let r = fx.alloc(addr, 2 * P, ty, PAGE_READWRITE);
                assert_eq!(code(&r), 87, "VirtualAlloc({what} {addr:#x}, 2 pages, {ty:#x}, READWRITE) = {r:x?}");
            }
        }
        assert_eq!(fx.snapshot(), before);
        assert_eq!(fx.read_vec(a, 2 * P), vec![0x3C; 2 * P]);
        assert_eq!(fx.space.stats().reservations, 1);
    }

    /// Rule 1: the modifiers are accepted with every base type, also at a given address:
    /// MEM_COMMIT|MEM_TOP_DOWN inside a reservation is a plain commit (the first page's
    /// base is returned, the pages take the protection); MEM_RESERVE|MEM_COMMIT with
    /// MEM_TOP_DOWN or MEM_WRITE_WATCH at a given address reserves there (base rounded
    /// down to G) and commits everything.
    fn modifiers_are_accepted_at_a_given_address(fx: &Fx) {
        let a = fx.reserve(0, 4 * P, PAGE_NOACCESS);
        assert_eq!(fx.alloc(a + P + 5, 10, MEM_COMMIT | MEM_TOP_DOWN, PAGE_READONLY), Ok(a + P));
        let m = fx.q(a + P);
        assert_eq!((m.state, m.protect.bits(), m.region_size), (MemState::Commit, PAGE_READONLY, P));
        assert_eq!(fx.q(a).state, MemState::Reserve);
        for (i, ty) in [MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH].into_iter().enumerate() {
            let at = fx.w + (i + 1) * G;
            assert_eq!(fx.alloc(at + 0x1234, 2 * P, ty, PAGE_READWRITE), Ok(at), "type {ty:#x}");
            let m = fx.q(at);
            assert_eq!((m.state, m.region_size, m.allocation_base), (MemState::Commit, 4 * P, at), "type {ty:#x}: end = at + 0x3234 rounded up");
        }
        assert_eq!(fx.space.committed_bytes(), P + 8 * P);
    }

    /// Reserve, NULL address: "MEM_TOP_DOWN: the highest that fits". On both backends the
    /// free space is known (the simulated space up to the top of user space; the Linux
    /// fixture's window, outside which everything is taken): a top-down reservation ends
    /// at its granule-rounded top, and the next one goes right below it.
    fn top_down_reservation_ends_at_the_top_of_the_free_space(fx: &Fx) {
        let top = match fx.kind {
            Kind::Sim => fx.space.system_info().maximum_application_address + 1,
            Kind::Linux => fx.w + WINDOW,
        };
        let high = fx.alloc(0, G + P, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE).unwrap();
        assert_eq!(high, top - 2 * G, "G + P bytes take two granules at the top");
        let next = fx.alloc(0, P, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE).unwrap();
        assert_eq!(next, high - G, "the next top-down reservation goes right below");
        assert_eq!(fx.q(next).state, MemState::Commit);
        fx.free(next, 0, MEM_RELEASE).unwrap();
        fx.free(high, 0, MEM_RELEASE).unwrap();
    }

    /// Reserve alone with every accepted protection (modifiers included): the pages are
    /// reserved (Protect 0) and AllocationProtect is the value given; a later commit's
    /// pages take the commit's own protection (a reservation's GUARD or WRITECOMBINE is
    /// not passed on, as Wine 8 shows for GUARD), except NOCACHE, which belongs to the
    /// allocation (spec, VirtualProtect); committing with the reservation's own value
    /// gives exactly that value, an armed guard for GUARD.
    fn reserve_alone_with_every_protection(fx: &Fx) {
        for (i, p) in valid_protections().into_iter().enumerate() {
            let a = fx.alloc(fx.w + i * G, 3 * P, MEM_RESERVE, p).unwrap_or_else(|e| panic!("{p:#x}: {e}"));
            let m = fx.q(a);
            assert_eq!((m.state, m.protect.bits(), m.allocation_protect.bits()), (MemState::Reserve, 0, p), "reserve {p:#x}");
            assert_eq!(fx.space.committed_bytes(), 0);
            fx.commit(a, P, PAGE_READONLY);
            let want = PAGE_READONLY | (p & PAGE_NOCACHE);
            assert_eq!(fx.q(a).protect.bits(), want, "commit READONLY in a {p:#x} reservation");
            fx.commit(a + P, P, p);
            assert_eq!(fx.q(a + P).protect.bits(), p, "commit {p:#x} in its own reservation");
            if p & PAGE_GUARD != 0 {
                let e = fx.space.read(a + P, &mut [0]).unwrap_err();
                assert_eq!(e.exception_code(), Some(0x8000_0001), "{p:#x}: armed");
            }
            assert_eq!(fx.q(a + 2 * P).state, MemState::Reserve);
            assert_eq!(fx.q(a + 2 * P).allocation_protect.bits(), p, "AllocationProtect never changes");
            fx.free(a, 0, MEM_RELEASE).unwrap();
        }
    }

    /// Rounding at the very top of the user range (on Linux, of a space whose user range is
    /// a free window): a reserve whose end is exactly the top works from any address in the
    /// last granule (base rounded down to it), a commit up to the last byte covers the last page, and
    /// one byte more is 87 for every kind of call; no rounding overflows or panics.
    fn rounding_at_the_top_of_the_user_range(fx: &Fx) {
        let mut own = None;
        let fx = fx.with_free_top(&mut own);
        let top = fx.space.system_info().maximum_application_address + 1;
        let last = top - G;
        for (addr, size) in [(top - 1, 1), (top - P, P), (last + 0x1234, G - 0x1234), (top - 2, 2)] {
            match fx.alloc(addr, size, MEM_RESERVE, PAGE_READWRITE) {
                Ok(b) => {
                    assert_eq!(b, last, "{addr:#x}+{size:#x}");
                    let m = fx.q(top - 1);
                    assert_eq!((m.state, m.allocation_base, m.base_address + m.region_size), (MemState::Reserve, last, top));
                    assert_eq!(fx.alloc(top - 1, 1, MEM_COMMIT, PAGE_READWRITE), Ok(top - P));
                    fx.write(top - 1, &[7]);
                    assert_eq!(fx.read_vec(top - 1, 1), [7]);
                    for ty in [MEM_COMMIT, MEM_RESET, MEM_RESET_UNDO] {
                        assert_eq!(code(&fx.alloc(top - 1, 2, ty, PAGE_READWRITE)), 87, "type {ty:#x} one byte past the top");
                    }
                    assert_eq!(code(&fx.free(top - 1, 2, MEM_DECOMMIT)), 87);
                    assert_eq!(code(&fx.protect(top - 1, 2, PAGE_READONLY)), 87);
                    assert_eq!(fx.protect(top - 1, 1, PAGE_READONLY), Ok(PAGE_READWRITE));
                    assert_eq!(fx.free(top - 1, 1, MEM_DECOMMIT), Ok(()));
                    assert_eq!(fx.free(last, 0, MEM_RELEASE), Ok(()));
                }
                Err(e) => panic!("{addr:#x}+{size:#x}: {e}"),
            }
        }
        for (addr, size) in [(top - 1, 2), (top - P, P + 1), (last, G + 1), (top - 1, usize::MAX)] {
            for ty in [MEM_RESERVE, MEM_RESERVE | MEM_COMMIT] {
                assert_eq!(code(&fx.alloc(addr, size, ty, PAGE_READWRITE)), 87, "type {ty:#x} {addr:#x}+{size:#x}");
            }
        }
    }

    /// MEM_LARGE_PAGES with MEM_TOP_DOWN (accepted with MEM_RESERVE|MEM_COMMIT): where
    /// large pages can be had, the reservation is large-page aligned, committed, and the
    /// highest that fits (on the simulated space, whose free space is known: its last
    /// large page); a second one goes right below. Without large pages: the clear error.
    fn large_pages_top_down(fx: &Fx) {
        let lp = fx.space.system_info().large_page_size;
        let ty = MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES | MEM_TOP_DOWN;
        let before = fx.snapshot();
        let a = match fx.alloc(0, lp.max(2 << 20), ty, PAGE_READWRITE) {
            Ok(a) => a,
            Err(e) => {
                assert_eq!(e.code(), 1450, "{e}");
                return assert_eq!(fx.snapshot(), before);
            }
        };
        assert_eq!(a % lp, 0);
        let m = fx.q(a);
        assert_eq!((m.state, m.region_size, m.allocation_base), (MemState::Commit, lp, a));
        let b = fx.alloc(0, lp, ty, PAGE_READWRITE).unwrap();
        if fx.kind == Kind::Sim {
            let top = fx.space.system_info().maximum_application_address + 1;
            assert_eq!(a, (top - lp) & !(lp - 1), "the highest large page that fits");
            assert_eq!(b, a - lp, "the next one right below");
        }
        assert!(b < a);
        fx.free(b, 0, MEM_RELEASE).unwrap();
        fx.free(a, 0, MEM_RELEASE).unwrap();
    }

    /// Rule 1: MEM_PHYSICAL|MEM_RESERVE is accepted as it is; the modifiers the other
    /// combinations may take ("each optionally with MEM_TOP_DOWN, MEM_LARGE_PAGES,
    /// MEM_WRITE_WATCH") are not listed for it, and Microsoft's documentation says
    /// MEM_PHYSICAL "must be used with MEM_RESERVE and no other values": with any of
    /// them, at a NULL or a free address, 87 and nothing is reserved.
    fn physical_reserve_takes_no_modifier(fx: &Fx) {
        let before = fx.snapshot();
        for extra in [MEM_TOP_DOWN, MEM_LARGE_PAGES, MEM_WRITE_WATCH, MEM_TOP_DOWN | MEM_WRITE_WATCH] {
            for addr in [0, fx.w + 2 * G] {
                let ty = MEM_PHYSICAL | MEM_RESERVE | extra;
                assert_eq!(code(&fx.alloc(addr, 2 << 20, ty, PAGE_READWRITE)), 87, "type {ty:#x} at {addr:#x}");
            }
        }
        assert_eq!(fx.snapshot(), before);
        assert_eq!(fx.space.stats().reservations, 0);
    }
}

/// On the simulated backend (2 MiB large pages by default) a valid large-page request
/// succeeds at a fixed aligned address too; with large pages switched off it fails with
/// ERROR_NO_SYSTEM_RESOURCES and reserves nothing.
#[test]
fn sim_large_pages_fixed_address_and_unavailable() {
    let fx = Fx::sim();
    let rc = MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES;
    assert_eq!(fx.alloc(fx.w, 4 << 20, rc, PAGE_READWRITE), Ok(fx.w));
    assert_eq!(fx.q(fx.w).region_size, 4 << 20);
    let fx = Fx::sim_with(virtmem::SimConfig { large_page_size: 0, ..Default::default() });
    assert_eq!(fx.space.system_info().large_page_size, 0);
    assert_eq!(code(&fx.alloc(fx.w, 2 << 20, rc, PAGE_READWRITE)), 1450);
    assert_eq!(code(&fx.alloc(0, 2 << 20, rc, PAGE_READWRITE)), 1450);
    assert_eq!(fx.space.stats().reservations, 0);
}
