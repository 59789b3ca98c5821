//! Shared fixture of the spec tests: a space over one backend plus a window of address
//! space that is free when the test starts, and helpers to look at a range.
//!
//! Every test written with [`backend_tests!`] runs once per backend. On the simulated
//! backend the window is a constant address; on Linux it is carved out of a large range
//! that was reserved and released once per test binary, so tests never assume that an
//! address picked out of thin air is free.
#![allow(dead_code)]

use std::ops::Range;
use std::sync::Arc;

use virtmem::{
    AllocationType, Error, FreeType, MemState, MemoryBasicInformation, Protection, SimConfig, SimSpace, VirtualSpace,
};

/// Page size.
pub const P: usize = 4096;
/// Allocation granularity.
pub const G: usize = 65536;
/// Size of the window each test may place fixed reservations in.
pub const WINDOW: usize = 64 << 20;

/// Which backend a fixture runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The simulated backend.
    Sim,
    /// The Linux backend (real memory).
    Linux,
}

/// A space and a free window inside it.
pub struct Fx {
    /// The space under test.
    pub space: Arc<dyn VirtualSpace>,
    /// Base of the window (64 KiB aligned); `[w, w + WINDOW)` is free at the start.
    pub w: usize,
    /// The backend.
    pub kind: Kind,
}

/// Base of the window on simulated spaces.
pub const SIM_WINDOW: usize = 0x1_0000_0000;

impl Fx {
    /// A fresh simulated space.
    pub fn sim() -> Fx {
        Fx::sim_with(SimConfig::default())
    }

    /// A fresh simulated space with `config`.
    pub fn sim_with(config: SimConfig) -> Fx {
        Fx { space: Arc::new(SimSpace::simulated_with(config)), w: SIM_WINDOW, kind: Kind::Sim }
    }

    /// A fresh Linux space over this process's real memory, confined to a window of
    /// its own: reservations at a NULL address land in the window, so tests running in
    /// parallel never take each other's addresses.
    #[cfg(all(target_os = "linux", not(miri)))]
    pub fn linux() -> Fx {
        Fx::linux_confined(false)
    }

    /// A fresh Linux space whose whole user range is a window of its own (its lowest and
    /// highest addresses are the window's), so that the top of the user range is free
    /// memory the test may use.
    #[cfg(all(target_os = "linux", not(miri)))]
    pub fn linux_whole_window() -> Fx {
        Fx::linux_confined(true)
    }

    /// A Linux space confined to a fresh window; `whole`: the window is its whole user
    /// range (see [`linux::Confined::new`]).
    #[cfg(all(target_os = "linux", not(miri)))]
    fn linux_confined(whole: bool) -> Fx {
        let w = linux::window(WINDOW);
        let backend = virtmem::LinuxBackend::new().expect("the Linux backend needs /proc");
        let space = virtmem::AddressSpace::with_backend(linux::Confined::new(backend, w..w + WINDOW, whole));
        Fx { space: Arc::new(space), w, kind: Kind::Linux }
    }

    /// This fixture's backend in a space whose top of the user range is free: the
    /// simulated space itself, or on Linux [`Fx::linux_whole_window`] (`own` keeps it).
    pub fn with_free_top<'a>(&'a self, own: &'a mut Option<Fx>) -> &'a Fx {
        #[cfg(all(target_os = "linux", not(miri)))]
        if self.kind == Kind::Linux {
            return own.insert(Fx::linux_whole_window());
        }
        let _ = own;
        self
    }

    /// `VirtualAlloc` with typed flags from raw values.
    pub fn alloc(&self, address: usize, size: usize, ty: u32, protect: u32) -> Result<usize, Error> {
        self.space.alloc(address, size, AllocationType::from_bits_retain(ty), Protection::from_bits_retain(protect))
    }

    /// `VirtualFree` with a raw free type.
    pub fn free(&self, address: usize, size: usize, ty: u32) -> Result<(), Error> {
        self.space.free(address, size, FreeType::from_bits_retain(ty))
    }

    /// `VirtualProtect` with a raw protection; returns the raw old protection.
    pub fn protect(&self, address: usize, size: usize, protect: u32) -> Result<u32, Error> {
        self.space.protect(address, size, Protection::from_bits_retain(protect)).map(|p| p.bits())
    }

