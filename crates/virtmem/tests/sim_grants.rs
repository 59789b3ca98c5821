//! The simulated backend's grants (`Backend::grant`): an access the engine checked once
//! lets the block's later accesses be carried out by the backend alone. These tests
//! check that this never changes an answer: every change of a page takes back what was
//! granted, a space with grants answers exactly as one without, and a write on another
//! thread never lands after the call that forbade it returned.

#[macro_use]
mod forward;
mod paired;
mod rng;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use virtmem::backend::{Backend, BackendError, Snapshot};
use virtmem::{
    AccessKind, AddressSpace, AllocationType as T, Error, FreeType, Protection as Pr, ResetPolicy, SimBackend,
    SimConfig, SimSpace, WriteWatchFlags,
};

const P: usize = 4096;
const G: usize = 65536;

/// A simulated backend that keeps no grants: every access goes through the engine.
struct NoGrants {
    inner: SimBackend,
}

impl Backend for NoGrants {
    forward!(inner: limits, reserve, release, release_committed, set_access, inline_effects, discard, decommit);
    forward!(inner: reset, reset_undo, lock, unlock, read, write, dirty_pages, clear_dirty);
}

/// Snapshots of a space without grants, as of one with them (of its simulated backend).
impl Snapshot for NoGrants {
    fn snapshot(&self) -> Self {
        NoGrants { inner: self.inner.snapshot() }
    }
    fn restore(&self, from: Self) -> Result<Self, BackendError> {
        self.inner.restore(from.inner).map(|inner| NoGrants { inner })
    }
}

fn av(address: usize, access: AccessKind) -> Error {
    Error::AccessViolation { address, access }
}

/// A space with one reservation of two 64 KiB blocks, its first block committed
/// read-write and written once (so that the block is granted), then read back through
/// the grant.
fn granted(config: SimConfig, ty: T) -> (SimSpace, usize) {
    let s = SimSpace::simulated_with(config);
    let a = s.alloc(0, 2 * G, T::RESERVE | ty, Pr::NOACCESS).unwrap();
    s.alloc(a, G, T::COMMIT, Pr::READWRITE).unwrap();
    s.write(a + 100, &[7; 8]).unwrap();
    let mut b = [0; 8];
    s.read(a + 100, &mut b).unwrap();
    assert_eq!(b, [7; 8]);
    (s, a)
}

#[test]
fn every_change_takes_back_what_was_granted() {
    let (s, a) = granted(SimConfig::default(), T::empty());
    s.protect(a, P, Pr::READONLY).unwrap();
    assert_eq!(s.write(a + 100, &[1]), Err(av(a + 100, AccessKind::Write)));
    s.read(a + 100, &mut [0]).unwrap();
    s.protect(a, P, Pr::NOACCESS).unwrap();
    assert_eq!(s.read(a + 100, &mut [0]), Err(av(a + 100, AccessKind::Read)));
    s.protect(a, P, Pr::EXECUTE).unwrap();
    assert_eq!(s.write(a + 100, &[1]), Err(av(a + 100, AccessKind::Write)));
    s.read(a + 100, &mut [0]).unwrap();
    s.execute(a + 100, &mut [0]).unwrap();
    s.protect(a, P, Pr::READWRITE | Pr::GUARD).unwrap();
    assert_eq!(s.write(a + 100, &[1]), Err(Error::GuardPage { address: a + 100, access: AccessKind::Write }));
    s.write(a + 100, &[2]).unwrap();
    // A page beside the changed one keeps its grant and its data.
    s.write(a + P, &[3]).unwrap();
    s.free(a, P, FreeType::DECOMMIT).unwrap();
    assert_eq!(s.write(a + 100, &[1]), Err(av(a + 100, AccessKind::Write)));
    let mut b = [9];
    s.read(a + P, &mut b).unwrap();
    assert_eq!(b, [3]);
    s.alloc(a, P, T::COMMIT, Pr::READWRITE).unwrap();
    let mut b = [9; 8];
    s.read(a + 100, &mut b).unwrap();
    assert_eq!(b, [0; 8], "a recommitted page reads zero");
    s.free(a, 0, FreeType::RELEASE).unwrap();
    assert_eq!(s.write(a + P, &[1]), Err(av(a + P, AccessKind::Write)));
    // The same addresses reserved again: reserved pages refuse, new commits read zero.
    assert_eq!(s.alloc(a, 2 * G, T::RESERVE, Pr::READWRITE), Ok(a));
    assert_eq!(s.read(a + P, &mut [0]), Err(av(a + P, AccessKind::Read)));
    s.alloc(a, G, T::COMMIT, Pr::READWRITE).unwrap();
    let mut b = [9];
    s.read(a + P, &mut b).unwrap();
    assert_eq!(b, [0]);
    assert_eq!(s.backend().stored_pages(), 0);
}

