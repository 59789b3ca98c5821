//! `FlushProcessWriteBuffers` (`virtmem::flush_process_write_buffers`): "Flushes the write
//! queue of each processor that is running a thread of the current process." The heavy
//! side of an asymmetric barrier: a thread that calls it, between a store and a load, may
//! rely on every other thread's earlier stores being visible, although those threads
//! ordered their own store and load with a compiler fence alone.
//!
//! The check is the store-buffering litmus test. Thread A stores `x = 1`, then (compiler
//! fence only) loads `y`; thread B stores `y = 1`, flushes, then loads `x`. Without the
//! flush the CPU may let each load pass its own thread's store (x86-64 does, through its
//! store buffers), and both loads then see 0; with it, that outcome is forbidden. Each
//! mechanism runs for enough rounds that replacing the flush by nothing, or by a compiler
//! fence, shows the forbidden outcome: on the 2-vCPU AMD EPYC VM, with other jobs on both
//! cores, all 30 such runs failed (12 of each microsecond mechanism's test, 6 of the
//! global command's; half with no flush, half with a compiler fence), within 48 rounds. (Before the two threads were pinned to different CPUs, a busy machine sometimes
//! ran both on one, where they only take turns: see [`Litmus::concurrent`].) The
//! fallbacks run in a child process of this test binary, with
//! `VIRTMEM_LINUX_WITHOUT` withholding membarrier (read once per process).
#![cfg(target_os = "linux")]

mod linux_util;

use std::hint::spin_loop;
use std::sync::atomic::{compiler_fence, AtomicU32, AtomicUsize, Ordering::*};
use std::sync::{Mutex, MutexGuard};

use linux_util::{without, CHILD_ENV};
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use virtmem::backend::linux::WITHOUT_ENV;
use virtmem::{flush_mechanism, flush_process_write_buffers, FlushMechanism, LinuxSpace};

/// Concurrent rounds of the litmus test for the mechanisms that cost microseconds (with
/// no flush, a few percent of concurrent rounds show the forbidden outcome here).
const ROUNDS: usize = 2_000;

/// Concurrent rounds for `MEMBARRIER_CMD_GLOBAL`, which waits for an RCU grace period
/// (about 10 ms here): one block.
const GLOBAL_ROUNDS: usize = 64;

/// One test of this binary at a time: each needs both cores for its two threads (a test
/// waiting for its child process holds it too).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether this process runs with `VIRTMEM_LINUX_WITHOUT` unset (the parent test process).
fn plain() -> bool {
    std::env::var_os(WITHOUT_ENV).is_none() && std::env::var_os(CHILD_ENV).is_none()
}

/// Wait at a spinning barrier of two threads: the `n`-th crossing (from 1) is passed once
/// both threads have arrived `n` times. No sleeping: when both threads are running, they
/// leave within a cache miss of each other, which is what lets their stores and loads
/// overlap. It yields now and then (when the other thread is not running, on a machine
/// whose other core is busy, or while it waits in a slow flush). Returns whether this
/// thread came late: it saw the other's arrival on its first look after a yield, so the
/// other may have gone on long before (the round is then no test of ordering).
fn cross(arrivals: &AtomicUsize, n: usize) -> bool {
    arrivals.fetch_add(1, AcqRel);
    let (mut spins, mut late) = (0u32, false);
    while arrivals.load(Acquire) < 2 * n {
        spins = spins.wrapping_add(1);
        late = spins % 4096 == 0;
        if late {
            std::thread::yield_now();
        } else {
            spin_loop();
        }
    }
    late
}

/// A few spins, varied from round to round (xorshift), so that the two threads' accesses
/// meet at slightly different offsets.
fn jitter(state: &mut u32) {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    for _ in 0..(*state % 4) {
        spin_loop();
    }
}

/// Two CPUs this thread may run on, if it may run on two: the litmus test pins its two
/// threads one to each, so that a busy machine cannot put both on one CPU, where they
/// would only take turns.
fn two_cpus() -> Option<(CpuSet, CpuSet, CpuSet)> {
    let allowed = sched_getaffinity(None).ok()?;
    let mut cpus = (0..CpuSet::MAX_CPU).filter(|&c| allowed.is_set(c));
    let (first, second) = (cpus.next()?, cpus.next()?);
    let only = |c| {
        let mut set = CpuSet::new();
        set.set(c);
        set
    };
    Some((allowed, only(first), only(second)))
}

