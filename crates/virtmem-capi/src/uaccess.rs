//! Checked copies between the caller's memory and ours, so that a bad pointer argument is
//! reported as `ERROR_NOACCESS` (998) instead of crashing the caller.
//!
//! A NULL pointer is rejected first. A pointer into the calling thread's live stack (from
//! the current stack pointer up to the top of the thread's stack: the caller's own
//! frames, where out-parameters such as `&old` or `&mbi` usually live) is certainly
//! mapped and writable, and is accessed directly. (That span also holds this library's
//! own frames, below the caller's: a pointer into them is not one to a live object of the
//! caller's, which no export accepts, and it is not detected.) Any other pointer goes through
//! `process_vm_readv`/`process_vm_writev` on our own process: the kernel checks every page
//! (present, readable, and writable for a store) and answers `EFAULT` rather than raising
//! `SIGSEGV`. Where those system calls are forbidden (a seccomp sandbox), the copies fall
//! back to plain loads and stores after the NULL check.

use std::cell::Cell;
use std::sync::OnceLock;

use crate::ffi::Fail;
use crate::types::ERROR_NOACCESS;

const NOACCESS: Fail = Fail(ERROR_NOACCESS);

/// How caller memory is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Checked by the kernel (`process_vm_readv`/`process_vm_writev` on ourselves).
    Checked,
    /// Plain copies (the checked system calls are unavailable).
    Direct,
}

fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| {
        let src = [0x5Au8; 8];
        let mut dst = [0u8; 8];
        match vm_copy(dst.as_mut_ptr() as usize, src.as_ptr() as usize, 8, false) {
            Ok(()) if dst == src => Mode::Checked,
            _ => Mode::Direct,
        }
    })
}

/// Copy `len` bytes from `remote` to `local` (`write == false`, a read of caller memory)
/// or from `local` to `remote` (`write == true`), both in this process, through the
/// kernel's checked path ([`vm::checked_copy`], which also stays right in a forked child).
fn vm_copy(local: usize, remote: usize, len: usize, write: bool) -> Result<(), i32> {
    // SAFETY: every caller passes a live Rust buffer of `len` bytes that it owns (mutably
    // when the kernel writes into it), which cannot overlap the caller's memory at `remote`.
    unsafe { vm::checked_copy(remote, local as *mut u8, len, write) }.map_err(|(_, e)| e)
}

thread_local! {
    /// The calling thread's stack, once asked for (see [`thread_stack`]).
    static STACK: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
    /// Whether the calling thread is inside [`without_allocating`].
    static NO_ALLOCATION: Cell<bool> = const { Cell::new(false) };
}

/// Run `f`, whose copies of caller memory must not allocate (the host's `VirtualQuery`,
/// which may run while other threads are suspended, one of them perhaps inside `malloc`):
/// a thread whose stack bounds are not known yet does not ask pthreads for them
/// (`pthread_getattr_np` allocates), and its copies go through the kernel's checked path
/// instead, as for any pointer off the stack. (Both thread-locals are `const`-initialised
/// plain values: reaching them allocates nothing either.)
pub(crate) fn without_allocating<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_ALLOCATION.with(|n| n.set(self.0));
        }
    }
    let _restore = Restore(NO_ALLOCATION.with(|n| n.replace(true)));
    f()
}

/// The calling thread's stack, `[low, high)`, as pthreads reports it (cached per thread);
/// `(0, 0)` when unknown, or not known yet inside [`without_allocating`].
fn thread_stack() -> (usize, usize) {
    STACK.with(|c| {
        if let Some(s) = c.get() {
            return s;
        }
        if NO_ALLOCATION.with(|n| n.get()) {
            return (0, 0);
        }
        let mut bounds = (0, 0);
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        // SAFETY: pthread_getattr_np initialises `attr` for the calling thread when it
        // returns 0; it is then read by pthread_attr_getstack and destroyed exactly once.
        unsafe {
            if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) == 0 {
                let mut addr: *mut libc::c_void = std::ptr::null_mut();
                let mut size: libc::size_t = 0;
                if libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) == 0 {
                    bounds = (addr as usize, addr as usize + size);
                }
                libc::pthread_attr_destroy(attr.as_mut_ptr());
            }
        }
        c.set(Some(bounds));
        bounds
    })
}

