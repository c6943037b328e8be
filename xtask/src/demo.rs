//! `cargo xtask demo`: build, then run the demo scenario
//! (lb-userspace/examples/demo) with the release daemon: one node with
//! config/demo.yaml, or with `--nodes N` the multi-node bed (docs/ha.md).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigHandler, Signal, signal};

use crate::util::{build_daemon_and_example, is_root, line, root};

pub fn run(seconds: u64, nodes: Option<u8>) -> Result<()> {
    if !is_root() {
        bail!("cargo xtask demo must run as root (it creates network namespaces and loads XDP)");
    }
    crate::setup::run()?;
    let (xdplb, demo) = build()?;
    let mut cmd = std::process::Command::new(demo);
    cmd.current_dir(root())
        .arg("--xdplb")
        .arg(xdplb)
        .args(["--config", "config/demo.yaml", "--seconds"])
        .arg(seconds.to_string());
    if let Some(n) = nodes {
        cmd.args(["--nodes", &n.to_string()]);
    }
    eprintln!("xtask: + {}", line(&cmd));
    let mut child = cmd.spawn().context("cannot run the demo")?;
    // Ctrl-C reaches the demo too (same process group): it tears down and
    // exits, and we wait for it rather than leave it printing behind the
    // shell's prompt. (Set after the spawn: an ignored signal would stay
    // ignored in the child.)
    // SAFETY: sets a signal disposition; no handler runs our code.
    unsafe { signal(Signal::SIGINT, SigHandler::SigIgn) }?;
    let status = child.wait()?;
    if !status.success() {
        bail!("the demo failed ({status})");
    }
    Ok(())
}

/// Builds the release daemon and the demo; their paths, from cargo's JSON
/// messages (wherever the target dir is: CARGO_TARGET_DIR, config).
fn build() -> Result<(PathBuf, PathBuf)> {
    build_daemon_and_example("demo")
}
