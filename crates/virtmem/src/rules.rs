//! The rules: argument validation (in Windows' order), rounding, and the mapping from
//! Win32 protections to backend access. Pure functions, no state, no system calls.
//!
//! Each `*_request` function turns raw Win32 arguments into a checked request, or the
//! error Windows gives for them, before anything is touched.

use std::ops::Range;

use crate::backend::{Access, Limits};
use crate::error::{Error, Result};
use crate::flags::{
    AccessKind, AllocationType, FreeType, MemState, MemoryBasicInformation, Protection, WriteWatchFlags,
};

/// The page size P (4 KiB).
pub const PAGE: usize = 4096;
/// The allocation granularity G (64 KiB).
pub const GRANULE: usize = 65536;
/// The large-page size of x86-64 and AArch64 (2 MiB): what `MEM_LARGE_PAGES` sizes and
/// addresses must be multiples of when the backend reports none of its own.
pub const LARGE_PAGE: usize = 2 << 20;
/// The lowest allocatable address.
pub const MIN_ADDRESS: usize = 0x1_0000;

/// The limits a space works with, whatever a backend (or a simulated configuration)
/// said: the lowest address at least [`MIN_ADDRESS`] and rounded up to a granule, the
/// end rounded down to one and never below the lowest (an empty space, where every
/// reservation fails), and a large-page size that is a power of two and a multiple of
/// the granule, else none (then `MEM_LARGE_PAGES` fails).
pub(crate) fn normalized(l: Limits) -> Limits {
    let min = round_up(l.min_address.max(MIN_ADDRESS), GRANULE).unwrap_or(usize::MAX & !(GRANULE - 1));
    let end = round_down(l.end_address, GRANULE).max(min);
    let large = l.large_page_size;
    let large = if large.is_power_of_two() && large % GRANULE == 0 { large } else { 0 };
    Limits { min_address: min, end_address: end, large_page_size: large }
}

/// The window a reservation with `req` must lie in (its claim of whole granules
/// included), and the alignment of its base; `ERROR_INVALID_PARAMETER` for a lowest start
/// that is not a multiple of 64 KiB (with `large`, a `MEM_LARGE_PAGES` reserve, of the
/// large-page size, as Microsoft documents `LowestStartingAddress`), a highest end that is
/// not one less than a multiple of 64 KiB (0 is the top) or lies past the top or below the
/// lowest start, and an alignment that is not 0 or a power of two of at least 64 KiB.
pub(crate) fn address_window(
    req: &crate::flags::AddressRequirements,
    limits: &Limits,
    large: bool,
) -> Result<(Range<usize>, usize)> {
    let top = limits.end_address;
    let lo = req.lowest_starting_address;
    let hi = match req.highest_ending_address {
        0 => top,
        h => h.checked_add(1).ok_or(Error::InvalidParameter)?,
    };
    // (A large reserve has a large-page size: `alloc_request` refused it otherwise.)
    let lo_unit = if large { limits.large_page_size.max(GRANULE) } else { GRANULE };
    if lo % lo_unit != 0 || hi % GRANULE != 0 || hi > top || hi <= lo {
        return Err(Error::InvalidParameter);
    }
    let align = match req.alignment {
        0 => GRANULE,
        a if a.is_power_of_two() && a >= GRANULE => a,
        _ => return Err(Error::InvalidParameter),
    };
    Ok((lo.max(limits.min_address)..hi, align))
}

/// `x` rounded down to a multiple of `align` (a power of two).
pub fn round_down(x: usize, align: usize) -> usize {
    x & !(align - 1)
}

/// `x` rounded up to a multiple of `align` (a power of two); `None` on overflow.
pub fn round_up(x: usize, align: usize) -> Option<usize> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// The whole allocation granules `range` touches (to the top of the address space if
/// its end rounds past it).
pub fn granules(range: Range<usize>) -> Range<usize> {
    round_down(range.start, GRANULE)..round_up(range.end, GRANULE).unwrap_or(usize::MAX)
}

