//! The simulated backend: an address space that exists only as data.
//!
//! Page contents are stored sparsely: a page costs memory only once it is written, so
//! reserving and committing terabytes costs nothing. Everything is deterministic; the
//! backend keeps no clock, no randomness and no host addresses.
//!
//! Threads working on different memory should not wait for each other, nor pass cache
//! lines back and forth: the pages are kept in parts by 64 KiB block, each part with its
//! own lock, and checked accesses mostly bypass the engine. The engine checks the first
//! access to a block under its rules and then grants the block ([`Backend::grant`]: what
//! each of its pages allows); later reads and writes inside the block are checked
//! against the grant and carried out under the block's part alone, the way a CPU checks
//! its accesses against page tables without asking the kernel. Every change of access
//! (`set_access`, decommit, release) takes the grants of its blocks back before it
//! returns, so a change is seen by every thread's next access.
//!
//! Page contents are shared, copy-on-write, between a backend and its snapshots
//! ([`Snapshot`](super::Snapshot)): a snapshot takes a reference to each stored page
//! instead of a copy, and whichever side first writes to a shared page afterwards
//! stores a copy of it as its own (see `Store::put`). A page is only ever changed in
//! place by a backend that holds the one reference to it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use smallvec::SmallVec;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{Access, Backend, BackendError, Grant, Limits, ReserveOptions, GRANT_PAGES};
use crate::rules::PAGE;

/// How a simulated `MEM_RESET` treats the data it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetPolicy {
    /// Keep the data (as when the OS never needed the memory): `MEM_RESET_UNDO` succeeds.
    #[default]
    Keep,
    /// Drop the data at once (as under memory pressure): the pages read as zero and
    /// `MEM_RESET_UNDO` reports the loss.
    Discard,
}

impl ResetPolicy {
    /// The policy numbered `code` as the C library and traces number them: 0 keep, 1
    /// discard; `None` for any other number.
    pub fn from_code(code: u32) -> Option<ResetPolicy> {
        match code {
            0 => Some(ResetPolicy::Keep),
            1 => Some(ResetPolicy::Discard),
            _ => None,
        }
    }

    /// The policy's number (see [`ResetPolicy::from_code`]).
    pub fn code(self) -> u32 {
        match self {
            ResetPolicy::Keep => 0,
            ResetPolicy::Discard => 1,
        }
    }
}

/// Configuration of a simulated address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
///
/// [`SimSpace::simulated_with`](crate::SimSpace::simulated_with) normalises impossible
/// values instead of failing: the bounds are rounded inwards to 64 KiB (the lowest at
/// least 64 KiB), an end at or below the lowest address gives an empty space, and a
/// large-page size that is not a power-of-two multiple of 64 KiB means no large pages.
/// [`SimSpace::try_simulated_with`](crate::SimSpace::try_simulated_with) refuses them
/// instead (see [`SimConfig::validate`]).
pub struct SimConfig {
    /// The lowest address a reservation may start at (multiple of 64 KiB, at least 64 KiB),
    /// what `GetSystemInfo` reports as the minimum application address: `VirtualAlloc`
    /// at an address below it fails with `ERROR_INVALID_PARAMETER`, as below 0x10000 on
    /// Windows.
    pub min_address: usize,
    /// One past the highest user address (multiple of 64 KiB).
    pub end_address: usize,
    /// The large-page size (a power of two, a multiple of 64 KiB), 0 for none (then
    /// `MEM_LARGE_PAGES` fails).
    pub large_page_size: usize,
    /// What `MEM_RESET` does to data.
    pub reset_policy: ResetPolicy,
}

impl SimConfig {
    /// The highest `end_address` the simulation supports: the top of the Windows x64 user
    /// address space (one past 0x7FFF_FFFE_FFFF).
    pub const MAX_END_ADDRESS: usize = 0x7FFF_FFFF_0000;

    /// Whether the configuration is one a space can have as given, without the
    /// normalisation [`SimSpace::simulated_with`](crate::SimSpace::simulated_with)
    /// applies: `min_address` a multiple of 64 KiB and at least 64 KiB, `end_address` a
    /// multiple of 64 KiB above `min_address` and at most [`Self::MAX_END_ADDRESS`],
    /// `large_page_size` 0 or a power of two that is a multiple of 64 KiB. Otherwise
    /// [`Error::InvalidParameter`](crate::Error::InvalidParameter).
    pub fn validate(&self) -> crate::Result<()> {
        // Exactly the limits the engine would work with (what it would round or drop,
        // `rules::normalized` says), not empty, within what the simulation supports.
        let given = self.limits();
        let ok = crate::rules::normalized(given) == given
            && self.end_address > self.min_address
            && self.end_address <= Self::MAX_END_ADDRESS;
        if ok {
            Ok(())
        } else {
            Err(crate::Error::InvalidParameter)
        }
    }

    /// The limits this configuration gives a backend.
    fn limits(&self) -> Limits {
        Limits { min_address: self.min_address, end_address: self.end_address, large_page_size: self.large_page_size }
    }
}

impl SimConfig {
    /// The configuration given the way the C library's `VIRTMEM_PROCESS_CONFIG` and
    /// traces give it, checked: the lowest and the *highest* user address (inclusive, as
    /// `GetSystemInfo` reports them), the large-page size and the reset policy's number
    /// (see [`ResetPolicy::from_code`]). [`Error::InvalidParameter`](crate::Error::InvalidParameter)
    /// for an unknown policy, a highest address whose successor overflows, or anything
    /// [`SimConfig::validate`] refuses.
    pub fn from_fields(
        min_address: usize,
        max_address: usize,
        large_page_size: usize,
        reset_policy: u32,
    ) -> crate::Result<SimConfig> {
        let reset_policy = ResetPolicy::from_code(reset_policy).ok_or(crate::Error::InvalidParameter)?;
        let end_address = max_address.checked_add(1).ok_or(crate::Error::InvalidParameter)?;
        let c = SimConfig { min_address, end_address, large_page_size, reset_policy };
        c.validate()?;
        Ok(c)
    }
}

impl Default for SimConfig {
    /// The Windows x64 user address space: 0x10000 to 0x7FFF_FFFE_FFFF, 2 MiB large pages.
    fn default() -> Self {
        SimConfig {
            min_address: 0x1_0000,
            end_address: 0x7FFF_FFFF_0000,
            large_page_size: 2 << 20,
            reset_policy: ResetPolicy::Keep,
        }
    }
}

/// A page's contents. Shared (copy-on-write) with the backends that snapshots made of
/// this one or that this one was made from; written in place only while unique
/// (`Arc::get_mut`).
type Page = Arc<[u8; PAGE]>;

/// A new page of zeros, allocated.
fn new_page() -> Page {
    Arc::new([0u8; PAGE])
}

/// The most pages a thread keeps in each of its [`Spares`] lists (128 KiB at most).
const SPARES_MAX: usize = 16;

/// Page buffers a thread keeps between calls, so that the space's locks are not held
/// while a page is allocated, zeroed or freed: every page a write adds must start as
/// zeros, and zeroing 4 KiB costs more than the rest of a small write. Before the
/// engine takes its lock, [`SimBackend::prepare_write`] zeroes what the write may
/// need; under the lock a new page (or the copy of a page a snapshot shares) is taken
/// from `zeroed`, and a discarded page is put in `used` instead of being freed there.
/// Every page in both lists is unique: no backend holds it (see [`recycle`]).
#[derive(Default)]
struct Spares {
    /// Pages holding only zeros, ready to be stored.
    zeroed: Vec<Page>,
    /// Pages discarded by this thread, their old data not yet wiped.
    used: Vec<Page>,
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

/// A page of zeros: one this thread prepared, else a new one.
fn zeroed_page() -> Page {
    SPARES
        .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.zeroed.pop()))
        .ok()
        .flatten()
        .unwrap_or_else(new_page)
}

/// Keep a discarded page for this thread's later writes, or free it if the thread keeps
/// enough already (or is exiting). A page another backend still holds (a snapshot's, or
/// the original's of a snapshot) is only let go of: its data are still that backend's.
fn recycle(mut page: Page) {
    if Arc::get_mut(&mut page).is_none() {
        return;
    }
    let mut page = Some(page);
    let _ = SPARES.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.used.len() < SPARES_MAX {
                s.used.extend(page.take());
            }
        }
    });
}

/// Bytes of one grant block (see [`Backend::grant`]).
const BLOCK: usize = GRANT_PAGES * PAGE;

/// How many parts the backend's state is cut into. Each part has its own lock, so
/// threads working on different memory rarely touch the same lock or the same cache
/// lines; a page's block decides its part (`shard_of`).
const SHARDS: usize = 32;

/// Grant slots each part starts with, kept inline in the part (128 in all).
const PART_SLOTS: usize = 4;

/// The most grant slots a part grows to (see [`Store::grant`]): 16 384 in all, 1 GiB of
/// blocks, 512 KiB of slots for a space whose accesses need them all. (At 8192 in all, a
/// working set of 10^4 contiguous blocks, as the `access` benchmark's `1e4res`, sent ~1
/// access in 5 through the engine, ~1 100 instructions each: 202 of the 460 an access
/// cost on average, `VIRTMEM_PROFILE=read8/1e4res`.)
const MAX_PART_SLOTS: usize = 512;

