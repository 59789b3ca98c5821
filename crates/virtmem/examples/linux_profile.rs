//! One Linux-backend operation, 1000 times, for `valgrind --tool=callgrind`: counts the
//! user-space instructions the engine and the backend spend around the system calls
//! (which callgrind does not count), as `BENCHMARKS.md` reports them.
//!
//! ```sh
//! cargo build --release --example linux_profile
//! valgrind --tool=callgrind --toggle-collect='*linux_profile::timed*' \
//!     target/release/examples/linux_profile <op> [bench-layout] [no-pool] [untouched] [after-groups]
//! ```
//!
//! `<op>` is `reserve`, `commit`, `decommit`, `protect` (two calls: read-only and back),
//! `release` or `query`, on 1000 reservations of 64 KiB with the first page committed
//! read-write and written. With `bench-layout` they are laid out as the `ops` benchmark
//! lays them out (a 64 KiB hole after each, the holes pooled, so the pool is full and a
//! release unmaps; a reserve there is carved off the holes that 256 releases leave).
//! Without it they are made one after another and a release is pooled. `no-pool` turns
//! the pool of released ranges off, so that a release unmaps and a reserve maps afresh. It also prints
//! the thread CPU time per call of the measured loop (system calls included). With
//! `recommit`, the page a `commit` commits was committed and decommitted before, as in
//! the `ops` benchmark's batches after its first.
//!
//! With `after-groups`, each reservation first goes through what the `ops` benchmark's
//! earlier groups leave on the Linux space (its second page committed and decommitted,
//! its first page decommitted and recommitted: guard markers next to the committed page),
//! the state in which `ops_protect/linux` runs in the full benchmark. (Then the bare
//! `mprotect` of one page that `protect-vs-raw` compares with splits a kernel mapping.)
//!
//! `churn [N] [write] [no-guard] [positions=P]` is the `virtmem bench` churn workload on
//! one 4 GiB reservation: `N` (10 000) iterations, each at offset `(i * 7919 % P) * 64 KiB`
//! (`P` = 65 536 by default, so 10 000 distinct pieces): commit 64 KiB read-write, with
//! `write` write one byte at its start, and decommit the 64 KiB. `no-guard` turns guard
//! markers off (`LinuxOptions::guard_regions`). All of it is in `timed_churn` (counted by
//! `--toggle-collect='*linux_profile::timed*'`); the count of one iteration is the
//! difference between runs with `N` and `2N`, divided by `N`. Prints thread CPU time per
//! iteration (system calls included).
//!
//! `reset [MiB]` times a `MEM_RESET` of that much written data, its undo, and a bare
//! `MADV_FREE` of as much (1024 MiB by default), and prints the heap the reset keeps.
//!
//! `sim-snapshot [reservations] [unwritten]` times `SimSpace::snapshot` of a simulated space
//! of that many reservations, each with one page committed and (unless `unwritten`) written,
//! then the first write to each written page of the original after the snapshot (a
//! copy-on-write copy of a page the snapshot shares), a second write to each, and
//! `restore_from` the snapshot.
//!
//! `sim-write [rounds] [reservations]` and `sim-cycle [rounds] [reservations]` are the
//! simulated backend's hot paths for callgrind (`--toggle-collect='*timed_sim_hot*'`): an
//! 8-byte write to the written page of each of 1000 (or that many) reservations, or a
//! commit of each one's second page, an 8-byte write to it and its decommit (a new page
//! stored, then discarded). With 64 reservations or fewer every block keeps its grant, so
//! `sim-write` measures the granted write; so it does with 1000 too, once the space's
//! grant slots have grown to hold them (up to 16 384 blocks; `sim-write 10 20000` goes
//! through the engine for most writes).
//! `sim-read` and `sim-exec` are `sim-write` with an 8-byte read (`SimSpace::read`) or
//! instruction fetch (`SimSpace::execute`, the pages committed execute-read-write) instead.
//!
//! `sim-random [rounds] [blocks]` times 8-byte reads at 4096 random addresses over
//! `blocks` (256) 64 KiB blocks of one reservation, every page written once
//! (callgrind: `--toggle-collect='*timed_sim_random*'`): granted reads while the space
//! keeps grants for that many blocks, else mostly through the engine.
//!
//! `sim-query [calls]` times `VirtualQuery` on the simulated backend in a layout like the
//! `query1e5/sim` benchmark's (callgrind: `--toggle-collect='*timed_sim_query*'`); its
//! addresses, generator and protections differ: `VIRTMEM_PROFILE=query1e5` on the `scale`
//! bench binary makes exactly the benchmark's calls.
//!
//! `sim-access [calls] [few]` times a checked 8-byte write and read on a simulated space, mostly
//! inside granted blocks, with a protect pair, decommit and commit every 64 accesses
//! (callgrind: `--toggle-collect='*timed_sim_access*'`); 256 blocks, or 16 with `few`.
//!
//! `watch [k] [get|reset|clear] [used] [calls]` times `GetWriteWatch` (`get`: without reset;
//! `reset`, the default: with `WRITE_WATCH_FLAG_RESET`) or `ResetWriteWatch` (`clear`) of
//! a whole 256 MiB write-watched heap with `k` scattered pages written before each call
//! (64 by default), beside the bare `PAGEMAP_SCAN` doing the same work on a mapping set
//! up as the backend sets one up (`benches/common/raw_watch.rs`), as the `watch`
//! benchmark does; `used`: every page of the heap written once before. Prints thread CPU
//! time per call (system calls included) for both, in three rounds. (Valgrind does not
//! know the `userfaultfd` system call, so callgrind cannot run this mode; `strace -c -e
//! trace=ioctl` counts its scans. The library's calls are in `timed_watch`.)
//!
//! `sim-watch [k] [get|reset|clear] [used] [calls]` makes the same calls (200 by default) on
//! the simulated backend, the same `k` pages (64 by default) written with
//! `SimSpace::write` before each call (`used`: every page of the heap written once before), for callgrind
//! (`--toggle-collect='*timed_sim_watch*'` counts the calls alone, not the writes);
//! compare `calls` and `2 * calls` for the count of one call.
//!
//! `protect-vs-raw` instead times (thread CPU time) protect pairs through the space
//! beside bare `mprotect` pairs on the same pages, so on the same kernel mappings: what
//! the bookkeeping adds to a call, without the difference in layout that the `ops`
//! benchmark's separate `raw` mappings have.
//!
//! `protect-lines [batches] [sweep | kernel=<lines>]` makes `ops_protect/linux`'s timed
//! calls for callgrind's cache simulation (`--cache-sim=yes
//! --toggle-collect='*timed_protect_batch*' --toggle-collect='*linux_profile::sweep*'`):
//! `batches` (16) batches of 256 read-only protects of one page, each on a distinct
//! reservation picked at random (fixed seed), each batch undone (read-write) outside the
//! count. Deterministic: runs with `N` and `2N` batches differ by `N` batches' worth of
//! steady-state calls. Before every call, outside the count (`sweep` is toggled off):
//! with `sweep`, a 1 MiB buffer of the program's own is read whole, which evicts every
//! line of simulated caches up to that size (`--D1=4096,2,64 --LL=65536,4,64`), so each
//! call starts cold and its last-level misses are the distinct data lines it touches in
//! user space; with `kernel=<lines>`, that many lines at pseudo-random places of a 4 MiB
//! buffer are read, a stand-in for the kernel's share of the caches (with the machine's
//! cache sizes, e.g. `--D1=32768,8,64 --LL=524288,8,64`: its L1 and L2). Misses per
//! instruction (`--dump-instr=yes`) name the structure each line belongs to. Run it with
//! the flags that lay the reservations out as the benchmark does: `bench-layout
//! after-groups untouched`.

