//! IHostMalloc over a simulated space: size classes, large blocks, budget, ownership,
//! executable heaps, DebugAlloc leak reports, thread safety.

use std::collections::HashSet;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use virtmem::host::{CriticalLevel, HostError, HostMemoryManager, MallocType, MAX_SMALL, SIZE_CLASSES, SLAB_SIZE};
use virtmem::{AllocationType, FreeType, MemState, Protection, SimSpace};

mod host_util;
use host_util::{eventually, host, started};

const P: usize = 4096;
const TASK: CriticalLevel = CriticalLevel::Task;

fn heap_committed(m: &HostMemoryManager) -> usize {
    m.stats().budget.heap_committed
}

#[test]
fn blocks_are_distinct_aligned_and_in_committed_writable_memory() {
    let (space, m) = host(64 << 20);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let mut seen = HashSet::new();
    let mut blocks = Vec::new();
    for i in 0..3000 {
        let size = [1, 8, 16, 17, 100, 255, 1000, 2048, 2049, 5000, 70_000][i % 11];
        let b = heap.alloc(size, TASK).unwrap();
        assert_eq!(b % 16, 0);
        assert!(seen.insert(b), "block {b:#x} handed out twice");
        let q = space.query(b).unwrap();
        assert_eq!((q.state, q.protect), (MemState::Commit, Protection::READWRITE));
        // The whole block is committed and writable.
        space.write(b, &vec![0xAB; size]).unwrap();
        blocks.push((b, size));
    }
    // Blocks do not overlap: each still holds its own fill after all were written.
    for &(b, size) in blocks.iter().step_by(97) {
        space.write(b, &vec![(b >> 4) as u8; size]).unwrap();
    }
    for &(b, size) in blocks.iter().step_by(97) {
        let mut buf = vec![0; size];
        space.read(b, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == (b >> 4) as u8));
    }
    assert_eq!(heap.stats().live_blocks, 3000);
    for (b, _) in blocks {
        heap.free(b).unwrap();
    }
    assert_eq!(heap.stats().live_blocks, 0);
    assert_eq!(heap.stats().live_bytes, 0);
}

#[test]
fn the_budget_counts_committed_slabs_and_large_blocks() {
    let (_space, m) = host(64 << 20);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let b = heap.alloc(24, TASK).unwrap();
    assert_eq!(heap_committed(&m), SLAB_SIZE, "one slab for the class");
    // The rest of the slab's 32-byte slots cost nothing more.
    let more: Vec<usize> = (1..SLAB_SIZE / 32).map(|_| heap.alloc(32, TASK).unwrap()).collect();
    assert_eq!(heap_committed(&m), SLAB_SIZE);
    let next = heap.alloc(32, TASK).unwrap();
    assert_eq!(heap_committed(&m), 2 * SLAB_SIZE);
    let big = heap.alloc(100_000, TASK).unwrap();
    let big_bytes = 100_000usize.div_ceil(P) * P;
    assert_eq!(heap_committed(&m), 2 * SLAB_SIZE + big_bytes);
    assert_eq!(heap.stats().committed, heap_committed(&m));
    assert_eq!(m.stats().budget.virtual_committed, 0, "heap pages are heap, not VirtualAlloc");
    heap.free(big).unwrap();
    // Kept committed (and charged) for reuse by the next block of about that size.
    assert_eq!(heap_committed(&m), 2 * SLAB_SIZE + big_bytes);
    assert_eq!(heap.stats().cached, big_bytes);
    let again = heap.alloc(90_000, TASK).unwrap();
    assert_eq!(again, big);
    assert_eq!(heap.stats().cached, 0);
    assert_eq!(heap_committed(&m), 2 * SLAB_SIZE + big_bytes);
    heap.free(again).unwrap();
    // Too small a request for that block: a new one.
    let small_large = heap.alloc(3000, TASK).unwrap();
    assert_ne!(small_large, big);
    heap.free(small_large).unwrap();
    for p in more.into_iter().chain([b, next]) {
        heap.free(p).unwrap();
    }
    let cached = heap.stats().cached;
    assert!(heap_committed(&m) - cached <= 2 * SLAB_SIZE, "current slab and one spare at most");
    drop(heap);
    assert_eq!(m.stats().budget.used, 0, "dropping the heap refunds everything");
    assert_eq!(m.space().reserved_bytes(), 0);
}

