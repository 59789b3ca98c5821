//! Property tests of what a user meets when a line is wrong: arbitrary lines, built from
//! each language's own words and numbers at their limits, fed to the script parser and to
//! `replay` (both trace formats). No panic, and every error is a clean one: it names a
//! line of the input and a column inside it (or just past its end), and says something.

use proptest::prelude::*;

use crate::{replay, script};

/// Words a script line is made of, good and bad.
const SCRIPT_WORDS: &[&str] = &[
    "alloc",
    "free",
    "query",
    "protect",
    "read",
    "write",
    "fill",
    "exec",
    "reset",
    "reset_undo",
    "getwritewatch",
    "resetwritewatch",
    "lock",
    "unlock",
    "map",
    "stats",
    "sysinfo",
    "process",
    "exit",
    "expect",
    "commitlimit",
    "echo",
    "VirtualAllocEx",
    "p",
    "q",
    "x",
    "rw",
    "commit|reserve",
    "guard",
    "none",
    "null",
    "off",
    "ok",
    "ERROR_INVALID_ADDRESS",
    "0",
    "1",
    "-1",
    "4K",
    "1T",
    "64KiB",
    "0x",
    "0xffffffffffffffff",
    "0x1_0000_0000_0000_0000",
    "18446744073709551616",
    "99999999999T",
    "SIZE_MAX",
    "PAGE",
    "GRANULE",
    "NULL",
    "\"text\\n\"",
    "\"\\x4\"",
    "\"open",
    "=",
    ",",
    "(",
    ")",
    "+",
    "-",
    "*",
    "|",
    "#",
    "\t",
    ";",
    "é",
    "\u{FEFF}",
    "\0",
];

/// Words a trace line is made of: virtmem's format and Wine's log.
const TRACE_WORDS: &[&str] = &[
    "virtmem-trace",
    "1",
    "2",
    "pid=1",
    "parent=",
    "VirtualAlloc",
    "VirtualAllocEx",
    "VirtualFree",
    "VirtualFreeEx",
    "VirtualQuery",
    "VirtualProtect",
    "GetWriteWatch",
    "ResetWriteWatch",
    "VirtualLock",
    "ReadProcessMemory",
    "WriteProcessMemory",
    "VirtmemAccess",
    "VirtmemSnapshotProcess",
    "VirtmemRestoreProcess",
    "VirtmemCreateProcessEx",
    "SetCommitLimit",
    "VirtualAlloc2",
    "[0x1:0x7ffc1000:0x100000000:0x1ffffffff:0x0]",
    "[0x1:0x0:0xffffffffffffffff:0x0:0x10000]",
    "[]",
    "[0x1:",
    "Frobnicate",
    "->",
    "err=0",
    "err=87",
    "err=0xffffffff",
    "base=0x10000",
    "size=0x1000",
    "state=0x1000",
    "protect=0x4",
    "type=0x20000",
    "count=0x2",
    "addresses=0x10000,0x11000",
    "0x0",
    "0x1",
    "0x10000",
    "0x3000",
    "0x4",
    "0x8000",
    "0xffffffffffffffff",
    "0x10000000000000000",
    "0x",
    "-1",
    "#",
    "0024:trace:virtual:",
    "NtAllocateVirtualMemory",
    "NtFreeVirtualMemory",
    "NtProtectVirtualMemory",
    "View:",
    "(valloc)",
    "-",
    "c-rw-",
    "0x7ffffffeffff",
    "(nil)",
    "é",
    "\t",
];

/// A text of up to 12 lines of up to 10 words each from `words`.
fn lines(words: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    let word = proptest::sample::select(words);
    let line = proptest::collection::vec(word, 0..10).prop_map(|ws| ws.join(" "));
    proptest::collection::vec(line, 0..12)
}

/// Functions a trace records, with their argument counts (docs of `virtmem::trace`).
const FUNCTIONS: &[(&str, usize)] = &[
    ("VirtualAlloc", 4),
    ("VirtualAllocEx", 5),
    ("VirtualAlloc2", 7),
    ("VirtualFree", 3),
    ("VirtualFreeEx", 4),
    ("VirtualQuery", 3),
    ("VirtualQueryEx", 4),
    ("VirtualProtect", 4),
    ("VirtualProtectEx", 5),
    ("GetWriteWatch", 6),
    ("ResetWriteWatch", 2),
    ("VirtualLock", 2),
    ("VirtualUnlock", 2),
    ("ReadProcessMemory", 5),
    ("WriteProcessMemory", 5),
    ("VirtmemAccess", 6),
    ("VirtmemSnapshotProcess", 1),
    ("VirtmemRestoreProcess", 2),
    ("VirtmemCreateProcessEx", 4),
    ("VirtmemSetCommitLimit", 2),
    ("SetCommitLimit", 1),
];

