//! What the tests of the `xdplb` command line share (cli.rs, cli_client.rs):
//! running the binary, reading what it printed, scratch files.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

/// Runs `xdplb` with `args`, to completion.
pub fn xdplb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xdplb"))
        .args(args)
        .output()
        .expect("run xdplb")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts how `xdplb` exited; shows all it printed if not as expected.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{out:?}");
}

/// Asserts that `xdplb` failed with `code` and said `message` on stderr.
#[track_caller]
pub fn assert_fails(out: &Output, code: i32, message: &str) {
    assert_exit(out, code);
    let err = stderr(out);
    assert!(err.contains(message), "{message:?} not in {err:?}");
}

/// A file in the temp dir holding `text`, named for this test process and
/// `name` (unique within the process); removed when dropped, even when the
/// test fails.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("xdplb-cli-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("temp dir path is UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
