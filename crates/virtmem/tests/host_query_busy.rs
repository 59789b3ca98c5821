//! `IHostMemoryManager::VirtualQuery` must not block (the runtime calls it while other
//! threads are suspended, perhaps in the middle of a host call holding a lock). These
//! tests make the space's bookkeeping look held, and really suspend a thread at random
//! points of its host calls, and check that the query still answers, and answers right.

use rng::Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod host_util;
mod rng;
use host_util::{forward_space, started, Busy};
use virtmem::host::{CriticalLevel, HostError, HostMemoryManager};
use virtmem::{AllocationType, FreeType, MemState, Protection};

const P: usize = 4096;
const TASK: CriticalLevel = CriticalLevel::Task;

const PROTECTIONS: [Protection; 6] = [
    Protection::READWRITE,
    Protection::READONLY,
    Protection::NOACCESS,
    Protection::EXECUTE_READ,
    Protection::READWRITE.union(Protection::GUARD),
    Protection::READONLY.union(Protection::NOCACHE),
];

/// Walk every reservation of the host page run by page run, and some addresses inside
/// runs, with the space made to look busy: every answer must be the space's own.
fn check_busy_answers(space: &Busy, m: &HostMemoryManager, live: &[(usize, usize)], rng: &mut Rng) {
    space.busy.store(true, Ordering::SeqCst);
    for &(base, size) in live {
        let mut a = base;
        while a < base + size {
            let truth = space.inner.query(a).unwrap();
            assert_eq!(m.virtual_query(a), Ok(truth), "busy answer at {a:#x}");
            let inside = a + rng.below(truth.region_size);
            assert_eq!(m.virtual_query(inside), Ok(space.inner.query(inside).unwrap()), "busy answer at {inside:#x}");
            a += truth.region_size;
        }
    }
    space.busy.store(false, Ordering::SeqCst);
}

/// Random reserves, commits, decommits, protections and releases through the host; after
/// each, the answers given while the space's bookkeeping is held equal the space's.
#[test]
fn answers_while_the_space_is_held_match_the_space() {
    let space = Arc::new(Busy::new());
    let m = started(space.clone(), 1 << 30, Duration::ZERO);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<(usize, usize)> = Vec::new();
    let steps = if cfg!(miri) { 150 } else { 3000 };
    for step in 0..steps {
        match rng.below(10) {
            0 if live.len() < 8 => {
                let size = (1 + rng.below(64)) * P;
                let ty = if rng.below(2) == 0 {
                    AllocationType::RESERVE
                } else {
                    AllocationType::RESERVE | AllocationType::COMMIT
                };
                let prot = PROTECTIONS[rng.below(PROTECTIONS.len())];
                if let Ok(base) = m.virtual_alloc(0, size, ty, prot, TASK) {
                    live.push((base, size));
                }
            }
            1 if !live.is_empty() => {
                let (base, _) = live.swap_remove(rng.below(live.len()));
                m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
            }
            op if !live.is_empty() => {
                let (base, size) = live[rng.below(live.len())];
                let first = rng.below(size / P);
                let n = 1 + rng.below(size / P - first);
                let (a, len) = (base + first * P, n * P);
                let prot = PROTECTIONS[rng.below(PROTECTIONS.len())];
                // Failures (protecting reserved pages) must change nothing: checked below too.
                let _ = match op {
                    2..=4 => m.virtual_alloc(a, len, AllocationType::COMMIT, prot, TASK).map(|_| ()),
                    5 | 6 => m.virtual_free(a, len, FreeType::DECOMMIT),
                    _ => m.virtual_protect(a, len, prot).map(|_| ()),
                };
            }
            _ => continue,
        }
        check_busy_answers(&space, &m, &live, &mut rng);
        if step % 100 == 0 {
            // Outside the host's memory only the space can tell: busy, the answer is a timeout.
            space.busy.store(true, Ordering::SeqCst);
            assert_eq!(m.virtual_query(0x7000_0000_0000), Err(HostError::Timeout));
            space.busy.store(false, Ordering::SeqCst);
            assert_eq!(m.virtual_query(0x7000_0000_0000).map(|i| i.state), Ok(MemState::Free));
        }
    }
}

/// Views, other tenants' memory and released memory are told apart without the space.
#[test]
fn ownership_answers_need_no_space() {
    let space = Arc::new(Busy::new());
    let m = started(space.clone(), 1 << 30, Duration::ZERO);
    let other = m.add_tenant("other", None).unwrap();
    let mine = m.virtual_alloc(0, 16 * P, AllocationType::RESERVE, Protection::READWRITE, TASK).unwrap();
    let theirs = other.virtual_alloc(0, 16 * P, AllocationType::RESERVE, Protection::READWRITE, TASK).unwrap();
    let gone = m.virtual_alloc(0, 16 * P, AllocationType::COMMIT, Protection::READWRITE, TASK).unwrap();
    m.virtual_free(gone, 0, FreeType::RELEASE).unwrap();
    let view = 0x6000_0000_0000;
    m.acquired_virtual_address_space(view, 8 * P).unwrap();
    space.busy.store(true, Ordering::SeqCst);
    assert_eq!(m.virtual_query(mine + 5 * P).map(|i| (i.allocation_base, i.state)), Ok((mine, MemState::Reserve)));
    assert_eq!(m.virtual_query(theirs), Err(HostError::NotOwner));
    assert_eq!(m.virtual_query(view + P), Err(HostError::InvalidOperation));
    assert_eq!(m.virtual_query(gone), Err(HostError::Timeout), "released: no longer the host's");
    space.busy.store(false, Ordering::SeqCst);
    m.released_virtual_address_space(view).unwrap();
    assert_eq!(m.virtual_query(view + P).map(|i| i.state), Ok(MemState::Free));
}

