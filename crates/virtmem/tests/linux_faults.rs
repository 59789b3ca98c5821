//! Real faults: the CPU, not the library, enforces what the space reports. Each probe
//! runs in a forked child, which must die of SIGSEGV (or live, for the controls).
#![cfg(target_os = "linux")]

mod linux_util;

use linux_util::*;
use virtmem::{AllocationType as T, FreeType, LinuxSpace, Protection as P};

const KB: usize = 1024;

fn segv(f: impl FnOnce()) {
    assert_eq!(child_signal(f), Some(libc::SIGSEGV));
}

fn lives(f: impl FnOnce()) {
    assert_eq!(child_signal(f), None);
}

#[test]
fn reserved_and_decommitted_pages_fault() {
    let s = LinuxSpace::linux().unwrap();
    let base = s.alloc(0, 256 * KB, T::RESERVE, P::READWRITE).unwrap();
    segv(|| {
        let _ = load(base);
    });
    s.alloc(base, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    store(base, 1);
    lives(|| store(base + 4096, load(base)));
    s.free(base, 4096, FreeType::DECOMMIT).unwrap();
    segv(|| {
        let _ = load(base);
    });
    segv(|| store(base, 2));
    lives(|| {
        let _ = load(base + 4096);
    });
    s.free(base, 0, FreeType::RELEASE).unwrap();
    // Released: nothing there any more.
    segv(|| {
        let _ = load(base + 4096);
    });
}

#[test]
fn protections_are_enforced_by_the_cpu() {
    let s = LinuxSpace::linux().unwrap();
    let base = s.alloc(0, 64 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    store(base, 9);
    s.protect(base, 4096, P::READONLY).unwrap();
    lives(|| assert_eq!(load(base), 9));
    segv(|| store(base, 1));
    s.protect(base, 4096, P::EXECUTE_READ).unwrap();
    segv(|| store(base, 1));
    s.protect(base, 4096, P::NOACCESS).unwrap();
    segv(|| {
        let _ = load(base);
    });
    s.protect(base, 4096, P::READWRITE | P::GUARD).unwrap();
    segv(|| {
        let _ = load(base);
    });
    s.protect(base, 4096, P::READWRITE).unwrap();
    lives(|| store(base, load(base) + 1));
    assert_eq!(load(base), 9);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}
