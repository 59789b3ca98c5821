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
}
