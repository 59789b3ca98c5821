//! The host memory manager: the host side of `IHostMemoryManager` / `IHostMalloc`
//! (see `shared/spec/host-memory-manager.md`), over any [`VirtualSpace`](crate::VirtualSpace) — a simulated
//! space or the current process's real memory.
//!
//! A host builds one [`HostMemoryManager`] with a [`HostBuilder`], gives a handle to each
//! runtime it embeds ([`HostMemoryManager::add_tenant`]), and the runtimes ask it, never
//! the OS, for memory:
//!
//! - **Budget.** Committed bytes are charged (reserving address space is free);
//!   decommit and release refund. Heaps ([`HostMalloc`]) commit their pages through the
//!   manager, and views announced with `AcquiredVirtualAddressSpace` count too.
//! - **Critical levels.** A task-critical request fails with `E_OUTOFMEMORY` at the
//!   budget; a domain-critical one may also use the soft reserve; a process-critical one
//!   may also use the emergency reserve and then waits, up to a timeout, for other threads
//!   to free memory (`HOST_E_TIMEOUT`, or `HOST_E_ABANDONED` on shutdown/cancellation);
//!   one larger than all of that together, which no refund could ever admit, fails at
//!   once with `E_OUTOFMEMORY`.
//! - **Tenants.** Each tenant may have a sub-budget; the reserves apply on top of it too.
//!   A tenant acting on another tenant's memory gets `HOST_E_NOT_OWNER`.
//! - **Ownership.** Only memory allocated through this manager may be freed, queried,
//!   protected or committed through it; anything else is `HOST_E_INVALIDOPERATION` and
//!   is left untouched. A query of *free* address space answers `MEM_FREE` (Win32
//!   semantics; nothing is there to protect), a query of memory someone else owns is
//!   `HOST_E_INVALIDOPERATION`. Pages a heap committed belong to the heap: the runtime's
//!   `VirtualFree`/`VirtualProtect` of them is `HOST_E_INVALIDOPERATION` too.
//! - **Lifecycle.** Every call before [`HostMemoryManager::start`] or after
//!   [`HostMemoryManager::shutdown`] is `HOST_E_CLRNOTAVAILABLE`.
//! - **Inconsistent state.** The manager keeps its own registry of the reservations it
//!   made. When the space contradicts it — it answers `ERROR_INVALID_ADDRESS` ("no such
//!   reservation") for a range inside a live registered reservation, a query of such a
//!   range reports free memory or another allocation base, a decommit or release finds
//!   committed pages the host never charged, or a new reservation is handed out over one
//!   still registered — the bookkeeping can no longer be trusted (someone
//!   freed the host's memory behind its back, or the backend is broken). That call returns
//!   `E_FAIL` once, waiters are abandoned, and every later call is
//!   `HOST_E_CLRNOTAVAILABLE`. Ordinary failures of the space (out of memory, injected
//!   faults, invalid arguments) are reported as their HRESULT and refunded.
//! - **Notifications.** Each tenant's load (the higher of the global and its own
//!   sub-budget percentage) is classified Low / Neutral / High with hysteresis
//!   ([`Thresholds`]); only a crossing notifies, and each crossing is delivered once,
//!   synchronously, by the first caller to reach a notification point after the charge
//!   or refund that caused it — usually that call's own thread, but a call of another
//!   thread that ends at the same moment may deliver it first — after every lock of the
//!   manager has been dropped, without waiting for any other thread. A crossing that a
//!   newer crossing of the same tenant overtook before its delivery began is skipped (the
//!   newer one, delivered by its own thread, carries the current level), and so is a
//!   crossing back to the level last announced when the one in between was skipped.
//!   **Callbacks of one tenant may run concurrently on different threads**, and when two
//!   deliveries overlap a callback may receive their levels in either order. A delivery
//!   stops calling callbacks once a crossing to another level has begun delivery, so a
//!   late older level is rare; with no overlap, levels arrive in the order of the
//!   crossings.
//!
//! ```
//! use std::sync::Arc;
//! use virtmem::host::{CriticalLevel, HostError, HostMemoryManager};
//! use virtmem::{AllocationType, FreeType, Protection, SimSpace};
//!
//! let space = Arc::new(SimSpace::simulated());
//! let host = HostMemoryManager::builder(space, 1 << 20).soft_reserve(0).emergency_reserve(0).build()?;
//! host.start()?;
//! let rw = Protection::READWRITE;
//! let p = host.virtual_alloc(0, 1 << 20, AllocationType::COMMIT, rw, CriticalLevel::Task)?;
//! assert_eq!(host.memory_load()?.percent, 100);
//! let more = host.virtual_alloc(0, 4096, AllocationType::COMMIT, rw, CriticalLevel::Task);
//! assert_eq!(more, Err(HostError::OutOfMemory));
//! host.virtual_free(p, 0, FreeType::RELEASE)?;
//! assert_eq!(host.memory_load()?.available, 1 << 20);
//! # Ok::<(), HostError>(())
//! ```

mod budget;
pub mod error;
mod global;
mod heap;
mod manager;
mod mirror;
mod shadow;

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

