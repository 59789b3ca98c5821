//! Typed flags and enumerations carrying the exact Win32 values.
//!
//! Every flag type keeps unknown bits when built with `from_bits_retain`, so a value
//! coming from C can be validated (and rejected with `ERROR_INVALID_PARAMETER`) by the
//! rules rather than silently truncated.

use bitflags::bitflags;

bitflags! {
    /// The `flAllocationType` argument of `VirtualAlloc` (`MEM_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct AllocationType: u32 {
        /// `MEM_COMMIT`: back pages with (zero-filled) memory.
        const COMMIT = 0x1000;
        /// `MEM_RESERVE`: reserve a range of address space.
        const RESERVE = 0x2000;
        /// `MEM_RESET`: the contents of the range are no longer of interest. Its committed
        /// pages stay committed (and charged); until written again each holds its old
        /// contents or zeros. Combines with no other type; the protection must be valid
        /// but is otherwise ignored.
        ///
        /// On real memory (the Linux backend) the read-write pages of the range that hold
        /// data are offered to the kernel with `madvise(MADV_FREE)`: it reclaims them lazily,
        /// when it needs memory, and a write to a page before then keeps it. Pages with
        /// other protections keep their contents. So that [`RESET_UNDO`](Self::RESET_UNDO)
        /// can tell whether data survived, the reset first reads every such page and keeps
        /// a record of a few of its non-zero words on the heap (a page of zeros needs
        /// none) until an undo, decommit or release of the page. That costs time and
        /// memory: measured on one machine (`linux_profile reset`, BENCHMARKS.md), a reset
        /// of 1 GiB of data took 270–300 ms of CPU time and kept 27 MiB of heap, where a
        /// bare `MADV_FREE` took 52–78 ms. A runtime that will not
        /// undo and wants the memory back at once can decommit instead (the pages are
        /// dropped at once and read zero when committed again).
        ///
        /// In a write-watched reservation ([`WRITE_WATCH`](Self::WRITE_WATCH)) a reset on
        /// real memory does nothing: the contents stay and no memory is given back, since
        /// a page the kernel reclaimed would lose the record that it was written, which
        /// `GetWriteWatch` must go on reporting.
        const RESET = 0x8_0000;
        /// `MEM_TOP_DOWN`: place the reservation at the highest possible address.
        const TOP_DOWN = 0x10_0000;
        /// `MEM_WRITE_WATCH`: track writes for `GetWriteWatch` (with `MEM_RESERVE`).
        ///
        /// On real memory (the Linux backend) the kernel tracks writes, stores through
        /// pointers included, with userfaultfd asynchronous write protection
        /// (`UFFD_FEATURE_WP_ASYNC`) and `PAGEMAP_SCAN`, Linux 6.7 or later
        /// (`LinuxBackend::write_watch_supported` tells); without them, and always with
        /// [`LARGE_PAGES`](Self::LARGE_PAGES), the reserve fails with
        /// `ERROR_NOT_SUPPORTED`.
        const WRITE_WATCH = 0x20_0000;
        /// `MEM_PHYSICAL`: AWE region (accepted only as `MEM_PHYSICAL | MEM_RESERVE`, and only
        /// with `PAGE_READWRITE`).
        const PHYSICAL = 0x40_0000;
        /// `MEM_RESET_UNDO`: undo a previous `MEM_RESET` if the data survived. Fails with
        /// `ERROR_BUSY` ([`Error::DataDiscarded`](crate::Error::DataDiscarded)) when some
        /// data may have been discarded.
        ///
        /// On real memory (the Linux backend) each page the reset recorded (see
        /// [`RESET`](Self::RESET)) is taken back from the kernel with a store that
        /// changes no value, and judged by its recorded words: it survived if none of them
        /// reads zero and one at least still holds its value. A program that wrote zero
        /// into one of them since the reset, or new values into all of them, is told that
        /// data was lost although the kernel may have kept the page: in doubt the answer
        /// is "lost", never the reverse. A recorded page that is no longer writable cannot
        /// be checked that way: it is dropped (reads zero) and counts as lost. The records
        /// of the range are freed. In a write-watched reservation, where the reset kept
        /// everything, the undo succeeds and writes nothing.
        const RESET_UNDO = 0x100_0000;
        /// `MEM_LARGE_PAGES`: back the allocation with large pages.
        const LARGE_PAGES = 0x2000_0000;
    }
}