#[test]
fn granted_writes_are_watched() {
    let (s, a) = granted(SimConfig::default(), T::WRITE_WATCH);
    let watch = |reset| {
        let flags = if reset { WriteWatchFlags::RESET } else { WriteWatchFlags::empty() };
        s.get_write_watch(flags, a, 2 * G, 64).unwrap()
    };
    assert_eq!(watch(true), [a]);
    s.write(a + 5 * P, &[1]).unwrap();
    s.write(a + 100, &[1]).unwrap();
    assert_eq!(watch(true), [a, a + 5 * P]);
    assert_eq!(watch(false), Vec::<usize>::new());
    s.write(a + 5 * P + 1, &[1]).unwrap();
    assert_eq!(watch(false), [a + 5 * P]);
    s.reset_write_watch(a, 2 * G).unwrap();
    assert_eq!(watch(false), Vec::<usize>::new());
}

/// Every page written after a reset of write watch is reported by the next
/// `GetWriteWatch`, on a heap of more 64 KiB blocks than the backend has parts, whether
/// the write is carried out through a grant (a reset leaves the grants as they were: a
/// granted write marks its page itself) or by the engine (a backend that keeps no
/// grants), after a resetting `GetWriteWatch` (with room for every dirty page, or
/// capped) and after a `ResetWriteWatch`; and a snapshot's marks stay its own through
/// the original's resets, and come back with a restore.
#[test]
fn writes_after_a_reset_are_reported_through_grants_and_through_the_engine() {
    const BLOCKS: usize = 100;
    fn rounds<B: Snapshot>(s: &AddressSpace<B>, granted: impl Fn(&B) -> usize) {
        let size = BLOCKS * G;
        let a = s.alloc(0, size, T::RESERVE | T::COMMIT | T::WRITE_WATCH, Pr::READWRITE).unwrap();
        let pages: Vec<usize> = (0..BLOCKS).map(|i| a + i * G + (i % 16) * P).collect();
        let write = |pages: &[usize], v: u8| pages.iter().for_each(|&p| s.write(p + 8, &[v]).unwrap());
        let get = |flags, max| s.get_write_watch(flags, a, size, max).unwrap();
        for round in 0..3u8 {
            write(&pages, round);
            let before = granted(s.backend());
            assert_eq!(get(WriteWatchFlags::RESET, 4096), pages, "round {round}");
            assert_eq!(granted(s.backend()), before, "round {round}: the reset kept every grant");
            assert_eq!(get(WriteWatchFlags::empty(), 4096), Vec::<usize>::new(), "round {round}");
            // Written again after the reset: each reported again.
            let odd: Vec<usize> = pages.iter().copied().skip(1).step_by(2).collect();
            write(&odd, round);
            assert_eq!(get(WriteWatchFlags::empty(), 4096), odd, "round {round}");
            // A capped reset, then the pages it reset written again with the others.
            assert_eq!(get(WriteWatchFlags::RESET, 10), odd[..10], "round {round}");
            assert_eq!(get(WriteWatchFlags::empty(), 4096), odd[10..], "round {round}");
            write(&odd[..10], round);
            assert_eq!(get(WriteWatchFlags::empty(), 4096), odd, "round {round}");
            // ResetWriteWatch, then every page written once more.
            s.reset_write_watch(a, size).unwrap();
            assert_eq!(granted(s.backend()), before, "round {round}: ResetWriteWatch kept every grant");
            assert_eq!(get(WriteWatchFlags::empty(), 4096), Vec::<usize>::new(), "round {round}");
            write(&pages, round);
            assert_eq!(get(WriteWatchFlags::empty(), 4096), pages, "round {round}");
            s.reset_write_watch(a, size).unwrap();
        }
        // A snapshot of a heap with every page dirty keeps its marks through the
        // original's resets and writes; restored, they are the original's again.
        write(&pages, 9);
        let copy = s.snapshot();
        assert_eq!(get(WriteWatchFlags::RESET, 4096), pages);
        write(&pages[..3], 10);
        assert_eq!(copy.get_write_watch(WriteWatchFlags::empty(), a, size, 4096).unwrap(), pages);
        s.restore_from(&copy).unwrap();
        assert_eq!(get(WriteWatchFlags::empty(), 4096), pages, "the restored marks");
        write(&pages[5..6], 11);
        s.reset_write_watch(a, size).unwrap();
        write(&pages[7..8], 12);
        assert_eq!(get(WriteWatchFlags::RESET, 4096), pages[7..8]);
        assert_eq!(copy.get_write_watch(WriteWatchFlags::empty(), a, size, 4096).unwrap(), pages);
    }
    let with = SimSpace::simulated();
    rounds(&with, |b| b.granted_blocks());
    assert!(with.backend().granted_blocks() > 0, "writes went through grants");
    let without = AddressSpace::with_backend(NoGrants { inner: SimBackend::default() });
    rounds(&without, |b| b.inner.granted_blocks());
    assert_eq!(without.backend().inner.granted_blocks(), 0, "every write went through the engine");
}

