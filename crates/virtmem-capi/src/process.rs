//! Process handles: the current-process pseudo handle (`(HANDLE)-1`, the process's real
//! memory) and simulated processes made by `VirtmemCreateProcess`, each its own simulated
//! Windows-x64 address space, or by `VirtmemCreateProcessEx`, with the user range,
//! large-page size and reset policy a `VIRTMEM_PROCESS_CONFIG` gives.
//!
//! Handle values are multiples of 4 (as on Windows), handed out in increasing order and
//! never reused, so a stale handle is always reported as unknown (`ERROR_INVALID_HANDLE`)
//! rather than silently naming a newer process.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use vm::VirtualSpace;

use crate::ffi::{run, Fail, Outcome};
use crate::trace;
use crate::types::*;
use crate::uaccess;

/// The value of the current-process pseudo handle, `(HANDLE)-1`.
pub const CURRENT_PROCESS: usize = usize::MAX;

/// A simulated process.
#[derive(Debug)]
pub(crate) struct Process {
    space: Arc<dyn VirtualSpace>,
    /// The same space as a simulated one, for `VirtmemSnapshotProcess` (every process
    /// `VirtmemCreateProcess` or a snapshot makes; `None` only for the tests' own spaces).
    sim: Option<Arc<vm::SimSpace>>,
    exited: AtomicBool,
    exit_code: AtomicU32,
}

static TABLE: RwLock<Option<HashMap<usize, Arc<Process>>>> = RwLock::new(None);
/// The first simulated-process handle value.
const FIRST_HANDLE: usize = 0x100;
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(FIRST_HANDLE);

/// The address space of the current process: this process's real memory (the Linux
/// backend), or `ERROR_NOT_SUPPORTED` where it cannot be managed (no `/proc`), or
/// `ERROR_INVALID_PARAMETER` where `VIRTMEM_LINUX_WITHOUT` names something that is not a
/// kernel feature (a message on stderr names it).
#[cfg(target_os = "linux")]
pub(crate) fn current_space() -> Outcome<&'static dyn VirtualSpace> {
    match vm::try_current_process() {
        Ok(space) => Ok(space),
        Err(e) => Err(e.into()),
    }
}

/// The address space of the current process: elsewhere than Linux there is no real-memory
/// backend, so every current-process call fails with `ERROR_NOT_SUPPORTED`.
#[cfg(not(target_os = "linux"))]
pub(crate) fn current_space() -> Outcome<&'static dyn VirtualSpace> {
    Err(Fail(ERROR_NOT_SUPPORTED))
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

impl Process {
    /// The process's address space, shared (a host memory manager over it).
    pub(crate) fn shared_space(&self) -> Arc<dyn VirtualSpace> {
        self.space.clone()
    }
}

/// The table key of handle value `handle`: Windows ignores the low two bits of a handle
/// (handles are multiples of 4; programs may keep tags there), except in the pseudo
/// handles, the small negative values, which are compared whole.
fn handle_key(handle: usize) -> usize {
    if (handle as isize) < 0 {
        handle
    } else {
        handle & !3
    }
}

fn lookup(handle: usize) -> Option<Arc<Process>> {
    TABLE.read().as_ref()?.get(&handle_key(handle)).cloned()
}

/// Resolve a handle for a memory operation: NULL or unknown -> `ERROR_INVALID_HANDLE`;
/// a simulated process that has exited -> `ERROR_ACCESS_DENIED`.
pub(crate) fn resolve(handle: HANDLE) -> Outcome<Target> {
    let h = handle as usize;
    if h == CURRENT_PROCESS {
        return Ok(Target::Current(current_space()?));
    }
    let p = lookup(h).ok_or(Fail(ERROR_INVALID_HANDLE))?;
    if p.exited.load(Ordering::Acquire) {
        return Err(Fail(ERROR_ACCESS_DENIED));
    }
    Ok(Target::Simulated(p))
}

