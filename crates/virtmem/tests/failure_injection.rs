//! Failure injection: for every kind of call and every N up to the number of side
//! effects the call performs, a backend that fails its N-th side effect
//! (`backend::faulty::Faulty`) makes the call fail and leaves the space exactly as it was
//! before the call: the VirtualQuery walk, the committed and reserved totals, the bytes
//! of every committed page (read around the rules, so guard pages stay armed), the
//! write-watch state, and on Linux the kernel's mappings of the window (what the CPU
//! allows: every accessible mapping).
//!
//! Runs on the simulated backend in both of `Faulty`'s modes, and on the Linux backend.
//! In the general mode (`Faulty::new`) the engine makes every side effect outside its
//! lock, the way it takes over the Linux backend: a commit, decommit or protect of a
//! range inside one run (nothing locked, for a decommit) as one backend call without a
//! plan, every other call as planned steps. In the inline mode (`Faulty::inline`) it
//! takes the way it takes over the simulated backend alone, whose effects never wait
//! (`Backend::inline_effects`): effects made under its lock, and the usual-case
//! shortcuts of commit, decommit, protect and release (a range inside one run, nothing
//! locked: one backend call, no plan). [`usual_cases`] lists calls that take those
//! shortcuts; `the_inline_mode_takes_the_simulated_backends_way` shows that in the
//! inline mode each makes its one side effect under the engine's lock, and in the general
//! mode outside it.

#[macro_use]
mod common;

use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use common::*;
use virtmem::backend::faulty::Faulty;
use virtmem::backend::{Access, Backend, BackendError, ReserveOptions};
use virtmem::{AddressSpace, Error, MemState, MemoryBasicInformation, SimBackend, VirtualSpace, WriteWatchFlags};

/// Where the write-watched reservation of the set-up lives, from the window base.
const WW: usize = 2 * G;
/// Where the plain reservation of the set-up (nothing locked, not write-watched) lives,
/// from the window base.
const PL: usize = 3 * G;

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
    space: Arc<AddressSpace<Faulty<B>>>,
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
    /// - `w + WW`: 16 pages, committed, write-watched, pages 0, 3 and 5 written;
    /// - `w + PL`: 16 pages, reserved, nothing locked; pages 0-7 read-write with data,
    ///   8-11 read-only with data, the rest reserved.
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
        let pl = w + PL;
        s.alloc(pl, 16 * P, t(MEM_RESERVE), p(PAGE_READWRITE)).unwrap();
        s.alloc(pl, 12 * P, t(MEM_COMMIT), p(PAGE_READWRITE)).unwrap();
        for i in 0..12 {
            s.write(pl + i * P + 5, &[0x40 + i as u8; 50]).unwrap();
        }
        s.protect(pl + 8 * P, 4 * P, p(PAGE_READONLY)).unwrap();
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

/// Calls the engine carries out by a usual-case shortcut over a backend whose effects
/// never wait (`Backend::inline_effects`): a reserve with the lock held across the
/// backend call, and a commit, decommit, protect or release of a range inside one run
/// (for a decommit or release, of a reservation with nothing locked) by one backend call
/// without a plan of steps (the commit, decommit and protect ones over a backend whose
/// effects wait too, outside the lock). Each is one side effect.
fn usual_cases<B: Backend>() -> Vec<Call<B>> {
    use virtmem::{AllocationType as T, FreeType as F, Protection as Pr};
    vec![
        ("reserve at an address", |s, w| s.alloc(w + 4 * G, 8 * P, T::RESERVE, Pr::READWRITE).map(drop)),
        ("reserve anywhere", |s, _| s.alloc(0, 8 * P, T::RESERVE, Pr::READWRITE).map(drop)),
        ("commit reserved pages", |s, w| s.alloc(w + 14 * P, 4 * P, T::COMMIT, Pr::READWRITE).map(drop)),
        ("commit reserved pages, nothing locked", |s, w| {
            s.alloc(w + PL + 12 * P, 2 * P, T::COMMIT, Pr::READWRITE).map(drop)
        }),
        ("commit committed pages with another protection", |s, w| {
            s.alloc(w + PL + P, 2 * P, T::COMMIT, Pr::EXECUTE_READ).map(drop)
        }),
        ("decommit inside one run, nothing locked", |s, w| s.free(w + PL + 2 * P, 4 * P, F::DECOMMIT)),
        ("decommit write-watched pages", |s, w| s.free(w + WW + 2 * P, 4 * P, F::DECOMMIT)),
        ("protect inside one run", |s, w| s.protect(w + PL + 9 * P, 2 * P, Pr::READWRITE).map(drop)),
        ("protect to guard", |s, w| s.protect(w, 4 * P, Pr::READWRITE | Pr::GUARD).map(drop)),
        ("release an unlocked reservation", |s, w| s.free(w + PL, 0, F::RELEASE)),
        ("release a write-watched reservation", |s, w| s.free(w + WW, 0, F::RELEASE)),
    ]
}

