//! The Win32 x64 types, constants and structures of the C API, exactly as `<windows.h>`
//! spells them (a subset): what `include/virtmem.h` declares.

#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::c_void;

/// `BYTE`: an 8-bit unsigned integer.
pub type BYTE = u8;
/// `WORD`: a 16-bit unsigned integer.
pub type WORD = u16;
/// `DWORD`: a 32-bit unsigned integer.
pub type DWORD = u32;
/// `BOOL`: a 32-bit signed integer, `TRUE` (1) or `FALSE` (0).
pub type BOOL = i32;
/// `UINT`: a 32-bit unsigned integer.
pub type UINT = u32;
/// `ULONG`: a 32-bit unsigned integer (Win64 is LLP64).
pub type ULONG = u32;
/// `DWORD64`: a 64-bit unsigned integer.
pub type DWORD64 = u64;
/// `ULONG64`: a 64-bit unsigned integer.
pub type ULONG64 = u64;
/// `SIZE_T`: an unsigned integer as wide as a pointer.
pub type SIZE_T = libc::size_t;
/// `ULONG_PTR`: an unsigned integer as wide as a pointer.
pub type ULONG_PTR = usize;
/// `DWORD_PTR`: an unsigned integer as wide as a pointer.
pub type DWORD_PTR = usize;
/// `UINT_PTR`: an unsigned integer as wide as a pointer (for address arithmetic).
pub type UINT_PTR = usize;
/// `INT_PTR`: a signed integer as wide as a pointer (a difference of addresses).
pub type INT_PTR = isize;
/// `LONG_PTR`: a signed integer as wide as a pointer.
pub type LONG_PTR = isize;
/// `HANDLE`: an opaque handle (a process handle here).
pub type HANDLE = *mut c_void;
/// `LPVOID`: a pointer to anything.
pub type LPVOID = *mut c_void;
/// `PVOID`: a pointer to anything.
pub type PVOID = *mut c_void;
/// `LPCVOID`: a pointer to anything constant.
pub type LPCVOID = *const c_void;
/// `PDWORD`: a pointer to a `DWORD`.
pub type PDWORD = *mut DWORD;
/// `LPDWORD`: a pointer to a `DWORD`.
pub type LPDWORD = *mut DWORD;
/// `PSIZE_T`: a pointer to a `SIZE_T`.
pub type PSIZE_T = *mut SIZE_T;
/// `PULONG_PTR`: a pointer to a `ULONG_PTR`.
pub type PULONG_PTR = *mut ULONG_PTR;
/// `PBYTE`: a pointer to bytes (what code that does arithmetic on `VirtualAlloc`'s
/// result casts it to).
pub type PBYTE = *mut BYTE;
/// `LPBYTE`: a pointer to bytes.
pub type LPBYTE = *mut BYTE;
/// `PMEMORY_BASIC_INFORMATION`: a pointer to a `MEMORY_BASIC_INFORMATION`.
pub type PMEMORY_BASIC_INFORMATION = *mut MEMORY_BASIC_INFORMATION;
/// `LPSYSTEM_INFO`: a pointer to a `SYSTEM_INFO`.
pub type LPSYSTEM_INFO = *mut SYSTEM_INFO;
/// `PMEM_ADDRESS_REQUIREMENTS`: a pointer to a `MEM_ADDRESS_REQUIREMENTS`.
pub type PMEM_ADDRESS_REQUIREMENTS = *mut MEM_ADDRESS_REQUIREMENTS;

// The Win32 structures are declared under the struct tags of the Windows SDK
// (`_MEMORY_BASIC_INFORMATION`, ...), each with a type alias of its usual name: cbindgen
// (style "both") writes a struct's tag and typedef with one name, so the alias is what
// gives C the SDK's `typedef struct _NAME NAME;`, and ported code may spell either.
/// `MEMORY_BASIC_INFORMATION`: the usual name of `struct _MEMORY_BASIC_INFORMATION`.
pub type MEMORY_BASIC_INFORMATION = _MEMORY_BASIC_INFORMATION;
/// `SYSTEM_INFO`: the usual name of `struct _SYSTEM_INFO`.
pub type SYSTEM_INFO = _SYSTEM_INFO;
/// `MEM_ADDRESS_REQUIREMENTS`: the usual name of `struct _MEM_ADDRESS_REQUIREMENTS`.
pub type MEM_ADDRESS_REQUIREMENTS = _MEM_ADDRESS_REQUIREMENTS;

