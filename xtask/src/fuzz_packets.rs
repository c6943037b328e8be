//! `cargo xtask fuzz-packets`: build, then run the packet fuzzer
//! (lb-userspace/examples/fuzz_packets.rs, lb-testbed's `fuzz` module)
//! with the release daemon's programs: frames through the real XDP
//! programs with BPF_PROG_TEST_RUN, every verdict checked. Its reproducers
//! name the release xdplb binary.

use anyhow::{Context, Result, bail};

use crate::util::{build_daemon_and_example, is_root, line, root};

/// `count` frames from `seed` (random if none); `extra`: more arguments for
/// the fuzzer (`--max-failures N`, `--epoch N`, `--decap-hex FRAME`).
pub fn run(count: u64, seed: Option<u64>, extra: &[String]) -> Result<()> {
    if !is_root() {
        bail!(
            "cargo xtask fuzz-packets must run as root (it loads XDP programs and creates a network namespace)"
        );
    }
    crate::setup::run()?;
    let (xdplb, fuzzer) = build_daemon_and_example("fuzz_packets")?;
    let mut cmd = std::process::Command::new(fuzzer);
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