#[test]
fn emptied_slabs_are_decommitted_and_refunded() {
    let (space, m) = host(64 << 20);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let per_slab = SLAB_SIZE / 64;
    let blocks: Vec<usize> = (0..per_slab * 10).map(|_| heap.alloc(64, TASK).unwrap()).collect();
    assert_eq!(heap_committed(&m), 10 * SLAB_SIZE);
    for b in &blocks {
        heap.free(*b).unwrap();
    }
    let cached = heap.stats().cached;
    assert!(cached <= (64 << 20) / 64);
    assert!(heap_committed(&m) - cached <= 2 * SLAB_SIZE, "{}", heap_committed(&m));
    assert_eq!(space.committed_bytes(), heap_committed(&m));
    // Decommitted slabs are reused.
    let again: Vec<usize> = (0..per_slab * 10).map(|_| heap.alloc(64, TASK).unwrap()).collect();
    assert_eq!(heap_committed(&m), 10 * SLAB_SIZE);
    assert_eq!(heap.stats().segments, 1);
    for b in again {
        heap.free(b).unwrap();
    }
}

#[test]
fn over_budget_allocations_fail_and_recover() {
    let (_space, m) = host(4 * SLAB_SIZE);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let mut blocks = Vec::new();
    let err = loop {
        match heap.alloc(2048, TASK) {
            Ok(b) => blocks.push(b),
            Err(e) => break e,
        }
    };
    assert_eq!(err, HostError::OutOfMemory);
    assert_eq!(blocks.len(), 4 * SLAB_SIZE / 2048);
    assert_eq!(heap.alloc(100_000, TASK), Err(HostError::OutOfMemory));
    assert_eq!(heap.alloc(usize::MAX - 10, TASK), Err(HostError::OutOfMemory));
    assert_eq!(m.memory_load().unwrap().percent, 100);
    heap.free(blocks.pop().unwrap()).unwrap();
    blocks.push(heap.alloc(2000, TASK).unwrap());
    for b in blocks {
        heap.free(b).unwrap();
    }
    // Another class can now get slabs.
    heap.alloc(16, TASK).unwrap();
}

#[test]
fn cached_large_blocks_are_given_back_when_memory_is_refused() {
    let budget = 4 << 20;
    let (_space, m) = host(budget);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let cap = budget / 64;
    let blocks: Vec<usize> = (0..4).map(|_| heap.alloc(cap / 4, TASK).unwrap()).collect();
    for b in blocks {
        heap.free(b).unwrap();
    }
    assert_eq!(heap.stats().cached, cap);
    assert_eq!(heap_committed(&m), cap);
    // The runtime takes everything else; the heap's next slab only fits without the cache.
    m.virtual_alloc(0, budget - cap, AllocationType::COMMIT, Protection::READWRITE, TASK).unwrap();
    let b = heap.alloc(16, TASK).unwrap();
    assert_eq!(heap.stats().cached, 0);
    assert_eq!(heap_committed(&m), SLAB_SIZE);
    heap.free(b).unwrap();
    // A large block over the cache limits is released at once.
    let (_space, m) = host(budget);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let big = heap.alloc(2 * cap, TASK).unwrap();
    heap.free(big).unwrap();
    assert_eq!((heap.stats().cached, heap_committed(&m)), (0, 0));
}

