//! `virtmem`: run Win32 memory scripts against a simulated (or this process's real)
//! address space, print and draw memory maps, replay call traces, benchmark.

#[macro_use]
mod out;

mod bench;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod line_props;
mod map;
mod names;
mod replay;
mod script;
mod svg;
mod views;
mod wine;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand, ValueEnum};
use virtmem::{SimSpace, VirtualSpace};

#[derive(Parser)]
#[command(
    name = "virtmem",
    version,
    about = "The Win32 virtual-memory model: run scripts, view memory maps, replay traces, benchmark",
    after_help = EXIT_STATUS
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The exit codes, shown under `virtmem --help` (README.md and docs/script.md give the same).
const EXIT_STATUS: &str = "\
Exit status:
  0 success
  1 an `expect` failed (run), results differ from the trace (replay --strict)
  2 bad input: a script or trace that cannot be read or parsed (with replay --strict, a
    trace record that was not replayed), a file that cannot be written, a bad option value;
    and a usage error (an unknown command or flag, a missing argument)";

#[derive(Subcommand)]
enum Command {
    /// Run a script of Win32 memory calls (an interactive prompt when no script is given).
    ///
    /// The language is documented in docs/script.md. Exit status: 0 when the script ran
    /// and every `expect` held, 1 when an `expect` failed, 2 for a bad script or file
    /// (or a usage error).
    Run {
        /// The script (`-` for standard input); omit it for an interactive prompt.
        script: Option<PathBuf>,
        /// Act on this process's real address space (the Linux backend) instead of a
        /// fresh simulated one. read/write/fill/exec then reach any accessible memory of
        /// the virtmem process itself, as a pointer does: writing outside what the script
        /// allocated can corrupt, hang or crash the command.
        #[arg(long)]
        os: bool,
        /// Draw the final address space of process 0 as SVG into FILE (not the script
        /// itself: refused).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Record every Win32 call in FILE, in virtmem's trace format (appending; not the
        /// script itself: refused).
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
    },
    /// Replay a call trace against a simulated address space and report what it did.
    ///
    /// Reads virtmem's own trace format (written by libvirtmem when VIRTMEM_TRACE names
    /// a file) and, best effort, Wine's `WINEDEBUG=+virtual` log. Exit status: 0, or 1
    /// with --strict when a call's result differs from the recorded one, 2 for an
    /// unreadable trace (with --strict, also for a virtmem trace with lines it could not
    /// read or records it did not replay for naming more than 1024 live processes, which
    /// are otherwise skipped with a note) and for a usage error.
    Replay {
        /// The trace file (`-` for standard input).
        trace: PathBuf,
        /// The trace's format (detected from its first lines by default).
        #[arg(long, value_enum, default_value_t = Format::Auto)]
        format: Format,
        /// Draw the final address space as SVG into FILE.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Exit with status 1 when any call's result differs from the recorded one, 2 when
        /// a record of a virtmem trace was not replayed (a line that could not be read,
        /// or one naming more than 1024 live processes).
        #[arg(long)]
        strict: bool,
        /// List at most N differing calls (all are counted).
        #[arg(long, value_name = "N", default_value_t = 50)]
        max_diffs: usize,
    },
    /// Time the standard workloads on the simulated and Linux backends beside the raw
    /// system calls (ns per operation and the ratio).
    ///
    /// Exit status: 0, or 2 for a bad option value or a usage error, or a
    /// VIRTMEM_LINUX_WITHOUT that names no kernel feature.
    Bench {
        /// Scale every workload's iteration count by this factor (default 1.0: the
        /// standard sizes, 10^5 live allocations; 0.2 for a quick run); above 0, at most 100.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Report the median of this many timed runs of each workload (after an untimed
        /// warm-up run); between 1 and 100.
        #[arg(long, value_name = "N", default_value_t = 3)]
        runs: usize,
        /// The Linux backend's pool of released ranges, in bytes (0: every release
        /// unmaps; default 8 TiB, the library's; at most 1 GiB under an address-space
        /// limit).
        /// Written as the script language writes numbers (`1T`, `0x4000_0000`).
        #[arg(long, value_name = "BYTES", default_value_t = 8 << 40, value_parser = bytes_arg)]
        pool_bytes: usize,
        /// Decommit with mprotect and MADV_DONTNEED instead of guard markers
        /// (MADV_GUARD_INSTALL), on the Linux backend.
        #[arg(long)]
        no_guard_regions: bool,
    },
}