/// Resolve a handle that must name a simulated process made by this library
/// (`VirtmemSnapshotProcess`, `VirtmemRestoreProcess`): the current-process pseudo handle
/// -> `ERROR_NOT_SUPPORTED` without looking at the current process's memory (which need
/// not be manageable), otherwise as [`resolve`] (a process with no simulated space of its
/// own, only the tests', -> `ERROR_NOT_SUPPORTED`).
fn resolve_simulated(handle: HANDLE) -> Outcome<Arc<vm::SimSpace>> {
    if handle as usize == CURRENT_PROCESS {
        return Err(Fail(ERROR_NOT_SUPPORTED));
    }
    let Target::Simulated(p) = resolve(handle)? else { return Err(Fail(ERROR_NOT_SUPPORTED)) };
    p.sim.clone().ok_or(Fail(ERROR_NOT_SUPPORTED))
}

/// The number of the process `handle` names in traces: 0 for the current process, `n` for
/// the `n`-th simulated process ever created (open, exited or closed), `u32::MAX` for
/// NULL and values never handed out.
pub(crate) fn trace_id(handle: HANDLE) -> u32 {
    let h = handle as usize;
    if h == CURRENT_PROCESS {
        return 0;
    }
    let h = handle_key(h);
    if h < FIRST_HANDLE || h >= NEXT_HANDLE.load(Ordering::Relaxed) {
        return u32::MAX;
    }
    u32::try_from((h - FIRST_HANDLE) / 4 + 1).unwrap_or(u32::MAX)
}

/// Register an address space as a new simulated process and return its handle.
#[cfg(test)]
pub(crate) fn register(space: Arc<dyn VirtualSpace>) -> HANDLE {
    add(Process { space, sim: None, exited: AtomicBool::new(false), exit_code: AtomicU32::new(0) })
}

/// Register a simulated space as a new simulated process and return its handle.
fn register_sim(space: vm::SimSpace) -> HANDLE {
    let sim = Arc::new(space);
    add(Process { space: sim.clone(), sim: Some(sim), exited: AtomicBool::new(false), exit_code: AtomicU32::new(0) })
}

/// Put `p` in the table under a new handle.
fn add(p: Process) -> HANDLE {
    let h = NEXT_HANDLE.fetch_add(4, Ordering::Relaxed);
    let p = Arc::new(p);
    TABLE.write().get_or_insert_with(HashMap::new).insert(h, p);
    h as HANDLE
}

/// `GetCurrentProcess`: the current-process pseudo handle, `(HANDLE)-1`. Always succeeds;
/// the handle needs no closing.
#[no_mangle]
pub extern "C" fn GetCurrentProcess() -> HANDLE {
    trace::comment(format_args!("GetCurrentProcess -> {CURRENT_PROCESS:#x} err=0"));
    CURRENT_PROCESS as HANDLE
}

/// Extension: create a simulated process, with its own empty simulated Windows-x64
/// address space (0x10000 to 0x7FFFFFFEFFFF, 4 KiB pages, 64 KiB granularity, 2 MiB large
/// pages) whose memory exists only inside libvirtmem.
///
/// Every `Ex` function, `ReadProcessMemory`, `WriteProcessMemory` and `VirtmemAccess`
/// accept the handle. Close it with `CloseHandle`, which frees the space. Returns NULL
/// with the last error set on failure. The handle is a multiple of 4 and, as on Windows,
/// its low two bits are ignored wherever a handle is taken (a program may tag them).
/// Handle values are never reused: a closed handle stays unknown
/// (`ERROR_INVALID_HANDLE`), whatever processes are made later. For another user range
/// (a 32-bit guest's), no large pages or resets that discard data, see
/// [`VirtmemCreateProcessEx`].
///
/// Processes may be made, used and closed from any number of threads. Each costs about
/// 2.5 KB while empty, about 12 KB with a reservation and one written page (4 KiB per
/// page written); the same calls in two processes give the same addresses.
#[no_mangle]
pub extern "C" fn VirtmemCreateProcess() -> HANDLE {
    let (h, err) = run(std::ptr::null_mut(), || Ok(register_sim(vm::SimSpace::simulated())));
    trace::comment(format_args!("VirtmemCreateProcess -> {:#x} err={err} process={}", h as usize, trace_id(h)));
    h
}

