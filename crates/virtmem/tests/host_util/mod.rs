//! Helpers shared by the host memory manager tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use virtmem::host::HostMemoryManager;
use virtmem::{Error, MemoryBasicInformation, Protection, SimSpace, VirtualSpace};

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

/// Poll until `cond` holds (for a thread to start waiting); fails after 60 s. (The bound
/// only ends a run where it never holds: a loaded machine may take seconds to schedule
/// the thread that makes it hold.)
pub fn eventually(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `forward_space!(inner: alloc, free, ...)` inside an `impl VirtualSpace for T` block:
/// each named method passes its arguments to the field `inner` unchanged, so that a test
/// space writes out only the methods it changes.
macro_rules! forward_space {
    ($inner:ident : $($method:ident),* $(,)?) => { $( forward_space!(@ $inner $method); )* };
    (@ $i:ident alloc) => {
        fn alloc(&self, a: usize, s: usize, t: virtmem::AllocationType, p: virtmem::Protection) -> virtmem::Result<usize> {
            self.$i.alloc(a, s, t, p)
        }
    };
    (@ $i:ident free) => {
        fn free(&self, a: usize, s: usize, t: virtmem::FreeType) -> virtmem::Result<()> { self.$i.free(a, s, t) }
    };
    (@ $i:ident query) => {
        fn query(&self, a: usize) -> virtmem::Result<virtmem::MemoryBasicInformation> { self.$i.query(a) }
    };
    (@ $i:ident try_query) => {
        fn try_query(&self, a: usize) -> Option<virtmem::Result<virtmem::MemoryBasicInformation>> {
            self.$i.try_query(a)
        }
    };
    (@ $i:ident protect) => {
        fn protect(&self, a: usize, s: usize, p: virtmem::Protection) -> virtmem::Result<virtmem::Protection> {
            self.$i.protect(a, s, p)
        }
    };
    (@ $i:ident protect_detailed) => {
        fn protect_detailed(
            &self,
            a: usize,
            s: usize,
            p: virtmem::Protection,
        ) -> Result<virtmem::Protection, (virtmem::Error, Option<virtmem::Protection>)> {
            self.$i.protect_detailed(a, s, p)
        }
    };
    (@ $i:ident lock) => {
        fn lock(&self, a: usize, s: usize) -> virtmem::Result<()> { self.$i.lock(a, s) }
    };
    (@ $i:ident unlock) => {
        fn unlock(&self, a: usize, s: usize) -> virtmem::Result<()> { self.$i.unlock(a, s) }
    };
    (@ $i:ident get_write_watch) => {
        fn get_write_watch(
            &self,
            f: virtmem::WriteWatchFlags,
            b: usize,
            s: usize,
            m: usize,
        ) -> virtmem::Result<Vec<usize>> {
            self.$i.get_write_watch(f, b, s, m)
        }
    };
    (@ $i:ident reset_write_watch) => {
        fn reset_write_watch(&self, b: usize, s: usize) -> virtmem::Result<()> { self.$i.reset_write_watch(b, s) }
    };
    (@ $i:ident write_watch_pages) => {
        fn write_watch_pages(&self, b: usize, s: usize) -> virtmem::Result<usize> { self.$i.write_watch_pages(b, s) }
    };
    (@ $i:ident check) => {
        fn check(&self, a: usize, l: usize, k: virtmem::AccessKind) -> virtmem::Result<()> { self.$i.check(a, l, k) }
    };
    (@ $i:ident check_quiet) => {
        fn check_quiet(&self, a: usize, l: usize, k: virtmem::AccessKind) -> virtmem::Result<()> {
            self.$i.check_quiet(a, l, k)
        }
    };
    (@ $i:ident read) => {
        fn read(&self, a: usize, buf: &mut [u8]) -> virtmem::Result<()> { self.$i.read(a, buf) }
    };
    (@ $i:ident write) => {
        fn write(&self, a: usize, d: &[u8]) -> virtmem::Result<()> { self.$i.write(a, d) }
    };
    (@ $i:ident execute) => {
        fn execute(&self, a: usize, buf: &mut [u8]) -> virtmem::Result<()> { self.$i.execute(a, buf) }
    };
    (@ $i:ident system_info) => {
        fn system_info(&self) -> virtmem::SystemInfo { self.$i.system_info() }
    };
    (@ $i:ident stats) => {
        fn stats(&self) -> virtmem::SpaceStats { self.$i.stats() }
    };
    (@ $i:ident regions) => {
        fn regions(&self) -> Vec<virtmem::MemoryBasicInformation> { self.$i.regions() }
    };
    (@ $i:ident set_commit_limit) => {
        fn set_commit_limit(&self, l: Option<usize>) { self.$i.set_commit_limit(l) }
    };
    (@ $i:ident commit_limit) => {
        fn commit_limit(&self) -> Option<usize> { self.$i.commit_limit() }
    };
    (@ $i:ident committed_bytes) => {
        fn committed_bytes(&self) -> usize { self.$i.committed_bytes() }
    };
    (@ $i:ident reserved_bytes) => {
        fn reserved_bytes(&self) -> usize { self.$i.reserved_bytes() }
    };
    (@ $i:ident flush_instruction_cache) => {
        fn flush_instruction_cache(&self, a: usize, s: usize) { self.$i.flush_instruction_cache(a, s) }
    };
}
#[allow(unused_imports)] // (Not every test binary defines a space.)
pub(crate) use forward_space;

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
    forward_space!(inner: alloc, free, query, lock, unlock, get_write_watch, reset_write_watch, write_watch_pages);
    forward_space!(inner: check, check_quiet, read, write, execute, system_info, stats, regions);
    forward_space!(inner: set_commit_limit, commit_limit, committed_bytes, reserved_bytes, flush_instruction_cache);
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
}

