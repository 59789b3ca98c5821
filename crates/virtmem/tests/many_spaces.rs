//! Many simulated address spaces in one process, as a sandbox or a fuzzing farm keeps
//! them: what each costs in heap (counted by this binary's global allocator, per
//! thread), that creating and dropping them leaks nothing, that the addresses a space
//! hands out depend only on the calls made on it (not on the thread, on other spaces, on
//! the order spaces were made, nor on heap addresses), and that spaces are isolated.

use std::sync::{Arc, Barrier};

use virtmem::{AllocationType as T, Error, FreeType, MemState, Protection as Pr, SimConfig, SimSpace, WriteWatchFlags};

mod heap_bytes;

use heap_bytes::held;

/// The heap `make` leaves allocated on this thread, with what it returns.
fn heap_of<R>(make: impl FnOnce() -> R) -> (R, isize) {
    let before = held();
    let r = make();
    (r, held() - before)
}

/// A space with one reservation of 1 MiB, its first page committed and written.
fn one_page_space() -> SimSpace {
    let s = SimSpace::simulated();
    let b = s.alloc(0, 1 << 20, T::RESERVE, Pr::NOACCESS).unwrap();
    s.alloc(b, 4096, T::COMMIT, Pr::READWRITE).unwrap();
    s.write(b + 8, b"payload").unwrap();
    s
}

/// What the figures are, printed with `--nocapture` (the asserted bounds are in the
/// tests below).
#[test]
fn heap_per_space_figures() {
    // Warm this thread's spares (a write takes its page from them) so that the figures
    // are of the spaces alone.
    drop(one_page_space());
    let (empty, e) = heap_of(SimSpace::simulated);
    let (one, o) = heap_of(one_page_space);
    let (many, m) = heap_of(|| (0..10_000).map(|_| one_page_space()).collect::<Vec<_>>());
    println!(
        "empty SimSpace: {e} B; one reservation + one written page: {o} B; 10 000 of those: {m} B ({} B each)",
        m / 10_000
    );
    drop((empty, one, many));
}

/// An empty space costs at most 2.5 KiB, itself included (it cost ~11 KB, 10.4 KB of it
/// heap, while its 32 locked parts and 128 grant slots were allocated when it was made):
/// a farm of 10 000 idle spaces should not take 110 MB.
#[test]
fn an_empty_space_is_small() {
    drop(one_page_space());
    let (spaces, bytes) = heap_of(|| (0..1000).map(|_| SimSpace::simulated()).collect::<Vec<_>>());
    let each = bytes / 1000;
    assert!(each <= 2560, "an empty SimSpace takes {each} B (itself and its heap)");
    drop(spaces);
}

/// A space with one reservation and one written page costs at most 12 KiB, the page's
/// 4 KiB and the first index leaf's 3.4 KB included (it cost 19.6 KB: the parts and grant
/// slots of every block, however few blocks were used).
#[test]
fn a_space_with_one_page_is_small() {
    drop(one_page_space());
    let (spaces, bytes) = heap_of(|| (0..1000).map(|_| one_page_space()).collect::<Vec<_>>());
    let each = bytes / 1000;
    assert!(each <= 12 * 1024, "a SimSpace with one written page takes {each} B (itself and its heap)");
    drop(spaces);
}

