//! Spec § Address space: page states, reservations, granule blocking, zero fill,
//! data surviving protection changes, failed calls changing nothing.

use crate::backend_tests;
use crate::common::*;
use virtmem::{AccessKind, Error, MemState, MemType, Protection, WriteWatchFlags};

backend_tests! {
    /// A reservation of fewer than 16 pages blocks the rest of its 64 KiB granule: no
    /// other reservation may start inside it, but the tail pages are reported free.
    fn small_reservation_blocks_its_granule(fx: &Fx) {
        let a = fx.reserve(0, P, PAGE_READWRITE);
        // The tail of the granule is free memory as far as VirtualQuery is concerned.
        let tail = fx.q(a + P);
        assert_eq!(tail.state, MemState::Free);
        assert_eq!(tail.allocation_base, 0);
        // ...but a reservation starting anywhere in it rounds down to the taken granule.
        for off in [P, 0x8000, G - P, G - 1] {
            assert_eq!(code(&fx.alloc(a + off, P, MEM_RESERVE, PAGE_READWRITE)), 487, "offset {off:#x}");
            assert_eq!(code(&fx.alloc(a + off, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)), 487);
        }
        // Nor can a commit use the free tail.
        assert_eq!(code(&fx.alloc(a + P, P, MEM_COMMIT, PAGE_READWRITE)), 487);
        // The next granule is available.
        assert_eq!(fx.alloc(a + G, P, MEM_RESERVE, PAGE_READWRITE), Ok(a + G));
        // A 17-page reservation blocks two granules.
        let b = fx.reserve(4 * G, 17 * P, PAGE_READWRITE);
        assert_eq!(code(&fx.alloc(b + G, P, MEM_RESERVE, PAGE_READWRITE)), 487);
        assert_eq!(code(&fx.alloc(b + G + 0xF000, P, MEM_RESERVE, PAGE_READWRITE)), 487);
        assert_eq!(fx.alloc(b + 2 * G, P, MEM_RESERVE, PAGE_READWRITE), Ok(b + 2 * G));
        // Once released the granule is free again.
        fx.free(a, 0, MEM_RELEASE).unwrap();
        assert_eq!(fx.alloc(a + 0x8000, P, MEM_RESERVE, PAGE_READWRITE), Ok(a));
    }

    /// Every page is free, reserved or committed; a reservation has a G-aligned base, a
    /// page-multiple size, its AllocationProtect (never changed) and type MEM_PRIVATE.
    fn reservation_attributes_never_change(fx: &Fx) {
        let a = fx.reserve(0, 5 * P, PAGE_EXECUTE_READ);
        assert_eq!(a % G, 0);
        fx.commit(a + P, P, PAGE_READWRITE);
        fx.protect(a + P, P, PAGE_READONLY).unwrap();
        fx.free(a + P, P, MEM_DECOMMIT).unwrap();
        fx.commit(a + 2 * P, 2 * P, PAGE_NOACCESS);
        for page in (a..a + 5 * P).step_by(P) {
            let m = fx.q(page);
            assert_eq!(m.allocation_base, a);
            assert_eq!(m.allocation_protect, Protection::EXECUTE_READ, "AllocationProtect at {page:#x}");
            assert_eq!(m.mem_type, Some(MemType::Private));
            assert_eq!(m.type_bits(), MEM_PRIVATE);
            assert!(m.base_address + m.region_size <= a + 5 * P, "region never runs past the reservation");
        }
        let states: Vec<_> = fx.walk(a..a + 5 * P).iter().map(|m| (m.state, m.region_size)).collect();
        assert_eq!(
            states,
            vec![(MemState::Reserve, 2 * P), (MemState::Commit, 2 * P), (MemState::Reserve, P)]
        );
    }

    /// Committed pages read as zero after a fresh commit and after every recommit.
    fn committed_pages_read_zero_after_commit_and_recommit(fx: &Fx) {
        let a = fx.reserve(0, 4 * P, PAGE_NOACCESS);
        fx.commit(a, 4 * P, PAGE_READWRITE);
        assert_eq!(fx.read_vec(a, 4 * P), vec![0u8; 4 * P]);
        fx.write(a, &[0xAB; 4 * P]);
        // Decommit the middle two pages and recommit them: zeros there, data elsewhere.
        fx.free(a + P, 2 * P, MEM_DECOMMIT).unwrap();
        fx.commit(a + P, 2 * P, PAGE_READWRITE);
        let v = fx.read_vec(a, 4 * P);
        assert!(v[..P].iter().all(|&b| b == 0xAB));
        assert!(v[P..3 * P].iter().all(|&b| b == 0), "recommitted pages read zero");
        assert!(v[3 * P..].iter().all(|&b| b == 0xAB));
        // Whole-reservation decommit, recommit with another protection: zeros.
        fx.write(a, &[0xCD; 4 * P]);
        fx.free(a, 0, MEM_DECOMMIT).unwrap();
        fx.commit(a, 4 * P, PAGE_READONLY);
        assert_eq!(fx.read_vec(a, 4 * P), vec![0u8; 4 * P]);
        // Release and reserve again at the same place: zeros.
        fx.protect(a, 4 * P, PAGE_READWRITE).unwrap();
        fx.write(a + 100, b"survivor?");
        fx.free(a, 0, MEM_RELEASE).unwrap();
        let b = fx.reserve_commit(0, 4 * P, PAGE_READWRITE);
        assert_eq!(b, a);
        assert_eq!(fx.read_vec(a, 4 * P), vec![0u8; 4 * P]);
        // A decommit of a never-committed-then-committed page also yields zeros.
        let c = fx.alloc(0, 3 * P, MEM_COMMIT, PAGE_READWRITE).unwrap();
        assert_eq!(fx.read_vec(c, 3 * P), vec![0u8; 3 * P]);
    }

    /// Data survives every protection change, including NOACCESS and GUARD round trips.
    fn data_survives_protection_changes(fx: &Fx) {
        let a = fx.reserve_commit(0, 2 * P, PAGE_READWRITE);
        let pattern: Vec<u8> = (0..2 * P).map(|i| (i * 7 + 3) as u8).collect();
        fx.write(a, &pattern);
        for p in [
            PAGE_READONLY,
            PAGE_NOACCESS,
            PAGE_EXECUTE,
            PAGE_EXECUTE_READ,
            PAGE_READWRITE | PAGE_GUARD,
            PAGE_EXECUTE_READWRITE,
            PAGE_READWRITE | PAGE_WRITECOMBINE,
            PAGE_READWRITE,
        ] {
            fx.protect(a, 2 * P, p).unwrap();
            if Protection::from_bits_retain(p).can_read() && p & PAGE_GUARD == 0 {
                assert_eq!(fx.read_vec(a, 2 * P), pattern, "after protect {p:#x}");
            }
        }
        assert_eq!(fx.read_vec(a, 2 * P), pattern);
        // Recommitting committed pages keeps data too.
        fx.commit(a, 2 * P, PAGE_READONLY);
        assert_eq!(fx.read_vec(a, 2 * P), pattern);
    }

    /// A failed call changes nothing: one failing call of every kind against a populated
    /// window leaves the query walk, the totals and every readable byte as they were.
    fn failed_calls_change_nothing(fx: &Fx) {
        let a = fx.reserve(0, 8 * P, PAGE_READWRITE);
        fx.commit(a + P, 3 * P, PAGE_READWRITE);
        fx.write(a + P, &[1; 3 * P]);
        fx.protect(a + 3 * P, P, PAGE_READONLY).unwrap();
        let b = fx.reserve_commit(G, G, PAGE_EXECUTE_READWRITE);
        fx.write(b, &[2; 100]);
        let ww = fx.alloc(fx.w + 2 * G, 4 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE).unwrap();
        fx.write(ww, &[3]);
        let before = fx.snapshot();
        type Call<'a> = Box<dyn Fn() -> u32 + 'a>;
        let failing: Vec<(&str, Call)> = vec![
            ("reserve over a reservation", Box::new(|| code(&fx.alloc(a + P, P, MEM_RESERVE, PAGE_READWRITE)))),
            ("reserve+commit straddling", Box::new(|| code(&fx.alloc(a + G - P, 2 * G, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE)))),
            ("commit across two reservations", Box::new(|| code(&fx.alloc(a + 7 * P, G, MEM_COMMIT, PAGE_READONLY)))),
            ("commit past the end", Box::new(|| code(&fx.alloc(a, 9 * P, MEM_COMMIT, PAGE_READONLY)))),
            ("commit with a bad protection", Box::new(|| code(&fx.alloc(a, P, MEM_COMMIT, PAGE_WRITECOPY)))),
            ("commit with a bad type", Box::new(|| code(&fx.alloc(a, P, MEM_COMMIT | MEM_RESET, PAGE_READWRITE)))),
            ("reset past the end", Box::new(|| code(&fx.alloc(a, 9 * P, MEM_RESET, PAGE_READWRITE)))),
            ("decommit across two reservations", Box::new(|| code(&fx.free(a + P, G, MEM_DECOMMIT)))),
            ("release not at the base", Box::new(|| code(&fx.free(a + P, 0, MEM_RELEASE)))),
            ("release with a size", Box::new(|| code(&fx.free(a, 8 * P, MEM_RELEASE)))),
            ("decommit|release", Box::new(|| code(&fx.free(a, 0, MEM_DECOMMIT | MEM_RELEASE)))),
            ("protect over reserved pages", Box::new(|| code(&fx.protect(a, 4 * P, PAGE_READONLY)))),
            ("protect over a reserved tail", Box::new(|| code(&fx.protect(a + P, 4 * P, PAGE_READONLY)))),
            ("protect across two reservations", Box::new(|| code(&fx.protect(b + G - P, 2 * P, PAGE_READONLY)))),
            ("protect with WRITECOPY", Box::new(|| code(&fx.protect(a + P, P, PAGE_WRITECOPY)))),
            ("write to a read-only page", Box::new(|| fx.space.write(a + 3 * P - 1, &[9, 9]).map_or(1, |_| 0))),
            ("write into reserved pages", Box::new(|| fx.space.write(a + 4 * P, &[9, 9]).map_or(1, |_| 0))),
            ("read of reserved pages", Box::new(|| fx.space.read(a, &mut [0; 2]).map_or(1, |_| 0))),
            ("write watch past the end", Box::new(|| code(&fx.space.get_write_watch(WriteWatchFlags::RESET, ww, 5 * P, 16)))),
            ("reset write watch without write watch", Box::new(|| code(&fx.space.reset_write_watch(a, P)))),
        ];
        for (what, call) in failing {
            assert_ne!(call(), 0, "{what} should fail");
            assert_eq!(fx.snapshot(), before, "{what} changed the space");
        }
        // The write-watch state is untouched too: the written page is still dirty.
        assert_eq!(fx.space.get_write_watch(WriteWatchFlags::empty(), ww, 4 * P, 16), Ok(vec![ww]));
    }

    /// Only committed, accessible pages may be touched: nothing lies at or above the top
    /// of the user range, so an access there faults, also one that starts at the last
    /// address (`usize::MAX`, where the access's end does not fit in a `usize`: such a
    /// read and write had succeeded, storing the bytes) or that runs off the top from a
    /// committed page below it; the fault names the first byte that may not be touched.
    fn accesses_at_or_past_the_top_of_the_space_fault(fx: &Fx) {
        let top = fx.space.system_info().maximum_application_address + 1;
        let av = |address: usize, access: AccessKind| Err(Error::AccessViolation { address, access });
        let mut two = [0u8; 2];
        for at in [usize::MAX, usize::MAX - 1, top, top + P] {
            assert_eq!(fx.space.write(at, &[1, 2]), av(at, AccessKind::Write), "write at {at:#x}");
            assert_eq!(fx.space.read(at, &mut two), av(at, AccessKind::Read), "read at {at:#x}");
            assert_eq!(fx.space.execute(at, &mut two), av(at, AccessKind::Execute), "execute at {at:#x}");
        }
        // An access of no bytes touches nothing, there as anywhere.
        assert_eq!(fx.space.read(usize::MAX, &mut []), Ok(()));
        assert_eq!(fx.space.write(top + P, &[]), Ok(()));
        // Wrapping past the last address from the free page just below it.
        assert_eq!(fx.space.read(usize::MAX - 1, &mut [0u8; 4]), av(usize::MAX - 1, AccessKind::Read));
        // From the last committed page of the space across its top.
        let last = top - G;
        let placed = fx.alloc(last, G, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).is_ok();
        // (On Linux the top of the user range may hold the stack or another mapping.)
        assert!(placed || fx.kind != Kind::Sim, "the simulated space's last granule is free");
        if placed {
            fx.write(top - 4, &[9; 4]);
            assert_eq!(fx.space.write(top - 2, &[1; 4]), av(top, AccessKind::Write));
            assert_eq!(fx.space.read(top - 2, &mut [0u8; 4]), av(top, AccessKind::Read));
            assert_eq!(fx.read_vec(top - 4, 4), vec![9; 4], "the failed write wrote nothing");
        }
    }

    /// "Committed pages read as zero the first time after each commit": also when the
    /// address range was used before, by a reservation released with data in it (which a
    /// backend may keep mapped for reuse), and the new reservation is made reserve-only,
    /// at the same address or anywhere (NULL), then committed page by page or at once,
    /// with or without write watch, read-write or read-only.
    fn commits_in_reused_address_space_read_zero(fx: &Fx) {
        for round in 0..6 {
            let size = [P, 3 * P, G, 2 * G + P, 5 * P, G][round];
            let (ty_old, ty_new) = match round % 3 {
                0 => (MEM_RESERVE | MEM_COMMIT, MEM_RESERVE),
                1 => (MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, MEM_RESERVE),
                _ => (MEM_RESERVE | MEM_COMMIT, MEM_RESERVE | MEM_WRITE_WATCH),
            };
            let a = fx.alloc(0, size, ty_old, PAGE_READWRITE).unwrap();
            fx.write(a, &vec![0xEE; size]);
            fx.protect(a, P, PAGE_READONLY).unwrap();
            fx.free(a, 0, MEM_RELEASE).unwrap();
            let at = if round < 3 { a } else { 0 };
            let b = fx.alloc(at, size, ty_new, PAGE_READWRITE).unwrap();
            if round < 3 {
                assert_eq!(b, a);
            }
            for page in (b..b + size).step_by(P).rev() {
                let p = if page == b { PAGE_READONLY } else { PAGE_READWRITE };
                fx.commit(page, P, p);
                assert_eq!(fx.read_vec(page, P), vec![0; P], "round {round}: page {:#x} after its commit", page - b);
            }
            fx.free(b, 0, MEM_RELEASE).unwrap();
            let c = fx.alloc(at, size, MEM_RESERVE, PAGE_READWRITE).unwrap();
            fx.commit(c, size, PAGE_EXECUTE_READ);
            assert_eq!(fx.read_vec(c, size), vec![0; size], "round {round}: committed at once");
            fx.free(c, 0, MEM_RELEASE).unwrap();
        }
    }

    /// A PAGE_EXECUTE page can be read, as on Windows x64, where execute access implies
    /// read access on every processor (the spec lists PAGE_EXECUTE without saying; Windows
    /// Internals: "execution (and read operations on all existing processors) is
    /// permitted"; Wine 8 reads it too, and the conformance record says
    /// `read probe +0x5000 execute: ok`). Writes still fault, and so does a read of
    /// PAGE_EXECUTE|PAGE_GUARD once (the guard), then it succeeds; NOCACHE and
    /// WRITECOMBINE change nothing. (Checked reads of such pages had raised
    /// STATUS_ACCESS_VIOLATION on both backends.)
    fn execute_pages_are_readable(fx: &Fx) {
        for (i, p) in [PAGE_EXECUTE, PAGE_EXECUTE | PAGE_NOCACHE, PAGE_EXECUTE | PAGE_WRITECOMBINE, PAGE_EXECUTE | PAGE_GUARD]
            .into_iter()
            .enumerate()
        {
            let a = fx.reserve_commit(i * G, 2 * P, PAGE_READWRITE);
            fx.write(a + P - 2, b"code");
            fx.protect(a, 2 * P, p).unwrap();
            let mut buf = [0u8; 4];
            if p & PAGE_GUARD != 0 {
                let e = fx.space.read(a + P - 2, &mut buf).unwrap_err();
                assert_eq!(e, Error::GuardPage { address: a + P - 2, access: AccessKind::Read }, "{p:#x}");
                let e = fx.space.read(a + P - 2, &mut buf).unwrap_err();
                assert_eq!(e, Error::GuardPage { address: a + P, access: AccessKind::Read }, "{p:#x}");
            }
            assert_eq!(fx.space.read(a + P - 2, &mut buf), Ok(()), "read of {p:#x} pages");
            assert_eq!(&buf, b"code");
            let e = fx.space.write(a, b"x").unwrap_err();
            assert_eq!(e, Error::AccessViolation { address: a, access: AccessKind::Write }, "{p:#x}");
            assert_eq!(fx.space.check(a, 2 * P, AccessKind::Read), Ok(()));
        }
        // A read running from code into data and from data into code, as a disassembler
        // or a relocation pass reads.
        let a = fx.reserve_commit(4 * G, 4 * P, PAGE_READWRITE);
        fx.write(a, &vec![0x33; 4 * P]);
        fx.protect(a + P, P, PAGE_EXECUTE).unwrap();
        fx.protect(a + 2 * P, P, PAGE_READONLY).unwrap();
        fx.protect(a + 3 * P, P, PAGE_EXECUTE | PAGE_NOCACHE).unwrap();
        assert_eq!(fx.read_vec(a + P - 8, 3 * P), vec![0x33; 3 * P], "data, code, data, code");
        assert_eq!(fx.read_vec(a + 10, 4 * P - 20), vec![0x33; 4 * P - 20]);
    }
}

