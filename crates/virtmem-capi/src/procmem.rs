//! Copies between address spaces: `ReadProcessMemory`, `WriteProcessMemory`,
//! `FlushInstructionCache` (after code was written), and the
//! extension `VirtmemAccess` (a checked CPU-style access that reports access and
//! guard-page violations, for emulators).
//!
//! The caller's buffer always lives in the current process and is copied through the
//! checked copies of [`crate::uaccess`]; the other side goes through the engine, which
//! checks the whole range before copying a byte.

use vm::win32::CopyRefusal;
use vm::{AccessKind, Error, VirtualSpace};

use crate::ffi::{run, Fail};
use crate::process::{resolve, Target};
use crate::trace::{self, Call, Out};
use crate::types::*;
use crate::uaccess;

/// Why a copy between the caller's memory and an address space stopped.
enum CopyError {
    /// The address space refused the access (the engine's error, first faulting address).
    Engine(Error),
    /// The caller's buffer could not be read or written (`ERROR_NOACCESS`).
    Caller(Fail),
}

/// A buffer for one piece of a copy of `size` bytes: at most [`uaccess::CHUNK`] bytes,
/// whatever the caller asked for (a caller-given size never sizes an allocation).
fn piece_buffer(size: usize) -> Vec<u8> {
    vec![0u8; size.min(uaccess::CHUNK)]
}

/// Whether `size` bytes at caller pointer `buffer` can be addressed at all (not NULL, no
/// wrap past the top of the address space).
fn addressable(buffer: usize, size: usize) -> bool {
    size == 0 || (buffer != 0 && buffer.checked_add(size).is_some())
}

/// The engine's checks of `size` bytes at `address` for `kind` before a copy, in the
/// order [`vm::win32::check_copy`] gives: `caller_ok` (the check of the caller's buffer)
/// runs before an armed guard page is disarmed, so a bad buffer fails the call with the
/// guard still armed (header, VirtmemAccess: "nothing is accessed: no guard page is
/// disarmed"; spec: a failed call changes nothing).
fn check_range(
    space: &dyn VirtualSpace,
    address: usize,
    size: usize,
    kind: AccessKind,
    caller_ok: impl FnOnce() -> Result<(), Fail>,
) -> Result<(), CopyError> {
    vm::win32::check_copy(space, address, size, kind, caller_ok).map_err(|r| match r {
        CopyRefusal::Space(e) => CopyError::Engine(e),
        CopyRefusal::Caller(f) => CopyError::Caller(f),
    })
}

/// Copy `size` bytes at `address` in `space` (accessed as `kind`: read or execute) into
/// the caller's `buffer`. The whole source range is checked by the engine first (see
/// [`check_range`]: a guard page is disarmed only once every page of the caller's buffer
/// is known to be writable), so a range that is not entirely accessible fails before a
/// byte is copied; the bytes are then copied in pieces of at most [`uaccess::CHUNK`].
/// `*done` counts the bytes copied (more than 0 only when the caller's buffer stops being
/// writable part-way, or the source changes under the copy).
fn copy_out(
    space: &dyn VirtualSpace,
    address: usize,
    buffer: usize,
    size: usize,
    kind: AccessKind,
    done: &mut usize,
) -> Result<(), CopyError> {
    check_range(space, address, size, kind, || uaccess::probe_pages_writable(buffer, size))?;
    if !addressable(buffer, size) {
        return Err(CopyError::Caller(Fail(ERROR_NOACCESS)));
    }
    let mut piece = piece_buffer(size);
    while *done < size {
        let n = (size - *done).min(piece.len());
        let at = address + *done;
        match kind {
            AccessKind::Execute => space.execute(at, &mut piece[..n]),
            _ => space.read(at, &mut piece[..n]),
        }
        .map_err(CopyError::Engine)?;
        uaccess::write_bytes(buffer + *done, &piece[..n]).map_err(CopyError::Caller)?;
        *done += n;
    }
    Ok(())
}

