//! `cargo xtask lint`: formatting and clippy, for the userspace crates and
//! for the XDP program (which only builds for the BPF target).

use anyhow::Result;

use crate::util::{cargo, exec};

pub fn run() -> Result<()> {
    crate::setup::run()?;
    exec(cargo().args(["fmt", "--all", "--check"]))?;
    exec(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // `rustup run`: cargo itself (as xtask finds it) ignores `+nightly`.
    let mut nightly = std::process::Command::new("rustup");
    nightly.current_dir(crate::util::root());
    exec(nightly.args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "-p",
        "lb-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}
