//! Copies between address spaces: `ReadProcessMemory`, `WriteProcessMemory`, and the
//! extension `VirtmemAccess` (a checked CPU-style access that reports access and
//! guard-page violations, for emulators).
//!
//! The caller's buffer always lives in the current process and is copied through the
//! checked copies of [`crate::uaccess`]; the other side goes through the engine, which
//! checks the whole range before copying a byte.

use vm::{AccessKind, Error};

use crate::ffi::{run, Fail, Outcome};
use crate::process::resolve;
use crate::trace::{self, Call, Out};
use crate::types::*;
use crate::uaccess;

/// The buffer for `size` bytes, or `ERROR_NOT_ENOUGH_MEMORY` if it cannot be had.
fn buffer(size: usize) -> Outcome<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(size).map_err(|_| Fail(ERROR_NOT_ENOUGH_MEMORY))?;
    v.resize(size, 0);
    Ok(v)
}

/// `ReadProcessMemory`: copy `nSize` bytes at `lpBaseAddress` in process `hProcess` into
/// the caller's `lpBuffer`. `TRUE`, or `FALSE` with the last error set: a source range
/// that is not entirely readable (free, reserved, no-access or execute-only pages, an
/// armed guard page) -> `ERROR_PARTIAL_COPY` (299) and nothing is copied; an unwritable
/// `lpBuffer` -> `ERROR_NOACCESS` (998). `*lpNumberOfBytesRead` (optional) is set to the
/// number of bytes copied (0 on failure).
#[no_mangle]
pub unsafe extern "C" fn ReadProcessMemory(
    hProcess: HANDLE,
    lpBaseAddress: LPCVOID,
    lpBuffer: LPVOID,
    nSize: SIZE_T,
    lpNumberOfBytesRead: *mut SIZE_T,
) -> BOOL {
    let (r, err) = run(FALSE, || {
        let space = resolve(hProcess)?;
        if !lpNumberOfBytesRead.is_null() {
            uaccess::store(lpNumberOfBytesRead, 0)?;
        }
        let mut data = buffer(nSize)?;
        space.read(lpBaseAddress as usize, &mut data).map_err(|e| match e {
            Error::AccessViolation { .. } | Error::GuardPage { .. } | Error::NoAccess => Fail(ERROR_PARTIAL_COPY),
            other => other.into(),
        })?;
        uaccess::write_bytes(lpBuffer as usize, &data)?;
        if !lpNumberOfBytesRead.is_null() {
            uaccess::store(lpNumberOfBytesRead, nSize)?;
        }
        Ok(TRUE)
    });
    let (address, buffer, done) = (lpBaseAddress as usize, lpBuffer as usize, lpNumberOfBytesRead as usize);
    let out = Out::Transferred(if r == TRUE { nSize } else { 0 });
    trace::record(Some(hProcess), Call::ReadProcessMemory { address, buffer, size: nSize, done }, r as u64, err, out);
    r
}

/// `WriteProcessMemory`: copy `nSize` bytes from the caller's `lpBuffer` to
/// `lpBaseAddress` in process `hProcess`. `TRUE`, or `FALSE` with the last error set: a
/// destination range that is not entirely writable (read-only, no-access, reserved or
/// free pages, an armed guard page) fails and nothing is written: with `ERROR_NOACCESS`
/// (998) when its first byte cannot be written, `ERROR_PARTIAL_COPY` (299) when the range
/// starts writable and runs into such a page. An unreadable `lpBuffer` -> `ERROR_NOACCESS`. `*lpNumberOfBytesWritten` (optional) is set to the number of
/// bytes copied (0 on failure). Writes mark write-watched pages as written.
#[no_mangle]
pub unsafe extern "C" fn WriteProcessMemory(
    hProcess: HANDLE,
    lpBaseAddress: LPVOID,
    lpBuffer: LPCVOID,
    nSize: SIZE_T,
    lpNumberOfBytesWritten: *mut SIZE_T,
) -> BOOL {
    let (r, err) = run(FALSE, || {
        let space = resolve(hProcess)?;
        if !lpNumberOfBytesWritten.is_null() {
            uaccess::store(lpNumberOfBytesWritten, 0)?;
        }
        let mut data = buffer(nSize)?;
        uaccess::read_bytes(lpBuffer as usize, &mut data)?;
        space.write(lpBaseAddress as usize, &data).map_err(|e| match e {
            // Not even the first byte could be written, or only some could have been.
            Error::AccessViolation { address, .. } | Error::GuardPage { address, .. } => {
                Fail(if address == lpBaseAddress as usize { ERROR_NOACCESS } else { ERROR_PARTIAL_COPY })
            }
            other => other.into(),
        })?;
        if !lpNumberOfBytesWritten.is_null() {
            uaccess::store(lpNumberOfBytesWritten, nSize)?;
        }
        Ok(TRUE)
    });
    let (address, buffer, done) = (lpBaseAddress as usize, lpBuffer as usize, lpNumberOfBytesWritten as usize);
    let out = Out::Transferred(if r == TRUE { nSize } else { 0 });
    trace::record(Some(hProcess), Call::WriteProcessMemory { address, buffer, size: nSize, done }, r as u64, err, out);
    r
}

