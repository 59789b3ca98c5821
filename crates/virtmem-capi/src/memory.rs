//! `VirtualAlloc`, `VirtualFree`, `VirtualQuery`, `VirtualProtect` (plain and `Ex`),
//! `VirtualAlloc2`, `GetWriteWatch`, `ResetWriteWatch`, `VirtualLock` and `VirtualUnlock`.
//!
//! Each is a thin shell: resolve the process handle, check the pointer arguments the
//! way Windows does, hand the raw flags to the engine (which validates them in Windows'
//! order), and copy results out through checked stores.

use std::mem::size_of;

use vm::{AllocationType, FreeType, Protection, VirtualSpace, WriteWatchFlags};

use std::ptr::null_mut;

use crate::ffi::{run, Fail, Outcome};
use crate::process::{current_space, resolve, Target, CURRENT_PROCESS};
use crate::trace::{self, Call, Out};
use crate::types::*;
use crate::uaccess;

const PAGE: usize = 4096;

fn alloc(space: &dyn VirtualSpace, address: LPVOID, size: SIZE_T, ty: DWORD, protect: DWORD) -> Outcome<LPVOID> {
    let p = space.alloc(
        address as usize,
        size,
        AllocationType::from_bits_retain(ty),
        Protection::from_bits_retain(protect),
    )?;
    Ok(p as LPVOID)
}

fn alloc_traced(process: Option<HANDLE>, address: LPVOID, size: SIZE_T, ty: DWORD, protect: DWORD) -> LPVOID {
    let (r, err) = run(null_mut(), || {
        // A zero size comes first, before the process handle is looked at (Wine 8:
        // VirtualAllocEx on an unknown handle with size 0 is ERROR_INVALID_PARAMETER).
        if size == 0 {
            return Err(Fail(ERROR_INVALID_PARAMETER));
        }
        match process {
            None => alloc(current_space()?, address, size, ty, protect),
            Some(h) => alloc(&*resolve(h)?, address, size, ty, protect),
        }
    });
    let call = Call::Alloc { address: address as usize, size, alloc_type: ty, protect };
    trace::record(process, call, r as u64, err, Out::None);
    r
}

fn free(space: &dyn VirtualSpace, address: LPVOID, size: SIZE_T, ty: DWORD) -> Outcome<BOOL> {
    space.free(address as usize, size, FreeType::from_bits_retain(ty))?;
    Ok(TRUE)
}

fn free_traced(process: Option<HANDLE>, address: LPVOID, size: SIZE_T, ty: DWORD) -> BOOL {
    let (r, err) = run(FALSE, || match process {
        None => free(current_space()?, address, size, ty),
        Some(h) => free(&*resolve(h)?, address, size, ty),
    });
    trace::record(process, Call::Free { address: address as usize, size, free_type: ty }, r as u64, err, Out::None);
    r
}

/// `VirtualQuery` in `space`, its length checked already.
fn query(
    space: &dyn VirtualSpace,
    address: LPCVOID,
    buffer: PMEMORY_BASIC_INFORMATION,
    out: &mut Out,
) -> Outcome<SIZE_T> {
    // The address (87 above the highest user address) before the buffer: Wine 8 answers
    // 87 for such an address with a NULL buffer, and `vm::win32::VirtualQuery`, which
    // replays this call, checks in the same order.
    let found = space.query(address as usize)?;
    if buffer.is_null() {
        return Err(Fail(ERROR_NOACCESS));
    }
    uaccess::write_bytes(buffer as usize, &MEMORY_BASIC_INFORMATION::from(found).to_bytes())?;
    *out = Out::Info(found.into());
    Ok(size_of::<MEMORY_BASIC_INFORMATION>())
}

fn query_traced(
    process: Option<HANDLE>,
    address: LPCVOID,
    buffer: PMEMORY_BASIC_INFORMATION,
    length: SIZE_T,
) -> SIZE_T {
    let mut out = Out::None;
    let (r, err) = run(0, || {
        // The length comes first, before the process handle is looked at (Wine 8:
        // VirtualQueryEx on an unknown handle with a short length is ERROR_BAD_LENGTH).
        if length < size_of::<MEMORY_BASIC_INFORMATION>() {
            return Err(Fail(ERROR_BAD_LENGTH));
        }
        match process {
            None => query(current_space()?, address, buffer, &mut out),
            Some(h) => query(&*resolve(h)?, address, buffer, &mut out),
        }
    });
    let call = Call::Query { address: address as usize, buffer: buffer as usize, length };
    trace::record(process, call, r as u64, err, out);
    r
}

