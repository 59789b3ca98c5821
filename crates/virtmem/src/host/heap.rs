//! [`HostMalloc`]: the `IHostMalloc` heap. Small blocks come from size classes carved out
//! of slabs the heap commits through the manager (so the budget counts them); blocks over
//! [`MAX_SMALL`] bytes are committed directly, one reservation each.
//!
//! The heap keeps all its metadata outside the memory it hands out (a free bitmap per
//! slab), so it works the same over a simulated space, whose addresses are only numbers,
//! and over the process's real memory. Layout:
//!
//! - a *segment* is a 4 MiB window, aligned to 4 MiB, of an 8 MiB reservation (reserving
//!   is free); a two-level radix table maps an address to its segment in two loads;
//! - a *slab* is 16 KiB of a segment, committed when a size class needs it (charged to the
//!   budget at the request's critical level) and decommitted (refunded) when it empties,
//!   unless the heap keeps it for reuse (below), or the space refuses the decommit (it is
//!   then kept, and the next trim tries again: the `Free` that emptied it succeeds);
//! - empty slabs — a class's current slab or its one spare, or slabs in the shared pool —
//!   and freed large blocks (up to 1 MiB; reused by a later block of at least 2/3 their
//!   size) are kept committed, and charged, for reuse: up to 8 MiB or 1/64 of the budget in
//!   all, 64 large blocks. Nothing is kept while a request waits for memory, and everything
//!   kept is given back ([`HostMalloc::trim`]) whenever the manager refuses a request or
//!   makes one wait;
//! - each size class is split over *shards*, each behind its own lock. A thread always
//!   allocates from the same shard; a free goes to the shard owning the slab. A
//!   `MALLOC_THREADSAFE` heap has several shards, any other heap one (it is still safe to
//!   share, only not built for it).
//!   A shard also records the large blocks its threads allocate (a free looks in the
//!   freeing thread's shard first) and caches the ones they free (an allocation looks in
//!   its own shard's cache first, then in the others'); the limits on what is kept hold
//!   for the heap as a whole. So threads that allocate and free their own blocks share
//!   no lock and, apart from a few counters, no written cache line.
//!
//! `Free` of anything this heap did not return — a foreign pointer, a pointer inside a
//! block, a block already freed — is `HOST_E_INVALIDOPERATION` and changes nothing.

use std::cell::{Cell, UnsafeCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::error::{HostError, HostResult};
use super::manager::HostMemoryManager;
use super::{enter, CriticalLevel, MallocType};
use crate::flags::{AllocationType, FreeType, Protection};
use crate::rules::{round_up, PAGE};

/// The largest block served from a size class; larger blocks are committed directly.
pub const MAX_SMALL: usize = 2048;
/// The size classes, in bytes.
pub const SIZE_CLASSES: [usize; 24] = [
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792,
    2048,
];
/// The unit a heap commits (and the budget is charged) for small blocks: 16 KiB.
pub const SLAB_SIZE: usize = SLAB;
const NCLASSES: usize = SIZE_CLASSES.len();
/// Freed large blocks kept for reuse: at most this many bytes in all (and 1/64 of the
/// budget), this many blocks, blocks up to this size.
const MAX_CACHE: usize = 8 << 20;
const MAX_CACHED: usize = 64;
const MAX_CACHED_BLOCK: usize = 1 << 20;
const SLAB_SHIFT: u32 = 14;
const SLAB: usize = 1 << SLAB_SHIFT;
const SEG_SHIFT: u32 = 22;
const SEG: usize = 1 << SEG_SHIFT;
const SLABS_PER_SEG: usize = SEG / SLAB;
const WORDS: usize = SLAB / 16 / 64;
const LEAF_BITS: u32 = 12;
const LEAF: usize = 1 << LEAF_BITS;
const NONE: u32 = u32::MAX;

/// Class index for each size in 16-byte steps (`(size + 15) / 16`).
const CLASS_OF: [u8; MAX_SMALL / 16 + 1] = {
    let mut t = [0u8; MAX_SMALL / 16 + 1];
    let mut i = 0;
    while i < t.len() {
        let size = i * 16;
        let mut c = 0;
        while SIZE_CLASSES[c] < size {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

/// A live block allocated with `DebugAlloc`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeakRecord {
    /// The block's address.
    pub address: usize,
    /// The size asked for.
    pub size: usize,
    /// The source file given to `DebugAlloc`.
    pub file: String,
    /// The source line given to `DebugAlloc`.
    pub line: u32,
}

impl std::fmt::Display for LeakRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes at {:#x} allocated at {}:{}", self.size, self.address, self.file, self.line)
    }
}

/// Figures of one heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HeapStats {
    /// Blocks allocated and not freed.
    pub live_blocks: usize,
    /// Their sizes, as rounded to their class (or to pages for large blocks).
    pub live_bytes: usize,
    /// Bytes this heap has committed (and the budget is charged for).
    pub committed: usize,
    /// Segments reserved.
    pub segments: usize,
    /// Large blocks live.
    pub large_blocks: usize,
    /// `DebugAlloc` blocks live.
    pub debug_blocks: usize,
    /// Bytes of empty slabs and freed large blocks kept committed for reuse (part of
    /// `committed`).
    pub cached: usize,
}

struct SlabData {
    class: u32,
    size: u32,
    cap: u32,
    free: u32,
    hint: u32,
    /// Position in its class's partial list, or `NONE`.
    partial_pos: u32,
    /// 1 = free slot.
    bits: [u64; WORDS],
}

/// Aligned to 128 bytes (two cache lines, the unit x86 prefetches in pairs): neighbouring
/// slabs of a segment often belong to different shards, and a slab's bitmap is written by
/// every allocation and free in it, so two slabs must never share a line.
#[repr(align(128))]
struct Slab {
    base: usize,
    /// `shard << 8 | class` while a shard owns the slab, `NONE` while it is uncommitted.
    /// Changes only under the owning shard's lock.
    owner: AtomicU32,
    data: UnsafeCell<SlabData>,
}

// SAFETY: `data` is only touched by a thread holding the lock of the shard named by
// `owner` (and having checked `owner` under that lock), or by the one thread that took
// the slab out of the pool before publishing an owner; see `Heap::slab_data`.
unsafe impl Sync for Slab {}

struct Segment {
    /// The 4 MiB-aligned window the slabs live in.
    base: usize,
    /// The reservation (8 MiB) the window was cut from.
    reservation: usize,
    slabs: Box<[Slab]>,
}

/// Address → segment, without locks for spaces up to 2^50 bytes.
enum SegIndex {
    Radix(Box<[AtomicPtr<[AtomicPtr<Segment>; LEAF]>]>),
    Map(RwLock<BTreeMap<usize, usize>>),
}

impl SegIndex {
    fn new(end_address: usize) -> SegIndex {
        let keys = (end_address.saturating_sub(1) >> SEG_SHIFT) + 1;
        let top = keys.div_ceil(LEAF);
        if top <= 1 << 16 {
            SegIndex::Radix((0..top).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect())
        } else {
            SegIndex::Map(RwLock::new(BTreeMap::new()))
        }
    }

    fn get(&self, addr: usize) -> Option<&Segment> {
        let k = addr >> SEG_SHIFT;
        let p = match self {
            SegIndex::Radix(top) => {
                let leaf = top.get(k >> LEAF_BITS)?.load(Ordering::Acquire);
                if leaf.is_null() {
                    return None;
                }
                // SAFETY: leaves are allocated once, published with Release, and freed
                // only in `Drop`, when no other reference to the heap exists.
                unsafe { (*leaf)[k & (LEAF - 1)].load(Ordering::Acquire) }
            }
            SegIndex::Map(m) => m.read().get(&k).map_or(std::ptr::null_mut(), |&p| p as *mut Segment),
        };
        // SAFETY: segments are boxed, published after construction and live until the
        // heap is dropped.
        unsafe { p.as_ref() }
    }

    fn insert(&self, seg: *const Segment, base: usize) {
        let k = base >> SEG_SHIFT;
        match self {
            SegIndex::Radix(top) => {
                let slot = &top[k >> LEAF_BITS];
                let mut leaf = slot.load(Ordering::Acquire);
                if leaf.is_null() {
                    let fresh: Box<[AtomicPtr<Segment>; LEAF]> =
                        Box::new(std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())));
                    let fresh = Box::into_raw(fresh);
                    match slot.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => leaf = fresh,
                        Err(existing) => {
                            // SAFETY: `fresh` was never published.
                            drop(unsafe { Box::from_raw(fresh) });
                            leaf = existing;
                        }
                    }
                }
                // SAFETY: as in `get`.
                unsafe { (*leaf)[k & (LEAF - 1)].store(seg as *mut Segment, Ordering::Release) };
            }
            SegIndex::Map(m) => {
                m.write().insert(k, seg as usize);
            }
        }
    }
}

