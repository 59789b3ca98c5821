//! The calls a GC/JIT runtime asked for on top of `VirtualAlloc` & co. (see
//! `runtime_review.rs`), on the simulated and the Linux backend:
//!
//! - `reset` / `reset_undo`: `MEM_RESET` / `MEM_RESET_UNDO` without a protection to
//!   ignore, with the same rules and error codes as the `alloc` form, and an undo that
//!   says whether the data survived;
//! - `get_write_watch_into`: `GetWriteWatch` into the caller's buffer (count written,
//!   `WRITE_WATCH_FLAG_RESET` resets exactly what was reported);
//! - `Reservation`: a reservation released when dropped.

mod common;
mod host_util;

use common::{G, P};
use host_util::forward_space;
use virtmem::{
    AddressRequirements, AddressSpace, AllocationType as T, Error, FreeType as F, MemState, Protection as Pr,
    Reservation, ResetPolicy, ResetUndo, SimConfig, SimSpace, VirtualSpace, WriteWatchFlags as W,
};

/// A space that implements only the trait's required methods, passed on to `inner`:
/// the provided methods (`reset`, `reset_undo`, `get_write_watch_into`) are the trait's
/// defaults, which must answer as the space's own.
#[derive(Debug)]
struct Plain<S> {
    inner: S,
}

impl<S: VirtualSpace> VirtualSpace for Plain<S> {
    forward_space!(inner: alloc, free, query, protect, protect_detailed, lock, unlock, get_write_watch);
    forward_space!(inner: reset_write_watch, write_watch_pages, check, check_quiet, read, write, execute, system_info);
    forward_space!(inner: stats, regions, set_commit_limit, commit_limit, committed_bytes, reserved_bytes);
    fn flush_instruction_cache(&self, address: usize, size: usize) {
        self.inner.flush_instruction_cache(address, size)
    }
}

fn sim_discard() -> SimSpace {
    SimSpace::simulated_with(SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() })
}

/// The spaces each test runs on: simulated (data kept by a reset, and data dropped by
/// it) and, on Linux, real memory; each also behind [`Plain`] (the trait's defaults).
fn spaces() -> Vec<(&'static str, Box<dyn VirtualSpace>)> {
    let mut out: Vec<(&'static str, Box<dyn VirtualSpace>)> = vec![
        ("sim keep", Box::new(SimSpace::simulated())),
        ("sim discard", Box::new(sim_discard())),
        ("sim keep, trait defaults", Box::new(Plain { inner: SimSpace::simulated() })),
        ("sim discard, trait defaults", Box::new(Plain { inner: sim_discard() })),
    ];
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        // Each in a window of its own: the tests run in parallel in one process, and
        // some expect an address next to their reservation to be free.
        out.push(("linux", Box::new(common::linux::space(common::WINDOW))));
        out.push(("linux, trait defaults", Box::new(Plain { inner: common::linux::space(common::WINDOW) })));
    }
    out
}

// ----- 1. reset / reset_undo ------------------------------------------------------------

/// What `alloc(.., RESET | RESET_UNDO, ..)` answers, as the new calls answer it: the
/// reset's `Ok(())`, the undo's `Ok(Intact)` or `Ok(Discarded)` (`ERROR_BUSY` from alloc).
fn via_alloc_reset(s: &dyn VirtualSpace, a: usize, n: usize) -> Result<(), Error> {
    s.alloc(a, n, T::RESET, Pr::READWRITE).map(|_| ())
}

fn via_alloc_undo(s: &dyn VirtualSpace, a: usize, n: usize) -> Result<ResetUndo, Error> {
    match s.alloc(a, n, T::RESET_UNDO, Pr::READWRITE) {
        Ok(_) => Ok(ResetUndo::Intact),
        Err(Error::DataDiscarded) => Ok(ResetUndo::Discarded),
        Err(e) => Err(e),
    }
}

