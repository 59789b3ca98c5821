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
        /// `MEM_RESET`: the contents of the range are no longer of interest.
        const RESET = 0x8_0000;
        /// `MEM_TOP_DOWN`: place the reservation at the highest possible address.
        const TOP_DOWN = 0x10_0000;
        /// `MEM_WRITE_WATCH`: track writes for `GetWriteWatch`.
        const WRITE_WATCH = 0x20_0000;
        /// `MEM_PHYSICAL`: AWE region (accepted only as `MEM_PHYSICAL | MEM_RESERVE`, and only
        /// with `PAGE_READWRITE`).
        const PHYSICAL = 0x40_0000;
        /// `MEM_RESET_UNDO`: undo a previous `MEM_RESET` if the data survived.
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
        /// `PAGE_GUARD`: the first access raises `STATUS_GUARD_PAGE_VIOLATION`.
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
