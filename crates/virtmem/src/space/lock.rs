//! `VirtualLock` and `VirtualUnlock`.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::flags::{AccessKind, Protection};
use crate::rules;
use crate::runs::PageState;

use super::plan::{Step, Steps};
use super::AddressSpace;

impl<B: Backend> AddressSpace<B> {
    // ----- VirtualLock / VirtualUnlock ------------------------------------------------

    /// `VirtualLock`: every page touched must be committed and accessible
    /// (`ERROR_NOACCESS` otherwise, free memory included; a range that starts outside
    /// every reservation and touches memory the engine did not map, such as a `malloc`'d
    /// block of the current process, is `ERROR_INVALID_ADDRESS` and is left alone); a zero size is
    /// `ERROR_INVALID_PARAMETER`. The range must lie in one reservation.
    pub fn lock(&self, address: usize, size: usize) -> Result<()> {
        self.set_locked(address, size, true)
    }

    /// `VirtualUnlock`: every page touched must be locked (`ERROR_NOT_LOCKED` otherwise,
    /// whatever the page's state); a zero size is `ERROR_INVALID_PARAMETER`.
    pub fn unlock(&self, address: usize, size: usize) -> Result<()> {
        self.set_locked(address, size, false)
    }

    fn set_locked(&self, address: usize, size: usize, lock: bool) -> Result<()> {
        // As Windows' NtLockVirtualMemory / NtUnlockVirtualMemory: a page that cannot be
        // locked (not committed and accessible, or not ours) is an access fault for a lock;
        // for an unlock, any page that is not locked is ERROR_NOT_LOCKED.
        if size == 0 {
            return Err(Error::InvalidParameter);
        }
        let range = rules::page_span(address, size)?;
        let refused = if lock { Error::NoAccess } else { Error::NotLocked };
        let (mut book, at) = self.settle(range.start);
        let Some(at) = at else {
            // Memory the engine did not allocate (a `malloc`'d block, a stack, a mapped
            // file in the current process) is never touched: like every other call on
            // it, a lock reports that the address is not the engine's.
            if lock && self.backend.foreign(range.start, range.end).is_some() {
                return Err(Error::InvalidAddress);
            }
            return Err(refused);
        };
        let res = book.reservations.at(at).expect("reservation");
        if range.end > res.end {
            return Err(refused);
        }
        if lock {
            let mut guard = None;
            for (r, st) in res.pages.runs(range.clone()) {
                match st {
                    // Locking touches the pages in order: an armed guard page fails the
                    // lock with the guard-page exception and is disarmed, like an access
                    // (Windows, in Wine's kernel32 conformance tests).
                    PageState::Committed(p) if p.contains(Protection::GUARD) => {
                        guard = Some((r.start, p));
                        break;
                    }
                    PageState::Committed(p) if p.base() != Protection::NOACCESS => {}
                    _ => return Err(Error::NoAccess),
                }
            }
            if let Some((page, p)) = guard {
                self.disarm_guard(&mut book, at, page, p);
                return Err(Error::GuardPage { address: page, access: AccessKind::Read });
            }
        }
        let res = book.reservations.at(at).expect("reservation");
        let mut steps = Steps::new();
        match &res.locked {
            Some(m) => {
                for (r, l) in m.runs(range.clone()) {
                    if lock && !l {
                        steps.push(Step::Lock(r));
                    } else if !lock && l {
                        steps.push(Step::Unlock(r));
                    } else if !lock {
                        return Err(Error::NotLocked);
                    }
                }
            }
            None if lock => steps.push(Step::Lock(range.clone())),
            None => return Err(Error::NotLocked),
        }
        self.finish(
            book,
            at,
            &steps,
            |book| {
                book.reservations.at_mut(at).expect("reservation").set_locked(range, lock);
            },
            |_| {},
            |_, _| {}, // (no access steps)
        )
    }
}
