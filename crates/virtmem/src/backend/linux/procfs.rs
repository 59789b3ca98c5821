//! What the kernel says about this process's mappings and pages: `/proc/self/maps`
//! (through the `PROCMAP_QUERY` ioctl, or by parsing the text on kernels before 6.11)
//! and `/proc/self/pagemap` (through the `PAGEMAP_SCAN` ioctl, or by reading its
//! 8-byte entries on kernels before 6.7).
//!
//! A `/proc/self/...` file opened once keeps naming the process that opened it, so a
//! forked child would see its parent's mappings through an inherited descriptor: each
//! [`ProcFile`] remembers the fork generation it was opened in and reopens itself in a
//! child.

use std::fs::File;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};

use linux_raw_sys::general::{page_region, pm_scan_arg, procmap_query_flags};
use parking_lot::{Mutex, MutexGuard, RwLock};
use rustix::io::Errno;

use super::sys;
use crate::backend::{Access, ForeignKind};
use crate::rules::PAGE;

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn watch_forks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only bumps an atomic counter, which is
        // async-signal-safe and so allowed in a child after fork.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
}

/// How many times this process's line of descent has forked: 0 in the process that
/// first asked, 1 in its child, and so on. Something tied to the process that made it
/// (a descriptor such as a userfaultfd) remembers the generation it was made in and is
/// made anew when this differs.
pub fn fork_generation() -> u64 {
    watch_forks();
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// A `/proc/self/<name>` file, reopened when the process has forked since.
pub struct ProcFile {
    path: &'static str,
    file: RwLock<(u64, Arc<File>)>,
}

impl ProcFile {
    pub fn open(path: &'static str) -> std::io::Result<ProcFile> {
        watch_forks();
        let generation = FORK_GENERATION.load(Ordering::Relaxed);
        let file = File::open(path)?;
        Ok(ProcFile { path, file: RwLock::new((generation, Arc::new(file))) })
    }

    /// The file, naming the calling process.
    pub fn get(&self) -> Arc<File> {
        let generation = FORK_GENERATION.load(Ordering::Relaxed);
        {
            let f = self.file.read();
            if f.0 == generation {
                return f.1.clone();
            }
        }
        let mut f = self.file.write();
        if f.0 != generation {
            if let Ok(file) = File::open(self.path) {
                *f = (generation, Arc::new(file));
            }
        }
        f.1.clone()
    }
}

/// A kernel mapping (VMA) as `/proc/self/maps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vma {
    pub start: usize,
    pub end: usize,
    pub access: Access,
    pub kind: ForeignKind,
}

fn access_of(read: bool, write: bool, exec: bool) -> Access {
    match (read, write, exec) {
        (_, true, true) => Access::ExecuteReadWrite,
        (true, false, true) => Access::ExecuteRead,
        (false, false, true) => Access::Execute,
        (_, true, false) => Access::ReadWrite,
        (true, false, false) => Access::Read,
        (false, false, false) => Access::None,
    }
}

fn kind_of(shared: bool, file_backed: bool) -> ForeignKind {
    if shared {
        ForeignKind::Mapped
    } else if file_backed {
        ForeignKind::Image
    } else {
        ForeignKind::Private
    }
}

/// `/proc/self/maps`, asked one mapping at a time.
pub struct Maps {
    file: ProcFile,
    /// Whether `PROCMAP_QUERY` works (cleared the first time it answers `ENOTTY`).
    ioctl: std::sync::atomic::AtomicBool,
    /// The text read when the ioctl cannot answer.
    text: &'static str,
}

impl Maps {
    pub fn open() -> std::io::Result<Maps> {
        Ok(Maps {
            file: ProcFile::open("/proc/self/maps")?,
            ioctl: std::sync::atomic::AtomicBool::new(super::features().procmap_query),
            text: "/proc/self/maps",
        })
    }

    /// Whether `PROCMAP_QUERY` is used (the kernel has it, and it has not been withheld
    /// or failed with `ENOTTY` since).
    pub fn uses_ioctl(&self) -> bool {
        self.ioctl.load(Ordering::Relaxed)
    }

