//! Spec § PAGE_GUARD: one-shot, per page, on simulated (engine-checked) accesses.

use crate::backend_tests;
use crate::common::*;
use virtmem::{AccessKind, Error};

fn is_guard(r: Result<(), Error>, address: usize, access: AccessKind) -> bool {
    r == Err(Error::GuardPage { address, access })
}

fn is_av(r: Result<(), Error>, access: AccessKind) -> bool {
    matches!(r, Err(Error::AccessViolation { access: a, .. }) if a == access)
}

/// The three ways a page gets PAGE_GUARD: reserve+commit, a commit inside a
/// reservation, and VirtualProtect of a committed page.
fn arm(fx: &Fx, how: usize, off: usize, base: u32) -> usize {
    let p = base | PAGE_GUARD;
    match how {
        0 => fx.reserve_commit(off, 2 * P, p),
        1 => {
            let a = fx.reserve(off, 2 * P, PAGE_NOACCESS);
            fx.commit(a, 2 * P, p);
            a
        }
        _ => {
            let a = fx.reserve_commit(off, 2 * P, base);
            assert_eq!(fx.protect(a, 2 * P, p), Ok(base));
            a
        }
    }
}

backend_tests! {
    /// The first access of each kind raises STATUS_GUARD_PAGE_VIOLATION once and clears
    /// the guard bit of that page only; the retry succeeds.
    fn first_access_trips_the_guard_once(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_EXECUTE_READWRITE);
        fx.write(a + 2 * P, b"payload");
        fx.protect(a, 4 * P, PAGE_EXECUTE_READWRITE | PAGE_GUARD).unwrap();
        assert_eq!(fx.q(a).protect.bits(), PAGE_EXECUTE_READWRITE | PAGE_GUARD);
        // Read.
        let mut buf = [0u8; 7];
        assert!(is_guard(fx.space.read(a + 2 * P + 3, &mut buf[..1]), a + 2 * P + 3, AccessKind::Read));
        let e = fx.space.read(a + P, &mut buf[..1]).unwrap_err();
        assert_eq!(e.exception_code(), Some(0x8000_0001));
        assert_eq!(fx.q(a + 2 * P).protect.bits(), PAGE_EXECUTE_READWRITE, "disarmed");
        assert_eq!(fx.q(a).protect.bits(), PAGE_EXECUTE_READWRITE | PAGE_GUARD, "others stay armed");
        assert_eq!(fx.q(a + 3 * P).protect.bits(), PAGE_EXECUTE_READWRITE | PAGE_GUARD);
        fx.space.read(a + 2 * P, &mut buf).unwrap();
        assert_eq!(&buf, b"payload");
        // Write: faults first without writing anything, then succeeds.
        assert!(is_guard(fx.space.write(a, b"x"), a, AccessKind::Write));
        assert_eq!(fx.q(a).protect.bits(), PAGE_EXECUTE_READWRITE);
        fx.space.write(a, b"x").unwrap();
        // Execute.
        assert!(is_guard(fx.space.execute(a + 3 * P + 9, &mut buf[..2]), a + 3 * P + 9, AccessKind::Execute));
        fx.space.execute(a + 3 * P + 9, &mut buf[..2]).unwrap();
        assert_eq!(fx.walk(a..a + 4 * P).len(), 1, "every page disarmed: one region again");
        assert_eq!(fx.read_vec(a, 1), b"x");
    }

    /// A guard fault writes nothing; an access spanning several guard pages trips them
    /// one at a time, in address order.
    fn spanning_access_trips_one_guard_per_attempt(fx: &Fx) {
        let a = fx.reserve_commit(0, 3 * P, PAGE_READWRITE);
        fx.protect(a + P, 2 * P, PAGE_READWRITE | PAGE_GUARD).unwrap();
        let data = vec![0xEE; 2 * P];
        assert!(is_guard(fx.space.write(a + P / 2, &data), a + P, AccessKind::Write));
        assert_eq!(fx.read_vec(a + P / 2, P / 2), vec![0; P / 2], "nothing written before the guard page");
        assert!(is_guard(fx.space.write(a + P / 2, &data), a + 2 * P, AccessKind::Write));
        fx.space.write(a + P / 2, &data).unwrap();
        assert_eq!(fx.read_vec(a + P / 2, 2 * P), data);
    }

    /// After the guard, the base protection decides: a write to a READONLY guard page
    /// trips the guard, then faults with an access violation.
    fn base_protection_applies_after_the_guard(fx: &Fx) {
        let a = fx.reserve_commit(0, 2 * P, PAGE_READONLY | PAGE_GUARD);
        assert!(is_guard(fx.space.write(a, b"z"), a, AccessKind::Write));
        assert!(is_av(fx.space.write(a, b"z"), AccessKind::Write));
        assert!(is_guard(fx.space.execute(a + P, &mut [0]), a + P, AccessKind::Execute));
        assert!(is_av(fx.space.execute(a + P, &mut [0]), AccessKind::Execute));
        assert_eq!(fx.read_vec(a, 2 * P), vec![0; 2 * P]);
    }

    /// VirtualProtect re-arms; the old protection includes 0x100 while armed and not
    /// after the guard fired.
    fn protect_rearms_and_reports_the_guard_bit(fx: &Fx) {
        let a = fx.reserve_commit(0, P, PAGE_READWRITE | PAGE_GUARD);
        assert_eq!(fx.protect(a, P, PAGE_READWRITE | PAGE_GUARD), Ok(PAGE_READWRITE | PAGE_GUARD));
        assert!(fx.space.read(a, &mut [0]).is_err());
        assert_eq!(fx.protect(a, P, PAGE_READWRITE | PAGE_GUARD), Ok(PAGE_READWRITE), "fired: no guard bit");
        assert!(is_guard(fx.space.read(a, &mut [0]), a, AccessKind::Read), "re-armed");
        fx.space.read(a, &mut [0]).unwrap();
        // Commit with GUARD arms it as well.
        fx.commit(a, P, PAGE_READONLY | PAGE_GUARD);
        assert!(is_guard(fx.space.read(a, &mut [0]), a, AccessKind::Read));
    }

    /// Commit: "Pages already committed stay committed, keep their data and take the new
    /// protection" — for an armed guard page the new protection without PAGE_GUARD
    /// disarms it (no guard violation on the next access), and with it arms it again;
    /// the data is kept either way. A decommitted guard page recommitted without GUARD
    /// is a plain page.
    fn commit_over_a_guard_page_takes_the_new_protection(fx: &Fx) {
        let a = fx.reserve_commit(0, 2 * P, PAGE_READWRITE);
        fx.write(a, b"guarded");
        fx.protect(a, 2 * P, PAGE_READWRITE | PAGE_GUARD).unwrap();
        assert_eq!(fx.alloc(a, P, MEM_COMMIT, PAGE_READWRITE), Ok(a));
        assert_eq!(fx.q(a).protect.bits(), PAGE_READWRITE, "the commit's protection, no GUARD bit");
        assert_eq!(fx.q(a + P).protect.bits(), PAGE_READWRITE | PAGE_GUARD, "the page outside the commit stays armed");
        assert_eq!(fx.read_vec(a, 7), b"guarded", "no guard violation, data kept");
        assert_eq!(fx.alloc(a, P, MEM_COMMIT, PAGE_READONLY | PAGE_GUARD), Ok(a));
        assert!(is_guard(fx.space.read(a, &mut [0]), a, AccessKind::Read));
        assert_eq!(fx.read_vec(a, 7), b"guarded");
        // Decommit the armed page at a + P and recommit it without GUARD.
        fx.free(a + P, P, MEM_DECOMMIT).unwrap();
        fx.commit(a + P, P, PAGE_READWRITE);
        assert_eq!(fx.q(a + P).protect.bits(), PAGE_READWRITE);
        assert_eq!(fx.read_vec(a + P, 4), [0; 4]);
    }

    /// PAGE_GUARD on a MEM_LARGE_PAGES allocation: the first access raises the guard
    /// violation once and the retry succeeds ("the access can then be retried"). The guard
    /// is cleared on the whole large page, the unit every change of such an allocation
    /// acts on (on Linux a huge page has one protection: clearing it on 4 KiB of it
    /// failed, and every retry raised the violation again). The next large page stays
    /// armed; VirtualLock trips and clears a guard the same way.
    fn a_guard_on_a_large_page_trips_once(fx: &Fx) {
        let lp = fx.space.system_info().large_page_size;
        if lp == 0 {
            return;
        }
        let rc = MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES;
        let b = match fx.alloc(0, 2 * lp, rc, PAGE_READWRITE | PAGE_GUARD) {
            Ok(b) => b,
            Err(e) => return assert_eq!(e.code(), 1450, "large pages that cannot be had: {e}"),
        };
        let at = b + 3 * P + 10;
        assert!(is_guard(fx.space.read(at, &mut [0]), at, AccessKind::Read));
        fx.space.read(at, &mut [0]).expect("the retry succeeds");
        fx.write(b + lp - 1, &[1]);
        let m = fx.q(b);
        assert_eq!((m.region_size, m.protect.bits()), (lp, PAGE_READWRITE), "the whole large page disarmed");
        assert_eq!(fx.q(b + lp).protect.bits(), PAGE_READWRITE | PAGE_GUARD, "the next one still armed");
        assert_eq!(fx.space.lock(b + lp, 1), Err(Error::GuardPage { address: b + lp, access: AccessKind::Read }));
        fx.space.lock(b + lp, 1).expect("locking again succeeds");
        fx.space.unlock(b + lp, 1).unwrap();
        assert_eq!(fx.walk(b..b + 2 * lp).len(), 1, "both disarmed: one region");
        fx.free(b, 0, MEM_RELEASE).unwrap();
    }

    /// PAGE_GUARD with each base protection that takes it (READONLY, READWRITE, EXECUTE,
    /// EXECUTE_READ, EXECUTE_READWRITE), armed each of the three ways, and each kind of
    /// access: Protect reports base|0x100; the first access, whatever its kind, raises
    /// STATUS_GUARD_PAGE_VIOLATION and clears the guard on that page only (Protect is
    /// then the base, the other page stays armed); the retry succeeds exactly when the
    /// base protection allows the access, else it is an access violation, and a refused
    /// or guarded write writes nothing.
    fn guard_with_every_base_protection_and_every_access(fx: &Fx) {
        let bases = [PAGE_READONLY, PAGE_READWRITE, PAGE_EXECUTE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE];
        let kinds = [AccessKind::Read, AccessKind::Write, AccessKind::Execute];
        let access = |kind: AccessKind, at: usize| -> Result<(), Error> {
            match kind {
                AccessKind::Read => fx.space.read(at, &mut [0u8; 3]),
                AccessKind::Write => fx.space.write(at, &[0x5Au8; 3]),
                AccessKind::Execute => fx.space.execute(at, &mut [0u8; 3]),
            }
        };
        let mut off = 0;
        for base in bases {
            let prot = virtmem::Protection::from_bits_retain(base);
            for how in 0..3 {
                for kind in kinds {
                    let a = arm(fx, how, off, base);
                    off += G;
                    let what = format!("base {base:#x}, armed by {how}, {kind:?}");
                    assert_eq!(fx.q(a).protect.bits(), base | PAGE_GUARD, "{what}: Protect while armed");
                    assert_eq!(fx.q(a).region_size, 2 * P, "{what}");
                    let at = a + P - 1; // a 3-byte access from page 0 into page 1
                    assert!(is_guard(access(kind, at), at, kind), "{what}: first access");
                    assert_eq!(fx.q(a).protect.bits(), base, "{what}: disarmed");
                    assert_eq!(fx.q(a + P).protect.bits(), base | PAGE_GUARD, "{what}: the next page stays armed");
                    let allowed = match kind {
                        AccessKind::Read => prot.can_read(),
                        AccessKind::Write => prot.can_write(),
                        AccessKind::Execute => prot.can_execute(),
                    };
                    if allowed {
                        // The retry gets past page 0 and meets the second page's guard.
                        assert!(is_guard(access(kind, at), a + P, kind), "{what}: the second page's guard");
                        assert_eq!(access(kind, at), Ok(()), "{what}: the retry succeeds");
                        assert_eq!(fx.walk(a..a + 2 * P).len(), 1, "{what}: both disarmed, one region");
                    } else {
                        // The base refuses the access on page 0: the second page is not reached.
                        let retry = access(kind, at);
                        assert_eq!(retry, Err(Error::AccessViolation { address: at, access: kind }), "{what}");
                        assert_eq!(fx.q(a + P).protect.bits(), base | PAGE_GUARD, "{what}: page 1 still armed");
                    }
                    if base != PAGE_EXECUTE {
                        // Only the successful write wrote (page 1 may still be armed: look
                        // at page 0's byte alone then).
                        let (n, fill) = if allowed { (3, if kind == AccessKind::Write { 0x5A } else { 0 }) } else { (1, 0) };
                        assert_eq!(fx.read_vec(at, n), vec![fill; n], "{what}: contents");
                    }
                    fx.free(a, 0, MEM_RELEASE).unwrap();
                }
            }
        }
    }

    /// PAGE_NOCACHE and PAGE_WRITECOMBINE change no access: with each base protection a
    /// page allows exactly what its base allows (and reports the modifier).
    fn nocache_and_writecombine_allow_what_their_base_allows(fx: &Fx) {
        let bases = [PAGE_READONLY, PAGE_READWRITE, PAGE_EXECUTE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE];
        let mut off = 0;
        for base in bases {
            let prot = virtmem::Protection::from_bits_retain(base);
            for modifier in [PAGE_NOCACHE, PAGE_WRITECOMBINE] {
                let a = fx.reserve_commit(off, P, base | modifier);
                off += G;
                assert_eq!(fx.q(a).protect.bits(), base | modifier);
                let what = format!("{:#x}", base | modifier);
                assert_eq!(fx.space.read(a, &mut [0u8; 2]).is_ok(), prot.can_read(), "{what}: read");
                assert_eq!(fx.space.write(a, &[1u8; 2]).is_ok(), prot.can_write(), "{what}: write");
                assert_eq!(fx.space.execute(a, &mut [0u8; 2]).is_ok(), prot.can_execute(), "{what}: execute");
                assert_eq!(fx.q(a).protect.bits(), base | modifier, "{what}: unchanged by the accesses");
            }
        }
    }

    /// PAGE_GUARD in a PAGE_NOCACHE allocation: NOCACHE belongs to the allocation, so a
    /// committed or protected guard page reports base|GUARD|NOCACHE (0x304, as Wine 8
    /// reports; the spec is silent on the pair), the old protection says so too, and the
    /// first access disarms it to base|NOCACHE.
    fn guard_in_a_nocache_allocation_keeps_nocache(fx: &Fx) {
        let rw_nc = PAGE_READWRITE | PAGE_NOCACHE;
        let a = fx.reserve(0, 2 * P, rw_nc);
        fx.commit(a, P, PAGE_READWRITE | PAGE_GUARD);
        fx.commit(a + P, P, PAGE_READONLY);
        assert_eq!(fx.q(a).protect.bits(), rw_nc | PAGE_GUARD);
        assert_eq!(fx.protect(a + P, P, PAGE_READWRITE | PAGE_GUARD), Ok(PAGE_READONLY | PAGE_NOCACHE));
        assert_eq!(fx.protect(a + P, P, PAGE_READWRITE | PAGE_GUARD), Ok(rw_nc | PAGE_GUARD));
        assert_eq!(fx.q(a).region_size, 2 * P, "two equal guard pages are one region");
        assert!(is_guard(fx.space.read(a + P, &mut [0]), a + P, AccessKind::Read));
        assert_eq!(fx.q(a + P).protect.bits(), rw_nc);
        fx.space.write(a + P, b"nc").unwrap();
        assert_eq!(fx.q(a).protect.bits(), rw_nc | PAGE_GUARD, "the other page stays armed");
        assert_eq!(fx.q(a).allocation_protect.bits(), rw_nc);
    }
}
