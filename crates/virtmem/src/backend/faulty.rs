//! Failure injection: a backend wrapper that fails exactly one chosen side effect.
//!
//! Arm it with `n` and the `n`-th fallible operation from then on (1-based) returns
//! [`BackendError::Injected`] without being passed on; every other operation, including
//! the engine's undo of earlier steps, goes through. Tests use it to show that, for every
//! `n`, a failed call leaves the space exactly as it was. [`Faulty::arm_two`] also fails
//! a later side effect, to make the engine's undo of a step fail (as a kernel may refuse
//! to restore a protection at its mapping-count limit).
//!
//! Every method is passed on to the inner backend (a fallible side effect once counted),
//! but for two choices. Grants ([`Backend::keeps_grants`]) are never kept: a granted write
//! cannot be failed, and every write must stay a side effect this wrapper sees. And
//! [`Backend::inline_effects`] depends on the mode the wrapper was made in, because the
//! engine takes two ways through a call:
//!
//! - the general mode ([`Faulty::new`]) says the effects may wait, whatever the inner
//!   backend says: the engine makes them outside its lock (the reservation marked busy),
//!   a commit, decommit or protect of a range inside one run (for a decommit, nothing
//!   locked) as one backend call without a plan, every other call as planned steps whose
//!   completed ones it undoes when one fails. That is its way over the Linux backend;
//!   over the simulated backend this mode tests it without touching real memory.
//! - the inline mode ([`Faulty::inline`]) says what the inner backend says: over the
//!   simulated backend, whose effects never wait, the engine makes them under its lock
//!   and takes its usual-case shortcuts (a commit, decommit, protect or release of a
//!   range inside one run, nothing locked: one backend call, no plan; the release's the
//!   general mode never reaches). That is its way over the simulated backend alone.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Access, Backend, BackendError, ForeignRegion, Limits, ReserveOptions};

/// A backend that fails its `n`-th side effect once armed. See the module docs.
pub struct Faulty<B> {
    inner: B,
    /// Whether `inline_effects` is `inner`'s (see [`Faulty::inline`]); `false` otherwise.
    inline: bool,
    /// Side effects seen since the last [`Faulty::arm`].
    seen: AtomicUsize,
    /// The 1-based side effect to fail; 0 when disarmed.
    fail_at: AtomicUsize,
    /// Whether the armed failure has happened.
    fired: AtomicUsize,
    /// A second 1-based side effect to fail; 0 for none.
    fail_also: AtomicUsize,
}

impl<B: std::fmt::Debug> std::fmt::Debug for Faulty<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faulty")
            .field("inner", &self.inner)
            .field("inline", &self.inline)
            .field("seen", &self.seen.load(Ordering::Relaxed))
            .field("fail_at", &self.fail_at.load(Ordering::Relaxed))
            .field("fail_also", &self.fail_also.load(Ordering::Relaxed))
            .field("fired", &(self.fired.load(Ordering::Relaxed) != 0))
            .finish()
    }
}

impl<B: Backend> Faulty<B> {
    /// Wrap `inner`, disarmed, in the general mode: its effects are said to be ones that
    /// may wait ([`Backend::inline_effects`] is `false`, whatever `inner` says), so the
    /// engine makes them outside its lock, most calls as planned steps (see the module
    /// docs).
    pub fn new(inner: B) -> Faulty<B> {
        Faulty::with_mode(inner, false)
    }

    /// Wrap `inner`, disarmed, in the inline mode: [`Backend::inline_effects`] is what
    /// `inner` says, so over a backend whose effects never wait (the simulated one) the
    /// engine takes the way it takes over that backend alone: effects under its lock and
    /// its usual-case shortcuts (see the module docs). Over a backend whose effects may
    /// wait this is [`Faulty::new`].
    pub fn inline(inner: B) -> Faulty<B> {
        Faulty::with_mode(inner, true)
    }

    fn with_mode(inner: B, inline: bool) -> Faulty<B> {
        Faulty {
            inner,
            inline,
            seen: AtomicUsize::new(0),
            fail_at: AtomicUsize::new(0),
            fired: AtomicUsize::new(0),
            fail_also: AtomicUsize::new(0),
        }
    }

    /// Fail the `n`-th side effect from now on (1-based); `0` disarms.
    pub fn arm(&self, n: usize) {
        self.arm_two(n, 0);
    }

    /// Fail the `n`-th and the `m`-th side effects from now on (1-based; `m` after `n`,
    /// e.g. the undo of an earlier step; `m == 0` fails only the `n`-th).
    pub fn arm_two(&self, n: usize, m: usize) {
        self.seen.store(0, Ordering::SeqCst);
        self.fired.store(0, Ordering::SeqCst);
        self.fail_also.store(m, Ordering::SeqCst);
        self.fail_at.store(n, Ordering::SeqCst);
    }

