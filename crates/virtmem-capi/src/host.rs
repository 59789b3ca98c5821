//! The host memory manager as COM-compatible objects: `IHostMemoryManager`, `IHostMalloc`
//! and the host's calls to `ICLRMemoryNotificationCallback`, with the method order of
//! `mscoree.h`, over `virtmem::host`.
//!
//! Each interface is a struct whose first (only) member points to its vtable; every method
//! takes the interface pointer first (`This`), as C code calls COM objects:
//! `host->lpVtbl->VirtualAlloc(host, NULL, size, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p)`.
//! Objects are reference counted (`AddRef`/`Release`); the factories return them with one
//! reference. Methods return an `HRESULT` (`S_OK` is success) and never let a panic into C
//! (an internal error is `E_FAIL`). A NULL or unwritable out-pointer is `E_POINTER`, and an
//! out-pointer that can be written gets NULL / 0 on failure, with one exception that
//! follows Windows: a failed `VirtualProtect` stores in `*pflOldProtect` what Windows
//! stores there (`PAGE_NOACCESS` for a range holding reserved pages), or nothing.
//!
//! Factories: [`VirtmemCreateHostMemoryManager`] (a started manager over this process's
//! real memory, default policy) and [`VirtmemCreateHostMemoryManagerEx`] (every setting,
//! real or simulated memory, filled in by [`VirtmemHostConfigInit`]); plus tenants, start,
//! shutdown, cancellation, figures and the heap's leak report.

#![allow(non_camel_case_types, non_upper_case_globals)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vm::host::{
    CriticalLevel, HostError, HostMalloc, HostMemoryManager, Lifecycle, MallocType, MemoryAvailable, Thresholds,
};
use vm::{AllocationType, FreeType, Protection, VirtualSpace};

use crate::process;
use crate::types::*;
use crate::uaccess;

/// `HRESULT`: a COM result (negative is a failure, `S_OK` success).
pub type HRESULT = i32;

/// `S_OK`: done.
pub const S_OK: HRESULT = 0;
/// `E_OUTOFMEMORY` (0x8007000E): the request cannot be satisfied now (budget or OS).
pub const E_OUTOFMEMORY: HRESULT = 0x8007_000E_u32 as i32;
/// `E_INVALIDARG` (0x80070057): an argument is invalid.
pub const E_INVALIDARG: HRESULT = 0x8007_0057_u32 as i32;
/// `E_POINTER` (0x80004003): a required out-pointer is NULL (or cannot be written).
pub const E_POINTER: HRESULT = 0x8000_4003_u32 as i32;
/// `E_FAIL` (0x80004005): unrecoverable failure; the manager is disabled from then on.
pub const E_FAIL: HRESULT = 0x8000_4005_u32 as i32;
/// `E_NOINTERFACE` (0x80004002): `QueryInterface` for an interface the object lacks.
pub const E_NOINTERFACE: HRESULT = 0x8000_4002_u32 as i32;
/// `HOST_E_INVALIDOPERATION` (0x80131022): memory this host did not allocate.
pub const HOST_E_INVALIDOPERATION: HRESULT = 0x8013_1022_u32 as i32;
/// `HOST_E_CLRNOTAVAILABLE` (0x80131023): not started, shut down, or disabled.
pub const HOST_E_CLRNOTAVAILABLE: HRESULT = 0x8013_1023_u32 as i32;
/// `HOST_E_TIMEOUT` (0x80131024): a wait for memory timed out, or `VirtualQuery` of an
/// address outside the host's memory could not get the space's bookkeeping in time.
pub const HOST_E_TIMEOUT: HRESULT = 0x8013_1024_u32 as i32;
/// `HOST_E_NOT_OWNER` (0x80131025): another tenant's memory.
pub const HOST_E_NOT_OWNER: HRESULT = 0x8013_1025_u32 as i32;
/// `HOST_E_ABANDONED` (0x80131026): a wait was cancelled (shutdown, cancellation).
pub const HOST_E_ABANDONED: HRESULT = 0x8013_1026_u32 as i32;

/// `EMemoryCriticalLevel`: how bad a failure of a request would be.
pub type EMemoryCriticalLevel = c_int;
/// `eTaskCritical` (0): fails at the budget.
pub const eTaskCritical: EMemoryCriticalLevel = 0;
/// `eAppDomainCritical` (1): may use the soft reserve.
pub const eAppDomainCritical: EMemoryCriticalLevel = 1;
/// `eProcessCritical` (2): may use the emergency reserve, then waits for memory.
pub const eProcessCritical: EMemoryCriticalLevel = 2;

/// `EMemoryAvailable`: what a memory notification says.
pub type EMemoryAvailable = c_int;
/// `eMemoryAvailableLow` (1).
pub const eMemoryAvailableLow: EMemoryAvailable = 1;
/// `eMemoryAvailableNeutral` (2).
pub const eMemoryAvailableNeutral: EMemoryAvailable = 2;
/// `eMemoryAvailableHigh` (3).
pub const eMemoryAvailableHigh: EMemoryAvailable = 3;

/// `MALLOC_THREADSAFE` (0x1): a heap many threads may use at once.
pub const MALLOC_THREADSAFE: DWORD = 0x1;
/// `MALLOC_EXECUTABLE` (0x2): a heap of executable memory.
pub const MALLOC_EXECUTABLE: DWORD = 0x2;

/// `GUID`: the usual name of `struct _GUID`, a COM interface identifier.
pub type GUID = _GUID;
/// `LPGUID`: a pointer to a `GUID`.
pub type LPGUID = *mut GUID;
/// `LPCGUID`: a pointer to a constant `GUID`.
pub type LPCGUID = *const GUID;

/// `GUID`: a COM interface identifier. Declared under its Windows SDK tag,
/// `struct _GUID`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct _GUID {
    /// First 32 bits.
    pub Data1: u32,
    /// Next 16 bits.
    pub Data2: u16,
    /// Next 16 bits.
    pub Data3: u16,
    /// Last 64 bits, as bytes.
    pub Data4: [u8; 8],
}

/// `IID`: an interface identifier.
pub type IID = GUID;
/// `LPIID`: a pointer to an `IID`.
pub type LPIID = *mut IID;
// `virtmem_header_cplusplus` is never set for rustc. cbindgen.toml maps it to `__cplusplus`, so
// REFIID as a pointer and the C structs and vtables of the COM interfaces below are C only in
// include/virtmem.h; C++ gets mscoree.h-style abstract classes with the same layout instead
// (cbindgen.toml's trailer). Keep the two in step: same methods, order and parameters.
/// `REFIID`: a pointer to an interface identifier (C; C++ gets `const IID &`).
#[cfg(not(virtmem_header_cplusplus))]
pub type REFIID = *const IID;

/// `IID_IUnknown` {00000000-0000-0000-C000-000000000046}.
#[no_mangle]
pub static IID_IUnknown: IID = GUID { Data1: 0, Data2: 0, Data3: 0, Data4: [0xC0, 0, 0, 0, 0, 0, 0, 0x46] };
/// `IID_IHostMemoryManager` {7BC698D1-F9E3-4460-9CDE-D04248E9FA25}.
#[no_mangle]
pub static IID_IHostMemoryManager: IID =
    GUID { Data1: 0x7BC6_98D1, Data2: 0xF9E3, Data3: 0x4460, Data4: [0x9C, 0xDE, 0xD0, 0x42, 0x48, 0xE9, 0xFA, 0x25] };
/// `IID_IHostMalloc` {1831991C-CC53-4A31-B218-04E910446479}.
#[no_mangle]
pub static IID_IHostMalloc: IID =
    GUID { Data1: 0x1831_991C, Data2: 0xCC53, Data3: 0x4A31, Data4: [0xB2, 0x18, 0x04, 0xE9, 0x10, 0x44, 0x64, 0x79] };
/// `IID_ICLRMemoryNotificationCallback` {47EB8E57-0846-4546-AF76-6F42FCFC2649}.
#[no_mangle]
pub static IID_ICLRMemoryNotificationCallback: IID =
    GUID { Data1: 0x47EB_8E57, Data2: 0x0846, Data3: 0x4546, Data4: [0xAF, 0x76, 0x6F, 0x42, 0xFC, 0xFC, 0x26, 0x49] };

/// `IHostMemoryManager`: what a runtime asks for memory. See [`IHostMemoryManagerVtbl`].
#[cfg(not(virtmem_header_cplusplus))]
#[repr(C)]
pub struct IHostMemoryManager {
    /// The methods.
    pub lpVtbl: *const IHostMemoryManagerVtbl,
}

