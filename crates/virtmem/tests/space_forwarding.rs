//! `&T`, `Box<T>` and `Arc<T>` of a `VirtualSpace` are `VirtualSpace`s that pass every
//! call on to the space: the same script of calls gives the same answers through each as
//! on the space itself (each call chosen so that passing it to another method would
//! change an answer), `try_query` and `flush_instruction_cache` reach the space's own
//! (not the trait's defaults), and the process space goes into an
//! `Arc<dyn VirtualSpace>` (the host memory manager's) without a wrapper.

use std::sync::{Arc, Mutex};

use virtmem::{
    AccessKind, AddressRequirements, AllocationType as T, FreeType as F, MemoryBasicInformation, Protection as Pr,
    SimSpace, VirtualSpace, WriteWatchFlags as W,
};

mod host_util;
use host_util::forward_space;

const P: usize = 4096;

/// Every method of the trait, on a fresh simulated space (deterministic: the same calls
/// give the same addresses), each answer noted.
fn script(s: &dyn VirtualSpace) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |what: &str, v: &dyn std::fmt::Debug| out.push(format!("{what}: {v:?}"));
    let base = s.alloc(0, 16 * P, T::RESERVE | T::WRITE_WATCH, Pr::NOACCESS).unwrap();
    note("reserve", &base);
    note("commit", &s.alloc(base, 4 * P, T::COMMIT, Pr::READWRITE));
    note("commit guard", &s.alloc(base + 4 * P, P, T::COMMIT, Pr::READWRITE | Pr::GUARD));
    note("committed", &s.committed_bytes());
    note("reserved", &s.reserved_bytes());
    note("write", &s.write(base + 10, b"abc"));
    let mut buf = [0u8; 3];
    note("read", &s.read(base + 10, &mut buf));
    note("read bytes", &buf);
    note("execute (not executable)", &s.execute(base + 10, &mut buf));
    note("check_quiet (guard stays)", &s.check_quiet(base + 4 * P, 1, AccessKind::Read));
    note("query", &s.query(base + 4 * P));
    note("check (guard goes)", &s.check(base + 4 * P, 1, AccessKind::Read));
    note("query", &s.query(base + 4 * P));
    note("try_query", &s.try_query(base));
    note("protect", &s.protect(base, P, Pr::READONLY));
    note("protect_detailed (past the commit)", &s.protect_detailed(base + P, 8 * P, Pr::READONLY));
    note("lock", &s.lock(base, P));
    note("unlock", &s.unlock(base, P));
    note("unlock again", &s.unlock(base, P));
    note("write_watch_pages", &s.write_watch_pages(base, 16 * P));
    note("get_write_watch", &s.get_write_watch(W::empty(), base, 16 * P, 100));
    note("get_write_watch reset", &s.get_write_watch(W::RESET, base, 16 * P, 100));
    note("get_write_watch after", &s.get_write_watch(W::empty(), base, 16 * P, 100));
    note("write", &s.write(base + 2 * P, b"x"));
    note("reset_write_watch", &s.reset_write_watch(base, 16 * P));
    note("get_write_watch after reset", &s.get_write_watch(W::empty(), base, 16 * P, 100));
    s.set_commit_limit(Some(5 * P));
    note("commit_limit", &s.commit_limit());
    note("commit past the limit", &s.alloc(base + 8 * P, P, T::COMMIT, Pr::READWRITE));
    s.set_commit_limit(None);
    note("commit_limit", &s.commit_limit());
    // A window the reservation above is not in (the trait's default would refuse, 50).
    let req = AddressRequirements {
        lowest_starting_address: 1 << 32,
        highest_ending_address: (1 << 33) - 1,
        alignment: 1 << 20,
    };
    let placed = s.alloc_within(P, T::RESERVE | T::TOP_DOWN, Pr::READWRITE, req);
    note("alloc_within", &placed);
    if let Ok(p) = placed {
        note("release placed", &s.free(p, 0, F::RELEASE));
    }
    note("system_info", &s.system_info());
    note("stats", &s.stats());
    note("regions", &s.regions());
    s.flush_instruction_cache(base, 16 * P);
    note("release", &s.free(base, 0, F::RELEASE));
    note("query", &s.query(base));
    out
}

