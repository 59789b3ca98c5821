//! Thin Win32-shaped functions for people porting code: raw `DWORD` flags, `0`/`NULL`
//! results and a per-thread last error, exactly as the Win32 API reports them.
//!
//! ```
//! use virtmem::{win32, SimSpace};
//! let space = SimSpace::simulated();
//! let p = win32::VirtualAlloc(&space, 0, 0x10000, win32::MEM_RESERVE, win32::PAGE_NOACCESS);
//! assert_ne!(p, 0);
//! assert_eq!(win32::VirtualAlloc(&space, p, 0, win32::MEM_COMMIT, win32::PAGE_READWRITE), 0);
//! assert_eq!(win32::GetLastError(), 87);
//! ```
#![allow(non_snake_case, non_camel_case_types, non_upper_case_globals)]

use std::cell::Cell;

use crate::error::Error;
use crate::flags::{
    AccessKind, AddressRequirements, AllocationType, FreeType, MemoryBasicInformation, Protection, WriteWatchFlags,
};
use crate::space::VirtualSpace;

/// `MEM_COMMIT`.
pub const MEM_COMMIT: u32 = 0x1000;
/// `MEM_RESERVE`.
pub const MEM_RESERVE: u32 = 0x2000;
/// `MEM_DECOMMIT`.
pub const MEM_DECOMMIT: u32 = 0x4000;
/// `MEM_RELEASE`.
pub const MEM_RELEASE: u32 = 0x8000;
/// `MEM_FREE`.
pub const MEM_FREE: u32 = 0x1_0000;
/// `MEM_PRIVATE`.
pub const MEM_PRIVATE: u32 = 0x2_0000;
/// `MEM_MAPPED`.
pub const MEM_MAPPED: u32 = 0x4_0000;
/// `MEM_RESET`.
pub const MEM_RESET: u32 = 0x8_0000;
/// `MEM_TOP_DOWN`.
pub const MEM_TOP_DOWN: u32 = 0x10_0000;
/// `MEM_WRITE_WATCH`.
pub const MEM_WRITE_WATCH: u32 = 0x20_0000;
/// `MEM_PHYSICAL`.
pub const MEM_PHYSICAL: u32 = 0x40_0000;
/// `MEM_RESET_UNDO`.
pub const MEM_RESET_UNDO: u32 = 0x100_0000;
/// `MEM_IMAGE`.
pub const MEM_IMAGE: u32 = 0x100_0000;
/// `MEM_LARGE_PAGES`.
pub const MEM_LARGE_PAGES: u32 = 0x2000_0000;
/// `PAGE_NOACCESS`.
pub const PAGE_NOACCESS: u32 = 0x01;
/// `PAGE_READONLY`.
pub const PAGE_READONLY: u32 = 0x02;
/// `PAGE_READWRITE`.
pub const PAGE_READWRITE: u32 = 0x04;
/// `PAGE_WRITECOPY`.
pub const PAGE_WRITECOPY: u32 = 0x08;
/// `PAGE_EXECUTE`.
pub const PAGE_EXECUTE: u32 = 0x10;
/// `PAGE_EXECUTE_READ`.
pub const PAGE_EXECUTE_READ: u32 = 0x20;
/// `PAGE_EXECUTE_READWRITE`.
pub const PAGE_EXECUTE_READWRITE: u32 = 0x40;
/// `PAGE_EXECUTE_WRITECOPY`.
pub const PAGE_EXECUTE_WRITECOPY: u32 = 0x80;
/// `PAGE_GUARD`.
pub const PAGE_GUARD: u32 = 0x100;
/// `PAGE_NOCACHE`.
pub const PAGE_NOCACHE: u32 = 0x200;
/// `PAGE_WRITECOMBINE`.
pub const PAGE_WRITECOMBINE: u32 = 0x400;
/// `WRITE_WATCH_FLAG_RESET`.
pub const WRITE_WATCH_FLAG_RESET: u32 = 1;
/// `MEM_REPLACE_PLACEHOLDER` (`VirtualAlloc2`): not supported, refused with 87.
pub const MEM_REPLACE_PLACEHOLDER: u32 = 0x4000;
/// `MEM_RESERVE_PLACEHOLDER` (`VirtualAlloc2`): not supported, refused with 87.
pub const MEM_RESERVE_PLACEHOLDER: u32 = 0x4_0000;

