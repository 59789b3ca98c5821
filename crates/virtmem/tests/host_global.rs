//! A whole Rust program's heap under the manager's budget: this test binary's global
//! allocator is a `HostGlobalAlloc` over a manager on this process's real memory.
//!
//! The binary has no test harness (`harness = false`): the checks compare the budget's
//! figures before and after an allocation, and libtest's own threads, which allocate from
//! the same heap when they are scheduled, made them fail now and then under load.

#[cfg(not(all(target_os = "linux", not(miri))))]
fn main() {}

#[cfg(all(target_os = "linux", not(miri)))]
fn main() {
    a_programs_heap_under_the_budget();
    println!("host_global: a program's heap under the budget: ok");
}

#[cfg(all(target_os = "linux", not(miri)))]
mod linux {

    use std::collections::HashMap;
    use std::sync::{mpsc, Arc};
    use std::thread;

    use virtmem::host::{HostGlobalAlloc, HostMemoryManager, MallocType};
    use virtmem::LinuxSpace;

    #[global_allocator]
    static HEAP: HostGlobalAlloc = HostGlobalAlloc::new();

    const BUDGET: usize = 96 << 20;

    /// One test, run in steps, so that no other test's allocations disturb the figures.
    pub fn a_programs_heap_under_the_budget() {
        let space = Arc::new(LinuxSpace::linux().unwrap());
        let m = HostMemoryManager::builder(space, BUDGET).soft_reserve(0).emergency_reserve(0).build_started().unwrap();
        let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
        // SAFETY: the manager runs over this process's real memory and is never shut down;
        // it is leaked below, so its reservations stay mapped for the life of the process.
        unsafe { HEAP.install(heap) }.unwrap();
        let m: &'static HostMemoryManager = Box::leak(Box::new(m));
        let second = m.create_malloc(MallocType::empty()).unwrap();
        // SAFETY: as above (and it is refused anyway).
        assert!(unsafe { HEAP.install(second) }.is_err(), "only once");
        allocations_are_charged_to_the_budget(m);
        the_budget_refuses_what_does_not_fit();
        layouts_aligned_over_64k_are_served(m);
        many_threads_with_cross_thread_frees(m);
        large_blocks_from_many_threads_freed_by_others();
    }

    fn allocations_are_charged_to_the_budget(m: &HostMemoryManager) {
        let heap = HEAP.heap().unwrap();
        let before = m.stats().budget.heap_committed;
        let v: Vec<u64> = (0..(4 << 20) / 8).collect(); // 4 MiB: a large block
        assert!(heap.owns(v.as_ptr() as usize));
        assert!(m.stats().budget.heap_committed >= before + (4 << 20));
        let s = String::from("small strings come from the size classes");
        assert!(heap.owns(s.as_ptr() as usize));
        assert_eq!(v.iter().sum::<u64>(), ((4u64 << 20) / 8) * ((4u64 << 20) / 8 - 1) / 2);
        let during = m.stats().budget.heap_committed;
        drop(v);
        assert!(m.stats().budget.heap_committed <= during - (4 << 20), "freeing refunds");
    }

    fn the_budget_refuses_what_does_not_fit() {
        let mut v: Vec<u8> = Vec::new();
        assert!(v.try_reserve_exact(BUDGET + (1 << 20)).is_err(), "over the budget");
        assert!(v.try_reserve_exact(1 << 20).is_ok(), "and fine again below it");
        v.resize(1 << 20, 7);
        assert_eq!(v[12345], 7);
    }

    fn layouts_aligned_over_64k_are_served(m: &HostMemoryManager) {
        use std::alloc::{alloc, dealloc, Layout};
        let heap = HEAP.heap().unwrap();
        for (size, align) in [(4096, 1 << 20), (3 << 20, 1 << 20), (24, 1 << 17)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let before = m.stats().budget.heap_committed;
            // SAFETY: a layout of nonzero size.
            let p = unsafe { alloc(layout) };
            assert!(!p.is_null(), "a valid layout aligned to {align} is served");
            assert_eq!(p as usize % align, 0);
            assert!(heap.owns(p as usize), "from the heap, so under the budget");
            assert!(m.stats().budget.heap_committed >= before + size);
            // SAFETY: `p` is `size` writable bytes just allocated.
            unsafe { std::ptr::write_bytes(p, 0xC3, size) };
            // SAFETY: allocated above with this layout.
            unsafe { dealloc(p, layout) };
            assert!(m.stats().budget.heap_committed <= before, "freeing refunds");
            assert!(!heap.owns(p as usize));
        }
    }

    fn many_threads_with_cross_thread_frees(m: &HostMemoryManager) {
        let (tx, rx) = mpsc::channel::<Vec<String>>();
        let producers: Vec<_> = (0..4)
            .map(|t| {
                let tx = tx.clone();
                thread::spawn(move || {
                    let mut map = HashMap::new();
                    for i in 0..5000 {
                        map.insert(i, format!("thread {t} item {i} {}", "x".repeat(i % 300)));
                        if i % 100 == 99 {
                            let batch: Vec<String> = map.drain().map(|(_, v)| v).collect();
                            tx.send(batch).unwrap();
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let consumer = thread::spawn(move || rx.iter().map(|b| b.len()).sum::<usize>());
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(consumer.join().unwrap(), 4 * 5000);
        let s = m.stats().budget;
        assert!(s.heap_committed <= BUDGET);
        assert!(s.peak <= BUDGET);
    }

    /// Each large block is recorded in its thread's shard map, whose storage grows inside
    /// the manager (a rehash frees through this allocator, which then asks every shard's map
    /// whether it owns the pointer). Four threads allocate large blocks and free them, half
    /// of them made by another thread: every block is the heap's, keeps its bytes and is
    /// freed. (The lock-order rule of those maps, whose breach once hung this binary, is
    /// pinned by a unit test of the heap: two rehashes at the same instant are too rare to
    /// catch here.)
    fn large_blocks_from_many_threads_freed_by_others() {
        let heap = HEAP.heap().unwrap();
        let before = heap.stats().large_blocks;
        let (tx, rx) = mpsc::channel::<Vec<Vec<u8>>>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let (tx, rx) = (tx.clone(), rx.clone());
                thread::spawn(move || {
                    for round in 0..20 {
                        // 8-24 KiB: past the size classes, so each is a large block.
                        let mine: Vec<Vec<u8>> = (0..64).map(|i| vec![t as u8; 8192 + (i % 3) * 8192]).collect();
                        assert!(mine.iter().all(|v| HEAP.heap().unwrap().owns(v.as_ptr() as usize)));
                        let (keep, give): (Vec<_>, Vec<_>) =
                            mine.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
                        tx.send(give.into_iter().map(|(_, v)| v).collect()).unwrap();
                        drop(keep);
                        // Free a batch another thread made, if one is waiting.
                        let theirs = rx.lock().unwrap().try_recv();
                        if let Ok(batch) = theirs {
                            assert!(batch.iter().all(|v| v.iter().all(|&b| b == v[0])), "round {round}");
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        for w in workers {
            w.join().unwrap();
        }
        let rest: usize = rx.lock().unwrap().iter().map(|b| b.len()).sum();
        assert!(rest <= 4 * 20 * 32);
        assert_eq!(heap.stats().large_blocks, before, "every large block freed");
    }
}

#[cfg(all(target_os = "linux", not(miri)))]
use linux::a_programs_heap_under_the_budget;
