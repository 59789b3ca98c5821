//! # virtmem
//!
//! The Win32 virtual-memory model — `VirtualAlloc`, `VirtualFree`, `VirtualQuery`,
//! `VirtualProtect`, `MEM_RESET`/`MEM_RESET_UNDO`, `MEM_TOP_DOWN`, `MEM_LARGE_PAGES`,
//! `PAGE_GUARD` and write watch — with Windows' exact rules and error codes, over two
//! backends that share one rule engine:
//!
//! - a **simulated** address space that exists only as data (deterministic, sparse page
//!   contents, every access checked), for emulators and sandboxes;
//! - the **Linux** process's real memory (reserve = `mmap(PROT_NONE)`, commit =
//!   `mprotect`, decommit really drops pages), for runtimes and ported Windows code.
//!
//! Data flows one way: the API ([`AddressSpace`]) → the [`rules`] (validation, rounding,
//! errors) → the page-run bookkeeping → the [`backend`]. Bookkeeping is an ordered
//! interval map of page runs, so every call costs `O(log n + runs touched)` whatever the
//! size of the reservations.
//!
//! ```
//! use virtmem::{AllocationType, FreeType, MemState, Protection, SimSpace};
//!
//! let space = SimSpace::simulated();
//! let base = space.alloc(0, 1 << 40, AllocationType::RESERVE, Protection::NOACCESS)?; // 1 TiB
//! space.alloc(base, 0x2000, AllocationType::COMMIT, Protection::READWRITE)?;
//! space.write(base + 10, b"hello")?;
//! let info = space.query(base)?;
//! assert_eq!((info.state, info.region_size), (MemState::Commit, 0x2000));
//! assert!(space.read(base + 0x2000, &mut [0u8; 1]).is_err()); // reserved: access violation
//! space.free(base, 0, FreeType::RELEASE)?;
//! # Ok::<(), virtmem::Error>(())
//! ```
//!
//! # Real memory (Linux)
//!
//! [`current_process`] (what `GetCurrentProcess()` names) and [`LinuxSpace::linux`] manage
//! this process's own memory, with the same calls and rules as above:
//!
//! - **Addresses are ordinary pointers.** What [`AddressSpace::alloc`] returns is the
//!   address of real memory: once committed, the program reads, writes and runs code
//!   through it directly, and the CPU enforces the protection (a touch of a reserved,
//!   decommitted or no-access page, or a store into read-only or code pages, is a
//!   `SIGSEGV`). [`AddressSpace::read`], [`write`](AddressSpace::write) and
//!   [`execute`](AddressSpace::execute) are *checked* copies (where a Windows program
//!   would rely on SEH): the whole range is checked by the rules first (an
//!   [`Error::AccessViolation`] or [`Error::GuardPage`], nothing copied), then copied with
//!   `process_vm_readv` / `process_vm_writev` on this process, so a copy never crashes.
//! - **Write watch** (`AllocationType::WRITE_WATCH`) needs userfaultfd asynchronous write
//!   protection (`UFFD_FEATURE_WP_ASYNC`) and `PAGEMAP_SCAN`, Linux 6.7 or later;
//!   [`LinuxBackend::write_watch_supported`] tells (`space.backend().write_watch_supported()`).
//!   Without them a write-watched reserve fails with `ERROR_NOT_SUPPORTED`
//!   ([`Error::NotSupported`]), as one with `MEM_LARGE_PAGES` always does (the kernel
//!   tracks a huge page's writes as a whole). The kernel records writes in the page tables:
//!   stores through pointers count, no signal handler is installed. A GC scanning its
//!   cards every collection can pass its own buffer
//!   ([`AddressSpace::get_write_watch_into`]: no allocation after the first scan).
//! - **`PAGE_GUARD`** pages are kept inaccessible and reported as on Windows, but a CPU
//!   touch of an armed guard page is a `SIGSEGV`, not a one-shot
//!   `STATUS_GUARD_PAGE_VIOLATION` (catching that fault is not done yet). Checked accesses
//!   behave as on Windows: the first that meets the page fails with [`Error::GuardPage`]
//!   and disarms it, so a retry goes on.
//! - **`MEM_RESET` / `MEM_RESET_UNDO`** are `madvise(MADV_FREE)` plus a record that makes
//!   the undo's answer truthful ([`AddressSpace::reset`], [`AddressSpace::reset_undo`]);
//!   that record costs time and heap, and a reset of a write-watched reservation gives
//!   no memory back: see [`AllocationType::RESET`] and [`AllocationType::RESET_UNDO`].
//! - **JIT code**: after writing code and before running it, call
//!   [`AddressSpace::flush_instruction_cache`] (`FlushInstructionCache`), which AArch64
//!   needs (nothing to do on x86-64, where it returns at once).
//! - **GC thread suspension**: [`flush_process_write_buffers`] is
//!   `FlushProcessWriteBuffers`, the heavy side of an asymmetric barrier (membarrier where
//!   the kernel has it; [`flush_mechanism`] says which way).
//! - Dropping a [`LinuxSpace`] leaves its reservations mapped; release them first, or
//!   hold them in a [`Reservation`] (`space.reservation(size, protection)`), which
//!   releases its reservation when dropped.
//!   Memory the space did not allocate (the program's image, `malloc`'d blocks, stacks)
//!   is described by [`AddressSpace::query`], and refused by `alloc`, `free`, `protect`
//!   and `lock` ([`Error::InvalidAddress`]).
#![warn(missing_docs)]
#![warn(missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod backend;
pub mod error;
pub mod flags;
pub mod host;
mod reservation;
pub mod rules;
mod runs;
mod space;
pub mod trace;
pub mod win32;