use std::hint::black_box;
use virtmem::{AllocationType as T, FreeType, LinuxSpace, Protection as P, WriteWatchFlags};

/// The Linux backend's kernel declarations, which the bare write-watch calls use.
#[path = "../src/backend/linux/sys/mod.rs"]
#[allow(unused_imports, dead_code)]
mod sys;

/// Write watch by the bare system calls, as the `watch` benchmark makes them.
#[path = "../benches/common/raw_watch.rs"]
#[allow(dead_code)]
mod raw_watch;

const LIVE: usize = 1000;
const GRANULE: usize = 64 << 10;
const PAGE: usize = 4096;
const TIB: usize = 1 << 40;

/// The calls measured: `toggle-collect` starts counting here. (The operation is matched
/// once, not per call, so that the count is the library's alone: the string comparisons
/// of a match per call cost a few instructions that moved from build to build.)
#[inline(never)]
fn timed(op: &str, s: &LinuxSpace, bases: &[usize]) -> virtmem::Result<()> {
    match op {
        "reserve" => bases.iter().try_for_each(|_| {
            s.alloc(0, GRANULE, T::RESERVE, P::READWRITE).map(|b| {
                black_box(b);
            })
        }),
        "commit" => bases.iter().try_for_each(|&b| s.alloc(b + PAGE, PAGE, T::COMMIT, P::READWRITE).map(drop)),
        "decommit" => bases.iter().try_for_each(|&b| s.free(b, PAGE, FreeType::DECOMMIT)),
        "protect" => bases.iter().try_for_each(|&b| {
            s.protect(b, PAGE, P::READONLY)?;
            s.protect(b, PAGE, P::READWRITE).map(drop)
        }),
        "release" => bases.iter().try_for_each(|&b| s.free(b, 0, FreeType::RELEASE)),
        "query" => bases.iter().try_for_each(|&b| {
            s.query(b).map(|m| {
                black_box(m);
            })
        }),
        other => panic!("unknown operation {other}"),
    }
}

/// `churn`: `n` commit / (write) / decommit iterations of 64 KiB pieces scattered over the
/// 4 GiB reservation at `base`, at `positions` distinct offsets (see the module docs).
#[inline(never)]
fn timed_churn(s: &LinuxSpace, base: usize, n: usize, positions: usize, write: bool) -> virtmem::Result<()> {
    for i in 0..n {
        let at = base + (i * 7919 % positions) * GRANULE;
        s.alloc(at, GRANULE, T::COMMIT, P::READWRITE)?;
        if write {
            // SAFETY: the piece was just committed read-write in a reservation of this
            // program's that nothing else uses.
            unsafe { std::ptr::write_volatile(at as *mut u8, 1) };
        }
        s.free(at, GRANULE, FreeType::DECOMMIT)?;
    }
    Ok(())
}

