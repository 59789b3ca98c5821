//! Write watch on real memory: userfaultfd's asynchronous write protection
//! (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7) and the `PAGEMAP_SCAN` ioctl.
//!
//! A write-watched reservation is registered with a userfaultfd in write-protect
//! mode. The kernel then keeps a "write-protected" bit in each page-table entry: a
//! write to a protected page is resolved by the kernel itself (asynchronous mode: no
//! fault message, no handler thread, no signal) by clearing the bit, and
//! `PAGEMAP_SCAN` reports pages whose bit is clear as written. With
//! `PM_SCAN_WP_MATCHING` the same scan sets the bit again on exactly the pages it
//! reports, atomically with respect to concurrent writers, which is `GetWriteWatch`
//! with `WRITE_WATCH_FLAG_RESET`.
//!
//! Pages that were never populated hold no data and are not reported (the kernel
//! does not protect empty entries, so it would call them written); neither are pages
//! mapped to the shared zero page (only ever read). A first write populates a page
//! with an unprotected entry, which is then reported. Dropping pages
//! (`MADV_DONTNEED`, i.e. decommit) empties their entries, so a recommitted page starts
//! clean.
//!
//! A userfaultfd acts on the address space of the process that opened it, and a forked
//! child inherits the descriptor: there, write-protecting through it would clean the
//! parent's pages. So the child opens one of its own the first time it uses write watch
//! and registers its write-watched reservations with it. The kernel does not copy the
//! write-protect bits into a child that has no registration at the fork, so in the child
//! every page that held data at the fork counts as written until the child resets it
//! (more than was written since the last reset, never less).

use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use linux_raw_sys::general::{uffdio_api, uffdio_range, uffdio_register};
use parking_lot::RwLock;
use rustix::io::Errno;

use super::procfs::{self, Pagemap, Scan};
use super::sys;
use crate::backend::BackendError;
use crate::rules::PAGE;

/// A userfaultfd set up for asynchronous write protection, this process's own (see the
/// module docs on forks).
pub struct Watch {
    /// The descriptor and the fork generation it was opened in.
    uffd: RwLock<(u64, Arc<OwnedFd>)>,
}

/// The userfaultfd of this process, got by [`Watch::adopt`]: what the write-watch
/// operations act through, so that none can run on a descriptor inherited over a fork.
pub struct Adopted {
    uffd: Arc<OwnedFd>,
}

fn open_uffd() -> Result<OwnedFd, Errno> {
    // SAFETY: userfaultfd(2) only creates a descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_userfaultfd,
            libc::O_CLOEXEC | libc::O_NONBLOCK | sys::UFFD_USER_MODE_ONLY as libc::c_int,
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel just returned this descriptor to us, and nothing else owns it.
        return Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) });
    }
    let e = sys::last_errno();
    if e != Errno::INVAL {
        return Err(e);
    }
    // Before Linux 5.11 there is no UFFD_USER_MODE_ONLY.
    // SAFETY: as above.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd >= 0 {
        // SAFETY: as above.
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
    } else {
        Err(sys::last_errno())
    }
}

/// A userfaultfd with asynchronous write protection enabled, or why there is none.
fn open_async() -> Result<OwnedFd, BackendError> {
    let uffd = open_uffd().map_err(|_| BackendError::Unsupported("userfaultfd"))?;
    let mut api = uffdio_api { api: sys::UFFD_API.into(), features: sys::UFFD_FEATURE_WP_ASYNC.into(), ioctls: 0 };
    // SAFETY: `api` is a uffdio_api structure, which is what UFFDIO_API reads and writes.
    unsafe { sys::ioctl(uffd.as_fd(), sys::UFFDIO_API, &mut api) }
        .map_err(|_| BackendError::Unsupported("userfaultfd asynchronous write protection (Linux 6.7)"))?;
    if api.features & u64::from(sys::UFFD_FEATURE_WP_ASYNC) == 0 {
        return Err(BackendError::Unsupported("userfaultfd asynchronous write protection (Linux 6.7)"));
    }
    Ok(uffd)
}

/// Register `range` with `uffd` for write protection.
fn register_with(uffd: &OwnedFd, range: &Range<usize>) -> Result<(), Errno> {
    let mut reg = uffdio_register {
        range: uffdio_range { start: range.start as u64, len: range.len() as u64 },
        mode: sys::UFFDIO_REGISTER_MODE_WP.into(),
        ioctls: 0,
    };
    // SAFETY: `reg` is a uffdio_register structure; registration only changes how
    // the kernel handles write faults in our own mapping.
    unsafe { sys::ioctl(uffd.as_fd(), sys::UFFDIO_REGISTER, &mut reg) }.map(|_| ())
}

/// What a refused registration means.
fn register_error(e: Errno) -> BackendError {
    match e {
        Errno::NOMEM | Errno::AGAIN => BackendError::OutOfMemory,
        Errno::INVAL | Errno::PERM | Errno::NOTTY => BackendError::Unsupported("userfaultfd write protection"),
        e => BackendError::Os(e.raw_os_error()),
    }
}

impl Watch {
    /// Open a userfaultfd and enable asynchronous write protection, or say why not.
    pub fn new() -> Result<Watch, BackendError> {
        let generation = procfs::fork_generation();
        Ok(Watch { uffd: RwLock::new((generation, Arc::new(open_async()?))) })
    }