/// `VIRTMEM_PROCESS_CONFIG::ResetPolicy`: `MEM_RESET` keeps the data (as when Windows never
/// needed the memory), so `MEM_RESET_UNDO` succeeds. The default.
pub const VIRTMEM_RESET_KEEP: DWORD = 0;
/// `VIRTMEM_PROCESS_CONFIG::ResetPolicy`: `MEM_RESET` drops the data at once (as under
/// memory pressure): the pages read as zero and `MEM_RESET_UNDO` fails with `ERROR_BUSY`
/// (170), so a fuzzer sees every reset lose its data.
pub const VIRTMEM_RESET_DISCARD: DWORD = 1;

/// The configuration of a simulated process made by [`VirtmemCreateProcessEx`]. Fill it
/// with [`VirtmemProcessConfigInit`] (the Windows-x64 process `VirtmemCreateProcess`
/// makes), change what you need, pass it. `cbSize` lets the structure grow: a later
/// libvirtmem accepts the sizes earlier ones knew.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VIRTMEM_PROCESS_CONFIG {
    /// `sizeof(VIRTMEM_PROCESS_CONFIG)` (32).
    pub cbSize: DWORD,
    /// `VIRTMEM_RESET_KEEP` or `VIRTMEM_RESET_DISCARD`.
    pub ResetPolicy: DWORD,
    /// The lowest address a reservation may start at, what `lpMinimumApplicationAddress`
    /// reports on Windows: a multiple of 64 KiB, at least 0x10000 (the default).
    pub MinimumApplicationAddress: ULONG_PTR,
    /// The highest user address (inclusive, as `lpMaximumApplicationAddress`): one less
    /// than a multiple of 64 KiB, above `MinimumApplicationAddress`, at most
    /// 0x7FFFFFFEFFFF (the default; a 32-bit guest's is 0x7FFEFFFF).
    pub MaximumApplicationAddress: ULONG_PTR,
    /// The large-page size: a power of two that is a multiple of 64 KiB (the default is
    /// 2 MiB), or 0 for none (then `MEM_LARGE_PAGES` fails with
    /// `ERROR_NO_SYSTEM_RESOURCES`, 1450).
    pub LargePageSize: SIZE_T,
}

// The layout C sees: no padding, so the fields are read and written byte by byte.
const _: () = {
    assert!(std::mem::size_of::<VIRTMEM_PROCESS_CONFIG>() == 32);
    assert!(std::mem::offset_of!(VIRTMEM_PROCESS_CONFIG, ResetPolicy) == 4);
    assert!(std::mem::offset_of!(VIRTMEM_PROCESS_CONFIG, MinimumApplicationAddress) == 8);
    assert!(std::mem::offset_of!(VIRTMEM_PROCESS_CONFIG, MaximumApplicationAddress) == 16);
    assert!(std::mem::offset_of!(VIRTMEM_PROCESS_CONFIG, LargePageSize) == 24);
};

impl VIRTMEM_PROCESS_CONFIG {
    /// The size of this version of the structure.
    const SIZE: usize = std::mem::size_of::<VIRTMEM_PROCESS_CONFIG>();

    /// The configuration of a default simulated process (`VirtmemCreateProcess`'s).
    fn defaults() -> Self {
        let d = vm::SimConfig::default();
        VIRTMEM_PROCESS_CONFIG {
            cbSize: Self::SIZE as DWORD,
            ResetPolicy: d.reset_policy.code(),
            MinimumApplicationAddress: d.min_address,
            MaximumApplicationAddress: d.end_address - 1,
            LargePageSize: d.large_page_size,
        }
    }