fn protect(
    space: &dyn VirtualSpace,
    address: LPVOID,
    size: SIZE_T,
    new: DWORD,
    old: PDWORD,
    out: &mut Out,
) -> Outcome<BOOL> {
    if old.is_null() {
        return Err(Fail(ERROR_NOACCESS));
    }
    // Nothing may change if the result cannot be stored: check the slot first.
    uaccess::probe_writable(old as usize, size_of::<DWORD>())?;
    match space.protect_detailed(address as usize, size, Protection::from_bits_retain(new)) {
        Ok(previous) => {
            // The slot was writable a moment ago; it may not be now if it lies in the
            // pages just protected. Windows then keeps the change and reports success
            // (its kernel ignores a fault storing the old protection): so does this.
            let _ = uaccess::store(old, previous.bits());
            *out = Out::OldProtect(previous.bits());
            Ok(TRUE)
        }
        Err((e, reported)) => {
            if let Some(r) = reported {
                uaccess::store(old, r.bits())?;
                *out = Out::OldProtect(r.bits());
            }
            Err(e.into())
        }
    }
}

fn protect_traced(process: Option<HANDLE>, address: LPVOID, size: SIZE_T, new: DWORD, old: PDWORD) -> BOOL {
    let mut out = Out::None;
    let (r, err) = run(FALSE, || {
        // Windows probes the old-protection slot before it looks at the process handle
        // (Wine 8 agrees): a NULL slot is ERROR_NOACCESS whatever the handle.
        if old.is_null() {
            return Err(Fail(ERROR_NOACCESS));
        }
        match process {
            None => protect(current_space()?, address, size, new, old, &mut out),
            Some(h) => protect(&*resolve(h)?, address, size, new, old, &mut out),
        }
    });
    let call = Call::Protect { address: address as usize, size, new_protect: new, old_protect: old as usize };
    trace::record(process, call, r as u64, err, out);
    r
}

/// `VirtualAlloc`: reserve, commit, reset or undo a reset of pages in the current
/// process. Returns the base of the reservation (or of the first committed page), NULL
/// with the last error set on failure. The memory is the process's own: the caller may
/// use it directly as the protection allows.
#[no_mangle]
pub unsafe extern "C" fn VirtualAlloc(
    lpAddress: LPVOID,
    dwSize: SIZE_T,
    flAllocationType: DWORD,
    flProtect: DWORD,
) -> LPVOID {
    alloc_traced(None, lpAddress, dwSize, flAllocationType, flProtect)
}

/// `VirtualAllocEx`: `VirtualAlloc` in the process `hProcess` (the current-process pseudo
/// handle or a simulated process). A `dwSize` of 0 is `ERROR_INVALID_PARAMETER` before
/// the handle is looked at; then a NULL or unknown handle -> `ERROR_INVALID_HANDLE`, an
/// exited process -> `ERROR_ACCESS_DENIED`.
#[no_mangle]
pub unsafe extern "C" fn VirtualAllocEx(
    hProcess: HANDLE,
    lpAddress: LPVOID,
    dwSize: SIZE_T,
    flAllocationType: DWORD,
    flProtect: DWORD,
) -> LPVOID {
    alloc_traced(Some(hProcess), lpAddress, dwSize, flAllocationType, flProtect)
}

/// Extended parameter `index` of the caller's array at `params`, as
/// `vm::win32::alloc2_parameters` takes it: the two words, and for an address-requirements
/// parameter with a non-NULL pointer the `MEM_ADDRESS_REQUIREMENTS` it points to (`None`
/// if it cannot be read). An entry that cannot be read (a NULL array among them) ->
/// `ERROR_NOACCESS`.
fn read_param(params: *const MEM_EXTENDED_PARAMETER, index: usize) -> Result<vm::win32::ExtendedParameter, vm::Error> {
    const ENTRY: usize = size_of::<MEM_EXTENDED_PARAMETER>();
    let at = index.checked_mul(ENTRY).and_then(|o| (params as usize).checked_add(o)).ok_or(vm::Error::NoAccess)?;
    let mut b = [0u8; ENTRY];
    uaccess::read_bytes(at, &mut b).map_err(|_| vm::Error::NoAccess)?;
    let word = |r: std::ops::Range<usize>| u64::from_ne_bytes(b[r].try_into().unwrap_or_default());
    let mut p = vm::win32::ExtendedParameter { type_word: word(0..8), value: word(8..16), requirements: None };
    if p.param_type() == vm::win32::MemExtendedParameterAddressRequirements && p.value != 0 {
        let mut r = [0u8; size_of::<MEM_ADDRESS_REQUIREMENTS>()];
        if uaccess::read_bytes(p.value as usize, &mut r).is_ok() {
            let field = |i: usize| usize::from_ne_bytes(r[i * 8..i * 8 + 8].try_into().unwrap_or_default());
            p.requirements = Some(vm::AddressRequirements {
                lowest_starting_address: field(0),
                highest_ending_address: field(1),
                alignment: field(2),
            });
        }
    }
    Ok(p)
}