/// A byte count on the command line, written as the script language writes numbers
/// (decimal or `0x` hex, `_` separators, a `K`/`M`/`G`/`T` suffix).
fn bytes_arg(s: &str) -> Result<usize, String> {
    let v = script::number(s)?;
    usize::try_from(v).map_err(|_| format!("`{s}` does not fit in a size"))
}

/// Trace formats `replay` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Detect from the first lines.
    Auto,
    /// virtmem's own trace format.
    Virtmem,
    /// Wine's `WINEDEBUG=+virtual` log.
    Wine,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let status = match cli.command {
        Command::Run { script, os, svg, trace } => run(script.as_deref(), os, svg.as_deref(), trace.as_deref()),
        Command::Replay { trace, format, svg, strict, max_diffs } => {
            replay::main(&trace, format, svg.as_deref(), strict, max_diffs)
        }
        Command::Bench { scale, runs, pool_bytes, no_guard_regions } => {
            bench::main(scale, runs, bench::LinuxSetup { pool_bytes, guard_regions: !no_guard_regions })
        }
    };
    out::finish(status)
}

/// This process's real address space (the Linux backend).
#[cfg(target_os = "linux")]
fn os_space() -> Result<Box<dyn VirtualSpace>, String> {
    virtmem::LinuxSpace::linux()
        .map(|s| Box::new(s) as Box<dyn VirtualSpace>)
        .map_err(|e| format!("cannot manage this process's memory: {e}"))
}

#[cfg(not(target_os = "linux"))]
fn os_space() -> Result<Box<dyn VirtualSpace>, String> {
    Err("--os is only available on Linux".into())
}

/// Write `text` to `path`, reporting failure as a message.
pub fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn show_error(source: &str, name: &str, e: &script::ScriptError) {
    show_error_at(source.lines().nth(e.line.saturating_sub(1)), name, e)
}

/// Report `e`, showing `line` (the text of line `e.line`) under it.
fn show_error_at(line: Option<&str>, name: &str, e: &script::ScriptError) {
    errln!("error: {name}:{}:{}: {}", e.line, e.col, names::escaped(&e.msg));
    if let Some(text) = line {
        let text = names::shown(text);
        let width = e.line.to_string().len();
        // A long line is shown as a window around the column.
        let chars: Vec<char> = text.chars().collect();
        let col = e.col.saturating_sub(1).min(chars.len());
        let start = col.saturating_sub(SHOWN / 2);
        let end = (start + SHOWN).min(chars.len());
        let (lead, tail) = (if start > 0 { "..." } else { "" }, if end < chars.len() { "..." } else { "" });
        let shown: String = chars[start..end].iter().collect();
        errln!(" {} | {lead}{shown}{tail}", e.line);
        let pad: String = lead
            .chars()
            .chain(chars[start..col].iter().map(|&c| if c == '\t' { '\t' } else { ' ' }))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        errln!(" {:width$} | {pad}^", "");
    }
}

/// Most characters of a script line echoed under an error.
const SHOWN: usize = 120;

/// The longest script `run` reads, in bytes: a script is read whole before it runs, so
/// an endless input (`run /dev/zero`, a pipe that never closes) stops here with an error
/// instead of taking all memory. (Traces, which can be gigabytes, are streamed by
/// `replay`.)
const MAX_SCRIPT: u64 = 64 << 20;

/// All of `input` if it holds at most [`MAX_SCRIPT`] bytes, `None` if it holds more.
fn read_capped(input: impl std::io::Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut b = Vec::new();
    std::io::Read::read_to_end(&mut input.take(MAX_SCRIPT + 1), &mut b)?;
    Ok((b.len() as u64 <= MAX_SCRIPT).then_some(b))
}

/// A script read and parsed, ready to run.
struct Script {
    /// Its text (without a byte-order mark), for the lines errors show.
    text: String,
    /// Its name in messages: the path, or `<stdin>`.
    name: String,
    /// Its statements, in order.
    stmts: Vec<script::Stmt>,
}

