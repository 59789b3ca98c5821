//! `FlushInstructionCache` in the Rust API (`AddressSpace::flush_instruction_cache`,
//! `VirtualSpace::flush_instruction_cache`, `win32::FlushInstructionCache`), the code the
//! C library's `FlushInstructionCache` now calls.
//!
//! This machine is x86-64, where instruction fetches see stores and the engine looks at
//! nothing. So the walk a processor with an incoherent instruction cache (AArch64) needs
//! is tested through a backend that says it needs one and records what it is asked to
//! synchronise: exactly the committed, readable, unguarded, not execute-only pieces of
//! the range, clipped to it, on the simulated backend and over real memory (where the
//! program's own code counts too). On real memory, code written, flushed and run.

#![allow(clippy::single_range_in_vec_init)] // lists of synchronised ranges, one range long

#[macro_use]
mod forward;
#[cfg(all(target_os = "linux", not(miri), any(target_arch = "x86_64", target_arch = "aarch64")))]
mod jit;

use std::ops::Range;
use std::sync::Mutex;

use virtmem::backend::Backend;
use virtmem::{
    win32, AddressSpace, AllocationType as T, Error, FreeType as F, MemState, Protection as Pr, SimBackend, SimSpace,
    VirtualSpace,
};

const P: usize = 4096;

/// Backend `B`, but one whose instruction fetches may miss stores (`need`), recording
/// each range it is asked to synchronise before passing it on.
struct Recording<B> {
    inner: B,
    need: bool,
    synced: Mutex<Vec<Range<usize>>>,
}

impl<B> Recording<B> {
    fn new(inner: B, need: bool) -> Recording<B> {
        Recording { inner, need, synced: Mutex::new(Vec::new()) }
    }
    /// The ranges synchronised since the last call.
    fn take(&self) -> Vec<Range<usize>> {
        std::mem::take(&mut *self.synced.lock().unwrap())
    }
}

impl<B: Backend> Backend for Recording<B> {
    forward!(inner: limits, initial_blocked, initial_avoided, cheap_range, inline_effects, reserve, release, release_committed, set_access, discard, decommit, reset, reset_undo, lock, unlock, read, write, prepare_write, keeps_grants, grant, try_read, try_write, dirty_pages, clear_dirty, foreign, try_foreign);
    fn instructions_need_sync(&self) -> bool {
        self.need
    }
    fn sync_instructions(&self, range: Range<usize>) {
        self.synced.lock().unwrap().push(range.clone());
        self.inner.sync_instructions(range)
    }
}

/// A reservation of 16 pages: page 0 reserved, 1-2 read-write, 3 execute-read, 4
/// execute-only, 5 read-write guard, 6 no-access, 7 read-only, 8 execute-read-write,
/// 9 decommitted, the rest reserved. Returns its base.
fn code_heap<S: VirtualSpace + ?Sized>(s: &S) -> usize {
    let base = s.alloc(0, 16 * P, T::RESERVE, Pr::NOACCESS).unwrap();
    for (page, n, prot) in [
        (1, 2, Pr::READWRITE),
        (3, 1, Pr::EXECUTE_READ),
        (4, 1, Pr::EXECUTE),
        (5, 1, Pr::READWRITE | Pr::GUARD),
        (6, 1, Pr::NOACCESS),
        (7, 1, Pr::READONLY),
        (8, 1, Pr::EXECUTE_READWRITE),
        (9, 1, Pr::READWRITE),
    ] {
        assert_eq!(s.alloc(base + page * P, n * P, T::COMMIT, prot), Ok(base + page * P));
    }
    s.free(base + 9 * P, P, F::DECOMMIT).unwrap();
    base
}

/// A simulated space whose backend asks for instruction synchronisation.
fn needing() -> AddressSpace<Recording<SimBackend>> {
    AddressSpace::with_backend(Recording::new(SimBackend::default(), true))
}