/// `VirtualAlloc2`: `VirtualAllocEx` with extended parameters, in the process `Process`
/// (NULL: the calling process, unlike `VirtualAllocEx`; the current-process pseudo handle
/// or a simulated process). Returns the base, or NULL with the last error set, nothing
/// changed. Checked in this order: a `Size` of 0 -> `ERROR_INVALID_PARAMETER` (87); the
/// flags and the parameters, before the handle is looked at: `MEM_RESERVE_PLACEHOLDER` or
/// `MEM_REPLACE_PLACEHOLDER` -> 87 (placeholders are not supported); then each of the
/// `ParameterCount` parameters in order (the first refused decides; none is read after
/// it): a NULL or unreadable array or entry -> `ERROR_NOACCESS` (998), `Reserved` bits
/// set -> 87, a type other than `MemExtendedParameterAddressRequirements` and
/// `MemExtendedParameterNumaNode` (`MemExtendedParameterInvalidType`, partition and
/// physical handles, attribute flags, image machine, or past `MemExtendedParameterMax`)
/// -> 87, a second parameter of one type -> 87, address requirements with a NULL or
/// unreadable `Pointer` -> 998, a NUMA node other than 0 -> 87 (node 0, the only one,
/// changes nothing); requirements that are not all zero with a non-NULL `BaseAddress` ->
/// 87 (Microsoft: with a base address they must be all zeros), all-zero requirements with
/// a `BaseAddress` that is not a multiple of 64 KiB -> 87; then an unknown handle ->
/// `ERROR_INVALID_HANDLE` (6), an exited process -> `ERROR_ACCESS_DENIED` (5).
///
/// With no parameters (`ParameterCount` 0: `ExtendedParameters` is not looked at) or
/// all-zero address requirements it is `VirtualAllocEx` exactly. With address
/// requirements it makes a new reservation (`MEM_RESERVE`, or `MEM_COMMIT` alone, which
/// reserves and commits; any other type -> 87) inside their window: starting at or after
/// `LowestStartingAddress` (NULL: the process's lowest address; not a multiple of 64 KiB,
/// or with `MEM_LARGE_PAGES` of the large-page size -> 87), its last 64 KiB granule
/// ending at or before `HighestEndingAddress` (NULL: the process's highest; past it, or
/// not one less than a multiple of 64 KiB -> 87), its base a multiple of `Alignment` (0:
/// 64 KiB; not a power of two of at least 64 KiB -> 87): bottom-up the lowest such place,
/// with `MEM_TOP_DOWN` the highest. No free place in the window ->
/// `ERROR_NOT_ENOUGH_MEMORY` (8), although the process may have room elsewhere. On a
/// process made by `VirtmemCreateProcessEx` the window is within that process's range.
#[no_mangle]
pub unsafe extern "C" fn VirtualAlloc2(
    Process: HANDLE,
    BaseAddress: PVOID,
    Size: SIZE_T,
    AllocationType: ULONG,
    PageProtection: ULONG,
    ExtendedParameters: *mut MEM_EXTENDED_PARAMETER,
    ParameterCount: ULONG,
) -> PVOID {
    let mut seen = Vec::new();
    let (r, err) = run(null_mut(), || {
        if Size == 0 {
            return Err(Fail(ERROR_INVALID_PARAMETER));
        }
        let params = (0..ParameterCount as usize).map(|i| {
            let p = read_param(ExtendedParameters, i)?;
            seen.push(p);
            Ok(p)
        });
        let address = BaseAddress as usize;
        let req = vm::win32::alloc2_parameters(address, AllocationType, params)?;
        let space = if Process.is_null() { Target::Current(current_space()?) } else { resolve(Process)? };
        let p = vm::win32::alloc2(&*space, address, Size, AllocationType, PageProtection, req)?;
        Ok(p as PVOID)
    });
    let params = (ParameterCount == 0 || !ExtendedParameters.is_null()).then_some(seen);
    let call = Call::Alloc2 {
        address: BaseAddress as usize,
        size: Size,
        alloc_type: AllocationType,
        protect: PageProtection,
        params,
        count: ParameterCount,
    };
    let process = if Process.is_null() { CURRENT_PROCESS as HANDLE } else { Process };
    trace::record(Some(process), call, r as u64, err, Out::None);
    r
}