/// The methods of `IHostMemoryManager`, in `mscoree.h` order (`IUnknown` first).
#[cfg(not(virtmem_header_cplusplus))]
#[repr(C)]
pub struct IHostMemoryManagerVtbl {
    /// `IUnknown::QueryInterface`: `IID_IHostMemoryManager` and `IID_IUnknown` give this
    /// object (with a new reference); any other IID `E_NOINTERFACE` with `*ppvObject` NULL.
    pub QueryInterface:
        unsafe extern "C" fn(This: *mut IHostMemoryManager, riid: REFIID, ppvObject: *mut *mut c_void) -> HRESULT,
    /// `IUnknown::AddRef`: the new reference count.
    pub AddRef: unsafe extern "C" fn(This: *mut IHostMemoryManager) -> ULONG,
    /// `IUnknown::Release`: the new reference count; the object goes at 0.
    pub Release: unsafe extern "C" fn(This: *mut IHostMemoryManager) -> ULONG,
    /// A heap drawing on the same budget (`MALLOC_THREADSAFE`, `MALLOC_EXECUTABLE`).
    pub CreateMalloc: unsafe extern "C" fn(
        This: *mut IHostMemoryManager,
        dwMallocType: DWORD,
        ppMalloc: *mut *mut IHostMalloc,
    ) -> HRESULT,
    /// Win32 `VirtualAlloc` through the host; `*ppMem` is NULL on any failure.
    pub VirtualAlloc: unsafe extern "C" fn(
        This: *mut IHostMemoryManager,
        pAddress: *mut c_void,
        dwSize: SIZE_T,
        flAllocationType: DWORD,
        flProtect: DWORD,
        eCriticalLevel: EMemoryCriticalLevel,
        ppMem: *mut *mut c_void,
    ) -> HRESULT,
    /// Win32 `VirtualFree` through the host.
    pub VirtualFree: unsafe extern "C" fn(
        This: *mut IHostMemoryManager,
        lpAddress: LPVOID,
        dwSize: SIZE_T,
        dwFreeType: DWORD,
    ) -> HRESULT,
    /// Win32 `VirtualQuery` through the host; `*pResult` is the bytes written (48) or 0.
    /// Never waits for another thread, even one suspended inside a host call; for an
    /// address outside the host's memory while the space's lock stays held by such a
    /// thread, `HOST_E_TIMEOUT`.
    pub VirtualQuery: unsafe extern "C" fn(
        This: *mut IHostMemoryManager,
        lpAddress: *mut c_void,
        lpBuffer: *mut c_void,
        dwLength: SIZE_T,
        pResult: *mut SIZE_T,
    ) -> HRESULT,
    /// Win32 `VirtualProtect` through the host.
    pub VirtualProtect: unsafe extern "C" fn(
        This: *mut IHostMemoryManager,
        lpAddress: *mut c_void,
        dwSize: SIZE_T,
        flNewProtect: DWORD,
        pflOldProtect: *mut DWORD,
    ) -> HRESULT,
    /// Percent of the budget in use and bytes still available.
    pub GetMemoryLoad: unsafe extern "C" fn(
        This: *mut IHostMemoryManager,
        pMemoryLoad: *mut DWORD,
        pAvailableBytes: *mut SIZE_T,
    ) -> HRESULT,
    /// Call `pCallback->OnMemoryNotification` on every threshold crossing, from the thread
    /// that crossed it (or another host call's thread ending at the same moment),
    /// possibly on several threads at once (the host keeps a reference
    /// until the manager is gone).
    pub RegisterMemoryNotificationCallback:
        unsafe extern "C" fn(This: *mut IHostMemoryManager, pCallback: *mut ICLRMemoryNotificationCallback) -> HRESULT,
    /// The runtime failed to map a view: `S_OK` to retry, `E_OUTOFMEMORY` otherwise.
    pub NeedsVirtualAddressSpace:
        unsafe extern "C" fn(This: *mut IHostMemoryManager, startAddress: LPVOID, size: SIZE_T) -> HRESULT,
    /// The runtime mapped a view outside `VirtualAlloc`: it counts against the budget.
    pub AcquiredVirtualAddressSpace:
        unsafe extern "C" fn(This: *mut IHostMemoryManager, startAddress: LPVOID, size: SIZE_T) -> HRESULT,
    /// That view is gone.
    pub ReleasedVirtualAddressSpace:
        unsafe extern "C" fn(This: *mut IHostMemoryManager, startAddress: LPVOID) -> HRESULT,
}

/// `IHostMalloc`: a heap under the host's budget. See [`IHostMallocVtbl`].
#[cfg(not(virtmem_header_cplusplus))]
#[repr(C)]
pub struct IHostMalloc {
    /// The methods.
    pub lpVtbl: *const IHostMallocVtbl,
}

/// The methods of `IHostMalloc`, in `mscoree.h` order (`IUnknown` first).
#[cfg(not(virtmem_header_cplusplus))]
#[repr(C)]
pub struct IHostMallocVtbl {
    /// `IUnknown::QueryInterface`: `IID_IHostMalloc` and `IID_IUnknown`.
    pub QueryInterface:
        unsafe extern "C" fn(This: *mut IHostMalloc, riid: REFIID, ppvObject: *mut *mut c_void) -> HRESULT,
    /// `IUnknown::AddRef`.
    pub AddRef: unsafe extern "C" fn(This: *mut IHostMalloc) -> ULONG,
    /// `IUnknown::Release`.
    pub Release: unsafe extern "C" fn(This: *mut IHostMalloc) -> ULONG,
    /// A block of `cbSize` bytes (16-byte aligned); `*ppMem` NULL when refused.
    pub Alloc: unsafe extern "C" fn(
        This: *mut IHostMalloc,
        cbSize: SIZE_T,
        eCriticalLevel: EMemoryCriticalLevel,
        ppMem: *mut *mut c_void,
    ) -> HRESULT,
    /// `Alloc`, remembering the file and line for the leak report (a NULL
    /// `pszFileName` is reported as `<unknown>`; bytes of the name that are not UTF-8 as
    /// U+FFFD).
    pub DebugAlloc: unsafe extern "C" fn(
        This: *mut IHostMalloc,
        cbSize: SIZE_T,
        eCriticalLevel: EMemoryCriticalLevel,
        pszFileName: *mut c_char,
        iLineNo: c_int,
        ppMem: *mut *mut c_void,
    ) -> HRESULT,
    /// Free a block; NULL is `S_OK`; anything this heap did not return is
    /// `HOST_E_INVALIDOPERATION`.
    pub Free: unsafe extern "C" fn(This: *mut IHostMalloc, pMem: *mut c_void) -> HRESULT,
}

/// `ICLRMemoryNotificationCallback`: implemented by the runtime (the caller), called by the
/// host. See [`ICLRMemoryNotificationCallbackVtbl`].
#[cfg(not(virtmem_header_cplusplus))]
#[repr(C)]
pub struct ICLRMemoryNotificationCallback {
    /// The methods.
    pub lpVtbl: *const ICLRMemoryNotificationCallbackVtbl,
}

/// The methods of `ICLRMemoryNotificationCallback` (`IUnknown` first). The host calls
/// `AddRef` when it registers the callback, `OnMemoryNotification` from the thread that
/// crossed a threshold or another host call's thread ending at the same moment (it must
/// not block; it may call the host; threads crossing at once
/// each call it, so it may run concurrently on several threads and must be thread-safe),
/// and `Release` when the manager is gone.
#[cfg(not(virtmem_header_cplusplus))]
#[repr(C)]
pub struct ICLRMemoryNotificationCallbackVtbl {
    /// `IUnknown::QueryInterface` (not called by the host).
    pub QueryInterface: Option<
        unsafe extern "C" fn(
            This: *mut ICLRMemoryNotificationCallback,
            riid: REFIID,
            ppvObject: *mut *mut c_void,
        ) -> HRESULT,
    >,
    /// `IUnknown::AddRef`.
    pub AddRef: Option<unsafe extern "C" fn(This: *mut ICLRMemoryNotificationCallback) -> ULONG>,
    /// `IUnknown::Release`.
    pub Release: Option<unsafe extern "C" fn(This: *mut ICLRMemoryNotificationCallback) -> ULONG>,
    /// The load crossed a threshold: memory is now Low, Neutral or High.
    pub OnMemoryNotification: Option<
        unsafe extern "C" fn(This: *mut ICLRMemoryNotificationCallback, eMemoryAvailable: EMemoryAvailable) -> HRESULT,
    >,
}

// ----- Objects ------------------------------------------------------------------------

#[repr(C)]
struct ManagerObject {
    iface: IHostMemoryManager,
    refs: AtomicU32,
    mgr: HostMemoryManager,
}

#[repr(C)]
struct MallocObject {
    iface: IHostMalloc,
    refs: AtomicU32,
    heap: HostMalloc,
}

static MANAGER_VTBL: IHostMemoryManagerVtbl = IHostMemoryManagerVtbl {
    QueryInterface: query_interface::<ManagerObject>,
    AddRef: add_ref_this::<ManagerObject>,
    Release: release_this::<ManagerObject>,
    CreateMalloc: mgr_create_malloc,
    VirtualAlloc: mgr_virtual_alloc,
    VirtualFree: mgr_virtual_free,
    VirtualQuery: mgr_virtual_query,
    VirtualProtect: mgr_virtual_protect,
    GetMemoryLoad: mgr_get_memory_load,
    RegisterMemoryNotificationCallback: mgr_register_callback,
    NeedsVirtualAddressSpace: mgr_needs,
    AcquiredVirtualAddressSpace: mgr_acquired,
    ReleasedVirtualAddressSpace: mgr_released,
};

static MALLOC_VTBL: IHostMallocVtbl = IHostMallocVtbl {
    QueryInterface: query_interface::<MallocObject>,
    AddRef: add_ref_this::<MallocObject>,
    Release: release_this::<MallocObject>,
    Alloc: malloc_alloc,
    DebugAlloc: malloc_debug_alloc,
    Free: malloc_free,
};

