//! Decommit and commit take a shorter way in their usual case on a backend whose effects
//! never wait (`Backend::inline_effects`, the simulated backend): a range inside one run
//! of one reservation, nothing locked, is carried out under the engine's lock without a
//! plan of steps, and the run is edited at the place its lookup found. Every case here
//! is run through that way (a backend with inline effects) and through the general one
//! (the same backend saying it has none), and both must tell the backend the same runs
//! and leave the same space: the `VirtualQuery` walk, the commit totals, page contents
//! and write-watch marks. A decommit or commit the backend refuses changes nothing on
//! either way. Expected states follow `../shared/spec/win32-virtual-memory.md`:
//! decommitted pages are `MEM_RESERVE` and read zero once committed again; a range past
//! the reservation's end is `ERROR_INVALID_PARAMETER` for `MEM_DECOMMIT`; a change that
//! would split a large page is `ERROR_INVALID_PARAMETER`.

#[macro_use]
mod forward;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use virtmem::backend::{Access, Backend, BackendError};
use virtmem::{
    AccessKind, AddressSpace, AllocationType as T, Error, FreeType, MemState, MemoryBasicInformation, Protection as Pr,
    SimBackend, WriteWatchFlags,
};

const P: usize = 4096;
const G: usize = 65536;
/// The simulated backend's default large page.
const LP: usize = 2 << 20;