#[test]
fn only_the_committed_readable_unguarded_pieces_of_the_range_are_named() {
    let s = needing();
    let base = code_heap(&s);
    // From inside page 0 to inside page 9: each region that may hold code, clipped to
    // the range; the no-access, execute-only, guard and reserved pages are passed over.
    s.flush_instruction_cache(base + 100, 9 * P - 200);
    assert_eq!(
        s.backend().take(),
        [
            base + P..base + 3 * P,
            base + 3 * P..base + 4 * P,
            base + 7 * P..base + 8 * P,
            base + 8 * P..base + 9 * P - 100
        ]
    );
    // A few bytes inside one page: exactly those bytes (a JIT flushes each function).
    s.flush_instruction_cache(base + P + 10, 6);
    assert_eq!(s.backend().take(), [base + P + 10..base + P + 16]);
    // The whole reservation and beyond, into free memory: the same pieces, whole.
    s.flush_instruction_cache(base.saturating_sub(64 * P), 128 * P);
    assert_eq!(
        s.backend().take(),
        [base + P..base + 3 * P, base + 3 * P..base + 4 * P, base + 7 * P..base + 8 * P, base + 8 * P..base + 9 * P]
    );
    // Nothing was touched: the guard page is still armed, the first checked access
    // meets it.
    assert_eq!(s.query(base + 5 * P).unwrap().protect, Pr::READWRITE | Pr::GUARD);
    assert!(
        matches!(s.read(base + 5 * P, &mut [0u8; 1]), Err(Error::GuardPage { address, .. }) if address == base + 5 * P)
    );
    s.free(base, 0, F::RELEASE).unwrap();
}

#[test]
fn any_range_is_accepted_and_names_nothing_outside_committed_memory() {
    let s = needing();
    let base = code_heap(&s);
    let top = s.system_info().maximum_application_address + 1;
    // Size 0, at NULL (Windows: "the whole cache") or anywhere: nothing to name.
    s.flush_instruction_cache(0, 0);
    s.flush_instruction_cache(base + P, 0);
    // Free memory, the null page, the top of the space, ranges running past it or
    // wrapping past the end of the address space: accepted, nothing named.
    s.flush_instruction_cache(0, 0x10000);
    s.flush_instruction_cache(base + 16 * P, 1 << 30);
    s.flush_instruction_cache(top - P, usize::MAX);
    s.flush_instruction_cache(usize::MAX - 10, 100);
    // Reserved and decommitted pages alone.
    s.flush_instruction_cache(base, P);
    s.flush_instruction_cache(base + 9 * P, 7 * P);
    assert_eq!(s.backend().take(), Vec::<Range<usize>>::new());
    // From the null page to past the top: the space's committed code, nothing else.
    s.flush_instruction_cache(0, usize::MAX);
    assert_eq!(
        s.backend().take(),
        [base + P..base + 3 * P, base + 3 * P..base + 4 * P, base + 7 * P..base + 8 * P, base + 8 * P..base + 9 * P]
    );
}

#[test]
fn a_backend_that_needs_no_synchronisation_is_never_asked() {
    let s = AddressSpace::with_backend(Recording::new(SimBackend::default(), false));
    let base = code_heap(&s);
    s.flush_instruction_cache(base, 16 * P);
    s.flush_instruction_cache(0, usize::MAX);
    assert_eq!(s.backend().take(), Vec::<Range<usize>>::new());
    // The plain simulated backend: its fetches see every write, before and after a flush.
    let sim = SimSpace::simulated();
    let code = code_heap(&sim) + P;
    sim.write(code, &[0xC3]).unwrap();
    sim.flush_instruction_cache(code, 1);
    sim.protect(code, P, Pr::EXECUTE_READ).unwrap();
    let mut fetched = [0u8; 1];
    sim.execute(code, &mut fetched).unwrap();
    assert_eq!(fetched, [0xC3]);
}

#[test]
fn the_trait_and_the_win32_function_name_what_the_method_does() {
    let s = needing();
    let base = code_heap(&s);
    let dynamic: &dyn VirtualSpace = &s;
    dynamic.flush_instruction_cache(base + 2 * P, 2 * P);
    assert_eq!(s.backend().take(), [base + 2 * P..base + 3 * P, base + 3 * P..base + 4 * P]);
    win32::SetLastError(1234);
    assert_eq!(win32::FlushInstructionCache(dynamic, base + 7 * P, 1), 1);
    assert_eq!(win32::FlushInstructionCache(&s, 0, 0), 1);
    assert_eq!(win32::FlushInstructionCache(&s, usize::MAX - 10, 100), 1);
    assert_eq!(win32::GetLastError(), 1234, "a success leaves the last error alone");
    assert_eq!(s.backend().take(), [base + 7 * P..base + 7 * P + 1]);
}

#[cfg(all(target_os = "linux", not(miri)))]
mod linux {
    use super::*;
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    use crate::jit::returns;
    use virtmem::{LinuxBackend, LinuxSpace, MemType};

