//! The simulated backend: an address space that exists only as data.
//!
//! Page contents are stored sparsely: a page costs memory only once it is written, so
//! reserving and committing terabytes costs nothing. Everything is deterministic; the
//! backend keeps no clock, no randomness and no host addresses.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use parking_lot::Mutex;
use smallvec::SmallVec;

use super::{Access, Backend, BackendError, Limits, ReserveOptions};
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

/// Configuration of a simulated address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
///
/// A space normalises impossible values instead of failing: the bounds are rounded
/// inwards to 64 KiB (the lowest at least 64 KiB), an end at or below the lowest address
/// gives an empty space, and a large-page size that is not a power-of-two multiple of
/// 64 KiB means no large pages.
pub struct SimConfig {
    /// The lowest address a reservation may start at (multiple of 64 KiB, at least 64 KiB).
    pub min_address: usize,
    /// One past the highest user address (multiple of 64 KiB).
    pub end_address: usize,
    /// The large-page size (a power of two, a multiple of 64 KiB), 0 for none (then
    /// `MEM_LARGE_PAGES` fails).
    pub large_page_size: usize,
    /// What `MEM_RESET` does to data.
    pub reset_policy: ResetPolicy,
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

type Page = Box<[u8; PAGE]>;

/// The most pages a thread keeps in each of its [`Spares`] lists (128 KiB at most).
const SPARES_MAX: usize = 16;

/// Page buffers a thread keeps between calls, so that the space's locks are not held
/// while a page is allocated, zeroed or freed: every page a write adds must start as
/// zeros, and zeroing 4 KiB costs more than the rest of a small write. Before the
/// engine takes its lock, [`SimBackend::prepare_write`] zeroes what the write may
/// need; under the lock a new page is taken from `zeroed`, and a discarded page is put
/// in `used` instead of being freed there.
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
        .unwrap_or_else(|| Box::new([0u8; PAGE]))
}

/// Keep a discarded page for this thread's later writes, or free it if the thread keeps
/// enough already (or is exiting).
fn recycle(page: Page) {
    let mut page = Some(page);
    let _ = SPARES.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.used.len() < SPARES_MAX {
                s.used.extend(page.take());
            }
        }
    });
}

#[derive(Default)]
struct Store {
    /// Page number → contents; absent pages read as zero.
    pages: BTreeMap<usize, Page>,
    /// Write-tracked ranges: start → end.
    watched: BTreeMap<usize, usize>,
    /// Dirty page numbers inside write-tracked ranges.
    dirty: BTreeSet<usize>,
    /// Page numbers whose data a `Discard` reset dropped (until undo or discard).
    lost: BTreeSet<usize>,
}

impl Store {
    fn is_watched(&self, addr: usize) -> bool {
        self.watched.range(..=addr).next_back().is_some_and(|(_, &end)| addr < end)
    }

