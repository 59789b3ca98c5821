//! Drive the `virtmem` binary as a user would: every command, bad input included.

use std::path::Path;

mod util;

use util::*;

/// Parse an SVG file as XML and check what a reader needs is there.
fn check_svg(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("svg written");
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("SVG is not well-formed XML: {e}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
    for attr in ["width", "height", "viewBox"] {
        assert!(root.attribute(attr).is_some(), "svg lacks {attr}");
    }
    // Every drawn rectangle has a positive size.
    let rects: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("rect")).collect();
    assert!(rects.len() > 3, "too few shapes");
    for r in &rects {
        if let Some(w) = r.attribute("width").and_then(|w| w.parse::<f64>().ok()) {
            assert!(w > 0.0, "rect of width {w}");
        }
    }
    // Every shape lies inside the viewBox (pattern tiles aside).
    let vb: Vec<f64> =
        root.attribute("viewBox").unwrap().split_whitespace().map(|v| v.parse().expect("viewBox number")).collect();
    let (vw, vh) = (vb[2], vb[3]);
    let num = |n: &roxmltree::Node, a: &str| n.attribute(a).and_then(|v| v.parse::<f64>().ok());
    for n in doc.descendants().filter(|n| n.is_element() && !n.ancestors().any(|a| a.has_tag_name("pattern"))) {
        let (xs, ys): (Vec<f64>, Vec<f64>) = match n.tag_name().name() {
            "rect" => match (num(&n, "x"), num(&n, "y"), num(&n, "width"), num(&n, "height")) {
                (Some(x), Some(y), Some(w), Some(h)) => (vec![x, x + w], vec![y, y + h]),
                _ => continue,
            },
            "line" => (
                vec![num(&n, "x1").unwrap(), num(&n, "x2").unwrap()],
                vec![num(&n, "y1").unwrap(), num(&n, "y2").unwrap()],
            ),
            "text" => (vec![num(&n, "x").unwrap()], vec![num(&n, "y").unwrap()]),
            _ => continue,
        };
        for x in xs {
            assert!((0.0..=vw + 0.01).contains(&x), "x={x} outside 0..{vw}: {:?}", n);
        }
        for y in ys {
            assert!((0.0..=vh + 0.01).contains(&y), "y={y} outside 0..{vh}: {:?}", n);
        }
    }
    text
}

#[test]
fn tour_runs_and_draws() {
    let svg = tmp("tour.svg");
    let o = run(virtmem().args(["run", "examples/scripts/tour.vms", "--svg"]).arg(&svg));
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    for want in [
        "VirtualAlloc(NULL, 0x10000000000, MEM_RESERVE, PAGE_NOACCESS) = 0x10000",
        "raised STATUS_ACCESS_VIOLATION (0xC0000005): read at 0x110000",
        "raised STATUS_GUARD_PAGE_VIOLATION (0x80000001): write at 0x11000",
        "VirtualFree(0x11000, 0x0, MEM_RELEASE) failed: ERROR_INVALID_ADDRESS (487)",
        "failed: ERROR_INVALID_HANDLE (6)",
        "failed: ERROR_ACCESS_DENIED (5)",
        "failed: ERROR_COMMITMENT_LIMIT (1455)",
        "4 page(s) written: [0x10000013000, 0x10000020000, 0x10000021000, 0x10000022000]",
        "BaseAddress",
    ] {
        assert!(o.stdout.contains(want), "missing `{want}` in:\n{}", o.stdout);
    }
    // The map: one row per region, a guard page among them.
    let guard_row = o.stdout.lines().find(|l| l.starts_with("0x000001000014b000")).expect("guard row");
    assert!(guard_row.contains("MEM_COMMIT") && guard_row.contains("PAGE_READWRITE|PAGE_GUARD"), "{guard_row}");
    let text = check_svg(&svg);
    assert!(
        text.contains("url(#guard)")
            && text.contains("0x1000014b000 - 0x1000014c000: 4 KiB committed, PAGE_READWRITE|PAGE_GUARD"),
        "guard page drawn"
    );
    assert!(text.contains("free 127 TiB"), "free gap labelled");
}