/// `MEM_EXTENDED_PARAMETER_TYPE_BITS`: the type is the low 8 bits of a
/// `MEM_EXTENDED_PARAMETER`'s first word, the other 56 are reserved (zero).
pub const MEM_EXTENDED_PARAMETER_TYPE_BITS: u32 = 8;
/// `MemExtendedParameterInvalidType` (0): refused with 87.
pub const MemExtendedParameterInvalidType: u64 = 0;
/// `MemExtendedParameterAddressRequirements` (1): the value points to a
/// `MEM_ADDRESS_REQUIREMENTS` ([`AddressRequirements`]).
pub const MemExtendedParameterAddressRequirements: u64 = 1;
/// `MemExtendedParameterNumaNode` (2): the value is the preferred NUMA node (only node 0,
/// the one node an address space here has, is taken; it changes nothing).
pub const MemExtendedParameterNumaNode: u64 = 2;
/// `MemExtendedParameterPartitionHandle` (3): not supported, refused with 87.
pub const MemExtendedParameterPartitionHandle: u64 = 3;
/// `MemExtendedParameterUserPhysicalHandle` (4): not supported, refused with 87.
pub const MemExtendedParameterUserPhysicalHandle: u64 = 4;
/// `MemExtendedParameterAttributeFlags` (5): not supported, refused with 87.
pub const MemExtendedParameterAttributeFlags: u64 = 5;
/// `MemExtendedParameterImageMachine` (6): not supported, refused with 87.
pub const MemExtendedParameterImageMachine: u64 = 6;
/// `MemExtendedParameterMax` (7): the first value that is no type (refused with 87, as
/// are all above it).
pub const MemExtendedParameterMax: u64 = 7;

/// One `MEM_EXTENDED_PARAMETER` of a `VirtualAlloc2` call, as the caller's memory held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedParameter {
    /// The first 64-bit word: `Type` in the low [`MEM_EXTENDED_PARAMETER_TYPE_BITS`] bits,
    /// `Reserved` above them.
    pub type_word: u64,
    /// The second word, the union (`ULong64`, `Pointer`, `Size`, `Handle`, `ULong`).
    pub value: u64,
    /// For a `MemExtendedParameterAddressRequirements` parameter, the
    /// `MEM_ADDRESS_REQUIREMENTS` its pointer points to; `None` when the pointer is NULL
    /// or could not be read (then the call fails with `ERROR_NOACCESS`, 998), and for every
    /// other type.
    pub requirements: Option<AddressRequirements>,
}

impl ExtendedParameter {
    /// The parameter's `Type` (the low 8 bits of its first word).
    pub fn param_type(&self) -> u64 {
        self.type_word & ((1 << MEM_EXTENDED_PARAMETER_TYPE_BITS) - 1)
    }
}

/// `VirtualAlloc2`'s flags and extended parameters, checked in this order, before the
/// space is looked at: `MEM_RESERVE_PLACEHOLDER` or `MEM_REPLACE_PLACEHOLDER` in `ty`
/// (placeholders are not supported) -> `ERROR_INVALID_PARAMETER` (87); then each parameter
/// in turn (an `Err` item, one the caller could not read, gives its error: libvirtmem's
/// is `ERROR_NOACCESS`, 998): `Reserved` bits set -> 87; a type other than address
/// requirements and NUMA node (`MemExtendedParameterInvalidType`, the partition and
/// physical handles, attribute flags, image machine, or past the last type) -> 87; a
/// second parameter of one type -> 87; address requirements whose pointer is NULL or
/// unreadable -> 998; a NUMA node other than 0 -> 87. Last, with address requirements
/// that are not all zero a non-NULL `address` -> 87 (Microsoft: with a base address they
/// must be all zeros), and with requirements all zero an `address` that is not a
/// multiple of 64 KiB -> 87.
///
/// The answer: the address requirements to place the reservation by, `None` when there
/// are none or they are all zeros ("the same as not specifying one"). Items after the
/// first refused one are not looked at.
pub fn alloc2_parameters(
    address: usize,
    ty: u32,
    params: impl IntoIterator<Item = Result<ExtendedParameter, Error>>,
) -> Result<Option<AddressRequirements>, Error> {
    if ty & (MEM_RESERVE_PLACEHOLDER | MEM_REPLACE_PLACEHOLDER) != 0 {
        return Err(Error::InvalidParameter);
    }
    let (mut req, mut numa) = (None, false);
    for p in params {
        let p = p?;
        if p.type_word >> MEM_EXTENDED_PARAMETER_TYPE_BITS != 0 {
            return Err(Error::InvalidParameter);
        }
        match p.param_type() {
            MemExtendedParameterAddressRequirements if req.is_none() => {
                req = Some(p.requirements.ok_or(Error::NoAccess)?);
            }
            MemExtendedParameterNumaNode if !numa && p.value == 0 => numa = true,
            _ => return Err(Error::InvalidParameter),
        }
    }
    match req {
        Some(r) if r == AddressRequirements::default() => {
            if address % crate::rules::GRANULE != 0 {
                return Err(Error::InvalidParameter);
            }
            Ok(None)
        }
        Some(_) if address != 0 => Err(Error::InvalidParameter),
        r => Ok(r),
    }
}

