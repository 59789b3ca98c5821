//! Raw kernel interfaces that rustix has no wrappers for: the `PROCMAP_QUERY` and
//! `PAGEMAP_SCAN` ioctls, userfaultfd's ioctls and the guard-region `madvise` advice.
//!
//! The structures and flag values are `linux-raw-sys`'s, generated from the kernel's
//! UAPI headers (`include/uapi/linux/fs.h`, `userfaultfd.h`, `mman-common.h`). Only what
//! it lacks is declared here: the `PROCMAP_QUERY` and `PAGEMAP_SCAN` request numbers
//! (encoded by rustix's `_IOWR`). Each structure's size
//! is checked at compile time because it is also encoded in its ioctl number, and the
//! kernel reads `size` from the two extensible ones.

pub mod flush;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use linux_raw_sys::general::{page_region, pm_scan_arg, procmap_query, uffdio_api, uffdio_register};
use linux_raw_sys::general::{procmap_query_flags, uffdio_range};
use rustix::io::Errno;
use rustix::ioctl::{opcode, Opcode};

pub use linux_raw_sys::general::{MADV_GUARD_INSTALL, MADV_GUARD_REMOVE};
pub use linux_raw_sys::general::{PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, PAGE_IS_WRITTEN};
pub use linux_raw_sys::general::{PM_SCAN_CHECK_WPASYNC, PM_SCAN_WP_MATCHING};
pub use linux_raw_sys::general::{UFFDIO_REGISTER_MODE_WP, UFFD_API, UFFD_FEATURE_WP_ASYNC, UFFD_USER_MODE_ONLY};

// ----- instruction cache ---------------------------------------------------------------

extern "C" {
    /// The compiler runtime's (libgcc's, compiler-rt's) instruction-cache synchronisation
    /// for `[begin, end)`: the cache-maintenance sequence the architecture needs (AArch64:
    /// clean the data cache to the point of unification, invalidate the instruction
    /// cache, barriers); nothing on x86, whose instruction fetches see stores.
    fn __clear_cache(begin: *mut core::ffi::c_char, end: *mut core::ffi::c_char);
}

/// Make instruction fetches see the stores made in `range`.
///
/// # Safety
/// Every byte of `range` must be mapped and readable: the cache-maintenance
/// instructions fault on other memory (they change none).
pub unsafe fn clear_cache(range: std::ops::Range<usize>) {
    // SAFETY: the caller vouches that the range is mapped and readable.
    unsafe { __clear_cache(range.start as *mut core::ffi::c_char, range.end as *mut core::ffi::c_char) }
}

// ----- madvise -------------------------------------------------------------------------

/// `madvise` with advice rustix has no variant for (`MADV_GUARD_INSTALL` and
/// `MADV_GUARD_REMOVE`, Linux 6.13).
///
/// # Safety
/// The range must be owned by the caller: the advice may drop its contents.
#[allow(dead_code)]
pub unsafe fn madvise_raw(addr: usize, len: usize, advice: u32) -> Result<(), Errno> {
    // SAFETY: the caller vouches for the range; madvise itself cannot touch memory
    // outside it.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, advice as libc::c_int) };
    if r == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// The calling thread's `errno` as a rustix [`Errno`].
pub fn last_errno() -> Errno {
    Errno::from_raw_os_error(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
}

// ----- ioctl ---------------------------------------------------------------------------

/// # Safety
/// `arg` must point to the structure `req` expects, valid for the kernel to read and
/// write for the duration of the call.
pub unsafe fn ioctl<T>(fd: BorrowedFd<'_>, req: Opcode, arg: *mut T) -> Result<i64, Errno> {
    // SAFETY: forwarded from the caller.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as i64)
    }
}

// ----- PROCMAP_QUERY (Linux 6.11) ------------------------------------------------------

const _: () = assert!(std::mem::size_of::<procmap_query>() == 104);

/// `PROCMAP_QUERY`: `_IOWR('f', 17, struct procmap_query)` (not in linux-raw-sys).
pub const PROCMAP_QUERY: Opcode = opcode::read_write::<procmap_query>(b'f', 17);

/// A `PROCMAP_QUERY` flag as the `u64` the structure carries.
pub const fn procmap_flag(f: procmap_query_flags) -> u64 {
    f as u64
}

/// A query for the mapping covering `addr`, or else the next one above it, asking for
/// no name or build id.
pub fn procmap_query_covering_or_next(addr: usize) -> procmap_query {
    procmap_query {
        size: std::mem::size_of::<procmap_query>() as u64,
        query_flags: procmap_flag(procmap_query_flags::PROCMAP_QUERY_COVERING_OR_NEXT_VMA),
        query_addr: addr as u64,
        vma_start: 0,
        vma_end: 0,
        vma_flags: 0,
        vma_page_size: 0,
        vma_offset: 0,
        inode: 0,
        dev_major: 0,
        dev_minor: 0,
        vma_name_size: 0,
        build_id_size: 0,
        vma_name_addr: 0,
        build_id_addr: 0,
    }
}

// ----- PAGEMAP_SCAN (Linux 6.7) --------------------------------------------------------

const _: () = assert!(std::mem::size_of::<pm_scan_arg>() == 96);
const _: () = assert!(std::mem::size_of::<page_region>() == 24);

/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)` (not in linux-raw-sys).
pub const PAGEMAP_SCAN: Opcode = opcode::read_write::<pm_scan_arg>(b'f', 16);

// ----- userfaultfd ---------------------------------------------------------------------

const _: () = assert!(std::mem::size_of::<uffdio_api>() == 24);
const _: () = assert!(std::mem::size_of::<uffdio_range>() == 16);
const _: () = assert!(std::mem::size_of::<uffdio_register>() == 32);

pub const UFFDIO_API: Opcode = linux_raw_sys::ioctl::UFFDIO_API as Opcode;
pub const UFFDIO_REGISTER: Opcode = linux_raw_sys::ioctl::UFFDIO_REGISTER as Opcode;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel() {
        // rustix's `_IOWR` agrees with linux-raw-sys's numbers, which come from the
        // kernel's headers for this architecture...
        assert_eq!(opcode::read_write::<uffdio_api>(0xAA, 0x3F), UFFDIO_API);
        assert_eq!(opcode::read_write::<uffdio_register>(0xAA, 0x00), UFFDIO_REGISTER);
        // ...and, where ioctl numbers use the generic encoding, yields the values the
        // kernel's headers compute for the two it lacks (checked against a 6.x build).
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        {
            assert_eq!(PAGEMAP_SCAN as u64, 0xC060_6610);
            assert_eq!(PROCMAP_QUERY as u64, 0xC068_6611);
        }
    }
}
