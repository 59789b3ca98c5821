//! Edge cases of the `virtmem` command a user meets, each against what docs/script.md,
//! `--help` or the Win32 spec says (each was answered wrongly once, found by an
//! independent review).

use std::time::Duration;

use assert_cmd::Command;

mod util;

use util::*;

/// docs/script.md: `read` is "a checked CPU load (≤ 1 MiB) | the bytes, or the exception
/// (`STATUS_ACCESS_VIOLATION`, ...)"; the spec: every page is free, reserved or committed
/// and only committed, accessible pages may be touched. In a fresh simulated space an
/// access at 0xFFFFFFFFFFFFFFFF faults (it had succeeded, the bytes written there reading
/// back: the engine's range check saturated `address + len` and so checked nothing).
#[test]
fn an_access_at_the_last_address_of_an_empty_space_faults() {
    let p = script(
        "top.vms",
        b"write SIZE_MAX, 1, 2\nexpect STATUS_ACCESS_VIOLATION\nread SIZE_MAX, 2\nexpect STATUS_ACCESS_VIOLATION\nexec SIZE_MAX, 2\nexpect STATUS_ACCESS_VIOLATION\nfill SIZE_MAX, 3, 7\nexpect STATUS_ACCESS_VIOLATION\n",
    );
    let o = run(virtmem().arg("run").arg(&p));
    assert!(!o.stdout.contains("byte(s) written"), "a store into free memory succeeded:\n{}", o.stdout);
    assert!(!o.stdout.contains("= 01 02"), "a load from free memory succeeded:\n{}", o.stdout);
    assert!(!o.stdout.contains("fetched"), "an instruction fetch from free memory succeeded:\n{}", o.stdout);
    assert_eq!(o.code, 0, "every access faults:\n{}", o.stdout);
}

/// docs/script.md: Wine's log "is read best effort"; a malformed input must be an error
/// or be skipped, not crash. A view dump whose addresses are not page-aligned (one line
/// edited by hand) is replayed as covering its pages (it had made `replay` walk the space
/// forever, growing a list until the OOM killer stopped it at 24 GB). The run is held to
/// 2 GB of address space so that such a failure aborts quickly.
#[test]
fn an_unaligned_wine_view_does_not_exhaust_memory() {
    let log = tmp("unaligned.log");
    std::fs::write(
        &log,
        "0108:trace:virtual:dump_view View: 0x10001 - 0x10002 (file)\n\
         0108:trace:virtual:dump_view       0x10001 - 0x10002 c-r--\n",
    )
    .expect("log");
    let bin = assert_cmd::cargo::cargo_bin("virtmem");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 2000000 && exec \"$0\" replay \"$1\"")
        .arg(&bin)
        .arg(&log)
        .timeout(Duration::from_secs(60));
    let o = run(&mut cmd);
    assert!(
        matches!(o.code, 0..=2),
        "replay of a 2-line log died (exit {}): {}",
        o.code,
        &o.stderr[..o.stderr.len().min(400)]
    );
}

