//! docs/script.md: "The whole script is parsed before anything runs: an error names the
//! file, line and column and shows the line." An argument written as a constant that is
//! out of its command's range is such an error.

mod util;

use util::*;

/// These limits were checked only when their line ran: every line before it had run
/// (its output printed, its calls traced) when the script stopped with exit 2, so a long
/// scenario failed at its end for a typo a parse finds.
#[test]
fn constant_arguments_out_of_range_stop_the_script_before_it_runs() {
    let cases: &[(&str, &str)] = &[
        ("read 0x10000, 1T", ":2:15: read length 0x10000000000 is too large (at most 1 MiB)"),
        ("exec 0x10000, 1M + 1", ":2:15: exec length 0x100001 is too large (at most 1 MiB)"),
        ("fill 0x10000, 1T, 0", ":2:15: fill length 0x10000000000 is too large (at most 256 MiB)"),
        ("fill 0x10000, 4K, 256", ":2:19: 0x100 is not a byte (0 to 255)"),
        ("write 0x10000, \"ok\", 0x41, -1", ":2:28: 0xffffffffffffffff is not a byte (0 to 255)"),
        ("exit SIZE_MAX", ":2:6: a process number is at most 0xFFFFFFFF"),
        ("alloc 0, 64K, 0x1_0000_0000 | reserve, rw", ":2:15: flags are 32-bit values"),
        ("protect 0x10000, 4K, -4", ":2:22: flags are 32-bit values"),
    ];
    for (i, (bad, want)) in cases.iter().enumerate() {
        let p = script(&format!("range{i}.vms"), format!("echo \"ran\"\n{bad}\n").as_bytes());
        let o = run(virtmem().arg("run").arg(&p));
        assert_eq!(o.code, 2, "{bad}: {}", o.stderr);
        assert!(o.stderr.contains(want), "{bad}: wanted `{want}` in {}", o.stderr);
        assert_eq!(o.stdout, "", "{bad}: the line before it ran");
    }
    // Computed from a variable, the value is known only when the line runs: the lines
    // before it run, then the same error.
    let p = script("range-var.vms", b"n = alloc 0, 64K, reserve, rw\nfill n, n * 0x10000, 0\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stdout.contains("n = 0x10000"), "{}", o.stdout);
    assert!(o.stderr.contains(":2:9: fill length 0x100000000 is too large (at most 256 MiB)"), "{}", o.stderr);
    // At the limits, the lines are accepted.
    let p = script(
        "range-ok.vms",
        b"read 0x10000, 1M\nexec 0x10000, 1M\nfill 0x10000, 256M, 255\nwrite 0x10000, 255, 0\nexit 0xFFFFFFFF\nalloc 0, 64K, 0xFFFF_FFFF, rw\n",
    );
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 0, "{}", o.stderr);
}

/// An error echoes the offending line and names what it found; a note of `replay` names
/// a trace's word. Control characters in them went to the terminal as they were: a
/// NUL was "unexpected character ` `", and an escape sequence in a script or trace
/// (`ESC [2J` clears the screen, `ESC ]0;...BEL` retitles the window) was played by the
/// terminal that shows the error. They are shown escaped (messages) or replaced by U+FFFD
/// (the echoed line, so the caret still points at its column).
#[test]
fn control_characters_in_errors_and_notes_are_shown_not_sent_to_the_terminal() {
    let p = script("controls.vms", b"echo 1\n\x1b[2J\x1b]0;retitled\x07 frob\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 2);
    assert!(!o.stderr.contains('\u{1b}') && !o.stderr.contains('\u{7}'), "{:?}", o.stderr);
    assert!(o.stderr.contains("controls.vms:2:1: unexpected character `\\u{1b}`"), "{}", o.stderr);
    assert!(o.stderr.contains(" 2 | \u{FFFD}[2J\u{FFFD}]0;retitled\u{FFFD} frob\n"), "{}", o.stderr);
    let p = script("nul.vms", b"echo 1,\0 2\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert!(o.stderr.contains("nul.vms:1:8: unexpected character `\\0`"), "{:?}", o.stderr);
    assert!(o.stderr.contains("   |        ^"), "the caret still points at column 8: {:?}", o.stderr);
    let t = tmp("controls.vmt");
    std::fs::write(
        &t,
        "virtmem-trace 1\nFrob\u{1b}[2Jx 0x1 -> 0x0 err=0\nVirtualAlloc 0x0 0x10000 0x3000 0x4 -> 0x10000 err=0\n",
    )
    .expect("trace");
    let o = run(virtmem().arg("replay").arg(&t));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stdout.contains('\u{1b}'), "{:?}", o.stdout);
    assert!(o.stdout.contains("unknown function `Frob\\u{1b}[2Jx`"), "{}", o.stdout);
}

/// A script file that is not UTF-8 is named with the line and column of the first bad
/// byte (cli.rs checks it); the same script on standard input (`run -`) was only "cannot
/// read standard input: stream did not contain valid UTF-8".
#[test]
fn a_script_on_stdin_that_is_not_utf8_names_the_line_and_column() {
    let o = run(virtmem().args(["run", "-"]).write_stdin(&b"echo \"ok\"\necho \"caf\xe9\"\n"[..]));
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("<stdin>:2:10: the script is not UTF-8 text"), "{}", o.stderr);
    assert_eq!(o.stdout, "", "nothing runs");
}