/// `VirtualFree`: decommit pages (`MEM_DECOMMIT`) or release a whole reservation
/// (`MEM_RELEASE`, size 0) in the current process. `TRUE`, or `FALSE` with the last error
/// set. Memory libvirtmem did not allocate (a `malloc`'d block, a stack) is never touched:
/// freeing it fails with `ERROR_INVALID_ADDRESS` (487).
#[no_mangle]
pub unsafe extern "C" fn VirtualFree(lpAddress: LPVOID, dwSize: SIZE_T, dwFreeType: DWORD) -> BOOL {
    free_traced(None, lpAddress, dwSize, dwFreeType)
}

/// `VirtualFreeEx`: `VirtualFree` in the process `hProcess`.
#[no_mangle]
pub unsafe extern "C" fn VirtualFreeEx(hProcess: HANDLE, lpAddress: LPVOID, dwSize: SIZE_T, dwFreeType: DWORD) -> BOOL {
    free_traced(Some(hProcess), lpAddress, dwSize, dwFreeType)
}

/// `VirtualQuery`: describe the region of pages containing `lpAddress` in the current
/// process. Returns the number of bytes stored in `*lpBuffer` (48), or 0 with the last
/// error set, checked in this order: `dwLength` < 48 -> `ERROR_BAD_LENGTH`; an address
/// above the highest user address -> `ERROR_INVALID_PARAMETER`; a NULL or unwritable
/// `lpBuffer` -> `ERROR_NOACCESS`.
///
/// Memory libvirtmem did not allocate is described from the kernel's mappings, never as
/// free, committed with the mapping's protection: private file mappings (the program's
/// and its libraries' code and data, but also a data file mapped `MAP_PRIVATE`) as
/// `MEM_IMAGE`, shared mappings as `MEM_MAPPED`, anonymous memory (a `malloc`'d block, a
/// stack) as `MEM_PRIVATE`. The other functions refuse it (`ERROR_INVALID_ADDRESS`), except
/// `ReadProcessMemory` and `WriteProcessMemory`, which copy to and from it.
#[no_mangle]
pub unsafe extern "C" fn VirtualQuery(
    lpAddress: LPCVOID,
    lpBuffer: PMEMORY_BASIC_INFORMATION,
    dwLength: SIZE_T,
) -> SIZE_T {
    query_traced(None, lpAddress, lpBuffer, dwLength)
}

/// `VirtualQueryEx`: `VirtualQuery` in the process `hProcess`. A `dwLength` < 48 is
/// `ERROR_BAD_LENGTH` before the handle is looked at; then a NULL or unknown handle ->
/// `ERROR_INVALID_HANDLE`, an exited process -> `ERROR_ACCESS_DENIED`.
#[no_mangle]
pub unsafe extern "C" fn VirtualQueryEx(
    hProcess: HANDLE,
    lpAddress: LPCVOID,
    lpBuffer: PMEMORY_BASIC_INFORMATION,
    dwLength: SIZE_T,
) -> SIZE_T {
    query_traced(Some(hProcess), lpAddress, lpBuffer, dwLength)
}

