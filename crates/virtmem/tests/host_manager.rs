//! The host memory manager over a simulated space: budget, critical levels, ownership,
//! tenants, lifecycle, load, views, inconsistent state. Every HRESULT of the contract
//! except E_POINTER (which only the C interface can produce) is provoked here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use virtmem::backend::faulty::Faulty;

mod host_util;
use host_util::{eventually, host, started, Busy};
use virtmem::host::{hresult::*, CriticalLevel, HostError, HostMemoryManager, Lifecycle, MemoryAvailable, Thresholds};
use virtmem::{
    AddressSpace, AllocationType, Error, FreeType, MemState, Protection, SimBackend, SimSpace, VirtualSpace,
};

const P: usize = 4096;
const RW: Protection = Protection::READWRITE;
const RESERVE: AllocationType = AllocationType::RESERVE;
const COMMIT: AllocationType = AllocationType::COMMIT;
const TASK: CriticalLevel = CriticalLevel::Task;
const DOMAIN: CriticalLevel = CriticalLevel::AppDomain;
const PROCESS: CriticalLevel = CriticalLevel::Process;

fn used(m: &HostMemoryManager) -> usize {
    m.stats().budget.used
}

#[test]
fn commit_is_charged_reserve_is_free_decommit_and_release_refund() {
    let (space, m) = host(64 * P);
    let base = m.virtual_alloc(0, 1 << 30, RESERVE, RW, TASK).unwrap();
    assert_eq!(used(&m), 0, "reserving is free");
    m.virtual_alloc(base, 8 * P, COMMIT, RW, TASK).unwrap();
    assert_eq!(used(&m), 8 * P);
    // Recommitting committed pages costs nothing; an overlapping commit pays only new pages.
    m.virtual_alloc(base, 8 * P, COMMIT, Protection::READONLY, TASK).unwrap();
    assert_eq!(used(&m), 8 * P);
    m.virtual_alloc(base + 4 * P, 8 * P, COMMIT, RW, TASK).unwrap();
    assert_eq!(used(&m), 12 * P);
    // A straddling commit of 2 bytes touches two pages.
    m.virtual_alloc(base + 20 * P - 1, 2, COMMIT, RW, TASK).unwrap();
    assert_eq!(used(&m), 14 * P);
    m.virtual_free(base + 2 * P, 4 * P, FreeType::DECOMMIT).unwrap();
    assert_eq!(used(&m), 10 * P);
    // Decommitting reserved pages refunds nothing.
    m.virtual_free(base + 2 * P, 4 * P, FreeType::DECOMMIT).unwrap();
    assert_eq!(used(&m), 10 * P);
    assert_eq!(space.committed_bytes(), 10 * P);
    m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
    assert_eq!(used(&m), 0);
    assert_eq!(space.committed_bytes(), 0);
    assert_eq!(space.reserved_bytes(), 0);
    // MEM_COMMIT with a NULL address reserves and commits, page-rounded.
    let p = m.virtual_alloc(0, 5, COMMIT, RW, TASK).unwrap();
    assert_eq!(used(&m), P);
    m.virtual_free(p, 0, FreeType::DECOMMIT).unwrap();
    assert_eq!(used(&m), 0);
    m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
    assert_eq!(m.stats().reservations, 0);
}

#[test]
fn task_critical_fails_at_the_budget_and_changes_nothing() {
    let (space, m) = host(16 * P);
    let base = m.virtual_alloc(0, 64 * P, RESERVE, RW, TASK).unwrap();
    m.virtual_alloc(base, 12 * P, COMMIT, RW, TASK).unwrap();
    let e = m.virtual_alloc(base + 12 * P, 5 * P, COMMIT, RW, TASK).unwrap_err();
    assert_eq!(e, HostError::OutOfMemory);
    assert_eq!(e.hresult(), E_OUTOFMEMORY);
    assert_eq!(used(&m), 12 * P);
    assert_eq!(space.query(base + 12 * P).unwrap().state, MemState::Reserve, "nothing committed");
    // Exactly up to the budget is fine.
    m.virtual_alloc(base + 12 * P, 4 * P, COMMIT, RW, TASK).unwrap();
    assert_eq!(m.memory_load().unwrap().available, 0);
    let e = m.virtual_alloc(0, 1, COMMIT, RW, TASK).unwrap_err();
    assert_eq!(e, HostError::OutOfMemory);
    assert_eq!(m.stats().reservations, 1, "a refused reserve+commit reserves nothing");
}

#[test]
fn domain_critical_uses_the_soft_reserve_process_critical_the_emergency_reserve() {
    let space = Arc::new(SimSpace::simulated());
    let m = HostMemoryManager::builder(space, 16 * P)
        .soft_reserve(4 * P)
        .emergency_reserve(4 * P)
        .process_critical_timeout(Duration::ZERO)
        .build_started()
        .unwrap();
    let base = m.virtual_alloc(0, 64 * P, RESERVE, RW, TASK).unwrap();
    m.virtual_alloc(base, 16 * P, COMMIT, RW, TASK).unwrap();
    let next = |i: usize| base + (16 + i) * P;
    assert_eq!(m.virtual_alloc(next(0), P, COMMIT, RW, TASK), Err(HostError::OutOfMemory));
    for i in 0..4 {
        m.virtual_alloc(next(i), P, COMMIT, RW, DOMAIN).unwrap();
    }
    assert_eq!(m.virtual_alloc(next(4), P, COMMIT, RW, DOMAIN), Err(HostError::OutOfMemory));
    for i in 4..8 {
        m.virtual_alloc(next(i), P, COMMIT, RW, PROCESS).unwrap();
    }
    assert_eq!(m.virtual_alloc(next(8), P, COMMIT, RW, PROCESS), Err(HostError::OutOfMemory), "no wait configured");
    let load = m.memory_load().unwrap();
    assert_eq!((load.percent, load.available), (100, 0));
    assert_eq!(used(&m), 24 * P);
}

#[test]
fn default_policy_has_reserves() {
    let space = Arc::new(SimSpace::simulated());
    let m = HostMemoryManager::builder(space, 16 * P).build_started().unwrap();
    m.virtual_alloc(0, 16 * P, COMMIT, RW, TASK).unwrap();
    assert_eq!(m.virtual_alloc(0, P, COMMIT, RW, TASK), Err(HostError::OutOfMemory));
    // 1/16 of the budget each: one page of soft reserve, one of emergency reserve.
    m.virtual_alloc(0, P, COMMIT, RW, DOMAIN).unwrap();
    assert_eq!(m.virtual_alloc(0, P, COMMIT, RW, DOMAIN), Err(HostError::OutOfMemory));
    m.virtual_alloc(0, P, COMMIT, RW, PROCESS).unwrap();
}

fn waiting_host(budget: usize, wait: Duration) -> HostMemoryManager {
    started(Arc::new(SimSpace::simulated()), budget, wait)
}

/// (The wait allowed is ten minutes: a waiter that the free did not wake would still get
/// its memory, at its deadline, so only ending well before it shows the free woke it. The
/// 60 s bound on its ending is a hang guard.)
#[test]
fn process_critical_waits_and_succeeds_when_another_thread_frees() {
    let m = waiting_host(8 * P, Duration::from_secs(600));
    let hog = m.virtual_alloc(0, 8 * P, COMMIT, RW, TASK).unwrap();
    let m2 = m.clone();
    let waiter = thread::spawn(move || m2.virtual_alloc(0, 4 * P, COMMIT, RW, PROCESS));
    eventually("the request to wait", || m.stats().budget.waiting == 1);
    // A task-critical request does not wait.
    assert_eq!(m.virtual_alloc(0, P, COMMIT, RW, TASK), Err(HostError::OutOfMemory));
    m.virtual_free(hog, 4 * P, FreeType::DECOMMIT).unwrap();
    eventually("the free to wake the waiter", || waiter.is_finished());
    let p = waiter.join().unwrap().unwrap();
    assert_eq!(m.virtual_query(p).unwrap().state, MemState::Commit);
    assert_eq!(used(&m), 8 * P);
    assert_eq!(m.stats().budget.waiting, 0);
}

#[test]
fn a_waiting_commit_into_a_reservation_does_not_block_frees_of_that_reservation() {
    let m = waiting_host(8 * P, Duration::from_secs(60));
    let base = m.virtual_alloc(0, 16 * P, RESERVE, RW, TASK).unwrap();
    m.virtual_alloc(base, 8 * P, COMMIT, RW, TASK).unwrap();
    let m2 = m.clone();
    let waiter = thread::spawn(move || m2.virtual_alloc(base + 8 * P, 2 * P, COMMIT, RW, PROCESS));
    eventually("the request to wait", || m.stats().budget.waiting == 1);
    m.virtual_free(base, 2 * P, FreeType::DECOMMIT).unwrap();
    assert_eq!(waiter.join().unwrap(), Ok(base + 8 * P));
    assert_eq!(used(&m), 8 * P);
    assert_eq!(m.space().committed_bytes(), 8 * P);
}

