//! The commit limit (off by default): a commit that would exceed it fails with
//! ERROR_COMMITMENT_LIMIT (1455) and commits nothing; the space reports its committed and
//! reserved totals.

use crate::backend_tests;
use crate::common::*;
use virtmem::MemState;

backend_tests! {
    fn commit_limit_is_off_by_default_and_totals_are_reported(fx: &Fx) {
        assert_eq!(fx.space.commit_limit(), None);
        assert_eq!((fx.space.committed_bytes(), fx.space.reserved_bytes()), (0, 0));
        let a = fx.reserve(0, 10 * P, PAGE_READWRITE);
        fx.commit(a + 2 * P, 3 * P, PAGE_READWRITE);
        let b = fx.alloc(0, 3 * P + 1, MEM_COMMIT, PAGE_READONLY).unwrap();
        assert_eq!(fx.space.committed_bytes(), 3 * P + 4 * P);
        assert_eq!(fx.space.reserved_bytes(), 10 * P + 4 * P);
        let s = fx.space.stats();
        assert_eq!((s.committed, s.reserved, s.reservations), (7 * P, 14 * P, 2));
        fx.free(a + 3 * P, P, MEM_DECOMMIT).unwrap();
        assert_eq!(fx.space.committed_bytes(), 6 * P);
        fx.free(b, 0, MEM_RELEASE).unwrap();
        assert_eq!((fx.space.committed_bytes(), fx.space.reserved_bytes()), (2 * P, 10 * P));
        fx.free(a, 0, MEM_RELEASE).unwrap();
        assert_eq!((fx.space.committed_bytes(), fx.space.reserved_bytes()), (0, 0));
    }

    fn commit_beyond_the_limit_fails_with_1455_and_commits_nothing(fx: &Fx) {
        fx.space.set_commit_limit(Some(8 * P));
        assert_eq!(fx.space.commit_limit(), Some(8 * P));
        let a = fx.reserve(0, 16 * P, PAGE_READWRITE);
        fx.commit(a, 6 * P, PAGE_READWRITE);
        fx.write(a, b"kept");
        let before = fx.snapshot();
        // 3 new pages would make 9.
        assert_eq!(code(&fx.alloc(a + 6 * P, 3 * P, MEM_COMMIT, PAGE_READWRITE)), 1455);
        // A range mixing committed pages and 3 new pages: 3 new ones count.
        assert_eq!(code(&fx.alloc(a + 4 * P, 5 * P, MEM_COMMIT, PAGE_READONLY)), 1455);
        // New reservations that commit.
        assert_eq!(code(&fx.alloc(0, 3 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)), 1455);
        assert_eq!(code(&fx.alloc(0, 3 * P, MEM_COMMIT, PAGE_READWRITE)), 1455);
        assert_eq!(code(&fx.alloc(fx.w + 4 * G, 3 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)), 1455);
        assert_eq!(fx.snapshot(), before, "a commit over the limit changed something");
        assert_eq!(fx.space.stats().reservations, 1);
        // Reserving alone costs no commit.
        let r = fx.alloc(0, 100 * P, MEM_RESERVE, PAGE_READWRITE).unwrap();
        // Exactly up to the limit is fine; recommitting committed pages costs nothing.
        assert_eq!(fx.alloc(a + 4 * P, 4 * P, MEM_COMMIT, PAGE_READONLY), Ok(a + 4 * P));
        assert_eq!(fx.space.committed_bytes(), 8 * P);
        assert_eq!(fx.alloc(a, 8 * P, MEM_COMMIT, PAGE_READWRITE), Ok(a));
        assert_eq!(code(&fx.alloc(r, 1, MEM_COMMIT, PAGE_READWRITE)), 1455);
        // Decommit and release give the charge back.
        fx.free(a + 7 * P, P, MEM_DECOMMIT).unwrap();
        assert_eq!(fx.alloc(r, 1, MEM_COMMIT, PAGE_READWRITE), Ok(r));
        assert_eq!(code(&fx.alloc(r + P, 1, MEM_COMMIT, PAGE_READWRITE)), 1455);
        fx.free(a, 0, MEM_RELEASE).unwrap();
        assert_eq!(fx.alloc(r + P, 7 * P, MEM_COMMIT, PAGE_READWRITE), Ok(r + P));
        assert_eq!(fx.space.committed_bytes(), 8 * P);
        assert_eq!(fx.read_vec(r + 7 * P, 1), [0]);
    }

    fn limit_changes_apply_to_later_commits_only(fx: &Fx) {
        let a = fx.reserve_commit(0, 8 * P, PAGE_READWRITE);
        fx.space.set_commit_limit(Some(4 * P));
        // Already committed pages stay committed; nothing more can be committed.
        assert_eq!(fx.q(a).state, MemState::Commit);
        assert_eq!(fx.space.committed_bytes(), 8 * P);
        assert_eq!(code(&fx.alloc(0, P, MEM_COMMIT, PAGE_READWRITE)), 1455);
        // Reserving costs no commit: it works even over the limit.
        let r = fx.alloc(0, 4 * P, MEM_RESERVE, PAGE_READWRITE).unwrap();
        fx.free(r, 0, MEM_RELEASE).unwrap();
        // Recommit of committed pages adds nothing, so it works even over the limit.
        assert_eq!(fx.alloc(a, 8 * P, MEM_COMMIT, PAGE_READONLY), Ok(a));
        fx.free(a, 6 * P, MEM_DECOMMIT).unwrap();
        assert_eq!(fx.alloc(0, 2 * P, MEM_COMMIT, PAGE_READWRITE).map(|_| ()), Ok(()));
        assert_eq!(code(&fx.alloc(0, P, MEM_COMMIT, PAGE_READWRITE)), 1455);
        fx.space.set_commit_limit(None);
        assert_eq!(fx.space.commit_limit(), None);
        assert!(fx.alloc(0, 64 * P, MEM_COMMIT, PAGE_READWRITE).is_ok());
    }

    /// Argument and address errors are reported before the commit limit.
    fn argument_errors_come_before_the_commit_limit(fx: &Fx) {
        fx.space.set_commit_limit(Some(P));
        let a = fx.reserve(0, 4 * P, PAGE_READWRITE);
        assert_eq!(code(&fx.alloc(a, 4 * P, MEM_COMMIT, PAGE_READWRITE)), 1455);
        assert_eq!(code(&fx.alloc(a, 4 * P, MEM_COMMIT, PAGE_WRITECOPY)), 87);
        assert_eq!(code(&fx.alloc(a, 4 * P, MEM_COMMIT | MEM_RESET, PAGE_READWRITE)), 87);
        assert_eq!(code(&fx.alloc(a, 5 * P, MEM_COMMIT, PAGE_READWRITE)), 487);
        assert_eq!(code(&fx.alloc(fx.w + 4 * G, 4 * P, MEM_COMMIT, PAGE_READWRITE)), 487);
        assert_eq!(code(&fx.alloc(a, 4 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)), 487);
        assert_eq!(fx.space.committed_bytes(), 0);
    }

    /// At the commit limit, calls that charge nothing still work: MEM_RESET and
    /// MEM_RESET_UNDO, VirtualProtect (GUARD included), recommitting committed pages with
    /// another protection, decommitting reserved-only pages (which refunds nothing: the
    /// next new page is still over the limit) and reserving.
    fn calls_that_charge_nothing_work_at_the_limit(fx: &Fx) {
        let a = fx.reserve(0, 8 * P, PAGE_READWRITE);
        fx.commit(a, 4 * P, PAGE_READWRITE);
        fx.write(a, b"limit");
        fx.space.set_commit_limit(Some(4 * P));
        assert_eq!(code(&fx.alloc(a + 4 * P, P, MEM_COMMIT, PAGE_READWRITE)), 1455);
        assert!(fx.alloc(a, 8 * P, MEM_RESET, PAGE_READWRITE).is_ok());
        let _ = fx.alloc(a, 8 * P, MEM_RESET_UNDO, PAGE_READWRITE);
        assert_eq!(fx.protect(a, 4 * P, PAGE_READONLY | PAGE_GUARD), Ok(PAGE_READWRITE));
        assert_eq!(fx.alloc(a, 4 * P, MEM_COMMIT, PAGE_EXECUTE_READWRITE), Ok(a));
        assert_eq!(fx.free(a + 4 * P, 4 * P, MEM_DECOMMIT), Ok(()));
        assert_eq!(fx.space.committed_bytes(), 4 * P, "decommitting reserved pages refunds nothing");
        assert_eq!(code(&fx.alloc(a + 4 * P, P, MEM_COMMIT, PAGE_READWRITE)), 1455);
        let r = fx.alloc(0, G, MEM_RESERVE, PAGE_READWRITE).unwrap();
        assert_eq!(fx.q(r).state, MemState::Reserve);
        assert_eq!(fx.q(a).protect.bits(), PAGE_EXECUTE_READWRITE);
        // A commit over committed and reserved pages is charged for the reserved ones
        // only: one page back makes exactly that one fit, not two.
        fx.free(a + 3 * P, P, MEM_DECOMMIT).unwrap();
        assert_eq!(code(&fx.alloc(a + 2 * P, 3 * P, MEM_COMMIT, PAGE_READWRITE)), 1455);
        assert_eq!(fx.alloc(a + 2 * P, 2 * P, MEM_COMMIT, PAGE_READWRITE), Ok(a + 2 * P));
        assert_eq!(fx.space.committed_bytes(), 4 * P);
    }

    /// A MEM_LARGE_PAGES allocation is charged like any other commit: beyond the limit it
    /// is 1455 and reserves nothing (where the space has large pages at all; without, the
    /// clearer "no large pages" error comes first: the request could never succeed).
    fn large_pages_beyond_the_limit(fx: &Fx) {
        let lp = fx.space.system_info().large_page_size;
        fx.space.set_commit_limit(Some(P));
        let before = fx.snapshot();
        let r = fx.alloc(0, lp.max(2 << 20), MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE);
        let want = if lp == 0 { 1450 } else { 1455 };
        // (A backend with large pages it cannot get right now says 1450 as well.)
        assert!(code(&r) == want || code(&r) == 1450, "{r:x?}");
        assert_eq!(fx.snapshot(), before);
        assert_eq!(fx.space.stats().reservations, 0);
    }
}