/// Granted accesses within one page and across two pages of a block, on pages stored
/// and never stored: each reads what was written (zeros where nothing was), and each
/// granted write is seen by write watch on every page it touched.
#[test]
fn granted_accesses_within_and_across_pages_read_what_was_written() {
    let (s, a) = granted(SimConfig::default(), T::WRITE_WATCH);
    let watch = || s.get_write_watch(WriteWatchFlags::RESET, a, 2 * G, 64).unwrap();
    assert_eq!(watch(), [a]);
    let read = |at: usize| {
        let mut b = [0xEE; 8];
        s.read(at, &mut b).unwrap();
        b
    };
    // Within one page: never stored (zeros), then stored by a write, then written again.
    assert_eq!(read(a + 3 * P + 8), [0; 8]);
    s.write(a + 3 * P + 8, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    assert_eq!(read(a + 3 * P + 8), [1, 2, 3, 4, 5, 6, 7, 8]);
    s.write(a + 3 * P + 12, &[9; 4]).unwrap();
    assert_eq!(read(a + 3 * P + 8), [1, 2, 3, 4, 9, 9, 9, 9]);
    assert_eq!(read(a + 3 * P), [0; 8]);
    // Across two pages never stored: each page gets its half.
    s.write(a + 6 * P - 4, &[5, 5, 5, 5, 6, 6, 6, 6]).unwrap();
    assert_eq!(read(a + 6 * P - 4), [5, 5, 5, 5, 6, 6, 6, 6]);
    assert_eq!(read(a + 6 * P - 8), [0, 0, 0, 0, 5, 5, 5, 5]);
    assert_eq!(read(a + 6 * P), [6, 6, 6, 6, 0, 0, 0, 0]);
    // Across a stored page (the first, 7s at 100..108) and one never stored.
    s.write(a + P - 2, &[0xAB; 2]).unwrap();
    let mut b = [0xEE; 8];
    s.read(a + P - 4, &mut b).unwrap();
    assert_eq!(b, [0, 0, 0xAB, 0xAB, 0, 0, 0, 0]);
    assert_eq!(read(a + 100), [7; 8]);
    assert_eq!(watch(), [a, a + 3 * P, a + 5 * P, a + 6 * P]);
    // Instruction fetches from the same pages, once executable, read the same bytes.
    s.protect(a, G, Pr::EXECUTE_READWRITE).unwrap();
    let mut b = [0xEE; 8];
    s.execute(a + 6 * P - 4, &mut b).unwrap();
    assert_eq!(b, [5, 5, 5, 5, 6, 6, 6, 6]);
    s.execute(a + 3 * P + 8, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 4, 9, 9, 9, 9]);
    s.execute(a + 3 * P + 8, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 4, 9, 9, 9, 9]);
    assert_eq!(watch(), Vec::<usize>::new(), "fetches write nothing");
}