    /// The structure's bytes, as C lays them out.
    fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.cbSize.to_ne_bytes());
        b[4..8].copy_from_slice(&self.ResetPolicy.to_ne_bytes());
        b[8..16].copy_from_slice(&self.MinimumApplicationAddress.to_ne_bytes());
        b[16..24].copy_from_slice(&self.MaximumApplicationAddress.to_ne_bytes());
        b[24..32].copy_from_slice(&self.LargePageSize.to_ne_bytes());
        b
    }

    /// The structure from its bytes.
    fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let d = |r: std::ops::Range<usize>| DWORD::from_ne_bytes(b[r].try_into().unwrap_or_default());
        let u = |r: std::ops::Range<usize>| usize::from_ne_bytes(b[r].try_into().unwrap_or_default());
        VIRTMEM_PROCESS_CONFIG {
            cbSize: d(0..4),
            ResetPolicy: d(4..8),
            MinimumApplicationAddress: u(8..16),
            MaximumApplicationAddress: u(16..24),
            LargePageSize: u(24..32),
        }
    }

    /// Read the caller's structure: NULL -> the defaults, unreadable -> `ERROR_NOACCESS`,
    /// a `cbSize` of no known version -> `ERROR_INVALID_PARAMETER`.
    fn read(config: *const VIRTMEM_PROCESS_CONFIG) -> Outcome<Self> {
        if config.is_null() {
            return Ok(Self::defaults());
        }
        // The size first: it says how much there is to read.
        let cb = uaccess::load(config.cast::<DWORD>())?;
        if cb as usize != Self::SIZE {
            return Err(Fail(ERROR_INVALID_PARAMETER));
        }
        let mut b = [0u8; Self::SIZE];
        uaccess::read_bytes(config as usize, &mut b)?;
        Ok(Self::from_bytes(&b))
    }
}

/// Extension: fill `*config` with the configuration of the process `VirtmemCreateProcess`
/// makes (`cbSize` set, 0x10000 to 0x7FFFFFFEFFFF, 2 MiB large pages,
/// `VIRTMEM_RESET_KEEP`), to change what you need before [`VirtmemCreateProcessEx`].
/// Returns `TRUE`, or `FALSE` with `ERROR_NOACCESS` (998) for a NULL or unwritable
/// `config` (nothing written).
#[no_mangle]
pub unsafe extern "C" fn VirtmemProcessConfigInit(config: *mut VIRTMEM_PROCESS_CONFIG) -> BOOL {
    let (r, err) = run(FALSE, || {
        uaccess::write_bytes(config as usize, &VIRTMEM_PROCESS_CONFIG::defaults().to_bytes())?;
        Ok(TRUE)
    });
    trace::comment(format_args!("VirtmemProcessConfigInit {:#x} -> {r:#x} err={err}", config as usize));
    r
}

/// Extension: create a simulated process as `VirtmemCreateProcess` does, with the user
/// address range, large-page size and reset policy `*config` gives (see
/// [`VIRTMEM_PROCESS_CONFIG`]; NULL: the defaults, the same process as
/// `VirtmemCreateProcess`). An emulator of a 32-bit guest gives 0x10000 to 0x7FFEFFFF:
/// reservations then land inside that range (`MEM_TOP_DOWN` at its top), and addresses
/// outside it are refused as Windows refuses them outside its user range:
/// `VirtualAllocEx` below the lowest or past the highest address, or `VirtualQueryEx`
/// past the highest, fails with `ERROR_INVALID_PARAMETER` (87), and a full range with
/// `ERROR_NOT_ENOUGH_MEMORY` (8). Snapshots (`VirtmemSnapshotProcess`) keep the
/// configuration; `VirtmemRestoreProcess` works between processes of the same
/// configuration only.
///
/// Returns NULL with the last error set on failure, having made nothing: a field
/// [`VIRTMEM_PROCESS_CONFIG`] does not allow (a `cbSize` of no known version, an address
/// not on a 64 KiB boundary, a lowest address below 0x10000 or not below the highest, a
/// highest address past 0x7FFFFFFEFFFF, a large-page size other than 0 or a power-of-two
/// multiple of 64 KiB, an unknown reset policy) -> `ERROR_INVALID_PARAMETER` (87); an
/// unreadable `config` -> `ERROR_NOACCESS` (998).
#[no_mangle]
pub unsafe extern "C" fn VirtmemCreateProcessEx(config: *const VIRTMEM_PROCESS_CONFIG) -> HANDLE {
    // What the trace records: the fields as read (zeros when they could not be).
    let mut seen = VIRTMEM_PROCESS_CONFIG::from_bytes(&[0; VIRTMEM_PROCESS_CONFIG::SIZE]);
    let (h, err) = run(std::ptr::null_mut(), || {
        let c = VIRTMEM_PROCESS_CONFIG::read(config)?;
        seen = c;
        let sim = vm::SimConfig::from_fields(
            c.MinimumApplicationAddress,
            c.MaximumApplicationAddress,
            c.LargePageSize,
            c.ResetPolicy,
        )?;
        Ok(register_sim(vm::SimSpace::try_simulated_with(sim)?))
    });
    let new = if h.is_null() { 0 } else { u64::from(trace_id(h)) };
    let call = trace::Call::CreateProcess {
        min_address: seen.MinimumApplicationAddress,
        max_address: seen.MaximumApplicationAddress,
        large_page_size: seen.LargePageSize,
        reset_policy: seen.ResetPolicy,
    };
    trace::record(None, call, new, err, trace::Out::None);
    h
}

