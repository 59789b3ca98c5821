//! Failure injection: for every kind of call and every N up to the number of side
//! effects the call performs, a backend that fails its N-th side effect
//! (`backend::faulty::Faulty`) makes the call fail and leaves the space exactly as it was
//! before the call: the VirtualQuery walk, the committed and reserved totals, the bytes
//! of every committed page (read around the rules, so guard pages stay armed), the
//! write-watch state, and on Linux the kernel's mappings of the window (what the CPU
//! allows: every accessible mapping).
//!
//! Runs on the simulated backend and on the Linux backend.

mod common;

use std::ops::Range;

use common::*;
use virtmem::backend::faulty::Faulty;
use virtmem::backend::Backend;
use virtmem::{AddressSpace, Error, MemState, MemoryBasicInformation, WriteWatchFlags};

/// Where the write-watched reservation of the set-up lives, from the window base.
const WW: usize = 2 * G;

/// Mappings as (start, end, "rwxp").
type Maps = Vec<(usize, usize, String)>;

/// Everything a failed call must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct State {
    walk: Vec<MemoryBasicInformation>,
    totals: (usize, usize, usize),
    /// (page, hash of its bytes) for every committed page.
    contents: Vec<(usize, u64)>,
    /// (reservation, its written pages) for every write-watched reservation.
    dirty: Vec<(usize, Vec<usize>)>,
    /// The kernel's mappings of the window where it is not free (Linux only), each
    /// clipped to the reservations. (Free memory the backend keeps mapped in its pool
    /// of released ranges is not part of the space's state: a failed call may unmap
    /// such a range, as a later call may reuse it.)
    maps: Maps,
    /// Whether the CPU may read each page where the calls work (Linux only: this also
    /// sees guard markers, which /proc/self/maps does not show).
    cpu: Vec<bool>,
}

/// A space over `Faulty<B>` with a window, and a way to read memory around the rules.
struct Rig<B: Backend> {
    space: AddressSpace<Faulty<B>>,
    w: usize,
    /// Read bytes whatever the page's protection (guard pages stay armed).
    raw: fn(&Faulty<B>, usize, &mut [u8]) -> bool,
    /// The kernel's mappings of a range (empty on the simulated backend).
    maps: fn(Range<usize>) -> Maps,
    /// Whether the CPU may read a page (None on the simulated backend).
    cpu: fn(usize) -> Option<bool>,
    /// Write-watched reservations (base, size).
    watched: Vec<(usize, usize)>,
}

/// The pieces of `maps` inside regions of `walk` that are not free, neighbouring
/// pieces with the same permissions joined (the kernel may split or merge its mappings
/// at the edge of a pooled range).
fn clip(maps: &Maps, walk: &[MemoryBasicInformation]) -> Maps {
    let mut out: Maps = Vec::new();
    for m in walk.iter().filter(|m| m.state != MemState::Free) {
        let (s, e) = (m.base_address, m.base_address + m.region_size);
        for (ms, me, perm) in maps {
            let (a, b) = ((*ms).max(s), (*me).min(e));
            if a >= b {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.1 == a && last.2 == *perm => last.1 = b,
                _ => out.push((a, b, perm.clone())),
            }
        }
    }
    out
}

impl<B: Backend> Rig<B> {
    fn window(&self) -> Range<usize> {
        self.w..self.w + WINDOW
    }

    fn state(&self) -> State {
        let walk = walk(&self.space, self.window());
        let mut contents = Vec::new();
        let mut buf = vec![0u8; P];
        for m in walk.iter().filter(|m| m.state == MemState::Commit) {
            for page in (m.base_address..m.base_address + m.region_size).step_by(P) {
                assert!((self.raw)(self.space.backend(), page, &mut buf), "raw read of {page:#x}");
                contents.push((page, hash(&buf)));
            }
        }
        let dirty = self
            .watched
            .iter()
            .filter(|(b, _)| self.space.query(*b).is_ok_and(|m| m.allocation_base == *b))
            .map(|&(b, n)| (b, self.space.get_write_watch(WriteWatchFlags::empty(), b, n, usize::MAX).unwrap()))
            .collect();
        let st = self.space.stats();
        let w = self.w;
        let cpu = (w..w + 6 * G).chain(w + WINDOW - 2 * G..w + WINDOW).step_by(P).filter_map(self.cpu).collect();
        State {
            totals: (st.reserved, st.committed, st.reservations),
            contents,
            dirty,
            maps: clip(&(self.maps)(self.window()), &walk),
            walk,
            cpu,
        }
    }

