//! The error type of the address-space layer: every variant carries its Win32 error
//! code (what `GetLastError` returns), and simulated memory accesses carry the
//! NTSTATUS-style exception they raise.

use crate::flags::AccessKind;

/// Win32 error codes used by this crate.
pub mod code {
    /// `ERROR_SUCCESS`.
    pub const SUCCESS: u32 = 0;
    /// `ERROR_ACCESS_DENIED`.
    pub const ACCESS_DENIED: u32 = 5;
    /// `ERROR_INVALID_HANDLE`.
    pub const INVALID_HANDLE: u32 = 6;
    /// `ERROR_NOT_ENOUGH_MEMORY`.
    pub const NOT_ENOUGH_MEMORY: u32 = 8;
    /// `ERROR_BAD_LENGTH`.
    pub const BAD_LENGTH: u32 = 24;
    /// `ERROR_NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: u32 = 50;
    /// `ERROR_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: u32 = 87;
    /// `ERROR_NOT_LOCKED`.
    pub const NOT_LOCKED: u32 = 158;
    /// `ERROR_BUSY` (used for a `MEM_RESET_UNDO` whose data was discarded, as
    /// `ReclaimVirtualMemory` does).
    pub const BUSY: u32 = 170;
    /// `ERROR_PARTIAL_COPY`.
    pub const PARTIAL_COPY: u32 = 299;
    /// `ERROR_INVALID_ADDRESS`.
    pub const INVALID_ADDRESS: u32 = 487;
    /// `ERROR_NOACCESS`.
    pub const NOACCESS: u32 = 998;
    /// `ERROR_NO_SYSTEM_RESOURCES` (large pages that cannot be had).
    pub const NO_SYSTEM_RESOURCES: u32 = 1450;
    /// `ERROR_WORKING_SET_QUOTA` (a page lock the OS refused).
    pub const WORKING_SET_QUOTA: u32 = 1453;
    /// `ERROR_COMMITMENT_LIMIT`.
    pub const COMMITMENT_LIMIT: u32 = 1455;
}

/// `STATUS_ACCESS_VIOLATION`.
pub const STATUS_ACCESS_VIOLATION: u32 = 0xC000_0005;
/// `STATUS_GUARD_PAGE_VIOLATION`.
pub const STATUS_GUARD_PAGE_VIOLATION: u32 = 0x8000_0001;

/// Everything a call on an address space can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `ERROR_ACCESS_DENIED` (5): the process has exited.
    #[error("access denied (ERROR_ACCESS_DENIED, 5)")]
    AccessDenied,
    /// `ERROR_INVALID_HANDLE` (6): a NULL or unknown process handle.
    #[error("invalid handle (ERROR_INVALID_HANDLE, 6)")]
    InvalidHandle,
    /// `ERROR_NOT_ENOUGH_MEMORY` (8): no room in the address space, or the OS refused memory.
    #[error("not enough memory (ERROR_NOT_ENOUGH_MEMORY, 8)")]
    NotEnoughMemory,
    /// `ERROR_BAD_LENGTH` (24): a buffer smaller than the structure it must hold.
    #[error("bad length (ERROR_BAD_LENGTH, 24)")]
    BadLength,
    /// `ERROR_NOT_SUPPORTED` (50): a kernel feature this call needs is missing.
    #[error("not supported (ERROR_NOT_SUPPORTED, 50)")]
    NotSupported,
    /// `ERROR_INVALID_PARAMETER` (87).
    #[error("invalid parameter (ERROR_INVALID_PARAMETER, 87)")]
    InvalidParameter,
    /// `ERROR_NOT_LOCKED` (158): `VirtualUnlock` of pages that are not locked.
    #[error("not locked (ERROR_NOT_LOCKED, 158)")]
    NotLocked,
    /// `ERROR_BUSY` (170): `MEM_RESET_UNDO` found that some data was discarded.
    #[error("data was discarded (ERROR_BUSY, 170)")]
    DataDiscarded,
    /// `ERROR_PARTIAL_COPY` (299): a process-memory read that could not be completed.
    #[error("partial copy (ERROR_PARTIAL_COPY, 299)")]
    PartialCopy,
    /// `ERROR_INVALID_ADDRESS` (487).
    #[error("invalid address (ERROR_INVALID_ADDRESS, 487)")]
    InvalidAddress,
    /// `ERROR_NOACCESS` (998): an invalid pointer argument, or a write into read-only memory.
    #[error("invalid access to memory location (ERROR_NOACCESS, 998)")]
    NoAccess,
    /// `ERROR_NO_SYSTEM_RESOURCES` (1450): large pages cannot be had.
    #[error("insufficient system resources (ERROR_NO_SYSTEM_RESOURCES, 1450)")]
    NoSystemResources,
    /// `ERROR_WORKING_SET_QUOTA` (1453): the OS refused to lock pages.
    #[error("working set quota exceeded (ERROR_WORKING_SET_QUOTA, 1453)")]
    WorkingSetQuota,
    /// `ERROR_COMMITMENT_LIMIT` (1455): the commit would exceed the space's commit limit.
    #[error("commitment limit reached (ERROR_COMMITMENT_LIMIT, 1455)")]
    CommitmentLimit,
    /// A checked access (either backend) touched a page it may not (`STATUS_ACCESS_VIOLATION`).
    #[error("access violation: {access} at {address:#x} (STATUS_ACCESS_VIOLATION)")]
    AccessViolation {
        /// The first address that could not be accessed.
        address: usize,
        /// The kind of access.
        access: AccessKind,
    },
    /// A checked access (either backend) touched an armed guard page (`STATUS_GUARD_PAGE_VIOLATION`);
    /// the guard is now disarmed and the access may be retried.
    #[error("guard page violation: {access} at {address:#x} (STATUS_GUARD_PAGE_VIOLATION)")]
    GuardPage {
        /// The address that hit the guard page.
        address: usize,
        /// The kind of access.
        access: AccessKind,
    },
}

