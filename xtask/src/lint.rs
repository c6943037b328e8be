//! `cargo xtask lint`: formatting and clippy, for the userspace crates, the
//! fuzz targets (a workspace of their own) and the XDP program (which only
//! builds for the BPF target).

use anyhow::Result;

use crate::util::{cargo, exec};

pub fn run() -> Result<()> {
    crate::setup::run()?;
    exec(cargo().args(["fmt", "--all", "--check"]))?;
    exec(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    fuzz()?;
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

/// The fuzz targets (fuzz/), with stable like the rest: they build with
/// nightly only for the sanitizers. In the workspace's target dir, where
/// most of their dependencies are already checked; no eBPF object (the
/// targets load no program).
fn fuzz() -> Result<()> {
    let manifest = crate::util::root().join("fuzz/Cargo.toml");
    exec(
        cargo()
            .args(["fmt", "--check", "--manifest-path"])
            .arg(&manifest),
    )?;
    let mut clippy = cargo();
    clippy
        .args(["clippy", "--all-targets", "--manifest-path"])
        .arg(&manifest)
        .env("AYA_BUILD_SKIP", "1");
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        clippy
            .arg("--target-dir")
            .arg(crate::util::root().join("target"));
    }
    exec(clippy.args(["--", "-D", "warnings"]))
}