/// What the backend was told: `("decommit", runs)` or `("access", [(range, to)])`.
type Told = Vec<(&'static str, Vec<(Range<usize>, Access)>)>;

/// The simulated backend, saying `inline` for `inline_effects`, recording each
/// `decommit` and `set_access` it is asked for, and refusing them (nothing done) while
/// `fail` is set.
struct Recording {
    inner: SimBackend,
    inline: bool,
    fail: AtomicBool,
    told: Mutex<Told>,
}

impl Recording {
    fn new(inline: bool) -> Recording {
        Recording { inner: SimBackend::default(), inline, fail: AtomicBool::new(false), told: Mutex::default() }
    }
}

impl Backend for Recording {
    forward!(inner: limits, reserve, release, release_committed, release_drops_access, discard);
    forward!(inner: reset, reset_undo, lock, unlock, read, write, dirty_pages, clear_dirty, keeps_grants, grant);
    forward!(inner: try_read, try_write);
    fn inline_effects(&self) -> bool {
        self.inline
    }
    fn decommit(&self, runs: &[(Range<usize>, Access)]) -> Result<(), BackendError> {
        self.told.lock().unwrap().push(("decommit", runs.to_vec()));
        if self.fail.load(Ordering::SeqCst) {
            return Err(BackendError::OutOfMemory);
        }
        self.inner.decommit(runs)
    }
    fn set_access(&self, range: Range<usize>, from: Access, to: Access) -> Result<(), BackendError> {
        self.told.lock().unwrap().push(("access", vec![(range.clone(), to)]));
        if self.fail.load(Ordering::SeqCst) {
            return Err(BackendError::OutOfMemory);
        }
        self.inner.set_access(range, from, to)
    }
}

type Space = AddressSpace<Recording>;

/// Everything a call may change.
#[derive(Debug, PartialEq, Eq)]
struct State {
    walk: Vec<MemoryBasicInformation>,
    committed: usize,
    /// The first byte of every committed page that reads without a fault (a guard page
    /// is not read: that would disarm it), by page.
    bytes: Vec<(usize, u8)>,
    /// The write-watched reservation's dirty pages, if there is one.
    dirty: Vec<usize>,
}

fn state(s: &Space, watched: Option<(usize, usize)>) -> State {
    let walk = s.regions();
    let mut bytes = Vec::new();
    for r in &walk {
        if r.state != MemState::Commit || r.protect.contains(Pr::GUARD) || r.protect == Pr::NOACCESS {
            continue;
        }
        for page in (r.base_address..r.base_address + r.region_size).step_by(P) {
            let mut b = [0u8];
            s.read(page, &mut b).unwrap();
            bytes.push((page, b[0]));
        }
    }
    let dirty = match watched {
        Some((base, size)) => s.get_write_watch(WriteWatchFlags::empty(), base, size, usize::MAX).unwrap(),
        None => Vec::new(),
    };
    State { walk, committed: s.committed_bytes(), bytes, dirty }
}

/// A space laid out for a case: reservation `a` of 4 granules with runs of several
/// protections and written pages, write-watched reservation `w` with two pages
/// written, and a large-page allocation `l` of two large pages.
struct Rig {
    s: Space,
    a: usize,
    w: usize,
    l: usize,
}

fn rig(inline: bool) -> Rig {
    let s = AddressSpace::with_backend(Recording::new(inline));
    let a = s.alloc(0, 4 * G, T::RESERVE, Pr::NOACCESS).unwrap();
    // a: [0, 1) RW | [1, 4) reserved | [4, 8) RW | [8, 10) READONLY | [10, 12) RW+GUARD |
    //    [12, 13) NOACCESS | [13, 16) reserved | [16, 20) RW | rest reserved (pages).
    s.alloc(a, P, T::COMMIT, Pr::READWRITE).unwrap();
    s.alloc(a + 4 * P, 4 * P, T::COMMIT, Pr::READWRITE).unwrap();
    s.alloc(a + 8 * P, 2 * P, T::COMMIT, Pr::READWRITE).unwrap();
    s.alloc(a + 10 * P, 2 * P, T::COMMIT, Pr::READWRITE | Pr::GUARD).unwrap();
    s.alloc(a + 12 * P, P, T::COMMIT, Pr::NOACCESS).unwrap();
    s.alloc(a + 16 * P, 4 * P, T::COMMIT, Pr::READWRITE).unwrap();
    for page in [0, 4, 5, 6, 7, 8, 9, 16, 17, 18, 19] {
        s.write(a + page * P, &[page as u8 + 1]).unwrap();
    }
    s.protect(a + 8 * P, 2 * P, Pr::READONLY).unwrap();
    let w = s.alloc(0, G, T::RESERVE | T::COMMIT | T::WRITE_WATCH, Pr::READWRITE).unwrap();
    s.write(w + 2 * P, &[9]).unwrap();
    s.write(w + 5 * P, &[10]).unwrap();
    let l = s.alloc(0, 2 * LP, T::RESERVE | T::COMMIT | T::LARGE_PAGES, Pr::READWRITE).unwrap();
    s.write(l + LP, &[11]).unwrap();
    s.backend().told.lock().unwrap().clear();
    Rig { s, a, w, l }
}

/// A call on a rig: decommit or commit of `[a + start, a + start + size)` pages of the
/// named reservation (`'a'`, `'w'` or `'l'`, in units of pages, or of large pages for
/// `'l'`), with `lock` first locking page `lock` of `a`.
#[derive(Debug, Clone, Copy)]
struct Case {
    what: &'static str,
    res: char,
    start: usize,
    size: usize,
    protect: Pr,
    lock: Option<usize>,
}

const fn dc(res: char, start: usize, size: usize) -> Case {
    Case { what: "decommit", res, start, size, protect: Pr::NOACCESS, lock: None }
}

const fn cm(res: char, start: usize, size: usize, protect: Pr) -> Case {
    Case { what: "commit", res, start, size, protect, lock: None }
}

/// The cases: every shape of range against the runs it meets.
fn cases() -> Vec<Case> {
    let ro = Pr::READONLY;
    let rw = Pr::READWRITE;
    vec![
        dc('a', 0, 1),   // exactly a run, taken over by the reserved run after it
        dc('a', 4, 4),   // exactly a run between a reserved run and a READONLY one
        dc('a', 5, 2),   // inside a run: split in three
        dc('a', 4, 1),   // the start of a run, after a reserved run (which grows)
        dc('a', 7, 1),   // the end of a run, before another committed run
        dc('a', 19, 1),  // the end of a run, before a reserved run (which grows down)
        dc('a', 16, 4),  // a run between two reserved runs: all three become one
        dc('a', 6, 4),   // across two runs of different protections
        dc('a', 0, 20),  // across every run
        dc('a', 1, 3),   // reserved pages only: nothing to tell the backend
        dc('a', 25, 30), // reserved pages only (25 to 55 of its 64)
        dc('a', 10, 1),  // a guard page
        dc('a', 12, 1),  // a committed PAGE_NOACCESS page
        dc('a', 60, 5),  // past the reservation's end: ERROR_INVALID_PARAMETER
        dc('w', 2, 1),   // a written page of a write-watched reservation
        dc('w', 0, 16),  // the whole write-watched reservation
        dc('l', 0, 1),   // a whole large page
        dc('l', 1, 1),   // the written large page
        Case { what: "decommit", res: 'l', start: 0, size: 0, protect: Pr::NOACCESS, lock: None }, // half of one (pages)
        Case { lock: Some(5), ..dc('a', 4, 4) },     // a run with a locked page
        Case { lock: Some(0), ..dc('a', 0, 1) },     // a locked page alone
        Case { lock: Some(16), ..dc('a', 18, 1) },   // a run with a locked page outside the range
        cm('a', 1, 1, rw),                           // a reserved run's start after a run with the same protection
        cm('a', 1, 3, rw),                           // a whole reserved run between two of the same protection
        cm('a', 3, 1, rw),                           // a reserved run's end before a run with the same protection
        cm('a', 2, 1, rw),                           // inside a reserved run: split in three
        cm('a', 1, 3, ro),                           // a whole reserved run, another protection
        cm('a', 4, 4, rw),                           // recommit with the same protection: nothing to tell
        cm('a', 4, 4, ro),                           // recommit with another protection
        cm('a', 8, 2, rw),                           // recommit READONLY pages read-write, after a read-write run
        cm('a', 5, 1, ro),                           // inside a committed run, another protection
        cm('a', 0, 20, rw),                          // across every run
        cm('a', 10, 1, rw),                          // a guard page
        cm('a', 13, 3, Pr::NOACCESS),                // a reserved run next to a NOACCESS run
        cm('w', 3, 1, rw),                           // a write-watched page
        Case { lock: Some(4), ..cm('a', 4, 4, ro) }, // recommit of a run with a locked page
    ]
}

/// Run `case` on a new rig; its answer, what the backend was told and the state after.
fn run(case: Case, inline: bool, fail: bool) -> (Result<(), Error>, Told, State, State) {
    let r = rig(inline);
    let (base, unit) = match case.res {
        'a' => (r.a, P),
        'w' => (r.w, P),
        _ => (r.l, LP),
    };
    let watched = Some((r.w, G));
    // (The large-page case of size 0 is half a large page, in pages.)
    let (start, size) =
        if case.res == 'l' && case.size == 0 { (0, LP / 2) } else { (case.start * unit, case.size * unit) };
    if let Some(page) = case.lock {
        r.s.lock(r.a + page * P, P).unwrap();
        r.s.backend().told.lock().unwrap().clear();
    }
    let before = state(&r.s, watched);
    r.s.backend().fail.store(fail, Ordering::SeqCst);
    let out = match case.what {
        "decommit" => r.s.free(base + start, size, FreeType::DECOMMIT),
        _ => r.s.alloc(base + start, size, T::COMMIT, case.protect).map(|_| ()),
    };
    r.s.backend().fail.store(false, Ordering::SeqCst);
    let told = std::mem::take(&mut *r.s.backend().told.lock().unwrap());
    (out, told, before, state(&r.s, watched))
}

#[test]
fn the_inline_way_does_what_the_general_way_does() {
    for case in cases() {
        let (out, told, before, after) = run(case, true, false);
        let general = run(case, false, false);
        assert_eq!((&out, &told, &before, &after), (&general.0, &general.1, &general.2, &general.3), "{case:?}");
        // And what the spec says of each.
        if out.is_err() {
            assert_eq!(out, Err(Error::InvalidParameter), "{case:?}");
            assert_eq!(before, after, "{case:?}");
            continue;
        }
        if case.res == 'a' {
            // (The same calls, the same addresses: the rig's `a` is where it was.)
            let base = rig(true).a;
            let range = base + case.start * P..base + (case.start + case.size) * P;
            for m in
                after.walk.iter().filter(|m| m.base_address < range.end && range.start < m.base_address + m.region_size)
            {
                if case.what == "decommit" {
                    assert_eq!(m.state, MemState::Reserve, "{case:?}: {m:?}");
                } else if m.base_address >= range.start && m.base_address + m.region_size <= range.end {
                    assert_eq!((m.state, m.protect), (MemState::Commit, case.protect), "{case:?}: {m:?}");
                }
            }
        }
    }
}

#[test]
fn decommit_tells_the_backend_the_committed_runs_of_the_range() {
    let base = rig(true).a;
    let told = |case| run(case, true, false).1;
    // The bench's shape: the first page, alone in its run.
    assert_eq!(told(dc('a', 0, 1)), vec![("decommit", vec![(base..base + P, Access::ReadWrite)])]);
    // Inside one run.
    assert_eq!(told(dc('a', 5, 2)), vec![("decommit", vec![(base + 5 * P..base + 7 * P, Access::ReadWrite)])]);
    // Across runs: each committed run, clipped, with its access; reserved ones left out.
    assert_eq!(
        told(dc('a', 6, 7)),
        vec![(
            "decommit",
            vec![
                (base + 6 * P..base + 8 * P, Access::ReadWrite),
                (base + 8 * P..base + 10 * P, Access::Read),
                (base + 10 * P..base + 12 * P, Access::None),
                (base + 12 * P..base + 13 * P, Access::None),
            ]
        )]
    );
    // Nothing committed: nothing to tell.
    assert_eq!(told(dc('a', 1, 3)), vec![]);
}

#[test]
fn decommitted_pages_are_reserved_and_read_zero_when_committed_again() {
    for inline in [true, false] {
        let r = rig(inline);
        let committed = r.s.committed_bytes();
        // (Reads made before: the backend may carry out the block's next accesses
        // itself, which the decommit must take back.)
        for page in [r.a, r.a + 5 * P, r.a + 6 * P, r.w + 2 * P] {
            r.s.read(page, &mut [0u8]).unwrap();
        }
        r.s.free(r.a, P, FreeType::DECOMMIT).unwrap();
        r.s.free(r.a + 5 * P, 2 * P, FreeType::DECOMMIT).unwrap();
        r.s.free(r.w + 2 * P, P, FreeType::DECOMMIT).unwrap();
        assert_eq!(r.s.committed_bytes(), committed - 4 * P, "inline {inline}");
        for page in [r.a, r.a + 5 * P, r.a + 6 * P, r.w + 2 * P] {
            let m = r.s.query(page).unwrap();
            assert_eq!(m.state, MemState::Reserve, "inline {inline}");
            let violation = Err(Error::AccessViolation { address: page, access: AccessKind::Read });
            assert_eq!(r.s.read(page, &mut [0u8]), violation, "inline {inline}: page {page:#x}");
            assert_eq!(r.s.check(page, 1, AccessKind::Read), violation, "inline {inline}: page {page:#x}");
            r.s.alloc(page, P, T::COMMIT, Pr::READWRITE).unwrap();
            let mut b = [1u8];
            r.s.read(page, &mut b).unwrap();
            assert_eq!(b, [0], "inline {inline}: page {page:#x} reads zero");
        }
        // The neighbours kept their contents.
        let mut b = [0u8];
        r.s.read(r.a + 4 * P, &mut b).unwrap();
        assert_eq!(b, [5]);
        r.s.read(r.a + 7 * P, &mut b).unwrap();
        assert_eq!(b, [8]);
        // The write-watched page's mark went with its contents, the other stays.
        assert_eq!(r.s.get_write_watch(WriteWatchFlags::empty(), r.w, G, 16).unwrap(), vec![r.w + 5 * P]);
    }
}

#[test]
fn a_refused_decommit_or_commit_changes_nothing_on_either_way() {
    for case in cases() {
        for inline in [true, false] {
            let (out, told, before, after) = run(case, inline, true);
            if told.is_empty() {
                // Nothing asked of the backend: the call did what it does anyway.
                continue;
            }
            assert_eq!(out, Err(Error::NotEnoughMemory), "{case:?}, inline {inline}");
            assert_eq!(before, after, "{case:?}, inline {inline}");
        }
    }
}

/// The commit limit (`AddressSpace::set_commit_limit`) is checked before anything is
/// done, on either way: a commit of reserved pages that would pass it fails with
/// `ERROR_COMMITMENT_LIMIT` and changes nothing (nothing told to the backend); a
/// recommit of committed pages charges nothing and passes it; one that fits succeeds.
#[test]
fn the_commit_limit_is_checked_on_either_way() {
    for inline in [true, false] {
        let r = rig(inline);
        let committed = r.s.committed_bytes();
        r.s.set_commit_limit(Some(committed + P));
        let before = state(&r.s, Some((r.w, G)));
        assert_eq!(r.s.alloc(r.a + P, 2 * P, T::COMMIT, Pr::READWRITE), Err(Error::CommitmentLimit), "inline {inline}");
        assert_eq!(state(&r.s, Some((r.w, G))), before, "inline {inline}");
        assert!(r.s.backend().told.lock().unwrap().is_empty(), "inline {inline}");
        r.s.alloc(r.a + 4 * P, 4 * P, T::COMMIT, Pr::READONLY).unwrap();
        assert_eq!(r.s.committed_bytes(), committed, "inline {inline}: a recommit charges nothing");
        r.s.alloc(r.a + P, P, T::COMMIT, Pr::READWRITE).unwrap();
        assert_eq!(r.s.committed_bytes(), committed + P, "inline {inline}");
        assert_eq!(r.s.query(r.a).unwrap().region_size, 2 * P, "inline {inline}: one run of two pages");
    }
}