#[test]
fn failed_expectation_exits_1() {
    let p = script("expect.vms", b"alloc NULL, 64K, reserve, rw\nexpect ERROR_INVALID_PARAMETER\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 1);
    assert!(o.stdout.contains("!! line 2: expected ERROR_INVALID_PARAMETER (87), got success"), "{}", o.stdout);
}

#[test]
fn bad_scripts_name_line_and_column() {
    let cases: &[(&str, &str)] = &[
        ("alloc 0, 64K, reserve, rw\n  frobnicate 1\n", ":2:3: unknown command `frobnicate`"),
        ("p = alloc 0, 64K, reserv, rw\n", ":1:19: unknown flag or variable `reserv`"),
        ("free q, 0, release\n", ":1:6: unknown variable `q`"),
        ("write 0x10000, \"abc\n", ":1:16: unterminated string"),
        ("alloc 0, 64K reserve, rw\n", ":1:14: expected `,` between arguments"),
        ("query 0x10000, 5\n", ":1:16: too many arguments"),
        ("alloc 0, 99999999999999999999, reserve, rw\n", ":1:10: `99999999999999999999` is not a 64-bit number"),
        ("protect 0x10000, 4K\n", "protect needs 3 argument(s), found 2"),
        ("read 0x10000, 1T\n", ":1:15: read length 0x10000000000 is too large"),
        ("write 0x10000, 256\n", ":1:16: 0x100 is not a byte"),
        ("alloc 0, 4K, commit, rw ; \n", ":1:25: unexpected character `;`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = script(&format!("bad{i}.vms"), text.as_bytes());
        let o = run(virtmem().arg("run").arg(&p));
        assert_eq!(o.code, 2, "{text}: {}", o.stderr);
        assert!(o.stderr.contains(want), "{text}: wanted `{want}` in {}", o.stderr);
        assert!(o.stderr.contains(" | "), "the offending line is shown: {}", o.stderr);
    }
    // A syntax error anywhere stops the script before anything runs.
    let p = script("late.vms", b"alloc 0, 64K, reserve, rw\nmap\n)\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!((o.code, o.stdout.as_str()), (2, ""));
    assert!(o.stderr.contains("late.vms:3:1:"), "{}", o.stderr);
}

#[test]
fn unreadable_inputs_are_clear_errors() {
    let p = script("latin1.vms", b"echo \"ok\"\necho \"caf\xe9\"\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("latin1.vms:2:10: the script is not UTF-8"), "{}", o.stderr);
    let o = run(virtmem().args(["run", "no/such/script.vms"]));
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("cannot read no/such/script.vms"), "{}", o.stderr);
    let o = run(virtmem().args(["replay", "no/such/trace"]));
    assert_eq!(o.code, 2);
    let p = script("notatrace.txt", b"hello\nworld\n");
    let o = run(virtmem().arg("replay").arg(&p));
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("line 1, column 1"), "{}", o.stderr);
    let o = run(virtmem().args(["frobnicate"]));
    assert_eq!(o.code, 2, "clap usage error");
}

#[test]
fn garbage_never_panics() {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"alloc free query protect read write fill map 0x10000 64K 1T , | + - * ( ) = \" \\ # x y rw guard reset \n\t\x00\xff";
    for i in 0..12 {
        let len = (next() % 400) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
        let p = script(&format!("garbage{i}.vms"), &bytes);
        let o = run(virtmem().arg("run").arg(&p));
        assert!(matches!(o.code, 0..=2), "garbage {i}: exit {}", o.code);
        let o = run(virtmem().arg("replay").arg(&p));
        assert!(matches!(o.code, 0..=2), "garbage replay {i}: exit {}", o.code);
    }
    // Deep nesting and huge values are refused, not crashed on.
    let deep = format!("query {}1{}\n", "(".repeat(5000), ")".repeat(5000));
    let p = script("deep.vms", deep.as_bytes());
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("nested deeper"), "{}", o.stderr);
    // The limit is the one docs/script.md gives: 63 deep is accepted, 64 is refused, and
    // the error names 63.
    for (depth, code) in [(63, 0), (64, 2)] {
        // (After `0 +`: a line's first `(` would open a parenthesised argument list.)
        let line = format!("alloc 0 + {}0{}, 4K, commit, rw\n", "(".repeat(depth), ")".repeat(depth));
        let o = run(virtmem().arg("run").arg(script(&format!("depth{depth}.vms"), line.as_bytes())));
        assert_eq!(o.code, code, "depth {depth}: {}", o.stderr);
        if code != 0 {
            assert!(o.stderr.contains("parentheses and unary `-` nested deeper than 63"), "{}", o.stderr);
        }
    }
    let p = script("wild.vms", b"query SIZE_MAX\nalloc -1, -1, 0xffffffff, 0xffffffff\nfree SIZE_MAX, SIZE_MAX, 0\nprotect 0x7fffffffffff, SIZE_MAX, rw\nread SIZE_MAX - 2, 8\ngetwritewatch 0, SIZE_MAX, 0, 0\nmap\n");
    let o = run(virtmem().arg("run").arg(&p));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("VirtualQuery(0xffffffffffffffff) failed: ERROR_INVALID_PARAMETER (87)"), "{}", o.stdout);
}

#[test]
fn long_operator_chains_are_refused_not_overflowed() {
    // A flat chain is as deep as it is long once parsed: 40 000 terms used to overflow
    // the stack (exit 134). Now: a line:column error at the first operator past the cap.
    let sum = format!("echo {}\n", vec!["1"; 40_000].join("+"));
    let flags = format!("alloc 0, 64K, commit, {}\n", vec!["rw"; 300_000].join("|"));
    for (name, text) in [("sum.vms", &sum), ("flags.vms", &flags)] {
        let p = script(name, text.as_bytes());
        let o = run(virtmem().arg("run").arg(&p));
        assert_eq!(o.code, 2, "{name}: {}", &o.stderr[..o.stderr.len().min(300)]);
        assert!(
            o.stderr.contains("more than 1000 operators on one line"),
            "{name}: {}",
            &o.stderr[..o.stderr.len().min(300)]
        );
    }
    // The cap's column: `echo 1+1+...`, the 1001st `+` is at column 7 + 2 * 1000; the
    // echoed line is cut to a window around it.
    let p = script("sum2.vms", sum.as_bytes());
    let o = run(virtmem().arg("run").arg(&p));
    assert!(o.stderr.contains("sum2.vms:1:2007:"), "{}", &o.stderr[..o.stderr.len().min(300)]);
    assert!(o.stderr.len() < 1000, "the long line is not echoed whole: {} bytes", o.stderr.len());
    // Piped into the prompt: the error is reported and the next line still runs.
    let o = run(virtmem().arg("run").write_stdin(format!("{sum}echo 7\n")));
    assert_eq!(o.code, 0, "{}", &o.stderr[..o.stderr.len().min(300)]);
    assert!(o.stderr.contains("more than 1000 operators"), "{}", &o.stderr[..o.stderr.len().min(300)]);
    assert_eq!(o.stdout, "0x7\n");
    // Up to the cap is fine.
    let ok = format!("echo {}\n", vec!["1"; 1001].join("+"));
    let o = run(virtmem().arg("run").arg(script("sum3.vms", ok.as_bytes())));
    assert_eq!((o.code, o.stdout.as_str()), (0, "0x3e9\n"), "{}", o.stderr);
}

