//! Spec § VirtualProtect: argument checks, committed-only ranges, the old protection,
//! NOCACHE belonging to the allocation.

use crate::backend_tests;
use crate::common::*;
use virtmem::{win32, MemState, Protection};

/// `VirtualProtect` through the Win32 shape: (result, last error, *old_protect) with
/// `*old_protect` preset to a marker.
fn vp(fx: &Fx, address: usize, size: usize, new: u32) -> (i32, u32, u32) {
    let mut old = 0xDEAD_BEEF;
    win32::SetLastError(0);
    let r = win32::VirtualProtect(&*fx.space, address, size, new, Some(&mut old));
    (r, if r == 0 { win32::GetLastError() } else { 0 }, old)
}

backend_tests! {
    /// An address at or above the top of user space, or a range passing it or wrapping,
    /// is 87 (as for VirtualAlloc and VirtualQuery, and Windows' kernel); the same range
    /// below the top, in no reservation, stays 487. Nothing is reported as the old
    /// protection.
    fn an_address_past_the_top_is_87(fx: &Fx) {
        let top = fx.space.system_info().maximum_application_address + 1;
        let before = fx.snapshot();
        for (addr, size) in [(top, P), (top + G, 1), (usize::MAX & !(P - 1), P), (top - P, 2 * P), (top - P, usize::MAX)] {
            let r = fx.space.protect_detailed(addr, size, Protection::READWRITE);
            assert_eq!(r.map_err(|(e, old)| (e.code(), old)), Err((87, None)), "{addr:#x}+{size:#x}");
        }
        assert_eq!(code(&fx.protect(top - P, P, PAGE_READWRITE)), 487);
        assert_eq!(fx.snapshot(), before);
    }

    /// `old_protect` NULL → 998 and nothing changes.
    fn null_old_protect_is_998(fx: &Fx) {
        let a = fx.reserve_commit(0, 2 * P, PAGE_READWRITE);
        let before = fx.snapshot();
        win32::SetLastError(0);
        assert_eq!(win32::VirtualProtect(&*fx.space, a, P, PAGE_READONLY, None), 0);
        assert_eq!(win32::GetLastError(), 998);
        // Even with a bad protection or on free memory, 998 comes first.
        assert_eq!(win32::VirtualProtect(&*fx.space, a, P, PAGE_WRITECOPY, None), 0);
        assert_eq!(win32::GetLastError(), 998);
        assert_eq!(win32::VirtualProtect(&*fx.space, fx.w + 5 * G, P, PAGE_READONLY, None), 0);
        assert_eq!(win32::GetLastError(), 998);
        assert_eq!(fx.snapshot(), before);
    }

    /// `new_protect` is validated as for VirtualAlloc: every bad value → 87, nothing
    /// changes, `*old_protect` untouched. WRITECOPY and EXECUTE_WRITECOPY are among them.
    fn bad_new_protection_is_87(fx: &Fx) {
        let a = fx.reserve_commit(0, 2 * P, PAGE_READWRITE);
        let before = fx.snapshot();
        for p in BAD_PROTECTIONS {
            assert_eq!(vp(fx, a, 2 * P, p), (0, 87, 0xDEAD_BEEF), "protect {p:#x}");
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// A reserved page anywhere in the range → 487 with `*old_protect` = PAGE_NOACCESS;
    /// nothing changes, not even the committed pages before it.
    fn reserved_pages_in_the_range_are_487_with_old_noaccess(fx: &Fx) {
        let a = fx.reserve(0, 8 * P, PAGE_READWRITE);
        fx.commit(a, 3 * P, PAGE_READWRITE);
        fx.commit(a + 4 * P, 2 * P, PAGE_EXECUTE_READ);
        let before = fx.snapshot();
        for (addr, size) in [(a, 4 * P), (a + 2 * P, 3 * P), (a + 3 * P, 1), (a + 4 * P, 4 * P), (a, 8 * P), (a + 6 * P, 2 * P)] {
            assert_eq!(vp(fx, addr, size, PAGE_READONLY), (0, 487, PAGE_NOACCESS), "{addr:#x}+{size:#x}");
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// Free memory, past the reservation's end, or across two reservations → 487, and
    /// `*old_protect` is left as it was (the spec is silent here; Wine 8 leaves it alone
    /// too, though with 87).
    fn ranges_outside_one_reservation_are_487(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        let b = fx.reserve_commit(G, G, PAGE_READONLY);
        let _c = fx.reserve_commit(2 * G, G, PAGE_READWRITE);
        let before = fx.snapshot();
        for (addr, size, what) in [
            (fx.w + 5 * G, P, "free granule"),
            (a + 4 * P, P, "blocked tail"),
            (a + 3 * P, 2 * P, "past the end"),
            (a, 4 * P + 1, "one byte past the end"),
            (a, G, "past the end into the next reservation"),
            (b + G - P, 2 * P, "across two reservations"),
            (b, 2 * G, "two whole reservations"),
        ] {
            for new in [PAGE_READONLY, PAGE_EXECUTE_READ] {
                assert_eq!(vp(fx, addr, size, new), (0, 487, 0xDEAD_BEEF), "{what}, {new:#x}");
            }
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// Success: `*old_protect` is the protection of the first page only (GUARD bit
    /// included) and every touched page takes the new protection.
    fn old_protection_is_the_first_pages(fx: &Fx) {
        let a = fx.reserve_commit(0, 6 * P, PAGE_READWRITE);
        fx.protect(a + P, P, PAGE_READONLY).unwrap();
        fx.protect(a + 2 * P, P, PAGE_EXECUTE).unwrap();
        fx.protect(a + 3 * P, P, PAGE_READWRITE | PAGE_GUARD).unwrap();
        assert_eq!(vp(fx, a + 2, 4 * P, PAGE_EXECUTE_READ), (1, 0, PAGE_READWRITE));
        let m = fx.q(a);
        assert_eq!((m.protect.bits(), m.region_size), (PAGE_EXECUTE_READ, 5 * P), "2 bytes into page 0 + 4 pages = 5 pages");
        assert_eq!(fx.q(a + 5 * P).protect.bits(), PAGE_READWRITE);
        // Starting on a guard page reports the GUARD bit.
        fx.protect(a + 3 * P, P, PAGE_READONLY | PAGE_GUARD).unwrap();
        assert_eq!(vp(fx, a + 3 * P, 2 * P, PAGE_NOACCESS), (1, 0, PAGE_READONLY | PAGE_GUARD));
        // A 2-byte range straddling two pages changes both.
        assert_eq!(vp(fx, a + P - 1, 2, PAGE_READONLY), (1, 0, PAGE_EXECUTE_READ));
        let got: Vec<_> = fx.walk(a..a + 6 * P).iter().map(|m| (m.protect.bits(), m.region_size)).collect();
        assert_eq!(
            got,
            vec![(PAGE_READONLY, 2 * P), (PAGE_EXECUTE_READ, P), (PAGE_NOACCESS, 2 * P), (PAGE_READWRITE, P)]
        );
        // The typed call reports the same.
        assert_eq!(fx.protect(a, 6 * P, PAGE_READWRITE), Ok(PAGE_READONLY));
        assert_eq!(fx.q(a).region_size, 6 * P);
        assert_eq!(fx.q(a).state, MemState::Commit);
    }

    /// PAGE_NOCACHE belongs to the allocation: a reservation made with it keeps it on
    /// every VirtualProtect; one made without it silently drops a requested NOCACHE.
    fn nocache_belongs_to_the_allocation(fx: &Fx) {
        let nc = fx.reserve_commit(0, 2 * P, PAGE_READWRITE | PAGE_NOCACHE);
        assert_eq!(fx.q(nc).protect.bits(), PAGE_READWRITE | PAGE_NOCACHE);
        assert_eq!(vp(fx, nc, P, PAGE_READONLY), (1, 0, PAGE_READWRITE | PAGE_NOCACHE));
        assert_eq!(fx.q(nc).protect.bits(), PAGE_READONLY | PAGE_NOCACHE, "a request without NOCACHE keeps it");
        assert_eq!(vp(fx, nc, P, PAGE_EXECUTE_READ | PAGE_NOCACHE), (1, 0, PAGE_READONLY | PAGE_NOCACHE));
        assert_eq!(fx.q(nc).protect.bits(), PAGE_EXECUTE_READ | PAGE_NOCACHE);
        assert_eq!(fx.q(nc + P).protect.bits(), PAGE_READWRITE | PAGE_NOCACHE);
        // Pages committed later inside it get NOCACHE too.
        let nr = fx.reserve(G, 2 * P, PAGE_READWRITE | PAGE_NOCACHE);
        fx.commit(nr, P, PAGE_READONLY);
        assert_eq!(fx.q(nr).protect.bits(), PAGE_READONLY | PAGE_NOCACHE);

        let plain = fx.reserve_commit(2 * G, 2 * P, PAGE_READWRITE);
        assert_eq!(vp(fx, plain, P, PAGE_READONLY | PAGE_NOCACHE), (1, 0, PAGE_READWRITE));
        assert_eq!(fx.q(plain).protect, Protection::READONLY, "NOCACHE dropped");
        assert_eq!(vp(fx, plain, P, PAGE_READWRITE), (1, 0, PAGE_READONLY));
        assert_eq!(fx.q(plain).allocation_protect, Protection::READWRITE);
        assert_eq!(fx.q(nc).allocation_protect.bits(), PAGE_READWRITE | PAGE_NOCACHE);
    }

    /// VirtualProtect with size 0 → 87 and nothing changes (the spec is silent; Windows'
    /// NtProtectVirtualMemory rejects a zero region size, as it does for VirtualLock).
    fn zero_size_is_87(fx: &Fx) {
        let a = fx.reserve_commit(0, 2 * P, PAGE_READWRITE);
        let before = fx.snapshot();
        assert_eq!(vp(fx, a, 0, PAGE_READONLY), (0, 87, 0xDEAD_BEEF));
        assert_eq!(vp(fx, a + 5, 0, PAGE_READONLY), (0, 87, 0xDEAD_BEEF));
        assert_eq!(fx.snapshot(), before);
    }

    /// A size that wraps the address space is 87.
    fn wrapping_size_is_87(fx: &Fx) {
        let a = fx.reserve_commit(0, 2 * P, PAGE_READWRITE);
        let before = fx.snapshot();
        assert_eq!(vp(fx, a, usize::MAX, PAGE_READONLY).1, 87);
        assert_eq!(vp(fx, a + P, usize::MAX - a - P + 1, PAGE_READONLY).1, 87);
        assert_eq!(fx.snapshot(), before);
    }

    /// Spec, VirtualProtect: "NOCACHE belongs to the allocation: a reservation made with
    /// NOCACHE keeps it on every VirtualProtect (a request without it still reports it)".
    /// A PAGE_NOACCESS request is such a request: the page reports 0x201 (Protect and the
    /// next old protection; Wine 8 says the same), as after a NOACCESS commit in such an
    /// allocation. (The engine had exempted NOACCESS and reported 0x01.)
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

    /// "a reservation made with NOCACHE keeps it on every VirtualProtect" — a request with
    /// PAGE_WRITECOMBINE too: the two modifiers cannot go together, so NOCACHE stays and
    /// WRITECOMBINE goes, for a VirtualProtect and for a commit inside such a reservation
    /// (Wine 8 reports 0x204 for a READWRITE|WRITECOMBINE request in both cases). The
    /// engine had let WRITECOMBINE replace the allocation's NOCACHE.
    fn nocache_allocation_keeps_nocache_over_writecombine(fx: &Fx) {
        let (rw_nc, rw_wc) = (PAGE_READWRITE | PAGE_NOCACHE, PAGE_READWRITE | PAGE_WRITECOMBINE);
        let nc = fx.reserve_commit(0, 2 * P, rw_nc);
        assert_eq!(vp(fx, nc, P, rw_wc), (1, 0, rw_nc));
        assert_eq!(fx.q(nc).protect.bits(), rw_nc, "NOCACHE kept, WRITECOMBINE dropped");
        assert_eq!(fx.q(nc).region_size, 2 * P, "one region with the page beside it");
        assert_eq!(vp(fx, nc, P, PAGE_READONLY | PAGE_WRITECOMBINE), (1, 0, rw_nc));
        assert_eq!(fx.q(nc).protect.bits(), PAGE_READONLY | PAGE_NOCACHE);
        let nr = fx.reserve(G, 2 * P, rw_nc);
        fx.commit(nr, P, rw_wc);
        assert_eq!(fx.q(nr).protect.bits(), rw_nc, "a commit inside it too");
    }

    /// "`new_protect` validated as for VirtualAlloc (87)" is the first bullet, before the
    /// range rules (as VirtualAlloc checks its protection before the address space, and
    /// as Windows' NtProtectVirtualMemory rejects the protection mask first): a bad
    /// protection over reserved pages, free memory, past the end or across two
    /// reservations is 87 (not 487), `*old_protect` is left alone, nothing changes.
    fn bad_protection_is_87_before_the_range_is_looked_at(fx: &Fx) {
        let a = fx.reserve(0, 4 * P, PAGE_READWRITE);
        fx.commit(a, 2 * P, PAGE_READWRITE);
        let b = fx.reserve_commit(G, G, PAGE_READWRITE);
        let _c = fx.reserve_commit(2 * G, G, PAGE_READWRITE);
        let before = fx.snapshot();
        for p in [0, PAGE_WRITECOPY, PAGE_EXECUTE_WRITECOPY, PAGE_NOACCESS | PAGE_GUARD, PAGE_READONLY | PAGE_READWRITE] {
            for (addr, size, what) in [
                (a + 2 * P, P, "reserved page"),
                (a, 4 * P, "committed then reserved pages"),
                (fx.w + 6 * G, P, "free granule"),
                (a + 4 * P, P, "blocked tail"),
                (a + P, 4 * P, "past the end"),
                (b + G - P, 2 * P, "across two reservations"),
            ] {
                assert_eq!(vp(fx, addr, size, p), (0, 87, 0xDEAD_BEEF), "protect {p:#x}: {what}");
            }
        }
        assert_eq!(fx.snapshot(), before);
    }


    /// Validation order with every argument bad at once: a NULL `old_protect` (998) comes
    /// first, then the protection (87) before the size, the top of the user range and the
    /// state of the pages.
    fn validation_order_with_several_bad_arguments(fx: &Fx) {
        let a = fx.reserve(0, 4 * P, PAGE_READWRITE);
        let top = fx.space.system_info().maximum_application_address + 1;
        let before = fx.snapshot();
        for (addr, size) in [(a, 0), (top, P), (top - P, usize::MAX), (a, 2 * P), (fx.w + 5 * G, P), (0, P)] {
            for p in [0, PAGE_WRITECOPY, PAGE_READWRITE | 0x800] {
                win32::SetLastError(0);
                assert_eq!(win32::VirtualProtect(&*fx.space, addr, size, p, None), 0);
                assert_eq!(win32::GetLastError(), 998, "NULL old_protect first: {addr:#x}+{size:#x} {p:#x}");
                assert_eq!(vp(fx, addr, size, p), (0, 87, 0xDEAD_BEEF), "the protection next: {addr:#x}+{size:#x} {p:#x}");
            }
        }
        assert_eq!(vp(fx, a, 0, PAGE_READONLY).1, 87, "size 0 before the reserved pages");
        assert_eq!(vp(fx, top - P, 2 * P, PAGE_READONLY).1, 87, "the top before the (free) pages");
        assert_eq!(fx.snapshot(), before);
    }

    /// The spec makes only NOCACHE belong to the allocation: PAGE_WRITECOMBINE is the
    /// page's, like PAGE_GUARD. A reservation made with it (AllocationProtect keeps it)
    /// gives pages committed without it no WRITECOMBINE, a VirtualProtect without it drops
    /// it and one with it sets it, in any allocation. (Wine 8 drops WRITECOMBINE
    /// everywhere, AllocationProtect included; Windows supports it, and the spec lists it
    /// among the accepted values reported as given.)
    fn writecombine_belongs_to_the_page(fx: &Fx) {
        let rw_wc = PAGE_READWRITE | PAGE_WRITECOMBINE;
        let w = fx.reserve(0, 3 * P, rw_wc);
        fx.commit(w, P, PAGE_READONLY);
        fx.commit(w + P, P, rw_wc);
        assert_eq!(fx.q(w).protect.bits(), PAGE_READONLY);
        assert_eq!(fx.q(w + P).protect.bits(), rw_wc);
        assert_eq!(vp(fx, w + P, P, PAGE_READWRITE), (1, 0, rw_wc));
        assert_eq!(fx.q(w + P).protect.bits(), PAGE_READWRITE);
        assert_eq!(vp(fx, w, 2 * P, PAGE_EXECUTE_READ | PAGE_WRITECOMBINE), (1, 0, PAGE_READONLY));
        let m = fx.q(w);
        assert_eq!((m.protect.bits(), m.region_size), (PAGE_EXECUTE_READ | PAGE_WRITECOMBINE, 2 * P));
        assert_eq!(m.allocation_protect.bits(), rw_wc);
        let plain = fx.reserve_commit(G, 2 * P, PAGE_READWRITE);
        assert_eq!(vp(fx, plain, P, rw_wc), (1, 0, PAGE_READWRITE));
        assert_eq!(fx.q(plain).protect.bits(), rw_wc);
        assert_eq!(fx.q(plain).region_size, P);
        fx.write(plain, b"wc");
        assert_eq!(fx.read_vec(plain, 2), b"wc");
    }

    /// Rule 2 of VirtualAlloc, which VirtualProtect shares: "`protect` must be exactly one
    /// base protection ..., optionally with one of GUARD, NOCACHE, WRITECOMBINE";
    /// anything else is 87. The control-flow-guard bits PAGE_TARGETS_INVALID (for
    /// VirtualAlloc) and PAGE_TARGETS_NO_UPDATE (for VirtualProtect), both 0x40000000, are
    /// neither, with every executable base: 87 from both calls, `*old_protect` untouched
    /// and nothing reserved or changed.
    fn page_targets_bits_are_87(fx: &Fx) {
        const PAGE_TARGETS: u32 = 0x4000_0000;
        let a = fx.reserve_commit(0, 2 * P, PAGE_EXECUTE_READ);
        let before = fx.snapshot();
        for base in [PAGE_EXECUTE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE, PAGE_READWRITE] {
            let p = base | PAGE_TARGETS;
            for (ty, addr) in [(MEM_RESERVE | MEM_COMMIT, 0), (MEM_RESERVE, fx.w + 2 * G), (MEM_COMMIT, a)] {
                assert_eq!(code(&fx.alloc(addr, P, ty, p)), 87, "VirtualAlloc type {ty:#x} protect {p:#x}");
            }
            assert_eq!(vp(fx, a, P, p), (0, 87, 0xDEAD_BEEF), "VirtualProtect {p:#x}");
        }
        assert_eq!(fx.snapshot(), before);
        assert_eq!(fx.space.stats().reservations, 1);
    }
}
