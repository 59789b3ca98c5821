//! Checked accesses: `read`, `write`, `execute`, `check` and `check_quiet`, checked against
//! the bookkeeping (armed guard pages reported and disarmed), and the grants that let a
//! block's next accesses skip the check.

use crate::backend::{Backend, BackendError, Grant, GRANT_PAGES};
use crate::error::{Error, Result};
use crate::flags::{AccessKind, Protection};
use crate::rules::{self, PAGE};
use crate::runs::{Book, PageState, Slot};

use super::{backend_error, AddressSpace};

/// What [`AddressSpace::check_access`] found.
enum Checked {
    /// The access is allowed; where the reservation holding its first byte was found, if
    /// one does (an access starting in foreign memory has none).
    Allowed(Option<Slot>),
    /// A reservation the access meets has an operation under way: wait, then check
    /// again.
    Busy,
}

impl<B: Backend> AddressSpace<B> {
    // ----- Checked accesses -----------------------------------------------------------

    /// Check that `len` bytes at `address` may be accessed as `kind`, in address order.
    /// An armed guard page is reported, and disarmed when `disarm` is set. Returns
    /// [`Checked::Allowed`] (with where the reservation holding `address` was found, for
    /// the grant that follows) or [`Checked::Busy`] when a busy reservation must be
    /// waited for.
    fn check_access(
        &self,
        book: &mut Book,
        address: usize,
        len: usize,
        kind: AccessKind,
        disarm: bool,
    ) -> Result<Checked> {
        // Nothing lies at or above the top of the user range (`end_address`): the walk
        // stops there, and an access reaching it (or wrapping past the last address)
        // faults at its first byte there once everything below has passed.
        let top = self.limits.end_address;
        let wraps = len > 0 && address.checked_add(len).is_none();
        let end = address.saturating_add(len);
        let stop = end.min(top);
        let mut a = address;
        let mut first = None;
        while a < stop {
            let at = match book.reservations.locate(a) {
                Ok(at) => at,
                Err(next) => {
                    let limit = next.unwrap_or(top).min(stop);
                    match self.backend.foreign(rules::round_down(a, PAGE), limit) {
                        Some(f) if f.start <= a && rules::access_allows(f.access, kind) => {
                            a = f.end.min(stop);
                            continue;
                        }
                        _ => return Err(Error::AccessViolation { address: a, access: kind }),
                    }
                }
            };
            if book.busy.contains(&at.base()) {
                return Ok(Checked::Busy);
            }
            if a == address {
                first = Some(at);
            }
            let res = book.reservations.at(at).expect("reservation");
            let page = rules::round_down(a, PAGE);
            let (run, st) = res.pages.get(page);
            match st {
                PageState::Reserved => return Err(Error::AccessViolation { address: a, access: kind }),
                PageState::Committed(p) if p.contains(Protection::GUARD) && !disarm => {
                    return Err(Error::GuardPage { address: a, access: kind });
                }
                PageState::Committed(p) if p.contains(Protection::GUARD) => {
                    self.disarm_guard(book, at, page, p);
                    return Err(Error::GuardPage { address: a, access: kind });
                }
                PageState::Committed(p) if !p.allows(kind) => {
                    return Err(Error::AccessViolation { address: a, access: kind })
                }
                PageState::Committed(_) => a = run.end.min(stop),
            }
        }
        if len > 0 && (wraps || end > top) {
            return Err(Error::AccessViolation { address: address.max(top), access: kind });
        }
        Ok(Checked::Allowed(first))
    }

    fn access(
        &self,
        address: usize,
        len: usize,
        kind: AccessKind,
        op: impl FnOnce(&B) -> std::result::Result<(), BackendError>,
    ) -> Result<()> {
        let mut book = self.book.lock();
        let first = loop {
            match self.check_access(&mut book, address, len, kind, true)? {
                Checked::Allowed(first) => break first,
                Checked::Busy => self.wait_idle(&mut book),
            }
        };
        op(&self.backend).map_err(|e| match e {
            BackendError::Fault(a) => Error::AccessViolation { address: a, access: kind },
            other => backend_error(other),
        })?;
        if let (true, Some(at)) = (self.backend.keeps_grants(), first) {
            self.grant_block(&book, at, address, len);
        }
        Ok(())
    }

    /// Hand the backend what the rules allow on each page of the 64 KiB block of an
    /// access just made (`len` bytes at `address`, inside one block), so that the
    /// block's next accesses need not come here: see [`Backend::grant`]. `at` is where
    /// the access's check found the reservation holding `address` (reached again without
    /// a second search: that search had cost an access through the engine ~170
    /// instructions). Nothing is granted for an access spanning blocks, outside any
    /// reservation, or in a reservation with an operation under way.
    fn grant_block(&self, book: &Book, at: Slot, address: usize, len: usize) {
        let base = rules::round_down(address, GRANT_PAGES * PAGE);
        if len == 0 || (address + (len - 1)) / (GRANT_PAGES * PAGE) != address / (GRANT_PAGES * PAGE) {
            return;
        }
        let Some(res) = book.reservations.at(at) else { return };
        if book.busy.contains(&res.base) {
            return;
        }
        let mut pages = [Grant::empty(); GRANT_PAGES];
        let mut a = base.max(res.base);
        let end = (base + GRANT_PAGES * PAGE).min(res.end);
        while a < end {
            let (run, st) = res.pages.get(a);
            let grant = match st {
                PageState::Committed(p) if !p.contains(Protection::GUARD) => {
                    let mut g = Grant::empty();
                    g.set(Grant::READ, p.allows(AccessKind::Read));
                    g.set(Grant::WRITE, p.allows(AccessKind::Write));
                    g.set(Grant::EXECUTE, p.allows(AccessKind::Execute));
                    g
                }
                _ => Grant::empty(),
            };
            let to = run.end.min(end);
            pages[(a - base) / PAGE..(to - base) / PAGE].fill(grant);
            a = to;
        }
        self.backend.grant(base, &pages);
    }