impl Drop for SegIndex {
    fn drop(&mut self) {
        if let SegIndex::Radix(top) = self {
            for slot in top.iter() {
                let leaf = slot.load(Ordering::Acquire);
                if !leaf.is_null() {
                    // SAFETY: allocated by `insert` with `Box::into_raw`, freed once here.
                    drop(unsafe { Box::from_raw(leaf) });
                }
            }
        }
    }
}

#[derive(Default)]
struct ClassState {
    current: Option<SlabRef>,
    partial: Vec<SlabRef>,
    spare: Option<SlabRef>,
}

#[derive(Default)]
struct Shard {
    classes: [ClassState; NCLASSES],
    live_blocks: isize,
    live_bytes: isize,
}

/// A shard: its size classes, the count of its empty slabs, and the large blocks its
/// threads allocated and freed.
#[derive(Default)]
struct ShardCell {
    lock: Mutex<Shard>,
    /// Empty slabs the shard holds: current slabs with every slot free, and spares.
    /// Changed only under `lock` (so a plain load and store, no read-modify-write);
    /// read without it, by any thread, by [`Heap::kept_bytes`]. On a line of its own:
    /// next to the lock, those reads would take the line from the shard's thread at
    /// every call it makes.
    idle: Padded<AtomicUsize>,
    /// Live large blocks allocated by threads of this shard (a block stays here until it
    /// is freed, by whichever thread). Changed only through [`Heap::with_large`].
    large: Mutex<HashMap<usize, Large>>,
    /// Large blocks freed by threads of this shard, kept committed (and charged) for
    /// reuse by any thread.
    cache: Mutex<LargeCache>,
}