/// Read and parse the script at `path` (`-`: standard input); on failure the error has
/// been reported and the status is returned.
fn load_script(path: &Path) -> Result<Script, ExitCode> {
    let (read, name) = if path == Path::new("-") {
        (read_capped(std::io::stdin().lock()), "<stdin>".to_string())
    } else {
        (std::fs::File::open(path).and_then(read_capped), path.display().to_string())
    };
    let bytes = match read {
        Ok(Some(b)) => b,
        Ok(None) => {
            errln!("error: {name}: a script may be at most {} MiB; this one is longer", MAX_SCRIPT >> 20);
            return Err(ExitCode::from(2));
        }
        Err(e) if path == Path::new("-") => {
            errln!("error: cannot read standard input: {e}");
            return Err(ExitCode::from(2));
        }
        Err(e) => {
            errln!("error: cannot read {}: {e}", path.display());
            return Err(ExitCode::from(2));
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let (line, col) = position_of(e.as_bytes(), e.utf8_error().valid_up_to());
            errln!("error: {name}:{line}:{col}: the script is not UTF-8 text");
            return Err(ExitCode::from(2));
        }
    };
    // A leading byte-order mark (editors on Windows write one) is not part of the script.
    let text = match text.strip_prefix('\u{FEFF}') {
        Some(t) => t.to_string(),
        None => text,
    };
    match script::parse(&text) {
        Ok(stmts) => Ok(Script { text, name, stmts }),
        Err(e) => {
            show_error(&text, &name, &e);
            Err(ExitCode::from(2))
        }
    }
}

/// Whether `a` and `b` name one existing file (by any path: on Unix the same device and
/// inode, so hard links too; elsewhere the same canonical path).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

