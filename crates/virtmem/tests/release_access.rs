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
use std::sync::Mutex;

use virtmem::backend::{Access, Backend, BackendError, ReserveOptions};
use virtmem::{AccessKind, AddressSpace, AllocationType as T, Error, FreeType, MemState, Protection as Pr, SimBackend};

const P: usize = 4096;
const G: usize = 65536;

/// The simulated backend, saying `drops` for `release_drops_access` and recording the
/// accessible runs each `release_committed` is given.
struct Told {
    inner: SimBackend,
    drops: bool,
    told: Mutex<Vec<Vec<(Range<usize>, Access)>>>,
}

impl Backend for Told {
    forward!(inner: limits, reserve, release, set_access, inline_effects, discard, decommit);
    forward!(inner: reset, reset_undo, lock, unlock, read, write, dirty_pages, clear_dirty, keeps_grants, grant);
    forward!(inner: try_read, try_write);
    fn release_committed(
        &self,
        range: Range<usize>,
        opts: ReserveOptions,
        accessible: &[(Range<usize>, Access)],
    ) -> Result<(), BackendError> {
        self.told.lock().unwrap().push(accessible.to_vec());
        self.inner.release_committed(range, opts, accessible)
    }
    fn release_drops_access(&self) -> bool {
        self.drops
    }
}

/// Reserve two granules, commit pages with several protections (one of them
/// `PAGE_NOACCESS`, committed but inaccessible), write through a grant, release; the
/// runs the backend was told of, and the state after.
fn release_committed_pages(drops: bool) -> Vec<Vec<(Range<usize>, Access)>> {
    let s = AddressSpace::with_backend(Told { inner: SimBackend::default(), drops, told: Mutex::default() });
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