impl Error {
    /// The Win32 error code (`GetLastError`) for this error. Access exceptions map to
    /// `ERROR_NOACCESS` (998).
    pub fn code(&self) -> u32 {
        match self {
            Error::AccessDenied => code::ACCESS_DENIED,
            Error::InvalidHandle => code::INVALID_HANDLE,
            Error::NotEnoughMemory => code::NOT_ENOUGH_MEMORY,
            Error::BadLength => code::BAD_LENGTH,
            Error::NotSupported => code::NOT_SUPPORTED,
            Error::InvalidParameter => code::INVALID_PARAMETER,
            Error::NotLocked => code::NOT_LOCKED,
            Error::DataDiscarded => code::BUSY,
            Error::PartialCopy => code::PARTIAL_COPY,
            Error::InvalidAddress => code::INVALID_ADDRESS,
            Error::NoAccess => code::NOACCESS,
            Error::NoSystemResources => code::NO_SYSTEM_RESOURCES,
            Error::WorkingSetQuota => code::WORKING_SET_QUOTA,
            Error::CommitmentLimit => code::COMMITMENT_LIMIT,
            Error::AccessViolation { .. } | Error::GuardPage { .. } => code::NOACCESS,
        }
    }

    /// The NTSTATUS exception code of a checked access error, `None` for other errors.
    pub fn exception_code(&self) -> Option<u32> {
        match self {
            Error::AccessViolation { .. } => Some(STATUS_ACCESS_VIOLATION),
            Error::GuardPage { .. } => Some(STATUS_GUARD_PAGE_VIOLATION),
            _ => None,
        }
    }

    /// The Win32 name of the error code, e.g. `"ERROR_INVALID_ADDRESS"`.
    pub fn name(&self) -> &'static str {
        match self {
            Error::AccessViolation { .. } => "STATUS_ACCESS_VIOLATION",
            Error::GuardPage { .. } => "STATUS_GUARD_PAGE_VIOLATION",
            other => code_name(other.code()),
        }
    }

    /// The error for a Win32 code, if the code is one this crate produces.
    pub fn from_code(c: u32) -> Option<Error> {
        Some(match c {
            code::ACCESS_DENIED => Error::AccessDenied,
            code::INVALID_HANDLE => Error::InvalidHandle,
            code::NOT_ENOUGH_MEMORY => Error::NotEnoughMemory,
            code::BAD_LENGTH => Error::BadLength,
            code::NOT_SUPPORTED => Error::NotSupported,
            code::INVALID_PARAMETER => Error::InvalidParameter,
            code::NOT_LOCKED => Error::NotLocked,
            code::BUSY => Error::DataDiscarded,
            code::PARTIAL_COPY => Error::PartialCopy,
            code::INVALID_ADDRESS => Error::InvalidAddress,
            code::NOACCESS => Error::NoAccess,
            code::NO_SYSTEM_RESOURCES => Error::NoSystemResources,
            code::WORKING_SET_QUOTA => Error::WorkingSetQuota,
            code::COMMITMENT_LIMIT => Error::CommitmentLimit,
            _ => return None,
        })
    }
}

/// The Win32 name of an error code this crate produces (`"ERROR_SUCCESS"` for 0,
/// `"ERROR_UNKNOWN"` for any other).
pub fn code_name(c: u32) -> &'static str {
    match c {
        code::SUCCESS => "ERROR_SUCCESS",
        code::ACCESS_DENIED => "ERROR_ACCESS_DENIED",
        code::INVALID_HANDLE => "ERROR_INVALID_HANDLE",
        code::NOT_ENOUGH_MEMORY => "ERROR_NOT_ENOUGH_MEMORY",
        code::BAD_LENGTH => "ERROR_BAD_LENGTH",
        code::NOT_SUPPORTED => "ERROR_NOT_SUPPORTED",
        code::INVALID_PARAMETER => "ERROR_INVALID_PARAMETER",
        code::NOT_LOCKED => "ERROR_NOT_LOCKED",
        code::BUSY => "ERROR_BUSY",
        code::PARTIAL_COPY => "ERROR_PARTIAL_COPY",
        code::INVALID_ADDRESS => "ERROR_INVALID_ADDRESS",
        code::NOACCESS => "ERROR_NOACCESS",
        code::NO_SYSTEM_RESOURCES => "ERROR_NO_SYSTEM_RESOURCES",
        code::WORKING_SET_QUOTA => "ERROR_WORKING_SET_QUOTA",
        code::COMMITMENT_LIMIT => "ERROR_COMMITMENT_LIMIT",
        _ => "ERROR_UNKNOWN",
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
