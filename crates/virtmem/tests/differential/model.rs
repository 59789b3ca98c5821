//! A deliberately naive reference model of the Win32 virtual-memory spec, written only
//! for the differential test and sharing no code with the engine: one record per page of
//! a small window of address space, every rule applied page by page, every search a
//! linear scan. It is slow and obvious on purpose.
//!
//! The window `[w, top)` is the whole address space the model knows: the lowest address
//! a reservation may use is `w` and the highest user address is `top - 1`.

use virtmem::{AccessKind, Error, MemState, MemType, MemoryBasicInformation, Protection};

pub const P: usize = 4096;
pub const G: usize = 65536;

const MEM_COMMIT: u32 = 0x1000;
const MEM_RESERVE: u32 = 0x2000;
const MEM_DECOMMIT: u32 = 0x4000;
const MEM_RELEASE: u32 = 0x8000;
const MEM_RESET: u32 = 0x8_0000;
const MEM_TOP_DOWN: u32 = 0x10_0000;
const MEM_WRITE_WATCH: u32 = 0x20_0000;
const MEM_PHYSICAL: u32 = 0x40_0000;
const MEM_RESET_UNDO: u32 = 0x100_0000;
const MEM_LARGE_PAGES: u32 = 0x2000_0000;
const PAGE_NOACCESS: u32 = 0x01;
const PAGE_READWRITE: u32 = 0x04;
const PAGE_GUARD: u32 = 0x100;
const PAGE_NOCACHE: u32 = 0x200;
const PAGE_WRITECOMBINE: u32 = 0x400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum St {
    Free,
    Reserved,
    Committed,
}

/// Everything about one page.
#[derive(Debug, Clone)]
pub struct Page {
    pub st: St,
    /// The page protection while committed (GUARD included while armed).
    pub prot: u32,
    /// The allocation the page belongs to (0: none) and its attributes.
    pub base: usize,
    pub aprot: u32,
    pub ww: bool,
    pub phys: bool,
    /// Contents (None: zeros).
    pub data: Option<Box<[u8; P]>>,
    /// After a MEM_RESET, the contents the page would have if the OS dropped it then:
    /// `Some(None)` zeros, `Some(Some(..))` zeros plus later writes.
    pub alt: Option<Option<Box<[u8; P]>>>,
    pub dirty: bool,
    pub locked: bool,
}

impl Page {
    fn free() -> Page {
        Page {
            st: St::Free,
            prot: 0,
            base: 0,
            aprot: 0,
            ww: false,
            phys: false,
            data: None,
            alt: None,
            dirty: false,
            locked: false,
        }
    }
}

/// What a read returns: the bytes if nothing was dropped by a reset, and the bytes if
/// every page that a reset offered was dropped (per page, an implementation may give
/// either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOut {
    pub kept: Vec<u8>,
    pub dropped: Vec<u8>,
}

#[derive(Clone)]
pub struct Model {
    pub w: usize,
    pub top: usize,
    pub lp: usize,
    pub pages: Vec<Page>,
    pub limit: Option<usize>,
}

fn valid_protect(p: u32) -> bool {
    let base = p & 0xFF;
    let mods = p & !0xFF;
    let one_base = [0x01, 0x02, 0x04, 0x10, 0x20, 0x40].contains(&base);
    let mods_ok = [0, PAGE_GUARD, PAGE_NOCACHE, PAGE_WRITECOMBINE].contains(&mods);
    one_base && mods_ok && !(base == PAGE_NOACCESS && mods != 0)
}

fn can(p: u32, kind: AccessKind) -> bool {
    let base = p & 0xFF;
    match kind {
        AccessKind::Read => [0x02, 0x04, 0x10, 0x20, 0x40].contains(&base),
        AccessKind::Write => [0x04, 0x40].contains(&base),
        AccessKind::Execute => [0x10, 0x20, 0x40].contains(&base),
    }
}

enum Kind {
    Reset,
    ResetUndo,
    Alloc,
}

fn alloc_kind(ty: u32) -> Option<Kind> {
    if ty == MEM_RESET {
        return Some(Kind::Reset);
    }
    if ty == MEM_RESET_UNDO {
        return Some(Kind::ResetUndo);
    }
    if ty == MEM_PHYSICAL | MEM_RESERVE {
        return Some(Kind::Alloc);
    }
    let core = ty & (MEM_RESERVE | MEM_COMMIT);
    let extra = ty & !(MEM_RESERVE | MEM_COMMIT);
    if core == 0 || extra & !(MEM_TOP_DOWN | MEM_LARGE_PAGES | MEM_WRITE_WATCH) != 0 {
        return None;
    }
    if extra & MEM_WRITE_WATCH != 0 && core & MEM_RESERVE == 0 {
        return None;
    }
    Some(Kind::Alloc)
}

