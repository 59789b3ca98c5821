//! VirtualLock / VirtualUnlock. The spec does not list their rules; these tests pin the
//! Windows kernel's behaviour (NtLockVirtualMemory / NtUnlockVirtualMemory): a zero size
//! is 87; locking needs every page committed and accessible (998 otherwise, free memory
//! included); unlocking needs every page locked (158 otherwise, whatever the page).

use crate::backend_tests;
use crate::common::*;
use virtmem::win32;

fn lock(fx: &Fx, a: usize, n: usize) -> u32 {
    code(&fx.space.lock(a, n))
}

fn unlock(fx: &Fx, a: usize, n: usize) -> u32 {
    code(&fx.space.unlock(a, n))
}

backend_tests! {
    fn lock_and_unlock_committed_pages(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        fx.write(a, b"locked");
        let walk = fx.walk_window();
        assert_eq!(lock(fx, a + P - 1, 2), 0, "2 bytes: pages 0 and 1");
        assert_eq!(fx.walk_window(), walk, "locking changes no page attribute");
        assert_eq!(unlock(fx, a, 2 * P), 0);
        assert_eq!(unlock(fx, a, P), 158, "already unlocked");
        // Locked pages can be locked again; read-only and execute pages can be locked.
        fx.protect(a + 2 * P, P, PAGE_READONLY).unwrap();
        fx.protect(a + 3 * P, P, PAGE_EXECUTE).unwrap();
        assert_eq!(lock(fx, a, 4 * P), 0);
        assert_eq!(lock(fx, a, P), 0);
        assert_eq!(unlock(fx, a, 4 * P), 0);
        assert_eq!(fx.read_vec(a, 6), b"locked");
        // The Win32 shape: BOOL and last error.
        assert_eq!(win32::VirtualLock(&*fx.space, a, P), 1);
        assert_eq!(win32::VirtualUnlock(&*fx.space, a, P), 1);
        assert_eq!(win32::VirtualUnlock(&*fx.space, a, P), 0);
        assert_eq!(win32::GetLastError(), 158);
    }

    fn lock_needs_committed_accessible_pages(fx: &Fx) {
        let a = fx.reserve(0, 4 * P, PAGE_READWRITE);
        fx.commit(a, 2 * P, PAGE_READWRITE);
        fx.protect(a + P, P, PAGE_NOACCESS).unwrap();
        assert_eq!(lock(fx, a + 2 * P, P), 998, "reserved page");
        assert_eq!(lock(fx, a, 3 * P), 998, "reserved page at the end");
        assert_eq!(lock(fx, a + P, P), 998, "PAGE_NOACCESS page");
        assert_eq!(lock(fx, fx.w + 5 * G, P), 998, "free memory");
        assert_eq!(lock(fx, a + 4 * P, P), 998, "blocked tail of the granule");
        // Nothing was locked by the failures.
        assert_eq!(unlock(fx, a, P), 158);
    }

    fn unlock_needs_locked_pages(fx: &Fx) {
        let a = fx.reserve(0, 4 * P, PAGE_READWRITE);
        fx.commit(a, 3 * P, PAGE_READWRITE);
        assert_eq!(unlock(fx, a, P), 158, "committed, never locked");
        assert_eq!(unlock(fx, a + 3 * P, P), 158, "reserved");
        assert_eq!(unlock(fx, fx.w + 5 * G, P), 158, "free memory");
        assert_eq!(lock(fx, a, 2 * P), 0);
        assert_eq!(unlock(fx, a, 3 * P), 158, "partly locked");
        assert_eq!(unlock(fx, a + P, 3 * P), 158, "partly locked, into reserved pages");
        // The failures unlocked nothing.
        assert_eq!(unlock(fx, a, 2 * P), 0);
    }

    fn zero_size_is_87(fx: &Fx) {
        let a = fx.reserve_commit(0, P, PAGE_READWRITE);
        assert_eq!(lock(fx, a, 0), 87);
        assert_eq!(unlock(fx, a, 0), 87);
        assert_eq!(unlock(fx, a, P), 158, "the zero-size lock locked nothing");
    }

    /// Decommitting or releasing locked pages unlocks them.
    fn decommit_and_release_unlock(fx: &Fx) {
        let a = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        assert_eq!(lock(fx, a, 4 * P), 0);
        fx.free(a + P, P, MEM_DECOMMIT).unwrap();
        fx.commit(a + P, P, PAGE_READWRITE);
        assert_eq!(unlock(fx, a + P, P), 158, "a recommitted page starts unlocked");
        assert_eq!(unlock(fx, a, P), 0);
        assert_eq!(unlock(fx, a + 2 * P, 2 * P), 0);
        assert_eq!(lock(fx, a, 4 * P), 0);
        fx.free(a, 0, MEM_RELEASE).unwrap();
        let b = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        assert_eq!(b, a);
        assert_eq!(unlock(fx, a, P), 158, "a new reservation starts unlocked");
    }
}