/// A write through the engine (here one across two blocks, which no grant covers) that
/// stores the first page of blocks already granted is read back through their grants:
/// a grant made while its block held no page learns of the pages stored afterwards.
#[test]
fn pages_a_write_across_granted_blocks_stores_are_read_through_their_grants() {
    let s = SimSpace::simulated();
    let a = s.alloc(0, 4 * G, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
    let read = |at: usize| {
        let mut b = [0xEE; 8];
        s.read(at, &mut b).unwrap();
        b
    };
    // One read in each block: each granted, none holding a page.
    for i in 0..4 {
        assert_eq!(read(a + i * G + 8), [0; 8]);
    }
    assert_eq!(s.backend().granted_blocks(), 4);
    assert_eq!(s.backend().stored_pages(), 0);
    for i in 1..4 {
        s.write(a + i * G - 4, &[i as u8, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    }
    assert_eq!(s.backend().stored_pages(), 6);
    assert_eq!(s.backend().granted_blocks(), 4, "the blocks keep their grants");
    for i in 1..4 {
        assert_eq!(read(a + i * G - 8), [0, 0, 0, 0, i as u8, 1, 2, 3], "block {}", i - 1);
        assert_eq!(read(a + i * G), [4, 5, 6, 7, 0, 0, 0, 0], "block {i}");
    }
    // And a granted write to such a page lands on the page the engine stored.
    s.write(a + G + 4, &[9; 4]).unwrap();
    assert_eq!(read(a + G), [4, 5, 6, 7, 9, 9, 9, 9]);
    assert_eq!(s.backend().stored_pages(), 6);
}

/// Data a discarding `MEM_RESET` dropped reads as zeros through the grants its blocks
/// keep (a reset changes no protection, so it takes back no grant), also once pages of
/// other blocks have been stored since: 96 blocks reset (about three in every one of
/// the backend's 32 parts), then a page written in each of 96 blocks never written
/// before (where the storage the reset gave up is used again), then every reset page
/// read through its grant.
#[test]
fn data_a_reset_dropped_stays_dropped_when_other_blocks_are_written() {
    const N: usize = 96;
    let config = SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() };
    let s = SimSpace::simulated_with(config);
    let a = s.alloc(0, N * G, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
    let b = s.alloc(0, N * G, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
    let read = |at: usize| {
        let mut v = [0xEE; 8];
        s.read(at, &mut v).unwrap();
        v
    };
    for i in 0..N {
        s.write(a + i * G + 5 * P + 8, &[1 + i as u8; 8]).unwrap();
        assert_eq!(read(a + i * G + 5 * P + 8), [1 + i as u8; 8]);
    }
    assert_eq!(s.backend().granted_blocks(), N);
    s.alloc(a, N * G, T::RESET, Pr::NOACCESS).unwrap();
    assert_eq!(s.backend().stored_pages(), 0);
    assert_eq!(s.backend().granted_blocks(), N, "a reset takes back no grant");
    for i in 0..N {
        s.write(b + i * G + 5 * P + 8, &[0x80 + i as u8; 8]).unwrap();
    }
    for i in 0..N {
        assert_eq!(read(a + i * G + 5 * P + 8), [0; 8], "reset block {i}");
        assert_eq!(read(b + i * G + 5 * P + 8), [0x80 + i as u8; 8], "written block {i}");
    }
    // Written again through the grants: each block's page holds its own data.
    for i in 0..N {
        s.write(a + i * G + 5 * P + 8, &[2 + i as u8; 8]).unwrap();
    }
    for i in 0..N {
        assert_eq!(read(a + i * G + 5 * P + 8), [2 + i as u8; 8], "rewritten block {i}");
        assert_eq!(read(b + i * G + 5 * P + 8), [0x80 + i as u8; 8], "written block {i}");
    }
    assert_eq!(s.backend().stored_pages(), 2 * N);
}

/// A change spanning more blocks than the backend has grant slots (16 MiB, 256 blocks)
/// takes back the grants of every block it touches, whichever slots they sit in, and
/// leaves the grants of blocks outside it.
#[test]
fn a_change_over_more_blocks_than_grant_slots_takes_back_every_grant() {
    const MB: usize = 1 << 20;
    let s = SimSpace::simulated();
    let a = s.alloc(0, 17 * MB, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
    // One write in each block grants it.
    let blocks: Vec<usize> = (0..17 * MB / G).map(|b| a + b * G + 8).collect();
    let write_all = |v: u8| {
        for &x in &blocks {
            s.write(x, &[v]).unwrap();
        }
    };
    write_all(1);
    let inside = |x: &&usize| **x < a + 16 * MB;
    s.protect(a, 16 * MB, Pr::READONLY).unwrap();
    for &x in blocks.iter().filter(inside) {
        assert_eq!(s.write(x, &[2]), Err(av(x, AccessKind::Write)));
        let mut b = [0];
        s.read(x, &mut b).unwrap();
        assert_eq!(b, [1], "{x:#x}");
    }
    for &x in blocks.iter().filter(|x| !inside(x)) {
        s.write(x, &[3]).unwrap();
    }
    s.protect(a, 16 * MB, Pr::READWRITE).unwrap();
    write_all(4);
    s.free(a, 16 * MB, FreeType::DECOMMIT).unwrap();
    for &x in blocks.iter().filter(inside) {
        assert_eq!(s.read(x, &mut [0]), Err(av(x, AccessKind::Read)));
    }
    let mut b = [0];
    s.read(a + 16 * MB + 8, &mut b).unwrap();
    assert_eq!(b, [4]);
    s.free(a, 0, FreeType::RELEASE).unwrap();
    assert_eq!(s.read(a + 16 * MB + 8, &mut [0]), Err(av(a + 16 * MB + 8, AccessKind::Read)));
    assert_eq!(s.backend().stored_pages(), 0);
}

#[test]
fn a_discarding_reset_is_seen_through_a_grant() {
    let config = SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() };
    let (s, a) = granted(config, T::empty());
    s.alloc(a, P, T::RESET, Pr::NOACCESS).unwrap();
    let mut b = [9; 8];
    s.read(a + 100, &mut b).unwrap();
    assert_eq!(b, [0; 8], "the data a reset dropped reads zero");
    s.write(a + 200, &[5]).unwrap();
    assert_eq!(s.alloc(a, P, T::RESET_UNDO, Pr::NOACCESS), Err(Error::DataDiscarded));
}

#[test]
fn a_space_with_grants_answers_as_one_without() {
    let (seeds, calls) = if cfg!(miri) { (2, 300) } else { (16, 3000) };
    for seed in 1..=seeds {
        let with = SimSpace::simulated();
        let without = AddressSpace::with_backend(NoGrants { inner: SimBackend::default() });
        paired::same_answers(&with, &without, seed, calls);
    }
}

/// Another thread's write that starts after a decommit or a protection change returned
/// must fail: what the block was granted before is gone for every thread at once.
#[test]
fn no_write_lands_after_the_call_that_forbade_it() {
    let rounds = if cfg!(miri) { 20 } else { 3000 };
    let s = SimSpace::simulated();
    let a = s.alloc(0, G, T::RESERVE, Pr::NOACCESS).unwrap();
    // Tickets: a writer takes one before each write; after a forbidding call returned,
    // the main thread notes the next ticket, and no write holding that ticket or a later
    // one may succeed until the page is writable again.
    let ticket = AtomicU64::new(0);
    let last_ok = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    /// Stops the writer when the main thread leaves, by a failed assertion too.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    std::thread::scope(|t| {
        let _stop = Stop(&stop);
        t.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                let n = ticket.fetch_add(1, Ordering::SeqCst) + 1;
                if s.write(a + 8, &n.to_le_bytes()).is_ok() {
                    last_ok.fetch_max(n, Ordering::SeqCst);
                }
            }
        });
        for round in 0..rounds {
            s.alloc(a, P, T::COMMIT, Pr::READWRITE).unwrap();
            // Let the writer get its grant and write a few times.
            let from = ticket.load(Ordering::SeqCst);
            while ticket.load(Ordering::SeqCst) < from + 3 {
                std::hint::spin_loop();
            }
            if round % 2 == 0 {
                s.free(a, P, FreeType::DECOMMIT).unwrap();
            } else {
                s.protect(a, P, Pr::READONLY).unwrap();
            }
            let forbidden_from = ticket.load(Ordering::SeqCst) + 1;
            while ticket.load(Ordering::SeqCst) < forbidden_from + 3 {
                std::hint::spin_loop();
            }
            let ok = last_ok.load(Ordering::SeqCst);
            assert!(
                ok < forbidden_from,
                "round {round}: write {ok} succeeded after the change (from {forbidden_from})"
            );
            if round % 2 == 1 {
                // What stays is a write made before the change.
                let mut b = [0; 8];
                s.read(a + 8, &mut b).unwrap();
                assert!(u64::from_le_bytes(b) < forbidden_from, "round {round}");
                s.free(a, P, FreeType::DECOMMIT).unwrap();
            }
        }
    });
}

