//! Write watch on real memory (userfaultfd asynchronous write protection and
//! PAGEMAP_SCAN), end to end through the space.
#![cfg(target_os = "linux")]

mod linux_util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use linux_util::*;
use virtmem::{AllocationType as T, Error, FreeType, LinuxSpace, Protection as P, WriteWatchFlags as W};

const KB: usize = 1024;
const PAGE: usize = 4096;

#[test]
fn writes_are_reported_and_reads_are_not() {
    let s = LinuxSpace::linux().unwrap();
    let base = watched(&s, 256 * KB);
    assert_eq!(s.get_write_watch(W::empty(), base, 256 * KB, 64).unwrap(), []);
    store(base + 3 * PAGE + 17, 1);
    let _ = load(base + 5 * PAGE);
    s.write(base + 9 * PAGE - 1, b"ab").unwrap(); // straddles two pages
    assert_eq!(
        s.get_write_watch(W::empty(), base, 256 * KB, 64).unwrap(),
        [base + 3 * PAGE, base + 8 * PAGE, base + 9 * PAGE]
    );
    // Only the asked range.
    assert_eq!(
        s.get_write_watch(W::empty(), base + 4 * PAGE, 8 * PAGE, 64).unwrap(),
        [base + 8 * PAGE, base + 9 * PAGE]
    );
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn reset_flag_cleans_exactly_what_was_reported() {
    let s = LinuxSpace::linux().unwrap();
    let base = watched(&s, 256 * KB);
    for i in 0..10 {
        store(base + i * 2 * PAGE, 1);
    }
    let first = s.get_write_watch(W::RESET, base, 256 * KB, 4).unwrap();
    assert_eq!(first, (0..4).map(|i| base + i * 2 * PAGE).collect::<Vec<_>>());
    // The capped count left the rest dirty.
    let rest = s.get_write_watch(W::RESET, base, 256 * KB, 100).unwrap();
    assert_eq!(rest, (4..10).map(|i| base + i * 2 * PAGE).collect::<Vec<_>>());
    assert_eq!(s.get_write_watch(W::empty(), base, 256 * KB, 100).unwrap(), []);
    store(base + 2 * PAGE, 2);
    assert_eq!(s.get_write_watch(W::empty(), base, 256 * KB, 100).unwrap(), [base + 2 * PAGE]);
    assert_eq!(load(base + 2 * PAGE), 2);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

/// Thousands of separate written runs, more than one `PAGEMAP_SCAN` answers at once (the
/// backend's scans go on from where the kernel stopped): every written page is reported
/// once, ascending; a capped `GetWriteWatch` with reset, cut inside a run, resets exactly
/// the pages it reported and the next call reports the rest; `ResetWriteWatch` cleans
/// them all.
#[test]
fn thousands_of_separate_runs_are_reported_and_reset_exactly() {
    const SIZE: usize = 32 << 20;
    let s = LinuxSpace::linux().unwrap();
    let base = watched(&s, SIZE);
    // 2000 runs of 1 to 3 pages, each followed by at least one clean page.
    let written: Vec<usize> =
        (0..2000).flat_map(|i: usize| (0..1 + i % 3).map(move |j| base + (4 * i + j) * PAGE)).collect();
    let write_all = || written.iter().for_each(|&a| store(a + 8, 7));
    write_all();
    let mut buf = vec![0usize; SIZE / PAGE];
    let n = s.get_write_watch_into(W::empty(), base, SIZE, &mut buf).unwrap();
    assert_eq!(&buf[..n], &written[..]);
    // 1001 pages: the 501st run (1-based) is cut after its first page.
    let cut = 1001;
    assert!(written[cut] == written[cut - 1] + PAGE, "the cap falls inside a run");
    let n = s.get_write_watch_into(W::RESET, base, SIZE, &mut buf[..cut]).unwrap();
    assert_eq!(&buf[..n], &written[..cut]);
    let n = s.get_write_watch_into(W::RESET, base, SIZE, &mut buf).unwrap();
    assert_eq!(&buf[..n], &written[cut..]);
    assert_eq!(s.get_write_watch_into(W::empty(), base, SIZE, &mut buf), Ok(0));
    write_all();
    s.reset_write_watch(base, SIZE).unwrap();
    assert_eq!(s.get_write_watch_into(W::empty(), base, SIZE, &mut buf), Ok(0));
    store(written[1234], 1);
    assert_eq!(s.get_write_watch(W::empty(), base, SIZE, 10).unwrap(), [written[1234]]);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

/// More separate written runs than the backend's scans answer in two system calls (6000:
/// its stack buffer's 341, then its kept buffer's 4096, then another): every written page
/// is reported once, ascending, with reset or without; capped `GetWriteWatch` calls with
/// reset, one cut inside a run in the first fill of the kept buffer and one inside a run
/// in its second, reset exactly the pages they reported, and the next call reports the
/// rest; `ResetWriteWatch` cleans them all.
#[test]
fn more_runs_than_two_scans_answer_are_reported_and_reset_exactly() {
    const RUNS: usize = 6000;
    const SIZE: usize = RUNS * 4 * PAGE;
    let s = LinuxSpace::linux().unwrap();
    let base = watched(&s, SIZE);
    // Runs of 1 to 3 pages, each followed by at least one clean page.
    let written: Vec<usize> =
        (0..RUNS).flat_map(|i: usize| (0..1 + i % 3).map(move |j| base + (4 * i + j) * PAGE)).collect();
    let write_all = || written.iter().for_each(|&a| store(a + 8, 7));
    write_all();
    let mut buf = vec![0usize; written.len() + 1];
    let n = s.get_write_watch_into(W::empty(), base, SIZE, &mut buf).unwrap();
    assert_eq!(&buf[..n], &written[..]);
    // 2000 pages: runs 0..1000 hold 1999, the cut falls after the first of run 1000's
    // two (a run the kept buffer's first fill holds).
    let first = 2000;
    assert!(written[first] == written[first - 1] + PAGE, "the cap falls inside a run");
    let n = s.get_write_watch_into(W::RESET, base, SIZE, &mut buf[..first]).unwrap();
    assert_eq!(&buf[..n], &written[..first]);
    // The next 9000 pages end after the first of run 5500's two (runs 0..5500 hold
    // 10 999): the scan's first 341 runs start at run 1000, its kept buffer's first fill
    // ends at run 5436, so the cut falls in its second fill.
    let second = first + 9000;
    assert!(written[second] == written[second - 1] + PAGE, "the cap falls inside a run");
    let n = s.get_write_watch_into(W::RESET, base, SIZE, &mut buf[..second - first]).unwrap();
    assert_eq!(&buf[..n], &written[first..second]);
    let n = s.get_write_watch_into(W::RESET, base, SIZE, &mut buf).unwrap();
    assert_eq!(&buf[..n], &written[second..]);
    assert_eq!(s.get_write_watch_into(W::empty(), base, SIZE, &mut buf), Ok(0));
    // Uncapped, with reset: all of them, then none.
    write_all();
    let n = s.get_write_watch_into(W::RESET, base, SIZE, &mut buf).unwrap();
    assert_eq!(&buf[..n], &written[..]);
    assert_eq!(s.get_write_watch_into(W::empty(), base, SIZE, &mut buf), Ok(0));
    write_all();
    s.reset_write_watch(base, SIZE).unwrap();
    assert_eq!(s.get_write_watch_into(W::empty(), base, SIZE, &mut buf), Ok(0));
    store(written[4321], 1);
    assert_eq!(s.get_write_watch(W::empty(), base, SIZE, 10).unwrap(), [written[4321]]);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

/// A big dirty set costs few `PAGEMAP_SCAN` calls: 4000 separate written pages (more than
/// the 341 runs one scan into the backend's stack buffer answers) are found in at most two
/// by `GetWriteWatch`, with reset or without, and by `ResetWriteWatch`; a scan that fills
/// the stack buffer goes on with the larger buffer the backend keeps. (Twelve calls each
/// before it had one.)
#[test]
fn a_big_dirty_set_takes_at_most_two_scans() {
    const RUNS: usize = 4000;
    const SIZE: usize = RUNS * 2 * PAGE;
    let s = LinuxSpace::linux().unwrap();
    let base = watched(&s, SIZE);
    let written: Vec<usize> = (0..RUNS).map(|i| base + 2 * i * PAGE).collect();
    let write_all = || written.iter().for_each(|&a| store(a, 1));
    let mut buf = vec![0usize; RUNS];
    let scans = || s.backend().stats().page_scans;
    for round in 0..2 {
        write_all();
        let before = scans();
        let n = s.get_write_watch_into(W::empty(), base, SIZE, &mut buf).unwrap();
        let took = scans() - before;
        assert!(buf[..n] == written[..], "round {round}: get");
        assert!(took <= 2, "round {round}: get took {took} scans");
        let before = scans();
        let n = s.get_write_watch_into(W::RESET, base, SIZE, &mut buf).unwrap();
        let took = scans() - before;
        assert!(buf[..n] == written[..], "round {round}: get with reset");
        assert!(took <= 2, "round {round}: get with reset took {took} scans");
        write_all();
        let before = scans();
        s.reset_write_watch(base, SIZE).unwrap();
        let took = scans() - before;
        assert!(took <= 2, "round {round}: ResetWriteWatch took {took} scans");
        assert_eq!(s.get_write_watch_into(W::empty(), base, SIZE, &mut buf), Ok(0));
    }
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

/// Two threads scanning big dirty sets of one space at once (one buffer kept by the
/// backend, which only one scan can use at a time) both get exact answers: each resets
/// and re-reads its own heap, and both read a third heap that stays dirty.
#[test]
fn two_threads_scanning_big_dirty_sets_at_once_get_exact_answers() {
    const RUNS: usize = 3000;
    const SIZE: usize = RUNS * 2 * PAGE;
    let s = Arc::new(LinuxSpace::linux().unwrap());
    let shared = watched(&s, SIZE);
    let shared_pages: Vec<usize> = (0..RUNS).map(|i| shared + (2 * i + i % 2) * PAGE).collect();
    shared_pages.iter().for_each(|&a| store(a, 1));
    let start = Arc::new(std::sync::Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (s, start, shared_pages) = (s.clone(), start.clone(), shared_pages.clone());
            std::thread::spawn(move || {
                let own = watched(&s, SIZE);
                let pages: Vec<usize> = (0..RUNS).map(|i| own + (2 * i + (i + t) % 2) * PAGE).collect();
                let mut buf = vec![0usize; RUNS + 1];
                start.wait();
                for round in 0..30 {
                    pages.iter().for_each(|&a| store(a, 1));
                    let n = s.get_write_watch_into(W::RESET, own, SIZE, &mut buf).unwrap();
                    assert!(buf[..n] == pages[..], "thread {t}, round {round}: own heap");
                    let n = s.get_write_watch_into(W::empty(), own, SIZE, &mut buf).unwrap();
                    assert_eq!(n, 0, "thread {t}, round {round}: own heap reset");
                    let n = s.get_write_watch_into(W::empty(), shared, SIZE, &mut buf).unwrap();
                    assert!(buf[..n] == shared_pages[..], "thread {t}, round {round}: shared heap");
                }
                s.free(own, 0, FreeType::RELEASE).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    s.free(shared, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn reset_write_watch_and_protection_changes() {
    let s = LinuxSpace::linux().unwrap();
    let base = watched(&s, 128 * KB);
    store(base, 1);
    store(base + PAGE, 1);
    // Protection changes do not alter the dirty state.
    s.protect(base, 2 * PAGE, P::READONLY).unwrap();
    s.protect(base, 2 * PAGE, P::READWRITE).unwrap();
    assert_eq!(s.get_write_watch(W::empty(), base, 128 * KB, 8).unwrap(), [base, base + PAGE]);
    s.reset_write_watch(base, PAGE).unwrap();
    assert_eq!(s.get_write_watch(W::empty(), base, 128 * KB, 8).unwrap(), [base + PAGE]);
    // A clean, write-protected page stays clean under protection changes and is
    // still writable afterwards.
    s.protect(base, PAGE, P::NOACCESS).unwrap();
    s.protect(base, PAGE, P::READWRITE).unwrap();
    assert_eq!(s.get_write_watch(W::empty(), base, PAGE, 8).unwrap(), []);
    store(base, 5);
    assert_eq!(s.get_write_watch(W::empty(), base, PAGE, 8).unwrap(), [base]);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn decommit_clears_and_recommit_starts_clean() {
    let s = LinuxSpace::linux().unwrap();
    let base = watched(&s, 128 * KB);
    store(base, 1);
    store(base + PAGE, 1);
    s.free(base, PAGE, FreeType::DECOMMIT).unwrap();
    assert_eq!(s.get_write_watch(W::empty(), base, 128 * KB, 8).unwrap(), [base + PAGE]);
    s.alloc(base, PAGE, T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(load(base), 0);
    assert_eq!(s.get_write_watch(W::empty(), base, PAGE, 8).unwrap(), []);
    store(base, 3);
    assert_eq!(s.get_write_watch(W::empty(), base, PAGE, 8).unwrap(), [base]);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

/// The `VmFlags` of the kernel mapping holding `addr`, from `/proc/self/smaps`.
fn vm_flags(addr: usize) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split_whitespace().next().and_then(|r| r.split_once('-'));
        if let Some((a, b)) = range {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a <= addr && addr < b;
                continue;
            }
        }
        if let Some(flags) = line.strip_prefix("VmFlags:").filter(|_| inside) {
            return flags.split_whitespace().map(str::to_owned).collect();
        }
    }
    panic!("no mapping holds {addr:#x}");
}

/// A write marks the pages it touches, never more. A write fault in a mapping that may
/// have transparent huge pages can map a whole 2 MiB page, which the kernel's write
/// tracking (one bit per page-table entry) then reports as 512 written pages: a
/// write-watched reservation refuses them (`nh`), whatever the system's THP setting
/// (on a system where it is `always`, the one-byte write below is also checked to report
/// one page; here a program's `MADV_HUGEPAGE` would show the same 512).
#[test]
fn a_write_marks_one_page_even_where_huge_pages_are_on() {
    let s = LinuxSpace::linux().unwrap();
    let size = 8 << 20;
    let base = watched(&s, size);
    assert!(vm_flags(base).iter().any(|f| f == "nh"), "no huge pages in a write-watched mapping: {:?}", vm_flags(base));
    let block = (base + (2 << 20) - 1) & !((2 << 20) - 1);
    store(block + 100, 1);
    store(block + (2 << 20) + 5000, 1);
    assert_eq!(s.get_write_watch(W::empty(), base, size, 1024).unwrap(), [block, block + (2 << 20) + PAGE]);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn errors() {
    let s = LinuxSpace::linux().unwrap();
    let plain = s.alloc(0, 64 * KB, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    assert_eq!(s.get_write_watch(W::empty(), plain, 64 * KB, 8), Err(Error::InvalidParameter));
    let base = watched(&s, 64 * KB);
    assert_eq!(s.get_write_watch(W::empty(), base, 128 * KB, 8), Err(Error::InvalidParameter));
    assert_eq!(s.get_write_watch(W::empty(), base, 64 * KB, 0), Err(Error::InvalidParameter));
    s.free(base, 0, FreeType::RELEASE).unwrap();
    s.free(plain, 0, FreeType::RELEASE).unwrap();
}

/// With a writer racing the scans, no write is ever lost: every page written is
/// reported by some scan. (A page whose write-fault retried after a concurrent scan
/// may be reported twice for one store: the store completed after that scan.)
#[test]
fn concurrent_writes_are_never_lost() {
    let s = Arc::new(LinuxSpace::linux().unwrap());
    let pages = 2048;
    let base = watched(&s, pages * PAGE);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = done.clone();
        std::thread::spawn(move || {
            for i in 0..pages {
                store(base + i * PAGE, 1);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut seen = vec![0usize; pages];
    loop {
        let finished = done.load(Ordering::SeqCst);
        for p in s.get_write_watch(W::RESET, base, pages * PAGE, 1 << 20).unwrap() {
            seen[(p - base) / PAGE] += 1;
        }
        if finished {
            break;
        }
    }
    writer.join().unwrap();
    let lost: Vec<usize> = (0..pages).filter(|&i| seen[i] == 0).collect();
    assert!(lost.is_empty(), "writes to pages {lost:?} were never reported");
    assert_eq!(s.get_write_watch(W::empty(), base, pages * PAGE, 1 << 20).unwrap(), []);
    s.free(base, 0, FreeType::RELEASE).unwrap();
}
