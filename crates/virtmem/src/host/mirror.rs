//! [`Mirror`]: a value kept in two copies so that readers never wait for anyone.
//!
//! `VirtualQuery` through the host must not block, even while another thread is
//! suspended in the middle of a host call, holding whatever lock it holds. A lock cannot
//! give that: a reader would wait for the suspended holder. So what the query needs is
//! kept twice. Readers use the copy marked live, announcing themselves in that copy's
//! reader count; a writer (one at a time) changes the idle copy, marks it live, waits
//! until the readers of the other copy have left, and makes the same change there. A
//! reader never waits: it only retries if a writer switched copies between its two
//! looks at which copy is live, and reads nothing of a copy it has not announced itself
//! in. Writers may wait for readers (a reader suspended while reading holds writers up,
//! as a lock would); readers do not allocate.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Two copies of a `T`, read without waiting and written one writer at a time (see the
/// module docs).
pub(crate) struct Mirror<T> {
    copies: [UnsafeCell<T>; 2],
    /// Readers inside each copy (or about to check whether they may enter it).
    readers: [AtomicUsize; 2],
    /// The copy readers use: 0 or 1. Changed only by a writer holding `writer`.
    live: AtomicUsize,
    /// Serialises writers.
    writer: Mutex<()>,
}

// SAFETY: a `&Mirror<T>` hands out `&T` to readers on many threads at once (needs
// `T: Sync`) and lets a writer on any thread change the copies through `&mut T` (needs
// `T: Send`); the protocol in `read` and `write` keeps those accesses apart.
unsafe impl<T: Send + Sync> Sync for Mirror<T> {}

impl<T: Clone> Mirror<T> {
    /// A mirror of `value`.
    pub fn new(value: T) -> Mirror<T> {
        Mirror {
            copies: [UnsafeCell::new(value.clone()), UnsafeCell::new(value)],
            readers: [AtomicUsize::new(0), AtomicUsize::new(0)],
            live: AtomicUsize::new(0),
            writer: Mutex::new(()),
        }
    }
}

impl<T> Mirror<T> {
    /// Run `f` on the live copy. Never waits for another thread and never allocates.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        loop {
            let i = self.live.load(Ordering::SeqCst);
            self.readers[i].fetch_add(1, Ordering::SeqCst);
            // Still live after we announced ourselves: a writer that switches away from
            // `i` from now on sees our count and waits for us before touching copy `i`;
            // one that switched before this load finished its change of `i` first.
            if self.live.load(Ordering::SeqCst) == i {
                // SAFETY: no writer holds a `&mut` to copy `i` (it only changes the idle
                // copy, and a copy becomes idle only after every reader that found it
                // live, as we just did, has left: see `write`).
                let out = f(unsafe { &*self.copies[i].get() });
                // Our reads of copy `i` come before a writer's later change of it (its
                // load of this count synchronises with this decrement). SeqCst, not just
                // Release: every operation on the counts and on `live` is then in one total
                // order, which is what the argument in `write` rests on (and what Miri's
                // model checks: with Release decrements it reports a race here).
                self.readers[i].fetch_sub(1, Ordering::SeqCst);
                return out;
            }
            // A writer switched copies meanwhile: we read nothing; look again.
            self.readers[i].fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Make the change `op` to both copies (`op` is called twice and must do the same
    /// thing both times). Waits for the other writers, and for readers still in the copy
    /// being retired.
    pub fn write(&self, mut op: impl FnMut(&mut T)) {
        let _writer = self.writer.lock();
        let live = self.live.load(Ordering::SeqCst);
        let idle = 1 - live;
        // SAFETY: copy `idle` has no reader: the previous write (or `new`) left it only
        // after waiting out every reader that had found it live, and a reader that finds
        // it idle reads nothing of it. We hold `writer`, so no other `&mut` exists.
        op(unsafe { &mut *self.copies[idle].get() });
        self.live.store(idle, Ordering::SeqCst);
        // Readers that found `live` live before the switch must leave; later ones see the
        // switch and go to `idle`. This load synchronises with their decrements.
        let mut spins = 0u32;
        while self.readers[live].load(Ordering::SeqCst) != 0 {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: copy `live` is now idle and every reader of it has left (see above);
        // we hold `writer`.
        op(unsafe { &mut *self.copies[live].get() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn both_copies_get_every_change() {
        let m = Mirror::new(vec![1u32]);
        m.write(|v| v.push(2));
        assert_eq!(m.read(|v| v.clone()), vec![1, 2]);
        m.write(|v| v.push(3));
        assert_eq!(m.read(|v| v.clone()), vec![1, 2, 3]);
        m.write(|v| v.retain(|&x| x != 1));
        assert_eq!(m.read(|v| v.clone()), vec![2, 3]);
    }

    /// Readers racing a writer always see a whole state: here the writer keeps a pair
    /// equal, changing one half at a time inside each copy. It goes on until the readers
    /// have read many times while it wrote.
    #[test]
    fn readers_never_see_half_a_change() {
        let m = Arc::new(Mirror::new((0u64, 0u64)));
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let (min_writes, min_reads): (u64, usize) = if cfg!(miri) { (20, 20) } else { (20_000, 20_000) };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (m, stop, reads) = (m.clone(), stop.clone(), reads.clone());
                std::thread::spawn(move || {
                    let mut last = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let (a, b) = m.read(|p| *p);
                        assert_eq!(a, b, "a reader saw a copy being changed");
                        assert!(a >= last, "a reader went back in time: {a} after {last}");
                        last = a;
                        reads.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let mut writes = 0;
        while writes < min_writes || reads.load(Ordering::SeqCst) < min_reads {
            m.write(|p| {
                p.0 += 1;
                std::hint::black_box(&*p);
                p.1 += 1;
            });
            writes += 1;
        }
        stop.store(true, Ordering::SeqCst);
        for r in readers {
            r.join().expect("reader");
        }
        assert_eq!(m.read(|p| *p), (writes, writes));
    }
}
