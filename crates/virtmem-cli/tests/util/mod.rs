//! Helpers shared by the tests that drive the `virtmem` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;

/// The workspace root (where the shipped examples are).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `virtmem` binary, run from the workspace root, stopped after a minute.
pub fn virtmem() -> Command {
    let mut c = Command::cargo_bin("virtmem").expect("binary");
    c.current_dir(root());
    c.timeout(Duration::from_secs(60));
    c
}

/// A path `name` in this test process's own temporary folder.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("virtmem-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// What a run of the binary gave.
pub struct Out {
    /// Its exit code (-1 when a signal ended it).
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// The outcome of a finished process; it must not have panicked.
pub fn out_of(o: std::process::Output) -> Out {
    let out = Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(!out.stderr.contains("panicked"), "the binary panicked: {}", out.stderr);
    out
}

/// Run `cmd` to its end.
pub fn run(cmd: &mut Command) -> Out {
    out_of(cmd.output().expect("runs"))
}

/// A script file `name` holding `text`.
pub fn script(name: &str, text: &[u8]) -> PathBuf {
    let p = tmp(name);
    std::fs::write(&p, text).expect("write script");
    p
}