#[test]
fn a_process_critical_heap_allocation_waits_for_memory() {
    let m = started(Arc::new(SimSpace::simulated()), 2 * SLAB_SIZE, Duration::from_secs(60));
    let hog = m.virtual_alloc(0, 2 * SLAB_SIZE, AllocationType::COMMIT, Protection::READWRITE, TASK).unwrap();
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    assert_eq!(heap.alloc(10, TASK), Err(HostError::OutOfMemory));
    let h2 = heap.clone();
    let waiter = thread::spawn(move || h2.alloc(10, CriticalLevel::Process));
    eventually("the request to wait", || m.stats().budget.waiting != 0);
    m.virtual_free(hog, 0, FreeType::RELEASE).unwrap();
    let b = waiter.join().unwrap().unwrap();
    heap.free(b).unwrap();
}

#[test]
fn free_of_anything_it_did_not_return_is_refused_and_changes_nothing() {
    let (space, m) = host(64 << 20);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let other = m.create_malloc(MallocType::empty()).unwrap();
    let b = heap.alloc(100, TASK).unwrap();
    let big = heap.alloc(50_000, TASK).unwrap();
    let theirs = other.alloc(100, TASK).unwrap();
    let foreign = space.alloc(0, P, AllocationType::COMMIT, Protection::READWRITE).unwrap();
    let runtime = m.virtual_alloc(0, P, AllocationType::COMMIT, Protection::READWRITE, TASK).unwrap();
    let before = (heap.stats(), m.stats());
    let io = Err(HostError::InvalidOperation);
    assert_eq!(heap.free(0), Ok(()), "Free(NULL) is S_OK");
    assert_eq!(heap.free(b + 16), io, "inside a block");
    assert_eq!(heap.free(b + 1), io, "unaligned");
    assert_eq!(heap.free(big + P), io, "inside a large block");
    assert_eq!(heap.free(theirs), io, "another heap's block");
    assert_eq!(heap.free(foreign), io, "memory the host never saw");
    assert_eq!(heap.free(runtime), io, "the runtime's VirtualAlloc memory");
    assert_eq!(heap.free(0x1234), io);
    assert_eq!(heap.free(usize::MAX & !15), io);
    // A slot of a committed slab that was never handed out.
    let slot = heap.alloc(100, TASK).unwrap();
    heap.free(slot).unwrap();
    assert_eq!(heap.free(slot), io, "double free");
    assert_eq!((heap.stats(), m.stats()), before);
    heap.free(b).unwrap();
    heap.free(big).unwrap();
    assert_eq!(heap.free(big), io, "large block twice");
    other.free(theirs).unwrap();
    assert_eq!(space.query(foreign).unwrap().state, MemState::Commit);
}

#[test]
fn executable_heaps_commit_executable_pages() {
    let (space, m) = host(64 << 20);
    let exec = m.create_malloc(MallocType::EXECUTABLE | MallocType::THREADSAFE).unwrap();
    let plain = m.create_malloc(MallocType::THREADSAFE).unwrap();
    for size in [16, 2048, 10_000] {
        let x = exec.alloc(size, TASK).unwrap();
        let p = plain.alloc(size, TASK).unwrap();
        assert_eq!(space.query(x).unwrap().protect, Protection::EXECUTE_READWRITE);
        assert_eq!(space.query(p).unwrap().protect, Protection::READWRITE);
        let mut code = [0u8; 4];
        space.write(x, &[0xC3, 0x90, 0x90, 0x90]).unwrap();
        space.execute(x, &mut code).unwrap();
        assert!(space.execute(p, &mut code).is_err(), "data heap is not executable");
    }
    assert_eq!(exec.malloc_type(), MallocType::EXECUTABLE | MallocType::THREADSAFE);
    assert!(matches!(m.create_malloc(MallocType::from_bits_retain(4)), Err(HostError::InvalidArg)));
}

