//! Call tracing: when the environment variable `VIRTMEM_TRACE` names a file, every call
//! the library receives is appended to it, one line each, in the format of
//! `virtmem::trace` (which `virtmem replay` reads). Calls that format has no record for
//! (`CloseHandle`, `TerminateProcess`, the `Virtmem*` extension, `GetSystemInfo`, ...)
//! are written as comment lines in the same `NAME ARGS -> RESULT err=CODE` shape, so a
//! trace shows everything while staying readable by the parser.
//!
//! Processes are numbered in traces: 0 is the current process, `n` the `n`-th simulated
//! process created (`VirtmemCreateProcess`), `0xffffffff` a NULL or never-issued handle.
//! When tracing is off each call pays one relaxed atomic load.

use std::fmt;

use vm::trace::{global, Record};
pub(crate) use vm::trace::{Call, Out};

use crate::process::trace_id;
use crate::types::HANDLE;

/// Whether calls are being traced.
#[inline]
pub(crate) fn on() -> bool {
    vm::trace::enabled()
}

/// Record a call of the trace format: `process` is the handle of an `Ex` call or of
/// `ReadProcessMemory`/`WriteProcessMemory`, `None` for the plain forms.
pub(crate) fn record(process: Option<HANDLE>, call: Call, result: u64, last_error: u32, out: Out) {
    if on() {
        global().record(&Record { process: process.map(trace_id), call, result, last_error, out });
    }
}

/// Record a call the format has no record for, as a comment line.
pub(crate) fn comment(args: fmt::Arguments<'_>) {
    if on() {
        global().comment(&args.to_string());
    }
}