#[test]
fn interactive_prompt_reads_stdin() {
    let o = run(virtmem().arg("run").write_stdin(
        "p = alloc 0, 64K, reserve|commit, rw\nfrobnicate\nwrite p, \"hi\"\nread p, 2\nhelp\nmap\nquit\nquery p\n",
    ));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("VirtualAlloc(NULL, 0x10000, MEM_COMMIT|MEM_RESERVE, PAGE_READWRITE) = 0x10000"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("read(0x10000, 0x2) = 68 69  \"hi\""), "{}", o.stdout);
    assert!(o.stdout.contains("commands (arguments are separated by commas"), "help");
    assert!(o.stderr.contains("<input>:2:1: unknown command `frobnicate`"), "{}", o.stderr);
    assert!(!o.stdout.contains("VirtualQuery(0x10000)"), "nothing runs after quit");
}

#[test]
fn script_from_stdin_with_dash() {
    let o = run(virtmem().args(["run", "-"]).write_stdin("echo \"from stdin\", 42\n"));
    assert_eq!((o.code, o.stdout.as_str()), (0, "from stdin 0x2a\n"));
}

#[test]
fn recorded_trace_replays_clean_and_differences_are_reported() {
    let o = run(virtmem().args(["replay", "examples/traces/gc-heap.vmt", "--strict"]));
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(o.stdout.contains("replayed 25 calls (virtmem trace, 1 session(s))"), "{}", o.stdout);
    assert!(o.stdout.contains("peak reserved 256.1 MiB, peak committed 5 MiB"), "{}", o.stdout);
    assert!(o.stdout.contains("calls whose result differs from the recorded one: 0"), "{}", o.stdout);

    // Tamper with two recorded results: both are reported, with their lines. (The replay
    // undoes the commit the tampered line says failed, so the query of those pages on
    // line 6, recorded as committed, and the write into them on line 9 differ too: the
    // tampered trace contradicts itself.)
    let text = std::fs::read_to_string(root().join("examples/traces/gc-heap.vmt")).expect("trace");
    let tampered = text.replacen("0x1000 0x4 -> 0x10000 err=0", "0x1000 0x4 -> 0x0 err=487", 1).replacen(
        "-> 0x1 err=0 old=0x4",
        "-> 0x1 err=0 old=0x2",
        1,
    );
    assert_ne!(tampered, text);
    let p = script("tampered.vmt", tampered.as_bytes());
    let o = run(virtmem().arg("replay").arg(&p).arg("--strict"));
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stdout.contains("calls whose result differs from the recorded one: 4"), "{}", o.stdout);
    assert!(o.stdout.contains("line 6: VirtualQuery(0x10000): recorded {base 0x10000, allocbase 0x10000, size 0x100000, MEM_COMMIT, PAGE_READWRITE}, replayed {base 0x10000, allocbase 0x10000, size 0x100000, MEM_RESERVE, 0}"), "{}", o.stdout);
    assert!(
        o.stdout.contains("line 3: VirtualAlloc(0x10000, 0x100000, MEM_COMMIT, PAGE_READWRITE): recorded failed with ERROR_INVALID_ADDRESS (487), replayed returned 0x10000"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("line 9: VirtmemAccess(0, 0x11234, 0x6, 1): recorded 0x0, replayed 0xc0000005"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("old protection recorded PAGE_READONLY, replayed PAGE_READWRITE"), "{}", o.stdout);
}

#[test]
fn trace_recorded_through_libvirtmem_replays_clean() {
    // examples/traces/growable-buffer.vmt: examples/c/growable_buffer.c run on real memory
    // with VIRTMEM_TRACE set (scripts/test-cli-trace.sh records a fresh one in CI).
    let o = run(virtmem().args(["replay", "examples/traces/growable-buffer.vmt", "--strict"]));
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(o.stdout.contains("replayed 13 calls (virtmem trace, 1 session(s))"), "{}", o.stdout);
    assert!(o.stdout.contains("peak reserved 1 GiB, peak committed 256 KiB"), "{}", o.stdout);
}

#[test]
fn run_trace_round_trips_through_replay() {
    let t = tmp("tour.vmt");
    let _ = std::fs::remove_file(&t);
    let p = script("rt.vms", b"p = alloc NULL, 1M, reserve|write_watch, rw\nalloc p, 8K, commit, rw\nwrite p + 5000, 1\ngetwritewatch p, 1M\nprotect p, 4K, readonly|guard\nquery p\nfree p + 4K, 0, release\nprocess 2\nalloc NULL, 64K, reserve, rw\nprocess off\nfree p, 0, release\n");
    assert_eq!(run(virtmem().arg("run").arg(&p).arg("--trace").arg(&t)).code, 0);
    let text = std::fs::read_to_string(&t).expect("trace written");
    assert!(text.starts_with("virtmem-trace 1"), "{text}");
    assert!(text.contains("VirtualAllocEx 0x2 0x0 0x10000 0x2000 0x4 -> 0x10000 err=0"), "{text}");
    assert!(text.contains("VirtualFree 0x11000 0x0 0x8000 -> 0x0 err=487"), "{text}");
    assert!(text.contains("count=0x1 granularity=0x1000 addresses=0x11000"), "{text}");
    // Out-pointers are recorded as the documented stand-ins, not the CLI's own addresses.
    assert!(text.contains("GetWriteWatch 0x0 0x10000 0x100000 0x1000 0x1000 0x1008 -> 0x0 err=0"), "{text}");
    assert!(text.contains("VirtualProtect 0x10000 0x1000 0x102 0x1000 -> 0x1 err=0 old=0x4"), "{text}");
    assert!(text.contains("VirtualQuery 0x10000 0x1000 0x30 -> 0x30 err=0"), "{text}");
    // The plain-mode write is a CPU store, recorded as libvirtmem's VirtmemAccess.
    assert!(text.contains("VirtmemAccess 0x0 0x11388 0x1000 0x1 0x1 0x1008 -> 0x0 err=0"), "{text}");
    let o = run(virtmem().arg("replay").arg(&t).arg("--strict"));
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(o.stdout.contains("replayed 9 calls"), "{}", o.stdout);
}

/// A guard page met by a plain-mode `read`, `write`, `fill` or `exec` (CPU accesses, not
/// calls) is disarmed; `run --trace` records each as libvirtmem's `VirtmemAccess` on
/// process 0 (kind 0, 1 or 8; the exception raised as its result), so that a strict
/// replay of the recording disarms the same guards. Without them the replay had found
/// every guard still armed, and reported the queries after as differences.
#[test]
fn plain_accesses_are_traced_so_that_the_guards_they_disarm_replay() {
    let t = tmp("plain-access.vmt");
    let _ = std::fs::remove_file(&t);
    let p = script(
        "plain-access.vms",
        b"g = alloc NULL, 64K, reserve|commit, rw|guard\nread g, 1\nquery g\nwrite g + 4K, 1, 2\nquery g + 4K\n\
          fill g + 8K, 16, 0x41\nquery g + 8K\ncode = alloc NULL, 64K, reserve|commit, rx|guard\nexec code\nquery code\n\
          read NULL, 1\nread g, 1\n",
    );
    let o = run(virtmem().arg("run").arg(&p).arg("--trace").arg(&t));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let text = std::fs::read_to_string(&t).expect("trace written");
    for line in [
        "VirtmemAccess 0x0 0x10000 0x1000 0x1 0x0 0x1008 -> 0x80000001 err=0",
        "VirtmemAccess 0x0 0x11000 0x1000 0x2 0x1 0x1008 -> 0x80000001 err=0",
        "VirtmemAccess 0x0 0x12000 0x1000 0x10 0x1 0x1008 -> 0x80000001 err=0",
        "VirtmemAccess 0x0 0x20000 0x1000 0x1 0x8 0x1008 -> 0x80000001 err=0",
        "VirtmemAccess 0x0 0x0 0x1000 0x1 0x0 0x1008 -> 0xc0000005 err=0",
        "VirtmemAccess 0x0 0x10000 0x1000 0x1 0x0 0x1008 -> 0x0 err=0",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    let o = run(virtmem().arg("replay").arg(&t).arg("--strict"));
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(o.stdout.contains("calls whose result differs from the recorded one: 0"), "{}", o.stdout);
}

#[test]
fn tour_round_trips_and_one_environment_difference_is_one_difference() {
    let t = tmp("tour-rt.vmt");
    let _ = std::fs::remove_file(&t);
    assert_eq!(run(virtmem().args(["run", "examples/scripts/tour.vms", "--trace"]).arg(&t)).code, 0);
    let text = std::fs::read_to_string(&t).expect("trace written");
    // The tour's `commitlimit 16M` and `commitlimit none` are in the trace.
    assert!(text.contains("SetCommitLimit 0x1000000 -> 0x1 err=0"), "{text}");
    assert!(text.contains("SetCommitLimit 0xffffffffffffffff -> 0x1 err=0"), "{text}");
    let o = run(virtmem().arg("replay").arg(&t).arg("--strict"));
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(o.stdout.contains("calls whose result differs from the recorded one: 0"), "{}", o.stdout);
    // Without the limit, the commit that failed succeeds in the replay: that one call is
    // reported, and what it allocated is undone so the calls after it replay as recorded.
    let without: String = text.lines().filter(|l| !l.starts_with("SetCommitLimit")).map(|l| format!("{l}\n")).collect();
    let p = script("tour-nolimit.vmt", without.as_bytes());
    let o = run(virtmem().arg("replay").arg(&p));
    assert!(o.stdout.contains("calls whose result differs from the recorded one: 1\n"), "{}", o.stdout);
    assert!(o.stdout.contains("recorded failed with ERROR_COMMITMENT_LIMIT (1455), replayed returned"), "{}", o.stdout);
}

#[test]
fn busy_spaces_draw_inside_the_canvas() {
    // 8 MiB reservation of 2048 alternating committed/reserved 4 KiB runs.
    let mut text = String::from("p = alloc NULL, 8M, reserve, noaccess\n");
    for i in 0..1024 {
        text += &format!("alloc p + {}, 4K, commit, {}\n", i * 8192, if i % 2 == 0 { "rw" } else { "ro" });
    }
    let svg = tmp("runs.svg");
    let o = run(virtmem().arg("run").arg(script("runs.vms", text.as_bytes())).arg("--svg").arg(&svg));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let drawn = check_svg(&svg);
    assert!(drawn.contains("regions too small to draw apart"), "narrow runs become mixed clusters");
    assert!(drawn.contains("whole space, 0x10000 - 0x810000 (8 MiB), to scale"), "overview strip");
    // 30 000 reservations with gaps: ~60 000 rows, all drawn (grouped), inside the canvas.
    let mut trace = String::from("virtmem-trace 1\n");
    for i in 0..30_000u64 {
        let a = 0x10000 + i * 0x20000;
        trace += &format!("VirtualAlloc {a:#x} 0x10000 0x2000 0x4 -> {a:#x} err=0\n");
    }
    let svg = tmp("big.svg");
    let o = run(virtmem().arg("replay").arg(script("big.vmt", trace.as_bytes())).arg("--svg").arg(&svg));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let drawn = check_svg(&svg);
    assert!(!drawn.contains("not drawn"), "every row is drawn");
    assert!(
        drawn.contains("60000 rows") || drawn.contains("59999 rows") || drawn.contains("60001 rows"),
        "row count shown"
    );
    assert!(drawn.len() < 8 << 20, "the picture stays a reasonable size: {} bytes", drawn.len());
}

#[test]
fn wine_log_replays_with_views_and_svg() {
    let svg = tmp("wine.svg");
    let o = run(virtmem().args(["replay", "examples/traces/wine-virtual.log", "--svg"]).arg(&svg));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("(Wine +virtual log, 1 session(s))"), "{}", o.stdout);
    // The program reserved 4 GiB, so the peak is at least that.
    assert!(o.stdout.contains("peak reserved 4.0 GiB"), "{}", o.stdout);
    assert!(o.stdout.contains("calls whose result differs from the recorded one: 0"), "{}", o.stdout);
    assert!(o.stdout.contains("29 image/file view(s) placed as mapped regions (0 unmapped again)"), "{}", o.stdout);
    let n: u64 = o.stdout.split_whitespace().nth(1).and_then(|w| w.parse().ok()).expect("call count");
    assert!(n > 100, "{n} calls");
    let text = check_svg(&svg);
    assert!(text.contains(" image"), "image views drawn");
}

#[test]
fn wine_unmapped_views_free_their_address_space() {
    // A file view mapped, unmapped, then an allocation Wine made at its address (its
    // view was dumped: it succeeded). An unmap of an allocation changes nothing.
    let log = "0108:trace:virtual:NtMapViewOfSection handle=0x1c process=0xffffffffffffffff addr=(nil) off=0 size=0 access=2\n\
        0108:trace:virtual:dump_view View: 0x320000 - 0x330fff (file)\n\
        0108:trace:virtual:dump_view       0x320000 - 0x330fff c-r--\n\
        0108:trace:virtual:NtUnmapViewOfSection 0xffffffffffffffff 0x321000\n\
        0108:trace:virtual:NtAllocateVirtualMemory 0xffffffffffffffff 0x320000 00010000 3000 00000004\n\
        0108:trace:virtual:dump_view View: 0x320000 - 0x32ffff (valloc)\n\
        0108:trace:virtual:dump_view       0x320000 - 0x32ffff c-rw-\n\
        0108:trace:virtual:NtUnmapViewOfSection 0xffffffffffffffff 0x320000\n\
        0108:trace:virtual:NtProtectVirtualMemory 0xffffffffffffffff 0x320000 00001000 00000002\n\
        0108:trace:virtual:dump_view View: 0x320000 - 0x32ffff (valloc)\n\
        0108:trace:virtual:dump_view       0x320000 - 0x320fff c-r--\n\
        0108:trace:virtual:dump_view       0x321000 - 0x32ffff c-rw-\n";
    let o = run(virtmem().arg("replay").arg(script("unmap.log", log.as_bytes())));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("differs from the recorded one: 0"), "{}", o.stdout);
    assert!(o.stdout.contains("1 image/file view(s) placed as mapped regions (1 unmapped again)"), "{}", o.stdout);
    assert!(o.stdout.starts_with("replayed 2 calls"), "{}", o.stdout);
}