fn new_manager(mgr: HostMemoryManager) -> *mut IHostMemoryManager {
    let obj =
        Box::new(ManagerObject { iface: IHostMemoryManager { lpVtbl: &MANAGER_VTBL }, refs: AtomicU32::new(1), mgr });
    Box::into_raw(obj).cast()
}

fn new_malloc(heap: HostMalloc) -> *mut IHostMalloc {
    let obj = Box::new(MallocObject { iface: IHostMalloc { lpVtbl: &MALLOC_VTBL }, refs: AtomicU32::new(1), heap });
    Box::into_raw(obj).cast()
}

/// One of our COM objects: a `repr(C)` struct whose first field is its interface struct
/// (`Iface`, itself a `repr(C)` struct holding only the vtable pointer), followed by its
/// reference count. The `IUnknown` methods ([`query_interface`], [`add_ref_this`],
/// [`release_this`]) are written once over this trait and placed in both vtables.
///
/// # Safety
/// An implementation must have that layout, and its objects must be made by `Box::into_raw`
/// with [`ComObject::vtbl`] as their vtable pointer.
unsafe trait ComObject: Sized + 'static {
    /// The interface struct `This` points to.
    type Iface;
    /// Its vtable.
    type Vtbl: 'static;
    /// The one vtable of this object type (how `This` is told apart from a foreign object).
    fn vtbl() -> &'static Self::Vtbl;
    /// The interfaces `QueryInterface` answers with this object.
    fn iids() -> [&'static IID; 2];
    /// The reference count.
    fn refs(&self) -> &AtomicU32;
    /// The manager the object acts on.
    fn manager(&self) -> &HostMemoryManager;

    /// The object behind `this`: NULL is `E_POINTER`, an object that is not one of ours (of
    /// this type) `E_INVALIDARG`.
    ///
    /// # Safety
    /// `this` is NULL or points to a live COM object (its first word a vtable pointer).
    unsafe fn from_this<'a>(this: *mut Self::Iface) -> Result<&'a Self, HostError> {
        if this.is_null() {
            return Err(HostError::Pointer);
        }
        // SAFETY: a live COM object starts with its vtable pointer (the caller's contract).
        let vtbl = unsafe { *this.cast::<*const Self::Vtbl>() };
        if !std::ptr::eq(vtbl, Self::vtbl()) {
            return Err(HostError::InvalidArg);
        }
        // SAFETY: our vtable, so `this` is the `Iface` field, first in a live `Self` (the
        // trait's layout contract).
        Ok(unsafe { &*this.cast::<Self>() })
    }
}

// SAFETY: `repr(C)`, `iface` (only `lpVtbl`) first then `refs`; made by `new_manager`.
unsafe impl ComObject for ManagerObject {
    type Iface = IHostMemoryManager;
    type Vtbl = IHostMemoryManagerVtbl;
    fn vtbl() -> &'static IHostMemoryManagerVtbl {
        &MANAGER_VTBL
    }
    fn iids() -> [&'static IID; 2] {
        [&IID_IHostMemoryManager, &IID_IUnknown]
    }
    fn refs(&self) -> &AtomicU32 {
        &self.refs
    }
    fn manager(&self) -> &HostMemoryManager {
        &self.mgr
    }
}

// SAFETY: `repr(C)`, `iface` (only `lpVtbl`) first then `refs`; made by `new_malloc`.
unsafe impl ComObject for MallocObject {
    type Iface = IHostMalloc;
    type Vtbl = IHostMallocVtbl;
    fn vtbl() -> &'static IHostMallocVtbl {
        &MALLOC_VTBL
    }
    fn iids() -> [&'static IID; 2] {
        [&IID_IHostMalloc, &IID_IUnknown]
    }
    fn refs(&self) -> &AtomicU32 {
        &self.refs
    }
    fn manager(&self) -> &HostMemoryManager {
        self.heap.manager()
    }
}

/// Run a body that acts on no manager: its error as an HRESULT, a panic as `E_FAIL`
/// (never into C).
fn com(body: impl FnOnce() -> Result<(), HostError>) -> HRESULT {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => S_OK,
        Ok(Err(e)) => e.hresult(),
        Err(_) => E_FAIL,
    }
}

/// Run a method body on the object `this` resolved to (`obj`: its `from_this`): its error
/// as an HRESULT; a panic is an unknown catastrophic failure, so, as the spec's `E_FAIL`
/// says, it disables the object's manager (every later call is
/// `HOST_E_CLRNOTAVAILABLE`) and is reported as `E_FAIL` (never unwinding into C).
fn com_on<T: ComObject>(obj: Result<&T, HostError>, body: impl FnOnce(&T) -> Result<(), HostError>) -> HRESULT {
    let obj = match obj {
        Ok(obj) => obj,
        Err(e) => return e.hresult(),
    };
    match catch_unwind(AssertUnwindSafe(|| body(obj))) {
        Ok(Ok(())) => S_OK,
        Ok(Err(e)) => e.hresult(),
        Err(_) => {
            let _ = catch_unwind(AssertUnwindSafe(|| obj.manager().disable()));
            E_FAIL
        }
    }
}

/// [`com_on`] for a method that hands out a pointer at `out`: on any failure `*out` is
/// NULL whenever `out` can be written (`*mem` is NULL on any failure), also when `This`
/// itself is refused (NULL, or an object of another interface) and when the body failed
/// before it got to store anything (a panic: `E_FAIL`).
fn com_made<T: ComObject, U>(
    obj: Result<&T, HostError>,
    out: *mut *mut U,
    body: impl FnOnce(&T) -> Result<(), HostError>,
) -> HRESULT {
    let hr = com_on(obj, body);
    if hr != S_OK && writable(out).is_ok() {
        let _ = put(out, std::ptr::null_mut());
    }
    hr
}

/// A value [`put`] can copy to the caller byte by byte.
///
/// # Safety
/// Every byte of every value is initialised: no padding (integers, pointers, `repr(C)`
/// records of them laid out without gaps).
unsafe trait Plain: Copy {}
// SAFETY: integers and pointers have no padding.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for usize {}
// SAFETY: as above.
unsafe impl<T> Plain for *mut T {}
// SAFETY: `repr(C)`: 2 DWORDs, 5 pointer-sized fields, 4 DWORDs, 2 pointers, each at its
// natural alignment with nothing between them.
unsafe impl Plain for VIRTMEM_HOST_CONFIG {}
// SAFETY: `repr(C)`: two DWORDs then SIZE_Ts.
unsafe impl Plain for VIRTMEM_HOST_STATS {}
// SAFETY: `repr(C)`: 8 + 8 + 4 + 4 + 256 bytes, each field at its natural alignment.
unsafe impl Plain for VIRTMEM_HOST_LEAK {}

// The three records' "no padding" above, checked: each is exactly the sum of its fields.
const _: () = {
    use std::mem::size_of as s;
    let (d, p) = (s::<DWORD>(), s::<usize>());
    assert!(s::<VIRTMEM_HOST_CONFIG>() == 2 * d + 5 * p + 4 * d + 2 * p);
    assert!(s::<VIRTMEM_HOST_STATS>() == 2 * d + 7 * p);
    assert!(s::<VIRTMEM_HOST_LEAK>() == 2 * p + 2 * s::<c_int>() + 256);
};

/// Store a plain value at an out-pointer of the caller; NULL or unwritable -> `E_POINTER`.
/// Allocates nothing.
fn put<T: Plain>(dst: *mut T, value: T) -> Result<(), HostError> {
    if dst.is_null() {
        return Err(HostError::Pointer);
    }
    // SAFETY: the bytes of a live `Plain` value, all initialised (the trait's contract).
    let bytes = unsafe { std::slice::from_raw_parts((&value as *const T).cast::<u8>(), size_of::<T>()) };
    uaccess::write_bytes(dst as usize, bytes).map_err(|_| HostError::Pointer)
}

/// Store the pointer a call made at an out-pointer, or NULL when the call failed (its
/// error is passed on, unless the out-pointer cannot be written: `E_POINTER`).
fn put_made<T>(dst: *mut *mut T, made: Result<*mut T, HostError>) -> Result<(), HostError> {
    match made {
        Ok(p) => put(dst, p),
        Err(e) => {
            put(dst, std::ptr::null_mut())?;
            Err(e)
        }
    }
}

/// Check an out-pointer before doing anything irrevocable.
fn writable<T>(dst: *mut T) -> Result<(), HostError> {
    if dst.is_null() {
        return Err(HostError::Pointer);
    }
    uaccess::probe_writable(dst as usize, size_of::<T>()).map_err(|_| HostError::Pointer)
}

fn level(raw: EMemoryCriticalLevel) -> Result<CriticalLevel, HostError> {
    u32::try_from(raw).map_err(|_| HostError::InvalidArg).and_then(CriticalLevel::from_raw)
}

/// An argument error `e` that only this shell can find (a critical level, a `VirtualQuery`
/// length, a callback: what the manager's typed methods cannot be given), reported in the
/// manager's own order: it checks its lifecycle before any argument, so a manager that is
/// not running answers `HOST_E_CLRNOTAVAILABLE` whatever the arguments.
fn arg_error(mgr: &HostMemoryManager, e: HostError) -> HostError {
    if mgr.lifecycle() == Lifecycle::Running {
        e
    } else {
        HostError::ClrNotAvailable
    }
}

