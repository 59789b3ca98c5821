//! Edge cases of the input parsers (virtmem's trace format, Wine's `+virtual` log, the
//! script language) and of what `replay` does with what they read, each against the
//! documented promise: malformed input is a clear error or a skipped/noted line, never a
//! panic, a hang, unbounded memory use or a silent misreading; `replay --strict`
//! reproduces a correct trace with no difference. (Found by the tenth review.)

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;

mod util;

use util::*;

/// `virtmem replay ARGS... FILE` with the address space held to `kib` KiB, so that a
/// memory blow-up aborts quickly instead of taking the machine down.
fn replay_limited(kib: u64, args: &[&str], file: &Path) -> Out {
    let bin = assert_cmd::cargo::cargo_bin("virtmem");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" replay \"$@\""))
        .arg(&bin)
        .args(args)
        .arg(file)
        .timeout(Duration::from_secs(120));
    run(&mut cmd)
}

fn replay(args: &[&str], file: &Path) -> Out {
    replay_limited(2_000_000, args, file)
}

/// Write the libvirtmem trace `text` to a file `name` and check that `replay --strict`
/// finds no difference in it; the file, for more checks.
fn replays_clean(name: &str, text: &str) -> std::path::PathBuf {
    let t = tmp(name);
    std::fs::write(&t, text).expect("trace");
    let o = replay(&["--strict"], &t);
    assert_eq!(o.code, 0, "differences in a correct libvirtmem trace:\n{}{}", o.stdout, o.stderr);
    t
}

/// wine.rs: a view dump is `View: START - END (KIND)` and its runs `START - END FLAGS`,
/// END inclusive. A view or run ending at 0xffffffffffffffff (one line edited by hand, or
/// a corrupt log) must be skipped or replayed, not crash: `end + 1` overflowed, a panic
/// ("attempt to add with overflow", wine.rs:210 for the view, :217 for a run) in a debug
/// build, and in a release build a view whose end wrapped to 0, below its start.
#[test]
fn a_wine_view_ending_at_the_top_of_the_address_space_is_no_panic() {
    let view = tmp("wrap-view.log");
    std::fs::write(
        &view,
        "0108:trace:virtual:NtAllocateVirtualMemory 0xffffffffffffffff (nil) 00100000 1000 00000004\n\
         0108:trace:virtual:dump_view View: 0xfffffffffffff000 - 0xffffffffffffffff (valloc)\n\
         0108:trace:virtual:dump_view       0xfffffffffffff000 - 0xffffffffffffffff c-rw-\n",
    )
    .expect("log");
    let o = replay(&[], &view);
    assert!(matches!(o.code, 0..=2), "exit {}: {}", o.code, o.stderr);
    let run_only = tmp("wrap-run.log");
    std::fs::write(
        &run_only,
        "0108:trace:virtual:NtAllocateVirtualMemory 0xffffffffffffffff (nil) 00100000 1000 00000004\n\
         0108:trace:virtual:dump_view View: 0x100000 - 0x1fffff (valloc)\n\
         0108:trace:virtual:dump_view       0x100000 - 0xffffffffffffffff c-rw-\n",
    )
    .expect("log");
    let o = replay(&[], &run_only);
    assert!(matches!(o.code, 0..=2), "exit {}: {}", o.code, o.stderr);
}

/// wine.rs: the `TYPE` and `PROTECT` of `NtAllocateVirtualMemory` are 32-bit flags. A
/// value wider than 32 bits is malformed and must be skipped (or be an error), not cut to
/// its low 32 bits: `100003000` was replayed as `MEM_COMMIT|MEM_RESERVE` (`t as u32`).
#[test]
fn wine_flags_wider_than_32_bits_are_not_cut_to_their_low_bits() {
    let log = tmp("wide-flags.log");
    std::fs::write(
        &log,
        "0108:trace:virtual:NtAllocateVirtualMemory 0xffffffffffffffff 0x10000000 00010000 100003000 00000004\n\
         0108:trace:virtual:dump_view View: 0x10000000 - 0x1000ffff (valloc)\n\
         0108:trace:virtual:dump_view       0x10000000 - 0x1000ffff c-rw-\n",
    )
    .expect("log");
    let o = replay(&[], &log);
    assert!(
        o.code == 2 || o.stdout.starts_with("replayed 0 calls"),
        "an allocation with a 33-bit type was replayed:\n{}",
        o.stdout
    );
}

