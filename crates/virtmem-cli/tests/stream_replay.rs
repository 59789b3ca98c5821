//! `replay` of a long trace streams it: the replaying process's memory follows what the
//! replayed processes hold, not the trace's length. A long-running program's trace (10^8
//! calls, ~6 GB) was read whole into memory, then parsed whole into a list of records.
#![cfg(target_os = "linux")]

mod util;

use std::io::Write;
use std::path::Path;

use util::*;

/// Reservations alive at once in the generated trace.
const LIVE: usize = 16;

/// Write a trace of `iterations` lifecycles to `path`: each releases the reservation made
/// `LIVE` lifecycles before (from the second round on), reserves 128 KiB at that slot,
/// commits 4 KiB of it and decommits the page again; four records each (three once the
/// first round is done). Returns the file's size in bytes.
fn write_lifecycles(path: &Path, iterations: usize) -> u64 {
    let file = std::fs::File::create(path).expect("trace file");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(w, "virtmem-trace 1").expect("write");
    for k in 0..iterations {
        let at = 0x1000_0000 + (k % LIVE) * 0x20000;
        if k >= LIVE {
            writeln!(w, "VirtualFree {at:#x} 0x0 0x8000 -> 0x1 err=0").expect("write");
        }
        writeln!(w, "VirtualAlloc 0x0 0x20000 0x2000 0x4 -> {at:#x} err=0").expect("write");
        writeln!(w, "VirtualAlloc {at:#x} 0x1000 0x1000 0x4 -> {at:#x} err=0").expect("write");
        writeln!(w, "VirtualFree {at:#x} 0x1000 0x4000 -> 0x1 err=0").expect("write");
    }
    w.flush().expect("flush");
    drop(w);
    std::fs::metadata(path).expect("size").len()
}

/// The largest peak resident set, in bytes, of the children this process has waited for.
fn children_peak_rss() -> u64 {
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct (integers and
    // `timeval`s); getrusage only writes into the struct it is given, which lives for the
    // call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage` for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    // Linux gives ru_maxrss in KiB.
    u64::try_from(usage.ru_maxrss).expect("non-negative") * 1024
}

/// The replay of ~1.5·10^6 records (~70 MB), from a file and from standard input, peaks
/// at well under a quarter of the trace's size, and finds every call as recorded.
#[test]
fn a_long_trace_replays_in_memory_bounded_by_its_live_state() {
    let iterations = 380_000;
    let path = tmp("long-lifecycle.vmt");
    let size = write_lifecycles(&path, iterations);
    let records = 4 * iterations - LIVE;
    assert!(size > 60 << 20, "the trace is {size} bytes");
    let bound = size / 4;
    let summary = |out: &Out| {
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert!(
            out.stdout.contains(&format!("replayed {records} calls (virtmem trace, 1 session(s))")),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("calls whose result differs from the recorded one: 0\n"), "{}", out.stdout);
        assert!(!out.stdout.contains("note:"), "{}", out.stdout);
    };

    replays_within(&path, bound, &summary);
}

/// Replay the trace or log at `path` with `--strict`, from the file and then from a pipe:
/// each run as `summary` wants it, and the children's peak resident set under `bound`
/// bytes.
fn replays_within(path: &Path, bound: u64, summary: &dyn Fn(&Out)) {
    let size = std::fs::metadata(path).expect("size").len();
    let from_file = run(virtmem().args(["replay", "--strict"]).arg(path));
    summary(&from_file);
    let after_file = children_peak_rss();
    assert!(after_file < bound, "replaying a {size}-byte file peaked at {after_file} bytes resident");

    // Standard input is a pipe, fed from the file a buffer at a time: a child started
    // while this process held the whole trace would count that memory in its peak (the
    // spawn shares this process's memory until the exec).
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("virtmem"))
        .args(["replay", "--strict", "-"])
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut input = std::fs::File::open(path).expect("trace");
    let feeder = std::thread::spawn(move || std::io::copy(&mut input, &mut stdin).map(drop));
    let from_stdin = out_of(child.wait_with_output().expect("runs"));
    feeder.join().expect("feeder").expect("fed the whole file");
    summary(&from_stdin);
    // The peak over both children: the file's run stayed under the bound above.
    let after_stdin = children_peak_rss();
    assert!(after_stdin < bound, "replaying a {size}-byte file from stdin peaked at {after_stdin} bytes resident");
    let _ = std::fs::remove_file(path);
}

/// Write a Wine `+virtual` log of `iterations` lifecycles to `path`, as Wine logs them:
/// each reserves 128 KiB at a slot (releasing what was there `LIVE` lifecycles before),
/// then commits its first page, each allocation followed by the dump of its view.
/// Returns the file's size in bytes.
fn write_wine_lifecycles(path: &Path, iterations: usize) -> u64 {
    let file = std::fs::File::create(path).expect("log file");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let t = "0024:trace:virtual:";
    for k in 0..iterations {
        let at = 0x1000_0000 + (k % LIVE) * 0x20000;
        let last = at + 0x1ffff;
        if k >= LIVE {
            writeln!(w, "{t}NtFreeVirtualMemory 0xffffffffffffffff {at:#x} 00000000 8000").expect("write");
        }
        writeln!(w, "{t}NtAllocateVirtualMemory 0xffffffffffffffff {at:#x} 00020000 2000 00000004").expect("write");
        writeln!(w, "{t}dump_view View: {at:#x} - {last:#x} (valloc)").expect("write");
        writeln!(w, "{t}dump_view       {at:#x} - {last:#x} --rw-").expect("write");
        writeln!(w, "{t}NtAllocateVirtualMemory 0xffffffffffffffff {at:#x} 00001000 1000 00000004").expect("write");
        writeln!(w, "{t}dump_view View: {at:#x} - {last:#x} (valloc)").expect("write");
        writeln!(w, "{t}dump_view       {at:#x} - {:#x} c-rw-", at + 0xfff).expect("write");
        writeln!(w, "{t}dump_view       {:#x} - {last:#x} --rw-", at + 0x1000).expect("write");
    }
    w.flush().expect("flush");
    drop(w);
    std::fs::metadata(path).expect("size").len()
}

/// A Wine log was read whole into memory, then parsed whole into a list of events, before
/// any was replayed: ~4 times its size at the peak. It is now replayed an event at a
/// time as it is read, from a file and from standard input: ~70 MB peaks at well under a
/// quarter of that, every call replayed as Wine logged it.
#[test]
fn a_long_wine_log_replays_in_bounded_memory() {
    let iterations = 130_000;
    let path = tmp("long-lifecycle-wine.log");
    let size = write_wine_lifecycles(&path, iterations);
    let calls = 3 * iterations - LIVE;
    assert!(size > 60 << 20, "the log is {size} bytes");
    let bound = size / 4;
    let summary = |out: &Out| {
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains(&format!("replayed {calls} calls (Wine +virtual log")), "{}", out.stdout);
        assert!(out.stdout.contains("calls whose result differs from the recorded one: 0\n"), "{}", out.stdout);
    };
    replays_within(&path, bound, &summary);
}