fn same_iid(riid: REFIID, iid: &IID) -> bool {
    let mut buf = [0u8; size_of::<IID>()];
    if uaccess::read_bytes(riid as usize, &mut buf).is_err() {
        return false;
    }
    // SAFETY: 16 bytes read from the caller; every bit pattern is a valid GUID.
    let got: IID = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    got == *iid
}

/// `IUnknown::QueryInterface` of either object: one of [`ComObject::iids`] gives `This`
/// with a new reference; any other IID `E_NOINTERFACE`. On every failure (a NULL or
/// foreign `This`, a NULL `riid` included) `*ppvObject` is NULL, as COM requires, whenever
/// `ppvObject` itself is non-NULL and writable.
unsafe extern "C" fn query_interface<T: ComObject>(
    This: *mut T::Iface,
    riid: REFIID,
    ppvObject: *mut *mut c_void,
) -> HRESULT {
    let mut missing = false;
    let hr = com(|| {
        // NULL first, so that every failure below leaves it so.
        put(ppvObject, std::ptr::null_mut())?;
        // SAFETY: the COM contract: `This` is NULL or a live object.
        let obj = unsafe { T::from_this(This) }?;
        if riid.is_null() {
            return Err(HostError::Pointer);
        }
        if T::iids().iter().any(|iid| same_iid(riid, iid)) {
            add_ref(obj.refs());
            put(ppvObject, This.cast())
        } else {
            missing = true;
            Ok(())
        }
    });
    if missing {
        E_NOINTERFACE
    } else {
        hr
    }
}

fn add_ref(refs: &AtomicU32) -> ULONG {
    refs.fetch_add(1, Ordering::Relaxed).saturating_add(1)
}

/// `IUnknown::AddRef` of either object: the new count (0 for a bad `This`).
unsafe extern "C" fn add_ref_this<T: ComObject>(This: *mut T::Iface) -> ULONG {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    match unsafe { T::from_this(This) } {
        Ok(obj) => add_ref(obj.refs()),
        Err(_) => 0,
    }
}

/// `IUnknown::Release` of either object: the new count; the object goes at 0. An
/// over-released object stays at 0.
unsafe extern "C" fn release_this<T: ComObject>(This: *mut T::Iface) -> ULONG {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    let Ok(obj) = (unsafe { T::from_this(This) }) else { return 0 };
    match obj.refs().fetch_update(Ordering::Release, Ordering::Relaxed, |n| n.checked_sub(1)) {
        Ok(1) => {
            fence(Ordering::Acquire);
            // SAFETY: the last reference to an object made with `Box::into_raw` (the trait's
            // contract): freed once.
            let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(This.cast::<T>()) })));
            0
        }
        Ok(n) => n - 1,
        Err(_) => 0,
    }
}

// ----- IHostMemoryManager ---------------------------------------------------------------

unsafe extern "C" fn mgr_create_malloc(
    This: *mut IHostMemoryManager,
    dwMallocType: DWORD,
    ppMalloc: *mut *mut IHostMalloc,
) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_made(unsafe { ManagerObject::from_this(This) }, ppMalloc, |obj| {
        writable(ppMalloc)?;
        put_made(ppMalloc, obj.mgr.create_malloc(MallocType::from_bits_retain(dwMallocType)).map(new_malloc))
    })
}

unsafe extern "C" fn mgr_virtual_alloc(
    This: *mut IHostMemoryManager,
    pAddress: *mut c_void,
    dwSize: SIZE_T,
    flAllocationType: DWORD,
    flProtect: DWORD,
    eCriticalLevel: EMemoryCriticalLevel,
    ppMem: *mut *mut c_void,
) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_made(unsafe { ManagerObject::from_this(This) }, ppMem, |obj| {
        writable(ppMem)?;
        let out = level(eCriticalLevel).map_err(|e| arg_error(&obj.mgr, e)).and_then(|l| {
            obj.mgr.virtual_alloc(
                pAddress as usize,
                dwSize,
                AllocationType::from_bits_retain(flAllocationType),
                Protection::from_bits_retain(flProtect),
                l,
            )
        });
        put_made(ppMem, out.map(|p| p as *mut c_void))
    })
}

unsafe extern "C" fn mgr_virtual_free(
    This: *mut IHostMemoryManager,
    lpAddress: LPVOID,
    dwSize: SIZE_T,
    dwFreeType: DWORD,
) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(This) }, |obj| {
        obj.mgr.virtual_free(lpAddress as usize, dwSize, FreeType::from_bits_retain(dwFreeType))
    })
}

unsafe extern "C" fn mgr_virtual_query(
    This: *mut IHostMemoryManager,
    lpAddress: *mut c_void,
    lpBuffer: *mut c_void,
    dwLength: SIZE_T,
    pResult: *mut SIZE_T,
) -> HRESULT {
    // Never waits for another thread and allocates nothing (no probe: the writes are checked,
    // without asking pthreads for this thread's stack, which allocates).
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(This) }, |obj| {
        uaccess::without_allocating(|| {
            if pResult.is_null() {
                return Err(HostError::Pointer);
            }
            // From here on every failure leaves 0 in `*pResult` (nothing written).
            if lpBuffer.is_null() {
                put(pResult, 0)?;
                return Err(HostError::Pointer);
            }
            if dwLength < size_of::<MEMORY_BASIC_INFORMATION>() {
                put(pResult, 0)?;
                return Err(arg_error(&obj.mgr, vm::Error::BadLength.into()));
            }
            match obj.mgr.virtual_query(lpAddress as usize) {
                Ok(info) => {
                    if uaccess::write_bytes(lpBuffer as usize, &MEMORY_BASIC_INFORMATION::from(info).to_bytes())
                        .is_err()
                    {
                        put(pResult, 0)?;
                        return Err(HostError::Pointer);
                    }
                    put(pResult, size_of::<MEMORY_BASIC_INFORMATION>())
                }
                Err(e) => {
                    put(pResult, 0)?;
                    Err(e)
                }
            }
        })
    })
}

unsafe extern "C" fn mgr_virtual_protect(
    This: *mut IHostMemoryManager,
    lpAddress: *mut c_void,
    dwSize: SIZE_T,
    flNewProtect: DWORD,
    pflOldProtect: *mut DWORD,
) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(This) }, |obj| {
        writable(pflOldProtect)?;
        match obj.mgr.virtual_protect_detailed(lpAddress as usize, dwSize, Protection::from_bits_retain(flNewProtect)) {
            Ok(old) => put(pflOldProtect, old.bits()),
            Err((e, old)) => {
                if let Some(old) = old {
                    put(pflOldProtect, old.bits())?;
                }
                Err(e)
            }
        }
    })
}

unsafe extern "C" fn mgr_get_memory_load(
    This: *mut IHostMemoryManager,
    pMemoryLoad: *mut DWORD,
    pAvailableBytes: *mut SIZE_T,
) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(This) }, |obj| {
        writable(pMemoryLoad)?;
        writable(pAvailableBytes)?;
        let load = obj.mgr.memory_load().inspect_err(|_| {
            // Both out-pointers are writable (checked above): 0 on failure.
            let _ = put(pMemoryLoad, 0);
            let _ = put(pAvailableBytes, 0);
        })?;
        put(pMemoryLoad, load.percent)?;
        put(pAvailableBytes, load.available)
    })
}

/// A registered callback: one reference, released when the host drops it.
struct CallbackRef(NonNull<ICLRMemoryNotificationCallback>);

// SAFETY: a COM callback registered with the host must accept calls from any thread (the
// contract of `RegisterMemoryNotificationCallback`, documented in the header).
unsafe impl Send for CallbackRef {}
// SAFETY: as above.
unsafe impl Sync for CallbackRef {}

impl CallbackRef {
    fn vtbl(&self) -> &ICLRMemoryNotificationCallbackVtbl {
        // SAFETY: checked non-NULL at registration; the object is alive while we hold a
        // reference.
        unsafe { &*(*self.0.as_ptr()).lpVtbl }
    }

    fn notify(&self, level: MemoryAvailable) {
        if let Some(f) = self.vtbl().OnMemoryNotification {
            // SAFETY: calling the object's own method with itself, as COM does.
            unsafe { f(self.0.as_ptr(), level as EMemoryAvailable) };
        }
    }
}

impl Drop for CallbackRef {
    fn drop(&mut self) {
        if let Some(f) = self.vtbl().Release {
            // SAFETY: gives back the reference taken at registration.
            unsafe { f(self.0.as_ptr()) };
        }
    }
}

unsafe extern "C" fn mgr_register_callback(
    This: *mut IHostMemoryManager,
    pCallback: *mut ICLRMemoryNotificationCallback,
) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(This) }, |obj| {
        let cb = NonNull::new(pCallback).ok_or_else(|| arg_error(&obj.mgr, HostError::InvalidArg))?;
        // SAFETY: a live COM object (the caller's contract): its first word is its vtable.
        let vtbl = unsafe { (*cb.as_ptr()).lpVtbl };
        // SAFETY: non-NULL vtables of live objects are readable.
        if vtbl.is_null() || unsafe { (*vtbl).OnMemoryNotification }.is_none() {
            return Err(arg_error(&obj.mgr, HostError::InvalidArg));
        }
        // SAFETY: as above.
        if let Some(add_ref) = unsafe { (*vtbl).AddRef } {
            // SAFETY: takes the reference `CallbackRef` gives back.
            unsafe { add_ref(cb.as_ptr()) };
        }
        let held = CallbackRef(cb);
        obj.mgr.register_memory_notification_callback(Arc::new(move |level| held.notify(level)))
    })
}

