//! The kernel's cap on mappings (`vm.max_map_count`): at the wall, a call that needs
//! more mappings fails with ERROR_NOT_ENOUGH_MEMORY and changes nothing, while a
//! decommit with guard markers (which splits no mapping) still works. Runs in a child
//! process of its own, which it fills with mappings up to the cap.
#![cfg(target_os = "linux")]

mod linux_util;

use linux_util::*;
use virtmem::{AllocationType as T, Error, FreeType, LinuxOptions, LinuxSpace, MemState, Protection as P};

const KB: usize = 1024;
const CHILD: &str = "VIRTMEM_MAP_COUNT_CHILD";

/// Map single pages with alternating protections (so that none merge) until the
/// kernel refuses: the process is then exactly at its mapping cap.
fn fill_to_the_cap() -> Vec<usize> {
    let mut pages = Vec::new();
    loop {
        let prot = if pages.len() % 2 == 0 { libc::PROT_READ } else { libc::PROT_NONE };
        // SAFETY: a fresh anonymous page wherever the kernel likes.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), 4096, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        if p == libc::MAP_FAILED {
            assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOMEM));
            return pages;
        }
        pages.push(p as usize);
        assert!(pages.len() < 10_000_000);
    }
}

fn unfill(pages: Vec<usize>) {
    for p in pages {
        // SAFETY: pages mapped by fill_to_the_cap.
        unsafe { libc::munmap(p as *mut libc::c_void, 4096) };
    }
}