/// `MEM_COMMIT` (0x1000): commit pages (`VirtualAlloc`), or the committed state (`VirtualQuery`).
pub const MEM_COMMIT: DWORD = 0x1000;
/// `MEM_RESERVE` (0x2000): reserve address space, or the reserved state.
pub const MEM_RESERVE: DWORD = 0x2000;
/// `MEM_DECOMMIT` (0x4000): decommit pages (`VirtualFree`).
pub const MEM_DECOMMIT: DWORD = 0x4000;
/// `MEM_RELEASE` (0x8000): release a whole reservation (`VirtualFree`).
pub const MEM_RELEASE: DWORD = 0x8000;
/// `MEM_FREE` (0x10000): the free state (`VirtualQuery`).
pub const MEM_FREE: DWORD = 0x10000;
/// `MEM_PRIVATE` (0x20000): the type of `VirtualAlloc` memory (`VirtualQuery`).
pub const MEM_PRIVATE: DWORD = 0x20000;
/// `MEM_MAPPED` (0x40000): the type of a mapped view (`VirtualQuery`).
pub const MEM_MAPPED: DWORD = 0x40000;
/// `MEM_RESET` (0x80000): the contents of a range are no longer of interest.
pub const MEM_RESET: DWORD = 0x80000;
/// `MEM_TOP_DOWN` (0x100000): place a reservation as high as possible.
pub const MEM_TOP_DOWN: DWORD = 0x100000;
/// `MEM_WRITE_WATCH` (0x200000): track writes to a reservation (`GetWriteWatch`).
pub const MEM_WRITE_WATCH: DWORD = 0x200000;
/// `MEM_PHYSICAL` (0x400000): an AWE region (only as `MEM_PHYSICAL | MEM_RESERVE`, with
/// `PAGE_READWRITE`).
pub const MEM_PHYSICAL: DWORD = 0x400000;
/// `MEM_RESET_UNDO` (0x1000000): undo a `MEM_RESET` if the data survived.
pub const MEM_RESET_UNDO: DWORD = 0x1000000;
/// `MEM_IMAGE` (0x1000000): the type of a mapped executable image (`VirtualQuery`).
pub const MEM_IMAGE: DWORD = 0x1000000;
/// `MEM_LARGE_PAGES` (0x20000000): back an allocation with large pages.
pub const MEM_LARGE_PAGES: DWORD = 0x20000000;
/// `MEM_REPLACE_PLACEHOLDER` (0x4000, `VirtualAlloc2`): placeholders are not supported;
/// `VirtualAlloc2` refuses it with `ERROR_INVALID_PARAMETER` (87).
pub const MEM_REPLACE_PLACEHOLDER: DWORD = 0x4000;
/// `MEM_RESERVE_PLACEHOLDER` (0x40000, `VirtualAlloc2`): placeholders are not supported;
/// `VirtualAlloc2` refuses it with `ERROR_INVALID_PARAMETER` (87).
pub const MEM_RESERVE_PLACEHOLDER: DWORD = 0x40000;
/// `MEM_COALESCE_PLACEHOLDERS` (0x1, `VirtualFree` with `MEM_RELEASE`): placeholders are
/// not supported; `VirtualFree` refuses it with `ERROR_INVALID_PARAMETER` (87). Declared
/// because code written for SDKs without `VirtualAlloc2` tests these flags to decide
/// whether to declare `MEM_EXTENDED_PARAMETER` itself.
pub const MEM_COALESCE_PLACEHOLDERS: DWORD = 0x1;
/// `MEM_PRESERVE_PLACEHOLDER` (0x2, `VirtualFree` with `MEM_RELEASE`): placeholders are
/// not supported; `VirtualFree` refuses it with `ERROR_INVALID_PARAMETER` (87).
pub const MEM_PRESERVE_PLACEHOLDER: DWORD = 0x2;