bitflags! {
    /// The `dwFreeType` argument of `VirtualFree`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct FreeType: u32 {
        /// `MEM_DECOMMIT`: return committed pages to the reserved state.
        const DECOMMIT = 0x4000;
        /// `MEM_RELEASE`: release a whole reservation.
        const RELEASE = 0x8000;
    }
}

bitflags! {
    /// A page protection (`PAGE_*`), as passed to `VirtualAlloc` / `VirtualProtect` and
    /// reported by `VirtualQuery`. The low byte is the base protection; `GUARD`, `NOCACHE`
    /// and `WRITECOMBINE` are modifiers.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Protection: u32 {
        /// `PAGE_NOACCESS`.
        const NOACCESS = 0x01;
        /// `PAGE_READONLY`.
        const READONLY = 0x02;
        /// `PAGE_READWRITE`.
        const READWRITE = 0x04;
        /// `PAGE_WRITECOPY` (not valid for private memory).
        const WRITECOPY = 0x08;
        /// `PAGE_EXECUTE`.
        const EXECUTE = 0x10;
        /// `PAGE_EXECUTE_READ`.
        const EXECUTE_READ = 0x20;
        /// `PAGE_EXECUTE_READWRITE`.
        const EXECUTE_READWRITE = 0x40;
        /// `PAGE_EXECUTE_WRITECOPY` (not valid for private memory).
        const EXECUTE_WRITECOPY = 0x80;
        /// `PAGE_GUARD`: the first access raises `STATUS_GUARD_PAGE_VIOLATION` and disarms
        /// the guard. Checked accesses (`AddressSpace::read`, `write`, `execute`, `check`)
        /// do so on both backends ([`Error::GuardPage`](crate::Error::GuardPage)); on real
        /// memory (the Linux backend) the page is kept inaccessible, and a CPU touch of it
        /// is a `SIGSEGV`, not the one-shot exception.
        const GUARD = 0x100;
        /// `PAGE_NOCACHE`.
        const NOCACHE = 0x200;
        /// `PAGE_WRITECOMBINE`.
        const WRITECOMBINE = 0x400;
    }
}

impl Protection {
    /// The base protection (low byte), without modifiers.
    pub fn base(self) -> Protection {
        Protection::from_bits_retain(self.bits() & 0xFF)
    }

    /// The modifier bits (`GUARD`, `NOCACHE`, `WRITECOMBINE`).
    pub fn modifiers(self) -> Protection {
        self & (Protection::GUARD | Protection::NOCACHE | Protection::WRITECOMBINE)
    }

    /// Whether a page with this protection may be read (ignoring an armed guard). Every
    /// base but `PAGE_NOACCESS` may: on Windows x64 execute access implies read access
    /// (`PAGE_EXECUTE` pages are readable on every processor), so only writes fault there.
    pub fn can_read(self) -> bool {
        self.base().intersects(
            Protection::READONLY
                | Protection::READWRITE
                | Protection::WRITECOPY
                | Protection::EXECUTE
                | Protection::EXECUTE_READ
                | Protection::EXECUTE_READWRITE
                | Protection::EXECUTE_WRITECOPY,
        )
    }

    /// Whether a page with this protection may be written (ignoring an armed guard).
    pub fn can_write(self) -> bool {
        self.base().intersects(
            Protection::READWRITE
                | Protection::WRITECOPY
                | Protection::EXECUTE_READWRITE
                | Protection::EXECUTE_WRITECOPY,
        )
    }

    /// Whether a page with this protection may be executed (ignoring an armed guard).
    pub fn can_execute(self) -> bool {
        self.base().intersects(
            Protection::EXECUTE
                | Protection::EXECUTE_READ
                | Protection::EXECUTE_READWRITE
                | Protection::EXECUTE_WRITECOPY,
        )
    }