#[test]
fn every_call_through_a_reference_box_or_arc_is_the_spaces_own() {
    let want = script(&SimSpace::simulated());
    // (The script's answers tell the methods apart.)
    assert!(want.iter().any(|l| l.starts_with("check_quiet") && l.contains("GuardPage")), "{want:#?}");
    assert!(want.iter().any(|l| l.starts_with("unlock again") && l.contains("NotLocked")), "{want:#?}");
    assert!(want.iter().any(|l| l == "alloc_within: Ok(8588886016)"), "{want:#?}");
    let sim = SimSpace::simulated();
    assert_eq!(script(&&sim), want, "&SimSpace");
    assert_eq!(script(&Box::new(SimSpace::simulated())), want, "Box<SimSpace>");
    assert_eq!(script(&Arc::new(SimSpace::simulated())), want, "Arc<SimSpace>");
    let dynamic: Arc<dyn VirtualSpace> = Arc::new(SimSpace::simulated());
    assert_eq!(script(&dynamic), want, "Arc<dyn VirtualSpace>");
    let boxed: Box<dyn VirtualSpace> = Box::new(SimSpace::simulated());
    assert_eq!(script(&boxed), want, "Box<dyn VirtualSpace>");
    let inner = SimSpace::simulated();
    let nested: Arc<dyn VirtualSpace> = Arc::new(Box::new(&inner as &dyn VirtualSpace));
    assert_eq!(script(&nested), want, "Arc<Box<&dyn VirtualSpace>>");
}

/// A space whose `try_query` always finds the space busy (`None`, where the trait's
/// default would answer the query) and which records the ranges it is asked to flush.
#[derive(Debug)]
struct Probe {
    inner: SimSpace,
    flushed: Mutex<Vec<(usize, usize)>>,
}

impl VirtualSpace for Probe {
    forward_space!(inner: alloc, free, query, protect, protect_detailed, lock, unlock, get_write_watch);
    forward_space!(inner: reset_write_watch, write_watch_pages, check, check_quiet, read, write, execute, system_info);
    forward_space!(inner: stats, regions, set_commit_limit, commit_limit, committed_bytes, reserved_bytes);
    fn try_query(&self, _: usize) -> Option<virtmem::Result<MemoryBasicInformation>> {
        None
    }
    fn flush_instruction_cache(&self, address: usize, size: usize) {
        self.flushed.lock().unwrap().push((address, size));
    }
    // The provided methods, answered apart from what the trait's defaults (which go
    // through `alloc` and `get_write_watch`) would answer.
    fn reset(&self, address: usize, size: usize) -> virtmem::Result<()> {
        self.flushed.lock().unwrap().push((address, size));
        Err(virtmem::Error::NotSupported)
    }
    fn reset_undo(&self, address: usize, size: usize) -> virtmem::Result<virtmem::ResetUndo> {
        self.flushed.lock().unwrap().push((address, size));
        Ok(virtmem::ResetUndo::Discarded)
    }
    fn get_write_watch_into(&self, _: W, base: usize, size: usize, out: &mut [usize]) -> virtmem::Result<usize> {
        self.flushed.lock().unwrap().push((base, size));
        out[0] = 42;
        Ok(1)
    }
}

/// `probe` behind each forwarding impl: `&T`, `Arc<T>`, `Arc<dyn VirtualSpace>` and
/// `Box<&dyn VirtualSpace>`, each named.
fn forwarders(probe: &Arc<Probe>) -> Vec<(&'static str, Box<dyn VirtualSpace + '_>)> {
    vec![
        ("&Probe", Box::new(&**probe)),
        ("Arc<Probe>", Box::new(probe.clone())),
        ("Arc<dyn VirtualSpace>", Box::new(probe.clone() as Arc<dyn VirtualSpace>)),
        ("Box<&dyn VirtualSpace>", Box::new(Box::new(&**probe as &dyn VirtualSpace))),
    ]
}

