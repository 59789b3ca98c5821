//! `FlushInstructionCache`.

use crate::backend::Backend;
use crate::rules;

use super::AddressSpace;

impl<B: Backend> AddressSpace<B> {
    // ----- Instruction cache ----------------------------------------------------------

    /// `FlushInstructionCache`: make this process's instruction fetches see the stores
    /// made in `[address, address + size)`, after a JIT wrote code there (or patched it),
    /// before it runs. Call it after the code is written (by pointer or with
    /// [`write`](Self::write)), whatever its protection then; on a processor that needs it
    /// (AArch64) code run without it may be stale instructions.
    ///
    /// Any range is accepted, as on Windows x64, and nothing can fail: only the
    /// committed, readable pages of the range are named to the cache maintenance (their
    /// own memory and, on real memory, the program's, such as code it patched with
    /// `mprotect`); free, reserved, `PAGE_NOACCESS`, `PAGE_EXECUTE` and guard pages are
    /// skipped, never touched (see [`rules::instructions_to_sync`]). A range running past
    /// the top of the address space stops there; `size` 0 (with any address, `NULL`
    /// included: Windows' "the whole cache") names nothing.
    ///
    /// Where the backend needs no synchronisation this returns at once, without looking
    /// at the range: the simulated backend (its fetches, [`execute`](Self::execute),
    /// always see the latest writes) and real memory on x86 and x86-64 (instruction
    /// fetches see stores). On real memory elsewhere it calls the compiler runtime's
    /// `__clear_cache` on each such run, found with [`query`](Self::query): the range's
    /// pages must not be decommitted, released or made inaccessible by another thread
    /// during the call.
    pub fn flush_instruction_cache(&self, address: usize, size: usize) {
        if !self.backend.instructions_need_sync() {
            return;
        }
        let end = address.saturating_add(size);
        let mut at = address;
        while at < end {
            let Ok(info) = self.query(at) else {
                // At or past the top of the address space: nothing more to name.
                return;
            };
            let run_end = info.base_address.saturating_add(info.region_size).min(end);
            if run_end <= at {
                return;
            }
            if rules::instructions_to_sync(&info) {
                self.backend.sync_instructions(at..run_end);
            }
            at = run_end;
        }
    }
}
