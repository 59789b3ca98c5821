//! Helpers shared by the host memory manager tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use virtmem::host::HostMemoryManager;
use virtmem::{
    AllocationType, Error, FreeType, MemoryBasicInformation, Protection, SimSpace, SpaceStats, SystemInfo,
    VirtualSpace, WriteWatchFlags,
};

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
#[cfg(all(target_os = "linux", not(miri)))] // (Miri has no Linux backend.)
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

/// A simulated space with two faults a test can switch on. While `busy` is set,
/// [`VirtualSpace::try_query`] answers `None`, as it does when a thread suspended
/// mid-call holds the space's lock. While `forget` is set, changing protections denies
/// that the reservation exists (`ERROR_INVALID_ADDRESS`), as a backend that lost track of
/// it would. Everything else goes to `inner`.
#[derive(Debug)]
pub struct Busy {
    pub inner: SimSpace,
    pub busy: std::sync::atomic::AtomicBool,
    pub forget: std::sync::atomic::AtomicBool,
}

impl Busy {
    pub fn new() -> Busy {
        Busy { inner: SimSpace::simulated(), busy: Default::default(), forget: Default::default() }
    }
}

impl VirtualSpace for Busy {
    fn alloc(&self, a: usize, s: usize, t: AllocationType, p: Protection) -> virtmem::Result<usize> {
        self.inner.alloc(a, s, t, p)
    }
    fn free(&self, a: usize, s: usize, t: FreeType) -> virtmem::Result<()> {
        self.inner.free(a, s, t)
    }
    fn query(&self, a: usize) -> virtmem::Result<MemoryBasicInformation> {
        self.inner.query(a)
    }
    fn try_query(&self, a: usize) -> Option<virtmem::Result<MemoryBasicInformation>> {
        // As the real one, an address past the top is refused before the lock is tried.
        if self.busy.load(std::sync::atomic::Ordering::SeqCst)
            && a <= self.inner.system_info().maximum_application_address
        {
            None
        } else {
            self.inner.try_query(a)
        }
    }
    fn protect(&self, a: usize, s: usize, p: Protection) -> virtmem::Result<Protection> {
        self.protect_detailed(a, s, p).map_err(|(e, _)| e)
    }
    fn protect_detailed(&self, a: usize, s: usize, p: Protection) -> Result<Protection, (Error, Option<Protection>)> {
        if self.forget.load(std::sync::atomic::Ordering::SeqCst) {
            return Err((Error::InvalidAddress, None));
        }
        self.inner.protect_detailed(a, s, p)
    }
    fn lock(&self, a: usize, s: usize) -> virtmem::Result<()> {
        self.inner.lock(a, s)
    }
    fn unlock(&self, a: usize, s: usize) -> virtmem::Result<()> {
        self.inner.unlock(a, s)
    }
    fn get_write_watch(&self, f: WriteWatchFlags, b: usize, s: usize, m: usize) -> virtmem::Result<Vec<usize>> {
        self.inner.get_write_watch(f, b, s, m)
    }
    fn reset_write_watch(&self, b: usize, s: usize) -> virtmem::Result<()> {
        self.inner.reset_write_watch(b, s)
    }
    fn write_watch_pages(&self, b: usize, s: usize) -> virtmem::Result<usize> {
        self.inner.write_watch_pages(b, s)
    }
    fn check(&self, a: usize, l: usize, k: virtmem::AccessKind) -> virtmem::Result<()> {
        self.inner.check(a, l, k)
    }
    fn read(&self, a: usize, buf: &mut [u8]) -> virtmem::Result<()> {
        self.inner.read(a, buf)
    }
    fn write(&self, a: usize, d: &[u8]) -> virtmem::Result<()> {
        self.inner.write(a, d)
    }
    fn execute(&self, a: usize, buf: &mut [u8]) -> virtmem::Result<()> {
        self.inner.execute(a, buf)
    }
    fn system_info(&self) -> SystemInfo {
        self.inner.system_info()
    }
    fn stats(&self) -> SpaceStats {
        self.inner.stats()
    }
    fn regions(&self) -> Vec<MemoryBasicInformation> {
        self.inner.regions()
    }
    fn set_commit_limit(&self, l: Option<usize>) {
        self.inner.set_commit_limit(l)
    }
    fn commit_limit(&self) -> Option<usize> {
        self.inner.commit_limit()
    }
    fn committed_bytes(&self) -> usize {
        self.inner.committed_bytes()
    }
    fn reserved_bytes(&self) -> usize {
        self.inner.reserved_bytes()
    }
}