/// `VirtualAlloc2` once its parameters are checked ([`alloc2_parameters`]): without
/// address requirements what `VirtualAlloc(address, size, ty, protect)` does, with them
/// [`VirtualSpace::alloc_within`] (a new reservation in their window, at their alignment,
/// bottom-up or `MEM_TOP_DOWN`).
pub fn alloc2<S: VirtualSpace + ?Sized>(
    space: &S,
    address: usize,
    size: usize,
    ty: u32,
    protect: u32,
    req: Option<AddressRequirements>,
) -> Result<usize, Error> {
    let (ty, protect) = (AllocationType::from_bits_retain(ty), Protection::from_bits_retain(protect));
    match req {
        None => space.alloc(address, size, ty, protect),
        Some(r) => space.alloc_within(size, ty, protect, r),
    }
}

/// `MEMORY_BASIC_INFORMATION` in the Win64 layout (48 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MEMORY_BASIC_INFORMATION {
    /// `BaseAddress`.
    pub BaseAddress: usize,
    /// `AllocationBase`.
    pub AllocationBase: usize,
    /// `AllocationProtect`.
    pub AllocationProtect: u32,
    /// `PartitionId` (always 0).
    pub PartitionId: u16,
    /// Padding.
    pub _pad0: u16,
    /// `RegionSize`.
    pub RegionSize: usize,
    /// `State`.
    pub State: u32,
    /// `Protect`.
    pub Protect: u32,
    /// `Type`.
    pub Type: u32,
    /// Padding.
    pub _pad1: u32,
}

impl From<MemoryBasicInformation> for MEMORY_BASIC_INFORMATION {
    fn from(m: MemoryBasicInformation) -> Self {
        MEMORY_BASIC_INFORMATION {
            BaseAddress: m.base_address,
            AllocationBase: m.allocation_base,
            AllocationProtect: m.allocation_protect.bits(),
            PartitionId: 0,
            _pad0: 0,
            RegionSize: m.region_size,
            State: m.state as u32,
            Protect: m.protect.bits(),
            Type: m.type_bits(),
            _pad1: 0,
        }
    }
}

thread_local! {
    static LAST_ERROR: Cell<u32> = const { Cell::new(0) };
}

/// The calling thread's last error.
pub fn GetLastError() -> u32 {
    LAST_ERROR.with(|c| c.get())
}

/// Set the calling thread's last error.
pub fn SetLastError(code: u32) {
    LAST_ERROR.with(|c| c.set(code))
}

/// Record `e` as the last error and return `fail`.
fn fail<T>(e: Error, fail: T) -> T {
    SetLastError(e.code());
    fail
}

/// The error `ReadProcessMemory` (`write` false) or `WriteProcessMemory` (`write` true)
/// reports when the other process's memory refused a copy starting at `address` (the
/// engine checks the whole range first, so nothing was copied): a read that meets a page
/// it may not read is `ERROR_PARTIAL_COPY` (299); a write is `ERROR_NOACCESS` (998) when
/// its first byte may not be written and `ERROR_PARTIAL_COPY` when it runs into such a
/// page further on. Any other error is returned as it is.
///
/// Plumbing shared with libvirtmem (`virtmem-capi`) and the `virtmem` command: hidden from
/// the documentation and not covered by semver.
#[doc(hidden)]
pub fn process_copy_error(e: Error, address: usize, write: bool) -> Error {
    match e {
        Error::AccessViolation { address: at, .. } | Error::GuardPage { address: at, .. } => {
            if write && at == address {
                Error::NoAccess
            } else {
                Error::PartialCopy
            }
        }
        Error::NoAccess if !write => Error::PartialCopy,
        other => other,
    }
}