#[test]
fn wine_logs_with_pid_and_timestamp_prefixes_replay_the_same() {
    let log = std::fs::read_to_string(root().join("examples/traces/wine-virtual.log")).expect("log");
    let plain = run(virtmem().args(["replay", "examples/traces/wine-virtual.log"]));
    let calls = plain.stdout.split(" calls").next().expect("summary").to_string();
    let prefixed = |f: &dyn Fn(usize) -> String| -> String {
        log.lines()
            .enumerate()
            .map(|(i, l)| if l.starts_with("trace:") { format!("{l}\n") } else { format!("{}{l}\n", f(i)) })
            .collect()
    };
    let variants = [
        ("pid.log", prefixed(&|_| "0024:".to_string())),
        ("stamp.log", prefixed(&|i| format!("{}.{:03}:", 1000 + i / 7, i % 1000))),
        ("tid5.log", prefixed(&|_| "0".to_string())),
    ];
    for (name, text) in variants {
        let o = run(virtmem().arg("replay").arg(script(name, text.as_bytes())));
        assert_eq!(o.code, 0, "{name}: {}", o.stderr);
        assert!(o.stdout.starts_with(&format!("{calls} calls")), "{name}: {} vs {calls}", o.stdout);
        assert!(o.stdout.contains("differs from the recorded one: 0"), "{name}: {}", o.stdout);
    }
}