/// Whether `[addr, addr + len)` lies in the calling thread's live stack: between the
/// current stack pointer and the top of the stack, which is mapped and writable. (When
/// running on another stack, a coroutine's or a signal stack, the answer is no.)
#[inline(never)]
fn on_live_stack(addr: usize, len: usize) -> bool {
    let marker = 0u8;
    let sp = std::hint::black_box(&marker) as *const u8 as usize;
    let (low, high) = thread_stack();
    sp >= low && sp < high && addr >= sp && addr.checked_add(len).is_some_and(|end| end <= high)
}

/// Read `out.len()` bytes of caller memory at `src`. NULL (with a non-empty `out`) or any
/// unreadable byte -> `ERROR_NOACCESS`.
pub(crate) fn read_bytes(src: usize, out: &mut [u8]) -> Result<(), Fail> {
    if out.is_empty() {
        return Ok(());
    }
    if src == 0 || src.checked_add(out.len()).is_none() {
        return Err(NOACCESS);
    }
    if on_live_stack(src, out.len()) {
        // SAFETY: the range lies between this thread's current stack pointer and the top
        // of its stack, which is mapped and readable. That span also holds this library's
        // own frames (below the caller's), `out` among them when it is a local; a pointer
        // from C into them would point below the caller's stack pointer at the call, into
        // no live object of the caller's, which the C contract of every export excludes. So
        // the two ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, out.as_mut_ptr(), out.len()) };
        return Ok(());
    }
    match mode() {
        Mode::Checked => vm_copy(out.as_mut_ptr() as usize, src, out.len(), false).map_err(|_| NOACCESS),
        Mode::Direct => {
            // SAFETY: fallback mode without kernel checks: the caller promised (by the C
            // contract of the function) `out.len()` readable bytes at the non-NULL `src`;
            // the ranges cannot overlap since `out` is our own buffer.
            unsafe { std::ptr::copy_nonoverlapping(src as *const u8, out.as_mut_ptr(), out.len()) };
            Ok(())
        }
    }
}

/// Write `data` into caller memory at `dst`, all of it or nothing. NULL (with non-empty
/// `data`) or any byte that cannot be written -> `ERROR_NOACCESS`, and nothing is written
/// (a structure that ends on a read-only page is left alone, not half written).
///
/// The kernel checks a copy page by page and stops at the first page it cannot write,
/// so a copy within one page is all or nothing by itself; for one that spans pages,
/// every page after the first is probed first (one byte of each read and written back),
/// which costs nothing in the usual case of a small structure inside one page.
pub(crate) fn write_bytes(dst: usize, data: &[u8]) -> Result<(), Fail> {
    if data.is_empty() {
        return Ok(());
    }
    if dst == 0 || dst.checked_add(data.len()).is_none() {
        return Err(NOACCESS);
    }
    if !on_live_stack(dst, data.len()) && mode() == Mode::Checked {
        let page = page_size();
        let last = dst + data.len() - 1;
        let mut at = (dst / page + 1) * page;
        while at <= last {
            let mut b = [0u8];
            vm_copy(b.as_mut_ptr() as usize, at, 1, false).map_err(|_| NOACCESS)?;
            vm_copy(b.as_ptr() as usize, at, 1, true).map_err(|_| NOACCESS)?;
            at += page;
        }
    }
    write_partial(dst, data)
}