/// `GetWriteWatch` with `WRITE_WATCH_FLAG_RESET` is one step for the writes of other
/// threads: a thread that writes page `p1` and then page `p2` (both through grants)
/// while the call runs can never leave `p1` dirty and `p2` clean afterwards (that would
/// put the second write before the call and the first after it).
#[test]
fn a_resetting_get_write_watch_is_one_step_for_other_threads() {
    let rounds = if cfg!(miri) { 10 } else { 4000 };
    const BLOCKS: usize = 40;
    let s = SimSpace::simulated();
    let a = s.alloc(0, BLOCKS * G, T::RESERVE | T::COMMIT | T::WRITE_WATCH, Pr::READWRITE).unwrap();
    let (p1, p2) = (a, a + (BLOCKS - 1) * G);
    let watch = |reset: bool| {
        let flags = if reset { WriteWatchFlags::RESET } else { WriteWatchFlags::empty() };
        s.get_write_watch(flags, a, BLOCKS * G, 4 * BLOCKS).unwrap()
    };
    for round in 0..rounds {
        // Every block but p1's dirty (p2's included), so that the call has work to do.
        watch(true);
        for b in 1..BLOCKS {
            s.write(a + b * G, &[1]).unwrap();
        }
        let go = AtomicBool::new(false);
        let first = std::thread::scope(|t| {
            t.spawn(|| {
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                // A few rounds' worth of spread, so that the writes fall anywhere in the call.
                for _ in 0..round % 64 {
                    std::hint::spin_loop();
                }
                s.write(p1, &[2]).unwrap();
                s.write(p2, &[2]).unwrap();
            });
            go.store(true, Ordering::Release);
            watch(true)
        });
        let after = watch(false);
        assert!(
            !after.contains(&p1) || after.contains(&p2),
            "round {round}: p1 left dirty and p2 clean (reported {first:?}, then {after:?})"
        );
    }
}