/// virtmem::trace: "a reader treats each header as the start of a fresh address space";
/// `virtmem-trace 2` is refused ("not supported"). A second header that cannot be read
/// (another version, or a malformed attribute) was skipped with a note, and the records
/// of its session were then replayed in the previous session's space: the allocation of
/// the second session failed with 487 there, a difference `--strict` reports for a
/// trace whose sessions are each correct.
#[test]
fn records_after_an_unreadable_header_are_not_replayed_in_the_previous_session() {
    for header in ["virtmem-trace 2 pid=2", "virtmem-trace 1 pid=2 parent"] {
        let t = tmp("second-header.vmt");
        std::fs::write(
            &t,
            format!(
                "virtmem-trace 1 pid=1\n\
                 VirtualAlloc 0x0 0x10000 0x3000 0x4 -> 0x10000 err=0\n\
                 {header}\n\
                 VirtualAlloc 0x0 0x10000 0x3000 0x4 -> 0x10000 err=0\n\
                 VirtualFree 0x10000 0x0 0x8000 -> 0x1 err=0\n"
            ),
        )
        .expect("trace");
        let o = replay(&["--strict"], &t);
        assert!(
            !o.stdout.contains("line 4:") && o.code != 1,
            "{header}: the next session's records were replayed in the first one (exit {}):\n{}",
            o.code,
            o.stdout
        );
    }
}

/// virtmem::trace: `virtmem-trace 2` is "not supported (this reader knows 1 to 1)", the
/// parser says. As the first line of a file, replay reported instead that the file is
/// "neither a virtmem trace ... nor a Wine +virtual log", hiding the version.
#[test]
fn a_trace_of_another_version_is_reported_as_such() {
    let t = tmp("v2.vmt");
    std::fs::write(&t, "virtmem-trace 2\nVirtualAlloc 0x0 0x10000 0x3000 0x4 -> 0x10000 err=0\n").expect("trace");
    let o = replay(&[], &t);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("version 2"), "the error does not name the version: {}", o.stderr);
}

/// `replay --strict` reproduces a correct trace with no difference. These lines were
/// written by libvirtmem (a C program: a simulated process with 16 MiB committed at the
/// start of a 64 MiB reservation; the buffers are a 16 MiB + 4 KiB malloc, NULL and a
/// 64-byte stack array). libvirtmem checks the whole range before copying (299 when it
/// runs into the reserved pages) and its caller's buffer (998 for NULL or one that wraps);
/// replay copied at most 16 MiB (`size.min(1 << 24)`) and never looked at the buffer, so
/// all five calls "succeeded" or failed differently in the replay. The last four lines:
/// a NULL buffer over a source running into reserved pages is 299 (the source comes
/// first), but over an armed guard page libvirtmem looks at the buffer before disarming
/// the guard: 998, and the guard stays armed for the next read (299). Replay disarmed it
/// (299, then the next read "succeeded").
#[test]
fn replay_strict_reproduces_libvirtmem_process_copies() {
    replays_clean(
        "libvirtmem-copies.vmt",
        "virtmem-trace 1 pid=11301\n\
         # VirtmemCreateProcess -> 0x100 err=0 process=1\n\
         VirtualAllocEx 0x1 0x0 0x4000000 0x2000 0x4 -> 0x10000 err=0\n\
         VirtualAllocEx 0x1 0x10000 0x1000000 0x1000 0x4 -> 0x10000 err=0\n\
         ReadProcessMemory 0x1 0x10000 0x7fdfcb1bc010 0x1001000 0x7ffc61561538 -> 0x0 err=299 done=0x0\n\
         WriteProcessMemory 0x1 0x10000 0x7fdfcb1bc010 0x1001000 0x7ffc61561538 -> 0x0 err=299 done=0x0\n\
         ReadProcessMemory 0x1 0x10000 0x0 0x10 0x0 -> 0x0 err=998 done=0x0\n\
         WriteProcessMemory 0x1 0x10000 0x0 0x10 0x0 -> 0x0 err=998 done=0x0\n\
         WriteProcessMemory 0x1 0x10000 0x7ffcabdba230 0xffffffffffffffff 0x7ffcabdba228 -> 0x0 err=998 done=0x0\n\
         ReadProcessMemory 0x1 0x100f000 0x0 0x2000 0x7fff76542d98 -> 0x0 err=299 done=0x0\n\
         VirtualProtectEx 0x1 0x10000 0x1000 0x104 0x7fff76542d98 -> 0x1 err=0 old=0x4\n\
         ReadProcessMemory 0x1 0x10000 0x0 0x10 0x0 -> 0x0 err=998 done=0x0\n\
         ReadProcessMemory 0x1 0x10000 0x7fff76542d98 0x10 0x0 -> 0x0 err=299 done=0x0\n",
    );
}

