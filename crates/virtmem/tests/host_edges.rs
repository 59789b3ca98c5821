//! Edge cases of the host memory manager against `shared/spec/host-memory-manager.md`
//! (each was answered wrongly once, found by an independent review).

use std::sync::Arc;
use std::time::Duration;

use virtmem::backend::faulty::Faulty;
use virtmem::host::{CriticalLevel, HostError, HostMemoryManager, Lifecycle, MallocType};
use virtmem::{AddressSpace, AllocationType, Protection, SimBackend, SimSpace, VirtualSpace};

mod host_util;
use host_util::host;

const P: usize = 4096;
const TASK: CriticalLevel = CriticalLevel::Task;
const PROCESS: CriticalLevel = CriticalLevel::Process;
const COMMIT: AllocationType = AllocationType::COMMIT;
const RW: Protection = Protection::READWRITE;

/// Spec, IHostMalloc: "Alloc(size, critical_level, &mem) | heap allocation under the
/// budget; E_OUTOFMEMORY and `*mem` NULL when refused". A size the heap cannot serve is
/// refused as out of memory, whether it is past isize::MAX or only past the space's user
/// range (those sizes had come back E_INVALIDARG: the heap's own VirtualAlloc argument
/// error; the caller's size is a valid SIZE_T).
#[test]
fn heap_alloc_of_more_than_the_address_space_is_out_of_memory_not_invalid_arg() {
    let (space, m) = host(1 << 20);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    // For reference: these are E_OUTOFMEMORY today.
    assert_eq!(heap.alloc(isize::MAX as usize + 1, TASK), Err(HostError::OutOfMemory));
    assert_eq!(heap.alloc(usize::MAX - 10, TASK), Err(HostError::OutOfMemory));
    let top = space.system_info().maximum_application_address;
    for size in [top, 1 << 47, 1 << 50, isize::MAX as usize - (P - 1)] {
        assert_eq!(heap.alloc(size, TASK), Err(HostError::OutOfMemory), "Alloc({size:#x})");
        assert_eq!(heap.debug_alloc(size, TASK, "f.c", 1), Err(HostError::OutOfMemory), "DebugAlloc({size:#x})");
    }
    assert_eq!(m.stats().budget.used, 0);
}

/// Spec: "AcquiredVirtualAddressSpace(address, size) | the runtime mapped a view outside
/// VirtualAlloc: count it against the budget". Views are charged by the page, so a view
/// sharing a page with one already announced is refused (E_INVALIDARG) in either order
/// (it had been accepted in one order, and the page charged twice, and refused in the other).
#[test]
fn two_views_sharing_a_page_get_the_same_answer_in_either_order() {
    let v = 0x6000_0000_0000usize;
    let (low, high) = ((v, 0x100), (v + 0x800, 0x100)); // bytes disjoint, same page
    let announce = |first: (usize, usize), second: (usize, usize)| {
        let (_s, m) = host(16 * P);
        let a = m.acquired_virtual_address_space(first.0, first.1);
        let b = m.acquired_virtual_address_space(second.0, second.1);
        (a, b, m.stats().budget.views)
    };
    let (a1, b1, charged1) = announce(low, high);
    let (a2, b2, charged2) = announce(high, low);
    assert_eq!(a1, Ok(()));
    assert_eq!(a2, Ok(()));
    assert_eq!(b1, b2, "low-then-high gives {b1:?} (charged {charged1}), high-then-low {b2:?} (charged {charged2})");
    assert!(charged1 <= P, "one page of views charged {charged1} bytes");
}

/// A started manager over `space` with `budget`, which a process-critical failure
/// disables (`disable_on_process_critical_failure`), waiting 10 ms for a refund.
fn disabling_manager(space: Arc<dyn VirtualSpace>, budget: usize) -> HostMemoryManager {
    HostMemoryManager::builder(space, budget)
        .process_critical_timeout(Duration::from_millis(10))
        .disable_on_process_critical_failure(true)
        .build_started()
        .unwrap()
}

