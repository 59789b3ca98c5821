//! Many threads against a small budget: the budget is never exceeded, no refund is lost,
//! waiters wake. Plus a model check of the accounting against the space.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;
use virtmem::host::{CriticalLevel, HostError, HostMemoryManager, MallocType};
use virtmem::{AllocationType, FreeType, MemState, Protection, SimSpace};

mod host_util;
use host_util::{eventually, host, started};

const P: usize = 4096;
const RW: Protection = Protection::READWRITE;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Watches the space and the books from another thread while `work` runs. `work`
/// starts once the watcher is running (has taken its first sample): otherwise, on a busy
/// or single-core machine, `work` could be over before the watcher ever ran.
fn watched(space: &Arc<SimSpace>, m: &HostMemoryManager, limit: usize, work: impl FnOnce()) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (space, m, stop, samples) = (space.clone(), m.clone(), stop.clone(), samples.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let committed = space.committed_bytes();
                assert!(committed <= limit, "space holds {committed} committed bytes, limit {limit}");
                let used = m.stats().budget.used;
                assert!(used <= limit, "books say {used}, limit {limit}");
                samples.fetch_add(1, Ordering::SeqCst);
                thread::yield_now();
            }
        })
    };
    while samples.load(Ordering::SeqCst) == 0 {
        assert!(!watcher.is_finished(), "the watcher ended before its first sample");
        thread::yield_now();
    }
    work();
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    samples.load(Ordering::SeqCst)
}

