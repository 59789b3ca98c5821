//! The budget: what is charged, by whom, admission by critical level, waiting for memory,
//! and memory-pressure notifications.
//!
//! One mutex guards the counters; waiters sleep on one condition variable that every
//! refund, shutdown and cancellation signals.
//!
//! Notifications are computed under the mutex: each threshold crossing is recorded exactly
//! once, with a per-tenant sequence number, and the tenant's callbacks are cloned out.
//! The first thread to call `notify` after the crossing (usually the one that made it)
//! delivers it, after the mutex is dropped,
//! and never waits for another thread: there is no delivery lock. Order is kept without
//! one by a per-tenant atomic, `started`, holding the sequence number and level of the
//! newest crossing whose delivery has begun; a thread begins delivering crossing `s` with
//! `fetch_max`, and
//!
//! - skips it if a newer crossing of the tenant has already begun (that one carries the
//!   current news, from its own thread);
//! - skips it if the delivery it supersedes announced the same level (Low, Neutral, Low
//!   where the Neutral was skipped: the callbacks heard Low and nothing changed since);
//! - before each callback, stops if a crossing to another level has begun meanwhile (its
//!   thread calls every callback with the newer level).
//!
//! Callbacks of one tenant may therefore run at the same time on different threads (two
//! threads crossing at once each deliver their own crossing), and when two deliveries
//! overlap a callback may receive their levels in either order (a thread may be preempted
//! between its last check of `started` and its call). The thread of the newest crossing
//! to a new level calls every callback with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::error::{HostError, HostResult};
use super::{CriticalLevel, MemoryAvailable, NotificationCallback, Thresholds};

/// Index of a tenant in the budget.
pub(crate) type TenantId = usize;

/// What a charge pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Pages committed through `VirtualAlloc`.
    Virtual = 0,
    /// Pages committed by an `IHostMalloc` heap.
    Heap = 1,
    /// Views announced with `AcquiredVirtualAddressSpace`.
    View = 2,
}

/// The admission policy, fixed when the manager is built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub budget: usize,
    pub soft_reserve: usize,
    pub emergency_reserve: usize,
    pub process_wait: Duration,
    pub thresholds: Thresholds,
}

impl Policy {
    /// What a request of `level` may take on top of a limit.
    fn extra(&self, level: CriticalLevel) -> usize {
        match level {
            CriticalLevel::Task => 0,
            CriticalLevel::AppDomain => self.soft_reserve,
            CriticalLevel::Process => self.soft_reserve.saturating_add(self.emergency_reserve),
        }
    }
}

struct Tenant {
    name: String,
    limit: Option<usize>,
    used: usize,
    by_kind: [usize; 3],
    level: MemoryAvailable,
    /// Bumped by every change of `level`.
    seq: u64,
    /// The newest crossing whose delivery has begun, packed by `started()`.
    started: Arc<AtomicU64>,
    callbacks: Vec<NotificationCallback>,
    /// Bumped by a cancellation: waiters that saw an older value give up.
    cancel_gen: u64,
    waiting: usize,
}

struct State {
    used: usize,
    by_kind: [usize; 3],
    peak: usize,
    closed: bool,
    waiting: usize,
    tenants: Vec<Tenant>,
}

/// A point-in-time view of one tenant's accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantStats {
    /// The tenant's name.
    pub name: String,
    /// Its sub-budget, if it has one.
    pub limit: Option<usize>,
    /// Bytes it has in use (committed + heap + views).
    pub used: usize,
    /// Of which committed through `VirtualAlloc`.
    pub virtual_committed: usize,
    /// Of which committed by its heaps.
    pub heap_committed: usize,
    /// Of which acquired views.
    pub views: usize,
    /// Its current notification level.
    pub level: MemoryAvailable,
    /// Its requests waiting for memory now.
    pub waiting: usize,
}

/// A point-in-time view of the whole budget.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetStats {
    /// The budget in bytes (what task-critical requests may use).
    pub budget: usize,
    /// Bytes in use: committed + heap + views, every tenant together.
    pub used: usize,
    /// Of which committed through `VirtualAlloc`.
    pub virtual_committed: usize,
    /// Of which committed by heaps.
    pub heap_committed: usize,
    /// Of which acquired views.
    pub views: usize,
    /// The highest `used` ever seen.
    pub peak: usize,
    /// Requests waiting for memory now.
    pub waiting: usize,
    /// Every tenant, by tenant index.
    pub tenants: Vec<TenantStats>,
}