/// `churn [N] [write] [no-guard] [positions=P]`: see the module docs.
fn churn(flags: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    const SPAN: usize = 4 << 30;
    let n: usize = flags.iter().find_map(|f| f.parse().ok()).unwrap_or(10_000);
    let positions: usize = flags
        .iter()
        .find_map(|f| f.strip_prefix("positions=").and_then(|p| p.parse().ok()))
        .unwrap_or(SPAN / GRANULE)
        .clamp(1, SPAN / GRANULE);
    let write = flags.iter().any(|f| f == "write");
    let guard_regions = !flags.iter().any(|f| f == "no-guard");
    let s = LinuxSpace::linux_with(virtmem::LinuxOptions { guard_regions, ..Default::default() })?;
    let base = s.alloc(0, SPAN, T::RESERVE, P::READWRITE)?;
    let t = cpu_ns();
    timed_churn(&s, base, n, positions, write)?;
    eprintln!(
        "churn{}{}: {:.0} ns per iteration (thread CPU time)",
        if write { " write" } else { "" },
        if guard_regions { "" } else { " no-guard" },
        (cpu_ns() - t) / n as f64
    );
    s.free(base, 0, FreeType::RELEASE)?;
    Ok(())
}

/// `sim-query`: `VirtualQuery` on the simulated backend as the `query1e5/sim` benchmark
/// makes it (5×10^4 reservations of 64 KiB with a 64 KiB hole after each, 4096 random
/// addresses cycled through), `calls` times; for callgrind's cache simulation too.
#[inline(never)]
fn timed_sim_query(s: &virtmem::SimSpace, addrs: &[usize], calls: usize) -> usize {
    let mut sum = 0;
    for i in 0..calls {
        sum += s.query(addrs[i % addrs.len()]).map_or(0, |m| m.region_size);
    }
    sum
}

fn sim_query(calls: usize) -> Result<(), Box<dyn std::error::Error>> {
    const N: usize = 50_000;
    let s = virtmem::SimSpace::simulated();
    let span = s.alloc(0, 2 * N * GRANULE, T::RESERVE, P::NOACCESS)?;
    s.free(span, 0, FreeType::RELEASE)?;
    for i in 0..N {
        s.alloc(span + 2 * i * GRANULE, GRANULE, T::RESERVE, P::READWRITE)?;
    }
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as usize
    };
    let addrs: Vec<usize> = (0..4096).map(|_| span + 2 * (next() % N) * GRANULE + next() % (2 * GRANULE)).collect();
    timed_sim_query(&s, &addrs, addrs.len());
    let t = cpu_ns();
    black_box(timed_sim_query(&s, &addrs, calls));
    println!("sim-query: {:.1} ns per call (thread CPU time)", (cpu_ns() - t) / calls as f64);
    Ok(())
}

/// What `sim_hot` does to each reservation.
#[derive(Clone, Copy, PartialEq)]
enum Hot {
    /// `sim-write`: an 8-byte write.
    Write,
    /// `sim-read`: an 8-byte read.
    Read,
    /// `sim-exec`: an 8-byte instruction fetch.
    Exec,
    /// `sim-cycle`: commit + write + decommit of a second page.
    Cycle,
}

/// `sim-write` / `sim-read` / `sim-exec` / `sim-cycle`: the measured calls
/// (`--toggle-collect='*timed_sim_hot*'`).
#[inline(never)]
fn timed_sim_hot(hot: Hot, s: &virtmem::SimSpace, bases: &[usize], rounds: usize) -> virtmem::Result<u64> {
    let mut sum = 0u64;
    let mut buf = [0u8; 8];
    for r in 0..rounds {
        for &b in bases {
            match hot {
                Hot::Cycle => {
                    s.alloc(b + PAGE, PAGE, T::COMMIT, P::READWRITE)?;
                    s.write(b + PAGE + 8, &r.to_le_bytes())?;
                    s.free(b + PAGE, PAGE, FreeType::DECOMMIT)?;
                }
                Hot::Write => s.write(b + 8, &r.to_le_bytes())?,
                Hot::Read => {
                    s.read(b + 8, &mut buf)?;
                    sum = sum.wrapping_add(u64::from_le_bytes(buf));
                }
                Hot::Exec => {
                    s.execute(b + 8, &mut buf)?;
                    sum = sum.wrapping_add(u64::from_le_bytes(buf));
                }
            }
        }
    }
    Ok(sum)
}

/// `sim-write [rounds]` (and `sim-read`, `sim-exec`, `sim-cycle`) on 1000 reservations of
/// 64 KiB (a 64 KiB hole after each), the first page committed (execute-read-write for
/// `sim-exec`, else read-write) and written; prints thread CPU time per call.
fn sim_hot(hot: Hot, rounds: usize, live: usize) -> Result<(), Box<dyn std::error::Error>> {
    let s = virtmem::SimSpace::simulated();
    let span = s.alloc(0, 2 * live * GRANULE, T::RESERVE, P::NOACCESS)?;
    s.free(span, 0, FreeType::RELEASE)?;
    let prot = if hot == Hot::Exec { P::EXECUTE_READWRITE } else { P::READWRITE };
    let mut bases = Vec::with_capacity(live);
    for i in 0..live {
        let b = s.alloc(span + 2 * i * GRANULE, GRANULE, T::RESERVE, P::READWRITE)?;
        s.alloc(b, PAGE, T::COMMIT, prot)?;
        s.write(b, &[1])?;
        bases.push(b);
    }
    // One round outside the clock: grants handed out, spare pages made.
    timed_sim_hot(hot, &s, &bases, 1)?;
    let t = cpu_ns();
    black_box(timed_sim_hot(hot, &s, &bases, rounds)?);
    let per = (cpu_ns() - t) / (rounds * live) as f64;
    let (name, what) = match hot {
        Hot::Write => ("sim-write", "write"),
        Hot::Read => ("sim-read", "read"),
        Hot::Exec => ("sim-exec", "instruction fetch"),
        Hot::Cycle => ("sim-cycle", "commit + write + decommit"),
    };
    println!("{name}: {per:.1} ns per {what} (thread CPU time)");
    Ok(())
}

