//! The C boundary: every exported function runs its body through [`run`], which turns a
//! failure into the Win32 convention (a failure value plus the thread's last error) and
//! stops any panic from crossing into C. (What an export does outside its body, writing
//! its trace line, and the few exports with no body to run — `GetLastError`,
//! `SetLastError`, `GetCurrentProcess`, `GetLargePageMinimum` — is written not to panic; were
//! one to panic anyway, Rust 1.81 and later abort the process at the `extern "C"`
//! boundary rather than unwind into C.)
//!
//! The last error is per thread and shared with the core crate's `virtmem::win32`. On
//! failure it is also stored in `errno`, because that is where managed runtimes on Unix
//! (.NET's and Mono's `SetLastError = true` P/Invoke marshalling) look for it; a call
//! that succeeds leaves `errno` as the caller had it.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::types::{DWORD, ERROR_INTERNAL_ERROR};

/// A failed call: the Win32 error code to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fail(pub DWORD);

impl From<vm::Error> for Fail {
    /// The Win32 code of an engine error. An armed guard page met by a call (e.g.
    /// `VirtualLock` touching it) is reported as Windows does: `GetLastError()` is the
    /// exception code `STATUS_GUARD_PAGE_VIOLATION` itself (0x80000001).
    fn from(e: vm::Error) -> Self {
        match e {
            vm::Error::GuardPage { .. } => Fail(crate::types::STATUS_GUARD_PAGE_VIOLATION),
            other => Fail(other.code()),
        }
    }
}

/// The outcome of an exported function's body.
pub(crate) type Outcome<T> = Result<T, Fail>;

/// The calling thread's last error.
pub(crate) fn last_error() -> DWORD {
    vm::win32::GetLastError()
}

/// Set the calling thread's last error (not `errno`).
pub(crate) fn set_last_error(code: DWORD) {
    vm::win32::SetLastError(code)
}

fn errno_slot() -> *mut libc::c_int {
    // SAFETY: `__errno_location` has no preconditions and returns the calling thread's
    // errno slot, valid for the thread's lifetime.
    unsafe { libc::__errno_location() }
}

fn get_errno() -> libc::c_int {
    // SAFETY: the slot is this thread's errno, always valid to read.
    unsafe { *errno_slot() }
}

fn set_errno(v: libc::c_int) {
    // SAFETY: the slot is this thread's errno, always valid to write.
    unsafe { *errno_slot() = v }
}

/// Record `code` as the calling thread's last error (and `errno`).
pub(crate) fn report(code: DWORD) {
    set_last_error(code);
    set_errno(code as libc::c_int);
}

/// Run the body of an exported function: `(value, 0)` on success; `(failed, code)` with
/// the last error set to `code` on failure; `(failed, ERROR_INTERNAL_ERROR)` if it
/// panicked (the panic is contained here and never reaches C).
///
/// When tracing is on, the call holds the trace's order lock from here until its trace
/// line is written (see `crate::trace`), so traces list calls in the order they took effect.
pub(crate) fn run<T: Copy>(failed: T, body: impl FnOnce() -> Outcome<T>) -> (T, DWORD) {
    crate::trace::begin();
    let saved_errno = get_errno();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => {
            set_errno(saved_errno);
            (v, 0)
        }
        Ok(Err(Fail(code))) => {
            report(code);
            (failed, code)
        }
        Err(_) => {
            report(ERROR_INTERNAL_ERROR);
            (failed, ERROR_INTERNAL_ERROR)
        }
    }
}
