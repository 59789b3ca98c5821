//! Process handles: the current-process pseudo handle (`(HANDLE)-1`, the process's real
//! memory) and simulated processes made by `VirtmemCreateProcess`, each its own simulated
//! Windows-x64 address space.
//!
//! Handle values are multiples of 4 (as on Windows), handed out in increasing order and
//! never reused, so a stale handle is always reported as unknown (`ERROR_INVALID_HANDLE`)
//! rather than silently naming a newer process.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use vm::VirtualSpace;

use crate::ffi::{call, Fail, Outcome};
use crate::types::*;

/// The value of the current-process pseudo handle, `(HANDLE)-1`.
pub const CURRENT_PROCESS: usize = usize::MAX;

/// A simulated process.
#[derive(Debug)]
pub(crate) struct Process {
    space: Arc<dyn VirtualSpace>,
    exited: AtomicBool,
    exit_code: AtomicU32,
}

static TABLE: RwLock<Option<HashMap<usize, Arc<Process>>>> = RwLock::new(None);
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(0x100);

/// The address space of the current process.
pub(crate) fn current_space() -> &'static dyn VirtualSpace {
    static CURRENT: OnceLock<Box<dyn VirtualSpace>> = OnceLock::new();
    // TODO(linux backend): the real process memory once `virtmem::current_process()` lands.
    CURRENT.get_or_init(|| Box::new(vm::SimSpace::simulated())).as_ref()
}

/// What a process handle names, resolved for one call.
pub(crate) enum Target {
    /// The current process (real memory).
    Current(&'static dyn VirtualSpace),
    /// A simulated process (kept alive for the duration of the call).
    Simulated(Arc<Process>),
}

impl Deref for Target {
    type Target = dyn VirtualSpace;
    fn deref(&self) -> &Self::Target {
        match self {
            Target::Current(s) => *s,
            Target::Simulated(p) => p.space.as_ref(),
        }
    }
}

fn lookup(handle: usize) -> Option<Arc<Process>> {
    TABLE.read().as_ref()?.get(&handle).cloned()
}

/// Resolve a handle for a memory operation: NULL or unknown -> `ERROR_INVALID_HANDLE`;
/// a simulated process that has exited -> `ERROR_ACCESS_DENIED`.
pub(crate) fn resolve(handle: HANDLE) -> Outcome<Target> {
    let h = handle as usize;
    if h == CURRENT_PROCESS {
        return Ok(Target::Current(current_space()));
    }
    let p = lookup(h).ok_or(Fail(ERROR_INVALID_HANDLE))?;
    if p.exited.load(Ordering::Acquire) {
        return Err(Fail(ERROR_ACCESS_DENIED));
    }
    Ok(Target::Simulated(p))
}

/// Register an address space as a new simulated process and return its handle.
pub(crate) fn register(space: Arc<dyn VirtualSpace>) -> HANDLE {
    let h = NEXT_HANDLE.fetch_add(4, Ordering::Relaxed);
    let p = Arc::new(Process { space, exited: AtomicBool::new(false), exit_code: AtomicU32::new(0) });
    TABLE.write().get_or_insert_with(HashMap::new).insert(h, p);
    h as HANDLE
}

/// `GetCurrentProcess`: the current-process pseudo handle, `(HANDLE)-1`. Always succeeds;
/// the handle needs no closing.
#[no_mangle]
pub extern "C" fn GetCurrentProcess() -> HANDLE {
    CURRENT_PROCESS as HANDLE
}

/// Extension: create a simulated process, with its own empty simulated Windows-x64
/// address space (0x10000 to 0x7FFFFFFEFFFF, 4 KiB pages, 64 KiB granularity, 2 MiB large
/// pages) whose memory exists only inside libvirtmem.
///
/// Every `Ex` function, `ReadProcessMemory`, `WriteProcessMemory` and `VirtmemAccess`
/// accept the handle. Close it with `CloseHandle`, which frees the space. Returns NULL
/// with the last error set on failure.
#[no_mangle]
pub extern "C" fn VirtmemCreateProcess() -> HANDLE {
    call("VirtmemCreateProcess", std::ptr::null_mut(), || Ok(register(Arc::new(vm::SimSpace::simulated()))))
}

/// `TerminateProcess`: mark a simulated process as exited with `uExitCode`. Afterwards
/// every memory function given its handle fails with `ERROR_ACCESS_DENIED` (5), as does
/// a second `TerminateProcess`; the handle stays valid until `CloseHandle`.
///
/// On the current-process pseudo handle it fails with `ERROR_ACCESS_DENIED` and never
/// exits. NULL or an unknown handle -> `ERROR_INVALID_HANDLE` (6).
#[no_mangle]
pub extern "C" fn TerminateProcess(hProcess: HANDLE, uExitCode: UINT) -> BOOL {
    call("TerminateProcess", FALSE, || {
        let h = hProcess as usize;
        if h == CURRENT_PROCESS {
            return Err(Fail(ERROR_ACCESS_DENIED));
        }
        let p = lookup(h).ok_or(Fail(ERROR_INVALID_HANDLE))?;
        if p.exited.swap(true, Ordering::AcqRel) {
            return Err(Fail(ERROR_ACCESS_DENIED));
        }
        p.exit_code.store(uExitCode, Ordering::Release);
        Ok(TRUE)
    })
}

/// `CloseHandle`: close a simulated process handle (its address space is freed once no
/// call is using it); the handle is unknown afterwards (`ERROR_INVALID_HANDLE`). Closing
/// the current-process pseudo handle succeeds and does nothing. NULL or an unknown handle
/// -> `ERROR_INVALID_HANDLE` (6).
#[no_mangle]
pub extern "C" fn CloseHandle(hObject: HANDLE) -> BOOL {
    call("CloseHandle", FALSE, || {
        let h = hObject as usize;
        if h == CURRENT_PROCESS {
            return Ok(TRUE);
        }
        let removed = TABLE.write().as_mut().and_then(|t| t.remove(&h));
        // The space is dropped here, outside the table lock.
        match removed {
            Some(_) => Ok(TRUE),
            None => Err(Fail(ERROR_INVALID_HANDLE)),
        }
    })
}