    /// Drop the data, dirty marks and loss marks of page numbers `pages`. (Most
    /// discarded ranges hold none of them: each map is checked with one search, or
    /// none when it is empty, before anything is collected.)
    fn discard(&mut self, pages: Range<usize>) {
        if self.pages.range(pages.clone()).next().is_some() {
            let doomed: SmallVec<[usize; SPARES_MAX]> = self.pages.range(pages.clone()).map(|(&k, _)| k).collect();
            for k in doomed {
                if let Some(page) = self.pages.remove(&k) {
                    recycle(page);
                }
            }
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
}

/// A simulated address space backend. See the module docs.
pub struct SimBackend {
    config: SimConfig,
    store: Mutex<Store>,
}

impl SimBackend {
    /// A backend with the given configuration.
    pub fn new(config: SimConfig) -> SimBackend {
        SimBackend { config, store: Mutex::new(Store::default()) }
    }

    /// The configuration this backend was made with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// How many pages hold data (the memory the simulation really uses is this many
    /// pages of 4 KiB plus bookkeeping).
    pub fn stored_pages(&self) -> usize {
        self.store.lock().pages.len()
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

impl Backend for SimBackend {
    fn limits(&self) -> Limits {
        Limits {
            min_address: self.config.min_address,
            end_address: self.config.end_address,
            large_page_size: self.config.large_page_size,
        }
    }

    fn inline_effects(&self) -> bool {
        // Every operation is a little bookkeeping under the store's own lock.
        true
    }

    fn reserve(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        if opts.large_pages && self.config.large_page_size == 0 {
            return Err(BackendError::LargePagesUnavailable);
        }
        if opts.write_watch {
            self.store.lock().watched.insert(range.start, range.end);
        }
        Ok(())
    }

    fn release(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        let mut store = self.store.lock();
        if opts.write_watch {
            store.watched.remove(&range.start);
        }
        store.discard(page_numbers(&range));
        Ok(())
    }

    fn set_access(&self, _range: Range<usize>, _from: Access, _to: Access) -> Result<(), BackendError> {
        // The engine checks every simulated access against its own page runs, so there is
        // no separate hardware state to change.
        Ok(())
    }

    fn discard(&self, range: Range<usize>) {
        self.store.lock().discard(page_numbers(&range));
    }

    fn reset(&self, range: Range<usize>) -> Result<(), BackendError> {
        if self.config.reset_policy == ResetPolicy::Keep {
            return Ok(());
        }
        let pages = page_numbers(&range);
        let mut store = self.store.lock();
        let doomed: Vec<usize> = store.pages.range(pages).map(|(&k, _)| k).collect();
        for k in doomed {
            // A page that held only zeros loses nothing.
            if let Some(p) = store.pages.remove(&k) {
                if p.iter().any(|&b| b != 0) {
                    store.lost.insert(k);
                }
            }
        }
        Ok(())
    }

    fn reset_undo(&self, range: Range<usize>) -> Result<bool, BackendError> {
        let pages = page_numbers(&range);
        let mut store = self.store.lock();
        let lost: Vec<usize> = store.lost.range(pages).copied().collect();
        for k in &lost {
            store.lost.remove(k);
        }
        Ok(lost.is_empty())
    }

    fn lock(&self, _range: Range<usize>) -> Result<(), BackendError> {
        Ok(())
    }

    fn unlock(&self, _range: Range<usize>) -> Result<(), BackendError> {
        Ok(())
    }

    fn read(&self, address: usize, buf: &mut [u8]) -> Result<(), BackendError> {
        let store = self.store.lock();
        let mut done = 0;
        while done < buf.len() {
            let addr = address + done;
            let off = addr % PAGE;
            let n = (PAGE - off).min(buf.len() - done);
            match store.pages.get(&(addr / PAGE)) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[off..off + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn write(&self, address: usize, data: &[u8]) -> Result<(), BackendError> {
        let mut store = self.store.lock();
        let mut done = 0;
        while done < data.len() {
            let addr = address + done;
            let off = addr % PAGE;
            let n = (PAGE - off).min(data.len() - done);
            let k = addr / PAGE;
            if store.is_watched(addr) {
                store.dirty.insert(k);
            }
            // (A write does not clear a loss: the rest of the page is still gone, and
            // the next MEM_RESET_UNDO must say so.)
            let page = store.pages.entry(k).or_insert_with(zeroed_page);
            page[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
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
                let page = match s.used.pop() {
                    Some(mut page) => {
                        page.fill(0);
                        page
                    }
                    None => Box::new([0u8; PAGE]),
                };
                s.zeroed.push(page);
            }
        });
    }

    fn dirty_pages(&self, range: Range<usize>, max: usize, reset: bool) -> Result<Vec<usize>, BackendError> {
        let mut store = self.store.lock();
        let found: Vec<usize> = store.dirty.range(page_numbers(&range)).take(max).copied().collect();
        if reset {
            for k in &found {
                store.dirty.remove(k);
            }
        }
        Ok(found.into_iter().map(|k| k * PAGE).collect())
    }

    fn clear_dirty(&self, range: Range<usize>) -> Result<(), BackendError> {
        let mut store = self.store.lock();
        let doomed: Vec<usize> = store.dirty.range(page_numbers(&range)).copied().collect();
        for k in doomed {
            store.dirty.remove(&k);
        }
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
}