fn down(x: usize, a: usize) -> usize {
    x / a * a
}

fn up(x: usize, a: usize) -> Option<usize> {
    Some(x.checked_add(a - 1)? / a * a)
}

/// The pages touched by `[a, a + n)`, or None when it wraps.
fn touched(a: usize, n: usize) -> Option<(usize, usize)> {
    Some((down(a, P), up(a.checked_add(n)?, P)?))
}

impl Model {
    pub fn new(w: usize, top: usize, lp: usize) -> Model {
        Model { w, top, lp, pages: vec![Page::free(); (top - w) / P], limit: None }
    }

    fn idx(&self, a: usize) -> Option<usize> {
        (a >= self.w && a < self.top).then(|| (a - self.w) / P)
    }

    fn page(&self, a: usize) -> Option<&Page> {
        self.idx(a).map(|i| &self.pages[i])
    }

    /// The allocation containing `a`.
    fn alloc_at(&self, a: usize) -> Option<usize> {
        self.page(a).map(|p| p.base).filter(|&b| b != 0)
    }

    /// One past the last page of the allocation at `base`.
    fn alloc_end(&self, base: usize) -> usize {
        let mut a = base;
        while self.page(a).is_some_and(|p| p.base == base) {
            a += P;
        }
        a
    }

    fn pages_mut(&mut self, from: usize, to: usize) -> impl Iterator<Item = &mut Page> {
        let (i, j) = ((from - self.w) / P, (to - self.w) / P);
        self.pages[i..j].iter_mut()
    }

    fn pages_in(&self, from: usize, to: usize) -> impl Iterator<Item = &Page> {
        let (i, j) = ((from - self.w) / P, (to - self.w) / P);
        self.pages[i..j].iter()
    }

    pub fn committed(&self) -> usize {
        self.pages.iter().filter(|p| p.st == St::Committed).count() * P
    }

    pub fn reserved(&self) -> usize {
        self.pages.iter().filter(|p| p.base != 0).count() * P
    }

    /// Whether `[from, to)` lies inside the window and no page of it belongs to anyone.
    fn all_free(&self, from: usize, to: usize) -> bool {
        from >= self.w && to <= self.top && from < to && self.pages_in(from, to).all(|p| p.base == 0)
    }

    /// `[from, to)` inside one allocation: its base.
    fn one_alloc(&self, from: usize, to: usize) -> Option<usize> {
        let b = self.alloc_at(from)?;
        (to <= self.alloc_end(b)).then_some(b)
    }

    /// The protection a page gets when `p` is applied in an allocation made with `aprot`.
    fn effective(p: u32, aprot: u32) -> u32 {
        if aprot & PAGE_NOCACHE != 0 {
            // (NOCACHE stays on every change; WRITECOMBINE cannot go with it.)
            (p & !PAGE_WRITECOMBINE) | PAGE_NOCACHE
        } else {
            p & !PAGE_NOCACHE
        }
    }

    // ---------------------------------------------------------------- VirtualAlloc