#[test]
fn debug_alloc_keeps_the_site_for_a_leak_report() {
    let (_space, m) = host(64 << 20);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let a = heap.debug_alloc(40, TASK, "gc.cpp", 120).unwrap();
    let b = heap.debug_alloc(5000, TASK, "jit.cpp", 7).unwrap();
    let c = heap.alloc(40, TASK).unwrap();
    let leaks = heap.leaks();
    assert_eq!(leaks.len(), 2);
    let la = leaks.iter().find(|l| l.address == a).unwrap();
    assert_eq!((la.size, la.file.as_str(), la.line), (40, "gc.cpp", 120));
    assert_eq!(la.to_string(), format!("40 bytes at {a:#x} allocated at gc.cpp:120"));
    assert!(leaks.iter().any(|l| l.address == b && l.file == "jit.cpp" && l.line == 7));
    assert_eq!(heap.stats().debug_blocks, 2);
    heap.free(a).unwrap();
    heap.free(c).unwrap();
    let leaks = heap.leaks();
    assert_eq!(leaks.len(), 1);
    assert_eq!(leaks[0].address, b);
    heap.free(b).unwrap();
    assert!(heap.leaks().is_empty());
}

#[test]
fn aligned_allocations() {
    let (_space, m) = host(64 << 20);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    for align in [1, 2, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 65536] {
        for size in [1, 24, 100, 1500, 3000] {
            let p = heap.alloc_aligned(size, align, TASK).unwrap();
            assert_eq!(p % align, 0, "size {size} align {align}");
            heap.free(p).unwrap();
        }
    }
    assert_eq!(heap.alloc_aligned(8, 3, TASK), Err(HostError::InvalidArg));
}

#[test]
fn alignments_over_64k_are_served_and_charged_for_the_block_only() {
    let (space, m) = host(64 << 20);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    for (align, size) in [(1 << 17, 8), (1 << 20, 3 * P), (1 << 20, 1 << 20), (4 << 20, 100)] {
        let p = heap.alloc_aligned(size, align, TASK).unwrap();
        assert_eq!(p % align, 0, "size {size} align {align}");
        let bytes = size.div_ceil(P) * P;
        assert_eq!(heap_committed(&m), bytes, "only the block is charged");
        assert_eq!(space.committed_bytes(), bytes);
        space.write(p, &vec![0x5A; size]).unwrap();
        assert!(heap.owns(p));
        heap.free(p).unwrap();
        assert_eq!(heap.free(p), Err(HostError::InvalidOperation));
        assert_eq!((heap_committed(&m), space.reserved_bytes(), m.stats().heap_reservations), (0, 0, 0));
    }
    assert_eq!(heap.alloc_aligned(P, 1 << 20, TASK).map(|p| p % (1 << 20)), Ok(0));
    assert_eq!(heap.alloc_aligned(usize::MAX - P, 1 << 20, TASK), Err(HostError::OutOfMemory));
    let (_space, small) = host(4 * P);
    let heap = small.create_malloc(MallocType::empty()).unwrap();
    assert_eq!(heap.alloc_aligned(8 * P, 1 << 20, TASK), Err(HostError::OutOfMemory), "over the budget");
    assert_eq!(small.stats().heap_reservations, 0, "nothing left reserved");
}

#[test]
fn size_classes_cover_every_small_size() {
    assert_eq!(*SIZE_CLASSES.last().unwrap(), MAX_SMALL);
    let (_space, m) = host(64 << 20);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let before = heap_committed(&m);
    // The smallest and the largest size of each class.
    let sizes =
        SIZE_CLASSES.iter().enumerate().flat_map(|(i, &c)| [if i == 0 { 1 } else { SIZE_CLASSES[i - 1] + 1 }, c]);
    let blocks: Vec<usize> = sizes.map(|s| heap.alloc(s, TASK).unwrap()).collect();
    assert_eq!(heap_committed(&m) - before, SIZE_CLASSES.len() * SLAB_SIZE, "one slab per class");
    assert_eq!(heap.stats().large_blocks, 0);
    for b in blocks {
        heap.free(b).unwrap();
    }
}