#[test]
fn fragmentation_is_measured_between_the_reservations() {
    // Reservations at 0x10000, 0x30000 and 0x60000 (64 KiB each): free gaps of 64 KiB and
    // 128 KiB between them, so 1 - 128/192 = 33.33 %, whatever lies outside.
    let trace = "virtmem-trace 1\n\
        VirtualAlloc 0x10000 0x10000 0x2000 0x4 -> 0x10000 err=0\n\
        VirtualAlloc 0x30000 0x10000 0x2000 0x4 -> 0x30000 err=0\n\
        VirtualAlloc 0x60000 0x10000 0x2000 0x4 -> 0x60000 err=0\n";
    let o = run(virtmem().arg("replay").arg(script("frag.vmt", trace.as_bytes())));
    assert!(o.stdout.contains("fragmentation 33.33%"), "{}", o.stdout);
    let one = "virtmem-trace 1\nVirtualAlloc 0x10000 0x10000 0x2000 0x4 -> 0x10000 err=0\n";
    let o = run(virtmem().arg("replay").arg(script("frag1.vmt", one.as_bytes())));
    assert!(o.stdout.contains("fragmentation 0.00%"), "{}", o.stdout);
}

#[test]
fn control_characters_in_file_names_keep_the_svg_well_formed() {
    let p = script("ctl\x01name.vms", b"alloc 0, 64K, commit, rw\n");
    let svg = tmp("ctl.svg");
    let o = run(virtmem().arg("run").arg(&p).arg("--svg").arg(&svg));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let text = check_svg(&svg);
    assert!(text.contains("ctl\u{FFFD}name.vms"), "the name is shown with a replacement character");
}