/// Extension: a new simulated process whose address space is a copy of the one of
/// simulated process `hProcess` as it is now: its reservations, page states and
/// protections, armed guard pages, locked pages, contents, write-watch marks, data a
/// reset dropped, and its commit limit. The two share nothing afterwards. This is the
/// snapshot an emulator or a fuzzer restores between runs: set a process up once, then
/// run each input on a snapshot of it and close that.
///
/// The copy waits for calls under way on `hProcess` and holds the others meanwhile; it
/// costs time and memory in proportion to the regions and the pages written, not to the
/// size reserved. Close the new handle with `CloseHandle`. Returns NULL with the last
/// error set on failure: NULL or an unknown handle -> `ERROR_INVALID_HANDLE` (6), a
/// process that has exited -> `ERROR_ACCESS_DENIED` (5), the current-process pseudo
/// handle -> `ERROR_NOT_SUPPORTED` (50: its memory is this process's real memory).
#[no_mangle]
pub extern "C" fn VirtmemSnapshotProcess(hProcess: HANDLE) -> HANDLE {
    let (h, err) = run(std::ptr::null_mut(), || {
        let sim = resolve_simulated(hProcess)?;
        Ok(register_sim(sim.snapshot()))
    });
    let new = if h.is_null() { 0 } else { u64::from(trace_id(h)) };
    trace::record(Some(hProcess), trace::Call::SnapshotProcess, new, err, trace::Out::None);
    h
}

/// Extension: put the state of simulated process `hSnapshot` back into simulated process
/// `hTarget`, in place: `hTarget` keeps its handle but afterwards holds what `hSnapshot`
/// holds (its reservations, page states and protections, armed guard pages, locked
/// pages, contents, write-watch marks, data a reset dropped, its commit limit), as a new
/// `VirtmemSnapshotProcess(hSnapshot)` would; `hSnapshot` is left as it was. This is a
/// fuzzer's loop over one process handle: set the process up once, take one snapshot,
/// and before each input restore the process from it. Any two simulated processes of
/// the same configuration will do (the same one twice changes nothing).
///
/// The restore waits for calls under way on either process and holds the others on both
/// meanwhile, as a snapshot does: it is one moment for both. A host memory manager made
/// over `hTarget` (`VirtmemCreateHostMemoryManagerEx`) keeps its own account of what it
/// allocated there, which a restore does not change: once a restore has taken its memory
/// away, the manager's next call on it fails (`E_FAIL`) and disables the manager. Restore
/// only processes that no manager allocates in. The pages are shared, copy-on-write, between the two processes, not
/// copied: a restore costs time in proportion to the regions and the pages stored, and
/// each page's first write afterwards copies that page. Returns `TRUE`, or `FALSE` with
/// the last error set, nothing changed: NULL or an unknown handle (either one) ->
/// `ERROR_INVALID_HANDLE` (6), a process that has exited (either one) ->
/// `ERROR_ACCESS_DENIED` (5), the current-process pseudo handle (either one) ->
/// `ERROR_NOT_SUPPORTED` (50: its memory is this process's real memory); processes made
/// with different user ranges or large-page sizes (`VirtmemCreateProcessEx`) ->
/// `ERROR_INVALID_PARAMETER` (87), with only different reset policies ->
/// `ERROR_NOT_SUPPORTED` (50).
#[no_mangle]
pub extern "C" fn VirtmemRestoreProcess(hTarget: HANDLE, hSnapshot: HANDLE) -> BOOL {
    let (r, err) = run(FALSE, || {
        let to = resolve_simulated(hTarget)?;
        let from = resolve_simulated(hSnapshot)?;
        to.restore_from(&from)?;
        Ok(TRUE)
    });
    let snapshot = trace_id(hSnapshot);
    trace::record(Some(hTarget), trace::Call::RestoreProcess { snapshot }, r as u64, err, trace::Out::None);
    r
}