/// A variable alone on its cache line (128 bytes: adjacent-line prefetch pairs lines).
#[repr(align(128))]
#[derive(Default)]
struct Line(AtomicU32);

/// Rounds run between two resets of the variables: their lines fit in L1.
const BLOCK: usize = 64;

/// What [`store_buffering`] saw.
#[derive(Debug)]
struct Litmus {
    /// The first round in which both loads saw 0 (the forbidden outcome).
    failed: Option<usize>,
    /// Rounds run.
    rounds: usize,
    /// Rounds in which both threads were running at once (neither came late to the
    /// round): the only ones in which the forbidden outcome can show.
    concurrent: usize,
}

/// The store-buffering litmus test with `flush` as thread B's barrier, run until
/// `concurrent` rounds had both threads running at once, or `max_rounds` rounds in all
/// (on a machine too busy to run them together).
///
/// Each round uses variables of its own, and each thread zeroes (and so holds in its
/// cache) the variable it will *load*, while the one it will *store* sits in the other
/// thread's cache: a store then waits in the store buffer for its line, and the load,
/// served at once from the thread's own cache, can pass it. With no flush (or a compiler
/// fence only) on this machine, a few percent of the concurrent rounds show the forbidden
/// outcome.
fn store_buffering(flush: fn(), concurrent: usize, max_rounds: usize) -> Litmus {
    let line = |_| Line::default();
    let (x, y): (Vec<Line>, Vec<Line>) = ((0..BLOCK).map(line).collect(), (0..BLOCK).map(line).collect());
    let (seen_by_a, a_late): (Vec<Line>, Vec<Line>) = ((0..BLOCK).map(line).collect(), (0..BLOCK).map(line).collect());
    let (arrivals, stop) = (AtomicUsize::new(0), AtomicU32::new(0));
    let cpus = two_cpus();
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some((_, a, _)) = &cpus {
                let _ = sched_setaffinity(None, a);
            }
            let (mut rng, mut crossing) = (0x9E37_79B9u32, 0);
            loop {
                for v in &y {
                    v.0.store(0, Relaxed);
                }
                crossing += 1;
                cross(&arrivals, crossing);
                if stop.load(Relaxed) != 0 {
                    return;
                }
                for i in 0..BLOCK {
                    crossing += 1;
                    a_late[i].0.store(cross(&arrivals, crossing) as u32, Relaxed);
                    jitter(&mut rng);
                    // Thread A: store, compiler fence only, load.
                    x[i].0.store(1, Relaxed);
                    compiler_fence(SeqCst);
                    let r = y[i].0.load(Relaxed);
                    seen_by_a[i].0.store(r, Relaxed);
                }
                crossing += 1;
                cross(&arrivals, crossing);
            }
        });
        if let Some((_, _, b)) = &cpus {
            let _ = sched_setaffinity(None, b);
        }
        let (mut rng, mut crossing) = (0x85EB_CA6Bu32, 0);
        let mut litmus = Litmus { failed: None, rounds: 0, concurrent: 0 };
        let (mut seen_by_b, mut b_late) = ([0u32; BLOCK], [false; BLOCK]);
        loop {
            for v in &x {
                v.0.store(0, Relaxed);
            }
            let done = litmus.concurrent >= concurrent || litmus.rounds >= max_rounds;
            stop.store(done as u32, Relaxed);
            crossing += 1;
            cross(&arrivals, crossing);
            if done {
                if let Some((allowed, _, _)) = &cpus {
                    let _ = sched_setaffinity(None, allowed);
                }
                return litmus;
            }
            for i in 0..BLOCK {
                crossing += 1;
                b_late[i] = cross(&arrivals, crossing);
                jitter(&mut rng);
                // Thread B: store, FlushProcessWriteBuffers, load.
                y[i].0.store(1, Relaxed);
                flush();
                seen_by_b[i] = x[i].0.load(Relaxed);
            }
            crossing += 1;
            cross(&arrivals, crossing);
            for i in 0..BLOCK {
                if !b_late[i] && a_late[i].0.load(Relaxed) == 0 {
                    litmus.concurrent += 1;
                }
                if litmus.failed.is_none() && seen_by_b[i] == 0 && seen_by_a[i].0.load(Relaxed) == 0 {
                    litmus.failed = Some(litmus.rounds + i);
                }
            }
            litmus.rounds += BLOCK;
        }
    })
}

