//! The error type of the host layer: every failure carries the HRESULT the COM interface
//! returns for it.

use crate::error::Error;

/// A COM result code (`HRESULT`, a signed 32-bit value; negative means failure).
#[allow(clippy::upper_case_acronyms)]
pub type HRESULT = i32;

/// The HRESULT values of the host contract.
pub mod hresult {
    use super::HRESULT;

    /// `S_OK`: done.
    pub const S_OK: HRESULT = 0;
    /// `E_OUTOFMEMORY`: the request cannot be satisfied now (budget or OS).
    pub const E_OUTOFMEMORY: HRESULT = 0x8007_000E_u32 as i32;
    /// `E_INVALIDARG`: an argument is invalid (the same value as `HRESULT_FROM_WIN32(87)`).
    pub const E_INVALIDARG: HRESULT = 0x8007_0057_u32 as i32;
    /// `E_POINTER`: a required out-pointer is NULL.
    pub const E_POINTER: HRESULT = 0x8000_4003_u32 as i32;
    /// `E_FAIL`: an unrecoverable failure; the manager is disabled from then on.
    pub const E_FAIL: HRESULT = 0x8000_4005_u32 as i32;
    /// `E_NOINTERFACE`: `QueryInterface` for an interface the object does not implement.
    pub const E_NOINTERFACE: HRESULT = 0x8000_4002_u32 as i32;
    /// `HOST_E_INVALIDOPERATION`: memory that was not allocated through this host.
    pub const HOST_E_INVALIDOPERATION: HRESULT = 0x8013_1022_u32 as i32;
    /// `HOST_E_CLRNOTAVAILABLE`: not started, shut down, or disabled by a failure.
    pub const HOST_E_CLRNOTAVAILABLE: HRESULT = 0x8013_1023_u32 as i32;
    /// `HOST_E_TIMEOUT`: a wait timed out.
    pub const HOST_E_TIMEOUT: HRESULT = 0x8013_1024_u32 as i32;
    /// `HOST_E_NOT_OWNER`: the caller does not own what it acts on.
    pub const HOST_E_NOT_OWNER: HRESULT = 0x8013_1025_u32 as i32;
    /// `HOST_E_ABANDONED`: a blocked request was cancelled while it waited.
    pub const HOST_E_ABANDONED: HRESULT = 0x8013_1026_u32 as i32;

    /// `HRESULT_FROM_WIN32(code)`: `0x80070000 | code` for a nonzero code, `S_OK` for 0.
    pub const fn from_win32(code: u32) -> HRESULT {
        if code == 0 {
            S_OK
        } else {
            (0x8007_0000 | (code & 0xFFFF)) as i32
        }
    }
}

/// Everything a call on the host memory manager can fail with. [`HostError::hresult`]
/// gives the value the COM interface returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// `E_OUTOFMEMORY`: over the budget (for the request's critical level), or the space
    /// itself is out of memory (`ERROR_NOT_ENOUGH_MEMORY`, `ERROR_COMMITMENT_LIMIT`).
    #[error("out of memory (E_OUTOFMEMORY)")]
    OutOfMemory,
    /// `E_INVALIDARG`: an invalid argument (also what `ERROR_INVALID_PARAMETER` maps to).
    #[error("invalid argument (E_INVALIDARG)")]
    InvalidArg,
    /// `E_POINTER`: a required out-pointer is NULL (only the C interface has out-pointers).
    #[error("null out-pointer (E_POINTER)")]
    Pointer,
    /// `E_FAIL`: the space and the host's bookkeeping disagree; the manager is now disabled.
    #[error("unrecoverable failure, manager disabled (E_FAIL)")]
    Fail,
    /// `HOST_E_INVALIDOPERATION`: the memory was not allocated through this host.
    #[error("memory not allocated through this host (HOST_E_INVALIDOPERATION)")]
    InvalidOperation,
    /// `HOST_E_CLRNOTAVAILABLE`: the manager is not started, shut down, or disabled.
    #[error("host not available (HOST_E_CLRNOTAVAILABLE)")]
    ClrNotAvailable,
    /// `HOST_E_TIMEOUT`: a process-critical request waited for memory until its timeout,
    /// or a `VirtualQuery` of an address outside the host's memory found the space's
    /// bookkeeping held through all its attempts (see
    /// [`HostMemoryManager::virtual_query`](crate::host::HostMemoryManager::virtual_query)).
    #[error("wait timed out (HOST_E_TIMEOUT)")]
    Timeout,
    /// `HOST_E_NOT_OWNER`: another tenant's allocation.
    #[error("owned by another tenant (HOST_E_NOT_OWNER)")]
    NotOwner,
    /// `HOST_E_ABANDONED`: the wait was cancelled (shutdown, failure or cancellation).
    #[error("wait abandoned (HOST_E_ABANDONED)")]
    Abandoned,
    /// Any other Win32 error of the underlying space, as `HRESULT_FROM_WIN32(code)`.
    #[error("{0} (HRESULT_FROM_WIN32)")]
    Win32(Error),
}