/// A fixed sequence of calls, chosen by a xorshift generator seeded with `seed`: reserves
/// (anywhere, top-down, with write watch, with large pages, at addresses derived from
/// earlier results), commits, protects (guard pages too), writes, decommits and
/// releases, write-watch reads, and a query of each address returned. Returns every
/// result (an address, a query's answer or an error code) in order.
fn script(s: &SimSpace, seed: u64, steps: usize) -> Vec<String> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as usize
    };
    let mut out = Vec::new();
    let mut live: Vec<(usize, usize)> = Vec::new();
    for _ in 0..steps {
        let size = ((next() % 64) + 1) * 0x1000 * if next() % 8 == 0 { 64 } else { 1 };
        match next() % 10 {
            0..=3 => {
                let ty = match next() % 5 {
                    0 => T::RESERVE | T::TOP_DOWN,
                    1 => T::RESERVE | T::WRITE_WATCH,
                    2 => T::RESERVE | T::COMMIT | T::LARGE_PAGES,
                    _ => T::RESERVE,
                };
                // Now and then at an address next to an earlier reservation.
                let at = match live.last() {
                    Some(&(b, n)) if next() % 4 == 0 => b + n + 0x10000,
                    _ => 0,
                };
                let size = if ty.contains(T::LARGE_PAGES) { 2 << 20 } else { size };
                let r = s.alloc(at, size, ty, Pr::READWRITE);
                out.push(format!("reserve {at:#x} {size:#x} {ty:?} -> {r:?}"));
                if let Ok(b) = r {
                    live.push((b, size));
                }
            }
            4 | 5 if !live.is_empty() => {
                let (b, n) = live[next() % live.len()];
                let off = (next() % n) & !0xFFF;
                let len = (n - off).min(size);
                let r = s.alloc(b + off, len, T::COMMIT, Pr::READWRITE);
                out.push(format!("commit {off:#x}+{len:#x} -> {:?}", r.map(|a| a - b)));
                let w = s.write(b + off, &off.to_le_bytes());
                out.push(format!("write -> {w:?}"));
                if next() % 3 == 0 {
                    let p = s.protect(b + off, 0x1000, Pr::READWRITE | Pr::GUARD);
                    out.push(format!("guard -> {p:?}"));
                }
            }
            6 if !live.is_empty() => {
                let (b, n) = live[next() % live.len()];
                let r = s.free(b, n.min(0x2000), FreeType::DECOMMIT);
                let q = s.query(b + 0x1000);
                out.push(format!("decommit -> {r:?}, then {q:?}"));
            }
            7 if !live.is_empty() => {
                let (b, _) = live.swap_remove(next() % live.len());
                let r = s.free(b, 0, FreeType::RELEASE);
                out.push(format!("release {:?}", r));
            }
            8 if !live.is_empty() => {
                let (b, n) = live[next() % live.len()];
                let r = s.get_write_watch(WriteWatchFlags::RESET, b, n, 64);
                out.push(format!("watch -> {:?}", r.map(|v| v.into_iter().map(|a| a - b).collect::<Vec<_>>())));
                let mut buf = [0u8; 8];
                let r = s.read(b, &mut buf);
                out.push(format!("read -> {r:?} {buf:?}"));
            }
            _ => {
                let q = s.query(next() % 0x7FFF_0000_0000);
                out.push(format!("query -> {q:?}"));
            }
        }
    }
    for &(b, _) in &live {
        out.push(format!("{:?}", s.query(b)));
    }
    out.push(format!("{:?}", s.stats()));
    out
}

const SEED: u64 = 0x5EED_1234_ABCD_0001;
const STEPS: usize = 1500;