    /// Whether the kernel answers `PROCMAP_QUERY` (Linux 6.11+): asked about address 0,
    /// it names the first mapping or says there is none; an older kernel does not know
    /// the request (`ENOTTY`).
    pub fn probe_ioctl() -> bool {
        let Ok(file) = ProcFile::open("/proc/self/maps") else { return false };
        let file = file.get();
        let mut q = sys::procmap_query_covering_or_next(0);
        // SAFETY: as in `at_or_after`: a properly sized procmap_query without buffers.
        matches!(unsafe { sys::ioctl(file.as_fd(), sys::PROCMAP_QUERY, &mut q) }, Ok(_) | Err(Errno::NOENT))
    }

    /// The first mapping that ends above `addr` (the one containing it, or the next).
    ///
    /// Uses `PROCMAP_QUERY` because it answers in one system call under the kernel's
    /// per-VMA RCU lock, without formatting or parsing the whole map; falls back to
    /// parsing the text where the ioctl is missing.
    pub fn at_or_after(&self, addr: usize) -> Option<Vma> {
        if self.ioctl.load(Ordering::Relaxed) {
            let file = self.file.get();
            let mut q = sys::procmap_query_covering_or_next(addr);
            // SAFETY: `q` is a properly sized procmap_query with no name or build-id
            // buffers, which is all PROCMAP_QUERY reads or writes.
            match unsafe { sys::ioctl(file.as_fd(), sys::PROCMAP_QUERY, &mut q) } {
                Ok(_) => {
                    let has = |flag| q.vma_flags & sys::procmap_flag(flag) != 0;
                    return Some(Vma {
                        start: q.vma_start as usize,
                        end: q.vma_end as usize,
                        access: access_of(
                            has(procmap_query_flags::PROCMAP_QUERY_VMA_READABLE),
                            has(procmap_query_flags::PROCMAP_QUERY_VMA_WRITABLE),
                            has(procmap_query_flags::PROCMAP_QUERY_VMA_EXECUTABLE),
                        ),
                        kind: kind_of(has(procmap_query_flags::PROCMAP_QUERY_VMA_SHARED), q.inode != 0),
                    });
                }
                Err(Errno::NOENT) => return None,
                Err(Errno::NOTTY) | Err(Errno::INVAL) => self.ioctl.store(false, Ordering::Relaxed),
                Err(_) => {}
            }
        }
        match self.parse() {
            Some(all) => all.into_iter().find(|v| v.end > addr),
            // Neither the ioctl nor the text answered (out of file descriptors, say):
            // say that something unknown lives from `addr` on rather than that nothing
            // does, so that no query calls someone else's memory free.
            None => Some(Vma {
                start: addr & !(PAGE - 1),
                end: usize::MAX & !(PAGE - 1),
                access: Access::None,
                kind: ForeignKind::Private,
            }),
        }
    }

    /// Every mapping, parsed from the text of `/proc/self/maps` (`None` when it cannot
    /// be read).
    pub fn parse(&self) -> Option<Vec<Vma>> {
        std::fs::read_to_string(self.text).ok().map(|t| parse_maps(&t))
    }
}

/// Parse the text of a `/proc/<pid>/maps` file.
pub fn parse_maps(text: &str) -> Vec<Vma> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some((s, e)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16)) else {
            continue;
        };
        let p = perms.as_bytes();
        if p.len() < 4 {
            continue;
        }
        out.push(Vma {
            start,
            end,
            access: access_of(p[0] == b'r', p[1] == b'w', p[2] == b'x'),
            kind: kind_of(p[3] == b's', inode != "0"),
        });
    }
    out
}

/// The named mapping (e.g. `[stack]`), from the text of `/proc/self/maps`.
pub fn named_mapping(name: &str) -> Option<Range<usize>> {
    let text = std::fs::read_to_string("/proc/self/maps").ok()?;
    text.lines().find(|l| l.split_whitespace().nth(5) == Some(name)).and_then(|l| {
        let (s, e) = l.split_whitespace().next()?.split_once('-')?;
        Some(usize::from_str_radix(s, 16).ok()?..usize::from_str_radix(e, 16).ok()?)
    })
}