/// libvirtmem's WriteProcessMemory writes into `PAGE_EXECUTE_READ` code, guarded here,
/// and gives the page its protection back (the guard stays armed); a copy from that code
/// into read-only data still fails. Replay must follow: it had answered 998 for the first
/// write. (These lines were written by libvirtmem.)
#[test]
fn replay_strict_reproduces_libvirtmem_writes_into_code() {
    replays_clean(
        "libvirtmem-code-writes.vmt",
        "virtmem-trace 1 pid=15903\n\
         # VirtmemCreateProcess -> 0x100 err=0 process=1\n\
         VirtualAllocEx 0x1 0x0 0x10000 0x3000 0x4 -> 0x10000 err=0\n\
         VirtualProtectEx 0x1 0x10000 0x1000 0x120 0x7f0c217a9720 -> 0x1 err=0 old=0x4\n\
         VirtualProtectEx 0x1 0x11000 0x1000 0x2 0x7f0c217a9720 -> 0x1 err=0 old=0x4\n\
         WriteProcessMemory 0x1 0x10010 0x7f0c2156f840 0x10 0x7f0c217a98d0 -> 0x1 err=0 done=0x10\n\
         WriteProcessMemory 0x1 0x10ff0 0x7f0c2156f840 0x20 0x7f0c217a98d0 -> 0x0 err=299 done=0x0\n\
         WriteProcessMemory 0x1 0x11000 0x7f0c2156f840 0x10 0x7f0c217a98d0 -> 0x0 err=998 done=0x0\n\
         VirtualQueryEx 0x1 0x10000 0x7f0c2156f5d0 0x30 -> 0x30 err=0 base=0x10000 allocbase=0x10000 allocprotect=0x4 size=0x1000 state=0x1000 protect=0x120 type=0x20000\n",
    );
}