#[test]
fn try_query_and_flush_reach_the_spaces_own() {
    let probe = Arc::new(Probe { inner: SimSpace::simulated(), flushed: Mutex::new(Vec::new()) });
    let via = forwarders(&probe);
    for (i, (what, s)) in via.iter().enumerate() {
        assert!(s.query(0x10000).is_ok(), "{what}");
        assert!(s.try_query(0x10000).is_none(), "{what}: try_query must be the space's own");
        s.flush_instruction_cache(0x1000 * i, i + 1);
        assert_eq!(probe.flushed.lock().unwrap().last(), Some(&(0x1000 * i, i + 1)), "{what}");
    }
    assert_eq!(probe.flushed.lock().unwrap().len(), via.len());
}

/// The trait's provided methods (`reset`, `reset_undo`, `get_write_watch_into`) reach
/// the space's own through `&T`, `Box<T>` and `Arc<T>` too, not the trait's defaults
/// (which give other answers here, and for `get_write_watch_into` allocate).
#[test]
fn provided_methods_reach_the_spaces_own() {
    let probe = Arc::new(Probe { inner: SimSpace::simulated(), flushed: Mutex::new(Vec::new()) });
    let via = forwarders(&probe);
    for (i, (what, s)) in via.iter().enumerate() {
        let before = probe.flushed.lock().unwrap().len();
        assert_eq!(s.reset(0x10000 * (i + 1), P), Err(virtmem::Error::NotSupported), "{what}");
        assert_eq!(s.reset_undo(0x10000 * (i + 1), 2 * P), Ok(virtmem::ResetUndo::Discarded), "{what}");
        let mut out = [0usize; 2];
        assert_eq!(s.get_write_watch_into(W::empty(), 0x10000 * (i + 1), 3 * P, &mut out), Ok(1), "{what}");
        assert_eq!(out, [42, 0], "{what}");
        let calls = probe.flushed.lock().unwrap()[before..].to_vec();
        let at = 0x10000 * (i + 1);
        assert_eq!(calls, [(at, P), (at, 2 * P), (at, 3 * P)], "{what}");
    }
}

/// The process space (`&'static LinuxSpace`) as an `Arc<dyn VirtualSpace>`, as the host
/// memory manager takes its space: calls through it change the process's real memory.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn the_process_space_goes_into_an_arc_dyn_virtual_space() {
    use std::time::Duration;
    use virtmem::host::{CriticalLevel, HostMemoryManager};
    use virtmem::MemState;

    let s: Arc<dyn VirtualSpace> = Arc::new(virtmem::current_process());
    let base = s.alloc(0, 1 << 20, T::RESERVE, Pr::NOACCESS).unwrap();
    assert_eq!(s.alloc(base, P, T::COMMIT, Pr::READWRITE), Ok(base));
    // SAFETY: `base` is a committed read-write page of a reservation this test owns.
    unsafe { std::ptr::write_volatile(base as *mut u64, 0x1234) };
    let mut word = [0u8; 8];
    s.read(base, &mut word).unwrap();
    assert_eq!(u64::from_le_bytes(word), 0x1234);
    assert_eq!(virtmem::current_process().query(base).unwrap().state, MemState::Commit, "the same space");
    s.free(base, 0, F::RELEASE).unwrap();
    assert_eq!(virtmem::current_process().query(base).unwrap().state, MemState::Free);

    let host = HostMemoryManager::builder(s.clone(), 1 << 20)
        .soft_reserve(0)
        .emergency_reserve(0)
        .process_critical_timeout(Duration::ZERO)
        .build_started()
        .unwrap();
    let a = host.virtual_alloc(0, 64 << 10, T::RESERVE | T::COMMIT, Pr::READWRITE, CriticalLevel::Task);
    let a = a.unwrap();
    assert_eq!(s.query(a).unwrap().state, MemState::Commit);
    host.virtual_free(a, 0, F::RELEASE).unwrap();
    assert_eq!(s.query(a).unwrap().state, MemState::Free);
}
