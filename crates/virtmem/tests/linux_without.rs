//! The Linux backend on a kernel without the features it prefers: each test runs again in
//! a child process of this test binary with the features withheld by
//! `VIRTMEM_LINUX_WITHOUT` (read once per process, when the backend first probes the
//! kernel), and checks the fallback an older kernel takes. `scripts/test-linux-fallbacks.sh`
//! runs the Linux suites whole that way.
#![cfg(target_os = "linux")]

mod linux_util;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use linux_util::*;
use virtmem::backend::linux::{LinuxBackend, LinuxOptions, WITHOUT_ENV};
use virtmem::{AllocationType as T, Error, FreeType, LinuxSpace, MemState, Protection as P, WriteWatchFlags as W};

const KB: usize = 1024;
const PAGE: usize = 4096;

/// The variable withholds each feature named, and only those (this kernel has all six:
/// a new one is what the tests run on). Withholding `membarrier`, the system call,
/// withholds its expedited command with it.
#[test]
fn each_feature_named_is_withheld_and_only_those() {
    let all = ["fixed_noreplace", "pagemap_scan", "guard", "procmap_query", "membarrier_expedited", "membarrier"];
    if std::env::var_os(WITHOUT_ENV).is_none() && std::env::var_os(CHILD_ENV).is_none() {
        assert_eq!(LinuxSpace::linux().unwrap().backend().missing_features(), Vec::<&str>::new(), "a new kernel");
    }
    for f in all {
        without("each_feature_named_is_withheld_and_only_those", f, || {
            let s = LinuxSpace::linux().unwrap();
            let expected: &[&str] = if f == "membarrier" { &["membarrier_expedited", "membarrier"] } else { &[f] };
            assert_eq!(s.backend().missing_features(), expected);
            assert_eq!(s.backend().uses_guard_regions(), f != "guard");
            assert_eq!(s.backend().write_watch_supported(), f != "pagemap_scan");
        });
    }
    without("each_feature_named_is_withheld_and_only_those", "ALL", || {
        assert_eq!(LinuxSpace::linux().unwrap().backend().missing_features(), all);
    });
}

/// A word that names no feature (a typo in a fallback test, which would otherwise test
/// nothing) is refused rather than ignored: no backend is made. `LinuxBackend::new` fails
/// with `InvalidInput` naming the variable, each bad word and every accepted name;
/// `LinuxSpace::linux`, `linux_with` and the process-wide space fail with
/// ERROR_INVALID_PARAMETER, whose code cannot carry the word, so the same message goes to
/// stderr (once per process). Known names beside the bad one change nothing; spaces,
/// case and empty items stay allowed.
#[test]
fn a_name_that_is_no_feature_is_refused_with_the_word_and_the_accepted_names() {
    const NAME: &str = "a_name_that_is_no_feature_is_refused_with_the_word_and_the_accepted_names";
    let accepted =
        ["fixed_noreplace", "pagemap_scan", "guard", "procmap_query", "membarrier_expedited", "membarrier", "all"];
    for (value, bad) in [
        ("gaurd", &["gaurd"][..]),
        ("guard, procmap-query", &["procmap-query"]),
        ("all,nothing,,fixed_noreplace ,pagemapscan", &["nothing", "pagemapscan"]),
    ] {
        let child = without(NAME, value, || {
            let e = LinuxBackend::new().expect_err("a backend despite a word that names no feature");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
            let message = e.to_string();
            assert!(message.contains(WITHOUT_ENV), "{message}");
            for word in bad {
                assert!(message.contains(&format!("`{word}`")), "{word}: {message}");
            }
            for name in accepted {
                assert!(message.contains(name), "{name}: {message}");
            }
            let e = LinuxBackend::with_options(LinuxOptions::default()).expect_err("with options too");
            assert_eq!(e.to_string(), message);
            assert_eq!(LinuxSpace::linux().err(), Some(Error::InvalidParameter));
            assert_eq!(LinuxSpace::linux_with(LinuxOptions::default()).err(), Some(Error::InvalidParameter));
            assert_eq!(virtmem::try_current_process().err(), Some(Error::InvalidParameter));
        });
        // Said on stderr too, once, for callers that only see the error code.
        if let Some(text) = child {
            for word in bad {
                assert_eq!(text.matches(&format!("`{word}`")).count(), 1, "{word}:\n{text}");
            }
        }
    }
    // A value that is not UTF-8 cannot name a feature either.
    let child = without(NAME, OsStr::from_bytes(b"gu\xffard"), || {
        let e = LinuxBackend::new().expect_err("a backend despite a value that is not UTF-8");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("UTF-8"), "{e}");
        assert_eq!(LinuxSpace::linux().err(), Some(Error::InvalidParameter));
    });
    if let Some(text) = child {
        assert!(text.contains(WITHOUT_ENV) && text.contains("UTF-8"), "{text}");
    }
    // Spaces, case and empty items are fine: the names are still withheld.
    without(NAME, " Guard,, PROCMAP_query ,", || {
        assert_eq!(LinuxSpace::linux().unwrap().backend().missing_features(), ["guard", "procmap_query"]);
    });
}