/// `PAGE_NOACCESS` (0x01).
pub const PAGE_NOACCESS: DWORD = 0x01;
/// `PAGE_READONLY` (0x02).
pub const PAGE_READONLY: DWORD = 0x02;
/// `PAGE_READWRITE` (0x04).
pub const PAGE_READWRITE: DWORD = 0x04;
/// `PAGE_WRITECOPY` (0x08) (invalid for private memory).
pub const PAGE_WRITECOPY: DWORD = 0x08;
/// `PAGE_EXECUTE` (0x10).
pub const PAGE_EXECUTE: DWORD = 0x10;
/// `PAGE_EXECUTE_READ` (0x20).
pub const PAGE_EXECUTE_READ: DWORD = 0x20;
/// `PAGE_EXECUTE_READWRITE` (0x40).
pub const PAGE_EXECUTE_READWRITE: DWORD = 0x40;
/// `PAGE_EXECUTE_WRITECOPY` (0x80) (invalid for private memory).
pub const PAGE_EXECUTE_WRITECOPY: DWORD = 0x80;
/// `PAGE_GUARD` (0x100): the first access raises `STATUS_GUARD_PAGE_VIOLATION` once.
pub const PAGE_GUARD: DWORD = 0x100;
/// `PAGE_NOCACHE` (0x200).
pub const PAGE_NOCACHE: DWORD = 0x200;
/// `PAGE_WRITECOMBINE` (0x400).
pub const PAGE_WRITECOMBINE: DWORD = 0x400;

/// `WRITE_WATCH_FLAG_RESET` (0x01): `GetWriteWatch` resets the pages it reports.
pub const WRITE_WATCH_FLAG_RESET: DWORD = 0x01;

/// `ERROR_SUCCESS` (0).
pub const ERROR_SUCCESS: DWORD = 0;
/// `ERROR_ACCESS_DENIED` (5): the process has exited.
pub const ERROR_ACCESS_DENIED: DWORD = 5;
/// `ERROR_INVALID_HANDLE` (6): a NULL or unknown handle.
pub const ERROR_INVALID_HANDLE: DWORD = 6;
/// `ERROR_NOT_ENOUGH_MEMORY` (8).
pub const ERROR_NOT_ENOUGH_MEMORY: DWORD = 8;
/// `ERROR_BAD_LENGTH` (24): a buffer smaller than the structure it must hold.
pub const ERROR_BAD_LENGTH: DWORD = 24;
/// `ERROR_NOT_SUPPORTED` (50): the kernel lacks a feature the call needs, or the call
/// cannot be made on this process (`VirtmemSnapshotProcess` of the current process).
pub const ERROR_NOT_SUPPORTED: DWORD = 50;
/// `ERROR_INVALID_PARAMETER` (87).
pub const ERROR_INVALID_PARAMETER: DWORD = 87;
/// `ERROR_NOT_LOCKED` (158).
pub const ERROR_NOT_LOCKED: DWORD = 158;
/// `ERROR_BUSY` (170): `MEM_RESET_UNDO` found data that was discarded.
pub const ERROR_BUSY: DWORD = 170;
/// `ERROR_PARTIAL_COPY` (299): a `ReadProcessMemory` range that is not entirely readable.
pub const ERROR_PARTIAL_COPY: DWORD = 299;
/// `ERROR_INVALID_ADDRESS` (487).
pub const ERROR_INVALID_ADDRESS: DWORD = 487;
/// `ERROR_NOACCESS` (998): a bad pointer argument, or a write into memory that may not be written.
pub const ERROR_NOACCESS: DWORD = 998;
/// `ERROR_INTERNAL_ERROR` (1359): an internal error of libvirtmem (a bug); nothing was changed.
pub const ERROR_INTERNAL_ERROR: DWORD = 1359;
/// `ERROR_NO_SYSTEM_RESOURCES` (1450): large pages cannot be had.
pub const ERROR_NO_SYSTEM_RESOURCES: DWORD = 1450;
/// `ERROR_WORKING_SET_QUOTA` (1453): the OS refused to lock pages.
pub const ERROR_WORKING_SET_QUOTA: DWORD = 1453;
/// `ERROR_COMMITMENT_LIMIT` (1455).
pub const ERROR_COMMITMENT_LIMIT: DWORD = 1455;

