//! `IHostMemoryManager::VirtualQuery` must not block or allocate: the runtime may call it
//! while its other threads are suspended, some of them in the middle of a host call.
//!
//! These tests hold another thread inside a host call — in the backend's system call of a
//! commit or a release, or waiting for budget — and check that a query still answers
//! (with the state from before that call), and count the heap allocations a query makes
//! on the calling thread: none.

mod host_util;
#[macro_use]
mod forward;

use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use host_util::{eventually, started};
use virtmem::backend::{Access, Backend, BackendError, ReserveOptions};
use virtmem::host::{CriticalLevel, HostError, HostMemoryManager, Lifecycle};
use virtmem::{AddressSpace, AllocationType as T, FreeType, MemState, Protection as P, SimBackend};

const PAGE: usize = 4096;

// ----- counting allocations of the calling thread ----------------------------------------

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, counting the allocations (and reallocations) each thread makes.
struct Counting;

// SAFETY: every method forwards to the system allocator with the caller's arguments, so
// it keeps the system allocator's guarantees; the counting touches only a thread-local
// `Cell` (const-initialised, so reading it never allocates).
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on unchanged.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations the calling thread makes while running `f`.
fn allocations<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCATIONS.with(|c| c.get());
    let r = f();
    (ALLOCATIONS.with(|c| c.get()) - before, r)
}

/// Queries of every kind of address a host query meets: its committed, reserved and
/// guard pages, free space, memory the host did not allocate, a view it acquired, an
/// address past the end, and one of another tenant.
///
/// With `busy`, the space's bookkeeping looks held by another thread once all is set
/// up: the host's memory is then described from the host's own record, and what only
/// the space can tell (free or someone else's) is `HOST_E_TIMEOUT`.
fn query_everything(m: &HostMemoryManager, busy: Option<&host_util::Busy>) {
    let other = m.add_tenant("other", None).unwrap();
    let base = m.virtual_alloc(0, 16 * PAGE, T::RESERVE, P::READWRITE, CriticalLevel::Task).unwrap();
    m.virtual_alloc(base, 4 * PAGE, T::COMMIT, P::READWRITE, CriticalLevel::Task).unwrap();
    m.virtual_alloc(base + 4 * PAGE, PAGE, T::COMMIT, P::READWRITE | P::GUARD, CriticalLevel::Task).unwrap();
    let theirs = other.virtual_alloc(0, 16 * PAGE, T::RESERVE, P::READWRITE, CriticalLevel::Task).unwrap();
    let foreign = m.space().alloc(0, 16 * PAGE, T::RESERVE | T::COMMIT, P::READWRITE).unwrap();
    let view = m.space().alloc(0, 16 * PAGE, T::RESERVE, P::READWRITE).unwrap();
    m.acquired_virtual_address_space(view, 16 * PAGE).unwrap();
    let free = m.space().alloc(0, 16 * PAGE, T::RESERVE, P::READWRITE).unwrap();
    m.space().free(free, 0, FreeType::RELEASE).unwrap();

    if let Some(b) = busy {
        b.busy.store(true, Ordering::SeqCst);
    }
    let unknown = |known| if busy.is_some() { Err(HostError::Timeout) } else { known };
    let cases: [(usize, Result<MemState, HostError>); 8] = [
        (base + 5, Ok(MemState::Commit)),
        (base + 4 * PAGE, Ok(MemState::Commit)),
        (base + 9 * PAGE, Ok(MemState::Reserve)),
        (free + PAGE, unknown(Ok(MemState::Free))),
        (foreign, unknown(Err(HostError::InvalidOperation))),
        (view + PAGE, Err(HostError::InvalidOperation)),
        (usize::MAX, Err(HostError::InvalidArg)),
        (theirs, Err(HostError::NotOwner)),
    ];
    // Once first, so that anything made lazily on first use (a thread's error slot) is
    // made; then each must allocate nothing.
    for (addr, _) in cases {
        let _ = m.virtual_query(addr);
    }
    for (addr, want) in cases {
        let (n, got) = allocations(|| m.virtual_query(addr));
        assert_eq!(got.map(|i| i.state), want, "query of {addr:#x}");
        assert_eq!(n, 0, "heap allocations made by a query of {addr:#x}");
    }
    assert_eq!(m.virtual_query(base + 4 * PAGE).unwrap().protect, P::READWRITE | P::GUARD);
}

#[test]
fn query_makes_no_allocation_on_a_simulated_space() {
    let (_space, m) = host_util::host(1 << 30);
    query_everything(&m, None);
}

#[test]
fn query_makes_no_allocation_while_the_space_is_held() {
    let space = Arc::new(host_util::Busy::new());
    let m = started(space.clone(), 1 << 30, Duration::ZERO);
    query_everything(&m, Some(&space));
}

#[cfg(target_os = "linux")]
#[test]
fn query_makes_no_allocation_on_real_memory() {
    let (_space, m) = host_util::linux_host(1 << 30);
    query_everything(&m, None);
}

// ----- a backend that can hold a side effect ------------------------------------------------