    /// Whether an access of `kind` is allowed by the base protection.
    pub fn allows(self, kind: AccessKind) -> bool {
        match kind {
            AccessKind::Read => self.can_read(),
            AccessKind::Write => self.can_write(),
            AccessKind::Execute => self.can_execute(),
        }
    }
}

bitflags! {
    /// The `dwFlags` argument of `GetWriteWatch`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct WriteWatchFlags: u32 {
        /// `WRITE_WATCH_FLAG_RESET`: reset the pages that are reported.
        const RESET = 1;
    }
}

/// The `State` field of `MEMORY_BASIC_INFORMATION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MemState {
    /// `MEM_COMMIT`.
    Commit = 0x1000,
    /// `MEM_RESERVE`.
    Reserve = 0x2000,
    /// `MEM_FREE`.
    Free = 0x1_0000,
}

/// The `Type` field of `MEMORY_BASIC_INFORMATION` (0 for free memory, see
/// [`MemoryBasicInformation::mem_type`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MemType {
    /// `MEM_PRIVATE`: memory from `VirtualAlloc`, or anonymous memory of another allocator.
    Private = 0x2_0000,
    /// `MEM_MAPPED`: a mapped view of a file or section.
    Mapped = 0x4_0000,
    /// `MEM_IMAGE`: a mapped executable image.
    Image = 0x100_0000,
}

/// The kind of a memory access, with the value Windows stores in
/// `EXCEPTION_RECORD::ExceptionInformation[0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum AccessKind {
    /// A data read.
    Read = 0,
    /// A data write.
    Write = 1,
    /// An instruction fetch (DEP violation when not executable).
    Execute = 8,
}

impl std::fmt::Display for AccessKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
            AccessKind::Execute => "execute",
        })
    }
}

/// What `VirtualQuery` reports about a region (`MEMORY_BASIC_INFORMATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryBasicInformation {
    /// The queried address rounded down to a page.
    pub base_address: usize,
    /// The base of the reservation (0 for free memory).
    pub allocation_base: usize,
    /// The protection the reservation was made with (empty for free memory).
    pub allocation_protect: Protection,
    /// Bytes from `base_address` that share state, protection and reservation.
    pub region_size: usize,
    /// Free, reserved or committed.
    pub state: MemState,
    /// The page protection: `NOACCESS` for free pages, empty for reserved pages.
    pub protect: Protection,
    /// `MEM_PRIVATE` etc.; `None` (0) for free memory.
    pub mem_type: Option<MemType>,
}

impl MemoryBasicInformation {
    /// The raw `Type` value (0 for free memory).
    pub fn type_bits(&self) -> u32 {
        self.mem_type.map_or(0, |t| t as u32)
    }
}

/// What `GetSystemInfo` reports about an address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SystemInfo {
    /// Page size (4096).
    pub page_size: usize,
    /// Allocation granularity (65536).
    pub allocation_granularity: usize,
    /// Lowest address a reservation may start at.
    pub minimum_application_address: usize,
    /// Highest user address (inclusive), as `lpMaximumApplicationAddress`.
    pub maximum_application_address: usize,
    /// Large-page size (`GetLargePageMinimum`), 0 when large pages are unavailable.
    pub large_page_size: usize,
}

/// `MEM_ADDRESS_REQUIREMENTS` (`VirtualAlloc2`'s `MemExtendedParameterAddressRequirements`):
/// where a new reservation may be placed, for [`AddressSpace::alloc_within`](crate::AddressSpace::alloc_within).
/// All zeros (the default) means anywhere, 64 KiB aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AddressRequirements {
    /// The lowest address the reservation may start at: a multiple of 64 KiB, of the
    /// large-page size with `MEM_LARGE_PAGES` (0: the space's lowest).
    pub lowest_starting_address: usize,
    /// The highest address the reservation may reach, inclusive: one less than a
    /// multiple of 64 KiB, not past the space's highest address (0: that address).
    pub highest_ending_address: usize,
    /// The alignment of the reservation's base: 0 (64 KiB) or a power of two of at least
    /// 64 KiB.
    pub alignment: usize,
}
