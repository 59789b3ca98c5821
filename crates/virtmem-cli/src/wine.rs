//! Reading Wine's `WINEDEBUG=+virtual` log, best effort.
//!
//! What is used (everything else is skipped):
//! - `NtAllocateVirtualMemory PROCESS ADDRESS SIZE TYPE PROTECT`,
//!   `NtFreeVirtualMemory PROCESS ADDRESS SIZE TYPE`,
//!   `NtProtectVirtualMemory PROCESS ADDRESS SIZE PROTECT`,
//!   `NtGetWriteWatch PROCESS FLAGS BASE-END ...`, `NtQueryVirtualMemory (PROCESS, ADDRESS, ...)`
//!   for the current process (`0xffffffffffffffff`); calls on other processes are skipped;
//! - view dumps: `View: START - END (KIND)` followed by one line per run, `START - END FLAGS`
//!   with FLAGS `c` (committed), `g` (guard), `r`, `w` (`W`: write-copy), `x`; image and
//!   file views (`NtMapViewOfSection ... process=0xffffffffffffffff`, or dumps no call asked
//!   for) are placed as mapped regions;
//! - `NtUnmapViewOfSection PROCESS ADDRESS` for the current process: the view holding
//!   ADDRESS goes and its address space is free again.
//!
//! Wine does not log results. A call followed by a dump of its view is taken as having
//! succeeded (and the dump tells where a NULL-address allocation was placed); an
//! allocation or protection without one as having failed; frees, queries and write-watch
//! calls have no recorded result. A line's prefix is one or more `hex:` fields (the thread
//! id, and the process id before it with `WINEDEBUG=+pid`) or `digits.digits:` fields
//! (`+timestamp`). Lines without a thread-id prefix (`0024:`) come from
//! the loader before the process has threads (Wine prints them twice, as the loader
//! re-executes itself) and are skipped.

/// A run of pages in a view dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
    /// Committed.
    pub committed: bool,
    /// The Win32 protection the flags spell (`PAGE_GUARD` included).
    pub protect: u32,
}

/// A dump of one view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The line number of the `View:` line.
    pub line: usize,
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
    /// `valloc`, `image`, `file`, ...
    pub kind: String,
    /// The runs, in order.
    pub runs: Vec<Run>,
}

/// A call Wine logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `NtAllocateVirtualMemory`.
    Alloc {
        /// Address (0 for NULL).
        address: usize,
        /// Size.
        size: usize,
        /// `MEM_*` flags.
        alloc_type: u32,
        /// `PAGE_*` protection.
        protect: u32,
    },
    /// `NtFreeVirtualMemory`.
    Free {
        /// Address.
        address: usize,
        /// Size.
        size: usize,
        /// `MEM_DECOMMIT` / `MEM_RELEASE`.
        free_type: u32,
    },
    /// `NtProtectVirtualMemory`.
    Protect {
        /// Address.
        address: usize,
        /// Size.
        size: usize,
        /// New protection.
        protect: u32,
    },
    /// `NtGetWriteWatch`.
    GetWriteWatch {
        /// Flags.
        flags: u32,
        /// Base.
        base: usize,
        /// Size.
        size: usize,
    },
    /// `NtQueryVirtualMemory` (basic information only).
    Query {
        /// Address.
        address: usize,
    },
    /// `NtMapViewOfSection` of the current process: the view dumps after it are its view.
    MapView,
    /// `NtUnmapViewOfSection` at an address.
    Unmap {
        /// The view's address.
        address: usize,
    },
}

/// What the log says happened, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A call and the view dump that followed it before the next call, if any.
    Call {
        /// The line of the call.
        line: usize,
        /// The call.
        call: Call,
        /// The dumps that followed it.
        views: Vec<View>,
    },
    /// A view dump no call of ours asked for (a thread stack, a loaded DLL...).
    View(View),
}

/// Whether `text` looks like a Wine `+virtual` log (checked on its first lines). A text
/// whose first line that is not blank or a `#` comment is a virtmem trace header is not
/// one, and comment lines are not looked at (a trace's comment may quote Wine's log).
pub fn looks_like_wine(text: &str) -> bool {
    let mut lines =
        text.lines().take(200).map(str::trim_start).filter(|l| !l.is_empty() && !l.starts_with('#')).peekable();
    if lines.peek().is_some_and(|l| l.split_whitespace().next() == Some("virtmem-trace")) {
        return false;
    }
    lines.any(|l| l.contains("trace:virtual:") || l.contains("warn:virtual:"))
}

fn hexnum(w: &str) -> Option<u64> {
    let w = w.trim_matches(|c| c == ',' || c == '(' || c == ')');
    if w == "(nil)" || w == "nil" {
        return Some(0);
    }
    let d = w.strip_prefix("0x").unwrap_or(w);
    u64::from_str_radix(d, 16).ok()
}