/// `sim-random`: 8-byte reads at `addrs`, summed (counted by
/// `--toggle-collect='*timed_sim_random*'`).
#[inline(never)]
fn timed_sim_random(s: &virtmem::SimSpace, addrs: &[usize], rounds: usize) -> virtmem::Result<u64> {
    let mut sum = 0u64;
    let mut buf = [0u8; 8];
    for _ in 0..rounds {
        for &a in addrs {
            s.read(a, &mut buf)?;
            sum = sum.wrapping_add(u64::from_le_bytes(buf));
        }
    }
    Ok(sum)
}

/// `sim-random [rounds] [blocks]`: 8-byte reads at 4096 addresses picked at random (a
/// fixed xorshift sequence) on the 16 pages of `blocks` (default 256) 64 KiB blocks of one
/// reservation, committed read-write and written once; the addresses read `rounds` times
/// after one round outside the clock. Prints thread CPU time per read.
fn sim_random(rounds: usize, blocks: usize) -> Result<(), Box<dyn std::error::Error>> {
    let s = virtmem::SimSpace::simulated();
    let base = s.alloc(0, blocks * GRANULE, T::RESERVE | T::COMMIT, P::READWRITE)?;
    for p in 0..blocks * GRANULE / PAGE {
        s.write(base + p * PAGE, &[1])?;
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let addrs: Vec<usize> = (0..4096)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) as usize;
            base + (r >> 8) % (blocks * GRANULE / 8) * 8
        })
        .collect();
    timed_sim_random(&s, &addrs, 1)?;
    let t = cpu_ns();
    black_box(timed_sim_random(&s, &addrs, rounds)?);
    let per = (cpu_ns() - t) / (rounds * addrs.len()) as f64;
    println!("sim-random: {per:.1} ns per read over {blocks} blocks (thread CPU time)");
    Ok(())
}

/// `sim-access`: `calls` checked accesses on a simulated space (counted by
/// `--toggle-collect='*timed_sim_access*'`): an 8-byte write then an 8-byte read at each of
/// 1024 addresses spread over 16 reservations of 1 MiB, committed read-write (after a first
/// pass, every block is granted: the accesses' fast path), and a commit, protect and
/// decommit of one page per reservation (the changes that take grants back).
#[inline(never)]
fn timed_sim_access(s: &virtmem::SimSpace, addrs: &[usize], bases: &[usize], calls: usize) -> virtmem::Result<u64> {
    let mut sum = 0u64;
    let mut buf = [0u8; 8];
    for i in 0..calls {
        let a = addrs[i % addrs.len()];
        s.write(a, &(i as u64).to_le_bytes())?;
        s.read(a, &mut buf)?;
        sum = sum.wrapping_add(u64::from_le_bytes(buf));
        if i % 64 == 0 {
            let b = bases[(i / 64) % bases.len()] + (1 << 20) - PAGE;
            s.protect(b, PAGE, P::READONLY)?;
            s.protect(b, PAGE, P::READWRITE)?;
            s.free(b, PAGE, FreeType::DECOMMIT)?;
            s.alloc(b, PAGE, T::COMMIT, P::READWRITE)?;
        }
    }
    Ok(sum)
}

fn sim_access(calls: usize, few: bool) -> Result<(), Box<dyn std::error::Error>> {
    let s = virtmem::SimSpace::simulated();
    let bases: Vec<usize> =
        (0..16).map(|_| s.alloc(0, 1 << 20, T::RESERVE | T::COMMIT, P::READWRITE)).collect::<Result<_, _>>()?;
    // 256 blocks, more than the backend's 128 grant slots; `few` keeps to 16 blocks (the
    // first 64 KiB of each reservation), so nearly every access is granted.
    let span = if few { GRANULE / PAGE - 1 } else { 255 };
    let addrs: Vec<usize> = (0..1024).map(|i| bases[i % 16] + (i * 7919 % span) * PAGE + (i % 500) * 8).collect();
    timed_sim_access(&s, &addrs, &bases, addrs.len())?;
    let t = cpu_ns();
    black_box(timed_sim_access(&s, &addrs, &bases, calls)?);
    println!("sim-access: {:.1} ns per write + read (thread CPU time)", (cpu_ns() - t) / calls as f64);
    Ok(())
}

/// This thread's CPU time, in nanoseconds.
fn cpu_ns() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux knows.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// Nanoseconds per protect call through the space, and per bare `mprotect` on the same
/// pages, in a fixed shuffled order.
fn protect_vs_raw(s: &LinuxSpace, bases: &[usize]) -> virtmem::Result<(f64, f64)> {
    let mut order: Vec<usize> = (0..bases.len()).collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let t = cpu_ns();
    for &i in &order {
        s.protect(bases[i], PAGE, P::READONLY)?;
        s.protect(bases[i], PAGE, P::READWRITE)?;
    }
    let ours = (cpu_ns() - t) / (2 * order.len()) as f64;
    let t = cpu_ns();
    for &i in &order {
        // SAFETY: the page is committed read-write in one of `s`'s reservations, and
        // is put back to read-write, as the space records it.
        unsafe {
            libc::mprotect(bases[i] as *mut libc::c_void, PAGE, libc::PROT_READ);
            libc::mprotect(bases[i] as *mut libc::c_void, PAGE, libc::PROT_READ | libc::PROT_WRITE);
        }
    }
    let raw = (cpu_ns() - t) / (2 * order.len()) as f64;
    Ok((ours, raw))
}