/// docs/script.md: "`--trace` records every Win32 call in virtmem's trace format", and
/// "GetWriteWatch, ResetWriteWatch, VirtualLock and VirtualUnlock have no Ex form and
/// always act on process 0"; in Ex mode `read`/`write` "act like ReadProcessMemory /
/// WriteProcessMemory" (the output names them so), and the trace format has records for
/// both (`virtmem::trace`: "`ReadProcessMemory`, `WriteProcessMemory` | process address
/// buffer size done_ptr"). Under `process 2` the ReadProcessMemory / WriteProcessMemory
/// calls are recorded, and under `process null` the VirtualLock, VirtualUnlock and
/// ResetWriteWatch calls made on process 0 (neither had been).
#[test]
fn run_trace_records_every_call_it_reports() {
    let t = tmp("every.vmt");
    let _ = std::fs::remove_file(&t);
    let p = script(
        "every.vms",
        b"p = alloc 0, 1M, reserve|commit|write_watch, rw\nprocess null\nlock p, 4K\nunlock p, 4K\nresetwritewatch p, 1M\nprocess 2\nq = alloc 0, 64K, commit, rw\nwrite q, 1, 2\nread q, 2\n",
    );
    let o = run(virtmem().arg("run").arg(&p).arg("--trace").arg(&t));
    assert_eq!(o.code, 0, "{}", o.stderr);
    for shown in
        ["VirtualLock(0x10000, 0x1000) = TRUE", "WriteProcessMemory(2, 0x10000", "ReadProcessMemory(2, 0x10000"]
    {
        assert!(o.stdout.contains(shown), "{shown}: {}", o.stdout);
    }
    let text = std::fs::read_to_string(&t).expect("trace written");
    let missing: Vec<&str> = [
        "VirtualLock 0x10000 0x1000",
        "VirtualUnlock 0x10000 0x1000",
        "ResetWriteWatch 0x10000 0x100000",
        "WriteProcessMemory 0x2 0x10000",
        "ReadProcessMemory 0x2 0x10000",
    ]
    .into_iter()
    .filter(|want| !text.contains(want))
    .collect();
    assert!(missing.is_empty(), "the trace lacks {missing:?}:\n{text}");
}

/// `expect CODE` "checks the last call's outcome"; ERROR_SUCCESS (0) is the code of a
/// successful call (the trace format itself records `err=0` after a success). After a
/// successful alloc, `expect 0` and `expect ERROR_SUCCESS` hold (they had failed with
/// "expected ERROR_SUCCESS (0), got success").
#[test]
fn expect_error_success_holds_after_a_success() {
    for want in ["0", "ERROR_SUCCESS"] {
        let p = script("succ.vms", format!("alloc 0, 64K, commit, rw\nexpect {want}\n").as_bytes());
        let o = run(virtmem().arg("run").arg(&p));
        assert_eq!(o.code, 0, "expect {want}: {}", o.stdout);
    }
}

/// docs/script.md: "A statement is a command and its arguments, separated by commas,
/// optionally in parentheses (`alloc(0, 4K, commit, rw)`)": for every command, `process(1)`
/// and `expect(ok)` included (they had been usage errors).
#[test]
fn every_command_takes_its_arguments_in_parentheses() {
    let p = script(
        "parens.vms",
        b"alloc(0, 64K, commit, rw)\nexpect(ok)\nprocess(1)\nalloc(0, 64K, commit, rw)\nprocess(off)\n",
    );
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("VirtualAllocEx(1, NULL, 0x10000"), "{}", o.stdout);
}