unsafe extern "C" fn mgr_needs(This: *mut IHostMemoryManager, startAddress: LPVOID, size: SIZE_T) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(This) }, |obj| {
        obj.mgr.needs_virtual_address_space(startAddress as usize, size)
    })
}

unsafe extern "C" fn mgr_acquired(This: *mut IHostMemoryManager, startAddress: LPVOID, size: SIZE_T) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(This) }, |obj| {
        obj.mgr.acquired_virtual_address_space(startAddress as usize, size)
    })
}

unsafe extern "C" fn mgr_released(This: *mut IHostMemoryManager, startAddress: LPVOID) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(This) }, |obj| {
        obj.mgr.released_virtual_address_space(startAddress as usize)
    })
}

// ----- IHostMalloc ---------------------------------------------------------------------

fn alloc_into(
    obj: &MallocObject,
    size: SIZE_T,
    lvl: EMemoryCriticalLevel,
    site: Option<(&str, c_int)>,
    ppMem: *mut *mut c_void,
) -> Result<(), HostError> {
    writable(ppMem)?;
    let out = level(lvl).map_err(|e| arg_error(obj.manager(), e)).and_then(|l| match site {
        // The line's bits as they are: the leak report casts them back to the `int` given.
        Some((file, line)) => obj.heap.debug_alloc(size, l, file, line as u32),
        None => obj.heap.alloc(size, l),
    });
    put_made(ppMem, out.map(|p| p as *mut c_void))
}

unsafe extern "C" fn malloc_alloc(
    This: *mut IHostMalloc,
    cbSize: SIZE_T,
    eCriticalLevel: EMemoryCriticalLevel,
    ppMem: *mut *mut c_void,
) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_made(unsafe { MallocObject::from_this(This) }, ppMem, |obj| {
        alloc_into(obj, cbSize, eCriticalLevel, None, ppMem)
    })
}

unsafe extern "C" fn malloc_debug_alloc(
    This: *mut IHostMalloc,
    cbSize: SIZE_T,
    eCriticalLevel: EMemoryCriticalLevel,
    pszFileName: *mut c_char,
    iLineNo: c_int,
    ppMem: *mut *mut c_void,
) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_made(unsafe { MallocObject::from_this(This) }, ppMem, |obj| {
        let file = if pszFileName.is_null() {
            "<unknown>".into()
        } else {
            // SAFETY: a NUL-terminated file name (the caller's contract, as `__FILE__` is).
            unsafe { CStr::from_ptr(pszFileName) }.to_string_lossy()
        };
        alloc_into(obj, cbSize, eCriticalLevel, Some((&file, iLineNo)), ppMem)
    })
}

unsafe extern "C" fn malloc_free(This: *mut IHostMalloc, pMem: *mut c_void) -> HRESULT {
    // SAFETY: `This` is NULL or a live COM object (the COM contract), what `from_this` needs.
    com_on(unsafe { MallocObject::from_this(This) }, |obj| obj.heap.free(pMem as usize))
}

// ----- Factories and host controls -------------------------------------------------------

/// `VIRTMEM_HOST_CONFIG::dwFlags`: a fresh simulated address space (`hProcess` ignored).
pub const VIRTMEM_HOST_SIMULATED: DWORD = 0x1;
/// `VIRTMEM_HOST_CONFIG::dwFlags`: leave the manager not started (`VirtmemHostStart`).
pub const VIRTMEM_HOST_NOT_STARTED: DWORD = 0x2;
/// `VIRTMEM_HOST_CONFIG::dwFlags`: a failed process-critical request disables the manager.
pub const VIRTMEM_HOST_DISABLE_ON_PROCESS_FAILURE: DWORD = 0x4;

/// The host's answer to `NeedsVirtualAddressSpace`: free address space and return TRUE
/// if the runtime should retry.
pub type VIRTMEM_RECLAIM_FN =
    Option<unsafe extern "C" fn(context: *mut c_void, startAddress: LPVOID, size: SIZE_T) -> BOOL>;

/// Everything a host configures. Fill it with [`VirtmemHostConfigInit`], change what you
/// need, pass it to [`VirtmemCreateHostMemoryManagerEx`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VIRTMEM_HOST_CONFIG {
    /// `sizeof(VIRTMEM_HOST_CONFIG)`.
    pub cbSize: DWORD,
    /// `VIRTMEM_HOST_*` flags.
    pub dwFlags: DWORD,
    /// Whose memory: NULL or `GetCurrentProcess()` for this process's real memory (a space
    /// of its own: memory the rest of the program allocated is foreign to it), or a
    /// simulated process from `VirtmemCreateProcess` (shared with the `Ex` functions).
    pub hProcess: HANDLE,
    /// The budget in bytes (committed + heap + acquired views). Not 0.
    pub Budget: SIZE_T,
    /// How far above the budget domain- and process-critical requests may go.
    pub SoftReserve: SIZE_T,
    /// How far above budget + soft reserve process-critical requests may go.
    pub EmergencyReserve: SIZE_T,
    /// A sub-budget for the first tenant, 0 for none.
    pub TenantBudget: SIZE_T,
    /// How long a process-critical request waits for memory (ms); 0: it does not wait;
    /// `INFINITE` (0xFFFFFFFF): it waits until memory comes back, the wait is cancelled or
    /// the manager shuts down.
    pub ProcessCriticalWaitMs: DWORD,
    /// Load (percent) at which memory is Low.
    pub LowPercent: DWORD,
    /// Load (percent) at or below which memory is High (less than `LowPercent`).
    pub HighPercent: DWORD,
    /// Points of hysteresis around both thresholds; `HighPercent + Hysteresis` must stay
    /// below `LowPercent` (otherwise a level is unreachable: `E_INVALIDARG`).
    pub Hysteresis: DWORD,
    /// The answer to `NeedsVirtualAddressSpace` (NULL: always `E_OUTOFMEMORY`).
    pub Reclaim: VIRTMEM_RECLAIM_FN,
    /// Passed to `Reclaim`.
    pub ReclaimContext: *mut c_void,
}

/// Figures of a manager, as seen by one tenant (`VirtmemHostGetStats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct VIRTMEM_HOST_STATS {
    /// 0 not started, 1 running, 2 shut down, 3 disabled by a failure.
    pub Lifecycle: DWORD,
    /// Requests waiting for memory now (every tenant).
    pub Waiting: DWORD,
    /// The budget.
    pub Budget: SIZE_T,
    /// Bytes in use, every tenant.
    pub Used: SIZE_T,
    /// Of which committed through `VirtualAlloc`.
    pub VirtualCommitted: SIZE_T,
    /// Of which committed by heaps.
    pub HeapCommitted: SIZE_T,
    /// Of which acquired views.
    pub Views: SIZE_T,
    /// The highest `Used` seen.
    pub Peak: SIZE_T,
    /// Bytes in use by this tenant.
    pub TenantUsed: SIZE_T,
}

/// A live `DebugAlloc` block (`VirtmemHostMallocLeaks`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VIRTMEM_HOST_LEAK {
    /// The block.
    pub Address: LPVOID,
    /// The size asked for.
    pub Size: SIZE_T,
    /// The line given to `DebugAlloc`.
    pub Line: c_int,
    /// Always 0.
    pub Reserved: c_int,
    /// The file given to `DebugAlloc`, NUL-terminated (truncated to 255 bytes).
    pub File: [c_char; 256],
}

fn config_defaults(budget: usize) -> VIRTMEM_HOST_CONFIG {
    let th = Thresholds::default();
    VIRTMEM_HOST_CONFIG {
        cbSize: size_of::<VIRTMEM_HOST_CONFIG>() as DWORD,
        dwFlags: 0,
        hProcess: std::ptr::null_mut(),
        Budget: budget,
        SoftReserve: budget / 16,
        EmergencyReserve: budget / 16,
        TenantBudget: 0,
        ProcessCriticalWaitMs: vm::host::DEFAULT_PROCESS_WAIT.as_millis() as DWORD,
        LowPercent: th.low_percent,
        HighPercent: th.high_percent,
        Hysteresis: th.hysteresis,
        Reclaim: None,
        ReclaimContext: std::ptr::null_mut(),
    }
}

/// Fill `*config` with the default policy for a budget of `budget` bytes: reserves of
/// 1/16 of the budget each, a 5 s process-critical wait, Low at 90 %, High at 50 %, 5
/// points of hysteresis, this process's real memory, started. `E_POINTER` for a NULL
/// `config`.
#[no_mangle]
pub unsafe extern "C" fn VirtmemHostConfigInit(budget: SIZE_T, config: *mut VIRTMEM_HOST_CONFIG) -> HRESULT {
    com(|| put(config, config_defaults(budget)))
}

/// A real-memory space of its own for a manager.
#[cfg(target_os = "linux")]
fn real_space() -> Result<Arc<dyn VirtualSpace>, HostError> {
    Ok(Arc::new(vm::LinuxSpace::linux()?))
}