#[test]
fn process_critical_times_out() {
    let m = waiting_host(4 * P, Duration::from_millis(50));
    m.virtual_alloc(0, 4 * P, COMMIT, RW, TASK).unwrap();
    let t = Instant::now();
    let e = m.virtual_alloc(0, P, COMMIT, RW, PROCESS).unwrap_err();
    assert_eq!(e, HostError::Timeout);
    assert_eq!(e.hresult(), HOST_E_TIMEOUT);
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(used(&m), 4 * P);
    assert_eq!(m.stats().reservations, 1);
}

/// A process-critical request waits for memory to come back; one larger than the budget
/// and every reserve together (globally, or for its tenant's sub-budget) can never be
/// admitted, whatever is freed: it fails at once with E_OUTOFMEMORY ("cannot be satisfied
/// now"), not with HOST_E_TIMEOUT after the whole wait — nor never, with a wait of
/// `Duration::MAX`. A request that fits once memory comes back still waits.
#[test]
fn a_process_critical_request_that_can_never_fit_fails_at_once() {
    // (Ten minutes, or no deadline at all: a call that waited would not end within the
    // 60 s that `eventually` allows, a hang guard.)
    for wait in [Duration::from_secs(600), Duration::MAX] {
        // 16 pages of budget, one page of soft and one of emergency reserve.
        let space = Arc::new(SimSpace::simulated());
        let builder = HostMemoryManager::builder(space, 16 * P).soft_reserve(P).emergency_reserve(P);
        let m = builder.process_critical_timeout(wait).build_started().unwrap();
        let tenant = m.add_tenant("small", Some(4 * P)).unwrap();
        let heap = m.create_malloc(virtmem::host::MallocType::THREADSAFE).unwrap();
        let (m2, t2, h2) = (m.clone(), tenant.clone(), heap.clone());
        let calls = thread::spawn(move || {
            [
                m2.virtual_alloc(0, 19 * P, COMMIT, RW, PROCESS).map(|_| ()),
                t2.virtual_alloc(0, 7 * P, COMMIT, RW, PROCESS).map(|_| ()),
                h2.alloc(19 * P, PROCESS).map(|_| ()),
            ]
        });
        eventually("the requests that can never fit to end without waiting", || calls.is_finished());
        assert_eq!(calls.join().unwrap(), [Err(HostError::OutOfMemory); 3]);
        assert_eq!((used(&m), m.stats().budget.waiting), (0, 0));
        // At the very limit (18 pages) a request does fit once the rest is freed: it waits.
        let hog = m.virtual_alloc(0, P, COMMIT, RW, TASK).unwrap();
        let m3 = m.clone();
        let waiter = thread::spawn(move || m3.virtual_alloc(0, 18 * P, COMMIT, RW, PROCESS));
        eventually("the request to wait", || m.stats().budget.waiting == 1);
        m.virtual_free(hog, 0, FreeType::RELEASE).unwrap();
        assert!(waiter.join().unwrap().is_ok());
    }
}

#[test]
fn shutdown_abandons_waiters() {
    let m = waiting_host(4 * P, Duration::from_secs(60));
    m.virtual_alloc(0, 4 * P, COMMIT, RW, TASK).unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let m = m.clone();
            thread::spawn(move || m.virtual_alloc(0, P, COMMIT, RW, PROCESS))
        })
        .collect();
    eventually("three waiters", || m.stats().budget.waiting == 3);
    m.shutdown();
    for w in waiters {
        let e = w.join().unwrap().unwrap_err();
        assert_eq!(e, HostError::Abandoned);
        assert_eq!(e.hresult(), HOST_E_ABANDONED);
    }
    assert_eq!(m.virtual_alloc(0, P, COMMIT, RW, PROCESS), Err(HostError::ClrNotAvailable));
}

