//! `GetLastError`, `SetLastError`, `GetSystemInfo`, `GetLargePageMinimum`,
//! `VirtmemGetProcessSystemInfo` and `FlushProcessWriteBuffers`.

use crate::ffi::{last_error, run, set_last_error, Fail};
use crate::process::{current_space, resolve};
use crate::trace;
use crate::types::*;
use crate::uaccess;

/// `GetLastError`: the calling thread's last error code, as set by the last failed call
/// of this library on this thread (or by `SetLastError`). Each thread has its own.
#[no_mangle]
pub extern "C" fn GetLastError() -> DWORD {
    let code = last_error();
    trace::comment(format_args!("GetLastError -> {code:#x} err={code}"));
    code
}

/// `SetLastError`: set the calling thread's last error code.
#[no_mangle]
pub extern "C" fn SetLastError(dwErrCode: DWORD) {
    set_last_error(dwErrCode);
    trace::comment(format_args!("SetLastError {dwErrCode:#x} -> 0x0 err={dwErrCode}"));
}

/// The processor fields of `SYSTEM_INFO` for this machine: architecture, type, level,
/// revision.
fn processor() -> (WORD, DWORD, WORD, WORD) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID leaf 1 exists on every x86-64 processor. (The intrinsic is safe
        // on newer compilers, hence the allow.)
        #[allow(unused_unsafe)]
        let r = unsafe { std::arch::x86_64::__cpuid(1) };
        let stepping = r.eax & 0xF;
        let mut model = (r.eax >> 4) & 0xF;
        let mut family = (r.eax >> 8) & 0xF;
        if family == 0xF {
            family += (r.eax >> 20) & 0xFF;
        }
        if family >= 6 {
            model |= ((r.eax >> 16) & 0xF) << 4;
        }
        (PROCESSOR_ARCHITECTURE_AMD64, PROCESSOR_AMD_X8664, family as WORD, ((model << 8) | stepping) as WORD)
    }
    #[cfg(target_arch = "aarch64")]
    {
        (PROCESSOR_ARCHITECTURE_ARM64, 0, 0, 0)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        (PROCESSOR_ARCHITECTURE_UNKNOWN, 0, 0, 0)
    }
}

/// What `GetSystemInfo` reports: the current process's space, and this machine.
pub(crate) fn system_info() -> SYSTEM_INFO {
    // Without a current-process space (no /proc, or a bad VIRTMEM_LINUX_WITHOUT), the
    // Windows x64 values of a simulated one.
    let si = match current_space() {
        Ok(space) => space.system_info(),
        Err(_) => vm::SimSpace::simulated().system_info(),
    };
    system_info_of(si)
}

/// `SYSTEM_INFO` for a space whose own information is `si`: its page size, user range
/// and allocation granularity, and this machine's processors.
fn system_info_of(si: vm::SystemInfo) -> SYSTEM_INFO {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let cpus = if online > 0 { online as u32 } else { 1 };
    let mask = if cpus >= usize::BITS { usize::MAX } else { (1usize << cpus) - 1 };
    let (arch, ty, level, revision) = processor();
    SYSTEM_INFO {
        wProcessorArchitecture: arch,
        wReserved: 0,
        dwPageSize: si.page_size as DWORD,
        lpMinimumApplicationAddress: si.minimum_application_address as LPVOID,
        lpMaximumApplicationAddress: si.maximum_application_address as LPVOID,
        dwActiveProcessorMask: mask,
        dwNumberOfProcessors: cpus,
        dwProcessorType: ty,
        dwAllocationGranularity: si.allocation_granularity as DWORD,
        wProcessorLevel: level,
        wProcessorRevision: revision,
    }
}

/// `GetLargePageMinimum`: the large-page size of the current process's space, which
/// the size and the address of a `MEM_LARGE_PAGES` allocation must be multiples of; 0
/// when it has none (on Linux: no 2 MiB hugetlb pages configured, `vm.nr_hugepages` and
/// `vm.nr_overcommit_hugepages` both 0; then `MEM_LARGE_PAGES` fails with
/// `ERROR_NO_SYSTEM_RESOURCES`), or when there is no current-process space. As on
/// Windows it sets no last error.
#[no_mangle]
pub extern "C" fn GetLargePageMinimum() -> SIZE_T {
    let size = current_space().map_or(0, |space| space.system_info().large_page_size);
    trace::comment(format_args!("GetLargePageMinimum -> {size:#x}"));
    size
}

