//! Failure injection on real memory: for every call kind and every N, failing the N-th
//! side effect (at the backend interface with `Faulty`, and at the system-call level
//! inside the Linux backend) leaves the space, the kernel's mappings and the data
//! exactly as before the call.
#![cfg(target_os = "linux")]

mod linux_util;

use std::ops::Range;

use linux_util::*;
use virtmem::backend::faulty::Faulty;
use virtmem::backend::Backend;
use virtmem::{
    AddressSpace, AllocationType as T, FreeType, LinuxBackend, MemoryBasicInformation, Protection as P, WriteWatchFlags,
};

const KB: usize = 1024;
const SIZE: usize = 512 * KB;

type Space = AddressSpace<Faulty<LinuxBackend>>;

#[derive(Debug, PartialEq)]
struct Snapshot {
    walk: Vec<MemoryBasicInformation>,
    maps: Vec<(usize, usize, String)>,
    data: Vec<Option<u8>>,
    stats: (usize, usize, usize),
}

fn snapshot(s: &Space, range: Range<usize>) -> Snapshot {
    let data = range
        .clone()
        .step_by(4096)
        .map(|a| {
            let mut b = [0u8; 1];
            // Straight from the kernel, bypassing the rules (which would disarm guards).
            s.backend().inner().read(a + 123, &mut b).ok().map(|_| b[0])
        })
        .collect();
    let st = s.stats();
    Snapshot {
        walk: walk(s, range.clone()),
        maps: mappings(range),
        data,
        stats: (st.reserved, st.committed, st.reservations),
    }
}

/// A reservation with every kind of page: RW data, RO data, guard, no-access,
/// reserved, locked.
fn setup(s: &Space, watch: bool) -> usize {
    let ty = if watch { T::RESERVE | T::WRITE_WATCH } else { T::RESERVE };
    let base = s.alloc(0, SIZE, ty, P::READWRITE).unwrap();
    s.alloc(base, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    s.alloc(base + 64 * KB, 64 * KB, T::COMMIT, P::READWRITE).unwrap();
    for a in (base..base + 128 * KB).step_by(4096) {
        s.write(a + 123, &[(a >> 12) as u8 | 1]).unwrap();
    }
    s.protect(base + 64 * KB, 64 * KB, P::READONLY).unwrap();
    s.alloc(base + 128 * KB, 64 * KB, T::COMMIT, P::READWRITE | P::GUARD).unwrap();
    s.alloc(base + 192 * KB, 64 * KB, T::COMMIT, P::NOACCESS).unwrap();
    s.lock(base, 16 * KB).unwrap();
    base
}

enum Layer {
    Interface,
    Syscall,
}

/// Call `op` with the N-th side effect failing, for N = 1, 2, ... until it succeeds;
/// each failure must leave `range` as it was.
fn every_failure(s: &Space, layer: &Layer, range: Range<usize>, mut op: impl FnMut(&Space) -> bool) -> usize {
    let before = snapshot(s, range.clone());
    for n in 1..200 {
        match layer {
            Layer::Interface => s.backend().arm(n),
            Layer::Syscall => s.backend().inner().inject_failure(n as u64),
        }
        let ok = op(s);
        let fired = match layer {
            Layer::Interface => s.backend().fired(),
            Layer::Syscall => !s.backend().inner().failure_pending(),
        };
        s.backend().arm(0);
        s.backend().inner().inject_failure(0);
        if !fired {
            assert!(ok, "the call failed with nothing injected");
            return n;
        }
        assert!(!ok, "call #{n} succeeded despite an injected failure");
        assert_eq!(snapshot(s, range.clone()), before, "failure #{n} left a change");
    }
    panic!("never succeeded");
}

fn kinds(layer: Layer) {
    let s: Space = AddressSpace::with_backend(Faulty::new(LinuxBackend::new().unwrap()));
    type Op = fn(&Space, usize) -> bool;
    let ops: &[(&str, bool, Op)] = &[
        ("commit mixed", false, |s, b| s.alloc(b, SIZE, T::COMMIT, P::EXECUTE_READ).is_ok()),
        ("protect", false, |s, b| s.protect(b, 256 * KB, P::READWRITE).is_ok()),
        ("decommit mixed", false, |s, b| s.free(b, SIZE, FreeType::DECOMMIT).is_ok()),
        ("lock", false, |s, b| s.lock(b, 64 * KB).is_ok()),
        ("unlock", false, |s, b| s.unlock(b, 16 * KB).is_ok()),
        ("reset undo", false, |s, b| s.alloc(b, 64 * KB, T::RESET_UNDO, P::NOACCESS).is_ok()),
        ("write", false, |s, b| s.write(b + 100, &[9; 10]).is_ok()),
        ("watch reset", true, |s, b| s.get_write_watch(WriteWatchFlags::RESET, b, SIZE, 100).is_ok()),
        ("watch clear", true, |s, b| s.reset_write_watch(b, SIZE).is_ok()),
        ("release", false, |s, b| s.free(b, 0, FreeType::RELEASE).is_ok()),
        ("release watched", true, |s, b| s.free(b, 0, FreeType::RELEASE).is_ok()),
    ];
    for (name, watch, op) in ops {
        let base = setup(&s, *watch);
        let n = every_failure(&s, &layer, base..base + SIZE, |s| op(s, base));
        assert!(n > 1 || matches!(name, &"reset undo"), "{name}: nothing to inject?");
        let _ = s.free(base, 0, FreeType::RELEASE);
    }
    // New reservations, at a chosen address and anywhere.
    for ty in [T::RESERVE, T::RESERVE | T::COMMIT, T::RESERVE | T::COMMIT | T::WRITE_WATCH] {
        let at = s.alloc(0, SIZE, T::RESERVE, P::NOACCESS).unwrap();
        s.free(at, 0, FreeType::RELEASE).unwrap();
        let mut made = 0;
        every_failure(&s, &layer, at..at + SIZE, |s| match s.alloc(at, SIZE, ty, P::READWRITE) {
            Ok(b) => {
                made = b;
                true
            }
            Err(_) => false,
        });
        assert_eq!(made, at);
        s.free(at, 0, FreeType::RELEASE).unwrap();
        let mut made = 0;
        every_failure(&s, &layer, at..at + SIZE, |s| match s.alloc(0, SIZE, ty, P::READWRITE) {
            Ok(b) => {
                made = b;
                true
            }
            Err(_) => false,
        });
        assert_eq!(mappings(made..made + SIZE).len(), 1);
        s.free(made, 0, FreeType::RELEASE).unwrap();
    }
}

#[test]
fn every_interface_failure_changes_nothing() {
    kinds(Layer::Interface);
}

#[test]
fn every_syscall_failure_changes_nothing() {
    kinds(Layer::Syscall);
}