pub use backend::sim::{ResetPolicy, SimBackend, SimConfig};
pub use error::{Error, Result};
pub use flags::{
    AccessKind, AddressRequirements, AllocationType, FreeType, MemState, MemType, MemoryBasicInformation, Protection,
    SystemInfo, WriteWatchFlags,
};
pub use reservation::Reservation;
pub use space::{AddressSpace, ResetUndo, SpaceStats, VirtualSpace};

#[cfg(all(target_os = "linux", not(miri)))]
pub use backend::linux::{
    checked_copy, flush_mechanism, flush_process_write_buffers, FlushMechanism, LinuxBackend, LinuxOptions,
};

/// The crate's README.md (what crates.io shows), run as a doctest (`cargo test --doc`) so
/// that its examples stay true. (It is inside the package, so the doctest builds from
/// crates.io too; `scripts/test-docs.sh` checks that the workspace README's Rust examples
/// are these.)
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// What a dependent crate can and cannot do with the types that will grow, checked as
/// doctests (each `compile_fail` one compiles if the attribute it checks is removed).
///
/// An exhaustive `match` on [`Error`] without a wildcard arm does not compile: a new
/// Win32 error the engine learns to report is not a breaking change.
///
/// ```compile_fail,E0004
/// fn code(e: virtmem::Error) -> u32 {
///     use virtmem::Error::*;
///     match e {
///         AccessDenied | InvalidHandle | NotEnoughMemory | BadLength | NotSupported
///         | InvalidParameter | NotLocked | DataDiscarded | PartialCopy | InvalidAddress
///         | NoAccess | NoSystemResources | WorkingSetQuota | CommitmentLimit => 1,
///         AccessViolation { .. } | GuardPage { .. } => 2,
///     }
/// }
/// ```
///
/// Nor on [`backend::BackendError`] or [`host::HostError`]:
///
/// ```compile_fail,E0004
/// fn kind(e: virtmem::backend::BackendError) -> u32 {
///     use virtmem::backend::BackendError::*;
///     match e {
///         Occupied { .. } | OutOfMemory | LargePagesUnavailable | Unsupported(_) | LockRefused
///         | Fault(_) | Injected | Os(_) => 1,
///     }
/// }
/// ```
///
/// ```compile_fail,E0004
/// fn kind(e: virtmem::host::HostError) -> u32 {
///     use virtmem::host::HostError::*;
///     match e {
///         OutOfMemory | InvalidArg | Pointer | Fail | InvalidOperation | ClrNotAvailable
///         | Timeout | NotOwner | Abandoned | Win32(_) => 1,
///     }
/// }
/// ```
///
/// The statistics structures are read, not built: their fields are public, but a struct
/// literal does not compile, so a new figure is not a breaking change.
///
/// ```compile_fail,E0639
/// let _ = virtmem::SpaceStats {
///     reserved: 0, committed: 0, reservations: 0, runs: 0, largest_free: 0, free_gaps: 0, refused_undos: 0,
///     waiting_calls: 0,
/// };
/// ```
///
/// What they are for still works: matching with a wildcard, reading fields.
///
/// ```
/// let space = virtmem::SimSpace::simulated();
/// let err = space.query(usize::MAX).unwrap_err();
/// let kind = match err {
///     virtmem::Error::InvalidParameter => "87",
///     _ => "other",
/// };
/// assert_eq!(kind, "87");
/// let virtmem::SpaceStats { reserved, committed, .. } = space.stats();
/// assert_eq!((reserved, committed), (0, 0));
/// ```
#[cfg(doctest)]
pub struct SemverDoctests;

