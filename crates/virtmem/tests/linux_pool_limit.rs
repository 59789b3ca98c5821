//! The Linux backend's pool of released ranges at terabyte scale. Without an
//! address-space limit a released 1 TiB reservation stays mapped for reuse (one
//! inaccessible mapping holding no page, free to `VirtualQuery`) and the next reserve
//! that fits takes it without a system call. Under a limit (`RLIMIT_AS`), which pooled
//! ranges count against, the pool holds at most 1 GiB, whatever its options say. Each
//! test runs in a child process of its own, which sets its own limit.
#![cfg(target_os = "linux")]

mod linux_util;

use linux_util::*;
use virtmem::{AllocationType as T, FreeType, LinuxOptions, LinuxSpace, MemState, Protection as P};

const KB: usize = 1024;
const MB: usize = 1024 * KB;
const GB: usize = 1024 * MB;
const TB: usize = 1024 * GB;
const CHILD: &str = "VIRTMEM_POOL_LIMIT_CHILD";

/// Set this process's soft address-space limit; false if its hard limit forbids it.
fn set_address_space_limit(soft: libc::rlim_t) -> bool {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `struct rlimit`, which `r` is.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) }, 0);
    if r.rlim_max != libc::RLIM_INFINITY && (soft == libc::RLIM_INFINITY || soft > r.rlim_max) {
        return false;
    }
    r.rlim_cur = soft;
    // SAFETY: setrlimit reads one `struct rlimit`; it changes this child process only.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &r) == 0 }
}

#[test]
fn a_released_terabyte_is_pooled_and_reserved_again_without_a_system_call() {
    if in_child(CHILD, "a_released_terabyte_is_pooled_and_reserved_again_without_a_system_call") {
        return;
    }
    assert!(set_address_space_limit(libc::RLIM_INFINITY), "this test needs a hard limit that allows no limit");
    let s = LinuxSpace::linux().unwrap();
    let base = s.alloc(0, TB, T::RESERVE, P::NOACCESS).unwrap();
    let page = base + TB / 2;
    s.alloc(page, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    store(page + 4096, 7);
    let before = s.backend().stats();
    s.free(base, 0, FreeType::RELEASE).unwrap();
    let after = s.backend().stats();
    assert_eq!((after.pooled_bytes, after.reservations), (before.pooled_bytes + TB, before.reservations - 1));
    // Free to VirtualQuery; still mapped whole (not unmapped), inaccessible outside the
    // piece that was committed (which guard markers may have made inaccessible under
    // its old protection), holding no page: the written one was dropped, and the CPU
    // may not touch it.
    assert_eq!(s.query(page).unwrap().state, MemState::Free);
    let maps = mappings(base..base + TB);
    assert!(maps.windows(2).all(|w| w[0].1 == w[1].0), "{maps:x?}");
    assert_eq!((maps[0].0, maps[maps.len() - 1].1), (base, base + TB));
    assert!(maps.iter().all(|(a, b, perms)| perms == "---p" || (page <= *a && *b <= page + 64 * KB)), "{maps:x?}");
    assert!(resident(page..page + 64 * KB).iter().all(|&r| !r));
    assert_eq!(child_signal(|| touch(page + 4096)), Some(libc::SIGSEGV));
    // The next reservation that fits takes it, with no system call (the lowest fitting
    // range is the same as the first time: nothing else maps in this child), and a
    // recommitted page reads zero.
    let calls = s.backend().syscall_count();
    assert_eq!(s.alloc(0, TB, T::RESERVE, P::NOACCESS), Ok(base));
    assert_eq!(s.backend().syscall_count(), calls, "no system call");
    assert_eq!(s.backend().stats().pooled_bytes, before.pooled_bytes);
    s.alloc(page, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(load(page + 4096), 0);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn under_an_address_space_limit_the_pool_holds_at_most_one_gib() {
    if in_child(CHILD, "under_an_address_space_limit_the_pool_holds_at_most_one_gib") {
        return;
    }
    // 64 TiB: room for everything this test maps, a limit all the same.
    assert!(set_address_space_limit(64 << 40), "this test needs a hard limit of 64 TiB or more");
    let asked_more = LinuxOptions { pool_bytes: 4 * GB, ..LinuxOptions::default() };
    for s in [LinuxSpace::linux().unwrap(), LinuxSpace::linux_with(asked_more).unwrap()] {
        // 2 GiB does not fit: unmapped.
        let big = s.alloc(0, 2 * GB, T::RESERVE, P::NOACCESS).unwrap();
        s.alloc(big, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
        store(big, 1);
        s.free(big, 0, FreeType::RELEASE).unwrap();
        assert_eq!(s.backend().stats().pooled_bytes, 0);
        assert_eq!(mappings(big..big + 2 * GB), vec![]);
        // Half a GiB twice fits; a third time it does not.
        let halves: Vec<usize> = (0..3).map(|_| s.alloc(0, 512 * MB, T::RESERVE, P::NOACCESS).unwrap()).collect();
        for (i, &h) in halves.iter().enumerate() {
            s.free(h, 0, FreeType::RELEASE).unwrap();
            assert_eq!(s.backend().stats().pooled_bytes, (i + 1).min(2) * 512 * MB);
            assert_eq!(mappings(h..h + 512 * MB).is_empty(), i == 2, "release {i}");
        }
    }
}