/// Every page touched by `[address, address + size)`, or 87 when the end wraps.
pub fn page_span(address: usize, size: usize) -> Result<Range<usize>> {
    let end = address.checked_add(size).ok_or(Error::InvalidParameter)?;
    let end = round_up(end, PAGE).ok_or(Error::InvalidParameter)?;
    Ok(round_down(address, PAGE)..end)
}

/// What a valid `VirtualAlloc` call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AllocRequest {
    /// A new reservation (`MEM_RESERVE`, or `MEM_COMMIT` with a NULL address).
    Reserve {
        /// The G-aligned base, or `None` for "anywhere".
        base: Option<usize>,
        /// Page-rounded size of the reservation.
        size: usize,
        /// Commit the whole reservation too.
        commit: bool,
        /// `MEM_TOP_DOWN`.
        top_down: bool,
        /// `MEM_LARGE_PAGES`.
        large: bool,
        /// `MEM_WRITE_WATCH`.
        write_watch: bool,
        /// `MEM_PHYSICAL`.
        physical: bool,
        /// The (validated) protection.
        protect: Protection,
    },
    /// Commit pages of an existing reservation.
    Commit { range: Range<usize>, protect: Protection },
    /// `MEM_RESET`.
    Reset { range: Range<usize> },
    /// `MEM_RESET_UNDO`.
    ResetUndo { range: Range<usize> },
}

/// Check a protection value (rule 2 of VirtualAlloc; also VirtualProtect's).
pub fn check_protect(p: Protection) -> Result<Protection> {
    let bits = p.bits();
    if bits & !0x7FF != 0 {
        return Err(Error::InvalidParameter);
    }
    let base = bits & 0xFF;
    if !matches!(base, 0x01 | 0x02 | 0x04 | 0x10 | 0x20 | 0x40) {
        return Err(Error::InvalidParameter);
    }
    let modifiers = bits & 0x700;
    // (More than one modifier bit: `count_ones() > 1`, without a population count,
    // which baseline x86-64 lacks.)
    if modifiers & modifiers.wrapping_sub(1) != 0 || (base == 0x01 && modifiers != 0) {
        return Err(Error::InvalidParameter);
    }
    Ok(p)
}

