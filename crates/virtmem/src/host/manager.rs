//! [`HostMemoryManager`]: budget, ownership, lifecycle and the `IHostMemoryManager`
//! methods over any [`VirtualSpace`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::budget::{Budget, BudgetStats, Kind, Policy, TenantId};
use super::error::{HostError, HostResult};
use super::heap::{Heap, HostMalloc};
use super::mirror::Mirror;
use super::shadow::{Run, Shade, Shadow};
use super::{
    enter, CriticalLevel, MallocType, MemoryAvailable, NotificationCallback, ReclaimHook, Thresholds,
    DEFAULT_PROCESS_WAIT,
};
use crate::backend::Limits;
use crate::error::Error;
use crate::flags::{AllocationType, FreeType, MemState, MemoryBasicInformation, Protection};
use crate::rules::{self, AllocRequest, FreeRequest};
use crate::space::VirtualSpace;

/// Where a manager is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Lifecycle {
    /// Built, not started: every call is `HOST_E_CLRNOTAVAILABLE`.
    NotStarted = 0,
    /// Serving requests.
    Running = 1,
    /// Shut down: every call is `HOST_E_CLRNOTAVAILABLE`.
    ShutDown = 2,
    /// Disabled by an unrecoverable failure (one call got `E_FAIL`): every call is
    /// `HOST_E_CLRNOTAVAILABLE`.
    Disabled = 3,
}

impl Lifecycle {
    fn from_u8(v: u8) -> Lifecycle {
        match v {
            0 => Lifecycle::NotStarted,
            1 => Lifecycle::Running,
            2 => Lifecycle::ShutDown,
            _ => Lifecycle::Disabled,
        }
    }
}

/// What `GetMemoryLoad` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryLoad {
    /// Percent of the budget in use (0..=100), the higher of the global load and the
    /// tenant's own sub-budget load.
    pub percent: u32,
    /// Bytes a task-critical request could still get (the smaller of what is left of the
    /// budget and of the tenant's sub-budget).
    pub available: usize,
}

/// Everything a host may want to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostStats {
    /// Where the manager is in its life.
    pub lifecycle: Lifecycle,
    /// Budget, usage and waiters, in total and per tenant.
    pub budget: BudgetStats,
    /// Live reservations made through `VirtualAlloc`.
    pub reservations: usize,
    /// Live reservations made by heaps.
    pub heap_reservations: usize,
    /// Views announced with `AcquiredVirtualAddressSpace` and not yet released.
    pub views: usize,
}

/// How many times at most `VirtualQuery` tries the space's bookkeeping for an address
/// outside the host's memory before answering `HOST_E_TIMEOUT`; the first
/// [`QUERY_SPINS`] attempts spin, the rest yield the processor, for [`QUERY_PATIENCE`]
/// at most. The bookkeeping is held for well under a microsecond at a time, so only a
/// holder that was suspended (or preempted and not run again within the patience)
/// exhausts them.
const QUERY_ATTEMPTS: u32 = 256;
/// See [`QUERY_ATTEMPTS`].
const QUERY_SPINS: u32 = 64;
/// How long at most `VirtualQuery` yields waiting for the space's bookkeeping. A count
/// of yields alone is no bound in time: on a loaded machine each yield may give the
/// processor away for a whole time slice, and 192 of them took longer than a quarter of
/// a second in tests.
const QUERY_PATIENCE: std::time::Duration = std::time::Duration::from_millis(2);

/// Who made a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The runtime, through `VirtualAlloc`.
    Runtime,
    /// A heap of the runtime's tenant.
    Heap,
}

/// A reservation made through the manager.
pub(crate) struct Region {
    base: usize,
    end: usize,
    tenant: TenantId,
    owner: Owner,
    /// Set (under the region lock) just before the space is asked to release it.
    releasing: AtomicBool,
    inner: Mutex<RegionInner>,
}

struct RegionInner {
    alive: bool,
    /// Bytes of this reservation charged to the budget.
    committed: usize,
}

struct View {
    end: usize,
    tenant: TenantId,
}

struct Shared {
    space: Arc<dyn VirtualSpace>,
    limits: Limits,
    state: AtomicU8,
    budget: Budget,
    regions: RwLock<BTreeMap<usize, Arc<Region>>>,
    views: Mutex<BTreeMap<usize, View>>,
    /// What `VirtualQuery` answers from when the space is busy: the reservations (as
    /// last changed through the host) and the views, readable without waiting. Changed
    /// under the `regions` write lock (membership), a region's lock (its pages) or the
    /// `views` lock (views).
    shadow: Mirror<Shadow>,
    reclaim: Option<ReclaimHook>,
    disable_on_process_failure: bool,
    /// Every heap created through the manager, asked to give back what it keeps for
    /// reuse when a request is refused or must wait.
    heaps: Mutex<Vec<Weak<Heap>>>,
    /// Requests about to wait or waiting for memory: while nonzero, heaps keep nothing.
    wanted: AtomicUsize,
}

/// Counts a request in [`Shared::wanted`] while it lives.
struct Wanting<'a>(&'a AtomicUsize);

impl<'a> Wanting<'a> {
    fn new(n: &'a AtomicUsize) -> Wanting<'a> {
        n.fetch_add(1, Ordering::SeqCst);
        Wanting(n)
    }
}

impl Drop for Wanting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The manager owns what it allocated: give every reservation still registered
        // back to the space (heaps have released theirs already).
        let regions = std::mem::take(&mut *self.regions.write());
        for (base, r) in regions {
            if r.inner.lock().alive {
                let _ = self.space.free(base, 0, FreeType::RELEASE);
            }
        }
    }
}

