//! `same_answers`: two spaces driven by the same random calls must answer alike — every
//! result, the query of the address touched and the totals after each call. Used to hold
//! a backend variant (no grants, effects outside the engine's lock) to the plain
//! simulated space.

use virtmem::{AllocationType as T, FreeType, Protection as Pr, VirtualSpace, WriteWatchFlags};

use crate::rng::Rng;

const P: usize = 4096;
const G: usize = 0x10000;

/// Drive `with` and `without` (both fresh, their windows at 0x1_0000_0000 free) with
/// `calls` random calls from `seed`, over four 64 KiB blocks of room, ranges crossing block
/// and page borders: reserves (plain, write-watched, committed, top-down, at an address or
/// not), commits, resets and undos, decommits and releases, protections (guard included),
/// reads, executes, writes, locks, unlocks and resetting write-watch reads.
pub fn same_answers(with: &dyn VirtualSpace, without: &dyn VirtualSpace, seed: u64, calls: usize) {
    const PROTECTIONS: [Pr; 8] = [
        Pr::READWRITE,
        Pr::READONLY,
        Pr::NOACCESS,
        Pr::EXECUTE,
        Pr::EXECUTE_READ,
        Pr::EXECUTE_READWRITE,
        Pr::READWRITE.union(Pr::GUARD),
        Pr::READONLY.union(Pr::GUARD),
    ];
    let w = 0x1_0000_0000usize;
    let mut rng = Rng(seed * 0x9E37_79B9);
    for call in 0..calls {
        let at = w + rng.below(4 * G);
        let len = [1, 8, P, P + 3, G][rng.below(5)];
        let what = rng.below(14);
        let (a, b) = match what {
            0 => {
                let ty = [T::RESERVE, T::RESERVE | T::WRITE_WATCH, T::RESERVE | T::COMMIT, T::RESERVE | T::TOP_DOWN]
                    [rng.below(4)];
                let at = if rng.below(3) == 0 { 0 } else { at };
                let p = PROTECTIONS[rng.below(3)];
                (format!("{:?}", with.alloc(at, len, ty, p)), format!("{:?}", without.alloc(at, len, ty, p)))
            }
            1 | 2 => {
                let p = PROTECTIONS[rng.below(PROTECTIONS.len())];
                let ty = [T::COMMIT, T::RESET, T::RESET_UNDO][rng.below(3)];
                (format!("{:?}", with.alloc(at, len, ty, p)), format!("{:?}", without.alloc(at, len, ty, p)))
            }
            3 => {
                let ty = if rng.below(3) == 0 { FreeType::RELEASE } else { FreeType::DECOMMIT };
                let (at, len) = if ty == FreeType::RELEASE { (at & !(G - 1), 0) } else { (at, len) };
                (format!("{:?}", with.free(at, len, ty)), format!("{:?}", without.free(at, len, ty)))
            }
            4 | 5 => {
                let p = PROTECTIONS[rng.below(PROTECTIONS.len())];
                (format!("{:?}", with.protect(at, len, p)), format!("{:?}", without.protect(at, len, p)))
            }
            6 | 7 => {
                let (mut x, mut y) = (vec![0xEE; len], vec![0xEE; len]);
                let (rx, ry) = if what == 6 {
                    (with.read(at, &mut x), without.read(at, &mut y))
                } else {
                    (with.execute(at, &mut x), without.execute(at, &mut y))
                };
                assert!(x == y);
                (format!("{rx:?}"), format!("{ry:?}"))
            }
            8..=10 => {
                let data: Vec<u8> = (0..len).map(|i| (call + i) as u8 | 1).collect();
                (format!("{:?}", with.write(at, &data)), format!("{:?}", without.write(at, &data)))
            }
            11 => (format!("{:?}", with.lock(at, len)), format!("{:?}", without.lock(at, len))),
            12 => (format!("{:?}", with.unlock(at, len)), format!("{:?}", without.unlock(at, len))),
            _ => {
                let base = at & !(G - 1);
                let flags = WriteWatchFlags::RESET;
                (
                    format!("{:?}", with.get_write_watch(flags, base, G, 16)),
                    format!("{:?}", without.get_write_watch(flags, base, G, 16)),
                )
            }
        };
        assert_eq!(a, b, "seed {seed}, call {call} (kind {what}) at {at:#x}+{len:#x}");
        assert_eq!(with.query(at), without.query(at), "seed {seed}, call {call}");
        assert_eq!(with.stats(), without.stats(), "seed {seed}, call {call}");
    }
}
