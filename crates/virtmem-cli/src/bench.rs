//! `virtmem bench` (being written).
use std::process::ExitCode;

/// Entry point of `virtmem bench`.
pub fn main(_scale: f64) -> ExitCode {
    eprintln!("error: virtmem bench is not implemented in this build yet");
    ExitCode::from(2)
}