#[cfg(not(target_os = "linux"))]
fn real_space() -> Result<Arc<dyn VirtualSpace>, HostError> {
    Err(vm::Error::NotSupported.into())
}

/// A new manager object as `*c` configures it (with one reference).
fn create(c: &VIRTMEM_HOST_CONFIG) -> Result<*mut IHostMemoryManager, HostError> {
    let known = VIRTMEM_HOST_SIMULATED | VIRTMEM_HOST_NOT_STARTED | VIRTMEM_HOST_DISABLE_ON_PROCESS_FAILURE;
    if c.cbSize as usize != size_of::<VIRTMEM_HOST_CONFIG>() || c.dwFlags & !known != 0 {
        return Err(HostError::InvalidArg);
    }
    let space: Arc<dyn VirtualSpace> = if c.dwFlags & VIRTMEM_HOST_SIMULATED != 0 {
        Arc::new(vm::SimSpace::simulated())
    } else if c.hProcess.is_null() || c.hProcess as usize == process::CURRENT_PROCESS {
        real_space()?
    } else {
        match process::resolve(c.hProcess)
            .map_err(|f| HostError::from(vm::Error::from_code(f.0).unwrap_or(vm::Error::InvalidHandle)))?
        {
            process::Target::Simulated(p) => p.shared_space(),
            process::Target::Current(_) => real_space()?,
        }
    };
    let mut b = HostMemoryManager::builder(space, c.Budget)
        .soft_reserve(c.SoftReserve)
        .emergency_reserve(c.EmergencyReserve)
        .process_critical_timeout(match c.ProcessCriticalWaitMs {
            DWORD::MAX => Duration::MAX,
            ms => Duration::from_millis(ms.into()),
        })
        .thresholds(Thresholds { low_percent: c.LowPercent, high_percent: c.HighPercent, hysteresis: c.Hysteresis })
        .disable_on_process_critical_failure(c.dwFlags & VIRTMEM_HOST_DISABLE_ON_PROCESS_FAILURE != 0);
    if c.TenantBudget != 0 {
        b = b.tenant_budget(c.TenantBudget);
    }
    if let Some(f) = c.Reclaim {
        let ctx = c.ReclaimContext as usize;
        b = b.on_needs_address_space(move |a, s| {
            // SAFETY: the host's own function and context, given for this.
            unsafe { f(ctx as *mut c_void, a as LPVOID, s) != 0 }
        });
    }
    let mgr = b.build()?;
    if c.dwFlags & VIRTMEM_HOST_NOT_STARTED == 0 {
        mgr.start()?;
    }
    Ok(new_manager(mgr))
}

/// A started host memory manager over this process's real memory with a budget of
/// `budget_bytes` and the default policy (see [`VirtmemHostConfigInit`]), with one
/// reference. `E_INVALIDARG` for a zero budget, `E_POINTER` for a NULL `out` (`*out` is
/// NULL on any failure).
#[no_mangle]
pub unsafe extern "C" fn VirtmemCreateHostMemoryManager(
    budget_bytes: SIZE_T,
    out: *mut *mut IHostMemoryManager,
) -> HRESULT {
    com(|| {
        writable(out)?;
        put_made(out, create(&config_defaults(budget_bytes)))
    })
}

/// A host memory manager configured by `*config` (see [`VIRTMEM_HOST_CONFIG`]), with one
/// reference. `E_INVALIDARG` for a NULL or unreadable `config`, a wrong `cbSize`, unknown
/// flags, a zero budget, thresholds out of order or a hysteresis that reaches from
/// `HighPercent` to `LowPercent`; `E_POINTER` for a NULL `out`; a
/// simulated process that has exited is `HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED)`, an
/// unknown handle `HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)`.
#[no_mangle]
pub unsafe extern "C" fn VirtmemCreateHostMemoryManagerEx(
    config: *const VIRTMEM_HOST_CONFIG,
    out: *mut *mut IHostMemoryManager,
) -> HRESULT {
    com(|| {
        writable(out)?;
        let mut buf = [0u8; size_of::<VIRTMEM_HOST_CONFIG>()];
        let made = uaccess::read_bytes(config as usize, &mut buf).map_err(|_| HostError::InvalidArg).and_then(|()| {
            // SAFETY: every field is an integer, a pointer or a nullable function pointer,
            // for which any bit pattern is valid.
            let c: VIRTMEM_HOST_CONFIG = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
            create(&c)
        });
        put_made(out, made)
    })
}

/// Start a manager made with `VIRTMEM_HOST_NOT_STARTED`. `HOST_E_CLRNOTAVAILABLE` once it
/// was shut down or disabled.
#[no_mangle]
pub unsafe extern "C" fn VirtmemHostStart(host: *mut IHostMemoryManager) -> HRESULT {
    // SAFETY: `host` is NULL or a live object (the caller's contract).
    com_on(unsafe { ManagerObject::from_this(host) }, |obj| obj.mgr.start())
}

/// Shut the manager down for every tenant: waiting requests fail with
/// `HOST_E_ABANDONED`, every later call with `HOST_E_CLRNOTAVAILABLE`. Memory stays
/// allocated until the last reference to the manager and its heaps is released.
#[no_mangle]
pub unsafe extern "C" fn VirtmemHostShutdown(host: *mut IHostMemoryManager) -> HRESULT {
    // SAFETY: `host` is NULL or a live object (the caller's contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(host) }, |obj| {
        obj.mgr.shutdown();
        Ok(())
    })
}

/// Abandon this tenant's requests that wait for memory now (`HOST_E_ABANDONED`).
#[no_mangle]
pub unsafe extern "C" fn VirtmemHostCancelWaits(host: *mut IHostMemoryManager) -> HRESULT {
    // SAFETY: `host` is NULL or a live object (the caller's contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(host) }, |obj| {
        obj.mgr.cancel_waits();
        Ok(())
    })
}

/// A new tenant (another runtime) sharing `host`'s manager, with a sub-budget of `budget`
/// bytes (0: none): its own `IHostMemoryManager`, with one reference. Tenants cannot act
/// on each other's memory (`HOST_E_NOT_OWNER`). `name` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn VirtmemHostAddTenant(
    host: *mut IHostMemoryManager,
    name: *const c_char,
    budget: SIZE_T,
    out: *mut *mut IHostMemoryManager,
) -> HRESULT {
    // SAFETY: `host` is NULL or a live object (the caller's contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(host) }, |obj| {
        writable(out)?;
        let name = if name.is_null() {
            String::from("tenant")
        } else {
            // SAFETY: a NUL-terminated string (the caller's contract).
            unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned()
        };
        put_made(out, obj.mgr.add_tenant(name, (budget != 0).then_some(budget)).map(new_manager))
    })
}

/// Figures of the manager as `host`'s tenant sees them. Answers in every lifecycle state.
#[no_mangle]
pub unsafe extern "C" fn VirtmemHostGetStats(host: *mut IHostMemoryManager, stats: *mut VIRTMEM_HOST_STATS) -> HRESULT {
    // SAFETY: `host` is NULL or a live object (the caller's contract), what `from_this` needs.
    com_on(unsafe { ManagerObject::from_this(host) }, |obj| {
        if stats.is_null() {
            return Err(HostError::Pointer);
        }
        let s = obj.mgr.stats();
        let b = &s.budget;
        let out = VIRTMEM_HOST_STATS {
            Lifecycle: match s.lifecycle {
                Lifecycle::NotStarted => 0,
                Lifecycle::Running => 1,
                Lifecycle::ShutDown => 2,
                Lifecycle::Disabled => 3,
            },
            Waiting: b.waiting as DWORD,
            Budget: b.budget,
            Used: b.used,
            VirtualCommitted: b.virtual_committed,
            HeapCommitted: b.heap_committed,
            Views: b.views,
            Peak: b.peak,
            TenantUsed: b.tenants.get(obj.mgr.tenant()).map_or(0, |t| t.used),
        };
        put(stats, out)
    })
}