/// Blocks of `n` 64 KiB reservations, each committed read-write, placed `stride` blocks
/// apart (a hole between them when `stride` > 1), in a fresh space.
fn many_blocks(n: usize, stride: usize) -> (SimSpace, Vec<usize>) {
    let s = SimSpace::simulated();
    let span = s.alloc(0, n * stride * G, T::RESERVE, Pr::NOACCESS).unwrap();
    s.free(span, 0, FreeType::RELEASE).unwrap();
    let bases: Vec<usize> = (0..n).map(|i| span + i * stride * G).collect();
    for &b in &bases {
        assert_eq!(s.alloc(b, G, T::RESERVE | T::COMMIT, Pr::READWRITE), Ok(b));
    }
    (s, bases)
}

/// How many times [`write_and_read_all`] goes over its blocks.
const PASSES: usize = 8;

/// Every block of `bases` accessed [`PASSES`] times in a scrambled order (a write of `v` at
/// each block's offset 8, then a read of it): the first passes go through the engine and
/// grant the blocks (a space's grant slots grow as its grants evict each other), the
/// last ones (on a space that keeps enough grants) through them.
fn write_and_read_all(s: &SimSpace, bases: &[usize], v: u8) {
    let n = bases.len();
    for pass in 0..PASSES {
        for i in 0..n {
            let b = bases[(i * 7919 + pass) % n];
            s.write(b + 8, &[v; 8]).unwrap();
            let mut got = [0; 8];
            s.read(b + 8, &mut got).unwrap();
            assert_eq!(got, [v; 8], "{b:#x}");
        }
    }
}

/// A working set of thousands of 64 KiB blocks (2000 contiguous ones, 125 MiB, 1000
/// reservations with a hole after each, and 10 000 reservations of one block side by
/// side, as the `access` benchmark's `1e4res`) keeps a grant for every block once
/// accessed, so that random accesses over it do not keep going through the engine (a
/// space kept grants for 128 blocks at most at first, then for 8192).
#[test]
fn a_working_set_of_thousands_of_blocks_stays_granted() {
    for (n, stride) in [(2000, 1), (1000, 2), (10_000, 1)] {
        let (s, bases) = many_blocks(n, stride);
        write_and_read_all(&s, &bases, 1);
        write_and_read_all(&s, &bases, 2);
        assert_eq!(s.backend().granted_blocks(), n, "{n} blocks {stride} apart");
    }
}

/// With thousands of blocks granted, every change takes back the grants of exactly the
/// blocks it touches, one block at a time or many at once (protect, decommit, release,
/// a discarding reset): a granted access never sees a stale grant. The space's answers
/// are compared with a space that keeps no grant, and `granted_blocks` shows that the
/// grants were there to take back.
#[test]
fn changes_among_thousands_of_granted_blocks_take_back_exactly_their_grants() {
    const N: usize = 2000;
    let config = SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() };
    let s = SimSpace::simulated_with(config);
    let a = s.alloc(0, N * G, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
    let bases: Vec<usize> = (0..N).map(|i| a + i * G).collect();
    write_and_read_all(&s, &bases, 1);
    assert_eq!(s.backend().granted_blocks(), N);
    // One block in three made read-only, one in three decommitted (its first page), one
    // call each: each takes back its block's grant alone.
    for (i, &b) in bases.iter().enumerate() {
        match i % 3 {
            0 => s.protect(b, G, Pr::READONLY).map(|_| ()).unwrap(),
            1 => s.free(b, P, FreeType::DECOMMIT).unwrap(),
            _ => {}
        }
    }
    assert_eq!(s.backend().granted_blocks(), N / 3, "the untouched blocks keep theirs");
    for (i, &b) in bases.iter().enumerate() {
        let mut got = [0; 8];
        match i % 3 {
            0 => {
                assert_eq!(s.write(b + 8, &[2]), Err(av(b + 8, AccessKind::Write)));
                s.read(b + 8, &mut got).unwrap();
                assert_eq!(got, [1; 8], "{b:#x}");
            }
            1 => {
                assert_eq!(s.read(b + 8, &mut got), Err(av(b + 8, AccessKind::Read)));
                s.write(b + P, &[3]).unwrap();
            }
            _ => {
                s.read(b + 8, &mut got).unwrap();
                assert_eq!(got, [1; 8], "{b:#x}");
            }
        }
    }
    // One protect over all of them (2000 blocks, more than the space has slots in any
    // one part; the decommitted pages committed again first): every grant goes,
    // including those just made again.
    s.alloc(a, N * G, T::COMMIT, Pr::READWRITE).unwrap();
    write_and_read_all(&s, &bases[2..3], 4);
    assert!(s.backend().granted_blocks() > 0);
    s.protect(a, N * G, Pr::NOACCESS).unwrap();
    assert_eq!(s.backend().granted_blocks(), 0);
    for &b in &bases {
        assert_eq!(s.read(b + P, &mut [0]), Err(av(b + P, AccessKind::Read)));
    }
    // Granted again, then a discarding reset of the middle half: the data it dropped
    // read zero through whatever grant is left.
    s.protect(a, N * G, Pr::READWRITE).unwrap();
    write_and_read_all(&s, &bases, 5);
    s.alloc(a + N / 4 * G, N / 2 * G, T::RESET, Pr::NOACCESS).unwrap();
    for (i, &b) in bases.iter().enumerate() {
        let mut got = [9; 8];
        s.read(b + 8, &mut got).unwrap();
        let want = if (N / 4..3 * N / 4).contains(&i) { [0; 8] } else { [5; 8] };
        assert_eq!(got, want, "block {i}");
    }
    // A decommit of the upper half, then the release of the whole reservation.
    write_and_read_all(&s, &bases, 6);
    s.free(a + N / 2 * G, N / 2 * G, FreeType::DECOMMIT).unwrap();
    assert_eq!(s.backend().granted_blocks(), N / 2);
    for (i, &b) in bases.iter().enumerate() {
        let r = s.write(b + 8, &[7]);
        if i < N / 2 {
            assert_eq!(r, Ok(()), "block {i}");
        } else {
            assert_eq!(r, Err(av(b + 8, AccessKind::Write)), "block {i}");
        }
    }
    s.free(a, 0, FreeType::RELEASE).unwrap();
    assert_eq!(s.backend().granted_blocks(), 0);
    for &b in &bases {
        assert_eq!(s.read(b + 8, &mut [0]), Err(av(b + 8, AccessKind::Read)));
    }
    assert_eq!(s.backend().stored_pages(), 0);
}