/// Values at the edges of what the fields hold.
const VALUES: &[&str] = &[
    "0x0",
    "0x1",
    "0x2",
    "0x4",
    "0x8",
    "0x40",
    "0x104",
    "0x1000",
    "0x2000",
    "0x3000",
    "0x4000",
    "0x8000",
    "0x10000",
    "0x20000",
    "0x20000000",
    "0x7ffeffff",
    "0x7fffffff0000",
    "0xffffffff",
    "0xfffffffffffff000",
    "0xffffffffffffffff",
];

/// `VirtualAlloc2`'s extended parameters, as the trace writes them.
const PARAMS: &[&str] = &[
    "[]",
    "[0x1:0x0:0x0:0x0:0x10000]",
    "[0x1:0x10000:0x7fffffff0000:0x0:0x0]",
    "[0x1:0x0:0xffffffffffffffff:0xffffffffffffffff:0x0]",
    "[0x2:0x0:0x0:0x0:0x0]",
];

/// Out-values a record may carry.
const OUTS: &[&str] = &[
    "",
    " base=0x10000 allocbase=0x10000 allocprotect=0x4 size=0xffffffffffffffff state=0x1000 protect=0x4 type=0x20000",
    " base=0xfffffffffffff000 allocbase=0x0 allocprotect=0x0 size=0x1000 state=0x10000 protect=0x1 type=0x0",
    " old=0x4",
    " count=0x1 granularity=0x1000 addresses=0xfffffffffffff000",
    " done=0xffffffffffffffff",
];

/// A trace of up to 40 records shaped as the format writes them (a function with its
/// number of arguments, `-> RESULT err=CODE`, out-values), each field drawn from edge
/// values, so that replay runs most of them rather than skipping them.
fn records() -> impl Strategy<Value = String> {
    // Mostly values that fit the 32-bit fields (types, protections, process numbers), so
    // that most records are read; sometimes any.
    let small = VALUES.iter().copied().filter(|v| v.len() <= 10).collect::<Vec<_>>();
    let value = prop_oneof![2 => proptest::sample::select(small), 1 => proptest::sample::select(VALUES)];
    let record = (
        proptest::sample::select(FUNCTIONS),
        proptest::collection::vec(value.clone(), 7),
        proptest::sample::select(PARAMS),
        value,
        proptest::sample::select(&[0u32, 5, 6, 87, 299, 487, 998, 1455][..]),
        proptest::sample::select(OUTS),
    )
        .prop_map(|((f, arity), mut args, params, result, err, out)| {
            args.truncate(arity);
            if f == "VirtualAlloc2" {
                args[5] = params;
            }
            format!("{f} {} -> {result} err={err}{out}", args.join(" "))
        });
    proptest::collection::vec(record, 0..40).prop_map(|rs| format!("virtmem-trace 1\n{}\n", rs.join("\n")))
}

/// Statements a script runs, with arguments at the edges ("p" is the first allocation).
const STATEMENTS: &[&str] = &[
    "p = alloc {v}, {v}, reserve|commit, rw",
    "alloc {v}, {v}, {v}, {v}",
    "alloc p + {v}, {v}, commit|write_watch, rw|guard",
    "free {v}, {v}, {v}",
    "free p, 0, release",
    "query {v}",
    "protect {v}, {v}, {v}",
    "protect p, {v}, rx|guard",
    "reset {v}, {v}",
    "reset_undo {v}, {v}",
    "getwritewatch {v}, {v}, {v}, {v}",
    "resetwritewatch {v}, {v}",
    "lock {v}, {v}",
    "unlock {v}, {v}",
    "read {v}, 0x100",
    "read p + {v}, 8",
    "write {v}, \"text\", 0xff",
    "write p - {v}, 1",
    "fill {v}, 0x2000, 0xab",
    "exec {v}, 16",
    "exec p + {v}",
    "process {v}",
    "process null",
    "process off",
    "exit {v}",
    "commitlimit {v}",
    "commitlimit none",
    "expect {v}",
    "map",
    "stats",
];

