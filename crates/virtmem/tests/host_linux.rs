//! The host memory manager over this process's real memory.
#![cfg(all(target_os = "linux", not(miri)))]

use virtmem::host::{CriticalLevel, HostError, MallocType};
use virtmem::{AllocationType, FreeType, MemState, Protection};

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
    // SAFETY: a fresh anonymous mapping that only this test uses.
    let mapped = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4 * P,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(mapped, libc::MAP_FAILED);
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