/// A snapshot and a restore forget every grant of the space (the copy's pages are shared
/// copy-on-write, and the restored contents replace the old): accesses over thousands of
/// blocks read the right side's data afterwards, and writes land on one side only.
#[test]
fn a_snapshot_and_a_restore_forget_thousands_of_grants() {
    let (s, bases) = many_blocks(1500, 1);
    write_and_read_all(&s, &bases, 1);
    assert_eq!(s.backend().granted_blocks(), bases.len());
    let copy = s.snapshot();
    assert_eq!(s.backend().granted_blocks(), 0);
    write_and_read_all(&s, &bases, 2);
    assert_eq!(s.backend().granted_blocks(), bases.len());
    for &b in &bases {
        let mut got = [0; 8];
        copy.read(b + 8, &mut got).unwrap();
        assert_eq!(got, [1; 8], "the snapshot keeps its data: {b:#x}");
    }
    s.restore_from(&copy).unwrap();
    assert_eq!(s.backend().granted_blocks(), 0);
    for &b in &bases {
        let mut got = [0; 8];
        s.read(b + 8, &mut got).unwrap();
        assert_eq!(got, [1; 8], "restored: {b:#x}");
    }
}

/// Random calls over more blocks than a space ever kept grants for before (600 blocks in
/// 150 reservations), accesses at random among them mixed with changes of one or many
/// blocks: a space with grants answers exactly as one without.
#[test]
fn random_changes_among_hundreds_of_granted_blocks_answer_as_without_grants() {
    let rounds = if cfg!(miri) { 200 } else { 20_000 };
    let with = SimSpace::simulated();
    let without = AddressSpace::with_backend(NoGrants { inner: SimBackend::default() });
    const RES: usize = 150;
    const BLOCKS: usize = 4;
    let mut bases = Vec::new();
    for _ in 0..RES {
        let b = with.alloc(0, BLOCKS * G, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
        assert_eq!(without.alloc(b, BLOCKS * G, T::RESERVE | T::COMMIT, Pr::READWRITE), Ok(b));
        bases.push(b);
    }
    let mut rng = rng::Rng(0x5eed_6a27);
    let prots = [Pr::READWRITE, Pr::READONLY, Pr::NOACCESS, Pr::EXECUTE_READ, Pr::READWRITE | Pr::GUARD];
    for round in 0..rounds {
        let r = bases[rng.below(RES)];
        let at = r + rng.below(BLOCKS * G / 8) * 8;
        let what = rng.below(100);
        macro_rules! both {
            ($f:expr) => {{
                let f = $f;
                let (x, y) = (f(&with as &dyn AnySpace), f(&without as &dyn AnySpace));
                assert_eq!(x, y, "round {round}, call {what} at {at:#x}");
            }};
        }
        match what {
            0..=44 => {
                both!(|s: &dyn AnySpace| s.w(at, round as u64));
            }
            45..=89 => {
                both!(|s: &dyn AnySpace| s.r(at));
            }
            90..=94 => {
                let len = (1 + rng.below(BLOCKS * G / P - (at - r) / P)) * P;
                let p = prots[rng.below(prots.len())];
                both!(|s: &dyn AnySpace| s.prot(at & !(P - 1), len, p));
            }
            95..=97 => {
                let len = (1 + rng.below(BLOCKS * G / P - (at - r) / P)) * P;
                both!(|s: &dyn AnySpace| s.decommit_then_commit(at & !(P - 1), len));
            }
            _ => {
                // A whole reservation released and reserved again at the same place.
                both!(|s: &dyn AnySpace| s.renew(r, BLOCKS * G));
            }
        }
    }
}

/// The calls the random test makes, on a space of either backend.
trait AnySpace {
    fn w(&self, at: usize, v: u64) -> Result<(), Error>;
    fn r(&self, at: usize) -> Result<u64, Error>;
    fn prot(&self, at: usize, len: usize, p: Pr) -> Result<Pr, Error>;
    fn decommit_then_commit(&self, at: usize, len: usize) -> Result<(), Error>;
    fn renew(&self, base: usize, len: usize) -> Result<(), Error>;
}

impl<B: Backend> AnySpace for AddressSpace<B> {
    fn w(&self, at: usize, v: u64) -> Result<(), Error> {
        self.write(at, &v.to_le_bytes())
    }
    fn r(&self, at: usize) -> Result<u64, Error> {
        let mut b = [0; 8];
        self.read(at, &mut b).map(|()| u64::from_le_bytes(b))
    }
    fn prot(&self, at: usize, len: usize, p: Pr) -> Result<Pr, Error> {
        self.protect(at, len, p)
    }
    fn decommit_then_commit(&self, at: usize, len: usize) -> Result<(), Error> {
        self.free(at, len, FreeType::DECOMMIT)?;
        self.alloc(at, len, T::COMMIT, Pr::READWRITE).map(|_| ())
    }
    fn renew(&self, base: usize, len: usize) -> Result<(), Error> {
        self.free(base, 0, FreeType::RELEASE)?;
        self.alloc(base, len, T::RESERVE | T::COMMIT, Pr::READWRITE).map(|_| ())
    }
}

/// A release of a reservation inside one 64 KiB block (the simulated backend's usual
/// case, which finds the block's part once) takes back the block's grant and drops its
/// stored pages, with and without write watching, and with the grant already taken
/// back by a change of protection (the data stays stored): the released pages refuse
/// every access, and the same addresses reserved and committed again read zero.
#[test]
fn a_release_inside_one_block_takes_back_its_grant_and_its_pages() {
    for (ty, reprotect) in [(T::empty(), false), (T::WRITE_WATCH, false), (T::empty(), true), (T::WRITE_WATCH, true)] {
        let s = SimSpace::simulated_with(SimConfig::default());
        let a = s.alloc(0, G, T::RESERVE | T::COMMIT | ty, Pr::READWRITE).unwrap();
        s.write(a + P + 8, &[5; 8]).unwrap();
        let mut b = [0; 8];
        s.read(a + P + 8, &mut b).unwrap();
        assert_eq!(b, [5; 8], "{ty:?}, protection changed: {reprotect}");
        if reprotect {
            // (Not read again: a read would grant the block anew.)
            s.protect(a, G, Pr::READONLY).unwrap();
        }
        assert!(s.backend().stored_pages() > 0, "{ty:?}, protection changed: {reprotect}");
        s.free(a, 0, FreeType::RELEASE).unwrap();
        assert_eq!(s.backend().stored_pages(), 0, "{ty:?}, protection changed: {reprotect}");
        assert_eq!(
            s.read(a + P + 8, &mut [0]),
            Err(av(a + P + 8, AccessKind::Read)),
            "{ty:?}, protection changed: {reprotect}"
        );
        assert_eq!(
            s.write(a + P + 8, &[1]),
            Err(av(a + P + 8, AccessKind::Write)),
            "{ty:?}, protection changed: {reprotect}"
        );
        assert_eq!(
            s.alloc(a, G, T::RESERVE | T::COMMIT | ty, Pr::READWRITE),
            Ok(a),
            "{ty:?}, protection changed: {reprotect}"
        );
        let mut b = [9; 8];
        s.read(a + P + 8, &mut b).unwrap();
        assert_eq!(b, [0; 8], "{ty:?}, protection changed: {reprotect}: a page committed again reads zero");
    }
}