/// Who is acting: a tenant, as its runtime or as one of its heaps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Actor {
    tenant: TenantId,
    owner: Owner,
}

impl Actor {
    fn kind(&self) -> Kind {
        match self.owner {
            Owner::Runtime => Kind::Virtual,
            Owner::Heap => Kind::Heap,
        }
    }
}

/// Configures a [`HostMemoryManager`]. Every setting has a sensible default; only the
/// space and the budget are required.
#[must_use = "a builder does nothing until `build` or `build_started` is called"]
pub struct HostBuilder {
    space: Arc<dyn VirtualSpace>,
    budget: usize,
    soft_reserve: Option<usize>,
    emergency_reserve: Option<usize>,
    process_wait: Duration,
    thresholds: Thresholds,
    callbacks: Vec<NotificationCallback>,
    reclaim: Option<ReclaimHook>,
    disable_on_process_failure: bool,
    name: String,
    tenant_limit: Option<usize>,
}

impl std::fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuilder")
            .field("budget", &self.budget)
            .field("soft_reserve", &self.soft_reserve)
            .field("emergency_reserve", &self.emergency_reserve)
            .field("process_wait", &self.process_wait)
            .field("thresholds", &self.thresholds)
            .field("callbacks", &self.callbacks.len())
            .finish_non_exhaustive()
    }
}

impl HostBuilder {
    /// The soft reserve: how far above the budget domain-critical (and process-critical)
    /// requests may go. Default: 1/16 of the budget.
    pub fn soft_reserve(mut self, bytes: usize) -> Self {
        self.soft_reserve = Some(bytes);
        self
    }

    /// The emergency reserve: how far above budget + soft reserve process-critical
    /// requests may go. Default: 1/16 of the budget.
    pub fn emergency_reserve(mut self, bytes: usize) -> Self {
        self.emergency_reserve = Some(bytes);
        self
    }

    /// How long a process-critical request that does not fit waits for other threads to
    /// free memory before failing with `HOST_E_TIMEOUT`. Zero: it fails at once with
    /// `E_OUTOFMEMORY`, as does a request that no refund could ever admit (larger than the
    /// budget and both reserves together, or than its tenant's sub-budget and both
    /// reserves). A wait too long to express as a deadline (`Duration::MAX`) has
    /// none: the request waits until memory comes back, the wait is cancelled or the
    /// manager shuts down. Default: [`DEFAULT_PROCESS_WAIT`].
    pub fn process_critical_timeout(mut self, wait: Duration) -> Self {
        self.process_wait = wait;
        self
    }

    /// Notification thresholds. Default: [`Thresholds::default`].
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// A callback for the first tenant's memory notifications (more can be registered
    /// later with [`HostMemoryManager::register_memory_notification_callback`]). It is
    /// called from the thread that crossed a threshold (or another host call's thread
    /// that ends at the same moment) and may run concurrently on several threads (see
    /// [`NotificationCallback`]).
    pub fn on_memory_notification(mut self, cb: impl Fn(MemoryAvailable) + Send + Sync + 'static) -> Self {
        self.callbacks.push(Arc::new(cb));
        self
    }

    /// How `NeedsVirtualAddressSpace` frees address space. Without a hook it answers
    /// `E_OUTOFMEMORY`.
    pub fn on_needs_address_space(mut self, hook: impl Fn(usize, usize) -> bool + Send + Sync + 'static) -> Self {
        self.reclaim = Some(Arc::new(hook));
        self
    }

    /// Whether a process-critical request refused for want of memory (by the budget,
    /// over every reserve and after its wait, or by the OS: out of memory, the space's
    /// commit limit) disables the manager, as the runtime disables itself after such a
    /// failure: the request gets its error and every later call
    /// `HOST_E_CLRNOTAVAILABLE`. A request refused for a bad argument or address does
    /// not. Default: no.
    pub fn disable_on_process_critical_failure(mut self, yes: bool) -> Self {
        self.disable_on_process_failure = yes;
        self
    }

    /// The first tenant's name. Default: `"default"`.
    pub fn tenant_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A sub-budget for the first tenant. Default: none (only the global budget).
    pub fn tenant_budget(mut self, bytes: usize) -> Self {
        self.tenant_limit = Some(bytes);
        self
    }

    /// The manager (not started; see [`HostMemoryManager::start`]), as seen by its first
    /// tenant. `E_INVALIDARG` for a zero budget or sub-budget, or thresholds that
    /// [`Thresholds::validate`] rejects (`low_percent > 100`, `high_percent >=
    /// low_percent`, or `high_percent + hysteresis >= low_percent`).
    pub fn build(self) -> HostResult<HostMemoryManager> {
        let th = self.thresholds;
        if self.budget == 0 || self.tenant_limit == Some(0) || th.validate().is_err() {
            return Err(HostError::InvalidArg);
        }
        let policy = Policy {
            budget: self.budget,
            soft_reserve: self.soft_reserve.unwrap_or(self.budget / 16),
            emergency_reserve: self.emergency_reserve.unwrap_or(self.budget / 16),
            process_wait: self.process_wait,
            thresholds: th,
        };
        let info = self.space.system_info();
        let limits = Limits {
            min_address: info.minimum_application_address,
            end_address: info.maximum_application_address.saturating_add(1),
            large_page_size: info.large_page_size,
        };
        let shared = Shared {
            space: self.space,
            limits,
            state: AtomicU8::new(Lifecycle::NotStarted as u8),
            budget: Budget::new(policy, self.name, self.tenant_limit, self.callbacks),
            regions: RwLock::new(BTreeMap::new()),
            views: Mutex::new(BTreeMap::new()),
            shadow: Mirror::new(Shadow::default()),
            reclaim: self.reclaim,
            disable_on_process_failure: self.disable_on_process_failure,
            heaps: Mutex::new(Vec::new()),
            wanted: AtomicUsize::new(0),
        };
        Ok(HostMemoryManager { shared: Arc::new(shared), tenant: 0 })
    }

