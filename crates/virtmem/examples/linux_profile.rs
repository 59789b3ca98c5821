//! One Linux-backend operation, 1000 times, for `valgrind --tool=callgrind`: counts the
//! user-space instructions the engine and the backend spend around the system calls
//! (which callgrind does not count), as `BENCHMARKS.md` reports them.
//!
//! ```sh
//! cargo build --release --example linux_profile
//! valgrind --tool=callgrind --toggle-collect='*linux_profile::timed*' \
//!     target/release/examples/linux_profile <op> [bench-layout]
//! ```
//!
//! `<op>` is `reserve`, `commit`, `decommit`, `protect` (two calls: read-only and back),
//! `release` or `query`, on 1000 reservations of 64 KiB with the first page committed
//! read-write and written. With `bench-layout` they are laid out as the `ops` benchmark
//! lays them out (a 64 KiB hole after each, the holes pooled, so the pool is full and a
//! release unmaps; a reserve there is carved off the holes that 256 releases leave).
//! Without it they are made one after another and a release is pooled.

use std::hint::black_box;
use virtmem::{AllocationType as T, FreeType, LinuxSpace, Protection as P};

const LIVE: usize = 1000;
const GRANULE: usize = 64 << 10;
const PAGE: usize = 4096;

/// The calls measured: `toggle-collect` starts counting here.
#[inline(never)]
fn timed(op: &str, s: &LinuxSpace, bases: &[usize]) -> virtmem::Result<()> {
    for &b in bases {
        match op {
            "reserve" => {
                black_box(s.alloc(0, GRANULE, T::RESERVE, P::READWRITE)?);
            }
            "commit" => {
                s.alloc(b + PAGE, PAGE, T::COMMIT, P::READWRITE)?;
            }
            "decommit" => s.free(b, PAGE, FreeType::DECOMMIT)?,
            "protect" => {
                s.protect(b, PAGE, P::READONLY)?;
                s.protect(b, PAGE, P::READWRITE)?;
            }
            "release" => s.free(b, 0, FreeType::RELEASE)?,
            "query" => {
                black_box(s.query(b)?);
            }
            other => panic!("unknown operation {other}"),
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let op = args.next().ok_or("usage: linux_profile <op> [bench-layout]")?;
    let bench_layout = args.next().as_deref() == Some("bench-layout");
    let s = LinuxSpace::linux()?;
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
        s.write(b, &[1])?;
        bases.push(b);
    }
    if op == "reserve" {
        // Make room: 256 reservations released (unmapped, or pooled), 256 reserves.
        let freed = if bench_layout { 256 } else { LIVE };
        for &b in &bases[..freed] {
            s.free(b, 0, FreeType::RELEASE)?;
        }
        bases.truncate(256);
    }
    timed(&op, &s, &bases)?;
    Ok(())
}