/// The results that must not be dropped unused, checked as doctests: each
/// `compile_fail` one drops such a result under `#![deny(unused_must_use)]` and compiles
/// if the `#[must_use]` it checks is removed; the last one keeps them all and compiles.
///
/// A [`Reservation`] dropped at once is released at once:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let space = virtmem::SimSpace::simulated();
/// space.reservation(1 << 20, virtmem::Protection::NOACCESS).unwrap();
/// ```
///
/// [`Reservation::into_raw`]'s answer is the only record left of the reservation:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let space = virtmem::SimSpace::simulated();
/// let heap = space.reservation(1 << 20, virtmem::Protection::NOACCESS).unwrap();
/// heap.into_raw();
/// ```
///
/// A snapshot ([`AddressSpace::snapshot`]) dropped at once was a copy for nothing:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let space = virtmem::SimSpace::simulated();
/// space.snapshot();
/// ```
///
/// [`ResetUndo`] says whether the data survived:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// # fn f() -> virtmem::Result<()> {
/// let space = virtmem::SimSpace::simulated();
/// let heap = space.reservation(1 << 20, virtmem::Protection::NOACCESS)?;
/// heap.reset_undo(heap.base(), 4096)?;
/// # Ok(()) }
/// ```
///
/// A [`host::HostBuilder`] whose setting is dropped builds nothing:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let space: std::sync::Arc<dyn virtmem::VirtualSpace> = std::sync::Arc::new(virtmem::SimSpace::simulated());
/// virtmem::host::HostMemoryManager::builder(space, 1 << 20);
/// ```
///
/// Used, they compile under the same lint:
///
/// ```
/// #![deny(unused_must_use)]
/// # fn f() -> virtmem::Result<()> {
/// let space = virtmem::SimSpace::simulated();
/// let heap = space.reservation(1 << 20, virtmem::Protection::NOACCESS)?;
/// let _undo = heap.reset_undo(heap.base(), 4096);
/// let (base, _len) = heap.into_raw();
/// let saved = space.snapshot();
/// assert_eq!(saved.query(base)?.allocation_base, base);
/// let shared: std::sync::Arc<dyn virtmem::VirtualSpace> = std::sync::Arc::new(saved);
/// let _builder = virtmem::host::HostMemoryManager::builder(shared, 1 << 20);
/// # Ok(()) }
/// # f().unwrap();
/// ```
#[cfg(doctest)]
pub struct MustUseDoctests;

/// An address space over the simulated backend.
pub type SimSpace = AddressSpace<SimBackend>;

impl AddressSpace<SimBackend> {
    /// A simulated Windows x64 address space (0x10000 to 0x7FFF_FFFE_FFFF).
    pub fn simulated() -> Self {
        AddressSpace::with_backend(SimBackend::default())
    }

    /// A simulated address space with the given configuration.
    pub fn simulated_with(config: SimConfig) -> Self {
        AddressSpace::with_backend(SimBackend::new(config))
    }