/// Validate the arguments of `VirtualAlloc` in Windows' order.
pub(crate) fn alloc_request(
    address: usize,
    size: usize,
    ty: AllocationType,
    protect: Protection,
    limits: &Limits,
) -> Result<AllocRequest> {
    use AllocationType as T;
    // 1. size, then the type combination.
    if size == 0 {
        return Err(Error::InvalidParameter);
    }
    if ty.bits() & !T::all().bits() != 0 {
        return Err(Error::InvalidParameter);
    }
    enum Kind {
        Reset,
        ResetUndo,
        Alloc,
    }
    let kind = if ty == T::RESET {
        Kind::Reset
    } else if ty == T::RESET_UNDO {
        Kind::ResetUndo
    } else if ty.intersects(T::RESET | T::RESET_UNDO) {
        return Err(Error::InvalidParameter);
    } else {
        let reserve = ty.contains(T::RESERVE);
        let commit = ty.contains(T::COMMIT);
        if !reserve && !commit {
            return Err(Error::InvalidParameter);
        }
        if ty.contains(T::WRITE_WATCH) && !reserve {
            return Err(Error::InvalidParameter);
        }
        if ty.contains(T::PHYSICAL) && ty != (T::PHYSICAL | T::RESERVE) {
            return Err(Error::InvalidParameter);
        }
        Kind::Alloc
    };
    // 2. the protection, even for MEM_RESET and MEM_RESET_UNDO.
    let protect = check_protect(protect)?;
    // An AWE region (`MEM_PHYSICAL | MEM_RESERVE`) is read-write only: Microsoft's
    // VirtualAlloc documentation says its page protection must be PAGE_READWRITE.
    if ty.contains(T::PHYSICAL) && protect != Protection::READWRITE {
        return Err(Error::InvalidParameter);
    }
    // 3. the address range: below the space's lowest allocatable address (0x10000 in a
    // default space; what `GetSystemInfo` reports), past its top, or wrapping.
    let top = limits.end_address;
    let span_checked = |address: usize| -> Result<Range<usize>> {
        if address < limits.min_address.max(MIN_ADDRESS) {
            return Err(Error::InvalidParameter);
        }
        below_top(address, size, top)?;
        page_span(address, size)
    };
    match kind {
        Kind::Reset => Ok(AllocRequest::Reset { range: span_checked(address)? }),
        Kind::ResetUndo => Ok(AllocRequest::ResetUndo { range: span_checked(address)? }),
        Kind::Alloc => {
            let reserve = ty.contains(T::RESERVE);
            let commit = ty.contains(T::COMMIT);
            let large = ty.contains(T::LARGE_PAGES);
            if size > top - limits.min_address.min(top) {
                return Err(Error::InvalidParameter);
            }
            if address != 0 && !reserve {
                // Commit inside an existing reservation.
                let range = span_checked(address)?;
                if large {
                    return Err(Error::InvalidParameter);
                }
                return Ok(AllocRequest::Commit { range, protect });
            }
            // The caller's own size, before rounding: a large-page allocation's must
            // be a multiple of the large page itself (one byte short of one is not).
            let asked = size;
            let (base, size) = if address == 0 {
                (None, round_up(size, PAGE).ok_or(Error::InvalidParameter)?)
            } else {
                let range = span_checked(address)?;
                let base = round_down(address, GRANULE);
                (Some(base), range.end - base)
            };
            if large {
                // Misaligned arguments are 87 whether or not large pages can be had: the
                // size they must be a multiple of is the architecture's large page even
                // when the backend has none (as GetLargePageMinimum reports it).
                let available = limits.large_page_size;
                let lp = if available == 0 { LARGE_PAGE } else { available };
                if !(reserve && commit) {
                    return Err(Error::InvalidParameter);
                }
                if asked % lp != 0 || size % lp != 0 || address % lp != 0 {
                    return Err(Error::InvalidParameter);
                }
                if available == 0 {
                    return Err(Error::NoSystemResources);
                }
            }
            Ok(AllocRequest::Reserve {
                base,
                size,
                commit,
                top_down: ty.contains(T::TOP_DOWN),
                large,
                write_watch: ty.contains(T::WRITE_WATCH),
                physical: ty.contains(T::PHYSICAL),
                protect,
            })
        }
    }
}

/// [`alloc_request`] for the usual call, `MEM_COMMIT` alone at a non-null `address`,
/// checked in one go: the pages to commit, or `ERROR_INVALID_PARAMETER`, the only error
/// the checks give that call (so their order does not matter there).
#[inline]
pub(crate) fn commit_range(address: usize, size: usize, protect: Protection, limits: &Limits) -> Result<Range<usize>> {
    let top = limits.end_address;
    if size == 0
        || check_protect(protect).is_err()
        || size > top - limits.min_address.min(top)
        || address < limits.min_address.max(MIN_ADDRESS)
        || below_top(address, size, top).is_err()
    {
        return Err(Error::InvalidParameter);
    }
    page_span(address, size)
}

/// What a valid `VirtualFree` call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FreeRequest {
    /// Release the reservation whose base is `base`.
    Release { base: usize },
    /// Decommit the whole reservation whose base is `base`.
    DecommitAll { base: usize },
    /// Decommit every page of `range`.
    Decommit { range: Range<usize> },
}

/// Whether `[address, address + size)` lies below `top`, the end of the user range (an
/// address at or above it, or a range passing it or wrapping, is 87 for every call that
/// takes a range: `VirtualAlloc` and `VirtualQuery` by the spec, and `VirtualFree` and
/// `VirtualProtect` too, as Windows' kernel checks the address, then the size, against
/// its highest user address before looking for memory there, and Wine does the same).
#[inline]
fn below_top(address: usize, size: usize, top: usize) -> Result<()> {
    match address.checked_add(size) {
        Some(end) if address < top && end <= top => Ok(()),
        _ => Err(Error::InvalidParameter),
    }
}