/// Spec: "eProcessCritical 2 (a failure disables the runtime: it then answers
/// HOST_E_CLRNOTAVAILABLE to everything)" and "E_OUTOFMEMORY | the request cannot be
/// satisfied now (budget or OS)". With `disable_on_process_critical_failure(true)` a
/// process-critical request refused by the OS (the space's commit limit: E_OUTOFMEMORY)
/// disables the manager, as one refused by the budget does
/// (host_manager.rs::process_critical_failure_can_disable_the_manager).
#[test]
fn a_process_critical_failure_from_the_os_disables_the_manager_when_configured() {
    let space = Arc::new(SimSpace::simulated());
    let m = disabling_manager(space.clone(), 64 * P);
    space.set_commit_limit(Some(2 * P));
    // Refusals that are not for want of memory, or of a lesser level, leave it running.
    assert_eq!(m.virtual_alloc(0, 3 * P, COMMIT, RW, TASK), Err(HostError::OutOfMemory));
    assert_eq!(m.virtual_alloc(0, 0, COMMIT, RW, PROCESS), Err(HostError::InvalidArg));
    assert_eq!(m.lifecycle(), Lifecycle::Running);
    assert_eq!(m.virtual_alloc(0, 3 * P, COMMIT, RW, PROCESS), Err(HostError::OutOfMemory));
    assert_eq!(m.lifecycle(), Lifecycle::Disabled, "a failed process-critical request disables the runtime");
    assert_eq!(m.memory_load(), Err(HostError::ClrNotAvailable));
}

/// The same through a heap: its process-critical Alloc refused by the OS disables the
/// manager when so configured.
#[test]
fn a_heap_process_critical_failure_from_the_os_disables_the_manager_when_configured() {
    let space = Arc::new(SimSpace::simulated());
    let m = disabling_manager(space.clone(), 1 << 30);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    space.set_commit_limit(Some(space.committed_bytes() + 4 * P));
    assert_eq!(heap.alloc(1 << 20, TASK), Err(HostError::OutOfMemory));
    assert_eq!(m.lifecycle(), Lifecycle::Running);
    assert_eq!(heap.alloc(1 << 20, PROCESS), Err(HostError::OutOfMemory));
    assert_eq!(m.lifecycle(), Lifecycle::Disabled);
}

/// The same when what the OS refuses is the address space a heap reserves for the
/// request: a small block's first segment, an over-aligned block's reservation. The heap
/// reserved them as task-critical (reserving is free), so the refusal of a
/// process-critical Alloc was taken for a task-critical one and left the manager running.
#[test]
fn a_heap_process_critical_alloc_whose_reservation_the_os_refuses_disables_when_configured() {
    type Alloc = fn(&virtmem::host::HostMalloc, CriticalLevel) -> Result<usize, HostError>;
    let cases: [(&str, Alloc); 2] =
        [("small block", |h, l| h.alloc(100, l)), ("over-aligned block", |h, l| h.alloc_aligned(P, 1 << 20, l))];
    for (what, alloc) in cases {
        let space = Arc::new(AddressSpace::with_backend(Faulty::new(SimBackend::default())));
        let m = disabling_manager(space.clone(), 1 << 30);
        let heap = m.create_malloc(MallocType::empty()).unwrap();
        space.backend().arm(1);
        assert_eq!(alloc(&heap, TASK), Err(HostError::OutOfMemory), "{what}");
        assert!(space.backend().fired(), "{what}: the reservation was refused");
        assert_eq!(m.lifecycle(), Lifecycle::Running, "{what}: a task-critical refusal does not disable");
        space.backend().arm(1);
        assert_eq!(alloc(&heap, PROCESS), Err(HostError::OutOfMemory), "{what}");
        assert!(space.backend().fired(), "{what}: the reservation was refused");
        assert_eq!(m.lifecycle(), Lifecycle::Disabled, "{what}: a failed process-critical request disables");
    }
}