#[test]
fn a_byte_order_mark_and_crlf_line_ends_are_accepted() {
    let text = "\u{FEFF}p = alloc 0, 64K, commit, rw\r\necho p\r\nquery p\r\n";
    let o = run(virtmem().arg("run").arg(script("bom.vms", text.as_bytes())));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("0x10000\n"), "{}", o.stdout);
    let o = run(virtmem().args(["run", "-"]).write_stdin(text));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run(virtmem().arg("run").write_stdin(text));
    assert!(o.stderr.is_empty(), "the prompt accepts it too: {}", o.stderr);
    // A BOM later in the file is still an error.
    let o = run(virtmem().arg("run").arg(script("bom2.vms", "echo 1\n\u{FEFF}echo 2\n".as_bytes())));
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains(":2:1: unexpected character"), "{}", o.stderr);
}

#[test]
fn prompt_and_ex_mode_report_what_really_happened() {
    // Errors at the prompt name their input line.
    let o = run(virtmem().arg("run").write_stdin("echo 1\necho 2\n# note\nquery q\n"));
    assert!(o.stderr.contains("<input>:4:7: unknown variable `q`"), "{}", o.stderr);
    // An exited process: map, stats and sysinfo report the error, not process 0's space.
    let o = run(virtmem().arg("run").write_stdin(
        "alloc 0, 64K, commit, rw\nprocess 3\nalloc 0, 64K, reserve, rw\nexit 3\nmap\nexpect ERROR_ACCESS_DENIED\nstats\nsysinfo\nprocess null\nmap\n",
    ));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("map (process 3) failed: ERROR_ACCESS_DENIED (5)"), "{}", o.stdout);
    assert!(o.stdout.contains("stats (process 3) failed: ERROR_ACCESS_DENIED (5)"), "{}", o.stdout);
    assert!(o.stdout.contains("sysinfo (process 3) failed: ERROR_ACCESS_DENIED (5)"), "{}", o.stdout);
    assert!(o.stdout.contains("map (process NULL) failed: ERROR_INVALID_HANDLE (6)"), "{}", o.stdout);
    assert!(!o.stdout.contains("MEM_PRIVATE"), "process 0's map is not shown: {}", o.stdout);
    // Output names the real functions.
    let o = run(virtmem()
        .arg("run")
        .write_stdin("process 2\np = alloc 0, 64K, commit, rw\nwrite p, 1\nread p, 1\nexec p\nquery p\n"));
    for want in [
        "VirtualAllocEx(2, ",
        "WriteProcessMemory(2, 0x10000, ",
        "ReadProcessMemory(2, 0x10000, 0x1)",
        "VirtmemAccess(2, 0x10000, 0x1, VIRTMEM_ACCESS_EXECUTE)",
        "VirtualQueryEx(2, 0x10000)",
    ] {
        assert!(o.stdout.contains(want), "{want}: {}", o.stdout);
    }
    assert!(!o.stdout.contains("ProcessMemoryEx") && !o.stdout.contains("execEx"), "{}", o.stdout);
    // Replay differences of Ex calls name the process.
    let trace = "virtmem-trace 1\nVirtualAllocEx 0x2 0x0 0x10000 0x3000 0x4 -> 0x0 err=8\n";
    let o = run(virtmem().arg("replay").arg(script("ex.vmt", trace.as_bytes())));
    assert!(
        o.stdout.contains(
            "line 2: VirtualAllocEx(2, 0x0, 0x10000, MEM_COMMIT|MEM_RESERVE, PAGE_READWRITE): recorded failed"
        ),
        "{}",
        o.stdout
    );
}