fn run(script_path: Option<&Path>, os: bool, svg_path: Option<&Path>, trace: Option<&Path>) -> ExitCode {
    // The script is read and parsed before anything is made: one that cannot run leaves
    // no trace file behind.
    let script = match script_path.map(load_script).transpose() {
        Ok(s) => s,
        Err(code) => return code,
    };
    // An output file that is the script itself would destroy it (--svg writes, --trace
    // appends): refused before anything runs.
    if let Some(script_path) = script_path.filter(|p| *p != Path::new("-")) {
        for (flag, out) in [("--svg", svg_path), ("--trace", trace)] {
            if out.is_some_and(|out| same_file(script_path, out)) {
                errln!("error: {flag} {} is the script itself: it would be overwritten", script_path.display());
                return ExitCode::from(2);
            }
        }
    }
    let (space, kind): (Box<dyn VirtualSpace>, &'static str) = if os {
        match os_space() {
            Ok(s) => (s, "this Linux process"),
            Err(e) => {
                errln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        (Box::new(SimSpace::simulated()), "simulated")
    };
    let mut session = script::Session::new(space, kind, Box::new(out::Stdout));
    let trace_failure: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
    if let Some(t) = trace {
        match std::fs::OpenOptions::new().create(true).append(true).open(t) {
            Ok(f) => {
                let sink = FailureKept { inner: f, failure: trace_failure.clone() };
                session.set_trace(virtmem::trace::TraceWriter::to_writer(Box::new(sink)))
            }
            Err(e) => {
                errln!("error: cannot open trace file {}: {e}", t.display());
                return ExitCode::from(2);
            }
        }
    }
    let interactive = script_path.is_none();
    let status = if let Some(Script { text, name, stmts }) = &script {
        let mut status = 0;
        for s in stmts {
            let r = session.exec(s);
            // Each failed expect also goes to stderr, named as a compiler names a line.
            for (line, what) in session.take_misses() {
                errln!("{name}:{line}: {what}");
            }
            if let Err(e) = r {
                show_error(text, name, &e);
                status = 2;
                break;
            }
        }
        status
    } else {
        prompt(&mut session);
        0
    };
    if let Some(p) = svg_path {
        let space = session.main_space();
        let st = space.stats();
        let notes = vec![format!(
            "reserved {} in {} reservation(s), committed {}, largest free block {}",
            names::human(st.reserved as u64),
            st.reservations,
            names::human(st.committed as u64),
            names::human(st.largest_free as u64)
        )];
        let title = match script_path {
            Some(s) => format!("virtmem run {} ({kind} address space)", s.display()),
            None => format!("virtmem interactive session ({kind} address space)"),
        };
        if let Err(e) = write_file(p, &svg::render(&space.regions(), &title, &notes)) {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let failure = trace_failure.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let (Some(t), Some(e)) = (trace, failure) {
        // The trace writer stops at its first failed line: what the file holds is not the run.
        errln!("error: cannot write trace file {}: {e} (the trace is incomplete)", t.display());
        return ExitCode::from(2);
    }
    if status == 0 && session.failed_expectations > 0 {
        if !interactive {
            errln!("{} expectation(s) failed", session.failed_expectations);
        }
        return ExitCode::from(1);
    }
    ExitCode::from(status)
}

/// A sink that keeps its first write error where the caller can see it (the trace writer
/// only stops writing).
struct FailureKept<W> {
    inner: W,
    failure: Arc<Mutex<Option<std::io::Error>>>,
}

impl<W: Write> FailureKept<W> {
    fn keep<T>(&self, r: std::io::Result<T>) -> std::io::Result<T> {
        // (An interrupted write is retried by write_all, not a failure.)
        if let Some(e) = r.as_ref().err().filter(|e| e.kind() != std::io::ErrorKind::Interrupted) {
            let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        }
        r
    }
}

impl<W: Write> Write for FailureKept<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.keep(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.keep(r)
    }
}

fn position_of(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, col)
}

fn prompt(session: &mut script::Session) {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    if tty {
        outln!("virtmem interactive: Win32 memory calls on a fresh address space. `help` lists the commands, `quit` leaves.");
    }
    let mut compiler = script::Compiler::default();
    let mut lines = stdin.lock();
    let mut n = 0;
    loop {
        if tty {
            out!("virtmem> ");
            let _ = out::Stdout.flush();
        }
        let mut buf = Vec::new();
        let too_long = match virtmem::trace::read_line_capped(&mut lines, &mut buf) {
            Ok(None) | Err(_) => break,
            Ok(Some((_, too_long))) => too_long,
        };
        n += 1;
        if too_long {
            // Not a statement anyone typed: skipped without being kept (an endless line,
            // `virtmem run < /dev/zero`, would otherwise take all memory).
            errln!(
                "error: <input>:{n}: a line may be at most {} KiB; this one is skipped",
                virtmem::trace::MAX_LINE >> 10
            );
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches(['\n', '\r']);
        let text = if n == 1 { text.strip_prefix('\u{FEFF}').unwrap_or(text) } else { text };
        // The prompt's own words, which may be followed by a comment like any line.
        let word = text.split('#').next().unwrap_or_default().trim();
        match word {
            "quit" | "exit" | "q" => break,
            "help" | "?" => {
                outln!("{}", HELP);
                continue;
            }
            _ => {}
        }
        match compiler.line(text, n) {
            Ok(Some(stmt)) => {
                let r = session.exec(&stmt);
                // The prompt shows a failed expect where it happened (`!!` on stdout).
                session.take_misses();
                if let Err(e) = r {
                    show_error_at(Some(text), "<input>", &e);
                    // The line declared its variable when it was parsed; a variable
                    // that never received a value is unknown, not 0.
                    if let Some(name) = stmt.assigned().filter(|n| !session.has_var(n)) {
                        compiler.forget(name);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => show_error_at(Some(text), "<input>", &e),
        }
    }
}

const HELP: &str = "\
commands (arguments are separated by commas; see docs/script.md):
  [v =] alloc ADDRESS, SIZE, TYPE, PROTECT     VirtualAlloc       e.g. p = alloc 0, 1T, reserve, noaccess
  [v =] free ADDRESS, SIZE, decommit|release   VirtualFree
  [v =] query ADDRESS                          VirtualQuery
  [v =] protect ADDRESS, SIZE, PROTECT         VirtualProtect     e.g. protect p, 4K, readonly|guard
  [v =] read ADDRESS, LENGTH                   a checked load     write ADDRESS, \"text\", 0x41 ...
  fill ADDRESS, LENGTH, BYTE   exec ADDRESS [, LENGTH]   reset ADDRESS, SIZE   reset_undo ADDRESS, SIZE
  [v =] getwritewatch BASE, SIZE [, reset [, MAX]]   resetwritewatch BASE, SIZE   lock/unlock ADDRESS, SIZE
  map   stats   sysinfo   echo \"text\", VALUE   expect ok|ERROR_NAME|CODE   commitlimit SIZE|none
  process N|null|off   (Ex calls on process N; 0 = this process)   exit N
numbers: 4096, 0x1000, 4K, 64KiB, 1T; + - * | and parentheses; NULL PAGE GRANULE SIZE_MAX";
