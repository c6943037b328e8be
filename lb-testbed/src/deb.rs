//! The Debian package under test: `XDPLB_DEB` (`cargo xtask test` builds
//! it first and sets it), else built now with `cargo xtask package` (a
//! plain `cargo test` of a package test).

use std::{path::PathBuf, process::Command, sync::OnceLock};

use anyhow::{Context, Result, bail};

/// The .deb's path (built at most once per test binary).
pub fn path() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| find_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_or_build() -> Result<PathBuf> {
    if let Some(deb) = std::env::var_os("XDPLB_DEB") {
        let deb = PathBuf::from(deb);
        if !deb.is_file() {
            bail!("XDPLB_DEB={} is not a file", deb.display());
        }
        return Ok(deb);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["xtask", "package"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo xtask package")?;
    if !out.status.success() {
        bail!("cargo xtask package failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let deb = PathBuf::from(
        text.lines()
            .last()
            .context("cargo xtask package printed no path")?,
    );
    if !deb.is_file() {
        bail!("cargo xtask package printed {}, not a file", deb.display());
    }
    Ok(deb)
}