#[test]
fn threadsafe_heap_under_cross_thread_frees() {
    let (space, m) = host(256 << 20);
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    let live = Arc::new(Mutex::new(HashSet::new()));
    let threads = 4;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel::<usize>()).unzip();
    let mut rxs: Vec<Option<mpsc::Receiver<usize>>> = rxs.into_iter().map(Some).collect();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let heap = heap.clone();
            let live = live.clone();
            let tx = txs[(t + 1) % threads].clone();
            let rx = rxs[t].take().unwrap();
            thread::spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                for i in 0..4000 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let size = if rng % 50 == 0 { 3000 + (rng % 20000) as usize } else { 1 + (rng % 600) as usize };
                    let b = heap.alloc(size, TASK).unwrap();
                    assert!(live.lock().unwrap().insert(b), "{b:#x} handed out twice");
                    if i % 2 == 0 {
                        tx.send(b).unwrap(); // freed by the next thread
                    } else {
                        assert!(live.lock().unwrap().remove(&b));
                        heap.free(b).unwrap();
                    }
                    while let Ok(x) = rx.try_recv() {
                        assert!(live.lock().unwrap().remove(&x));
                        heap.free(x).unwrap();
                    }
                }
                drop(tx);
                rx
            })
        })
        .collect();
    drop(txs);
    let rxs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for rx in rxs {
        for x in rx.try_iter() {
            assert!(live.lock().unwrap().remove(&x));
            heap.free(x).unwrap();
        }
    }
    assert!(live.lock().unwrap().is_empty());
    let s = heap.stats();
    assert_eq!((s.live_blocks, s.live_bytes, s.large_blocks), (0, 0, 0));
    assert_eq!(space.committed_bytes(), heap_committed(&m));
    drop(heap);
    assert_eq!(m.stats().budget.used, 0);
    assert_eq!(space.committed_bytes(), 0);
}