/// Without `PAGEMAP_SCAN` (Linux before 6.7) there is no write watch: a write-watched
/// reservation is refused with ERROR_NOT_SUPPORTED and nothing is reserved. MEM_RESET
/// still finds the pages that hold data (in `/proc/self/pagemap`), so MEM_RESET_UNDO
/// still tells the truth: the data survived (no memory pressure here) and reads back;
/// and decommitted pages still read zero when committed again.
#[test]
fn without_pagemap_scan_write_watch_is_refused_and_reset_undo_tells_the_truth() {
    without("without_pagemap_scan_write_watch_is_refused_and_reset_undo_tells_the_truth", "pagemap_scan", || {
        let s = LinuxSpace::linux().unwrap();
        for ty in [T::RESERVE | T::WRITE_WATCH, T::RESERVE | T::COMMIT | T::WRITE_WATCH] {
            assert_eq!(s.alloc(0, 64 * KB, ty, P::READWRITE), Err(Error::NotSupported));
        }
        assert_eq!((s.stats().reserved, s.stats().reservations), (0, 0), "nothing reserved");
        let b = s.alloc(0, 64 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
        // Not write-watched: the usual error.
        assert_eq!(s.get_write_watch(W::empty(), b, 64 * KB, 16), Err(Error::InvalidParameter));
        for i in 0..8 {
            store(b + i * PAGE + 100, i as u8 + 1);
        }
        assert_eq!(s.alloc(b, 64 * KB, T::RESET, P::NOACCESS), Ok(b));
        assert_eq!(s.alloc(b, 64 * KB, T::RESET_UNDO, P::NOACCESS), Ok(b));
        for i in 0..8 {
            assert_eq!(load(b + i * PAGE + 100), i as u8 + 1, "page {i} kept its data");
        }
        s.free(b + PAGE, PAGE, FreeType::DECOMMIT).unwrap();
        s.alloc(b + PAGE, PAGE, T::COMMIT, P::READWRITE).unwrap();
        assert_eq!(load(b + PAGE + 100), 0);
        s.free(b, 0, FreeType::RELEASE).unwrap();
    });
}

/// Without `PROCMAP_QUERY` (before 6.11) and `MAP_FIXED_NOREPLACE` (before 4.17), memory
/// that is not the backend's is still never called free, and never replaced: a query
/// inside it reports it in use (from the text of `/proc/self/maps`), and a reserve there
/// fails with ERROR_INVALID_ADDRESS with its contents untouched.
#[test]
fn without_procmap_query_and_fixed_noreplace_foreign_memory_is_in_use_and_untouched() {
    without(
        "without_procmap_query_and_fixed_noreplace_foreign_memory_is_in_use_and_untouched",
        "procmap_query,fixed_noreplace",
        || {
            let s = LinuxSpace::linux().unwrap();
            // A page-aligned mapping of the program's own (a large allocation is mmap'd).
            let foreign = vec![7u8; 4 << 20];
            let inside = (foreign.as_ptr() as usize + 2 * 64 * KB) & !(64 * KB - 1);
            let q = s.query(inside).unwrap();
            assert_ne!(q.state, MemState::Free, "{q:?}");
            assert!(q.base_address <= inside && inside < q.base_address + q.region_size, "{q:?}");
            assert_eq!(s.alloc(inside, 64 * KB, T::RESERVE, P::READWRITE), Err(Error::InvalidAddress));
            assert_eq!(s.alloc(inside, 64 * KB, T::RESERVE | T::COMMIT, P::NOACCESS), Err(Error::InvalidAddress));
            assert!(foreign.iter().all(|&b| b == 7), "the program's memory is untouched");
            assert_eq!(perms_at(inside).as_deref(), Some("rw-p"));
            assert_eq!(s.stats().reservations, 0);
            // A free address still works: reserved where asked, queried as ours.
            let at = s.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
            s.free(at, 0, FreeType::RELEASE).unwrap();
            let again = s.alloc(at, 64 * KB, T::RESERVE | T::COMMIT, P::READWRITE);
            if again == Ok(at) {
                assert_eq!(s.query(at).unwrap().allocation_base, at);
                s.free(at, 0, FreeType::RELEASE).unwrap();
            } else {
                // Only if another thread's mapping took the address meanwhile.
                assert_eq!(again, Err(Error::InvalidAddress));
            }
        },
    );
}

/// A refused `VIRTMEM_LINUX_WITHOUT` is reported on stderr; with stderr on a full disk
/// (`/dev/full`) that report cannot be written, and the call still answers with its
/// error instead of panicking ("no panics across the API"; `eprintln!` panics when its
/// write fails). Likewise `VIRTMEM_TRACE` naming a file that cannot be opened.
#[test]
fn reports_on_a_full_stderr_do_not_panic() {
    const NAME: &str = "reports_on_a_full_stderr_do_not_panic";
    if std::env::var_os(CHILD_ENV).is_some() {
        if std::env::var_os(WITHOUT_ENV).as_deref() == Some(OsStr::new("no_such_feature")) {
            assert!(LinuxSpace::linux().is_err());
            assert!(LinuxSpace::linux().is_err(), "and again, from the remembered answer");
            let t = virtmem::trace::TraceWriter::from_env();
            assert!(!t.is_enabled(), "a trace file that cannot be opened disables tracing");
        }
        return;
    }
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        panic!("/dev/full is missing: the test needs it");
    };
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        // (--nocapture: the test's own output goes to the real stderr, not the harness.)
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(WITHOUT_ENV, "no_such_feature")
        .env(CHILD_ENV, "1")
        .env("VIRTMEM_TRACE", "/nonexistent-dir/trace.vmt")
        .stderr(full)
        .output()
        .expect("run the test binary");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the child failed ({:?}):\n{text}", out.status);
    assert!(text.contains("1 passed"), "the test did not run in the child:\n{text}");
}
