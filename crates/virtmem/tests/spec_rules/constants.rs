//! Spec § Constants: every flag, state, type and error code has the Windows value.

use crate::backend_tests;
use crate::common::*;
use virtmem::error::{code as ec, STATUS_ACCESS_VIOLATION, STATUS_GUARD_PAGE_VIOLATION};
use virtmem::{win32, AccessKind, AllocationType, Error, FreeType, MemState, MemType, Protection, WriteWatchFlags};

#[test]
fn win32_constants_have_the_spec_values() {
    let table: [(u32, u32); 27] = [
        (win32::MEM_COMMIT, 0x1000),
        (win32::MEM_RESERVE, 0x2000),
        (win32::MEM_DECOMMIT, 0x4000),
        (win32::MEM_RELEASE, 0x8000),
        (win32::MEM_FREE, 0x10000),
        (win32::MEM_PRIVATE, 0x20000),
        (win32::MEM_MAPPED, 0x40000),
        (win32::MEM_RESET, 0x80000),
        (win32::MEM_TOP_DOWN, 0x100000),
        (win32::MEM_WRITE_WATCH, 0x200000),
        (win32::MEM_PHYSICAL, 0x400000),
        (win32::MEM_RESET_UNDO, 0x1000000),
        (win32::MEM_IMAGE, 0x1000000),
        (win32::MEM_LARGE_PAGES, 0x20000000),
        (win32::PAGE_NOACCESS, 0x01),
        (win32::PAGE_READONLY, 0x02),
        (win32::PAGE_READWRITE, 0x04),
        (win32::PAGE_WRITECOPY, 0x08),
        (win32::PAGE_EXECUTE, 0x10),
        (win32::PAGE_EXECUTE_READ, 0x20),
        (win32::PAGE_EXECUTE_READWRITE, 0x40),
        (win32::PAGE_EXECUTE_WRITECOPY, 0x80),
        (win32::PAGE_GUARD, 0x100),
        (win32::PAGE_NOCACHE, 0x200),
        (win32::PAGE_WRITECOMBINE, 0x400),
        (win32::WRITE_WATCH_FLAG_RESET, 1),
        (AT_ROUND_TO_PAGE, 0x40000000),
    ];
    for (i, (got, want)) in table.iter().enumerate() {
        assert_eq!(got, want, "entry {i}");
    }
}

#[test]
fn typed_flags_have_the_spec_values() {
    assert_eq!(AllocationType::COMMIT.bits(), 0x1000);
    assert_eq!(AllocationType::RESERVE.bits(), 0x2000);
    assert_eq!(AllocationType::RESET.bits(), 0x80000);
    assert_eq!(AllocationType::TOP_DOWN.bits(), 0x100000);
    assert_eq!(AllocationType::WRITE_WATCH.bits(), 0x200000);
    assert_eq!(AllocationType::PHYSICAL.bits(), 0x400000);
    assert_eq!(AllocationType::RESET_UNDO.bits(), 0x1000000);
    assert_eq!(AllocationType::LARGE_PAGES.bits(), 0x20000000);
    assert_eq!(FreeType::DECOMMIT.bits(), 0x4000);
    assert_eq!(FreeType::RELEASE.bits(), 0x8000);
    assert_eq!(WriteWatchFlags::RESET.bits(), 1);
    let prots = [
        (Protection::NOACCESS, 0x01),
        (Protection::READONLY, 0x02),
        (Protection::READWRITE, 0x04),
        (Protection::WRITECOPY, 0x08),
        (Protection::EXECUTE, 0x10),
        (Protection::EXECUTE_READ, 0x20),
        (Protection::EXECUTE_READWRITE, 0x40),
        (Protection::EXECUTE_WRITECOPY, 0x80),
        (Protection::GUARD, 0x100),
        (Protection::NOCACHE, 0x200),
        (Protection::WRITECOMBINE, 0x400),
    ];
    for (p, v) in prots {
        assert_eq!(p.bits(), v, "{p:?}");
    }
    assert_eq!(MemState::Commit as u32, 0x1000);
    assert_eq!(MemState::Reserve as u32, 0x2000);
    assert_eq!(MemState::Free as u32, 0x10000);
    assert_eq!(MemType::Private as u32, 0x20000);
    assert_eq!(MemType::Mapped as u32, 0x40000);
    assert_eq!(MemType::Image as u32, 0x1000000);
}

