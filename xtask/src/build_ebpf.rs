//! `cargo xtask build-ebpf`: build the release daemon, whose build.rs
//! compiles the XDP program into its OUT_DIR as `xdplb`; print that path.

use std::{fs, path::PathBuf, time::SystemTime};

use anyhow::{Context, Result};

use crate::util::{cargo, exec, target_dir};

pub fn run() -> Result<()> {
    crate::setup::run()?;
    build()?;
    println!("{}", object()?.display());
    Ok(())
}

/// `cargo build --release -p lb-userspace`, with the real eBPF build.
pub fn build() -> Result<()> {
    exec(
        cargo()
            .args(["build", "--release", "-p", "lb-userspace"])
            .env_remove("AYA_BUILD_SKIP"),
    )
}

/// The newest non-empty `target/release/build/lb-userspace-*/out/xdplb`
/// (under `CARGO_TARGET_DIR` if set).
pub fn object() -> Result<PathBuf> {
    let build_dir = target_dir().join("release/build");
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for entry in
        fs::read_dir(&build_dir).with_context(|| format!("read {}", build_dir.display()))?
    {
        let dir = entry?.path();
        if !dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("lb-userspace-"))
        {
            continue;
        }
        let obj = dir.join("out/xdplb");
        let Ok(meta) = fs::metadata(&obj) else {
            continue;
        };
        let mtime = meta.modified()?;
        if meta.len() > 0 && best.as_ref().is_none_or(|(t, _)| mtime > *t) {
            best = Some((mtime, obj));
        }
    }
    let (_, obj) = best.with_context(|| {
        format!(
            "no non-empty lb-userspace-*/out/xdplb under {}",
            build_dir.display()
        )
    })?;
    Ok(obj.canonicalize()?)
}