/// The part holding the pages (and the grant) of block number `block` (its address /
/// 64 KiB). The blocks of each aligned run of [`SHARDS`] blocks go one to each part (the
/// low bits of the block number, permuted by a multiplicative hash of the run's number),
/// so that neighbouring blocks, and blocks a power of two apart, are spread over the
/// parts rather than sharing one; and a part's blocks in a stretch of `SHARDS * n` blocks
/// are in `n` different runs, which is what lets [`run_of`] index its slots without
/// two of them meeting.
#[inline(always)]
fn shard_of(block: usize) -> usize {
    let run = (block / SHARDS) as u64;
    (block ^ (run.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARDS.trailing_zeros())) as usize) % SHARDS
}

/// The run of `SHARDS` blocks that block number `block` lies in: the slot of its part it
/// is granted in is this modulo the part's slot count. (Two blocks of a part share a
/// slot only if their runs are a multiple of the slot count apart: a working set
/// within `SHARDS * slots` contiguous blocks never evicts itself.)
#[inline(always)]
fn run_of(block: usize) -> usize {
    block / SHARDS
}

/// A block's grant, as remembered in a slot.
#[derive(Clone, Copy)]
struct Granted {
    /// The block number; [`Granted::NONE`] for an empty slot.
    block: usize,
    /// What each page allows.
    pages: [Grant; GRANT_PAGES],
    /// Bit `i`: page `i` lies in a write-tracked range.
    watched: u16,
    /// Where the part keeps the block's pages: the block's record in [`Pages`], or
    /// [`NO_RECORD`] while the block holds no page. Kept up to date under the part's lock
    /// whenever the block's record is made or given up (see [`Store::hint`]), so that a
    /// granted access reaches its page without searching the part's index.
    record: u32,
}

impl Granted {
    /// The block number of an empty slot (no block has it: it is past every address).
    const NONE: usize = usize::MAX;

    /// An empty slot.
    const EMPTY: Granted =
        Granted { block: Granted::NONE, pages: [Grant::empty(); GRANT_PAGES], watched: 0, record: NO_RECORD };
}

/// The record of a block that holds no page (see [`Granted::record`]).
const NO_RECORD: u32 = u32::MAX;

/// The pages of one 64 KiB block: page `i` of the block in entry `i`, `None` while it
/// was never written (it reads as zero).
type BlockPages = [Option<Page>; GRANT_PAGES];

/// A part's stored pages: an ordered index of the blocks holding any, each pointing to
/// the block's record, the block's pages, in a slab. A record stays where it is for as
/// long as its block holds a page, so that a grant can keep its place
/// ([`Granted::record`]): a granted access then reaches its page in one step instead of
/// a search of the index (a search of the `BTreeMap` of all the part's pages was most of
/// the cost of a random granted access: ~100 instructions and ~4 of its ~7 first-level
/// cache misses, `VIRTMEM_PROFILE=read8/4096pages` of the `access` benchmark).
#[derive(Clone, Default)]
struct Pages {
    /// Block number → its record's place in `records`.
    index: BTreeMap<usize, u32>,
    /// The records; those of no block (listed in `free`) hold no page.
    records: Vec<BlockPages>,
    /// Places in `records` that no block uses, to be used again first.
    free: Vec<u32>,
    /// How many pages are stored.
    len: usize,
}

impl Pages {
    /// The record of block number `block`, [`NO_RECORD`] if it holds no page.
    fn record_of(&self, block: usize) -> u32 {
        self.index.get(&block).copied().unwrap_or(NO_RECORD)
    }

    /// Page number `k`, found in `record`, its block's record (or [`NO_RECORD`]).
    #[inline(always)]
    fn at(&self, record: u32, k: usize) -> Option<&Page> {
        self.records.get(record as usize)?[k % GRANT_PAGES].as_ref()
    }

    /// A new, empty record for block number `block` (which has none): its place.
    fn new_record(&mut self, block: usize) -> u32 {
        let record = match self.free.pop() {
            Some(record) => record,
            None => {
                // (Grown by doubling from one record, not from the four a `Vec` starts
                // with: a space with one written page keeps one record of 128 bytes.)
                if self.records.len() == self.records.capacity() {
                    self.records.reserve_exact(self.records.len().max(1));
                }
                self.records.push(Default::default());
                // (Fewer records than blocks in a part: 2^31 blocks in all at most.)
                (self.records.len() - 1) as u32
            }
        };
        self.index.insert(block, record);
        record
    }

    /// Take the stored pages among page numbers `pages` out, handing each to `each`
    /// (its number and contents). Returns the blocks left with no page, whose records
    /// were given up.
    fn take(&mut self, pages: Range<usize>, mut each: impl FnMut(usize, Page)) -> SmallVec<[usize; 4]> {
        let mut emptied = SmallVec::new();
        if pages.is_empty() {
            return emptied;
        }
        let blocks = pages.start / GRANT_PAGES..pages.end.div_ceil(GRANT_PAGES);
        for (&block, &record) in self.index.range(blocks) {
            let Some(held) = self.records.get_mut(record as usize) else { continue };
            let first = block * GRANT_PAGES;
            for k in pages.start.max(first)..pages.end.min(first + GRANT_PAGES) {
                if let Some(page) = held[k - first].take() {
                    self.len -= 1;
                    each(k, page);
                }
            }
            if held.iter().all(Option::is_none) {
                emptied.push(block);
            }
        }
        for block in &emptied {
            if let Some(record) = self.index.remove(block) {
                self.free.push(record);
            }
        }
        emptied
    }

    /// Every stored page.
    fn values(&self) -> impl Iterator<Item = &Page> {
        self.records.iter().flatten().flatten()
    }
}

/// One part of the backend's state: the pages of the blocks that hash to it, and their
/// grants.
struct Store {
    /// The stored pages; absent pages read as zero.
    pages: Pages,
    /// Dirty page numbers inside write-tracked ranges.
    dirty: BTreeSet<usize>,
    /// Page numbers whose data a `Discard` reset dropped (until undo or discard).
    lost: BTreeSet<usize>,
    /// The part's grant slots while it has [`PART_SLOTS`] of them (block `b` in entry
    /// `run_of(b) % PART_SLOTS`).
    grants: [Granted; PART_SLOTS],
    /// The part's grant slots once it has more (a power of two, at most
    /// [`MAX_PART_SLOTS`]; block `b` in entry `run_of(b) % len`), in place of `grants`.
    more: Option<Box<[Granted]>>,
    /// How many slots hold a grant.
    live: usize,
    /// How many grants evicted another block's since the slots last grew.
    evictions: usize,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            pages: Pages::default(),
            dirty: BTreeSet::new(),
            lost: BTreeSet::new(),
            grants: [Granted::EMPTY; PART_SLOTS],
            more: None,
            live: 0,
            evictions: 0,
        }
    }
}

impl Store {
    /// Drop the data, dirty marks and loss marks of page numbers `pages`. (Most
    /// discarded ranges hold none of them: each map is checked with one search, or
    /// none when it is empty, before anything is collected.)
    fn discard(&mut self, pages: Range<usize>) {
        if self.pages.len != 0 {
            let emptied = self.pages.take(pages.clone(), |_, page| recycle(page));
            self.unhint(&emptied);
        }
        for set in [&mut self.dirty, &mut self.lost] {
            if set.range(pages.clone()).next().is_some() {
                let doomed: Vec<usize> = set.range(pages.clone()).copied().collect();
                for k in doomed {
                    set.remove(&k);
                }
            }
        }
    }

    /// Whether the part holds nothing: no page, no mark.
    fn is_empty(&self) -> bool {
        self.pages.len == 0 && self.dirty.is_empty() && self.lost.is_empty()
    }

    /// The part's grant slots.
    #[inline(always)]
    fn slots(&self) -> &[Granted] {
        match &self.more {
            Some(more) => more,
            None => &self.grants,
        }
    }

    /// The part's grant slots, to change.
    fn slots_mut(&mut self) -> &mut [Granted] {
        match &mut self.more {
            Some(more) => more,
            None => &mut self.grants,
        }
    }

    /// The grant of block number `block` (of this part), if it holds one.
    #[inline(always)]
    fn grant_of(&self, block: usize) -> Option<&Granted> {
        let slots = self.slots();
        slots.get(run_of(block) & (slots.len() - 1)).filter(|g| g.block == block)
    }

    /// The grant of block number `block` (of this part), to change, if it holds one.
    fn grant_of_mut(&mut self, block: usize) -> Option<&mut Granted> {
        let slots = self.slots_mut();
        let i = run_of(block) & (slots.len() - 1);
        slots.get_mut(i).filter(|g| g.block == block)
    }

    /// Block number `block` has a new record, `record`: its grant, if any, is told.
    /// (With [`Store::unhint`], what keeps every grant's [`Granted::record`] true: a
    /// record is made only by [`Store::new_record`] and given up only through
    /// [`Pages::take`], whose callers call `unhint`, or with the whole store, whose
    /// grants go with it.)
    fn hint(&mut self, block: usize, record: u32) {
        if let Some(g) = self.grant_of_mut(block) {
            g.record = record;
        }
    }