    /// Call the code at `addr` as `extern "C" fn() -> u32`.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn call(addr: usize) -> u32 {
        // SAFETY: callers pass executable memory holding a whole function of that type.
        let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(addr) };
        f()
    }

    #[test]
    fn real_memory_needs_synchronisation_except_on_x86() {
        let b = LinuxBackend::new().unwrap();
        assert_eq!(b.instructions_need_sync(), !cfg!(any(target_arch = "x86", target_arch = "x86_64")));
    }

    /// The walk over real memory, with the real cache maintenance under it: the
    /// program's own code (memory the space did not allocate) is named, a guard page
    /// and reserved pages are not, and a walk of the whole process names only what a
    /// query reports committed and readable.
    #[test]
    fn over_real_memory_the_programs_own_code_is_named_and_guard_pages_are_not() {
        let s = AddressSpace::with_backend(Recording::new(LinuxBackend::new().unwrap(), true));
        let base = code_heap(&s);
        s.flush_instruction_cache(base, 16 * P);
        assert_eq!(
            s.backend().take(),
            [
                base + P..base + 3 * P,
                base + 3 * P..base + 4 * P,
                base + 7 * P..base + 8 * P,
                base + 8 * P..base + 9 * P
            ]
        );
        let helper = returns_nothing as *const () as usize;
        let m = s.query(helper).unwrap();
        assert_eq!((m.state, m.mem_type), (MemState::Commit, Some(MemType::Image)), "{m:x?}");
        s.flush_instruction_cache(helper, 16);
        assert_eq!(s.backend().take(), [helper..helper + 16]);
        // The whole process: every piece named was committed, readable and unguarded as
        // the walk found it; our own code and the heap's code pages among them.
        s.flush_instruction_cache(0, usize::MAX);
        let named = s.backend().take();
        assert!(named.iter().any(|r| r.contains(&helper)), "the program's code");
        assert!(named.contains(&(base + 3 * P..base + 4 * P)));
        assert!(named.iter().all(|r| r.start < r.end), "{named:x?}");
        for (page, what) in [(0, "reserved"), (4, "execute-only"), (5, "guard"), (6, "no-access"), (9, "decommitted")] {
            assert!(!named.iter().any(|r| r.contains(&(base + page * P))), "a {what} page was named");
        }
        assert!(named.windows(2).all(|w| w[0].end <= w[1].start), "ascending, disjoint");
        s.free(base, 0, F::RELEASE).unwrap();
    }

    #[inline(never)]
    fn returns_nothing() {}

    /// A JIT on real memory: code written through the pointer, flipped to execute-read,
    /// flushed, run; rewritten in place (read-write again), flushed, run: the new code
    /// runs. Also through `current_process()` as a `dyn VirtualSpace`.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn code_written_then_flushed_runs() {
        let s = LinuxSpace::linux().unwrap();
        let heap = s.alloc(0, 1 << 20, T::RESERVE, Pr::NOACCESS).unwrap();
        assert_eq!(s.alloc(heap, P, T::COMMIT, Pr::READWRITE), Ok(heap));
        let emit = |bytes: &[u8]| {
            // SAFETY: `heap` is committed read-write memory of the code heap.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), heap as *mut u8, bytes.len()) };
        };
        emit(&returns(11));
        assert_eq!(s.protect(heap, P, Pr::EXECUTE_READ), Ok(Pr::READWRITE));
        s.flush_instruction_cache(heap, returns(11).len());
        assert_eq!(call(heap), 11);
        for n in 12..40 {
            assert_eq!(s.protect(heap, P, Pr::READWRITE), Ok(Pr::EXECUTE_READ));
            emit(&returns(n));
            assert_eq!(s.protect(heap, P, Pr::EXECUTE_READ), Ok(Pr::READWRITE));
            s.flush_instruction_cache(heap, returns(n).len());
            assert_eq!(call(heap), u32::from(n));
        }
        // Written with a checked write into read-write-execute code, flushed through the
        // process space as a trait object.
        assert_eq!(s.protect(heap, P, Pr::EXECUTE_READWRITE), Ok(Pr::EXECUTE_READ));
        s.write(heap, &returns(77)).unwrap();
        let process: &dyn VirtualSpace = virtmem::current_process();
        process.flush_instruction_cache(heap, P);
        assert_eq!(call(heap), 77);
        s.free(heap, 0, F::RELEASE).unwrap();
    }
}