#[test]
fn error_codes_and_exceptions_have_the_spec_values() {
    let codes = [
        (Error::AccessDenied, 5, ec::ACCESS_DENIED),
        (Error::InvalidHandle, 6, ec::INVALID_HANDLE),
        (Error::NotEnoughMemory, 8, ec::NOT_ENOUGH_MEMORY),
        (Error::BadLength, 24, ec::BAD_LENGTH),
        (Error::InvalidParameter, 87, ec::INVALID_PARAMETER),
        (Error::PartialCopy, 299, ec::PARTIAL_COPY),
        (Error::InvalidAddress, 487, ec::INVALID_ADDRESS),
        (Error::NoAccess, 998, ec::NOACCESS),
        (Error::CommitmentLimit, 1455, ec::COMMITMENT_LIMIT),
    ];
    for (e, want, constant) in codes {
        assert_eq!(e.code(), want, "{e:?}");
        assert_eq!(constant, want, "{e:?}");
        assert_eq!(Error::from_code(want), Some(e));
        assert_eq!(e.exception_code(), None);
    }
    assert_eq!(STATUS_ACCESS_VIOLATION, 0xC000_0005);
    assert_eq!(STATUS_GUARD_PAGE_VIOLATION, 0x8000_0001);
    let av = Error::AccessViolation { address: 0x1234, access: AccessKind::Write };
    assert_eq!(av.exception_code(), Some(0xC000_0005));
    let gp = Error::GuardPage { address: 0x1234, access: AccessKind::Read };
    assert_eq!(gp.exception_code(), Some(0x8000_0001));
    assert_eq!(AccessKind::Read as u32, 0);
    assert_eq!(AccessKind::Write as u32, 1);
    assert_eq!(AccessKind::Execute as u32, 8);
}

#[test]
fn memory_basic_information_is_the_48_byte_win64_layout() {
    use std::mem::{offset_of, size_of};
    use win32::MEMORY_BASIC_INFORMATION as Mbi;
    assert_eq!(size_of::<Mbi>(), 48);
    assert_eq!(offset_of!(Mbi, BaseAddress), 0);
    assert_eq!(offset_of!(Mbi, AllocationBase), 8);
    assert_eq!(offset_of!(Mbi, AllocationProtect), 16);
    assert_eq!(offset_of!(Mbi, RegionSize), 24);
    assert_eq!(offset_of!(Mbi, State), 32);
    assert_eq!(offset_of!(Mbi, Protect), 36);
    assert_eq!(offset_of!(Mbi, Type), 40);
}

backend_tests! {
    /// P = 4 KiB, G = 64 KiB, lowest allocatable address 0x10000, highest user address
    /// reported by GetSystemInfo and above every address the window uses.
    fn system_info_reports_page_granularity_and_bounds(fx: &Fx) {
        let si = fx.space.system_info();
        assert_eq!(si.page_size, 4096);
        assert_eq!(si.allocation_granularity, 65536);
        assert_eq!(si.minimum_application_address, 0x10000);
        assert!(si.maximum_application_address >= fx.w + WINDOW - 1);
        assert_eq!((si.maximum_application_address + 1) % P, 0, "highest user address is the last byte of a page");
        // A query of the highest user address works, one past it is 87.
        assert!(fx.space.query(si.maximum_application_address).is_ok());
        assert_eq!(code(&fx.space.query(si.maximum_application_address + 1)), 87);
    }
}
