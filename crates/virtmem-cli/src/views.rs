//! A simulated backend that also holds *foreign views*: image and file mappings a replayed
//! program had (from Wine's view dumps), which the engine did not allocate. Queries
//! report them as `MEM_IMAGE` / `MEM_MAPPED`, and a reservation that would overlap one
//! fails exactly as it would over a real mapping.

use std::collections::BTreeMap;
use std::ops::Range;

use parking_lot::Mutex;
use virtmem::backend::{Access, Backend, BackendError, ForeignKind, ForeignRegion, Limits, ReserveOptions};
use virtmem::{AddressSpace, SimBackend};

/// [`SimBackend`] plus a set of foreign views.
pub struct Views {
    sim: SimBackend,
    views: Mutex<BTreeMap<usize, ForeignRegion>>,
}

impl Views {
    /// A default simulated backend with no views.
    pub fn new() -> Views {
        Views { sim: SimBackend::default(), views: Mutex::new(BTreeMap::new()) }
    }

    /// Add a view covering `range` made of `pieces` (each a range inside it, the access
    /// it grants and whether it is copy-on-write), replacing views it overlaps. Parts of
    /// `range` no piece covers grant read access. Queries report every piece as a region
    /// of its own whose allocation base is `range.start`.
    pub fn add(&self, range: Range<usize>, pieces: &[(Range<usize>, Access, bool)], kind: ForeignKind) {
        let mut v = self.views.lock();
        let overlapping: Vec<usize> =
            v.range(..range.end).filter(|(_, f)| f.end > range.start).map(|(&s, _)| s).collect();
        for s in overlapping {
            v.remove(&s);
        }
        let region = |start: usize, end: usize, access: Access, copy_on_write: bool| ForeignRegion {
            start,
            end,
            access,
            copy_on_write,
            allocation_base: range.start,
            kind,
        };
        let mut at = range.start;
        for (r, access, cow) in pieces {
            let (start, end) = (r.start.max(at), r.end.min(range.end));
            if start >= end {
                continue;
            }
            if start > at {
                v.insert(at, region(at, start, Access::Read, false));
            }
            v.insert(start, region(start, end, *access, *cow));
            at = end;
        }
        if at < range.end {
            v.insert(at, region(at, range.end, Access::Read, false));
        }
    }

    /// Remove the view holding `address` (every piece of it), as an unmap does. Returns
    /// the view's range, or `None` (and changes nothing) if no view holds `address`.
    pub fn remove(&self, address: usize) -> Option<Range<usize>> {
        let mut v = self.views.lock();
        let base = v.range(..=address).next_back().filter(|(_, f)| address < f.end)?.1.allocation_base;
        let pieces: Vec<(usize, usize)> =
            v.range(base..).take_while(|(_, f)| f.allocation_base == base).map(|(&s, f)| (s, f.end)).collect();
        for (s, _) in &pieces {
            v.remove(s);
        }
        Some(base..pieces.last().map_or(base, |&(_, e)| e))
    }

    fn overlap(&self, range: &Range<usize>) -> Option<ForeignRegion> {
        self.views.lock().range(..range.end).rev().find(|(_, f)| f.end > range.start).map(|(_, f)| *f)
    }
}

impl Backend for Views {
    fn limits(&self) -> Limits {
        self.sim.limits()
    }
    fn reserve(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        if let Some(f) = self.overlap(&range) {
            return Err(BackendError::Occupied { start: f.start, end: f.end });
        }
        self.sim.reserve(range, opts)
    }
    fn release(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        self.sim.release(range, opts)
    }
    fn set_access(&self, range: Range<usize>, from: Access, to: Access) -> Result<(), BackendError> {
        self.sim.set_access(range, from, to)
    }
    fn discard(&self, range: Range<usize>) {
        self.sim.discard(range)
    }
    fn reset(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.sim.reset(range)
    }
    fn reset_undo(&self, range: Range<usize>) -> Result<bool, BackendError> {
        self.sim.reset_undo(range)
    }
    fn lock(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.sim.lock(range)
    }
    fn unlock(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.sim.unlock(range)
    }
    fn read(&self, address: usize, buf: &mut [u8]) -> Result<(), BackendError> {
        if self.overlap(&(address..address + buf.len().max(1))).is_some() {
            // View contents are not part of a trace: they read as zero.
            buf.fill(0);
            return Ok(());
        }
        self.sim.read(address, buf)
    }
    fn write(&self, address: usize, data: &[u8]) -> Result<(), BackendError> {
        if self.overlap(&(address..address + data.len().max(1))).is_some() {
            return Ok(());
        }
        self.sim.write(address, data)
    }
    fn dirty_pages(&self, range: Range<usize>, max: usize, reset: bool) -> Result<Vec<usize>, BackendError> {
        self.sim.dirty_pages(range, max, reset)
    }
    fn clear_dirty(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.sim.clear_dirty(range)
    }
    fn foreign(&self, address: usize, limit: usize) -> Option<ForeignRegion> {
        let v = self.views.lock();
        if let Some((_, f)) = v.range(..=address).next_back() {
            if f.end > address {
                return Some(*f);
            }
        }
        v.range(address.saturating_add(1)..limit.max(address.saturating_add(1))).next().map(|(_, f)| *f)
    }
}

/// An address space over [`Views`].
pub type ViewSpace = AddressSpace<Views>;
