//! Write watch by the bare system calls, set up as the Linux backend sets up a
//! write-watched reservation, for the `watch` benchmark and `linux_profile watch`: an
//! `mmap(PROT_NONE, MAP_NORESERVE)` (low in the address space) made read-write (the commit), `MADV_NOHUGEPAGE`, a
//! userfaultfd with `UFFD_FEATURE_WP_ASYNC` only (the backend asks for no other feature),
//! the range registered with it in write-protect mode; then one `PAGEMAP_SCAN` ioctl per
//! scan, with the backend's page categories (written, present or swapped out, not the
//! shared zero page), into a buffer of page ranges large enough for every page.
//!
//! (The categories are the backend's work, not an extra: with `PAGE_IS_WRITTEN` alone a
//! never-written page whose page table exists counts as written, and a reset puts a
//! marker into its empty entry. For the same reason a reset scan keeps its output buffer:
//! without one the kernel write-protects every entry, whatever the categories.)

use super::sys;
use linux_raw_sys::general::{page_region, pm_scan_arg, uffdio_api, uffdio_range, uffdio_register};
use rustix::mm::{self, MapFlags, MprotectFlags, ProtFlags};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

const PAGE: usize = 4096;

/// A write-watched mapping of the bare system calls.
pub struct RawWatch {
    base: usize,
    size: usize,
    /// Kept open: closing it would end the write tracking.
    uffd: OwnedFd,
    pagemap: std::fs::File,
    regions: Vec<page_region>,
}

impl RawWatch {
    /// Map `size` bytes, make them read-write, register them; or why the kernel refuses.
    pub fn new(size: usize) -> Result<RawWatch, String> {
        // SAFETY: userfaultfd(2) only creates a descriptor; the flags are the backend's.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                libc::O_CLOEXEC | libc::O_NONBLOCK | sys::UFFD_USER_MODE_ONLY as libc::c_int,
            )
        };
        if fd < 0 {
            return Err(format!("userfaultfd: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = uffdio_api { api: sys::UFFD_API.into(), features: sys::UFFD_FEATURE_WP_ASYNC.into(), ioctls: 0 };
        // SAFETY: UFFDIO_API reads and writes one uffdio_api, which `api` is.
        unsafe { sys::ioctl(uffd.as_fd(), sys::UFFDIO_API, &mut api) }
            .map_err(|e| format!("UFFDIO_API with UFFD_FEATURE_WP_ASYNC: {e}"))?;
        let pagemap = std::fs::File::open("/proc/self/pagemap").map_err(|e| format!("/proc/self/pagemap: {e}"))?;
        // Low in the address space, as the backend places reservations (bottom-up), but
        // at a multiple of 1 GiB: no other mapping shares its page tables below the top
        // level, so a scan walks only its own (mapped near the libraries, as the kernel
        // would place it, a scan of an untouched heap walked the neighbours' page-middle
        // directory too and cost 3 us more).
        let p = (1..512usize)
            .find_map(|gib| {
                // SAFETY: MAP_FIXED_NOREPLACE fails rather than replace anything mapped.
                unsafe {
                    mm::mmap_anonymous(
                        (gib << 30) as *mut _,
                        size,
                        ProtFlags::empty(),
                        MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED_NOREPLACE,
                    )
                }
                .ok()
                .filter(|&p| p as usize == gib << 30)
            })
            .ok_or("mmap: no free 1 GiB-aligned range below 512 GiB")?;
        let regions = vec![page_region { start: 0, end: 0, categories: 0 }; size / PAGE];
        // (Unmapped when dropped, on the errors below too.)
        let me = RawWatch { base: p as usize, size, uffd, pagemap, regions };
        // SAFETY: the mapping is this object's own (unmapped when it is dropped); making it
        // read-write and asking for no huge pages change no memory anyone else uses.
        unsafe {
            mm::mprotect(p, size, MprotectFlags::READ | MprotectFlags::WRITE).map_err(|e| format!("mprotect: {e}"))?;
            let _ = mm::madvise(p, size, mm::Advice::LinuxNoHugepage);
        }
        let mut reg = uffdio_register {
            range: uffdio_range { start: p as u64, len: size as u64 },
            mode: sys::UFFDIO_REGISTER_MODE_WP.into(),
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one uffdio_register, which `reg` is; the
        // range is our own mapping.
        unsafe { sys::ioctl(me.uffd.as_fd(), sys::UFFDIO_REGISTER, &mut reg) }
            .map_err(|e| format!("UFFDIO_REGISTER (write protect): {e}"))?;
        Ok(me)
    }

    /// The mapping's first address.
    pub fn base(&self) -> usize {
        self.base
    }

    /// Write to page `i` of the mapping.
    pub fn touch(&self, i: usize) {
        assert!(i < self.size / PAGE);
        // SAFETY: the page is in our read-write mapping, which only its owner writes to.
        unsafe { std::ptr::write_volatile((self.base + i * PAGE) as *mut u8, 1) };
    }

    /// One `PAGEMAP_SCAN` of the whole mapping for written pages, write-protecting them
    /// again with `reset`: how many pages it found (their ranges are in the buffer).
    pub fn scan(&mut self, reset: bool) -> usize {
        let mut arg = pm_scan_arg {
            size: std::mem::size_of::<pm_scan_arg>() as u64,
            flags: if reset { u64::from(sys::PM_SCAN_WP_MATCHING | sys::PM_SCAN_CHECK_WPASYNC) } else { 0 },
            start: self.base as u64,
            end: (self.base + self.size) as u64,
            walk_end: 0,
            vec: self.regions.as_mut_ptr() as u64,
            vec_len: self.regions.len() as u64,
            max_pages: 0,
            category_inverted: sys::PAGE_IS_PFNZERO.into(),
            category_mask: (sys::PAGE_IS_WRITTEN | sys::PAGE_IS_PFNZERO).into(),
            category_anyof_mask: (sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED).into(),
            return_mask: sys::PAGE_IS_WRITTEN.into(),
        };
        // SAFETY: `arg` is a properly sized pm_scan_arg whose `vec` points to `vec_len`
        // writable page_region entries (one per page: never too few) that outlive the call.
        let n = unsafe { sys::ioctl(self.pagemap.as_fd(), sys::PAGEMAP_SCAN, &mut arg) }.expect("PAGEMAP_SCAN");
        debug_assert_eq!(arg.walk_end, arg.end, "one scan covers the whole mapping");
        self.regions[..n as usize].iter().map(|r| (r.end - r.start) as usize / PAGE).sum()
    }
}

impl Drop for RawWatch {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing refers to it any more.
        let _ = unsafe { mm::munmap(self.base as *mut _, self.size) };
    }
}