    /// Check that `len` bytes at `address` may be accessed as `kind`, without copying a
    /// byte: `Ok`, or the error [`read`](Self::read), [`write`](Self::write) or
    /// [`execute`](Self::execute) of the whole range would give (the first faulting
    /// address; an armed guard page met is disarmed and reported, as the access would do).
    /// Lets a caller check a large range first and then copy it in bounded pieces.
    pub fn check(&self, address: usize, len: usize, kind: AccessKind) -> Result<()> {
        self.check_waiting(address, len, kind, true)
    }

    /// [`check`](Self::check) without its side effect: the same answer, but an armed guard
    /// page met is reported and stays armed. Lets a caller find out whether the access
    /// would disarm a guard page, and check its own side of a copy first.
    pub fn check_quiet(&self, address: usize, len: usize, kind: AccessKind) -> Result<()> {
        self.check_waiting(address, len, kind, false)
    }

    /// [`AddressSpace::check_access`] under the space's lock, waiting out busy
    /// reservations.
    fn check_waiting(&self, address: usize, len: usize, kind: AccessKind, disarm: bool) -> Result<()> {
        let mut book = self.book.lock();
        while let Checked::Busy = self.check_access(&mut book, address, len, kind, disarm)? {
            self.wait_idle(&mut book);
        }
        Ok(())
    }

    /// Read `buf.len()` bytes at `address`, checked like a CPU load on Windows x64: a
    /// free, reserved or no-access page is an access violation (a `PAGE_EXECUTE` page may
    /// be read); an armed guard page raises the guard-page error once. Nothing is read
    /// unless every byte may be. On real memory (the Linux backend) the bytes are then
    /// copied with `process_vm_readv` on this process, so the read fails instead of
    /// crashing where a pointer load would be a `SIGSEGV`; code that knows its memory is
    /// accessible may read through the pointer instead.
    pub fn read(&self, address: usize, buf: &mut [u8]) -> Result<()> {
        if self.backend.try_read(address, buf, Grant::READ) {
            return Ok(());
        }
        self.read_checked(address, buf, AccessKind::Read)
    }

    /// Write `data` at `address`, checked like a CPU store (read-only pages fault too).
    /// Nothing is written unless every byte may be. Marks write-watched pages dirty. On
    /// real memory (the Linux backend) the bytes are copied with `process_vm_writev` on
    /// this process; stores through the pointer are just as visible (and just as tracked
    /// by write watch), but fault where this call returns an error.
    ///
    /// # Memory safety on real memory
    /// Over the Linux backend ([`LinuxSpace`](crate::LinuxSpace)) this stores into the
    /// process's own memory wherever its pages allow a store, as `WriteProcessMemory` on
    /// the current process does: memory the engine did not allocate included, such as
    /// Rust's heap, stacks and statics. A write into memory that Rust code holds a
    /// reference to, or that holds a value with a validity invariant (a `String`'s
    /// bytes, a `bool`), is undefined behaviour even though this function is safe to
    /// call: Rust's guarantees do not cover it, as they do not cover writes through
    /// `/proc/self/mem`. Write only into memory that nothing reaches except through raw
    /// pointers, such as the space's own allocations.
    pub fn write(&self, address: usize, data: &[u8]) -> Result<()> {
        self.backend.prepare_write(address, data.len());
        if self.backend.try_write(address, data) {
            return Ok(());
        }
        self.write_checked(address, data)
    }

    /// Fetch `buf.len()` bytes of instructions at `address`, checked for execute access.
    pub fn execute(&self, address: usize, buf: &mut [u8]) -> Result<()> {
        if self.backend.try_read(address, buf, Grant::EXECUTE) {
            return Ok(());
        }
        self.read_checked(address, buf, AccessKind::Execute)
    }

    /// A read or instruction fetch that no grant covered: checked by the engine. (Out of
    /// line, as [`write_checked`](Self::write_checked): forced inline (`#[inline(always)]`
    /// on both), the engine's path costs a granted 8-byte write 28 instructions more, 257.3
    /// against 229.3 a write (callgrind, `linux_profile sim-write 1000 64`); a granted read
    /// counts 165.2 either way (`sim-read 1000 64`), and is kept out of line alike.)
    #[inline(never)]
    fn read_checked(&self, address: usize, buf: &mut [u8], kind: AccessKind) -> Result<()> {
        self.access(address, buf.len(), kind, |b| b.read(address, buf))
    }

    /// A write that no grant covered: checked by the engine (out of line, see
    /// [`read_checked`](Self::read_checked)).
    #[inline(never)]
    fn write_checked(&self, address: usize, data: &[u8]) -> Result<()> {
        self.access(address, data.len(), AccessKind::Write, |b| b.write(address, data))
    }
}