/// How many runs the first `PAGEMAP_SCAN` of a [`Pagemap::scan_each`] can answer: 341
/// (8 184 bytes on the stack). Not more: the kernel copies the runs through a buffer of
/// its own of up to 512 of them, allocated per call, and above 8 KiB (341) that
/// allocation leaves the slab allocator for the page allocator, which costs every scan,
/// even one that finds nothing, about 0.4 us (a bare scan with reset of an untouched
/// 256 MiB heap: 2.1 us with a buffer for every page, 1.8 us through the backend; without
/// reset 1.4 and 1.0 us: the `watch` benchmark's one run, BENCHMARKS.md). A scan that
/// fills it goes on into the larger buffer of [`BIG_SCAN_RUNS`]: with only this one, a
/// `GetWriteWatch` of 4096 scattered pages made 12 calls and cost 1.04-1.10x the one call
/// of a bare scan with a buffer for every page (the `watch` benchmark on the idle
/// machine); with 128 runs and no second buffer it made 30.
const SCAN_RUNS: usize = 341;

/// How many runs each later `PAGEMAP_SCAN` of a [`Pagemap::scan_each`] whose first one
/// filled the stack's [`SCAN_RUNS`] can answer: 4096 (96 KiB, allocated at the first
/// write-watched reservation and kept by the [`Pagemap`]), so that 4096 scattered pages
/// take 2 calls instead of 12 (1.01-1.07x the bare scan, one short run of the `watch`
/// benchmark on a shared machine). The kernel's own copy buffer is 512 runs (12 KiB) whatever the size asked, so
/// each of these calls pays the page allocator's ~0.4 us once, against ~0.7 us for each
/// call of 341 runs it saves (4096 pages: 10 calls fewer, 7 us of 198 without reset;
/// `linux_profile watch 4096`, BENCHMARKS.md). A scan whose first call filled the stack
/// buffer with nearly all there was pays that 0.4 us for its second call and saves
/// nothing.
const BIG_SCAN_RUNS: usize = 4096;

/// `/proc/self/pagemap`: which pages are populated and which were written.
pub struct Pagemap {
    file: ProcFile,
    /// `PAGEMAP_SCAN` calls made so far.
    scans: AtomicU64,
    /// The buffer of [`BIG_SCAN_RUNS`] runs for scans that fill their stack buffer: empty
    /// until [`Pagemap::keep_buffer`] or the first scan that needs it. One scan uses it at a time; a scan that finds it in use
    /// (another thread's, or a forked child's copy of a lock held at the fork) goes on
    /// with its stack buffer instead of waiting.
    big: Mutex<Vec<page_region>>,
}

/// One `PAGEMAP_SCAN` query: `PM_SCAN_*` flags and `PAGE_IS_*` category masks (the
/// kernel's are all below bit 32, hence `u32` like linux-raw-sys's constants).
pub struct Scan {
    pub flags: u32,
    pub inverted: u32,
    pub mask: u32,
    pub anyof: u32,
    pub ret: u32,
}

impl Pagemap {
    pub fn open() -> std::io::Result<Pagemap> {
        Ok(Pagemap {
            file: ProcFile::open("/proc/self/pagemap")?,
            scans: AtomicU64::new(0),
            big: Mutex::new(Vec::new()),
        })
    }

    /// How many `PAGEMAP_SCAN` calls [`Pagemap::scan_each`] has made.
    pub fn scan_count(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }

    /// Run a `PAGEMAP_SCAN` over `range`: the matching pages as runs, at most
    /// `max_pages` pages (0: no limit).
    pub fn scan(&self, range: Range<usize>, q: &Scan, max_pages: usize) -> Result<Vec<Range<usize>>, Errno> {
        let mut out: Vec<Range<usize>> = Vec::new();
        self.scan_each(range, q, max_pages, |r| match out.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => out.push(r),
        })?;
        Ok(out)
    }

    /// Allocate the kept buffer of [`BIG_SCAN_RUNS`] runs now, unless it exists (or a
    /// scan is using it, or the memory is not to be had: the first scan to need it then
    /// tries again), so that no later scan allocates: called when write watch is first
    /// asked for.
    pub fn keep_buffer(&self) {
        if let Some(mut b) = self.big.try_lock() {
            if b.is_empty() {
                grow(&mut b);
            }
        }
    }

    /// [`Pagemap::scan`] handing each matching run to `found` as the kernel reports it
    /// (ascending; two runs may touch). The kernel writes into a buffer on the stack of
    /// [`SCAN_RUNS`]; a scan that fills it goes on from where the kernel stopped, into the
    /// kept buffer of [`BIG_SCAN_RUNS`] if no other scan is using it (allocated by
    /// [`Pagemap::keep_buffer`] or else by the first scan that needs it; if that
    /// allocation fails, the stack buffer again). Allocates nothing once that buffer
    /// exists.
    pub fn scan_each(
        &self,
        range: Range<usize>,
        q: &Scan,
        max_pages: usize,
        mut found: impl FnMut(Range<usize>),
    ) -> Result<(), Errno> {
        let file = self.file.get();
        let mut pages = 0usize;
        let mut small = [page_region { start: 0, end: 0, categories: 0 }; SCAN_RUNS];
        // The kept buffer, once a scan filled the stack's and got it.
        let mut big: Option<MutexGuard<'_, Vec<page_region>>> = None;
        let mut filled = false;
        let mut start = range.start;
        while start < range.end && (max_pages == 0 || pages < max_pages) {
            if filled && big.is_none() {
                if let Some(mut b) = self.big.try_lock() {
                    if !b.is_empty() || grow(&mut b) {
                        big = Some(b);
                    }
                }
            }
            let regions: &mut [page_region] = match big.as_deref_mut() {
                Some(b) => b,
                None => &mut small,
            };
            let mut arg = pm_scan_arg {
                size: std::mem::size_of::<pm_scan_arg>() as u64,
                flags: q.flags.into(),
                start: start as u64,
                end: range.end as u64,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.len() as u64,
                max_pages: if max_pages == 0 { 0 } else { (max_pages - pages) as u64 },
                category_inverted: q.inverted.into(),
                category_mask: q.mask.into(),
                category_anyof_mask: q.anyof.into(),
                return_mask: q.ret.into(),
            };
            self.scans.fetch_add(1, Ordering::Relaxed);
            let n = loop {
                // SAFETY: `arg` is a properly sized pm_scan_arg whose `vec` points to
                // `vec_len` writable page_region entries (`regions`: the stack array
                // above or the kept buffer, whose lock this scan holds) that outlive the
                // call.
                match unsafe { sys::ioctl(file.as_fd(), sys::PAGEMAP_SCAN, &mut arg) } {
                    Err(Errno::INTR) | Err(Errno::AGAIN) => continue,
                    r => break r?,
                }
            } as usize;
            filled = n >= regions.len();
            let mut last = start;
            for r in &regions[..n.min(regions.len())] {
                let r = r.start as usize..r.end as usize;
                pages += r.len() / PAGE;
                last = r.end;
                found(r);
            }
            if !filled {
                // Not stopped by a full buffer: the walk reached the end, or `max_pages`
                // (and the loop ends). Not told by `walk_end`: in a call whose buffer is
                // larger than the kernel's copy buffer (512 runs), the kernel sets it each
                // time its copy fills and not when the walk then ends, so a call that
                // finished can report where an earlier part of it stopped (seen on 6.x).
                break;
            }
            // Where the kernel stopped: `walk_end`, or past the last run reported if that
            // is stale as above (the walk then ended after it with nothing more found).
            let walked = (arg.walk_end as usize).max(last);
            if walked <= start {
                break;
            }
            start = walked;
        }
        Ok(())
    }

    /// The pages of `range` that hold data (present or swapped out, the shared zero
    /// page excepted), as runs.
    pub fn populated(&self, range: Range<usize>, scan_ioctl: bool) -> Vec<Range<usize>> {
        if scan_ioctl {
            let q = Scan {
                flags: 0,
                inverted: sys::PAGE_IS_PFNZERO,
                mask: sys::PAGE_IS_PFNZERO,
                anyof: sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED,
                ret: sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED,
            };
            if let Ok(runs) = self.scan(range.clone(), &q, 0) {
                return runs;
            }
        }
        // Fallback: one 8-byte entry per page; bit 63 present, bit 62 swapped.
        let file = self.file.get();
        let mut out: Vec<Range<usize>> = Vec::new();
        let mut buf = vec![0u8; 8 * 512];
        let mut page = range.start;
        while page < range.end {
            let n = ((range.end - page) / PAGE).min(512);
            let bytes = &mut buf[..n * 8];
            if file.read_exact_at(bytes, (page / PAGE * 8) as u64).is_err() {
                // Unknown: count every page as populated (a reset then keeps witnesses
                // for all of them, which is safe).
                bytes.fill(0xFF);
            }
            for (i, e) in bytes.chunks_exact(8).enumerate() {
                let v = u64::from_le_bytes(e.try_into().expect("8 bytes"));
                if v & (3 << 62) != 0 {
                    let p = page + i * PAGE;
                    match out.last_mut() {
                        Some(last) if last.end == p => last.end = p + PAGE,
                        _ => out.push(p..p + PAGE),
                    }
                }
            }
            page += n * PAGE;
        }
        out
    }
}