/// `STATUS_ACCESS_VIOLATION` (0xC0000005): what `VirtmemAccess` returns for a forbidden access.
pub const STATUS_ACCESS_VIOLATION: DWORD = 0xC0000005_u32;
/// `STATUS_GUARD_PAGE_VIOLATION` (0x80000001): what `VirtmemAccess` returns for an armed guard page
/// (the guard is disarmed; retrying the access succeeds if the protection allows it).
pub const STATUS_GUARD_PAGE_VIOLATION: DWORD = 0x80000001_u32;

/// `PROCESSOR_ARCHITECTURE_INTEL` (x86).
pub const PROCESSOR_ARCHITECTURE_INTEL: WORD = 0;
/// `PROCESSOR_ARCHITECTURE_ARM`.
pub const PROCESSOR_ARCHITECTURE_ARM: WORD = 5;
/// `PROCESSOR_ARCHITECTURE_AMD64` (x86-64).
pub const PROCESSOR_ARCHITECTURE_AMD64: WORD = 9;
/// `PROCESSOR_ARCHITECTURE_ARM64`.
pub const PROCESSOR_ARCHITECTURE_ARM64: WORD = 12;
/// `PROCESSOR_ARCHITECTURE_UNKNOWN` (0xFFFF).
pub const PROCESSOR_ARCHITECTURE_UNKNOWN: WORD = 0xFFFF;
/// `PROCESSOR_AMD_X8664`: `dwProcessorType` on x86-64.
pub const PROCESSOR_AMD_X8664: DWORD = 8664;

/// `VirtmemAccess` kind: a data read (into the buffer).
pub const VIRTMEM_ACCESS_READ: DWORD = 0;
/// `VirtmemAccess` kind: a data write (from the buffer).
pub const VIRTMEM_ACCESS_WRITE: DWORD = 1;
/// `VirtmemAccess` kind: an instruction fetch (into the buffer).
pub const VIRTMEM_ACCESS_EXECUTE: DWORD = 8;
/// What `VirtmemAccess` returns for an error that is not an access exception
/// (bad handle, bad kind, bad buffer); `GetLastError` tells which.
pub const VIRTMEM_ACCESS_FAILED: DWORD = 0xFFFFFFFF_u32;

/// `VirtmemSetCommitLimit` limit: no commit limit (the default of every process).
pub const VIRTMEM_NO_COMMIT_LIMIT: SIZE_T = 0xFFFF_FFFF_FFFF_FFFF;

/// `MEMORY_BASIC_INFORMATION` in the Win64 layout (48 bytes): what `VirtualQuery` reports.
/// Declared under its Windows SDK tag, `struct _MEMORY_BASIC_INFORMATION`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct _MEMORY_BASIC_INFORMATION {
    /// The queried address rounded down to a page.
    pub BaseAddress: PVOID,
    /// The base of the reservation (NULL for free memory).
    pub AllocationBase: PVOID,
    /// The protection the reservation was made with (0 for free memory).
    pub AllocationProtect: DWORD,
    /// Always 0.
    pub PartitionId: WORD,
    /// `RegionSize`: bytes from `BaseAddress` sharing state, protection and reservation.
    pub RegionSize: SIZE_T,
    /// `MEM_COMMIT`, `MEM_RESERVE` or `MEM_FREE`.
    pub State: DWORD,
    /// The page protection (0 for reserved pages, `PAGE_NOACCESS` for free ones).
    pub Protect: DWORD,
    /// `MEM_PRIVATE`, `MEM_MAPPED`, `MEM_IMAGE`, or 0 for free memory.
    pub Type: DWORD,
}

