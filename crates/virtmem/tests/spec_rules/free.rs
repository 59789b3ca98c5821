//! Spec § VirtualFree: free types, MEM_RELEASE and MEM_DECOMMIT with every address kind,
//! the 87 / 487 distinctions.

use crate::backend_tests;
use crate::common::*;
use virtmem::{MemState, Protection};

backend_tests! {
    /// An address at or above the top of user space, or a range passing it or wrapping,
    /// is 87, as for VirtualAlloc and VirtualQuery (Windows' kernel checks the address and
    /// size against its highest user address before it looks for memory; Wine too). The
    /// same range below the top, in no reservation, stays 487.
    fn an_address_past_the_top_is_87(fx: &Fx) {
        let top = fx.space.system_info().maximum_application_address + 1;
        let before = fx.snapshot();
        for addr in [top, top + 1, top + G, usize::MAX & !(P - 1), usize::MAX] {
            assert_eq!(code(&fx.free(addr, 0, MEM_RELEASE)), 87, "release {addr:#x}");
            assert_eq!(code(&fx.free(addr, 0, MEM_DECOMMIT)), 87, "decommit all {addr:#x}");
            assert_eq!(code(&fx.free(addr, P, MEM_DECOMMIT)), 87, "decommit {addr:#x}");
        }
        // Starting below the top, ending past it (or wrapping).
        assert_eq!(code(&fx.free(top - P, 2 * P, MEM_DECOMMIT)), 87);
        assert_eq!(code(&fx.free(top - P, usize::MAX, MEM_DECOMMIT)), 87);
        // Below the top, in no reservation of this space.
        assert_eq!(code(&fx.free(top - P, P, MEM_DECOMMIT)), 487);
        assert_eq!(code(&fx.free(top - P, 0, MEM_RELEASE)), 487);
        assert_eq!(fx.snapshot(), before);
    }

    /// free_type must be exactly MEM_DECOMMIT or MEM_RELEASE → otherwise 87.
    fn free_type_must_be_decommit_or_release(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        let before = fx.snapshot();
        for ty in [
            0,
            MEM_FREE,
            MEM_DECOMMIT | MEM_RELEASE,
            MEM_COMMIT,
            MEM_RESERVE,
            MEM_RELEASE | 1,
            MEM_DECOMMIT | MEM_RESET,
            MEM_RELEASE | MEM_COMMIT,
            0x8000_0000,
        ] {
            for (addr, size) in [(a, 0), (a, P), (a + P, P), (0, 0)] {
                assert_eq!(code(&fx.free(addr, size, ty)), 87, "type {ty:#x} {addr:#x}+{size:#x}");
            }
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// MEM_RELEASE: size must be 0 → otherwise 87, checked before the address.
    fn release_with_a_size_is_87_before_the_address(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        let before = fx.snapshot();
        for (addr, size) in [(a, 4 * P), (a, 1), (a + P, P), (fx.w + 8 * G, P), (a + 4 * P, P), (0, P)] {
            assert_eq!(code(&fx.free(addr, size, MEM_RELEASE)), 87, "{addr:#x}+{size:#x}");
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// MEM_RELEASE: any address in the first page releases the whole reservation,
    /// committed pages included.
    fn release_from_the_first_page_releases_everything(fx: &Fx) {
        for (i, off) in [0, 1, 0x123, P - 1].into_iter().enumerate() {
            let a = fx.reserve(i * G, 8 * P, PAGE_READWRITE);
            fx.commit(a + 2 * P, 3 * P, PAGE_READWRITE);
            fx.write(a + 2 * P, b"gone");
            assert_eq!(fx.free(a + off, 0, MEM_RELEASE), Ok(()), "offset {off:#x}");
            let m = fx.q(a);
            assert_eq!((m.state, m.allocation_base, m.protect), (MemState::Free, 0, Protection::NOACCESS));
            assert_eq!(fx.space.committed_bytes(), 0);
            assert_eq!(fx.space.reserved_bytes(), 0);
            // The granule can be reserved again and reads zero.
            assert_eq!(fx.alloc(a, 3 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE), Ok(a));
            assert_eq!(fx.read_vec(a + 2 * P, 4), [0; 4]);
            fx.free(a, 0, MEM_RELEASE).unwrap();
        }
    }

    /// MEM_RELEASE: an address inside a reservation but not in its first page, or in no
    /// reservation at all → 487; NULL → 87.
    fn release_elsewhere_is_487_and_null_is_87(fx: &Fx) {
        let a = fx.reserve(0, 4 * P, PAGE_READWRITE);
        fx.commit(a, 4 * P, PAGE_READWRITE);
        let before = fx.snapshot();
        for (addr, what) in [
            (a + P, "second page"),
            (a + 3 * P + 5, "last page"),
            (a + 4 * P, "hole after the end (blocked tail of the granule)"),
            (a + G - 1, "last byte of the granule"),
            (fx.w + 5 * G, "free granule"),
        ] {
            assert_eq!(code(&fx.free(addr, 0, MEM_RELEASE)), 487, "{what}");
        }
        assert_eq!(code(&fx.free(0, 0, MEM_RELEASE)), 87, "NULL");
        assert_eq!(fx.snapshot(), before);
        // A second release of the same base is 487.
        fx.free(a, 0, MEM_RELEASE).unwrap();
        assert_eq!(code(&fx.free(a, 0, MEM_RELEASE)), 487);
    }

    /// MEM_DECOMMIT with size 0: from the first page it decommits the whole allocation,
    /// which stays reserved; from anywhere else → 487.
    fn decommit_size_zero_needs_the_base(fx: &Fx) {
        let a = fx.reserve_commit(0, 6 * P, PAGE_READWRITE);
        fx.protect(a + 2 * P, P, PAGE_READONLY).unwrap();
        let before = fx.snapshot();
        for addr in [a + P, a + 5 * P, a + 6 * P, fx.w + 3 * G] {
            assert_eq!(code(&fx.free(addr, 0, MEM_DECOMMIT)), 487, "{addr:#x}");
        }
        assert_eq!(fx.snapshot(), before);
        assert_eq!(fx.free(a + 0x7FF, 0, MEM_DECOMMIT), Ok(()));
        let m = fx.q(a);
        assert_eq!((m.state, m.region_size, m.allocation_base), (MemState::Reserve, 6 * P, a));
        assert_eq!(m.protect, Protection::empty());
        assert_eq!((fx.space.committed_bytes(), fx.space.reserved_bytes()), (0, 6 * P));
        // Again on an all-reserved reservation: still fine.
        assert_eq!(fx.free(a, 0, MEM_DECOMMIT), Ok(()));
    }

    /// MEM_DECOMMIT with a size: every touched page is decommitted; reserved-only pages
    /// are fine; decommitted pages fault and recommit as zeros.
    fn decommit_range_touched_pages(fx: &Fx) {
        let a = fx.reserve_commit(0, 8 * P, PAGE_READWRITE);
        fx.write(a, &[0x5A; 8 * P]);
        // Two bytes straddling pages 1 and 2.
        assert_eq!(fx.free(a + 2 * P - 1, 2, MEM_DECOMMIT), Ok(()));
        let got: Vec<_> = fx.walk(a..a + 8 * P).iter().map(|m| (m.state, m.region_size)).collect();
        assert_eq!(got, vec![(MemState::Commit, P), (MemState::Reserve, 2 * P), (MemState::Commit, 5 * P)]);
        // Over reserved and committed pages alike.
        assert_eq!(fx.free(a + P, 3 * P, MEM_DECOMMIT), Ok(()));
        assert_eq!(fx.free(a + P, 2 * P, MEM_DECOMMIT), Ok(()), "reserved-only pages");
        assert_eq!(fx.space.committed_bytes(), 5 * P);
        // Access faults, recommit gives zeros.
        let e = fx.space.read(a + 2 * P, &mut [0; 1]).unwrap_err();
        assert_eq!(e.exception_code(), Some(0xC000_0005));
        let e = fx.space.write(a + P - 1, &[1, 1]).unwrap_err();
        assert_eq!(e.exception_code(), Some(0xC000_0005));
        assert_eq!(fx.read_vec(a + P - 1, 1), [0x5A], "the failed write wrote nothing");
        fx.commit(a, 8 * P, PAGE_READWRITE);
        let v = fx.read_vec(a, 8 * P);
        assert!(v[..P].iter().all(|&b| b == 0x5A));
        assert!(v[P..4 * P].iter().all(|&b| b == 0));
        assert!(v[4 * P..].iter().all(|&b| b == 0x5A));
    }

    /// MEM_DECOMMIT with a size: beyond the reservation's end or across two reservations
    /// → 87; a range in no reservation → 487.
    fn decommit_range_87_vs_487(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        let b = fx.reserve_commit(G, G, PAGE_READWRITE);
        let _c = fx.reserve_commit(2 * G, G, PAGE_READWRITE);
        let before = fx.snapshot();
        for (addr, size, want, what) in [
            (a, 4 * P + 1, 87, "one byte past the end"),
            (a + 3 * P, 2 * P, 87, "into the blocked tail"),
            (a, G + P, 87, "into the next reservation"),
            (b + G - P, 2 * P, 87, "across two adjacent reservations"),
            (b, 2 * G, 87, "two whole reservations"),
            (a + 4 * P, P, 487, "in the blocked tail"),
            (a + 4 * P, G, 487, "from the tail into the next reservation"),
            (fx.w + 6 * G, P, 487, "free granule"),
            (fx.w + 3 * G, 3 * G, 487, "free memory after the last reservation"),
        ] {
            assert_eq!(code(&fx.free(addr, size, MEM_DECOMMIT)), want, "{what}");
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// A size that wraps the address space is 87 for both free types.
    fn free_with_a_wrapping_size_is_87(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        let before = fx.snapshot();
        assert_eq!(code(&fx.free(a, usize::MAX, MEM_DECOMMIT)), 87);
        assert_eq!(code(&fx.free(a + P, usize::MAX - a, MEM_DECOMMIT)), 87);
        assert_eq!(code(&fx.free(a, usize::MAX, MEM_RELEASE)), 87);
        assert_eq!(fx.snapshot(), before);
    }

    /// VirtualFree(NULL, x, MEM_DECOMMIT): NULL is never an allocation; the call fails
    /// with 87 like MEM_RELEASE of NULL (the spec only speaks of MEM_RELEASE; Wine rejects
    /// a NULL base with 87 for both free types) and changes nothing.
    fn decommit_of_null_is_87(fx: &Fx) {
        let _a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        let before = fx.snapshot();
        assert_eq!(code(&fx.free(0, 0, MEM_DECOMMIT)), 87);
        assert_eq!(code(&fx.free(0, P, MEM_DECOMMIT)), 87);
        assert_eq!(fx.snapshot(), before);
    }

    /// "`free_type` must be exactly MEM_DECOMMIT or MEM_RELEASE": the placeholder flags
    /// of later Windows versions (MEM_COALESCE_PLACEHOLDERS 0x1, MEM_PRESERVE_PLACEHOLDER
    /// 0x2), which the spec does not list, make either type 87 (as Wine 8 answers), with
    /// every size and address kind; nothing changes.
    fn placeholder_flags_are_87(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        fx.write(a, b"kept");
        let before = fx.snapshot();
        for ty in [MEM_RELEASE | 1, MEM_RELEASE | 2, MEM_DECOMMIT | 1, MEM_DECOMMIT | 2, 1, 2, 3] {
            for (addr, size) in [(a, 0), (a, P), (a + P, P), (fx.w + 5 * G, 0)] {
                assert_eq!(code(&fx.free(addr, size, ty)), 87, "type {ty:#x} {addr:#x}+{size:#x}");
            }
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// Validation order with several bad arguments: the free type (87) before everything;
    /// for MEM_RELEASE the size (87) before the address, NULL or not the base (which alone
    /// would be 487); the top of the user range (87) before the reservations (487).
    fn validation_order_with_several_bad_arguments(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        let top = fx.space.system_info().maximum_application_address + 1;
        let before = fx.snapshot();
        for (addr, size) in [(a + P, 0), (fx.w + 5 * G, P), (top, 0), (a + 4 * P, usize::MAX)] {
            assert_eq!(code(&fx.free(addr, size, 0)), 87, "bad type: {addr:#x}+{size:#x}");
            assert_eq!(code(&fx.free(addr, size, MEM_DECOMMIT | MEM_RELEASE)), 87);
        }
        for addr in [a + P, a + 4 * P, fx.w + 5 * G, 0, top] {
            assert_eq!(code(&fx.free(addr, P, MEM_RELEASE)), 87, "release with a size at {addr:#x}");
        }
        // Alone, these addresses are 487.
        assert_eq!(code(&fx.free(a + P, 0, MEM_RELEASE)), 487);
        assert_eq!(code(&fx.free(fx.w + 5 * G, 0, MEM_RELEASE)), 487);
        // Past the top while also in no reservation: 87.
        assert_eq!(code(&fx.free(top - P, 2 * P, MEM_DECOMMIT)), 87);
        assert_eq!(code(&fx.free(top, 0, MEM_DECOMMIT)), 87);
        assert_eq!(fx.snapshot(), before);
    }

    /// MEM_DECOMMIT and MEM_RELEASE near the end of the address range: no rounding
    /// overflows. A range whose end rounds up past `usize::MAX` and one starting in the
    /// last page are 87; a release at the last address is 87.
    fn free_near_the_end_of_the_address_range_is_87(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        let before = fx.snapshot();
        for (addr, size) in [(a, usize::MAX - a), (a + 1, usize::MAX - a - 1), (usize::MAX - P + 1, P - 1), (usize::MAX, 0), (usize::MAX, 1)] {
            assert_eq!(code(&fx.free(addr, size, MEM_DECOMMIT)), 87, "decommit {addr:#x}+{size:#x}");
        }
        for addr in [usize::MAX, usize::MAX - P + 1] {
            assert_eq!(code(&fx.free(addr, 0, MEM_RELEASE)), 87, "release {addr:#x}");
        }
        assert_eq!(fx.snapshot(), before);
    }
}