/// The same calls in two spaces give the same results whatever the thread, whatever
/// other spaces are doing meanwhile, however many spaces were made (and dropped)
/// before, and on a snapshot of an empty space.
#[test]
fn same_calls_same_addresses_in_every_space() {
    let first = script(&SimSpace::simulated(), SEED, STEPS);
    assert!(first.iter().any(|l| l.contains("-> Ok(")), "the script reserves something");
    assert!(first.iter().any(|l| l.contains("Err(")), "the script meets errors too");
    // Spaces made and kept before, with reservations of their own.
    let others: Vec<SimSpace> = (0..300)
        .map(|i| {
            let o = SimSpace::simulated();
            script(&o, i, 20);
            o
        })
        .collect();
    assert_eq!(script(&SimSpace::simulated(), SEED, STEPS), first, "after 300 other spaces were made");
    drop(others);
    // On other threads, while three more threads churn spaces of their own.
    let start = Arc::new(Barrier::new(5));
    let results: Vec<Vec<String>> = std::thread::scope(|sc| {
        for t in 0..3u64 {
            let start = start.clone();
            sc.spawn(move || {
                start.wait();
                for i in 0..40 {
                    let o = SimSpace::simulated();
                    script(&o, t * 1000 + i, 40);
                }
            });
        }
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let start = start.clone();
                sc.spawn(move || {
                    start.wait();
                    script(&SimSpace::simulated(), SEED, STEPS)
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results {
        assert_eq!(r, &first, "on another thread, beside other spaces' activity");
    }
    assert_eq!(script(&SimSpace::simulated().snapshot(), SEED, STEPS), first, "on a snapshot of an empty space");
}

/// A digest of the script's results (FNV-1a), to compare across processes.
fn digest(lines: &[String]) -> u64 {
    lines
        .iter()
        .flat_map(|l| l.bytes().chain([b'\n']))
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The results are the same in another run of the program (another process, so other
/// heap, stack and library addresses under ASLR): run this binary's
/// `print_script_digest` in two child processes and compare with this one's.
#[test]
fn same_calls_same_addresses_across_runs() {
    let here = digest(&script(&SimSpace::simulated(), SEED, STEPS));
    for _ in 0..2 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "print_script_digest", "--ignored", "--nocapture", "--test-threads=1"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let theirs = text
            .split("DIGEST ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or_else(|| panic!("no digest in {text}"));
        assert_eq!(theirs, format!("{here:016x}"));
    }
}

/// Prints the script's digest (run by `same_calls_same_addresses_across_runs` in a child
/// process).
#[test]
#[ignore = "run by same_calls_same_addresses_across_runs in a child process"]
fn print_script_digest() {
    // Some heap activity first, so that this process's heap differs from the parent's.
    let noise: Vec<Vec<u8>> = (0..std::process::id() % 97).map(|i| vec![0; i as usize * 13]).collect();
    println!("DIGEST {:016x}", digest(&script(&SimSpace::simulated(), SEED, STEPS)));
    drop(noise);
}

/// Everything a space shows: its regions, totals, commit limit and the first bytes of
/// each committed region.
fn state(s: &SimSpace) -> String {
    let mut out = format!("{:?} limit {:?}\n", s.stats(), s.commit_limit());
    for r in s.regions() {
        let mut head = [0u8; 8];
        let read = if r.state == MemState::Commit { s.read(r.base_address, &mut head).map(|_| head) } else { Ok(head) };
        out += &format!("{r:?} {read:?}\n");
    }
    out
}

/// What one space goes through (a fault, a guard page, a commit limit reached, refused
/// calls) changes nothing in another, used at the same time on another thread: the other
/// ends exactly as a space that ran its calls alone.
#[test]
fn a_space_failing_leaves_the_others_alone() {
    let quiet = |s: &SimSpace| script(s, SEED, 400);
    let alone = SimSpace::simulated();
    quiet(&alone);
    let victim = SimSpace::simulated();
    let other = SimSpace::simulated();
    let start = Barrier::new(2);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            start.wait();
            quiet(&other);
        });
        start.wait();
        let s = &victim;
        s.set_commit_limit(Some(0x10000));
        let b = s.alloc(0, 1 << 20, T::RESERVE, Pr::READWRITE).unwrap();
        assert_eq!(s.alloc(b, 0x20000, T::COMMIT, Pr::READWRITE), Err(Error::CommitmentLimit));
        s.alloc(b, 0x1000, T::COMMIT, Pr::READWRITE | Pr::GUARD).unwrap();
        assert!(matches!(s.write(b, b"x"), Err(Error::GuardPage { .. })));
        assert!(matches!(s.write(b + 0x1000, b"x"), Err(Error::AccessViolation { .. })));
        assert_eq!(s.free(b + 0x1000, 0, FreeType::RELEASE), Err(Error::InvalidAddress));
        assert_eq!(s.alloc(0, 0, T::RESERVE, Pr::READWRITE), Err(Error::InvalidParameter));
        assert_eq!(s.alloc(0x7FFF_FFFF_0000, 0x10000, T::RESERVE, Pr::READWRITE), Err(Error::InvalidParameter));
    });
    assert_eq!(state(&other), state(&alone));
    assert_eq!(other.commit_limit(), None);
}

/// A space's own address range (`SimConfig`) bounds every reservation in it, however
/// it is asked for, and leaves other spaces' ranges as they are.
#[test]
fn each_space_keeps_to_its_own_range() {
    let (lo, hi) = (0x4000_0000, 0x4000_0000 + (8 << 20));
    let small = SimSpace::simulated_with(SimConfig { min_address: lo, end_address: hi, ..SimConfig::default() });
    let wide = SimSpace::simulated();
    let info = small.system_info();
    assert_eq!((info.minimum_application_address, info.maximum_application_address), (lo, hi - 1));
    // Below its lowest address, past its top, or bigger than the whole range (a size
    // that can never fit): ERROR_INVALID_PARAMETER, as on Windows.
    assert_eq!(small.alloc(lo - 0x10000, 0x10000, T::RESERVE, Pr::READWRITE), Err(Error::InvalidParameter));
    assert_eq!(small.alloc(hi, 0x10000, T::RESERVE, Pr::READWRITE), Err(Error::InvalidParameter));
    assert_eq!(small.alloc(hi - 0x10000, 0x20000, T::RESERVE, Pr::READWRITE), Err(Error::InvalidParameter));
    assert_eq!(small.alloc(0, 16 << 20, T::RESERVE, Pr::READWRITE), Err(Error::InvalidParameter));
    // Filled from both ends until no room is left (ERROR_NOT_ENOUGH_MEMORY): every
    // reservation inside the range.
    let mut got = Vec::new();
    for i in 0.. {
        let ty = if i % 2 == 0 { T::RESERVE } else { T::RESERVE | T::TOP_DOWN };
        match small.alloc(0, 0x30000, ty, Pr::READWRITE) {
            Ok(b) => got.push(b),
            Err(e) => {
                assert_eq!(e, Error::NotEnoughMemory);
                break;
            }
        }
    }
    assert_eq!(got.len(), (8 << 20) / 0x30000, "128 granules hold 42 reservations of three");
    assert!(got.iter().all(|&b| lo <= b && b + 0x30000 <= hi), "{got:x?}");
    got.sort_unstable();
    assert!(got.windows(2).all(|w| w[0] + 0x30000 <= w[1]), "disjoint: {got:x?}");
    // The wide space still hands out its own lowest addresses.
    assert_eq!(wide.alloc(0, 0x10000, T::RESERVE, Pr::READWRITE), Ok(0x10000));
    assert_eq!(wide.system_info().minimum_application_address, 0x10000);
}

/// Spaces made, used and dropped on several threads at once leave nothing behind: after
/// its first round, a thread holds no more than the page buffers it may keep for its
/// writes (16 zeroed and 16 discarded pages at most: 128 KiB), however many spaces
/// follow (2000 here: a leak of 66 bytes per space would show).
#[test]
fn making_and_dropping_spaces_leaks_nothing() {
    const SPARES: isize = 2 * 16 * 4096;
    let start = Barrier::new(4);
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let start = &start;
            sc.spawn(move || {
                let round = |r: u64| {
                    for i in 0..400 {
                        let s = one_page_space();
                        script(&s, t << 32 | r << 16 | i, 10);
                        drop(s.snapshot());
                    }
                };
                start.wait();
                round(0);
                let before = held();
                for r in 1..6 {
                    round(r);
                }
                let grown = held() - before;
                assert!(grown <= SPARES, "thread {t} holds {grown} B more after 2000 more spaces");
            });
        }
    });
}