impl MEMORY_BASIC_INFORMATION {
    /// The 48 bytes of this structure as C sees them, padding zeroed.
    pub fn to_bytes(&self) -> [u8; 48] {
        use std::mem::offset_of;
        let mut out = [0u8; 48];
        let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
        put(offset_of!(Self, BaseAddress), &(self.BaseAddress as usize).to_ne_bytes());
        put(offset_of!(Self, AllocationBase), &(self.AllocationBase as usize).to_ne_bytes());
        put(offset_of!(Self, AllocationProtect), &self.AllocationProtect.to_ne_bytes());
        put(offset_of!(Self, PartitionId), &self.PartitionId.to_ne_bytes());
        put(offset_of!(Self, RegionSize), &self.RegionSize.to_ne_bytes());
        put(offset_of!(Self, State), &self.State.to_ne_bytes());
        put(offset_of!(Self, Protect), &self.Protect.to_ne_bytes());
        put(offset_of!(Self, Type), &self.Type.to_ne_bytes());
        out
    }
}

impl From<vm::MemoryBasicInformation> for MEMORY_BASIC_INFORMATION {
    fn from(m: vm::MemoryBasicInformation) -> Self {
        MEMORY_BASIC_INFORMATION {
            BaseAddress: m.base_address as PVOID,
            AllocationBase: m.allocation_base as PVOID,
            AllocationProtect: m.allocation_protect.bits(),
            PartitionId: 0,
            RegionSize: m.region_size,
            State: m.state as DWORD,
            Protect: m.protect.bits(),
            Type: m.type_bits(),
        }
    }
}

/// `SYSTEM_INFO` in the Win64 layout (48 bytes): what `GetSystemInfo` reports. The
/// obsolete `dwOemId` alias of the first two fields is not declared. Declared under its
/// Windows SDK tag, `struct _SYSTEM_INFO`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct _SYSTEM_INFO {
    /// `PROCESSOR_ARCHITECTURE_AMD64` (9) on x86-64, `PROCESSOR_ARCHITECTURE_ARM64` (12) on AArch64.
    pub wProcessorArchitecture: WORD,
    /// Reserved (0).
    pub wReserved: WORD,
    /// The page size: 4096.
    pub dwPageSize: DWORD,
    /// The lowest address a reservation may start at (0x10000).
    pub lpMinimumApplicationAddress: LPVOID,
    /// The highest user address (inclusive).
    pub lpMaximumApplicationAddress: LPVOID,
    /// A bit per online processor (the first 64).
    pub dwActiveProcessorMask: DWORD_PTR,
    /// The number of online logical processors.
    pub dwNumberOfProcessors: DWORD,
    /// Obsolete: `PROCESSOR_AMD_X8664` (8664) on x86-64.
    pub dwProcessorType: DWORD,
    /// The allocation granularity: 65536.
    pub dwAllocationGranularity: DWORD,
    /// The processor family (x86-64: the CPUID display family).
    pub wProcessorLevel: WORD,
    /// The processor revision (x86-64: display model << 8 | stepping).
    pub wProcessorRevision: WORD,
}

/// `MEM_ADDRESS_REQUIREMENTS` in the Win64 layout (24 bytes): where `VirtualAlloc2` may
/// place a new reservation (a `MemExtendedParameterAddressRequirements` parameter points
/// to one). All zeros is the same as no requirement. Declared under its Windows SDK tag,
/// `struct _MEM_ADDRESS_REQUIREMENTS`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct _MEM_ADDRESS_REQUIREMENTS {
    /// The lowest address the reservation may start at: a multiple of 64 KiB (of the
    /// large-page size with `MEM_LARGE_PAGES`); NULL for the process's lowest.
    pub LowestStartingAddress: PVOID,
    /// The highest address the reservation may reach, inclusive: one less than a multiple
    /// of 64 KiB, not past the process's `lpMaximumApplicationAddress`; NULL for that.
    pub HighestEndingAddress: PVOID,
    /// The alignment of the reservation's base: 0 (64 KiB) or a power of two of at least
    /// 64 KiB.
    pub Alignment: SIZE_T,
}