/// Why a copy between processes may not start (see [`check_copy`]).
///
/// Plumbing shared with libvirtmem (`virtmem-capi`) and the `virtmem` command: hidden from
/// the documentation and not covered by semver.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyRefusal<E> {
    /// The address space refused the range: the engine's error (first faulting address).
    Space(Error),
    /// The caller's side of the copy failed its check.
    Caller(E),
}

/// The checks a copy between processes (`ReadProcessMemory`, `WriteProcessMemory`, a
/// checked access) makes on `size` bytes at `address` in `space` for `kind` before it
/// moves a byte, in this order: the range is first checked without side effects, and a
/// range the space refuses for any reason but an armed guard page fails at once, before
/// the caller's side is looked at; when the first obstacle is an armed guard page,
/// `caller_ok` (the check of the caller's buffer) runs first, so that a bad buffer fails
/// the call with the guard still armed (a failed call changes nothing); then the real
/// check disarms the guard and reports it. A range the quiet check passes holds no armed
/// guard page, so it needs no second look.
///
/// Plumbing shared with libvirtmem (`virtmem-capi`) and the `virtmem` command: hidden from
/// the documentation and not covered by semver.
#[doc(hidden)]
pub fn check_copy<S: VirtualSpace + ?Sized, E>(
    space: &S,
    address: usize,
    size: usize,
    kind: AccessKind,
    caller_ok: impl FnOnce() -> Result<(), E>,
) -> Result<(), CopyRefusal<E>> {
    match space.check_quiet(address, size, kind) {
        Err(Error::GuardPage { .. }) => caller_ok().map_err(CopyRefusal::Caller)?,
        Err(e) => return Err(CopyRefusal::Space(e)),
        Ok(()) => return Ok(()),
    }
    space.check(address, size, kind).map_err(CopyRefusal::Space)
}

/// Run `copy`, the copy of `WriteProcessMemory` to `size` bytes at `address` in `space`,
/// with code pages made writable for it, as Windows' `WriteProcessMemory` does (it is how
/// a debugger plants a breakpoint in another process's code).
///
/// When the first page of the range is committed `PAGE_EXECUTE` or `PAGE_EXECUTE_READ`
/// (with any modifier), the pages of the range that lie in that page's region (the run
/// `VirtualQuery` reports: same state and protection; in a `MEM_LARGE_PAGES` allocation,
/// whose protection changes by whole large pages, the large pages those pages lie in)
/// get `PAGE_EXECUTE_READWRITE` with
/// the same caching modifier and no guard for the copy, and their protection back after
/// it, whether the copy succeeded or not: a guard page stays armed and nothing else
/// changes. The rest of the range is not touched, so it must be writable as for any
/// other copy (a copy running from code into read-only pages still fails). Any other
/// first page (writable, read-only, no-access, reserved, free), code the space did not
/// allocate (a foreign mapping of the current process, which the engine never changes),
/// a size of 0 and a range that wraps leave `copy` to meet it as it is.
///
/// `Ok(copy's result)`, or the error of changing a protection: the first change failing
/// means `copy` did not run; the restoring change failing (which needs the system to
/// refuse a protection the pages held a moment before) is reported after the copy ran.
/// Another thread changing the same pages' protection at the same time may see the
/// writable protection, and its change may be undone by the restore, as on Windows.
///
/// Plumbing shared with libvirtmem (`virtmem-capi`) and the `virtmem` command: hidden from
/// the documentation and not covered by semver.
#[doc(hidden)]
pub fn with_code_writable<S: VirtualSpace + ?Sized, R>(
    space: &S,
    address: usize,
    size: usize,
    copy: impl FnOnce() -> R,
) -> Result<R, Error> {
    let Some(end) = address.checked_add(size).filter(|_| size > 0) else {
        return Ok(copy());
    };
    let code = |p: Protection| matches!(p.base(), Protection::EXECUTE | Protection::EXECUTE_READ);
    let region = match space.query(address) {
        Ok(m) if m.state == crate::flags::MemState::Commit && code(m.protect) => m,
        _ => return Ok(copy()),
    };
    let mut first = region.base_address;
    let mut last = end.min(region.base_address + region.region_size);
    let writable = Protection::EXECUTE_READWRITE | (region.protect.modifiers() - Protection::GUARD);
    let mut changed = space.protect(first, last - first, writable);
    if matches!(changed, Err(Error::InvalidParameter)) {
        // A `MEM_LARGE_PAGES` allocation changes whole large pages only (one protection
        // each): make writable the large pages the range touches.
        if let Some((lo, hi)) = large_pages_of(space, &region, first, last) {
            (first, last) = (lo, hi);
            changed = space.protect(first, last - first, writable);
        }
    }
    let old = match changed {
        Ok(old) => old,
        // Committed code the space did not allocate (a mapping of the current process
        // that is not the engine's, which it never changes), or pages decommitted or
        // released since the query: the copy meets them as they are.
        Err(Error::InvalidAddress) => return Ok(copy()),
        Err(e) => return Err(e),
    };
    let result = copy();
    space.protect(first, last - first, old)?;
    Ok(result)
}

