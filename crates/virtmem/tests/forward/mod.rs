//! `forward!`: the `Backend` methods a test backend passes on, unchanged, to the backend
//! it wraps (the hooks it adds are written out beside it).

/// Inside an `impl Backend for ...` block, `forward!(inner: limits, release, ...);`
/// implements each named method by calling the same method of `self.inner`.
#[allow(unused_macros)]
macro_rules! forward {
    ($inner:ident : $($method:ident),* $(,)?) => { $( forward!(@ $inner $method); )* };
    (@ $i:ident limits) => {
        fn limits(&self) -> virtmem::backend::Limits { self.$i.limits() }
    };
    (@ $i:ident initial_blocked) => {
        fn initial_blocked(&self) -> Vec<std::ops::Range<usize>> { self.$i.initial_blocked() }
    };
    (@ $i:ident initial_avoided) => {
        fn initial_avoided(&self) -> Vec<std::ops::Range<usize>> { self.$i.initial_avoided() }
    };
    (@ $i:ident cheap_range) => {
        fn cheap_range(&self, size: usize, align: usize, opts: virtmem::backend::ReserveOptions) -> Option<usize> {
            self.$i.cheap_range(size, align, opts)
        }
    };
    (@ $i:ident inline_effects) => {
        fn inline_effects(&self) -> bool { self.$i.inline_effects() }
    };
    (@ $i:ident reserve) => {
        fn reserve(
            &self,
            range: std::ops::Range<usize>,
            opts: virtmem::backend::ReserveOptions,
        ) -> Result<(), virtmem::backend::BackendError> {
            self.$i.reserve(range, opts)
        }
    };
    (@ $i:ident release) => {
        fn release(
            &self,
            range: std::ops::Range<usize>,
            opts: virtmem::backend::ReserveOptions,
        ) -> Result<(), virtmem::backend::BackendError> {
            self.$i.release(range, opts)
        }
    };
    (@ $i:ident release_committed) => {
        fn release_committed(
            &self,
            range: std::ops::Range<usize>,
            opts: virtmem::backend::ReserveOptions,
            accessible: &[(std::ops::Range<usize>, virtmem::backend::Access)],
        ) -> Result<(), virtmem::backend::BackendError> {
            self.$i.release_committed(range, opts, accessible)
        }
    };
    (@ $i:ident release_drops_access) => {
        fn release_drops_access(&self) -> bool { self.$i.release_drops_access() }
    };
    (@ $i:ident set_access) => {
        fn set_access(
            &self,
            range: std::ops::Range<usize>,
            from: virtmem::backend::Access,
            to: virtmem::backend::Access,
        ) -> Result<(), virtmem::backend::BackendError> {
            self.$i.set_access(range, from, to)
        }
    };
    (@ $i:ident discard) => {
        fn discard(&self, range: std::ops::Range<usize>) { self.$i.discard(range) }
    };
    (@ $i:ident decommit) => {
        fn decommit(
            &self,
            runs: &[(std::ops::Range<usize>, virtmem::backend::Access)],
        ) -> Result<(), virtmem::backend::BackendError> {
            self.$i.decommit(runs)
        }
    };
    (@ $i:ident reset) => {
        fn reset(&self, range: std::ops::Range<usize>) -> Result<(), virtmem::backend::BackendError> {
            self.$i.reset(range)
        }
    };
    (@ $i:ident reset_undo) => {
        fn reset_undo(&self, range: std::ops::Range<usize>) -> Result<bool, virtmem::backend::BackendError> {
            self.$i.reset_undo(range)
        }
    };
    (@ $i:ident lock) => {
        fn lock(&self, range: std::ops::Range<usize>) -> Result<(), virtmem::backend::BackendError> {
            self.$i.lock(range)
        }
    };
    (@ $i:ident unlock) => {
        fn unlock(&self, range: std::ops::Range<usize>) -> Result<(), virtmem::backend::BackendError> {
            self.$i.unlock(range)
        }
    };
    (@ $i:ident read) => {
        fn read(&self, address: usize, buf: &mut [u8]) -> Result<(), virtmem::backend::BackendError> {
            self.$i.read(address, buf)
        }
    };
    (@ $i:ident write) => {
        fn write(&self, address: usize, data: &[u8]) -> Result<(), virtmem::backend::BackendError> {
            self.$i.write(address, data)
        }
    };
    (@ $i:ident dirty_pages) => {
        fn dirty_pages(
            &self,
            range: std::ops::Range<usize>,
            max: usize,
            reset: bool,
        ) -> Result<Vec<usize>, virtmem::backend::BackendError> {
            self.$i.dirty_pages(range, max, reset)
        }
    };
    (@ $i:ident clear_dirty) => {
        fn clear_dirty(&self, range: std::ops::Range<usize>) -> Result<(), virtmem::backend::BackendError> {
            self.$i.clear_dirty(range)
        }
    };
    (@ $i:ident keeps_grants) => {
        fn keeps_grants(&self) -> bool { self.$i.keeps_grants() }
    };
    (@ $i:ident grant) => {
        fn grant(&self, base: usize, pages: &[virtmem::backend::Grant; virtmem::backend::GRANT_PAGES]) {
            self.$i.grant(base, pages)
        }
    };
    (@ $i:ident try_read) => {
        fn try_read(&self, address: usize, buf: &mut [u8], need: virtmem::backend::Grant) -> bool {
            self.$i.try_read(address, buf, need)
        }
    };
    (@ $i:ident try_write) => {
        fn try_write(&self, address: usize, data: &[u8]) -> bool { self.$i.try_write(address, data) }
    };
    (@ $i:ident foreign) => {
        fn foreign(&self, address: usize, limit: usize) -> Option<virtmem::backend::ForeignRegion> {
            self.$i.foreign(address, limit)
        }
    };
    (@ $i:ident try_foreign) => {
        fn try_foreign(&self, address: usize, limit: usize) -> Option<Option<virtmem::backend::ForeignRegion>> {
            self.$i.try_foreign(address, limit)
        }
    };
    (@ $i:ident prepare_write) => {
        fn prepare_write(&self, address: usize, len: usize) {
            self.$i.prepare_write(address, len)
        }
    };
}

/// Wait until at least `n` calls on `space` wait for another call to end
/// ([`SpaceStats::waiting_calls`](virtmem::SpaceStats::waiting_calls)): how a test knows
/// that a call it started really waits, where a sleep would only guess (and a test
/// whose call had not started yet would pass without checking anything). Panics after a
/// minute.
#[allow(dead_code)]
pub fn until_waiting<B: virtmem::backend::Backend>(space: &virtmem::AddressSpace<B>, n: usize) {
    let start = std::time::Instant::now();
    while space.stats().waiting_calls < n {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "fewer than {n} calls ever waited");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