/// Extension: set the commit limit of the address space of `hProcess`, in bytes:
/// afterwards a `VirtualAlloc(Ex)` that would take the bytes committed in that space past
/// `limit` fails with `ERROR_COMMITMENT_LIMIT` (1455) and commits nothing (pages already
/// committed are not charged again). `VIRTMEM_NO_COMMIT_LIMIT` (`(SIZE_T)-1`) removes the
/// limit; a limit below what is committed now only stops new commits. Every process
/// starts without a limit.
///
/// Meant for simulated processes (from `VirtmemCreateProcess`), to exercise a program's
/// handling of a full commit charge; on the current-process pseudo handle it limits
/// what libvirtmem itself commits in this process. Returns `TRUE`, or `FALSE` with the
/// last error set: NULL or an unknown handle -> `ERROR_INVALID_HANDLE` (6), a process
/// that has exited -> `ERROR_ACCESS_DENIED` (5).
#[no_mangle]
pub extern "C" fn VirtmemSetCommitLimit(hProcess: HANDLE, limit: SIZE_T) -> BOOL {
    let (r, err) = run(FALSE, || {
        let space = resolve(hProcess)?;
        space.set_commit_limit(if limit == VIRTMEM_NO_COMMIT_LIMIT { None } else { Some(limit) });
        Ok(TRUE)
    });
    trace::record(Some(hProcess), trace::Call::SetCommitLimit { limit }, r as u64, err, trace::Out::None);
    r
}

/// `TerminateProcess`: mark a simulated process as exited with `uExitCode`. Afterwards
/// every memory function given its handle fails with `ERROR_ACCESS_DENIED` (5), as does
/// a second `TerminateProcess`; the handle stays valid until `CloseHandle`.
///
/// On the current-process pseudo handle it fails with `ERROR_ACCESS_DENIED` and never
/// exits. NULL or an unknown handle -> `ERROR_INVALID_HANDLE` (6).
#[no_mangle]
pub extern "C" fn TerminateProcess(hProcess: HANDLE, uExitCode: UINT) -> BOOL {
    let (r, err) = run(FALSE, || {
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
    });
    let id = trace_id(hProcess);
    trace::comment(format_args!("TerminateProcess {id:#x} {uExitCode:#x} -> {r:#x} err={err}"));
    r
}

/// `CloseHandle`: close a simulated process handle (its address space is freed once no
/// call is using it); the handle is unknown afterwards (`ERROR_INVALID_HANDLE`). Closing
/// the current-process pseudo handle succeeds and does nothing. NULL or an unknown handle
/// -> `ERROR_INVALID_HANDLE` (6).
#[no_mangle]
pub extern "C" fn CloseHandle(hObject: HANDLE) -> BOOL {
    let (r, err) = run(FALSE, || {
        let h = hObject as usize;
        if h == CURRENT_PROCESS {
            return Ok(TRUE);
        }
        let removed = TABLE.write().as_mut().and_then(|t| t.remove(&handle_key(h)));
        // The space is dropped here, outside the table lock.
        match removed {
            Some(_) => Ok(TRUE),
            None => Err(Fail(ERROR_INVALID_HANDLE)),
        }
    });
    trace::comment(format_args!("CloseHandle {:#x} -> {r:#x} err={err}", trace_id(hObject)));
    r
}