/// A 32-bit flag word: wider values are malformed (not cut to their low bits).
fn hexnum32(w: &str) -> Option<u32> {
    hexnum(w).and_then(|v| u32::try_from(v).ok())
}

const SELF: u64 = u64::MAX;

/// Wine's dump flags (`c-rw-`) as (committed, Win32 protection).
pub fn parse_flags(f: &str) -> Option<(bool, u32)> {
    let b = f.as_bytes();
    if b.len() < 5 {
        return None;
    }
    let committed = b[0] == b'c';
    let guard = b[1] == b'g';
    let (r, w, wc, x) = (b[2] == b'r', b[3] == b'w', b[3] == b'W', b[4] == b'x');
    let base = match (r || w || wc, w, wc, x) {
        (false, _, _, false) => 0x01,
        (false, _, _, true) => 0x10,
        (true, _, true, false) => 0x08,
        (true, _, true, true) => 0x80,
        (true, true, _, false) => 0x04,
        (true, true, _, true) => 0x40,
        (true, false, false, false) => 0x02,
        (true, false, false, true) => 0x20,
    };
    Some((committed, base | if guard { 0x100 } else { 0 }))
}

/// The text after `trace:virtual:` of a line whose prefix is one or more `hex:` fields
/// (the thread id, and the process id with `WINEDEBUG=+pid`) or `digits.digits:` fields
/// (`+timestamp`), e.g. `0024:010c:trace:virtual:...` or `12345.678:010c:trace:...`.
/// Lines without such a prefix (the loader's, printed twice) give `None`.
fn strip_prefix_fields(raw: &str) -> Option<&str> {
    let at = raw.find("trace:virtual:")?;
    let prefix = raw[..at].strip_suffix(':')?;
    let field_ok = |f: &str| {
        let hex = !f.is_empty() && f.len() <= 16 && f.bytes().all(|b| b.is_ascii_hexdigit());
        let stamp = f.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
        hex || stamp
    };
    prefix.split(':').all(field_ok).then(|| &raw[at + "trace:virtual:".len()..])
}

/// Builds a log's events one line at a time, keeping only what is still open: the view
/// being dumped and the last call (whose dumps may still follow), so that a log of any
/// size is replayed in bounded memory. [`parse_with_progress`] gives the same events
/// from a whole text.
#[derive(Debug, Default)]
pub struct Parser {
    /// The view whose dump is being read.
    current: Option<View>,
    /// Whether dumps still belong to the last call (allocations, protections and view
    /// mappings dump their view; other calls never do).
    open: bool,
    /// The last call, held back while dumps may still follow it.
    held: Option<Event>,
    /// `virtual` lines skipped so far.
    skipped: usize,
}

