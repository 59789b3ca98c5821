//! Spec § VirtualAlloc MEM_RESET / MEM_RESET_UNDO.

use crate::backend_tests;
use crate::common::*;
use virtmem::{MemState, ResetPolicy, SimConfig};

backend_tests! {
    /// MEM_RESET keeps state and protection; committed contents become unchanged or zero
    /// (per page); reserved-only pages are fine.
    fn reset_keeps_state_and_protection(fx: &Fx) {
        let a = fx.reserve(0, 8 * P, PAGE_READWRITE);
        fx.commit(a, 2 * P, PAGE_READWRITE);
        fx.commit(a + 4 * P, 2 * P, PAGE_EXECUTE_READWRITE);
        fx.write(a, &[0x11; 2 * P]);
        fx.write(a + 4 * P, &[0x22; 2 * P]);
        let walk = fx.walk(a..a + 8 * P);
        // Whole range (mixed states), with a protection value the call then ignores.
        assert!(fx.alloc(a, 8 * P, MEM_RESET, PAGE_NOACCESS).is_ok());
        assert_eq!(fx.walk(a..a + 8 * P), walk, "state and protection unchanged");
        for (page, fill) in [(a, 0x11), (a + P, 0x11), (a + 4 * P, 0x22), (a + 5 * P, 0x22)] {
            let v = fx.read_vec(page, P);
            assert!(v.iter().all(|&b| b == fill) || v.iter().all(|&b| b == 0), "page {page:#x}: unchanged or zero");
        }
        // Reserved-only pages.
        assert!(fx.alloc(a + 2 * P, 2 * P, MEM_RESET, PAGE_READWRITE).is_ok());
        assert!(fx.alloc(a + 7 * P + 1, 1, MEM_RESET, PAGE_READONLY).is_ok());
        assert_eq!(fx.walk(a..a + 8 * P), walk);
        assert_eq!(fx.space.committed_bytes(), 4 * P);
        // The pages stay usable.
        fx.write(a, b"again");
        assert_eq!(fx.read_vec(a, 5), b"again");
    }

    /// MEM_RESET needs the range inside one reservation, else 487.
    fn reset_outside_one_reservation_is_487(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        let b = fx.reserve_commit(G, G, PAGE_READWRITE);
        fx.write(a, b"keep");
        let before = fx.snapshot();
        for ty in [MEM_RESET, MEM_RESET_UNDO] {
            for (addr, size, what) in [
                (fx.w + 5 * G, P, "free granule"),
                (a + 4 * P, P, "blocked tail"),
                (a + 3 * P, 2 * P, "past the end"),
                (b + G - P, 2 * P, "across two reservations"),
            ] {
                assert_eq!(code(&fx.alloc(addr, size, ty, PAGE_READWRITE)), 487, "type {ty:#x}: {what}");
            }
        }
        assert_eq!(fx.snapshot(), before);
        assert_eq!(fx.read_vec(a, 4), b"keep");
    }

    /// MEM_RESET_UNDO after MEM_RESET: success means every byte is intact; a failure
    /// means some data was lost and reads zero.
    fn reset_undo_success_means_data_intact(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        let pattern: Vec<u8> = (0..4 * P).map(|i| (i % 251) as u8 + 1).collect();
        fx.write(a, &pattern);
        fx.alloc(a, 4 * P, MEM_RESET, PAGE_READWRITE).unwrap();
        // A write after the reset does not make the rest of its page intact again.
        let mut pattern = pattern;
        fx.write(a + P + 100, &[0xAB]);
        pattern[P + 100] = 0xAB;
        match fx.alloc(a, 4 * P, MEM_RESET_UNDO, PAGE_READWRITE) {
            Ok(_) => assert_eq!(fx.read_vec(a, 4 * P), pattern, "undo succeeded: all data intact"),
            Err(e) => {
                assert_ne!(e.code(), 87);
                assert_ne!(e.code(), 487);
                let v = fx.read_vec(a, 4 * P);
                let lost = (0..4).filter(|i| v[i * P..(i + 1) * P].iter().all(|&b| b == 0)).count();
                assert!(lost > 0, "undo failed ({e}) but no page was zeroed");
                for i in 0..4 {
                    let page = &v[i * P..(i + 1) * P];
                    let written = i == 1 && page[100] == 0xAB && page.iter().filter(|&&b| b != 0).count() == 1;
                    assert!(page == &pattern[i * P..(i + 1) * P] || page.iter().all(|&b| b == 0) || written);
                }
            }
        }
        assert_eq!(fx.q(a).state, MemState::Commit);
        // An undo without a reset before it loses nothing.
        let b = fx.reserve_commit(G, P, PAGE_READWRITE);
        fx.write(b, b"fresh");
        assert!(fx.alloc(b, P, MEM_RESET_UNDO, PAGE_READWRITE).is_ok());
        assert_eq!(fx.read_vec(b, 5), b"fresh");
    }

    /// Spec, MEM_RESET_UNDO: "on a range that MEM_RESET was applied to, success means all
    /// data is intact; failure means some of it was lost (zeroed)." Here nothing is lost:
    /// the program writes to the first bytes of a page after the reset. (The Linux backend
    /// had kept one witness word per reset page, the first non-zero one, and reported a
    /// loss, ERROR_BUSY, whenever it changed; it keeps one per quarter of the page now.)
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

    /// MEM_RESET: "the range ... keeps its state and protection" — the GUARD bit is part
    /// of the protection, so an armed guard page stays armed (Protect still base|0x100,
    /// the next access still raises STATUS_GUARD_PAGE_VIOLATION once) and a NOACCESS page
    /// still faults; MEM_RESET_UNDO changes no protection either.
    fn reset_keeps_guard_and_noaccess_pages_as_they_were(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        fx.write(a, &[0x61; 4 * P]);
        fx.protect(a + P, P, PAGE_READWRITE | PAGE_GUARD).unwrap();
        fx.protect(a + 2 * P, P, PAGE_NOACCESS).unwrap();
        fx.protect(a + 3 * P, P, PAGE_READONLY | PAGE_GUARD).unwrap();
        let walk = fx.walk(a..a + 4 * P);
        assert!(fx.alloc(a, 4 * P, MEM_RESET, PAGE_READWRITE).is_ok());
        assert_eq!(fx.walk(a..a + 4 * P), walk, "MEM_RESET changed a state or protection");
        let _ = fx.alloc(a, 4 * P, MEM_RESET_UNDO, PAGE_READWRITE);
        assert_eq!(fx.walk(a..a + 4 * P), walk, "MEM_RESET_UNDO changed a state or protection");
        assert_eq!(fx.q(a + P).protect.bits(), PAGE_READWRITE | PAGE_GUARD);
        let e = fx.space.read(a + P + 8, &mut [0]).unwrap_err();
        assert_eq!(e.exception_code(), Some(0x8000_0001), "the guard page is still armed after MEM_RESET: {e}");
        let v = fx.read_vec(a + P, P);
        assert!(v.iter().all(|&b| b == 0x61) || v.iter().all(|&b| b == 0), "unchanged or zero");
        let e = fx.space.read(a + 2 * P, &mut [0]).unwrap_err();
        assert_eq!(e.exception_code(), Some(0xC000_0005), "the NOACCESS page still faults: {e}");
        let e = fx.space.write(a + 3 * P, &[1]).unwrap_err();
        assert_eq!(e.exception_code(), Some(0x8000_0001), "the read-only guard page is still armed: {e}");
        let e = fx.space.write(a + 3 * P, &[1]).unwrap_err();
        assert_eq!(e.exception_code(), Some(0xC000_0005), "and still read-only: {e}");
    }

    /// Validation rule 3, "An address below 0x10000 ... → 87", for MEM_RESET and
    /// MEM_RESET_UNDO at a NULL address (which, unlike a reserve, names no address the
    /// implementation could choose): 87, nothing changes.
    fn reset_at_a_null_address_is_87(fx: &Fx) {
        let a = fx.reserve_commit(0, 2 * P, PAGE_READWRITE);
        fx.write(a, b"keep");
        let before = fx.snapshot();
        for ty in [MEM_RESET, MEM_RESET_UNDO] {
            for size in [1, P, 2 * P] {
                let r = fx.alloc(0, size, ty, PAGE_READWRITE);
                assert_eq!(code(&r), 87, "VirtualAlloc(NULL, {size:#x}, {ty:#x}) = {r:x?}");
            }
        }
        assert_eq!(fx.snapshot(), before);
    }

    /// MEM_RESET over a range holding every kind of run (reserved, read-write, read-only,
    /// NOACCESS, guard, execute, decommitted), starting and ending on reserved pages, with
    /// every accepted protection value: each call succeeds, returns the first page, and
    /// changes no state or protection (a GUARD or NOACCESS value arms or blocks nothing:
    /// the value is checked, then ignored); committed pages keep their data or read zero.
    fn reset_over_every_kind_of_run_ignores_the_protection(fx: &Fx) {
        let a = fx.reserve(0, 9 * P, PAGE_READWRITE);
        fx.commit(a + P, 6 * P, PAGE_READWRITE);
        fx.write(a + P, &vec![0x42; 6 * P]);
        fx.protect(a + 2 * P, P, PAGE_READONLY).unwrap();
        fx.protect(a + 3 * P, P, PAGE_NOACCESS).unwrap();
        fx.protect(a + 4 * P, P, PAGE_READWRITE | PAGE_GUARD).unwrap();
        fx.protect(a + 5 * P, P, PAGE_EXECUTE_READ).unwrap();
        fx.free(a + 6 * P, P, MEM_DECOMMIT).unwrap();
        let walk = fx.walk(a..a + 9 * P);
        for p in valid_protections() {
            assert_eq!(fx.alloc(a + 5, 9 * P - 5, MEM_RESET, p), Ok(a), "MEM_RESET with {p:#x}");
            assert_eq!(fx.walk(a..a + 9 * P), walk, "MEM_RESET with {p:#x} changed a state or protection");
            let _ = fx.alloc(a, 9 * P, MEM_RESET_UNDO, p);
            assert_eq!(fx.walk(a..a + 9 * P), walk, "MEM_RESET_UNDO with {p:#x} changed a state or protection");
        }
        for page in [a + P, a + 2 * P, a + 5 * P] {
            let v = fx.read_vec(page, P);
            assert!(v.iter().all(|&b| b == 0x42) || v.iter().all(|&b| b == 0), "page {page:#x}: unchanged or zero");
        }
        assert_eq!(fx.space.read(a + 4 * P, &mut [0]).unwrap_err().exception_code(), Some(0x8000_0001));
        assert_eq!(fx.space.read(a + 3 * P, &mut [0]).unwrap_err().exception_code(), Some(0xC000_0005));
        assert_eq!(fx.space.committed_bytes(), 5 * P);
    }

    /// MEM_RESET_UNDO after the reset pages were made read-only: "success means all data
    /// is intact; failure means some of it was lost (zeroed)" — either answer, but a true
    /// one, and the protection stays read-only.
    fn reset_undo_of_pages_made_read_only_tells_the_truth(fx: &Fx) {
        let a = fx.reserve_commit(0, 2 * P, PAGE_READWRITE);
        let pattern: Vec<u8> = (0..2 * P).map(|i| (i % 253) as u8 + 1).collect();
        fx.write(a, &pattern);
        fx.alloc(a, 2 * P, MEM_RESET, PAGE_READWRITE).unwrap();
        fx.protect(a, 2 * P, PAGE_READONLY).unwrap();
        let r = fx.alloc(a, 2 * P, MEM_RESET_UNDO, PAGE_READWRITE);
        let v = fx.read_vec(a, 2 * P);
        match r {
            Ok(b) => {
                assert_eq!(b, a);
                assert_eq!(v, pattern, "undo succeeded: all data intact");
            }
            Err(e) => {
                assert!(![87, 487].contains(&e.code()), "{e}");
                let zeroed = (0..2).any(|i| v[i * P..(i + 1) * P].iter().all(|&b| b == 0));
                assert!(zeroed, "undo failed ({e}) but no page reads zero");
                for i in 0..2 {
                    let page = &v[i * P..(i + 1) * P];
                    assert!(page == &pattern[i * P..(i + 1) * P] || page.iter().all(|&b| b == 0), "page {i}");
                }
            }
        }
        assert_eq!(fx.q(a).protect.bits(), PAGE_READONLY);
        assert_eq!(fx.q(a).region_size, 2 * P);
    }

    /// MEM_RESET_UNDO applies to what MEM_RESET was applied to: pages reset, then
    /// decommitted and recommitted (fresh zero pages) and written again, were never reset
    /// since; an undo succeeds and keeps what was written after the recommit, also once the
    /// OS took the pages the reset had offered; the same for a reservation released after
    /// its reset and made again at the same address.
    fn reset_undo_after_decommit_or_release_loses_nothing_new(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        fx.write(a, &vec![0x17; 4 * P]);
        fx.alloc(a, 4 * P, MEM_RESET, PAGE_READWRITE).unwrap();
        fx.free(a + P, 2 * P, MEM_DECOMMIT).unwrap();
        fx.commit(a + P, 2 * P, PAGE_READWRITE);
        fx.write(a + P, &vec![0x29; 2 * P]);
        assert_eq!(fx.alloc(a + P, 2 * P, MEM_RESET_UNDO, PAGE_READWRITE), Ok(a + P));
        assert_eq!(fx.read_vec(a + P, 2 * P), vec![0x29; 2 * P]);
        fx.free(a, 0, MEM_RELEASE).unwrap();
        let b = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        assert_eq!(b, a);
        fx.write(b, &vec![0x31; 4 * P]);
        assert_eq!(fx.alloc(b, 4 * P, MEM_RESET_UNDO, PAGE_READWRITE), Ok(b), "a new reservation was never reset");
        assert_eq!(fx.read_vec(b, 4 * P), vec![0x31; 4 * P]);
    }
}