/// Validate the arguments of `VirtualFree` in a space whose user range ends at `top`.
/// (Inlined: out of line, its answer went through memory and a jump table, callgrind.)
#[inline]
pub(crate) fn free_request(address: usize, size: usize, ty: FreeType, top: usize) -> Result<FreeRequest> {
    if ty != FreeType::DECOMMIT && ty != FreeType::RELEASE {
        return Err(Error::InvalidParameter);
    }
    if ty == FreeType::RELEASE {
        if size != 0 || address == 0 {
            return Err(Error::InvalidParameter);
        }
        below_top(address, 0, top)?;
        return Ok(FreeRequest::Release { base: round_down(address, PAGE) });
    }
    if address == 0 {
        return Err(Error::InvalidParameter);
    }
    below_top(address, size, top)?;
    if size == 0 {
        return Ok(FreeRequest::DecommitAll { base: round_down(address, PAGE) });
    }
    Ok(FreeRequest::Decommit { range: page_span(address, size)? })
}

/// Validate the arguments of `VirtualProtect` (the out-pointer is checked by the caller)
/// in a space whose user range ends at `top`. A zero size is 87, as Windows'
/// `NtProtectVirtualMemory` has it.
pub(crate) fn protect_request(
    address: usize,
    size: usize,
    protect: Protection,
    top: usize,
) -> Result<(Range<usize>, Protection)> {
    let protect = check_protect(protect)?;
    if size == 0 {
        return Err(Error::InvalidParameter);
    }
    below_top(address, size, top)?;
    let range = page_span(address, size)?;
    Ok((range, protect))
}

/// Validate the flags of `GetWriteWatch`.
pub(crate) fn write_watch_flags(flags: WriteWatchFlags) -> Result<bool> {
    match flags.bits() {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::InvalidParameter),
    }
}

/// The protection a page really gets when `requested` is applied inside a reservation made
/// with `allocation`: `PAGE_NOCACHE` belongs to the allocation. A reservation made with it
/// keeps it on every change, so a requested `PAGE_WRITECOMBINE` (which cannot go with it)
/// is dropped.
pub(crate) fn effective_protect(requested: Protection, allocation: Protection) -> Protection {
    if allocation.contains(Protection::NOCACHE) {
        (requested - Protection::WRITECOMBINE) | Protection::NOCACHE
    } else {
        requested - Protection::NOCACHE
    }
}

/// The hardware access of a committed page with protection `p` (an armed guard page has none).
pub(crate) fn access_of(p: Protection) -> Access {
    // The access of each base protection, by its bit (`PAGE_NOACCESS` 0x01 to
    // `PAGE_EXECUTE_WRITECOPY` 0x80); no base bit or more than one is no access.
    const BY_BIT: [Access; 8] = [
        Access::None,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::Execute,
        Access::ExecuteRead,
        Access::ExecuteReadWrite,
        Access::ExecuteReadWrite,
    ];
    let b = p.base().bits();
    if p.contains(Protection::GUARD) || !b.is_power_of_two() {
        return Access::None;
    }
    BY_BIT[b.trailing_zeros() as usize & 7]
}

/// The protection `VirtualQuery` reports for foreign memory with hardware access `a`.
pub(crate) fn protection_of(a: Access) -> Protection {
    match a {
        Access::None => Protection::NOACCESS,
        Access::Read => Protection::READONLY,
        Access::ReadWrite => Protection::READWRITE,
        Access::Execute => Protection::EXECUTE,
        Access::ExecuteRead => Protection::EXECUTE_READ,
        Access::ExecuteReadWrite => Protection::EXECUTE_READWRITE,
    }
}

/// Whether hardware access `a` allows an access of `kind`.
pub(crate) fn access_allows(a: Access, kind: AccessKind) -> bool {
    match kind {
        AccessKind::Read => a.readable(),
        AccessKind::Write => a.writable(),
        AccessKind::Execute => a.executable(),
    }
}