/// docs/script.md, Traces: "`libvirtmem` appends one line per call"; `replay` "compares
/// results, last errors". `VirtmemAccess` disarms the guard pages it meets, yet libvirtmem
/// wrote it as a comment, which replay skipped: the guard stayed armed in the replay, so
/// the query after the first access differed (and a later access met the guard again).
/// These lines were written by libvirtmem (a C program: a guarded page, a store into it
/// twice, then a fault, a NULL buffer, a bad kind, and an instruction fetch).
#[test]
fn replay_strict_reproduces_libvirtmem_checked_accesses() {
    let t = replays_clean(
        "libvirtmem-access.vmt",
        "virtmem-trace 1 pid=12912\n\
         # VirtmemCreateProcess -> 0x100 err=0 process=1\n\
         VirtualAllocEx 0x1 0x0 0x10000 0x2000 0x4 -> 0x10000 err=0\n\
         VirtualAllocEx 0x1 0x10000 0x2000 0x1000 0x104 -> 0x10000 err=0\n\
         VirtmemAccess 0x1 0x10ff8 0x7ffd6710b3a0 0x10 0x1 0x7ffd6710b398 -> 0x80000001 err=0\n\
         VirtualQueryEx 0x1 0x10000 0x7ffd6710b360 0x30 -> 0x30 err=0 base=0x10000 allocbase=0x10000 allocprotect=0x4 size=0x1000 state=0x1000 protect=0x4 type=0x20000\n\
         VirtmemAccess 0x1 0x10ff8 0x7ffd6710b3a0 0x10 0x1 0x7ffd6710b398 -> 0x80000001 err=0\n\
         VirtmemAccess 0x1 0x10ff8 0x7ffd6710b3a0 0x10 0x1 0x0 -> 0x0 err=0\n\
         VirtmemAccess 0x1 0x11ff8 0x7ffd6710b3a0 0x10 0x0 0x7ffd6710b398 -> 0xc0000005 err=0\n\
         VirtmemAccess 0x1 0x11000 0x0 0x10 0x0 0x7ffd6710b398 -> 0xffffffff err=998\n\
         VirtmemAccess 0x1 0x11000 0x7ffd6710b3a0 0x10 0x2 0x7ffd6710b398 -> 0xffffffff err=87\n\
         VirtmemAccess 0x1 0x10000 0x7ffd6710b3a0 0x10 0x8 0x7ffd6710b398 -> 0xc0000005 err=0\n\
         VirtualQueryEx 0x1 0x11000 0x7ffd6710b360 0x30 -> 0x30 err=0 base=0x11000 allocbase=0x10000 allocprotect=0x4 size=0x1000 state=0x1000 protect=0x4 type=0x20000\n",
    );
    // Without the first access (what a replay that skipped it saw), the guard page is not
    // disarmed: differs. (The comment form libvirtmem wrote before is now read as the
    // record: see the next test.)
    let mut text = std::fs::read_to_string(&t).expect("trace");
    let first = text.find("VirtmemAccess").expect("an access");
    let end = first + text[first..].find('\n').expect("a line") + 1;
    text.replace_range(first..end, "");
    std::fs::write(&t, text).expect("trace");
    assert_eq!(replay(&["--strict"], &t).code, 1, "the first access, skipped, disarmed nothing");
}

/// The promise: no unbounded memory use. `WriteProcessMemory` records carry no data (the
/// replay writes zeros), yet each wrote up to 16 MiB into the simulated space, which keeps
/// every page written: this 4.4 KB trace of 64 writes into one 2 GiB committed region made
/// replay hold 1 GiB (an 8.7 KB trace of 128 such lines passed 2 GB and aborted).
#[test]
fn replaying_process_memory_writes_does_not_keep_their_bytes() {
    let mut text = String::from("virtmem-trace 1\nVirtualAlloc 0x0 0x80000000 0x3000 0x4 -> 0x10000000 err=0\n");
    for i in 0..64u64 {
        text.push_str(&format!(
            "WriteProcessMemory 0x0 {:#x} 0x1000 0x1000000 0x0 -> 0x1 err=0\n",
            0x1000_0000 + i * 0x100_0000
        ));
    }
    let t = tmp("many-writes.vmt");
    std::fs::write(&t, &text).expect("trace");
    let o = replay_limited(700_000, &[], &t);
    assert_eq!(o.code, 0, "replay of a {}-byte trace died: {}", text.len(), &o.stderr[..o.stderr.len().min(300)]);
}