/// The whole large pages `[first, last)` touches, when `region` (the code at `first`, as
/// `VirtualQuery` reported it) covers all of them; `None` where there are no large pages.
fn large_pages_of<S: VirtualSpace + ?Sized>(
    space: &S,
    region: &MemoryBasicInformation,
    first: usize,
    last: usize,
) -> Option<(usize, usize)> {
    let lp = space.system_info().large_page_size;
    if lp == 0 {
        return None;
    }
    let (lo, hi) = (crate::rules::round_down(first, lp), crate::rules::round_up(last, lp)?);
    let m = space.query(lo).ok()?;
    let same = m.allocation_base == region.allocation_base
        && m.state == region.state
        && m.protect == region.protect
        && m.base_address + m.region_size >= hi;
    same.then_some((lo, hi))
}

/// `VirtualAlloc`: the base, or 0 with the last error set.
pub fn VirtualAlloc<S: VirtualSpace + ?Sized>(space: &S, address: usize, size: usize, ty: u32, protect: u32) -> usize {
    match space.alloc(address, size, AllocationType::from_bits_retain(ty), Protection::from_bits_retain(protect)) {
        Ok(p) => p,
        Err(e) => fail(e, 0),
    }
}

/// `VirtualAlloc2(process, address, size, ty, protect, params)` on `space` (the process's):
/// the base, or 0 with the last error set. A `size` of 0 is `ERROR_INVALID_PARAMETER` (87)
/// first; then the flags and parameters are checked ([`alloc2_parameters`]); then the
/// call is [`alloc2`]'s. With no parameters it is [`VirtualAlloc`] exactly.
///
/// ```
/// use virtmem::{win32, AddressRequirements, SimSpace};
/// let space = SimSpace::simulated();
/// let req = AddressRequirements { lowest_starting_address: 1 << 32, highest_ending_address: (1 << 33) - 1, alignment: 0 };
/// let p = win32::ExtendedParameter { type_word: win32::MemExtendedParameterAddressRequirements, value: 0, requirements: Some(req) };
/// let top = win32::VirtualAlloc2(&space, 0, 0x10000, win32::MEM_RESERVE | win32::MEM_TOP_DOWN, win32::PAGE_NOACCESS, &[p]);
/// assert_eq!(top, (1 << 33) - 0x10000);
/// ```
pub fn VirtualAlloc2<S: VirtualSpace + ?Sized>(
    space: &S,
    address: usize,
    size: usize,
    ty: u32,
    protect: u32,
    params: &[ExtendedParameter],
) -> usize {
    if size == 0 {
        return fail(Error::InvalidParameter, 0);
    }
    let placed = alloc2_parameters(address, ty, params.iter().copied().map(Ok))
        .and_then(|req| alloc2(space, address, size, ty, protect, req));
    match placed {
        Ok(p) => p,
        Err(e) => fail(e, 0),
    }
}

/// `VirtualFree`: 1 on success, 0 with the last error set.
pub fn VirtualFree<S: VirtualSpace + ?Sized>(space: &S, address: usize, size: usize, ty: u32) -> i32 {
    match space.free(address, size, FreeType::from_bits_retain(ty)) {
        Ok(()) => 1,
        Err(e) => fail(e, 0),
    }
}

/// `VirtualQuery`: bytes written (48) or 0 with the last error set. `buffer` `None` with a
/// sufficient `length` is `ERROR_NOACCESS`.
pub fn VirtualQuery<S: VirtualSpace + ?Sized>(
    space: &S,
    address: usize,
    buffer: Option<&mut MEMORY_BASIC_INFORMATION>,
    length: usize,
) -> usize {
    if length < std::mem::size_of::<MEMORY_BASIC_INFORMATION>() {
        return fail(Error::BadLength, 0);
    }
    match space.query(address) {
        Ok(m) => match buffer {
            Some(b) => {
                *b = m.into();
                std::mem::size_of::<MEMORY_BASIC_INFORMATION>()
            }
            None => fail(Error::NoAccess, 0),
        },
        Err(e) => fail(e, 0),
    }
}