/// A thread doing host calls is stopped by a signal at random points (as a runtime
/// suspends its threads) while the main thread queries: the query never hangs and its
/// answers stay right, including while the stopped thread holds the space's lock.
#[cfg(all(target_os = "linux", not(miri)))] // Miri has no signals to stop a thread with.
#[test]
fn query_answers_while_a_thread_is_suspended_mid_call() {
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::time::Instant;

    let space = Arc::new(virtmem::SimSpace::simulated());
    let m = started(space.clone(), 1 << 30, Duration::ZERO);
    let still = m.virtual_alloc(0, 64 * P, AllocationType::RESERVE, Protection::READWRITE, TASK).unwrap();
    m.virtual_alloc(still, 4 * P, AllocationType::COMMIT, Protection::READONLY, TASK).unwrap();
    let busy = m.virtual_alloc(0, 64 * P, AllocationType::RESERVE, Protection::READWRITE, TASK).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (m, stop) = (m.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let a = busy + (i % 60) * P;
                m.virtual_alloc(a, 4 * P, AllocationType::COMMIT, Protection::READWRITE, TASK).unwrap();
                m.virtual_protect(a, 2 * P, Protection::READONLY).unwrap();
                m.virtual_free(a, 4 * P, FreeType::DECOMMIT).unwrap();
                // Reservations come and go too (the registry changes).
                let r = m.virtual_alloc(0, 8 * P, AllocationType::COMMIT, Protection::READWRITE, TASK).unwrap();
                m.virtual_free(r, 0, FreeType::RELEASE).unwrap();
                i += 1;
            }
        })
    };
    // A hang (no round finished in 30 s) fails the run instead of stalling it.
    let progress = Arc::new(AtomicU64::new(0));
    {
        let progress = progress.clone();
        std::thread::spawn(move || {
            let mut last = u64::MAX;
            loop {
                std::thread::sleep(Duration::from_secs(30));
                let now = progress.load(Ordering::SeqCst);
                if now == u64::MAX {
                    return;
                }
                if now == last {
                    eprintln!("VirtualQuery hung while a thread was suspended (round {now})");
                    std::process::abort();
                }
                last = now;
            }
        });
    }
    let suspender = host_util::Suspender::new(worker.as_pthread_t(), libc::SIGUSR2);
    let expect_still = space.query(still).unwrap();
    let (mut held, mut rounds) = (0, 0);
    let t = Instant::now();
    while rounds < 3000 && (held < 50 || rounds < 300) && t.elapsed() < Duration::from_secs(60) {
        suspender.stop();
        if space.try_query(still).is_none() {
            held += 1;
        }
        assert_eq!(m.virtual_query(still), Ok(expect_still));
        assert_eq!(
            m.virtual_query(still + 10 * P).map(|i| (i.base_address, i.state)),
            Ok((still + 10 * P, MemState::Reserve))
        );
        let b = m.virtual_query(busy + 3 * P).expect("the busy reservation");
        assert_eq!(b.allocation_base, busy);
        assert!(b.state == MemState::Reserve || b.state == MemState::Commit);
        match m.virtual_query(0x7000_0000_0000) {
            Ok(i) => assert_eq!(i.state, MemState::Free),
            Err(e) => assert_eq!(e, HostError::Timeout),
        }
        rounds += 1;
        progress.store(rounds, Ordering::SeqCst);
        suspender.resume();
    }
    progress.store(u64::MAX, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    worker.join().unwrap();
    assert!(held > 0, "the worker was never caught holding the space's lock in {rounds} rounds");
    eprintln!("{rounds} suspensions, {held} of them with the space's lock held");
}

/// A simulated space whose bookkeeping always looks held and whose every try takes a
/// millisecond, as on a machine so loaded that each yield gives the processor away for
/// a while; it counts the tries.
#[derive(Debug)]
struct Slow {
    inner: virtmem::SimSpace,
    tries: std::sync::atomic::AtomicUsize,
}

impl virtmem::VirtualSpace for Slow {
    forward_space!(inner: alloc, free, query, protect, protect_detailed, lock, unlock, get_write_watch);
    forward_space!(inner: reset_write_watch, write_watch_pages, check, check_quiet, read, write, execute, system_info);
    forward_space!(inner: stats, regions, set_commit_limit, commit_limit, committed_bytes, reserved_bytes);
    forward_space!(inner: flush_instruction_cache);
    fn try_query(&self, _: usize) -> Option<virtmem::Result<virtmem::MemoryBasicInformation>> {
        self.tries.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1));
        None
    }
}

/// `virtual_query` rustdoc: outside the host's memory, a bookkeeping that stays held
/// gives `HOST_E_TIMEOUT` after "a short series of attempts, two milliseconds at most
/// whatever the machine's load". Counted, not timed: with each try taking a millisecond,
/// the spins (64 tries) are followed by at most a few yielding tries, never by all 192
/// that a bound in attempts alone allows.
#[test]
fn a_held_bookkeeping_times_out_in_bounded_time_however_slow_each_try() {
    let space = Arc::new(Slow { inner: virtmem::SimSpace::simulated(), tries: Default::default() });
    let m = started(space.clone(), 1 << 30, Duration::ZERO);
    assert_eq!(m.virtual_query(0x7000_0000_0000).map(|i| i.state), Err(HostError::Timeout));
    let tries = space.tries.load(Ordering::SeqCst);
    assert!((65..=80).contains(&tries), "{tries} tries of the space's bookkeeping");
}