pub use budget::{BudgetStats, TenantStats};
pub use error::{hresult, HostError, HostResult, HRESULT};
pub use global::HostGlobalAlloc;
pub use heap::{HeapStats, HostMalloc, LeakRecord, MAX_SMALL, SIZE_CLASSES, SLAB_SIZE};
pub use manager::{HostBuilder, HostMemoryManager, HostStats, Lifecycle, MemoryLoad};

/// `EMemoryCriticalLevel`: how bad a failure of the request would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum CriticalLevel {
    /// `eTaskCritical` (0): a failure aborts only the requesting task. Fails at the budget.
    Task = 0,
    /// `eAppDomainCritical` (1): a failure may unload an isolation domain. May use the
    /// soft reserve.
    AppDomain = 1,
    /// `eProcessCritical` (2): a failure disables the runtime. May use the emergency
    /// reserve, then waits for memory up to the configured timeout.
    Process = 2,
}

impl CriticalLevel {
    /// The level for a raw `EMemoryCriticalLevel` value; `E_INVALIDARG` for any other.
    pub fn from_raw(v: u32) -> HostResult<CriticalLevel> {
        match v {
            0 => Ok(CriticalLevel::Task),
            1 => Ok(CriticalLevel::AppDomain),
            2 => Ok(CriticalLevel::Process),
            _ => Err(HostError::InvalidArg),
        }
    }
}

/// `EMemoryAvailable`: what a memory notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MemoryAvailable {
    /// `eMemoryAvailableLow` (1): the load reached the low-memory threshold.
    Low = 1,
    /// `eMemoryAvailableNeutral` (2): between the thresholds.
    Neutral = 2,
    /// `eMemoryAvailableHigh` (3): the load fell to the high-availability threshold.
    High = 3,
}

bitflags::bitflags! {
    /// `MALLOC_TYPE`: what kind of heap `CreateMalloc` makes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MallocType: u32 {
        /// `MALLOC_THREADSAFE`: callers may use the heap from many threads at once; the
        /// heap then spreads its size classes over several independently locked shards.
        const THREADSAFE = 0x1;
        /// `MALLOC_EXECUTABLE`: blocks are executable (pages committed
        /// `PAGE_EXECUTE_READWRITE`).
        const EXECUTABLE = 0x2;
    }
}

/// Memory-notification thresholds, in percent of the budget in use.
///
/// The level becomes `Low` when the load reaches `low_percent` and leaves it when the
/// load falls below `low_percent - hysteresis`; it becomes `High` when the load falls to
/// `high_percent` and leaves it when the load rises above `high_percent + hysteresis`;
/// `Neutral` in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thresholds {
    /// Load (percent) at which memory is Low. At most 100.
    pub low_percent: u32,
    /// Load (percent) at or below which memory is High. Less than `low_percent`.
    pub high_percent: u32,
    /// How far the load must move back past a threshold to leave its level.
    pub hysteresis: u32,
}

impl Thresholds {
    /// Why these thresholds are unusable, if they are: every level must be reachable
    /// and every level must be left again. That needs `low_percent <= 100`,
    /// `high_percent < low_percent` and `high_percent + hysteresis < low_percent` (with a
    /// wider hysteresis, High would hold at loads at or past `low_percent` and Low at
    /// loads at or under `high_percent`: 60/50/20 would report 65 % as High).
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.low_percent > 100 {
            return Err("low_percent is over 100");
        }
        if self.high_percent >= self.low_percent {
            return Err("high_percent is not below low_percent");
        }
        if !self.high_percent.checked_add(self.hysteresis).is_some_and(|h| h < self.low_percent) {
            return Err("high_percent + hysteresis reaches low_percent: a level would be unreachable");
        }
        Ok(())
    }
}

impl Default for Thresholds {
    /// Low at 90 %, High at 50 %, 5 points of hysteresis.
    fn default() -> Self {
        Thresholds { low_percent: 90, high_percent: 50, hysteresis: 5 }
    }
}

/// A memory-notification callback (`ICLRMemoryNotificationCallback::OnMemoryNotification`).
/// It is called from a caller's thread (usually the one that crossed a threshold; see the
/// module docs), with no lock of the manager held
/// (it may call the manager, e.g. [`HostMemoryManager::memory_load`]), and must not block.
/// It may be called concurrently from several threads, one per crossing being delivered;
/// see the module docs for the order.
pub type NotificationCallback = Arc<dyn Fn(MemoryAvailable) + Send + Sync>;

/// The host's answer to `NeedsVirtualAddressSpace(address, size)`: try to give address
/// space back and return `true` if the runtime should retry.
pub type ReclaimHook = Arc<dyn Fn(usize, usize) -> bool + Send + Sync>;

/// The default time a process-critical request waits for memory.
pub const DEFAULT_PROCESS_WAIT: Duration = Duration::from_secs(5);

thread_local! {
    /// Whether this thread is inside the manager (see [`HostGlobalAlloc`]).
    static IN_HOST: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as inside the manager until dropped, so that a global
/// allocator built on the manager sends this thread's nested allocations elsewhere.
pub(crate) struct Entered(bool);

pub(crate) fn enter() -> Entered {
    Entered(IN_HOST.with(|c| c.replace(true)))
}

impl Drop for Entered {
    fn drop(&mut self) {
        IN_HOST.with(|c| c.set(self.0));
    }
}

/// Whether the calling thread is inside the manager.
pub(crate) fn inside() -> bool {
    IN_HOST.with(|c| c.get())
}
