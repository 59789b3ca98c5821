//! Spec § VirtualQuery: errors, fields, region coalescing, free regions.

use crate::backend_tests;
use crate::common::*;
use virtmem::win32::{self, MEMORY_BASIC_INFORMATION};
use virtmem::{MemState, MemType, Protection};

backend_tests! {
    /// Returns 48, or 0 with 24 for a short buffer and 87 above the highest user
    /// address; address 0 is valid.
    fn query_result_and_errors(fx: &Fx) {
        let s = &*fx.space;
        let top = s.system_info().maximum_application_address;
        let mut mbi = MEMORY_BASIC_INFORMATION::default();
        for len in [0, 1, 47] {
            win32::SetLastError(0);
            assert_eq!(win32::VirtualQuery(s, fx.w, Some(&mut mbi), len), 0, "length {len}");
            assert_eq!(win32::GetLastError(), 24);
        }
        assert_eq!(win32::VirtualQuery(s, fx.w, Some(&mut mbi), 48), 48);
        assert_eq!(win32::VirtualQuery(s, fx.w, Some(&mut mbi), 100), 48);
        assert_eq!(mbi.BaseAddress, fx.w);
        for addr in [top + 1, top + P, usize::MAX, 1 << 63] {
            win32::SetLastError(0);
            assert_eq!(win32::VirtualQuery(s, addr, Some(&mut mbi), 48), 0, "{addr:#x}");
            assert_eq!(win32::GetLastError(), 87);
        }
        assert_eq!(win32::VirtualQuery(s, top, Some(&mut mbi), 48), 48);
        assert_eq!(mbi.BaseAddress, top & !(P - 1));
        // Address 0: free memory, with the free-memory field values.
        let mut mbi = MEMORY_BASIC_INFORMATION::default();
        assert_eq!(win32::VirtualQuery(s, 0, Some(&mut mbi), 48), 48);
        assert_eq!((mbi.BaseAddress, mbi.AllocationBase, mbi.AllocationProtect), (0, 0, 0));
        assert_eq!((mbi.State, mbi.Protect, mbi.Type), (MEM_FREE, PAGE_NOACCESS, 0));
        assert!(mbi.RegionSize >= 0x10000);
    }

    /// The fields of free, reserved and committed pages.
    fn fields_of_each_state(fx: &Fx) {
        let a = fx.reserve(0, 4 * P, PAGE_EXECUTE_READ);
        fx.commit(a + 2 * P, P, PAGE_READWRITE | PAGE_GUARD);
        // Reserved: Protect 0, state MEM_RESERVE, AllocationProtect as given.
        let m = fx.q(a + 5);
        assert_eq!(m.base_address, a);
        assert_eq!((m.allocation_base, m.allocation_protect), (a, Protection::EXECUTE_READ));
        assert_eq!((m.state, m.protect, m.region_size), (MemState::Reserve, Protection::empty(), 2 * P));
        assert_eq!(m.mem_type, Some(MemType::Private));
        // Committed: the page protection, GUARD included while armed.
        let m = fx.q(a + 2 * P + P - 1);
        assert_eq!(m.base_address, a + 2 * P);
        assert_eq!((m.state, m.protect.bits(), m.region_size), (MemState::Commit, PAGE_READWRITE | PAGE_GUARD, P));
        assert_eq!((m.allocation_base, m.allocation_protect), (a, Protection::EXECUTE_READ));
        // The same through the raw structure.
        let mut raw = MEMORY_BASIC_INFORMATION::default();
        assert_eq!(win32::VirtualQuery(&*fx.space, a + 2 * P + 1, Some(&mut raw), 48), 48);
        assert_eq!(
            (raw.BaseAddress, raw.AllocationBase, raw.AllocationProtect, raw.RegionSize),
            (a + 2 * P, a, PAGE_EXECUTE_READ, P)
        );
        assert_eq!((raw.State, raw.Protect, raw.Type), (MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD, MEM_PRIVATE));
        // Free (the blocked tail of the granule is free too): NULL base, 0, NOACCESS, type 0.
        let m = fx.q(a + 4 * P + 123);
        assert_eq!(m.base_address, a + 4 * P);
        assert_eq!((m.allocation_base, m.allocation_protect), (0, Protection::empty()));
        assert_eq!((m.state, m.protect, m.mem_type, m.type_bits()), (MemState::Free, Protection::NOACCESS, None, 0));
    }

    /// RegionSize never runs past the reservation's end, even into an identical neighbour.
    fn regions_stop_at_reservation_boundaries(fx: &Fx) {
        let a = fx.reserve_commit(0, G, PAGE_READWRITE);
        let b = fx.reserve_commit(G, G, PAGE_READWRITE);
        let c = fx.reserve(2 * G, G, PAGE_READWRITE);
        let d = fx.reserve(3 * G, 2 * G, PAGE_READWRITE);
        let walk = fx.walk(a..d + 2 * G);
        let got: Vec<_> = walk.iter().map(|m| (m.base_address, m.region_size, m.allocation_base, m.state)).collect();
        assert_eq!(
            got,
            vec![
                (a, G, a, MemState::Commit),
                (b, G, b, MemState::Commit),
                (c, G, c, MemState::Reserve),
                (d, 2 * G, d, MemState::Reserve),
            ]
        );
        assert_eq!(fx.q(a + 5 * P).region_size, G - 5 * P, "from the middle to the end of its reservation");
    }

    /// Adjacent pages with equal attributes are one region however they got there;
    /// decommitted and never-committed pages look the same and merge.
    fn equal_neighbours_are_one_region(fx: &Fx) {
        let a = fx.reserve(0, 16 * P, PAGE_READWRITE);
        // Commit page by page, in an odd order.
        for i in [3, 0, 2, 1, 7, 5, 4, 6] {
            fx.commit(a + i * P, P, PAGE_READWRITE);
        }
        let m = fx.q(a);
        assert_eq!((m.state, m.region_size), (MemState::Commit, 8 * P));
        // Change protections piecemeal and back.
        fx.protect(a + 2 * P, 3 * P, PAGE_READONLY).unwrap();
        fx.protect(a + 3 * P, P, PAGE_EXECUTE).unwrap();
        assert_eq!(fx.walk(a..a + 8 * P).len(), 5);
        fx.protect(a + 2 * P, P, PAGE_READWRITE).unwrap();
        fx.protect(a + 3 * P, 2 * P, PAGE_READWRITE).unwrap();
        assert_eq!(fx.q(a).region_size, 8 * P);
        // Decommit inside, next to never-committed pages.
        fx.free(a + 6 * P, 2 * P, MEM_DECOMMIT).unwrap();
        let m = fx.q(a + 6 * P);
        assert_eq!((m.state, m.protect, m.region_size), (MemState::Reserve, Protection::empty(), 10 * P));
        fx.free(a, 6 * P, MEM_DECOMMIT).unwrap();
        assert_eq!(fx.walk(a..a + 16 * P).len(), 1, "all reserved again: one region");
        assert_eq!(fx.q(a + 9 * P).region_size, 7 * P);
        // Guard pages disarmed by an access merge with their unguarded neighbours.
        fx.commit(a, 4 * P, PAGE_READWRITE);
        fx.protect(a + P, P, PAGE_READWRITE | PAGE_GUARD).unwrap();
        assert_eq!(fx.walk(a..a + 4 * P).len(), 3);
        assert!(fx.space.read(a + P, &mut [0]).is_err());
        assert_eq!(fx.q(a).region_size, 4 * P);
    }

    /// A free region runs to the next reservation (or the end of the address space).
    fn free_regions_run_to_the_next_reservation(fx: &Fx) {
        let a = fx.reserve(3 * G, P, PAGE_READWRITE);
        let m = fx.q(fx.w + 5);
        assert_eq!((m.base_address, m.state, m.region_size), (fx.w, MemState::Free, 3 * G));
        let m = fx.q(fx.w + G + 7 * P);
        assert_eq!(m.region_size, 2 * G - 7 * P);
        // The tail of a's granule runs to b.
        let b = fx.reserve(6 * G, 2 * P, PAGE_READWRITE);
        let m = fx.q(a + P);
        assert_eq!((m.base_address, m.state, m.region_size), (a + P, MemState::Free, b - a - P));
        if fx.kind == Kind::Sim {
            // After the last reservation, free memory runs to the top.
            let top = fx.space.system_info().maximum_application_address + 1;
            let m = fx.q(b + 2 * P);
            assert_eq!(m.region_size, top - b - 2 * P);
            let m = fx.q(0);
            assert_eq!(m.region_size, fx.w + 3 * G, "address 0 runs to the first reservation");
        }
    }

    /// "Adjacent pages with equal attributes are always one region, however they got
    /// there", with NOCACHE (which belongs to the allocation, see protect.rs): pages of a
    /// plain allocation committed or protected with a NOCACHE the call silently drops are
    /// plain READWRITE pages and merge with their READWRITE neighbours; in a NOCACHE
    /// allocation pages committed without NOCACHE get it and merge with the others.
    fn pages_whose_nocache_was_dropped_or_added_merge(fx: &Fx) {
        let a = fx.reserve(0, 4 * P, PAGE_READWRITE);
        fx.commit(a, P, PAGE_READWRITE);
        fx.commit(a + P, P, PAGE_READWRITE | PAGE_NOCACHE);
        fx.commit(a + 2 * P, 2 * P, PAGE_READONLY);
        fx.protect(a + 2 * P, P, PAGE_READWRITE | PAGE_NOCACHE).unwrap();
        let m = fx.q(a);
        assert_eq!((m.state, m.protect.bits(), m.region_size), (MemState::Commit, PAGE_READWRITE, 3 * P));
        assert_eq!(fx.walk(a..a + 4 * P).len(), 2);
        let n = fx.reserve(G, 4 * P, PAGE_READWRITE | PAGE_NOCACHE);
        fx.commit(n, P, PAGE_READWRITE | PAGE_NOCACHE);
        fx.commit(n + P, P, PAGE_READWRITE);
        fx.commit(n + 2 * P, P, PAGE_READONLY);
        fx.protect(n + 2 * P, P, PAGE_READWRITE).unwrap();
        let m = fx.q(n);
        assert_eq!((m.protect.bits(), m.region_size), (PAGE_READWRITE | PAGE_NOCACHE, 3 * P));
    }

    /// "`length` smaller than MEMORY_BASIC_INFORMATION → 24; an address above the highest
    /// user address → 87": with both wrong, the length wins (24), as Wine 8 answers and
    /// as Windows' NtQueryVirtualMemory checks the buffer length before the address;
    /// nothing is written into the buffer either way.
    fn a_short_length_is_24_before_a_bad_address(fx: &Fx) {
        let s = &*fx.space;
        let top = s.system_info().maximum_application_address;
        for addr in [top + 1, usize::MAX] {
            for len in [0, 47] {
                let mut mbi = MEMORY_BASIC_INFORMATION { RegionSize: 0x1234, ..Default::default() };
                win32::SetLastError(0);
                assert_eq!(win32::VirtualQuery(s, addr, Some(&mut mbi), len), 0, "{addr:#x} length {len}");
                assert_eq!(win32::GetLastError(), 24, "{addr:#x} length {len}");
                assert_eq!(mbi.RegionSize, 0x1234, "nothing written");
            }
        }
    }

    /// The fields of every kind of reservation the spec names: write-watched, physical,
    /// top-down and reserve+commit ones are MEM_PRIVATE with their AllocationProtect
    /// (modifiers included: GUARD, NOCACHE and WRITECOMBINE as given), whatever their
    /// pages' state; a NOCACHE allocation's decommitted pages are reserved pages like any
    /// other (Protect 0, one region with the never-committed ones); locking pages splits
    /// no region.
    fn fields_of_every_kind_of_reservation(fx: &Fx) {
        let kinds = [
            (MEM_RESERVE | MEM_WRITE_WATCH, PAGE_READWRITE),
            (MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_EXECUTE_READ),
            (MEM_RESERVE | MEM_PHYSICAL, PAGE_READWRITE),
            (MEM_RESERVE | MEM_TOP_DOWN, PAGE_READONLY | PAGE_GUARD),
            (MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE | PAGE_WRITECOMBINE),
            (MEM_RESERVE, PAGE_EXECUTE_READWRITE | PAGE_NOCACHE),
            (MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD),
        ];
        for (ty, p) in kinds {
            let a = fx.alloc(0, 3 * P + 1, ty, p).unwrap_or_else(|e| panic!("{ty:#x} {p:#x}: {e}"));
            let m = fx.q(a + P + 3);
            let committed = ty & MEM_COMMIT != 0;
            let what = format!("type {ty:#x} protect {p:#x}");
            assert_eq!((m.base_address, m.allocation_base, m.allocation_protect.bits()), (a + P, a, p), "{what}");
            assert_eq!((m.region_size, m.type_bits(), m.mem_type), (3 * P, MEM_PRIVATE, Some(MemType::Private)), "{what}");
            let (state, protect) = if committed { (MemState::Commit, p) } else { (MemState::Reserve, 0) };
            assert_eq!((m.state, m.protect.bits()), (state, protect), "{what}");
            let tail = fx.q(a + 4 * P);
            assert_eq!((tail.state, tail.allocation_base, tail.type_bits()), (MemState::Free, 0, 0), "{what}: the granule's tail");
            fx.free(a, 0, MEM_RELEASE).unwrap();
        }
        let n = fx.reserve(0, 8 * P, PAGE_READWRITE | PAGE_NOCACHE);
        fx.commit(n + 2 * P, 4 * P, PAGE_READWRITE);
        fx.free(n + 2 * P, 2 * P, MEM_DECOMMIT).unwrap();
        let m = fx.q(n);
        assert_eq!((m.state, m.protect.bits(), m.region_size), (MemState::Reserve, 0, 4 * P));
        assert_eq!(fx.q(n + 4 * P).protect.bits(), PAGE_READWRITE | PAGE_NOCACHE);
        assert_eq!(fx.space.lock(n + 5 * P, P), Ok(()));
        let m = fx.q(n + 4 * P);
        assert_eq!((m.state, m.region_size), (MemState::Commit, 2 * P), "a locked page is no region of its own");
        fx.space.unlock(n + 5 * P, P).unwrap();
    }

    /// Every field at every page across a reservation's region boundaries, through the
    /// raw MEMORY_BASIC_INFORMATION: BaseAddress is the page; AllocationBase and
    /// AllocationProtect are the reservation's in every region (reserved and committed
    /// alike, never changed by the commits and protections inside it); RegionSize runs
    /// from BaseAddress to the end of its run of equal State and Protect (so a query from
    /// the middle of a run ends where the run does), never past the reservation's end into
    /// an identical neighbour; Protect 0 for reserved pages, GUARD included while armed;
    /// Type MEM_PRIVATE; PartitionId and the padding 0. After the end: free, NULL and 0,
    /// PAGE_NOACCESS, type 0, up to the next reservation.
    fn every_field_at_every_page_across_region_boundaries(fx: &Fx) {
        let ap = PAGE_EXECUTE_READWRITE;
        let a = fx.reserve(0, 12 * P, ap);
        let b = fx.reserve_commit(G, 2 * P, PAGE_READWRITE);
        fx.commit(a, 2 * P, PAGE_READWRITE);
        fx.commit(a + 3 * P, P, PAGE_READONLY | PAGE_GUARD);
        fx.commit(a + 4 * P, 3 * P, PAGE_EXECUTE_READ);
        fx.commit(a + 7 * P, 3 * P, PAGE_READWRITE);
        fx.free(a + 8 * P, P, MEM_DECOMMIT).unwrap();
        fx.commit(a + 10 * P, 2 * P, PAGE_READWRITE);
        // (first page, end, State, Protect) of each run.
        let runs = [
            (0, 2, MEM_COMMIT, PAGE_READWRITE),
            (2, 3, MEM_RESERVE, 0),
            (3, 4, MEM_COMMIT, PAGE_READONLY | PAGE_GUARD),
            (4, 7, MEM_COMMIT, PAGE_EXECUTE_READ),
            (7, 8, MEM_COMMIT, PAGE_READWRITE),
            (8, 9, MEM_RESERVE, 0),
            (9, 12, MEM_COMMIT, PAGE_READWRITE),
        ];
        for (first, end, state, protect) in runs {
            for page in first..end {
                for off in [0, 1, P - 1] {
                    let addr = a + page * P + off;
                    let mut m = MEMORY_BASIC_INFORMATION { PartitionId: 0x77, _pad0: 0x77, _pad1: 0x77, ..Default::default() };
                    assert_eq!(win32::VirtualQuery(&*fx.space, addr, Some(&mut m), 48), 48);
                    let want = MEMORY_BASIC_INFORMATION {
                        BaseAddress: a + page * P,
                        AllocationBase: a,
                        AllocationProtect: ap,
                        PartitionId: 0,
                        _pad0: 0,
                        RegionSize: (end - page) * P,
                        State: state,
                        Protect: protect,
                        Type: MEM_PRIVATE,
                        _pad1: 0,
                    };
                    assert_eq!(m, want, "query {addr:#x} (page {page})");
                }
            }
        }
        let mut m = MEMORY_BASIC_INFORMATION::default();
        assert_eq!(win32::VirtualQuery(&*fx.space, a + 12 * P, Some(&mut m), 48), 48);
        let want = MEMORY_BASIC_INFORMATION {
            BaseAddress: a + 12 * P,
            RegionSize: b - a - 12 * P,
            State: MEM_FREE,
            Protect: PAGE_NOACCESS,
            ..Default::default()
        };
        assert_eq!(m, want, "the free tail runs to the next reservation");
        assert_eq!(fx.q(b).allocation_base, b, "the next reservation is its own");
    }
}