/// Stops a thread with a signal wherever it is, as a runtime suspends its threads, and
/// lets it go on. One per test binary (the handler's flags are statics).
#[cfg(all(target_os = "linux", not(miri)))] // (Miri has no signals to stop a thread with.)
pub struct Suspender {
    thread: libc::pthread_t,
    signal: libc::c_int,
}

#[cfg(all(target_os = "linux", not(miri)))]
static PARKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
#[cfg(all(target_os = "linux", not(miri)))]
static RESUME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(all(target_os = "linux", not(miri)))]
impl Suspender {
    /// Handle `signal` (which nothing else in the test binary may use) by parking the
    /// thread that receives it; `thread` is the one [`Suspender::stop`] stops.
    pub fn new(thread: libc::pthread_t, signal: libc::c_int) -> Suspender {
        extern "C" fn park(_: libc::c_int) {
            use std::sync::atomic::Ordering::SeqCst;
            // Only atomics and sched_yield: async-signal-safe.
            PARKED.store(true, SeqCst);
            while !RESUME.load(SeqCst) {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            PARKED.store(false, SeqCst);
        }
        // SAFETY: installs a handler for `signal`, which the caller promises nothing else
        // uses; the handler only touches atomics and calls sched_yield.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = park as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(signal, &sa, std::ptr::null_mut()), 0);
        }
        Suspender { thread, signal }
    }

    /// Stop the thread where it is; returns once it is parked in the handler.
    pub fn stop(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        RESUME.store(false, SeqCst);
        // SAFETY: `thread` is still running (the caller joins it only after its last
        // `resume`).
        assert_eq!(unsafe { libc::pthread_kill(self.thread, self.signal) }, 0);
        while !PARKED.load(SeqCst) {
            std::thread::yield_now();
        }
    }

    /// Let the stopped thread go on; returns once it has left the handler.
    pub fn resume(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        RESUME.store(true, SeqCst);
        while PARKED.load(SeqCst) {
            std::thread::yield_now();
        }
    }
}
