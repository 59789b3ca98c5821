//! Where the output goes wrong: standard output on a full disk or a closed pipe, a trace
//! file that cannot be written. The run must say so on stderr and exit 2 (a full disk), or
//! keep its status (a reader that went away), never panic nor report success for output
//! that was lost.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};

mod util;

use util::*;

/// `virtmem ARGS...` from the workspace root with stdin `input` and stdout `stdout`.
fn with_stdout(args: &[&str], input: &str, stdout: File) -> Out {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("virtmem"));
    cmd.current_dir(root()).args(args).stdin(Stdio::piped()).stdout(Stdio::from(stdout)).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn virtmem");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        // The child may stop reading early; a failed write of its input is not the test.
        let _ = stdin.write_all(input.as_bytes());
    }
    out_of(child.wait_with_output().expect("virtmem runs"))
}

/// A pipe whose reading end is already closed: every write to it fails with EPIPE.
fn closed_pipe() -> File {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is an array of two ints for pipe(2) to fill in.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: fds[0] is the reading end pipe(2) just opened, owned here and closed once.
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is the open writing end, owned here; the File takes it over alone.
    unsafe { File::from_raw_fd(fds[1]) }
}

fn dev_full() -> File {
    File::options().write(true).open("/dev/full").expect("/dev/full")
}

/// Each command whose output lands on a full disk: it panicked (exit 101, a backtrace)
/// in `replay`, `bench` and the prompt's `help`, and `run` exited 0 with its output lost.
#[test]
fn a_full_disk_on_stdout_is_an_error_not_a_panic_nor_a_success() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "examples/scripts/tour.vms"], ""),
        (&["run", "-"], "echo \"hello\"\n"),
        (&["run"], "help\nmap\n"),
        (&["replay", "examples/traces/gc-heap.vmt"], ""),
        (&["bench", "--scale", "0.01", "--runs", "1"], ""),
    ];
    for (args, input) in cases {
        let o = with_stdout(args, input, dev_full());
        assert_eq!(o.code, 2, "{args:?}: exit {}, stderr {}", o.code, o.stderr);
        assert!(
            o.stderr.contains("error: cannot write standard output: No space left on device"),
            "{args:?}: {}",
            o.stderr
        );
    }
}

/// A reader that went away (`virtmem ... | head -1`) is no error of the run: its status
/// is what the run gave (1 for a failed `expect`), with nothing on stderr and no panic.
#[test]
fn a_closed_pipe_on_stdout_keeps_the_run_status() {
    let failing = script("pipe-expect.vms", b"alloc NULL, 64K, reserve, rw\nexpect ERROR_INVALID_PARAMETER\nmap\n");
    let failing = failing.to_str().expect("utf-8 temp path");
    let cases: &[(&[&str], &str, i32)] = &[
        (&["run", "examples/scripts/tour.vms"], "", 0),
        (&["run", failing], "", 1),
        (&["run"], "help\nmap\n", 0),
        (&["replay", "--strict", "examples/traces/gc-heap.vmt"], "", 0),
        (&["bench", "--scale", "0.01", "--runs", "1"], "", 0),
    ];
    for (args, input, code) in cases {
        let o = with_stdout(args, input, closed_pipe());
        assert_eq!(o.code, *code, "{args:?}: stderr {}", o.stderr);
        assert!(!o.stderr.contains("cannot write"), "{args:?}: {}", o.stderr);
    }
}

/// `run --trace FILE` on a file that cannot take the lines: the trace writer stopped at
/// the first failed line and the run exited 0, leaving a recording without its calls for a
/// replay to pass on. The error names the file, and the status is 2 (the run's output is
/// still printed).
#[test]
fn a_trace_file_that_cannot_be_written_is_an_error() {
    let o = run(virtmem().args(["run", "examples/scripts/gc-heap.vms", "--trace", "/dev/full"]));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("error: cannot write trace file /dev/full: No space left on device"), "{}", o.stderr);
    assert!(o.stdout.contains("VirtualAlloc(NULL, 0x10000000, MEM_RESERVE|MEM_WRITE_WATCH"), "{}", o.stdout);
}

/// `virtmem ARGS...` from the workspace root with stderr on a full disk.
fn with_full_stderr(args: &[&str]) -> i32 {
    let o = Command::new(assert_cmd::cargo::cargo_bin("virtmem"))
        .current_dir(root())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::from(dev_full()))
        .output()
        .expect("virtmem runs");
    o.status.code().unwrap_or(-1)
}

/// Standard error on a full disk: the message is lost, the status must not be. Every
/// message went through eprintln!, which panics when it cannot write (exit 101: a CI
/// pipeline read "crashed" where the run said "bad script", "an expect failed").
#[test]
fn a_full_disk_on_stderr_keeps_the_run_status() {
    let bad = script("stderr-bad.vms", b"frobnicate\n");
    let miss = script("stderr-miss.vms", b"query 0\nexpect 87\n");
    let (bad, miss) = (bad.to_str().expect("utf-8 path"), miss.to_str().expect("utf-8 path"));
    assert_eq!(with_full_stderr(&["run", bad]), 2);
    assert_eq!(with_full_stderr(&["run", miss]), 1);
    assert_eq!(with_full_stderr(&["replay", "no/such/trace"]), 2);
    assert_eq!(with_full_stderr(&["bench", "--runs", "0"]), 2);
}

/// `run --trace FILE` with a script that cannot run (missing, not UTF-8, a syntax error)
/// appended a session header to FILE all the same: a later `replay --strict FILE` then
/// passed, replaying an empty session as if the recording step had worked. The script is
/// read and parsed before the trace file is opened.
#[test]
fn a_script_that_cannot_run_leaves_no_trace_behind() {
    let bad = script("trace-bad.vms", b"alloc 0, 64K, reserve, rw\nfrobnicate\n");
    for s in [bad.to_str().expect("utf-8 path"), "no/such/script.vms"] {
        let t = tmp("never-recorded.vmt");
        let _ = std::fs::remove_file(&t);
        let o = run(virtmem().args(["run", s, "--trace"]).arg(&t));
        assert_eq!(o.code, 2, "{}", o.stderr);
        assert!(!t.exists(), "{s}: a trace file was written: {:?}", std::fs::read_to_string(&t));
    }
    // A script that runs still records (appending), its last line included.
    let good = script("trace-good.vms", b"alloc 0, 64K, reserve, rw\n");
    let t = tmp("recorded.vmt");
    let _ = std::fs::remove_file(&t);
    let o = run(virtmem().arg("run").arg(&good).arg("--trace").arg(&t));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let text = std::fs::read_to_string(&t).expect("trace written");
    assert!(
        text.starts_with("virtmem-trace 1 source=virtmem-run\nVirtualAlloc 0x0 0x10000 0x2000 0x4 -> 0x10000 err=0"),
        "{text}"
    );
}