    pub fn alloc(&mut self, address: usize, size: usize, ty: u32, prot: u32) -> Result<usize, Error> {
        use Error::*;
        if size == 0 {
            return Err(InvalidParameter);
        }
        let kind = alloc_kind(ty).ok_or(InvalidParameter)?;
        if !valid_protect(prot) {
            return Err(InvalidParameter);
        }
        // An AWE reservation is read-write only.
        if ty & MEM_PHYSICAL != 0 && prot != PAGE_READWRITE {
            return Err(InvalidParameter);
        }
        let span = |address: usize| -> Result<(usize, usize), Error> {
            // Below the space's lowest address (the window's start, which every subject
            // reports as its lowest; 0x10000 in a default space) or past its top: 87.
            if address < self.w.max(0x10000) {
                return Err(InvalidParameter);
            }
            let end = address.checked_add(size).ok_or(InvalidParameter)?;
            if end > self.top {
                return Err(InvalidParameter);
            }
            touched(address, size).ok_or(InvalidParameter)
        };
        match kind {
            Kind::Reset | Kind::ResetUndo => {
                let (from, to) = span(address)?;
                self.one_alloc(from, to).ok_or(InvalidAddress)?;
                // MEM_RESET offers committed contents to the OS; MEM_RESET_UNDO's outcome
                // is applied by the caller (`undo_succeeded`), since an implementation may
                // report lost data. Both return the page-rounded address (Windows).
                if matches!(kind, Kind::Reset) {
                    for p in self.pages_mut(from, to) {
                        if p.st == St::Committed {
                            p.alt = Some(None);
                        }
                    }
                }
                Ok(from)
            }
            Kind::Alloc => {
                let reserve = ty & MEM_RESERVE != 0;
                let commit = ty & MEM_COMMIT != 0;
                let large = ty & MEM_LARGE_PAGES != 0;
                if size > self.top - self.w {
                    return Err(InvalidParameter);
                }
                if address != 0 && !reserve {
                    let (from, to) = span(address)?;
                    if large {
                        return Err(InvalidParameter);
                    }
                    return self.commit(from, to, prot);
                }
                let (fixed, len) = if address == 0 {
                    (None, up(size, P).ok_or(InvalidParameter)?)
                } else {
                    let (_, to) = span(address)?;
                    let base = down(address, G);
                    (Some(base), to - base)
                };
                if large {
                    if !(reserve && commit) {
                        return Err(InvalidParameter);
                    }
                    // Misaligned arguments are 87 even without large pages (checked
                    // against the architecture's 2 MiB then); only then 1450.
                    let lp = if self.lp == 0 { 2 << 20 } else { self.lp };
                    // (The caller's size itself, not its page rounding.)
                    if size % lp != 0 || len % lp != 0 || address % lp != 0 {
                        return Err(InvalidParameter);
                    }
                    if self.lp == 0 {
                        return Err(NoSystemResources);
                    }
                }
                let claim = up(len, G).ok_or(InvalidParameter)?;
                let base = match fixed {
                    Some(b) => {
                        if !self.all_free(b, b + claim) {
                            return Err(InvalidAddress);
                        }
                        b
                    }
                    None => {
                        let align = if large { self.lp.max(G) } else { G };
                        let mut fits = (self.w..self.top)
                            .step_by(G)
                            .filter(|b| b % align == 0 && b + claim <= self.top && self.all_free(*b, b + claim));
                        let found = if ty & MEM_TOP_DOWN != 0 { fits.next_back() } else { fits.next() };
                        found.ok_or(NotEnoughMemory)?
                    }
                };
                let charge = if commit { len } else { 0 };
                if let Some(limit) = self.limit {
                    if charge > 0 && self.committed() + charge > limit {
                        return Err(CommitmentLimit);
                    }
                }
                let phys = ty & MEM_PHYSICAL != 0;
                let ww = ty & MEM_WRITE_WATCH != 0;
                for p in self.pages_mut(base, base + len) {
                    *p = Page::free();
                    p.base = base;
                    p.aprot = prot;
                    p.ww = ww;
                    p.phys = phys;
                    if commit {
                        p.st = St::Committed;
                        p.prot = prot;
                    } else {
                        p.st = St::Reserved;
                    }
                }
                Ok(base)
            }
        }
    }

    fn commit(&mut self, from: usize, to: usize, prot: u32) -> Result<usize, Error> {
        let base = self.one_alloc(from, to).ok_or(Error::InvalidAddress)?;
        let first = self.page(base).expect("allocation inside the window").clone();
        if first.phys {
            return Err(Error::InvalidParameter);
        }
        let new = self.pages_in(from, to).filter(|p| p.st != St::Committed).count() * P;
        if let Some(limit) = self.limit {
            if new > 0 && self.committed() + new > limit {
                return Err(Error::CommitmentLimit);
            }
        }
        let eff = Self::effective(prot, first.aprot);
        for p in self.pages_mut(from, to) {
            if p.st != St::Committed {
                p.data = None;
                p.alt = None;
                p.dirty = false;
            }
            p.st = St::Committed;
            p.prot = eff;
        }
        Ok(from)
    }

    /// MEM_RESET_UNDO of `[address, address + size)` succeeded: the data survived.
    pub fn undo_succeeded(&mut self, address: usize, size: usize) {
        let (from, to) = touched(address, size).expect("a successful call");
        for p in self.pages_mut(from, to) {
            p.alt = None;
        }
    }

    // ----------------------------------------------------------------- VirtualFree

    /// Whether `size` bytes at `address` reach past the top of the space (or wrap):
    /// `VirtualFree` and `VirtualProtect` then fail with 87 before looking for memory.
    fn past_top(&self, address: usize, size: usize) -> bool {
        address >= self.top || address.checked_add(size).map_or(true, |end| end > self.top)
    }