/// Make the empty kept buffer [`BIG_SCAN_RUNS`] runs long; false if the memory is not
/// to be had (the scan then goes on with its stack buffer).
fn grow(buf: &mut Vec<page_region>) -> bool {
    if buf.try_reserve_exact(BIG_SCAN_RUNS).is_err() {
        return false;
    }
    buf.resize(BIG_SCAN_RUNS, page_region { start: 0, end: 0, categories: 0 });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_text_as_the_ioctl_would_report_it() {
        let text = "\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon
00e03000-00e24000 rw-p 00000000 00:00 0           [heap]
7f2c4000-7f2c5000 ---p 00000000 00:00 0
7f2c5000-7f2c6000 rw-s 00000000 00:05 1234        /dev/zero (deleted)
7ffd0000-7ffd1000 --xp 00000000 00:00 0
garbage line
";
        let v = parse_maps(text);
        let got: Vec<_> = v.iter().map(|m| (m.start, m.end, m.access, m.kind)).collect();
        assert_eq!(
            got,
            [
                (0x400000, 0x452000, Access::ExecuteRead, ForeignKind::Image),
                (0xe03000, 0xe24000, Access::ReadWrite, ForeignKind::Private),
                (0x7f2c4000, 0x7f2c5000, Access::None, ForeignKind::Private),
                (0x7f2c5000, 0x7f2c6000, Access::ReadWrite, ForeignKind::Mapped),
                (0x7ffd0000, 0x7ffd1000, Access::Execute, ForeignKind::Private),
            ]
        );
    }

    #[test]
    fn unreadable_maps_mean_unknown_memory_not_free_memory() {
        let maps = Maps {
            file: ProcFile::open("/proc/self/maps").unwrap(),
            ioctl: std::sync::atomic::AtomicBool::new(false),
            text: "/proc/self/no-such-file",
        };
        let v = maps.at_or_after(0x12_3456).expect("something unknown, not nothing");
        assert_eq!((v.start, v.access), (0x12_3000, Access::None));
        assert!(v.end > 0x7fff_0000_0000);
    }

    #[cfg(not(miri))]
    #[test]
    fn the_ioctl_and_the_text_agree_on_this_process() {
        let maps = Maps::open().unwrap();
        // A mapping of our own that nobody else changes meanwhile: in a window of this
        // test's own, where no other test's thread maps or unmaps next to it (a heap
        // allocation could share its mapping with other threads' allocations).
        // (In its middle: a mapping of the next window down may end right at its start,
        // and the kernel would merge a like one with it.)
        const LEN: usize = 1 << 20;
        let addr = super::super::tests::window(2 * LEN) + LEN / 2;
        // SAFETY: the window is free, and NOREPLACE refuses to replace anything.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                addr as *mut std::ffi::c_void,
                LEN,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::FIXED_NOREPLACE,
            )
        }
        .expect("mmap in the window");
        assert_eq!(p as usize, addr);
        // (The text is read in pieces: a mapping made or removed elsewhere meanwhile can
        // tear a read, so read again until a read agrees.)
        let (mut by_ioctl, mut by_text) = (None, None);
        for _ in 0..100 {
            by_ioctl = maps.at_or_after(addr);
            by_text = maps.parse().unwrap().into_iter().find(|m| m.end > addr);
            if by_ioctl == by_text {
                break;
            }
        }
        assert_eq!(by_ioctl, by_text);
        let by_ioctl = by_ioctl.unwrap();
        assert_eq!((by_ioctl.start, by_ioctl.end, by_ioctl.access), (addr, addr + LEN, Access::ReadWrite));
        // SAFETY: the mapping made above.
        unsafe { rustix::mm::munmap(p, LEN) }.expect("munmap");
    }
}
