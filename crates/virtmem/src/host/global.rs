//! [`HostGlobalAlloc`]: a Rust global allocator that puts a program's whole heap under a
//! host memory manager's budget.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use super::heap::HostMalloc;
use super::{inside, CriticalLevel};

/// A [`GlobalAlloc`] over a [`HostMalloc`]: once [installed](HostGlobalAlloc::install),
/// every allocation of the program comes from the heap, so it is charged to the manager's
/// budget, and an allocation the budget refuses makes the program fail as out of memory
/// (`handle_alloc_error`).
///
/// ```no_run
/// use std::sync::Arc;
/// use virtmem::host::{HostGlobalAlloc, HostMemoryManager, MallocType};
///
/// #[global_allocator]
/// static HEAP: HostGlobalAlloc = HostGlobalAlloc::new();
///
/// let space = Arc::new(virtmem::LinuxSpace::linux().unwrap());
/// let host = HostMemoryManager::builder(space, 256 << 20).build_started().unwrap();
/// let heap = host.create_malloc(MallocType::THREADSAFE).unwrap();
/// // SAFETY: the space is this process's real memory.
/// unsafe { HEAP.install(heap) }.unwrap();
/// let v = vec![0u8; 1 << 20]; // charged to the budget
/// ```
///
/// Before `install`, and for the manager's own bookkeeping (allocations made while a
/// thread is inside the manager), the system allocator is used; `dealloc` sends every
/// pointer back to whichever allocator it came from. A block of the heap freed while its
/// thread is inside the manager is queued and freed at that thread's or another thread's
/// next allocator call.
///
/// A panic inside the heap during `alloc` or `dealloc` (such as a memory-notification
/// callback of the program's that panics: a commit that crosses a threshold calls them on
/// the allocating thread) aborts the process: a global allocator must never unwind.
pub struct HostGlobalAlloc {
    heap: OnceLock<HostMalloc>,
    level: CriticalLevel,
    /// Blocks whose free was deferred: a stack linked through their first word.
    deferred: AtomicPtr<u8>,
}

impl Default for HostGlobalAlloc {
    fn default() -> Self {
        HostGlobalAlloc::new()
    }
}

impl std::fmt::Debug for HostGlobalAlloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostGlobalAlloc").field("installed", &self.heap.get().is_some()).finish()
    }
}

impl HostGlobalAlloc {
    /// An allocator that uses the system allocator until a heap is installed; its
    /// requests are task-critical.
    pub const fn new() -> HostGlobalAlloc {
        HostGlobalAlloc::with_level(CriticalLevel::Task)
    }

    /// [`HostGlobalAlloc::new`] with requests of critical level `level` (a process-critical
    /// allocator waits for memory before failing).
    pub const fn with_level(level: CriticalLevel) -> HostGlobalAlloc {
        HostGlobalAlloc { heap: OnceLock::new(), level, deferred: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// From now on, allocate from `heap`. Only one heap can ever be installed; a second
    /// call gives its heap back.
    ///
    /// # Safety
    /// The heap's manager must run over the current process's real memory (a space whose
    /// addresses the program can dereference), and its reservations must stay mapped for
    /// as long as the program uses the blocks: the manager must not be shut down while
    /// blocks are in use (frees would then fail and leak) and the heap is never dropped.
    pub unsafe fn install(&self, heap: HostMalloc) -> Result<(), HostMalloc> {
        self.heap.set(heap)
    }

    /// The installed heap.
    pub fn heap(&self) -> Option<&HostMalloc> {
        self.heap.get()
    }

    fn drain(&self, heap: &HostMalloc) {
        if self.deferred.load(Ordering::Relaxed).is_null() {
            return;
        }
        let mut p = self.deferred.swap(std::ptr::null_mut(), Ordering::Acquire);
        while !p.is_null() {
            // SAFETY: every queued block is a live block of the heap whose first word
            // `defer` overwrote with the link (blocks are at least 16 bytes, 16-aligned).
            let next = unsafe { *(p as *mut *mut u8) };
            let _ = heap.free(p as usize);
            p = next;
        }
    }

    fn defer(&self, p: *mut u8) {
        let mut head = self.deferred.load(Ordering::Relaxed);
        loop {
            // SAFETY: `p` is a block of the heap being freed, at least 16 bytes, aligned
            // and in real memory (the `install` contract); nobody else uses it now.
            unsafe { *(p as *mut *mut u8) = head };
            match self.deferred.compare_exchange_weak(head, p, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }
}

/// Aborts the process if dropped: held across a call of the heap from `alloc` or
/// `dealloc` and forgotten when the call returns, so that a panic inside it never unwinds
/// out of the allocator. `GlobalAlloc` forbids unwinding ("undefined behavior if global
/// allocators unwind"), and the heap's calls run the program's own code: a commit that
/// crosses a notification threshold calls the memory-notification callbacks on the
/// allocating thread, and a callback may panic.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        // Only reached while unwinding (see above). The panic message is already printed.
        std::process::abort();
    }
}

// SAFETY: blocks come either from the system allocator or from the heap, which returns
// distinct blocks of at least the requested size and alignment (or an error, reported as
// null); `dealloc` routes each pointer to the allocator that owns it; and neither
// unwinds (`AbortOnUnwind`).
unsafe impl GlobalAlloc for HostGlobalAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(heap) = self.heap.get() {
            if !inside() {
                let guard = AbortOnUnwind;
                self.drain(heap);
                let p = match heap.alloc_aligned(layout.size(), layout.align(), self.level) {
                    Ok(p) => p as *mut u8,
                    Err(_) => std::ptr::null_mut(),
                };
                std::mem::forget(guard);
                return p;
            }
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(heap) = self.heap.get() {
            let guard = AbortOnUnwind;
            if heap.owns_raw(ptr as usize) {
                if inside() {
                    self.defer(ptr);
                } else {
                    self.drain(heap);
                    let _ = heap.free(ptr as usize);
                }
                std::mem::forget(guard);
                return;
            }
            std::mem::forget(guard);
        }
        // SAFETY: not the heap's, so it came from the system allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}