impl ShardCell {
    /// Add `delta` to `idle`. The caller must hold `lock`: two unlocked callers could lose
    /// an update (which would only skew the cap on what is kept, never the budget).
    fn add_idle(&self, delta: isize) {
        let n = self.idle.load(Ordering::Relaxed).wrapping_add_signed(delta);
        self.idle.store(n, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct SlabRef(*const Slab);
// SAFETY: a pointer to a slab of a segment the heap owns; segments outlive every shard.
unsafe impl Send for SlabRef {}

/// A value alone on its cache lines (128 bytes: x86 prefetches lines in pairs), so that
/// writes to it never slow down threads reading or writing its neighbours.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Padded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

struct Pool {
    /// Boxed: the index points at them, so they must not move when the vector grows.
    #[allow(clippy::vec_box)]
    segments: Vec<Box<Segment>>,
    /// Uncommitted slabs.
    free: Vec<SlabRef>,
    /// Empty slabs kept committed (and charged) for reuse by any class.
    ready: Vec<SlabRef>,
}

#[derive(Default)]
struct LargeCache {
    /// (address, bytes).
    blocks: Vec<(usize, usize)>,
    bytes: usize,
}

struct Large {
    /// Bytes committed (and charged) for the block.
    bytes: usize,
    /// The reservation the block was cut from: the block itself, or, for an alignment
    /// over 64 KiB, the start of a larger reservation of which only the aligned block is
    /// committed.
    reservation: usize,
}

struct Site {
    size: usize,
    file: String,
    line: u32,
}

/// The fields every call reads (`mgr`, `ty`, `protect`, `shards`, `index`, `cache_cap`)
/// never change after construction; everything any thread writes — locks included — is
/// [`Padded`], so that a write (a large block, a slab going back to the pool) does not
/// evict the read-only fields from the other threads' caches.
pub(crate) struct Heap {
    mgr: HostMemoryManager,
    ty: MallocType,
    protect: Protection,
    shards: Box<[Padded<ShardCell>]>,
    pool: Padded<Mutex<Pool>>,
    index: SegIndex,
    cache_cap: usize,
    sites: Padded<Mutex<HashMap<usize, Site>>>,
    debug_live: Padded<AtomicUsize>,
    committed: Padded<AtomicUsize>,
    /// What is kept for reuse outside the shards' size classes (which count their own
    /// empty slabs in [`ShardCell::idle`]).
    kept: Padded<Kept>,
}

/// Counts of what is kept for reuse, changed under the lock of the list they count (the
/// pool's, a shard's large cache), read without any lock.
#[derive(Default)]
struct Kept {
    /// Bytes of the pool's `ready` slabs and of every shard's cached large blocks.
    bytes: AtomicUsize,
    /// Cached large blocks, every shard together.
    blocks: AtomicUsize,
}

/// An `IHostMalloc` heap (see the [`host`](crate::host) module). Cheap to clone; clones share the
/// heap. Dropping the last clone gives every page of the heap back to the manager.
#[derive(Clone)]
pub struct HostMalloc {
    heap: Arc<Heap>,
}

impl std::fmt::Debug for HostMalloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMalloc").field("type", &self.heap.ty).field("stats", &self.stats()).finish()
    }
}

thread_local! {
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Whether this thread is inside an operation on a shard's large-block map (see
    /// [`Heap::with_large`]).
    static IN_LARGE_MAP: Cell<bool> = const { Cell::new(false) };
}
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

fn thread_slot() -> usize {
    THREAD_SLOT.with(|c| {
        let mut v = c.get();
        if v == usize::MAX {
            v = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
            c.set(v);
        }
        v
    })
}

/// The class for `size` bytes aligned to `align`, if a class serves it.
fn class_for(size: usize, align: usize) -> Option<usize> {
    if size > MAX_SMALL {
        return None;
    }
    let c = CLASS_OF[size.max(1).div_ceil(16)] as usize;
    if align <= 16 {
        return Some(c);
    }
    (c..NCLASSES).find(|&c| SIZE_CLASSES[c] % align == 0)
}

impl HostMalloc {
    pub(crate) fn new(mgr: HostMemoryManager, ty: MallocType) -> HostMalloc {
        let nshards = if ty.contains(MallocType::THREADSAFE) {
            (std::thread::available_parallelism().map_or(4, |n| n.get()) * 2).next_power_of_two().min(32)
        } else {
            1
        };
        let protect =
            if ty.contains(MallocType::EXECUTABLE) { Protection::EXECUTE_READWRITE } else { Protection::READWRITE };
        let end = mgr.space().system_info().maximum_application_address.saturating_add(1);
        let mgr_budget = mgr.budget_bytes();
        let heap = HostMalloc {
            heap: Arc::new(Heap {
                mgr,
                ty,
                protect,
                shards: (0..nshards).map(|_| Padded(ShardCell::default())).collect(),
                pool: Padded(Mutex::new(Pool { segments: Vec::new(), free: Vec::new(), ready: Vec::new() })),
                index: SegIndex::new(end),
                cache_cap: (mgr_budget / 64).min(MAX_CACHE),
                sites: Padded(Mutex::new(HashMap::new())),
                debug_live: Padded(AtomicUsize::new(0)),
                committed: Padded(AtomicUsize::new(0)),
                kept: Padded(Kept::default()),
            }),
        };
        heap.heap.mgr.register_heap(Arc::downgrade(&heap.heap));
        heap
    }

    /// Give back to the manager every page the heap keeps only for reuse: empty slabs
    /// (including each class's current slab and spare when they are empty) and cached
    /// large blocks. Live blocks are not affected. The manager does this by itself for
    /// every heap when it refuses a request or makes one wait.
    pub fn trim(&self) -> HostResult<()> {
        let _g = enter();
        self.check()?;
        self.heap.flush_cache().map(|_| ())
    }

    /// The `MALLOC_TYPE` the heap was created with.
    pub fn malloc_type(&self) -> MallocType {
        self.heap.ty
    }

    /// The manager (tenant) this heap draws on.
    pub fn manager(&self) -> &HostMemoryManager {
        &self.heap.mgr
    }

    /// `IHostMalloc::Alloc`: a block of at least `size` bytes (16-byte aligned; a size of
    /// 0 gets a minimal block). `E_OUTOFMEMORY` when the pages it needs are refused at
    /// `level` (a process-critical request may wait, see the manager).
    pub fn alloc(&self, size: usize, level: CriticalLevel) -> HostResult<usize> {
        let _g = enter();
        self.check()?;
        self.heap.alloc(size, 16, level)
    }

    /// [`HostMalloc::alloc`] with an alignment (a power of two). Alignments up to 64 KiB
    /// come from the size classes or a reservation of their own; a larger one reserves
    /// `size + align` bytes (reserving is free) and commits — and is charged for — only
    /// the aligned block. `E_INVALIDARG` for an alignment that is not a power of two.
    pub fn alloc_aligned(&self, size: usize, align: usize, level: CriticalLevel) -> HostResult<usize> {
        let _g = enter();
        self.check()?;
        if !align.is_power_of_two() {
            return Err(HostError::InvalidArg);
        }
        if align > crate::rules::GRANULE {
            return self.heap.alloc_over_aligned(size, align, level);
        }
        self.heap.alloc(size, align, level)
    }

    /// `IHostMalloc::DebugAlloc`: [`HostMalloc::alloc`], remembering `file` and `line`
    /// until the block is freed (see [`HostMalloc::leaks`]).
    pub fn debug_alloc(&self, size: usize, level: CriticalLevel, file: &str, line: u32) -> HostResult<usize> {
        let _g = enter();
        self.check()?;
        let p = self.heap.alloc(size, 16, level)?;
        // Counted first, so that a free that finds the record always finds the count.
        self.heap.debug_live.fetch_add(1, Ordering::SeqCst);
        self.heap.sites.lock().insert(p, Site { size, file: file.to_owned(), line });
        Ok(p)
    }

    /// `IHostMalloc::Free`: 0 is accepted and does nothing; a pointer this heap did not
    /// return (or already took back) is `HOST_E_INVALIDOPERATION`.
    pub fn free(&self, ptr: usize) -> HostResult<()> {
        let _g = enter();
        self.check()?;
        if ptr == 0 {
            return Ok(());
        }
        self.heap.free(ptr)
    }