    /// The blocks `emptied` hold no page any more: their grants, if any, are told.
    fn unhint(&mut self, emptied: &[usize]) {
        if self.live != 0 {
            for &block in emptied {
                self.hint(block, NO_RECORD);
            }
        }
    }

    /// A record for block number `block`, which has none, made and told to its grant.
    #[cold]
    #[inline(never)]
    fn new_record(&mut self, block: usize) -> u32 {
        let record = self.pages.new_record(block);
        self.hint(block, record);
        record
    }

    /// Remember `g`, a grant of a block of this part, in its slot, in place of whatever
    /// the slot held. A part whose grants have evicted each other half as many times as
    /// it has slots (since it last grew) doubles them first, up to [`MAX_PART_SLOTS`]: a
    /// working set of more blocks than the part has slots keeps them all granted once the
    /// slots have grown, while a part whose blocks fit never grows.
    fn grant(&mut self, g: Granted) {
        let len = self.slots().len();
        let i = run_of(g.block) & (len - 1);
        let old = self.slots().get(i).map_or(Granted::NONE, |s| s.block);
        if old == Granted::NONE {
            self.live += 1;
        } else if old != g.block {
            self.evictions += 1;
            if 2 * self.evictions >= len && len < MAX_PART_SLOTS {
                return self.grow_and_grant(g);
            }
        }
        if let Some(slot) = self.slots_mut().get_mut(i) {
            *slot = g;
        }
    }

    /// Double the grant slots, keeping every grant (each moves to the slot of its run
    /// modulo the new count: grants in different slots before are in different slots
    /// after), then remember `g`. (Out of line: a part grows at most six times, and
    /// inlined, the growth had cost every grant ~40 instructions of saved registers.)
    #[cold]
    #[inline(never)]
    fn grow_and_grant(&mut self, g: Granted) {
        let len = self.slots().len() * 2;
        let mut more = vec![Granted::EMPTY; len].into_boxed_slice();
        for g in self.slots().iter().filter(|g| g.block != Granted::NONE) {
            more[run_of(g.block) & (len - 1)] = *g;
        }
        self.more = Some(more);
        self.evictions = 0;
        // (The grant it evicted may be gone from the grown slots, or another still sit in
        // its new slot: the usual path settles it, without growing again so soon.)
        self.grant(g);
    }

    /// Forget the grants of every block in `blocks` (those of other parts are never
    /// here), looking at no more slots than `blocks` has runs, nor than the part has
    /// slots. Returns how many were forgotten.
    fn revoke(&mut self, blocks: &Range<usize>) -> usize {
        if self.live == 0 || blocks.is_empty() {
            return 0;
        }
        let runs = run_of(blocks.start)..run_of(blocks.end - 1) + 1;
        let slots = self.slots_mut();
        let len = slots.len();
        let mut gone = 0;
        let mut forget = |g: &mut Granted| {
            if blocks.contains(&g.block) {
                *g = Granted::EMPTY;
                gone += 1;
            }
        };
        if runs.len() >= len {
            slots.iter_mut().for_each(&mut forget);
        } else {
            for run in runs {
                forget(&mut slots[run & (len - 1)]);
            }
        }
        self.live -= gone;
        gone
    }

    /// Forget every grant of the part (its slots stay as many).
    fn forget_grants(&mut self) {
        if self.live != 0 {
            self.slots_mut().fill(Granted::EMPTY);
            self.live = 0;
        }
    }

    /// Copy `data` into page number `k` at offset `off`, marking it dirty if `watched`.
    /// A page shared with another backend is first replaced by a copy of its own.
    /// (Always inlined into its two callers, as it was before pages were shared: out of
    /// line, a granted write ran ~25 instructions more.)
    #[inline(always)]
    fn put(&mut self, k: usize, off: usize, data: &[u8], watched: bool) {
        let record = self.pages.record_of(k / GRANT_PAGES);
        self.put_at(record, k, off, data, watched);
    }

    /// [`Store::put`] with the record of the page's block known (a grant's): no search.
    #[inline(always)]
    fn put_at(&mut self, record: u32, k: usize, off: usize, data: &[u8], watched: bool) {
        if watched {
            self.dirty.insert(k);
        }
        // (A write does not clear a loss: the rest of the page is still gone, and the
        // next MEM_RESET_UNDO must say so.)
        let record = match record {
            NO_RECORD => self.new_record(k / GRANT_PAGES),
            record => record,
        };
        let slot = &mut self.pages.records[record as usize][k % GRANT_PAGES];
        let page = match slot {
            Some(page) => page,
            None => {
                self.pages.len += 1;
                slot.insert(zeroed_page())
            }
        };
        let to = off..off + data.len();
        match Arc::get_mut(page) {
            Some(bytes) => bytes[to].copy_from_slice(data),
            None => unshare(page)[to].copy_from_slice(data),
        }
    }

    /// How many of the stored pages another backend holds too.
    fn shared(&self) -> usize {
        self.pages.values().filter(|p| Arc::strong_count(p) > 1).count()
    }

    /// Copy page number `k` from offset `off` into `buf`.
    fn get(&self, k: usize, off: usize, buf: &mut [u8]) {
        self.get_at(self.pages.record_of(k / GRANT_PAGES), k, off, buf);
    }

    /// [`Store::get`] with the record of the page's block known (a grant's): no search.
    #[inline(always)]
    fn get_at(&self, record: u32, k: usize, off: usize, buf: &mut [u8]) {
        match self.pages.at(record, k) {
            Some(p) => buf.copy_from_slice(&p[off..off + buf.len()]),
            None => buf.fill(0),
        }
    }
}

/// Replace `page`, which another backend holds too, by a copy of it that this one alone
/// holds (in a spare page of this thread's if it has one, so that the copy allocates
/// nothing under the part's lock), and return the copy's bytes. (Out of line: the usual
/// write finds its page unique.)
#[cold]
#[inline(never)]
fn unshare(page: &mut Page) -> &mut [u8; PAGE] {
    let mut copy = zeroed_page();
    match Arc::get_mut(&mut copy) {
        Some(bytes) => bytes.copy_from_slice(&page[..]),
        // (Spare pages are unique; were one not, a new copy would do.)
        None => copy = Arc::new(**page),
    }
    // The shared page is let go of; the other backends still hold it.
    *page = copy;
    Arc::make_mut(page)
}

/// A part and its lock, alone on its cache lines.
#[repr(align(128))]
struct Shard {
    store: Mutex<Store>,
    /// Whether the part may hold something (a page or a mark): a part whose flag is
    /// clear is skipped by discards without taking its lock. Set under the lock before
    /// anything is added; cleared under the lock when the part is found empty.
    used: AtomicBool,
    /// How many of the part's slots hold a grant (`Store::live`). Written under the
    /// part's lock; read without it to skip parts that hold no grant when a range is
    /// changed. (Grants are made and taken back by the engine under its own lock, so a
    /// change never runs beside a grant of the same space.)
    live: AtomicUsize,
}

impl Shard {
    /// An empty part with no grant.
    fn new() -> Shard {
        Shard { store: Mutex::new(Store::default()), used: AtomicBool::new(false), live: AtomicUsize::new(0) }
    }
}

/// A simulated address space backend. See the module docs.
///
/// Its state is cut into parts by 64 KiB block (32 of them, each with its own
/// lock), and it keeps the engine's grants ([`Backend::grant`]): an access inside one
/// granted block is checked and carried out under that block's part alone, as a CPU's
/// access is checked by its page tables, so threads working on different memory share
/// neither a lock nor the engine's.
///
/// A part (a few hundred bytes) is allocated when something is first stored, marked or
/// granted in it, so an empty backend holds no heap at all (it held 9 KiB when every
/// part was made with it): many spaces can be kept at once.
pub struct SimBackend {
    config: SimConfig,
    /// Part `i`, unset while nothing was ever stored, marked or granted in it; set once
    /// (see [`SimBackend::part_or_new`]) and kept until the backend is dropped. (Boxed:
    /// an unset part costs 16 bytes, not its own size.)
    shards: [OnceLock<Box<Shard>>; SHARDS],
    /// Write-tracked ranges: start → end.
    watched: Mutex<BTreeMap<usize, usize>>,
    /// Whether `watched` may hold a range (spares writes its lock when nothing is tracked).
    watching: AtomicBool,
}

/// Shows the configuration only: the page contents and marks sit behind the parts' locks,
/// which a `Debug` print must not wait for.
impl std::fmt::Debug for SimBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimBackend").field("config", &self.config).finish_non_exhaustive()
    }
}

impl SimBackend {
    /// A backend with the given configuration.
    pub fn new(config: SimConfig) -> SimBackend {
        SimBackend {
            config,
            shards: std::array::from_fn(|_| OnceLock::new()),
            watched: Mutex::new(BTreeMap::new()),
            watching: AtomicBool::new(false),
        }
    }

    /// The configuration this backend was made with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// How many pages hold data (the memory the simulation really uses is this many
    /// pages of 4 KiB plus bookkeeping).
    pub fn stored_pages(&self) -> usize {
        (0..SHARDS).filter_map(|i| self.part(i)).map(|s| s.store.lock().pages.len).sum()
    }