/// Extension: perform a checked memory access in process `hProcess`, as a CPU would.
///
/// `kind` is `VIRTMEM_ACCESS_READ` (0: copy `size` bytes at `address` into `buffer`),
/// `VIRTMEM_ACCESS_WRITE` (1: copy `size` bytes from `buffer` to `address`) or
/// `VIRTMEM_ACCESS_EXECUTE` (8: fetch `size` bytes of instructions into `buffer`).
///
/// Returns 0 when the access succeeded. When a page forbids it, returns the exception the
/// CPU would raise and stores the first faulting address in `*faultAddress` (if not NULL);
/// nothing is read or written then:
/// - `STATUS_ACCESS_VIOLATION` (0xC0000005): a free, reserved or decommitted page, or a
///   protection that does not allow the access (a write to read-only memory, an execute
///   of non-executable memory);
/// - `STATUS_GUARD_PAGE_VIOLATION` (0x80000001): an armed `PAGE_GUARD` page; the guard is
///   now disarmed and retrying the access succeeds if the protection allows it.
///
/// Other errors return `VIRTMEM_ACCESS_FAILED` (0xFFFFFFFF) with the last error set: NULL
/// or unknown handle -> 6, exited process -> 5, a `kind` other than 0, 1, 8 -> 87, a
/// NULL or inaccessible `buffer` (with `size` > 0) -> 998. Works on simulated processes
/// and, through the engine's checks, on the current process.
#[no_mangle]
pub unsafe extern "C" fn VirtmemAccess(
    hProcess: HANDLE,
    address: ULONG_PTR,
    buffer: *mut core::ffi::c_void,
    size: SIZE_T,
    kind: DWORD,
    faultAddress: *mut ULONG_PTR,
) -> DWORD {
    let (r, err) = run(VIRTMEM_ACCESS_FAILED, || {
        let space = resolve(hProcess)?;
        let kind = match kind {
            VIRTMEM_ACCESS_READ => AccessKind::Read,
            VIRTMEM_ACCESS_WRITE => AccessKind::Write,
            VIRTMEM_ACCESS_EXECUTE => AccessKind::Execute,
            _ => return Err(Fail(ERROR_INVALID_PARAMETER)),
        };
        if size > 0 && buffer.is_null() {
            return Err(Fail(ERROR_NOACCESS));
        }
        let mut data = self::buffer(size)?;
        let done = match kind {
            AccessKind::Read => space.read(address, &mut data),
            AccessKind::Execute => space.execute(address, &mut data),
            AccessKind::Write => {
                uaccess::read_bytes(buffer as usize, &mut data)?;
                space.write(address, &data)
            }
        };
        match done {
            Ok(()) => {
                if kind != AccessKind::Write {
                    uaccess::write_bytes(buffer as usize, &data)?;
                }
                Ok(0)
            }
            Err(e @ (Error::AccessViolation { address, .. } | Error::GuardPage { address, .. })) => {
                if !faultAddress.is_null() {
                    uaccess::store(faultAddress, address)?;
                }
                Ok(e.exception_code().unwrap_or(STATUS_ACCESS_VIOLATION))
            }
            Err(other) => Err(other.into()),
        }
    });
    trace::comment(format_args!(
        "VirtmemAccess {:#x} {address:#x} {:#x} {size:#x} {kind:#x} {:#x} -> {r:#x} err={err}",
        crate::process::trace_id(hProcess),
        buffer as usize,
        faultAddress as usize
    ));
    r
}
