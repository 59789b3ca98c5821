//! Standard output that remembers its first failure instead of panicking (`print!`) or
//! dropping it (`let _ = writeln!`): a full disk is reported and ends the command with
//! status 2 ([`finish`]), a reader that went away (`virtmem ... | head`) silences the rest
//! of the output and leaves the status as the command made it.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Mutex;

/// The first error standard output gave, if any; nothing more is written after it.
static FAILURE: Mutex<Option<io::Error>> = Mutex::new(None);

/// Standard output, through which every line the commands print goes.
pub struct Stdout;

fn failure() -> std::sync::MutexGuard<'static, Option<io::Error>> {
    // A panic while the lock is held cannot leave the Option half-written.
    FAILURE.lock().unwrap_or_else(|e| e.into_inner())
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut failed = failure();
        if failed.is_none() {
            if let Err(e) = io::stdout().lock().write_all(buf) {
                *failed = Some(e);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut failed = failure();
        if failed.is_none() {
            if let Err(e) = io::stdout().lock().flush() {
                *failed = Some(e);
            }
        }
        Ok(())
    }
}

/// Print to [`Stdout`] as `print!` does, without its panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = ::std::io::Write::write_fmt(&mut crate::out::Stdout, format_args!($($arg)*));
    }};
}

/// Print a line to [`Stdout`] as `println!` does, without its panic.
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => {{
        out!($($arg)*);
        out!("\n");
    }};
}

/// Print a line to standard error as `eprintln!` does, without its panic when standard
/// error cannot be written (the message is lost; the exit status still says what happened).
macro_rules! errln {
    ($($arg:tt)*) => {{
        let _ = ::std::io::Write::write_fmt(&mut ::std::io::stderr(), format_args!("{}\n", format_args!($($arg)*)));
    }};
}

/// The command's exit status once its output is flushed: `status`, unless standard output
/// failed other than by its reader going away (then the error is reported and the status
/// is 2, as for any file the command cannot write).
pub fn finish(status: ExitCode) -> ExitCode {
    let _ = Stdout.flush();
    match failure().take() {
        Some(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            errln!("error: cannot write standard output: {e}");
            ExitCode::from(2)
        }
        _ => status,
    }
}