/// `FlushProcessWriteBuffers`: "Flushes the write queue of each processor that is
/// running a thread of the current process." When it returns, every store another thread
/// made before the flush reached its CPU is visible to the caller, and that thread's
/// later loads see the caller's earlier stores: the heavy side of an asymmetric barrier
/// (a GC suspending threads), whose light side is a compiler barrier alone. On Linux:
/// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (Linux 4.14+, 10–12 µs on the benchmark VM; the
/// first call registers the process), else `membarrier(MEMBARRIER_CMD_GLOBAL)` (Linux
/// 4.3+, 14 ms there), else a locked helper page whose access is taken away, which makes
/// the kernel interrupt every CPU running a thread of the process (15 µs there;
/// a guarantee on x86 only). Chosen once per process; `VIRTMEM_LINUX_WITHOUT` withholds
/// the first with `membarrier_expedited`, the first two with `membarrier`. As on Windows it
/// returns nothing, never fails and sets no last error; any thread may call it.
#[no_mangle]
pub extern "C" fn FlushProcessWriteBuffers() {
    let _ = run((), || {
        vm::flush_process_write_buffers();
        Ok(())
    });
    trace::comment(format_args!("FlushProcessWriteBuffers"));
}

impl SYSTEM_INFO {
    /// The 48 bytes of this structure as C sees them (it has no padding).
    pub fn to_bytes(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.wProcessorArchitecture.to_ne_bytes());
        put(&self.wReserved.to_ne_bytes());
        put(&self.dwPageSize.to_ne_bytes());
        put(&(self.lpMinimumApplicationAddress as usize).to_ne_bytes());
        put(&(self.lpMaximumApplicationAddress as usize).to_ne_bytes());
        put(&self.dwActiveProcessorMask.to_ne_bytes());
        put(&self.dwNumberOfProcessors.to_ne_bytes());
        put(&self.dwProcessorType.to_ne_bytes());
        put(&self.dwAllocationGranularity.to_ne_bytes());
        put(&self.wProcessorLevel.to_ne_bytes());
        put(&self.wProcessorRevision.to_ne_bytes());
        out
    }
}

/// `GetSystemInfo`: page size (4096), allocation granularity (65536), the lowest and
/// highest application addresses of the current process's space, and the processors.
/// A NULL or unwritable `lpSystemInfo` is left alone (the last error is set to
/// `ERROR_NOACCESS`; the function has no return value).
#[no_mangle]
pub unsafe extern "C" fn GetSystemInfo(lpSystemInfo: LPSYSTEM_INFO) {
    let ((), err) = run((), || {
        if lpSystemInfo.is_null() {
            return Err(Fail(ERROR_NOACCESS));
        }
        uaccess::write_bytes(lpSystemInfo as usize, &system_info().to_bytes())
    });
    trace::comment(format_args!("GetSystemInfo {:#x} -> 0x0 err={err}", lpSystemInfo as usize));
}

/// Extension: `GetSystemInfo` as the process `hProcess` sees it: its own
/// `lpMinimumApplicationAddress`, `lpMaximumApplicationAddress`, `dwAllocationGranularity`
/// and `dwPageSize` (a process made by `VirtmemCreateProcessEx` reports its configured
/// range, e.g. a 32-bit guest's 0x10000-0x7FFEFFFF), the processor fields as
/// `GetSystemInfo` gives them; for the current-process pseudo handle exactly what
/// `GetSystemInfo` answers (where this process's memory cannot be managed, no `/proc` or a
/// bad `VIRTMEM_LINUX_WITHOUT`, the error its other calls give instead: 50 or 87). Returns `TRUE`, or `FALSE` with the last error set and nothing
/// written: NULL or an unknown handle -> `ERROR_INVALID_HANDLE` (6), a process that has
/// exited -> `ERROR_ACCESS_DENIED` (5), a NULL or unwritable `lpSystemInfo` ->
/// `ERROR_NOACCESS` (998). It changes nothing, so traces hold it as a comment.
#[no_mangle]
pub unsafe extern "C" fn VirtmemGetProcessSystemInfo(hProcess: HANDLE, lpSystemInfo: LPSYSTEM_INFO) -> BOOL {
    let (r, err) = run(FALSE, || {
        let space = resolve(hProcess)?;
        if lpSystemInfo.is_null() {
            return Err(Fail(ERROR_NOACCESS));
        }
        uaccess::write_bytes(lpSystemInfo as usize, &system_info_of(space.system_info()).to_bytes())?;
        Ok(TRUE)
    });
    let id = crate::process::trace_id(hProcess);
    trace::comment(format_args!(
        "VirtmemGetProcessSystemInfo {id:#x} {:#x} -> {r:#x} err={err}",
        lpSystemInfo as usize
    ));
    r
}

/// `GetNativeSystemInfo`: what `GetSystemInfo` answers. On Windows the two differ only for
/// a 32-bit program under WOW64; libvirtmem serves 64-bit programs, whose native system
/// is their own. Tools that know about WOW64 call this one, so a port of them links.
#[no_mangle]
pub unsafe extern "C" fn GetNativeSystemInfo(lpSystemInfo: LPSYSTEM_INFO) {
    // SAFETY: the same contract as `GetSystemInfo`, which checks the pointer itself.
    unsafe { GetSystemInfo(lpSystemInfo) }
}