    pub fn free(&mut self, address: usize, size: usize, ty: u32) -> Result<(), Error> {
        use Error::*;
        if ty != MEM_DECOMMIT && ty != MEM_RELEASE {
            return Err(InvalidParameter);
        }
        if ty == MEM_RELEASE {
            if size != 0 || address == 0 || self.past_top(address, 0) {
                return Err(InvalidParameter);
            }
            let base = down(address, P);
            if self.alloc_at(base) != Some(base) {
                return Err(InvalidAddress);
            }
            let end = self.alloc_end(base);
            for p in self.pages_mut(base, end) {
                *p = Page::free();
            }
            return Ok(());
        }
        if address == 0 || self.past_top(address, size) {
            return Err(InvalidParameter);
        }
        let (from, to) = if size == 0 {
            let base = down(address, P);
            if self.alloc_at(base) != Some(base) {
                return Err(InvalidAddress);
            }
            (base, self.alloc_end(base))
        } else {
            let (from, to) = touched(address, size).ok_or(InvalidParameter)?;
            let base = self.alloc_at(from).ok_or(InvalidAddress)?;
            if to > self.alloc_end(base) {
                return Err(InvalidParameter);
            }
            (from, to)
        };
        for p in self.pages_mut(from, to) {
            p.st = St::Reserved;
            p.prot = 0;
            p.data = None;
            p.alt = None;
            p.dirty = false;
            p.locked = false;
        }
        Ok(())
    }

    // -------------------------------------------------------------- VirtualProtect

    pub fn protect(&mut self, address: usize, size: usize, prot: u32) -> Result<u32, (Error, Option<u32>)> {
        use Error::*;
        if !valid_protect(prot) || size == 0 || self.past_top(address, size) {
            return Err((InvalidParameter, None));
        }
        let (from, to) = touched(address, size).ok_or((InvalidParameter, None))?;
        let base = self.one_alloc(from, to).ok_or((InvalidAddress, None))?;
        if self.pages_in(from, to).any(|p| p.st != St::Committed) {
            return Err((InvalidAddress, Some(PAGE_NOACCESS)));
        }
        let old = self.page(from).expect("inside").prot;
        let eff = Self::effective(prot, self.page(base).expect("inside").aprot);
        for p in self.pages_mut(from, to) {
            p.prot = eff;
        }
        Ok(old)
    }

    // ---------------------------------------------------------------- VirtualQuery

    pub fn query(&self, address: usize) -> Result<MemoryBasicInformation, Error> {
        if address >= self.top {
            return Err(Error::InvalidParameter);
        }
        assert!(address >= self.w, "the model only knows its window");
        let page = down(address, P);
        let me = self.page(page).expect("inside");
        let same = |p: &Page| -> bool {
            if me.base == 0 {
                p.base == 0
            } else {
                p.base == me.base && p.st == me.st && p.prot == me.prot
            }
        };
        let mut end = page;
        while self.page(end).is_some_and(same) {
            end += P;
        }
        Ok(MemoryBasicInformation {
            base_address: page,
            allocation_base: me.base,
            allocation_protect: Protection::from_bits_retain(me.aprot),
            region_size: end - page,
            state: match me.st {
                St::Free => MemState::Free,
                St::Reserved => MemState::Reserve,
                St::Committed => MemState::Commit,
            },
            protect: Protection::from_bits_retain(match me.st {
                St::Free => PAGE_NOACCESS,
                St::Reserved => 0,
                St::Committed => me.prot,
            }),
            mem_type: (me.base != 0).then_some(MemType::Private),
        })
    }

    /// The VirtualQuery walk of the whole window.
    pub fn walk(&self) -> Vec<MemoryBasicInformation> {
        let mut out = Vec::new();
        let mut a = self.w;
        while a < self.top {
            let m = self.query(a).expect("inside");
            a += m.region_size;
            out.push(m);
        }
        out
    }

    // ------------------------------------------------------------ Checked accesses

    /// Check an access page by page in address order; an armed guard page is disarmed
    /// and reported.
    fn check(&mut self, address: usize, len: usize, kind: AccessKind) -> Result<(), Error> {
        let end = address.saturating_add(len);
        let mut a = address;
        while a < end {
            let Some(i) = self.idx(a) else {
                return Err(Error::AccessViolation { address: a, access: kind });
            };
            let p = &mut self.pages[i];
            if p.st != St::Committed {
                return Err(Error::AccessViolation { address: a, access: kind });
            }
            if p.prot & PAGE_GUARD != 0 {
                p.prot &= !PAGE_GUARD;
                return Err(Error::GuardPage { address: a, access: kind });
            }
            if !can(p.prot, kind) {
                return Err(Error::AccessViolation { address: a, access: kind });
            }
            a = down(a, P) + P;
        }
        Ok(())
    }