/// A script of up to 30 statements from [`STATEMENTS`], `{v}` drawn from edge values
/// (small process numbers mostly, so that `process` selects few simulated spaces).
fn statements() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        2 => proptest::sample::select(&["0", "1", "2", "4", "0x1000", "0x10000", "0x20000"][..]),
        1 => proptest::sample::select(VALUES),
        1 => proptest::sample::select(&["-1", "SIZE_MAX - 0xfff", "0x7fffffff0000 - 0x10000", "p", "p + 0x1000"][..]),
    ];
    let stmt = (proptest::sample::select(STATEMENTS), proptest::collection::vec(value, 4)).prop_map(|(t, vs)| {
        let mut out = String::from(t);
        for v in vs {
            out = out.replacen("{v}", v, 1);
        }
        out
    });
    proptest::collection::vec(stmt, 0..30)
        .prop_map(|ss| format!("p = alloc 0, 1M, reserve|commit, rw\n{}", ss.join("\n")))
}

/// `line` and `col` point into `text`: a line it has, and a column from 1 to one past the
/// line's last character.
fn points_into(text: &str, line: usize, col: usize) -> Result<(), TestCaseError> {
    let all: Vec<&str> = text.split('\n').collect();
    prop_assert!(line >= 1 && line <= all.len(), "line {line} of {} lines", all.len());
    let chars = all[line - 1].trim_end_matches('\r').chars().count();
    prop_assert!(col >= 1 && col <= chars + 1, "column {col} of a line of {chars} characters");
    Ok(())
}

/// A replay's error names a line and a column of the input (`line N, column C: what`),
/// or is one of the two errors about the whole input.
fn replay_error_is_clean(text: &str, e: &str) -> Result<(), TestCaseError> {
    if e.starts_with("no trace records") || e.starts_with("no NtAllocateVirtualMemory") {
        return Ok(());
    }
    let rest = e.strip_prefix("line ").ok_or_else(|| TestCaseError::fail(format!("error names no line: {e}")))?;
    let (line, rest) = rest.split_once(", column ").ok_or_else(|| TestCaseError::fail(format!("no column: {e}")))?;
    let (col, what) = rest.split_once(": ").ok_or_else(|| TestCaseError::fail(format!("says nothing: {e}")))?;
    let line: usize = line.parse().map_err(|_| TestCaseError::fail(format!("line is no number: {e}")))?;
    let col: usize = col.parse().map_err(|_| TestCaseError::fail(format!("column is no number: {e}")))?;
    prop_assert!(!what.trim().is_empty(), "{e}");
    points_into(text, line, col)
}

/// Replay `text` as the CLI's own trace format: an error, and every line skipped with a
/// note, must name a line and column of `text` and say what was wrong.
fn own_replay_is_clean(text: &str) -> Result<(), TestCaseError> {
    let mut report = replay::Report::new(50);
    if let Err(e) = replay::replay_own(text, &mut report) {
        replay_error_is_clean(text, &e)?;
    }
    // A line skipped with a note is named as an error is.
    for n in report.notes() {
        if let Some(at) = n.strip_prefix("skipped ").filter(|at| at.starts_with("line ")) {
            replay_error_is_clean(text, at)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(7),
        ..ProptestConfig::default()
    })]

    #[test]
    fn script_lines_parse_or_name_their_line_and_column(ls in lines(SCRIPT_WORDS)) {
        let text = ls.join("\n");
        if let Err(e) = script::parse(&text) {
            prop_assert!(!e.msg.trim().is_empty(), "an error that says nothing at {}:{}", e.line, e.col);
            points_into(&text, e.line, e.col)?;
        }
    }

    #[test]
    fn trace_lines_replay_or_name_their_line_and_column(header in any::<bool>(), ls in lines(TRACE_WORDS)) {
        let text = if header { format!("virtmem-trace 1\n{}", ls.join("\n")) } else { ls.join("\n") };
        own_replay_is_clean(&text)?;
        let mut report = replay::Report::new(50);
        if let Err(e) = replay::replay_wine(&text, &mut report) {
            replay_error_is_clean(&text, &e)?;
        }
    }

    #[test]
    fn statements_at_the_edges_run_without_panicking(text in statements()) {
        // Line by line, as the prompt runs them: a line that fails leaves the next to run.
        let space = Box::new(virtmem::SimSpace::simulated());
        let mut session = script::Session::new(space, "simulated", Box::new(std::io::sink()));
        let mut compiler = script::Compiler::default();
        for (i, line) in text.lines().enumerate() {
            let r = compiler.line(line, i + 1).and_then(|st| st.map_or(Ok(()), |st| session.exec(&st)));
            if let Err(e) = r {
                prop_assert!(!e.msg.trim().is_empty());
                points_into(&text, e.line, e.col)?;
            }
        }
    }

    #[test]
    fn records_at_the_edges_replay_without_panicking(text in records()) {
        own_replay_is_clean(&text)?;
    }
}