/// `VirtualProtect`: change the protection of committed pages of one reservation in the
/// current process, storing the first page's old protection in `*lpflOldProtect`. `TRUE`,
/// or `FALSE` with the last error set. A NULL or unwritable `lpflOldProtect` ->
/// `ERROR_NOACCESS` and nothing changes. (One that the change itself makes unwritable,
/// lying in the pages protected, is left as it was and the call succeeds, as on Windows.)
///
/// Memory libvirtmem did not allocate is never changed, although `VirtualQuery` reports
/// it committed (the program's code and data as `MEM_IMAGE`, a `malloc`'d block or a
/// stack as `MEM_PRIVATE`): protecting it fails with `ERROR_INVALID_ADDRESS` (487). So
/// the Windows idiom of patching the program's own code (`VirtualProtect(func, n,
/// PAGE_EXECUTE_READWRITE, &old)`) does not carry over: use `mprotect` there.
#[no_mangle]
pub unsafe extern "C" fn VirtualProtect(
    lpAddress: LPVOID,
    dwSize: SIZE_T,
    flNewProtect: DWORD,
    lpflOldProtect: PDWORD,
) -> BOOL {
    protect_traced(None, lpAddress, dwSize, flNewProtect, lpflOldProtect)
}

/// `VirtualProtectEx`: `VirtualProtect` in the process `hProcess`.
#[no_mangle]
pub unsafe extern "C" fn VirtualProtectEx(
    hProcess: HANDLE,
    lpAddress: LPVOID,
    dwSize: SIZE_T,
    flNewProtect: DWORD,
    lpflOldProtect: PDWORD,
) -> BOOL {
    protect_traced(Some(hProcess), lpAddress, dwSize, flNewProtect, lpflOldProtect)
}

#[allow(clippy::too_many_arguments)]
fn get_write_watch(
    space: &dyn VirtualSpace,
    flags: DWORD,
    base: PVOID,
    size: SIZE_T,
    addresses: *mut PVOID,
    count: PULONG_PTR,
    granularity: LPDWORD,
    count_in: &mut Option<usize>,
    out: &mut Out,
) -> Outcome<UINT> {
    if flags > WRITE_WATCH_FLAG_RESET {
        return Err(Fail(ERROR_INVALID_PARAMETER));
    }
    if count.is_null() || granularity.is_null() {
        return Err(Fail(ERROR_NOACCESS));
    }
    let wanted = uaccess::load(count as *const ULONG_PTR)?;
    *count_in = Some(wanted);
    if wanted == 0 {
        return Err(Fail(ERROR_INVALID_PARAMETER));
    }
    if addresses.is_null() {
        return Err(Fail(ERROR_NOACCESS));
    }
    // The range first (87 for one that is not inside a write-watched reservation), so
    // that nothing below is sized by a range the engine would refuse; then at most as
    // many entries as the range has pages, whatever `*lpdwCount` says.
    let max = wanted.min(space.write_watch_pages(base as usize, size)?);
    let flags = WriteWatchFlags::from_bits_retain(flags);
    if flags.contains(WriteWatchFlags::RESET) {
        // A reset cannot be taken back: make sure every result can be stored first.
        uaccess::probe_writable(count as usize, size_of::<ULONG_PTR>())?;
        uaccess::probe_writable(granularity as usize, size_of::<DWORD>())?;
    }
    // The addresses reported, kept for the trace (only with tracing on).
    let mut traced = None;
    let n = if addresses as usize % align_of::<PVOID>() == 0 {
        // Straight into the caller's array, once every page of it is known writable (the
        // scan stores as it goes, and a reset cannot be taken back): nothing is copied or
        // allocated.
        uaccess::with_array(addresses as usize, max, |slots| -> Outcome<usize> {
            let n = space.get_write_watch_into(flags, base as usize, size, slots)?;
            if trace::on() {
                traced = Some(slots[..n].to_vec());
            }
            Ok(n)
        })??
    } else {
        // An array C code does not make: the addresses are gathered in a vector of ours and
        // stored as bytes, once every page of the caller's array is known writable (as an
        // aligned one's is).
        let array = max.checked_mul(size_of::<PVOID>()).ok_or(Fail(ERROR_NOACCESS))?;
        uaccess::probe_pages_writable(addresses as usize, array)?;
        let pages = space.get_write_watch(flags, base as usize, size, max)?;
        let bytes: Vec<u8> = pages.iter().flat_map(|p| p.to_ne_bytes()).collect();
        uaccess::write_bytes(addresses as usize, &bytes)?;
        let n = pages.len();
        traced = trace::on().then_some(pages);
        n
    };
    uaccess::store(count, n)?;
    uaccess::store(granularity, PAGE as DWORD)?;
    if let Some(addresses) = traced {
        *out = Out::WriteWatch { addresses, granularity: PAGE as DWORD };
    }
    Ok(0)
}