/// Distinct reservations picked for each batch of [`timed_protect_batch`]: `batch` of the
/// `n` indices a time, by a partial Fisher-Yates shuffle with a fixed xorshift seed.
fn protect_picks(n: usize, batch: usize, batches: usize) -> Vec<Vec<usize>> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut order: Vec<usize> = (0..n).collect();
    (0..batches)
        .map(|_| {
            for i in 0..batch {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, i + (x % (n - i) as u64) as usize);
            }
            order[..batch].to_vec()
        })
        .collect()
}

/// What [`timed_protect_batch`] does to the caches before each call, outside the count.
enum Evict {
    /// Read every line of the buffer: evicts what simulated caches of its size held.
    All(Vec<u8>),
    /// Read this many lines at pseudo-random places of the buffer: a stand-in for the
    /// kernel's part of a call (its mapping structures and page tables, of which each
    /// call meets its own), which a system call leaves in the caches instead of ours.
    Lines(Vec<u8>, usize),
}

/// Evict as `how` says (outside the count; `x` is the xorshift state of `Lines`).
#[inline(never)]
fn sweep(how: &Evict, x: &mut u64) -> u8 {
    match how {
        Evict::All(buf) => buf.iter().step_by(64).fold(0u8, |a, &b| a ^ black_box(b)),
        Evict::Lines(buf, n) => (0..*n).fold(0u8, |a, _| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            a ^ black_box(buf[(*x as usize % (buf.len() / 64)) * 64])
        }),
    }
}

/// `protect-lines`' counted calls: one page of each picked reservation made read-only,
/// as `ops_protect/linux` times them; with `sweep`, the caches evicted before each.
#[inline(never)]
fn timed_protect_batch(s: &LinuxSpace, picked: &[usize], evict: Option<&Evict>, x: &mut u64) -> virtmem::Result<u8> {
    let mut acc = 0u8;
    for &b in picked {
        if let Some(how) = evict {
            acc ^= sweep(how, x);
        }
        s.protect(b, PAGE, P::READONLY)?;
    }
    Ok(acc)
}

/// `protect-lines [batches] [sweep | kernel=<lines>]`: see the module docs.
fn protect_lines(s: &LinuxSpace, bases: &[usize], flags: &[String]) -> virtmem::Result<()> {
    let batches = flags.iter().find_map(|f| f.parse().ok()).unwrap_or(16);
    let kernel = flags.iter().find_map(|f| f.strip_prefix("kernel=")).and_then(|n| n.parse().ok());
    let evict = match kernel {
        Some(n) => Some(Evict::Lines(vec![1u8; 4 << 20], n)),
        None => flags.iter().any(|f| f == "sweep").then(|| Evict::All(vec![1u8; 1 << 20])),
    };
    let picks = protect_picks(bases.len(), 256.min(bases.len()), batches);
    let (mut acc, mut x) = (0u8, 0x2545_F491_4F6C_DD1Du64);
    for batch in &picks {
        // The bases picked before the count, as the benchmark does: reading them from
        // the table of every base would add a miss of the harness's own to every call.
        let picked: Vec<usize> = batch.iter().map(|&i| bases[i]).collect();
        acc ^= timed_protect_batch(s, &picked, evict.as_ref(), &mut x)?;
        for &b in &picked {
            s.protect(b, PAGE, P::READWRITE)?;
        }
    }
    black_box(acc);
    println!("protect-lines: {} calls", batches * 256.min(bases.len()));
    Ok(())
}

/// `reset [MiB]`: the thread CPU time of a `MEM_RESET` of that much written data on the
/// Linux backend (a reservation without write watch, every page written), of its
/// `MEM_RESET_UNDO`, and of a bare `madvise(MADV_FREE)` of as much written memory of
/// the program's own; and the heap the reset keeps until the undo (by `mallinfo2`).
fn reset(mib: usize) -> Result<(), Box<dyn std::error::Error>> {
    let len = mib << 20;
    let s = LinuxSpace::linux()?;
    for round in 0..3usize {
        let a = s.alloc(0, len, T::RESERVE | T::COMMIT, P::READWRITE)?;
        for off in (0..len).step_by(PAGE) {
            // SAFETY: the page is committed read-write in a reservation of this space's
            // that nothing else uses.
            unsafe { ((a + off) as *mut u64).write(off as u64 | 1) };
        }
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let heap_before = unsafe { libc::mallinfo2() }.uordblks;
        let t = cpu_ns();
        s.alloc(a, len, T::RESET, P::READWRITE)?;
        let took = cpu_ns() - t;
        // SAFETY: as above.
        let kept = unsafe { libc::mallinfo2() }.uordblks.saturating_sub(heap_before);
        let t = cpu_ns();
        let undo = s.alloc(a, len, T::RESET_UNDO, P::READWRITE).is_ok();
        let undone = cpu_ns() - t;
        s.free(a, 0, FreeType::RELEASE)?;
        // The bare call on as much written memory of the program's own.
        // SAFETY: a fresh private anonymous mapping that nothing else uses, unmapped below.
        let raw = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "mmap");
            for off in (0..len).step_by(PAGE) {
                ((p as usize + off) as *mut u64).write(off as u64 | 1);
            }
            let t = cpu_ns();
            libc::madvise(p, len, libc::MADV_FREE);
            let raw = cpu_ns() - t;
            libc::munmap(p, len);
            raw
        };
        println!(
            "round {round}: reset of {mib} MiB of data {:.1} ms (heap kept until undo: {:.1} MiB), undo {:.1} ms (all kept: {undo}); bare MADV_FREE {:.1} ms",
            took / 1e6,
            kept as f64 / (1 << 20) as f64,
            undone / 1e6,
            raw / 1e6
        );
    }
    Ok(())
}