/// Check that every page of `[dst, dst + len)` can be written, by reading one byte of each
/// and writing it back (protection is per page, so one byte answers for its page): a cheap
/// check before an access with side effects whose result must land there. NULL (with
/// `len` > 0), a range that wraps or an unwritable page -> `ERROR_NOACCESS`. Without the
/// kernel's checked copies (a seccomp sandbox) only NULL and wrapping are caught.
///
/// The kernel copies the bytes onto themselves, [`PROBE_BATCH`] pages a system call
/// (`process_vm_writev` with one one-byte piece per page, our memory as both source and
/// destination): it reads each from its page and writes it back, and stops at the first
/// page it cannot read or write.
pub(crate) fn probe_pages_writable(dst: usize, len: usize) -> Result<(), Fail> {
    if len == 0 {
        return Ok(());
    }
    if dst == 0 || dst.checked_add(len).is_none() {
        return Err(NOACCESS);
    }
    if on_live_stack(dst, len) || mode() == Mode::Direct {
        return Ok(());
    }
    let page = page_size();
    let last = (dst + len - 1) / page;
    // The byte probed on each page: `dst` on the first, the page's first byte after it.
    let mut at = dst;
    while at / page <= last {
        let mut pieces = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; PROBE_BATCH];
        let mut n = 0;
        while n < PROBE_BATCH && at / page <= last {
            pieces[n] = libc::iovec { iov_base: at as *mut libc::c_void, iov_len: 1 };
            n += 1;
            at = (at / page + 1) * page;
        }
        copy_onto_themselves(&pieces[..n])?;
    }
    Ok(())
}

/// Pages [`probe_pages_writable`] probes with one system call (a kilobyte of pieces on
/// the stack, which serve as both sides).
const PROBE_BATCH: usize = 64;

/// Have the kernel copy each of `pieces` (of our memory) onto itself: `ERROR_NOACCESS`
/// unless it read and wrote back every byte of them.
fn copy_onto_themselves(pieces: &[libc::iovec]) -> Result<(), Fail> {
    let want: usize = pieces.iter().map(|p| p.iov_len).sum();
    loop {
        // SAFETY: `pieces` is a live array of `pieces.len()` iovecs, read by the kernel
        // only. The memory they name is only accessed by the kernel, which checks every
        // page (an unreadable or unwritable one ends the copy there, with a short count or
        // EFAULT), and each byte is written back with the value just read from it, so
        // nothing changes. (getpid names this process, also in a forked child.)
        let r = unsafe {
            let pid = libc::getpid();
            let count = pieces.len() as libc::c_ulong;
            libc::process_vm_writev(pid, pieces.as_ptr(), count, pieces.as_ptr(), count, 0)
        };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return if r >= 0 && r as usize == want { Ok(()) } else { Err(NOACCESS) };
    }
}

/// [`probe_pages_writable`] for a range of many pages, most often all writable: the kernel
/// first fills in the page tables of the whole range writable, as a write to each page
/// would, with one system call that reads and writes no byte (`MADV_POPULATE_WRITE`,
/// Linux 5.14), at a cost of a page-table walk a page; only where it refuses (a page that
/// cannot be written, or is not mapped; an older kernel) are the pages probed by copies,
/// which decide.
fn probe_array_writable(dst: usize, len: usize) -> Result<(), Fail> {
    if len == 0 || dst == 0 || on_live_stack(dst, len) || mode() == Mode::Direct {
        return probe_pages_writable(dst, len);
    }
    let page = page_size();
    let start = dst / page * page;
    let end = dst.checked_add(len).and_then(|end| end.checked_next_multiple_of(page));
    if let Some(end) = end {
        // SAFETY: MADV_POPULATE_WRITE changes no byte and unmaps nothing: it faults in,
        // writable, the pages of the range as a write would (a copy-on-write page gets its
        // copy, with the same contents), and fails where a write would fault.
        if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_POPULATE_WRITE) } == 0 {
            return Ok(());
        }
    }
    probe_pages_writable(dst, len)
}