/// Every range the rules judge, given to `reset`/`reset_undo` and to the `alloc` form:
/// the same answer, error code for error code (size 0, below the lowest address, past
/// the top, wrapping, free memory, past a reservation's end, across two reservations, a
/// reserved-only range, a committed one, an unaligned one).
#[test]
fn reset_and_undo_answer_as_the_alloc_form() {
    for (name, s) in spaces() {
        let s = &*s;
        let a = s.alloc(0, 16 * P, T::RESERVE, Pr::NOACCESS).unwrap();
        let b = s.alloc(a + 16 * P, 16 * P, T::RESERVE, Pr::NOACCESS);
        s.alloc(a, 4 * P, T::COMMIT, Pr::READWRITE).unwrap();
        let top = s.system_info().maximum_application_address + 1;
        let mut cases: Vec<(usize, usize)> = vec![
            (a, 0),
            (0, P),
            (0x1000, P),
            (top - P, 2 * P),
            (usize::MAX - P, 2 * P),
            (top, P),
            (a + 64 * G, P),    // free
            (a, 17 * P),        // past the end
            (a + 8 * P, P),     // reserved only
            (a, 4 * P),         // committed
            (a + 10, 2 * P),    // unaligned, rounded out
            (a + P - 1, 2),     // two pages
            (a + 3 * P, 3 * P), // committed and reserved
        ];
        if let Ok(b) = b {
            if b == a + 16 * P {
                cases.push((a + 8 * P, 16 * P)); // across two reservations
            }
        }
        for (addr, size) in cases {
            let want = via_alloc_reset(s, addr, size);
            assert_eq!(s.reset(addr, size), want, "{name}: reset {addr:#x}+{size:#x}");
            let want = via_alloc_undo(s, addr, size);
            assert_eq!(s.reset_undo(addr, size), want, "{name}: reset_undo {addr:#x}+{size:#x}");
        }
        // The errors themselves, so that the comparison above is not between two
        // answers that are both wrong.
        assert_eq!(s.reset(a, 0), Err(Error::InvalidParameter), "{name}");
        assert_eq!(s.reset(0x1000, P), Err(Error::InvalidParameter), "{name}");
        assert_eq!(s.reset(a + 64 * G, P), Err(Error::InvalidAddress), "{name}");
        assert_eq!(s.reset(a, 17 * P), Err(Error::InvalidAddress), "{name}");
        assert_eq!(s.reset_undo(a, 17 * P), Err(Error::InvalidAddress), "{name}");
        assert_eq!(s.reset_undo(usize::MAX - P, 2 * P), Err(Error::InvalidParameter), "{name}");
        assert_eq!(s.reset(a + 8 * P, P), Ok(()), "{name}");
        s.free(a, 0, F::RELEASE).unwrap();
        if let Ok(b) = b {
            s.free(b, 0, F::RELEASE).unwrap();
        }
    }
}