    /// How many 64 KiB blocks hold a grant at the moment: blocks whose checked accesses
    /// the backend carries out without the engine (see [`Backend::grant`]). A moment's
    /// figure, for tests and for sizing a working set.
    pub fn granted_blocks(&self) -> usize {
        (0..SHARDS).filter_map(|i| self.part(i)).map(|s| s.store.lock().live).sum()
    }

    /// Part `i`, if it was ever needed.
    #[inline(always)]
    fn part(&self, i: usize) -> Option<&Shard> {
        self.shards[i].get().map(|b| &**b)
    }

    /// Part `i`, allocated if it was not yet (threads asking at the same time get the
    /// same part: one of them makes it, the others wait for it).
    #[inline(always)]
    fn part_or_new(&self, i: usize) -> &Shard {
        match self.part(i) {
            Some(shard) => shard,
            None => self.new_part(i),
        }
    }

    /// Allocate part `i` (out of line: it happens at most once per part).
    #[cold]
    fn new_part(&self, i: usize) -> &Shard {
        self.shards[i].get_or_init(|| Box::new(Shard::new()))
    }

    /// How many of the [stored pages](Self::stored_pages) are shared with another
    /// backend: with a snapshot of this one, or the backend this one is a snapshot of (or
    /// was restored from). A shared page costs its memory once for all who hold it; the
    /// first write to it by any of them copies it for that one. (Counted part by part: a
    /// moment's figure only while no other backend sharing pages changes.)
    pub fn shared_pages(&self) -> usize {
        (0..SHARDS).filter_map(|i| self.part(i)).map(|s| s.store.lock().shared()).sum()
    }

