//! `cargo xtask fuzz-packets`: build, then run the packet fuzzer
//! (lb-userspace/examples/fuzz_packets.rs, lb-testbed's `fuzz` module)
//! with the release daemon's programs: frames through the real XDP
//! programs with BPF_PROG_TEST_RUN, every verdict checked. Its reproducers
//! name the release xdplb binary.

use anyhow::{Context, Result, bail};

use crate::util::{built_executables, cargo, is_root, line, root};

/// `count` frames from `seed` (random if none); `extra`: more arguments for
/// the fuzzer (`--max-failures N`, `--epoch N`, `--decap-hex FRAME`).
pub fn run(count: u64, seed: Option<u64>, extra: &[String]) -> Result<()> {
    if !is_root() {
        bail!(
            "cargo xtask fuzz-packets must run as root (it loads XDP programs and creates a network namespace)"
        );
    }
    crate::setup::run()?;
    let mut build = cargo();
    build
        .args([
            "build",
            "--release",
            "-p",
            "lb-userspace",
            "--bin",
            "xdplb",
            "--example",
            "fuzz_packets",
        ])
        .env_remove("AYA_BUILD_SKIP");
    let (mut xdplb, mut fuzzer) = (None, None);
    for b in built_executables(&mut build, "the packet fuzzer")? {
        match (b.kind.as_str(), b.name.as_str()) {
            ("bin", "xdplb") => xdplb = Some(b.path),
            ("example", "fuzz_packets") => fuzzer = Some(b.path),
            _ => {}
        }
    }
    let xdplb = xdplb.context("cargo built no xdplb binary")?;
    let mut cmd = std::process::Command::new(fuzzer.context("cargo built no fuzz_packets")?);
    cmd.current_dir(root())
        .arg("--xdplb")
        .arg(xdplb)
        .args(["--count", &count.to_string()]);
    if let Some(s) = seed {
        cmd.args(["--seed", &s.to_string()]);
    }
    cmd.args(extra);
    eprintln!("xtask: + {}", line(&cmd));
    let status = cmd.status().context("cannot run the packet fuzzer")?;
    if !status.success() {
        bail!("the packet fuzzer failed ({status})");
    }
    Ok(())
}