/// Every kind of call: [`usual_cases`], and calls that take the general way on every
/// backend (several runs, locked pages, several steps).
fn calls<B: Backend>() -> Vec<Call<B>> {
    use virtmem::{AllocationType as T, FreeType as F, Protection as Pr};
    let mut calls: Vec<Call<B>> = vec![
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
        ("decommit a range (locked pages included)", |s, w| s.free(w, 16 * P, F::DECOMMIT)),
        ("decommit everything", |s, w| s.free(w, 0, F::DECOMMIT)),
        ("release (locked pages included)", |s, w| s.free(w, 0, F::RELEASE)),
        ("protect every kind of committed page", |s, w| s.protect(w, 14 * P, Pr::READONLY).map(drop)),
        ("protect guard pages", |s, w| s.protect(w + 6 * P, 4 * P, Pr::EXECUTE_READWRITE).map(drop)),
        ("lock", |s, w| s.lock(w + 2 * P, 6 * P)),
        ("lock locked and unlocked pages", |s, w| s.lock(w, 4 * P)),
        ("unlock", |s, w| s.unlock(w, 2 * P)),
        ("reset", |s, w| s.alloc(w, 16 * P, T::RESET, Pr::READWRITE).map(drop)),
        ("reset undo", |s, w| s.alloc(w, 8 * P, T::RESET_UNDO, Pr::READWRITE).map(drop)),
        ("get write watch with reset", |s, w| s.get_write_watch(WriteWatchFlags::RESET, w + WW, 16 * P, 2).map(drop)),
        ("reset write watch", |s, w| s.reset_write_watch(w + WW, 16 * P)),
        ("write", |s, w| s.write(w + 2 * P - 3, &[0x77; 9])),
        ("write to write-watched pages", |s, w| s.write(w + WW + 7 * P - 3, &[0x77; 9])),
    ];
    calls.extend(usual_cases::<B>());
    calls
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

/// A rig over the simulated backend wrapped in `faulty`.
fn sim_rig(faulty: Faulty<SimBackend>) -> Rig<SimBackend> {
    Rig {
        space: Arc::new(AddressSpace::with_backend(faulty)),
        w: SIM_WINDOW,
        raw: |f, a, buf| f.inner().read(a, buf).is_ok(),
        maps: |_| Vec::new(),
        cpu: |_| None,
        watched: Vec::new(),
    }
}

/// The way over a backend whose effects wait (side effects made outside the lock; steps
/// planned for all but a commit, decommit or protect inside one run) over simulated
/// memory.
#[test]
fn simulated_backend() {
    let rig = sim_rig(Faulty::new(SimBackend::default()));
    assert!(!rig.space.backend().inline_effects(), "the general mode");
    run_all(rig);
}

/// The simulated backend's own way: effects under the lock, and the usual-case shortcuts.
#[test]
fn simulated_backend_inline_mode() {
    let rig = sim_rig(Faulty::inline(SimBackend::default()));
    assert!(rig.space.backend().inline_effects(), "the simulated backend's effects never wait");
    run_all(rig);
}

/// The simulated backend, noting for each side effect whether the engine held its lock
/// while asking for it: a `try_query` of the space it serves, made from inside the call,
/// finds the lock taken (`None`) exactly then.
#[derive(Debug)]
struct Probe {
    inner: SimBackend,
    /// The space this backend serves (set once the space is made).
    space: OnceLock<Weak<dyn VirtualSpace>>,
    /// For each side effect since last cleared, whether the lock was held.
    held: Mutex<Vec<bool>>,
}

impl Probe {
    fn note(&self) {
        let space = self.space.get().and_then(Weak::upgrade).expect("the space is alive");
        self.held.lock().unwrap().push(space.try_query(SIM_WINDOW).is_none());
    }
}

impl Backend for Probe {
    forward!(inner: limits, inline_effects, release_drops_access, discard, reset, reset_undo);
    forward!(inner: lock, unlock, read, write, dirty_pages, clear_dirty);
    fn reserve(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        self.note();
        self.inner.reserve(range, opts)
    }
    fn release(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        self.note();
        self.inner.release(range, opts)
    }
    fn release_committed(
        &self,
        range: Range<usize>,
        opts: ReserveOptions,
        accessible: &[(Range<usize>, Access)],
    ) -> Result<(), BackendError> {
        self.note();
        self.inner.release_committed(range, opts, accessible)
    }
    fn set_access(&self, range: Range<usize>, from: Access, to: Access) -> Result<(), BackendError> {
        self.note();
        self.inner.set_access(range, from, to)
    }
    fn decommit(&self, runs: &[(Range<usize>, Access)]) -> Result<(), BackendError> {
        self.note();
        self.inner.decommit(runs)
    }
}

/// `Faulty`'s inline mode reaches the engine's usual-case shortcuts: over the simulated
/// backend each call of [`usual_cases`] makes its one side effect with the engine's lock
/// held, as over the simulated backend alone. In the general mode the same calls make it
/// without the lock (the reservation marked busy, or the claim pending), as over a
/// backend whose effects may wait.
#[test]
fn the_inline_mode_takes_the_simulated_backends_way() {
    for inline in [false, true] {
        let probe = Probe { inner: SimBackend::default(), space: OnceLock::new(), held: Mutex::default() };
        let faulty = if inline { Faulty::inline(probe) } else { Faulty::new(probe) };
        let space = Arc::new(AddressSpace::with_backend(faulty));
        let dynamic: Arc<dyn VirtualSpace> = space.clone();
        space.backend().inner().space.set(Arc::downgrade(&dynamic)).unwrap();
        let mut rig = Rig {
            space,
            w: SIM_WINDOW,
            raw: |f, a, buf| f.inner().inner.read(a, buf).is_ok(),
            maps: |_| Vec::new(),
            cpu: |_| None,
            watched: Vec::new(),
        };
        for (name, call) in usual_cases::<Probe>() {
            rig.setup();
            let f = rig.space.backend();
            f.arm(0);
            f.inner().held.lock().unwrap().clear();
            assert_eq!(call(&rig.space, rig.w), Ok(()), "{name}");
            assert_eq!(f.seen(), 1, "{name}: one side effect");
            let held = f.inner().held.lock().unwrap().clone();
            assert_eq!(held, [inline], "{name}: the side effect made with the lock held? (inline mode: {inline})");
            rig.teardown();
        }
    }
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn linux_backend() {
    let w = linux::window(WINDOW);
    let backend = linux::Confined::new(virtmem::LinuxBackend::new().unwrap(), w..w + WINDOW, false);
    let rig = Rig {
        space: Arc::new(AddressSpace::with_backend(Faulty::new(backend))),
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
///
/// In both of `Faulty`'s modes: every call here has several steps, so takes the general
/// way in both, its steps made outside the lock in one and under it in the other. (A
/// usual-case shortcut makes one step, which has nothing before it to undo.)
#[test]
fn a_refused_undo_is_recorded_and_counted() {
    a_refused_undo(Faulty::new(SimBackend::default()));
    a_refused_undo(Faulty::inline(SimBackend::default()));
}

fn a_refused_undo(faulty: Faulty<SimBackend>) {
    use virtmem::{AllocationType as T, FreeType, MemState, Protection as Pr};
    let space = AddressSpace::with_backend(faulty);
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

/// The simulated backend, saying `inline` for `inline_effects`, with a foreign mapping at
/// `FOREIGN` that it names through `foreign` but says it cannot name without waiting
/// through `try_foreign` (as the Linux backend does while another thread holds its state).
#[derive(Debug)]
struct Waiting {
    inner: SimBackend,
    inline: bool,
}

/// Where [`Waiting`]'s foreign mapping lives (one granule).
const FOREIGN: usize = SIM_WINDOW + WINDOW;

impl Backend for Waiting {
    forward!(inner: limits, reserve, release, set_access, discard, reset, reset_undo, lock, unlock, read, write);
    forward!(inner: dirty_pages, clear_dirty, keeps_grants, grant, try_read, try_write);
    fn inline_effects(&self) -> bool {
        self.inline
    }
    fn foreign(&self, address: usize, limit: usize) -> Option<virtmem::backend::ForeignRegion> {
        (address < FOREIGN + G && FOREIGN < limit).then_some(virtmem::backend::ForeignRegion {
            start: FOREIGN,
            end: FOREIGN + G,
            access: Access::Read,
            copy_on_write: false,
            allocation_base: FOREIGN,
            kind: virtmem::backend::ForeignKind::Mapped,
        })
    }
    fn try_foreign(&self, _: usize, _: usize) -> Option<Option<virtmem::backend::ForeignRegion>> {
        None
    }
}

/// What is not a side effect passes through `Faulty` as the inner backend answers it, and
/// is not counted: a `try_foreign` that cannot answer without waiting stays unanswered
/// (so a space's `try_query` of that memory is `None` at once, not an answer that
/// waited). Two choices differ, by design (see `Faulty`'s docs): grants are never kept,
/// so that every write is a side effect that can be failed; `inline_effects` is the inner
/// backend's in the inline mode only.
#[test]
fn faulty_passes_on_what_is_not_a_side_effect() {
    for inline in [false, true] {
        let waiting = |inline| Waiting { inner: SimBackend::default(), inline };
        let general = Faulty::new(waiting(inline));
        let inline_mode = Faulty::inline(waiting(inline));
        assert!(!general.inline_effects(), "the general mode says effects may wait");
        assert_eq!(inline_mode.inline_effects(), inline, "the inline mode says what the inner backend says");
        for f in [general, inline_mode] {
            assert!(f.inner().keeps_grants() && !f.keeps_grants(), "no grants");
            assert_eq!(f.foreign(FOREIGN, FOREIGN + P).map(|r| r.start), Some(FOREIGN));
            assert_eq!(f.try_foreign(FOREIGN, FOREIGN + P), None, "passed on: the inner backend would wait");
            let space = AddressSpace::with_backend(f);
            assert_eq!(space.try_query(FOREIGN), None, "a query that would wait is not answered");
            assert_eq!(space.query(FOREIGN).map(|m| m.state), Ok(MemState::Commit), "a foreign mapping");
            assert_eq!(space.backend().seen(), 0, "nothing here is a side effect");
        }
    }
}