/// On Linux the spec's page states are real: the kernel's mappings of a reservation
/// follow commit, protection, guard and release (and cover the whole granule, so nobody
/// else can map its blocked tail); decommitted pages are dropped.
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn linux_real_mappings_follow_page_states() {
    use crate::common::linux::mappings;
    let fx = Fx::linux();
    let a = fx.reserve(0, 4 * P, PAGE_READWRITE);
    let m = |r: std::ops::Range<usize>| -> Vec<(usize, usize, String)> { mappings(r) };
    assert_eq!(m(a..a + G), vec![(a, a + G, "---p".to_string())]);
    fx.commit(a, P, PAGE_READWRITE);
    fx.commit(a + P, P, PAGE_READONLY);
    fx.commit(a + 2 * P, P, PAGE_READWRITE | PAGE_GUARD);
    fx.commit(a + 3 * P, P, PAGE_EXECUTE_READ);
    let s = |x: &str| x.to_string();
    assert_eq!(
        m(a..a + G),
        vec![
            (a, a + P, s("rw-p")),
            (a + P, a + 2 * P, s("r--p")),
            (a + 2 * P, a + 3 * P, s("---p")),
            (a + 3 * P, a + 4 * P, s("r-xp")),
            (a + 4 * P, a + G, s("---p")),
        ]
    );
    // The guard fires once, then the page is what its base protection says.
    assert!(fx.space.read(a + 2 * P, &mut [0]).is_err());
    assert_eq!(m(a + 2 * P..a + 3 * P), vec![(a + 2 * P, a + 3 * P, s("rw-p"))]);
    // Decommitted pages are dropped (not resident); the backend makes them fault either
    // with PROT_NONE or with guard markers, which /proc/self/maps does not show.
    fx.free(a, 2 * P, MEM_DECOMMIT).unwrap();
    let mut resident = [0u8; 2];
    // SAFETY: mincore only reads the page-table state of two pages of our reservation
    // and writes two bytes into `resident`.
    let r = unsafe { libc::mincore(a as *mut libc::c_void, 2 * P, resident.as_mut_ptr()) };
    assert_eq!((r, resident[0] & 1, resident[1] & 1), (0, 0, 0), "decommitted pages are dropped");
    assert!(fx.space.read(a, &mut [0]).is_err());
    assert!(!crate::common::linux::readable(a) && !crate::common::linux::readable(a + P));
    assert!(crate::common::linux::readable(a + 2 * P));
    fx.free(a, 0, MEM_RELEASE).unwrap();
    // Released: nothing readable is left (the backend may keep the range mapped,
    // inaccessible, for reuse).
    assert!((a..a + G).step_by(P).all(|p| !crate::common::linux::readable(p)), "released pages are inaccessible");
}
