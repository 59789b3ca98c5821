//! The `virtmem` command as a new user meets it, following docs/script.md and the
//! prompt's `help`: what they promise about names and errors.

mod util;

use util::*;

/// docs/script.md, "Flags": the protection short forms are `na ro rw x rx rwx`, and a
/// variable may not be named like a flag word. Every other word may name a variable:
/// `r` was an undocumented seventh short form, so `r = read p, 2` was refused with
/// "`r` is a flag word".
#[test]
fn only_the_documented_short_forms_are_flag_words() {
    let p = script("r-var.vms", b"p = alloc 0, 4K, commit, rw\nwrite p, \"hi\"\nr = read p, 2\necho r\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.ends_with("0x6968\n"), "the variable holds the bytes read:\n{}", o.stdout);

    let p = script("r-flag.vms", b"alloc 0, 4K, commit, r\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 2, "`r` is no protection:\n{}", o.stdout);
    assert!(o.stderr.contains("unknown flag or variable `r`"), "{}", o.stderr);

    // The documented short forms all are.
    for (word, name) in [
        ("na", "PAGE_NOACCESS"),
        ("ro", "PAGE_READONLY"),
        ("rw", "PAGE_READWRITE"),
        ("x", "PAGE_EXECUTE"),
        ("rx", "PAGE_EXECUTE_READ"),
        ("rwx", "PAGE_EXECUTE_READWRITE"),
    ] {
        let p = script("short.vms", format!("alloc 0, 64K, reserve, {word}\n").as_bytes());
        let o = run(virtmem().arg("run").arg(&p));
        assert_eq!(o.code, 0, "{word}: {}", o.stderr);
        assert!(o.stdout.contains(&format!("MEM_RESERVE, {name}) = 0x10000")), "{word}: {}", o.stdout);
    }
}

/// The prompt's `help` shows assignments as `[NAME =] alloc ...`; the name it shows must
/// be one a variable may have. It showed `[x =]`, and `x = alloc ...` is refused (`x` is
/// the flag PAGE_EXECUTE).
#[test]
fn the_prompt_help_shows_a_name_a_variable_may_have() {
    let o = run(virtmem().arg("run").write_stdin("help\n"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let line = o.stdout.lines().find(|l| l.contains("alloc ADDRESS, SIZE")).expect("help shows alloc");
    let name = line
        .trim_start()
        .strip_prefix('[')
        .and_then(|rest| rest.split(" =]").next())
        .unwrap_or_else(|| panic!("no `[NAME =]` in {line:?}"));
    let o = run(virtmem().arg("run").write_stdin(format!("{name} = alloc 0, 4K, commit, rw\necho {name}\n")));
    assert_eq!(o.stderr, "", "the name `{name}` shown by help");
    assert!(o.stdout.ends_with("0x10000\n"), "{}", o.stdout);
}

/// docs/script.md: arguments are "optionally in parentheses (`alloc(0, 4K, commit, rw)`)"
/// and an error "names the file, line and column". Text after such a list was reported
/// as "expected `)`" at the first comma inside it, a place where nothing is wrong; the
/// error must point at what follows the `)`.
#[test]
fn text_after_a_parenthesised_argument_list_is_named() {
    for (text, col, what) in [
        ("alloc(0, 4K, commit, rw) extra\n", 26, "unexpected `extra` after"),
        ("p = VirtualAlloc(NULL, 4K, MEM_COMMIT, PAGE_READWRITE) 5\n", 56, "unexpected number after"),
        ("free(0x10000, 0, release) (1)\n", 27, "unexpected `(` after"),
    ] {
        let p = script("trailing.vms", text.as_bytes());
        let o = run(virtmem().arg("run").arg(&p));
        assert_eq!(o.code, 2, "{text}: {}", o.stdout);
        assert!(o.stderr.contains(&format!("trailing.vms:1:{col}: ")), "{text}: {}", o.stderr);
        assert!(o.stderr.contains(what), "{text}: {}", o.stderr);
        assert!(!o.stderr.contains("expected `)`"), "{text}: {}", o.stderr);
    }
    // A parenthesised first operand is still an expression, not an argument list.
    let p = script("operand.vms", b"alloc (0) + 0x10000, 4K, reserve, rw\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("VirtualAlloc(0x10000, 0x1000, MEM_RESERVE, PAGE_READWRITE) = 0x10000"), "{}", o.stdout);
}