/// Copy `size` bytes from the caller's `buffer` to `address` in `space`. Checked before
/// anything is written: the caller's first piece, then the whole destination range (by
/// the engine, see [`check_range`]: a guard page is disarmed only once the whole buffer
/// is known to be readable), then the rest of the caller's buffer; only then are the
/// bytes written, in pieces of at most [`uaccess::CHUNK`]. `*done` counts the bytes written (more than
/// 0 on failure only if the destination or the buffer changes under the copy).
fn copy_in(
    space: &dyn VirtualSpace,
    address: usize,
    buffer: usize,
    size: usize,
    done: &mut usize,
) -> Result<(), CopyError> {
    if size == 0 {
        return space.check(address, 0, AccessKind::Write).map_err(CopyError::Engine);
    }
    if !addressable(buffer, size) {
        return Err(CopyError::Caller(Fail(ERROR_NOACCESS)));
    }
    let mut head = piece_buffer(size);
    uaccess::read_bytes(buffer, &mut head).map_err(CopyError::Caller)?;
    let mut piece = piece_buffer(size - head.len());
    let mut rest_readable = || {
        let mut at = head.len();
        while at < size {
            let n = (size - at).min(piece.len());
            uaccess::read_bytes(buffer + at, &mut piece[..n])?;
            at += n;
        }
        Ok(())
    };
    check_range(space, address, size, AccessKind::Write, &mut rest_readable)?;
    rest_readable().map_err(CopyError::Caller)?;
    space.write(address, &head).map_err(CopyError::Engine)?;
    *done = head.len();
    while *done < size {
        let n = (size - *done).min(piece.len());
        uaccess::read_bytes(buffer + *done, &mut piece[..n]).map_err(CopyError::Caller)?;
        space.write(address + *done, &piece[..n]).map_err(CopyError::Engine)?;
        *done += n;
    }
    Ok(())
}

/// `ReadProcessMemory`: copy `nSize` bytes at `lpBaseAddress` in process `hProcess` into
/// the caller's `lpBuffer`. `TRUE`, or `FALSE` with the last error set: a source range
/// that is not entirely readable (free, reserved or no-access pages, an armed guard page;
/// `PAGE_EXECUTE` pages are readable, as on Windows x64) -> `ERROR_PARTIAL_COPY` (299) and nothing is copied (an
/// armed guard page that stops the copy is disarmed, as on Windows, so a retry goes past it); an unwritable
/// `lpBuffer` -> `ERROR_NOACCESS` (998). `*lpNumberOfBytesRead` (optional) is set to the
/// number of bytes copied: `nSize` on success, 0 when the call fails before copying (the
/// source range is checked whole before a byte is copied), the bytes already copied when
/// `lpBuffer` stops being writable part-way. Any `nSize` is accepted: the copy goes in
/// pieces of at most 64 KiB, never through a buffer of `nSize` bytes.
#[no_mangle]
pub unsafe extern "C" fn ReadProcessMemory(
    hProcess: HANDLE,
    lpBaseAddress: LPCVOID,
    lpBuffer: LPVOID,
    nSize: SIZE_T,
    lpNumberOfBytesRead: *mut SIZE_T,
) -> BOOL {
    let mut done = 0;
    let (r, err) = run(FALSE, || {
        // 0 first, so that a call failing on its handle leaves it 0 too.
        if !lpNumberOfBytesRead.is_null() {
            uaccess::store(lpNumberOfBytesRead, 0)?;
        }
        let space = resolve(hProcess)?;
        let copied = copy_out(&*space, lpBaseAddress as usize, lpBuffer as usize, nSize, AccessKind::Read, &mut done);
        if !lpNumberOfBytesRead.is_null() {
            uaccess::store(lpNumberOfBytesRead, done)?;
        }
        copied.map_err(|e| match e {
            CopyError::Engine(e) => Fail(vm::win32::process_copy_error(e, lpBaseAddress as usize, false).code()),
            CopyError::Caller(f) => f,
        })?;
        Ok(TRUE)
    });
    let (address, buffer, done_at) = (lpBaseAddress as usize, lpBuffer as usize, lpNumberOfBytesRead as usize);
    let out = Out::Transferred(done);
    trace::record(
        Some(hProcess),
        Call::ReadProcessMemory { address, buffer, size: nSize, done: done_at },
        r as u64,
        err,
        out,
    );
    r
}

