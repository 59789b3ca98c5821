//! What a CI pipeline reads: the exit codes, where they are documented, and the message
//! that says which line of which file made a run fail.

mod util;

use util::*;

/// A failed `expect` printed `!! line N: ...` among the script's output on stdout, and
/// stderr said only "2 expectation(s) failed": a CI log showed no file for it. Now each
/// failure is also on stderr as FILE:LINE: expected X, got Y (stdout unchanged).
#[test]
fn failed_expectations_are_named_by_file_and_line_on_stderr() {
    let p = script(
        "two-misses.vms",
        b"alloc NULL, 64K, reserve, rw\nexpect ERROR_INVALID_PARAMETER\nfree 0x10000, 0, release\nexpect ok\nquery 0\nexpect 487\n",
    );
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stdout.contains("!! line 2: expected ERROR_INVALID_PARAMETER (87), got success"), "{}", o.stdout);
    assert!(o.stderr.contains("two-misses.vms:2: expected ERROR_INVALID_PARAMETER (87), got success"), "{}", o.stderr);
    assert!(o.stderr.contains("two-misses.vms:6: expected ERROR_INVALID_ADDRESS (487), got success"), "{}", o.stderr);
    assert!(!o.stderr.contains("two-misses.vms:4"), "line 4's expectation held: {}", o.stderr);
    assert!(o.stderr.contains("2 expectation(s) failed"), "{}", o.stderr);
    // From standard input the file is `<stdin>`.
    let o = run(virtmem().args(["run", "-"]).write_stdin("query 0\nexpect 5\n"));
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("<stdin>:2: expected ERROR_ACCESS_DENIED (5), got success"), "{}", o.stderr);
}

/// The exit codes are in `virtmem --help` and each subcommand's, as README and
/// docs/script.md give them: `virtmem --help` said nothing of them, `bench --help`
/// neither, and no help said that a usage error is 2 as well.
#[test]
fn help_documents_every_exit_code() {
    let o = run(virtmem().arg("--help"));
    assert_eq!(o.code, 0);
    for want in [
        "Exit status:",
        "0 ",
        "1 an `expect` failed (run), results differ from the trace (replay --strict)",
        "2 bad input",
        "usage error",
    ] {
        assert!(o.stdout.contains(want), "virtmem --help lacks `{want}`:\n{}", o.stdout);
    }
    let o = run(virtmem().args(["bench", "--help"]));
    assert!(o.stdout.contains("Exit status: 0, or 2"), "{}", o.stdout);
    assert!(o.stdout.contains("between 1 and 100"), "bench --help does not give --runs' range: {}", o.stdout);
    assert!(o.stdout.contains("at most 100"), "bench --help does not give --scale's range: {}", o.stdout);
    for sub in ["run", "replay"] {
        let o = run(virtmem().args([sub, "--help"]));
        assert!(o.stdout.contains("usage error"), "{sub} --help: {}", o.stdout);
    }
    // What they say holds: a usage error is 2.
    for args in [&["run", "--frobnicate"][..], &["replay"][..], &["bench", "--runs", "x"][..]] {
        assert_eq!(run(virtmem().args(args)).code, 2, "{args:?}");
    }
}

/// Every shipped example script runs clean, every `expect` in it holding, on a simulated
/// space and (docs/script.md: "the same on this process's real memory") with `--os`;
/// only tour.vms and gc-heap.vms were run by the tests, and neither with `--os`.
#[test]
fn every_shipped_script_runs_clean_on_both_backends() {
    let mut scripts: Vec<_> = std::fs::read_dir(root().join("examples/scripts"))
        .expect("examples/scripts")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "vms"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 2, "{scripts:?}");
    for p in &scripts {
        let text = std::fs::read_to_string(p).expect("script");
        let expects = text.lines().filter(|l| l.trim_start().starts_with("expect ")).count();
        let backends: &[&[&str]] = if cfg!(target_os = "linux") { &[&[], &["--os"]] } else { &[&[]] };
        for extra in backends {
            let o = run(virtmem().arg("run").args(*extra).arg(p));
            assert_eq!((o.code, o.stderr.as_str()), (0, ""), "{} {extra:?}", p.display());
            assert!(!o.stdout.contains("!! line"), "{} {extra:?}: {}", p.display(), o.stdout);
            assert!(expects == 0 || o.stdout.lines().count() > expects, "{}", p.display());
        }
    }
}