/// Run `f` on the caller's array of `len` pointer-sized entries at `dst`, seen as a slice,
/// once every page of it is known to be writable ([`probe_pages_writable`]): what `f`
/// stores into the slice lands straight in the caller's memory, and what it does not
/// store stays as it was. NULL, an address that is not pointer-aligned, an array that
/// wraps or a page of it that cannot be written -> `ERROR_NOACCESS`, and `f` is not run.
/// Allocates nothing.
pub(crate) fn with_array<R>(dst: usize, len: usize, f: impl FnOnce(&mut [usize]) -> R) -> Result<R, Fail> {
    let bytes = len.checked_mul(std::mem::size_of::<usize>()).ok_or(NOACCESS)?;
    if dst == 0 || dst % std::mem::align_of::<usize>() != 0 {
        return Err(NOACCESS);
    }
    probe_array_writable(dst, bytes)?;
    // SAFETY: `dst` is non-NULL and aligned for `usize`, its `len` entries do not wrap,
    // and every page of them can be written: just probed, or on the live stack (see
    // `read_bytes`), or, without the kernel's checks, promised by the caller, as for every
    // other copy in that mode. The array is the caller's object, handed to this call for
    // it to write (the C contract of the export that takes it): no object of ours, so
    // nothing else in this library refers to it, and the caller keeps it mapped, writable
    // and untouched until the call returns. Any bits are a valid `usize`.
    let slots = unsafe { std::slice::from_raw_parts_mut(dst as *mut usize, len) };
    Ok(f(slots))
}

/// The page size of this machine (the unit in which the kernel checks a copy).
fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 {
            n as usize
        } else {
            4096
        }
    })
}

/// Write `data` (non-empty) at the non-NULL `dst`, whose end does not wrap: bytes before a
/// fault may have been written.
fn write_partial(dst: usize, data: &[u8]) -> Result<(), Fail> {
    if on_live_stack(dst, data.len()) {
        // SAFETY: the range lies between this thread's current stack pointer and the top
        // of its stack, which is mapped and writable. It is one of the caller's objects
        // (the C contract of every export: a pointer argument points to a live object),
        // so it lies above this library's frames, which it would otherwise overwrite,
        // and it does not overlap our buffer `data`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst as *mut u8, data.len()) };
        return Ok(());
    }
    match mode() {
        Mode::Checked => vm_copy(data.as_ptr() as usize, dst, data.len(), true).map_err(|_| NOACCESS),
        Mode::Direct => {
            // SAFETY: fallback mode without kernel checks: the caller promised `data.len()`
            // writable bytes at the non-NULL `dst`, which is not our buffer `data`.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst as *mut u8, data.len()) };
            Ok(())
        }
    }
}

/// Check that `len` bytes at `dst` can be written, without changing them (each byte is
/// read and written back). Used before an irrevocable change whose result must land there.
pub(crate) fn probe_writable(dst: usize, len: usize) -> Result<(), Fail> {
    if dst != 0 && on_live_stack(dst, len) {
        return Ok(());
    }
    if len > 0 && (dst == 0 || dst.checked_add(len).is_none()) {
        return Err(NOACCESS);
    }
    // Piece by piece through one bounded buffer: `len` comes from the caller and must not
    // size an allocation (a failed allocation aborts the process).
    let mut buf = vec![0u8; len.min(CHUNK)];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK);
        read_bytes(dst + done, &mut buf[..n])?;
        write_bytes(dst + done, &buf[..n])?;
        done += n;
    }
    Ok(())
}

/// The largest piece copied at a time through a buffer of ours: caller-given sizes are
/// worked through in pieces of at most this many bytes, never allocated at once.
pub(crate) const CHUNK: usize = 64 * 1024;

/// A plain value that can be copied to and from caller memory as its bytes.
pub(crate) trait Pod: Copy {
    /// The value's bytes, as a fixed-size array (copying one allocates nothing).
    type Bytes: AsRef<[u8]> + AsMut<[u8]> + Default;
    /// The value's bytes.
    fn to_ne(self) -> Self::Bytes;
    /// The value from its bytes.
    fn from_ne(bytes: Self::Bytes) -> Self;
}

macro_rules! pod_int {
    ($($t:ty),*) => {$(
        impl Pod for $t {
            type Bytes = [u8; std::mem::size_of::<$t>()];
            fn to_ne(self) -> Self::Bytes {
                self.to_ne_bytes()
            }
            fn from_ne(bytes: Self::Bytes) -> Self {
                <$t>::from_ne_bytes(bytes)
            }
        }
    )*};
}
pod_int!(u32, usize);