/// `sim-snapshot [reservations]`: the thread CPU time of `SimSpace::snapshot` of a space of
/// that many reservations (64 KiB, a 64 KiB hole after each, the first page committed and
/// written: two runs and one stored page each; with `unwritten`, not written), and of
/// dropping the copy.
fn sim_snapshot(n: usize, written: bool) -> Result<(), Box<dyn std::error::Error>> {
    let s = virtmem::SimSpace::simulated();
    let span = s.alloc(0, 2 * n * GRANULE, T::RESERVE, P::NOACCESS)?;
    s.free(span, 0, FreeType::RELEASE)?;
    for i in 0..n {
        let b = s.alloc(span + 2 * i * GRANULE, GRANULE, T::RESERVE, P::READWRITE)?;
        s.alloc(b, PAGE, T::COMMIT, P::READWRITE)?;
        if written {
            s.write(b, &i.to_le_bytes())?;
        }
    }
    for round in 0..3usize {
        let t = cpu_ns();
        let copy = black_box(s.snapshot());
        let took = cpu_ns() - t;
        let pages = copy.backend().stored_pages();
        // The first write to each written page after the snapshot, then a second one.
        let mut writes = [0.0; 2];
        if written {
            for w in &mut writes {
                let t = cpu_ns();
                for i in 0..n {
                    s.write(span + 2 * i * GRANULE + 8, &round.to_le_bytes())?;
                }
                *w = cpu_ns() - t;
            }
        }
        // The space restored from the snapshot (its pages written since freed).
        let t = cpu_ns();
        s.restore_from(&copy)?;
        let restored = cpu_ns() - t;
        let t = cpu_ns();
        drop(copy);
        let dropped = cpu_ns() - t;
        println!(
            "round {round}: snapshot of {n} reservations ({pages} stored pages): {:.1} ms ({:.0} ns per reservation), drop {:.1} ms; first write to each page after it {:.0} ns, second {:.0} ns; restore from it {:.1} ms",
            took / 1e6,
            took / n as f64,
            dropped / 1e6,
            writes[0] / n as f64,
            writes[1] / n as f64,
            restored / 1e6
        );
    }
    Ok(())
}

/// `tib`: reserve a 1 TiB range (counted by `--toggle-collect='*timed_tib_reserve*'`).
#[inline(never)]
fn timed_tib_reserve(s: &LinuxSpace, size: usize) -> virtmem::Result<usize> {
    s.alloc(0, size, T::RESERVE, P::READWRITE)
}

/// `tib`: release it (`--toggle-collect='*timed_tib_release*'`).
#[inline(never)]
fn timed_tib_release(s: &LinuxSpace, base: usize) -> virtmem::Result<()> {
    s.free(base, 0, FreeType::RELEASE)
}

/// `tib [rounds] [GiB]`: reserve and release a 1 TiB range, as `tib_reserve` and `tib_release`
/// do, printing the thread CPU time of each.
fn tib(rounds: usize, size: usize) -> Result<(), Box<dyn std::error::Error>> {
    let s = LinuxSpace::linux()?;
    let (mut reserve, mut release) = (0.0, 0.0);
    for _ in 0..rounds {
        let t = cpu_ns();
        let b = timed_tib_reserve(&s, size)?;
        let u = cpu_ns();
        timed_tib_release(&s, b)?;
        release += cpu_ns() - u;
        reserve += u - t;
    }
    println!(
        "tib: reserve {:.0} ns, release {:.0} ns (thread CPU time)",
        reserve / rounds as f64,
        release / rounds as f64
    );
    Ok(())
}

/// `watch`: what is timed of a write-watched heap.
#[derive(Clone, Copy, PartialEq)]
enum WatchCall {
    Get,
    GetReset,
    Clear,
}

/// `watch`: the library's calls, `calls` of them, the `pages` of the heap at `base`
/// written before each call but the first, without the clock; returns the thread CPU
/// time they took and the pages the last call reported.
#[inline(never)]
fn timed_watch(
    s: &LinuxSpace,
    base: usize,
    size: usize,
    call: WatchCall,
    buf: &mut [usize],
    pages: &[usize],
    calls: usize,
) -> virtmem::Result<(f64, usize)> {
    let (mut took, mut n) = (0.0, 0);
    for i in 0..calls {
        if i > 0 && call != WatchCall::Get {
            rewrite(base, pages);
        }
        let t = cpu_ns();
        n = match call {
            WatchCall::Get => s.get_write_watch_into(WriteWatchFlags::empty(), base, size, buf)?,
            WatchCall::GetReset => s.get_write_watch_into(WriteWatchFlags::RESET, base, size, buf)?,
            WatchCall::Clear => s.reset_write_watch(base, size).map(|()| pages.len())?,
        };
        took += cpu_ns() - t;
    }
    Ok((took, n))
}