#[test]
fn many_threads_never_exceed_a_small_budget_and_lose_no_refund() {
    let budget = 48 * P;
    let (soft, emergency) = (8 * P, 8 * P);
    let limit = budget + soft + emergency;
    let space = Arc::new(SimSpace::simulated());
    // The space itself refuses to go over the limit, so an over-admission would also
    // surface as a failed commit the books did not expect.
    space.set_commit_limit(Some(limit));
    let m = HostMemoryManager::builder(space.clone(), budget)
        .soft_reserve(soft)
        .emergency_reserve(emergency)
        .process_critical_timeout(Duration::from_millis(20))
        .build_started()
        .unwrap();
    let outcomes = Arc::new([(); 4].map(|_| AtomicUsize::new(0)));
    let samples = watched(&space, &m, limit, || {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let m = m.clone();
                let outcomes = outcomes.clone();
                thread::spawn(move || {
                    let mut rng = Rng(0xDEAD_BEEF ^ ((t as u64 + 1) * 0x9E37_79B9));
                    let mut mine: Vec<(usize, usize)> = Vec::new();
                    for _ in 0..1500 {
                        let level = CriticalLevel::from_raw(rng.below(3) as u32).unwrap();
                        match rng.below(6) {
                            0 | 1 => {
                                let pages = 1 + rng.below(6);
                                match m.virtual_alloc(0, pages * P, AllocationType::COMMIT, RW, level) {
                                    Ok(p) => {
                                        mine.push((p, pages));
                                        outcomes[0].fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(HostError::OutOfMemory) => {
                                        outcomes[1].fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(HostError::Timeout) => {
                                        outcomes[2].fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(e) => panic!("unexpected {e:?}"),
                                }
                            }
                            2 if !mine.is_empty() => {
                                let (p, pages) = mine[rng.below(mine.len())];
                                let off = rng.below(pages);
                                m.virtual_free(p + off * P, P, FreeType::DECOMMIT).unwrap();
                            }
                            3 if !mine.is_empty() => {
                                let (p, pages) = mine[rng.below(mine.len())];
                                match m.virtual_alloc(p, pages * P, AllocationType::COMMIT, RW, level) {
                                    Ok(_) | Err(HostError::OutOfMemory) | Err(HostError::Timeout) => {}
                                    Err(e) => panic!("unexpected {e:?}"),
                                }
                            }
                            _ if !mine.is_empty() => {
                                let (p, _) = mine.swap_remove(rng.below(mine.len()));
                                m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
                                outcomes[3].fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                    for (p, _) in mine {
                        m.virtual_free(p, 0, FreeType::RELEASE).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    assert!(samples > 0);
    let ok = outcomes[0].load(Ordering::Relaxed);
    let refused = outcomes[1].load(Ordering::Relaxed) + outcomes[2].load(Ordering::Relaxed);
    assert!(ok > 100 && refused > 10, "the budget must actually be contended: {ok} ok, {refused} refused");
    let s = m.stats();
    assert_eq!(s.budget.used, 0, "every charge refunded");
    assert!(s.budget.peak <= limit);
    assert!(s.budget.peak > budget, "the reserves were used");
    assert_eq!(s.reservations, 0);
    assert_eq!(space.committed_bytes(), 0);
    assert_eq!(space.reserved_bytes(), 0);
    assert_eq!(m.lifecycle(), virtmem::host::Lifecycle::Running);
}

#[test]
fn every_waiter_wakes_as_memory_comes_back() {
    let space = Arc::new(SimSpace::simulated());
    let m = started(space.clone(), 8 * P, Duration::from_secs(60));
    let hogs: Vec<usize> =
        (0..8).map(|_| m.virtual_alloc(0, P, AllocationType::COMMIT, RW, CriticalLevel::Task).unwrap()).collect();
    let n = 8;
    let start = Arc::new(Barrier::new(n + 1));
    let waiters: Vec<_> = (0..n)
        .map(|_| {
            let (m, start) = (m.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                m.virtual_alloc(0, P, AllocationType::COMMIT, RW, CriticalLevel::Process)
            })
        })
        .collect();
    start.wait();
    eventually("every request to wait", || m.stats().budget.waiting >= n);
    // Give the pages back one by one: each wakes exactly one more waiter.
    for (i, h) in hogs.into_iter().enumerate() {
        m.virtual_free(h, 0, FreeType::RELEASE).unwrap();
        eventually("a waiter to wake", || m.stats().budget.waiting < n - i);
        assert_eq!(m.stats().budget.used, 8 * P);
    }
    for w in waiters {
        let p = w.join().unwrap().unwrap();
        assert_eq!(m.virtual_query(p).unwrap().state, MemState::Commit);
    }
    assert_eq!(space.committed_bytes(), 8 * P);
}

#[test]
fn threadsafe_heaps_share_a_small_budget() {
    let budget = 24 * virtmem::host::SLAB_SIZE;
    let space = Arc::new(SimSpace::simulated());
    space.set_commit_limit(Some(budget));
    let m =
        HostMemoryManager::builder(space.clone(), budget).soft_reserve(0).emergency_reserve(0).build_started().unwrap();
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    watched(&space, &m, budget, || {
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let (heap, refused) = (heap.clone(), refused.clone());
                thread::spawn(move || {
                    let mut rng = Rng(77 + t as u64);
                    let mut mine = Vec::new();
                    for _ in 0..6000 {
                        if mine.len() < 400 && rng.below(3) != 0 {
                            let size = if rng.below(40) == 0 { 5000 + rng.below(30000) } else { 1 + rng.below(2048) };
                            match heap.alloc(size, CriticalLevel::Task) {
                                Ok(b) => mine.push(b),
                                Err(HostError::OutOfMemory) => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => panic!("unexpected {e:?}"),
                            }
                        } else if !mine.is_empty() {
                            heap.free(mine.swap_remove(rng.below(mine.len()))).unwrap();
                        }
                    }
                    for b in mine {
                        heap.free(b).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    assert!(refused.load(Ordering::Relaxed) > 0, "the budget must actually be contended");
    assert_eq!(heap.stats().live_blocks, 0);
    assert_eq!(space.committed_bytes(), m.stats().budget.used);
    drop(heap);
    assert_eq!(m.stats().budget.used, 0);
    assert_eq!(space.committed_bytes(), 0);
}

#[derive(Debug, Clone)]
enum Op {
    Reserve(usize),
    Commit(usize, usize, usize),
    Decommit(usize, usize, usize),
    DecommitAll(usize),
    Release(usize),
    ReserveCommit(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..40).prop_map(Op::Reserve),
        (0usize..8, 0usize..40, 1usize..20).prop_map(|(r, o, n)| Op::Commit(r, o, n)),
        (0usize..8, 0usize..40, 1usize..20).prop_map(|(r, o, n)| Op::Decommit(r, o, n)),
        (0usize..8).prop_map(Op::DecommitAll),
        (0usize..8).prop_map(Op::Release),
        (1usize..20).prop_map(Op::ReserveCommit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the sequence of calls, the books equal what the space has committed and
    /// never exceed the budget; a refused call changes neither.
    #[test]
    fn books_match_the_space(ops in prop::collection::vec(op(), 1..60)) {
        let budget = 48 * P;
        let (space, m) = host(budget);
        let task = CriticalLevel::Task;
        let mut res: Vec<usize> = Vec::new();
        for op in ops {
            let before = space.committed_bytes();
            let r = match op {
                Op::Reserve(n) => m.virtual_alloc(0, n * P, AllocationType::RESERVE, RW, task).map(|p| res.push(p)),
                Op::ReserveCommit(n) => m
                    .virtual_alloc(0, n * P, AllocationType::RESERVE | AllocationType::COMMIT, RW, task)
                    .map(|p| res.push(p)),
                Op::Commit(r, o, n) if !res.is_empty() => {
                    m.virtual_alloc(res[r % res.len()] + o * P, n * P, AllocationType::COMMIT, RW, task).map(|_| ())
                }
                Op::Decommit(r, o, n) if !res.is_empty() => {
                    m.virtual_free(res[r % res.len()] + o * P, n * P, FreeType::DECOMMIT)
                }
                Op::DecommitAll(r) if !res.is_empty() => m.virtual_free(res[r % res.len()], 0, FreeType::DECOMMIT),
                Op::Release(r) if !res.is_empty() => {
                    let p = res.swap_remove(r % res.len());
                    m.virtual_free(p, 0, FreeType::RELEASE)
                }
                _ => Ok(()),
            };
            let used = m.stats().budget.used;
            prop_assert_eq!(used, space.committed_bytes());
            prop_assert!(used <= budget);
            match r {
                Ok(()) => {}
                Err(e) => {
                    prop_assert!(
                        matches!(e, HostError::OutOfMemory | HostError::InvalidArg | HostError::InvalidOperation | HostError::Win32(_)),
                        "{:?}", e
                    );
                    prop_assert_eq!(space.committed_bytes(), before);
                }
            }
        }
        prop_assert_eq!(m.lifecycle(), virtmem::host::Lifecycle::Running);
    }
}