    /// How many side effects were attempted since the last [`Faulty::arm`].
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// Whether the armed failure was injected.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst) != 0
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn step(&self) -> Result<(), BackendError> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let at = self.fail_at.load(Ordering::SeqCst);
        if at != 0 && n == at {
            self.fail_at.store(0, Ordering::SeqCst);
            self.fired.store(1, Ordering::SeqCst);
            return Err(BackendError::Injected);
        }
        let also = self.fail_also.load(Ordering::SeqCst);
        if also != 0 && n == also {
            self.fail_also.store(0, Ordering::SeqCst);
            return Err(BackendError::Injected);
        }
        Ok(())
    }
}

impl<B: Backend> Backend for Faulty<B> {
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn initial_blocked(&self) -> Vec<Range<usize>> {
        self.inner.initial_blocked()
    }
    fn initial_avoided(&self) -> Vec<Range<usize>> {
        self.inner.initial_avoided()
    }
    fn cheap_range(&self, size: usize, align: usize, opts: ReserveOptions) -> Option<usize> {
        self.inner.cheap_range(size, align, opts)
    }
    fn inline_effects(&self) -> bool {
        // The inner backend's answer in the inline mode only (see the module docs): in
        // the general mode the engine's plans and its undo of completed steps are tested
        // even over a backend whose effects never wait.
        self.inline && self.inner.inline_effects()
    }
    // `keeps_grants`, `grant`, `try_read` and `try_write` are not passed on (the
    // defaults: no grants). A granted write is made by `try_write`, which cannot fail, so
    // writes (and the marks of write tracking) would leave this wrapper's reach: every
    // write goes through `write`, a side effect that can be failed, instead.
    fn reserve(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        self.step()?;
        self.inner.reserve(range, opts)
    }
    fn release(&self, range: Range<usize>, opts: ReserveOptions) -> Result<(), BackendError> {
        self.step()?;
        self.inner.release(range, opts)
    }
    fn release_committed(
        &self,
        range: Range<usize>,
        opts: ReserveOptions,
        accessible: &[(Range<usize>, Access)],
    ) -> Result<(), BackendError> {
        self.step()?;
        self.inner.release_committed(range, opts, accessible)
    }
    fn release_drops_access(&self) -> bool {
        self.inner.release_drops_access()
    }
    fn set_access(&self, range: Range<usize>, from: Access, to: Access) -> Result<(), BackendError> {
        self.step()?;
        self.inner.set_access(range, from, to)
    }
    fn discard(&self, range: Range<usize>) {
        self.inner.discard(range)
    }
    fn decommit(&self, runs: &[(Range<usize>, Access)]) -> Result<(), BackendError> {
        self.step()?;
        self.inner.decommit(runs)
    }
    fn reset(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.step()?;
        self.inner.reset(range)
    }
    fn reset_undo(&self, range: Range<usize>) -> Result<bool, BackendError> {
        self.step()?;
        self.inner.reset_undo(range)
    }
    fn lock(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.step()?;
        self.inner.lock(range)
    }
    fn unlock(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.step()?;
        self.inner.unlock(range)
    }
    fn read(&self, address: usize, buf: &mut [u8]) -> Result<(), BackendError> {
        self.inner.read(address, buf)
    }
    fn write(&self, address: usize, data: &[u8]) -> Result<(), BackendError> {
        self.step()?;
        self.inner.write(address, data)
    }
    fn prepare_write(&self, address: usize, len: usize) {
        // (Not a side effect: nothing to fail.)
        self.inner.prepare_write(address, len)
    }
    fn dirty_pages(&self, range: Range<usize>, max: usize, reset: bool) -> Result<Vec<usize>, BackendError> {
        self.step()?;
        self.inner.dirty_pages(range, max, reset)
    }
    fn dirty_pages_into(&self, range: Range<usize>, out: &mut [usize], reset: bool) -> Result<usize, BackendError> {
        self.step()?;
        self.inner.dirty_pages_into(range, out, reset)
    }
    fn clear_dirty(&self, range: Range<usize>) -> Result<(), BackendError> {
        self.step()?;
        self.inner.clear_dirty(range)
    }
    fn foreign(&self, address: usize, limit: usize) -> Option<ForeignRegion> {
        self.inner.foreign(address, limit)
    }
    fn try_foreign(&self, address: usize, limit: usize) -> Option<Option<ForeignRegion>> {
        // (Not a side effect. Passed on, not left to the default, which calls `foreign`
        // and so would wait where the inner backend answers at once that it cannot.)
        self.inner.try_foreign(address, limit)
    }
    fn instructions_need_sync(&self) -> bool {
        self.inner.instructions_need_sync()
    }
    fn sync_instructions(&self, range: Range<usize>) {
        // (Not a side effect on memory: nothing to fail.)
        self.inner.sync_instructions(range)
    }
}
