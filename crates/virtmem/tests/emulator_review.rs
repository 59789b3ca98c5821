//! Review from an emulator author's seat: many deterministic simulated spaces in one
//! process, each with its own address range, driven by checked accesses. Each test here
//! failed on the code it was written against (see the commit that added it) and checks
//! the behaviour `shared/spec/win32-virtual-memory.md` asks for.

mod common;

use common::{snapshot, G, P};
use virtmem::{AllocationType as T, Error, Protection as Pr, SimConfig, SimSpace};

/// The lowest address of a space with a raised `min_address`.
const LOW: usize = 0x10_0000;
/// The end of that space.
const HIGH: usize = 0x20_0000;

fn raised_floor() -> SimSpace {
    SimSpace::simulated_with(SimConfig { min_address: LOW, end_address: HIGH, ..SimConfig::default() })
}

/// VirtualAlloc rule 3: "An address below 0x10000 ... → 87" — below the lowest
/// allocatable address, which `GetSystemInfo` reports as `lpMinimumApplicationAddress`.
/// A simulated space whose `min_address` is raised reports that address there, and (as
/// it does at its top, `end_address`) must answer 87 for an address below it, for every
/// kind of `VirtualAlloc`, changing nothing. It answered 487 (`ERROR_INVALID_ADDRESS`),
/// the error for an occupied or unallocated range, as if the address were allocatable.
#[test]
fn an_address_below_a_spaces_lowest_address_is_87() {
    let s = raised_floor();
    assert_eq!(s.system_info().minimum_application_address, LOW);
    let rw = Pr::READWRITE;
    let before = snapshot(&s, 0..HIGH);
    let kinds = [T::RESERVE, T::RESERVE | T::COMMIT, T::COMMIT, T::RESET, T::RESET_UNDO, T::RESERVE | T::WRITE_WATCH];
    for (address, size) in [(0x1_0000, P), (LOW - G, G), (LOW - P, 2 * P), (LOW - 1, 2)] {
        for ty in kinds {
            let got = s.alloc(address, size, ty, rw);
            assert_eq!(got, Err(Error::InvalidParameter), "{ty:?} at {address:#x}+{size:#x}");
        }
    }
    assert_eq!(snapshot(&s, 0..HIGH), before, "a failed call changes nothing");
    // The lowest address itself is allocatable, as 0x10000 is in a default space.
    assert_eq!(s.alloc(LOW, P, T::RESERVE | T::COMMIT, rw), Ok(LOW));
    // With a reservation there, a commit reaching below it is still 87 (rule 3 comes
    // before the look for a reservation).
    assert_eq!(s.alloc(LOW - P, 2 * P, T::COMMIT, rw), Err(Error::InvalidParameter));
}