/// "For free memory, RegionSize runs to the next reservation (or the top of the address
/// space)": the simulated case is in `free_regions_run_to_the_next_reservation`; on Linux
/// the top of a space is only known when the space is the whole window (a confined
/// backend whose limits are the window): after the last reservation, free memory runs to
/// the window's end, the highest user address + 1, and stops exactly there.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn linux_free_region_after_the_last_reservation_runs_to_the_top() {
    use std::sync::Arc;
    let w = crate::common::linux::window(WINDOW);
    let backend = virtmem::LinuxBackend::new().expect("the Linux backend needs /proc");
    let space = virtmem::AddressSpace::with_backend(crate::common::linux::Confined::new(backend, w..w + WINDOW, true));
    let fx = Fx { space: Arc::new(space), w, kind: Kind::Linux };
    let top = fx.space.system_info().maximum_application_address + 1;
    assert_eq!(top, w + WINDOW);
    let b = fx.reserve(6 * G, 2 * P, PAGE_READWRITE);
    let m = fx.q(b + 2 * P);
    assert_eq!((m.base_address, m.state, m.region_size), (b + 2 * P, MemState::Free, top - b - 2 * P));
    assert_eq!((m.allocation_base, m.protect, m.type_bits()), (0, Protection::NOACCESS, 0));
    let m = fx.q(top - 1);
    assert_eq!((m.base_address, m.state, m.region_size), (top - P, MemState::Free, P));
    // Free memory before the first reservation runs up to it.
    let m = fx.q(w + 5);
    assert_eq!((m.base_address, m.state, m.region_size), (w, MemState::Free, 6 * G));
}