/// Four threads each take one block of every size class from a threadsafe heap against a
/// 1 MiB budget (some are refused: 96 slabs do not fit), then free them all.
fn fill_every_class_from_four_threads(heap: &virtmem::host::HostMalloc) -> Vec<Vec<usize>> {
    let start = Arc::new(std::sync::Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (heap, start) = (heap.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                SIZE_CLASSES.iter().filter_map(|&s| heap.alloc(s, TASK).ok()).collect::<Vec<usize>>()
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().unwrap()).collect()
}

#[test]
fn a_heap_whose_blocks_are_all_freed_gives_the_budget_back() {
    let budget = 1 << 20;
    let (space, m) = host(budget);
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    let per_thread = fill_every_class_from_four_threads(&heap);
    assert!(per_thread.iter().map(Vec::len).sum::<usize>() > 0);
    for blocks in per_thread {
        for b in blocks {
            heap.free(b).unwrap();
        }
    }
    let st = heap.stats();
    assert_eq!(st.live_blocks, 0);
    // What the heap keeps for reuse is within its cache cap (1/64 of the budget) ...
    assert!(st.committed <= budget / 64, "an empty heap keeps {} bytes", st.committed);
    assert_eq!(st.cached, st.committed);
    assert!(m.memory_load().unwrap().percent <= 2);
    // ... and given back as soon as the runtime needs it: the whole budget is available.
    let all = m.virtual_alloc(0, budget, AllocationType::COMMIT, Protection::READWRITE, TASK).unwrap();
    assert_eq!(heap.stats().committed, 0);
    assert_eq!(space.committed_bytes(), budget);
    m.virtual_free(all, 0, FreeType::RELEASE).unwrap();
    // An explicit trim gives everything back too.
    let b = heap.alloc(16, TASK).unwrap();
    heap.free(b).unwrap();
    heap.trim().unwrap();
    assert_eq!((heap.stats().committed, heap.stats().cached, heap_committed(&m)), (0, 0, 0));
}

#[test]
fn a_process_critical_waiter_gets_the_memory_of_a_heap_freed_meanwhile() {
    let budget = 1 << 20;
    // (A wait far longer than freeing the blocks takes however loaded the machine: only a
    // waiter that is never woken runs it out.)
    let m = started(Arc::new(SimSpace::simulated()), budget, Duration::from_secs(120));
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    // Fill the budget with small blocks of every class.
    let mut blocks: Vec<usize> = fill_every_class_from_four_threads(&heap).into_iter().flatten().collect();
    while let Ok(b) = heap.alloc(16, TASK) {
        blocks.push(b);
    }
    assert_eq!(m.memory_load().unwrap().available, 0);
    let m2 = m.clone();
    let waiter = thread::spawn(move || {
        m2.virtual_alloc(0, budget / 2, AllocationType::COMMIT, Protection::READWRITE, CriticalLevel::Process)
    });
    eventually("the request to wait", || m.stats().budget.waiting != 0);
    // Another thread frees every block: the waiter must get the pages back.
    let h2 = heap.clone();
    thread::spawn(move || {
        for b in blocks {
            h2.free(b).unwrap();
        }
    })
    .join()
    .unwrap();
    let p = waiter.join().unwrap().expect("the waiter gets the freed heap's memory");
    m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
}

/// Spec, IHostMalloc: "Free(mem) | free"; a failed call changes nothing. When the space
/// refuses to decommit the slab a Free emptied (an ordinary failure, not a
/// contradiction), the block is free all the same, so the Free succeeds; the slab stays
/// committed and charged, kept for reuse, and the next trim gives it back. It had
/// answered E_OUTOFMEMORY for a block it had freed (a second Free was then
/// HOST_E_INVALIDOPERATION), and the slab was lost: charged, in no list, never reused nor
/// given back. A trim whose decommit the space refuses fails, and keeps the slab too.
#[test]
fn a_slab_the_space_will_not_decommit_is_kept_and_the_free_succeeds() {
    use virtmem::backend::faulty::Faulty;
    use virtmem::{AddressSpace, SimBackend};
    let space = Arc::new(AddressSpace::with_backend(Faulty::new(SimBackend::default())));
    // A budget too small for the heap to keep an empty slab by choice (1/64 of it).
    let m = started(space.clone(), 64 << 10, Duration::ZERO);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let b = heap.alloc(100, TASK).unwrap();
    assert_eq!(heap.stats().committed, SLAB_SIZE);
    space.backend().arm(1);
    assert_eq!(heap.free(b), Ok(()), "the block was freed");
    assert!(space.backend().fired(), "the decommit was refused");
    assert_eq!(heap.free(b), Err(HostError::InvalidOperation), "it is free: a second Free is refused");
    let st = heap.stats();
    assert_eq!((st.live_blocks, st.committed, st.cached), (0, SLAB_SIZE, SLAB_SIZE), "kept for reuse");
    assert_eq!(heap_committed(&m), SLAB_SIZE);
    // A trim whose decommit is refused fails and keeps the slab; the next one gives it back.
    space.backend().arm(1);
    assert_eq!(heap.trim(), Err(HostError::OutOfMemory));
    assert!(space.backend().fired());
    assert_eq!((heap.stats().committed, heap.stats().cached), (SLAB_SIZE, SLAB_SIZE));
    heap.trim().unwrap();
    assert_eq!((heap.stats().committed, heap.stats().cached), (0, 0));
    assert_eq!(m.stats().budget.used, 0);
    // The heap goes on serving.
    let b = heap.alloc(100, TASK).unwrap();
    heap.free(b).unwrap();
    assert_eq!(m.stats().budget.used, 0);
}

/// The same for a freed large block kept for reuse: a trim whose release of it the space
/// refuses fails and keeps the block (cached, charged), and the next trim gives it back.
/// The block had been lost: out of the cache, charged and committed until the manager
/// went away.
#[test]
fn a_cached_large_block_the_space_will_not_release_stays_cached() {
    use virtmem::backend::faulty::Faulty;
    use virtmem::{AddressSpace, SimBackend};
    let space = Arc::new(AddressSpace::with_backend(Faulty::new(SimBackend::default())));
    let m = started(space.clone(), 64 << 20, Duration::ZERO);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let big = heap.alloc(100 << 10, TASK).unwrap();
    heap.free(big).unwrap();
    assert_eq!(heap.stats().cached, 100 << 10, "kept for reuse");
    space.backend().arm(1);
    assert_eq!(heap.trim(), Err(HostError::OutOfMemory));
    assert!(space.backend().fired(), "the release was refused");
    assert_eq!((heap.stats().committed, heap.stats().cached), (100 << 10, 100 << 10), "still kept");
    heap.trim().unwrap();
    assert_eq!((heap.stats().committed, heap.stats().cached), (0, 0));
    assert_eq!(m.stats().budget.used, 0);
    assert_eq!(m.stats().heap_reservations, 0);
}

/// Spec, IHostMalloc: a failed call changes nothing. A large block too big to keep for
/// reuse is released by its Free; when the space refuses that release, the Free fails
/// and the block is still live: in the heap's counts, in the leak report with its
/// DebugAlloc site, charged, and usable; a later Free of it succeeds.
#[test]
fn a_large_block_whose_release_the_space_refuses_stays_live() {
    use virtmem::backend::faulty::Faulty;
    use virtmem::{AddressSpace, SimBackend};
    let space = Arc::new(AddressSpace::with_backend(Faulty::new(SimBackend::default())));
    let m = started(space.clone(), 64 << 20, Duration::ZERO);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let size = 2 << 20;
    let big = heap.debug_alloc(size, TASK, "loader.cpp", 31).unwrap();
    space.write(big + size - 4, b"live").unwrap();
    let (stats, used) = (heap.stats(), m.stats().budget.used);
    space.backend().arm(1);
    assert_eq!(heap.free(big), Err(HostError::OutOfMemory));
    assert!(space.backend().fired(), "the release was refused");
    let st = heap.stats();
    assert_eq!((st.live_blocks, st.committed, st.cached, st.debug_blocks), (stats.live_blocks, stats.committed, 0, 1));
    assert_eq!(m.stats().budget.used, used);
    let leaks = heap.leaks();
    assert_eq!(leaks.len(), 1);
    assert_eq!((leaks[0].address, leaks[0].size, leaks[0].file.as_str(), leaks[0].line), (big, size, "loader.cpp", 31));
    let mut b = [0; 4];
    space.read(big + size - 4, &mut b).unwrap();
    assert_eq!(&b, b"live");
    heap.free(big).unwrap();
    assert!(heap.leaks().is_empty());
    assert_eq!((heap.stats().live_blocks, heap.stats().committed), (0, 0));
    assert_eq!(m.stats().budget.used, 0);
    assert_eq!(heap.free(big), Err(HostError::InvalidOperation), "freed once");
}

#[test]
fn a_segment_released_behind_the_hosts_back_makes_free_fail_once_then_disables() {
    use virtmem::host::Lifecycle;
    let (space, m) = host(1 << 20);
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let per_slab = SLAB_SIZE / 64;
    let blocks: Vec<usize> = (0..per_slab * 10).map(|_| heap.alloc(64, TASK).unwrap()).collect();
    // Someone releases the heap's segment without asking the host.
    let reservation = space.query(blocks[0]).unwrap().allocation_base;
    space.free(reservation, 0, FreeType::RELEASE).unwrap();
    let results: Vec<Result<(), HostError>> = blocks.iter().map(|&b| heap.free(b)).collect();
    let fails: Vec<usize> = (0..results.len()).filter(|&i| results[i] == Err(HostError::Fail)).collect();
    assert_eq!(fails.len(), 1, "exactly one E_FAIL");
    let i = fails[0];
    // Frees that never reached the space succeed; after the E_FAIL, everything is
    // HOST_E_CLRNOTAVAILABLE.
    assert!(results[..i].iter().all(|r| r.is_ok()));
    assert!(results[i + 1..].iter().all(|r| *r == Err(HostError::ClrNotAvailable)));
    assert!(i + 1 < results.len());
    assert_eq!(m.lifecycle(), Lifecycle::Disabled);
    assert_eq!(heap.alloc(16, TASK), Err(HostError::ClrNotAvailable));
    assert_eq!(m.memory_load(), Err(HostError::ClrNotAvailable));
}

#[test]
fn concurrent_debug_allocs_and_frees_keep_the_leak_report_exact() {
    use std::collections::HashMap;
    let (_space, m) = host(64 << 20);
    // One shard: every thread draws on the same slots, so freed addresses are reused
    // at once by the other threads.
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    let start = Arc::new(std::sync::Barrier::new(4));
    let workers: Vec<_> = (0..4u32)
        .map(|t| {
            let (heap, start) = (heap.clone(), start.clone());
            thread::spawn(move || {
                let file = format!("thread{t}.c");
                let mut live: Vec<(usize, u32)> = Vec::new();
                start.wait();
                for i in 0..20_000u32 {
                    let b = heap.debug_alloc(24, TASK, &file, i).unwrap();
                    live.push((b, i));
                    if live.len() > 4 {
                        let (b, _) = live.swap_remove((i as usize * 7) % live.len());
                        heap.free(b).unwrap();
                    }
                }
                live.into_iter().map(|(b, line)| (b, (file.clone(), line))).collect::<Vec<_>>()
            })
        })
        .collect();
    let live: HashMap<usize, (String, u32)> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let report: HashMap<usize, (String, u32)> =
        heap.leaks().into_iter().map(|r| (r.address, (r.file, r.line))).collect();
    assert_eq!(live.len(), 4 * 4);
    assert_eq!(report, live, "the leak report lists exactly the live DebugAlloc blocks");
    assert_eq!(heap.stats().debug_blocks, live.len());
}

#[test]
fn large_blocks_freed_at_once_by_many_threads_respect_the_cache_limits_and_serve_any_thread() {
    // A threadsafe heap keeps freed large blocks per shard (per thread), but the limits
    // (64 blocks; 1/64 of the budget, at most 8 MiB) hold for the heap as a whole, and a
    // block cached by one thread is reused by any other.
    let (space, m) = host(1 << 30);
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    let size = 2 * P;
    let start = Arc::new(std::sync::Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (heap, start) = (heap.clone(), start.clone());
            thread::spawn(move || {
                let blocks: Vec<usize> = (0..40).map(|_| heap.alloc(size, TASK).unwrap()).collect();
                start.wait();
                for &b in &blocks {
                    heap.free(b).unwrap();
                }
                blocks
            })
        })
        .collect();
    let freed: HashSet<usize> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(freed.len(), 160);
    let st = heap.stats();
    assert_eq!((st.large_blocks, st.cached), (0, 64 * size), "exactly 64 blocks kept");
    assert_eq!(heap_committed(&m), 64 * size);
    // A thread that freed nothing gets the 64 kept blocks, then a new one.
    let h = heap.clone();
    let again =
        thread::spawn(move || (0..65).map(|_| h.alloc(size, TASK).unwrap()).collect::<Vec<_>>()).join().unwrap();
    assert!(again[..64].iter().all(|b| freed.contains(b)), "the kept blocks are reused");
    assert_eq!(heap.stats().cached, 0);
    assert_eq!(heap_committed(&m), 65 * size);
    // Any thread frees them; a pointer inside one is still refused from every thread.
    let h = heap.clone();
    let inner = again[0] + P;
    assert_eq!(thread::spawn(move || h.free(inner)).join().unwrap(), Err(HostError::InvalidOperation));
    for b in again {
        heap.free(b).unwrap();
    }
    assert_eq!(heap.stats().large_blocks, 0);
    drop(heap);
    assert_eq!((m.stats().budget.used, space.committed_bytes()), (0, 0));
}