/// `MEM_EXTENDED_PARAMETER` (16 bytes): one extended parameter of `VirtualAlloc2`. In C
/// it is winnt.h's declaration (a 64-bit word whose low `MEM_EXTENDED_PARAMETER_TYPE_BITS`
/// (8) bits are `Type` and the rest `Reserved`, then a union of `ULong64`, `Pointer`,
/// `Size`, `Handle` and `ULong`), written by hand in the header; here the two words.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MEM_EXTENDED_PARAMETER {
    /// `Type` (low 8 bits) and `Reserved` (the other 56, zero).
    pub TypeWord: DWORD64,
    /// The union: `ULong64`, or the `Pointer` to a `MEM_ADDRESS_REQUIREMENTS`.
    pub Value: DWORD64,
}

/// `FALSE` as a `BOOL`.
pub(crate) const FALSE: BOOL = 0;
/// `TRUE` as a `BOOL`.
pub(crate) const TRUE: BOOL = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn memory_basic_information_has_the_win64_layout() {
        assert_eq!(size_of::<MEMORY_BASIC_INFORMATION>(), 48);
        assert_eq!(offset_of!(MEMORY_BASIC_INFORMATION, AllocationBase), 8);
        assert_eq!(offset_of!(MEMORY_BASIC_INFORMATION, AllocationProtect), 16);
        assert_eq!(offset_of!(MEMORY_BASIC_INFORMATION, PartitionId), 20);
        assert_eq!(offset_of!(MEMORY_BASIC_INFORMATION, RegionSize), 24);
        assert_eq!(offset_of!(MEMORY_BASIC_INFORMATION, State), 32);
        assert_eq!(offset_of!(MEMORY_BASIC_INFORMATION, Protect), 36);
        assert_eq!(offset_of!(MEMORY_BASIC_INFORMATION, Type), 40);
    }

    #[test]
    fn extended_parameter_types_have_the_win64_layout() {
        assert_eq!(size_of::<MEM_EXTENDED_PARAMETER>(), 16);
        assert_eq!(offset_of!(MEM_EXTENDED_PARAMETER, Value), 8);
        assert_eq!(size_of::<MEM_ADDRESS_REQUIREMENTS>(), 24);
        assert_eq!(offset_of!(MEM_ADDRESS_REQUIREMENTS, HighestEndingAddress), 8);
        assert_eq!(offset_of!(MEM_ADDRESS_REQUIREMENTS, Alignment), 16);
    }

    #[test]
    fn system_info_has_the_win64_layout() {
        assert_eq!(size_of::<SYSTEM_INFO>(), 48);
        assert_eq!(offset_of!(SYSTEM_INFO, dwPageSize), 4);
        assert_eq!(offset_of!(SYSTEM_INFO, lpMinimumApplicationAddress), 8);
        assert_eq!(offset_of!(SYSTEM_INFO, lpMaximumApplicationAddress), 16);
        assert_eq!(offset_of!(SYSTEM_INFO, dwActiveProcessorMask), 24);
        assert_eq!(offset_of!(SYSTEM_INFO, dwNumberOfProcessors), 32);
        assert_eq!(offset_of!(SYSTEM_INFO, dwProcessorType), 36);
        assert_eq!(offset_of!(SYSTEM_INFO, dwAllocationGranularity), 40);
        assert_eq!(offset_of!(SYSTEM_INFO, wProcessorLevel), 44);
        assert_eq!(offset_of!(SYSTEM_INFO, wProcessorRevision), 46);
    }
}