    /// A simulated address space with exactly the given configuration, or
    /// [`Error::InvalidParameter`] if a field is one [`SimConfig::validate`] refuses
    /// (where [`simulated_with`](Self::simulated_with) would round it).
    ///
    /// ```
    /// use virtmem::{ResetPolicy, SimConfig, SimSpace};
    ///
    /// // A 32-bit guest: 0x10000 to 0x7FFEFFFF, no large pages.
    /// let guest = SimConfig { min_address: 0x1_0000, end_address: 0x7FFF_0000, large_page_size: 0, reset_policy: ResetPolicy::Keep };
    /// let space = SimSpace::try_simulated_with(guest)?;
    /// assert_eq!(space.system_info().maximum_application_address, 0x7FFE_FFFF);
    /// assert!(SimSpace::try_simulated_with(SimConfig { end_address: 0x7FFF_1000, ..guest }).is_err());
    /// # Ok::<(), virtmem::Error>(())
    /// ```
    pub fn try_simulated_with(config: SimConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::simulated_with(config))
    }
}

/// An address space over this process's real memory.
///
/// Dropping it does not release its reservations: they stay mapped, committed pages
/// keep their memory and contents (the program may still hold pointers into them), and
/// only the released ranges it kept for reuse are unmapped. Release what is no longer
/// needed first (`free(base, 0, FreeType::RELEASE)`).
#[cfg(all(target_os = "linux", not(miri)))]
pub type LinuxSpace = AddressSpace<LinuxBackend>;

#[cfg(all(target_os = "linux", not(miri)))]
impl AddressSpace<LinuxBackend> {
    /// A new address space over this process's real memory. Several may exist at
    /// once: each sees the others' reservations as foreign memory. Fails with
    /// `ERROR_NOT_SUPPORTED` if `/proc` is not mounted, and with
    /// `ERROR_INVALID_PARAMETER` if `VIRTMEM_LINUX_WITHOUT` names something that is not
    /// a kernel feature (see [`backend::linux::WITHOUT_ENV`]; the message naming it goes
    /// to stderr). Dropping the space leaves its reservations mapped (see
    /// [`LinuxSpace`]).
    pub fn linux() -> Result<Self> {
        LinuxBackend::new().map(AddressSpace::with_backend).map_err(linux_space_error)
    }

    /// A new address space over this process's real memory with the given backend
    /// tuning (see [`LinuxOptions`]); fails as [`AddressSpace::linux`] does.
    pub fn linux_with(options: LinuxOptions) -> Result<Self> {
        LinuxBackend::with_options(options).map(AddressSpace::with_backend).map_err(linux_space_error)
    }
}

/// The Win32 error for a Linux backend that could not be made: the environment's
/// misconfiguration is the caller's (`ERROR_INVALID_PARAMETER`), anything else means
/// this system cannot be managed (`ERROR_NOT_SUPPORTED`).
#[cfg(all(target_os = "linux", not(miri)))]
fn linux_space_error(e: std::io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<backend::linux::WithoutEnvError>()) {
        Error::InvalidParameter
    } else {
        Error::NotSupported
    }
}

/// The process-wide address space over this process's real memory, what
/// `GetCurrentProcess()` names; created on first use.
///
/// # Panics
/// If `/proc` is not mounted, or `VIRTMEM_LINUX_WITHOUT` names something that is not a
/// kernel feature (see [`try_current_process`]).
#[cfg(all(target_os = "linux", not(miri)))]
pub fn current_process() -> &'static LinuxSpace {
    try_current_process().unwrap_or_else(|e| match e {
        Error::InvalidParameter => panic!(
            "virtmem cannot manage this process's memory: {} names something that is not a kernel feature (see stderr)",
            backend::linux::WITHOUT_ENV
        ),
        _ => panic!("virtmem needs /proc/self/maps to manage this process's memory"),
    })
}

/// The process-wide address space (see [`current_process`]), or the error
/// [`AddressSpace::linux`] gives if it cannot be created: `ERROR_NOT_SUPPORTED` if
/// `/proc` is not mounted, `ERROR_INVALID_PARAMETER` if `VIRTMEM_LINUX_WITHOUT` names
/// something that is not a kernel feature.
#[cfg(all(target_os = "linux", not(miri)))]
pub fn try_current_process() -> Result<&'static LinuxSpace> {
    static SPACE: std::sync::OnceLock<Result<LinuxSpace>> = std::sync::OnceLock::new();
    SPACE.get_or_init(LinuxSpace::linux).as_ref().map_err(|&e| e)
}
