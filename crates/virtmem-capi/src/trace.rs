//! Call tracing: when the environment variable `VIRTMEM_TRACE` names a file, every call
//! the library receives is appended to it, one line each, in the format of
//! `virtmem::trace` (which `virtmem replay` reads). Calls that format has no record for
//! (`CloseHandle`, `TerminateProcess`, `VirtmemCreateProcess`, `GetSystemInfo`, ...)
//! are written as comment lines in the same `NAME ARGS -> RESULT err=CODE` shape, so a
//! trace shows everything while staying readable by the parser.
//!
//! Processes are numbered in traces: 0 is the current process, `n` the `n`-th simulated
//! process created (`VirtmemCreateProcess`, `VirtmemCreateProcessEx` or
//! `VirtmemSnapshotProcess`), `0xffffffff` a NULL or never-issued handle.
//! `VirtmemCreateProcessEx` is a record (its configuration changes what later calls
//! give); `VirtmemCreateProcess` stays a comment, the replay making a default process
//! for any number no record made.
//! When tracing is off each call pays one relaxed atomic load.
//!
//! # Order
//!
//! A trace is replayed line by line, so its lines must be in the order the calls took
//! effect. When tracing is on, every exported call holds one process-wide lock, [`ORDER`],
//! from the start of its body ([`begin`], called by `ffi::run`) until its line is written
//! ([`record`] / [`comment`] release it): traced calls are serialized, and the file order
//! is the order in which they changed the address spaces. (Tracing already writes a line
//! per call with a system call under a lock, so this costs little more; with tracing off
//! nothing is taken.) `fork()` waits for the call in progress to finish (a
//! `pthread_atfork` handler takes the lock), so a child never inherits it held; the
//! child's first line is preceded by a new header with its own pid (see
//! `vm::trace::TraceWriter`).

use std::cell::Cell;
use std::fmt;
use std::sync::Once;

use parking_lot::lock_api::RawMutex as _;
use parking_lot::RawMutex;
use vm::trace::{global, Record};
pub(crate) use vm::trace::{Call, Out};

use crate::process::trace_id;
use crate::types::HANDLE;

/// Whether calls are being traced.
#[inline]
pub(crate) fn on() -> bool {
    vm::trace::enabled()
}

/// Serializes traced calls so that the trace's line order is the order they took effect.
static ORDER: RawMutex = RawMutex::INIT;

thread_local! {
    /// Whether this thread holds [`ORDER`] (taken by [`begin`], released by [`end`]).
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Called at the start of every exported call's body: when tracing is on, take [`ORDER`]
/// (unless this thread holds it already) until the call's line is written.
pub(crate) fn begin() {
    if on() && !HELD.with(Cell::get) {
        AT_FORK.call_once(register_fork_handlers);
        ORDER.lock();
        HELD.with(|h| h.set(true));
    }
}

/// Release [`ORDER`] if this thread holds it.
fn end() {
    if HELD.with(|h| h.replace(false)) {
        // SAFETY: HELD was true, so this thread locked ORDER in `begin` or `write` and
        // has not released it since.
        unsafe { ORDER.unlock() }
    }
}

/// Write one line while holding [`ORDER`] (taken here for a call that did not go through
/// `ffi::run`), then release it: the call is over.
fn write(line: impl FnOnce()) {
    if !HELD.with(Cell::get) {
        ORDER.lock();
        HELD.with(|h| h.set(true));
    }
    line();
    end();
}

static AT_FORK: Once = Once::new();

extern "C" fn before_fork() {
    // Wait for the traced call in progress (if any) to write its line.
    ORDER.lock();
}

extern "C" fn after_fork() {
    // SAFETY: `before_fork` locked ORDER in this thread just before fork(); in the child
    // this thread is the copy of that one, so the lock is ours to release in both.
    unsafe { ORDER.unlock() }
}

fn register_fork_handlers() {
    // SAFETY: the handlers are plain functions that only lock and unlock ORDER, which
    // lives for the whole program; registering them has no other precondition.
    let rc = unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
    if rc != 0 {
        global().comment("pthread_atfork failed: a fork() during a traced call may leave the child's trace lock held");
    }
}

/// Record a call of the trace format: `process` is the handle of an `Ex` call or of
/// `ReadProcessMemory`/`WriteProcessMemory`, `None` for the plain forms.
pub(crate) fn record(process: Option<HANDLE>, call: Call, result: u64, last_error: u32, out: Out) {
    if on() {
        write(|| global().record(&Record { process: process.map(trace_id), call, result, last_error, out }));
    } else {
        end();
    }
}

/// Record a call the format has no record for, as a comment line.
pub(crate) fn comment(args: fmt::Arguments<'_>) {
    if on() {
        write(|| global().comment(&args.to_string()));
    } else {
        end();
    }
}
