use std::process::ExitCode;
pub fn main(_scale: f64) -> ExitCode {
    ExitCode::SUCCESS
}