/// The two simulated reset policies: `Keep` keeps data and undo succeeds; `Discard`
/// zeroes the data at once and undo reports the loss (ERROR_BUSY, as
/// ReclaimVirtualMemory does), without touching state or protection.
#[test]
fn sim_reset_policies() {
    let fx = Fx::sim_with(SimConfig { reset_policy: ResetPolicy::Keep, ..Default::default() });
    let a = fx.reserve_commit(0, 2 * P, PAGE_READWRITE);
    fx.write(a, &[9; 2 * P]);
    fx.alloc(a, 2 * P, MEM_RESET, PAGE_READWRITE).unwrap();
    assert_eq!(fx.read_vec(a, 2 * P), vec![9; 2 * P]);
    assert!(fx.alloc(a, 2 * P, MEM_RESET_UNDO, PAGE_READWRITE).is_ok());

    let fx = Fx::sim_with(SimConfig { reset_policy: ResetPolicy::Discard, ..Default::default() });
    let a = fx.reserve_commit(0, 3 * P, PAGE_READWRITE);
    fx.write(a, &[9; P]);
    fx.write(a + 2 * P, &[7; P]);
    let walk = fx.walk_window();
    fx.alloc(a, 2 * P, MEM_RESET, PAGE_READWRITE).unwrap();
    assert_eq!(fx.walk_window(), walk);
    assert_eq!(fx.read_vec(a, P), vec![0; P], "discarded");
    assert_eq!(fx.read_vec(a + 2 * P, P), vec![7; P], "outside the reset range");
    assert_eq!(code(&fx.alloc(a, 2 * P, MEM_RESET_UNDO, PAGE_READWRITE)), 170);
    assert_eq!(fx.read_vec(a, P), vec![0; P]);
    // A write after the reset does not hide the loss of the rest of the page.
    fx.write(a + 2 * P, &[7; P]);
    fx.alloc(a + 2 * P, P, MEM_RESET, PAGE_READWRITE).unwrap();
    fx.write(a + 2 * P + 5, &[1]);
    assert_eq!(code(&fx.alloc(a + 2 * P, P, MEM_RESET_UNDO, PAGE_READWRITE)), 170);
    // The loss is reported once; a page that only held zeros loses nothing.
    assert!(fx.alloc(a, 2 * P, MEM_RESET_UNDO, PAGE_READWRITE).is_ok());
    fx.write(a + P, &[0; 64]);
    fx.alloc(a + P, P, MEM_RESET, PAGE_READWRITE).unwrap();
    assert!(fx.alloc(a + P, P, MEM_RESET_UNDO, PAGE_READWRITE).is_ok());
}

/// As [`reset_undo_after_decommit_or_release_loses_nothing_new`], on a simulated space
/// whose resets drop the data at once (the OS needing the memory at the reset itself).
#[test]
fn sim_discarding_reset_undo_after_decommit_or_release_loses_nothing_new() {
    reset_undo_after_decommit_or_release_loses_nothing_new(&Fx::sim_with(SimConfig {
        reset_policy: ResetPolicy::Discard,
        ..Default::default()
    }));
}

/// As [`reset_undo_of_pages_made_read_only_tells_the_truth`], with resets that drop data.
#[test]
fn sim_discarding_reset_undo_of_pages_made_read_only_tells_the_truth() {
    reset_undo_of_pages_made_read_only_tells_the_truth(&Fx::sim_with(SimConfig {
        reset_policy: ResetPolicy::Discard,
        ..Default::default()
    }));
}