#[test]
fn cancel_abandons_only_the_waiters_of_that_tenant_and_only_current_ones() {
    let m = waiting_host(4 * P, Duration::from_secs(60));
    let other = m.add_tenant("other", None).unwrap();
    let hog = m.virtual_alloc(0, 4 * P, COMMIT, RW, TASK).unwrap();
    let (ma, mb) = (m.clone(), other.clone());
    let wa = thread::spawn(move || ma.virtual_alloc(0, P, COMMIT, RW, PROCESS));
    let wb = thread::spawn(move || mb.virtual_alloc(0, P, COMMIT, RW, PROCESS));
    eventually("two waiters", || m.stats().budget.waiting == 2);
    m.cancel_waits();
    assert_eq!(wa.join().unwrap(), Err(HostError::Abandoned));
    assert_eq!(m.stats().budget.waiting, 1, "the other tenant still waits");
    m.virtual_free(hog, 0, FreeType::RELEASE).unwrap();
    let p = wb.join().unwrap().unwrap();
    // A new request after the cancellation is served normally.
    m.virtual_alloc(0, P, COMMIT, RW, PROCESS).unwrap();
    other.virtual_free(p, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn process_critical_failure_can_disable_the_manager() {
    let space = Arc::new(SimSpace::simulated());
    let m = HostMemoryManager::builder(space, 4 * P)
        .soft_reserve(0)
        .emergency_reserve(0)
        .process_critical_timeout(Duration::from_millis(10))
        .disable_on_process_critical_failure(true)
        .build_started()
        .unwrap();
    m.virtual_alloc(0, 4 * P, COMMIT, RW, TASK).unwrap();
    assert_eq!(m.virtual_alloc(0, P, COMMIT, RW, TASK), Err(HostError::OutOfMemory), "task failure: still up");
    assert_eq!(m.lifecycle(), Lifecycle::Running);
    assert_eq!(m.virtual_alloc(0, P, COMMIT, RW, PROCESS), Err(HostError::Timeout));
    assert_eq!(m.lifecycle(), Lifecycle::Disabled);
    assert_eq!(m.memory_load(), Err(HostError::ClrNotAvailable));
}

#[test]
fn foreign_memory_is_refused_and_left_untouched() {
    let (space, m) = host(1 << 20);
    // Memory someone else allocated in the same space.
    let foreign = space.alloc(0, 4 * P, RESERVE | COMMIT, RW).unwrap();
    space.write(foreign, b"mine").unwrap();
    let before = space.query(foreign).unwrap();
    let io = HostError::InvalidOperation;
    assert_eq!(io.hresult(), HOST_E_INVALIDOPERATION);
    assert_eq!(m.virtual_free(foreign, 0, FreeType::RELEASE), Err(io));
    assert_eq!(m.virtual_free(foreign, P, FreeType::DECOMMIT), Err(io));
    assert_eq!(m.virtual_free(foreign, 0, FreeType::DECOMMIT), Err(io));
    assert_eq!(m.virtual_query(foreign), Err(io));
    assert_eq!(m.virtual_query(foreign + 3 * P + 17), Err(io));
    assert_eq!(m.virtual_protect(foreign, P, Protection::NOACCESS), Err(io));
    assert_eq!(m.virtual_alloc(foreign, P, COMMIT, Protection::READONLY, TASK), Err(io));
    assert_eq!(m.virtual_alloc(foreign, P, AllocationType::RESET, RW, TASK), Err(io));
    assert_eq!(space.query(foreign).unwrap(), before);
    let mut buf = [0u8; 4];
    space.read(foreign, &mut buf).unwrap();
    assert_eq!(&buf, b"mine");
    assert_eq!(used(&m), 0);
    // Free address space: nothing to free or protect, but a query describes it.
    let free = foreign + (1 << 30);
    assert_eq!(m.virtual_free(free, 0, FreeType::RELEASE), Err(io));
    assert_eq!(m.virtual_protect(free, P, RW), Err(io));
    assert_eq!(m.virtual_alloc(free, P, COMMIT, RW, TASK), Err(io));
    let q = m.virtual_query(free).unwrap();
    assert_eq!((q.state, q.allocation_base), (MemState::Free, 0));
    // A query past the end of the address space is ERROR_INVALID_PARAMETER.
    assert_eq!(m.virtual_query(usize::MAX), Err(HostError::InvalidArg));
}

#[test]
fn win32_errors_map_to_hresult_from_win32() {
    let (_space, m) = host(1 << 20);
    let base = m.virtual_alloc(0, 16 * P, RESERVE, RW, TASK).unwrap();
    // Release from inside the reservation: ERROR_INVALID_ADDRESS.
    let e = m.virtual_free(base + P, 0, FreeType::RELEASE).unwrap_err();
    assert_eq!(e, HostError::Win32(Error::InvalidAddress));
    assert_eq!(e.hresult() as u32, 0x8007_01E7);
    // Protecting reserved pages: ERROR_INVALID_ADDRESS, *old = PAGE_NOACCESS.
    let (e, old) = m.virtual_protect_detailed(base, P, RW).unwrap_err();
    assert_eq!((e.hresult() as u32, old), (0x8007_01E7, Some(Protection::NOACCESS)));
    // Committing past the end of the reservation.
    assert_eq!(m.virtual_alloc(base + 15 * P, 2 * P, COMMIT, RW, TASK), Err(HostError::Win32(Error::InvalidAddress)));
    // Invalid arguments: E_INVALIDARG.
    let ia = HostError::InvalidArg;
    assert_eq!(ia.hresult(), E_INVALIDARG);
    assert_eq!(m.virtual_alloc(0, 0, COMMIT, RW, TASK), Err(ia));
    assert_eq!(m.virtual_alloc(0, P, COMMIT, Protection::from_bits_retain(0x3), TASK), Err(ia));
    assert_eq!(m.virtual_alloc(0, P, AllocationType::from_bits_retain(0x4000), RW, TASK), Err(ia));
    assert_eq!(m.virtual_free(base, P, FreeType::RELEASE), Err(ia));
    assert_eq!(m.virtual_free(base, 17 * P, FreeType::DECOMMIT), Err(ia));
    assert_eq!(m.virtual_protect(base, P, Protection::from_bits_retain(0)), Err(ia));
    assert_eq!(CriticalLevel::from_raw(3), Err(ia));
    assert_eq!(CriticalLevel::from_raw(2), Ok(PROCESS));
    // Still running, nothing charged.
    assert_eq!(m.lifecycle(), Lifecycle::Running);
    assert_eq!(used(&m), 0);
}

/// Calls on the host's own reservation whose range the reservation does not hold are
/// ERROR_INVALID_ADDRESS as Win32 has them (the space itself says the same), as
/// HRESULT_FROM_WIN32: a MEM_RESET running past its end, a whole-allocation decommit
/// (size 0) not at its base, a protect running past its end. Nothing changes, nothing is
/// charged or refunded, and the manager stays usable (no inconsistency is seen).
#[test]
fn ranges_the_reservation_does_not_hold_are_invalid_address_and_change_nothing() {
    let (space, m) = host(1 << 20);
    let base = m.virtual_alloc(0, 8 * P, RESERVE, RW, TASK).unwrap();
    m.virtual_alloc(base, 8 * P, COMMIT, RW, TASK).unwrap();
    space.write(base + 7 * P, b"data").unwrap();
    let after = m.virtual_alloc(0, 16 * P, RESERVE | COMMIT, RW, TASK).unwrap();
    assert_ne!(after, base + 8 * P, "a reservation right after would make a protect past the end legal");
    let regions = space.regions();
    let charged = used(&m);
    let e487 = HostError::Win32(Error::InvalidAddress);
    let reset = AllocationType::RESET;
    assert_eq!(m.virtual_alloc(base + 7 * P, 2 * P, reset, RW, TASK), Err(e487));
    assert_eq!(space.alloc(base + 7 * P, 2 * P, reset, RW), Err(Error::InvalidAddress));
    assert_eq!(m.virtual_free(base + P, 0, FreeType::DECOMMIT), Err(e487));
    assert_eq!(space.free(base + P, 0, FreeType::DECOMMIT), Err(Error::InvalidAddress));
    assert_eq!(m.virtual_protect(base + 7 * P, 2 * P, Protection::READONLY), Err(e487));
    assert_eq!(m.virtual_protect_detailed(base + 7 * P, 2 * P, Protection::READONLY), Err((e487, None)));
    assert_eq!(space.protect(base + 7 * P, 2 * P, Protection::READONLY), Err(Error::InvalidAddress));
    assert_eq!(e487.hresult() as u32, 0x8007_01E7);
    assert_eq!(space.regions(), regions);
    assert_eq!(used(&m), charged);
    let mut buf = [0; 4];
    space.read(base + 7 * P, &mut buf).unwrap();
    assert_eq!(&buf, b"data");
    assert_eq!(m.lifecycle(), Lifecycle::Running);
    // The same calls inside the reservation work.
    m.virtual_alloc(base + 6 * P, 2 * P, reset, RW, TASK).unwrap();
    assert_eq!(m.virtual_protect(base + 6 * P, 2 * P, Protection::READONLY), Ok(RW));
    m.virtual_free(base, 0, FreeType::DECOMMIT).unwrap();
    assert_eq!(used(&m), charged - 8 * P);
}

#[test]
fn query_and_protect_of_own_memory_follow_win32() {
    let (_space, m) = host(1 << 20);
    let base = m.virtual_alloc(0, 16 * P, RESERVE, RW, TASK).unwrap();
    m.virtual_alloc(base + P, 2 * P, COMMIT, RW, TASK).unwrap();
    let q = m.virtual_query(base + P + 5).unwrap();
    assert_eq!((q.base_address, q.allocation_base, q.region_size, q.state), (base + P, base, 2 * P, MemState::Commit));
    assert_eq!(q.protect, RW);
    let q = m.virtual_query(base).unwrap();
    assert_eq!((q.state, q.region_size), (MemState::Reserve, P));
    assert_eq!(m.virtual_protect(base + P, P, Protection::READONLY), Ok(RW));
    assert_eq!(m.virtual_query(base + P).unwrap().protect, Protection::READONLY);
    m.virtual_alloc(base + P, P, AllocationType::RESET, RW, TASK).unwrap();
    assert_eq!(used(&m), 2 * P, "MEM_RESET keeps pages committed");
}

#[test]
fn lifecycle_before_start_after_shutdown() {
    let space = Arc::new(SimSpace::simulated());
    let m = HostMemoryManager::builder(space, 1 << 20).build().unwrap();
    let na = HostError::ClrNotAvailable;
    assert_eq!(na.hresult(), HOST_E_CLRNOTAVAILABLE);
    assert_eq!(m.lifecycle(), Lifecycle::NotStarted);
    assert_eq!(m.virtual_alloc(0, P, COMMIT, RW, TASK), Err(na));
    assert_eq!(m.memory_load(), Err(na));
    assert_eq!(m.virtual_query(0x10000), Err(na));
    assert_eq!(m.acquired_virtual_address_space(0x10000, P), Err(na));
    assert!(matches!(m.create_malloc(Default::default()), Err(HostError::ClrNotAvailable)));
    m.start().unwrap();
    m.start().unwrap();
    let p = m.virtual_alloc(0, P, COMMIT, RW, TASK).unwrap();
    let heap = m.create_malloc(Default::default()).unwrap();
    let b = heap.alloc(10, TASK).unwrap();
    m.acquired_virtual_address_space(0x7000_0000_0000, P).unwrap();
    m.shutdown();
    assert_eq!(m.lifecycle(), Lifecycle::ShutDown);
    assert_eq!(m.virtual_alloc(0, P, COMMIT, RW, TASK), Err(na));
    assert_eq!(m.virtual_free(p, 0, FreeType::RELEASE), Err(na));
    assert_eq!(m.virtual_query(p), Err(na));
    assert_eq!(m.virtual_protect(p, P, Protection::READONLY), Err(na));
    assert_eq!(m.memory_load(), Err(na));
    assert_eq!(m.register_memory_notification_callback(Arc::new(|_| {})), Err(na));
    assert_eq!(m.needs_virtual_address_space(p, P), Err(na));
    assert_eq!(m.acquired_virtual_address_space(0x7100_0000_0000, P), Err(na));
    assert_eq!(m.released_virtual_address_space(0x7000_0000_0000), Err(na));
    assert_eq!(heap.alloc(10, TASK), Err(na));
    assert_eq!(heap.free(b), Err(na));
    assert_eq!(heap.free(0), Err(na));
    assert!(matches!(m.add_tenant("late", None), Err(HostError::ClrNotAvailable)));
    assert_eq!(m.start(), Err(na), "no restart");
}

#[test]
fn dropping_the_manager_releases_everything() {
    let space = Arc::new(SimSpace::simulated());
    {
        let m = HostMemoryManager::builder(space.clone(), 1 << 24).build_started().unwrap();
        m.virtual_alloc(0, 1 << 20, RESERVE, RW, TASK).unwrap();
        m.virtual_alloc(0, 1 << 16, COMMIT, RW, TASK).unwrap();
        let heap = m.create_malloc(Default::default()).unwrap();
        heap.alloc(100, TASK).unwrap();
        heap.alloc(100_000, TASK).unwrap();
        assert!(space.reserved_bytes() > 0);
        m.shutdown();
    }
    assert_eq!(space.reserved_bytes(), 0);
    assert_eq!(space.committed_bytes(), 0);
}

#[test]
fn builder_rejects_nonsense() {
    let space: Arc<dyn VirtualSpace> = Arc::new(SimSpace::simulated());
    let b = |budget| HostMemoryManager::builder(space.clone(), budget);
    assert_eq!(b(0).build().unwrap_err(), HostError::InvalidArg);
    assert_eq!(b(P).tenant_budget(0).build().unwrap_err(), HostError::InvalidArg);
    let th = |low, high| Thresholds { low_percent: low, high_percent: high, hysteresis: 1 };
    assert_eq!(b(P).thresholds(th(50, 50)).build().unwrap_err(), HostError::InvalidArg);
    assert_eq!(b(P).thresholds(th(101, 50)).build().unwrap_err(), HostError::InvalidArg);
    assert!(b(P).thresholds(th(100, 0)).build().is_ok());
    // A hysteresis that covers the band between the thresholds makes a level unreachable
    // (60/50/20 would report a 65 % load as High and never say Low).
    let thh = |low, high, hysteresis| Thresholds { low_percent: low, high_percent: high, hysteresis };
    for bad in [thh(60, 50, 20), thh(60, 50, 10), thh(100, 0, 100), thh(90, 50, 101), thh(90, 50, u32::MAX)] {
        assert!(bad.validate().is_err(), "{bad:?}");
        assert_eq!(b(P).thresholds(bad).build().unwrap_err(), HostError::InvalidArg, "{bad:?}");
    }
    assert!(b(P).thresholds(thh(60, 50, 9)).build().is_ok());
    assert!(b(P).thresholds(thh(100, 0, 99)).build().is_ok());
}

#[test]
fn tenants_have_sub_budgets_and_cannot_touch_each_other() {
    let (_space, a) = host(64 * P);
    let b = a.add_tenant("b", Some(8 * P)).unwrap();
    assert_eq!(a.add_tenant("zero", Some(0)).unwrap_err(), HostError::InvalidArg);
    let pb = b.virtual_alloc(0, 16 * P, RESERVE, RW, TASK).unwrap();
    b.virtual_alloc(pb, 8 * P, COMMIT, RW, TASK).unwrap();
    assert_eq!(b.virtual_alloc(pb + 8 * P, P, COMMIT, RW, TASK), Err(HostError::OutOfMemory), "sub-budget");
    assert_eq!(b.memory_load().unwrap().percent, 100);
    assert_eq!(b.memory_load().unwrap().available, 0);
    assert_eq!(a.memory_load().unwrap().percent, 12, "8 of 64 pages");
    let pa = a.virtual_alloc(0, 4 * P, COMMIT, RW, TASK).unwrap();
    let no = HostError::NotOwner;
    assert_eq!(no.hresult(), HOST_E_NOT_OWNER);
    assert_eq!(a.virtual_free(pb, 0, FreeType::RELEASE), Err(no));
    assert_eq!(a.virtual_free(pb, P, FreeType::DECOMMIT), Err(no));
    assert_eq!(a.virtual_query(pb), Err(no));
    assert_eq!(a.virtual_protect(pb, P, Protection::READONLY), Err(no));
    assert_eq!(a.virtual_alloc(pb + 8 * P, P, COMMIT, RW, TASK), Err(no));
    assert_eq!(b.virtual_free(pa, 0, FreeType::RELEASE), Err(no));
    a.acquired_virtual_address_space(0x7000_0000_0000, P).unwrap();
    assert_eq!(b.released_virtual_address_space(0x7000_0000_0000), Err(no));
    let s = a.stats();
    assert_eq!(s.budget.tenants[0].used, 5 * P);
    assert_eq!(s.budget.tenants[1].used, 8 * P);
    assert_eq!(s.budget.tenants[1].name, "b");
    // The global budget binds tenants without a sub-budget.
    assert_eq!(a.virtual_alloc(0, 52 * P, COMMIT, RW, TASK), Err(HostError::OutOfMemory));
    a.virtual_alloc(0, 51 * P, COMMIT, RW, TASK).unwrap();
    b.virtual_free(pb, 0, FreeType::RELEASE).unwrap();
    assert_eq!(used(&a), 56 * P);
}

#[test]
fn memory_load_counts_committed_heap_and_views() {
    let (_space, m) = host(100 * P);
    assert_eq!(m.memory_load().unwrap().percent, 0);
    m.virtual_alloc(0, 10 * P, COMMIT, RW, TASK).unwrap();
    m.acquired_virtual_address_space(0x7000_0000_0000, 20 * P).unwrap();
    let heap = m.create_malloc(Default::default()).unwrap();
    heap.alloc(64, TASK).unwrap();
    let s = m.stats().budget;
    assert_eq!((s.virtual_committed, s.views), (10 * P, 20 * P));
    assert!(s.heap_committed >= P);
    let load = m.memory_load().unwrap();
    let in_use = 30 * P + s.heap_committed;
    assert_eq!(load.percent as usize, in_use * 100 / (100 * P));
    assert_eq!(load.available, 100 * P - in_use);
}

#[test]
fn views_count_against_the_budget_and_are_remembered_by_address() {
    let (_space, m) = host(16 * P);
    let v = 0x6000_0000_0000;
    m.acquired_virtual_address_space(v, 10 * P - 100).unwrap();
    assert_eq!(m.stats().budget.views, 10 * P, "charged in whole pages");
    assert_eq!(m.virtual_alloc(0, 7 * P, COMMIT, RW, TASK), Err(HostError::OutOfMemory));
    // Overlapping views, NULL or empty views are invalid.
    assert_eq!(m.acquired_virtual_address_space(v + P, P), Err(HostError::InvalidArg));
    assert_eq!(m.acquired_virtual_address_space(v - P, 2 * P), Err(HostError::InvalidArg));
    assert_eq!(m.acquired_virtual_address_space(0, P), Err(HostError::InvalidArg));
    assert_eq!(m.acquired_virtual_address_space(v + 20 * P, 0), Err(HostError::InvalidArg));
    assert_eq!(m.acquired_virtual_address_space(usize::MAX - P, 2 * P), Err(HostError::InvalidArg));
    // A view is not the host's memory.
    assert_eq!(m.virtual_query(v + P), Err(HostError::InvalidOperation));
    assert_eq!(m.virtual_free(v, 0, FreeType::RELEASE), Err(HostError::InvalidOperation));
    // Views can be acquired over the budget: the runtime has mapped them already.
    m.acquired_virtual_address_space(v + 10 * P, 10 * P).unwrap();
    assert_eq!(m.memory_load().unwrap().percent, 100);
    // Unknown addresses, including the middle of a view.
    assert_eq!(m.released_virtual_address_space(v + P), Err(HostError::InvalidOperation));
    assert_eq!(m.released_virtual_address_space(0x1234_0000), Err(HostError::InvalidOperation));
    m.released_virtual_address_space(v).unwrap();
    assert_eq!(m.released_virtual_address_space(v), Err(HostError::InvalidOperation), "only once");
    m.released_virtual_address_space(v + 10 * P).unwrap();
    assert_eq!(used(&m), 0);
    m.virtual_alloc(0, 16 * P, COMMIT, RW, TASK).unwrap();
}

/// A view is mapped in user space, so a range whose end passes the top of the space's
/// user addresses is an invalid argument (E_INVALIDARG, as such a range is for
/// VirtualAlloc: win32 spec, VirtualAlloc rule 3) and charges nothing. Before, any
/// non-wrapping range was charged: a view of nearly 2^64 bytes beside a few committed
/// pages wrapped the budget's byte count (a release build then reported the load as 0 %
/// and nearly the whole budget available; a debug build panicked inside the call).
#[test]
fn a_view_past_the_top_of_user_space_is_invalid_and_charges_nothing() {
    let (space, m) = host(16 * P);
    let end = space.system_info().maximum_application_address + 1;
    m.virtual_alloc(0, 4 * P, COMMIT, RW, TASK).unwrap();
    for (address, size) in [(0x1000, usize::MAX - 0x1fff), (end - P, 2 * P), (end, P), (end - 1, 2)] {
        assert_eq!(
            m.acquired_virtual_address_space(address, size),
            Err(HostError::InvalidArg),
            "{address:#x}+{size:#x}"
        );
    }
    assert_eq!(used(&m), 4 * P);
    assert_eq!(m.stats().views, 0);
    let load = m.memory_load().unwrap();
    assert_eq!((load.percent, load.available), (25, 12 * P));
    // The last page of user space is a place a view can be.
    m.acquired_virtual_address_space(end - P, P).unwrap();
    assert_eq!(used(&m), 5 * P);
    m.released_virtual_address_space(end - P).unwrap();
    assert_eq!(used(&m), 4 * P);
}

#[test]
fn needs_virtual_address_space_asks_the_reclaim_hook() {
    let (_space, m) = host(16 * P);
    assert_eq!(m.needs_virtual_address_space(0x10000, P), Err(HostError::OutOfMemory));
    assert_eq!(m.needs_virtual_address_space(0x10000, 0), Err(HostError::InvalidArg));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let space = Arc::new(SimSpace::simulated());
    let m = HostMemoryManager::builder(space, 16 * P)
        .on_needs_address_space(move |a, s| {
            log.lock().unwrap().push((a, s));
            s <= 0x10000
        })
        .build_started()
        .unwrap();
    assert_eq!(m.needs_virtual_address_space(0x20000, 0x10000), Ok(()));
    assert_eq!(m.needs_virtual_address_space(0x20000, 0x20000), Err(HostError::OutOfMemory));
    assert_eq!(*asked.lock().unwrap(), vec![(0x20000, 0x10000), (0x20000, 0x20000)]);
}

type Log = Arc<Mutex<Vec<(MemoryAvailable, thread::ThreadId)>>>;

fn notified_host(budget: usize) -> (HostMemoryManager, Log) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let space = Arc::new(SimSpace::simulated());
    let m = HostMemoryManager::builder(space, budget)
        .soft_reserve(0)
        .emergency_reserve(0)
        .thresholds(Thresholds { low_percent: 80, high_percent: 40, hysteresis: 10 })
        .on_memory_notification(move |lvl| l.lock().unwrap().push((lvl, thread::current().id())))
        .build_started()
        .unwrap();
    (m, log)
}

fn levels(log: &Log) -> Vec<MemoryAvailable> {
    log.lock().unwrap().iter().map(|&(l, _)| l).collect()
}

#[test]
fn notifications_fire_on_crossings_only_with_hysteresis() {
    use MemoryAvailable::*;
    let (m, log) = notified_host(100 * P);
    let base = m.virtual_alloc(0, 100 * P, RESERVE, RW, TASK).unwrap();
    let commit = |from: usize, to: usize| m.virtual_alloc(base + from * P, (to - from) * P, COMMIT, RW, TASK).unwrap();
    let decommit =
        |from: usize, to: usize| m.virtual_free(base + from * P, (to - from) * P, FreeType::DECOMMIT).unwrap();
    commit(0, 40);
    commit(40, 50); // 50 %: still High (needs > 40 + 10)
    assert_eq!(levels(&log), vec![]);
    commit(50, 51); // 51 %: Neutral
    assert_eq!(levels(&log), vec![Neutral]);
    commit(51, 79);
    m.memory_load().unwrap();
    assert_eq!(levels(&log), vec![Neutral], "no notification without a crossing");
    commit(79, 80); // 80 %: Low
    commit(80, 95);
    assert_eq!(levels(&log), vec![Neutral, Low]);
    decommit(75, 95); // 75 %: still Low (needs < 80 - 10)
    assert_eq!(levels(&log), vec![Neutral, Low]);
    decommit(69, 75); // 69 %: Neutral
    assert_eq!(levels(&log), vec![Neutral, Low, Neutral]);
    decommit(0, 69); // 0 %: High
    assert_eq!(levels(&log), vec![Neutral, Low, Neutral, High]);
    commit(0, 100); // straight to Low
    assert_eq!(levels(&log), vec![Neutral, Low, Neutral, High, Low]);
}

#[test]
fn notifications_come_from_the_crossing_thread_without_locks_held() {
    use MemoryAvailable::*;
    let (m, log) = notified_host(10 * P);
    // A callback that calls back into the manager would deadlock if a lock were held.
    let m2 = m.clone();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    m.register_memory_notification_callback(Arc::new(move |_| {
        s2.store(m2.memory_load().unwrap().percent as usize + 1, Ordering::SeqCst);
    }))
    .unwrap();
    let t = thread::spawn({
        let m = m.clone();
        move || (m.virtual_alloc(0, 9 * P, COMMIT, RW, TASK).unwrap(), thread::current().id())
    });
    let (p, crosser) = t.join().unwrap();
    assert_eq!(*log.lock().unwrap(), vec![(Low, crosser)]);
    assert_eq!(seen.load(Ordering::SeqCst), 91);
    m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
    assert_eq!(log.lock().unwrap()[1], (High, thread::current().id()));
}

#[test]
fn notifications_follow_other_tenants_load() {
    use MemoryAvailable::*;
    let (a, log) = notified_host(10 * P);
    let b = a.add_tenant("b", None).unwrap();
    let p = b.virtual_alloc(0, 9 * P, COMMIT, RW, TASK).unwrap();
    assert_eq!(levels(&log), vec![Low], "tenant a feels the global load");
    b.virtual_free(p, 0, FreeType::RELEASE).unwrap();
    assert_eq!(levels(&log), vec![Low, High]);
}

#[test]
fn injected_backend_failures_are_refunded() {
    let space = Arc::new(AddressSpace::with_backend(Faulty::new(SimBackend::default())));
    let m = HostMemoryManager::builder(space.clone(), 64 * P).build_started().unwrap();
    let base = m.virtual_alloc(0, 32 * P, RESERVE, RW, TASK).unwrap();
    space.backend().arm(1);
    assert_eq!(m.virtual_alloc(base, 4 * P, COMMIT, RW, TASK), Err(HostError::OutOfMemory));
    assert!(space.backend().fired());
    assert_eq!(used(&m), 0);
    space.backend().arm(1);
    assert_eq!(m.virtual_alloc(0, 4 * P, COMMIT, RW, TASK), Err(HostError::OutOfMemory));
    assert_eq!(used(&m), 0);
    assert_eq!(m.stats().reservations, 1);
    m.virtual_alloc(base, 4 * P, COMMIT, RW, TASK).unwrap();
    space.backend().arm(1);
    assert_eq!(m.virtual_free(base, 2 * P, FreeType::DECOMMIT), Err(HostError::OutOfMemory));
    assert_eq!(used(&m), 4 * P, "a failed decommit refunds nothing");
    space.backend().arm(1);
    assert!(m.virtual_free(base, 0, FreeType::RELEASE).is_err());
    assert_eq!(used(&m), 4 * P);
    assert_eq!(m.lifecycle(), Lifecycle::Running, "ordinary failures do not disable the manager");
    m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
    assert_eq!(used(&m), 0);
    // The space's own commit limit is out-of-memory too.
    space.set_commit_limit(Some(2 * P));
    assert_eq!(m.virtual_alloc(0, 3 * P, COMMIT, RW, TASK), Err(HostError::OutOfMemory));
    assert_eq!(used(&m), 0);
}

#[test]
fn memory_freed_behind_the_hosts_back_fails_once_then_disables() {
    let (space, m) = host(64 * P);
    let a = m.virtual_alloc(0, 8 * P, COMMIT, RW, TASK).unwrap();
    let b = m.virtual_alloc(0, 8 * P, COMMIT, RW, TASK).unwrap();
    // Someone releases the host's reservation directly in the space.
    space.free(a, 0, FreeType::RELEASE).unwrap();
    let e = m.virtual_free(a, 0, FreeType::RELEASE).unwrap_err();
    assert_eq!(e, HostError::Fail);
    assert_eq!(e.hresult(), E_FAIL);
    assert_eq!(m.lifecycle(), Lifecycle::Disabled);
    assert_eq!(m.virtual_free(b, 0, FreeType::RELEASE), Err(HostError::ClrNotAvailable));
    assert_eq!(m.memory_load(), Err(HostError::ClrNotAvailable));
    assert_eq!(m.start(), Err(HostError::ClrNotAvailable));
}

#[test]
fn each_kind_of_contradiction_is_detected() {
    type Sabotage = fn(&SimSpace, usize);
    type Probe = fn(&HostMemoryManager, usize) -> Result<(), HostError>;
    let release: Sabotage = |s, a| s.free(a, 0, FreeType::RELEASE).unwrap();
    let cases: Vec<(&str, Sabotage, Probe)> = vec![
        ("query", release, |m, a| m.virtual_query(a).map(|_| ())),
        ("commit", release, |m, a| m.virtual_alloc(a, P, COMMIT, RW, TASK).map(|_| ())),
        ("decommit", release, |m, a| m.virtual_free(a, P, FreeType::DECOMMIT)),
        ("protect", release, |m, a| m.virtual_protect(a, P, Protection::READONLY).map(|_| ())),
        ("reset", release, |m, a| m.virtual_alloc(a, P, AllocationType::RESET, RW, TASK).map(|_| ())),
        (
            "replaced",
            |s, a| {
                s.free(a, 0, FreeType::RELEASE).unwrap();
                assert_eq!(s.alloc(a, 16 * P, RESERVE, RW).unwrap(), a);
            },
            |m, a| m.virtual_free(a, 0, FreeType::RELEASE),
        ),
        (
            "handed out again",
            |s, a| {
                s.free(a, 0, FreeType::RELEASE).unwrap();
            },
            |m, a| m.virtual_alloc(a, P, RESERVE, RW, TASK).map(|_| ()),
        ),
    ];
    for (what, sabotage, probe) in cases {
        let (space, m) = host(64 * P);
        let a = m.virtual_alloc(0, 16 * P, RESERVE | COMMIT, RW, TASK).unwrap();
        sabotage(&space, a);
        let before = space.regions();
        assert_eq!(probe(&m, a), Err(HostError::Fail), "{what}");
        assert_eq!(probe(&m, a), Err(HostError::ClrNotAvailable), "{what}");
        if what != "handed out again" {
            assert_eq!(space.regions(), before, "{what}: whatever lives there now is left alone");
        }
    }
}

/// Pages committed in the host's reservation directly through the space, which the host
/// never charged, are a contradiction too: a decommit through the host that meets them
/// is `E_FAIL` once (nothing changes, nothing is refunded), then the manager is disabled.
/// The decommit had refunded pages it never charged: an arithmetic overflow panic in a
/// debug build, a budget wrapped around to nearly `usize::MAX` in a release build.
#[test]
fn a_decommit_of_pages_committed_behind_the_hosts_back_fails_once_then_disables() {
    let (space, m) = host(64 * P);
    let a = m.virtual_alloc(0, 16 * P, RESERVE, RW, TASK).unwrap();
    m.virtual_alloc(a, P, COMMIT, RW, TASK).unwrap();
    space.alloc(a + P, 4 * P, COMMIT, RW).unwrap();
    let before = space.regions();
    assert_eq!(m.virtual_free(a, 8 * P, FreeType::DECOMMIT), Err(HostError::Fail));
    assert_eq!(space.regions(), before, "the pages are left alone");
    assert_eq!(used(&m), P, "nothing refunded");
    assert_eq!(m.lifecycle(), Lifecycle::Disabled);
    assert_eq!(m.virtual_free(a, 0, FreeType::DECOMMIT), Err(HostError::ClrNotAvailable));
}

#[test]
fn a_backend_that_forgets_a_reservation_disables_the_manager_and_abandons_waiters() {
    let space = Arc::new(Busy::new());
    let m = HostMemoryManager::builder(space.clone(), 8 * P)
        .soft_reserve(0)
        .emergency_reserve(0)
        .process_critical_timeout(Duration::from_secs(60))
        .build_started()
        .unwrap();
    let p = m.virtual_alloc(0, 8 * P, COMMIT, RW, TASK).unwrap();
    assert_eq!(m.virtual_protect(p, P, Protection::READONLY), Ok(RW));
    let m2 = m.clone();
    let waiter = thread::spawn(move || m2.virtual_alloc(0, P, COMMIT, RW, PROCESS));
    eventually("a waiter", || m.stats().budget.waiting == 1);
    space.forget.store(true, Ordering::SeqCst);
    assert_eq!(m.virtual_protect(p, P, RW), Err(HostError::Fail));
    assert_eq!(waiter.join().unwrap(), Err(HostError::Abandoned));
    assert_eq!(m.virtual_protect(p, P, RW), Err(HostError::ClrNotAvailable));
}

#[test]
fn heap_memory_is_not_the_runtimes_to_free() {
    let (_space, m) = host(1 << 20);
    let heap = m.create_malloc(Default::default()).unwrap();
    let b = heap.alloc(100, TASK).unwrap();
    let big = heap.alloc(10_000, TASK).unwrap();
    assert_eq!(m.virtual_free(b, 0, FreeType::RELEASE), Err(HostError::InvalidOperation));
    assert_eq!(m.virtual_free(big, 0, FreeType::RELEASE), Err(HostError::InvalidOperation));
    assert_eq!(m.virtual_protect(b, 1, Protection::NOACCESS), Err(HostError::InvalidOperation));
    assert_eq!(m.virtual_alloc(b, 1, COMMIT, RW, TASK), Err(HostError::InvalidOperation));
    // It is the host's memory, so it can be described.
    assert_eq!(m.virtual_query(b).unwrap().state, MemState::Commit);
    heap.free(b).unwrap();
    heap.free(big).unwrap();
}

#[test]
fn a_process_critical_wait_of_duration_max_waits_without_a_deadline() {
    let space = Arc::new(SimSpace::simulated());
    let m = started(space, 8 * P, Duration::MAX);
    let hog = m.virtual_alloc(0, 8 * P, COMMIT, RW, TASK).unwrap();
    let m2 = m.clone();
    let waiter = std::thread::spawn(move || m2.virtual_alloc(0, 4 * P, COMMIT, RW, CriticalLevel::Process));
    eventually("the request to wait", || m.stats().budget.waiting == 1);
    m.virtual_free(hog, 0, FreeType::RELEASE).unwrap();
    let p = waiter.join().expect("no overflow panic").expect("the waiter gets the memory");
    m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
    // An untimed wait still ends on cancellation.
    let hog = m.virtual_alloc(0, 8 * P, COMMIT, RW, TASK).unwrap();
    let m2 = m.clone();
    let waiter = std::thread::spawn(move || m2.virtual_alloc(0, 4 * P, COMMIT, RW, CriticalLevel::Process));
    eventually("the request to wait", || m.stats().budget.waiting == 1);
    m.cancel_waits();
    assert_eq!(waiter.join().unwrap(), Err(HostError::Abandoned));
    m.virtual_free(hog, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn disable_abandons_waiters_and_closes_the_manager() {
    let m = started(Arc::new(SimSpace::simulated()), 8 * P, Duration::from_secs(60));
    let _hog = m.virtual_alloc(0, 8 * P, COMMIT, RW, TASK).unwrap();
    let m2 = m.clone();
    let waiter = std::thread::spawn(move || m2.virtual_alloc(0, 4 * P, COMMIT, RW, CriticalLevel::Process));
    eventually("the request to wait", || m.stats().budget.waiting == 1);
    assert!(m.disable());
    assert!(!m.disable());
    assert_eq!(waiter.join().unwrap(), Err(HostError::Abandoned));
    assert_eq!(m.lifecycle(), Lifecycle::Disabled);
    assert_eq!(m.memory_load(), Err(HostError::ClrNotAvailable));
}

/// Thread A crosses to Low; its delivery is held up inside the first callback while
/// thread B crosses back to High. B delivers High itself, to both callbacks, at once; A's
/// delivery, overtaken by a crossing to another level, then calls no further callback,
/// so the second callback never sees the stale Low.
#[test]
fn a_delivery_overtaken_by_a_newer_crossing_calls_no_further_callback() {
    use std::sync::atomic::AtomicBool;
    let space = Arc::new(SimSpace::simulated());
    let th = Thresholds { low_percent: 90, high_percent: 50, hysteresis: 5 };
    let m = HostMemoryManager::builder(space, 100 * P)
        .soft_reserve(0)
        .emergency_reserve(0)
        .thresholds(th)
        .build_started()
        .unwrap();
    let entered = Arc::new(AtomicBool::new(false));
    let b_done = Arc::new(AtomicBool::new(false));
    let first: Log = Arc::default();
    let second: Log = Arc::default();
    {
        let (entered, b_done, first) = (entered.clone(), b_done.clone(), first.clone());
        m.register_memory_notification_callback(Arc::new(move |level| {
            first.lock().unwrap().push((level, thread::current().id()));
            if level == MemoryAvailable::Low && !entered.swap(true, Ordering::SeqCst) {
                // Hold A's delivery here until B's crossing has come and gone.
                let t = Instant::now();
                // (The bound only lets a failing run end.)
                while !b_done.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(120) {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }))
        .unwrap();
    }
    {
        let second = second.clone();
        m.register_memory_notification_callback(Arc::new(move |level| {
            second.lock().unwrap().push((level, thread::current().id()))
        }))
        .unwrap();
    }
    let x = m.virtual_alloc(0, 50 * P, COMMIT, RW, TASK).unwrap(); // 50 %: still High
    let m2 = m.clone();
    let a = thread::spawn(move || (m2.virtual_alloc(0, 45 * P, COMMIT, RW, TASK).unwrap(), thread::current().id())); // 95 %: Low
    eventually("A to deliver Low", || entered.load(Ordering::SeqCst));
    m.virtual_free(x, 0, FreeType::RELEASE).unwrap(); // 45 %: High, delivered here and now
    let b = thread::current().id();
    assert_eq!(second.lock().unwrap().clone(), vec![(MemoryAvailable::High, b)], "B delivered High itself");
    b_done.store(true, Ordering::SeqCst);
    let (y, a) = a.join().unwrap();
    let current = m.stats().budget.tenants[0].level;
    assert_eq!(current, MemoryAvailable::High);
    assert_eq!(*first.lock().unwrap(), vec![(MemoryAvailable::Low, a), (MemoryAvailable::High, b)]);
    assert_eq!(*second.lock().unwrap(), vec![(MemoryAvailable::High, b)], "A's stale Low went no further");
    m.virtual_free(y, 0, FreeType::RELEASE).unwrap();
}

/// Something a notification callback can wait at (test-only), opened by the test; it
/// opens by itself after 120 s so that a failing test does not hang. (Far above the
/// tests' own waits for a delivery, 30 s, so that a loaded machine's slow delivery is
/// never mistaken for one the gate let through.)
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Gate {
    fn wait(&self) {
        let open = self.open.lock().unwrap();
        let _open = self.cv.wait_timeout_while(open, Duration::from_secs(120), |open| !*open).unwrap();
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// A started manager over a simulated space with a budget of 10 pages, no reserves,
/// Low at 80 %, High at 40 % (hysteresis 10), calling `cb` on each crossing.
fn notifying_host(cb: impl Fn(MemoryAvailable) + Send + Sync + 'static) -> HostMemoryManager {
    HostMemoryManager::builder(Arc::new(SimSpace::simulated()), 10 * P)
        .soft_reserve(0)
        .emergency_reserve(0)
        .thresholds(Thresholds { low_percent: 80, high_percent: 40, hysteresis: 10 })
        .on_memory_notification(cb)
        .build_started()
        .unwrap()
}

/// Wait up to `timeout` for `log` to hold `n` entries.
fn log_reaches(log: &Log, n: usize, timeout: Duration) -> bool {
    let t = Instant::now();
    while log.lock().unwrap().len() < n {
        if t.elapsed() >= timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Four threads, one after the other, each cross a threshold (Low, High, Low, High) while
/// every earlier crossing's delivery is still inside its callback: each crossing is
/// delivered on the thread that made it, at once, though the others are delivering.
#[test]
fn each_crossing_is_delivered_on_its_own_thread_while_others_are_delivering() {
    use MemoryAvailable::*;
    let log: Log = Arc::default();
    let gate = Arc::new(Gate::default());
    let m = notifying_host({
        let (log, gate) = (log.clone(), gate.clone());
        move |lvl| {
            log.lock().unwrap().push((lvl, thread::current().id()));
            gate.wait();
        }
    });
    let base = m.virtual_alloc(0, 10 * P, RESERVE, RW, TASK).unwrap();
    let mut threads = Vec::new();
    let mut delivered_at_once = true;
    for k in 0..4 {
        let m = m.clone();
        threads.push(thread::spawn(move || {
            if k % 2 == 0 {
                m.virtual_alloc(base, 9 * P, COMMIT, RW, TASK).unwrap(); // 90 %: Low
            } else {
                m.virtual_free(base, 9 * P, FreeType::DECOMMIT).unwrap(); // 0 %: High
            }
            thread::current().id()
        }));
        // (30 s: room for a loaded machine, under the gate's own 120 s.)
        if !log_reaches(&log, k + 1, Duration::from_secs(30)) {
            delivered_at_once = false;
            break;
        }
    }
    gate.open();
    let ids: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(delivered_at_once, "a crossing was left undelivered while another was being delivered: {log:?}");
    let expected: Vec<_> = [Low, High, Low, High].into_iter().zip(ids).collect();
    assert_eq!(*log.lock().unwrap(), expected);
    // Without contention too, every thread delivers its own crossings.
    for _ in 0..3 {
        let m = m.clone();
        let id = thread::spawn(move || {
            m.virtual_alloc(base, 9 * P, COMMIT, RW, TASK).unwrap();
            m.virtual_free(base, 9 * P, FreeType::DECOMMIT).unwrap();
            thread::current().id()
        })
        .join()
        .unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log[log.len() - 2..], [(Low, id), (High, id)]);
    }
}

/// Thread A crosses to Low and is held inside its callback; thread B frees memory and
/// crosses back to Neutral. B's notification is delivered on B, while A is still inside
/// its callback (the test waits for it before letting A go).
#[test]
fn a_crossing_made_while_another_thread_is_in_its_callback_is_delivered_by_its_own_thread() {
    use std::sync::mpsc;
    use MemoryAvailable::*;
    let gate = Arc::new(Gate::default());
    let (tx, rx) = mpsc::channel::<(MemoryAvailable, thread::ThreadId)>();
    let tx = Mutex::new(tx);
    let m = notifying_host({
        let gate = gate.clone();
        move |lvl| {
            let _ = tx.lock().unwrap().send((lvl, thread::current().id()));
            if lvl == Low {
                gate.wait();
            }
        }
    });
    let x = m.virtual_alloc(0, 4 * P, COMMIT, RW, TASK).unwrap(); // 40 %: High
    let a = thread::spawn({
        let m = m.clone();
        move || (m.virtual_alloc(0, 5 * P, COMMIT, RW, TASK).unwrap(), thread::current().id())
        // 90 %: Low
    });
    let a_id = a.thread().id();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok((Low, a_id)), "A delivers Low");
    let b = thread::spawn({
        let m = m.clone();
        move || {
            m.virtual_free(x, 0, FreeType::RELEASE).unwrap(); // 50 %: Neutral
            thread::current().id()
        }
    });
    let b_id = b.thread().id();
    // (30 s: room for a loaded machine, under the gate's own 120 s.)
    let got = rx.recv_timeout(Duration::from_secs(30));
    let a_still_inside = !a.is_finished();
    gate.open();
    assert_eq!(got, Ok((Neutral, b_id)), "B must deliver its own crossing while A is in its callback");
    assert!(a_still_inside);
    assert_eq!(b.join().unwrap(), b_id);
    let (y, _) = a.join().unwrap();
    assert_eq!(rx.try_recv(), Err(mpsc::TryRecvError::Empty), "nothing more to deliver");
    assert_eq!(m.stats().budget.tenants[0].level, Neutral);
    m.virtual_free(y, 0, FreeType::RELEASE).unwrap();
}

thread_local! {
    /// Whether this thread is inside one of its own allocations or frees (stress test).
    static IN_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Notifications delivered on this thread (stress test).
    static DELIVERED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Many threads crossing back and forth at once: every notification is delivered on a
/// thread inside one of its own allocations or frees, at most one per call (one tenant,
/// one callback), callbacks may call the manager, nothing deadlocks, and a final crossing
/// from the main thread leaves the last level seen equal to the tenant's current level.
#[test]
fn racing_crossings_are_each_delivered_by_their_own_thread() {
    use std::sync::Barrier;
    use MemoryAvailable::*;
    const THREADS: usize = 4;
    const ROUNDS: usize = 50;
    let log: Log = Arc::default();
    let outside = Arc::new(AtomicUsize::new(0));
    let space = Arc::new(SimSpace::simulated());
    let m = HostMemoryManager::builder(space, 10 * P)
        .soft_reserve(0)
        .emergency_reserve(0)
        .thresholds(Thresholds { low_percent: 80, high_percent: 40, hysteresis: 10 })
        .build_started()
        .unwrap();
    {
        let (log, outside, m2) = (log.clone(), outside.clone(), m.clone());
        m.register_memory_notification_callback(Arc::new(move |lvl| {
            if !IN_CALL.with(|c| c.get()) {
                outside.fetch_add(1, Ordering::SeqCst);
            }
            DELIVERED.with(|c| c.set(c.get() + 1));
            m2.memory_load().unwrap(); // calling back in must not deadlock
            log.lock().unwrap().push((lvl, thread::current().id()));
        }))
        .unwrap();
    }
    let barrier = Arc::new(Barrier::new(THREADS));
    let max_per_call = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (m, barrier, max_per_call) = (m.clone(), barrier.clone(), max_per_call.clone());
            thread::spawn(move || {
                let base = m.virtual_alloc(0, 2 * P, RESERVE, RW, TASK).unwrap();
                let call = |f: &dyn Fn()| {
                    let before = DELIVERED.with(|c| c.get());
                    IN_CALL.with(|c| c.set(true));
                    f();
                    IN_CALL.with(|c| c.set(false));
                    max_per_call.fetch_max(DELIVERED.with(|c| c.get()) - before, Ordering::SeqCst);
                };
                for _ in 0..ROUNDS {
                    barrier.wait();
                    call(&|| {
                        m.virtual_alloc(base, 2 * P, COMMIT, RW, TASK).unwrap();
                        // all: 80 %
                    });
                    barrier.wait();
                    call(&|| m.virtual_free(base, 2 * P, FreeType::DECOMMIT).unwrap());
                    // all: 0 %
                }
                m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
                (thread::current().id(), DELIVERED.with(|c| c.get()))
            })
        })
        .collect();
    let ids: Vec<_> = workers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(outside.load(Ordering::SeqCst), 0, "a notification was delivered outside its thread's call");
    assert!(max_per_call.load(Ordering::SeqCst) <= 1, "a call delivered more than its own crossing");
    {
        let log = log.lock().unwrap();
        for (lvl, id) in log.iter() {
            assert!(ids.iter().any(|(w, _)| w == id), "{lvl:?} delivered on a thread that made no call");
        }
        for (w, n) in &ids {
            assert_eq!(log.iter().filter(|(_, id)| id == w).count(), *n, "{w:?}");
        }
        assert!(log.iter().any(|&(l, _)| l == Low), "the load never reached Low: {log:?}");
        assert!(log.iter().any(|&(l, _)| l == High), "the load never fell back to High: {log:?}");
    }
    // Everything is free: the last crossing was to High. A final crossing from here.
    assert_eq!(m.stats().budget.tenants[0].level, High);
    let p = m.virtual_alloc(0, 9 * P, COMMIT, RW, TASK).unwrap();
    let current = m.stats().budget.tenants[0].level;
    assert_eq!(current, Low);
    assert_eq!(log.lock().unwrap().last(), Some(&(current, thread::current().id())));
    m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
}

/// A process-critical commit pays for the pages it finds reserved, and recounts them
/// each round under the reservation's lock: pages another thread decommits while it
/// waits must be paid for too. What it paid on the earlier round counts when judging
/// whether the request can ever fit: here the whole range (12 pages) is more than the
/// budget (10), so once the other thread's decommit has woken it and it finds 4 more
/// pages to pay for, it fails at once with E_OUTOFMEMORY, refunding what it paid, rather
/// than waiting out its timeout for memory that could never be enough.
#[test]
fn a_commit_whose_pages_to_pay_grow_beyond_the_budget_while_it_waits_fails_at_once() {
    // (A commit that waited again would wait ten minutes; `eventually` below gives it 60 s,
    // a hang guard.)
    let m = waiting_host(10 * P, Duration::from_secs(600));
    let base = m.virtual_alloc(0, 12 * P, RESERVE, RW, TASK).unwrap();
    m.virtual_alloc(base, 4 * P, COMMIT, RW, TASK).unwrap();
    let m2 = m.clone();
    // 8 reserved pages to pay for, with 4 of the 10 in use: it waits.
    let waiter = thread::spawn(move || m2.virtual_alloc(base, 12 * P, COMMIT, RW, PROCESS));
    eventually("the request to wait", || m.stats().budget.waiting == 1);
    // The refund lets its 8 pages in; then all 12 are reserved.
    m.virtual_free(base, 4 * P, FreeType::DECOMMIT).unwrap();
    eventually("the commit to end without waiting for memory that could never be enough", || waiter.is_finished());
    assert_eq!(waiter.join().unwrap(), Err(HostError::OutOfMemory));
    assert_eq!((used(&m), m.stats().budget.waiting), (0, 0), "what it paid is refunded");
    let info = m.virtual_query(base).unwrap();
    assert_eq!((info.state, info.region_size), (MemState::Reserve, 12 * P), "nothing committed");
}

/// Host spec, IHostMemoryManager::VirtualAlloc: "Win32 VirtualAlloc semantics through the
/// host": the flag combinations the Win32 contract accepts work through the manager and
/// are charged by what they commit — MEM_RESERVE|MEM_COMMIT with MEM_TOP_DOWN,
/// MEM_WRITE_WATCH and MEM_LARGE_PAGES (the whole large page), MEM_PHYSICAL|MEM_RESERVE
/// (nothing committed, nothing charged), MEM_RESET and MEM_RESET_UNDO on the host's own
/// committed pages (no charge, the pages stay committed); the combinations it rejects are
/// E_INVALIDARG (HRESULT_FROM_WIN32(87)), charge nothing and leave no reservation.
#[test]
fn win32_flag_combinations_through_the_host_are_charged_by_what_they_commit() {
    let (space, m) = host(16 << 20);
    let top_down = AllocationType::TOP_DOWN;
    let ww = AllocationType::WRITE_WATCH;
    let large = AllocationType::LARGE_PAGES;
    let a = m.virtual_alloc(0, 4 * P, RESERVE | COMMIT | top_down, RW, TASK).unwrap();
    assert_eq!(used(&m), 4 * P);
    let b = m.virtual_alloc(0, 4 * P, RESERVE | COMMIT | ww, RW, TASK).unwrap();
    assert_eq!(used(&m), 8 * P);
    space.write(b + P, b"w").unwrap();
    assert_eq!(space.get_write_watch(virtmem::WriteWatchFlags::empty(), b, 4 * P, 8), Ok(vec![b + P]));
    let lp = space.system_info().large_page_size;
    let c = m.virtual_alloc(0, lp, RESERVE | COMMIT | large, RW, TASK).unwrap();
    assert_eq!(c % lp, 0);
    assert_eq!(used(&m), 8 * P + lp);
    let d = m.virtual_alloc(0, 16 * P, AllocationType::PHYSICAL | RESERVE, RW, TASK).unwrap();
    assert_eq!(used(&m), 8 * P + lp, "an AWE reservation commits nothing");
    assert_eq!(m.virtual_query(d).map(|q| q.state), Ok(MemState::Reserve));
    space.write(a, b"keep").unwrap();
    assert_eq!(m.virtual_alloc(a, 4 * P, AllocationType::RESET, RW, TASK), Ok(a));
    // (A simulated space keeps reset data by default: the undo succeeds, the data intact.)
    assert_eq!(m.virtual_alloc(a, 4 * P, AllocationType::RESET_UNDO, RW, TASK), Ok(a));
    let mut kept = [0u8; 4];
    space.read(a, &mut kept).unwrap();
    assert_eq!(&kept, b"keep");
    assert_eq!(m.virtual_query(a).map(|q| (q.state, q.region_size)), Ok((MemState::Commit, 4 * P)));
    assert_eq!(used(&m), 8 * P + lp, "MEM_RESET and MEM_RESET_UNDO charge and refund nothing");
    let charged = used(&m);
    let reservations = m.stats().reservations;
    let ia = Err(HostError::InvalidArg);
    for ty in [
        top_down,
        ww | COMMIT,
        large | RESERVE,
        AllocationType::PHYSICAL | RESERVE | COMMIT,
        AllocationType::RESET | COMMIT,
        AllocationType::RESET_UNDO | RESERVE,
        AllocationType::from_bits_retain(0x4000_0000) | RESERVE,
    ] {
        assert_eq!(m.virtual_alloc(0, 2 << 20, ty, RW, TASK), ia, "type {:#x}", ty.bits());
    }
    assert_eq!((used(&m), m.stats().reservations), (charged, reservations));
    for base in [a, b, c, d] {
        m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
    }
    assert_eq!(used(&m), 0);
}

/// Host spec, E_FAIL: "from then on the runtime is unusable: every later call returns
/// HOST_E_CLRNOTAVAILABLE" — every method of both interfaces, on the tenant that got
/// E_FAIL, on another tenant and on a heap made before, with good arguments and with
/// NULL (IHostMalloc::Free) alike; nothing changes in the space.
#[test]
fn after_e_fail_every_call_of_every_tenant_and_heap_is_clr_not_available() {
    let (space, m) = host(1 << 20);
    let other = m.add_tenant("other", None).unwrap();
    let heap = m.create_malloc(Default::default()).unwrap();
    let block = heap.alloc(10, TASK).unwrap();
    let kept = m.virtual_alloc(0, 4 * P, RESERVE | COMMIT, RW, TASK).unwrap();
    let view = 0x7000_0000_0000;
    m.acquired_virtual_address_space(view, P).unwrap();
    let gone = m.virtual_alloc(0, 4 * P, RESERVE | COMMIT, RW, TASK).unwrap();
    space.free(gone, 0, FreeType::RELEASE).unwrap();
    assert_eq!(m.virtual_free(gone, 0, FreeType::RELEASE), Err(HostError::Fail));
    let regions = space.regions();
    let na = HostError::ClrNotAvailable;
    for t in [&m, &other] {
        assert_eq!(t.virtual_alloc(0, P, COMMIT, RW, TASK), Err(na));
        assert_eq!(t.virtual_alloc(kept, P, COMMIT, RW, PROCESS), Err(na));
        assert_eq!(t.virtual_free(kept, 0, FreeType::RELEASE), Err(na));
        assert_eq!(t.virtual_query(kept), Err(na));
        assert_eq!(t.virtual_protect(kept, P, Protection::READONLY), Err(na));
        assert_eq!(t.memory_load(), Err(na));
        assert_eq!(t.register_memory_notification_callback(Arc::new(|_| {})), Err(na));
        assert_eq!(t.needs_virtual_address_space(kept, P), Err(na));
        assert_eq!(t.acquired_virtual_address_space(view + (1 << 20), P), Err(na));
        assert_eq!(t.released_virtual_address_space(view), Err(na));
        assert!(matches!(t.create_malloc(Default::default()), Err(HostError::ClrNotAvailable)));
        assert!(matches!(t.add_tenant("late", None), Err(HostError::ClrNotAvailable)));
    }
    assert_eq!(heap.alloc(10, TASK), Err(na));
    assert_eq!(heap.debug_alloc(10, TASK, "f.rs", 1), Err(na));
    assert_eq!(heap.free(block), Err(na));
    assert_eq!(heap.free(0), Err(na));
    assert_eq!(m.start(), Err(na));
    assert_eq!(space.regions(), regions, "nothing changed");
}