/// Write one byte to each of `pages` (page numbers) of the heap at `base`.
#[inline(never)]
fn rewrite(base: usize, pages: &[usize]) {
    for &i in pages {
        // SAFETY: the page is committed read-write in a write-watched heap of this
        // program's that nothing else uses.
        unsafe { std::ptr::write_volatile((base + i * PAGE) as *mut u8, 1) };
    }
}

/// `sim-watch`: one call on the simulated heap at `base` (counted by
/// `--toggle-collect='*timed_sim_watch*'`); the pages it reported.
#[inline(never)]
fn timed_sim_watch(
    s: &virtmem::SimSpace,
    base: usize,
    size: usize,
    call: WatchCall,
    buf: &mut [usize],
) -> virtmem::Result<usize> {
    match call {
        WatchCall::Get => s.get_write_watch_into(WriteWatchFlags::empty(), base, size, buf),
        WatchCall::GetReset => s.get_write_watch_into(WriteWatchFlags::RESET, base, size, buf),
        WatchCall::Clear => s.reset_write_watch(base, size).map(|()| 0),
    }
}

/// `sim-watch [k] [get|reset|clear] [used] [calls]`: see the module docs.
fn sim_watch(flags: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    const HEAP: usize = 256 << 20;
    let k: usize = flags.first().and_then(|c| c.parse().ok()).unwrap_or(64);
    let call = watch_call(flags);
    let calls: usize = flags.iter().filter_map(|c| c.parse().ok()).nth(1).unwrap_or(200);
    let pages = scattered_pages(k, HEAP / PAGE);
    let s = virtmem::SimSpace::simulated();
    let base = s.alloc(0, HEAP, T::RESERVE | T::WRITE_WATCH, P::NOACCESS)?;
    s.alloc(base, HEAP, T::COMMIT, P::READWRITE)?;
    let mut buf = vec![0usize; HEAP / PAGE];
    let write = |s: &virtmem::SimSpace| pages.iter().try_for_each(|&i| s.write(base + i * PAGE, &[1]));
    // As the benchmark's `prepare`: written, reset, written again.
    if flags.iter().any(|f| f == "used") {
        (0..HEAP / PAGE).try_for_each(|i| s.write(base + i * PAGE, &[1]))?;
    }
    write(&s)?;
    s.reset_write_watch(base, HEAP)?;
    let mut took = 0.0;
    for i in 0..calls {
        if i == 0 || call != WatchCall::Get {
            write(&s)?;
        }
        let t = cpu_ns();
        let n = black_box(timed_sim_watch(&s, base, HEAP, call, &mut buf)?);
        took += cpu_ns() - t;
        assert!(call == WatchCall::Clear || n == pages.len(), "the pages written are reported");
    }
    println!("sim-watch: k = {k}: {:.0} ns per call (thread CPU time, one clock read each)", took / calls as f64);
    Ok(())
}

/// `watch` and `sim-watch`: the call its flags name (`get`, `clear`, else get with reset).
fn watch_call(flags: &[String]) -> WatchCall {
    if flags.iter().any(|f| f == "get") {
        WatchCall::Get
    } else if flags.iter().any(|f| f == "clear") {
        WatchCall::Clear
    } else {
        WatchCall::GetReset
    }
}

/// `k` distinct page numbers below `pages`, ascending, scattered by a fixed xorshift.
fn scattered_pages(k: usize, pages: usize) -> Vec<usize> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut chosen = std::collections::BTreeSet::new();
    while chosen.len() < k.min(pages) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chosen.insert((x % pages as u64) as usize);
    }
    chosen.into_iter().collect()
}