impl HostError {
    /// The HRESULT of this error.
    pub fn hresult(&self) -> HRESULT {
        use hresult::*;
        match self {
            HostError::OutOfMemory => E_OUTOFMEMORY,
            HostError::InvalidArg => E_INVALIDARG,
            HostError::Pointer => E_POINTER,
            HostError::Fail => E_FAIL,
            HostError::InvalidOperation => HOST_E_INVALIDOPERATION,
            HostError::ClrNotAvailable => HOST_E_CLRNOTAVAILABLE,
            HostError::Timeout => HOST_E_TIMEOUT,
            HostError::NotOwner => HOST_E_NOT_OWNER,
            HostError::Abandoned => HOST_E_ABANDONED,
            HostError::Win32(e) => from_win32(e.code()),
        }
    }

    /// The symbolic name of the HRESULT, e.g. `"HOST_E_TIMEOUT"`.
    pub fn name(&self) -> &'static str {
        match self {
            HostError::OutOfMemory => "E_OUTOFMEMORY",
            HostError::InvalidArg => "E_INVALIDARG",
            HostError::Pointer => "E_POINTER",
            HostError::Fail => "E_FAIL",
            HostError::InvalidOperation => "HOST_E_INVALIDOPERATION",
            HostError::ClrNotAvailable => "HOST_E_CLRNOTAVAILABLE",
            HostError::Timeout => "HOST_E_TIMEOUT",
            HostError::NotOwner => "HOST_E_NOT_OWNER",
            HostError::Abandoned => "HOST_E_ABANDONED",
            HostError::Win32(_) => "HRESULT_FROM_WIN32",
        }
    }
}

impl From<Error> for HostError {
    /// `HRESULT_FROM_WIN32`, except that out-of-memory errors become `E_OUTOFMEMORY` and
    /// `ERROR_INVALID_PARAMETER` is reported as [`HostError::InvalidArg`] (the same value).
    fn from(e: Error) -> HostError {
        match e {
            Error::NotEnoughMemory | Error::CommitmentLimit => HostError::OutOfMemory,
            Error::InvalidParameter => HostError::InvalidArg,
            other => HostError::Win32(other),
        }
    }
}

/// `Result` with [`HostError`].
pub type HostResult<T> = std::result::Result<T, HostError>;

#[cfg(test)]
mod tests {
    use super::hresult::*;
    use super::*;

    #[test]
    fn win32_mapping() {
        assert_eq!(HostError::from(Error::InvalidAddress).hresult() as u32, 0x8007_01E7);
        assert_eq!(HostError::from(Error::NotEnoughMemory).hresult(), E_OUTOFMEMORY);
        assert_eq!(HostError::from(Error::CommitmentLimit).hresult(), E_OUTOFMEMORY);
        assert_eq!(HostError::from(Error::InvalidParameter).hresult(), from_win32(87));
        assert_eq!(HostError::from(Error::NoAccess).hresult() as u32, 0x8007_03E6);
        assert_eq!(from_win32(0), S_OK);
    }

    #[test]
    fn values_match_the_contract() {
        let table = [
            (HostError::OutOfMemory, 0x8007_000E_u32),
            (HostError::InvalidArg, 0x8007_0057),
            (HostError::Pointer, 0x8000_4003),
            (HostError::Fail, 0x8000_4005),
            (HostError::InvalidOperation, 0x8013_1022),
            (HostError::ClrNotAvailable, 0x8013_1023),
            (HostError::Timeout, 0x8013_1024),
            (HostError::NotOwner, 0x8013_1025),
            (HostError::Abandoned, 0x8013_1026),
        ];
        for (e, v) in table {
            assert_eq!(e.hresult() as u32, v, "{}", e.name());
        }
    }
}