/// The leak report of a heap: its live `DebugAlloc` blocks, by address. Writes up to
/// `capacity` of them to `buffer` (which may be NULL when `capacity` is 0) and the total
/// number to `*count`. `E_POINTER` for a NULL `count`, or for a NULL or unwritable
/// `buffer` that must hold a record (`*count` is then 0).
#[no_mangle]
pub unsafe extern "C" fn VirtmemHostMallocLeaks(
    malloc: *mut IHostMalloc,
    buffer: *mut VIRTMEM_HOST_LEAK,
    capacity: SIZE_T,
    count: *mut SIZE_T,
) -> HRESULT {
    // SAFETY: `malloc` is NULL or a live object (the caller's contract).
    com_on(unsafe { MallocObject::from_this(malloc) }, |obj| {
        writable(count)?;
        let leaks = obj.heap.leaks();
        for (i, l) in leaks.iter().take(capacity).enumerate() {
            let mut file = [0 as c_char; 256];
            for (d, &s) in file.iter_mut().zip(l.file.as_bytes().iter().take(255)) {
                *d = s as c_char;
            }
            let rec = VIRTMEM_HOST_LEAK {
                Address: l.address as LPVOID,
                Size: l.size,
                Line: l.line as c_int,
                Reserved: 0,
                File: file,
            };
            if let Err(e) = put(buffer.wrapping_add(i), rec) {
                // A NULL or unwritable `buffer` (with room claimed): `*count` says 0.
                put(count, 0)?;
                return Err(e);
            }
        }
        put(count, leaks.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simulated(budget: usize) -> *mut IHostMemoryManager {
        let mut c = config_defaults(budget);
        c.dwFlags = VIRTMEM_HOST_SIMULATED;
        let mut h = std::ptr::null_mut();
        // SAFETY: valid config and out-pointer.
        assert_eq!(unsafe { VirtmemCreateHostMemoryManagerEx(&c, &mut h) }, S_OK);
        h
    }

    #[test]
    fn the_config_factory_rejects_a_hysteresis_that_covers_the_band() {
        for (low, high, hysteresis, want) in [
            (60, 50, 20, E_INVALIDARG),
            (60, 50, 10, E_INVALIDARG),
            (90, 50, u32::MAX, E_INVALIDARG),
            (60, 50, 9, S_OK),
        ] {
            let mut c = config_defaults(1 << 20);
            c.dwFlags = VIRTMEM_HOST_SIMULATED;
            (c.LowPercent, c.HighPercent, c.Hysteresis) = (low, high, hysteresis);
            let mut h = std::ptr::null_mut();
            // SAFETY: valid config and out-pointer.
            assert_eq!(unsafe { VirtmemCreateHostMemoryManagerEx(&c, &mut h) }, want, "{low}/{high}/{hysteresis}");
            assert_eq!(h.is_null(), want != S_OK);
            if !h.is_null() {
                // SAFETY: a live manager object with one reference.
                unsafe { ((*(*h).lpVtbl).Release)(h) };
            }
        }
    }

    #[test]
    fn a_panic_inside_a_call_is_e_fail_and_disables_the_manager() {
        let h = simulated(1 << 20);
        // SAFETY: `h` is a live manager object made by the factory.
        let obj = unsafe { ManagerObject::from_this(h) }.unwrap();
        // A notification callback that panics: the call whose charge crosses the Low
        // threshold unwinds inside the method body.
        obj.mgr.register_memory_notification_callback(Arc::new(|_| panic!("callback panicked"))).unwrap();
        // SAFETY: `h` is a live manager; valid out-pointers.
        unsafe {
            let v = &*(*h).lpVtbl;
            let mut mem = std::ptr::null_mut();
            let (commit, rw) = (MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
            assert_eq!((v.VirtualAlloc)(h, std::ptr::null_mut(), 1 << 20, commit, rw, 0, &mut mem), E_FAIL);
            let (mut load, mut avail) = (0, 0);
            assert_eq!((v.GetMemoryLoad)(h, &mut load, &mut avail), HOST_E_CLRNOTAVAILABLE);
            let mut other = std::ptr::null_mut();
            assert_eq!(
                (v.VirtualAlloc)(h, std::ptr::null_mut(), 4096, commit, rw, 0, &mut other),
                HOST_E_CLRNOTAVAILABLE
            );
            assert!(other.is_null());
            assert_eq!(obj.mgr.lifecycle(), Lifecycle::Disabled);
            assert_eq!((v.Release)(h), 0);
        }
    }

    #[test]
    fn null_out_pointers_are_e_pointer_and_nothing_happens() {
        let h = simulated(1 << 20);
        // SAFETY: `h` is a live manager; the calls under test get NULL out-pointers.
        unsafe {
            let v = &*(*h).lpVtbl;
            let rw = PAGE_READWRITE;
            assert_eq!(
                (v.VirtualAlloc)(h, std::ptr::null_mut(), 4096, MEM_COMMIT, rw, 0, std::ptr::null_mut()),
                E_POINTER
            );
            let mut load = 0;
            let mut avail = 0;
            assert_eq!((v.GetMemoryLoad)(h, &mut load, &mut avail), S_OK);
            assert_eq!((load, avail), (0, 1 << 20), "the refused call allocated nothing");
            assert_eq!((v.GetMemoryLoad)(h, std::ptr::null_mut(), &mut avail), E_POINTER);
            assert_eq!((v.CreateMalloc)(h, 0, std::ptr::null_mut()), E_POINTER);
            let mut mem = std::ptr::null_mut();
            assert_eq!((v.VirtualAlloc)(h, std::ptr::null_mut(), 4096, MEM_COMMIT, rw, 0, &mut mem), S_OK);
            assert_eq!((v.VirtualProtect)(h, mem, 4096, PAGE_READONLY, std::ptr::null_mut()), E_POINTER);
            let mut mbi = std::mem::MaybeUninit::<MEMORY_BASIC_INFORMATION>::uninit();
            assert_eq!((v.VirtualQuery)(h, mem, mbi.as_mut_ptr().cast(), 48, std::ptr::null_mut()), E_POINTER);
            let mut n = 1;
            assert_eq!((v.VirtualQuery)(h, mem, std::ptr::null_mut(), 48, &mut n), E_POINTER);
            let mut unknown = std::ptr::null_mut();
            assert_eq!((v.QueryInterface)(h, &IID_IUnknown, std::ptr::null_mut()), E_POINTER);
            assert_eq!((v.QueryInterface)(h, std::ptr::null(), &mut unknown), E_POINTER);
            // An unwritable out-pointer is E_POINTER too, never a crash.
            let ro = &IID_IUnknown as *const IID as *mut *mut c_void;
            assert_eq!((v.VirtualAlloc)(h, std::ptr::null_mut(), 4096, MEM_COMMIT, rw, 0, ro), E_POINTER);
            assert_eq!((v.Release)(h), 0);
        }
    }

    #[test]
    fn query_interface_and_reference_counts() {
        let h = simulated(1 << 20);
        // SAFETY: live objects made here.
        unsafe {
            let v = &*(*h).lpVtbl;
            let mut out = std::ptr::null_mut();
            assert_eq!((v.QueryInterface)(h, &IID_IHostMemoryManager, &mut out), S_OK);
            assert_eq!(out, h.cast());
            out = 1 as *mut c_void;
            assert_eq!((v.QueryInterface)(h, &IID_IHostMalloc, &mut out), E_NOINTERFACE);
            assert!(out.is_null());
            let mut m: *mut IHostMalloc = std::ptr::null_mut();
            assert_eq!((v.CreateMalloc)(h, MALLOC_THREADSAFE, &mut m), S_OK);
            let mv = &*(*m).lpVtbl;
            assert_eq!((mv.QueryInterface)(m, &IID_IHostMalloc, &mut out), S_OK);
            assert_eq!((mv.QueryInterface)(m, &IID_IHostMemoryManager, &mut out), E_NOINTERFACE);
            // Every failure leaves NULL behind: NULL riid, NULL This, a foreign This.
            out = 1 as *mut c_void;
            assert_eq!((v.QueryInterface)(h, std::ptr::null(), &mut out), E_POINTER);
            assert!(out.is_null());
            out = 1 as *mut c_void;
            assert_eq!((v.QueryInterface)(std::ptr::null_mut(), &IID_IUnknown, &mut out), E_POINTER);
            assert!(out.is_null());
            out = 1 as *mut c_void;
            assert_eq!((v.QueryInterface)(m.cast(), &IID_IUnknown, &mut out), E_INVALIDARG);
            assert!(out.is_null());
            assert_eq!((mv.Release)(m), 1);
            let mut b = std::ptr::null_mut();
            assert_eq!((mv.Alloc)(m, 10, eProcessCritical, &mut b), S_OK);
            assert_eq!((mv.Free)(m, b), S_OK);
            assert_eq!((mv.Free)(m, b), HOST_E_INVALIDOPERATION);
            assert_eq!((mv.Alloc)(m, 10, 3, &mut b), E_INVALIDARG);
            assert!(b.is_null());
            assert_eq!((mv.Release)(m), 0);
            assert_eq!((v.Release)(h), 1);
            assert_eq!((v.Release)(h), 0);
        }
    }

    /// The module's promise: an out-pointer that can be written gets 0 on failure. A
    /// manager that is not started answers `HOST_E_CLRNOTAVAILABLE` and zeroes both of
    /// `GetMemoryLoad`'s (a caller ignoring the HRESULT must not read its old values as
    /// a load).
    #[test]
    fn get_memory_load_zeroes_its_out_pointers_on_failure() {
        let mut c = config_defaults(1 << 20);
        c.dwFlags = VIRTMEM_HOST_SIMULATED | VIRTMEM_HOST_NOT_STARTED;
        let mut h = std::ptr::null_mut();
        // SAFETY: valid config and out-pointer.
        assert_eq!(unsafe { VirtmemCreateHostMemoryManagerEx(&c, &mut h) }, S_OK);
        // SAFETY: `h` is a live manager object; valid out-pointers.
        unsafe {
            let v = &*(*h).lpVtbl;
            let (mut load, mut avail): (DWORD, SIZE_T) = (77, 77);
            assert_eq!((v.GetMemoryLoad)(h, &mut load, &mut avail), HOST_E_CLRNOTAVAILABLE);
            assert_eq!((load, avail), (0, 0), "writable out-pointers get 0 on failure");
            assert_eq!((v.Release)(h), 0);
        }
    }

    /// Once a manager is not running every call is `HOST_E_CLRNOTAVAILABLE`, whatever
    /// its arguments (the spec's `E_FAIL` row; the core checks its lifecycle before any
    /// argument). The arguments only the C shell checks — a critical level, a
    /// `VirtualQuery` length, a callback — must follow that order too: on a running
    /// manager they are `E_INVALIDARG` / `HRESULT_FROM_WIN32(ERROR_BAD_LENGTH)`, on one
    /// shut down `HOST_E_CLRNOTAVAILABLE`, as a bad allocation type is.
    #[test]
    fn argument_errors_of_the_c_shell_come_after_the_lifecycle() {
        let h = simulated(1 << 20);
        // SAFETY: `h` is a live manager object; valid out-pointers.
        unsafe {
            let v = &*(*h).lpVtbl;
            let rw = PAGE_READWRITE;
            let mut m: *mut IHostMalloc = std::ptr::null_mut();
            assert_eq!((v.CreateMalloc)(h, MALLOC_THREADSAFE, &mut m), S_OK);
            let mv = &*(*m).lpVtbl;
            let mut mem = std::ptr::null_mut();
            assert_eq!((v.VirtualAlloc)(h, std::ptr::null_mut(), 4096, MEM_COMMIT, rw, 0, &mut mem), S_OK);
            let mut mbi = std::mem::MaybeUninit::<MEMORY_BASIC_INFORMATION>::uninit();
            let (mut p, mut n) = (std::ptr::null_mut(), 0);
            let file = c"f.c".as_ptr() as *mut c_char;
            let bad_length = vm::host::hresult::from_win32(24);
            // Running: the argument errors.
            assert_eq!((v.VirtualAlloc)(h, std::ptr::null_mut(), 4096, MEM_COMMIT, rw, 3, &mut p), E_INVALIDARG);
            assert_eq!((v.VirtualQuery)(h, mem, mbi.as_mut_ptr().cast(), 47, &mut n), bad_length);
            assert_eq!((v.RegisterMemoryNotificationCallback)(h, std::ptr::null_mut()), E_INVALIDARG);
            assert_eq!((mv.Alloc)(m, 10, 3, &mut p), E_INVALIDARG);
            assert_eq!((mv.DebugAlloc)(m, 10, -1, file, 1, &mut p), E_INVALIDARG);
            assert_eq!(VirtmemHostShutdown(h), S_OK);
            // Shut down: every call, good arguments or bad, is HOST_E_CLRNOTAVAILABLE.
            let gone = HOST_E_CLRNOTAVAILABLE;
            assert_eq!((v.VirtualAlloc)(h, std::ptr::null_mut(), 4096, 0x40, rw, 0, &mut p), gone, "bad type");
            assert_eq!((v.VirtualAlloc)(h, std::ptr::null_mut(), 4096, MEM_COMMIT, rw, 3, &mut p), gone, "bad level");
            assert!(p.is_null());
            assert_eq!((v.VirtualQuery)(h, mem, mbi.as_mut_ptr().cast(), 48, &mut n), gone);
            n = 77;
            assert_eq!((v.VirtualQuery)(h, mem, mbi.as_mut_ptr().cast(), 47, &mut n), gone, "short length");
            assert_eq!(n, 0);
            assert_eq!((v.RegisterMemoryNotificationCallback)(h, std::ptr::null_mut()), gone, "NULL callback");
            assert_eq!((mv.Alloc)(m, 10, 0, &mut p), gone);
            assert_eq!((mv.Alloc)(m, 10, 3, &mut p), gone, "bad level");
            assert_eq!((mv.DebugAlloc)(m, 10, -1, file, 1, &mut p), gone, "bad level");
            assert!(p.is_null());
            assert_eq!((mv.Release)(m), 0);
            assert_eq!((v.Release)(h), 0);
        }
    }

    /// Host spec, IHostMemoryManager::VirtualAlloc: "`*mem` is NULL on any failure", and
    /// IHostMalloc::Alloc: "E_OUTOFMEMORY and `*mem` NULL when refused". Each out-pointer
    /// is preset to a marker, so that a call that leaves it alone is seen: a refused
    /// request (over the budget, a bad argument, a free address), a foreign or NULL
    /// `This`, and every call once the manager is shut down store NULL.
    #[test]
    fn every_failed_allocation_stores_null_in_its_out_pointer() {
        let marker = 0x5A5A_0000_usize as *mut c_void;
        let h = simulated(1 << 20);
        // SAFETY: `h` is a live manager object, `m` a live heap made by it; valid
        // out-pointers. The foreign `This` passed is a live object of the other interface,
        // whose first word (its vtable) the shell compares before anything else.
        unsafe {
            let v = &*(*h).lpVtbl;
            let rw = PAGE_READWRITE;
            let mut m: *mut IHostMalloc = std::ptr::null_mut();
            assert_eq!((v.CreateMalloc)(h, MALLOC_THREADSAFE, &mut m), S_OK);
            let mv = &*(*m).lpVtbl;
            let file = c"f.c".as_ptr() as *mut c_char;
            let null = std::ptr::null_mut();
            let alloc = |this: *mut IHostMemoryManager, size: usize, ty: DWORD, level: EMemoryCriticalLevel| {
                let mut p = marker;
                let r = (v.VirtualAlloc)(this, null, size, ty, rw, level, &mut p);
                (r, p)
            };
            let gone = HOST_E_CLRNOTAVAILABLE;
            for (this, size, ty, level, want, what) in [
                (h, 2 << 20, MEM_COMMIT, 0, E_OUTOFMEMORY, "over the budget"),
                (h, 4096, MEM_COMMIT, 3, E_INVALIDARG, "bad level"),
                (h, 4096, 0x40, 0, E_INVALIDARG, "bad type"),
                (h, 0, MEM_COMMIT, 0, E_INVALIDARG, "size 0"),
                (m.cast(), 4096, MEM_COMMIT, 0, E_INVALIDARG, "foreign This"),
                (std::ptr::null_mut(), 4096, MEM_COMMIT, 0, E_POINTER, "NULL This"),
            ] {
                assert_eq!(alloc(this, size, ty, level), (want, std::ptr::null_mut()), "VirtualAlloc: {what}");
            }
            // A commit at a free address (no reservation of the host's there).
            let mut p = marker;
            let free = 0x7000_0000 as *mut c_void;
            assert_eq!((v.VirtualAlloc)(h, free, 4096, MEM_COMMIT, rw, 0, &mut p), HOST_E_INVALIDOPERATION);
            assert!(p.is_null(), "VirtualAlloc: a free address");
            for (this, size, level, want, what) in [
                (m, 2 << 20, 0, E_OUTOFMEMORY, "over the budget"),
                (m, 10, 3, E_INVALIDARG, "bad level"),
                (h.cast(), 10, 0, E_INVALIDARG, "foreign This"),
                (std::ptr::null_mut(), 10, 0, E_POINTER, "NULL This"),
            ] {
                p = marker;
                assert_eq!((mv.Alloc)(this, size, level, &mut p), want, "Alloc: {what}");
                assert!(p.is_null(), "Alloc: {what}");
                p = marker;
                assert_eq!((mv.DebugAlloc)(this, size, level, file, 1, &mut p), want, "DebugAlloc: {what}");
                assert!(p.is_null(), "DebugAlloc: {what}");
            }
            // CreateMalloc hands out a pointer too: NULL on its failures.
            for (this, ty, want, what) in
                [(h, 0x80, E_INVALIDARG, "unknown type bits"), (m.cast(), 0, E_INVALIDARG, "foreign This")]
            {
                let mut other = marker.cast::<IHostMalloc>();
                assert_eq!((v.CreateMalloc)(this, ty, &mut other), want, "CreateMalloc: {what}");
                assert!(other.is_null(), "CreateMalloc: {what}");
            }
            assert_eq!(VirtmemHostShutdown(h), S_OK);
            assert_eq!(alloc(h, 4096, MEM_COMMIT, 0), (gone, std::ptr::null_mut()), "VirtualAlloc after shutdown");
            p = marker;
            assert_eq!((mv.Alloc)(m, 10, 0, &mut p), gone);
            assert!(p.is_null(), "Alloc after shutdown");
            assert_eq!((mv.Release)(m), 0);
            assert_eq!((v.Release)(h), 0);
        }
    }

    /// `VirtualQuery`'s `*pResult` is the bytes written (48) or 0: 0 when `lpBuffer` is
    /// NULL or cannot be written (`E_POINTER`).
    #[test]
    fn virtual_query_with_a_bad_buffer_sets_the_result_to_zero() {
        let h = simulated(1 << 20);
        // SAFETY: `h` is a live manager object; valid pointers except the buffers under test.
        unsafe {
            let v = &*(*h).lpVtbl;
            let mut mem = std::ptr::null_mut();
            assert_eq!((v.VirtualAlloc)(h, std::ptr::null_mut(), 4096, MEM_COMMIT, PAGE_READWRITE, 0, &mut mem), S_OK);
            let mut n: SIZE_T = 77;
            assert_eq!((v.VirtualQuery)(h, mem, std::ptr::null_mut(), 48, &mut n), E_POINTER);
            assert_eq!(n, 0, "NULL lpBuffer");
            let mut n: SIZE_T = 77;
            let read_only = &IID_IUnknown as *const IID as *mut c_void;
            assert_eq!((v.VirtualQuery)(h, mem, read_only, 48, &mut n), E_POINTER);
            assert_eq!(n, 0, "unwritable lpBuffer");
            assert_eq!((v.Release)(h), 0);
        }
    }
}