/// The promise: no unbounded memory use. Each process id a record names gets a fresh
/// simulated space (about 11 KB) whether or not the trace ever created that process, so
/// memory grows ~200 times faster than the trace: this 3 MB trace of one failing
/// `VirtualFreeEx` on each of 60 000 processes needs more than 400 MB (a 10 MB one passed
/// 2 GB and aborted).
#[test]
fn records_naming_many_processes_do_not_exhaust_memory() {
    let mut text = String::from("virtmem-trace 1\n");
    for pid in 1..=60_000u32 {
        text.push_str(&format!("VirtualFreeEx {pid:#x} 0x0 0x0 0x8000 -> 0x0 err=87\n"));
    }
    let t = tmp("many-processes.vmt");
    std::fs::write(&t, &text).expect("trace");
    let o = replay_limited(400_000, &[], &t);
    assert_eq!(o.code, 0, "replay of a {}-byte trace died: {}", text.len(), &o.stderr[..o.stderr.len().min(300)]);
}

/// virtmem::trace: "Comments start with `#`" and are ignored. A virtmem trace with a
/// comment mentioning `trace:virtual:` in its first 200 lines was taken for a Wine log by
/// `--format auto` and refused ("no NtAllocateVirtualMemory ... lines found").
#[test]
fn a_comment_mentioning_wine_does_not_make_a_trace_a_wine_log() {
    let t = tmp("wine-comment.vmt");
    std::fs::write(
        &t,
        "virtmem-trace 1\n\
         # converted from a WINEDEBUG=+virtual log (0024:trace:virtual:NtAllocateVirtualMemory ...)\n\
         VirtualAlloc 0x0 0x10000 0x3000 0x4 -> 0x10000 err=0\n",
    )
    .expect("trace");
    let o = replay(&["--strict"], &t);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("(virtmem trace,"), "{}", o.stdout);
}

/// docs/script.md: "Variables hold a call's value" and a line may use them; flags are
/// "words ... or numbers". A variable whose name is also a flag word (`x`, `ro`, `rw`,
/// `commit`...) used where a flag is expected was silently read as the flag: `x` below
/// holds the old protection PAGE_READWRITE (4), and `protect p, 4K, x` set PAGE_EXECUTE.
/// Either the name must be refused (like a command or constant name) or the variable used.
#[test]
fn a_variable_named_like_a_flag_is_not_silently_read_as_the_flag() {
    let p = script("shadow.vms", b"p = alloc 0, 64K, reserve|commit, rw\nx = protect p, 4K, ro\nprotect p, 4K, x\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert!(
        o.code == 2 || o.stdout.contains("VirtualProtect(0x10000, 0x1000, PAGE_READWRITE)"),
        "the variable `x` (4) was read as the flag PAGE_EXECUTE:\n{}",
        o.stdout
    );
}

/// Traces written by an older libvirtmem, which wrote `VirtmemSetCommitLimit` (before
/// 0cb4e87) and `VirtmemAccess` (before 2b2fc2a) as comments: replay skipped them, so the
/// commit over the limit "succeeded" in the replay (a 1455 difference) and the access did
/// not disarm the guard page (the query after it differed). The same lines as libvirtmem
/// wrote them then.
#[test]
fn replay_strict_reads_the_calls_older_libvirtmem_wrote_as_comments() {
    replays_clean(
        "libvirtmem-old-comments.vmt",
        "virtmem-trace 1 pid=20417\n\
         # VirtmemCreateProcess -> 0x100 err=0 process=1\n\
         # VirtmemSetCommitLimit 0x1 0x10000 -> 0x1 err=0\n\
         VirtualAllocEx 0x1 0x0 0x100000 0x2000 0x4 -> 0x10000 err=0\n\
         VirtualAllocEx 0x1 0x10000 0x20000 0x1000 0x4 -> 0x0 err=1455\n\
         VirtualAllocEx 0x1 0x10000 0x1000 0x1000 0x104 -> 0x10000 err=0\n\
         # VirtmemAccess 0x1 0x10000 0x7ffc2000 0x4 0x1 0x7ffc2100 -> 0x80000001 err=0\n\
         VirtualQueryEx 0x1 0x10000 0x7ffc2200 0x30 -> 0x30 err=0 base=0x10000 allocbase=0x10000 allocprotect=0x4 size=0x1000 state=0x1000 protect=0x4 type=0x20000\n",
    );
}