/// A crossing as `Tenant::started` holds it: the sequence number above the level, so that
/// `fetch_max` orders crossings by sequence number.
fn started(seq: u64, level: MemoryAvailable) -> u64 {
    (seq << 2) | level as u64
}

/// The level packed by [`started`].
fn started_level(packed: u64) -> u64 {
    packed & 3
}

/// A crossing to deliver once the budget lock is dropped.
struct Crossing {
    seq: u64,
    level: MemoryAvailable,
    started: Arc<AtomicU64>,
    callbacks: Vec<NotificationCallback>,
}

pub(crate) struct Budget {
    policy: Policy,
    st: Mutex<State>,
    cv: Condvar,
}

fn percent(used: usize, limit: usize) -> u32 {
    if limit == 0 {
        return 100;
    }
    ((used as u128 * 100 / limit as u128).min(100)) as u32
}

impl State {
    fn fits(&self, policy: &Policy, t: TenantId, bytes: usize, level: CriticalLevel) -> bool {
        let extra = policy.extra(level);
        let global_ok = self.used.checked_add(bytes).is_some_and(|n| n <= policy.budget.saturating_add(extra));
        let tenant = &self.tenants[t];
        let tenant_ok =
            tenant.limit.map_or(true, |l| tenant.used.checked_add(bytes).is_some_and(|n| n <= l.saturating_add(extra)));
        global_ok && tenant_ok
    }

    /// Whether `bytes` would fit for tenant `t` at `level` with nothing in use at all: if
    /// not, no refund can ever admit them, and waiting for one is pointless.
    fn could_ever_fit(&self, policy: &Policy, t: TenantId, bytes: usize, level: CriticalLevel) -> bool {
        let extra = policy.extra(level);
        bytes <= policy.budget.saturating_add(extra)
            && self.tenants[t].limit.map_or(true, |l| bytes <= l.saturating_add(extra))
    }

    fn add(&mut self, t: TenantId, kind: Kind, bytes: usize) {
        self.used += bytes;
        self.by_kind[kind as usize] += bytes;
        self.peak = self.peak.max(self.used);
        let tenant = &mut self.tenants[t];
        tenant.used += bytes;
        tenant.by_kind[kind as usize] += bytes;
    }

    fn load(&self, policy: &Policy, t: TenantId) -> (u32, usize) {
        let tenant = &self.tenants[t];
        let mut pct = percent(self.used, policy.budget);
        let mut avail = policy.budget.saturating_sub(self.used);
        if let Some(l) = tenant.limit {
            pct = pct.max(percent(tenant.used, l));
            avail = avail.min(l.saturating_sub(tenant.used));
        }
        (pct, avail)
    }
}

/// The level after `current` for a load of `p` percent.
pub(crate) fn next_level(current: MemoryAvailable, p: u32, th: &Thresholds) -> MemoryAvailable {
    use MemoryAvailable::*;
    let settle = |p: u32| {
        if p >= th.low_percent {
            Low
        } else if p <= th.high_percent {
            High
        } else {
            Neutral
        }
    };
    match current {
        High if p > th.high_percent.saturating_add(th.hysteresis) => settle(p),
        Low if p.saturating_add(th.hysteresis) < th.low_percent => settle(p),
        Neutral if p >= th.low_percent || p <= th.high_percent => settle(p),
        other => other,
    }
}

