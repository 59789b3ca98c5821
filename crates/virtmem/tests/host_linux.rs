//! The host memory manager over this process's real memory.
#![cfg(all(target_os = "linux", not(miri)))]

use virtmem::host::{CriticalLevel, HostError, MallocType};
use virtmem::{AllocationType, FreeType, MemState, Protection};

mod common;
mod host_util;
use host_util::linux_host as host;

const P: usize = 4096;
const RW: Protection = Protection::READWRITE;
const TASK: CriticalLevel = CriticalLevel::Task;

#[test]
fn committed_memory_is_real_and_charged() {
    let (space, m) = host(16 * P);
    let base = m.virtual_alloc(0, 64 * P, AllocationType::RESERVE, RW, TASK).unwrap();
    m.virtual_alloc(base, 16 * P, AllocationType::COMMIT, RW, TASK).unwrap();
    // SAFETY: 16 committed read-write pages at `base`, ours alone.
    let mem = unsafe { std::slice::from_raw_parts_mut(base as *mut u8, 16 * P) };
    mem.fill(0x5A);
    assert!(mem.iter().all(|&b| b == 0x5A));
    assert_eq!(m.virtual_alloc(base + 16 * P, P, AllocationType::COMMIT, RW, TASK), Err(HostError::OutOfMemory));
    m.virtual_free(base, 8 * P, FreeType::DECOMMIT).unwrap();
    assert_eq!(m.stats().budget.used, 8 * P);
    m.virtual_alloc(base, P, AllocationType::COMMIT, RW, TASK).unwrap();
    // SAFETY: recommitted: reads as zero again.
    assert_eq!(unsafe { *(base as *const u8) }, 0);
    assert_eq!(m.virtual_protect(base + 8 * P, P, Protection::READONLY), Ok(RW));
    assert_eq!(m.virtual_query(base + 8 * P).unwrap().protect, Protection::READONLY);
    m.virtual_free(base, 0, FreeType::RELEASE).unwrap();
    assert_eq!(m.stats().budget.used, 0);
    assert_eq!(space.reserved_bytes(), 0);
}

#[test]
fn memory_of_other_allocators_is_refused_and_left_untouched() {
    let (_space, m) = host(1 << 20);
    let boxed = Box::new([0x11u8; 3 * P]);
    let on_heap = boxed.as_ptr() as usize;
    let on_stack = &m as *const _ as usize;
    let code = committed_memory_is_real_and_charged as *const () as usize;
    // In a window of this test's own: a mapping the kernel placed could be replaced, as
    // soon as it is unmapped below, by another thread's (the kernel puts a new mapping
    // without an address at the highest free place, where the unmapped one just was).
    let at = common::linux::window(4 * P);
    // SAFETY: a fresh anonymous mapping that only this test uses, where nothing is mapped
    // (MAP_FIXED_NOREPLACE never replaces a mapping).
    let mapped = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            4 * P,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(mapped as usize, at);
    let mapped = mapped as usize;
    // SAFETY: the mapping is 4 pages of read-write memory.
    unsafe { *(mapped as *mut u8) = 0x22 };
    let io = Err(HostError::InvalidOperation);
    for addr in [on_heap, on_stack, code, mapped] {
        assert_eq!(m.virtual_free(addr, 0, FreeType::RELEASE), io, "{addr:#x}");
        assert_eq!(m.virtual_free(addr & !(P - 1), P, FreeType::DECOMMIT), io, "{addr:#x}");
        assert_eq!(m.virtual_query(addr).map(|_| ()), io, "{addr:#x}");
        assert_eq!(m.virtual_protect(addr, 1, Protection::NOACCESS).map(|_| ()), io, "{addr:#x}");
        assert_eq!(m.virtual_alloc(addr, 1, AllocationType::COMMIT, RW, TASK).map(|_| ()), io, "{addr:#x}");
    }
    // Still there, still accessible.
    assert!(boxed.iter().all(|&b| b == 0x11));
    // SAFETY: still mapped read-write (the calls above were refused).
    assert_eq!(unsafe { *(mapped as *const u8) }, 0x22);
    // SAFETY: as above.
    unsafe { *(mapped as *mut u8) = 0x23 };
    // SAFETY: unmapping our own mapping.
    assert_eq!(unsafe { libc::munmap(mapped as *mut libc::c_void, 4 * P) }, 0);
    // Free address space (just unmapped) is described as free.
    assert_eq!(m.virtual_query(mapped).map(|q| q.state), Ok(MemState::Free));
    // The heap refuses pointers of the system allocator.
    let heap = m.create_malloc(MallocType::empty()).unwrap();
    assert_eq!(heap.free(on_heap), Err(HostError::InvalidOperation));
    assert!(boxed.iter().all(|&b| b == 0x11));
}