    /// [`HostBuilder::build`], then [`HostMemoryManager::start`].
    pub fn build_started(self) -> HostResult<HostMemoryManager> {
        let m = self.build()?;
        m.start()?;
        Ok(m)
    }
}

/// A host memory manager, as one tenant (runtime) sees it. Cheap to clone; every clone
/// and every tenant handle share one budget, registry and lifecycle. See the
/// [module docs](crate::host).
///
/// Dropping the last handle (and every heap) releases every reservation still made
/// through the manager.
#[derive(Clone)]
pub struct HostMemoryManager {
    shared: Arc<Shared>,
    tenant: TenantId,
}

impl std::fmt::Debug for HostMemoryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMemoryManager")
            .field("tenant", &self.tenant)
            .field("lifecycle", &self.lifecycle())
            .finish_non_exhaustive()
    }
}

impl HostMemoryManager {
    /// Start configuring a manager over `space` with a budget of `budget` bytes.
    pub fn builder(space: Arc<dyn VirtualSpace>, budget: usize) -> HostBuilder {
        HostBuilder {
            space,
            budget,
            soft_reserve: None,
            emergency_reserve: None,
            process_wait: DEFAULT_PROCESS_WAIT,
            thresholds: Thresholds::default(),
            callbacks: Vec::new(),
            reclaim: None,
            disable_on_process_failure: false,
            name: "default".into(),
            tenant_limit: None,
        }
    }

    // ----- Lifecycle and tenants ------------------------------------------------------

    /// Start serving requests. Starting a running manager does nothing; a manager that
    /// was shut down or disabled cannot start again (`HOST_E_CLRNOTAVAILABLE`).
    pub fn start(&self) -> HostResult<()> {
        match self.shared.state.compare_exchange(
            Lifecycle::NotStarted as u8,
            Lifecycle::Running as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => Ok(()),
            Err(s) if s == Lifecycle::Running as u8 => Ok(()),
            Err(_) => Err(HostError::ClrNotAvailable),
        }
    }