    pub fn read(&mut self, address: usize, len: usize, kind: AccessKind) -> Result<ReadOut, Error> {
        self.check(address, len, kind)?;
        let mut kept = Vec::with_capacity(len);
        let mut dropped = Vec::with_capacity(len);
        for a in address..address + len {
            let p = self.page(a).expect("checked");
            let off = a % P;
            let k = p.data.as_ref().map_or(0, |d| d[off]);
            kept.push(k);
            dropped.push(match &p.alt {
                None => k,
                Some(alt) => alt.as_ref().map_or(0, |d| d[off]),
            });
        }
        Ok(ReadOut { kept, dropped })
    }

    pub fn write(&mut self, address: usize, bytes: &[u8]) -> Result<(), Error> {
        self.check(address, bytes.len(), AccessKind::Write)?;
        for (k, &b) in bytes.iter().enumerate() {
            let a = address + k;
            let i = self.idx(a).expect("checked");
            let p = &mut self.pages[i];
            let off = a % P;
            p.data.get_or_insert_with(|| Box::new([0; P]))[off] = b;
            if let Some(alt) = &mut p.alt {
                alt.get_or_insert_with(|| Box::new([0; P]))[off] = b;
            }
            if p.ww {
                p.dirty = true;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ Write watch

    fn watched(&self, base: usize, size: usize) -> Result<(usize, usize), Error> {
        if size == 0 {
            return Err(Error::InvalidParameter);
        }
        let (from, to) = touched(base, size).ok_or(Error::InvalidParameter)?;
        let b = self.alloc_at(from).ok_or(Error::InvalidParameter)?;
        if !self.page(b).expect("inside").ww || to > self.alloc_end(b) {
            return Err(Error::InvalidParameter);
        }
        Ok((from, to))
    }

    pub fn get_write_watch(&mut self, flags: u32, base: usize, size: usize, max: usize) -> Result<Vec<usize>, Error> {
        if flags > 1 || max == 0 {
            return Err(Error::InvalidParameter);
        }
        let (from, to) = self.watched(base, size)?;
        let found: Vec<usize> =
            (from..to).step_by(P).filter(|&a| self.page(a).expect("inside").dirty).take(max).collect();
        if flags == 1 {
            for &a in &found {
                let i = self.idx(a).expect("inside");
                self.pages[i].dirty = false;
            }
        }
        Ok(found)
    }

    pub fn reset_write_watch(&mut self, base: usize, size: usize) -> Result<(), Error> {
        let (from, to) = self.watched(base, size)?;
        for p in self.pages_mut(from, to) {
            p.dirty = false;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ Page locks

    pub fn lock(&mut self, address: usize, size: usize, lock: bool) -> Result<(), Error> {
        if size == 0 {
            return Err(Error::InvalidParameter);
        }
        let (from, to) = touched(address, size).ok_or(Error::InvalidParameter)?;
        let refused = if lock { Error::NoAccess } else { Error::NotLocked };
        self.one_alloc(from, to).ok_or(refused)?;
        if lock {
            // Locking touches the pages in order, like a read: the first page that cannot
            // be touched fails the lock; an armed guard page is disarmed on the way.
            for a in (from..to).step_by(P) {
                let i = self.idx(a).expect("inside the allocation");
                let p = &mut self.pages[i];
                if p.st != St::Committed || p.prot & 0xFF == PAGE_NOACCESS {
                    return Err(Error::NoAccess);
                }
                if p.prot & PAGE_GUARD != 0 {
                    p.prot &= !PAGE_GUARD;
                    return Err(Error::GuardPage { address: a, access: AccessKind::Read });
                }
            }
        } else if self.pages_in(from, to).any(|p| !p.locked) {
            return Err(Error::NotLocked);
        }
        for p in self.pages_mut(from, to) {
            p.locked = lock;
        }
        Ok(())
    }

    // ---------------------------------------------------------- Test preconditions

    /// One past the last page of the allocation at `base`.
    pub fn allocation_end(&self, base: usize) -> usize {
        self.alloc_end(base)
    }

    /// The bases of every allocation.
    pub fn allocations(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.pages.iter().map(|p| p.base).filter(|&b| b != 0).collect();
        v.dedup();
        v
    }
}
