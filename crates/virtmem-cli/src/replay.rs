//! `virtmem replay`: replay a trace (virtmem's own format, or Wine's `+virtual` log)
//! against a simulated address space; report throughput, peaks, fragmentation and every
//! call whose result differs from the recorded one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use virtmem::backend::{Access, Backend, ForeignKind};
use virtmem::trace::{self, Call, Line, Out, Record};
use virtmem::win32::{self, MEMORY_BASIC_INFORMATION};
use virtmem::{AccessKind, AllocationType, MemState, Protection, ResetPolicy, SimConfig, SimSpace, VirtualSpace};

use crate::names::{error_text, human, FlagKind};
use crate::views::{ViewSpace, Views};
use crate::wine;
use crate::Format;

/// Events above which a progress bar is shown (on a terminal).
const PROGRESS_MIN: usize = 20_000;

/// What a replay found.
pub(crate) struct Report {
    ops: u64,
    elapsed: Duration,
    peak_reserved: usize,
    peak_committed: usize,
    sessions: usize,
    diffs: Vec<String>,
    diff_count: usize,
    max_diffs: usize,
    notes: Vec<String>,
    /// Lines of a virtmem trace that could not be read (malformed records, headers), and
    /// the first of them: skipped with a note, and a failure under `--strict`.
    unreadable: usize,
    first_unreadable: Option<usize>,
    /// Records read but not replayed for naming more than [`MAX_PROCESSES`] live
    /// processes: noted, and a failure under `--strict`.
    beyond_limit: usize,
}

impl Report {
    pub(crate) fn new(max_diffs: usize) -> Report {
        Report {
            ops: 0,
            elapsed: Duration::ZERO,
            peak_reserved: 0,
            peak_committed: 0,
            sessions: 0,
            diffs: Vec::new(),
            diff_count: 0,
            max_diffs,
            notes: Vec::new(),
            unreadable: 0,
            first_unreadable: None,
            beyond_limit: 0,
        }
    }

    /// The notes made so far.
    #[cfg(test)]
    pub(crate) fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Count line `line` as one that could not be read.
    fn unreadable(&mut self, line: usize) {
        self.unreadable += 1;
        self.first_unreadable = Some(self.first_unreadable.map_or(line, |f| f.min(line)));
    }

    fn diff(&mut self, text: String) {
        self.diff_count += 1;
        if self.diffs.len() < self.max_diffs {
            self.diffs.push(text);
        }
    }

    fn sample(&mut self, space: &dyn VirtualSpace) {
        self.peak_reserved = self.peak_reserved.max(space.reserved_bytes());
        self.peak_committed = self.peak_committed.max(space.committed_bytes());
    }
}

/// Trace files from this size up show progress while they are read and parsed (on a
/// terminal).
const PARSE_PROGRESS_MIN: u64 = 1 << 20;

/// A bar counting bytes, `verb` in front, for a file of `total` bytes; hidden below
/// [`PARSE_PROGRESS_MIN`]. Like every bar here it draws on stderr only when stderr is a
/// terminal.
fn bytes_progress(total: u64, verb: &str) -> ProgressBar {
    if total < PARSE_PROGRESS_MIN {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(verb.to_string());
    pb
}

/// Lines of a trace whose first ones decide whether it is a Wine log (as many as
/// `wine::looks_like_wine` reads), read up to [`DETECT_MAX`] bytes.
const DETECT_LINES: usize = 200;

/// The most bytes read from the start of a trace to detect its format.
const DETECT_MAX: usize = 1 << 20;

/// Read until `input` ends or `out` holds [`DETECT_LINES`] lines or [`DETECT_MAX`] bytes.
fn read_prefix(input: &mut dyn Read, out: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 1 << 13];
    let mut lines = 0;
    while lines < DETECT_LINES && out.len() < DETECT_MAX {
        let n = match input.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        lines += chunk[..n].iter().filter(|&&b| b == b'\n').count();
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// A bar that is cleared from the terminal however its scope is left.
struct Cleared(ProgressBar);

impl Drop for Cleared {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A reader that moves a bar to how many bytes were read through it.
struct Tracked<'a, R> {
    input: R,
    pos: u64,
    shown: u64,
    pb: &'a ProgressBar,
}

impl<'a, R: Read> Tracked<'a, R> {
    fn new(input: R, pb: &'a ProgressBar) -> Tracked<'a, R> {
        Tracked { input, pos: 0, shown: 0, pb }
    }
}

impl<R: Read> Read for Tracked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        self.pos += n as u64;
        if self.pos - self.shown >= 1 << 18 || (n == 0 && !buf.is_empty()) {
            self.pb.set_position(self.pos);
            self.shown = self.pos;
        }
        Ok(n)
    }
}

/// A reader that copies every byte read through it to `copy` (flushed when `input` ends).
struct Tee<R, W: Write> {
    input: R,
    copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        let copied = if n == 0 { self.copy.flush() } else { self.copy.write_all(&buf[..n]) };
        copied.map_err(|e| io::Error::new(e.kind(), format!("copying it to a temporary file: {e}")))?;
        Ok(n)
    }
}

/// Standard input as read so far, copied to a temporary file (in `std::env::temp_dir()`,
/// removed when done: on Unix at once, the open file staying readable) for the replay's
/// second reading.
struct Spool {
    file: File,
    path: PathBuf,
}

impl Spool {
    fn new() -> io::Result<Spool> {
        let dir = std::env::temp_dir();
        let mut n = 0u32;
        loop {
            let path = dir.join(format!("virtmem-replay-{}-{n}.vmt", std::process::id()));
            match std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
                Ok(file) => {
                    #[cfg(unix)]
                    let _ = std::fs::remove_file(&path);
                    return Ok(Spool { file, path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot make a temporary file in {}: {e}", dir.display()),
                    ))
                }
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        #[cfg(not(unix))]
        let _ = std::fs::remove_file(&self.path);
        #[cfg(unix)]
        let _ = &self.path;
    }
}

/// Where a trace is read from. A virtmem trace is read twice (see [`replay_source`]): a
/// file from its start again, standard input from the copy made while it was read first.
enum Source<'a> {
    /// A trace in memory (the property tests' and unit tests' input).
    #[cfg_attr(not(test), allow(dead_code))]
    Text(&'a [u8]),
    /// A file.
    File(File),
    /// Standard input: what format detection read of it, and its copy.
    Stdin { prefix: Vec<u8>, spool: Option<Spool> },
}

impl Source<'_> {
    /// Its size when known in advance (0 otherwise: no bar).
    fn len(&self) -> u64 {
        match self {
            Source::Text(t) => t.len() as u64,
            Source::File(f) => f.metadata().map(|m| m.len()).unwrap_or(0),
            Source::Stdin { .. } => 0,
        }
    }

    /// Whether a leading byte-order mark is dropped (not for a trace in memory, which
    /// its caller has made text).
    fn strips_bom(&self) -> bool {
        !matches!(self, Source::Text(_))
    }

