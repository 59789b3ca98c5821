//! Raw kernel interfaces that neither rustix nor Debian's headers cover yet: the
//! `PROCMAP_QUERY` and `PAGEMAP_SCAN` ioctls, userfaultfd's ioctls and the guard-region
//! `madvise` advice. Constants and layouts are declared here from the kernel's UAPI
//! (`include/uapi/linux/fs.h`, `userfaultfd.h`, `mman-common.h`); each structure's size
//! is checked at compile time because it is also encoded in its ioctl number.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::io::Errno;

// ----- madvise -------------------------------------------------------------------------

/// `MADV_GUARD_INSTALL` (Linux 6.13): make pages fault on any access, dropping them.
#[allow(dead_code)]
pub const MADV_GUARD_INSTALL: i32 = 102;
/// `MADV_GUARD_REMOVE` (Linux 6.13): undo `MADV_GUARD_INSTALL` (pages read as zero).
#[allow(dead_code)]
pub const MADV_GUARD_REMOVE: i32 = 103;

/// `madvise` with advice rustix has no variant for.
///
/// # Safety
/// The range must be owned by the caller: the advice may drop its contents.
#[allow(dead_code)]
pub unsafe fn madvise_raw(addr: usize, len: usize, advice: i32) -> Result<(), Errno> {
    // SAFETY: the caller vouches for the range; madvise itself cannot touch memory
    // outside it.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) };
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

// ----- ioctl numbers -------------------------------------------------------------------

const fn iowr(ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    ((3 << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64) as libc::c_ulong
}

/// # Safety
/// `arg` must point to the structure `req` expects, valid for the kernel to read and
/// write for the duration of the call.
pub unsafe fn ioctl<T>(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: *mut T) -> Result<i64, Errno> {
    // SAFETY: forwarded from the caller.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as i64)
    }
}

// ----- PROCMAP_QUERY (Linux 6.11) ------------------------------------------------------

/// `struct procmap_query`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcmapQuery {
    pub size: u64,
    pub query_flags: u64,
    pub query_addr: u64,
    pub vma_start: u64,
    pub vma_end: u64,
    pub vma_flags: u64,
    pub vma_page_size: u64,
    pub vma_offset: u64,
    pub inode: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub vma_name_size: u32,
    pub build_id_size: u32,
    pub vma_name_addr: u64,
    pub build_id_addr: u64,
}
const _: () = assert!(std::mem::size_of::<ProcmapQuery>() == 104);

/// `PROCMAP_QUERY`: `_IOWR('f', 17, struct procmap_query)`.
pub const PROCMAP_QUERY: libc::c_ulong = iowr(b'f', 17, std::mem::size_of::<ProcmapQuery>());
pub const PROCMAP_QUERY_VMA_READABLE: u64 = 0x01;
pub const PROCMAP_QUERY_VMA_WRITABLE: u64 = 0x02;
pub const PROCMAP_QUERY_VMA_EXECUTABLE: u64 = 0x04;
pub const PROCMAP_QUERY_VMA_SHARED: u64 = 0x08;
pub const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;

// ----- PAGEMAP_SCAN (Linux 6.7) --------------------------------------------------------

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}
const _: () = assert!(std::mem::size_of::<PmScanArg>() == 96);

/// `struct page_region`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
pub const PAGEMAP_SCAN: libc::c_ulong = iowr(b'f', 16, std::mem::size_of::<PmScanArg>());
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;

// ----- userfaultfd ---------------------------------------------------------------------

/// `UFFD_API`.
pub const UFFD_API: u64 = 0xAA;
/// `UFFD_USER_MODE_ONLY` (Linux 5.11): only user-mode faults, allowed without privilege.
pub const UFFD_USER_MODE_ONLY: i32 = 1;
/// `UFFD_FEATURE_WP_ASYNC` (Linux 6.7): the kernel resolves write-protect faults itself.
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioApi {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRange {
    pub start: u64,
    pub len: u64,
}
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRegister {
    pub range: UffdioRange,
    pub mode: u64,
    pub ioctls: u64,
}
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioWriteprotect {
    pub range: UffdioRange,
    pub mode: u64,
}
const _: () = assert!(std::mem::size_of::<UffdioApi>() == 24);
const _: () = assert!(std::mem::size_of::<UffdioRegister>() == 32);
const _: () = assert!(std::mem::size_of::<UffdioWriteprotect>() == 24);

pub const UFFDIO_API: libc::c_ulong = iowr(0xAA, 0x3F, std::mem::size_of::<UffdioApi>());
pub const UFFDIO_REGISTER: libc::c_ulong = iowr(0xAA, 0x00, std::mem::size_of::<UffdioRegister>());
pub const UFFDIO_WRITEPROTECT: libc::c_ulong = iowr(0xAA, 0x06, std::mem::size_of::<UffdioWriteprotect>());
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel() {
        // Values as the kernel's headers compute them (checked against a 6.x build).
        assert_eq!(PAGEMAP_SCAN, 0xC060_6610);
        assert_eq!(UFFDIO_API, 0xC018_AA3F);
        assert_eq!(UFFDIO_REGISTER, 0xC020_AA00);
        assert_eq!(UFFDIO_WRITEPROTECT, 0xC018_AA06);
        assert_eq!(PROCMAP_QUERY, 0xC068_6611);
    }
}