/// Run the litmus test with the real flush for `concurrent` concurrent rounds (at most
/// `max_rounds` in all) and require the forbidden outcome never to show.
fn assert_flush_orders(concurrent: usize, max_rounds: usize) {
    let litmus = store_buffering(flush_process_write_buffers, concurrent, max_rounds);
    eprintln!("{:?}: {litmus:?}", flush_mechanism());
    assert_eq!(litmus.failed, None, "both loads saw 0 with {:?} as the flush: {litmus:?}", flush_mechanism());
}

/// On this kernel (6.x, no seccomp filter) the flush is
/// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, and it orders the other thread's store
/// before the flushing thread's load.
#[test]
fn membarrier_private_expedited_forbids_store_buffering() {
    if !plain() {
        return;
    }
    let _serial = serial();
    assert_eq!(flush_mechanism(), FlushMechanism::MembarrierPrivateExpedited);
    assert_flush_orders(ROUNDS, 5 * ROUNDS);
}

/// Without `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (before Linux 4.14) the flush waits for every
/// CPU to pass through a quiescent state (`MEMBARRIER_CMD_GLOBAL`): slower, as strong.
#[test]
fn without_expedited_membarrier_the_global_command_forbids_store_buffering() {
    const NAME: &str = "without_expedited_membarrier_the_global_command_forbids_store_buffering";
    let _serial = serial();
    without(NAME, "membarrier_expedited", || {
        assert_eq!(flush_mechanism(), FlushMechanism::MembarrierGlobal);
        assert_eq!(LinuxSpace::linux().unwrap().backend().missing_features(), ["membarrier_expedited"]);
        assert_flush_orders(GLOBAL_ROUNDS, 2 * GLOBAL_ROUNDS);
    });
}

/// Without membarrier at all (before Linux 4.3, or forbidden by a seccomp filter) the
/// flush takes write access away from a locked helper page it has just written, which
/// makes the kernel interrupt every CPU running a thread of the process to flush its TLB.
#[test]
fn without_membarrier_the_page_protection_flush_forbids_store_buffering() {
    const NAME: &str = "without_membarrier_the_page_protection_flush_forbids_store_buffering";
    let _serial = serial();
    without(NAME, "membarrier", || {
        assert_eq!(flush_mechanism(), FlushMechanism::PageProtection);
        assert_eq!(LinuxSpace::linux().unwrap().backend().missing_features(), ["membarrier_expedited", "membarrier"]);
        assert_flush_orders(ROUNDS, 5 * ROUNDS);
    });
}

/// Several threads flushing at once each return, on every mechanism (the page-protection
/// flush changes one helper page, so its callers take turns: one never finds the page
/// inaccessible while it writes, which would be a SIGSEGV), and the flush still orders
/// afterwards (but for the global command, whose rounds are slow).
#[test]
fn many_threads_flush_at_once_on_every_mechanism() {
    const NAME: &str = "many_threads_flush_at_once_on_every_mechanism";
    fn body(calls: usize, rounds: usize) {
        let returned = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..calls {
                        flush_process_write_buffers();
                        returned.fetch_add(1, Relaxed);
                    }
                });
            }
        });
        assert_eq!(returned.load(Relaxed), 4 * calls);
        assert_flush_orders(rounds, 5 * rounds);
    }
    let _serial = serial();
    if plain() {
        body(500, ROUNDS / 10);
    }
    // The global command's rounds cost 10 ms each: its ordering is the test above's.
    without(NAME, "membarrier_expedited", || body(5, 0));
    without(NAME, "membarrier", || body(500, ROUNDS / 10));
}

/// A `VIRTMEM_LINUX_WITHOUT` that names no feature makes no Linux backend, but
/// `FlushProcessWriteBuffers` returns nothing and cannot fail: it withholds nothing and
/// uses the best mechanism.
#[test]
fn a_refused_without_list_still_flushes_with_membarrier() {
    const NAME: &str = "a_refused_without_list_still_flushes_with_membarrier";
    let _serial = serial();
    without(NAME, "gaurd", || {
        assert!(LinuxSpace::linux().is_err());
        assert_eq!(flush_mechanism(), FlushMechanism::MembarrierPrivateExpedited);
        assert_flush_orders(ROUNDS / 10, ROUNDS / 2);
    });
}