    /// Whether `ptr` lies in one of this heap's segments (the reservations its small
    /// blocks are carved from, whether or not `ptr` is in a live block) or is the start of
    /// one of its live large blocks. A pointer inside a large block, past its start, is
    /// not recognised: pass what [`HostMalloc::alloc`] returned.
    pub fn owns(&self, ptr: usize) -> bool {
        let _g = enter();
        self.owns_raw(ptr)
    }

    /// [`HostMalloc::owns`] without entering the manager: what a global allocator's
    /// `dealloc` asks. Called by a thread inside an operation on a large-block map, it
    /// answers `false` at once, locking nothing: that thread frees only the map's own
    /// storage, which the system allocator gave (see [`Heap::with_large`]).
    pub(crate) fn owns_raw(&self, ptr: usize) -> bool {
        if IN_LARGE_MAP.with(Cell::get) {
            return false;
        }
        if self.heap.index.get(ptr).is_some() {
            return true;
        }
        self.heap.shards.iter().any(|cell| cell.large.lock().contains_key(&ptr))
    }

    /// The live `DebugAlloc` blocks, by address: the leak report.
    pub fn leaks(&self) -> Vec<LeakRecord> {
        let _g = enter();
        let mut out: Vec<LeakRecord> = self
            .heap
            .sites
            .lock()
            .iter()
            .map(|(&address, s)| LeakRecord { address, size: s.size, file: s.file.clone(), line: s.line })
            .collect();
        out.sort_by_key(|r| r.address);
        out
    }

    /// Figures of this heap.
    pub fn stats(&self) -> HeapStats {
        let _g = enter();
        let h = &self.heap;
        let (mut blocks, mut bytes) = (0isize, 0isize);
        let (mut large_blocks, mut large_bytes) = (0, 0);
        for cell in h.shards.iter() {
            let s = cell.lock.lock();
            blocks += s.live_blocks;
            bytes += s.live_bytes;
            drop(s);
            let large = cell.large.lock();
            large_blocks += large.len();
            large_bytes += large.values().map(|l| l.bytes).sum::<usize>();
        }
        HeapStats {
            live_blocks: blocks as usize + large_blocks,
            live_bytes: bytes as usize + large_bytes,
            committed: h.committed.load(Ordering::SeqCst),
            segments: h.pool.lock().segments.len(),
            large_blocks,
            debug_blocks: h.debug_live.load(Ordering::SeqCst),
            cached: h.kept_bytes(),
        }
    }

    fn check(&self) -> HostResult<()> {
        if self.heap.mgr.is_running() {
            Ok(())
        } else {
            Err(HostError::ClrNotAvailable)
        }
    }
}

impl Heap {
    /// The slab's data.
    ///
    /// # Safety
    /// The caller holds the lock of the shard that owns `slab` (and checked `owner` under
    /// it), or the slab is unowned and was taken out of the pool by this thread.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slab_data(slab: &Slab) -> &mut SlabData {
        // SAFETY: exclusive access per the function's contract.
        unsafe { &mut *slab.data.get() }
    }

    fn alloc(&self, size: usize, align: usize, level: CriticalLevel) -> HostResult<usize> {
        match class_for(size, align) {
            Some(c) => self.alloc_small(c, level),
            None => self.alloc_large(size, level),
        }
    }

    fn alloc_small(&self, c: usize, level: CriticalLevel) -> HostResult<usize> {
        let si = thread_slot() & (self.shards.len() - 1);
        let cell = &self.shards[si].0;
        let mut shard = cell.lock.lock();
        loop {
            let shard_ref = &mut *shard;
            let cs = &mut shard_ref.classes[c];
            if let Some(SlabRef(p)) = cs.current {
                // SAFETY: slabs live as long as the heap.
                let slab = unsafe { &*p };
                // SAFETY: this shard owns its current slab and we hold its lock.
                let d = unsafe { Heap::slab_data(slab) };
                if d.free > 0 {
                    if d.free == d.cap {
                        cell.add_idle(-1);
                    }
                    let idx = take_bit(d);
                    shard_ref.live_blocks += 1;
                    shard_ref.live_bytes += d.size as isize;
                    return Ok(slab.base + idx * d.size as usize);
                }
                cs.current = None;
            }
            if let Some(s) = cs.partial.pop() {
                // SAFETY: slabs in a shard's lists are owned by it; we hold its lock.
                unsafe { Heap::slab_data(&*s.0) }.partial_pos = NONE;
                cs.current = Some(s);
                continue;
            }
            if let Some(s) = cs.spare.take() {
                cs.current = Some(s);
                continue;
            }
            // A new slab: commit it without the shard lock (the commit may wait).
            drop(shard);
            let fresh = self.new_slab(level)?;
            shard = cell.lock.lock();
            // SAFETY: `fresh` is unowned and was taken out of the pool by this thread.
            let slab = unsafe { &*fresh.0 };
            // SAFETY: as just said: unowned and taken out of the pool by this thread.
            let d = unsafe { Heap::slab_data(slab) };
            init_slab(d, c);
            let cs = &mut shard.classes[c];
            // Another thread of this shard may have installed a slab meanwhile: the fresh
            // (empty) one becomes the current slab, or the spare (only if the heap may keep
            // it: not while a request waits for memory), or goes back.
            let place = if cs.current.is_none() {
                &mut cs.current
            } else if cs.spare.is_none() && self.may_keep(SLAB) {
                &mut cs.spare
            } else {
                drop(shard);
                self.retire(fresh)?;
                shard = cell.lock.lock();
                continue;
            };
            slab.owner.store(((si as u32) << 8) | c as u32, Ordering::Release);
            *place = Some(fresh);
            cell.add_idle(1);
        }
    }

    /// Bytes kept committed only for reuse.
    fn kept_bytes(&self) -> usize {
        self.kept.bytes.load(Ordering::SeqCst) + self.idle_bytes()
    }