    /// Reserve `size` bytes at window offset `off` (must succeed).
    pub fn reserve(&self, off: usize, size: usize, protect: u32) -> usize {
        let a = self.w + off;
        let got = self.alloc(a, size, MEM_RESERVE, protect).unwrap_or_else(|e| panic!("reserve {a:#x}+{size:#x}: {e}"));
        assert_eq!(got, a & !(G - 1));
        got
    }

    /// Reserve and commit `size` bytes at window offset `off` (must succeed).
    pub fn reserve_commit(&self, off: usize, size: usize, protect: u32) -> usize {
        let a = self.w + off;
        let got = self
            .alloc(a, size, MEM_RESERVE | MEM_COMMIT, protect)
            .unwrap_or_else(|e| panic!("reserve+commit {a:#x}+{size:#x}: {e}"));
        assert_eq!(got, a & !(G - 1));
        got
    }

    /// Commit `[address, address + size)` (must succeed).
    pub fn commit(&self, address: usize, size: usize, protect: u32) -> usize {
        self.alloc(address, size, MEM_COMMIT, protect).unwrap_or_else(|e| panic!("commit {address:#x}+{size:#x}: {e}"))
    }

    /// `VirtualQuery` (must succeed).
    pub fn q(&self, address: usize) -> MemoryBasicInformation {
        self.space.query(address).unwrap_or_else(|e| panic!("query {address:#x}: {e}"))
    }

    /// The `VirtualQuery` walk of `range`: each region as reported, the last one clipped to the range.
    pub fn walk(&self, range: Range<usize>) -> Vec<MemoryBasicInformation> {
        walk(&*self.space, range)
    }

    /// The walk of the whole window.
    pub fn walk_window(&self) -> Vec<MemoryBasicInformation> {
        self.walk(self.w..self.w + WINDOW)
    }

    /// Everything observable about the window (see [`Snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        snapshot(&*self.space, self.w..self.w + WINDOW)
    }

    /// Read `len` bytes (must succeed).
    pub fn read_vec(&self, address: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.space.read(address, &mut v).unwrap_or_else(|e| panic!("read {address:#x}+{len:#x}: {e}"));
        v
    }

    /// Write `data` (must succeed).
    pub fn write(&self, address: usize, data: &[u8]) {
        self.space.write(address, data).unwrap_or_else(|e| panic!("write {address:#x}+{:#x}: {e}", data.len()))
    }
}

impl Drop for Fx {
    /// Release whatever the test left in its window (real mappings on Linux).
    fn drop(&mut self) {
        release_all(&*self.space, self.w..self.w + WINDOW);
    }
}

/// Release every reservation whose base lies in `range` (best effort: used to clean up).
pub fn release_all(space: &dyn VirtualSpace, range: Range<usize>) {
    let mut a = range.start;
    while a < range.end {
        let Ok(m) = space.query(a) else { break };
        if m.state != MemState::Free && m.allocation_base >= range.start && m.allocation_base == m.base_address {
            let _ = space.free(m.allocation_base, 0, FreeType::RELEASE);
        }
        if m.region_size == 0 {
            break;
        }
        a = m.base_address + m.region_size;
    }
}

/// The Win32 error code of a result (0 for success).
pub fn code<T>(r: &Result<T, Error>) -> u32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.code(),
    }
}

/// The `VirtualQuery` walk of `range` on any space; the last region is clipped to the range.
pub fn walk(space: &dyn VirtualSpace, range: Range<usize>) -> Vec<MemoryBasicInformation> {
    let mut out = Vec::new();
    let mut a = range.start;
    while a < range.end {
        let mut m = space.query(a).unwrap_or_else(|e| panic!("query {a:#x} during a walk: {e}"));
        assert_eq!(m.base_address, a & !(P - 1), "BaseAddress of query {a:#x}");
        assert!(m.region_size > 0 && m.region_size % P == 0, "RegionSize {:#x} at {a:#x}", m.region_size);
        let end = m.base_address + m.region_size;
        if end > range.end {
            m.region_size = range.end - m.base_address;
        }
        a = m.base_address + m.region_size;
        out.push(m);
    }
    out
}