    /// This process's userfaultfd. The first call in a forked child opens the child's
    /// own and registers `watched` (the child's write-watched extents, inherited from
    /// its parent; called only then) with it; a range that is not mapped right now
    /// (another thread is reserving it, and registers it itself, or releasing it) is
    /// passed over.
    pub fn adopt(&self, watched: impl FnOnce() -> Vec<Range<usize>>) -> Result<Adopted, BackendError> {
        let generation = procfs::fork_generation();
        {
            let f = self.uffd.read();
            if f.0 == generation {
                return Ok(Adopted { uffd: f.1.clone() });
            }
        }
        let mut f = self.uffd.write();
        if f.0 != generation {
            let uffd = open_async()?;
            for range in watched() {
                match register_with(&uffd, &range) {
                    Ok(()) | Err(Errno::INVAL) => {}
                    Err(e) => return Err(register_error(e)),
                }
            }
            // (The inherited descriptor is closed once no call is using it.)
            *f = (generation, Arc::new(uffd));
        }
        Ok(Adopted { uffd: f.1.clone() })
    }
}

impl Adopted {
    /// Start tracking writes to `range` (freshly mapped, so every page is clean).
    pub fn register(&self, range: &Range<usize>) -> Result<(), BackendError> {
        register_with(&self.uffd, range).map_err(register_error)
    }

    /// Make every page of `range` clean: a `PAGEMAP_SCAN` that write-protects exactly
    /// the pages a later scan would report (written, holding data). A page with no
    /// data needs nothing: its first write populates it unprotected, so it is reported
    /// then. (`UFFDIO_WRITEPROTECT` of the whole range, which this was, also puts a
    /// marker into every empty page-table entry: resetting a 64 GiB heap with a few
    /// megabytes committed cost 128 MiB of page tables and most of a second, and made
    /// every later scan of it walk them.)
    ///
    /// Allocates nothing: the pages the scan reports are not kept. (It still gives the
    /// kernel a buffer for them: a `PM_SCAN_WP_MATCHING` scan without one write-protects
    /// every page-table entry of the range, whatever the categories asked for, putting a
    /// marker into each empty one.)
    pub fn clear(&self, pagemap: &Pagemap, range: &Range<usize>) -> Result<(), BackendError> {
        pagemap.scan_each(range.clone(), &written(true), 0, |_| {}).map_err(|e| match e {
            Errno::NOMEM => BackendError::OutOfMemory,
            e => BackendError::Os(e.raw_os_error()),
        })
    }

    /// The written runs of `range` if the whole range is write-watched, `None` if it
    /// is not (or only partly) registered for write tracking. (The scan reads this
    /// process's page tables; it asks of a forked child the registration its adoption
    /// made.)
    pub fn written_if_watched(
        &self,
        pagemap: &Pagemap,
        range: &Range<usize>,
    ) -> Result<Option<Vec<Range<usize>>>, BackendError> {
        let q = Scan {
            flags: sys::PM_SCAN_CHECK_WPASYNC,
            inverted: sys::PAGE_IS_PFNZERO,
            mask: sys::PAGE_IS_WRITTEN | sys::PAGE_IS_PFNZERO,
            anyof: sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED,
            ret: sys::PAGE_IS_WRITTEN,
        };
        match pagemap.scan(range.clone(), &q, 0) {
            Ok(runs) => Ok(Some(runs)),
            Err(Errno::PERM) => Ok(None),
            Err(Errno::NOMEM) => Err(BackendError::OutOfMemory),
            Err(e) => Err(BackendError::Os(e.raw_os_error())),
        }
    }

    /// The written pages of `range`, ascending, at most `max`, each handed to `found`;
    /// with `reset`, exactly those become clean again, in the same scan. Returns how
    /// many. Allocates nothing (see [`Pagemap::scan_each`]). (The pagemap is this
    /// process's; a forked child's registration, made by its adoption, must be its own
    /// too, for a reset to protect its pages again.)
    pub fn dirty_pages(
        &self,
        pagemap: &Pagemap,
        range: Range<usize>,
        max: usize,
        reset: bool,
        mut found: impl FnMut(usize),
    ) -> Result<usize, BackendError> {
        let mut n = 0;
        pagemap
            .scan_each(range, &written(reset), max, |r| {
                for page in r.step_by(PAGE).take(max - n) {
                    found(page);
                    n += 1;
                }
            })
            .map_err(|e| match e {
                Errno::NOMEM => BackendError::OutOfMemory,
                e => BackendError::Os(e.raw_os_error()),
            })?;
        Ok(n)
    }
}

/// The scan for written pages: written, holding data (present or swapped out), and not
/// the shared zero page. The kernel counts a never-populated entry as "written" because
/// nothing protects it; it holds nothing, so it is not reported (nor protected by a
/// reset, which would cost a page-table entry). With `reset`, the scan write-protects
/// the pages it finds, atomically with respect to concurrent writers.
fn written(reset: bool) -> Scan {
    Scan {
        flags: if reset { sys::PM_SCAN_WP_MATCHING | sys::PM_SCAN_CHECK_WPASYNC } else { 0 },
        inverted: sys::PAGE_IS_PFNZERO,
        mask: sys::PAGE_IS_WRITTEN | sys::PAGE_IS_PFNZERO,
        anyof: sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED,
        ret: sys::PAGE_IS_WRITTEN,
    }
}