/// The reset keeps state and protection; the undo says whether the data survived, as
/// the alloc form would: `Intact` when it did, `Discarded` (the alloc form's
/// `ERROR_BUSY`) when some was dropped, and the dropped pages read zero.
#[test]
fn reset_undo_tells_whether_the_data_survived() {
    for (name, s) in spaces() {
        let s = &*s;
        let a = s.alloc(0, 8 * P, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
        s.write(a + 100, b"live object").unwrap();
        s.write(a + 5 * P, b"another").unwrap();
        assert_eq!(s.reset(a, 8 * P), Ok(()), "{name}");
        let q = s.query(a).unwrap();
        assert_eq!((q.state, q.protect, q.region_size), (MemState::Commit, Pr::READWRITE, 8 * P), "{name}");
        assert_eq!(s.committed_bytes() % P, 0);
        let discard = name.starts_with("sim discard");
        let linux = name.starts_with("linux");
        if linux {
            // The program stores zeros over the first page after the reset (allowed: it
            // is its memory): its data is gone, and the undo must say so.
            s.write(a, &[0u8; P]).unwrap();
        }
        let want = if discard || linux { ResetUndo::Discarded } else { ResetUndo::Intact };
        assert_eq!(s.reset_undo(a, 8 * P), Ok(want), "{name}");
        assert_eq!(want.is_intact(), want == ResetUndo::Intact);
        let mut buf = [0u8; 11];
        s.read(a + 100, &mut buf).unwrap();
        assert_eq!(&buf, if want == ResetUndo::Intact { b"live object" } else { &[0u8; 11] }, "{name}");
        // A second undo has nothing left to judge: nothing is lost since.
        assert_eq!(s.reset_undo(a, 8 * P), Ok(ResetUndo::Intact), "{name}");
        // A reset of pages holding nothing loses nothing.
        s.alloc(a + 7 * P, P, T::COMMIT, Pr::READWRITE).unwrap();
        s.free(a + 6 * P, 2 * P, F::DECOMMIT).unwrap();
        s.alloc(a + 6 * P, 2 * P, T::COMMIT, Pr::READWRITE).unwrap();
        assert_eq!(s.reset(a + 6 * P, 2 * P), Ok(()), "{name}");
        assert_eq!(s.reset_undo(a + 6 * P, 2 * P), Ok(ResetUndo::Intact), "{name}");
        // Exactly when alloc's form says ERROR_BUSY, the call says Discarded.
        s.write(a + 2 * P, b"x").unwrap();
        s.reset(a + 2 * P, P).unwrap();
        if linux {
            s.write(a + 2 * P, &[0u8; P]).unwrap();
        }
        let via_alloc = s.alloc(a + 2 * P, P, T::RESET_UNDO, Pr::READWRITE);
        assert_eq!(via_alloc == Err(Error::DataDiscarded), want == ResetUndo::Discarded, "{name}: {via_alloc:?}");
        s.free(a, 0, F::RELEASE).unwrap();
    }
}

/// On real memory: a reset through the new call really offers the pages to the kernel
/// (`MADV_FREE`: under pressure the kernel drops them) — the undo after `MADV_PAGEOUT`
/// has taken them says `Discarded` and the page reads zero; an undo before says `Intact`.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn reset_on_real_memory_gives_pages_to_the_kernel() {
    let s = common::linux::space(common::WINDOW);
    let a = s.alloc(0, 4 * P, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
    // SAFETY: committed read-write pages of a reservation this test owns.
    unsafe { std::ptr::write_volatile((a + 8) as *mut u64, 0x5EED) };
    s.reset(a, 4 * P).unwrap();
    assert_eq!(s.reset_undo(a, 4 * P), Ok(ResetUndo::Intact));
    s.reset(a, 4 * P).unwrap();
    // SAFETY: MADV_PAGEOUT on our own pages: the kernel reclaims what MADV_FREE offered.
    let r = unsafe { libc::madvise(a as *mut libc::c_void, 4 * P, libc::MADV_PAGEOUT) };
    assert_eq!(r, 0);
    // SAFETY: as above.
    let reclaimed = unsafe { std::ptr::read_volatile((a + 8) as *const u64) } == 0;
    let got = s.reset_undo(a, 4 * P).unwrap();
    assert_eq!(got == ResetUndo::Discarded, reclaimed, "the undo tells what the kernel did: {got:?}");
    s.free(a, 0, F::RELEASE).unwrap();
}

// ----- 2. get_write_watch_into -----------------------------------------------------------

/// What a buffer entry holds until the call writes it.
const UNTOUCHED: usize = 0xDEAD_BEEF;

/// `GetWriteWatch` into the caller's buffer: the count written, ascending page bases,
/// nothing written past the count; with `WRITE_WATCH_FLAG_RESET` and a buffer smaller
/// than the dirty set, only the reported pages become clean (the rest stay dirty and
/// are reported by the next scans, in order); nothing dirty means count 0 and the buffer
/// untouched; a page written again after its reset is reported again.
#[test]
fn write_watch_into_fills_the_callers_buffer() {
    for (name, s) in spaces() {
        let s = &*s;
        let heap = s.alloc(0, 64 * P, T::RESERVE | T::WRITE_WATCH, Pr::NOACCESS).unwrap();
        s.alloc(heap, 32 * P, T::COMMIT, Pr::READWRITE).unwrap();
        let dirty = [3, 4, 9, 17, 30];
        for &i in &dirty {
            s.write(heap + i * P + 8, &[i as u8 + 1]).unwrap();
        }
        let want: Vec<usize> = dirty.iter().map(|&i| heap + i * P).collect();
        let mut buf = [UNTOUCHED; 8];
        assert_eq!(s.get_write_watch_into(W::empty(), heap, 64 * P, &mut buf), Ok(5), "{name}");
        assert_eq!(buf[..5], want[..], "{name}");
        assert_eq!(buf[5..], [UNTOUCHED; 3], "{name}: written past the count");
        assert_eq!(s.get_write_watch(W::empty(), heap, 64 * P, 8).as_deref(), Ok(&want[..]), "{name}: the Vec form");
        // A part of the reservation, unaligned: the pages it touches.
        let mut buf = [UNTOUCHED; 8];
        assert_eq!(s.get_write_watch_into(W::empty(), heap + 4 * P + 1, 13 * P, &mut buf), Ok(3), "{name}");
        assert_eq!(buf[..3], [want[1], want[2], want[3]], "{name}");
        // A buffer smaller than the dirty set, with reset: the lowest pages, and only
        // they become clean.
        let mut small = [UNTOUCHED; 2];
        assert_eq!(s.get_write_watch_into(W::RESET, heap, 64 * P, &mut small), Ok(2), "{name}");
        assert_eq!(small, [want[0], want[1]], "{name}");
        assert_eq!(s.get_write_watch(W::empty(), heap, 64 * P, 100).as_deref(), Ok(&want[2..]), "{name}");
        assert_eq!(s.get_write_watch_into(W::RESET, heap, 64 * P, &mut small), Ok(2), "{name}");
        assert_eq!(small, [want[2], want[3]], "{name}");
        let mut buf = [UNTOUCHED; 8];
        assert_eq!(s.get_write_watch_into(W::RESET, heap, 64 * P, &mut buf), Ok(1), "{name}");
        assert_eq!(buf[..2], [want[4], UNTOUCHED], "{name}");
        // Nothing dirty: 0, nothing written.
        let mut buf = [UNTOUCHED; 4];
        assert_eq!(s.get_write_watch_into(W::RESET, heap, 64 * P, &mut buf), Ok(0), "{name}");
        assert_eq!(s.get_write_watch_into(W::empty(), heap, 64 * P, &mut buf), Ok(0), "{name}");
        assert_eq!(buf, [UNTOUCHED; 4], "{name}");
        // Written again after its reset: reported again. Without reset, twice.
        s.write(heap + 17 * P, b"again").unwrap();
        for _ in 0..2 {
            assert_eq!(s.get_write_watch_into(W::empty(), heap, 64 * P, &mut buf), Ok(1), "{name}");
            assert_eq!(buf[0], want[3], "{name}");
        }
        s.free(heap, 0, F::RELEASE).unwrap();
    }
}

/// Every argument `GetWriteWatch` refuses gets the same error from the buffer form as
/// from the `Vec` form with `max_count` = the buffer's length (an empty buffer is
/// `*count == 0`: `ERROR_INVALID_PARAMETER`), and a refused call writes nothing into the
/// buffer and resets nothing.
#[test]
fn write_watch_into_refuses_what_get_write_watch_refuses() {
    for (name, s) in spaces() {
        let s = &*s;
        let heap = s.alloc(0, 16 * P, T::RESERVE | T::WRITE_WATCH | T::COMMIT, Pr::READWRITE).unwrap();
        let plain = s.alloc(0, 16 * P, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
        s.write(heap + 2 * P, b"x").unwrap();
        let bad = W::from_bits_retain(2);
        let top = s.system_info().maximum_application_address + 1;
        let cases: [(W, usize, usize); 12] = [
            (bad, heap, 16 * P),
            (W::RESET | bad, heap, 16 * P),
            (W::RESET, heap, 0),
            (W::RESET, heap, 17 * P),
            (W::RESET, heap + 15 * P, 2 * P),
            (W::RESET, plain, P),
            (W::RESET, heap + 64 * G, P),
            (W::RESET, 0, P),
            (W::RESET, usize::MAX - P, 2 * P),
            (W::RESET, top, P),
            (W::empty(), heap - P, 2 * P),
            (W::empty(), heap + P - 1, 2), // accepted
        ];
        for (flags, base, size) in cases {
            for len in [0, 1, 4] {
                let mut buf = [UNTOUCHED; 4];
                let got = s.get_write_watch_into(flags, base, size, &mut buf[..len]);
                let want = s.get_write_watch(flags, base, size, len).map(|v| v.len());
                assert_eq!(got, want, "{name}: {flags:?} {base:#x}+{size:#x}, buffer of {len}");
                if got.is_err() {
                    assert_eq!(buf, [UNTOUCHED; 4], "{name}: a refused call wrote");
                }
            }
        }
        // The errors themselves (so that the comparison is not of two wrong answers).
        let mut buf = [UNTOUCHED; 4];
        assert_eq!(s.get_write_watch_into(W::empty(), heap, 16 * P, &mut []), Err(Error::InvalidParameter), "{name}");
        assert_eq!(s.get_write_watch_into(bad, heap, 16 * P, &mut buf), Err(Error::InvalidParameter), "{name}");
        assert_eq!(s.get_write_watch_into(W::RESET, heap, 17 * P, &mut buf), Err(Error::InvalidParameter), "{name}");
        assert_eq!(s.get_write_watch_into(W::RESET, plain, P, &mut buf), Err(Error::InvalidParameter), "{name}");
        // Nothing was reset by the refused calls.
        assert_eq!(s.get_write_watch_into(W::RESET, heap, 16 * P, &mut buf), Ok(1), "{name}");
        assert_eq!(buf[0], heap + 2 * P, "{name}");
        s.free(heap, 0, F::RELEASE).unwrap();
        s.free(plain, 0, F::RELEASE).unwrap();
    }
}

/// On real memory, stores through pointers are what the buffer form reports (the kernel
/// tracks them), a page at a time as the GC's card scan asks.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn write_watch_into_sees_stores_through_pointers() {
    let s = common::linux::space(2 << 30);
    let heap = s.alloc(0, 1 << 30, T::RESERVE | T::WRITE_WATCH, Pr::NOACCESS).unwrap();
    s.alloc(heap, 1024 * P, T::COMMIT, Pr::READWRITE).unwrap();
    let pages: Vec<usize> = (0..1024).filter(|i| i % 7 == 3).collect();
    for &i in &pages {
        // SAFETY: a committed read-write page of the heap this test owns.
        unsafe { std::ptr::write_volatile((heap + i * P + 16) as *mut u64, i as u64) };
    }
    let mut seen = Vec::new();
    let mut one = [0usize; 1];
    loop {
        match s.get_write_watch_into(W::RESET, heap, 1 << 30, &mut one) {
            Ok(0) => break,
            Ok(1) => seen.push((one[0] - heap) / P),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, pages);
    s.free(heap, 0, F::RELEASE).unwrap();
}

// ----- 3. Reservation ---------------------------------------------------------------------

/// The guard's life on each space: reserve (size rounded up to pages, base at a
/// granule), commit, protect, reset, decommit inside it; every sub-range not inside it
/// refused with `ERROR_INVALID_ADDRESS` (a zero size with `ERROR_INVALID_PARAMETER`)
/// and nothing changed; the drop releases it (the space's totals back where they were,
/// the range free).
#[test]
fn a_reservation_is_released_when_dropped() {
    for (name, s) in spaces() {
        let s = &*s;
        let before = (s.reserved_bytes(), s.committed_bytes(), s.stats().reservations);
        let r = Reservation::new(s, 10 * P + 1, Pr::NOACCESS).unwrap();
        let (base, len) = (r.base(), r.len());
        assert_eq!((base % G, len, r.end(), r.range()), (0, 11 * P, base + len, base..base + len), "{name}");
        assert!(!r.is_empty());
        let q = s.query(base).unwrap();
        assert_eq!((q.state, q.allocation_base, q.region_size), (MemState::Reserve, base, 11 * P), "{name}");
        assert_eq!(r.commit(base + P, 2 * P, Pr::READWRITE), Ok(base + P), "{name}");
        s.write(base + P, b"object").unwrap();
        assert_eq!(r.protect(base + P, P, Pr::READONLY), Ok(Pr::READWRITE), "{name}");
        assert_eq!(r.reset(base + 2 * P, P), Ok(()), "{name}");
        assert!(r.reset_undo(base + 2 * P, P).is_ok(), "{name}");
        assert_eq!(r.commit(base + 10 * P, 1, Pr::READWRITE), Ok(base + 10 * P), "{name}: the last page");
        let inside = common::snapshot(s, base..base + len);
        let stats = s.stats();
        let outside: [(usize, usize); 6] = [
            (base + len, P),         // just past it
            (base + 10 * P, P + 1),  // running past its end
            (base - P, 2 * P),       // starting before it
            (base - P, P),           // before it
            (usize::MAX - P, 2 * P), // wrapping
            (0, P),
        ];
        for (a, n) in outside {
            assert_eq!(r.commit(a, n, Pr::READWRITE), Err(Error::InvalidAddress), "{name}: commit {a:#x}+{n:#x}");
            assert_eq!(r.decommit(a, n), Err(Error::InvalidAddress), "{name}: decommit {a:#x}+{n:#x}");
            assert_eq!(r.protect(a, n, Pr::READWRITE), Err(Error::InvalidAddress), "{name}: protect {a:#x}+{n:#x}");
            assert_eq!(r.reset(a, n), Err(Error::InvalidAddress), "{name}: reset {a:#x}+{n:#x}");
            assert_eq!(r.reset_undo(a, n), Err(Error::InvalidAddress), "{name}: reset_undo {a:#x}+{n:#x}");
        }
        assert_eq!(r.commit(base, 0, Pr::READWRITE), Err(Error::InvalidParameter), "{name}");
        assert_eq!(r.decommit(base, 0), Err(Error::InvalidParameter), "{name}: not the whole reservation");
        assert_eq!(r.protect(base, 0, Pr::READWRITE), Err(Error::InvalidParameter), "{name}");
        assert_eq!(
            (common::snapshot(s, base..base + len), s.stats()),
            (inside, stats),
            "{name}: a refusal changed something"
        );
        // The space's own rules still apply inside: a bad protection, a reserved page.
        assert_eq!(r.commit(base, P, Pr::WRITECOPY), Err(Error::InvalidParameter), "{name}");
        assert_eq!(r.protect(base + 4 * P, P, Pr::READWRITE), Err(Error::InvalidAddress), "{name}");
        assert_eq!(r.decommit(base + P, 2 * P), Ok(()), "{name}");
        assert_eq!(s.query(base + P).unwrap().state, MemState::Reserve, "{name}");
        r.commit(base, 3 * P, Pr::READWRITE).unwrap();
        drop(r);
        assert_eq!((s.reserved_bytes(), s.committed_bytes(), s.stats().reservations), before, "{name}");
        let q = s.query(base).unwrap();
        assert_eq!((q.state, q.allocation_base), (MemState::Free, 0), "{name}");
    }
}

/// `into_raw` gives up ownership (the reservation stays, the drop releases nothing),
/// `from_raw` takes it back; `release` reports what the release answered; a guard
/// whose reservation was released behind its back (or whose release the backend
/// refuses) does not panic on drop.
#[test]
fn ownership_can_be_given_up_taken_back_and_lost_without_a_panic() {
    for (name, s) in spaces() {
        let s = &*s;
        let r = Reservation::new(s, 3 * P, Pr::READWRITE).unwrap();
        let (base, len) = r.into_raw();
        assert_eq!(len, 3 * P);
        assert_eq!(s.query(base).unwrap().state, MemState::Reserve, "{name}: into_raw released it");
        let r = Reservation::from_raw(s, base, len);
        assert_eq!((r.base(), r.len()), (base, len));
        assert_eq!(r.release(), Ok(()), "{name}");
        assert_eq!(s.query(base).unwrap().state, MemState::Free, "{name}");

        // Released behind the guard's back: the explicit release says so, a drop is quiet.
        let r = Reservation::new(s, P, Pr::READWRITE).unwrap();
        s.free(r.base(), 0, F::RELEASE).unwrap();
        assert_eq!(r.release(), Err(Error::InvalidAddress), "{name}");
        let r = Reservation::new(s, P, Pr::READWRITE).unwrap();
        s.free(r.base(), 0, F::RELEASE).unwrap();
        drop(r);
        // A nonsense pair given to from_raw (past the top, its end wrapping): the space
        // refuses every call, nothing panics.
        let r = Reservation::from_raw(s, usize::MAX - P + 1, 2 * P);
        assert!(r.contains(usize::MAX - P + 1, 16), "{name}");
        assert_eq!(r.commit(usize::MAX - P + 1, 16, Pr::READWRITE), Err(Error::InvalidParameter), "{name}");
        assert_eq!(r.reset(usize::MAX - P + 1, 16), Err(Error::InvalidParameter), "{name}");
        assert_eq!(r.release(), Err(Error::InvalidParameter), "{name}");
        drop(Reservation::from_raw(s, usize::MAX - P + 1, 2 * P));
    }
    // A backend that refuses the release: the drop neither panics nor pretends.
    use virtmem::backend::faulty::Faulty;
    let s = virtmem::AddressSpace::with_backend(Faulty::new(virtmem::SimBackend::default()));
    let r = s.reservation(4 * P, Pr::NOACCESS).unwrap();
    let base = r.base();
    s.backend().arm(1);
    drop(r);
    assert!(s.backend().fired());
    assert_eq!(s.query(base).unwrap().state, MemState::Reserve, "the refused release left it reserved");
    s.free(base, 0, F::RELEASE).unwrap();
}

/// Made with any type and address (write watch, a fixed address), on any
/// `VirtualSpace` (an `Arc<dyn VirtualSpace>` it keeps alive, a `&dyn`), and sent to
/// another thread that drops it. A type that would not make a new reservation is refused
/// and reserves nothing.
#[test]
fn a_reservation_of_any_type_on_any_space_and_thread() {
    for (name, s) in spaces() {
        let s: std::sync::Arc<dyn VirtualSpace> = std::sync::Arc::from(s);
        let r = Reservation::with_type(s.clone(), 0, 64 * P, T::RESERVE | T::WRITE_WATCH, Pr::NOACCESS).unwrap();
        let base = r.base();
        r.commit(base, P, Pr::READWRITE).unwrap();
        s.write(base + 5, b"w").unwrap();
        let mut cards = [0usize; 4];
        assert_eq!(s.get_write_watch_into(W::RESET, base, 64 * P, &mut cards), Ok(1), "{name}");
        // At a fixed address: the granule below it, to the page after its end.
        let free = base + 16 * G;
        assert_eq!(s.query(free).unwrap().state, MemState::Free, "{name}");
        let fixed = Reservation::with_type(&*s, free + 3 * P + 5, P, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
        assert_eq!((fixed.base(), fixed.len()), (free, 5 * P), "{name}");
        assert_eq!(s.query(free).unwrap().state, MemState::Commit, "{name}");
        drop(fixed);
        assert_eq!(s.query(free).unwrap().state, MemState::Free, "{name}");
        let reserved = s.reserved_bytes();
        for ty in [T::COMMIT, T::RESET, T::RESET_UNDO, T::empty()] {
            let got = Reservation::with_type(&*s, base, P, ty, Pr::READWRITE).map(|r| r.into_raw());
            assert_eq!(got, Err(Error::InvalidParameter), "{name}: {ty:?}");
        }
        assert_eq!(s.reserved_bytes(), reserved, "{name}");
        std::thread::scope(|scope| {
            scope.spawn(move || drop(r));
        });
        assert_eq!(s.query(base).unwrap().state, MemState::Free, "{name}: dropped on another thread");
    }
}

/// A `LinuxSpace` dropped leaves its reservations mapped (on purpose); a `Reservation`
/// made on it is the way to have one released: the backend holds no reservation after
/// the guard's drop, and the pages that held data are no longer resident (the range
/// may stay mapped inaccessible or be kept for reuse: `LinuxBackend::stats`).
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn a_reservation_on_real_memory_gives_its_memory_back() {
    // In a window of its own: the other tests of this binary reserve (and write) in
    // parallel, and could take the range as soon as it is free.
    let s = common::linux::space(2 << 30);
    let r = Reservation::with_type(&s, 0, 1 << 30, T::RESERVE, Pr::NOACCESS).unwrap();
    let range = r.range();
    r.commit(range.start, 2 * P, Pr::READWRITE).unwrap();
    // SAFETY: committed read-write pages of the reservation, owned by this test.
    unsafe {
        std::ptr::write_volatile(range.start as *mut u64, 7);
        std::ptr::write_volatile((range.start + P) as *mut u64, 8);
    }
    let resident = |start: usize| {
        let mut v = [0u8; 2];
        // SAFETY: mincore only reads page-table state and writes 2 bytes into `v`.
        let r = unsafe { libc::mincore(start as *mut libc::c_void, 2 * P, v.as_mut_ptr()) };
        // (ENOMEM: not mapped at all.)
        if r == 0 {
            v.iter().filter(|&&b| b & 1 != 0).count()
        } else {
            0
        }
    };
    assert_eq!((s.backend().inner().stats().reservations, resident(range.start)), (1, 2));
    drop(r);
    assert_eq!((s.backend().inner().stats().reservations, resident(range.start)), (0, 0));
    assert_eq!(s.query(range.start).unwrap().state, MemState::Free);
    assert_eq!((s.reserved_bytes(), s.committed_bytes()), (0, 0));
}

// ----- 4. A reserve inside an address window (VirtualAlloc2's MEM_ADDRESS_REQUIREMENTS) ---

/// The window of `[lo, hi]` (`hi` inclusive, as `HighestEndingAddress`), aligned.
fn window(lo: usize, hi_end: usize, alignment: usize) -> AddressRequirements {
    AddressRequirements { lowest_starting_address: lo, highest_ending_address: hi_end - 1, alignment }
}

/// A JIT places code within ±2 GiB of a target (where a rel32 call reaches): every
/// reservation it asks for inside that window is inside it, bottom-up (the lowest that
/// fits) or top-down (the highest), aligned as asked, until the window is full — then
/// `ERROR_NOT_ENOUGH_MEMORY`, although the space has room elsewhere.
fn jit_window(s: &AddressSpace<impl virtmem::backend::Backend>, name: &str) {
    const CHUNK: usize = 64 << 20;
    // The target: the middle of a 1 GiB reservation; the window around it is ±2 GiB.
    // (On the simulated space at 1 TiB, so that the whole window lies in the space.)
    let sim = name == "sim";
    let target_res = s.alloc(if sim { 1 << 40 } else { 0 }, 1 << 30, T::RESERVE, Pr::NOACCESS).unwrap();
    let target = target_res + (1 << 29);
    let info = s.system_info();
    let lo = target.saturating_sub(2 << 30).max(info.minimum_application_address).next_multiple_of(G);
    let hi = (target + (2 << 30)).min(info.maximum_application_address + 1) & !(G - 1);
    let mut made = Vec::new();
    let err = loop {
        let top_down = made.len() % 2 == 1;
        let ty = if top_down { T::RESERVE | T::TOP_DOWN } else { T::RESERVE };
        match s.alloc_within(CHUNK, ty, Pr::NOACCESS, window(lo, hi, 0)) {
            Ok(b) => {
                assert!(b >= lo && b + CHUNK <= hi, "{name}: {b:#x} outside {lo:#x}..{hi:#x}");
                assert_eq!(b % G, 0);
                let q = s.query(b).unwrap();
                assert_eq!((q.state, q.allocation_base, q.region_size), (MemState::Reserve, b, CHUNK), "{name}");
                made.push(b);
            }
            Err(e) => break e,
        }
        assert!(made.len() <= 64, "{name}: more 64 MiB reservations than fit in 4 GiB");
    };
    assert_eq!(err, Error::NotEnoughMemory, "{name}");
    // The window held 4 GiB less the target's 1 GiB and what else lives there (on
    // Linux, other mappings may): at least most of it was used.
    assert!(made.len() >= if sim { 48 } else { 8 }, "{name}: only {} reservations", made.len());
    if sim {
        // Deterministic: the lowest fit bottom-up, the highest top-down.
        assert_eq!(made[0], lo, "{name}");
        assert_eq!(made[1], hi - CHUNK, "{name}");
    }
    // Outside the window there is room.
    // (On Linux other tests' mappings in the window may have gone meanwhile.)
    let elsewhere = s.alloc(0, CHUNK, T::RESERVE, Pr::NOACCESS).unwrap();
    assert!(!sim || elsewhere < lo || elsewhere >= hi, "{name}");
    // Alignment: 1 GiB.
    for b in made.drain(..) {
        s.free(b, 0, F::RELEASE).unwrap();
    }
    let b = s.alloc_within(CHUNK, T::RESERVE | T::COMMIT, Pr::READWRITE, window(lo, hi, 1 << 30)).unwrap();
    assert_eq!(b % (1 << 30), 0, "{name}: {b:#x}");
    assert!(b >= lo && b + CHUNK <= hi, "{name}");
    assert_eq!(s.query(b).unwrap().state, MemState::Commit, "{name}");
    s.write(b + 100, b"code").unwrap();
    for a in [b, elsewhere, target_res] {
        s.free(a, 0, F::RELEASE).unwrap();
    }
}

#[test]
fn a_reserve_inside_an_address_window_on_a_simulated_space() {
    jit_window(&SimSpace::simulated(), "sim");
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn a_reserve_inside_an_address_window_on_real_memory() {
    // In a window of its own (the ±2 GiB around the target, and room outside it): the
    // other tests of this binary reserve in parallel.
    jit_window(&common::linux::space(4 << 30), "linux");
}

/// A window with one hole big enough (the rest of it full) gets the hole; the gaps at
/// the window's edges count only for their part inside it.
#[test]
fn a_reserve_inside_a_window_finds_the_only_hole() {
    let s = SimSpace::simulated();
    let w = 0x10_0000_0000usize;
    // [w, w + 16G) full but for a 3-granule hole at w + 5G, and a 1-granule gap at each edge.
    let mut made = Vec::new();
    for (a, n) in [(w + G, 5 * (G << 14) - G), (w + 5 * (G << 14) + 3 * G, 11 * (G << 14) - 4 * G)] {
        made.push(s.alloc(a, n, T::RESERVE, Pr::NOACCESS).unwrap());
    }
    let win = window(w, w + 16 * (G << 14), 0);
    for top_down in [false, true] {
        let ty = if top_down { T::RESERVE | T::TOP_DOWN } else { T::RESERVE };
        let b = s.alloc_within(2 * G, ty, Pr::NOACCESS, win).unwrap();
        let hole = w + 5 * (G << 14);
        assert_eq!(b, if top_down { hole + G } else { hole }, "top_down {top_down}");
        s.free(b, 0, F::RELEASE).unwrap();
    }
    assert_eq!(s.alloc_within(4 * G, T::RESERVE, Pr::NOACCESS, win), Err(Error::NotEnoughMemory));
    // The edge gaps: one granule inside the window, more outside it.
    assert_eq!(s.alloc_within(G, T::RESERVE, Pr::NOACCESS, win), Ok(w));
    assert_eq!(s.alloc_within(G, T::RESERVE | T::TOP_DOWN, Pr::NOACCESS, win), Ok(w + 16 * (G << 14) - G));
    assert_eq!(s.alloc_within(G, T::RESERVE, Pr::NOACCESS, win), Ok(w + 5 * (G << 14)));
    assert_eq!(s.alloc_within(2 * G, T::RESERVE, Pr::NOACCESS, win), Ok(w + 5 * (G << 14) + G));
    assert_eq!(s.alloc_within(G, T::RESERVE | T::TOP_DOWN, Pr::NOACCESS, win), Err(Error::NotEnoughMemory));
    // Below and above the window there is room.
    assert!(s.alloc(w - G, G, T::RESERVE, Pr::NOACCESS).is_ok());
    assert!(s.alloc(w + 16 * (G << 14), G, T::RESERVE, Pr::NOACCESS).is_ok());
}

/// What the window must be (Microsoft's documentation of `MEM_ADDRESS_REQUIREMENTS`): the
/// lowest start a multiple of 64 KiB, the highest end one less than one (or 0: the top),
/// not past the top, not below the lowest start; the alignment 0 or a power of two of at
/// least 64 KiB; and the type one that makes a new reservation. Anything else is
/// `ERROR_INVALID_PARAMETER` and reserves nothing; so are the `alloc` form's own errors.
#[test]
fn an_address_window_is_checked() {
    let s = SimSpace::simulated();
    let top = s.system_info().maximum_application_address;
    let ok = window(0x1000_0000, 0x2000_0000, 0);
    let bad: [(usize, T, AddressRequirements); 12] = [
        (G, T::RESERVE, AddressRequirements { lowest_starting_address: 0x1000_0000 + P, ..ok }),
        (G, T::RESERVE, AddressRequirements { highest_ending_address: 0x2000_0000, ..ok }),
        (G, T::RESERVE, AddressRequirements { highest_ending_address: 0x2000_0000 - 2, ..ok }),
        (G, T::RESERVE, AddressRequirements { highest_ending_address: top + G, ..ok }),
        (G, T::RESERVE, AddressRequirements { lowest_starting_address: 0x3000_0000, ..ok }),
        (G, T::RESERVE, AddressRequirements { alignment: 3 * G, ..ok }),
        (G, T::RESERVE, AddressRequirements { alignment: G / 2, ..ok }),
        (G, T::RESERVE, AddressRequirements { alignment: P, ..ok }),
        (0, T::RESERVE, ok),
        (G, T::RESET, ok),
        (G, T::TOP_DOWN, ok),
        (G, T::RESERVE | T::WRITE_WATCH | T::PHYSICAL, ok),
    ];
    for (size, ty, req) in bad {
        assert_eq!(
            s.alloc_within(size, ty, Pr::NOACCESS, req),
            Err(Error::InvalidParameter),
            "{size:#x} {ty:?} {req:x?}"
        );
    }
    assert_eq!(s.alloc_within(G, T::RESERVE, Pr::WRITECOPY, ok), Err(Error::InvalidParameter));
    assert_eq!(s.stats().reservations, 0);
    // Zeros: the whole space, 64 KiB aligned.
    let any = AddressRequirements::default();
    assert_eq!(s.alloc_within(G, T::RESERVE, Pr::NOACCESS, any), Ok(s.system_info().minimum_application_address));
    assert_eq!(s.alloc_within(G, T::RESERVE | T::TOP_DOWN, Pr::NOACCESS, any), Ok(top + 1 - G));
    // A window that cannot hold the size, and a size past the whole space.
    assert_eq!(
        s.alloc_within(2 * G, T::RESERVE, Pr::NOACCESS, window(0x1000_0000, 0x1001_0000, 0)),
        Err(Error::NotEnoughMemory)
    );
    assert_eq!(s.alloc_within(usize::MAX, T::RESERVE, Pr::NOACCESS, ok), Err(Error::InvalidParameter));
}

/// With `MEM_LARGE_PAGES` the lowest start must be a multiple of the large-page size
/// (Microsoft's documentation of `MEM_ADDRESS_REQUIREMENTS`: "a multiple of the large page
/// size returned by GetLargePageMinimum if large pages are being requested"): one that is
/// only on 64 KiB is `ERROR_INVALID_PARAMETER` and reserves nothing, one on the large-page
/// size places the reservation there; without large pages 64 KiB is enough.
#[test]
fn a_large_page_window_starts_on_a_large_page() {
    let s = SimSpace::simulated();
    let large = s.system_info().large_page_size;
    assert!(large > G, "the simulated space has large pages ({large:#x})");
    let ty = T::RESERVE | T::COMMIT | T::LARGE_PAGES;
    let lo = 0x1_0000_0000;
    for off in [G, large / 2, large - G] {
        let req = window(lo + off, lo + 16 * large, 0);
        assert_eq!(s.alloc_within(large, ty, Pr::READWRITE, req), Err(Error::InvalidParameter), "{off:#x}");
        let req = window(lo + off, lo + 16 * large, 0);
        assert_eq!(s.alloc_within(G, T::RESERVE, Pr::READWRITE, req), Ok(lo + off), "{off:#x} without large pages");
        s.free(lo + off, 0, F::RELEASE).unwrap();
    }
    assert_eq!(s.stats().reservations, 0, "the refused calls reserved nothing");
    assert_eq!(s.alloc_within(large, ty, Pr::READWRITE, window(lo + large, lo + 16 * large, 0)), Ok(lo + large));
}