/// What a failed call must leave untouched: the query walk of a range, the space's
/// totals and the bytes of every page that can be read without side effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The walk.
    pub regions: Vec<MemoryBasicInformation>,
    /// Committed bytes of the space.
    pub committed: usize,
    /// Reserved bytes of the space.
    pub reserved: usize,
    /// `(page, hash of its bytes)` of every committed page that can be read or executed
    /// without tripping a guard.
    pub contents: Vec<(usize, u64)>,
}

/// A cheap content hash (FNV-1a).
pub fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// See [`Snapshot`].
pub fn snapshot(space: &dyn VirtualSpace, range: Range<usize>) -> Snapshot {
    let regions = walk(space, range);
    let mut contents = Vec::new();
    let mut buf = vec![0u8; P];
    for m in &regions {
        if m.state != MemState::Commit || m.protect.contains(Protection::GUARD) {
            continue;
        }
        for page in (m.base_address..m.base_address + m.region_size).step_by(P) {
            let r = if m.protect.can_read() {
                space.read(page, &mut buf)
            } else if m.protect.can_execute() {
                space.execute(page, &mut buf)
            } else {
                continue;
            };
            r.unwrap_or_else(|e| panic!("snapshot read of {page:#x} ({:?}): {e}", m.protect));
            contents.push((page, hash(&buf)));
        }
    }
    Snapshot { regions, committed: space.committed_bytes(), reserved: space.reserved_bytes(), contents }
}

/// Assert that the totals of `space` equal the sums of a walk of `range` (which must
/// hold every reservation of the space).
pub fn assert_totals_match_walk(space: &dyn VirtualSpace, range: Range<usize>) {
    let regions = walk(space, range);
    let committed: usize = regions.iter().filter(|m| m.state == MemState::Commit).map(|m| m.region_size).sum();
    let reserved: usize = regions.iter().filter(|m| m.state != MemState::Free).map(|m| m.region_size).sum();
    assert_eq!(space.committed_bytes(), committed, "committed total vs walk");
    assert_eq!(space.reserved_bytes(), reserved, "reserved total vs walk");
}

pub const MEM_COMMIT: u32 = 0x1000;
pub const MEM_RESERVE: u32 = 0x2000;
pub const MEM_DECOMMIT: u32 = 0x4000;
pub const MEM_RELEASE: u32 = 0x8000;
pub const MEM_FREE: u32 = 0x1_0000;
pub const MEM_PRIVATE: u32 = 0x2_0000;
pub const MEM_RESET: u32 = 0x8_0000;
pub const MEM_TOP_DOWN: u32 = 0x10_0000;
pub const MEM_WRITE_WATCH: u32 = 0x20_0000;
pub const MEM_PHYSICAL: u32 = 0x40_0000;
pub const MEM_RESET_UNDO: u32 = 0x100_0000;
pub const MEM_LARGE_PAGES: u32 = 0x2000_0000;
pub const AT_ROUND_TO_PAGE: u32 = 0x4000_0000;
pub const PAGE_NOACCESS: u32 = 0x01;
pub const PAGE_READONLY: u32 = 0x02;
pub const PAGE_READWRITE: u32 = 0x04;
pub const PAGE_WRITECOPY: u32 = 0x08;
pub const PAGE_EXECUTE: u32 = 0x10;
pub const PAGE_EXECUTE_READ: u32 = 0x20;
pub const PAGE_EXECUTE_READWRITE: u32 = 0x40;
pub const PAGE_EXECUTE_WRITECOPY: u32 = 0x80;
pub const PAGE_GUARD: u32 = 0x100;
pub const PAGE_NOCACHE: u32 = 0x200;
pub const PAGE_WRITECOMBINE: u32 = 0x400;

/// The six base protections valid for private memory.
pub const BASES: [u32; 6] =
    [PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE, PAGE_EXECUTE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE];

/// Every protection value `VirtualAlloc` / `VirtualProtect` accept.
pub fn valid_protections() -> Vec<u32> {
    let mut v = BASES.to_vec();
    for b in &BASES[1..] {
        for m in [PAGE_GUARD, PAGE_NOCACHE, PAGE_WRITECOMBINE] {
            v.push(b | m);
        }
    }
    v
}

