//! A release tells the backend which runs of the reservation are still accessible
//! (`Backend::release_committed`), unless the backend says it takes every access away
//! from the whole range by itself (`Backend::release_drops_access`): then it is told of
//! none, and the engine does not look for them. Either way the released range is free
//! and, reserved and committed again, reads as zero with no access left over
//! (`../shared/spec/win32-virtual-memory.md`: a released range is free; freshly committed
//! pages are zero).

#[macro_use]
mod forward;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use virtmem::backend::{Access, Backend, BackendError, ReserveOptions};
use virtmem::{AccessKind, AddressSpace, AllocationType as T, Error, FreeType, MemState, Protection as Pr, SimBackend};

const P: usize = 4096;
const G: usize = 65536;

/// Runs with their access, as a backend is told of them.
type Runs = Vec<(Range<usize>, Access)>;

/// The simulated backend, saying `drops` for `release_drops_access` and `inline` for
/// `inline_effects`, recording the accessible runs each `release_committed` is given,
/// and failing it (nothing done) while `fail` is set.
struct Told {
    inner: SimBackend,
    drops: bool,
    inline: bool,
    fail: AtomicBool,
    told: Mutex<Vec<Runs>>,
}

impl Told {
    fn new(drops: bool, inline: bool) -> Told {
        Told { inner: SimBackend::default(), drops, inline, fail: AtomicBool::new(false), told: Mutex::default() }
    }
}

impl Backend for Told {
    forward!(inner: limits, reserve, release, set_access, discard, decommit);
    forward!(inner: reset, reset_undo, lock, unlock, read, write, dirty_pages, clear_dirty, keeps_grants, grant);
    forward!(inner: try_read, try_write);
    fn release_committed(
        &self,
        range: Range<usize>,
        opts: ReserveOptions,
        accessible: &[(Range<usize>, Access)],
    ) -> Result<(), BackendError> {
        self.told.lock().unwrap().push(accessible.to_vec());
        if self.fail.load(Ordering::SeqCst) {
            return Err(BackendError::OutOfMemory);
        }
        self.inner.release_committed(range, opts, accessible)
    }
    fn release_drops_access(&self) -> bool {
        self.drops
    }
    fn inline_effects(&self) -> bool {
        self.inline
    }
}

/// Reserve two granules, commit pages with several protections (one of them
/// `PAGE_NOACCESS`, committed but inaccessible), write through a grant, release; the
/// runs the backend was told of, and the state after.
fn release_committed_pages(drops: bool) -> Vec<Runs> {
    let s = AddressSpace::with_backend(Told::new(drops, true));
    let a = s.alloc(0, 2 * G, T::RESERVE, Pr::NOACCESS).unwrap();
    s.alloc(a, 2 * P, T::COMMIT, Pr::READWRITE).unwrap();
    s.alloc(a + 4 * P, P, T::COMMIT, Pr::READONLY).unwrap();
    s.alloc(a + 6 * P, P, T::COMMIT, Pr::NOACCESS).unwrap();
    s.alloc(a + G, P, T::COMMIT, Pr::EXECUTE_READWRITE).unwrap();
    s.write(a + 8, &[9; 8]).unwrap();
    s.write(a + G, &[5; 4]).unwrap();
    s.free(a, 0, FreeType::RELEASE).unwrap();
    let q = s.query(a).unwrap();
    assert_eq!((q.state, q.region_size >= 2 * G), (MemState::Free, true), "{q:?}");
    assert_eq!(s.committed_bytes(), 0);
    // Made again at the same place: zero where it was written, and nothing accessible
    // but what is committed now.
    assert_eq!(s.alloc(a, 2 * G, T::RESERVE, Pr::NOACCESS), Ok(a));
    assert_eq!(s.read(a + 8, &mut [0; 1]), Err(Error::AccessViolation { address: a + 8, access: AccessKind::Read }));
    s.alloc(a, G, T::COMMIT, Pr::READWRITE).unwrap();
    let mut b = [1u8; 8];
    s.read(a + 8, &mut b).unwrap();
    assert_eq!(b, [0; 8]);
    let g = a + G;
    assert_eq!(s.write(g, &[1]), Err(Error::AccessViolation { address: g, access: AccessKind::Write }));
    let told = s.backend().told.lock().unwrap().clone();
    told
}

#[test]
fn the_accessible_runs_are_listed_unless_the_backend_drops_them_itself() {
    let told = release_committed_pages(false);
    assert_eq!(told.len(), 1);
    let base = told[0].first().map(|(r, _)| r.start).expect("runs listed");
    assert_eq!(base % G, 0);
    assert_eq!(
        told[0],
        vec![
            (base..base + 2 * P, Access::ReadWrite),
            (base + 4 * P..base + 5 * P, Access::Read),
            (base + G..base + G + P, Access::ExecuteReadWrite),
        ]
    );
    assert_eq!(release_committed_pages(true), vec![Vec::new()]);
}

#[test]
fn the_simulated_backend_drops_access_itself() {
    assert!(SimBackend::default().release_drops_access());
}

/// A release the backend refuses changes nothing (`ERROR_NOT_ENOUGH_MEMORY` for its
/// out-of-memory answer), whether the engine carries it out under its lock (a backend
/// with inline effects, nothing locked: one call, no plan of steps) or through its plan
/// (without the lock; or with locked pages, unlocked first and locked again when the
/// release fails); once the backend agrees, the same release frees the range.
#[test]
fn a_refused_release_changes_nothing_on_every_path() {
    for (inline, lock) in [(true, false), (false, false), (true, true), (false, true)] {
        let case = format!("inline effects {inline}, locked pages {lock}");
        let s = AddressSpace::with_backend(Told::new(true, inline));
        let a = s.alloc(0, 2 * G, T::RESERVE, Pr::NOACCESS).unwrap();
        s.alloc(a, 3 * P, T::COMMIT, Pr::READWRITE).unwrap();
        s.write(a + 8, &[7; 4]).unwrap();
        if lock {
            s.lock(a, P).unwrap();
        }
        let before = s.regions();
        let (committed, reserved) = (s.committed_bytes(), s.reserved_bytes());
        s.backend().fail.store(true, Ordering::SeqCst);
        assert_eq!(s.free(a, 0, FreeType::RELEASE), Err(Error::NotEnoughMemory), "{case}");
        assert_eq!(s.regions(), before, "{case}");
        assert_eq!((s.committed_bytes(), s.reserved_bytes()), (committed, reserved), "{case}");
        let mut b = [0u8; 4];
        s.read(a + 8, &mut b).unwrap();
        assert_eq!(b, [7; 4], "{case}");
        // Still locked: an unlock of the locked page succeeds, of an unlocked one fails.
        if lock {
            assert_eq!(s.unlock(a + P, P), Err(Error::NotLocked), "{case}");
            s.unlock(a, P).unwrap();
            s.lock(a, P).unwrap();
        }
        s.backend().fail.store(false, Ordering::SeqCst);
        s.free(a, 0, FreeType::RELEASE).unwrap();
        assert_eq!(s.query(a).unwrap().state, MemState::Free, "{case}");
        assert_eq!((s.committed_bytes(), s.reserved_bytes()), (0, 0), "{case}");
        assert_eq!(s.backend().told.lock().unwrap().len(), 2, "{case}: one call each time");
    }
}