    /// Bytes of the empty slabs the shards hold.
    fn idle_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.idle.load(Ordering::Relaxed)).sum::<usize>() * SLAB
    }

    /// Whether `bytes` more may be kept committed for reuse: within the cache cap, and
    /// only while no request is waiting for memory.
    fn may_keep(&self, bytes: usize) -> bool {
        !self.mgr.memory_wanted() && self.kept_bytes() + bytes <= self.cache_cap
    }

    /// An uncommitted slab from the pool (reserving a segment if needed), committed.
    fn new_slab(&self, level: CriticalLevel) -> HostResult<SlabRef> {
        let s = {
            let mut pool = self.pool.lock();
            if let Some(s) = pool.ready.pop() {
                self.kept.bytes.fetch_sub(SLAB, Ordering::SeqCst);
                return Ok(s);
            }
            if pool.free.is_empty() {
                self.add_segment(&mut pool, level)?;
            }
            pool.free.pop().expect("a free slab")
        };
        // SAFETY: slabs live as long as the heap.
        let base = unsafe { &*s.0 }.base;
        let commit =
            || self.mgr.alloc_as(self.mgr.heap_actor(), base, SLAB, AllocationType::COMMIT, self.protect, level);
        let done = match commit() {
            Err(HostError::OutOfMemory) => match self.flush_cache() {
                Ok(true) => commit(),
                Ok(false) => Err(HostError::OutOfMemory),
                Err(e) => Err(e),
            },
            other => other,
        };
        match done {
            Ok(_) => {
                self.committed.fetch_add(SLAB, Ordering::SeqCst);
                Ok(s)
            }
            Err(e) => {
                self.pool.lock().free.push(s);
                Err(e)
            }
        }
    }

    /// Reserve a segment for a request of `level`. Reserving charges nothing, so the
    /// level only says how bad a refusal is (with `disable_on_process_critical_failure`,
    /// the OS refusing a process-critical request's reservation disables the manager).
    fn add_segment(&self, pool: &mut Pool, level: CriticalLevel) -> HostResult<()> {
        let reservation =
            self.mgr.alloc_as(self.mgr.heap_actor(), 0, 2 * SEG, AllocationType::RESERVE, self.protect, level)?;
        let base = round_up(reservation, SEG).expect("segment inside the address space");
        let slabs: Box<[Slab]> = (0..SLABS_PER_SEG)
            .map(|i| Slab {
                base: base + i * SLAB,
                owner: AtomicU32::new(NONE),
                data: UnsafeCell::new(SlabData {
                    class: 0,
                    size: 0,
                    cap: 0,
                    free: 0,
                    hint: 0,
                    partial_pos: NONE,
                    bits: [0; WORDS],
                }),
            })
            .collect();
        // The index and the pool keep pointers into the segment: they are taken from the
        // Box where it stays, in `pool.segments`, after its last move. (Moving a Box
        // asserts unique access to what it owns, as passing a `&mut` does, so a pointer
        // taken before `push` would not be valid after it.) The Box is never moved or
        // mutably borrowed again: growing the vector copies it bit for bit, and `Drop`
        // only reads it.
        pool.segments.push(Box::new(Segment { base, reservation, slabs }));
        let seg: &Segment = pool.segments.last().expect("the segment just added");
        let ptr: *const Segment = seg;
        pool.free.extend(seg.slabs.iter().rev().map(|s| SlabRef(s as *const Slab)));
        self.index.insert(ptr, base);
        Ok(())
    }

    fn alloc_large(&self, size: usize, level: CriticalLevel) -> HostResult<usize> {
        // (Sizes past `isize::MAX` are refused here; those past the space's user range by
        // the space, see `too_big`.)
        let bytes = round_up(size, PAGE).filter(|&b| b <= isize::MAX as usize).ok_or(HostError::OutOfMemory)?;
        let me = self.my_shard();
        let (p, bytes) = match self.take_cached(me, bytes) {
            Some(b) => b,
            None => {
                let actor = self.mgr.heap_actor();
                let ty = AllocationType::RESERVE | AllocationType::COMMIT;
                let p = match self.mgr.alloc_as(actor, 0, bytes, ty, self.protect, level).map_err(too_big) {
                    Err(HostError::OutOfMemory) if self.flush_cache()? => {
                        self.mgr.alloc_as(actor, 0, bytes, ty, self.protect, level).map_err(too_big)?
                    }
                    other => other?,
                };
                self.committed.fetch_add(bytes, Ordering::SeqCst);
                (p, bytes)
            }
        };
        self.with_large(me, |m| m.insert(p, Large { bytes, reservation: p }));
        Ok(p)
    }

    /// Run `f` on shard `s`'s large-block map, under its lock.
    ///
    /// A map operation may allocate or free the map's storage. Inside the manager that
    /// storage comes from the system allocator, but a global allocator over this heap
    /// ([`super::HostGlobalAlloc`]) asks [`HostMalloc::owns_raw`] about each free before
    /// routing it, and that question locks every shard's map in turn: from inside a
    /// map operation, that is a lock-order cycle with any other thread doing the same on
    /// another shard (each holds its map and waits for the other's). So the calling
    /// thread is marked while `f` runs, and `owns_raw` answers `false` for it without
    /// locking anything.
    fn with_large<T>(&self, s: usize, f: impl FnOnce(&mut HashMap<usize, Large>) -> T) -> T {
        let mut map = self.shards[s].large.lock();
        let was = IN_LARGE_MAP.with(|c| c.replace(true));
        let out = f(&mut map);
        IN_LARGE_MAP.with(|c| c.set(was));
        out
    }

    /// The calling thread's shard.
    fn my_shard(&self) -> usize {
        thread_slot() & (self.shards.len() - 1)
    }

    /// A cached large block for a request of `bytes` (rounded to pages): the smallest
    /// that fits without wasting more than a third of it, looked for in shard `me`'s
    /// cache first, then in the others' (so that any thread reuses any cached block).
    fn take_cached(&self, me: usize, bytes: usize) -> Option<(usize, usize)> {
        let n = self.shards.len();
        (0..n).find_map(|i| {
            if self.kept.blocks.load(Ordering::Relaxed) == 0 {
                return None;
            }
            let mut cache = self.shards[(me + i) & (n - 1)].cache.lock();
            let best = (0..cache.blocks.len())
                .filter(|&i| (bytes..=bytes + bytes / 2).contains(&cache.blocks[i].1))
                .min_by_key(|&i| cache.blocks[i].1)?;
            let b = cache.blocks.swap_remove(best);
            cache.bytes -= b.1;
            self.kept.bytes.fetch_sub(b.1, Ordering::SeqCst);
            self.kept.blocks.fetch_sub(1, Ordering::SeqCst);
            Some(b)
        })
    }

    /// Take `ptr`'s record out of the large-block map that holds it (the calling
    /// thread's shard's first: blocks are mostly freed by the thread that allocated
    /// them); with the index of that shard.
    fn remove_large(&self, ptr: usize) -> Option<(usize, Large)> {
        let (n, me) = (self.shards.len(), self.my_shard());
        (0..n).map(|i| (me + i) & (n - 1)).find_map(|s| self.with_large(s, |m| m.remove(&ptr)).map(|l| (s, l)))
    }

    /// A large block aligned to `align` (> 64 KiB, the alignment of a reservation): a
    /// reservation of `size + align - 64 KiB` bytes, of which the aligned block alone is
    /// committed. Never cached: its release gives back the whole reservation.
    fn alloc_over_aligned(&self, size: usize, align: usize, level: CriticalLevel) -> HostResult<usize> {
        let bytes = round_up(size.max(1), PAGE).filter(|&b| b <= isize::MAX as usize).ok_or(HostError::OutOfMemory)?;
        let span = bytes.checked_add(align - crate::rules::GRANULE).ok_or(HostError::OutOfMemory)?;
        let actor = self.mgr.heap_actor();
        let reservation =
            self.mgr.alloc_as(actor, 0, span, AllocationType::RESERVE, self.protect, level).map_err(too_big)?;
        let p = round_up(reservation, align).ok_or(HostError::OutOfMemory)?;
        if let Err(e) = self.mgr.alloc_as(actor, p, bytes, AllocationType::COMMIT, self.protect, level) {
            // Keep the first failure: a release the space contradicts only disables what
            // the commit's failure already reported.
            let _ = self.mgr.free_as(actor, reservation, 0, FreeType::RELEASE);
            return Err(e);
        }
        self.committed.fetch_add(bytes, Ordering::SeqCst);
        self.with_large(self.my_shard(), |m| m.insert(p, Large { bytes, reservation }));
        Ok(p)
    }

    /// Keep a freed large block committed for reuse, in the calling thread's shard's
    /// cache, if there is room (in blocks and bytes, every shard together).
    fn cache_large(&self, p: usize, bytes: usize) -> bool {
        if bytes > MAX_CACHED_BLOCK || self.mgr.memory_wanted() {
            return false;
        }
        let mut cache = self.shards[self.my_shard()].cache.lock();
        // Claim a place among the blocks, then the bytes; give the place back if the
        // bytes do not fit. Claimed with compare-and-swap, so that threads caching at
        // once in different shards never go over either limit together.
        let blocks = &self.kept.blocks;
        if blocks.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_CACHED).then_some(n + 1)).is_err() {
            return false;
        }
        if !self.claim_kept(bytes) {
            blocks.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        cache.blocks.push((p, bytes));
        cache.bytes += bytes;
        true
    }

    /// Add `bytes` to `kept.bytes` if what is kept stays within the cap.
    fn claim_kept(&self, bytes: usize) -> bool {
        let idle = self.idle_bytes();
        self.kept
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                (b + idle + bytes <= self.cache_cap).then_some(b + bytes)
            })
            .is_ok()
    }

    /// Give back every page kept only for reuse — empty slabs (the pool's, and empty
    /// current slabs and spares of every class of every shard) and cached large blocks;
    /// whether there was any. Takes each lock on its own and calls the manager with none
    /// held, so the manager may call it from inside a request of this heap.
    pub(crate) fn flush_cache(&self) -> HostResult<bool> {
        let mut slabs = Vec::new();
        for cell in self.shards.iter() {
            let mut shard = cell.lock.lock();
            let before = slabs.len();
            for cs in shard.classes.iter_mut() {
                if let Some(cur) = cs.current {
                    // SAFETY: slabs live as long as the heap; this shard owns its current
                    // slab and we hold its lock.
                    let (slab, d) = unsafe { (&*cur.0, Heap::slab_data(&*cur.0)) };
                    if d.free == d.cap {
                        cs.current = None;
                        slab.owner.store(NONE, Ordering::Release);
                        slabs.push(cur);
                    }
                }
                if let Some(spare) = cs.spare.take() {
                    // SAFETY: slabs live as long as the heap.
                    unsafe { &*spare.0 }.owner.store(NONE, Ordering::Release);
                    slabs.push(spare);
                }
            }
            cell.add_idle(-((slabs.len() - before) as isize));
        }
        let mut blocks = Vec::new();
        for cell in self.shards.iter() {
            let mut cache = cell.cache.lock();
            self.kept.bytes.fetch_sub(std::mem::take(&mut cache.bytes), Ordering::SeqCst);
            self.kept.blocks.fetch_sub(cache.blocks.len(), Ordering::SeqCst);
            blocks.append(&mut cache.blocks);
        }
        {
            let mut pool = self.pool.lock();
            self.kept.bytes.fetch_sub(pool.ready.len() * SLAB, Ordering::SeqCst);
            slabs.append(&mut pool.ready);
        }
        let any = !blocks.is_empty() || !slabs.is_empty();
        // Give back everything we can; report the first failure (an inconsistent space
        // disables the manager, and that `E_FAIL` must reach a caller).
        let mut first_err = None;
        for s in slabs {
            if let Err(e) = self.decommit(s) {
                first_err.get_or_insert(e);
            }
        }
        for (p, bytes) in blocks {
            match self.mgr.free_as(self.mgr.heap_actor(), p, 0, FreeType::RELEASE) {
                Ok(()) => {
                    self.committed.fetch_sub(bytes, Ordering::SeqCst);
                }
                Err(e) => {
                    // Still committed and charged: back in a cache (where it was counted
                    // before), for reuse or the next trim.
                    let mut cache = self.shards[self.my_shard()].cache.lock();
                    cache.blocks.push((p, bytes));
                    cache.bytes += bytes;
                    self.kept.bytes.fetch_add(bytes, Ordering::SeqCst);
                    self.kept.blocks.fetch_add(1, Ordering::SeqCst);
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(any),
        }
    }

    fn free(&self, ptr: usize) -> HostResult<()> {
        if let Some(seg) = self.index.get(ptr) {
            if ptr < seg.base {
                return Err(HostError::InvalidOperation);
            }
            let slab = &seg.slabs[(ptr - seg.base) >> SLAB_SHIFT];
            self.free_small(slab, ptr)?;
        } else {
            let (home, large) = self.remove_large(ptr).ok_or(HostError::InvalidOperation)?;
            // Out of the leak report before the address can be handed out again.
            let site = self.forget_site(ptr);
            if large.reservation != ptr || !self.cache_large(ptr, large.bytes) {
                if let Err(e) = self.mgr.free_as(self.mgr.heap_actor(), large.reservation, 0, FreeType::RELEASE) {
                    // Still live: back in the map and the report.
                    self.with_large(home, |m| m.insert(ptr, large));
                    if let Some(site) = site {
                        self.debug_live.fetch_add(1, Ordering::SeqCst);
                        self.sites.lock().insert(ptr, site);
                    }
                    return Err(e);
                }
                self.committed.fetch_sub(large.bytes, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// Remove `ptr`'s `DebugAlloc` record, if it has one. Called before the block's
    /// address can be handed out again, so that a `DebugAlloc` of another thread that gets
    /// the same address never loses its record to this free.
    fn forget_site(&self, ptr: usize) -> Option<Site> {
        if self.debug_live.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let site = self.sites.lock().remove(&ptr);
        if site.is_some() {
            self.debug_live.fetch_sub(1, Ordering::SeqCst);
        }
        site
    }

    fn free_small(&self, slab: &Slab, ptr: usize) -> HostResult<()> {
        let owner = slab.owner.load(Ordering::Acquire);
        if owner == NONE {
            return Err(HostError::InvalidOperation);
        }
        let si = (owner >> 8) as usize;
        let cell = &self.shards[si].0;
        let mut shard = cell.lock.lock();
        if slab.owner.load(Ordering::Acquire) != owner {
            return Err(HostError::InvalidOperation);
        }
        // SAFETY: `owner` names this shard and we hold its lock.
        let d = unsafe { Heap::slab_data(slab) };
        let off = ptr - slab.base;
        let size = d.size as usize;
        let idx = off / size;
        if off % size != 0 || idx >= d.cap as usize {
            return Err(HostError::InvalidOperation);
        }
        let (w, b) = (idx / 64, idx % 64);
        if d.bits[w] & (1 << b) != 0 {
            return Err(HostError::InvalidOperation); // already free
        }
        // Lock order: shard, then sites (nothing takes a shard lock holding sites).
        self.forget_site(ptr);
        d.bits[w] |= 1 << b;
        d.free += 1;
        shard.live_blocks -= 1;
        shard.live_bytes -= size as isize;
        let me = SlabRef(slab);
        let cs = &mut shard.classes[d.class as usize];
        if cs.current == Some(me) {
            if d.free < d.cap {
                return Ok(());
            }
            // The current slab emptied: keep it if the cache has room, else give it back.
            if self.may_keep(SLAB) {
                cell.add_idle(1);
                return Ok(());
            }
            cs.current = None;
            slab.owner.store(NONE, Ordering::Release);
            drop(shard);
            return Self::freed_anyway(self.decommit(me));
        }
        if d.free == 1 {
            d.partial_pos = cs.partial.len() as u32;
            cs.partial.push(me);
        }
        if d.free < d.cap {
            return Ok(());
        }
        // Empty: out of the partial list, then keep it as the spare or give it back.
        let pos = d.partial_pos as usize;
        d.partial_pos = NONE;
        cs.partial.swap_remove(pos);
        if let Some(&moved) = cs.partial.get(pos) {
            // SAFETY: slabs in this shard's lists are owned by it; we hold its lock.
            unsafe { Heap::slab_data(&*moved.0) }.partial_pos = pos as u32;
        }
        if cs.spare.is_none() && self.may_keep(SLAB) {
            cs.spare = Some(me);
            cell.add_idle(1);
            return Ok(());
        }
        slab.owner.store(NONE, Ordering::Release);
        drop(shard);
        Self::freed_anyway(self.retire(me))
    }

    /// What a `Free` whose block is free now answers when giving its emptied slab back
    /// failed with `e`: the slab is kept for reuse (see [`Heap::decommit`]) and the block
    /// stays free, so the call succeeded, unless the failure disabled the manager (the
    /// space contradicted it: `E_FAIL` must reach a caller) or found it disabled.
    fn freed_anyway(given_back: HostResult<()>) -> HostResult<()> {
        match given_back {
            Err(e @ (HostError::Fail | HostError::ClrNotAvailable)) => Err(e),
            _ => Ok(()),
        }
    }

    /// An empty, unowned slab: keep it committed in the pool if the cache has room,
    /// else decommit it.
    fn retire(&self, s: SlabRef) -> HostResult<()> {
        if !self.mgr.memory_wanted() {
            let mut pool = self.pool.lock();
            if self.claim_kept(SLAB) {
                pool.ready.push(s);
                return Ok(());
            }
        }
        self.decommit(s)
    }

    /// Decommit an empty, unowned slab and put it back in the pool of uncommitted slabs.
    /// Should the space refuse (out of memory, say), the slab stays committed and
    /// charged, kept for reuse in the pool (over the cache's cap if need be), where the
    /// next trim tries again; the error is returned. (If the space contradicts the
    /// manager, the manager disables itself and this is the caller's `E_FAIL`.)
    fn decommit(&self, s: SlabRef) -> HostResult<()> {
        // SAFETY: slabs live as long as the heap.
        let base = unsafe { &*s.0 }.base;
        if let Err(e) = self.mgr.free_as(self.mgr.heap_actor(), base, SLAB, FreeType::DECOMMIT) {
            let mut pool = self.pool.lock();
            self.kept.bytes.fetch_add(SLAB, Ordering::SeqCst);
            pool.ready.push(s);
            return Err(e);
        }
        self.committed.fetch_sub(SLAB, Ordering::SeqCst);
        self.pool.lock().free.push(s);
        Ok(())
    }
}

fn init_slab(d: &mut SlabData, class: usize) {
    let size = SIZE_CLASSES[class];
    let cap = SLAB / size;
    d.class = class as u32;
    d.size = size as u32;
    d.cap = cap as u32;
    d.free = cap as u32;
    d.hint = 0;
    d.partial_pos = NONE;
    for (w, word) in d.bits.iter_mut().enumerate() {
        let lo = w * 64;
        *word = if lo + 64 <= cap {
            u64::MAX
        } else if lo < cap {
            (1u64 << (cap - lo)) - 1
        } else {
            0
        };
    }
}

/// Take a free slot of a slab with `free > 0`.
fn take_bit(d: &mut SlabData) -> usize {
    let words = (d.cap as usize).div_ceil(64);
    let mut w = d.hint as usize;
    loop {
        let word = d.bits[w];
        if word != 0 {
            d.bits[w] = word & (word - 1);
            d.free -= 1;
            d.hint = w as u32;
            return w * 64 + word.trailing_zeros() as usize;
        }
        w += 1;
        if w == words {
            w = 0;
        }
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        // Nobody is left to report a failure to: a release the space contradicts has
        // already disabled the manager (see `HostMemoryManager::free_as`), which is what
        // every later caller of the manager sees.
        let actor = self.mgr.heap_actor();
        for cell in self.shards.iter_mut() {
            for (p, _) in cell.0.cache.get_mut().blocks.drain(..) {
                let _ = self.mgr.free_as(actor, p, 0, FreeType::RELEASE);
            }
            for (_, large) in cell.0.large.get_mut().drain() {
                let _ = self.mgr.free_as(actor, large.reservation, 0, FreeType::RELEASE);
            }
        }
        for seg in &self.pool.get_mut().segments {
            let _ = self.mgr.free_as(actor, seg.reservation, 0, FreeType::RELEASE);
        }
    }
}

/// The error of a heap's own `VirtualAlloc` for a block: the heap passes valid arguments
/// but the size, so an invalid argument means a size larger than the space's user range,
/// which the heap's caller hears as `E_OUTOFMEMORY` (as for sizes past `isize::MAX`): the
/// request is valid, the memory is not there.
fn too_big(e: HostError) -> HostError {
    match e {
        HostError::InvalidArg => HostError::OutOfMemory,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class_for(0, 16), Some(0));
        assert_eq!(class_for(16, 16), Some(0));
        assert_eq!(class_for(17, 16), Some(1));
        assert_eq!(class_for(129, 16).map(|c| SIZE_CLASSES[c]), Some(160));
        assert_eq!(class_for(2048, 16).map(|c| SIZE_CLASSES[c]), Some(2048));
        assert_eq!(class_for(2049, 16), None);
        assert_eq!(class_for(40, 64).map(|c| SIZE_CLASSES[c]), Some(64));
        assert_eq!(class_for(130, 128).map(|c| SIZE_CLASSES[c]), Some(256));
        assert_eq!(class_for(1100, 1024).map(|c| SIZE_CLASSES[c]), Some(2048));
        assert_eq!(class_for(100, 4096), None);
        for (i, &s) in SIZE_CLASSES.iter().enumerate() {
            assert_eq!(s % 16, 0);
            assert!(SLAB / s <= WORDS * 64);
            assert_eq!(class_for(s, 16), Some(i));
        }
    }

    /// A global allocator's `dealloc` asks `owns_raw` about every free; when the free
    /// is a large-block map's own storage (a rehash), the asking thread holds that map's
    /// lock. It must not then wait for another shard's map, which another thread may
    /// hold while waiting for this one: `owns_raw` answers at once.
    #[test]
    fn owns_raw_during_a_large_map_operation_waits_for_no_other_shard() {
        use std::sync::mpsc;
        use std::time::Duration;
        let space: Arc<dyn crate::VirtualSpace> = Arc::new(crate::SimSpace::simulated());
        let host = HostMemoryManager::builder(space, 64 << 20).build_started().expect("start");
        let heap = host.create_malloc(MallocType::THREADSAFE).expect("heap");
        assert!(heap.heap.shards.len() >= 2, "a thread-safe heap has several shards");
        let block = heap.alloc(1 << 20, CriticalLevel::Task).expect("a large block");
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let heap = &heap;
        std::thread::scope(|sc| {
            // Another thread holds shard 0's map, as in the middle of its own insert.
            sc.spawn(move || {
                let _held = heap.heap.shards[0].large.lock();
                held_tx.send(()).expect("main thread waits");
                let _ = release_rx.recv();
            });
            held_rx.recv().expect("shard 0 held");
            sc.spawn(move || {
                let answer = heap.heap.with_large(1, |_| heap.owns_raw(block));
                let _ = done_tx.send(answer);
            });
            // Shard 0's map stays held until the answer is in (or the bound is reached): an
            // `owns_raw` that waits for it never answers, one that does not answers as soon
            // as its thread runs. The 60 s bound is a hang guard, not a measure of speed: it
            // only ends a run where the answer never comes (a loaded machine may leave the
            // thread unscheduled for seconds).
            let answer = done_rx.recv_timeout(Duration::from_secs(60));
            release_tx.send(()).expect("holder waits");
            assert_eq!(answer, Ok(false), "owns_raw inside a map operation locked another shard's map");
        });
        // Outside a map operation the block is found, in whichever shard holds it.
        assert!(heap.owns_raw(block));
        heap.free(block).expect("free");
        assert!(!heap.owns_raw(block));
    }

    /// A small block's free finds its slab through the segment index, which holds a
    /// pointer to the segment made when the segment was reserved: that pointer must still
    /// be valid then (under Miri's aliasing model too, where moving a `Box` asserts
    /// unique access and invalidates pointers taken from it before).
    #[test]
    fn a_small_block_is_freed_through_the_segment_index() {
        let space: Arc<dyn crate::VirtualSpace> = Arc::new(crate::SimSpace::simulated());
        let host = HostMemoryManager::builder(space, 64 << 20).build_started().expect("start");
        let heap = host.create_malloc(MallocType::empty()).expect("heap");
        let p = heap.alloc(16, CriticalLevel::Task).expect("a small block");
        assert!(heap.owns(p));
        heap.free(p).expect("free");
        assert_eq!(heap.free(p), Err(HostError::InvalidOperation), "freed already");
    }

    #[test]
    fn bitmap() {
        let mut d = SlabData { class: 0, size: 0, cap: 0, free: 0, hint: 0, partial_pos: NONE, bits: [0; WORDS] };
        init_slab(&mut d, NCLASSES - 1);
        assert_eq!(d.cap, 8);
        let got: Vec<usize> = (0..8).map(|_| take_bit(&mut d)).collect();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
        assert_eq!(d.free, 0);
        assert!(d.bits.iter().all(|&w| w == 0));
    }
}