    /// The part of page number `k`, locked, for a change: marked used.
    fn store_for_change(&self, k: usize) -> parking_lot::MutexGuard<'_, Store> {
        let shard = self.part_or_new(shard_of(k / GRANT_PAGES));
        let store = shard.store.lock();
        shard.used.store(true, Ordering::Relaxed);
        store
    }

    /// The parts that may hold something of page numbers `pages`, as a bit mask: the
    /// parts of its blocks, or every part for a range of many blocks.
    fn parts_of(pages: &Range<usize>) -> u64 {
        let blocks = pages.start / GRANT_PAGES..pages.end.div_ceil(GRANT_PAGES);
        if blocks.len() >= SHARDS {
            return u64::MAX >> (64 - SHARDS);
        }
        blocks.fold(0, |mask, b| mask | 1 << shard_of(b))
    }

    /// The parts of `mask`, in ascending order, skipping those whose `used` flag is
    /// clear (found empty under their lock; only a change under the lock sets it again).
    fn used_parts(&self, mask: u64) -> impl Iterator<Item = &Shard> {
        // Only the parts in the mask are visited (most changes lie in one block, so
        // one part), lowest first: a walk over all 32 parts testing each against the
        // mask had cost every decommit and release ~250 instructions.
        let mut left = mask;
        std::iter::from_fn(move || {
            while left != 0 {
                let i = left.trailing_zeros() as usize;
                left &= left - 1;
                if let Some(shard) = self.part(i).filter(|s| s.used.load(Ordering::Relaxed)) {
                    return Some(shard);
                }
            }
            None
        })
    }

    /// Run `f` on every part that may hold something of page numbers `pages`, one at a
    /// time. With `clean`, a part left empty is marked unused. (The usual case, nothing
    /// to do, is inlined; the walk is not.)
    #[inline(always)]
    fn each_part(&self, pages: &Range<usize>, clean: bool, f: impl FnMut(&mut Store)) {
        // Most changes lie in one block, whose part usually holds nothing: one flag
        // to look at, without building a mask and walking it.
        let block = pages.start / GRANT_PAGES;
        if pages.end <= (block + 1) * GRANT_PAGES
            && !self.part(shard_of(block)).is_some_and(|s| s.used.load(Ordering::Relaxed))
        {
            return;
        }
        self.each_used_part(pages, clean, f);
    }

    /// [`SimBackend::each_part`] past its first check: the walk over the parts.
    #[inline(never)]
    fn each_used_part(&self, pages: &Range<usize>, clean: bool, mut f: impl FnMut(&mut Store)) {
        for shard in self.used_parts(Self::parts_of(pages)) {
            let mut store = shard.store.lock();
            f(&mut store);
            if clean && store.is_empty() {
                shard.used.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Lock every part that may hold something of page numbers `pages`, in ascending
    /// order (the only order in which more than one part is ever held), for a write-watch
    /// scan: reporting and cleaning are then one step for other threads' writes (a write
    /// between the two would be lost). Inline room for every part: no allocation.
    fn lock_parts(&self, pages: &Range<usize>) -> SmallVec<[parking_lot::MutexGuard<'_, Store>; SHARDS]> {
        self.used_parts(Self::parts_of(pages)).map(|s| s.store.lock()).collect()
    }

    /// Forget every grant of a block that `range` (non-empty) touches. (Always inlined:
    /// its usual case is a few instructions, less than the call.)
    #[inline(always)]
    fn revoke(&self, range: &Range<usize>) {
        let first = range.start / BLOCK;
        if (range.end - 1) / BLOCK == first {
            // Most changes lie in one block: one part to look at, skipped without its
            // lock unless it holds a grant.
            if let Some(shard) = self.part(shard_of(first)).filter(|s| s.live.load(Ordering::Acquire) != 0) {
                Self::revoke_one(shard, first);
            }
            return;
        }
        self.revoke_blocks(first..range.end.div_ceil(BLOCK));
    }

    /// Forget every grant of a block that `range` (non-empty, page-aligned) touches, then
    /// drop its contents and marks: [`SimBackend::revoke`] and then
    /// [`Backend::discard`], with the part of a range inside one block (most decommits
    /// and releases) found once for both, and passed by without its lock unless it holds
    /// a grant or may hold something. (Each looking for it had cost a decommit ~20
    /// instructions, a release ~10.)
    ///
    /// Passing by a part that holds no grant and nothing stored (or was never made),
    /// without its lock, holds for concurrent writers: with no grant from it no thread can
    /// write into `range` except through the engine, whose lock the caller (a decommit, a
    /// release) holds, so nothing can be stored there between the look and the return.
    #[inline(always)]
    fn revoke_and_discard(&self, range: &Range<usize>) {
        let first = range.start / BLOCK;
        if (range.end - 1) / BLOCK != first {
            self.revoke_blocks(first..range.end.div_ceil(BLOCK));
            self.discard(range.clone());
            return;
        }
        // (A part never made holds no grant and nothing stored or marked.)
        let Some(shard) = self.part(shard_of(first)) else { return };
        if shard.live.load(Ordering::Acquire) != 0 {
            Self::revoke_one(shard, first);
        }
        if shard.used.load(Ordering::Relaxed) {
            let pages = page_numbers(range);
            self.each_used_part(&pages, true, |store| store.discard(pages.clone()));
        }
    }

    /// [`Backend::release`] (of [`SimBackend`]) of a write-watched range: every grant
    /// taken back, then its contents and its marks dropped.
    #[inline(never)]
    fn release_watched(&self, range: Range<usize>, opts: ReserveOptions) {
        self.revoke(&range);
        self.unwatch_and_discard(range, opts);
    }

    /// Forget every grant of `blocks`: in each part holding a grant among the parts of
    /// `blocks`, a look at no more slots than `blocks` has runs of [`SHARDS`] blocks, nor
    /// than the part has slots (a change of 1 TiB looks at the slots in use, at most
    /// 16 384, not at its 2^24 blocks).
    fn revoke_blocks(&self, blocks: Range<usize>) {
        let mask = Self::parts_of(&(blocks.start * GRANT_PAGES..blocks.end * GRANT_PAGES));
        let mut left = mask;
        while left != 0 {
            let i = left.trailing_zeros() as usize;
            left &= left - 1;
            if let Some(shard) = self.part(i).filter(|s| s.live.load(Ordering::Acquire) != 0) {
                Self::revoke_in(shard, &blocks);
            }
        }
    }

    /// Forget the grant of block number `block`, if part `shard` (its part) holds it.
    /// (One slot to look at: the range walk of [`Store::revoke`] had cost a decommit of
    /// a granted page ~25 instructions more.)
    #[cold]
    fn revoke_one(shard: &Shard, block: usize) {
        let mut store = shard.store.lock();
        let slots = store.slots_mut();
        let i = run_of(block) & (slots.len() - 1);
        if slots.get(i).is_some_and(|g| g.block == block) {
            slots[i] = Granted::EMPTY;
            store.live -= 1;
            shard.live.store(store.live, Ordering::Release);
        }
    }

    /// Forget the grants of `blocks` that part `shard` holds.
    #[cold]
    fn revoke_in(shard: &Shard, blocks: &Range<usize>) {
        let mut store = shard.store.lock();
        if store.revoke(blocks) != 0 {
            shard.live.store(store.live, Ordering::Release);
        }
    }

    /// Forget every grant of the part `shard`, whose store `store` is (locked).
    fn forget_grants(shard: &Shard, store: &mut Store) {
        store.forget_grants();
        shard.live.store(0, Ordering::Release);
    }

    /// The end of a reservation: its write tracking and its contents go.
    #[inline(always)]
    fn unwatch_and_discard(&self, range: Range<usize>, opts: ReserveOptions) {
        if opts.write_watch {
            let mut w = self.watched.lock();
            w.remove(&range.start);
            if w.is_empty() {
                self.watching.store(false, Ordering::Release);
            }
        }
        self.discard(range);
    }

    /// Whether the page at `addr` lies in a write-tracked range.
    fn is_watched(&self, addr: usize) -> bool {
        self.watching.load(Ordering::Acquire)
            && self.watched.lock().range(..=addr).next_back().is_some_and(|(_, &end)| addr < end)
    }

    /// Bit `i`: page `i` of the block at `base` lies in a write-tracked range. (One look
    /// at the ranges, under their lock once, for the whole block; none while nothing is
    /// tracked. Asked page by page, an access through the engine spent ~360 instructions
    /// on its grant's 16 pages in a space tracking nothing: callgrind, `linux_profile
    /// sim-read 100 1000`, 1451.3 a read page by page against 1094.3.)
    fn watched_pages(&self, base: usize) -> u16 {
        if !self.watching.load(Ordering::Acquire) {
            return 0;
        }
        let watched = self.watched.lock();
        let mut bits = 0u16;
        for i in 0..GRANT_PAGES {
            let addr = base + i * PAGE;
            if watched.range(..=addr).next_back().is_some_and(|(_, &end)| addr < end) {
                bits |= 1 << i;
            }
        }
        bits
    }

    /// The grant covering `[address, address + len)` if one block holds all of it and
    /// grants `need` on each of its pages: (the block's part, its store locked, the bits
    /// of the block's write-tracked pages). (Always inlined into the two accesses that
    /// ask: out of line, the call and the grant copied out for it had cost a granted
    /// 8-byte access ~25 instructions.)
    #[inline(always)]
    fn granted(
        &self,
        address: usize,
        len: usize,
        need: Grant,
    ) -> Option<(&Shard, parking_lot::MutexGuard<'_, Store>, u16, u32)> {
        let last = address.checked_add(len.checked_sub(1)?)?;
        let block = address / BLOCK;
        if last / BLOCK != block {
            return None;
        }
        let shard = self.part(shard_of(block))?;
        let store = shard.store.lock();
        let g = store.grant_of(block)?;
        let pages = (address % BLOCK) / PAGE..=(last % BLOCK) / PAGE;
        let (watched, record) = (g.watched, g.record);
        g.pages[pages].iter().all(|p| p.contains(need)).then_some((shard, store, watched, record))
    }
}

impl super::Snapshot for SimBackend {
    /// Shares every stored page (copy-on-write: a reference is taken, the 4 KiB are not
    /// copied, see the module docs) and copies every dirty mark, loss mark and
    /// write-tracked range. Grants
    /// are not copied (a backend may forget a grant at any time; the copy's first access
    /// to a block is checked by its engine and granted again), and this backend's own
    /// grants are forgotten part by part as each part is copied: an access that would
    /// have used one after its part was copied goes to the engine instead, whose lock the
    /// caller holds, and so waits for the copy to end. A copy is therefore a moment's
    /// state: every access that finished before it began is in it, none that began after
    /// it ended, and each one in between wholly or not at all. (A write after the moment
    /// to a page the copy shares stores a copy of the page for the writer; the copy's
    /// page stays as it was.)
    fn snapshot(&self) -> Self {
        let copy = SimBackend::new(self.config);
        {
            let watched = self.watched.lock();
            copy.watching.store(!watched.is_empty(), Ordering::Release);
            *copy.watched.lock() = watched.clone();
        }
        // (A part that does not exist holds no grant and nothing to copy; only a call
        // through the engine, which waits for the copy, could make it meanwhile.)
        for (i, from) in (0..SHARDS).filter_map(|i| Some((i, self.part(i)?))) {
            let mut store = from.store.lock();
            Self::forget_grants(from, &mut store);
            if store.is_empty() {
                continue;
            }
            let to = copy.part_or_new(i);
            let mut mine = to.store.lock();
            mine.pages = store.pages.clone();
            mine.dirty = store.dirty.clone();
            mine.lost = store.lost.clone();
            to.used.store(!mine.is_empty(), Ordering::Relaxed);
        }
        copy
    }

    /// Takes `from`'s pages, marks and write-tracked ranges in place of this backend's,
    /// part by part, forgetting each part's grants as it goes (so, as for a snapshot, an
    /// access that would have used one afterwards goes to the engine, whose lock the
    /// caller holds, and waits for the restore to end). This backend's old pages,
    /// marks and ranges are handed back in `from`. Refused (`Unsupported`) if the two
    /// backends' configurations differ.
    fn restore(&self, from: Self) -> Result<Self, BackendError> {
        if from.config != self.config {
            return Err(BackendError::Unsupported("restoring a snapshot of a differently configured space"));
        }
        {
            let mut watched = self.watched.lock();
            let mut theirs = from.watched.lock();
            std::mem::swap(&mut *watched, &mut *theirs);
            self.watching.store(!watched.is_empty(), Ordering::Release);
            from.watching.store(!theirs.is_empty(), Ordering::Release);
        }
        for i in 0..SHARDS {
            // (A part neither backend has holds nothing and no grant; where one has it,
            // both get it, so that the contents can change places.)
            if self.part(i).is_none() && from.part(i).is_none() {
                continue;
            }
            let (to, src) = (self.part_or_new(i), from.part_or_new(i));
            let mut theirs = src.store.lock();
            let mut store = to.store.lock();
            // (Both sides' grants: a grant's record would name a place in the pages
            // that go to the other side.)
            Self::forget_grants(to, &mut store);
            Self::forget_grants(src, &mut theirs);
            std::mem::swap(&mut store.pages, &mut theirs.pages);
            std::mem::swap(&mut store.dirty, &mut theirs.dirty);
            std::mem::swap(&mut store.lost, &mut theirs.lost);
            to.used.store(!store.is_empty(), Ordering::Relaxed);
            src.used.store(!theirs.is_empty(), Ordering::Relaxed);
        }
        Ok(from)
    }
}

impl Default for SimBackend {
    fn default() -> Self {
        SimBackend::new(SimConfig::default())
    }
}

fn page_numbers(range: &Range<usize>) -> Range<usize> {
    range.start / PAGE..range.end.div_ceil(PAGE)
}

/// Hand `emit` the dirty page numbers of `pages` held by the parts `held` (locked), in
/// ascending order, at most `max` of them; with `reset` exactly those become clean.
/// Returns how many. Allocates nothing: the parts' sets are merged through a cursor
/// each, kept inline.
fn take_dirty(
    held: &mut [parking_lot::MutexGuard<'_, Store>],
    pages: Range<usize>,
    max: usize,
    reset: bool,
    mut emit: impl FnMut(usize),
) -> usize {
    // How many pages each part gave: the first ones of its dirty pages in `pages`.
    let mut taken = [0usize; SHARDS];
    let mut n = 0;
    {
        let mut heads: SmallVec<[std::collections::btree_set::Range<'_, usize>; SHARDS]> =
            held.iter().map(|st| st.dirty.range(pages.clone())).collect();
        // The lowest dirty page each part has left, `NONE` once it has none: the lowest of
        // all is found by a look at plain numbers. (Peeked at in each part's iterator, the
        // look had cost ~400 instructions a block: most of a scan.)
        const NONE: usize = usize::MAX;
        let mut next = [NONE; SHARDS];
        for (k, head) in next.iter_mut().zip(heads.iter_mut()) {
            *k = head.next().map_or(NONE, |&k| k);
        }
        // (A space whose parts hold nothing has no heads: no look at all.)
        while n < max && !heads.is_empty() {
            // The part holding the lowest dirty page left.
            let (mut i, mut k) = (0, NONE);
            for (j, &kj) in next.iter().enumerate() {
                if kj < k {
                    (i, k) = (j, kj);
                }
            }
            if k == NONE {
                break;
            }
            // Every page of that page's 64 KiB block lies in that part alone: take the
            // block's dirty pages in one go.
            let block_end = (k / GRANT_PAGES + 1) * GRANT_PAGES;
            while n < max && k < block_end {
                emit(k);
                taken[i] += 1;
                n += 1;
                k = heads[i].next().map_or(NONE, |&k| k);
            }
            next[i] = k;
        }
    }
    if reset {
        for (store, &count) in held.iter_mut().zip(&taken).filter(|(_, &count)| count != 0) {
            clean(&mut store.dirty, &pages, count);
        }
    }
    n
}

/// Make the lowest `max` dirty page numbers of `pages` in `dirty` clean (all of them
/// with `usize::MAX`). Allocates nothing. The usual cases search for no page: a set
/// whose every page goes is emptied in one sweep over its nodes, and a page that is the
/// lowest of the set is taken off its front; only a page with dirty pages below the
/// range in the same set is searched for. (Searched for one by one, each page cost ~490
/// instructions, and a resetting `GetWriteWatch` of 4096 pages twice a plain one.)
fn clean(dirty: &mut BTreeSet<usize>, pages: &Range<usize>, max: usize) {
    let within = |k: Option<&usize>| k.is_some_and(|k| pages.contains(k));
    if max >= dirty.len() && within(dirty.first()) && within(dirty.last()) {
        dirty.clear();
        return;
    }
    for _ in 0..max {
        if within(dirty.first()) {
            dirty.pop_first();
        } else if let Some(&k) = dirty.range(pages.clone()).next() {
            dirty.remove(&k);
        } else {
            break;
        }
    }
}

/// Split `[address, address + len)` into its pieces within pages: (page number,
/// offset in the page, offset in the buffer, length).
fn pieces(address: usize, len: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let mut done = 0;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let addr = address + done;
        let off = addr % PAGE;
        let n = (PAGE - off).min(len - done);
        let piece = (addr / PAGE, off, done, n);
        done += n;
        Some(piece)
    })
}

impl Backend for SimBackend {
    fn limits(&self) -> Limits {
        self.config.limits()
    }

    fn inline_effects(&self) -> bool {
        // Every operation is a little bookkeeping under the backend's own locks.
        true
    }

    fn reserve(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        if opts.large_pages && self.config.large_page_size == 0 {
            return Err(BackendError::LargePagesUnavailable);
        }
        if opts.write_watch {
            let mut w = self.watched.lock();
            w.insert(range.start, range.end);
            self.watching.store(true, Ordering::Release);
        }
        Ok(())
    }

    // (Inlined into `release_committed`, with `revoke_and_discard`: the calls and their
    // saved registers were half of a release's work here.
    // `release_committed` itself stays a call: inlined into the engine it saved a release
    // ~34 more instructions but cost every commit 5, through the code around it.)
    #[inline(always)]
    fn release(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        if opts.write_watch {
            self.release_watched(range, opts);
        } else {
            // Nothing to unwatch: the revocation and the discard in one.
            self.revoke_and_discard(&range);
        }
        Ok(())
    }

    fn release_committed(
        &self,
        range: Range<usize>,
        opts: ReserveOptions,
        _accessible: &[(Range<usize>, Access)],
    ) -> Result<(), BackendError> {
        // Making the accessible runs inaccessible first would only revoke grants: one
        // revocation of the whole range does it.
        self.release(range, opts)
    }

    fn release_drops_access(&self) -> bool {
        // `release_committed` revokes every grant of the whole range, whatever it is told.
        true
    }

    #[inline(always)]
    fn decommit(&self, runs: &[(Range<usize>, Access)]) -> Result<(), BackendError> {
        for (r, _) in runs {
            self.revoke_and_discard(r);
        }
        Ok(())
    }

    #[inline]
    fn set_access(&self, range: Range<usize>, _from: Access, _to: Access) -> Result<(), BackendError> {
        // The engine checks every access it carries out against its own page runs; only
        // the grants it handed out must go.
        self.revoke(&range);
        Ok(())
    }

    #[inline(always)]
    fn discard(&self, range: Range<usize>) {
        let pages = page_numbers(&range);
        self.each_part(&pages, true, |store| store.discard(pages.clone()));
    }

    fn reset(&self, range: Range<usize>) -> Result<(), BackendError> {
        if self.config.reset_policy == ResetPolicy::Keep {
            return Ok(());
        }
        let pages = page_numbers(&range);
        self.each_part(&pages, false, |store| {
            let lost = &mut store.lost;
            let emptied = store.pages.take(pages.clone(), |k, p| {
                // A page that held only zeros loses nothing.
                if p.iter().any(|&b| b != 0) {
                    lost.insert(k);
                }
            });
            store.unhint(&emptied);
        });
        Ok(())
    }

    fn reset_undo(&self, range: Range<usize>) -> Result<bool, BackendError> {
        let pages = page_numbers(&range);
        let mut intact = true;
        self.each_part(&pages, true, |store| {
            let lost: Vec<usize> = store.lost.range(pages.clone()).copied().collect();
            for k in &lost {
                store.lost.remove(k);
            }
            intact &= lost.is_empty();
        });
        Ok(intact)
    }

    fn lock(&self, _range: Range<usize>) -> Result<(), BackendError> {
        Ok(())
    }

    fn unlock(&self, _range: Range<usize>) -> Result<(), BackendError> {
        Ok(())
    }

    fn read(&self, address: usize, buf: &mut [u8]) -> Result<(), BackendError> {
        for (k, off, at, n) in pieces(address, buf.len()) {
            match self.part(shard_of(k / GRANT_PAGES)) {
                Some(shard) => shard.store.lock().get(k, off, &mut buf[at..at + n]),
                None => buf[at..at + n].fill(0),
            }
        }
        Ok(())
    }

    fn write(&self, address: usize, data: &[u8]) -> Result<(), BackendError> {
        for (k, off, at, n) in pieces(address, data.len()) {
            let watched = self.is_watched(k * PAGE);
            self.store_for_change(k).put(k, off, &data[at..at + n], watched);
        }
        Ok(())
    }

    fn prepare_write(&self, address: usize, len: usize) {
        // Enough zeroed pages for every page the write spans (up to the cap), whether or
        // not it holds data yet: asking the store would take its lock. Discarded pages
        // are wiped and reused first; a thread that writes to the same pages over and
        // over fills its list once and then finds it full.
        let need = page_numbers(&(address..address.saturating_add(len))).len().min(SPARES_MAX);
        let _ = SPARES.try_with(|s| {
            let Ok(mut s) = s.try_borrow_mut() else { return };
            while s.zeroed.len() < need {
                // (A used page is unique, see `recycle`: `get_mut` finds it so.)
                let page = match s.used.pop() {
                    Some(mut page) => match Arc::get_mut(&mut page) {
                        Some(bytes) => {
                            bytes.fill(0);
                            page
                        }
                        None => new_page(),
                    },
                    None => new_page(),
                };
                s.zeroed.push(page);
            }
        });
    }

    fn keeps_grants(&self) -> bool {
        true
    }

    fn grant(&self, base: usize, pages: &[Grant; GRANT_PAGES]) {
        let block = base / BLOCK;
        let watched = self.watched_pages(base);
        let shard = self.part_or_new(shard_of(block));
        let mut store = shard.store.lock();
        let record = store.pages.record_of(block);
        store.grant(Granted { block, pages: *pages, watched, record });
        shard.live.store(store.live, Ordering::Release);
    }

    fn try_read(&self, address: usize, buf: &mut [u8], need: Grant) -> bool {
        let Some((_, store, _, record)) = self.granted(address, buf.len(), need) else { return false };
        // (An access inside one page, the usual one, without the walk over pieces.)
        if address % PAGE + buf.len() <= PAGE {
            store.get_at(record, address / PAGE, address % PAGE, buf);
            return true;
        }
        for (k, off, at, n) in pieces(address, buf.len()) {
            store.get_at(record, k, off, &mut buf[at..at + n]);
        }
        true
    }

    fn try_write(&self, address: usize, data: &[u8]) -> bool {
        let Some((shard, mut store, watched, record)) = self.granted(address, data.len(), Grant::WRITE) else {
            return false;
        };
        shard.used.store(true, Ordering::Relaxed);
        let is_watched = |k: usize| watched & (1 << (k % GRANT_PAGES)) != 0;
        if address % PAGE + data.len() <= PAGE {
            let k = address / PAGE;
            store.put_at(record, k, address % PAGE, data, is_watched(k));
            return true;
        }
        // (The first piece may make the block's record: the later ones find it.)
        for (k, off, at, n) in pieces(address, data.len()) {
            store.put(k, off, &data[at..at + n], is_watched(k));
        }
        true
    }

    fn dirty_pages(&self, range: Range<usize>, max: usize, reset: bool) -> Result<Vec<usize>, BackendError> {
        let pages = page_numbers(&range);
        let mut found = Vec::new();
        take_dirty(&mut self.lock_parts(&pages), pages, max, reset, |k| found.push(k * PAGE));
        Ok(found)
    }

    fn dirty_pages_into(&self, range: Range<usize>, out: &mut [usize], reset: bool) -> Result<usize, BackendError> {
        let pages = page_numbers(&range);
        let mut slots = out.iter_mut();
        let n = take_dirty(&mut self.lock_parts(&pages), pages, slots.len(), reset, |k| {
            if let Some(slot) = slots.next() {
                *slot = k * PAGE;
            }
        });
        Ok(n)
    }

    fn clear_dirty(&self, range: Range<usize>) -> Result<(), BackendError> {
        let pages = page_numbers(&range);
        // (Removed in place, not collected first: a `ResetWriteWatch` allocates nothing,
        // as `GetWriteWatch` into a buffer does not.)
        self.each_part(&pages, true, |store| clean(&mut store.dirty, &pages, usize::MAX));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: usize = 0x10_0000;

    fn page_at(b: &SimBackend, address: usize) -> Vec<u8> {
        let mut buf = vec![0xEE; PAGE];
        b.read(address, &mut buf).unwrap();
        buf
    }

    /// A page a thread discarded and later stores again (wiped by `prepare_write`, or
    /// not prepared at all) holds none of its old data.
    #[test]
    fn reused_pages_read_as_zeros() {
        let b = SimBackend::default();
        for round in 0..3 {
            // Fill four pages with junk, then discard them: their buffers go to this
            // thread's spares.
            b.write(BASE, &vec![0xA5; 4 * PAGE]).unwrap();
            b.discard(BASE..BASE + 4 * PAGE);
            assert_eq!(b.stored_pages(), 0);
            // One byte on each page, prepared (round 0, 2) or not (round 1).
            for p in 0..4 {
                let at = BASE + p * PAGE + 100;
                if round != 1 {
                    b.prepare_write(at, 1);
                }
                b.write(at, &[7]).unwrap();
                let mut want = vec![0; PAGE];
                want[100] = 7;
                assert_eq!(page_at(&b, BASE + p * PAGE), want, "round {round}, page {p}");
            }
            b.discard(BASE..BASE + 4 * PAGE);
        }
    }

    /// Pages discarded on one thread are not handed to a write on another, and a
    /// thread that prepares far more than a write needs keeps at most `SPARES_MAX`.
    #[test]
    fn spares_stay_with_their_thread_and_are_capped() {
        let b = SimBackend::default();
        b.write(BASE, &vec![0x5A; 2 * PAGE]).unwrap();
        b.discard(BASE..BASE + 2 * PAGE);
        std::thread::scope(|s| {
            s.spawn(|| {
                b.prepare_write(BASE, 1 << 30);
                SPARES.with(|sp| {
                    let sp = sp.borrow();
                    assert_eq!(sp.zeroed.len(), SPARES_MAX);
                    assert!(sp.used.is_empty());
                    assert!(sp.zeroed.iter().all(|p| p.iter().all(|&x| x == 0)));
                });
                b.write(BASE + PAGE, &[1]).unwrap();
            });
        });
        let mut want = vec![0; PAGE];
        want[0] = 1;
        assert_eq!(page_at(&b, BASE + PAGE), want);
        assert_eq!(page_at(&b, BASE), vec![0; PAGE]);
        SPARES.with(|sp| assert_eq!(sp.borrow().used.len(), 2));
    }

    /// A discarded page that a snapshot still holds is let go of, never kept as a spare
    /// (a later write would wipe and reuse it under the snapshot); the snapshot's data
    /// stay, and a page the discarding side alone held is kept as a spare as before.
    #[test]
    fn shared_pages_are_never_kept_as_spares() {
        use crate::backend::Snapshot;
        let b = SimBackend::default();
        SPARES.with(|sp| sp.borrow_mut().used.clear());
        b.write(BASE, &vec![0x3C; 2 * PAGE]).unwrap();
        let copy = b.snapshot();
        b.write(BASE + PAGE, &[1]).unwrap();
        b.discard(BASE..BASE + 2 * PAGE);
        SPARES.with(|sp| {
            let sp = sp.borrow();
            assert_eq!(sp.used.len(), 1, "only the page the write copied");
            assert!(sp.used.iter().all(|p| Arc::strong_count(p) == 1));
        });
        b.prepare_write(BASE, 2 * PAGE);
        b.write(BASE, &vec![0x11; 2 * PAGE]).unwrap();
        assert_eq!(page_at(&copy, BASE), vec![0x3C; PAGE]);
        assert_eq!(page_at(&copy, BASE + PAGE), vec![0x3C; PAGE]);
    }

    /// The slot counts of the parts that exist.
    fn slot_counts(b: &SimBackend) -> Vec<usize> {
        (0..SHARDS).filter_map(|i| b.part(i)).map(|s| s.store.lock().slots().len()).collect()
    }

    /// A grant of every page of block number `block`, read-write.
    fn grant_rw(b: &SimBackend, block: usize) {
        b.grant(block * BLOCK, &[Grant::READ | Grant::WRITE; GRANT_PAGES]);
    }

    /// A part costs no more than it did with its four fixed slots (384 bytes), and the
    /// grants of a working set that fits its parts' four slots each (128 contiguous
    /// blocks, wherever they start) never make a part grow: no slot evicts another.
    #[test]
    fn small_working_sets_never_grow_the_slots() {
        assert!(std::mem::size_of::<Shard>() <= 384, "{}", std::mem::size_of::<Shard>());
        for first in [0x10, 0x1234, 0x7FFF_0000 / BLOCK - 200] {
            let b = SimBackend::default();
            for _ in 0..10 {
                for block in first..first + PART_SLOTS * SHARDS - SHARDS {
                    grant_rw(&b, block);
                }
            }
            assert_eq!(b.granted_blocks(), PART_SLOTS * SHARDS - SHARDS);
            assert!(slot_counts(&b).iter().all(|&n| n == PART_SLOTS), "{:?}", slot_counts(&b));
            assert!((0..SHARDS).filter_map(|i| b.part(i)).all(|s| s.store.lock().more.is_none()));
        }
    }

    /// Grants evicting each other make their parts' slots grow, each part to a power of
    /// two no larger than [`MAX_PART_SLOTS`] (16 384 slots in all, never more however many
    /// blocks are granted), and every grant made last is still there unless a later one
    /// took its slot.
    #[test]
    fn slots_grow_with_evictions_up_to_the_cap() {
        let b = SimBackend::default();
        // 1000 contiguous blocks, granted round after round: the slots grow until none
        // evicts another (1000 blocks span at most 33 runs: 64 slots a part).
        for _ in 0..8 {
            for block in 5000..6000 {
                grant_rw(&b, block);
            }
        }
        assert_eq!(b.granted_blocks(), 1000);
        let counts = slot_counts(&b);
        assert!(counts.iter().all(|&n| n.is_power_of_two() && n <= 64 && n > PART_SLOTS), "{counts:?}");
        // 40 000 blocks: far more than the cap.
        for _ in 0..4 {
            for block in 100_000..140_000 {
                grant_rw(&b, block);
            }
        }
        assert_eq!(slot_counts(&b), vec![MAX_PART_SLOTS; SHARDS]);
        assert_eq!(b.granted_blocks(), MAX_PART_SLOTS * SHARDS);
        // The last 16 384 blocks granted are the ones held (their runs are 512 in a row).
        for block in 140_000 - MAX_PART_SLOTS * SHARDS..140_000 {
            let store = b.part(shard_of(block)).unwrap().store.lock();
            assert!(store.grant_of(block).is_some(), "{block}");
        }
    }

    /// A change of many blocks takes back the grants of exactly its blocks, by looking at
    /// every slot of a part (a change of more runs than the part has slots) or at its
    /// runs' slots (fewer), and a change of 1 TiB over a space holding thousands of grants
    /// takes them all back.
    #[test]
    fn a_change_of_many_blocks_takes_back_exactly_its_grants() {
        let b = SimBackend::default();
        let blocks = 3000..7000;
        for _ in 0..8 {
            for block in blocks.clone() {
                grant_rw(&b, block);
            }
        }
        assert_eq!(b.granted_blocks(), blocks.len());
        let held = |k: usize| b.part(shard_of(k)).unwrap().store.lock().grant_of(k).is_some();
        // 4000 blocks over 126 runs: 128 slots a part. A change of fewer runs than that
        // (100 blocks, 4 runs), then one of more (5900 blocks, 185 runs).
        assert_eq!(slot_counts(&b), vec![128; SHARDS]);
        for change in [3500..3600, 1000..6900] {
            b.set_access(change.start * BLOCK..change.end * BLOCK, Access::ReadWrite, Access::Read).unwrap();
            for k in blocks.clone() {
                assert_eq!(held(k), !change.contains(&k) && !(3500..3600).contains(&k), "{k} after {change:?}");
            }
        }
        assert_eq!(b.granted_blocks(), 100);
        b.release(0x1_0000..0x1_0000 + (1 << 40), ReserveOptions::default()).unwrap();
        assert_eq!(b.granted_blocks(), 0);
    }

    /// Every grant's record is its block's (or [`NO_RECORD`] for a block holding no page),
    /// and every part's records and page count agree with its index.
    fn check_records(b: &SimBackend) {
        for i in 0..SHARDS {
            let Some(shard) = b.part(i) else { continue };
            let store = shard.store.lock();
            for g in store.slots().iter().filter(|g| g.block != Granted::NONE) {
                assert_eq!(g.record, store.pages.record_of(g.block), "grant of block {:#x}", g.block);
            }
            let pages = &store.pages;
            assert_eq!(pages.values().count(), pages.len, "part {i}");
            assert_eq!(pages.index.len() + pages.free.len(), pages.records.len(), "part {i}");
            for &f in &pages.free {
                assert!(pages.records[f as usize].iter().all(Option::is_none), "free record {f} of part {i}");
            }
            for &r in pages.index.values() {
                assert!(pages.records[r as usize].iter().any(Option::is_some), "empty record {r} of part {i}");
            }
        }
    }

    /// Random writes, grants, discards, discarding resets, changes of access, snapshots
    /// and restores on 200 blocks (six or so in each part, so that records are given up
    /// and used again all the time; 40 under Miri): every granted read reads what a plain
    /// model of the pages holds, as every read through the part's index does, and every
    /// grant's record stays its block's.
    #[test]
    fn granted_reads_find_the_pages_their_blocks_hold_now() {
        use crate::backend::Snapshot;
        let config = SimConfig { reset_policy: ResetPolicy::Discard, ..SimConfig::default() };
        let b = SimBackend::new(config);
        let mut model: std::collections::HashMap<usize, Box<[u8; PAGE]>> = Default::default();
        let first = BASE / BLOCK;
        // (Under Miri, 40 blocks and 300 rounds: a few minutes.)
        let blocks = if cfg!(miri) { 40 } else { 200 };
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let rounds = if cfg!(miri) { 300 } else { 40_000 };
        let mut granted_reads = 0;
        for round in 0..rounds {
            let block = first + next(blocks);
            let at = block * BLOCK + next(BLOCK / 8) * 8;
            let range = |next: &mut dyn FnMut(usize) -> usize| {
                let start = first * BLOCK + next(blocks * GRANT_PAGES) * PAGE;
                start..start + (1 + next(3 * GRANT_PAGES)) * PAGE
            };
            match next(1000) {
                0..=299 => {
                    // An 8-byte write, inside a page or across two (then maybe two blocks).
                    let at = if next(8) == 0 { (at | (PAGE - 1)) - 3 } else { at };
                    let v = (round as u64).to_le_bytes();
                    if !b.try_write(at, &v) {
                        b.write(at, &v).unwrap();
                    }
                    for (k, off, from, n) in pieces(at, 8) {
                        model.entry(k).or_insert_with(|| Box::new([0; PAGE]))[off..off + n]
                            .copy_from_slice(&v[from..from + n]);
                    }
                }
                300..=699 => {
                    let mut want = [0u8; 8];
                    if let Some(page) = model.get(&(at / PAGE)) {
                        want.copy_from_slice(&page[at % PAGE..at % PAGE + 8]);
                    }
                    // (A block not granted is granted for the next read, as the engine
                    // grants it after a read.)
                    let mut got = [0xEE; 8];
                    if b.try_read(at, &mut got, Grant::READ) {
                        granted_reads += 1;
                        assert_eq!(got, want, "granted read at {at:#x}, round {round}");
                    } else {
                        grant_rw(&b, block);
                    }
                    let mut got = [0xEE; 8];
                    b.read(at, &mut got).unwrap();
                    assert_eq!(got, want, "read at {at:#x}, round {round}");
                }
                700..=849 => grant_rw(&b, block),
                850..=899 => {
                    let r = range(&mut next);
                    b.discard(r.clone());
                    model.retain(|&k, _| !(r.start / PAGE..r.end / PAGE).contains(&k));
                }
                900..=949 => {
                    let r = range(&mut next);
                    b.reset(r.clone()).unwrap();
                    model.retain(|&k, _| !(r.start / PAGE..r.end / PAGE).contains(&k));
                }
                950..=997 => b.set_access(range(&mut next), Access::ReadWrite, Access::Read).unwrap(),
                998 => {
                    // A snapshot, written over, then restored: the model's pages again.
                    let copy = b.snapshot();
                    check_records(&copy);
                    b.write(at, &[0xA5; 8]).unwrap();
                    grant_rw(&b, block);
                    b.restore(copy).unwrap();
                }
                _ => {
                    // A snapshot that is then written to through its own grants.
                    let copy = b.snapshot();
                    grant_rw(&copy, block);
                    assert!(copy.try_write(at, &[0x5A; 8]));
                    check_records(&copy);
                }
            }
            check_records(&b);
        }
        assert_eq!(b.stored_pages(), model.len());
        assert!(granted_reads > rounds / 5, "{granted_reads} granted reads");
    }

    /// The parts a change visits are exactly the used ones among those of its blocks,
    /// lowest first (the order every taker of several part locks keeps), and a discard
    /// over blocks in many parts empties every one of them.
    #[test]
    fn a_change_visits_exactly_its_used_parts_in_order() {
        let b = SimBackend::default();
        let index = |s: &Shard| (0..SHARDS).position(|i| b.part(i).is_some_and(|t| std::ptr::eq(t, s))).unwrap();
        assert_eq!(b.used_parts(u64::MAX >> (64 - SHARDS)).count(), 0, "nothing used yet");
        // One byte in each of 40 blocks: every part ends up used (40 blocks > 32 parts
        // unless the hash is very lopsided; the assertions below do not depend on it).
        for k in 0..40 {
            b.write(BASE + k * BLOCK, &[1]).unwrap();
        }
        let used: Vec<usize> = b.used_parts(u64::MAX >> (64 - SHARDS)).map(index).collect();
        assert!(used.windows(2).all(|w| w[0] < w[1]), "ascending: {used:?}");
        let expected: Vec<usize> = (0..40).map(|k| shard_of((BASE + k * BLOCK) / BLOCK)).collect();
        for i in 0..SHARDS {
            assert_eq!(used.contains(&i), expected.contains(&i), "part {i}");
        }
        // A mask of some parts yields just those of them that are used.
        let mask = 0b1010_0110_u64;
        let some: Vec<usize> = b.used_parts(mask).map(index).collect();
        let want: Vec<usize> = used.iter().copied().filter(|&i| mask & 1 << i != 0).collect();
        assert_eq!(some, want);
        // One block's change visits its one part.
        let one = SimBackend::parts_of(&page_numbers(&(BASE..BASE + BLOCK)));
        assert_eq!(one.count_ones(), 1);
        assert_eq!(b.used_parts(one).map(index).collect::<Vec<_>>(), vec![shard_of(BASE / BLOCK)]);
        b.discard(BASE..BASE + 40 * BLOCK);
        assert_eq!(b.stored_pages(), 0);
        assert_eq!(b.used_parts(u64::MAX >> (64 - SHARDS)).count(), 0, "all emptied and marked unused");
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;
    use crate::{Error, SimSpace};

    const K64: usize = 0x1_0000;

    /// A 32-bit guest's user range: 0x10000 to 0x7FFEFFFF, no large pages.
    fn guest32() -> SimConfig {
        SimConfig { min_address: K64, end_address: 0x7FFF_0000, large_page_size: 0, reset_policy: ResetPolicy::Discard }
    }

    #[test]
    fn valid_configurations_are_accepted_as_given() {
        for c in [SimConfig::default(), guest32(), SimConfig { large_page_size: K64, ..guest32() }] {
            assert_eq!(c.validate(), Ok(()), "{c:?}");
            let space = SimSpace::try_simulated_with(c).expect("valid");
            assert_eq!(*space.backend().config(), c);
            let info = space.system_info();
            assert_eq!(info.minimum_application_address, c.min_address);
            assert_eq!(info.maximum_application_address, c.end_address - 1);
            assert_eq!(info.large_page_size, c.large_page_size);
        }
        // The highest end the simulation supports, and the smallest space (one granule).
        let top = SimConfig { end_address: SimConfig::MAX_END_ADDRESS, ..SimConfig::default() };
        assert_eq!(top.validate(), Ok(()));
        assert_eq!(SimConfig { min_address: 0x20_0000, end_address: 0x21_0000, ..guest32() }.validate(), Ok(()));
    }

    #[test]
    fn fields_give_the_configuration_with_an_inclusive_top() {
        assert_eq!(SimConfig::from_fields(K64, 0x7FFE_FFFF, 0, 1), Ok(guest32()));
        assert_eq!(SimConfig::from_fields(K64, 0x7FFF_FFFE_FFFF, 2 << 20, 0), Ok(SimConfig::default()));
        for (min, max, lp, policy) in
            [(K64, 0x7FFE_FFFF, 0, 2), (K64, usize::MAX, 0, 0), (K64, 0x7FFF_0000, 0, 0), (0, 0x7FFE_FFFF, 0, 0)]
        {
            assert_eq!(SimConfig::from_fields(min, max, lp, policy), Err(Error::InvalidParameter));
        }
        for p in [ResetPolicy::Keep, ResetPolicy::Discard] {
            assert_eq!(ResetPolicy::from_code(p.code()), Some(p));
        }
    }

    #[test]
    fn every_invalid_field_is_refused_with_invalid_parameter() {
        let bad = [
            SimConfig { min_address: 0, ..guest32() },
            SimConfig { min_address: 0x8000, ..guest32() },
            SimConfig { min_address: K64 + 0x1000, ..guest32() },
            SimConfig { end_address: 0x7FFF_1000, ..guest32() },
            SimConfig { end_address: K64, ..guest32() },
            SimConfig { min_address: 0x20_0000, end_address: 0x10_0000, ..guest32() },
            SimConfig { end_address: SimConfig::MAX_END_ADDRESS + K64, ..guest32() },
            SimConfig { end_address: usize::MAX & !(K64 - 1), ..guest32() },
            SimConfig { large_page_size: 0x1000, ..guest32() },
            SimConfig { large_page_size: 3 * K64, ..guest32() },
            SimConfig { large_page_size: 0x8000, ..guest32() },
            SimConfig { large_page_size: usize::MAX, ..guest32() },
        ];
        for c in bad {
            assert_eq!(c.validate(), Err(Error::InvalidParameter), "{c:?}");
            assert_eq!(SimSpace::try_simulated_with(c).err(), Some(Error::InvalidParameter), "{c:?}");
        }
    }
}
