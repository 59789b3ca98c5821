//! Helpers shared by the host memory manager tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use virtmem::host::HostMemoryManager;
use virtmem::{SimSpace, VirtualSpace};

/// A started manager over `space` with no soft or emergency reserve, whose
/// process-critical requests wait up to `wait` for memory.
pub fn started<S: VirtualSpace + 'static>(space: Arc<S>, budget: usize, wait: Duration) -> HostMemoryManager {
    HostMemoryManager::builder(space, budget)
        .soft_reserve(0)
        .emergency_reserve(0)
        .process_critical_timeout(wait)
        .build_started()
        .unwrap()
}

/// A started manager with no reserves and no waiting, over a fresh simulated space.
pub fn host(budget: usize) -> (Arc<SimSpace>, HostMemoryManager) {
    let space = Arc::new(SimSpace::simulated());
    (space.clone(), started(space, budget, Duration::ZERO))
}

/// A started manager with no reserves and no waiting, over a space of this process's real
/// memory.
#[cfg(target_os = "linux")]
pub fn linux_host(budget: usize) -> (Arc<virtmem::LinuxSpace>, HostMemoryManager) {
    let space = Arc::new(virtmem::LinuxSpace::linux().unwrap());
    (space.clone(), started(space, budget, Duration::ZERO))
}

/// Poll until `cond` holds (for a thread to start waiting); fails after 10 s.
pub fn eventually(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