impl Budget {
    pub fn new(policy: Policy, name: String, limit: Option<usize>, callbacks: Vec<NotificationCallback>) -> Budget {
        let b = Budget {
            policy,
            st: Mutex::new(State { used: 0, by_kind: [0; 3], peak: 0, closed: false, waiting: 0, tenants: Vec::new() }),
            cv: Condvar::new(),
        };
        b.add_tenant(name, limit, callbacks);
        b
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn add_tenant(&self, name: String, limit: Option<usize>, callbacks: Vec<NotificationCallback>) -> TenantId {
        let mut st = self.st.lock();
        let level = next_level(MemoryAvailable::Neutral, 0, &self.policy.thresholds);
        st.tenants.push(Tenant {
            name,
            limit,
            used: 0,
            by_kind: [0; 3],
            level,
            seq: 0,
            started: Arc::new(AtomicU64::new(started(0, level))),
            callbacks,
            cancel_gen: 0,
            waiting: 0,
        });
        let t = st.tenants.len() - 1;
        // A new tenant starts at the level its (possibly shared) load gives it.
        let (p, _) = st.load(&self.policy, t);
        let level = next_level(level, p, &self.policy.thresholds);
        st.tenants[t].level = level;
        st.tenants[t].started.store(started(0, level), Ordering::SeqCst);
        t
    }

    /// Charge `bytes` to tenant `t` if `level` admits them now; otherwise, when `wait`
    /// (a process-critical request with a nonzero timeout), wait for refunds. `held`: bytes
    /// the caller has charged already for the same request and keeps while it waits (a
    /// commit that found more pages to pay for on a later round); no refund returns them,
    /// so a request whose `held + bytes` could never fit fails at once instead of waiting.
    pub fn charge(
        &self,
        t: TenantId,
        kind: Kind,
        bytes: usize,
        level: CriticalLevel,
        wait: bool,
        held: usize,
    ) -> HostResult<()> {
        if bytes == 0 {
            return Ok(());
        }
        let mut st = self.st.lock();
        if st.closed {
            return Err(HostError::ClrNotAvailable);
        }
        if st.fits(&self.policy, t, bytes, level) {
            st.add(t, kind, bytes);
            return Ok(());
        }
        if !wait
            || level != CriticalLevel::Process
            || self.policy.process_wait.is_zero()
            || !st.could_ever_fit(&self.policy, t, bytes.saturating_add(held), level)
        {
            return Err(HostError::OutOfMemory);
        }
        // A wait too long to have a deadline (`Duration::MAX`: "wait forever") is untimed.
        let deadline = Instant::now().checked_add(self.policy.process_wait);
        let gen = st.tenants[t].cancel_gen;
        st.waiting += 1;
        st.tenants[t].waiting += 1;
        let out = loop {
            let timed_out = match deadline {
                Some(d) => self.cv.wait_until(&mut st, d).timed_out(),
                None => {
                    self.cv.wait(&mut st);
                    false
                }
            };
            if st.closed || st.tenants[t].cancel_gen != gen {
                break Err(HostError::Abandoned);
            }
            if st.fits(&self.policy, t, bytes, level) {
                st.add(t, kind, bytes);
                break Ok(());
            }
            if timed_out || deadline.is_some_and(|d| Instant::now() >= d) {
                break Err(HostError::Timeout);
            }
        };
        st.waiting -= 1;
        st.tenants[t].waiting -= 1;
        out
    }

    /// Charge without admission (a view the runtime has already mapped).
    pub fn force(&self, t: TenantId, kind: Kind, bytes: usize) {
        self.st.lock().add(t, kind, bytes);
    }

    /// Give back `bytes` charged to `t` and wake the waiters.
    pub fn refund(&self, t: TenantId, kind: Kind, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut st = self.st.lock();
        debug_assert!(st.tenants[t].by_kind[kind as usize] >= bytes, "refund of more than was charged");
        st.used -= bytes;
        st.by_kind[kind as usize] -= bytes;
        let tenant = &mut st.tenants[t];
        tenant.used -= bytes;
        tenant.by_kind[kind as usize] -= bytes;
        let waiters = st.waiting;
        drop(st);
        if waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// Refuse every later charge and wake every waiter with `HOST_E_ABANDONED`.
    pub fn close(&self) {
        self.st.lock().closed = true;
        self.cv.notify_all();
    }

    /// Abandon the requests of tenant `t` that are waiting now.
    pub fn cancel(&self, t: TenantId) {
        self.st.lock().tenants[t].cancel_gen += 1;
        self.cv.notify_all();
    }

    /// Percent of the budget in use and bytes available, as tenant `t` sees them.
    pub fn load(&self, t: TenantId) -> (u32, usize) {
        self.st.lock().load(&self.policy, t)
    }

    pub fn register(&self, t: TenantId, cb: NotificationCallback) {
        self.st.lock().tenants[t].callbacks.push(cb);
    }

    /// Record every threshold crossing since the last call and deliver it, from this
    /// thread, with no budget lock held and without waiting for any other thread (see the
    /// module docs for the order).
    pub fn notify(&self) {
        let mut crossed: Vec<Crossing> = Vec::new();
        {
            let mut st = self.st.lock();
            for t in 0..st.tenants.len() {
                let (p, _) = st.load(&self.policy, t);
                let tenant = &mut st.tenants[t];
                let next = next_level(tenant.level, p, &self.policy.thresholds);
                if next != tenant.level {
                    tenant.level = next;
                    tenant.seq += 1;
                    crossed.push(Crossing {
                        seq: tenant.seq,
                        level: next,
                        started: tenant.started.clone(),
                        callbacks: tenant.callbacks.clone(),
                    });
                }
            }
        }
        for c in crossed {
            Self::deliver(c);
        }
    }

    /// Call the callbacks of crossing `c`, unless a newer crossing of its tenant has begun
    /// delivery (see the module docs).
    fn deliver(c: Crossing) {
        let mine = started(c.seq, c.level);
        let prev = c.started.fetch_max(mine, Ordering::SeqCst);
        if prev > mine || started_level(prev) == c.level as u64 {
            return;
        }
        for cb in &c.callbacks {
            if started_level(c.started.load(Ordering::SeqCst)) != c.level as u64 {
                // A crossing to another level has begun; its thread calls every callback.
                return;
            }
            cb(c.level);
        }
    }

    pub fn stats(&self) -> BudgetStats {
        let st = self.st.lock();
        BudgetStats {
            budget: self.policy.budget,
            used: st.used,
            virtual_committed: st.by_kind[Kind::Virtual as usize],
            heap_committed: st.by_kind[Kind::Heap as usize],
            views: st.by_kind[Kind::View as usize],
            peak: st.peak,
            waiting: st.waiting,
            tenants: st
                .tenants
                .iter()
                .map(|t| TenantStats {
                    name: t.name.clone(),
                    limit: t.limit,
                    used: t.used,
                    virtual_committed: t.by_kind[Kind::Virtual as usize],
                    heap_committed: t.by_kind[Kind::Heap as usize],
                    views: t.by_kind[Kind::View as usize],
                    level: t.level,
                    waiting: t.waiting,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemoryAvailable::*;

    /// A process-critical request that, with what the same request holds already, could
    /// never fit fails at once: no refund can return what the waiter itself holds. (It
    /// had waited out its whole timeout when only the new bytes were weighed: a commit
    /// whose page count grew between its rounds.) Without what it holds, the same request
    /// could fit after a refund: it waits, and the refund admits it.
    ///
    /// Neither half measures time: each request runs on a thread of its own, with ten
    /// minutes allowed for a wait, and the test watches the budget's count of waiters
    /// until the answer comes. The first must answer `E_OUTOFMEMORY` (a wait ends only in
    /// `Ok`, `HOST_E_TIMEOUT` or `HOST_E_ABANDONED`) with no waiter ever counted; the
    /// second must be counted as waiting, without an answer, until the refund lets it in.
    /// (The 60 s bounds are hang guards: they end a run where an answer never comes.)
    #[test]
    fn a_wait_that_what_the_waiter_holds_makes_hopeless_fails_at_once() {
        use std::sync::mpsc;
        let thresholds = Thresholds { low_percent: 90, high_percent: 50, hysteresis: 5 };
        let policy = Policy {
            budget: 100,
            soft_reserve: 0,
            emergency_reserve: 0,
            process_wait: Duration::from_secs(600),
            thresholds,
        };
        let b = Arc::new(Budget::new(policy, "t".into(), None, Vec::new()));
        let process = CriticalLevel::Process;
        assert_eq!(b.charge(0, Kind::Virtual, 60, process, true, 0), Ok(()));
        let charge_on_a_thread = |held: usize| {
            let (b, (tx, rx)) = (b.clone(), mpsc::channel());
            // (Not joined: a thread left waiting by a failing run ends with the process.)
            std::thread::spawn(move || tx.send(b.charge(0, Kind::Virtual, 50, process, true, held)));
            rx
        };
        let hang_guard =
            |t: Instant| assert!(t.elapsed() < Duration::from_secs(60), "no answer and no waiter in 60 s (hang guard)");
        // 60 held + 50 can never fit in 100: it is refused without waiting.
        let hopeless = charge_on_a_thread(60);
        let t = Instant::now();
        let answer = loop {
            if let Ok(answer) = hopeless.try_recv() {
                break answer;
            }
            assert_eq!(b.stats().waiting, 0, "a request that can never fit waits");
            hang_guard(t);
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(answer, Err(HostError::OutOfMemory));
        // Without what it holds it could fit after a refund: it waits for one.
        let hopeful = charge_on_a_thread(0);
        let t = Instant::now();
        while b.stats().waiting == 0 {
            if let Ok(answer) = hopeful.try_recv() {
                panic!("a request that a refund would admit answered {answer:?} without waiting");
            }
            hang_guard(t);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(hopeful.try_recv(), Err(mpsc::TryRecvError::Empty), "counted as waiting, still waiting");
        b.refund(0, Kind::Virtual, 60);
        assert_eq!(hopeful.recv_timeout(Duration::from_secs(60)), Ok(Ok(())), "the refund admits the waiter");
        assert_eq!(b.stats().used, 50);
    }

    #[test]
    fn hysteresis() {
        let th = Thresholds { low_percent: 90, high_percent: 50, hysteresis: 5 };
        assert_eq!(next_level(Neutral, 0, &th), High);
        assert_eq!(next_level(High, 55, &th), High);
        assert_eq!(next_level(High, 56, &th), Neutral);
        assert_eq!(next_level(Neutral, 51, &th), Neutral);
        assert_eq!(next_level(Neutral, 50, &th), High);
        assert_eq!(next_level(Neutral, 90, &th), Low);
        assert_eq!(next_level(Low, 86, &th), Low);
        assert_eq!(next_level(Low, 84, &th), Neutral);
        assert_eq!(next_level(Low, 10, &th), High);
        assert_eq!(next_level(High, 95, &th), Low);
    }

    type Seen = Arc<Mutex<Vec<MemoryAvailable>>>;

    fn recorder(seen: &Seen) -> NotificationCallback {
        let seen = seen.clone();
        Arc::new(move |level| seen.lock().push(level))
    }

    fn crossing(seq: u64, level: MemoryAvailable, started: &Arc<AtomicU64>, cbs: &[NotificationCallback]) -> Crossing {
        Crossing { seq, level, started: started.clone(), callbacks: cbs.to_vec() }
    }

    #[test]
    fn deliver_skips_overtaken_crossings_and_repeats_of_the_level_announced() {
        let seen: Seen = Arc::default();
        let cbs = [recorder(&seen)];
        let st = Arc::new(AtomicU64::new(started(0, High)));
        Budget::deliver(crossing(2, Neutral, &st, &cbs));
        Budget::deliver(crossing(1, Low, &st, &cbs)); // overtaken by 2
        Budget::deliver(crossing(4, Neutral, &st, &cbs)); // 3 (Low) not begun: nothing new
        Budget::deliver(crossing(3, Low, &st, &cbs)); // overtaken by 4
        Budget::deliver(crossing(5, High, &st, &cbs));
        assert_eq!(*seen.lock(), vec![Neutral, High]);
        assert_eq!(st.load(Ordering::SeqCst), started(5, High));
    }

    #[test]
    fn a_delivery_stops_when_a_crossing_to_another_level_begins() {
        let (first, second): (Seen, Seen) = Default::default();
        let st = Arc::new(AtomicU64::new(started(0, High)));
        let newer = [recorder(&first), recorder(&second)];
        // The first callback of crossing 1 (Low) sees crossing 2 (High) delivered meanwhile,
        // as another thread would; crossing 1 then calls no further callback.
        let cbs: [NotificationCallback; 2] = [
            {
                let (st, first, newer) = (st.clone(), first.clone(), newer.clone());
                Arc::new(move |level| {
                    first.lock().push(level);
                    if level == Low {
                        Budget::deliver(crossing(2, High, &st, &newer));
                    }
                })
            },
            recorder(&second),
        ];
        Budget::deliver(crossing(1, Low, &st, &cbs));
        assert_eq!(*first.lock(), vec![Low, High]);
        assert_eq!(*second.lock(), vec![High]);
    }
}