impl Parser {
    /// Read line number `line` (`raw`, without its line break), passing every event it
    /// completes to `out`, in the log's order. Unrecognised lines are skipped.
    pub fn line(&mut self, line: usize, raw: &str, out: &mut dyn FnMut(Event)) {
        let Some(body) = strip_prefix_fields(raw) else { return };
        let (func, args) = body.split_once(' ').unwrap_or((body, ""));
        let words: Vec<&str> = args.split_whitespace().collect();
        if func == "dump_view" {
            if words.first() == Some(&"View:") {
                self.flush(out);
                let start = words.get(1).and_then(|w| hexnum(w));
                let end = words.get(3).and_then(|w| hexnum(w));
                let kind = args.rsplit_once('(').map(|(_, k)| k.trim_end_matches(')').trim().to_string());
                // END is inclusive: one ending at the top of the address space has no
                // one-past-the-end and is skipped.
                match (start, end.and_then(|e| e.checked_add(1)), kind) {
                    (Some(s), Some(e), Some(k)) if e > s => {
                        self.current =
                            Some(View { line, start: s as usize, end: e as usize, kind: k, runs: Vec::new() })
                    }
                    _ => self.skipped += 1,
                }
            } else if let (Some(v), [s, "-", e, flags, ..]) = (self.current.as_mut(), words.as_slice()) {
                match (hexnum(s), hexnum(e).and_then(|e| e.checked_add(1)), parse_flags(flags)) {
                    (Some(s), Some(e), Some((committed, protect))) if e > s => {
                        v.runs.push(Run { start: s as usize, end: e as usize, committed, protect })
                    }
                    _ => self.skipped += 1,
                }
            } else {
                self.skipped += 1;
            }
            return;
        }
        let call = match func {
            "NtAllocateVirtualMemory" => match words.as_slice() {
                [p, a, s, t, pr, ..] if hexnum(p) == Some(SELF) => {
                    match (hexnum(a), hexnum(s), hexnum32(t), hexnum32(pr)) {
                        (Some(a), Some(s), Some(t), Some(pr)) => {
                            Some(Call::Alloc { address: a as usize, size: s as usize, alloc_type: t, protect: pr })
                        }
                        _ => None,
                    }
                }
                _ => None,
            },
            "NtFreeVirtualMemory" => match words.as_slice() {
                [p, a, s, t, ..] if hexnum(p) == Some(SELF) => match (hexnum(a), hexnum(s), hexnum32(t)) {
                    (Some(a), Some(s), Some(t)) => {
                        Some(Call::Free { address: a as usize, size: s as usize, free_type: t })
                    }
                    _ => None,
                },
                _ => None,
            },
            "NtProtectVirtualMemory" => match words.as_slice() {
                [p, a, s, pr, ..] if hexnum(p) == Some(SELF) => match (hexnum(a), hexnum(s), hexnum32(pr)) {
                    (Some(a), Some(s), Some(pr)) => {
                        Some(Call::Protect { address: a as usize, size: s as usize, protect: pr })
                    }
                    _ => None,
                },
                _ => None,
            },
            "NtGetWriteWatch" => match words.as_slice() {
                [p, f, range, ..] if hexnum(p) == Some(SELF) => {
                    let (b, e) = range.split_once('-').unwrap_or((range, range));
                    match (hexnum32(f), hexnum(b), hexnum(e)) {
                        (Some(f), Some(b), Some(e)) if e >= b => {
                            Some(Call::GetWriteWatch { flags: f, base: b as usize, size: (e - b) as usize })
                        }
                        _ => None,
                    }
                }
                _ => None,
            },
            "NtQueryVirtualMemory" => match words.as_slice() {
                [p, a, class, ..] if hexnum(p) == Some(SELF) && *class == "info_class=0," => {
                    hexnum(a).map(|a| Call::Query { address: a as usize })
                }
                _ => None,
            },
            "NtMapViewOfSection" if args.contains("process=0xffffffffffffffff") => Some(Call::MapView),
            "NtUnmapViewOfSection" => match words.as_slice() {
                [p, a, ..] if hexnum(p) == Some(SELF) => hexnum(a).map(|a| Call::Unmap { address: a as usize }),
                _ => None,
            },
            _ => None,
        };
        match call {
            Some(call) => {
                self.flush(out);
                self.open = matches!(call, Call::Alloc { .. } | Call::Protect { .. } | Call::MapView);
                if let Some(done) = self.held.replace(Event::Call { line, call, views: Vec::new() }) {
                    out(done);
                }
            }
            None if func.starts_with("Nt") => {
                // Some other system call (or one on another process): dumps after it are
                // not ours.
                self.flush(out);
                self.open = false;
                self.skipped += 1;
            }
            None => {}
        }
    }

    /// The end of the log: pass the events still open to `out`; returns how many
    /// `virtual` lines were skipped.
    pub fn finish(mut self, out: &mut dyn FnMut(Event)) -> usize {
        self.flush(out);
        if let Some(done) = self.held.take() {
            out(done);
        }
        self.skipped
    }

    /// The dump being read is complete: it joins the last call's when that call's
    /// dumps are still open, or is an event of its own (after the held call).
    fn flush(&mut self, out: &mut dyn FnMut(Event)) {
        let Some(v) = self.current.take() else { return };
        if self.open {
            if let Some(Event::Call { views, .. }) = self.held.as_mut() {
                views.push(v);
                return;
            }
        }
        if let Some(done) = self.held.take() {
            out(done);
        }
        out(Event::View(v));
    }
}