/// Threads that first touch a fresh space's blocks at the same moment (so that its parts,
/// allocated on first use, are made by several threads at once) each find their data
/// afterwards, and no page is stored twice or lost.
#[test]
fn parts_made_by_racing_threads_keep_every_write() {
    // (Two rounds under Miri, which checks the parts' publication for data races.)
    for round in 0..if cfg!(miri) { 2 } else { 20 } {
        let s = SimSpace::simulated();
        let base = s.alloc(0, 64 << 16, T::RESERVE | T::COMMIT, Pr::READWRITE).unwrap();
        let start = Barrier::new(4);
        std::thread::scope(|sc| {
            for t in 0..4usize {
                let (s, start) = (&s, &start);
                sc.spawn(move || {
                    start.wait();
                    // Thread t writes the t-th page of each of the 64 blocks.
                    for b in 0..64 {
                        s.write(base + (b << 16) + t * 4096, &[round as u8, t as u8, b as u8]).unwrap();
                    }
                });
            }
        });
        assert_eq!(s.backend().stored_pages(), 4 * 64);
        for t in 0..4usize {
            for b in 0..64 {
                let mut got = [0u8; 3];
                s.read(base + (b << 16) + t * 4096, &mut got).unwrap();
                assert_eq!(got, [round as u8, t as u8, b as u8], "round {round}, thread {t}, block {b}");
            }
        }
    }
}