/// `GetWriteWatch`: the pages of a `MEM_WRITE_WATCH` reservation of the current process
/// written since the last reset, in ascending order, at most `*lpdwCount` of them
/// (`WRITE_WATCH_FLAG_RESET` also resets the ones reported). Returns 0, or `0xFFFFFFFF`
/// with the last error set. The addresses are stored straight into `lpAddresses` (when it
/// is pointer-aligned, as C arrays are; a misaligned one is filled through a copy), which
/// must be writable for `*lpdwCount` entries (or one per page of the range, if fewer):
/// otherwise `ERROR_NOACCESS` (998), and nothing is stored or reset. Where the kernel lacks userfaultfd's asynchronous write
/// protection or the `PAGEMAP_SCAN` ioctl (Linux before 6.7), or with `MEM_LARGE_PAGES`,
/// `MEM_WRITE_WATCH` allocations fail with `ERROR_NOT_SUPPORTED` (50).
#[no_mangle]
pub unsafe extern "C" fn GetWriteWatch(
    dwFlags: DWORD,
    lpBaseAddress: PVOID,
    dwRegionSize: SIZE_T,
    lpAddresses: *mut PVOID,
    lpdwCount: PULONG_PTR,
    lpdwGranularity: LPDWORD,
) -> UINT {
    let (mut count_in, mut out) = (None, Out::None);
    let (r, err) = run(u32::MAX, || {
        let space = current_space()?;
        let (base, size) = (lpBaseAddress, dwRegionSize);
        get_write_watch(space, dwFlags, base, size, lpAddresses, lpdwCount, lpdwGranularity, &mut count_in, &mut out)
    });
    if trace::on() && count_in.is_none() && !lpdwCount.is_null() {
        count_in = uaccess::load(lpdwCount as *const ULONG_PTR).ok();
    }
    let call = Call::GetWriteWatch {
        flags: dwFlags,
        base: lpBaseAddress as usize,
        size: dwRegionSize,
        addresses: lpAddresses as usize,
        count: count_in,
        granularity: lpdwGranularity as usize,
    };
    trace::record(None, call, r as u64, err, out);
    r
}

/// `ResetWriteWatch`: mark every page of the range of a `MEM_WRITE_WATCH` reservation of
/// the current process as not written. Returns 0, or `0xFFFFFFFF` with the last error set.
#[no_mangle]
pub unsafe extern "C" fn ResetWriteWatch(lpBaseAddress: LPVOID, dwRegionSize: SIZE_T) -> UINT {
    let (r, err) = run(u32::MAX, || {
        current_space()?.reset_write_watch(lpBaseAddress as usize, dwRegionSize)?;
        Ok(0)
    });
    let call = Call::ResetWriteWatch { base: lpBaseAddress as usize, size: dwRegionSize };
    trace::record(None, call, r as u64, err, Out::None);
    r
}

/// `VirtualLock`: lock committed, accessible pages of the current process into memory.
/// `TRUE`, or `FALSE` with the last error set. An armed guard page in the range fails
/// the lock with `STATUS_GUARD_PAGE_VIOLATION` (0x80000001) itself as the last error and
/// is disarmed, as on Windows; locking again then succeeds. Memory libvirtmem did not
/// allocate (a `malloc`'d block, a stack) is never touched: locking it fails with
/// `ERROR_INVALID_ADDRESS` (487), as freeing it does.
#[no_mangle]
pub unsafe extern "C" fn VirtualLock(lpAddress: LPVOID, dwSize: SIZE_T) -> BOOL {
    let (r, err) = run(FALSE, || {
        // An armed guard page maps to STATUS_GUARD_PAGE_VIOLATION (see `Fail::from`).
        current_space()?.lock(lpAddress as usize, dwSize)?;
        Ok(TRUE)
    });
    trace::record(None, Call::Lock { address: lpAddress as usize, size: dwSize }, r as u64, err, Out::None);
    r
}

/// `VirtualUnlock`: unlock pages locked by `VirtualLock` (`ERROR_NOT_LOCKED` if some are
/// not). `TRUE`, or `FALSE` with the last error set.
#[no_mangle]
pub unsafe extern "C" fn VirtualUnlock(lpAddress: LPVOID, dwSize: SIZE_T) -> BOOL {
    let (r, err) = run(FALSE, || {
        current_space()?.unlock(lpAddress as usize, dwSize)?;
        Ok(TRUE)
    });
    trace::record(None, Call::Unlock { address: lpAddress as usize, size: dwSize }, r as u64, err, Out::None);
    r
}