/// docs/script.md, the `\x` escape: strings are written `"text\n\x00"`; the lexer's error
/// says "`\x` needs two hex digits, like \x41". `"\x+1"` is not two hex digits and is
/// refused (it had been read as byte 0x01: `u8::from_str_radix` takes a leading `+`).
#[test]
fn a_hex_escape_needs_two_hex_digits() {
    let p = script("plus.vms", b"echo \"\\x+1\"\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 2, "accepted: stdout {:?}", o.stdout);
    assert!(o.stderr.contains("needs two hex digits"), "{}", o.stderr);
}

/// docs/script.md's command table: "`stats`, `sysinfo` | | totals and fragmentation;
/// `GetSystemInfo`". `stats` prints totals, page runs, the largest free block, the free
/// gaps and the fragmentation figure replay prints (it had printed none).
#[test]
fn stats_reports_fragmentation() {
    let p = script(
        "frag.vms",
        b"alloc 0x10000, 64K, reserve, rw\nalloc 0x30000, 64K, reserve, rw\nalloc 0x60000, 64K, reserve, rw\nstats\n",
    );
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let line = o.stdout.lines().find(|l| l.starts_with("reserved ")).expect("stats line");
    assert!(line.contains("fragmentation"), "no fragmentation in `{line}`");
}

/// README: the simulated space is "deterministic (same calls, same addresses)", and
/// docs/script.md says examples/traces/gc-heap.vmt was "recorded by `virtmem run --trace`
/// from examples/scripts/gc-heap.vms". Recording the same script twice on the simulated
/// space gives the same trace (VirtualQuery / VirtualProtect / GetWriteWatch records had
/// carried the address of the CLI's own stack buffer, which ASLR moves).
#[test]
fn run_trace_of_the_simulated_space_is_reproducible() {
    let (a, b) = (tmp("rep-a.vmt"), tmp("rep-b.vmt"));
    for t in [&a, &b] {
        let _ = std::fs::remove_file(t);
        let o = run(virtmem().args(["run", "examples/scripts/gc-heap.vms", "--trace"]).arg(t));
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    let (ta, tb) = (std::fs::read_to_string(&a).expect("a"), std::fs::read_to_string(&b).expect("b"));
    let first = ta.lines().zip(tb.lines()).find(|(x, y)| x != y);
    assert!(first.is_none(), "two recordings differ: {first:?}");
}

/// docs/script.md: examples/traces/gc-heap.vmt is "recorded by `virtmem run --trace` from
/// examples/scripts/gc-heap.vms". The shipped trace is what that command records today
/// (it had been recorded before plain `write`s were traced as `VirtmemAccess`, and lacked
/// those lines).
#[test]
fn the_shipped_gc_heap_trace_is_what_run_trace_records() {
    let t = tmp("gc-heap-now.vmt");
    let _ = std::fs::remove_file(&t);
    let o = run(virtmem().args(["run", "examples/scripts/gc-heap.vms", "--trace"]).arg(&t));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let now = std::fs::read_to_string(&t).expect("fresh recording");
    let shipped = std::fs::read_to_string(root().join("examples/traces/gc-heap.vmt")).expect("shipped trace");
    let first = now.lines().zip(shipped.lines()).enumerate().find(|(_, (a, b))| a != b);
    assert!(first.is_none(), "first difference (line index, recorded now, shipped): {first:?}");
    assert_eq!(now.lines().count(), shipped.lines().count(), "recorded now:\n{now}");
}

/// At the prompt a line whose call fails to run (a 33-bit flag value: "flags are 32-bit
/// values") leaves its variable unknown, as one never assigned (it had read as 0x0, and
/// `free p, 0, release` called VirtualFree(NULL...)).
#[test]
fn a_variable_whose_line_failed_is_not_silently_zero() {
    let o = run(virtmem().arg("run").write_stdin("p = alloc 0, 4K, 0x100000000, rw\necho p\n"));
    assert!(o.stderr.contains("flags are 32-bit values"), "{}", o.stderr);
    assert!(!o.stdout.contains("0x0"), "p was never assigned, yet it reads as {}", o.stdout);
}

/// docs/script.md: "`#` starts a comment"; the prompt says "`quit` leaves". At the prompt
/// `quit # done` leaves (it had been an unknown command, and the lines after it ran).
#[test]
fn quit_with_a_comment_leaves_the_prompt() {
    let o = run(virtmem().arg("run").write_stdin("quit # done\necho 1\n"));
    assert!(!o.stderr.contains("unknown command `quit`"), "{}", o.stderr);
    assert_eq!(o.stdout, "", "nothing runs after quit");
}

/// docs/script.md: in Ex mode `write` acts like `WriteProcessMemory`, whose error libvirtmem
/// documents: `ERROR_NOACCESS` (998) when the first byte cannot be written,
/// `ERROR_PARTIAL_COPY` (299) when the range starts writable and runs into a page that is
/// not (the CLI had said 998 for both, and `replay --strict` of a libvirtmem trace holding
/// such a call reported a difference that was not there).
#[test]
fn a_write_into_another_process_that_runs_into_an_inaccessible_page_is_a_partial_copy() {
    let p = script(
        "partial.vms",
        b"process 1\np = alloc 0, 64K, reserve, rw\nalloc p, 4K, commit, rw\nwrite p + 4K - 2, \"abcd\"\nexpect ERROR_PARTIAL_COPY\nwrite p + 4K, \"ab\"\nexpect ERROR_NOACCESS\nread p + 4K - 2, 4\nexpect ERROR_PARTIAL_COPY\n",
    );
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
}

/// docs/script.md: in Ex mode `write` acts like `WriteProcessMemory`, which writes into
/// `PAGE_EXECUTE_READ` code (libvirtmem, as Windows) and gives the page its protection
/// back; a `run --trace` of it replays with no difference.
#[test]
fn a_write_into_another_process_writes_into_its_code() {
    let p = script(
        "code.vms",
        b"process 1\np = alloc 0, 64K, reserve|commit, rw\nprotect p, 4K, rx\nwrite p + 16, \"abcd\"\nexpect ok\nprotect p, 4K, rx\nexpect ok\nread p + 16, 4\nexpect ok\n",
    );
    let t = tmp("code.vmt");
    let o = run(virtmem().arg("run").arg("--trace").arg(&t).arg(&p));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("old protection PAGE_EXECUTE_READ\n"), "the protection after the write: {}", o.stdout);
    assert!(o.stdout.contains("61 62 63 64"), "the bytes written: {}", o.stdout);
    let r = run(virtmem().arg("replay").arg("--strict").arg(&t));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

/// docs/script.md: `exit N` is `TerminateProcess`: a process never selected is
/// `ERROR_INVALID_HANDLE`, and one that has exited cannot exit again, nor the current
/// process ever (`ERROR_ACCESS_DENIED`; `exit 0` had stopped the script as an error),
/// both outcomes that `expect` checks (a missing process had been a note, and the run
/// went on as if it had exited).
#[test]
fn exit_of_a_process_that_does_not_exist_is_an_error_expect_can_check() {
    let p = script(
        "exit.vms",
        b"exit 7\nexpect ERROR_INVALID_HANDLE\nprocess 2\nexit 2\nexpect ok\nexit 2\nexpect ERROR_ACCESS_DENIED\nalloc 0, 64K, reserve, rw\nexpect ERROR_ACCESS_DENIED\nexit 0\nexpect ERROR_ACCESS_DENIED\nprocess 0\nalloc 0, 64K, reserve, rw\nexpect ok\n",
    );
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let q = script("exit-missing.vms", b"exit 7\nexpect ok\n");
    let o = run(virtmem().arg("run").arg(&q));
    assert_eq!(o.code, 1, "expect ok after the exit of a missing process: {}", o.stdout);
    assert!(o.stdout.contains("TerminateProcess(7, 0) failed"), "{}", o.stdout);
}

/// docs/script.md, Traces: `replay` "compares results, last errors, old protections";
/// libvirtmem records `VirtmemAccess` "since a guard page it meets is disarmed", and `run
/// --trace` "writes the same format". In `Ex` mode `exec` is `VirtmemAccess` and disarms
/// the guard page it meets; it now goes into the trace too, so a strict replay of the
/// recording agrees (it had been left out: the replayed guard stayed armed, and the next
/// `VirtualProtectEx`'s old protection differed).
#[test]
fn an_instruction_fetch_in_another_process_is_recorded_and_replays() {
    let p = script(
        "exec-trace.vms",
        b"process 1\np = alloc 0, 64K, reserve|commit, rx|guard\nexec p\nexpect STATUS_GUARD_PAGE_VIOLATION\nexec p, 2\nexpect ok\nexec p + 64K\nexpect STATUS_ACCESS_VIOLATION\nprotect p, 4K, rx\nexpect ok\n",
    );
    let t = tmp("exec-trace.vmt");
    let _ = std::fs::remove_file(&t);
    let o = run(virtmem().arg("run").arg("--trace").arg(&t).arg(&p));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let text = std::fs::read_to_string(&t).expect("trace");
    assert!(text.contains("VirtmemAccess 0x1 0x10000 0x1000 0x1 0x8 0x1008 -> 0x80000001 err=0\n"), "{text}");
    let r = run(virtmem().arg("replay").arg("--strict").arg(&t));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

/// docs/script.md: with `process N` "calls are the `Ex` forms on process N", answered as
/// libvirtmem answers them; its `VirtualAllocEx` finds a zero size (87) before it looks
/// at the handle (Wine 8 agrees). So do `alloc` and `reset` on a NULL handle and on an
/// exited process (they had answered 6 and 5).
#[test]
fn an_allocation_of_zero_bytes_is_87_whatever_the_process() {
    let p = script(
        "alloc0.vms",
        b"process null\nalloc 0, 0, reserve, rw\nexpect ERROR_INVALID_PARAMETER\nreset 0x10000, 0\nexpect ERROR_INVALID_PARAMETER\nalloc 0, 4K, reserve, rw\nexpect ERROR_INVALID_HANDLE\nprocess 3\nexit 3\nalloc 0, 0, reserve, rw\nexpect ERROR_INVALID_PARAMETER\nalloc 0, 4K, reserve, rw\nexpect ERROR_ACCESS_DENIED\n",
    );
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
}

/// `--svg FILE` writes FILE and `--trace FILE` appends to it: naming the script itself
/// (by the same path or another path to the same file) would destroy the script the user
/// asked to run. Refused before anything runs (exit 2, the clash named), the script left
/// as it was.
#[test]
fn an_output_file_that_is_the_script_itself_is_refused() {
    let text = b"alloc 0, 64K, MEM_RESERVE, PAGE_NOACCESS\nexpect ok\n";
    for flag in ["--svg", "--trace"] {
        let p = script(&format!("self-{}.vms", &flag[2..]), text);
        let other = p.parent().expect("dir").join(".").join(p.file_name().expect("name"));
        for out in [p.clone(), other] {
            let o = run(virtmem().arg("run").arg(&p).arg(flag).arg(&out));
            assert_eq!(o.code, 2, "{flag} {}: {}{}", out.display(), o.stdout, o.stderr);
            assert!(o.stderr.contains("is the script itself"), "{}", o.stderr);
            assert_eq!(std::fs::read(&p).expect("script"), text, "{flag} changed the script");
        }
    }
    // Another file is written as before.
    let p = script("self-ok.vms", text);
    let svg = tmp("self-ok.svg");
    let o = run(virtmem().arg("run").arg(&p).arg("--svg").arg(&svg));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(std::fs::read_to_string(&svg).expect("svg").contains("<svg "), "an SVG drawing");
}

/// A script is read whole before it runs: an endless one (`run /dev/zero`) took memory
/// until the machine ran out. At most 64 MiB is read; more is bad input (exit 2), at
/// once and in bounded memory.
#[cfg(unix)]
#[test]
fn an_endless_script_is_refused_not_read_into_all_memory() {
    let o = run(virtmem().args(["run", "/dev/zero"]));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("a script may be at most 64 MiB"), "{}", o.stderr);
    // The same from standard input.
    let endless = std::fs::File::open("/dev/zero").expect("/dev/zero");
    let bin = assert_cmd::cargo::cargo_bin("virtmem");
    let o = out_of(std::process::Command::new(bin).args(["run", "-"]).stdin(endless).output().expect("run"));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("<stdin>: a script may be at most 64 MiB"), "{}", o.stderr);
}

/// The prompt (input from a pipe, no script named) read a line of any length into memory:
/// `virtmem run < /dev/zero` grew by ~250 MB a second. A line over 1 MiB is now skipped
/// with an error, kept nowhere, and the lines after it run.
#[test]
fn the_prompt_skips_a_line_too_long_and_goes_on() {
    let mut input = vec![b'x'; 3 << 20];
    input.extend_from_slice(b"\nalloc 0, 64K, reserve, rw\nexpect ok\n");
    let o = run(virtmem().arg("run").write_stdin(input));
    assert!(o.stderr.contains("<input>:1: a line may be at most 1024 KiB; this one is skipped"), "{}", o.stderr);
    assert!(o.stderr.len() < 1000, "the skipped line is not echoed: {} bytes of stderr", o.stderr.len());
    assert!(o.stdout.contains("VirtualAlloc(NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE) = 0x"), "{}", o.stdout);
    assert!(!o.stdout.contains("!!"), "the expect after it held: {}", o.stdout);
}

/// An error quoting a name quoted all of it: a 3 MB word made a 3 MB message. Names and
/// numbers are at most 256 characters; a longer one is an error at its column.
#[test]
fn a_name_or_number_too_long_is_an_error_of_bounded_size() {
    for (word, what) in [("x".repeat(3000), "a name"), ("1".repeat(3000), "a number")] {
        let p = script("long-word.vms", format!("alloc 0, 64K, reserve, rw\nq = {word}\n").as_bytes());
        let o = run(virtmem().arg("run").arg(&p));
        assert_eq!(o.code, 2, "{}", o.stderr);
        assert!(o.stderr.contains(&format!("long-word.vms:2:5: {what} may be at most 256 characters")), "{}", o.stderr);
        assert!(o.stderr.len() < 1000, "{} bytes of stderr", o.stderr.len());
    }
    // 256 characters are still a name.
    let p = script("long-ok.vms", format!("{} = alloc 0, 64K, reserve, rw\nexpect ok\n", "v".repeat(256)).as_bytes());
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
}

/// `virtmem replay` read a line of any length into memory (`virtmem replay /dev/zero`
/// aborted at ~1 GiB under `ulimit -v`). A line longer than 1 MiB is now an unreadable
/// line of a virtmem trace (noted; `--strict` fails with 2) and skipped in a Wine log;
/// the lines after it replay as before.
#[test]
fn replay_skips_a_line_too_long_without_holding_it() {
    let mut trace = b"virtmem-trace 1\nVirtualAlloc 0x0 0x10000 0x2000 0x4 -> 0x10000 err=0\n".to_vec();
    trace.extend(std::iter::repeat(b'x').take(3 << 20));
    trace.extend_from_slice(b"\nVirtualFree 0x10000 0x0 0x8000 -> 0x1 err=0\n");
    let p = script("long-line.vmt", &trace);
    let o = run(virtmem().arg("replay").arg(&p));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("replayed 2 calls"), "{}", o.stdout);
    assert!(o.stdout.contains("calls whose result differs from the recorded one: 0"), "{}", o.stdout);
    assert!(o.stdout.contains("line 3") && o.stdout.contains("a line longer than 1024 KiB"), "{}", o.stdout);
    assert!(o.stdout.len() + o.stderr.len() < 10_000, "the line is not echoed");
    let o = run(virtmem().args(["replay", "--strict"]).arg(&p));
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    // A Wine log: the long line is skipped, the calls around it replayed.
    let t = "0024:trace:virtual:";
    let mut log = format!(
        "{t}NtAllocateVirtualMemory 0xffffffffffffffff 0x10000000 00020000 2000 00000004\n\
         {t}dump_view View: 0x10000000 - 0x1001ffff (valloc)\n{t}dump_view       0x10000000 - 0x1001ffff --rw-\n"
    )
    .into_bytes();
    log.extend(std::iter::repeat(b'y').take(3 << 20));
    log.extend_from_slice(format!("\n{t}NtFreeVirtualMemory 0xffffffffffffffff 0x10000000 00000000 8000\n").as_bytes());
    let p = script("long-line-wine.log", &log);
    let o = run(virtmem().args(["replay", "--strict"]).arg(&p));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("replayed 2 calls (Wine +virtual log"), "{}", o.stdout);
    assert!(o.stdout.contains("calls whose result differs from the recorded one: 0"), "{}", o.stdout);
}