/// `WriteProcessMemory`: copy `nSize` bytes from the caller's `lpBuffer` to
/// `lpBaseAddress` in process `hProcess`. `TRUE`, or `FALSE` with the last error set: a
/// destination range that is not entirely writable (read-only, no-access, reserved or
/// free pages, an armed guard page, which is then disarmed) fails and nothing is written: with `ERROR_NOACCESS`
/// (998) when its first byte cannot be written, `ERROR_PARTIAL_COPY` (299) when the range
/// starts writable and runs into such a page. Code is writable to it, as on Windows
/// (how a debugger plants a breakpoint): when the first page is `PAGE_EXECUTE` or
/// `PAGE_EXECUTE_READ` (any modifier), the range's pages in that page's region (whole
/// large pages in a `MEM_LARGE_PAGES` allocation) are made `PAGE_EXECUTE_READWRITE` for the copy and get their protection back after it (a guard
/// page stays armed); the rest of the range must be writable as above. An unreadable `lpBuffer` (any byte of its
/// `nSize`) -> `ERROR_NOACCESS`, and nothing is written. `*lpNumberOfBytesWritten`
/// (optional) is set to the number of bytes copied (`nSize` on success, 0 on failure).
/// Any `nSize` is accepted: the source is checked and then copied in pieces of at most
/// 64 KiB, never through a buffer of `nSize` bytes. Writes mark write-watched pages as
/// written.
#[no_mangle]
pub unsafe extern "C" fn WriteProcessMemory(
    hProcess: HANDLE,
    lpBaseAddress: LPVOID,
    lpBuffer: LPCVOID,
    nSize: SIZE_T,
    lpNumberOfBytesWritten: *mut SIZE_T,
) -> BOOL {
    let mut done = 0;
    let (r, err) = run(FALSE, || {
        // 0 first, so that a call failing on its handle leaves it 0 too.
        if !lpNumberOfBytesWritten.is_null() {
            uaccess::store(lpNumberOfBytesWritten, 0)?;
        }
        let space = resolve(hProcess)?;
        let address = lpBaseAddress as usize;
        let copied = vm::win32::with_code_writable(&*space, address, nSize, || {
            copy_in(&*space, address, lpBuffer as usize, nSize, &mut done)
        })
        .unwrap_or_else(|e| Err(CopyError::Engine(e)));
        if !lpNumberOfBytesWritten.is_null() {
            uaccess::store(lpNumberOfBytesWritten, done)?;
        }
        copied.map_err(|e| match e {
            CopyError::Engine(e) => Fail(vm::win32::process_copy_error(e, lpBaseAddress as usize, true).code()),
            CopyError::Caller(f) => f,
        })?;
        Ok(TRUE)
    });
    let (address, buffer, done_at) = (lpBaseAddress as usize, lpBuffer as usize, lpNumberOfBytesWritten as usize);
    let out = Out::Transferred(done);
    trace::record(
        Some(hProcess),
        Call::WriteProcessMemory { address, buffer, size: nSize, done: done_at },
        r as u64,
        err,
        out,
    );
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
/// NULL or inaccessible `buffer` (with `size` > 0) or an unwritable non-NULL
/// `faultAddress` -> 998 (and nothing is accessed: no guard page is disarmed). Works on simulated processes
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
        // A fault disarms a guard page: check first that its address can be stored, so
        // that a call failing for an unwritable `faultAddress` changes nothing.
        if !faultAddress.is_null() {
            uaccess::probe_writable(faultAddress as usize, std::mem::size_of::<ULONG_PTR>())?;
        }
        let mut done = 0;
        let copied = match kind {
            AccessKind::Write => copy_in(&*space, address, buffer as usize, size, &mut done),
            _ => copy_out(&*space, address, buffer as usize, size, kind, &mut done),
        };
        match copied {
            Ok(()) => Ok(0),
            Err(CopyError::Engine(e @ (Error::AccessViolation { address, .. } | Error::GuardPage { address, .. }))) => {
                if !faultAddress.is_null() {
                    uaccess::store(faultAddress, address)?;
                }
                Ok(e.exception_code().unwrap_or(STATUS_ACCESS_VIOLATION))
            }
            Err(CopyError::Engine(other)) => Err(other.into()),
            Err(CopyError::Caller(f)) => Err(f),
        }
    });
    let call = Call::Access { address, buffer: buffer as usize, size, kind, fault: faultAddress as usize };
    trace::record(Some(hProcess), call, r as u64, err, Out::None);
    r
}

/// `FlushInstructionCache`: make the instructions stored in `[lpBaseAddress,
/// lpBaseAddress + dwSize)` of process `hProcess` the ones that run, after a JIT wrote
/// code or a debugger planted a breakpoint (`WriteProcessMemory`). `TRUE`, or `FALSE`
/// with the last error set, with the handle rules of the `Ex` functions: NULL or an
/// unknown handle -> `ERROR_INVALID_HANDLE` (6), a process that has exited ->
/// `ERROR_ACCESS_DENIED` (5). (Wine 8 does not look at the handle; Windows does.)
///
/// Any range is accepted, as on Windows x64: on the current process the committed,
/// readable pages of the range are synchronised (nothing needs doing on x86-64, whose
/// instruction fetches see stores; on AArch64 the data cache is cleaned and the
/// instruction cache invalidated); free, reserved, no-access and guard pages are skipped,
/// never touched. `lpBaseAddress` NULL with `dwSize` 0 (Windows: the whole cache) names
/// no range and succeeds. A simulated process has no instruction cache: its
/// `VirtmemAccess` fetches always see the latest writes, and the call only checks the
/// handle.
#[no_mangle]
pub unsafe extern "C" fn FlushInstructionCache(hProcess: HANDLE, lpBaseAddress: LPCVOID, dwSize: SIZE_T) -> BOOL {
    let (r, err) = run(FALSE, || {
        if let Target::Current(space) = resolve(hProcess)? {
            space.flush_instruction_cache(lpBaseAddress as usize, dwSize);
        }
        Ok(TRUE)
    });
    let (id, address) = (crate::process::trace_id(hProcess), lpBaseAddress as usize);
    trace::comment(format_args!("FlushInstructionCache {id:#x} {address:#x} {dwSize:#x} -> {r:#x} err={err}"));
    r
}