/// Whether `FlushInstructionCache` names the region `info` (a `VirtualQuery` answer) to
/// the backend's cache maintenance: committed pages that may be read, with no armed
/// guard. Free, reserved, `PAGE_NOACCESS` and guard pages hold no instructions that
/// could run, and `PAGE_EXECUTE` pages are left out too: a backend may map them
/// execute-only, where the maintenance instructions (which read the range) would fault.
pub fn instructions_to_sync(info: &MemoryBasicInformation) -> bool {
    let readable = Protection::READONLY
        | Protection::READWRITE
        | Protection::WRITECOPY
        | Protection::EXECUTE_READ
        | Protection::EXECUTE_READWRITE
        | Protection::EXECUTE_WRITECOPY;
    info.state == MemState::Commit && info.protect.intersects(readable) && !info.protect.contains(Protection::GUARD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { min_address: MIN_ADDRESS, end_address: 0x7FFF_FFFF_0000, large_page_size: 2 << 20 }
    }

    #[test]
    fn protect_values() {
        for ok in [0x01, 0x02, 0x04, 0x10, 0x20, 0x40, 0x104, 0x204, 0x404, 0x120] {
            assert!(check_protect(Protection::from_bits_retain(ok)).is_ok(), "{ok:#x}");
        }
        for bad in [0, 0x06, 0x08, 0x80, 0x101, 0x201, 0x401, 0x304, 0x100, 0x800, 0x1004] {
            assert_eq!(check_protect(Protection::from_bits_retain(bad)), Err(Error::InvalidParameter), "{bad:#x}");
        }
    }

    #[test]
    fn alloc_type_combinations() {
        let p = Protection::READWRITE;
        let t = AllocationType::from_bits_retain;
        let ok = [0x2000, 0x1000, 0x3000, 0x102000, 0x202000, 0x203000, 0x402000, 0x80000, 0x1000000];
        for bits in ok {
            assert!(alloc_request(0x10000, 0x1000, t(bits), p, &limits()).is_ok(), "{bits:#x}");
        }
        let bad = [0, 0x100000, 0x201000, 0x400000, 0x401000, 0x81000, 0x82000, 0x1002000, 0x40002000, 0x4000, 0x8000];
        for bits in bad {
            assert_eq!(
                alloc_request(0x10000, 0x1000, t(bits), p, &limits()),
                Err(Error::InvalidParameter),
                "{bits:#x}"
            );
        }
        // MEM_PHYSICAL | MEM_RESERVE takes PAGE_READWRITE alone.
        for q in [0x01, 0x02, 0x40, 0x204] {
            let q = Protection::from_bits_retain(q);
            assert_eq!(alloc_request(0x10000, 0x1000, t(0x402000), q, &limits()), Err(Error::InvalidParameter));
        }
    }

    #[test]
    fn reserve_rounding() {
        let r = alloc_request(0x12345, 2, AllocationType::RESERVE, Protection::READWRITE, &limits()).unwrap();
        match r {
            AllocRequest::Reserve { base, size, .. } => {
                assert_eq!(base, Some(0x10000));
                assert_eq!(size, 0x3000);
            }
            other => panic!("{other:?}"),
        }
        let r = alloc_request(0, 5, AllocationType::RESERVE, Protection::READWRITE, &limits()).unwrap();
        assert!(matches!(r, AllocRequest::Reserve { base: None, size: 0x1000, .. }));
    }

    #[test]
    fn straddling_commit_touches_two_pages() {
        let r = alloc_request(0x10FFF, 2, AllocationType::COMMIT, Protection::READWRITE, &limits()).unwrap();
        assert_eq!(r, AllocRequest::Commit { range: 0x10000..0x12000, protect: Protection::READWRITE });
    }

    #[test]
    fn address_checks() {
        let l = limits();
        let rw = Protection::READWRITE;
        assert_eq!(alloc_request(0xFFFF, 1, AllocationType::RESERVE, rw, &l), Err(Error::InvalidParameter));
        assert_eq!(alloc_request(0, usize::MAX, AllocationType::RESERVE, rw, &l), Err(Error::InvalidParameter));
        assert_eq!(
            alloc_request(0x7FFF_FFFE_0000, 0x20000, AllocationType::RESERVE, rw, &l),
            Err(Error::InvalidParameter)
        );
        assert_eq!(alloc_request(usize::MAX - 10, 100, AllocationType::COMMIT, rw, &l), Err(Error::InvalidParameter));
    }

    /// The commit fast path answers as `alloc_request` does.
    #[test]
    fn commit_range_matches_alloc_request() {
        let tops = [limits(), Limits { min_address: 0x40_0000, end_address: 0x50_0000, large_page_size: 0 }];
        let addrs = [1, 0xFFFF, 0x10000, 0x10FFF, 0x3F_F000, 0x40_0000, 0x4F_FFFF, 0x50_0000, 0x7FFF_FFFE_F000];
        let addrs = addrs.into_iter().chain([usize::MAX - 10, usize::MAX - 0x1000, 0x7FFF_FFFF_0000]);
        let sizes = [0, 1, 0x1000, 0x1001, 0x10_0000, 0x7FFF_FFFF_0000, usize::MAX - 0x10, usize::MAX];
        let protects = [0x04, 0x01, 0x104, 0x06, 0x101, 0x40, 0x800];
        for l in &tops {
            for a in addrs.clone() {
                for s in sizes {
                    for p in protects {
                        let p = Protection::from_bits_retain(p);
                        assert_eq!(
                            commit_range(a, s, p, l).map(|range| AllocRequest::Commit { range, protect: p }),
                            alloc_request(a, s, AllocationType::COMMIT, p, l),
                            "{a:#x} {s:#x} {p:?} {l:?}"
                        );
                    }
                }
            }
        }
    }

    /// `access_of` gives each protection the access of its base, none when guarded, and
    /// none for a base of no bit or several (as the comparisons it replaced did).
    #[test]
    fn access_of_every_base() {
        let expected = |b: u32| match b {
            0x02 => Access::Read,
            0x04 | 0x08 => Access::ReadWrite,
            0x10 => Access::Execute,
            0x20 => Access::ExecuteRead,
            0x40 | 0x80 => Access::ExecuteReadWrite,
            _ => Access::None,
        };
        for bits in 0..0x800u32 {
            let p = Protection::from_bits_retain(bits);
            let want = if bits & 0x100 != 0 { Access::None } else { expected(bits & 0xFF) };
            assert_eq!(access_of(p), want, "{bits:#x}");
        }
    }

    /// `check_protect` accepts exactly the base protections with at most one modifier
    /// (none on `PAGE_NOACCESS`).
    #[test]
    fn check_protect_every_value() {
        for bits in 0..0x1000u32 {
            let base = bits & 0xFF;
            let modifiers = bits & 0x700;
            let ok = bits & !0x7FF == 0
                && matches!(base, 0x01 | 0x02 | 0x04 | 0x10 | 0x20 | 0x40)
                && modifiers.count_ones() <= 1
                && !(base == 0x01 && modifiers != 0);
            assert_eq!(check_protect(Protection::from_bits_retain(bits)).is_ok(), ok, "{bits:#x}");
        }
    }

    #[test]
    fn nocache_belongs_to_allocation() {
        let nc = Protection::READWRITE | Protection::NOCACHE;
        assert_eq!(effective_protect(Protection::READONLY, nc), Protection::READONLY | Protection::NOCACHE);
        assert_eq!(effective_protect(nc, Protection::READWRITE), Protection::READWRITE);
        let wc = Protection::READWRITE | Protection::WRITECOMBINE;
        assert_eq!(effective_protect(wc, nc), nc);
        assert_eq!(effective_protect(wc, Protection::READWRITE), wc);
    }
}