#[test]
fn os_flag_uses_this_process_real_memory() {
    let p = script(
        "os.vms",
        b"p = alloc NULL, 1G, reserve, noaccess\nalloc p, 64K, commit, rw\nwrite p, \"real\"\nread p, 4\nread p + 64K, 1\nexpect STATUS_ACCESS_VIOLATION\nmap\nfree p, 0, release\nexpect ok\n",
    );
    let svg = tmp("os.svg");
    let o = run(virtmem().args(["run", "--os"]).arg(&p).arg("--svg").arg(&svg));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("= 72 65 61 6c  \"real\""), "{}", o.stdout);
    // The real map holds the program's own image and libraries, not only our reservation.
    assert!(o.stdout.contains("MEM_IMAGE") || o.stdout.contains("MEM_MAPPED"), "{}", o.stdout);
    check_svg(&svg);
}

#[test]
fn bench_prints_every_workload_with_ratios() {
    let o = run(virtmem().args(["bench", "--scale", "0.001"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    for w in [
        "lifecycle",
        "churn:",
        "churn, each piece written",
        "live allocations: reserve+commit",
        "query among",
        "release each",
    ] {
        let row = o.stdout.lines().find(|l| l.contains(w)).unwrap_or_else(|| panic!("no `{w}` row: {}", o.stdout));
        assert!(row.contains(" ns"), "{row}");
    }
    let life = o.stdout.lines().find(|l| l.starts_with("lifecycle")).expect("row");
    assert_eq!(life.matches("x)").count(), 2, "two ratios against the raw calls: {life}");
    let o = run(virtmem().args(["bench", "--scale", "0"]));
    assert_eq!(o.code, 2);
    let o = run(virtmem().args(["bench", "--runs", "0"]));
    assert_eq!(o.code, 2);
}

/// `bench` with a `VIRTMEM_LINUX_WITHOUT` that names no kernel feature (a typo) stops
/// with an error naming the word, rather than benchmarking without the Linux column.
#[cfg(target_os = "linux")]
#[test]
fn bench_refuses_a_linux_without_that_names_no_feature() {
    let o = run(virtmem().args(["bench", "--scale", "0.001", "--runs", "1"]).env("VIRTMEM_LINUX_WITHOUT", "gaurd"));
    assert_eq!(o.code, 2, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    assert!(o.stderr.contains("`gaurd`"), "the bad word is named: {}", o.stderr);
    assert!(!o.stdout.contains("lifecycle"), "no benchmark ran: {}", o.stdout);
}

/// The Linux backend of `bench` is made as its options say, and the report tells how.
#[cfg(target_os = "linux")]
#[test]
fn bench_sets_up_the_linux_backend_as_asked() {
    let o =
        run(virtmem().args(["bench", "--scale", "0.001", "--runs", "1", "--pool-bytes", "0", "--no-guard-regions"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("linux backend: pool of 0 bytes, guard regions off (not in use)"), "{}", o.stdout);
    let o = run(virtmem().args(["bench", "--scale", "0.001", "--runs", "1"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    // The default pool: 8 TiB, or 1 GiB under an address-space limit (which the command
    // inherits from this test).
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max address space")).expect("RLIMIT_AS line");
    let pool = if line.split_whitespace().nth(3) == Some("unlimited") {
        "pool of 8796093022208 bytes, guard".to_string()
    } else {
        "pool of 1073741824 bytes (asked for 8796093022208: the address-space limit caps it), guard".to_string()
    };
    assert!(o.stdout.contains(&format!("linux backend: {pool} regions asked for")), "{}", o.stdout);
    assert!(o.stdout.contains("linux backend does without: nothing ("), "this kernel has them all: {}", o.stdout);
    // On a kernel without some features (here withheld), the report names them.
    let o = run(virtmem()
        .args(["bench", "--scale", "0.001", "--runs", "1"])
        .env("VIRTMEM_LINUX_WITHOUT", "guard,procmap_query"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("linux backend does without: guard, procmap_query ("), "{}", o.stdout);
    assert!(o.stdout.contains("guard regions asked for (not in use)"), "{}", o.stdout);
    let o = run(virtmem().args(["bench", "--pool-bytes", "lots"]));
    assert_eq!(o.code, 2, "a pool size must be a number");
    assert!(o.stderr.contains("`lots` is not a number"), "{}", o.stderr);
    // The pool size is written as scripts write numbers: suffixes, hex, separators.
    for (arg, bytes) in [("1G", 1usize << 30), ("0x10_0000", 1 << 20), ("64K", 65536)] {
        let o = run(virtmem().args(["bench", "--scale", "0.001", "--runs", "1", "--pool-bytes", arg]));
        assert_eq!(o.code, 0, "{arg}: {}", o.stderr);
        assert!(o.stdout.contains(&format!("linux backend: pool of {bytes} bytes,")), "{arg}: {}", o.stdout);
    }
}

/// The figures (`N ns`) and ratios (`(R x)`) of a bench row, in order.
fn bench_cells(row: &str) -> (Vec<f64>, Vec<f64>) {
    let words: Vec<&str> = row.split_whitespace().collect();
    let figures = words.windows(2).filter(|w| w[1] == "ns").filter_map(|w| w[0].parse().ok()).collect();
    let ratios =
        row.split('(').filter_map(|part| part.split_once("x)")).filter_map(|(r, _)| r.trim().parse().ok()).collect();
    (figures, ratios)
}

#[test]
fn bench_query_row_has_a_raw_baseline_and_ratios() {
    let o = run(virtmem().args(["bench", "--scale", "0.001", "--runs", "3"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("median of 3 timed run(s) after a warm-up"), "{}", o.stdout);
    let row = o.stdout.lines().find(|l| l.starts_with("query among")).expect("query row");
    // The row's name ends at `)`: the cells follow it.
    let cells = &row[row.find(')').expect("name") + 1..];
    let (figures, ratios) = bench_cells(cells);
    assert_eq!(figures.len(), 3, "raw, linux and simulated figures: {row}");
    assert!(figures.iter().all(|&f| f >= 0.0), "{row}");
    assert_eq!(ratios.len(), 2, "linux and simulated ratios to the raw query: {row}");
    assert!(ratios.iter().all(|&r| r > 0.0 || figures[0] == 0.0), "{row}");
    let baseline = o.stdout.lines().find_map(|l| l.strip_prefix("raw query baseline: ")).expect("baseline line");
    assert!(baseline.contains("PROCMAP_QUERY") || baseline.contains("/proc/self/maps"), "{baseline}");
}

/// `VirtualAlloc2` records replay as libvirtmem made the calls: a reserve in an address
/// window at the recorded address (real memory's, in the replay's simulated process 0),
/// the parameters' refusals with their errors (a second window 87, a NULL array 998, an
/// entry the program could not read 998), a window with no room 8; a recorded reserve
/// outside its window, or a refusal the replay does not make, is a difference.
#[test]
fn virtual_alloc2_records_replay() {
    let clean = "virtmem-trace 1 pid=7\n\
        VirtualAlloc2 0x0 0x0 0x20000 0x103000 0x4 [0x1:0x7ffc1000:0x7f0000000000:0x7f00ffffffff:0x100000] 0x1 -> 0x7f00fff00000 err=0\n\
        VirtualAlloc2 0x0 0x0 0x10000 0x2000 0x4 [0x1:0x7ffc1000:0x7f0000000000:0x7f00ffffffff:0x0] 0x1 -> 0x7f0000000000 err=0\n\
        VirtualAlloc2 0x0 0x0 0x10000 0x2000 0x4 [0x1:0x7ffc1000:0x7f0000000000:0x7f000000ffff:0x0] 0x1 -> 0x0 err=8\n\
        VirtualAlloc2 0x0 0x0 0x10000 0x2000 0x4 [0x1:0x7ffc1000:0x0:0x0:0x0,0x1:0x7ffc1000:0x0:0x0:0x0] 0x2 -> 0x0 err=87\n\
        VirtualAlloc2 0x0 0x0 0x10000 0x2000 0x4 null 0x1 -> 0x0 err=998\n\
        VirtualAlloc2 0x0 0x0 0x10000 0x2000 0x4 [0x2:0x0] 0x2 -> 0x0 err=998\n\
        VirtualAlloc2 0x0 0x0 0x10000 0x2000 0x4 [0x1:0x0] 0x1 -> 0x0 err=998\n\
        VirtualAlloc2 0x0 0x7f00fff00000 0x1000 0x1000 0x4 [] 0x0 -> 0x7f00fff00000 err=0\n\
        VirtualFree 0x7f00fff00000 0x0 0x8000 -> 0x1 err=0\n";
    let p = script("valloc2.vmt", clean.as_bytes());
    let o = run(virtmem().arg("replay").arg(&p).arg("--strict"));
    assert_eq!(o.code, 0, "{}", o.stdout);
    assert!(o.stdout.contains("calls whose result differs from the recorded one: 0"), "{}", o.stdout);
    // Moved out of its window; a refusal recorded where the replay succeeds (undone).
    let tampered = clean.replacen("-> 0x7f00fff00000 err=0", "-> 0x7f0100000000 err=0", 1).replacen(
        "[0x2:0x0] 0x2 -> 0x0 err=998",
        "[0x2:0x0] 0x1 -> 0x0 err=998",
        1,
    );
    let p = script("valloc2-tampered.vmt", tampered.as_bytes());
    let o = run(virtmem().arg("replay").arg(&p).arg("--strict"));
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(o.stdout.contains("line 2: VirtualAlloc2(0, 0x0, 0x20000, MEM_COMMIT|MEM_RESERVE|MEM_TOP_DOWN, PAGE_READWRITE, 1 read of 1 parameter(s)): recorded 0x7f0100000000, replayed 0x7f00fff00000"), "{}", o.stdout);
    assert!(o.stdout.contains("line 7: VirtualAlloc2(0, 0x0, 0x10000, MEM_RESERVE, PAGE_READWRITE, 1 read of 1 parameter(s)): recorded failed with ERROR_NOACCESS (998), replayed returned"), "{}", o.stdout);
}
