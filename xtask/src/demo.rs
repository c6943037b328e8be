//! `cargo xtask demo`: build, then run the demo scenario
//! (lb-userspace/examples/demo) with the release daemon: one node with
//! config/demo.yaml, or with `--nodes N` the multi-node bed (docs/ha.md).

use std::{path::PathBuf, process::Stdio};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SigHandler, Signal, signal};

use crate::util::{cargo, is_root, line, root};

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
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "--message-format=json-render-diagnostics",
        "-p",
        "lb-userspace",
        "--bin",
        "xdplb",
        "--example",
        "demo",
    ])
    .env_remove("AYA_BUILD_SKIP")
    .stdout(Stdio::piped());
    eprintln!("xtask: + {}", line(&cmd));
    let out = cmd
        .spawn()
        .context("cannot run cargo")?
        .wait_with_output()?;
    if !out.status.success() {
        bail!("building the demo failed ({})", out.status);
    }
    let (mut xdplb, mut demo) = (None, None);
    for msg in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(msg) else {
            continue;
        };
        let (Some(exe), Some(name)) = (v["executable"].as_str(), v["target"]["name"].as_str())
        else {
            continue;
        };
        match (v["target"]["kind"][0].as_str(), name) {
            (Some("bin"), "xdplb") => xdplb = Some(PathBuf::from(exe)),
            (Some("example"), "demo") => demo = Some(PathBuf::from(exe)),
            _ => {}
        }
    }
    Ok((
        xdplb.context("cargo built no xdplb binary")?,
        demo.context("cargo built no demo example")?,
    ))
}