/// Store `value` at caller pointer `dst` (NULL or unwritable -> `ERROR_NOACCESS`).
pub(crate) fn store<T: Pod>(dst: *mut T, value: T) -> Result<(), Fail> {
    write_bytes(dst as usize, value.to_ne().as_ref())
}

/// Load a value from caller pointer `src` (NULL or unreadable -> `ERROR_NOACCESS`).
pub(crate) fn load<T: Pod>(src: *const T) -> Result<T, Fail> {
    let mut buf = T::Bytes::default();
    read_bytes(src as usize, buf.as_mut())?;
    Ok(T::from_ne(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside `without_allocating`, a thread that has not asked for its stack yet does not
    /// (its stack is treated as unknown and not cached), and its copies still work, stack
    /// slots included, through the checked path; outside, it asks as before.
    #[test]
    fn without_allocating_never_asks_for_the_stack() {
        std::thread::spawn(|| {
            let mut slot = [0u8; 8];
            let dst = slot.as_mut_ptr() as usize;
            without_allocating(|| {
                assert_eq!(thread_stack(), (0, 0));
                assert!(!on_live_stack(dst, 8));
                write_bytes(dst, &[7; 8]).unwrap();
            });
            assert_eq!(STACK.with(|c| c.get()), None, "nothing cached");
            assert_eq!(std::hint::black_box(slot), [7; 8]);
            assert_ne!(thread_stack(), (0, 0), "outside, the stack is asked for");
            without_allocating(|| assert!(on_live_stack(dst, 8), "once known, it is used"));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn checked_mode_is_available_here() {
        assert!(matches!(mode(), Mode::Checked), "process_vm_readv on ourselves should work in the test sandbox");
    }

    #[test]
    fn a_forked_child_copies_within_itself() {
        // A heap buffer (not on the live stack, so the checked path is taken) that the
        // child overwrites: the child must see its own copy changed, the parent nothing.
        assert_eq!(mode(), Mode::Checked);
        let buf: Box<[u8; 64]> = Box::new([1u8; 64]);
        let at = buf.as_ptr() as usize;
        // Once before the fork, so that this thread's stack bounds are already cached
        // (the child then needs no allocation or lock to find them).
        read_bytes(at, &mut [0u8; 64]).unwrap();
        // SAFETY: the child only copies memory and exits with `_exit`, touching no lock
        // another thread of the test harness could hold across the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = write_bytes(at, &[7u8; 64]).is_ok() && buf.iter().all(|&b| b == 7);
            let mut back = [0u8; 64];
            let ok = ok && read_bytes(at, &mut back).is_ok() && back == [7u8; 64];
            // SAFETY: ends the child at once, running no destructor or atexit handler.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child made above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child copied wrongly: {status:#x}");
        assert!(buf.iter().all(|&b| b == 1), "the parent's memory changed");
    }

    #[test]
    fn good_pointers_copy_both_ways() {
        let mut x: u32 = 7;
        store(&mut x, 0xDEAD_BEEF).unwrap();
        assert_eq!(x, 0xDEAD_BEEF);
        assert_eq!(load(&x as *const u32).unwrap(), 0xDEAD_BEEF);
        let src: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut dst = vec![0u8; 10_000];
        read_bytes(src.as_ptr() as usize, &mut dst).unwrap();
        assert_eq!(src, dst);
    }

    #[test]
    fn null_and_unmapped_pointers_are_noaccess() {
        assert_eq!(store(std::ptr::null_mut::<u32>(), 1), Err(NOACCESS));
        assert_eq!(load(std::ptr::null::<usize>()), Err(NOACCESS));
        // The first page is never mapped.
        assert_eq!(store(0x10 as *mut u32, 1), Err(NOACCESS));
        assert_eq!(read_bytes(0xFFFF_FFFF_FFFF_F000, &mut [0u8; 16]), Err(NOACCESS));
        // Empty copies touch nothing and succeed, even at NULL.
        assert_eq!(write_bytes(0, &[]), Ok(()));
    }

    #[test]
    fn the_live_stack_is_recognised_and_nothing_else() {
        let local = [0u8; 64];
        assert!(on_live_stack(local.as_ptr() as usize, 64));
        // On the heap on purpose (an array would be on the stack).
        #[allow(clippy::useless_vec)]
        let heap = vec![0u8; 64];
        assert!(!on_live_stack(heap.as_ptr() as usize, 64));
        static STATIC: [u8; 4] = [0; 4];
        assert!(!on_live_stack(STATIC.as_ptr() as usize, 4));
        let (_, high) = thread_stack();
        assert!(!on_live_stack(high - 8, 16), "past the top of the stack");
        std::thread::spawn(|| {
            let mine = [1u8; 8];
            assert!(on_live_stack(mine.as_ptr() as usize, 8));
            let mut x = 0u32;
            store(&mut x, 5).unwrap();
            assert_eq!(x, 5);
        })
        .join()
        .unwrap();
    }

    /// `probe_pages_writable` looks at every page of the range, in the first batch of
    /// pages and past it (a read-only or unmapped page anywhere fails, one next to the range
    /// does not), and changes no byte.
    #[test]
    fn every_page_is_probed_across_batches_and_nothing_changes() {
        let page = page_size();
        let pages = PROBE_BATCH + 6;
        // SAFETY: a fresh private anonymous mapping of this test's, only used through `p`
        // (by the probes and the checks below) and unmapped at the end.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let p = p as usize;
        let bytes = |at: usize, len: usize| {
            let mut v = vec![0u8; len];
            read_bytes(at, &mut v).unwrap();
            v
        };
        let pattern: Vec<u8> = (0..pages * page).map(|i| (i % 251) as u8).collect();
        write_bytes(p, &pattern).unwrap();
        let protect = |i: usize, prot: i32| {
            // SAFETY: page `i` of the mapping above.
            assert_eq!(unsafe { libc::mprotect((p + i * page) as *mut libc::c_void, page, prot) }, 0);
        };
        let (from, len) = (p + 5, pages * page - 10);
        assert_eq!(probe_pages_writable(from, len), Ok(()));
        for bad in [0, 1, PROBE_BATCH - 1, PROBE_BATCH, pages - 1] {
            protect(bad, libc::PROT_READ);
            assert_eq!(probe_pages_writable(from, len), Err(NOACCESS), "page {bad} read-only");
            protect(bad, libc::PROT_READ | libc::PROT_WRITE);
        }
        protect(pages - 1, libc::PROT_READ);
        assert_eq!(probe_pages_writable(p, (pages - 1) * page), Ok(()), "the read-only page after the range");
        protect(pages - 1, libc::PROT_READ | libc::PROT_WRITE);
        assert_eq!(bytes(p, pages * page), pattern, "no byte changed");
        // SAFETY: one page of the mapping above, which nothing refers to.
        assert_eq!(unsafe { libc::munmap((p + (PROBE_BATCH + 2) * page) as *mut libc::c_void, page) }, 0);
        assert_eq!(probe_pages_writable(from, len), Err(NOACCESS), "an unmapped page");
        // SAFETY: the rest of the mapping above (munmap skips the hole).
        assert_eq!(unsafe { libc::munmap(p as *mut libc::c_void, pages * page) }, 0);
    }

    #[test]
    fn read_only_memory_is_readable_but_not_writable() {
        static RO: [u8; 4] = [1, 2, 3, 4];
        let mut b = [0u8; 4];
        read_bytes(RO.as_ptr() as usize, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert_eq!(write_bytes(RO.as_ptr() as usize, &[9]), Err(NOACCESS));
        assert_eq!(probe_writable(RO.as_ptr() as usize, 4), Err(NOACCESS));
        assert_eq!(RO, [1, 2, 3, 4]);
    }
}