#[test]
fn heap_blocks_are_real_memory() {
    let (space, m) = host(64 << 20);
    let heap = m.create_malloc(MallocType::THREADSAFE).unwrap();
    let mut blocks = Vec::new();
    for i in 0..2000usize {
        let size = [8, 24, 100, 700, 2048, 3000, 65536][i % 7];
        let b = heap.alloc(size, TASK).unwrap();
        // SAFETY: a live block of `size` bytes in committed read-write memory.
        unsafe { std::ptr::write_bytes(b as *mut u8, i as u8, size) };
        blocks.push((b, size, i as u8));
    }
    for &(b, size, v) in &blocks {
        // SAFETY: as above; no block overlaps another, so each still holds its fill.
        let mem = unsafe { std::slice::from_raw_parts(b as *const u8, size) };
        assert!(mem.iter().all(|&x| x == v), "block {b:#x} was overwritten");
    }
    assert_eq!(space.committed_bytes(), m.stats().budget.heap_committed);
    for (b, _, _) in blocks {
        heap.free(b).unwrap();
    }
    drop(heap);
    assert_eq!(space.committed_bytes(), 0);
    assert_eq!(m.stats().budget.used, 0);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn executable_heap_blocks_run() {
    let (_space, m) = host(1 << 20);
    let heap = m.create_malloc(MallocType::EXECUTABLE).unwrap();
    let code: [u8; 6] = [0xB8, 42, 0, 0, 0, 0xC3]; // mov eax, 42; ret
    for size in [16, 5000] {
        let p = heap.alloc(size, TASK).unwrap();
        // SAFETY: a live block of at least 16 bytes, writable and executable.
        let f: extern "C" fn() -> u32 = unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), p as *mut u8, code.len());
            std::mem::transmute(p)
        };
        assert_eq!(f(), 42);
        heap.free(p).unwrap();
    }
}