    /// A window with every kind of page in it:
    /// - `w`: 32 pages, reserved; pages 0-3 read-write with data (0-1 locked), 4-7
    ///   read-only with data, 8-9 read-write guard pages with data, 10-11 no access,
    ///   12-13 execute-read, the rest reserved;
    /// - `w + WW`: 16 pages, committed, write-watched, pages 0, 3 and 5 written.
    fn setup(&mut self) {
        let s = &self.space;
        let t = |x: u32| virtmem::AllocationType::from_bits_retain(x);
        let p = |x: u32| virtmem::Protection::from_bits_retain(x);
        let w = self.w;
        s.alloc(w, 32 * P, t(MEM_RESERVE), p(PAGE_READWRITE)).unwrap();
        s.alloc(w, 10 * P, t(MEM_COMMIT), p(PAGE_READWRITE)).unwrap();
        for i in 0..10 {
            s.write(w + i * P + 7, &[i as u8 + 1; 100]).unwrap();
        }
        s.protect(w + 4 * P, 4 * P, p(PAGE_READONLY)).unwrap();
        s.protect(w + 8 * P, 2 * P, p(PAGE_READWRITE | PAGE_GUARD)).unwrap();
        s.alloc(w + 10 * P, 2 * P, t(MEM_COMMIT), p(PAGE_NOACCESS)).unwrap();
        s.alloc(w + 12 * P, 2 * P, t(MEM_COMMIT), p(PAGE_EXECUTE_READ)).unwrap();
        s.lock(w, 2 * P).unwrap();
        let ww = w + WW;
        s.alloc(ww, 16 * P, t(MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH), p(PAGE_READWRITE)).unwrap();
        for i in [0, 3, 5] {
            s.write(ww + i * P + 1, &[0xEE; 10]).unwrap();
        }
        self.watched = vec![(ww, 16 * P)];
    }

    fn teardown(&mut self) {
        release_all(&self.space, self.window());
        release_all(&self.space, 0..usize::MAX >> 1);
        self.watched.clear();
    }

    /// Fail the N-th side effect of `call` for N = 1, 2, ... until it runs with nothing
    /// injected; every failure must change nothing. Returns the number of side effects.
    fn every_failure(&mut self, name: &str, call: &CallFn<B>) -> usize {
        self.setup();
        let before = self.state();
        let f = self.space.backend();
        for n in 1..100 {
            f.arm(n);
            let r = call(&self.space, self.w);
            let fired = f.fired();
            f.arm(0);
            if !fired {
                assert_eq!(r, Ok(()), "{name}: failed with nothing injected");
                self.teardown();
                return n - 1;
            }
            let e = r.expect_err(&format!("{name}: succeeded although side effect #{n} failed"));
            assert_eq!(e, Error::NotEnoughMemory, "{name}: side effect #{n}");
            let after = self.state();
            assert_eq!(after, before, "{name}: failing side effect #{n} changed the space");
        }
        panic!("{name}: still failing after 100 side effects");
    }
}