/// The simulated backend, holding the next access change or release until told to go.
#[derive(Default)]
struct Gate {
    inner: SimBackend,
    hold_access: AtomicBool,
    hold_release: AtomicBool,
    entered: AtomicBool,
    go: AtomicBool,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl Gate {
    fn hold_if(&self, armed: &AtomicBool) {
        if armed.swap(false, Ordering::SeqCst) {
            self.entered.store(true, Ordering::SeqCst);
            while !self.go.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

impl Backend for Gate {
    forward!(inner: limits, reserve, discard, reset, reset_undo, lock, unlock, read, write, dirty_pages, clear_dirty);
    fn release(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        self.hold_if(&self.hold_release);
        self.inner.release(range, opts)
    }
    fn set_access(&self, range: Range<usize>, from: Access, to: Access) -> Result<(), BackendError> {
        self.hold_if(&self.hold_access);
        self.inner.set_access(range, from, to)
    }
}

/// The state `m` reports at `addr`, asked from another thread: fails the test (rather
/// than hanging it) if the query does not answer within 60 s (the other thread's call
/// stays held until the test lets it go, so any bound tells a blocked query from one
/// that a loaded machine was slow to run).
fn query_from_elsewhere(m: &Arc<HostMemoryManager>, addr: usize) -> Result<MemState, HostError> {
    let (tx, rx) = mpsc::channel();
    let m = m.clone();
    std::thread::spawn(move || {
        let _ = tx.send(m.virtual_query(addr).map(|i| i.state));
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("VirtualQuery blocked behind another thread's call")
}

fn gated(budget: usize, wait: Duration) -> (Arc<AddressSpace<Gate>>, Arc<HostMemoryManager>) {
    let space = Arc::new(AddressSpace::with_backend(Gate::default()));
    let m = Arc::new(started(space.clone(), budget, wait));
    (space, m)
}

#[test]
fn query_answers_while_a_commit_is_in_its_system_call() {
    let (space, m) = gated(1 << 30, Duration::ZERO);
    let base = m.virtual_alloc(0, 16 * PAGE, T::RESERVE, P::READWRITE, CriticalLevel::Task).unwrap();
    space.backend().hold_access.store(true, Ordering::SeqCst);
    let m2 = m.clone();
    let commit =
        std::thread::spawn(move || m2.virtual_alloc(base, 4 * PAGE, T::COMMIT, P::READWRITE, CriticalLevel::Task));
    eventually("the commit to reach the backend", || space.backend().entered.load(Ordering::SeqCst));
    // The commit has not happened yet: the pages are still reserved.
    assert_eq!(query_from_elsewhere(&m, base), Ok(MemState::Reserve));
    assert_eq!(query_from_elsewhere(&m, base + 8 * PAGE), Ok(MemState::Reserve));
    space.backend().go.store(true, Ordering::SeqCst);
    assert_eq!(commit.join().unwrap(), Ok(base));
    assert_eq!(m.virtual_query(base).unwrap().state, MemState::Commit);
    assert_eq!(m.lifecycle(), Lifecycle::Running, "the manager stays enabled");
}

#[test]
fn query_answers_while_a_release_is_in_its_system_call() {
    let (space, m) = gated(1 << 30, Duration::ZERO);
    let base = m.virtual_alloc(0, 16 * PAGE, T::RESERVE | T::COMMIT, P::READWRITE, CriticalLevel::Task).unwrap();
    space.backend().hold_release.store(true, Ordering::SeqCst);
    let m2 = m.clone();
    let release = std::thread::spawn(move || m2.virtual_free(base, 0, FreeType::RELEASE));
    eventually("the release to reach the backend", || space.backend().entered.load(Ordering::SeqCst));
    // Mid-release: the query answers, and what it says does not disable the manager. A
    // release under way is no longer the host's memory, whatever the space still says.
    let mid = query_from_elsewhere(&m, base);
    assert_eq!(mid, Err(HostError::InvalidOperation));
    space.backend().go.store(true, Ordering::SeqCst);
    assert_eq!(release.join().unwrap(), Ok(()));
    assert_eq!(m.virtual_query(base).unwrap().state, MemState::Free);
    assert_eq!(m.lifecycle(), Lifecycle::Running, "the manager stays enabled");
}

#[test]
fn query_answers_while_a_request_waits_for_budget() {
    let (_space, m) = gated(64 * PAGE, Duration::from_secs(30));
    let held = m.virtual_alloc(0, 64 * PAGE, T::RESERVE | T::COMMIT, P::READWRITE, CriticalLevel::Task).unwrap();
    let m2 = m.clone();
    let waiter = std::thread::spawn(move || {
        m2.virtual_alloc(0, 16 * PAGE, T::RESERVE | T::COMMIT, P::READWRITE, CriticalLevel::Process)
    });
    eventually("the request to wait", || m.stats().budget.waiting > 0);
    assert_eq!(query_from_elsewhere(&m, held + PAGE), Ok(MemState::Commit));
    m.virtual_free(held, 0, FreeType::RELEASE).unwrap();
    let got = waiter.join().unwrap().unwrap();
    assert_eq!(m.virtual_query(got).unwrap().state, MemState::Commit);
}