/// The host spec's HRESULT rules on real memory, as over a simulated space
/// (host_manager.rs): Win32 errors of the space are HRESULT_FROM_WIN32 (a release inside
/// a reservation, a protect of reserved pages with `*old` PAGE_NOACCESS: 0x800701E7),
/// ERROR_INVALID_PARAMETER is E_INVALIDARG (bad size, type, protection, free type; a query
/// above the top of user space), and the Win32 flag combinations work through the host,
/// charged by what they commit; the ones real memory cannot give (write watch without
/// the kernel's support, large pages none are reserved for) fail with their clear error
/// and charge nothing. No failure charges, refunds or disables anything.
#[test]
fn win32_semantics_and_hresults_on_real_memory() {
    use virtmem::Error;
    let (space, m) = host(16 << 20);
    let used = |m: &virtmem::host::HostMemoryManager| m.stats().budget.used;
    let base = m.virtual_alloc(0, 16 * P, AllocationType::RESERVE, RW, TASK).unwrap();
    let e487 = HostError::Win32(Error::InvalidAddress);
    assert_eq!(m.virtual_free(base + P, 0, FreeType::RELEASE), Err(e487));
    assert_eq!(e487.hresult() as u32, 0x8007_01E7);
    assert_eq!(m.virtual_protect_detailed(base, P, RW), Err((e487, Some(Protection::NOACCESS))));
    assert_eq!(m.virtual_alloc(base + 15 * P, 2 * P, AllocationType::COMMIT, RW, TASK), Err(e487));
    let ia = Err(HostError::InvalidArg);
    assert_eq!(m.virtual_alloc(0, 0, AllocationType::COMMIT, RW, TASK).map(|_| ()), ia);
    let bad = Protection::from_bits_retain(3);
    assert_eq!(m.virtual_alloc(0, P, AllocationType::COMMIT, bad, TASK).map(|_| ()), ia);
    assert_eq!(m.virtual_alloc(0, P, AllocationType::TOP_DOWN, RW, TASK).map(|_| ()), ia);
    assert_eq!(m.virtual_free(base, P, FreeType::RELEASE), ia);
    assert_eq!(m.virtual_free(base, P, FreeType::from_bits_retain(0)), ia);
    assert_eq!(m.virtual_protect(base, P, Protection::WRITECOPY).map(|_| ()), ia);
    assert_eq!(m.virtual_query(usize::MAX).map(|_| ()), ia);
    assert_eq!(used(&m), 0);
    let rc = AllocationType::RESERVE | AllocationType::COMMIT;
    let top = m.virtual_alloc(0, 4 * P, rc | AllocationType::TOP_DOWN, RW, TASK).unwrap();
    assert_eq!(used(&m), 4 * P);
    let mut charged = 4 * P;
    let mut made = vec![base, top];
    match m.virtual_alloc(0, 4 * P, rc | AllocationType::WRITE_WATCH, RW, TASK) {
        Ok(ww) => {
            charged += 4 * P;
            made.push(ww);
            space.write(ww + 2 * P, b"w").unwrap();
            assert_eq!(space.get_write_watch(virtmem::WriteWatchFlags::empty(), ww, 4 * P, 8), Ok(vec![ww + 2 * P]));
        }
        Err(e) => assert_eq!(e, HostError::Win32(Error::NotSupported), "write watch the kernel cannot do"),
    }
    assert_eq!(used(&m), charged);
    let lp = space.system_info().large_page_size.max(2 << 20);
    match m.virtual_alloc(0, lp, rc | AllocationType::LARGE_PAGES, RW, TASK) {
        Ok(l) => {
            charged += lp;
            made.push(l);
            assert_eq!(l % lp, 0);
        }
        Err(e) => assert!(
            [HostError::Win32(Error::NoSystemResources), HostError::Win32(Error::NotSupported)].contains(&e),
            "large pages that cannot be had: {e:?}"
        ),
    }
    assert_eq!(used(&m), charged);
    let phys = m.virtual_alloc(0, 16 * P, AllocationType::PHYSICAL | AllocationType::RESERVE, RW, TASK).unwrap();
    made.push(phys);
    assert_eq!(used(&m), charged, "an AWE reservation commits nothing");
    space.write(top, b"keep").unwrap();
    assert_eq!(m.virtual_alloc(top, 4 * P, AllocationType::RESET, RW, TASK), Ok(top));
    let undo = m.virtual_alloc(top, 4 * P, AllocationType::RESET_UNDO, RW, TASK);
    let mut kept = [0u8; 4];
    space.read(top, &mut kept).unwrap();
    match undo {
        Ok(p) => assert_eq!((p, &kept), (top, b"keep"), "a successful undo: the data intact"),
        Err(e) => assert_eq!(e, HostError::Win32(Error::DataDiscarded), "a failed undo: data lost"),
    }
    assert_eq!(m.virtual_query(top).map(|q| (q.state, q.region_size)), Ok((MemState::Commit, 4 * P)));
    assert_eq!(used(&m), charged, "MEM_RESET and MEM_RESET_UNDO charge and refund nothing");
    for b in made {
        m.virtual_free(b, 0, FreeType::RELEASE).unwrap();
    }
    assert_eq!(used(&m), 0);
    assert_eq!(m.lifecycle(), virtmem::host::Lifecycle::Running);
}