/// Protection values both calls reject with 87, one per kind of mistake.
pub const BAD_PROTECTIONS: [u32; 17] = [
    0,                                                 // nothing
    PAGE_READONLY | PAGE_READWRITE,                    // two base bits
    PAGE_NOACCESS | PAGE_EXECUTE,                      // two base bits
    PAGE_WRITECOPY,                                    // copy-on-write on private memory
    PAGE_EXECUTE_WRITECOPY,                            // copy-on-write on private memory
    PAGE_WRITECOPY | PAGE_GUARD,                       // copy-on-write with a modifier
    PAGE_NOACCESS | PAGE_GUARD,                        // NOACCESS with a modifier
    PAGE_NOACCESS | PAGE_NOCACHE,                      // NOACCESS with a modifier
    PAGE_NOACCESS | PAGE_WRITECOMBINE,                 // NOACCESS with a modifier
    PAGE_GUARD,                                        // a modifier alone
    PAGE_NOCACHE,                                      // a modifier alone
    PAGE_READWRITE | PAGE_GUARD | PAGE_NOCACHE,        // two modifiers
    PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE, // two modifiers
    PAGE_READWRITE | 0x800,                            // unknown bit
    PAGE_READWRITE | 0x8000_0000,                      // unknown bit
    0xFF,                                              // every base bit
    0x03,                                              // NOACCESS | READONLY
];

#[cfg(all(target_os = "linux", not(miri)))]
#[path = "../linux_util/mod.rs"]
pub mod linux_util;

#[macro_use]
#[path = "../forward/mod.rs"]
pub mod forward;

/// Linux helpers: windows of address space that are free, and a backend confined to one.
#[cfg(all(target_os = "linux", not(miri)))]
pub mod linux {
    use std::ops::Range;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    use virtmem::backend::{Backend, BackendError, ForeignRegion, Limits, ReserveOptions};
    use virtmem::{AllocationType, FreeType, LinuxOptions, LinuxSpace, Protection};

    /// The arena windows are cut from.
    const ARENA: usize = 1 << 40;

    /// A window of `size` bytes (2 MiB aligned) that nothing maps: cut from a 1 TiB
    /// arena that was reserved and released once per process, each window handed out
    /// once, so tests never assume that an address picked out of thin air is free.
    ///
    /// The arena lies where nothing else of the process goes by itself (see [`arena`]),
    /// so that the tests of a binary that also make unconfined spaces (placing
    /// reservations bottom-up, from the lowest free address) or map memory without an
    /// address (the kernel places it top-down, under the stack) never take a window's
    /// addresses meanwhile.
    pub fn window(size: usize) -> usize {
        static BASE: OnceLock<usize> = OnceLock::new();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let base = *BASE.get_or_init(arena);
        let size = (size + (2 << 20) - 1) & !((2 << 20) - 1);
        let off = NEXT.fetch_add(size, Ordering::SeqCst);
        assert!(off + size <= ARENA, "the window arena is exhausted");
        base + off
    }

    /// Where the arena lies: the first free [`ARENA`]-aligned range from an eighth of
    /// the user address space up (15 TiB of 128 TiB on x86-64), far above the low
    /// addresses where reservations at no address go (bottom-up: they would need to
    /// fill terabytes first), far below the libraries, the kernel's placements without
    /// an address and top-down reservations (all near the top), and away from the
    /// program's image and its break (low, or near 85 TiB for a PIE on x86-64). A user
    /// address space under 4 TiB has no room for it: the tests that need windows panic.
    fn arena() -> usize {
        let probe = LinuxSpace::linux_with(LinuxOptions { pool_bytes: 0, guard_regions: false })
            .expect("the Linux backend needs /proc");
        let top = probe.system_info().maximum_application_address + 1;
        let first = ((top / 8) & !(ARENA - 1)).max(ARENA);
        let at = (0..8)
            .map(|k| first + k * ARENA)
            .take_while(|&a| a + ARENA <= top / 2)
            .find(|&a| probe.alloc(a, ARENA, AllocationType::RESERVE, Protection::NOACCESS) == Ok(a))
            .expect("a free range for the window arena in the middle of the address space");
        probe.free(at, 0, FreeType::RELEASE).expect("release the window arena");
        at
    }