    /// Shut the manager down for every tenant: requests waiting for memory fail with
    /// `HOST_E_ABANDONED`, every later call with `HOST_E_CLRNOTAVAILABLE`. Memory stays
    /// allocated until the manager is dropped.
    pub fn shutdown(&self) {
        let _ = self.shared.state.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
            (s != Lifecycle::Disabled as u8).then_some(Lifecycle::ShutDown as u8)
        });
        self.shared.budget.close();
    }

    /// Disable the manager as an unrecoverable failure does: requests waiting for memory
    /// fail with `HOST_E_ABANDONED`, every later call with `HOST_E_CLRNOTAVAILABLE`.
    /// Whether this call disabled it (false if it was shut down or disabled already).
    /// For a host that met a failure of its own it cannot recover from (the C ABI uses
    /// it when a call panicked, which it reports as `E_FAIL`).
    pub fn disable(&self) -> bool {
        let _g = enter();
        let done = self
            .shared
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                (s == Lifecycle::NotStarted as u8 || s == Lifecycle::Running as u8).then_some(Lifecycle::Disabled as u8)
            })
            .is_ok();
        self.shared.budget.close();
        done
    }

    /// Where the manager is in its life.
    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle::from_u8(self.shared.state.load(Ordering::SeqCst))
    }

    /// Abandon every request of this tenant that is waiting for memory now: each fails
    /// with `HOST_E_ABANDONED`. Later requests are not affected.
    pub fn cancel_waits(&self) {
        self.shared.budget.cancel(self.tenant);
    }

    /// A handle for a new tenant (another runtime) sharing this manager, with its own
    /// sub-budget if `budget` is given. `E_INVALIDARG` for a zero sub-budget,
    /// `HOST_E_CLRNOTAVAILABLE` once shut down or disabled.
    pub fn add_tenant(&self, name: impl Into<String>, budget: Option<usize>) -> HostResult<HostMemoryManager> {
        let _g = enter();
        if matches!(self.lifecycle(), Lifecycle::ShutDown | Lifecycle::Disabled) {
            return Err(HostError::ClrNotAvailable);
        }
        if budget == Some(0) {
            return Err(HostError::InvalidArg);
        }
        let tenant = self.shared.budget.add_tenant(name.into(), budget, Vec::new());
        Ok(HostMemoryManager { shared: self.shared.clone(), tenant })
    }

    /// This handle's tenant index (0 for the tenant the builder made).
    pub fn tenant(&self) -> usize {
        self.tenant
    }

    /// The space the manager allocates from.
    pub fn space(&self) -> &Arc<dyn VirtualSpace> {
        &self.shared.space
    }

    /// Usage, waiters, reservations and views.
    pub fn stats(&self) -> HostStats {
        let _g = enter();
        let (reservations, heap_reservations) = {
            let reg = self.shared.regions.read();
            let heap = reg.values().filter(|r| r.owner == Owner::Heap).count();
            (reg.len() - heap, heap)
        };
        HostStats {
            lifecycle: self.lifecycle(),
            budget: self.shared.budget.stats(),
            reservations,
            heap_reservations,
            views: self.shared.views.lock().len(),
        }
    }

    fn check(&self) -> HostResult<()> {
        if self.shared.state.load(Ordering::Acquire) == Lifecycle::Running as u8 {
            Ok(())
        } else {
            Err(HostError::ClrNotAvailable)
        }
    }

    pub(crate) fn budget_bytes(&self) -> usize {
        self.shared.budget.policy().budget
    }

    pub(crate) fn is_running(&self) -> bool {
        self.check().is_ok()
    }

    /// The space contradicts the registry: disable the manager. The first caller gets
    /// `E_FAIL`, everyone after `HOST_E_CLRNOTAVAILABLE`.
    fn inconsistent(&self) -> HostError {
        let first = self
            .shared
            .state
            .compare_exchange(Lifecycle::Running as u8, Lifecycle::Disabled as u8, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        self.shared.budget.close();
        if first {
            HostError::Fail
        } else {
            HostError::ClrNotAvailable
        }
    }

    fn runtime(&self) -> Actor {
        Actor { tenant: self.tenant, owner: Owner::Runtime }
    }

    pub(crate) fn heap_actor(&self) -> Actor {
        Actor { tenant: self.tenant, owner: Owner::Heap }
    }

    // ----- Admission ------------------------------------------------------------------

    fn may_wait(&self, level: CriticalLevel) -> bool {
        level == CriticalLevel::Process && !self.shared.budget.policy().process_wait.is_zero()
    }

    /// A request of `level` was refused for good: with `disable_on_process_failure`, a
    /// process-critical one refused for want of memory (`E_OUTOFMEMORY`, or
    /// `HOST_E_TIMEOUT` after its wait) disables the manager.
    fn refused(&self, level: CriticalLevel, e: HostError) -> HostError {
        if level == CriticalLevel::Process
            && self.shared.disable_on_process_failure
            && matches!(e, HostError::OutOfMemory | HostError::Timeout)
            && self
                .shared
                .state
                .compare_exchange(
                    Lifecycle::Running as u8,
                    Lifecycle::Disabled as u8,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                )
                .is_ok()
        {
            self.shared.budget.close();
        }
        e
    }

    /// Charge `bytes`, waiting if the level allows it. When they do not fit, every heap
    /// first gives back what it keeps for reuse. The caller holds no lock of the manager
    /// or of a heap (the heaps call back into the manager). `held`: what the caller has
    /// charged for the same request already (see [`Budget::charge`]).
    fn admit(&self, actor: Actor, bytes: usize, level: CriticalLevel, held: usize) -> HostResult<()> {
        let budget = &self.shared.budget;
        match budget.charge(actor.tenant, actor.kind(), bytes, level, false, 0) {
            Err(HostError::OutOfMemory) => {}
            other => return other,
        }
        let wait = self.may_wait(level);
        // From here on no heap keeps freed memory, so a waiter sees every refund.
        let _wanting = wait.then(|| Wanting::new(&self.shared.wanted));
        self.flush_heaps()?;
        budget.charge(actor.tenant, actor.kind(), bytes, level, wait, held).map_err(|e| self.refused(level, e))
    }

    pub(crate) fn register_heap(&self, heap: Weak<Heap>) {
        let mut heaps = self.shared.heaps.lock();
        heaps.retain(|h| h.strong_count() > 0);
        heaps.push(heap);
    }

    /// Whether a request is waiting (or about to wait) for memory: heaps then keep no
    /// freed memory for reuse.
    pub(crate) fn memory_wanted(&self) -> bool {
        self.shared.wanted.load(Ordering::SeqCst) != 0
    }

    /// Ask every heap to give back what it keeps for reuse. No lock is held while a heap
    /// works (it calls back into the manager).
    fn flush_heaps(&self) -> HostResult<()> {
        let heaps: Vec<Arc<Heap>> = self.shared.heaps.lock().iter().filter_map(Weak::upgrade).collect();
        for heap in heaps {
            heap.flush_cache()?;
        }
        Ok(())
    }

    // ----- Registry -------------------------------------------------------------------

    fn lookup(&self, addr: usize) -> Option<Arc<Region>> {
        let reg = self.shared.regions.read();
        reg.range(..=addr).next_back().filter(|(_, r)| addr < r.end).map(|(_, r)| r.clone())
    }

    fn owned(&self, actor: Actor, addr: usize) -> HostResult<Arc<Region>> {
        let r = self.lookup(addr).ok_or(HostError::InvalidOperation)?;
        if r.tenant != actor.tenant {
            return Err(HostError::NotOwner);
        }
        if r.owner != actor.owner {
            return Err(HostError::InvalidOperation);
        }
        Ok(r)
    }

    /// Walk the space's answers for `range` of the reservation at `base` (whose lock the
    /// caller holds, or which is not published yet), run by run, each clipped to `range`;
    /// any answer that contradicts the registry disables the manager.
    fn walk(
        &self,
        base: usize,
        range: Range<usize>,
        mut f: impl FnMut(Range<usize>, &MemoryBasicInformation),
    ) -> HostResult<()> {
        let mut a = range.start;
        while a < range.end {
            let info = match self.shared.space.query(a) {
                Ok(i) if i.allocation_base == base && i.state != MemState::Free && i.region_size > 0 => i,
                _ => return Err(self.inconsistent()),
            };
            let end = (info.base_address + info.region_size).min(range.end);
            f(a..end, &info);
            a = end;
        }
        Ok(())
    }

    /// Bytes of `range` (inside `region`, whose lock the caller holds) in state `want`.
    fn count(&self, region: &Region, range: Range<usize>, want: MemState) -> HostResult<usize> {
        let mut n = 0;
        self.walk(region.base, range, |r, info| {
            if info.state == want {
                n += r.len();
            }
        })?;
        Ok(n)
    }

    // ----- VirtualAlloc ---------------------------------------------------------------

    /// `IHostMemoryManager::VirtualAlloc`: Win32 `VirtualAlloc` through the host. Newly
    /// committed pages are charged and admitted by `level`; a commit into memory the host
    /// did not allocate is `HOST_E_INVALIDOPERATION`, into another tenant's
    /// `HOST_E_NOT_OWNER`. Returns what `VirtualAlloc` returns.
    pub fn virtual_alloc(
        &self,
        address: usize,
        size: usize,
        ty: AllocationType,
        protect: Protection,
        level: CriticalLevel,
    ) -> HostResult<usize> {
        let _g = enter();
        self.check()?;
        self.alloc_as(self.runtime(), address, size, ty, protect, level)
    }

    pub(crate) fn alloc_as(
        &self,
        actor: Actor,
        address: usize,
        size: usize,
        ty: AllocationType,
        protect: Protection,
        level: CriticalLevel,
    ) -> HostResult<usize> {
        match rules::alloc_request(address, size, ty, protect, &self.shared.limits)? {
            AllocRequest::Reserve { size: rsize, commit, .. } => {
                self.reserve_as(actor, (address, size, ty, protect), level, rsize, commit)
            }
            AllocRequest::Commit { range, .. } => self.commit_as(actor, (address, size, ty, protect), level, range),
            AllocRequest::Reset { range } | AllocRequest::ResetUndo { range } => {
                let region = self.owned(actor, range.start)?;
                let g = region.inner.lock();
                if !g.alive {
                    return Err(HostError::InvalidOperation);
                }
                if range.end > region.end {
                    return Err(HostError::Win32(Error::InvalidAddress));
                }
                match self.shared.space.alloc(address, size, ty, protect) {
                    Ok(p) => Ok(p),
                    Err(Error::InvalidAddress) => Err(self.inconsistent()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    fn reserve_as(
        &self,
        actor: Actor,
        (address, size, ty, protect): (usize, usize, AllocationType, Protection),
        level: CriticalLevel,
        rsize: usize,
        commit: bool,
    ) -> HostResult<usize> {
        let charge = if commit { rsize } else { 0 };
        self.admit(actor, charge, level, 0)?;
        let out = match self.shared.space.alloc(address, size, ty, protect) {
            Ok(base) => self.register(actor, base, rsize, charge),
            Err(e) => {
                self.shared.budget.refund(actor.tenant, actor.kind(), charge);
                // Refused by the OS (out of memory, the commit limit): as final as the
                // budget's refusal.
                Err(self.refused(level, e.into()))
            }
        };
        // A reserve that charged nothing made no crossing: it delivers none. (A heap
        // reserves its segments under its pool lock; delivering another thread's crossing
        // there ran a callback that allocates from that heap: a deadlock.)
        if charge > 0 {
            self.shared.budget.notify();
        }
        out
    }

    fn register(&self, actor: Actor, base: usize, size: usize, charge: usize) -> HostResult<usize> {
        let end = base + size;
        let region = Arc::new(Region {
            base,
            end,
            tenant: actor.tenant,
            owner: actor.owner,
            releasing: AtomicBool::new(false),
            inner: Mutex::new(RegionInner { alive: true, committed: charge }),
        });
        // Nobody else knows the reservation yet: read its pages before publishing it.
        let (alloc_protect, runs) = self.observe(base, base..end)?;
        let shade = Shade::new(region.clone(), base, end, actor.tenant, alloc_protect, runs);
        let mut reg = self.shared.regions.write();
        loop {
            let overlap = reg.range(..end).next_back().filter(|(_, r)| r.end > base).map(|(&b, r)| (b, r.clone()));
            match overlap {
                // A release of that range is finishing: the space has already freed it.
                Some((b, r)) if r.releasing.load(Ordering::SeqCst) => {
                    reg.remove(&b);
                    self.shared.shadow.write(|s| s.remove(b, &r));
                }
                Some(_) => {
                    drop(reg);
                    // The space handed out memory the host still owns. The new
                    // reservation's charge stays: the books can no longer be trusted.
                    return Err(self.inconsistent());
                }
                None => break,
            }
        }
        self.shared.shadow.write(|s| s.insert(base, shade.clone()));
        reg.insert(base, region);
        Ok(base)
    }

    /// The pages of `range` in the reservation at `base` as the space reports them now,
    /// with the reservation's protection (see [`HostMemoryManager::walk`]).
    fn observe(&self, base: usize, range: Range<usize>) -> HostResult<(Protection, Vec<Run>)> {
        let mut runs = Vec::new();
        let mut alloc_protect = Protection::empty();
        self.walk(base, range, |r, info| {
            alloc_protect = info.allocation_protect;
            runs.push(Run { start: r.start, state: info.state, protect: info.protect });
        })?;
        Ok((alloc_protect, runs))
    }

    /// Copy what the space now shows of `range` of `region` into the shadow. The caller
    /// holds the region's lock and has just changed `range` through the space.
    fn reflect(&self, region: &Region, range: Range<usize>) -> HostResult<()> {
        let (_, runs) = self.observe(region.base, range.clone())?;
        self.shared.shadow.write(|s| s.set(region.base, range.clone(), &runs));
        Ok(())
    }

    fn commit_as(
        &self,
        actor: Actor,
        (address, size, ty, protect): (usize, usize, AllocationType, Protection),
        level: CriticalLevel,
        range: Range<usize>,
    ) -> HostResult<usize> {
        let region = self.owned(actor, range.start)?;
        if range.end > region.end {
            return Err(HostError::Win32(Error::InvalidAddress));
        }
        let budget = &self.shared.budget;
        let mut prepaid = 0;
        let out = loop {
            let mut g = region.inner.lock();
            if !g.alive {
                break Err(HostError::InvalidOperation);
            }
            let need = match self.count(&region, range.clone(), MemState::Reserve) {
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            if need > prepaid {
                match budget.charge(actor.tenant, actor.kind(), need - prepaid, level, false, 0) {
                    Ok(()) => prepaid = need,
                    Err(HostError::OutOfMemory) => {
                        // Flush the heaps and maybe wait, without the region lock: a
                        // thread freeing pages of this reservation (a heap giving back a
                        // slab of it, too) must be able to get in.
                        drop(g);
                        match self.admit(actor, need - prepaid, level, prepaid) {
                            Ok(()) => {
                                prepaid = need;
                                continue;
                            }
                            Err(e) => break Err(e),
                        }
                    }
                    Err(e) => break Err(self.refused(level, e)),
                }
            }
            match self.shared.space.alloc(address, size, ty, protect) {
                Ok(p) => {
                    g.committed += need;
                    prepaid -= need;
                    break self.reflect(&region, range.clone()).map(|()| p);
                }
                Err(Error::InvalidAddress) => break Err(self.inconsistent()),
                Err(e) => break Err(self.refused(level, e.into())),
            }
        };
        budget.refund(actor.tenant, actor.kind(), prepaid);
        budget.notify();
        out
    }

    // ----- VirtualFree ----------------------------------------------------------------

    /// `IHostMemoryManager::VirtualFree`: Win32 `VirtualFree` through the host; decommit
    /// and release refund the budget. `HOST_E_INVALIDOPERATION` for memory this host did
    /// not allocate (left untouched), `HOST_E_NOT_OWNER` for another tenant's.
    pub fn virtual_free(&self, address: usize, size: usize, ty: FreeType) -> HostResult<()> {
        let _g = enter();
        self.check()?;
        self.free_as(self.runtime(), address, size, ty)
    }

    pub(crate) fn free_as(&self, actor: Actor, address: usize, size: usize, ty: FreeType) -> HostResult<()> {
        let req = rules::free_request(address, size, ty, self.shared.limits.end_address)?;
        let anchor = match &req {
            FreeRequest::Release { base } | FreeRequest::DecommitAll { base } => *base,
            FreeRequest::Decommit { range } => range.start,
        };
        let region = self.owned(actor, anchor)?;
        let mut g = region.inner.lock();
        if !g.alive {
            return Err(HostError::InvalidOperation);
        }
        let budget = &self.shared.budget;
        let range = match req {
            FreeRequest::Release { base } => {
                if base != region.base {
                    return Err(HostError::Win32(Error::InvalidAddress));
                }
                // Never release what may no longer be ours: the space must still show our
                // reservation with exactly the pages we paid for.
                if self.count(&region, region.base..region.end, MemState::Commit)? != g.committed {
                    drop(g);
                    return Err(self.inconsistent());
                }
                region.releasing.store(true, Ordering::SeqCst);
                return match self.shared.space.free(address, size, ty) {
                    Ok(()) => {
                        g.alive = false;
                        let refund = std::mem::take(&mut g.committed);
                        drop(g);
                        {
                            let mut reg = self.shared.regions.write();
                            if reg.get(&region.base).is_some_and(|r| Arc::ptr_eq(r, &region)) {
                                reg.remove(&region.base);
                            }
                            self.shared.shadow.write(|s| s.remove(region.base, &region));
                        }
                        budget.refund(actor.tenant, actor.kind(), refund);
                        budget.notify();
                        Ok(())
                    }
                    Err(e) => {
                        region.releasing.store(false, Ordering::SeqCst);
                        drop(g);
                        Err(if e == Error::InvalidAddress { self.inconsistent() } else { e.into() })
                    }
                };
            }
            FreeRequest::DecommitAll { base } => {
                if base != region.base {
                    return Err(HostError::Win32(Error::InvalidAddress));
                }
                region.base..region.end
            }
            FreeRequest::Decommit { range } => {
                if range.end > region.end {
                    return Err(HostError::InvalidArg);
                }
                range
            }
        };
        let n = self.count(&region, range.clone(), MemState::Commit)?;
        if n > g.committed {
            // The space shows more committed pages than the host paid for: someone
            // committed them behind its back. Refunding them would take more than was
            // charged; touch nothing.
            drop(g);
            return Err(self.inconsistent());
        }
        match self.shared.space.free(address, size, ty) {
            Ok(()) => {
                g.committed -= n;
                let seen = self.reflect(&region, range);
                drop(g);
                budget.refund(actor.tenant, actor.kind(), n);
                budget.notify();
                seen
            }
            Err(Error::InvalidAddress) => {
                drop(g);
                Err(self.inconsistent())
            }
            Err(e) => Err(e.into()),
        }
    }

    // ----- VirtualQuery / VirtualProtect ----------------------------------------------

    /// `IHostMemoryManager::VirtualQuery`: what lives at `address`. Memory this host
    /// allocated is described as Win32 does; free address space answers `MEM_FREE`;
    /// memory someone else owns (another user of the space, a view the runtime mapped) is
    /// `HOST_E_INVALIDOPERATION`; another tenant's is `HOST_E_NOT_OWNER`.
    ///
    /// The runtime may call this while its other threads are suspended, perhaps in the
    /// middle of a call that holds a lock, so it never waits for another thread and
    /// allocates nothing. It finds the reservation in the host's own record (kept in two
    /// copies, read without a lock), then asks the space only if the space's
    /// bookkeeping is free at that instant; if it is held, the answer comes from
    /// the record, which shows every change the host has finished making (a guard page an
    /// access has disarmed since the host last changed it still shows `PAGE_GUARD`
    /// there). For an address outside the host's memory only the space can tell free
    /// from foreign: if its bookkeeping stays held through a short series of attempts,
    /// two milliseconds at most whatever the machine's load (a holder suspended
    /// mid-call), the answer is `HOST_E_TIMEOUT`, a wait for the host's lock that timed
    /// out. On real memory, telling foreign memory from free space uses
    /// the `PROCMAP_QUERY` ioctl (Linux 6.11+); without it, `/proc/self/maps` is read,
    /// which allocates.
    pub fn virtual_query(&self, address: usize) -> HostResult<MemoryBasicInformation> {
        let _g = enter();
        self.check()?;
        /// What the record and the space said.
        enum Seen {
            Answer(HostResult<MemoryBasicInformation>),
            /// The space contradicts the record: the books cannot be trusted.
            Contradiction,
            /// Not the host's memory (nor a view): ask the space.
            Outside,
        }
        let seen = self.shared.shadow.read(|s| {
            if let Some((base, shade)) = s.region_at(address) {
                if shade.tenant != self.tenant {
                    return Seen::Answer(Err(HostError::NotOwner));
                }
                let now = self.shared.space.try_query(address);
                // A release under way (or done): no longer the host's memory, whatever
                // the space says. (The flag is set before the space is asked to release.)
                if shade.region.releasing.load(Ordering::SeqCst) {
                    return Seen::Answer(Err(HostError::InvalidOperation));
                }
                match now {
                    None => Seen::Answer(Ok(shade.describe(base, address))),
                    Some(Ok(i)) if i.allocation_base == base && i.state != MemState::Free => Seen::Answer(Ok(i)),
                    Some(_) => Seen::Contradiction,
                }
            } else if s.in_view(address) {
                Seen::Answer(Err(HostError::InvalidOperation))
            } else {
                Seen::Outside
            }
        });
        match seen {
            Seen::Answer(a) => a,
            Seen::Contradiction => Err(self.inconsistent()),
            Seen::Outside => {
                // (Reading the monotonic clock neither blocks nor allocates: the vDSO.)
                let mut since = None;
                for attempt in 0..QUERY_ATTEMPTS {
                    match self.shared.space.try_query(address) {
                        Some(Ok(info)) if info.state == MemState::Free => return Ok(info),
                        Some(Ok(_)) => return Err(HostError::InvalidOperation),
                        Some(Err(e)) => return Err(e.into()),
                        None if attempt < QUERY_SPINS => std::hint::spin_loop(),
                        None => {
                            let start = *since.get_or_insert_with(std::time::Instant::now);
                            if start.elapsed() >= QUERY_PATIENCE {
                                break;
                            }
                            std::thread::yield_now();
                        }
                    }
                }
                Err(HostError::Timeout)
            }
        }
    }

    /// `IHostMemoryManager::VirtualProtect`: Win32 `VirtualProtect` through the host;
    /// returns the old protection of the first page.
    pub fn virtual_protect(&self, address: usize, size: usize, protect: Protection) -> HostResult<Protection> {
        self.virtual_protect_detailed(address, size, protect).map_err(|(e, _)| e)
    }

    /// [`HostMemoryManager::virtual_protect`], also returning on failure what Windows
    /// stores in `*old_protect`, if anything.
    pub fn virtual_protect_detailed(
        &self,
        address: usize,
        size: usize,
        protect: Protection,
    ) -> Result<Protection, (HostError, Option<Protection>)> {
        let _g = enter();
        self.check().map_err(|e| (e, None))?;
        let (range, _) = rules::protect_request(address, size, protect, self.shared.limits.end_address)
            .map_err(|e| (e.into(), None))?;
        let region = self.owned(self.runtime(), range.start).map_err(|e| (e, None))?;
        let g = region.inner.lock();
        if !g.alive {
            return Err((HostError::InvalidOperation, None));
        }
        if range.end > region.end {
            return Err((HostError::Win32(Error::InvalidAddress), None));
        }
        match self.shared.space.protect_detailed(address, size, protect) {
            Ok(old) => self.reflect(&region, range).map(|()| old).map_err(|e| (e, None)),
            Err((Error::InvalidAddress, None)) => {
                drop(g);
                Err((self.inconsistent(), None))
            }
            Err((e, old)) => Err((e.into(), old)),
        }
    }

    // ----- Load and notifications -----------------------------------------------------

    /// `IHostMemoryManager::GetMemoryLoad`.
    pub fn memory_load(&self) -> HostResult<MemoryLoad> {
        let _g = enter();
        self.check()?;
        let (percent, available) = self.shared.budget.load(self.tenant);
        Ok(MemoryLoad { percent, available })
    }

    /// `IHostMemoryManager::RegisterMemoryNotificationCallback`: `cb` is called with the
    /// new level each time this tenant's load crosses a threshold, synchronously on the
    /// thread whose call crossed it (or on another host call's thread that ends at the
    /// same moment and delivers it first), with no lock of the manager held. Two threads crossing
    /// at once each call it, so it may run concurrently on several threads, and
    /// overlapping deliveries may reach it in either order; a crossing already overtaken
    /// by a newer one when its delivery would begin is skipped (see the
    /// [module docs](crate::host) for the details).
    pub fn register_memory_notification_callback(&self, cb: NotificationCallback) -> HostResult<()> {
        let _g = enter();
        self.check()?;
        self.shared.budget.register(self.tenant, cb);
        Ok(())
    }

    // ----- Views ----------------------------------------------------------------------

    /// `IHostMemoryManager::NeedsVirtualAddressSpace`: the runtime failed to map `size`
    /// bytes at `address`. `S_OK` (retry) if the host's reclaim hook freed address space,
    /// `E_OUTOFMEMORY` otherwise; `E_INVALIDARG` for a zero size or a wrapping range.
    pub fn needs_virtual_address_space(&self, address: usize, size: usize) -> HostResult<()> {
        let _g = enter();
        self.check()?;
        if size == 0 || address.checked_add(size).is_none() {
            return Err(HostError::InvalidArg);
        }
        match &self.shared.reclaim {
            Some(hook) if hook(address, size) => Ok(()),
            _ => Err(HostError::OutOfMemory),
        }
    }

    /// `IHostMemoryManager::AcquiredVirtualAddressSpace`: the runtime mapped a view of
    /// `size` bytes at `address` outside `VirtualAlloc`. Its pages count against the
    /// budget from now on (the view exists already, so it is charged even over the
    /// budget; later requests feel it). `E_INVALIDARG` for a NULL address, a zero size, a
    /// wrapping range, a range whose end passes the top of the space's user addresses
    /// (`maximum_application_address + 1`) or a page shared with a view already announced
    /// (views are mapped and charged by the page).
    pub fn acquired_virtual_address_space(&self, address: usize, size: usize) -> HostResult<()> {
        let _g = enter();
        self.check()?;
        if address == 0 || size == 0 {
            return Err(HostError::InvalidArg);
        }
        let span = rules::page_span(address, size)?;
        // A view lies in user space: a range past its top is as invalid as it is for
        // `VirtualAlloc` (and would let the charged total wrap).
        if span.end > self.shared.limits.end_address {
            return Err(HostError::InvalidArg);
        }
        {
            let mut views = self.shared.views.lock();
            // Views are charged (and mapped) by the page: the last view starting before
            // our last page's end overlaps us iff its last page ends after our first
            // page's start. (Two views sharing a page would be charged twice for it.)
            let page_end = |end: usize| rules::round_up(end, rules::PAGE).unwrap_or(usize::MAX);
            if views.range(..span.end).next_back().is_some_and(|(_, v)| page_end(v.end) > span.start) {
                return Err(HostError::InvalidArg);
            }
            views.insert(address, View { end: address + size, tenant: self.tenant });
            self.shared.shadow.write(|s| s.insert_view(address, address + size));
        }
        self.shared.budget.force(self.tenant, Kind::View, span.len());
        self.shared.budget.notify();
        Ok(())
    }

    /// `IHostMemoryManager::ReleasedVirtualAddressSpace`: the view at `address` is gone;
    /// its charge is refunded. `HOST_E_INVALIDOPERATION` for an address no view was
    /// announced at, `HOST_E_NOT_OWNER` for another tenant's view.
    pub fn released_virtual_address_space(&self, address: usize) -> HostResult<()> {
        let _g = enter();
        self.check()?;
        let bytes = {
            let mut views = self.shared.views.lock();
            let v = views.get(&address).ok_or(HostError::InvalidOperation)?;
            if v.tenant != self.tenant {
                return Err(HostError::NotOwner);
            }
            let v = views.remove(&address).expect("view");
            self.shared.shadow.write(|s| s.remove_view(address));
            rules::page_span(address, v.end - address).map(|r| r.len()).unwrap_or(0)
        };
        self.shared.budget.refund(self.tenant, Kind::View, bytes);
        self.shared.budget.notify();
        Ok(())
    }

    // ----- Heaps ----------------------------------------------------------------------

    /// `IHostMemoryManager::CreateMalloc`: a heap of this tenant drawing on the budget.
    /// `E_INVALIDARG` for unknown `MALLOC_TYPE` bits.
    pub fn create_malloc(&self, ty: MallocType) -> HostResult<HostMalloc> {
        let _g = enter();
        self.check()?;
        if ty.bits() & !MallocType::all().bits() != 0 {
            return Err(HostError::InvalidArg);
        }
        Ok(HostMalloc::new(self.clone(), ty))
    }
}
