//! What the snapshot tests (`snapshot`, `snapshot_cow`) share: a committed space's
//! setup and reads, and a writer thread for their "one moment" checks, which stores
//! round number `i` (8 bytes, little-endian) at the start of each of `blocks` 64 KiB
//! blocks in turn, round after round, so that a space read as of one moment holds `i` in
//! its first blocks and `i - 1` after them, never a later round after an earlier one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use virtmem::{AllocationType as T, Protection as P, SimSpace};

/// A page.
pub const PAGE: usize = 4096;
/// The allocation granularity: the writer's blocks.
pub const GRANULE: usize = 0x10000;

/// Reserve and commit `size` bytes read-write where the space picks.
pub fn commit(s: &SimSpace, size: usize) -> usize {
    s.alloc(0, size, T::RESERVE | T::COMMIT, P::READWRITE).expect("reserve and commit")
}

/// `len` bytes at `at`.
pub fn read(s: &SimSpace, at: usize, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    s.read(at, &mut buf).expect("read");
    buf
}

/// Reserve and commit `blocks` 64 KiB blocks for a [`Writer`], each holding round 0 (its
/// first page written, so stored); their base.
pub fn round_blocks(s: &SimSpace, blocks: usize) -> usize {
    let base = commit(s, blocks * GRANULE);
    for k in 0..blocks {
        s.write(base + k * GRANULE, &0u64.to_le_bytes()).expect("write");
    }
    base
}

/// A running writer (see the module docs). Stopped and joined by [`Writer::stop`].
pub struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Start writing rounds into `blocks` blocks from `base` of `s` (committed, writable),
    /// and return once the first round is finished, so that what follows is known to run
    /// while the writer does (on a loaded machine a new thread may not run at once).
    pub fn start(s: &Arc<SimSpace>, base: usize, blocks: usize) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let thread = {
            let (s, stop, done) = (Arc::clone(s), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    for k in 0..blocks {
                        s.write(base + k * GRANULE, &round.to_le_bytes()).expect("write");
                    }
                    done.store(round, Ordering::Relaxed);
                }
            })
        };
        while done.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        Writer { stop, done, thread: Some(thread) }
    }

    /// The last round the writer finished.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stop the writer and wait for it (a panic in it is passed on).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the writer panicked");
        }
    }
}

impl Drop for Writer {
    /// A test that fails midway still stops its writer.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The round number at the start of each of `blocks` blocks from `base` of `s`.
pub fn rounds(s: &SimSpace, base: usize, blocks: usize) -> Vec<u64> {
    (0..blocks)
        .map(|k| {
            let b: [u8; 8] = read(s, base + k * GRANULE, 8).try_into().expect("8 bytes");
            u64::from_le_bytes(b)
        })
        .collect()
}

/// Whether `rounds` (as [`rounds`] reads them) are one moment's: equal, or one round
/// more up to some block than after it.
pub fn one_moment(rounds: &[u64]) -> bool {
    let (first, last) = (rounds[0], rounds[rounds.len() - 1]);
    (first == last || first == last + 1) && rounds.windows(2).all(|w| w[0] >= w[1])
}