/// Parse a log into events. Unrecognised lines are skipped; the count of skipped
/// `virtual` lines is returned too. `progress` is called now and then with how many bytes
/// of `text` are parsed (lastly with `text.len()`).
#[cfg(test)]
pub fn parse_with_progress(text: &str, progress: &mut dyn FnMut(usize)) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut parser = Parser::default();
    for (i, raw) in text.lines().enumerate() {
        if i % 16384 == 0 {
            // `raw` is a slice of `text`: its offset is how far parsing got.
            progress(raw.as_ptr() as usize - text.as_ptr() as usize);
        }
        parser.line(i + 1, raw, &mut |e| events.push(e));
    }
    let skipped = parser.finish(&mut |e| events.push(e));
    progress(text.len());
    (events, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Event>, usize) {
        parse_with_progress(text, &mut |_| {})
    }

    #[test]
    fn calls_and_dumps() {
        let log = "\
trace:virtual:NtAllocateVirtualMemory 0xffffffffffffffff 0x7ffe0000 00001000 3000 00000002
0108:trace:virtual:NtAllocateVirtualMemory 0xffffffffffffffff (nil) 00100000 1000 00000004
0108:trace:virtual:map_view got mem in reserved area 0x830000-0x930000
0108:trace:virtual:dump_view View: 0x830000 - 0x92ffff (valloc)
0108:trace:virtual:dump_view       0x830000 - 0x92ffff c-rw-
0108:trace:virtual:NtFreeVirtualMemory 0xffffffffffffffff 0x830000 00000000 8000
0108:trace:virtual:dump_view View: 0x20000 - 0x31ffff (valloc)
0108:trace:virtual:dump_view       0x20000 - 0x20fff c----
0108:trace:virtual:dump_view       0x21000 - 0x21fff cgrw-
0108:trace:virtual:NtMapViewOfSection handle=0x20 process=0xffffffffffffffff addr=(nil) off=0 size=0 access=20
0108:trace:virtual:dump_view View: 0x7b600000 - 0x7b794fff (image)
0108:trace:virtual:dump_view       0x7b600000 - 0x7b600fff c-r--
0108:trace:virtual:NtProtectVirtualMemory 0xffffffffffffffff 0x7b0d3d20 00000cf0 00000004
0108:trace:virtual:NtAllocateVirtualMemory 0x1c (nil) 00100000 1000 00000004
0108:trace:virtual:dump_view View: 0x40000 - 0x4ffff (valloc)
";
        let (ev, skipped) = parse(log);
        assert_eq!(skipped, 1, "the call on another process");
        assert_eq!(ev.len(), 6, "{ev:#?}");
        let Event::Call {
            line: 2,
            call: Call::Alloc { address: 0, size: 0x100000, alloc_type: 0x1000, protect: 4 },
            views,
        } = &ev[0]
        else {
            panic!("{:?}", ev[0])
        };
        assert_eq!((views.len(), views[0].start, views[0].end), (1, 0x830000, 0x930000));
        assert_eq!(views[0].runs[0], Run { start: 0x830000, end: 0x930000, committed: true, protect: 4 });
        // A free never dumps: the thread stack's dump after it stands alone.
        assert!(matches!(&ev[1], Event::Call { call: Call::Free { .. }, views, .. } if views.is_empty()));
        let Event::View(stack) = &ev[2] else { panic!("{:?}", ev[2]) };
        assert_eq!(stack.runs[1].protect, 0x104);
        let Event::Call { call: Call::MapView, views, .. } = &ev[3] else { panic!() };
        assert_eq!(views[0].kind, "image");
        assert!(
            matches!(&ev[4], Event::Call { call: Call::Protect { protect: 4, .. }, views, .. } if views.is_empty())
        );
        assert!(matches!(&ev[5], Event::View(v) if v.start == 0x40000));
    }

    #[test]
    fn prefixes_of_common_winedebug_options_are_accepted() {
        let body = "trace:virtual:NtAllocateVirtualMemory 0xffffffffffffffff (nil) 00100000 1000 00000004";
        for prefix in ["0108:", "0024:010c:", "12345.678:010c:", "12345.678:0024:010c:", "0010c:"] {
            let (events, _) = parse(&format!("{prefix}{body}\n"));
            assert_eq!(events.len(), 1, "{prefix}");
        }
        for prefix in ["", "x0108:", "12.:0108:", ":0108:", "0108 ", "0108:warn:"] {
            let (events, _) = parse(&format!("{prefix}{body}\n"));
            assert!(events.is_empty(), "{prefix:?} accepted");
        }
    }

    #[test]
    fn progress_is_reported_up_to_the_whole_text() {
        let line = "0108:trace:virtual:NtFreeVirtualMemory 0xffffffffffffffff 0x830000 00000000 8000\n";
        let text = line.repeat(40_000);
        let mut seen = Vec::new();
        let (events, _) = parse_with_progress(&text, &mut |n| seen.push(n));
        assert_eq!(events.len(), 40_000);
        // Every 16384 lines, then the end.
        let every = 16384 * line.len();
        assert_eq!(seen, [0, every, 2 * every, text.len()]);
    }

    #[test]
    fn flags() {
        assert_eq!(parse_flags("c-rw-"), Some((true, 0x04)));
        assert_eq!(parse_flags("--rw-"), Some((false, 0x04)));
        assert_eq!(parse_flags("c----"), Some((true, 0x01)));
        assert_eq!(parse_flags("cgr--"), Some((true, 0x102)));
        assert_eq!(parse_flags("c-rWx"), Some((true, 0x80)));
        assert_eq!(parse_flags("c-r-x"), Some((true, 0x20)));
        assert_eq!(parse_flags("cHrw-"), Some((true, 0x04)));
        assert_eq!(parse_flags("c--"), None);
    }
}