/// `watch [k] [get|reset|clear] [used] [calls]`: see the module docs.
fn watch(flags: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    const HEAP: usize = 256 << 20;
    let k: usize = flags.first().and_then(|c| c.parse().ok()).unwrap_or(64);
    let call = watch_call(flags);
    let used = flags.iter().any(|f| f == "used");
    let calls: usize = flags.iter().filter_map(|c| c.parse().ok()).nth(1).unwrap_or(200);
    // The `k` pages: scattered, fixed (xorshift, distinct, ascending).
    let pages = scattered_pages(k, HEAP / PAGE);
    let s = LinuxSpace::linux()?;
    let base = s.alloc(0, HEAP, T::RESERVE | T::WRITE_WATCH, P::NOACCESS)?;
    s.alloc(base, HEAP, T::COMMIT, P::READWRITE)?;
    let mut raw = raw_watch::RawWatch::new(HEAP)?;
    if used {
        let all: Vec<usize> = (0..HEAP / PAGE).collect();
        rewrite(base, &all);
        rewrite(raw.base(), &all);
    }
    s.reset_write_watch(base, HEAP)?;
    raw.scan(true);
    let mut buf = vec![0usize; HEAP / PAGE];
    for round in 0..3 {
        rewrite(base, &pages);
        let (ours, n) = timed_watch(&s, base, HEAP, call, &mut buf, &pages, calls)?;
        assert_eq!(n, pages.len(), "the library reports the pages written");
        rewrite(raw.base(), &pages);
        let mut bare = 0.0;
        for i in 0..calls {
            if i > 0 && call != WatchCall::Get {
                rewrite(raw.base(), &pages);
            }
            let t = cpu_ns();
            let n = raw.scan(call != WatchCall::Get);
            bare += cpu_ns() - t;
            assert!(call == WatchCall::Clear || n == pages.len(), "the bare scan finds the pages written");
        }
        // (A `get` leaves the pages written: clean them for the next round.)
        s.reset_write_watch(base, HEAP)?;
        raw.scan(true);
        let (ours, bare) = (ours / calls as f64, bare / calls as f64);
        println!(
            "round {round}: k = {k}{}: library {ours:.0} ns, bare PAGEMAP_SCAN {bare:.0} ns, ratio {:.2}",
            if used { " (used heap)" } else { "" },
            ours / bare
        );
    }
    s.free(base, 0, FreeType::RELEASE)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let op = args.next().ok_or("usage: linux_profile <op> [bench-layout] [no-pool]")?;
    let flags: Vec<String> = args.collect();
    if op == "tib" {
        // (Valgrind cannot map 1 TiB: a size in GiB as a second argument, e.g. 16.)
        let gib = flags.get(1).and_then(|c| c.parse::<usize>().ok()).map_or(TIB, |g| g << 30);
        return tib(flags.first().and_then(|c| c.parse().ok()).unwrap_or(1000), gib);
    }
    if op == "churn" {
        return churn(&flags);
    }
    if op == "watch" {
        return watch(&flags);
    }
    if op == "sim-watch" {
        return sim_watch(&flags);
    }
    if op == "sim-query" {
        return sim_query(flags.first().and_then(|c| c.parse().ok()).unwrap_or(4_000_000));
    }
    if op == "sim-access" {
        return sim_access(
            flags.first().and_then(|c| c.parse().ok()).unwrap_or(1_000_000),
            flags.iter().any(|f| f == "few"),
        );
    }
    if op == "sim-random" {
        return sim_random(
            flags.first().and_then(|c| c.parse().ok()).unwrap_or(100),
            flags.get(1).and_then(|c| c.parse().ok()).unwrap_or(256),
        );
    }
    if op == "reset" {
        return reset(flags.first().and_then(|c| c.parse().ok()).unwrap_or(1024));
    }
    let hot = match op.as_str() {
        "sim-write" => Some(Hot::Write),
        "sim-read" => Some(Hot::Read),
        "sim-exec" => Some(Hot::Exec),
        "sim-cycle" => Some(Hot::Cycle),
        _ => None,
    };
    if let Some(hot) = hot {
        let rounds = flags.first().and_then(|c| c.parse().ok()).unwrap_or(1000);
        return sim_hot(hot, rounds, flags.get(1).and_then(|c| c.parse().ok()).unwrap_or(LIVE));
    }
    if op == "sim-snapshot" {
        let written = !flags.iter().any(|f| f == "unwritten");
        return sim_snapshot(flags.first().and_then(|c| c.parse().ok()).unwrap_or(100_000), written);
    }
    let bench_layout = flags.iter().any(|f| f == "bench-layout");
    // The `ops` benchmark never writes its pages: its `mprotect`s change no page entries.
    let untouched = flags.iter().any(|f| f == "untouched");
    // Without the pool, a release unmaps and a reserve maps afresh.
    let s = if flags.iter().any(|f| f == "no-pool") {
        LinuxSpace::linux_with(virtmem::LinuxOptions { pool_bytes: 0, ..Default::default() })?
    } else {
        LinuxSpace::linux()?
    };
    let mut bases = Vec::with_capacity(LIVE);
    let span = if bench_layout {
        let span = s.alloc(0, 2 * LIVE * GRANULE, T::RESERVE, P::READWRITE)?;
        s.free(span, 0, FreeType::RELEASE)?;
        Some(span)
    } else {
        None
    };
    for i in 0..LIVE {
        let at = span.map_or(0, |sp| sp + 2 * i * GRANULE);
        let b = s.alloc(at, GRANULE, T::RESERVE, P::READWRITE)?;
        s.alloc(b, PAGE, T::COMMIT, P::READWRITE)?;
        if !untouched {
            s.write(b, &[1])?;
        }
        bases.push(b);
    }
    if flags.iter().any(|f| f == "after-groups") {
        // As `ops_commit` and `ops_decommit` leave them (their undo included).
        for &b in &bases {
            s.alloc(b + PAGE, PAGE, T::COMMIT, P::READWRITE)?;
            s.free(b + PAGE, PAGE, FreeType::DECOMMIT)?;
        }
        for &b in &bases {
            s.free(b, PAGE, FreeType::DECOMMIT)?;
            s.alloc(b, PAGE, T::COMMIT, P::READWRITE)?;
        }
    }
    if op == "protect-vs-raw" {
        for round in 0..5 {
            let (ours, raw) = protect_vs_raw(&s, &bases)?;
            println!("round {round}: protect {ours:.0} ns, bare mprotect {raw:.0} ns, ratio {:.2}", ours / raw);
        }
        return Ok(());
    }
    if op == "protect-lines" {
        return Ok(protect_lines(&s, &bases, &flags)?);
    }
    if flags.iter().any(|f| f == "recommit") {
        // As the `ops` benchmark's commits after its first batch: of a page decommitted.
        for &b in &bases {
            s.alloc(b + PAGE, PAGE, T::COMMIT, P::READWRITE)?;
            s.free(b + PAGE, PAGE, FreeType::DECOMMIT)?;
        }
    }
    if op == "reserve" {
        // Make room: 256 reservations released (unmapped, or pooled), 256 reserves.
        let freed = if bench_layout { 256 } else { LIVE };
        for &b in &bases[..freed] {
            s.free(b, 0, FreeType::RELEASE)?;
        }
        bases.truncate(256);
    }
    let t = cpu_ns();
    timed(&op, &s, &bases)?;
    eprintln!("{op}: {:.0} ns per call (thread CPU time)", (cpu_ns() - t) / bases.len() as f64);
    Ok(())
}
