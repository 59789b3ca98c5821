//! A process that forks: parent and child each keep an address space of their own, and
//! every call one of them makes acts on its own memory only. (The Linux backend keeps
//! descriptors, a userfaultfd and `/proc/self/mem`, that name the process that opened
//! them; a child inherits them.)
//!
//! Each test re-runs itself alone in a fresh process (`in_child`), so that the fork
//! happens with no other test's thread inside the library.
#![cfg(target_os = "linux")]

mod linux_util;

use linux_util::*;
use virtmem::{AllocationType as T, LinuxSpace, Protection as P, WriteWatchFlags as W};

const PAGE: usize = 4096;

/// Spec, "Write watch": GetWriteWatch reports the pages written since the last reset,
/// and ResetWriteWatch clears the range. A child's reset cleaned its parent's pages (the
/// inherited userfaultfd acts on the parent's memory), so the parent lost a write, and
/// left the child's own pages written.
#[test]
fn a_forked_child_resets_its_own_write_watch_not_its_parents() {
    if in_child("VIRTMEM_FORK_WATCH", "a_forked_child_resets_its_own_write_watch_not_its_parents") {
        return;
    }
    let s = LinuxSpace::linux().unwrap();
    assert!(s.backend().write_watch_supported(), "this kernel has write watch");
    let size = 16 * PAGE;
    let base = s.alloc(0, size, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap();
    store(base, 1);
    s.reset_write_watch(base, size).unwrap();
    store(base + 2 * PAGE, 1);
    assert_eq!(s.get_write_watch(W::empty(), base, size, 16).unwrap(), [base + 2 * PAGE]);

    let child_ok = child_passed(|| {
        // The write before the fork is reported (a child may report more: see the
        // Linux backend's docs), then the child's own reset and writes are exact.
        let seen = s.get_write_watch(W::empty(), base, size, 16).unwrap();
        assert!(seen.contains(&(base + 2 * PAGE)), "{seen:x?}");
        s.reset_write_watch(base, size).unwrap();
        assert_eq!(s.get_write_watch(W::empty(), base, size, 16).unwrap(), []);
        store(base + 3 * PAGE, 1);
        assert_eq!(s.get_write_watch(W::RESET, base, size, 16).unwrap(), [base + 3 * PAGE]);
        assert_eq!(s.get_write_watch(W::empty(), base, size, 16).unwrap(), []);
        // A reservation the child makes is tracked too.
        let mine = s.alloc(0, size, T::RESERVE | T::COMMIT | T::WRITE_WATCH, P::READWRITE).unwrap();
        store(mine + PAGE, 1);
        assert_eq!(s.get_write_watch(W::RESET, mine, size, 16).unwrap(), [mine + PAGE]);
        assert_eq!(s.get_write_watch(W::empty(), mine, size, 16).unwrap(), []);
    });
    assert!(child_ok, "the child's write watch");
    // The parent's write since its last reset is still reported, and only it.
    assert_eq!(s.get_write_watch(W::empty(), base, size, 16).unwrap(), [base + 2 * PAGE]);
    store(base + 5 * PAGE, 1);
    assert_eq!(s.get_write_watch(W::RESET, base, size, 16).unwrap(), [base + 2 * PAGE, base + 5 * PAGE]);
    assert_eq!(s.get_write_watch(W::empty(), base, size, 16).unwrap(), []);
}

/// A checked read of `PAGE_EXECUTE` memory (readable on Windows x64) in a forked child
/// read the parent's copy of the page (through the parent's `/proc/<pid>/mem`), not the
/// child's.
#[test]
fn a_forked_child_reads_its_own_execute_only_pages() {
    if in_child("VIRTMEM_FORK_READ", "a_forked_child_reads_its_own_execute_only_pages") {
        return;
    }
    let s = LinuxSpace::linux().unwrap();
    let code = s.alloc(0, PAGE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    s.write(code, b"AAAA").unwrap();
    s.protect(code, PAGE, P::EXECUTE).unwrap();
    let mut b = [0u8; 4];
    s.read(code, &mut b).unwrap();
    assert_eq!(&b, b"AAAA");
    s.execute(code, &mut b).unwrap();
    assert_eq!(&b, b"AAAA");

    let child_ok = child_passed(|| {
        s.protect(code, PAGE, P::READWRITE).unwrap();
        s.write(code, b"BBBB").unwrap();
        s.protect(code, PAGE, P::EXECUTE).unwrap();
        let mut b = [0u8; 4];
        s.read(code, &mut b).unwrap();
        assert_eq!(&b, b"BBBB", "the child's read");
        s.execute(code, &mut b).unwrap();
        assert_eq!(&b, b"BBBB", "the child's fetch");
    });
    assert!(child_ok, "the child read its own page");
    s.read(code, &mut b).unwrap();
    assert_eq!(&b, b"AAAA", "the parent's page is its own");
}