/// `VirtualProtect`: 1 on success with `*old_protect` set, 0 with the last error set.
pub fn VirtualProtect<S: VirtualSpace + ?Sized>(
    space: &S,
    address: usize,
    size: usize,
    new_protect: u32,
    old_protect: Option<&mut u32>,
) -> i32 {
    let Some(old) = old_protect else {
        return fail(Error::NoAccess, 0);
    };
    match space.protect_detailed(address, size, Protection::from_bits_retain(new_protect)) {
        Ok(p) => {
            *old = p.bits();
            1
        }
        Err((e, reported)) => {
            if let Some(r) = reported {
                *old = r.bits();
            }
            fail(e, 0)
        }
    }
}

/// `GetWriteWatch`: 0 on success, `u32::MAX` with the last error set. `addresses` holds
/// room for `*count` entries (its length caps the count); `None` is a NULL array, and an
/// empty slice with `*count` > 0 is an array with no room: both fail with
/// `ERROR_NOACCESS` (998), where Windows would fault writing the first address.
pub fn GetWriteWatch<S: VirtualSpace + ?Sized>(
    space: &S,
    flags: u32,
    base: usize,
    size: usize,
    addresses: Option<&mut [usize]>,
    count: Option<&mut usize>,
    granularity: Option<&mut u32>,
) -> u32 {
    if crate::rules::write_watch_flags(WriteWatchFlags::from_bits_retain(flags)).is_err() {
        return fail(Error::InvalidParameter, u32::MAX);
    }
    let (Some(count), Some(granularity)) = (count, granularity) else {
        return fail(Error::NoAccess, u32::MAX);
    };
    if *count == 0 {
        return fail(Error::InvalidParameter, u32::MAX);
    }
    let Some(addresses) = addresses else {
        return fail(Error::NoAccess, u32::MAX);
    };
    let max = (*count).min(addresses.len());
    if max == 0 {
        return fail(Error::NoAccess, u32::MAX);
    }
    // (Straight into the caller's array: no allocation on the way.)
    match space.get_write_watch_into(WriteWatchFlags::from_bits_retain(flags), base, size, &mut addresses[..max]) {
        Ok(n) => {
            *count = n;
            *granularity = crate::rules::PAGE as u32;
            0
        }
        Err(e) => fail(e, u32::MAX),
    }
}

/// `ResetWriteWatch`: 0 on success, nonzero with the last error set.
pub fn ResetWriteWatch<S: VirtualSpace + ?Sized>(space: &S, base: usize, size: usize) -> u32 {
    match space.reset_write_watch(base, size) {
        Ok(()) => 0,
        Err(e) => fail(e, u32::MAX),
    }
}

/// `VirtualLock`: 1 on success, 0 with the last error set. Locking an armed guard page
/// fails with `STATUS_GUARD_PAGE_VIOLATION` (0x80000001) itself as the last error (and
/// disarms the page), as Windows does.
pub fn VirtualLock<S: VirtualSpace + ?Sized>(space: &S, address: usize, size: usize) -> i32 {
    match space.lock(address, size) {
        Ok(()) => 1,
        Err(e @ Error::GuardPage { .. }) => {
            SetLastError(e.exception_code().unwrap_or(e.code()));
            0
        }
        Err(e) => fail(e, 0),
    }
}

/// `VirtualUnlock`: 1 on success, 0 with the last error set.
pub fn VirtualUnlock<S: VirtualSpace + ?Sized>(space: &S, address: usize, size: usize) -> i32 {
    match space.unlock(address, size) {
        Ok(()) => 1,
        Err(e) => fail(e, 0),
    }
}