fn at_the_cap(options: LinuxOptions) {
    let s = LinuxSpace::linux_with(options).unwrap();
    let base = s.alloc(0, 1024 * KB, T::RESERVE, P::NOACCESS).unwrap();
    s.alloc(base, 512 * KB, T::COMMIT, P::READWRITE).unwrap();
    for a in (base..base + 512 * KB).step_by(4096) {
        store(a, 0x5A);
    }
    // Two neighbouring reservations, which the kernel merges into one mapping: freeing
    // one alone means splitting it.
    let pair = s.alloc(0, 128 * KB, T::RESERVE, P::NOACCESS).unwrap();
    s.free(pair, 0, FreeType::RELEASE).unwrap();
    assert_eq!(s.alloc(pair, 64 * KB, T::RESERVE, P::NOACCESS), Ok(pair));
    assert_eq!(s.alloc(pair + 64 * KB, 64 * KB, T::RESERVE, P::NOACCESS), Ok(pair + 64 * KB));
    assert_eq!(mappings(pair..pair + 128 * KB).len(), 1, "one kernel mapping");
    // Three neighbouring write-watched reservations, committed and written: one mapping
    // too, and freeing the middle one alone means splitting it in three (the kernel
    // lets a split that only trims a mapping through at its cap).
    let trio = s.alloc(0, 192 * KB, T::RESERVE, P::NOACCESS).unwrap();
    s.free(trio, 0, FreeType::RELEASE).unwrap();
    for (i, w) in [trio, trio + 64 * KB, trio + 128 * KB].into_iter().enumerate() {
        let rw = T::RESERVE | T::COMMIT | T::WRITE_WATCH;
        assert_eq!(s.alloc(w, 64 * KB, rw, P::READWRITE), Ok(w));
        store(w + 4096, i as u8 + 1);
    }
    let watched = trio + 64 * KB;
    assert_eq!(mappings(trio..trio + 192 * KB).len(), 1, "one kernel mapping");
    let spare = s.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS).unwrap();
    s.free(spare, 0, FreeType::RELEASE).unwrap();
    let before_walk = walk(&s, base..base + 1024 * KB);
    let before_maps = effective_mappings(base..base + 1024 * KB);

    let filler = fill_to_the_cap();
    // Needs two more mappings (a read-only page in the middle of read-write ones).
    assert_eq!(s.protect(base + 64 * KB, 4096, P::READONLY), Err(Error::NotEnoughMemory));
    // Also two (committing a page in the middle of the reserved half).
    assert_eq!(s.alloc(base + 768 * KB, 4096, T::COMMIT, P::READWRITE), Err(Error::NotEnoughMemory));
    assert_eq!(walk(&s, base..base + 1024 * KB), before_walk);
    assert_eq!(effective_mappings(base..base + 1024 * KB), before_maps);
    assert!((base..base + 512 * KB).step_by(4096).all(|a| load(a) == 0x5A));

    // A decommit in the middle: guard markers split nothing, mprotect would.
    let hole = base + 128 * KB..base + 192 * KB;
    let r = s.free(hole.start, hole.len(), FreeType::DECOMMIT);
    if s.backend().uses_guard_regions() {
        assert_eq!(r, Ok(()));
        assert_eq!(s.query(hole.start).unwrap().state, MemState::Reserve);
        // And recommitting it splits nothing either.
        assert_eq!(s.alloc(hole.start, hole.len(), T::COMMIT, P::READWRITE), Ok(hole.start));
        assert_eq!(load(hole.start), 0);
    } else {
        assert_eq!(r, Err(Error::NotEnoughMemory));
        assert_eq!(walk(&s, base..base + 1024 * KB), before_walk);
        assert!(hole.clone().step_by(4096).all(|a| load(a) == 0x5A));
    }
    // A new reservation: from the pool if it has one, else mmap fails cleanly.
    let r = s.alloc(0, 64 * KB, T::RESERVE, P::NOACCESS);
    if options.pool_bytes > 0 {
        assert_eq!(r, Ok(spare));
    } else {
        assert_eq!(r, Err(Error::NotEnoughMemory));
        assert_eq!(s.stats().reservations, 6, "base, the pair and the three");
    }
    // Releasing one of the pair: where a release unmaps, the kernel refuses the split,
    // and the range is pooled instead; either way the release works.
    assert_eq!(s.free(pair, 0, FreeType::RELEASE), Ok(()));
    assert_eq!(s.query(pair).unwrap().state, MemState::Free);
    assert_eq!(s.query(pair + 64 * KB).unwrap().state, MemState::Reserve);
    // Releasing the middle one of the write-watched three: with guard regions it is
    // parked in the pool the same way (guard markers split nothing); without them it
    // fails and changes nothing.
    let r = s.free(watched, 0, FreeType::RELEASE);
    if s.backend().uses_guard_regions() {
        assert_eq!(r, Ok(()));
        assert_eq!(s.query(watched).unwrap().state, MemState::Free);
    } else {
        assert_eq!(r, Err(Error::NotEnoughMemory));
        assert_eq!(s.query(watched).unwrap().state, MemState::Commit);
        assert_eq!(load(watched + 4096), 2);
    }
    for (i, w) in [trio, trio + 128 * KB].into_iter().enumerate() {
        let n = if i == 0 { 1 } else { 3 };
        assert_eq!(load(w + 4096), n, "the neighbours keep their data");
        let dirty = s.get_write_watch(virtmem::WriteWatchFlags::empty(), w, 64 * KB, 16);
        assert_eq!(dirty, Ok(vec![w + 4096]), "and their tracking");
    }
    unfill(filler);
    for w in [trio, watched, trio + 128 * KB] {
        if s.query(w).unwrap().state != MemState::Free {
            s.free(w, 0, FreeType::RELEASE).unwrap();
        }
    }
    assert_eq!(s.alloc(pair, 64 * KB, T::RESERVE, P::NOACCESS), Ok(pair), "reusable");
    s.free(pair, 0, FreeType::RELEASE).unwrap();
    s.free(pair + 64 * KB, 0, FreeType::RELEASE).unwrap();
    // Room again: everything works.
    s.protect(base + 64 * KB, 4096, P::READONLY).unwrap();
    s.free(base, 0, FreeType::RELEASE).unwrap();
}

#[test]
fn the_mapping_cap_is_a_clean_out_of_memory() {
    if in_child(CHILD, "the_mapping_cap_is_a_clean_out_of_memory") {
        return;
    }
    at_the_cap(LinuxOptions::default());
    at_the_cap(LinuxOptions { pool_bytes: 0, guard_regions: false });
}