type CallFn<B> = fn(&AddressSpace<Faulty<B>>, usize) -> Result<(), Error>;
type Call<B> = (&'static str, CallFn<B>);

fn calls<B: Backend>() -> Vec<Call<B>> {
    use virtmem::{AllocationType as T, FreeType as F, Protection as Pr};
    vec![
        ("reserve at an address", |s, w| s.alloc(w + 4 * G, 8 * P, T::RESERVE, Pr::READWRITE).map(drop)),
        ("reserve anywhere", |s, _| s.alloc(0, 8 * P, T::RESERVE, Pr::READWRITE).map(drop)),
        ("reserve and commit", |s, w| s.alloc(w + 4 * G, 8 * P, T::RESERVE | T::COMMIT, Pr::READWRITE).map(drop)),
        ("reserve and commit anywhere, top down", |s, _| {
            s.alloc(0, 8 * P, T::COMMIT | T::TOP_DOWN, Pr::EXECUTE_READWRITE).map(drop)
        }),
        ("reserve, commit, write watch", |s, w| {
            s.alloc(w + 4 * G, 8 * P, T::RESERVE | T::COMMIT | T::WRITE_WATCH, Pr::READWRITE).map(drop)
        }),
        ("reserve and commit no-access", |s, w| {
            s.alloc(w + 4 * G, 8 * P, T::RESERVE | T::COMMIT, Pr::NOACCESS).map(drop)
        }),
        ("commit over every kind of page", |s, w| s.alloc(w, 20 * P, T::COMMIT, Pr::EXECUTE_READ).map(drop)),
        ("commit reserved pages", |s, w| s.alloc(w + 14 * P, 4 * P, T::COMMIT, Pr::READWRITE).map(drop)),
        ("decommit a range (locked pages included)", |s, w| s.free(w, 16 * P, F::DECOMMIT)),
        ("decommit everything", |s, w| s.free(w, 0, F::DECOMMIT)),
        ("decommit write-watched pages", |s, w| s.free(w + WW + 2 * P, 4 * P, F::DECOMMIT)),
        ("release (locked pages included)", |s, w| s.free(w, 0, F::RELEASE)),
        ("release a write-watched reservation", |s, w| s.free(w + WW, 0, F::RELEASE)),
        ("protect every kind of committed page", |s, w| s.protect(w, 14 * P, Pr::READONLY).map(drop)),
        ("protect guard pages", |s, w| s.protect(w + 6 * P, 4 * P, Pr::EXECUTE_READWRITE).map(drop)),
        ("protect to guard", |s, w| s.protect(w, 4 * P, Pr::READWRITE | Pr::GUARD).map(drop)),
        ("lock", |s, w| s.lock(w + 2 * P, 6 * P)),
        ("lock locked and unlocked pages", |s, w| s.lock(w, 4 * P)),
        ("unlock", |s, w| s.unlock(w, 2 * P)),
        ("reset", |s, w| s.alloc(w, 16 * P, T::RESET, Pr::READWRITE).map(drop)),
        ("reset undo", |s, w| s.alloc(w, 8 * P, T::RESET_UNDO, Pr::READWRITE).map(drop)),
        ("get write watch with reset", |s, w| s.get_write_watch(WriteWatchFlags::RESET, w + WW, 16 * P, 2).map(drop)),
        ("reset write watch", |s, w| s.reset_write_watch(w + WW, 16 * P)),
        ("write", |s, w| s.write(w + 2 * P - 3, &[0x77; 9])),
        ("write to write-watched pages", |s, w| s.write(w + WW + 7 * P - 3, &[0x77; 9])),
    ]
}

fn run_all<B: Backend>(mut rig: Rig<B>) {
    for (name, call) in calls::<B>() {
        let n = rig.every_failure(name, &call);
        assert!(n >= 1, "{name}: no side effect to fail");
    }
    // A guard page firing disarms it with one side effect; if that fails, the access
    // still reports the guard (it did fire) and the page stays armed, unchanged.
    rig.setup();
    let before = rig.state();
    let f = rig.space.backend();
    f.arm(1);
    let r = rig.space.read(rig.w + 8 * P, &mut [0]);
    assert!(f.fired(), "disarming a guard page is a side effect");
    f.arm(0);
    assert!(matches!(r, Err(Error::GuardPage { .. })), "{r:?}");
    assert_eq!(rig.state(), before, "a failed disarm changed the space");
    assert!(matches!(rig.space.read(rig.w + 8 * P, &mut [0]), Err(Error::GuardPage { .. })), "still armed");
    assert_eq!(rig.space.read(rig.w + 8 * P + 7, &mut [0; 1]), Ok(()));
    assert_eq!(rig.space.stats().refused_undos, 0, "every undo of every failed call went through");
    rig.teardown();
}

#[test]
fn simulated_backend() {
    let rig = Rig {
        space: AddressSpace::with_backend(Faulty::new(virtmem::SimBackend::default())),
        w: SIM_WINDOW,
        raw: |f, a, buf| f.inner().read(a, buf).is_ok(),
        maps: |_| Vec::new(),
        cpu: |_| None,
        watched: Vec::new(),
    };
    run_all(rig);
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn linux_backend() {
    let w = linux::window(WINDOW);
    let backend = linux::Confined::new(virtmem::LinuxBackend::new().unwrap(), w..w + WINDOW, false);
    let rig = Rig {
        space: AddressSpace::with_backend(Faulty::new(backend)),
        w,
        // Around the protections, as a debugger reads (the kernel's forced access).
        raw: |_, a, buf| {
            use std::os::unix::fs::FileExt;
            match std::fs::File::open("/proc/self/mem").and_then(|f| f.read_exact_at(buf, a as u64)) {
                Ok(()) => true,
                // A guard-marked page (the backend decommits and pools that way, and a
                // committed PAGE_NOACCESS page taken from its pool stays marked until
                // made accessible): it holds nothing, and reads zero once accessible.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    buf.fill(0);
                    true
                }
                Err(_) => false,
            }
        },
        // What the CPU allows: the accessible mappings (the backend may keep released
        // ranges mapped inaccessible for reuse, which is the same as unmapped).
        maps: |r| linux::mappings(r).into_iter().filter(|m| m.2 != "---p").collect(),
        cpu: |a| Some(linux::readable(a)),
        watched: Vec::new(),
    };
    run_all(rig);
}

/// A failed call whose undo the backend refuses (as the kernel may refuse to split a
/// mapping back at its mapping-count limit): the call still fails with the first error;
/// the step whose undo was refused stays done and the space says so (its pages answer
/// with the call's new state, committed bytes included), every other step is undone, and
/// the refusal is counted in the space's stats. Without a refusal the count stays 0.
#[test]
fn a_refused_undo_is_recorded_and_counted() {
    use virtmem::{AllocationType as T, FreeType, MemState, Protection as Pr};
    let space = AddressSpace::with_backend(Faulty::new(virtmem::SimBackend::default()));
    let f = space.backend();
    let state = |a: usize| space.query(a).map(|i| (i.state, i.protect)).unwrap();
    let base = space.alloc(0, 4 * P, T::RESERVE, Pr::READWRITE).unwrap();
    // Three runs of different protections: a protect of all of them is three steps.
    space.alloc(base, P, T::COMMIT, Pr::READWRITE).unwrap();
    space.alloc(base + P, P, T::COMMIT, Pr::READONLY).unwrap();
    space.alloc(base + 2 * P, P, T::COMMIT, Pr::EXECUTE_READ).unwrap();
    let before = space.regions();
    // The second step fails; its undo of the first succeeds: nothing changes.
    f.arm(2);
    assert_eq!(space.protect(base, 3 * P, Pr::NOACCESS), Err(Error::NotEnoughMemory));
    assert_eq!(space.stats().refused_undos, 0);
    assert_eq!(space.regions(), before);
    // The third step fails, and the undo of the second (the fourth side effect) is
    // refused: the call still fails; the second page keeps the new protection.
    f.arm_two(3, 4);
    assert_eq!(space.protect(base, 3 * P, Pr::NOACCESS), Err(Error::NotEnoughMemory));
    assert_eq!(f.seen(), 5, "three steps, then the undo of the second and of the first");
    assert_eq!(space.stats().refused_undos, 1);
    assert_eq!(state(base), (MemState::Commit, Pr::READWRITE), "undone");
    assert_eq!(state(base + P), (MemState::Commit, Pr::NOACCESS), "kept");
    assert_eq!(state(base + 2 * P), (MemState::Commit, Pr::EXECUTE_READ), "never done");
    assert_eq!(space.stats().committed, 3 * P);

    // A commit over reserved, read-only and reserved pages: three steps. The third fails
    // and the undo of the first is refused: that page stays committed, and is counted.
    let b2 = space.alloc(0, 4 * P, T::RESERVE, Pr::READWRITE).unwrap();
    space.alloc(b2 + P, P, T::COMMIT, Pr::READONLY).unwrap();
    f.arm_two(3, 5);
    assert_eq!(space.alloc(b2, 3 * P, T::COMMIT, Pr::READWRITE), Err(Error::NotEnoughMemory));
    assert_eq!(space.stats().refused_undos, 2);
    assert_eq!(state(b2), (MemState::Commit, Pr::READWRITE), "kept");
    assert_eq!(state(b2 + P), (MemState::Commit, Pr::READONLY), "undone");
    assert_eq!(state(b2 + 2 * P), (MemState::Reserve, Pr::empty()), "never done");
    assert_eq!(space.stats().committed, 3 * P + 2 * P, "the kept page is committed");
    // A lock of three committed pages, the middle one locked already: two steps. The
    // second fails and the undo of the first is refused: the first page stays locked.
    f.arm(0);
    space.alloc(b2 + 2 * P, P, T::COMMIT, Pr::READWRITE).unwrap();
    space.lock(b2 + P, P).unwrap();
    f.arm_two(2, 3);
    assert_eq!(space.lock(b2, 3 * P), Err(Error::NotEnoughMemory));
    assert_eq!(space.stats().refused_undos, 3);
    f.arm(0);
    assert_eq!(space.unlock(b2 + 2 * P, P), Err(Error::NotLocked), "never done");
    assert_eq!(space.unlock(b2, P), Ok(()), "kept locked");
    assert_eq!(space.unlock(b2 + P, P), Ok(()), "locked before");
    // A decommit of a locked page: unlock, then drop. The drop fails and the undo of the
    // unlock (a lock again) is refused: the page stays committed but unlocked.
    space.lock(b2, P).unwrap();
    f.arm_two(2, 3);
    assert_eq!(space.free(b2, P, FreeType::DECOMMIT), Err(Error::NotEnoughMemory));
    assert_eq!(space.stats().refused_undos, 4);
    f.arm(0);
    assert_eq!(state(b2), (MemState::Commit, Pr::READWRITE), "the decommit failed");
    assert_eq!(space.unlock(b2, P), Err(Error::NotLocked), "kept unlocked");
    // The books stay straight: releasing everything leaves nothing.
    f.arm(0);
    space.free(b2, 0, FreeType::RELEASE).unwrap();
    space.free(base, 0, FreeType::RELEASE).unwrap();
    assert_eq!((space.stats().committed, space.stats().reserved), (0, 0));
    assert_eq!(space.stats().refused_undos, 4, "counted since the space was made");
}