/// `FlushInstructionCache` on this process: make instruction fetches see the stores made
/// in `[address, address + size)` (see [`VirtualSpace::flush_instruction_cache`]). Any
/// range is accepted: always 1 (`TRUE`), the last error untouched.
pub fn FlushInstructionCache<S: VirtualSpace + ?Sized>(space: &S, address: usize, size: usize) -> i32 {
    space.flush_instruction_cache(address, size);
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbi_is_48_bytes_in_win64_layout() {
        assert_eq!(std::mem::size_of::<MEMORY_BASIC_INFORMATION>(), 48);
        assert_eq!(std::mem::offset_of!(MEMORY_BASIC_INFORMATION, RegionSize), 24);
        assert_eq!(std::mem::offset_of!(MEMORY_BASIC_INFORMATION, State), 32);
        assert_eq!(std::mem::offset_of!(MEMORY_BASIC_INFORMATION, Type), 40);
    }

    fn param(type_word: u64, value: u64) -> ExtendedParameter {
        ExtendedParameter { type_word, value, requirements: None }
    }

    fn window(lo: usize, hi: usize, align: usize) -> ExtendedParameter {
        let r = AddressRequirements { lowest_starting_address: lo, highest_ending_address: hi, alignment: align };
        ExtendedParameter { requirements: Some(r), ..param(MemExtendedParameterAddressRequirements, 0x1234) }
    }

    /// `alloc2_parameters`' rules and their order: the first refused parameter decides,
    /// and the ones after it (an unreadable one among them) are not looked at.
    #[test]
    fn alloc2_parameters_are_checked_in_order() {
        let ok = |ps: Vec<ExtendedParameter>| ps.into_iter().map(Ok);
        let req = window(1 << 32, (1 << 33) - 1, 0).requirements;
        assert_eq!(alloc2_parameters(0, MEM_RESERVE, ok(vec![])), Ok(None));
        assert_eq!(alloc2_parameters(0, MEM_RESERVE, ok(vec![window(1 << 32, (1 << 33) - 1, 0)])), Ok(req));
        let numa0 = param(MemExtendedParameterNumaNode, 0);
        assert_eq!(alloc2_parameters(0, MEM_RESERVE, ok(vec![numa0, window(1 << 32, (1 << 33) - 1, 0)])), Ok(req));
        let bad = Err(Error::InvalidParameter);
        let refused = [
            vec![window(0, 0, 0), window(0, 0, 0)],
            vec![numa0, numa0],
            vec![param(MemExtendedParameterNumaNode, 1)],
            vec![param(MemExtendedParameterAddressRequirements | 1 << 8, 0)],
            vec![ExtendedParameter { type_word: 1 << 63 | 1, ..window(0, 0, 0) }],
            vec![param(MemExtendedParameterInvalidType, 0)],
            vec![param(MemExtendedParameterPartitionHandle, 0)],
            vec![param(MemExtendedParameterUserPhysicalHandle, 0)],
            vec![param(MemExtendedParameterAttributeFlags, 0)],
            vec![param(MemExtendedParameterImageMachine, 0)],
            vec![param(MemExtendedParameterMax, 0)],
            vec![param(0xFF, 0)],
        ];
        for ps in refused {
            assert_eq!(alloc2_parameters(0, MEM_RESERVE, ok(ps.clone())), bad, "{ps:?}");
        }
        // A NULL (or unreadable) requirements pointer: 998, unless a refusal comes first.
        let null = param(MemExtendedParameterAddressRequirements, 0);
        assert_eq!(alloc2_parameters(0, MEM_RESERVE, ok(vec![null])), Err(Error::NoAccess));
        assert_eq!(alloc2_parameters(0, MEM_RESERVE, ok(vec![param(3, 0), null])), bad);
        // An entry the caller could not read gives its error; nothing after it is asked for.
        let after = [Ok(numa0), Err(Error::NoAccess), Err(Error::NotSupported)];
        assert_eq!(alloc2_parameters(0, MEM_RESERVE, after), Err(Error::NoAccess));
        let first_refused = [Ok(param(0, 0)), Err(Error::NoAccess)];
        assert_eq!(alloc2_parameters(0, MEM_RESERVE, first_refused), bad);
        // Placeholders before any parameter.
        assert_eq!(alloc2_parameters(0, MEM_RESERVE | MEM_RESERVE_PLACEHOLDER, ok(vec![null])), bad);
        assert_eq!(alloc2_parameters(0, MEM_RESERVE | MEM_REPLACE_PLACEHOLDER, ok(vec![])), bad);
        // A base address: requirements must be all zeros, and the base on 64 KiB.
        assert_eq!(alloc2_parameters(0x10000, MEM_RESERVE, ok(vec![window(1 << 32, 0, 0)])), bad);
        assert_eq!(alloc2_parameters(0x10000, MEM_RESERVE, ok(vec![window(0, 0, 0)])), Ok(None));
        assert_eq!(alloc2_parameters(0x11000, MEM_RESERVE, ok(vec![window(0, 0, 0)])), bad);
        assert_eq!(
            alloc2_parameters(0x11000, MEM_COMMIT, ok(vec![])),
            Ok(None),
            "no requirement: VirtualAlloc's rules"
        );
    }

    /// With no parameters `VirtualAlloc2` is `VirtualAlloc`; with a window it places there.
    #[test]
    fn virtual_alloc2_is_virtual_alloc_or_places_in_the_window() {
        let (a, b) = (crate::SimSpace::simulated(), crate::SimSpace::simulated());
        for (size, ty, protect) in [
            (0x10000, MEM_RESERVE, PAGE_READWRITE),
            (0x1000, MEM_COMMIT, PAGE_READWRITE),
            (0x10000, MEM_RESERVE | MEM_TOP_DOWN, PAGE_EXECUTE_READ),
            (0, MEM_RESERVE, PAGE_READWRITE),
            (0x10000, MEM_RESERVE, PAGE_WRITECOPY),
            (0x10000, MEM_RESET, PAGE_READWRITE),
        ] {
            SetLastError(0);
            let x = (VirtualAlloc(&a, 0, size, ty, protect), GetLastError());
            SetLastError(0);
            assert_eq!((VirtualAlloc2(&b, 0, size, ty, protect, &[]), GetLastError()), x, "{size:#x} {ty:#x}");
        }
        let w = [window(1 << 32, (1 << 33) - 1, 1 << 20)];
        assert_eq!(VirtualAlloc2(&b, 0, 0x10000, MEM_RESERVE, PAGE_READWRITE, &w), 1 << 32);
        assert_eq!(VirtualAlloc2(&b, 0, 0x10000, MEM_RESERVE, PAGE_READWRITE, &w), (1 << 32) + (1 << 20));
        assert_eq!(
            VirtualAlloc2(&b, 0, 0x10000, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE, &w),
            (1 << 33) - (1 << 20)
        );
        assert_eq!(VirtualAlloc2(&b, 0, 0, MEM_RESERVE, PAGE_READWRITE, &[param(0, 0)]), 0);
        assert_eq!(GetLastError(), 87, "size 0 first");
        let tight = [window(1 << 32, (1 << 32) + 0xFFFF, 0)];
        assert_eq!(VirtualAlloc2(&b, 0, 0x10000, MEM_RESERVE, PAGE_READWRITE, &tight), 0);
        assert_eq!(GetLastError(), 8, "no room in the window");
    }

    /// `check_copy`'s order: the caller's side is looked at only when the first obstacle
    /// is an armed guard page, and before the guard is disarmed; a clear range never asks.
    #[test]
    fn check_copy_looks_at_the_caller_only_before_disarming_a_guard() {
        let space = crate::SimSpace::simulated();
        let p = VirtualAlloc(&space, 0, 0x3000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
        let mut old = 0;
        assert_eq!(VirtualProtect(&space, p + 0x1000, 0x1000, PAGE_READWRITE | PAGE_GUARD, Some(&mut old)), 1);
        let asked = std::cell::Cell::new(0);
        let refuse = || {
            asked.set(asked.get() + 1);
            Err("bad buffer")
        };
        let read = AccessKind::Read;
        assert_eq!(check_copy(&space, p, 0x1000, read, refuse), Ok(()));
        assert_eq!(
            check_copy(&space, p + 0x3000, 1, read, refuse),
            Err(CopyRefusal::Space(Error::AccessViolation { address: p + 0x3000, access: read }))
        );
        assert_eq!(asked.get(), 0, "no guard page met: the caller is not asked");
        assert_eq!(check_copy(&space, p, 0x2000, read, refuse), Err(CopyRefusal::Caller("bad buffer")));
        assert_eq!(asked.get(), 1);
        assert_eq!(space.query(p + 0x1000).map(|m| m.protect.bits()), Ok(PAGE_READWRITE | PAGE_GUARD), "still armed");
        let fine = || Ok::<(), &str>(());
        assert!(
            matches!(check_copy(&space, p, 0x2000, read, fine), Err(CopyRefusal::Space(Error::GuardPage { address, .. })) if address == p + 0x1000)
        );
        assert_eq!(space.query(p + 0x1000).map(|m| m.protect.bits()), Ok(PAGE_READWRITE), "disarmed by the real check");
        assert_eq!(check_copy(&space, p, 0x2000, read, refuse), Ok(()));
    }
}