    /// A fresh Linux space over this process's real memory that places reservations only
    /// in a window of its own of `size` bytes (see [`window`]), so that tests running in
    /// parallel in one process never take each other's addresses, nor the addresses a
    /// test expects to find free.
    pub fn space(size: usize) -> virtmem::AddressSpace<Confined<virtmem::LinuxBackend>> {
        let w = window(size);
        let backend = virtmem::LinuxBackend::new().expect("the Linux backend needs /proc");
        virtmem::AddressSpace::with_backend(Confined::new(backend, w..w + size, false))
    }

    /// A backend confined to `window`: the engine may place reservations only there
    /// (everything else is blocked), and sees no foreign memory outside it. With
    /// `limits`, the window is also the whole address space (lowest and highest address).
    pub struct Confined<B> {
        inner: B,
        window: Range<usize>,
        limits: bool,
    }

    impl<B: Backend> Confined<B> {
        /// Confine `inner` to `window`.
        pub fn new(inner: B, window: Range<usize>, limits: bool) -> Confined<B> {
            Confined { inner, window, limits }
        }

        /// The confined backend.
        pub fn inner(&self) -> &B {
            &self.inner
        }
    }

    impl<B: Backend> Backend for Confined<B> {
        fn limits(&self) -> Limits {
            let l = self.inner.limits();
            if self.limits {
                Limits { min_address: self.window.start, end_address: self.window.end, ..l }
            } else {
                l
            }
        }
        fn initial_blocked(&self) -> Vec<Range<usize>> {
            let l = self.inner.limits();
            vec![0..self.window.start, self.window.end..l.end_address.max(self.window.end)]
        }
        fn reserve(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
            self.inner.reserve(range, opts)
        }
        // Every method the backend may override is forwarded, so that the tests run the
        // code a user's space runs (the Linux backend's own release of committed memory
        // goes to its pool with guard markers; the trait's default does not).
        forward!(inner: release, release_committed, set_access, inline_effects, discard, decommit, reset, reset_undo);
        forward!(inner: lock, unlock, read, write, dirty_pages, clear_dirty);
        forward!(inner: keeps_grants, grant, try_read, try_write);
        fn cheap_range(&self, size: usize, align: usize, opts: ReserveOptions) -> Option<usize> {
            // (The backend's pooled ranges are released reservations of this window.)
            self.inner.cheap_range(size, align, opts).filter(|&b| self.window.start <= b && b + size <= self.window.end)
        }
        fn foreign(&self, address: usize, limit: usize) -> Option<ForeignRegion> {
            // Other tests' memory is none of this space's business: only look inside
            // the window (where nothing foreign should ever appear).
            let (a, l) = (address.max(self.window.start), limit.min(self.window.end));
            if a >= l {
                return None;
            }
            self.inner.foreign(a, l)
        }
    }

    /// Whether the kernel lets this process read the byte at `address` (a copy with
    /// `process_vm_readv`, which fails instead of faulting; guard markers count).
    pub fn readable(address: usize) -> bool {
        let mut byte = 0u8;
        let local = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
        let remote = libc::iovec { iov_base: address as *mut libc::c_void, iov_len: 1 };
        // SAFETY: the local iovec covers one writable byte; the kernel checks the remote one.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        n == 1
    }

    /// The kernel's mappings inside `range` as (start, end, "rwxp"), clipped to the range,
    /// adjacent entries with equal permissions merged (the kernel may or may not merge
    /// them; what the CPU allows is what counts).
    pub fn mappings(range: Range<usize>) -> Vec<(usize, usize, String)> {
        // /proc/self/maps is read in pieces, so a mapping made by another thread
        // meanwhile can show a line twice or miss one: read until two reads agree.
        let mut last = super::linux_util::mappings(range.clone());
        loop {
            let now = super::linux_util::mappings(range.clone());
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

/// Generate one `#[test]` per backend for each function `fn name(fx: &Fx) { .. }`.
#[macro_export]
macro_rules! backend_tests {
    ($($(#[$meta:meta])* fn $name:ident($fx:ident : &Fx) $body:block)*) => {
        $( $(#[$meta])* fn $name($fx: &$crate::common::Fx) $body )*

        mod sim {
            $( #[test] fn $name() { super::$name(&$crate::common::Fx::sim()) } )*
        }

        #[cfg(all(target_os = "linux", not(miri)))]
        mod linux {
            $( #[test] fn $name() { super::$name(&$crate::common::Fx::linux()) } )*
        }
    };
}