    /// The start of the trace, for format detection (a bounded prefix).
    fn prefix(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            Source::Text(t) => read_prefix(&mut &t[..], &mut out)?,
            Source::File(f) => {
                f.seek(SeekFrom::Start(0))?;
                read_prefix(&mut &*f, &mut out)?;
            }
            Source::Stdin { prefix, .. } => {
                read_prefix(&mut io::stdin().lock(), prefix)?;
                out.clone_from(prefix);
            }
        }
        Ok(out)
    }

    /// The whole trace from its start, for a single reading (a Wine log's), with the bytes
    /// read shown on `pb` for a file.
    fn once<'p>(&'p mut self, pb: &'p ProgressBar) -> io::Result<Box<dyn Read + 'p>> {
        Ok(match self {
            Source::Text(t) => Box::new(*t),
            Source::File(f) => {
                f.seek(SeekFrom::Start(0))?;
                Box::new(Tracked::new(&*f, pb))
            }
            Source::Stdin { prefix, .. } => Box::new(io::Cursor::new(std::mem::take(prefix)).chain(io::stdin().lock())),
        })
    }

    /// The whole trace from its start, for the first reading.
    fn first(&mut self) -> io::Result<Box<dyn Read + '_>> {
        Ok(match self {
            Source::Text(t) => Box::new(*t),
            Source::File(f) => {
                f.seek(SeekFrom::Start(0))?;
                Box::new(&*f)
            }
            Source::Stdin { prefix, spool } => {
                let copy = spool.insert(Spool::new()?);
                let input = io::Cursor::new(std::mem::take(prefix)).chain(io::stdin().lock());
                Box::new(Tee { input, copy: io::BufWriter::with_capacity(1 << 16, &copy.file) })
            }
        })
    }

    /// The first `len` bytes of the trace again, for the second reading.
    fn again(&mut self, len: u64) -> io::Result<Box<dyn Read + '_>> {
        let file = match self {
            Source::Text(t) => return Ok(Box::new(&t[..usize::try_from(len).unwrap_or(t.len()).min(t.len())])),
            Source::File(f) => &*f,
            Source::Stdin { spool, .. } => match spool {
                Some(s) => &s.file,
                None => return Ok(Box::new(io::empty())),
            },
        };
        let mut file = file;
        file.seek(SeekFrom::Start(0))?;
        Ok(Box::new(file.take(len)))
    }
}
fn progress(len: usize) -> ProgressBar {
    if len < PROGRESS_MIN {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{spinner} replaying [{bar:40}] {pos}/{len} calls ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// Entry point of `virtmem replay`.
pub fn main(path: &Path, format: Format, svg: Option<&Path>, strict: bool, max_diffs: usize) -> ExitCode {
    // The trace's name in messages.
    let name = if path == Path::new("-") { "<stdin>".to_string() } else { path.display().to_string() };
    let cannot_read = |e: io::Error| {
        errln!("error: cannot read {name}: {e}");
        ExitCode::from(2)
    };
    let mut source = if path == Path::new("-") {
        Source::Stdin { prefix: Vec::new(), spool: None }
    } else {
        match File::open(path) {
            Ok(f) => Source::File(f),
            Err(e) => return cannot_read(e),
        }
    };
    // The format is told by the first lines; a leading byte-order mark (Windows editors
    // write one) is not part of the first line, as for scripts.
    let format = match format {
        Format::Auto => {
            let prefix = match source.prefix() {
                Ok(p) => p,
                Err(e) => return cannot_read(e),
            };
            let text = String::from_utf8_lossy(&prefix);
            if wine::looks_like_wine(text.strip_prefix('\u{FEFF}').unwrap_or(&text)) {
                Format::Wine
            } else {
                Format::Virtmem
            }
        }
        f => f,
    };
    let mut report = Report::new(max_diffs);
    let result = match format {
        // A Wine log is read once, each event replayed as it is parsed.
        Format::Wine => {
            let pb = Cleared(bytes_progress(source.len(), "replaying"));
            let replayed = match source.once(&pb.0) {
                Ok(input) => replay_wine_from(io::BufReader::with_capacity(1 << 16, input), &mut report),
                Err(e) => Err(Stop::Io(e)),
            };
            replayed
        }
        _ => replay_source(&mut source, &mut report),
    };
    drop(source);
    let space = match result {
        Ok(s) => s,
        Err(Stop::Io(e)) => return cannot_read(e),
        Err(Stop::Bad(e)) => {
            errln!("error: {name}: {e}");
            return ExitCode::from(2);
        }
    };
    let summary = summarize(&report, &*space, format);
    out!("{summary}");
    if let Some(p) = svg {
        let notes: Vec<String> = summary.lines().take(4).map(str::to_string).collect();
        let title = format!("virtmem replay {name}");
        if let Err(e) = crate::write_file(p, &crate::svg::render(&space.regions(), &title, &notes)) {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    if strict && report.unreadable > 0 {
        // A strict pass means every recorded call was replayed and matched; a trace it
        // could not wholly read is bad input (2), whatever the calls it did read gave.
        errln!(
            "error: {}: --strict: {} line(s) could not be read and were not replayed (the first: line {})",
            name,
            report.unreadable,
            report.first_unreadable.unwrap_or(0)
        );
        return ExitCode::from(2);
    }
    if strict && report.beyond_limit > 0 {
        errln!(
            "error: {}: --strict: {} record(s) naming more than {MAX_PROCESSES} processes in one session were not replayed",
            name,
            report.beyond_limit
        );
        return ExitCode::from(2);
    }
    if strict && report.diff_count > 0 {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn summarize(r: &Report, space: &dyn VirtualSpace, format: Format) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let secs = r.elapsed.as_secs_f64();
    let rate = if secs > 0.0 { r.ops as f64 / secs } else { 0.0 };
    let fmt_name = if format == Format::Wine { "Wine +virtual log" } else { "virtmem trace" };
    let _ = writeln!(
        s,
        "replayed {} calls ({fmt_name}, {} session(s)) in {:.3} ms: {:.0} ops/s",
        r.ops,
        r.sessions,
        secs * 1e3,
        rate
    );
    let _ = writeln!(
        s,
        "peak reserved {}, peak committed {}",
        human(r.peak_reserved as u64),
        human(r.peak_committed as u64)
    );
    let st = space.stats();
    let min = space.system_info().minimum_application_address;
    let regions = space.regions();
    let gaps: Vec<u128> = regions
        .iter()
        .filter(|m| m.state == MemState::Free && m.base_address + m.region_size > min)
        .map(|m| (m.base_address + m.region_size - m.base_address.max(min)) as u128)
        .collect();
    let largest = gaps.iter().copied().max().unwrap_or(0);
    let frag = crate::map::fragmentation(&regions);
    let _ = writeln!(
        s,
        "final: reserved {} in {} reservation(s), committed {}, largest free block {}, {} free gap(s), fragmentation {frag:.2}% (of the free space between the lowest and the highest reservation, the share outside its largest gap)",
        human(st.reserved as u64),
        st.reservations,
        human(st.committed as u64),
        human(largest as u64),
        gaps.len()
    );
    let _ = writeln!(s, "calls whose result differs from the recorded one: {}", r.diff_count);
    // Diffs and notes quote the trace: its control characters are shown escaped.
    for d in &r.diffs {
        let _ = writeln!(s, "  {}", crate::names::escaped(d));
    }
    if r.diff_count > r.diffs.len() {
        let _ = writeln!(s, "  ... and {} more (--max-diffs)", r.diff_count - r.diffs.len());
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {}", crate::names::escaped(n));
    }
    s
}

// ----- Own format ------------------------------------------------------------------------

fn fresh() -> BTreeMap<u32, Arc<SimSpace>> {
    let mut m: BTreeMap<u32, Arc<SimSpace>> = BTreeMap::new();
    m.insert(0, Arc::new(SimSpace::simulated()));
    m
}

/// The most processes (the current one included) a session of a trace may name: records
/// naming further ones are skipped with a note, so memory stays bounded.
const MAX_PROCESSES: usize = 1024;

/// The replayed process numbered `pid`, made empty (as `VirtmemCreateProcess` makes one)
/// when no record named it before; `None` when that would pass [`MAX_PROCESSES`] (each
/// simulated process costs memory, about 2 KB empty and 11 KB with a reservation and a
/// written page: a session naming more is not replayed past the limit).
fn process_or_new(procs: &mut BTreeMap<u32, Arc<SimSpace>>, pid: u32) -> Option<Arc<SimSpace>> {
    if let Some(s) = procs.get(&pid) {
        return Some(s.clone());
    }
    if procs.len() >= MAX_PROCESSES {
        return None;
    }
    let s = Arc::new(SimSpace::simulated());
    procs.insert(pid, s.clone());
    Some(s)
}

/// The note for a session whose header (on line `header`) could not be read.
fn lost_note(header: usize, records: usize) -> String {
    format!("skipped {records} record(s) of the session whose header on line {header} could not be read (up to the next header)")
}

/// Why reading a virtmem trace stopped short.
pub(crate) enum Stop {
    /// The trace cannot be replayed: what is wrong, naming the line.
    Bad(String),
    /// Reading it failed.
    Io(io::Error),
}

/// A trace's lines as `trace::read` reads them, each decoded as `String::from_utf8_lossy`
/// decodes the whole trace (a line break is never part of a UTF-8 sequence, so line by
/// line gives the same text), and, when `strip_bom` is set, without a leading byte-order
/// mark (the line numbers stay the same). An I/O error ends the reading.
struct Lines<R> {
    input: R,
    strip_bom: bool,
    line_no: usize,
    seen_header: bool,
    raw: Vec<u8>,
    text: String,
    /// The bytes read so far.
    bytes: u64,
}

impl<R: BufRead> Lines<R> {
    fn new(input: R, strip_bom: bool) -> Lines<R> {
        Lines { input, strip_bom, line_no: 0, seen_header: false, raw: Vec::new(), text: String::new(), bytes: 0 }
    }

    /// Whether the line read last starts with the header's magic word.
    fn is_header_line(&self) -> bool {
        self.text.split_whitespace().next() == Some(trace::MAGIC)
    }

    fn next(&mut self) -> Option<Result<(usize, Line), trace::ReadError>> {
        loop {
            self.line_no += 1;
            match trace::read_line_capped(&mut self.input, &mut self.raw) {
                Ok(None) => return None,
                Ok(Some((n, too_long))) => {
                    self.bytes += n as u64;
                    if too_long {
                        let message = format!("a line longer than {} KiB", trace::MAX_LINE >> 10);
                        let error = trace::ParseError { column: 1, message };
                        return Some(Err(trace::ReadError::Parse { line: self.line_no, error }));
                    }
                }
                Err(error) => return Some(Err(trace::ReadError::Io { line: self.line_no, error })),
            }
            let decoded = String::from_utf8_lossy(&self.raw);
            let decoded = match decoded.strip_prefix('\u{FEFF}') {
                Some(rest) if self.strip_bom && self.line_no == 1 => rest,
                _ => &decoded,
            };
            self.text.clear();
            self.text.push_str(decoded.strip_suffix('\n').unwrap_or(decoded));
            match trace::parse_line(&self.text) {
                Ok(None) => continue,
                Ok(Some(l)) => {
                    if matches!(l, Line::Header(_)) {
                        self.seen_header = true;
                    } else if !self.seen_header {
                        return Some(Err(trace::ReadError::NoHeader { line: self.line_no }));
                    }
                    return Some(Ok((self.line_no, l)));
                }
                Err(error) => return Some(Err(trace::ReadError::Parse { line: self.line_no, error })),
            }
        }
    }
}

/// The lines of a trace that are replayed, read from [`Lines`]: a line that cannot be
/// read is noted (the first five) and counted as unreadable in the report; after a
/// header that cannot be read, the records of its session do not belong to the previous
/// one: they are skipped up to the next good header.
struct Kept<R> {
    lines: Lines<R>,
    lost_session: Option<(usize, usize)>,
    /// Lines yielded so far.
    kept: usize,
    /// Malformed lines so far.
    bad: usize,
}

impl<R: BufRead> Kept<R> {
    fn new(lines: Lines<R>) -> Kept<R> {
        Kept { lines, lost_session: None, kept: 0, bad: 0 }
    }

    /// The next line to replay, `None` at the end of the trace.
    fn next(&mut self, report: &mut Report) -> Result<Option<(usize, Line)>, Stop> {
        loop {
            let Some(item) = self.lines.next() else {
                if let Some((hline, n)) = self.lost_session.take() {
                    report.notes.push(lost_note(hline, n));
                }
                return Ok(None);
            };
            match item {
                Ok(l) => {
                    if matches!(l.1, Line::Header(_)) {
                        if let Some((hline, n)) = self.lost_session.take() {
                            report.notes.push(lost_note(hline, n));
                        }
                    } else if let Some((_, n)) = self.lost_session.as_mut() {
                        *n += 1;
                        continue;
                    }
                    self.kept += 1;
                    return Ok(Some(l));
                }
                Err(trace::ReadError::Io { error, .. }) => return Err(Stop::Io(error)),
                Err(e @ trace::ReadError::NoHeader { .. }) => return Err(Stop::Bad(e.to_string())),
                Err(trace::ReadError::Parse { line, error }) if self.lines.is_header_line() => {
                    if self.kept == 0 {
                        // The first header: its own error (e.g. another version) says what is wrong.
                        return Err(Stop::Bad(format!("line {line}, {error}")));
                    }
                    if let Some((hline, n)) = self.lost_session.replace((line, 0)) {
                        report.notes.push(lost_note(hline, n));
                    }
                    report.notes.push(format!("skipped line {line}, {error}"));
                    report.unreadable(line);
                }
                Err(trace::ReadError::Parse { line, .. }) if self.kept == 0 => {
                    return Err(Stop::Bad(format!(
                        "line {line}, column 1: neither a virtmem trace (whose first line is `virtmem-trace 1`) nor a Wine +virtual log"
                    )))
                }
                Err(e @ trace::ReadError::Parse { .. }) => {
                    self.bad += 1;
                    if let trace::ReadError::Parse { line, .. } = e {
                        report.unreadable(line);
                    }
                    if self.bad <= 5 {
                        report.notes.push(format!("skipped {e}"));
                    }
                }
            }
        }
    }
}

/// The processes each replayed line names for the last time in its session, gathered a
/// line at a time: as (index among the replayed lines, process number) in ascending order
/// of index; process 0 (the main space) is never listed. A record names its process, a
/// `VirtmemSnapshotProcess` record also the process it makes, a `VirtmemRestoreProcess`
/// record the process it copies, and a `VirtmemCreateProcessEx` record (naming no
/// process) the process it makes. It holds one entry per process a session names.
#[derive(Default)]
struct LastUses {
    session: std::collections::HashMap<u32, usize>,
    found: Vec<(usize, u32)>,
}

impl LastUses {
    /// Line `i` (counting the replayed lines from 0) is `item`.
    fn see(&mut self, i: usize, item: &Line) {
        match item {
            // A header ends the session before: its numbers are new.
            Line::Header(_) => self.end_session(),
            Line::Record(rec) => {
                let made = match rec.call {
                    Call::SnapshotProcess => u32::try_from(rec.result).ok(),
                    Call::RestoreProcess { snapshot } => Some(snapshot),
                    Call::CreateProcess { .. } => u32::try_from(rec.result).ok(),
                    _ => None,
                };
                for pid in std::iter::once(rec.process.unwrap_or(0)).chain(made) {
                    if pid != 0 {
                        self.session.insert(pid, i);
                    }
                }
            }
        }
    }

    fn end_session(&mut self) {
        self.found.extend(self.session.drain().map(|(pid, i)| (i, pid)));
    }

    fn finish(mut self) -> Vec<(usize, u32)> {
        self.end_session();
        self.found.sort_unstable();
        self.found
    }
}

/// Replay `text`, a trace in virtmem's own format.
#[cfg(test)]
pub(crate) fn replay_own(text: &str, report: &mut Report) -> Result<Arc<dyn VirtualSpace>, String> {
    replay_source(&mut Source::Text(text.as_bytes()), report).map_err(|e| match e {
        Stop::Bad(e) => e,
        Stop::Io(e) => e.to_string(),
    })
}

/// Replayed lines read ahead of their replay, so that the time measured is the replay's,
/// not the parser's.
const BATCH: usize = 4096;

/// Replay a trace in virtmem's own format, streaming: it is read twice, holding no more
/// of it than [`BATCH`] lines. The first reading notes the lines it cannot read and finds
/// where each process is named for the last time (so that it can be dropped then: see
/// [`MAX_PROCESSES`]); the second replays the lines the first kept.
fn replay_source(source: &mut Source<'_>, report: &mut Report) -> Result<Arc<dyn VirtualSpace>, Stop> {
    let strip_bom = source.strips_bom();
    let parsing = Cleared(bytes_progress(source.len(), "parsing"));
    let (kept, bad, bytes, last_uses) = {
        let input = io::BufReader::with_capacity(1 << 16, Tracked::new(source.first().map_err(Stop::Io)?, &parsing.0));
        let mut first = Kept::new(Lines::new(input, strip_bom));
        let mut uses = LastUses::default();
        while let Some((_, item)) = first.next(report)? {
            uses.see(first.kept - 1, &item);
        }
        (first.kept, first.bad, first.lines.bytes, uses.finish())
    };
    drop(parsing);
    if kept == 0 {
        return Err(Stop::Bad("no trace records (the first line must be `virtmem-trace 1`)".into()));
    }
    if bad > 5 {
        report.notes.push(format!("skipped {bad} malformed lines in all"));
    }
    // The second reading: what it skips was noted by the first.
    let mut again =
        Kept::new(Lines::new(io::BufReader::with_capacity(1 << 16, source.again(bytes).map_err(Stop::Io)?), strip_bom));
    let mut scratch = Report::new(0);
    let changed = || Stop::Bad("the trace changed while it was replayed".into());
    let mut batch: Vec<(usize, Line)> = Vec::with_capacity(BATCH);
    let mut i = 0usize;
    let mut next_last_use = 0;
    let mut done_with: Vec<u32> = Vec::new();
    let mut procs = fresh();
    let mut last_main: Arc<SimSpace> = procs[&0].clone();
    let mut beyond_limit = 0usize;
    let mut discarded_undos = 0usize;
    let pb = progress(kept);
    loop {
        batch.clear();
        // The second reading's notes repeat the first's: dropped as they come.
        scratch.notes.clear();
        while batch.len() < BATCH {
            match again.next(&mut scratch)? {
                Some(l) => batch.push(l),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        if i + batch.len() > kept {
            return Err(changed());
        }
        let start = Instant::now();
        for (line, item) in &batch {
            let here = i;
            i += 1;
            if here % 4096 == 0 {
                pb.set_position(here as u64);
            }
            // The processes the record before named for the last time in their session go
            // (a closed snapshot is never named again; closes themselves are not recorded),
            // so that the limit counts the live ones and their memory is freed.
            for pid in done_with.drain(..) {
                procs.remove(&pid);
            }
            while let Some(&(_, pid)) = last_uses.get(next_last_use).filter(|&&(at, _)| at == here) {
                done_with.push(pid);
                next_last_use += 1;
            }
            match item {
                Line::Header(_) => {
                    report.sessions += 1;
                    if report.sessions > 1 {
                        procs = fresh();
                    }
                    last_main = procs[&0].clone();
                }
                // A copy of a simulated process (libvirtmem's `VirtmemSnapshotProcess`): the
                // new process's number is the recorded result (0: the copy failed, nothing
                // was made). The copy is made of the process as replayed so far.
                Line::Record(rec) if rec.call == Call::SnapshotProcess => {
                    report.ops += 1;
                    let Ok(new) = u32::try_from(rec.result) else {
                        report.diff(format!(
                            "line {line}: VirtmemSnapshotProcess: the result {:#x} is no process number",
                            rec.result
                        ));
                        continue;
                    };
                    if new == 0 {
                        continue;
                    }
                    if !procs.contains_key(&new) && procs.len() >= MAX_PROCESSES {
                        beyond_limit += 1;
                        continue;
                    }
                    let copy = match procs.get(&rec.process.unwrap_or(0)) {
                        Some(from) => from.snapshot(),
                        None => SimSpace::simulated(),
                    };
                    procs.insert(new, Arc::new(copy));
                }
                // A simulated process with its own configuration (libvirtmem's
                // `VirtmemCreateProcessEx`): the new process's number is the recorded result
                // (0: refused, nothing made). The configuration is checked again, so that a
                // record whose outcome it contradicts is a difference.
                Line::Record(rec) if matches!(rec.call, Call::CreateProcess { .. }) => {
                    report.ops += 1;
                    let Call::CreateProcess { min_address, max_address, large_page_size, reset_policy } = rec.call
                    else {
                        continue;
                    };
                    let config = SimConfig::from_fields(min_address, max_address, large_page_size, reset_policy);
                    let args = render_args(&rec.call);
                    let new = match (u32::try_from(rec.result), config) {
                        (Ok(0), Ok(_)) if rec.last_error == 87 => {
                            report.diff(format!(
                                "line {line}: VirtmemCreateProcessEx({args}): recorded err=87, replayed a valid configuration"
                            ));
                            continue;
                        }
                        (Ok(0), _) => continue,
                        (Ok(new), Ok(config)) => (new, config),
                        (Ok(_), Err(e)) => {
                            report.diff(format!(
                                "line {line}: VirtmemCreateProcessEx({args}): recorded success, replayed {e}"
                            ));
                            continue;
                        }
                        (Err(_), _) => {
                            report.diff(format!(
                                "line {line}: VirtmemCreateProcessEx: the result {:#x} is no process number",
                                rec.result
                            ));
                            continue;
                        }
                    };
                    if !procs.contains_key(&new.0) && procs.len() >= MAX_PROCESSES {
                        beyond_limit += 1;
                        continue;
                    }
                    procs.insert(new.0, Arc::new(SimSpace::simulated_with(new.1)));
                }
                // A restore of a simulated process from another (libvirtmem's
                // `VirtmemRestoreProcess`), made of the processes as replayed so far; a
                // recorded failure changed nothing. (A process no record named before is an
                // empty one, as `VirtmemCreateProcess` made it.)
                Line::Record(rec) if matches!(rec.call, Call::RestoreProcess { .. }) => {
                    report.ops += 1;
                    let Call::RestoreProcess { snapshot } = rec.call else { continue };
                    if rec.result == 0 {
                        continue;
                    }
                    let Some(to) = process_or_new(&mut procs, rec.process.unwrap_or(0)) else {
                        beyond_limit += 1;
                        continue;
                    };
                    let restored = match procs.get(&snapshot) {
                        Some(from) => to.restore_from(from),
                        None => to.restore_from(&SimSpace::simulated()),
                    };
                    if let Err(e) = restored {
                        report.diff(format!("line {line}: VirtmemRestoreProcess: recorded success, replayed {e}"));
                    }
                }
                Line::Record(rec) => {
                    let Some(space) = process_or_new(&mut procs, rec.process.unwrap_or(0)) else {
                        beyond_limit += 1;
                        continue;
                    };
                    report.ops += 1;
                    if rec.process.is_some() && matches!(rec.last_error, 5 | 6) {
                        // Handle errors depend on process state a trace does not record.
                        continue;
                    }
                    if let Some(d) = replay_record(&*space, rec) {
                        // A trace holds no page contents: whether a reset in a process that
                        // discards on reset lost data is not known here (every page written
                        // replays as zeros, which a reset never loses).
                        let unknowable = rec.last_error == 170
                            && space.backend().config().reset_policy == ResetPolicy::Discard
                            && matches!(rec.call, Call::Alloc { alloc_type, .. } if alloc_type & 0x100_0000 != 0);
                        if unknowable {
                            discarded_undos += 1;
                        } else {
                            report.diff(format!("line {line}: {d}"));
                        }
                    }
                    report.sample(&*space);
                }
            }
        }
        report.elapsed += start.elapsed();
    }
    if i != kept {
        return Err(changed());
    }
    pb.finish_and_clear();
    report.beyond_limit = beyond_limit;
    if beyond_limit > 0 {
        report.notes.push(format!(
            "skipped {beyond_limit} record(s) naming more than {MAX_PROCESSES} processes in one session (each is a simulated space)"
        ));
    }
    if discarded_undos > 0 {
        report.notes.push(format!(
            "took {discarded_undos} MEM_RESET_UNDO loss(es) (ERROR_BUSY) in processes that discard on reset as recorded (a trace holds no page contents)"
        ));
    }
    Ok(last_main as Arc<dyn VirtualSpace>)
}

fn outcome(result: u64, err: u32, failed: bool) -> String {
    if failed {
        format!("failed with {}", error_text(err))
    } else {
        format!("returned {result:#x}")
    }
}

/// The regions of `space` overlapping `[address, address + size)` (at most `MAX_UNDO`).
fn regions_in(space: &dyn VirtualSpace, address: usize, size: usize) -> Vec<virtmem::MemoryBasicInformation> {
    const MAX_UNDO: usize = 4096;
    let end = address.saturating_add(size.max(1));
    let mut out = Vec::new();
    let mut at = address;
    while at < end && out.len() < MAX_UNDO {
        let Ok(m) = space.query(at) else { break };
        let next = m.base_address.saturating_add(m.region_size);
        out.push(m);
        if next <= at {
            break;
        }
        at = next;
    }
    out
}

/// A call the recorded program saw fail succeeded in the replay (the environments differ,
/// e.g. in a limit the trace does not hold): undo what it did, so that the one difference
/// does not make later calls differ too. `before` are the regions the call's range had.
fn undo(space: &dyn VirtualSpace, call: &Call, result: u64, before: &[virtmem::MemoryBasicInformation]) {
    match *call {
        Call::Alloc { .. } | Call::Alloc2 { .. } if before.first().map_or(true, |m| m.state == MemState::Free) => {
            // A new reservation: release it.
            let _ = space.free(result as usize, 0, virtmem::FreeType::RELEASE);
        }
        Call::Alloc { .. } | Call::Alloc2 { .. } => {
            // A commit inside a reservation: decommit what was only reserved before.
            for m in before.iter().filter(|m| m.state == MemState::Reserve) {
                let _ = space.free(m.base_address, m.region_size, virtmem::FreeType::DECOMMIT);
            }
        }
        Call::Protect { .. } => {
            for m in before.iter().filter(|m| m.state == MemState::Commit) {
                let _ = space.protect(m.base_address, m.region_size, m.protect);
            }
        }
        _ => {}
    }
}

/// Whether `size` bytes at the recorded caller buffer `buffer` can be addressed at all
/// (libvirtmem's test: not NULL, no wrap past the top of the address space).
fn addressable(buffer: usize, size: usize) -> bool {
    size == 0 || (buffer != 0 && buffer.checked_add(size).is_some())
}

/// libvirtmem's checks of a copy between the recorded caller `buffer` and `size` bytes at
/// `address` (crates/virtmem-capi/src/procmem.rs), moving no bytes: a write looks at the
/// buffer first; a read or fetch asks the engine first, in the order of
/// `win32::check_copy` (the buffer is looked at before a guard page the engine meets is
/// disarmed: a bad buffer leaves it armed). `Err(None)`:
/// the buffer is NULL or wraps past the top (`ERROR_NOACCESS`); `Err(Some(e))`: the engine's.
fn check_copy(
    space: &dyn VirtualSpace,
    address: usize,
    buffer: usize,
    size: usize,
    kind: AccessKind,
) -> Result<(), Option<virtmem::Error>> {
    let buffer_ok = addressable(buffer, size);
    if kind == AccessKind::Write && !buffer_ok {
        return Err(None);
    }
    win32::check_copy(space, address, size, kind, || if buffer_ok { Ok(()) } else { Err(()) }).map_err(
        |r| match r {
            win32::CopyRefusal::Space(e) => Some(e),
            win32::CopyRefusal::Caller(()) => None,
        },
    )?;
    if buffer_ok {
        Ok(())
    } else {
        Err(None)
    }
}

/// Replay one record with the Win32-shaped functions; describe a difference, if any.
fn replay_record(space: &dyn VirtualSpace, rec: &Record) -> Option<String> {
    // What a call recorded as failed may change if it succeeds here (see `undo`).
    let before = match rec.call {
        Call::Alloc { address, size, .. } | Call::Alloc2 { address, size, .. } if rec.result == 0 && address != 0 => {
            regions_in(space, address, size)
        }
        Call::Protect { address, size, .. } if rec.result == 0 => regions_in(space, address, size),
        _ => Vec::new(),
    };
    let diff = replay_call(space, rec);
    if let Some((result, d)) = diff {
        if rec.result == 0 && result != 0 {
            undo(space, &rec.call, result, &before);
        }
        return Some(d);
    }
    None
}

/// libvirtmem's `VirtualAlloc2` (crates/virtmem-capi/src/memory.rs) as recorded: the size,
/// then the flags and the parameters the call read (an entry it could not read, or a NULL
/// array, is `ERROR_NOACCESS` where the record holds fewer than `count`), in the order of
/// `win32::alloc2_parameters`; then the allocation. A reservation that succeeded is placed
/// where the recorded program got it: with address requirements, inside a window narrowed
/// to the recorded address when that address lies in the recorded window at its alignment
/// (otherwise in the recorded window, wherever the replay finds room: a difference);
/// without, at that address as a `VirtualAlloc` reserve at NULL is.
fn replay_alloc2(
    space: &dyn VirtualSpace,
    (address, size, ty, protect): (usize, usize, u32, u32),
    params: Option<&[win32::ExtendedParameter]>,
    count: u32,
    recorded: u64,
) -> Result<usize, virtmem::Error> {
    if size == 0 {
        return Err(virtmem::Error::InvalidParameter);
    }
    let read = params.unwrap_or(&[]);
    let unreadable = (read.len() < count as usize).then_some(Err(virtmem::Error::NoAccess));
    let req = win32::alloc2_parameters(address, ty, read.iter().copied().map(Ok).chain(unreadable))?;
    let at = usize::try_from(recorded).unwrap_or(0);
    let reserving = ty & 0x2000 != 0 || (address == 0 && ty & 0x1000 != 0);
    let (address, ty, req) = match req {
        Some(r) if at != 0 => {
            let claim = size.checked_add(0xFFFF).map(|s| s & !0xFFFF).unwrap_or(0);
            let last = at.checked_add(claim).and_then(|e| e.checked_sub(1));
            let inside = last.is_some_and(|last| {
                at >= r.lowest_starting_address
                    && (r.highest_ending_address == 0 || last <= r.highest_ending_address)
                    && at % r.alignment.max(0x10000) == 0
            });
            match last {
                Some(last) if inside => (
                    address,
                    ty,
                    Some(virtmem::AddressRequirements {
                        lowest_starting_address: at,
                        highest_ending_address: last,
                        alignment: r.alignment,
                    }),
                ),
                _ => (address, ty, Some(r)),
            }
        }
        None if address == 0 && reserving && at != 0 => (at, ty | 0x2000, None),
        other => (address, ty, other),
    };
    win32::alloc2(space, address, size, ty, protect, req)
}

/// Replay one record; on a difference, the replayed result and the description.
fn replay_call(space: &dyn VirtualSpace, rec: &Record) -> Option<(u64, String)> {
    win32::SetLastError(0);
    let name = rec.function_name();
    let (result, failed_rec, failed_now, extra): (u64, bool, bool, Option<String>) = match &rec.call {
        Call::Alloc { address, size, alloc_type, protect } => {
            let reserving = alloc_type & 0x2000 != 0 || (*address == 0 && alloc_type & 0x1000 != 0);
            // Place a reservation where the recorded program got it.
            let (addr, ty) = if *address == 0 && reserving && rec.result != 0 {
                (rec.result as usize, alloc_type | 0x2000)
            } else {
                (*address, *alloc_type)
            };
            let r = win32::VirtualAlloc(space, addr, *size, ty, *protect) as u64;
            (r, rec.result == 0, r == 0, None)
        }
        Call::Free { address, size, free_type } => {
            let r = win32::VirtualFree(space, *address, *size, *free_type) as u64;
            (r, rec.result == 0, r == 0, None)
        }
        Call::Alloc2 { address, size, alloc_type, protect, params, count } => {
            let args = (*address, *size, *alloc_type, *protect);
            let r = replay_alloc2(space, args, params.as_deref(), *count, rec.result).unwrap_or_else(|e| {
                win32::SetLastError(e.code());
                0
            }) as u64;
            (r, rec.result == 0, r == 0, None)
        }
        Call::Query { address, buffer, length } => {
            let mut m = MEMORY_BASIC_INFORMATION::default();
            let r = win32::VirtualQuery(space, *address, (*buffer != 0).then_some(&mut m), *length) as u64;
            let extra = match &rec.out {
                Out::Info(want) if r != 0 && *want != m => {
                    Some(format!("recorded {}, replayed {}", mbi(want), mbi(&m)))
                }
                _ => None,
            };
            (r, rec.result == 0, r == 0, extra)
        }
        Call::Protect { address, size, new_protect, old_protect } => {
            let mut old = 0u32;
            let r = win32::VirtualProtect(space, *address, *size, *new_protect, (*old_protect != 0).then_some(&mut old))
                as u64;
            let extra = match rec.out {
                Out::OldProtect(want) if r != 0 && want != old => Some(format!(
                    "old protection recorded {}, replayed {}",
                    FlagKind::Protect.format(want),
                    FlagKind::Protect.format(old)
                )),
                _ => None,
            };
            (r, rec.result == 0, r == 0, extra)
        }
        Call::GetWriteWatch { flags, base, size, addresses, count, granularity } => {
            // The program's stores are not in the trace: only success and failure compare.
            let mut n = count.unwrap_or(0);
            let mut buf = vec![0usize; n.min(1 << 16)];
            let mut g = 0u32;
            let r = win32::GetWriteWatch(
                space,
                *flags,
                *base,
                *size,
                (*addresses != 0).then_some(&mut buf[..]),
                count.is_some().then_some(&mut n),
                (*granularity != 0).then_some(&mut g),
            ) as u64;
            (r, rec.result != 0, r != 0, None)
        }
        Call::ResetWriteWatch { base, size } => {
            let r = win32::ResetWriteWatch(space, *base, *size) as u64;
            (r, rec.result != 0, r != 0, None)
        }
        Call::Lock { address, size } => {
            let r = win32::VirtualLock(space, *address, *size) as u64;
            (r, rec.result == 0, r == 0, None)
        }
        Call::Unlock { address, size } => {
            let r = win32::VirtualUnlock(space, *address, *size) as u64;
            (r, rec.result == 0, r == 0, None)
        }
        // The copies are replayed as libvirtmem makes them (crates/virtmem-capi/src/procmem.rs)
        // but without moving a byte (see `check_copy`). Nothing is written into the simulated
        // space, so replay holds no copied pages (and write-watched pages are not marked
        // written by a replayed write).
        Call::ReadProcessMemory { address, buffer, size, .. } => {
            let r = check_copy(space, *address, *buffer, *size, AccessKind::Read)
                .map_err(|e| e.map_or(virtmem::Error::NoAccess, |e| win32::process_copy_error(e, *address, false)));
            let ok = r.is_ok();
            if let Err(e) = r {
                win32::SetLastError(e.code());
            }
            (ok as u64, rec.result == 0, !ok, None)
        }
        Call::WriteProcessMemory { address, buffer, size, .. } => {
            // Code pages are writable to it for the copy (see `win32::with_code_writable`).
            let r = win32::with_code_writable(space, *address, *size, || {
                check_copy(space, *address, *buffer, *size, AccessKind::Write)
            })
            .unwrap_or_else(|e| Err(Some(e)))
            .map_err(|e| e.map_or(virtmem::Error::NoAccess, |e| win32::process_copy_error(e, *address, true)));
            let ok = r.is_ok();
            if let Err(e) = r {
                win32::SetLastError(e.code());
            }
            (ok as u64, rec.result == 0, !ok, None)
        }
        Call::SetCommitLimit { limit } => {
            space.set_commit_limit((*limit != usize::MAX).then_some(*limit));
            (1, false, false, None)
        }
        // Made by the caller (`replay_own`), which holds the processes; nothing to compare.
        Call::SnapshotProcess | Call::RestoreProcess { .. } | Call::CreateProcess { .. } => {
            (rec.result, false, false, None)
        }
        // libvirtmem's VirtmemAccess (crates/virtmem-capi/src/procmem.rs) without moving a
        // byte: the kind, a NULL buffer (ERROR_NOACCESS), then the copy's checks (see
        // `check_copy`), whose access or guard-page violation (the guard is disarmed, as in
        // the recorded program) is the result. 0xFFFFFFFF (VIRTMEM_ACCESS_FAILED) is a
        // failure with the last error set.
        Call::Access { address, buffer, size, kind, .. } => {
            const FAILED: u64 = 0xFFFF_FFFF;
            let kind = match kind {
                0 => Some(AccessKind::Read),
                1 => Some(AccessKind::Write),
                8 => Some(AccessKind::Execute),
                _ => None,
            };
            let r = match kind {
                None => Err(virtmem::Error::InvalidParameter),
                Some(_) if *size > 0 && *buffer == 0 => Err(virtmem::Error::NoAccess),
                Some(k) => match check_copy(space, *address, *buffer, *size, k) {
                    Ok(()) => Ok(0),
                    Err(None) => Err(virtmem::Error::NoAccess),
                    Err(Some(e)) => e.exception_code().map(u64::from).ok_or(e),
                },
            };
            let r = r.unwrap_or_else(|e| {
                win32::SetLastError(e.code());
                FAILED
            });
            (r, rec.result == FAILED, r == FAILED, None)
        }
    };
    let err = win32::GetLastError();
    let args = match rec.process {
        Some(p) => format!("{p}, {}", render_args(&rec.call)),
        None => render_args(&rec.call),
    };
    if failed_rec != failed_now || (failed_rec && err != rec.last_error) {
        return Some((
            result,
            format!(
                "{name}({args}): recorded {}, replayed {}",
                outcome(rec.result, rec.last_error, failed_rec),
                outcome(result, err, failed_now)
            ),
        ));
    }
    if !failed_rec && result != rec.result && !matches!(rec.call, Call::GetWriteWatch { .. }) {
        return Some((result, format!("{name}({args}): recorded {:#x}, replayed {result:#x}", rec.result)));
    }
    extra.map(|e| (result, format!("{name}({args}): {e}")))
}

fn render_args(c: &Call) -> String {
    match c {
        Call::Alloc { address, size, alloc_type, protect } => format!(
            "{address:#x}, {size:#x}, {}, {}",
            FlagKind::Alloc.format(*alloc_type),
            FlagKind::Protect.format(*protect)
        ),
        Call::Free { address, size, free_type } => {
            format!("{address:#x}, {size:#x}, {}", FlagKind::Free.format(*free_type))
        }
        Call::Query { address, .. } => format!("{address:#x}"),
        Call::Protect { address, size, new_protect, .. } => {
            format!("{address:#x}, {size:#x}, {}", FlagKind::Protect.format(*new_protect))
        }
        Call::GetWriteWatch { flags, base, size, .. } => format!("{flags:#x}, {base:#x}, {size:#x}"),
        Call::ResetWriteWatch { base, size } => format!("{base:#x}, {size:#x}"),
        Call::Lock { address, size } | Call::Unlock { address, size } => format!("{address:#x}, {size:#x}"),
        Call::ReadProcessMemory { address, size, .. } | Call::WriteProcessMemory { address, size, .. } => {
            format!("{address:#x}, {size:#x}")
        }
        Call::SetCommitLimit { limit } => format!("{limit:#x}"),
        Call::SnapshotProcess => String::new(),
        Call::RestoreProcess { snapshot } => format!("{snapshot:#x}"),
        Call::CreateProcess { min_address, max_address, large_page_size, reset_policy } => {
            format!("{min_address:#x}, {max_address:#x}, {large_page_size:#x}, {reset_policy}")
        }
        Call::Access { address, size, kind, .. } => format!("{address:#x}, {size:#x}, {kind}"),
        Call::Alloc2 { address, size, alloc_type, protect, params, count } => format!(
            "{address:#x}, {size:#x}, {}, {}, {} of {count} parameter(s)",
            FlagKind::Alloc.format(*alloc_type),
            FlagKind::Protect.format(*protect),
            params.as_ref().map_or("NULL array".to_string(), |p| format!("{} read", p.len()))
        ),
    }
}

fn mbi(m: &MEMORY_BASIC_INFORMATION) -> String {
    format!(
        "{{base {:#x}, allocbase {:#x}, size {:#x}, {}, {}}}",
        m.BaseAddress,
        m.AllocationBase,
        m.RegionSize,
        crate::names::state_name(m.State),
        FlagKind::Protect.format(m.Protect)
    )
}

// ----- Wine ------------------------------------------------------------------------------

/// The hardware access a view run's protection grants, and whether it is copy-on-write.
/// A guard flag is ignored: image and file views are only placed, never touched.
fn access_of(protect: u32) -> (Access, bool) {
    match protect & 0xFF {
        0x02 => (Access::Read, false),
        0x04 => (Access::ReadWrite, false),
        0x08 => (Access::ReadWrite, true),
        0x10 => (Access::Execute, false),
        0x20 => (Access::ExecuteRead, false),
        0x40 => (Access::ExecuteReadWrite, false),
        0x80 => (Access::ExecuteReadWrite, true),
        _ => (Access::None, false),
    }
}

/// A Wine log replayed event by event, as [`wine::Parser`] completes them.
struct WineReplay<'r> {
    space: Arc<ViewSpace>,
    report: &'r mut Report,
    /// Events seen.
    events: usize,
    synthesized: usize,
    mapped: usize,
    unmapped: usize,
}

impl<'r> WineReplay<'r> {
    fn new(report: &'r mut Report) -> Self {
        report.sessions = 1;
        let space = Arc::new(ViewSpace::with_backend(Views::new()));
        WineReplay { space, report, events: 0, synthesized: 0, mapped: 0, unmapped: 0 }
    }

    /// Replay one event, its time counted in the report's (as the virtmem format's
    /// replay counts its records' replay, not the reading and parsing of the trace).
    fn event(&mut self, ev: &wine::Event) {
        let start = Instant::now();
        self.replay(ev);
        self.report.elapsed += start.elapsed();
    }

    fn replay(&mut self, ev: &wine::Event) {
        self.events += 1;
        match ev {
            wine::Event::View(v) => {
                if v.kind == "valloc" {
                    self.synthesized += synthesize(&self.space, v) as usize;
                } else {
                    add_view(&self.space, v);
                    self.mapped += 1;
                }
            }
            wine::Event::Call { line, call, views } => {
                if matches!(call, wine::Call::MapView) {
                    for v in views {
                        add_view(&self.space, v);
                        self.mapped += 1;
                    }
                    return;
                }
                // The call's own view: the first valloc dump holding its address (any
                // for a NULL-address allocation). Other dumps are Wine's own doing.
                let target = match *call {
                    wine::Call::Alloc { address, .. } | wine::Call::Protect { address, .. } => Some(address),
                    _ => None,
                };
                let own = views.iter().position(|v| {
                    v.kind == "valloc" && target.is_some_and(|a| a == 0 || (v.start..v.end).contains(&a))
                });
                let dumped = own.map(|i| &views[i]);
                for (i, v) in views.iter().enumerate() {
                    if Some(i) != own {
                        if v.kind == "valloc" {
                            self.synthesized += synthesize(&self.space, v) as usize;
                        } else {
                            add_view(&self.space, v);
                            self.mapped += 1;
                        }
                    }
                }
                if let wine::Call::Unmap { address } = *call {
                    // The view goes; its address space is free again (an unmap of an
                    // address holding no view, such as an allocation, changes nothing:
                    // Wine refuses that too).
                    if self.space.backend().remove(address).is_some() {
                        self.unmapped += 1;
                    }
                    return;
                }
                self.report.ops += 1;
                win32::SetLastError(0);
                let (name, args, expect_ok, ok) = match *call {
                    wine::Call::Alloc { address, size, alloc_type, protect } => {
                        let reserving = alloc_type & 0x2000 != 0 || (address == 0 && alloc_type & 0x1000 != 0);
                        let (addr, ty) = match dumped {
                            Some(v) if address == 0 && reserving => (v.start, alloc_type | 0x2000),
                            _ => (address, alloc_type),
                        };
                        let r = win32::VirtualAlloc(&*self.space, addr, size, ty, protect);
                        let args = format!(
                            "{}, {size:#x}, {}, {}",
                            if address == 0 { "NULL".to_string() } else { format!("{address:#x}") },
                            FlagKind::Alloc.format(alloc_type),
                            FlagKind::Protect.format(protect)
                        );
                        ("NtAllocateVirtualMemory", args, Some(dumped.is_some()), r != 0)
                    }
                    wine::Call::Protect { address, size, protect } => {
                        // Protections inside image and file views act on the view, which
                        // the replay only places.
                        if self.space.backend().foreign(address, address.saturating_add(1)).is_some() {
                            self.report.ops -= 1;
                            return;
                        }
                        let mut old = 0;
                        let r = win32::VirtualProtect(&*self.space, address, size, protect, Some(&mut old));
                        let args = format!("{address:#x}, {size:#x}, {}", FlagKind::Protect.format(protect));
                        ("NtProtectVirtualMemory", args, Some(dumped.is_some()), r != 0)
                    }
                    wine::Call::Free { address, size, free_type } => {
                        let r = win32::VirtualFree(&*self.space, address, size, free_type);
                        let args = format!("{address:#x}, {size:#x}, {}", FlagKind::Free.format(free_type));
                        ("NtFreeVirtualMemory", args, None, r != 0)
                    }
                    wine::Call::GetWriteWatch { flags, base, size } => {
                        let r = self.space.get_write_watch(
                            virtmem::WriteWatchFlags::from_bits_retain(flags),
                            base,
                            size,
                            4096,
                        );
                        ("NtGetWriteWatch", format!("{flags:#x}, {base:#x}, {size:#x}"), None, r.is_ok())
                    }
                    wine::Call::Query { address } => {
                        let r = self.space.query(address);
                        ("NtQueryVirtualMemory", format!("{address:#x}"), None, r.is_ok())
                    }
                    wine::Call::MapView | wine::Call::Unmap { .. } => return,
                };
                let err = win32::GetLastError();
                if let Some(want) = expect_ok {
                    if want != ok {
                        let now = if ok { "succeeded".to_string() } else { format!("failed with {}", error_text(err)) };
                        let then =
                            if want { "succeeded (its view was dumped)" } else { "failed (no view dump followed)" };
                        self.report.diff(format!("line {line}: {name}({args}): Wine {then}, replay {now}"));
                    }
                }
                if let Some(v) = dumped {
                    if let Some(d) = compare_view(&self.space, v) {
                        self.report.diff(format!("line {}: after {name}({args}): {d}", v.line));
                    }
                }
                self.report.sample(&*self.space);
            }
        }
    }

    /// The log ended (`skipped`: its `virtual` lines skipped): the replayed space, or an
    /// error when it held nothing to replay.
    fn finish(self, skipped: usize) -> Result<Arc<dyn VirtualSpace>, String> {
        if self.events == 0 {
            return Err(
                "no NtAllocateVirtualMemory / NtFreeVirtualMemory / NtProtectVirtualMemory lines or view dumps found \
                    (record with WINEDEBUG=+virtual)"
                    .into(),
            );
        }
        let (mapped, unmapped, synthesized) = (self.mapped, self.unmapped, self.synthesized);
        self.report.notes.push(format!(
            "{mapped} image/file view(s) placed as mapped regions ({unmapped} unmapped again), {synthesized} allocation(s) Wine made itself (thread stacks...) placed from its view dumps, {skipped} other `virtual` line(s) skipped"
        ));
        self.report.notes.push("Wine logs no results: a call counts as successful when a dump of its view follows; frees, queries and write-watch calls are replayed without a recorded result".into());
        Ok(self.space)
    }
}

/// Replay a Wine log held in memory (`text`, without a byte-order mark).
#[cfg(test)]
pub(crate) fn replay_wine(text: &str, report: &mut Report) -> Result<Arc<dyn VirtualSpace>, String> {
    let mut parser = wine::Parser::default();
    let mut replay = WineReplay::new(report);
    for (i, raw) in text.lines().enumerate() {
        parser.line(i + 1, raw, &mut |e| replay.event(&e));
    }
    let skipped = parser.finish(&mut |e| replay.event(&e));
    replay.finish(skipped)
}

/// Replay a Wine log read from `input` one line at a time (each decoded as
/// `String::from_utf8_lossy` decodes the whole log; a leading byte-order mark dropped),
/// replaying each event as soon as the parser completes it: memory stays bounded
/// whatever the log's size. An I/O error stops the replay.
fn replay_wine_from(input: impl BufRead, report: &mut Report) -> Result<Arc<dyn VirtualSpace>, Stop> {
    let mut input = input;
    let mut parser = wine::Parser::default();
    let mut replay = WineReplay::new(report);
    let mut raw = Vec::new();
    let mut line = 0;
    // (A line longer than `trace::MAX_LINE` is not Wine's: skipped, kept nowhere.)
    while let Some((_, too_long)) = trace::read_line_capped(&mut input, &mut raw).map_err(Stop::Io)? {
        line += 1;
        if too_long {
            continue;
        }
        let text = String::from_utf8_lossy(&raw);
        let mut text: &str = &text;
        if line == 1 {
            text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        }
        // As `str::lines`: `\n` or `\r\n` ends a line.
        if let Some(t) = text.strip_suffix('\n') {
            text = t.strip_suffix('\r').unwrap_or(t);
        }
        parser.line(line, text, &mut |e| replay.event(&e));
    }
    let skipped = parser.finish(&mut |e| replay.event(&e));
    replay.finish(skipped).map_err(Stop::Bad)
}

/// Place an image or file view as foreign regions, one per dumped run.
fn add_view(space: &ViewSpace, v: &wine::View) {
    let kind = match v.kind.as_str() {
        "image" => ForeignKind::Image,
        "file" => ForeignKind::Mapped,
        _ => ForeignKind::Private,
    };
    // Each dumped run keeps its own protection (an image's headers, code and data
    // differ); an uncommitted run is reserved.
    let pieces: Vec<_> = v
        .runs
        .iter()
        .map(|r| {
            let (access, cow) = if r.committed { access_of(r.protect) } else { (Access::None, false) };
            (r.start..r.end, access, cow)
        })
        .collect();
    space.backend().add(v.start..v.end, &pieces, kind);
}

/// Place an allocation Wine made without a logged call: reserve the view, commit its
/// committed runs. Returns whether anything was placed.
fn synthesize(space: &ViewSpace, v: &wine::View) -> bool {
    if space.query(v.start).map(|m| m.state != MemState::Free).unwrap_or(true) {
        return false;
    }
    let alloc_protect = v.runs.first().map_or(0x04, |r| r.protect & 0xFF);
    let alloc_protect = if alloc_protect == 0x01 { 0x04 } else { alloc_protect };
    if space
        .alloc(v.start, v.end - v.start, AllocationType::RESERVE, Protection::from_bits_retain(alloc_protect))
        .is_err()
    {
        return false;
    }
    for r in v.runs.iter().filter(|r| r.committed) {
        let _ = space.alloc(r.start, r.end - r.start, AllocationType::COMMIT, Protection::from_bits_retain(r.protect));
    }
    true
}

/// Compare the simulated state of a valloc view with Wine's dump of it.
fn compare_view(space: &ViewSpace, v: &wine::View) -> Option<String> {
    for r in &v.runs {
        let mut a = r.start;
        while a < r.end {
            let m = match space.query(a) {
                Ok(m) => m,
                Err(e) => return Some(format!("query {a:#x} failed: {e}")),
            };
            let (state, prot) = (m.state, m.protect.bits());
            let ok = match (r.committed, state) {
                (true, MemState::Commit) => prot == r.protect,
                (false, MemState::Reserve) => true,
                _ => false,
            };
            if !ok {
                let want = if r.committed {
                    format!("committed {}", FlagKind::Protect.format(r.protect))
                } else {
                    "reserved".to_string()
                };
                let have = match state {
                    MemState::Commit => format!("committed {}", FlagKind::Protect.format(prot)),
                    MemState::Reserve => "reserved".to_string(),
                    MemState::Free => "free".to_string(),
                };
                return Some(format!("Wine's view has {a:#x} {want}, the replay has it {have}"));
            }
            a = (m.base_address + m.region_size).min(r.end).max(a + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped Wine log.
    const WINE_LOG: &str = include_str!("../../../examples/traces/wine-virtual.log");

    /// A view dump read straight from the log text: (start, end, kind, runs of
    /// (start, end, flags)).
    type Dump = (usize, usize, String, Vec<(usize, usize, String)>);

    fn hex(w: &str) -> usize {
        usize::from_str_radix(w.trim_start_matches("0x"), 16).expect("hex")
    }

    /// Every view dump in `log`, in order, read without the replay's parser.
    fn dumps(log: &str) -> Vec<Dump> {
        let mut out: Vec<Dump> = Vec::new();
        let mut in_dump = false;
        for line in log.lines() {
            let Some((_, rest)) = line.split_once("trace:virtual:dump_view") else {
                in_dump = false;
                continue;
            };
            let w: Vec<&str> = rest.split_whitespace().collect();
            if w[0] == "View:" {
                let kind = w[4].trim_matches(|c| c == '(' || c == ')').to_string();
                out.push((hex(w[1]), hex(w[3]) + 1, kind, Vec::new()));
                in_dump = true;
            } else if in_dump {
                let last = out.last_mut().expect("a view");
                last.3.push((hex(w[0]), hex(w[2]) + 1, w[3].to_string()));
            }
        }
        out
    }

    /// The protection Windows reports for Wine's flags of a committed run.
    fn protection(flags: &str) -> u32 {
        let f = flags.as_bytes();
        match (f[2] == b'r', f[3], f[4] == b'x') {
            (_, b'W', false) => 0x08,
            (_, b'W', true) => 0x80,
            (_, b'w', false) => 0x04,
            (_, b'w', true) => 0x40,
            (true, _, false) => 0x02,
            (true, _, true) => 0x20,
            (false, _, true) => 0x10,
            (false, _, false) => 0x01,
        }
    }

    /// A fuzzer's trace: each input runs on a new snapshot of one process, which it
    /// closes after (closes are comments, so the replay cannot see them). Every record is
    /// replayed however many snapshots the session makes in all: more than
    /// `MAX_PROCESSES` of them, none of which is named again after its run, skipped the
    /// runs past the 1023rd (and kept every copy alive to the end).
    #[test]
    fn a_fuzzers_many_snapshots_are_all_replayed() {
        let runs = MAX_PROCESSES + 100;
        let mut text = String::from("virtmem-trace 1\n");
        text.push_str("VirtualAllocEx 0x1 0x0 0x10000 0x3000 0x4 -> 0x10000 err=0\n");
        for n in 2..runs + 2 {
            text.push_str(&format!("VirtmemSnapshotProcess 0x1 -> {n:#x} err=0\n"));
            // Succeeds only on a copy of process 1 (a fresh space has nothing there).
            text.push_str(&format!("VirtualFreeEx {n:#x} 0x10000 0x0 0x8000 -> 0x1 err=0\n"));
            text.push_str(&format!("# CloseHandle {n:#x} -> 0x1 err=0\n"));
        }
        let mut report = Report::new(10);
        replay_own(&text, &mut report).expect("replayed");
        assert_eq!(report.notes, Vec::<String>::new());
        assert_eq!((report.diff_count, report.ops), (0, 1 + 2 * runs as u64), "{:?}", report.diffs);
    }

    /// A fuzzer's trace over one process handle: a snapshot taken once, and the process
    /// restored from it before each input. Each input's release succeeds only on the
    /// restored process (it released the reservation the input before), and a restore
    /// recorded as failed changes nothing (the release after it fails as recorded).
    /// A process made by `VirtmemCreateProcessEx` with a 32-bit guest's range is replayed
    /// with that range: top-down allocations land at its top, addresses past it are
    /// refused, a snapshot of it keeps it. A recorded failure makes nothing, and a record
    /// whose outcome the configuration contradicts is a difference.
    #[test]
    fn configured_processes_are_replayed_with_their_configuration() {
        let mut text = String::from("virtmem-trace 1\n");
        text.push_str("VirtmemCreateProcessEx 0x10000 0x7ffeffff 0x0 0x1 -> 0x1 err=0\n");
        text.push_str("VirtualAllocEx 0x1 0x0 0x10000 0x103000 0x4 -> 0x7ffe0000 err=0\n");
        text.push_str("VirtualAllocEx 0x1 0x7fff0000 0x10000 0x3000 0x4 -> 0x0 err=87\n");
        text.push_str("VirtualAllocEx 0x1 0x0 0x200000 0x20003000 0x4 -> 0x0 err=1450\n");
        text.push_str("VirtmemSnapshotProcess 0x1 -> 0x2 err=0\n");
        text.push_str("VirtualAllocEx 0x2 0x0 0x10000 0x103000 0x4 -> 0x7ffd0000 err=0\n");
        // A failed creation (min above max): nothing made, process 3 is a later one.
        text.push_str("VirtmemCreateProcessEx 0x20000 0x1ffff 0x0 0x0 -> 0x0 err=87\n");
        text.push_str("VirtmemCreateProcessEx 0x100000 0xffffff 0x10000 0x0 -> 0x3 err=0\n");
        text.push_str("VirtualAllocEx 0x3 0x0 0x10000 0x103000 0x4 -> 0xff0000 err=0\n");
        text.push_str("VirtualAllocEx 0x3 0x0 0x10000 0x3000 0x4 -> 0x100000 err=0\n");
        let mut report = Report::new(10);
        replay_own(&text, &mut report).expect("replayed");
        assert_eq!(report.notes, Vec::<String>::new());
        assert_eq!((report.diff_count, report.ops), (0, 10), "{:?}", report.diffs);
        // Without the creations the processes are Windows-x64 ones (the replay puts each
        // reservation where it was recorded, so only the refusals differ): the address
        // past the guest's top and the large pages are granted.
        let unconfigured: String =
            text.lines().filter(|l| !l.starts_with("VirtmemCreateProcessEx")).map(|l| format!("{l}\n")).collect();
        let mut report = Report::new(10);
        replay_own(&unconfigured, &mut report).expect("replayed");
        assert_eq!(report.diff_count, 2, "{:?}", report.diffs);
        assert!(report.diffs[0].starts_with("line 3: VirtualAllocEx(1, 0x7fff0000"), "{:?}", report.diffs);
        // A creation recorded as failed whose configuration is valid, and one recorded as
        // made whose configuration is not, are differences.
        for bad in [
            "VirtmemCreateProcessEx 0x10000 0x7ffeffff 0x0 0x0 -> 0x0 err=87\n",
            "VirtmemCreateProcessEx 0x10000 0x7fff0000 0x0 0x0 -> 0x1 err=0\n",
        ] {
            let mut report = Report::new(10);
            replay_own(&format!("virtmem-trace 1\n{bad}"), &mut report).expect("replayed");
            assert_eq!((report.diff_count, report.ops), (1, 1), "{bad}: {:?}", report.diffs);
        }
    }

    /// A trace holds no page contents, so the replay cannot know whether a reset in a
    /// process that discards on reset lost data: a `MEM_RESET_UNDO` recorded as failed
    /// with `ERROR_BUSY` there is taken as recorded (and noted). In a process that keeps
    /// the data it is a difference, as before.
    #[test]
    fn reset_losses_in_discarding_processes_are_taken_as_recorded() {
        let undo = |policy: u32| {
            format!(
                "virtmem-trace 1\n\
                 VirtmemCreateProcessEx 0x10000 0x7ffeffff 0x0 {policy:#x} -> 0x1 err=0\n\
                 VirtualAllocEx 0x1 0x0 0x1000 0x3000 0x4 -> 0x10000 err=0\n\
                 WriteProcessMemory 0x1 0x10000 0x7ffc0000 0x1 0x0 -> 0x1 err=0\n\
                 VirtualAllocEx 0x1 0x10000 0x1000 0x80000 0x4 -> 0x10000 err=0\n\
                 VirtualAllocEx 0x1 0x10000 0x1000 0x1000000 0x4 -> 0x0 err=170\n"
            )
        };
        let mut report = Report::new(10);
        replay_own(&undo(1), &mut report).expect("replayed");
        assert_eq!((report.diff_count, report.ops), (0, 5), "{:?}", report.diffs);
        assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
        let mut report = Report::new(10);
        replay_own(&undo(0), &mut report).expect("replayed");
        assert_eq!(report.diff_count, 1, "{:?}", report.diffs);
    }

    #[test]
    fn restores_are_replayed_from_the_processes_as_replayed() {
        let mut text = String::from("virtmem-trace 1\n");
        text.push_str("VirtualAllocEx 0x1 0x0 0x10000 0x3000 0x4 -> 0x10000 err=0\n");
        text.push_str("VirtmemSnapshotProcess 0x1 -> 0x2 err=0\n");
        for _ in 0..3 {
            text.push_str("VirtmemRestoreProcess 0x1 0x2 -> 0x1 err=0\n");
            text.push_str("VirtualFreeEx 0x1 0x10000 0x0 0x8000 -> 0x1 err=0\n");
        }
        text.push_str("VirtmemRestoreProcess 0x1 0x5 -> 0x0 err=6\n");
        text.push_str("VirtualFreeEx 0x1 0x10000 0x0 0x8000 -> 0x0 err=487\n");
        // A restore from a process no record named: an empty one.
        text.push_str("VirtualAllocEx 0x3 0x0 0x10000 0x3000 0x4 -> 0x10000 err=0\n");
        text.push_str("VirtmemRestoreProcess 0x3 0x4 -> 0x1 err=0\n");
        text.push_str("VirtualFreeEx 0x3 0x10000 0x0 0x8000 -> 0x0 err=487\n");
        let mut report = Report::new(10);
        replay_own(&text, &mut report).expect("replayed");
        assert_eq!(report.notes, Vec::<String>::new());
        assert_eq!((report.diff_count, report.ops), (0, 13), "{:?}", report.diffs);
        // Without the restores the releases after the first differ.
        let unrestored = text.replace("VirtmemRestoreProcess 0x1 0x2 -> 0x1 err=0\n", "");
        let mut report = Report::new(10);
        replay_own(&unrestored, &mut report).expect("replayed");
        assert_eq!(report.diff_count, 2, "{:?}", report.diffs);
    }

    /// What `trace::read` makes of the whole input decoded at once (the replay's reading
    /// before it streamed), as text to compare.
    fn read_whole(bytes: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
        trace::read(text.as_bytes()).map(|item| format!("{item:?}")).collect()
    }

    /// What [`Lines`] makes of it a line at a time.
    fn read_streamed(bytes: &[u8]) -> Vec<String> {
        let mut lines = Lines::new(io::BufReader::with_capacity(7, bytes), true);
        std::iter::from_fn(|| lines.next()).map(|item| format!("{item:?}")).collect()
    }

    proptest::proptest! {
        /// Decoding a line at a time reads what decoding the whole trace read: the same
        /// lines, numbers, records and errors, whatever bytes that are not UTF-8 (cut
        /// sequences at a line's end among them) and byte-order marks it holds.
        #[test]
        fn lines_read_as_the_whole_text_decoded(pieces in proptest::collection::vec(proptest::sample::select(vec![
            "virtmem-trace 1\n", "\u{FEFF}", "\n", "\r\n", "\u{e9}", "# c\n",
            "VirtualAlloc 0x0 0x10000 0x3000 0x4 -> 0x10000 err=0", "VirtualFree 0x10000 0x0 0x8000 -> 0x1 err=0\n",
            "\u{FFFD}", "<ff>", "<e2 82>", "<f0 9f 98>", "<c3>", " ",
        ]), 0..24)) {
            let bytes: Vec<u8> = pieces.iter().flat_map(|p| {
                // `<..>` pieces are bytes that are not UTF-8 on their own.
                match *p {
                    "<ff>" => vec![0xff],
                    "<e2 82>" => vec![0xe2, 0x82],
                    "<f0 9f 98>" => vec![0xf0, 0x9f, 0x98],
                    "<c3>" => vec![0xc3],
                    p => p.as_bytes().to_vec(),
                }
            }).collect();
            proptest::prop_assert_eq!(read_streamed(&bytes), read_whole(&bytes));
        }
    }

    #[test]
    fn parsing_through_tracked_moves_the_bar_to_the_end() {
        let mut text = String::from("virtmem-trace 1\n");
        let rec = "VirtualAlloc 0x0 0x10000 0x3000 0x4 -> 0x10000 err=0\n";
        while text.len() < 3 << 20 {
            text.push_str(rec);
        }
        let pb = ProgressBar::hidden();
        pb.set_length(text.len() as u64);
        let mut positions = std::collections::BTreeSet::new();
        let direct = trace::read(text.as_bytes()).count();
        let mut n = 0;
        let mut reader = trace::read(io::BufReader::new(Tracked::new(text.as_bytes(), &pb)));
        while reader.next().is_some() {
            n += 1;
            positions.insert(pb.position());
        }
        assert_eq!(n, direct, "the same lines as reading the bytes directly");
        assert_eq!(pb.position(), text.len() as u64);
        // It moved along the way, not only at the end.
        assert!(positions.len() > 10, "{positions:?}");
    }

    /// What a Wine log's replay reports and leaves, to compare two replays.
    fn wine_outcome(r: Result<Arc<dyn VirtualSpace>, String>, report: &Report) -> String {
        let regions = r.map(|space| space.regions());
        format!("{regions:?} {} {} {:?} {:?}", report.ops, report.diff_count, report.diffs, report.notes)
    }

    /// The Wine log streamed a line at a time (through a 7-byte buffer, so that lines
    /// arrive in pieces) replays as the whole text did: the same calls, differences,
    /// notes and final space, with Unix or Windows line ends, a byte-order mark, a last
    /// line without its line end, and bytes that are not UTF-8.
    #[test]
    fn a_wine_log_streamed_replays_as_the_whole_text() {
        let crlf = WINE_LOG.replace('\n', "\r\n");
        let bom = format!("\u{FEFF}{WINE_LOG}");
        let cut = WINE_LOG.trim_end_matches('\n').to_string();
        let mut broken = WINE_LOG.as_bytes().to_vec();
        broken.splice(200..200, [0xff, 0xc3]);
        let variants: [(&str, Vec<u8>); 5] = [
            ("as is", WINE_LOG.as_bytes().to_vec()),
            ("CRLF", crlf.into_bytes()),
            ("BOM", bom.into_bytes()),
            ("no last line end", cut.into_bytes()),
            ("not UTF-8", broken),
        ];
        for (what, bytes) in variants {
            let text = String::from_utf8_lossy(&bytes);
            let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
            let mut whole = Report::new(50);
            let a = wine_outcome(replay_wine(text, &mut whole), &whole);
            let mut streamed = Report::new(50);
            let r = replay_wine_from(io::BufReader::with_capacity(7, &bytes[..]), &mut streamed).map_err(|e| match e {
                Stop::Bad(m) => m,
                Stop::Io(e) => e.to_string(),
            });
            let b = wine_outcome(r, &streamed);
            assert_eq!(b, a, "{what}");
            assert!(whole.ops > 100, "{what}: the log's calls were replayed ({})", whole.ops);
        }
        // A log with nothing to replay is the same error either way.
        let mut report = Report::new(5);
        let e = replay_wine_from(io::BufReader::new(&b"0024:trace:virtual:nothing here\n"[..]), &mut report);
        assert!(
            matches!(e, Err(Stop::Bad(ref m)) if m.starts_with("no NtAllocateVirtualMemory")),
            "{:?}",
            e.err().map(|_| ())
        );
    }

    #[test]
    fn image_and_file_views_keep_each_dumped_runs_protection() {
        let all = dumps(WINE_LOG);
        let mut report = Report::new(10);
        let space = replay_wine(WINE_LOG, &mut report).expect("replay");
        let mut checked_runs = 0;
        let mut kinds_in_main_image = std::collections::BTreeSet::new();
        for (i, (start, end, kind, runs)) in all.iter().enumerate() {
            if kind == "valloc" {
                continue;
            }
            // Only the last dump of a view that no later dump overlaps tells its final state.
            if all[i + 1..].iter().any(|(s, e, _, _)| s < end && e > start) {
                continue;
            }
            for (rs, re, flags) in runs {
                let m = space.query(*rs).expect("query");
                let at = format!("view {start:#x} ({kind}), run {rs:#x}-{re:#x} {flags}");
                assert_eq!((m.base_address, m.region_size), (*rs, re - rs), "{at}: {m:?}");
                assert_eq!(m.allocation_base, *start, "{at}");
                assert_eq!(m.state, MemState::Commit, "{at}");
                assert_eq!(m.protect.bits(), protection(flags), "{at}");
                let ty = if kind == "image" { virtmem::MemType::Image } else { virtmem::MemType::Mapped };
                assert_eq!(m.mem_type, Some(ty), "{at}");
                if *start == 0x1_4000_0000 {
                    kinds_in_main_image.insert(protection(flags));
                }
                checked_runs += 1;
            }
        }
        assert!(checked_runs > 20, "only {checked_runs} runs checked");
        // The program's own image has read-only, code and write-copy runs.
        assert_eq!(kinds_in_main_image.into_iter().collect::<Vec<_>>(), [0x02, 0x08, 0x20]);
    }
}
