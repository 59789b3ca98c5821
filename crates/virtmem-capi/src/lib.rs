//! # libvirtmem: the Win32 virtual-memory API as a C library
//!
//! `libvirtmem.so` exports `VirtualAlloc`, `VirtualAllocEx`, `VirtualAlloc2`, `VirtualFree`,
//! `VirtualFreeEx`, `VirtualQuery`, `VirtualQueryEx`, `VirtualProtect`, `VirtualProtectEx`,
//! `GetWriteWatch`, `ResetWriteWatch`, `VirtualLock`, `VirtualUnlock`,
//! `ReadProcessMemory`, `WriteProcessMemory`, `FlushInstructionCache`, `GetCurrentProcess`,
//! `CloseHandle`, `GetLastError`, `SetLastError`, `GetSystemInfo`, `GetNativeSystemInfo`,
//! `GetLargePageMinimum` and `FlushProcessWriteBuffers` with the exact Win32 x64
//! signatures (`include/virtmem.h`),
//! plus a small extension for emulators: [`VirtmemCreateProcess`], [`VirtmemCreateProcessEx`]
//! (with [`VirtmemProcessConfigInit`]), [`VirtmemSnapshotProcess`],
//! [`VirtmemRestoreProcess`], [`TerminateProcess`], [`VirtmemSetCommitLimit`],
//! [`VirtmemGetProcessSystemInfo`] and `VirtmemAccess`.
//!
//! - The current process (`GetCurrentProcess()`, `(HANDLE)-1`) is the process's real
//!   memory: what `VirtualAlloc` returns is ordinary memory the program can use. The
//!   library never unmaps or changes memory it did not allocate.
//! - A simulated process (`VirtmemCreateProcess`) is a Windows-x64 address space that
//!   exists only inside the library; the `Ex` functions, `ReadProcessMemory`,
//!   `WriteProcessMemory` and `VirtmemAccess` act on it, `VirtmemSnapshotProcess`
//!   copies it into a new one (the snapshot an emulator restores between runs), and
//!   `VirtmemRestoreProcess` puts a snapshot's state back into a process in place.
//!   `VirtmemCreateProcessEx` makes one with its own configuration
//!   ([`VIRTMEM_PROCESS_CONFIG`]: the lowest and highest user address, e.g. a 32-bit
//!   guest's 0x10000 to 0x7FFEFFFF, the large-page size or none, and whether `MEM_RESET`
//!   discards data); a configuration it does not allow is refused with
//!   `ERROR_INVALID_PARAMETER` (87) and makes nothing.
//! - Errors follow Win32: a failure value plus a per-thread `GetLastError` code (also
//!   stored in `errno`, where .NET and Mono look on Unix). No panic crosses the C
//!   boundary (an internal error is reported as `ERROR_INTERNAL_ERROR`, 1359), and pointer
//!   arguments are checked: NULL or inaccessible memory is `ERROR_NOACCESS` (998).
//!
//! Modules per area: [`types`] (the Win32 types and constants), `memory` (the `Virtual*`
//! functions and write watch), `procmem` (copies between processes, `VirtmemAccess`,
//! `FlushInstructionCache`), `process` (handles, commit limits), `system` (last error, system
//! info, `FlushProcessWriteBuffers`), `host` (the host memory
//! manager as COM objects: `IHostMemoryManager`, `IHostMalloc`, `VirtmemCreateHostMemoryManager`,
//! `VirtmemCreateHostMemoryManagerEx` with `VirtmemHostConfigInit`, and the host's controls
//! `VirtmemHostStart`, `VirtmemHostShutdown`, `VirtmemHostCancelWaits`, `VirtmemHostAddTenant`,
//! `VirtmemHostGetStats`, `VirtmemHostMallocLeaks`).

#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
// The exported functions keep the Win32 names of their parameters.
#![allow(non_snake_case)]
// Every export is `unsafe` to call from Rust (it acts on raw memory, as C code does); the
// contract of each is its Win32 documentation.
#![allow(clippy::missing_safety_doc)]

mod ffi;
mod host;
mod memory;
mod process;
mod procmem;
mod system;
mod trace;
pub mod types;
mod uaccess;

pub use host::*;
pub use memory::*;
pub use process::*;
pub use procmem::*;
pub use system::*;
pub use types::*;

#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod process_config_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod watch_tests;
